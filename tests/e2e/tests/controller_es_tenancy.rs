//! Store tenancy with a cluster-wide controller on the real kube-apiserver: a namespaced
//! SecretStore is visible only from its own namespace; ClusterSecretStore `conditions`
//! (listed namespaces, regexes, label selectors — ORed) admit or refuse a namespace.
//! The stores carry a controller class so this controller touches nothing else.

mod controller_es_support;

use std::time::Duration;

use controller_es_support::*;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use refsync_controller::context::Config;
use serde_json::json;

#[tokio::test]
async fn namespaced_store_isolation_and_cluster_store_conditions() {
    let client = client().await;
    let class = refsync_testenv::unique_name("tenancy");
    let _ctl = start(
        &client,
        Config {
            controller_class: Some(class.clone()),
            only_classed_stores: true,
            ..Config::default()
        },
        Duration::from_secs(60),
    );

    // A SecretStore is only visible from its own namespace.
    let owner_ns = namespace("store-owner").await;
    let other_ns = namespace("store-other").await;
    apply::<refsync_api::SecretStore>(&client, json!({
        "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
        "metadata": {"name": "team-store", "namespace": owner_ns},
        "spec": {"controller": class, "provider": {"fake": {"data": [{"key": "k", "value": "v"}]}}}
    }))
    .await;
    let spec = json!({
        "secretStoreRef": {"name": "team-store"},
        "data": [{"secretKey": "k", "remoteRef": {"key": "k"}}]
    });
    external_secret(&client, &owner_ns, "app", spec.clone()).await;
    external_secret(&client, &other_ns, "app", spec).await;
    wait_value(&client, &owner_ns, "app", "k", "v").await;
    let es = wait_reason(&client, &other_ns, "app", "SecretSyncedError").await;
    assert_eq!(ready(&es).unwrap().0, "False");
    assert!(get_secret(&client, &other_ns, "app").await.is_none());
    let ev = events(&client, &other_ns, "app").await;
    assert!(
        ev.iter()
            .any(|e| e.1 == "UpdateFailed" && e.2.contains("not found")),
        "{ev:?}"
    );

    // ClusterSecretStore conditions.
    let ns_listed = namespace("css-listed").await;
    let ns_regex = namespace("tenant-b").await;
    let ns_label = namespace("css-label").await;
    let ns_refused = namespace("css-refused").await;
    Api::<Namespace>::all(client.clone())
        .patch(
            &ns_label,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"refsync-team": "c"}}})),
        )
        .await
        .unwrap();
    let css_name = refsync_testenv::unique_name("shared");
    let css: refsync_api::ClusterSecretStore = serde_json::from_value(json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
        "metadata": {"name": css_name},
        "spec": {
            "controller": class,
            "provider": {"fake": {"data": [{"key": "k", "value": "cv"}]}},
            "conditions": [
                {"namespaces": [ns_listed]},
                {"namespaceRegexes": ["^tenant-b-"]},
                {"namespaceSelector": {"matchLabels": {"refsync-team": "c"}}}
            ]
        }
    }))
    .unwrap();
    Api::<refsync_api::ClusterSecretStore>::all(client.clone())
        .patch(
            &css_name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&css),
        )
        .await
        .unwrap();
    let spec = json!({
        "secretStoreRef": {"name": css_name, "kind": "ClusterSecretStore"},
        "data": [{"secretKey": "k", "remoteRef": {"key": "k"}}]
    });
    for ns in [&ns_listed, &ns_regex, &ns_label, &ns_refused] {
        external_secret(&client, ns, "app", spec.clone()).await;
    }
    for ns in [&ns_listed, &ns_regex, &ns_label] {
        wait_value(&client, ns, "app", "k", "cv").await;
    }
    let es = wait_reason(&client, &ns_refused, "app", "SecretSyncedError").await;
    assert_eq!(
        ready(&es).unwrap().2,
        "could not get secret data from provider"
    );
    assert!(get_secret(&client, &ns_refused, "app").await.is_none());
    // The ExternalSecret may first be reconciled before the ClusterSecretStore reaches the
    // cache ("not found"); the refusal follows on the retry.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let ev = events(&client, &ns_refused, "app").await;
        if ev
            .iter()
            .any(|e| e.1 == "UpdateFailed" && e.2.contains("is not allowed from namespace"))
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{ev:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
