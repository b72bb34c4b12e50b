//! Migrating from External Secrets Operator v0.16.2 (a real ESO process, built by
//! `tests/servers/install.sh`) to refsync and back, on a real kube-apiserver carrying ESO's own
//! CRDs (what an ESO cluster has):
//!
//! - takeover: ESO syncs N ExternalSecrets (OpenBao KV v2), ESO stops, refsync starts: every
//!   ExternalSecret is refreshed by refsync within one refresh interval, no Secret changes
//!   resourceVersion, no ExternalSecret status is written before its refresh is due; then one
//!   remote value changes and exactly that Secret is rewritten;
//! - the way back: refsync-written Secrets, refsync stops, ESO starts and refreshes every
//!   ExternalSecret: no Secret rewritten;
//! - side by side by controller class: ESO (default class) and refsync
//!   (`--controller-class refsync --only-classed-stores`) in one namespace, each Secret written
//!   only by its own controller (managedFields), and moving a store's `spec.controller` hands its
//!   ExternalSecrets over without a rewrite.
//!
//! The apiserver is private to this test binary (`KubeEnv::start()`), so ESO's CRDs never meet
//! the other tests; each test has its own namespace, and both controllers are confined to it
//! (`--namespace`), so the tests can run in parallel. If ESO cannot be found or started, the test
//! fails with the reason.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use refsync_api::{ExternalSecret, SecretStore};
use refsync_testenv::eso::{Eso, EsoOptions, eso_field_manager, install_eso_crds, metric_sum};
use refsync_testenv::process::{ServerProcess, free_port, server_dir};
use refsync_testenv::{KubeEnv, OpenBao};
use serde_json::json;
use tokio::sync::OnceCell;

/// refsync's field manager (`refsync_controller::context::FIELD_MANAGER`).
const REFSYNC_MANAGER: &str = "refsync";

static ENV: OnceCell<KubeEnv> = OnceCell::const_new();

/// The private apiserver of this binary, with ESO's CRDs applied.
async fn env() -> &'static KubeEnv {
    ENV.get_or_init(|| async {
        let env = KubeEnv::start()
            .await
            .unwrap_or_else(|e| panic!("cannot start etcd + kube-apiserver: {e:#}"));
        let client = env.client().await;
        let crds = install_eso_crds(&client)
            .await
            .unwrap_or_else(|e| panic!("cannot install ESO's CRDs: {e:#}"));
        eprintln!("ESO CRDs installed: {}", crds.join(", "));
        env
    })
    .await
}

async fn start_eso(env: &KubeEnv, opts: EsoOptions) -> Eso {
    Eso::start(env, opts).await.unwrap_or_else(|e| {
        panic!("External Secrets Operator v0.16.2 cannot run in this environment: {e:#}")
    })
}

/// ESO confined to `ns`, fast enough for a thousand ExternalSecrets.
fn eso_opts(ns: &str) -> EsoOptions {
    EsoOptions {
        namespace: Some(ns.to_string()),
        concurrent: 8,
        client_qps: 500.0,
        client_burst: 1000,
        ..EsoOptions::default()
    }
}

/// The `refsync` binary (`$REFSYNC_E2E_REFSYNC_BIN` overrides the one this build makes).
fn refsync_path() -> std::path::PathBuf {
    std::env::var_os("REFSYNC_E2E_REFSYNC_BIN")
        .map(Into::into)
        .unwrap_or_else(refsync_e2e::refsync_bin)
}

/// `refsync controller` as a process (through the testenv watchdog).
struct Refsync {
    proc: ServerProcess,
    addr: String,
}

impl Refsync {
    async fn start(env: &KubeEnv, args: &[&str]) -> Refsync {
        let dir = server_dir("refsync").unwrap();
        let kubeconfig = dir.join("kubeconfig");
        env.write_kubeconfig(&kubeconfig).unwrap();
        let addr = format!("127.0.0.1:{}", free_port().unwrap());
        let level = std::env::var("REFSYNC_E2E_LOG").unwrap_or_else(|_| "info,kube=warn".into());
        let mut argv: Vec<OsString> = vec![
            "controller".into(),
            "--log-level".into(),
            level.into(),
            "--kubeconfig".into(),
            kubeconfig.into(),
            "--metrics-addr".into(),
            addr.clone().into(),
            "--health-addr".into(),
            addr.clone().into(),
            "--leader-elect=false".into(),
        ];
        argv.extend(args.iter().map(OsString::from));
        let proc = ServerProcess::spawn(
            "refsync",
            &refsync_path(),
            &argv,
            &[("POD_NAME", "refsync-migration".into())],
            &dir,
        )
        .unwrap();
        let url = format!("http://{addr}/readyz");
        proc.wait_ready(Duration::from_secs(60), || {
            let url = url.clone();
            async move { Ok(reqwest::get(&url).await?.status().is_success()) }
        })
        .await
        .unwrap();
        Refsync { proc, addr }
    }

    async fn metrics(&self) -> String {
        match reqwest::get(format!("http://{}/metrics", self.addr)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }
}

/// Seconds since the epoch of an RFC 3339 UTC time as Kubernetes writes it
/// (`2026-11-25T12:34:56Z`).
fn epoch(t: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| -> i64 { t[r].parse().unwrap_or(0) };
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let (hh, mm, ss) = (n(11..13), n(14..16), n(17..19));
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    days * 86400 + hh * 3600 + mm * 60 + ss
}

fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// What a test needs to know of one ExternalSecret.
#[derive(Debug, Clone, PartialEq)]
struct EsState {
    rv: String,
    ready: bool,
    refresh: i64,
    synced_rv: String,
}

async fn es_states(client: &Client, ns: &str) -> BTreeMap<String, EsState> {
    Api::<ExternalSecret>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|es| {
            let st = es.status.clone().unwrap_or_default();
            let ready = st
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (
                es.name_any(),
                EsState {
                    rv: es.resource_version().unwrap_or_default(),
                    ready,
                    refresh: st.refresh_time.as_deref().map(epoch).unwrap_or(0),
                    synced_rv: st.synced_resource_version.unwrap_or_default(),
                },
            )
        })
        .collect()
}

/// What a test needs to know of one Secret.
#[derive(Debug, Clone, PartialEq)]
struct SecretState {
    rv: String,
    value: Vec<u8>,
    /// `manager/operation` of every managedFields entry.
    managers: Vec<String>,
}

async fn secret_states(client: &Client, ns: &str) -> BTreeMap<String, SecretState> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("reconcile.external-secrets.io/managed=true"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| {
            let value = s
                .data
                .as_ref()
                .and_then(|d| d.get("value"))
                .map(|v| v.0.clone())
                .unwrap_or_default();
            let managers = s
                .metadata
                .managed_fields
                .iter()
                .flatten()
                .map(|m| {
                    format!(
                        "{}/{}",
                        m.manager.as_deref().unwrap_or_default(),
                        m.operation.as_deref().unwrap_or_default()
                    )
                })
                .collect();
            (
                s.name_any(),
                SecretState {
                    rv: s.resource_version().unwrap_or_default(),
                    value,
                    managers,
                },
            )
        })
        .collect()
}

/// Names whose resourceVersion differs between two snapshots (or that appeared/vanished).
fn changed<T, F: Fn(&T) -> &str>(
    before: &BTreeMap<String, T>,
    after: &BTreeMap<String, T>,
    rv: F,
) -> Vec<String> {
    let mut out: Vec<String> = before
        .iter()
        .filter(|(k, b)| after.get(*k).map(&rv) != Some(rv(b)))
        .map(|(k, _)| k.clone())
        .collect();
    out.extend(after.keys().filter(|k| !before.contains_key(*k)).cloned());
    out
}

/// Polls `f` every 250 ms until it returns `Some`, panicking with `what()` after `timeout`.
async fn wait_for<T, F, Fut>(timeout: Duration, what: impl Fn() -> String, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {}",
            what()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// OpenBao KV v2 write, retried while a fresh mount is still upgrading.
async fn bao_write(bao: &OpenBao, path: &str, body: serde_json::Value) {
    for _ in 0..100 {
        if let Ok(resp) = bao
            .request(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
            && resp.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("OpenBao write {path} kept failing");
}

/// `n` remote values `app-<i>` = `v0-<i>` in a fresh KV v2 mount; returns the mount.
async fn seed_bao(bao: &OpenBao, prefix: &str, n: usize) -> String {
    let mount = bao.create_kv_mount(prefix, 2).await.unwrap();
    stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let mount = mount.clone();
            async move {
                bao_write(
                    bao,
                    &format!("{mount}/data/app-{i}"),
                    json!({"data": {"value": format!("v0-{i}")}}),
                )
                .await
            }
        })
        .await;
    mount
}

/// The token Secret and a Vault SecretStore `name` (with `spec.controller` = `class`).
async fn vault_store(
    client: &Client,
    ns: &str,
    name: &str,
    bao: &OpenBao,
    mount: &str,
    class: Option<&str>,
) {
    let pp = PostParams::default();
    let creds: Secret = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-token")},
        "stringData": {"token": bao.root_token()}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&pp, &creds)
        .await
        .unwrap();
    let mut spec = json!({"provider": {"vault": {
        "server": bao.addr(), "path": mount, "version": "v2",
        "auth": {"tokenSecretRef": {"name": format!("{name}-token"), "key": "token"}}
    }}});
    if let Some(c) = class {
        spec["controller"] = json!(c);
    }
    let store: SecretStore = serde_json::from_value(json!({
        "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap();
    Api::<SecretStore>::namespaced(client.clone(), ns)
        .create(&pp, &store)
        .await
        .unwrap();
}

/// Sets a store's `spec.controller` (`""` = every controller).
async fn set_store_class(client: &Client, ns: &str, name: &str, class: &str) {
    Api::<SecretStore>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"controller": class}})),
        )
        .await
        .unwrap();
}

/// ExternalSecrets `<prefix>-<i>` for `i` in `range`, each reading `app-<i>` property `value`
/// into key `value`, created like `kubectl create` would.
async fn create_external_secrets(
    client: &Client,
    ns: &str,
    store: &str,
    prefix: &str,
    range: std::ops::Range<usize>,
    refresh: &str,
) {
    let api: Api<ExternalSecret> = Api::namespaced(client.clone(), ns);
    stream::iter(range)
        .map(|i| {
            let api = api.clone();
            async move {
                // Labels and annotations as GitOps tools leave them (ESO copies them to the
                // Secret when there is no template); every tenth one templated instead.
                let mut es = json!({
                    "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                    "metadata": {"name": format!("{prefix}-{i}"),
                                 "labels": {"app.kubernetes.io/part-of": "migration"},
                                 "annotations": {"team": "payments"}},
                    "spec": {"secretStoreRef": {"name": store, "kind": "SecretStore"},
                             "refreshInterval": refresh,
                             "target": {"name": format!("{prefix}-{i}")},
                             "data": [{"secretKey": "value",
                                       "remoteRef": {"key": format!("app-{i}"), "property": "value"}}]}
                });
                if i % 10 == 0 {
                    es["spec"]["target"]["template"] = json!({
                        "metadata": {"labels": {"templated": "yes"},
                                     "annotations": {"rendered-from": "{{ \"template\" }}"}},
                        "data": {"value": "{{ .value }}"}
                    });
                }
                let es: ExternalSecret = serde_json::from_value(es).unwrap();
                api.create(&PostParams::default(), &es).await.map(|_| ())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
}

/// Waits until `names` are all Ready with a Secret holding the expected value.
async fn wait_synced(
    client: &Client,
    ns: &str,
    names: &[String],
    timeout: Duration,
    log: impl Fn() -> String,
) -> (BTreeMap<String, EsState>, BTreeMap<String, SecretState>) {
    wait_for(
        timeout,
        || {
            format!(
                "{} ExternalSecrets in {ns} not all synced; controller log tail:\n{}",
                names.len(),
                log()
            )
        },
        || async {
            let es = es_states(client, ns).await;
            let secrets = secret_states(client, ns).await;
            let done = names.iter().all(|n| {
                es.get(n).is_some_and(|e| e.ready)
                    && secrets.get(n).is_some_and(|s| {
                        let i = n.rsplit('-').next().unwrap();
                        s.value.starts_with(b"v") && s.value.ends_with(format!("-{i}").as_bytes())
                    })
            });
            done.then_some((es, secrets))
        },
    )
    .await
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

/// Number of ExternalSecrets of the takeover test (`REFSYNC_MIGRATION_N` overrides).
fn takeover_n() -> usize {
    std::env::var("REFSYNC_MIGRATION_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn takeover_from_eso_rewrites_no_secret() {
    const REFRESH_SECS: i64 = 30;
    let n = takeover_n();
    // Built (or located) before anything is timed.
    tokio::task::spawn_blocking(refsync_path).await.unwrap();
    let env = env().await;
    let client = env.client().await;
    let ns = env.create_namespace("mig-takeover").await.unwrap();
    let bao = OpenBao::shared().await;
    let t_seed = Instant::now();
    let mount = seed_bao(bao, "migtake", n).await;
    vault_store(&client, &ns, "vault", bao, &mount, None).await;
    eprintln!("takeover: {n} remote values in {:.1?}", t_seed.elapsed());

    // ESO syncs everything.
    let eso = start_eso(env, eso_opts(&ns)).await;
    let t_eso = Instant::now();
    create_external_secrets(&client, &ns, "vault", "app", 0..n, "30s").await;
    let all = names("app", 0..n);
    let (es_eso, secrets_eso) = wait_synced(&client, &ns, &all, Duration::from_secs(180), || {
        eso.log_tail(30)
    })
    .await;
    eprintln!(
        "takeover: ESO synced {n} ExternalSecrets in {:.1?}",
        t_eso.elapsed()
    );
    for (name, s) in &secrets_eso {
        assert!(
            s.managers
                .iter()
                .any(|m| m.starts_with(&eso_field_manager(name))),
            "{name} was not written by ESO: {:?}",
            s.managers
        );
    }
    eso.stop();
    assert!(eso.exit_status().is_some(), "ESO did not stop");
    // What ESO left, after it stopped (a reconcile may have been in flight).
    let es_before = es_states(&client, &ns).await;
    let secrets_before = secret_states(&client, &ns).await;
    assert_eq!(secrets_before.len(), n);
    assert!(es_before.values().all(|e| e.ready));
    drop(es_eso);

    // refsync takes over.
    let t_refsync = Instant::now();
    let started_at = now_epoch();
    let refsync = Refsync::start(env, &["--namespace", &ns, "--concurrent", "32"]).await;
    let ready_in = t_refsync.elapsed();
    eprintln!("takeover: refsync ready in {ready_in:.1?}");

    // Every ExternalSecret refreshed by refsync (refreshTime moves past ESO's), within one
    // refresh interval (+10% jitter, + slack for a 2-core machine).
    let es_after = wait_for(
        Duration::from_secs(REFRESH_SECS as u64 * 2 + 30),
        || {
            format!(
                "not every ExternalSecret refreshed by refsync; log:\n{}",
                refsync.proc.log_tail(40)
            )
        },
        || async {
            let es = es_states(&client, &ns).await;
            let done = all.iter().all(|n| {
                let (b, a) = (&es_before[n], &es[n]);
                a.ready && a.refresh > b.refresh && a.refresh >= started_at - 1
            });
            done.then_some(es)
        },
    )
    .await;
    let time_to_ready = t_refsync.elapsed();
    let secrets_after = secret_states(&client, &ns).await;
    let rewritten = changed(&secrets_before, &secrets_after, |s| s.rv.as_str());
    let status_writes = changed(&es_before, &es_after, |e| e.rv.as_str()).len();
    // A status write before its refresh was due is a write ESO would not have made.
    let early: Vec<_> = all
        .iter()
        .filter(|n| es_after[*n].refresh < es_before[*n].refresh + REFRESH_SECS - 1)
        .collect();
    let m = refsync.metrics().await;
    eprintln!(
        "takeover figures: {n} Secrets checked, {} rewritten; {} of {n} ExternalSecret statuses \
         written (refreshTime cadence), {} before due; every ExternalSecret refreshed by refsync \
         {:.1?} after its start (ready after {ready_in:.1?}); refsync metrics: {} Secret writes \
         skipped as up to date, {} applied",
        rewritten.len(),
        status_writes,
        early.len(),
        time_to_ready,
        metric_sum(&m, "refsync_secret_writes_skipped_total", &[]),
        metric_sum(&m, "refsync_secret_writes_total", &[("operation", "apply")]),
    );
    assert!(
        rewritten.is_empty(),
        "refsync rewrote {} Secrets ESO had written, e.g. {:?}",
        rewritten.len(),
        rewritten.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        early.is_empty(),
        "refsync wrote the status of {} ExternalSecrets before their refresh was due, e.g. {:?}",
        early.len(),
        early.iter().take(5).collect::<Vec<_>>()
    );
    for (name, s) in &secrets_after {
        assert!(
            !s.managers.iter().any(|m| m.starts_with(REFSYNC_MANAGER)),
            "{name}: refsync appears in managedFields without a write: {:?}",
            s.managers
        );
    }

    // One remote value changes: exactly that Secret is rewritten, at its next refresh.
    let target = format!("app-{}", n / 2);
    bao_write(
        bao,
        &format!("{mount}/data/{target}"),
        json!({"data": {"value": format!("v1-{}", n / 2)}}),
    )
    .await;
    let t_change = Instant::now();
    let es_second = wait_for(
        Duration::from_secs(REFRESH_SECS as u64 * 2 + 30),
        || {
            format!(
                "second refresh not seen; log:\n{}",
                refsync.proc.log_tail(40)
            )
        },
        || async {
            let es = es_states(&client, &ns).await;
            let done = all.iter().all(|n| es[n].refresh > es_after[n].refresh);
            done.then_some(es)
        },
    )
    .await;
    let secrets_final = secret_states(&client, &ns).await;
    let rewritten = changed(&secrets_after, &secrets_final, |s| s.rv.as_str());
    eprintln!(
        "takeover figures: after one remote change, {} of {n} Secrets rewritten ({:?}) within {:.1?}; {} statuses written in the second refresh",
        rewritten.len(),
        rewritten,
        t_change.elapsed(),
        changed(&es_after, &es_second, |e| e.rv.as_str()).len()
    );
    assert_eq!(rewritten, vec![target.clone()]);
    let s = &secrets_final[&target];
    assert_eq!(s.value, format!("v1-{}", n / 2).into_bytes());
    assert!(
        s.managers.iter().any(|m| m == "refsync/Apply"),
        "{:?}",
        s.managers
    );
    let m = refsync.metrics().await;
    assert!(m.contains("externalsecret_status_condition"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn way_back_eso_accepts_refsync_secrets_without_a_rewrite() {
    const N: usize = 100;
    // Built (or located) before anything is timed.
    tokio::task::spawn_blocking(refsync_path).await.unwrap();
    const REFRESH_SECS: i64 = 15;
    let env = env().await;
    let client = env.client().await;
    let ns = env.create_namespace("mig-back").await.unwrap();
    let bao = OpenBao::shared().await;
    let mount = seed_bao(bao, "migback", N).await;
    vault_store(&client, &ns, "vault", bao, &mount, None).await;

    let refsync = Refsync::start(env, &["--namespace", &ns]).await;
    create_external_secrets(&client, &ns, "vault", "app", 0..N, "15s").await;
    let all = names("app", 0..N);
    wait_synced(&client, &ns, &all, Duration::from_secs(90), || {
        refsync.proc.log_tail(30)
    })
    .await;
    refsync.proc.stop();
    let es_before = es_states(&client, &ns).await;
    let secrets_before = secret_states(&client, &ns).await;
    for (name, s) in &secrets_before {
        assert!(
            s.managers.iter().any(|m| m == "refsync/Apply"),
            "{name}: {:?}",
            s.managers
        );
    }

    let eso = start_eso(env, eso_opts(&ns)).await;
    let t_eso = Instant::now();
    // ESO refreshes every ExternalSecret (its mutation + DeepEqual over the live Secret).
    let es_after = wait_for(
        Duration::from_secs(REFRESH_SECS as u64 * 2 + 30),
        || {
            format!(
                "ESO did not refresh every ExternalSecret; log:\n{}",
                eso.log_tail(40)
            )
        },
        || async {
            let es = es_states(&client, &ns).await;
            let done = all
                .iter()
                .all(|n| es[n].ready && es[n].refresh > es_before[n].refresh);
            done.then_some(es)
        },
    )
    .await;
    let secrets_after = secret_states(&client, &ns).await;
    let rewritten = changed(&secrets_before, &secrets_after, |s| s.rv.as_str());
    eprintln!(
        "way back figures: {N} Secrets checked, {} rewritten by ESO; every ExternalSecret refreshed by ESO {:.1?} after its start; {} statuses written",
        rewritten.len(),
        t_eso.elapsed(),
        changed(&es_before, &es_after, |e| e.rv.as_str()).len()
    );
    assert!(
        rewritten.is_empty(),
        "ESO rewrote {} Secrets refsync had written, e.g. {:?}; ESO log:\n{}",
        rewritten.len(),
        rewritten
            .iter()
            .take(3)
            .map(|n| (&secrets_before[n].managers, &secrets_after[n].managers))
            .collect::<Vec<_>>(),
        eso.log_tail(20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_by_side_by_controller_class() {
    const N: usize = 10;
    // Built (or located) before anything is timed.
    tokio::task::spawn_blocking(refsync_path).await.unwrap();
    let env = env().await;
    let client = env.client().await;
    let ns = env.create_namespace("mig-class").await.unwrap();
    let bao = OpenBao::shared().await;
    let mount = seed_bao(bao, "migclass", 2 * N).await;
    // Store "eso" has no class (ESO's default class takes it; refsync leaves it alone with
    // --only-classed-stores); store "rs" belongs to class "refsync".
    vault_store(&client, &ns, "eso", bao, &mount, None).await;
    vault_store(&client, &ns, "rs", bao, &mount, Some("refsync")).await;

    let eso = start_eso(env, eso_opts(&ns)).await;
    let refsync = Refsync::start(
        env,
        &[
            "--namespace",
            &ns,
            "--controller-class",
            "refsync",
            "--only-classed-stores",
        ],
    )
    .await;
    create_external_secrets(&client, &ns, "eso", "e", 0..N, "1h").await;
    create_external_secrets(&client, &ns, "rs", "r", N..2 * N, "1h").await;
    let eso_names = names("e", 0..N);
    let rs_names = names("r", N..2 * N);
    let all: Vec<String> = eso_names.iter().chain(&rs_names).cloned().collect();
    let (_, secrets) = wait_synced(&client, &ns, &all, Duration::from_secs(60), || {
        format!(
            "ESO:\n{}\nrefsync:\n{}",
            eso.log_tail(20),
            refsync.proc.log_tail(20)
        )
    })
    .await;
    for name in &eso_names {
        let m = &secrets[name].managers;
        assert!(
            m.iter().all(|m| m.starts_with(&eso_field_manager(name))),
            "{name} (ESO's store) written by someone else: {m:?}"
        );
    }
    for name in &rs_names {
        let m = &secrets[name].managers;
        assert_eq!(
            m,
            &vec!["refsync/Apply".to_string()],
            "{name} (refsync's store)"
        );
    }
    // Each ExternalSecret's status written by its own controller only.
    for es in Api::<ExternalSecret>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        let name = es.name_any();
        let managers: Vec<String> = es
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter(|m| m.subresource.as_deref() == Some("status"))
            .filter_map(|m| m.manager.clone())
            .collect();
        if name.starts_with("r-") {
            assert_eq!(managers, vec![REFSYNC_MANAGER.to_string()], "{name} status");
        } else {
            assert!(
                !managers.iter().any(|m| m == REFSYNC_MANAGER),
                "{name} status written by refsync: {managers:?}"
            );
        }
    }

    // Hand store "eso" to refsync: refsync picks its ExternalSecrets up at once (store spec
    // change) and rewrites none of their Secrets. Taking one over shows in refsync's metrics
    // (its status may not change at all: same second, same result as ESO's).
    let m = refsync.metrics().await;
    for n in &eso_names {
        assert_eq!(
            metric_sum(&m, "externalsecret_status_condition", &[("name", n)]),
            0.0,
            "refsync reported {n} although its store belongs to ESO"
        );
    }
    let before = secret_states(&client, &ns).await;
    let t_move = Instant::now();
    set_store_class(&client, &ns, "eso", "refsync").await;
    wait_for(
        Duration::from_secs(30),
        || {
            format!(
                "refsync did not take over store eso; log:\n{}",
                refsync.proc.log_tail(30)
            )
        },
        || async {
            let m = refsync.metrics().await;
            eso_names
                .iter()
                .all(|n| {
                    metric_sum(
                        &m,
                        "externalsecret_status_condition",
                        &[("name", n), ("condition", "Ready"), ("status", "True")],
                    ) == 1.0
                })
                .then_some(())
        },
    )
    .await;
    let handover = t_move.elapsed();
    // ESO sees the status writes too; give it a moment to (not) act on them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = secret_states(&client, &ns).await;
    let rewritten = changed(&before, &after, |s| s.rv.as_str());
    eprintln!(
        "side by side figures: {} Secrets checked after moving store eso to refsync, {} rewritten; refsync refreshed its {N} ExternalSecrets {handover:.1?} after the move",
        after.len(),
        rewritten.len()
    );
    assert!(rewritten.is_empty(), "rewritten on handover: {rewritten:?}");

    // And back: store "rs" handed to ESO (class removed). ESO does not watch stores from its
    // ExternalSecret controller, so it takes them on its next start (or refresh): restart it.
    set_store_class(&client, &ns, "rs", "").await;
    eso.stop();
    let eso = start_eso(env, eso_opts(&ns)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_back = secret_states(&client, &ns).await;
    let rewritten = changed(&after, &after_back, |s| s.rv.as_str());
    eprintln!(
        "side by side figures: store rs handed back to ESO, {} Secrets checked, {} rewritten",
        after_back.len(),
        rewritten.len()
    );
    assert!(
        rewritten.is_empty(),
        "rewritten when handed to ESO: {rewritten:?}; ESO log:\n{}",
        eso.log_tail(20)
    );
}
