//! refsync's Event publisher against the real apiserver: the `events.k8s.io/v1` Event's
//! fields, a repeat within the series window updating the first Event's `series` instead of
//! creating another, and a different reason creating its own Event.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{Api, ListParams};
use kube::runtime::events::{Event, EventType};
use refsync_controller::events::{Publisher, Reporter};
use refsync_testenv::KubeEnv;

fn ev(type_: EventType, reason: &str, note: &str) -> Event {
    Event {
        type_,
        reason: reason.into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    }
}

#[tokio::test]
async fn events_carry_the_fields_and_repeats_become_a_series() {
    let env = KubeEnv::shared().await;
    let client = env.client().await;
    let ns = env.create_namespace("events").await.unwrap();
    let publisher = Publisher::new(
        client.clone(),
        Reporter {
            controller: "refsync".into(),
            instance: Some("refsync-0".into()),
        },
    );
    let regarding = ObjectReference {
        api_version: Some("external-secrets.io/v1".into()),
        kind: Some("ExternalSecret".into()),
        name: Some("app".into()),
        namespace: Some(ns.clone()),
        uid: Some("0b6f2f49-5d3c-4a53-9d0e-2f8c1f0c1a11".into()),
        ..Default::default()
    };
    let api: Api<K8sEvent> = Api::namespaced(client.clone(), &ns);
    let list = || async {
        let mut items = api.list(&ListParams::default()).await.unwrap().items;
        items.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        items
    };

    publisher
        .publish(
            &ev(EventType::Normal, "Created", "secret created"),
            &regarding,
        )
        .await
        .unwrap();
    let items = list().await;
    assert_eq!(items.len(), 1, "{items:?}");
    let e = &items[0];
    assert_eq!(e.type_.as_deref(), Some("Normal"));
    assert_eq!(e.reason.as_deref(), Some("Created"));
    assert_eq!(e.note.as_deref(), Some("secret created"));
    assert_eq!(e.action.as_deref(), Some("Reconcile"));
    assert_eq!(e.reporting_controller.as_deref(), Some("refsync"));
    assert_eq!(e.reporting_instance.as_deref(), Some("refsync-0"));
    assert_eq!(e.regarding.as_ref(), Some(&regarding));
    assert!(e.event_time.is_some());
    assert!(e.series.is_none());
    assert!(
        e.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("app."))
    );

    // The same Event again: the first one's series, no second object.
    publisher
        .publish(
            &ev(EventType::Normal, "Created", "secret created"),
            &regarding,
        )
        .await
        .unwrap();
    let items = list().await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0].series.as_ref().map(|s| s.count), Some(2));

    // Another reason: its own Event.
    publisher
        .publish(
            &ev(
                EventType::Warning,
                "UpdateFailed",
                "could not get secret data",
            ),
            &regarding,
        )
        .await
        .unwrap();
    let items = list().await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(items.iter().any(|e| e.type_.as_deref() == Some("Warning")
        && e.reason.as_deref() == Some("UpdateFailed")
        && e.note.as_deref() == Some("could not get secret data")));
}
