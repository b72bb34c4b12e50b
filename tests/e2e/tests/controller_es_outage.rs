//! Provider outage after a good sync, against a real OpenBao that is stopped: the Secret is
//! kept exactly, the ExternalSecret turns `Ready=False SecretSyncedError` with a Warning
//! `UpdateFailed` Event. Also: a changed remote value reaches the Secret within the refresh.

mod controller_es_support;

use std::time::Duration;

use controller_es_support::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use refsync_testenv::OpenBao;
use reqwest::Method;
use serde_json::{Value, json};

async fn admin(bao: &OpenBao, method: Method, path: &str, body: Option<Value>) {
    // A fresh KV v2 mount answers 400 ("upgrading to versioned data") for a moment: retry.
    let mut attempt = 0;
    loop {
        let mut req = bao.request(method.clone(), path);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("OpenBao request");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status.is_success() {
            return;
        }
        attempt += 1;
        assert!(attempt < 50, "{method} {path}: HTTP {status}: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn refresh_picks_up_changes_and_outage_keeps_the_secret() {
    let client = client().await;
    let ns = namespace("es-outage").await;
    let bao = OpenBao::start().await.expect("start OpenBao");
    let mount = bao.create_kv_mount("outage", 2).await.unwrap();
    let path = format!("{mount}/data/app");
    admin(
        &bao,
        Method::POST,
        &path,
        Some(json!({"data": {"password": "one"}})),
    )
    .await;

    let _ctl = start_in(&client, &ns, Duration::from_millis(200));
    let creds: Secret = serde_json::from_value(json!({
        "metadata": {"name": "vault-creds"}, "stringData": {"token": bao.root_token()}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &creds)
        .await
        .unwrap();
    apply::<refsync_api::SecretStore>(
        &client,
        json!({
            "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
            "metadata": {"name": "vault", "namespace": ns},
            "spec": {"provider": {"vault": {
                "server": bao.addr(), "path": mount, "version": "v2",
                "auth": {"tokenSecretRef": {"name": "vault-creds", "key": "token"}}
            }}}
        }),
    )
    .await;
    external_secret(
        &client,
        &ns,
        "app",
        json!({
            "refreshInterval": "1s", "secretStoreRef": {"name": "vault"},
            "data": [{"secretKey": "password", "remoteRef": {"key": "app", "property": "password"}}]
        }),
    )
    .await;
    wait_value(&client, &ns, "app", "password", "one").await;

    // A change in OpenBao reaches the Secret on the next refresh.
    admin(
        &bao,
        Method::POST,
        &path,
        Some(json!({"data": {"password": "two"}})),
    )
    .await;
    let synced = wait_value(&client, &ns, "app", "password", "two").await;
    wait_reason(&client, &ns, "app", "SecretSynced").await;

    // Outage: OpenBao stops.
    drop(bao);
    let es = wait_reason(&client, &ns, "app", "SecretSyncedError").await;
    assert_eq!(
        ready(&es).unwrap(),
        (
            "False".into(),
            "SecretSyncedError".into(),
            "could not get secret data from provider".into()
        )
    );
    let ev = events(&client, &ns, "app").await;
    assert!(
        ev.iter().any(|e| e.0 == "Warning" && e.1 == "UpdateFailed"),
        "{ev:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kept = get_secret(&client, &ns, "app").await.unwrap();
    assert_eq!(
        kept.metadata.resource_version, synced.metadata.resource_version,
        "Secret kept exactly"
    );
    assert_eq!(data(&kept, "password").as_deref(), Some("two"));
}
