//! 200 ExternalSecrets on the real kube-apiserver: time from creation to all Ready, and the
//! Secret writes of a second refresh when nothing changed (must be 0).

mod controller_es_support;

use std::time::{Duration, Instant};

use controller_es_support::*;
use kube::api::{Api, ListParams};
use serde_json::json;

const N: usize = 200;

#[tokio::test]
async fn two_hundred_externalsecrets() {
    let client = client().await;
    let ns = namespace("es-scale").await;
    let ctl = start_in(&client, &ns, Duration::from_secs(5));
    let data: Vec<_> = (0..10)
        .map(|i| json!({"key": format!("k{i}"), "value": format!("v{i}")}))
        .collect();
    fake_store(&client, &ns, "fake", json!(data)).await;

    let start = Instant::now();
    for i in 0..N {
        external_secret(
            &client,
            &ns,
            &format!("es-{i}"),
            json!({
                "refreshInterval": "10s", "secretStoreRef": {"name": "fake"},
                "data": [{"secretKey": "v", "remoteRef": {"key": format!("k{}", i % 10)}}]
            }),
        )
        .await;
    }
    let created = start.elapsed();
    let api: Api<refsync_api::ExternalSecret> = Api::namespaced(client.clone(), &ns);
    let ready_count = || async {
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|es| ready(es).map(|r| r.1) == Some("SecretSynced".to_string()))
            .count()
    };
    wait_for("all Ready", Duration::from_secs(120), || async {
        (ready_count().await == N).then_some(())
    })
    .await;
    let all_ready = start.elapsed();
    let applies = metric(&ctl.ctx, "refsync_secret_writes_total{operation=\"apply\"}");
    let statuses = metric(
        &ctl.ctx,
        "refsync_secret_writes_total{operation=\"status\"}",
    );
    let skipped = metric(&ctl.ctx, "refsync_secret_writes_skipped_total");
    println!(
        "created {N} ExternalSecrets in {created:?}; all Ready after {all_ready:?}; Secret applies {applies}, status writes {statuses}"
    );
    assert_eq!(applies, N as f64, "one Secret write per ExternalSecret");

    // A second refresh of every ExternalSecret, nothing changed remotely.
    let t0 = Instant::now();
    wait_for("second refresh of all", Duration::from_secs(60), || async {
        let skipped_now = metric(&ctl.ctx, "refsync_secret_writes_skipped_total");
        (skipped_now - skipped >= N as f64).then_some(())
    })
    .await;
    let applies_after = metric(&ctl.ctx, "refsync_secret_writes_total{operation=\"apply\"}");
    println!(
        "second refresh: {} Secret writes, {} skipped, after {:?}",
        applies_after - applies,
        metric(&ctl.ctx, "refsync_secret_writes_skipped_total") - skipped,
        t0.elapsed()
    );
    assert_eq!(
        applies_after - applies,
        0.0,
        "no Secret writes on a no-change refresh"
    );
}
