//! The first write of a target Secret the controller's caches do not know is a create-only
//! server-side apply: one request (no GET first), fields owned by an `Apply` entry so later
//! applies remove what is no longer desired, and a Secret that exists after all (unlabelled, or
//! created meanwhile) is left untouched by it and adopted or merged into as before.
//!
//! One test per binary: it counts the kube-apiserver's own Secret GETs.

mod controller_es_support;

use std::collections::BTreeMap;
use std::time::Duration;

use controller_es_support::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::reflector;
use refsync_controller::context::FIELD_MANAGER;
use refsync_controller::sink::cluster::SecretSink;
use refsync_testenv::KubeEnv;
use serde_json::json;

const N: usize = 30;

/// `apiserver_request_total` summed over the samples for Secrets with `verb`.
fn secret_requests(metrics: &str, verb: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| l.contains("resource=\"secrets\"") && l.contains("subresource=\"\""))
        .filter(|l| l.contains(&format!("verb=\"{verb}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// `(manager, operation)` of every managedFields entry.
fn managers(s: &Secret) -> Vec<(String, String)> {
    s.metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| {
            (
                m.manager.clone().unwrap_or_default(),
                m.operation.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn keys(m: Option<&BTreeMap<String, String>>) -> Vec<String> {
    m.map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

/// What must be the same on two Secrets written for two ExternalSecrets with the same spec:
/// data, type, labels and annotations (values of the per-ExternalSecret label left out), and
/// the ownerReference apart from the owner's name and uid.
fn shape(s: &Secret) -> serde_json::Value {
    let mut labels = s.metadata.labels.clone().unwrap_or_default();
    if let Some(v) = labels.get_mut("reconcile.external-secrets.io/created-by") {
        *v = "*".into();
    }
    let owners: Vec<_> = s
        .metadata
        .owner_references
        .iter()
        .flatten()
        .map(|o| {
            (
                &o.api_version,
                &o.kind,
                o.controller,
                o.block_owner_deletion,
            )
        })
        .collect();
    json!({
        "data": s.data, "type": s.type_, "immutable": s.immutable, "labels": labels,
        "annotations": s.metadata.annotations, "owners": format!("{owners:?}"),
    })
}

#[tokio::test]
async fn first_write_is_one_create_owned_by_apply() {
    let client = client().await;
    let env = KubeEnv::shared().await;
    let ns = namespace("es-create").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    fake_store(
        &client,
        &ns,
        "fake",
        json!([
            {"key": "/a", "value": "value-a"},
            {"key": "/b", "value": "value-b"}
        ]),
    )
    .await;
    let spec = |target: &str| {
        json!({
            "refreshInterval": "1h",
            "secretStoreRef": {"name": "fake", "kind": "SecretStore"},
            "target": {
                "name": target,
                "template": {"metadata": {
                    "labels": {"team": "blue", "tier": "db"},
                    "annotations": {"note": "n1", "extra": "e1"}
                }}
            },
            "data": [
                {"secretKey": "a", "remoteRef": {"key": "/a"}},
                {"secretKey": "b", "remoteRef": {"key": "/b"}}
            ]
        })
    };
    // An unlabelled Secret for one ExternalSecret to adopt (the GET-and-apply path).
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "adopted", "labels": {"keep": "me"}},
                "data": {"old": "b2xk"}
            }))
            .unwrap(),
        )
        .await
        .unwrap();

    let _ctl = start_in(&client, &ns, Duration::from_secs(60));
    let gets_before = secret_requests(&env.apiserver_metrics().await.unwrap(), "GET");
    for i in 0..N {
        external_secret(&client, &ns, &format!("es-{i}"), spec(&format!("t-{i}"))).await;
    }
    external_secret(&client, &ns, "adopter", spec("adopted")).await;
    // Waits on the ExternalSecrets (LIST), not on the Secrets: no GET of ours to count.
    let es_api: Api<refsync_api::ExternalSecret> = Api::namespaced(client.clone(), &ns);
    wait_for("all Ready", Duration::from_secs(60), || async {
        let l = es_api.list(&ListParams::default()).await.unwrap();
        (l.items.len() == N + 1
            && l.items
                .iter()
                .all(|e| ready(e).map(|r| r.1) == Some("SecretSynced".into())))
        .then_some(())
    })
    .await;
    let gets = secret_requests(&env.apiserver_metrics().await.unwrap(), "GET") - gets_before;
    println!("Secret GETs while creating {N} targets and adopting one: {gets}");
    // The adopted target was read once; the created ones not at all.
    assert!(gets <= 2, "{gets} Secret GETs");

    let all: BTreeMap<String, Secret> = secrets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| (s.metadata.name.clone().unwrap(), s))
        .collect();
    for i in 0..N {
        let s = &all[&format!("t-{i}")];
        assert_eq!(
            managers(s),
            vec![(FIELD_MANAGER.to_string(), "Apply".to_string())],
            "t-{i}"
        );
        assert_eq!(data(s, "a").as_deref(), Some("value-a"));
        assert_eq!(shape(s), shape(&all["t-0"]));
    }
    // Created exactly as the apply path writes an adopted one (apart from what was there).
    let adopted = &all["adopted"];
    let mut expect = shape(&all["t-0"]);
    expect["labels"]["keep"] = json!("me");
    assert_eq!(shape(adopted), expect);
    assert_eq!(keys(adopted.metadata.labels.as_ref()).len(), 5);
    let created = events(&client, &ns, "es-0").await;
    assert!(created.iter().any(|e| e.1 == "Created"), "{created:?}");

    // Later applies remove a data key, a label and an annotation no longer desired.
    external_secret(
        &client,
        &ns,
        "es-0",
        json!({
            "refreshInterval": "1h",
            "secretStoreRef": {"name": "fake", "kind": "SecretStore"},
            "target": {
                "name": "t-0",
                "template": {"metadata": {
                    "labels": {"team": "blue"},
                    "annotations": {"note": "n2"}
                }}
            },
            "data": [{"secretKey": "a", "remoteRef": {"key": "/a"}}]
        }),
    )
    .await;
    let s = wait_for("t-0 shrunk", Duration::from_secs(30), || async {
        let s = get_secret(&client, &ns, "t-0").await?;
        (data(&s, "b").is_none()
            && !s.metadata.labels.as_ref()?.contains_key("tier")
            && !s.metadata.annotations.as_ref()?.contains_key("extra"))
        .then_some(s)
    })
    .await;
    assert_eq!(data(&s, "a").as_deref(), Some("value-a"));
    assert_eq!(s.metadata.annotations.as_ref().unwrap()["note"], "n2");
    assert_eq!(s.metadata.labels.as_ref().unwrap()["team"], "blue");

    // A create that finds a Secret (the race: created after the cache said nothing) changes
    // nothing and says so.
    let (store, _writer) = reflector::store::<Secret>();
    let sink = SecretSink {
        client: client.clone(),
        managed: store,
        written: Default::default(),
    };
    let before = get_secret(&client, &ns, "t-1").await.unwrap();
    let mut other = all["t-2"].clone();
    other.metadata.name = Some("t-1".into());
    other.metadata.managed_fields = None;
    other.metadata.resource_version = None;
    other.metadata.uid = None;
    other.metadata.creation_timestamp = None;
    other.data = Some([("z".to_string(), k8s_openapi::ByteString(b"z".to_vec()))].into());
    assert!(!sink.create(&ns, other.clone()).await.unwrap());
    let after = get_secret(&client, &ns, "t-1").await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert_eq!(after.data, before.data);
    // And one that finds none creates it, remembered as written.
    other.metadata.name = Some("fresh".into());
    assert!(sink.create(&ns, other).await.unwrap());
    let fresh = get_secret(&client, &ns, "fresh").await.unwrap();
    assert_eq!(data(&fresh, "z").as_deref(), Some("z"));
    assert_eq!(
        managers(&fresh),
        vec![(FIELD_MANAGER.to_string(), "Apply".to_string())]
    );
    let written = sink.written.lock().unwrap()[&(ns.clone(), "fresh".to_string())].clone();
    assert_eq!(
        written.metadata.resource_version,
        fresh.metadata.resource_version
    );
}
