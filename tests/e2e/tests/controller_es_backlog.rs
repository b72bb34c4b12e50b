//! Refreshes under a backlog: while ExternalSecrets wait for their first sync, a periodic
//! refresh of an already-synced one waits (at most one interval past its due time), and
//! refreshes go on at their interval once the backlog is gone.

mod controller_es_support;

use std::time::{Duration, Instant};

use controller_es_support::*;
use kube::api::{Api, ListParams};
use refsync_controller::context::Config;
use serde_json::json;

const N: usize = 300;
const INTERVAL: u64 = 2;

fn refresh_time(es: &refsync_api::ExternalSecret) -> Option<String> {
    es.status.as_ref()?.refresh_time.clone()
}

#[tokio::test]
async fn refreshes_wait_for_first_syncs_and_go_on_after() {
    let client = client().await;
    let ns = namespace("es-backlog").await;
    let ctl = start(
        &client,
        Config {
            namespace: Some(ns.clone()),
            concurrency: 2,
            ..Config::default()
        },
        Duration::from_secs(60),
    );
    fake_store(&client, &ns, "fake", json!([{"key": "/k", "value": "v"}])).await;
    let spec = |interval: &str| {
        json!({
            "refreshInterval": interval,
            "secretStoreRef": {"name": "fake", "kind": "SecretStore"},
            "data": [{"secretKey": "v", "remoteRef": {"key": "/k"}}]
        })
    };
    external_secret(&client, &ns, "early", spec(&format!("{INTERVAL}s"))).await;
    wait_reason(&client, &ns, "early", "SecretSynced").await;

    // The backlog: N ExternalSecrets (1 h refresh) to sync with two workers.
    let start = Instant::now();
    let creating = {
        let (client, ns) = (client.clone(), ns.clone());
        tokio::spawn(async move {
            for i in 0..N {
                external_secret(&client, &ns, &format!("late-{i}"), spec("1h")).await;
            }
        })
    };
    let api: Api<refsync_api::ExternalSecret> = Api::namespaced(client.clone(), &ns);
    // (seconds since start, early's refreshTime) at each change.
    let mut seen: Vec<(f64, String)> = Vec::new();
    let mut ready_after = None;
    let mut after_refreshes = 0;
    while start.elapsed() < Duration::from_secs(180) {
        let list = api.list(&ListParams::default()).await.unwrap();
        let t = start.elapsed().as_secs_f64();
        if let Some(rt) = list
            .items
            .iter()
            .find(|e| e.metadata.name.as_deref() == Some("early"))
            .and_then(refresh_time)
            && seen.last().is_none_or(|(_, last)| *last != rt)
        {
            seen.push((t, rt));
            if ready_after.is_some() {
                after_refreshes += 1;
            }
        }
        let ready = list
            .items
            .iter()
            .filter(|e| ready(e).map(|r| r.1) == Some("SecretSynced".into()))
            .count();
        if ready_after.is_none() && ready == N + 1 {
            ready_after = Some(t);
        }
        // Refreshes go on after the backlog: three more at the interval.
        if after_refreshes >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    creating.await.unwrap();
    let statuses = metric(
        &ctl.ctx,
        "refsync_secret_writes_total{operation=\"status\"}",
    );
    println!(
        "all Ready after {ready_after:?} s; early refreshed at {seen:?}; status writes {statuses}"
    );
    let ready_after = ready_after.expect("all Ready");
    assert!(
        after_refreshes >= 3,
        "early refreshed {after_refreshes} times after the backlog: {seen:?}"
    );
    // (The bound during the backlog, one interval past due, is the unit test's: here the two
    // workers' queue adds its own wait.)
    let times: Vec<f64> = seen.iter().map(|(t, _)| *t).collect();
    // After the backlog, at the interval again.
    let last: Vec<f64> = times.iter().copied().filter(|t| *t > ready_after).collect();
    for w in last.windows(2) {
        assert!(
            w[1] - w[0] <= INTERVAL as f64 + 3.0,
            "refresh gap after the backlog {:.1} s: {seen:?}",
            w[1] - w[0]
        );
    }
}
