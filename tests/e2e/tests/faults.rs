//! The fault matrix: `refsync controller` processes against a private etcd + kube-apiserver,
//! OpenBao (raft storage, so that it keeps its data across a restart; in front of it a TCP
//! proxy that can delay responses) and moto, through six faults run one after the other:
//!
//! 1. provider down: OpenBao and moto stopped, then started again on the same ports (OpenBao
//!    with its data; moto empty and re-seeded by the test, as moto keeps nothing);
//! 2. slow provider: OpenBao's responses delayed past the Vault client's 30 s timeout;
//! 3. kube-apiserver restart (same etcd);
//! 4. etcd restart (same data; recovery counted from the apiserver's first read from etcd again);
//! 5. the controller SIGKILLed while it syncs a burst of new ExternalSecrets, then started again;
//! 6. the leader of two replicas SIGKILLed.
//!
//! After each: no target Secret deleted or blanked (data and resourceVersion snapshots before
//! and after), every ExternalSecret `Ready=True` with a `refreshTime` after the recovery within
//! one backoff cap (`--max-backoff 5`), plus the lease duration (`--lease-duration 4`) where
//! leadership is lost (the leader killed, or an apiserver/etcd outage longer than the lease),
//! plus 5 s of slack for a loaded 2-core machine, and the Secret writes counted twice: the
//! resourceVersion changes and the apiserver's own `apiserver_request_total` for Secret
//! POST/PUT/PATCH/APPLY/DELETE. A provider outage must cause 0 Secret writes; every other fault
//! exactly the writes its change needs (the probe Secret, or the burst's creations).
//!
//! The measured figures are printed as a table (`--nocapture`); BENCHMARKS.md has them.

mod faults_support;

use std::time::{Duration, Instant};

use faults_support::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use refsync_e2e::ControllerProcess;
use refsync_testenv::{KubeEnv, Moto, OpenBao};
use reqwest::Method;
use serde_json::{Value, json};

/// `--max-backoff` of the controllers (seconds).
const CAP: u64 = 5;
/// `--lease-duration` (seconds).
const LEASE: u64 = 4;
/// Slack over the bounds for a loaded machine (seconds).
const SLACK: u64 = 5;
const VAULT_ES: usize = 12;
const AWS_ES: usize = 6;
const PATHS: usize = 4;
const BURST: usize = 24;
const MANAGER: &str = "refsync-faults";

struct World {
    client: Client,
    ns: String,
    kubeconfig: std::path::PathBuf,
    ctl_args: Vec<String>,
    ctl_env: Vec<(&'static str, String)>,
}

/// One row of the fault matrix.
struct Row {
    fault: &'static str,
    asserted: String,
    recovery: Duration,
    writes: u64,
    rv_changes: usize,
}

async fn bao_put(bao: &OpenBao, path: &str, data: Value) {
    // A fresh KV v2 mount answers 400 ("upgrading to versioned data") for a moment: retry.
    let mut attempt = 0;
    loop {
        let resp = bao
            .request(Method::POST, &format!("secret/data/{path}"))
            .json(&json!({ "data": data }))
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                assert!(attempt < 100, "OpenBao PUT {path}: HTTP {status}: {text}");
            }
            Err(e) => assert!(attempt < 100, "OpenBao PUT {path}: {e}"),
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates the Secrets Manager secrets `<prefix>/db-<i>` (moto is empty after a restart).
async fn seed_moto(moto: &Moto, prefix: &str) {
    for i in 0..PATHS {
        let value = json!({"password": format!("db-{i}")}).to_string();
        moto.sm_put(&format!("{prefix}/db-{i}"), &value)
            .await
            .unwrap_or_else(|e| panic!("CreateSecret db-{i}: {e:#}"));
    }
}

async fn apply(client: &Client, ns: &str, manifest: Value) {
    let name = manifest["metadata"]["name"].as_str().unwrap().to_string();
    let kind = manifest["kind"].as_str().unwrap().to_string();
    let pp = PatchParams::apply(MANAGER).force();
    let res = match kind.as_str() {
        "SecretStore" => Api::<refsync_api::SecretStore>::namespaced(client.clone(), ns)
            .patch(&name, &pp, &Patch::Apply(&manifest))
            .await
            .map(drop),
        _ => Api::<refsync_api::ExternalSecret>::namespaced(client.clone(), ns)
            .patch(&name, &pp, &Patch::Apply(&manifest))
            .await
            .map(drop),
    };
    res.unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
}

fn vault_es(ns: &str, name: &str, path: &str) -> Value {
    json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "refreshInterval": "2s", "secretStoreRef": {"name": "vault"},
            "data": [
                {"secretKey": "password", "remoteRef": {"key": path, "property": "password"}},
                {"secretKey": "user", "remoteRef": {"key": path, "property": "user"}}
            ]
        }
    })
}

fn aws_es(ns: &str, name: &str, key: &str) -> Value {
    json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "refreshInterval": "2s", "secretStoreRef": {"name": "aws"},
            "data": [{"secretKey": "password", "remoteRef": {"key": key, "property": "password"}}]
        }
    })
}

async fn secret_value(client: &Client, ns: &str, name: &str, key: &str) -> Option<String> {
    let s: Secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .ok()??;
    s.data?
        .get(key)
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
}

async fn writes(env: &KubeEnv) -> u64 {
    let t0 = Instant::now();
    loop {
        match env.apiserver_metrics().await {
            Ok(m) => return secret_write_requests(&m),
            Err(e) => {
                assert!(t0.elapsed() < Duration::from_secs(60), "{e:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Waits until every ExternalSecret in the namespace is `Ready=True` with a `refreshTime` at or
/// after `since` and `extra` holds; returns how long that took from `from`.
async fn wait_recovered<F, Fut>(
    w: &World,
    from: Instant,
    since: Timestamp,
    bound: Duration,
    ctl: &[&ControllerProcess],
    mut extra: F,
) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = from + bound + Duration::from_secs(30);
    let mut last = None;
    loop {
        if let Some(states) = es_states(&w.client, &w.ns).await {
            let laggards: Vec<_> = states
                .iter()
                .filter(|(_, (ready, t))| ready != "True" || !refreshed_since(t, since))
                .map(|(n, s)| format!("{n}={s:?}"))
                .collect();
            if laggards.is_empty() && extra().await {
                let took = from.elapsed();
                eprintln!("recovered at {} ({took:?} after {since})", Timestamp::now());
                let logs: String = ctl
                    .iter()
                    .map(|c| format!("--- {} ---\n{}\n", c.name, c.log_since_mark(200)))
                    .collect();
                assert!(
                    took <= bound,
                    "recovered in {took:?}, over the bound {bound:?}; logs:\n{logs}"
                );
                return took;
            }
            last = Some(laggards);
        }
        if Instant::now() > deadline {
            let logs: String = ctl
                .iter()
                .map(|c| format!("--- {} ---\n{}\n", c.name, c.log_since_mark(200)))
                .collect();
            panic!(
                "not recovered within {bound:?} (+30 s): not ready/refreshed: {last:?}; logs:\n{logs}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every ExternalSecret whose name starts with one of `prefixes` is `Ready=False`.
async fn wait_failing(w: &World, prefixes: &[&str], timeout: Duration, ctl: &ControllerProcess) {
    let t0 = Instant::now();
    loop {
        if let Some(states) = es_states(&w.client, &w.ns).await {
            let ok = states
                .iter()
                .filter(|(n, _)| prefixes.iter().any(|p| n.starts_with(p)))
                .all(|(_, (ready, _))| ready == "False");
            if ok {
                return;
            }
        }
        assert!(
            t0.elapsed() < timeout,
            "ExternalSecrets {prefixes:?} did not turn Ready=False within {timeout:?}; log:\n{}",
            ctl.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// No target Secret deleted or with other data; returns the names whose resourceVersion moved.
fn check_kept(
    fault: &str,
    before: &Snapshot,
    after: &Snapshot,
    may_change: &[&str],
) -> Vec<String> {
    let (deleted, changed, written) = diff(before, after);
    assert!(deleted.is_empty(), "{fault}: Secrets deleted: {deleted:?}");
    let changed: Vec<_> = changed
        .into_iter()
        .filter(|n| !may_change.contains(&n.as_str()))
        .collect();
    assert!(
        changed.is_empty(),
        "{fault}: Secret data changed: {changed:?}"
    );
    for (name, (data, _)) in after {
        if before.contains_key(name) {
            assert!(!data.is_empty(), "{fault}: Secret {name} blanked");
        }
    }
    written
}

fn start_controller(w: &World, name: &str) -> ControllerProcess {
    w.ctl_env
        .iter()
        .fold(ControllerProcess::builder(name), |s, (k, v)| s.env(k, v))
        .kubeconfig(&w.kubeconfig)
        .args(&w.ctl_args)
        .start()
}

/// After a recovery: waits 2 s more, then checks that no Secret was deleted, blanked or
/// changed other than `expected`, and that the Secret writes since `w0` (the apiserver's own
/// count) and the resourceVersion changes are exactly `expected`; records the row.
#[allow(clippy::too_many_arguments)]
async fn settle_and_record(
    env: &KubeEnv,
    w: &World,
    rows: &mut Vec<Row>,
    fault: &'static str,
    before: &Snapshot,
    w0: u64,
    expected: &[&str],
    recovery: Duration,
    asserted: String,
) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = snapshot(&w.client, &w.ns).await;
    let written = check_kept(fault, before, &after, expected);
    let n = writes(env).await - w0;
    let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        (n, written.clone()),
        (expected.len() as u64, expected),
        "{fault}: Secret writes (apiserver requests, resourceVersion changes)"
    );
    record(
        rows,
        Row {
            fault,
            asserted,
            recovery,
            writes: n,
            rv_changes: written.len(),
        },
    );
}

fn record(rows: &mut Vec<Row>, row: Row) {
    eprintln!(
        "fault done: {} — recovery {:.1} s, {} Secret write requests, {} resourceVersion changes",
        row.fault,
        row.recovery.as_secs_f64(),
        row.writes,
        row.rv_changes
    );
    rows.push(row);
}

fn print_table(rows: &[Row]) {
    eprintln!(
        "\n| Fault | Asserted | Recovery | Secret writes (apiserver requests) | resourceVersion changes |"
    );
    eprintln!("|---|---|---|---|---|");
    for r in rows {
        eprintln!(
            "| {} | {} | {:.1} s | {} | {} |",
            r.fault,
            r.asserted,
            r.recovery.as_secs_f64(),
            r.writes,
            r.rv_changes
        );
    }
}

// Run by tests/run as a step of its own (`--ignored`, one retry that is reported).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by tests/run as its own step"]
async fn fault_matrix() {
    let t_all = Instant::now();
    let (env, bao, moto) = tokio::join!(
        KubeEnv::start_restartable(),
        OpenBao::start_persistent(),
        Moto::start()
    );
    let mut env = env.expect("start etcd + kube-apiserver");
    let mut bao = bao.expect("start OpenBao (raft storage)");
    let mut moto = moto.expect("start moto");
    let client = env.client().await;
    refsync_e2e::install_crds(&client)
        .await
        .expect("install CRDs");
    let ns = env.create_namespace("faults").await.unwrap();
    let proxy = SlowProxy::start(bao.addr()).await;
    let prefix = moto.unique_prefix("faults");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    env.write_kubeconfig(&kubeconfig).unwrap();
    let ctl_args: Vec<String> = [
        "--namespace",
        &ns,
        "--leader-election-namespace",
        &ns,
        "--lease-name",
        "faults",
        "--lease-duration",
        &LEASE.to_string(),
        "--max-backoff",
        &CAP.to_string(),
        "--fetch-cache-ttl",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ctl_env = vec![
        ("AWS_SECRETSMANAGER_ENDPOINT", moto.endpoint().to_string()),
        ("AWS_SSM_ENDPOINT", moto.endpoint().to_string()),
        ("AWS_STS_ENDPOINT", moto.endpoint().to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ];
    let w = World {
        client: client.clone(),
        ns: ns.clone(),
        kubeconfig: kubeconfig.clone(),
        ctl_args,
        ctl_env,
    };

    // Remote values, credentials, stores, ExternalSecrets.
    for i in 0..PATHS {
        bao_put(
            &bao,
            &format!("app-{i}"),
            json!({"password": format!("pw-{i}"), "user": format!("user-{i}")}),
        )
        .await;
    }
    bao_put(&bao, "probe", json!({"password": "probe-0", "user": "p"})).await;
    seed_moto(&moto, &prefix).await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    for s in [
        json!({"metadata": {"name": "vault-token"}, "stringData": {"token": bao.root_token()}}),
        json!({"metadata": {"name": "aws-creds"}, "stringData": {
            "access-key": moto.access_key_id(), "secret-access-key": moto.secret_access_key()}}),
    ] {
        secrets
            .create(&PostParams::default(), &serde_json::from_value(s).unwrap())
            .await
            .unwrap();
    }
    apply(
        &client,
        &ns,
        json!({
            "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
            "metadata": {"name": "vault", "namespace": ns},
            "spec": {"provider": {"vault": {
                "server": proxy.url(), "path": "secret", "version": "v2",
                "auth": {"tokenSecretRef": {"name": "vault-token", "key": "token"}}
            }}}
        }),
    )
    .await;
    apply(
        &client,
        &ns,
        json!({
            "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
            "metadata": {"name": "aws", "namespace": ns},
            "spec": {"provider": {"aws": {
                "service": "SecretsManager", "region": moto.region(),
                "auth": {"secretRef": {
                    "accessKeyIDSecretRef": {"name": "aws-creds", "key": "access-key"},
                    "secretAccessKeySecretRef": {"name": "aws-creds", "key": "secret-access-key"}
                }}
            }}}
        }),
    )
    .await;
    for i in 0..VAULT_ES {
        apply(
            &client,
            &ns,
            vault_es(&ns, &format!("vault-{i}"), &format!("app-{}", i % PATHS)),
        )
        .await;
    }
    for i in 0..AWS_ES {
        apply(
            &client,
            &ns,
            aws_es(
                &ns,
                &format!("aws-{i}"),
                &format!("{prefix}/db-{}", i % PATHS),
            ),
        )
        .await;
    }
    let mut probe = vault_es(&ns, "probe", "probe");
    probe["spec"]["refreshInterval"] = json!("1s");
    apply(&client, &ns, probe).await;

    let mut a = start_controller(&w, "replica-a");
    let t0 = Instant::now();
    let epoch = Timestamp::now();
    let initial = wait_recovered(&w, t0, epoch, Duration::from_secs(60), &[&a], || async {
        true
    })
    .await;
    eprintln!(
        "setup + initial sync of {} ExternalSecrets: {initial:?} (test at {:?})",
        VAULT_ES + AWS_ES + 1,
        t_all.elapsed()
    );
    let mut rows = Vec::new();
    let probe_is = |value: String| {
        let (client, ns) = (client.clone(), ns.clone());
        move || {
            let (client, ns, value) = (client.clone(), ns.clone(), value.clone());
            async move {
                secret_value(&client, &ns, "probe", "password")
                    .await
                    .as_deref()
                    == Some(value.as_str())
            }
        }
    };

    // 1. Provider down: OpenBao and moto stopped mid-run, started again on the same ports.
    {
        let fault = "provider down (OpenBao + moto stopped, restarted)";
        a.mark();
        let before = snapshot(&client, &ns).await;
        let w0 = writes(&env).await;
        bao.stop().unwrap();
        moto.stop().unwrap();
        wait_failing(
            &w,
            &["vault-", "aws-", "probe"],
            Duration::from_secs(30),
            &a,
        )
        .await;
        // Long enough for the per-object backoff to reach the cap (0.5+1+2+4 s).
        tokio::time::sleep(Duration::from_secs(CAP + 3)).await;
        let during = snapshot(&client, &ns).await;
        let written = check_kept(fault, &before, &during, &[]);
        let w_during = writes(&env).await - w0;
        assert_eq!(
            (w_during, written.len()),
            (0, 0),
            "{fault}: Secret writes during the outage: {written:?}"
        );
        let (r1, r2) = tokio::join!(bao.start_again(), moto.start_again());
        r1.expect("start OpenBao again");
        r2.expect("start moto again");
        seed_moto(&moto, &prefix).await;
        let (from, since) = (Instant::now(), Timestamp::now());
        let recovery = wait_recovered(
            &w,
            from,
            since,
            Duration::from_secs(CAP + SLACK),
            &[&a],
            || async { true },
        )
        .await;
        settle_and_record(
            &env,
            &w,
            &mut rows,
            fault,
            &before,
            w0,
            &[],
            recovery,
            "all ES Ready=False during, Secrets kept; 0 writes".into(),
        )
        .await;
    }

    // 2. Slow provider: OpenBao's responses held past the Vault client's 30 s timeout.
    {
        let fault = "slow provider (OpenBao responses delayed 40 s > 30 s timeout)";
        a.mark();
        let before = snapshot(&client, &ns).await;
        let w0 = writes(&env).await;
        let slow_since = Timestamp::now();
        proxy.set_delay(Duration::from_secs(40));
        wait_failing(&w, &["vault-", "probe"], Duration::from_secs(60), &a).await;
        // The other provider's ExternalSecrets kept refreshing meanwhile.
        let states = es_states(&client, &ns).await.unwrap();
        for (name, (ready, t)) in states.iter().filter(|(n, _)| n.starts_with("aws-")) {
            assert!(
                ready == "True" && refreshed_since(t, slow_since),
                "{fault}: {name} stalled behind the slow provider: {ready} {t}"
            );
        }
        let during = snapshot(&client, &ns).await;
        check_kept(fault, &before, &during, &[]);
        proxy.set_delay(Duration::ZERO);
        let (from, since) = (Instant::now(), Timestamp::now());
        let recovery = wait_recovered(
            &w,
            from,
            since,
            Duration::from_secs(CAP + SLACK),
            &[&a],
            || async { true },
        )
        .await;
        settle_and_record(
            &env,
            &w,
            &mut rows,
            fault,
            &before,
            w0,
            &[],
            recovery,
            "Vault ES Ready=False after the timeout, AWS ES kept refreshing; 0 writes".into(),
        )
        .await;
    }

    // 3. kube-apiserver restart (same etcd). Its metrics restart at 0: writes before the stop
    // plus writes counted by the new process.
    {
        let fault = "kube-apiserver restart";
        a.mark();
        let before = snapshot(&client, &ns).await;
        eprintln!("{fault}: stopping at {}", Timestamp::now());
        env.stop_apiserver().unwrap();
        eprintln!("{fault}: stopped at {}", Timestamp::now());
        tokio::time::sleep(Duration::from_secs(3)).await;
        env.start_apiserver_again().await.unwrap();
        eprintln!("{fault}: ready again at {}", Timestamp::now());
        let (from, since) = (Instant::now(), Timestamp::now());
        bao_put(&bao, "probe", json!({"password": "probe-3", "user": "p"})).await;
        let recovery = wait_recovered(
            &w,
            from,
            since,
            Duration::from_secs(LEASE + CAP + SLACK),
            &[&a],
            probe_is("probe-3".into()),
        )
        .await;
        settle_and_record(
            &env,
            &w,
            &mut rows,
            fault,
            &before,
            0,
            &["probe"],
            recovery,
            "Secrets kept; after the restart only the probe's change written".into(),
        )
        .await;
    }

    // 4. etcd restart (same data); kube-apiserver keeps running.
    {
        let fault = "etcd restart";
        a.mark();
        let before = snapshot(&client, &ns).await;
        let w0 = writes(&env).await;
        eprintln!("{fault}: stopping at {}", Timestamp::now());
        env.stop_etcd().unwrap();
        eprintln!("{fault}: stopped at {}", Timestamp::now());
        tokio::time::sleep(Duration::from_secs(3)).await;
        env.start_etcd_again().await.unwrap();
        let etcd_ready = Instant::now();
        eprintln!("{fault}: etcd ready again at {}", Timestamp::now());
        // The fault ends when the apiserver serves again: its etcd client reconnects with a
        // backoff of its own (seconds after etcd answers, more the longer etcd was away).
        // A GET of one object without a resourceVersion is a quorum read from etcd.
        let leases = Api::<Lease>::namespaced(client.clone(), &ns);
        while leases.get_opt("faults").await.is_err() {
            assert!(
                etcd_ready.elapsed() < Duration::from_secs(60),
                "{fault}: the apiserver did not serve a read within 60 s of etcd's restart"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let reconnect = etcd_ready.elapsed();
        eprintln!(
            "{fault}: apiserver serving again at {} ({reconnect:?} after etcd was ready)",
            Timestamp::now()
        );
        let (from, since) = (Instant::now(), Timestamp::now());
        bao_put(&bao, "probe", json!({"password": "probe-4", "user": "p"})).await;
        let recovery = wait_recovered(
            &w,
            from,
            since,
            Duration::from_secs(LEASE + CAP + SLACK),
            &[&a],
            probe_is("probe-4".into()),
        )
        .await;
        settle_and_record(
            &env,
            &w,
            &mut rows,
            fault,
            &before,
            w0,
            &["probe"],
            recovery,
            format!(
                "Secrets kept; after the restart only the probe's change written \
                     (the apiserver read from etcd again {:.1} s after etcd was ready)",
                reconnect.as_secs_f64()
            ),
        )
        .await;
    }

    // 5. The controller SIGKILLed mid-sync: a burst of new ExternalSecrets, kill -9 as soon as
    // the first of their Secrets exists, start a new process.
    {
        let fault = "controller SIGKILL mid-sync";
        a.mark();
        let before = snapshot(&client, &ns).await;
        let w0 = writes(&env).await;
        for i in 0..BURST {
            apply(
                &client,
                &ns,
                vault_es(&ns, &format!("burst-{i}"), &format!("app-{}", i % PATHS)),
            )
            .await;
        }
        let t_burst = Instant::now();
        let done_at_kill = loop {
            let snap = snapshot(&client, &ns).await;
            let done = snap.keys().filter(|n| n.starts_with("burst-")).count();
            if done > 0 {
                break done;
            }
            assert!(
                t_burst.elapsed() < Duration::from_secs(30),
                "no burst Secret within 30 s; log:\n{}",
                a.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        a.kill9();
        let (from, since) = (Instant::now(), Timestamp::now());
        let a2 = start_controller(&w, "replica-a2");
        let recovery = wait_recovered(
            &w,
            from,
            since,
            Duration::from_secs(LEASE + CAP + SLACK),
            &[&a2],
            || async { true },
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = snapshot(&client, &ns).await;
        let written = check_kept(fault, &before, &after, &[]);
        assert!(
            written.is_empty(),
            "{fault}: Secrets rewritten: {written:?}"
        );
        for i in 0..BURST {
            let name = format!("burst-{i}");
            let (data, _) = after
                .get(&name)
                .unwrap_or_else(|| panic!("{fault}: {name} missing"));
            assert_eq!(
                data.get("password")
                    .map(|v| String::from_utf8_lossy(v).into_owned()),
                Some(format!("pw-{}", i % PATHS)),
                "{fault}: {name}"
            );
        }
        let n = writes(&env).await - w0;
        assert_eq!(
            n, BURST as u64,
            "{fault}: Secret writes: one creation per new ExternalSecret expected \
             ({done_at_kill} existed at the kill)"
        );
        eprintln!("{fault}: {done_at_kill}/{BURST} burst Secrets existed at the kill");
        record(
            &mut rows,
            Row {
                fault,
                asserted: format!(
                    "killed with {done_at_kill}/{BURST} new Secrets written; each new Secret \
                 created once, old ones untouched"
                ),
                recovery,
                writes: n,
                rv_changes: BURST,
            },
        );
        a = a2;
    }

    // 6. Two replicas, the leader SIGKILLed: the other takes over after the lease expires.
    {
        let fault = "leader SIGKILL with two replicas";
        a.mark();
        let mut b = start_controller(&w, "replica-b");
        b.wait_ready(Duration::from_secs(60)).await;
        let leases = Api::<Lease>::namespaced(client.clone(), &ns);
        // The lease may still name the replica SIGKILLed in the previous fault (if every
        // ExternalSecret was already Ready then, recovery did not need a new leader): wait until
        // one of the two live replicas holds it.
        let live = [format!("{}-", a.name), format!("{}-", b.name)];
        let t_lease = Instant::now();
        let holder = loop {
            let holder = leases
                .get("faults")
                .await
                .unwrap()
                .spec
                .and_then(|s| s.holder_identity)
                .unwrap_or_default();
            if live.iter().any(|p| holder.starts_with(p.as_str())) {
                break holder;
            }
            assert!(
                t_lease.elapsed() < Duration::from_secs(LEASE + CAP + SLACK),
                "{fault}: no live replica took the lease (holder {holder})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let before = snapshot(&client, &ns).await;
        let w0 = writes(&env).await;
        let (leader, follower) = if holder.starts_with(&format!("{}-", b.name)) {
            (&mut b, &a)
        } else {
            assert!(
                holder.starts_with(&format!("{}-", a.name)),
                "unexpected lease holder {holder}"
            );
            (&mut a, &b)
        };
        leader.kill9();
        let (from, since) = (Instant::now(), Timestamp::now());
        bao_put(&bao, "probe", json!({"password": "probe-6", "user": "p"})).await;
        let recovery = wait_recovered(
            &w,
            from,
            since,
            Duration::from_secs(LEASE + CAP + SLACK),
            &[follower],
            probe_is("probe-6".into()),
        )
        .await;
        let new_holder = leases
            .get("faults")
            .await
            .unwrap()
            .spec
            .and_then(|s| s.holder_identity)
            .unwrap_or_default();
        assert!(
            new_holder.starts_with(&format!("{}-", follower.name)),
            "{fault}: lease held by {new_holder}"
        );
        settle_and_record(
            &env,
            &w,
            &mut rows,
            fault,
            &before,
            w0,
            &["probe"],
            recovery,
            "follower took the lease; Secrets kept; only the probe's change written".into(),
        )
        .await;
        for c in [&a, &b] {
            let log = c.log();
            assert!(!log.contains("panicked"), "{} panicked:\n{log}", c.name);
        }
    }

    print_table(&rows);
    eprintln!("fault matrix done in {:?}", t_all.elapsed());
    drop(proxy);
}
