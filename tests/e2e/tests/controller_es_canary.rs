//! A remote value never appears in Events, status, metrics or the controller's logs (captured
//! at trace level), on the success path and on an error path that handles the value.

mod controller_es_support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use controller_es_support::*;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::json;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn canary_value_never_leaks() {
    let logs = Captured::default();
    let sink = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .init();

    let client = client().await;
    let ns = namespace("es-canary").await;
    let ctl = start_in(&client, &ns, Duration::from_millis(200));
    let canary = format!("CANARY-{}", refsync_testenv::unique_name("v"));
    fake_store(
        &client,
        &ns,
        "fake",
        json!([
            {"key": "plain", "value": canary},
            {"key": "json", "value": format!("{{\"a\":\"{canary}\"}}")}
        ]),
    )
    .await;
    external_secret(
        &client,
        &ns,
        "ok",
        json!({
            "refreshInterval": "1s", "secretStoreRef": {"name": "fake"},
            "data": [{"secretKey": "v", "remoteRef": {"key": "plain"}}]
        }),
    )
    .await;
    // Error paths that hold the value: a property of a non-JSON value, a missing property
    // of a JSON value, and a template that fails on it.
    external_secret(
        &client,
        &ns,
        "bad-property",
        json!({
            "refreshInterval": "1s", "secretStoreRef": {"name": "fake"},
            "data": [{"secretKey": "v", "remoteRef": {"key": "plain", "property": "x"}}]
        }),
    )
    .await;
    external_secret(
        &client,
        &ns,
        "bad-template",
        json!({
            "refreshInterval": "1s", "secretStoreRef": {"name": "fake"},
            "target": {"template": {"data": {"out": "{{ .v | fail }}"}}},
            "data": [{"secretKey": "v", "remoteRef": {"key": "json"}}]
        }),
    )
    .await;
    let s = wait_value(&client, &ns, "ok", "v", &canary).await;
    assert_eq!(data(&s, "v").as_deref(), Some(canary.as_str()));
    wait_reason(&client, &ns, "bad-property", "SecretSyncedError").await;
    wait_reason(&client, &ns, "bad-template", "SecretSyncedError").await;
    // A few refreshes and retries.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let events = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(!events.items.is_empty());
    let events_text = serde_json::to_string(&events.items).unwrap();
    assert!(
        !events_text.contains(&canary),
        "canary in Events: {events_text}"
    );
    let es_list = Api::<refsync_api::ExternalSecret>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    let status_text = serde_json::to_string(&es_list.items).unwrap();
    assert!(!status_text.contains(&canary), "canary in status");
    let metrics = ctl.ctx.metrics.encode();
    assert!(!metrics.contains(&canary), "canary in metrics");
    let log_text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(log_text.contains("bad-property"), "logs were captured");
    assert!(!log_text.contains(&canary), "canary in logs");
}
