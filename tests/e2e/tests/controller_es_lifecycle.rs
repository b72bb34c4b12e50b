//! Deletion and bookkeeping against the real kube-apiserver: ESO's cleanup finalizer on
//! ExternalSecrets is honoured (an ExternalSecret that ESO once reconciled can still be deleted
//! after the switch), `MissingProviderSecret` Events, and the condition series of deleted
//! stores leave `/metrics`.

mod controller_es_support;

use std::sync::Arc;
use std::time::Duration;

use controller_es_support::*;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use refsync_api::{ExternalSecret, SecretStore};
use refsync_controller::reconcile::store;
use refsync_controller::source::cluster::KubeReader;
use serde_json::json;

const FINALIZER: &str = "externalsecrets.external-secrets.io/externalsecret-cleanup";

/// Puts ESO's finalizer on an ExternalSecret, as ESO v0.17+ does on its first reconcile.
async fn add_finalizer(client: &kube::Client, ns: &str, name: &str) {
    Api::<ExternalSecret>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": [FINALIZER, "example.com/keep"]}})),
        )
        .await
        .expect("add finalizers");
}

async fn finalizers(client: &kube::Client, ns: &str, name: &str) -> Option<Vec<String>> {
    Api::<ExternalSecret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
        .map(|es| es.metadata.finalizers.unwrap_or_default())
}

#[tokio::test]
async fn eso_cleanup_finalizer_is_honoured() {
    let client = client().await;
    let ns = namespace("es-final").await;
    let _ctl = start_in(&client, &ns, Duration::from_millis(200));
    fake_store(
        &client,
        &ns,
        "fake",
        json!([{"key": "/db", "value": "finalizer-value-1"}]),
    )
    .await;
    let spec = |policy: &str, target: &str| {
        json!({
            "refreshInterval": "1h",
            "secretStoreRef": {"name": "fake", "kind": "SecretStore"},
            "target": {"name": target, "deletionPolicy": policy},
            "data": [{"secretKey": "v", "remoteRef": {"key": "/db"}}]
        })
    };
    external_secret(&client, &ns, "del", spec("Delete", "del-target")).await;
    external_secret(&client, &ns, "keep", spec("Retain", "keep-target")).await;
    wait_value(&client, &ns, "del-target", "v", "finalizer-value-1").await;
    wait_value(&client, &ns, "keep-target", "v", "finalizer-value-1").await;
    // refsync itself adds no finalizer.
    assert_eq!(
        finalizers(&client, &ns, "del").await.unwrap(),
        Vec::<String>::new()
    );

    for name in ["del", "keep"] {
        add_finalizer(&client, &ns, name).await;
        Api::<ExternalSecret>::namespaced(client.clone(), &ns)
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    // ESO's finalizer goes, someone else's stays (so the objects still exist).
    for name in ["del", "keep"] {
        wait_for(
            &format!("{name}: cleanup finalizer removed"),
            Duration::from_secs(20),
            || {
                let client = client.clone();
                let ns = ns.clone();
                async move {
                    finalizers(&client, &ns, name)
                        .await
                        .filter(|f| f == &vec!["example.com/keep".to_string()])
                }
            },
        )
        .await;
    }
    // deletionPolicy Delete: the controlled target is deleted (no garbage collector runs in
    // this environment, so this is the finalizer's own doing); Retain keeps it.
    wait_for(
        "Delete-policy target deleted",
        Duration::from_secs(20),
        || {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                get_secret(&client, &ns, "del-target")
                    .await
                    .is_none()
                    .then_some(())
            }
        },
    )
    .await;
    let kept = get_secret(&client, &ns, "keep-target")
        .await
        .expect("Retain target kept");
    assert_eq!(data(&kept, "v").as_deref(), Some("finalizer-value-1"));

    // Let the objects go.
    for name in ["del", "keep"] {
        Api::<ExternalSecret>::namespaced(client.clone(), &ns)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn missing_remote_secret_under_delete_policy_is_an_event() {
    let client = client().await;
    let ns = namespace("es-missing").await;
    let _ctl = start_in(&client, &ns, Duration::from_millis(200));
    fake_store(
        &client,
        &ns,
        "fake",
        json!([{"key": "/present", "value": "missing-test-value"}]),
    )
    .await;
    external_secret(
        &client,
        &ns,
        "partly",
        json!({
            "refreshInterval": "1h",
            "secretStoreRef": {"name": "fake", "kind": "SecretStore"},
            "target": {"deletionPolicy": "Merge"},
            "data": [
                {"secretKey": "a", "remoteRef": {"key": "/present"}},
                {"secretKey": "b", "remoteRef": {"key": "/absent"}}
            ]
        }),
    )
    .await;
    let secret = wait_value(&client, &ns, "partly", "a", "missing-test-value").await;
    assert_eq!(data(&secret, "b"), None);
    let evs = wait_for(
        "MissingProviderSecret event",
        Duration::from_secs(20),
        || {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                let evs = events(&client, &ns, "partly").await;
                evs.iter()
                    .any(|(_, reason, _)| reason == "MissingProviderSecret")
                    .then_some(evs)
            }
        },
    )
    .await;
    let (type_, _, note) = evs
        .iter()
        .find(|(_, reason, _)| reason == "MissingProviderSecret")
        .unwrap();
    assert_eq!(type_, "Normal");
    assert_eq!(
        note,
        "secret does not exist at provider using spec.data[1] (key=/absent)"
    );
    assert!(!evs.iter().any(|(_, _, n)| n.contains("missing-test-value")));
}

#[tokio::test]
async fn deleted_store_leaves_metrics() {
    let client = client().await;
    let ns = namespace("store-metrics").await;
    let ctl = start_in(&client, &ns, Duration::from_millis(200));
    let ctx = ctl.ctx.clone();
    let (ready_tx, _ready) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let reader = Arc::new(KubeReader {
        client: client.clone(),
    });
    tokio::spawn(store::run::<SecretStore>(
        ctx.clone(),
        reader,
        futures::stream::pending(),
        ready_tx,
        async move {
            let _ = stop_rx.await;
        },
    ));
    fake_store(&client, &ns, "gone", json!([])).await;
    let series = format!(
        "secretstore_status_condition{{condition=\"Ready\",name=\"gone\",namespace=\"{ns}\",status=\"True\"}}"
    );
    wait_for("store Ready series", Duration::from_secs(20), || {
        let ctx = ctx.clone();
        let series = series.clone();
        async move { (metric(&ctx, &series) == 1.0).then_some(()) }
    })
    .await;
    Api::<SecretStore>::namespaced(client.clone(), &ns)
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("store series removed", Duration::from_secs(20), || {
        let ctx = ctx.clone();
        let ns = ns.clone();
        async move {
            let text = ctx.metrics.encode();
            (!text.contains(&format!("name=\"gone\",namespace=\"{ns}\""))).then_some(())
        }
    })
    .await;
    let _ = stop_tx.send(());
}
