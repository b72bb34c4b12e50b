//! `refsync controller` as a process against a real kube-apiserver: store validation and
//! status, health and metrics endpoints, leader election with two replicas, SIGTERM.
//!
//! Every controller started here is confined to its test's namespace (`--namespace`) and its
//! own controller class (ClusterSecretStores carry it in `spec.controller`), so tests running in
//! parallel against the shared apiserver do not see each other's objects.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use refsync_api::{ClusterSecretStore, ExternalSecret, SecretStore, SecretStoreStatus};
use refsync_e2e::ControllerProcess;
use refsync_testenv::{KubeEnv, OpenBao};
use serde_json::json;

/// `refsync controller` as `name` (`POD_NAME`) against `env` with `args`, logging at
/// `$REFSYNC_E2E_LOG` (default `info,kube=warn`).
fn start(env: &KubeEnv, name: &str, args: &[&str]) -> ControllerProcess {
    ControllerProcess::builder(name)
        .kubeconfig_of(&env.kubeconfig())
        .args(args)
        .start()
}

fn start_with_log(env: &KubeEnv, name: &str, args: &[&str], level: &str) -> ControllerProcess {
    ControllerProcess::builder(name)
        .kubeconfig_of(&env.kubeconfig())
        .args(args)
        .log_level(Some(level))
        .start()
}

const READY: Duration = Duration::from_secs(60);

/// Polls `f` every 100 ms until it returns `Some`, failing after `timeout` with `what`.
async fn wait_for<T, F, Fut>(timeout: Duration, what: impl Fn() -> String, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let t0 = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?}: {}",
            what()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ready_of(status: Option<&SecretStoreStatus>) -> Option<(String, String, String)> {
    let c = status?.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    ))
}

async fn wait_store_ready(
    api: &Api<SecretStore>,
    name: &str,
    ctl: &ControllerProcess,
) -> (SecretStore, (String, String, String)) {
    wait_for(
        Duration::from_secs(30),
        || {
            format!(
                "SecretStore {name} has no Ready condition; log:\n{}",
                ctl.log()
            )
        },
        || async {
            let s = api.get(name).await.ok()?;
            let r = ready_of(s.status.as_ref())?;
            Some((s, r))
        },
    )
    .await
}

fn secret_store(name: &str, provider: serde_json::Value) -> SecretStore {
    serde_json::from_value(json!({
        "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
        "metadata": {"name": name},
        "spec": {"provider": provider}
    }))
    .unwrap()
}

async fn events_for(client: &kube::Client, ns: &str, name: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

fn reasons(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e.type_.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn stores_are_validated_and_reported_like_eso() {
    let env = KubeEnv::shared().await;
    let client = env.client().await;
    refsync_e2e::install_crds(&client).await.unwrap();
    let ns = env.create_namespace("ctl-stores").await.unwrap();
    let class = format!("class-{ns}");
    let ctl = start(
        env,
        "stores",
        &[
            "--leader-elect=false",
            "--namespace",
            &ns,
            "--controller-class",
            &class,
        ],
    );
    ctl.wait_ready(READY).await;
    assert_eq!(ctl.get("/healthz").await, Some((200, "ok".into())));

    let api: Api<SecretStore> = Api::namespaced(client.clone(), &ns);
    let pp = PostParams::default();
    api.create(
        &pp,
        &secret_store(
            "good",
            json!({"fake": {"data": [{"key": "k", "value": "v"}]}}),
        ),
    )
    .await
    .unwrap();
    let mut quiet = secret_store("quiet", json!({"fake": {"data": []}}));
    quiet.metadata.annotations = Some(
        [(
            "external-secrets.io/ignore-maintenance-checks".to_string(),
            "true".to_string(),
        )]
        .into(),
    );
    api.create(&pp, &quiet).await.unwrap();
    api.create(
        &pp,
        &secret_store(
            "failing",
            json!({"fake": {"data": [], "validationResult": 2}}),
        ),
    )
    .await
    .unwrap();
    api.create(
        &pp,
        &secret_store(
            "unsupported",
            json!({"azurekv": {"vaultUrl": "https://example.invalid"}}),
        ),
    )
    .await
    .unwrap();
    // Another controller class: not ours, left alone.
    let mut foreign = secret_store("foreign", json!({"fake": {"data": []}}));
    foreign.spec.controller = Some("someone-else".into());
    api.create(&pp, &foreign).await.unwrap();

    let (good, ready) = wait_store_ready(&api, "good", &ctl).await;
    assert_eq!(
        ready,
        ("True".into(), "Valid".into(), "store validated".into())
    );
    let status = good.status.unwrap();
    assert_eq!(status.capabilities.as_deref(), Some("ReadWrite"));
    assert!(status.conditions[0].last_transition_time.is_some());

    let (_, ready) = wait_store_ready(&api, "failing", &ctl).await;
    assert_eq!(ready.0, "False");
    assert_eq!(ready.1, "InvalidProviderConfig");
    assert!(
        ready.2.starts_with("unable to validate store"),
        "message: {}",
        ready.2
    );

    let (_, ready) = wait_store_ready(&api, "unsupported", &ctl).await;
    assert_eq!(ready.0, "False");
    assert_eq!(ready.1, "InvalidProviderConfig");
    assert!(
        ready.2.starts_with("unable to create client")
            && ready.2.contains("spec.provider.azurekv")
            && ready.2.contains("not supported"),
        "message: {}",
        ready.2
    );

    // ESO's Events: Valid (Normal), StoreUnmaintained (Warning) for the fake provider unless
    // the store opts out, InvalidProviderConfig (Warning) with the cause.
    let good_events = wait_for(
        Duration::from_secs(10),
        || "Events for SecretStore good".into(),
        || async {
            let ev = reasons(&events_for(&client, &ns, "good").await);
            (ev.len() >= 2).then_some(ev)
        },
    )
    .await;
    assert!(good_events.contains(&("Normal".into(), "Valid".into())));
    assert!(good_events.contains(&("Warning".into(), "StoreUnmaintained".into())));
    let quiet_events = wait_for(
        Duration::from_secs(10),
        || "Events for SecretStore quiet".into(),
        || async {
            let ev = reasons(&events_for(&client, &ns, "quiet").await);
            (!ev.is_empty()).then_some(ev)
        },
    )
    .await;
    assert_eq!(quiet_events, vec![("Normal".into(), "Valid".into())]);
    let failing = events_for(&client, &ns, "failing").await;
    assert_eq!(
        reasons(&failing),
        vec![("Warning".into(), "InvalidProviderConfig".into())]
    );
    assert!(
        failing[0]
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("unable to validate")
    );

    // ClusterSecretStore of our class.
    let css_api: Api<ClusterSecretStore> = Api::all(client.clone());
    let css_name = format!("{ns}-css");
    let css: ClusterSecretStore = serde_json::from_value(json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
        "metadata": {"name": css_name},
        "spec": {"controller": class, "provider": {"fake": {"data": []}}}
    }))
    .unwrap();
    css_api.create(&pp, &css).await.unwrap();
    let ready = wait_for(
        Duration::from_secs(30),
        || format!("ClusterSecretStore {css_name} Ready; log:\n{}", ctl.log()),
        || async { ready_of(css_api.get(&css_name).await.ok()?.status.as_ref()) },
    )
    .await;
    assert_eq!(
        ready,
        ("True".into(), "Valid".into(), "store validated".into())
    );
    // Cluster-scoped objects' Events go to `default`.
    let css_events = wait_for(
        Duration::from_secs(10),
        || "Events for the ClusterSecretStore".into(),
        || async {
            let ev = reasons(&events_for(&client, "default", &css_name).await);
            (!ev.is_empty()).then_some(ev)
        },
    )
    .await;
    assert!(css_events.contains(&("Normal".into(), "Valid".into())));

    // Metrics with ESO's names.
    let m = ctl.metrics().await;
    for want in [
        format!(
            "secretstore_status_condition{{condition=\"Ready\",name=\"good\",namespace=\"{ns}\",status=\"True\"}} 1"
        ),
        format!(
            "secretstore_status_condition{{condition=\"Ready\",name=\"good\",namespace=\"{ns}\",status=\"False\"}} 0"
        ),
        format!(
            "secretstore_status_condition{{condition=\"Ready\",name=\"failing\",namespace=\"{ns}\",status=\"False\"}} 1"
        ),
        format!(
            "clustersecretstore_status_condition{{condition=\"Ready\",name=\"{css_name}\",status=\"True\"}} 1"
        ),
        "refsync_leader 1".to_string(),
    ] {
        assert!(m.contains(&want), "missing {want:?} in /metrics:\n{m}");
    }

    // The store of another class is never touched.
    assert!(api.get("foreign").await.unwrap().status.is_none());
    assert!(events_for(&client, &ns, "foreign").await.is_empty());

    // A status is written once, not on every reconcile: the resourceVersion stays put.
    let rv = api.get("good").await.unwrap().metadata.resource_version;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(api.get("good").await.unwrap().metadata.resource_version, rv);

    // Fixing the failing store flips it to Ready.
    let mut fixed = api.get("failing").await.unwrap();
    fixed.spec.provider.fake.as_mut().unwrap().validation_result = None;
    fixed.metadata.managed_fields = None;
    api.replace("failing", &pp, &fixed).await.unwrap();
    wait_for(
        Duration::from_secs(30),
        || format!("fixed store Ready; log:\n{}", ctl.log()),
        || async {
            let r = ready_of(api.get("failing").await.ok()?.status.as_ref())?;
            (r.0 == "True").then_some(())
        },
    )
    .await;

    css_api
        .delete(&css_name, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn sigterm_stops_the_process_cleanly_and_quickly() {
    let env = KubeEnv::shared().await;
    let client = env.client().await;
    refsync_e2e::install_crds(&client).await.unwrap();
    let ns = env.create_namespace("ctl-term").await.unwrap();
    let lease = "refsync-term";
    let mut ctl = start(
        env,
        "term",
        &[
            "--namespace",
            &ns,
            "--controller-class",
            &format!("class-{ns}"),
            "--leader-election-namespace",
            &ns,
            "--lease-name",
            lease,
        ],
    );
    ctl.wait_ready(READY).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    wait_for(
        Duration::from_secs(20),
        || format!("lease acquired; log:\n{}", ctl.log()),
        || async {
            let l = leases.get_opt(lease).await.ok()??;
            l.spec?.holder_identity.filter(|h| h.starts_with("term-"))
        },
    )
    .await;

    let t0 = Instant::now();
    ctl.signal("-TERM");
    let status = loop {
        if let Some(s) = ctl.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "still running 5s after SIGTERM; log:\n{}",
            ctl.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = t0.elapsed();
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        ctl.log()
    );
    eprintln!("exited {took:?} after SIGTERM");
    // The lease was released on the way out: the next replica need not wait for it to expire.
    let l = leases.get(lease).await.unwrap();
    let holder = l.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    assert!(holder.is_empty(), "lease still held by {holder:?}");
    assert!(ctl.log().contains("released the leader lease"));
}

#[tokio::test]
async fn only_the_leader_writes_and_a_follower_takes_over_after_kill_9() {
    let env = KubeEnv::shared().await;
    let client = env.client().await;
    refsync_e2e::install_crds(&client).await.unwrap();
    let ns = env.create_namespace("ctl-lead").await.unwrap();
    let class = format!("class-{ns}");
    let lease = "refsync-lead";
    let lease_secs = 4u64;
    let args = [
        "--namespace",
        &ns,
        "--controller-class",
        &class,
        "--leader-election-namespace",
        &ns,
        "--lease-name",
        lease,
        "--lease-duration",
        &lease_secs.to_string(),
    ];
    let a = start(env, "replica-a", &args);
    let b = start(env, "replica-b", &args);
    a.wait_ready(READY).await;
    b.wait_ready(READY).await;

    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let holder = wait_for(
        Duration::from_secs(20),
        || format!("no leader; a:\n{}\nb:\n{}", a.log(), b.log()),
        || async { leases.get_opt(lease).await.ok()??.spec?.holder_identity },
    )
    .await;
    let (leader, follower, leader_name, follower_name) = if holder.starts_with("replica-a-") {
        (a, b, "replica-a", "replica-b")
    } else {
        assert!(holder.starts_with("replica-b-"), "holder {holder}");
        (b, a, "replica-b", "replica-a")
    };
    wait_for(
        Duration::from_secs(5),
        || "refsync_leader gauge on the leader".into(),
        || async { (leader.metric("refsync_leader").await? == 1.0).then_some(()) },
    )
    .await;
    assert_eq!(follower.metric("refsync_leader").await, Some(0.0));

    // A store is validated and its status written by the leader only.
    let api: Api<SecretStore> = Api::namespaced(client.clone(), &ns);
    let pp = PostParams::default();
    api.create(&pp, &secret_store("one", json!({"fake": {"data": []}})))
        .await
        .unwrap();
    let (_, ready) = wait_store_ready(&api, "one", &leader).await;
    assert_eq!(ready.1, "Valid");
    let evs = wait_for(
        Duration::from_secs(10),
        || "Events for store one".into(),
        || async {
            let ev = events_for(&client, &ns, "one").await;
            (ev.len() >= 2).then_some(ev)
        },
    )
    .await;
    for e in &evs {
        assert_eq!(
            e.reporting_instance.as_deref(),
            Some(leader_name),
            "an Event from the follower: {e:?}"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let series = "refsync_secret_writes_total{operation=\"store_status\"}";
    assert!(leader.metric(series).await.unwrap_or(0.0) >= 1.0);
    assert_eq!(
        follower.metric(series).await.unwrap_or(0.0),
        0.0,
        "the follower wrote a status"
    );

    // kill -9 the leader: no release, the lease must expire. The follower takes over within
    // the lease duration (plus its renew/poll granularity) and handles new objects.
    let mut leader = leader;
    leader.signal("-KILL");
    let _ = leader.child.wait();
    let t0 = Instant::now();
    wait_for(
        Duration::from_secs(lease_secs + 4),
        || format!("follower did not take over; log:\n{}", follower.log()),
        || async {
            let h = leases.get_opt(lease).await.ok()??.spec?.holder_identity?;
            let gauge = follower.metric("refsync_leader").await?;
            (h.starts_with(&format!("{follower_name}-")) && gauge == 1.0).then_some(())
        },
    )
    .await;
    let took = t0.elapsed();
    eprintln!("follower took over {took:?} after kill -9 (lease {lease_secs}s)");
    assert!(
        took <= Duration::from_secs(lease_secs + 2),
        "takeover took {took:?}"
    );

    api.create(
        &pp,
        &secret_store(
            "two",
            json!({"fake": {"data": [{"key": "k", "value": "v"}]}}),
        ),
    )
    .await
    .unwrap();
    let (_, ready) = wait_store_ready(&api, "two", &follower).await;
    assert_eq!(ready.1, "Valid");
    let evs = events_for(&client, &ns, "two").await;
    assert!(
        evs.iter()
            .all(|e| e.reporting_instance.as_deref() == Some(follower_name))
    );

    // The new leader syncs an ExternalSecret created after the takeover.
    let es: ExternalSecret = serde_json::from_value(json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"name": "after"},
        "spec": {"secretStoreRef": {"name": "two"},
                 "data": [{"secretKey": "a", "remoteRef": {"key": "k"}}]}
    }))
    .unwrap();
    Api::<ExternalSecret>::namespaced(client.clone(), &ns)
        .create(&pp, &es)
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let value = wait_for(
        Duration::from_secs(20),
        || format!("Secret after not synced; log:\n{}", follower.log()),
        || async {
            let s = secrets.get_opt("after").await.ok()??;
            s.data?.get("a").map(|v| v.0.clone())
        },
    )
    .await;
    assert_eq!(value, b"v");
}

/// OpenBao KV v2 write, retried while a fresh mount is still upgrading.
async fn bao_write(bao: &OpenBao, path: &str, body: serde_json::Value) {
    for _ in 0..50 {
        let resp = bao
            .request(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
            .expect("OpenBao request");
        if resp.status().is_success() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("OpenBao write {path} kept failing");
}

#[tokio::test]
async fn a_sync_shows_in_metrics_and_the_value_never_in_logs_or_metrics() {
    let env = KubeEnv::shared().await;
    let client = env.client().await;
    refsync_e2e::install_crds(&client).await.unwrap();
    let ns = env.create_namespace("ctl-sync").await.unwrap();
    let bao = OpenBao::shared().await;
    let mount = bao.create_kv_mount("ctlsync", 2).await.unwrap();
    let canary = format!("canary-{}", refsync_testenv::unique_name("v"));
    bao_write(
        bao,
        &format!("{mount}/data/app"),
        json!({"data": {"password": canary}}),
    )
    .await;

    let ctl = start_with_log(
        env,
        "sync",
        &[
            "--leader-elect=false",
            "--namespace",
            &ns,
            "--controller-class",
            &format!("class-{ns}"),
        ],
        // Everything refsync logs, down to trace.
        "trace,kube=debug,hyper=info,hyper_util=info,h2=info,rustls=info,tower=info,reqwest=info",
    );
    ctl.wait_ready(READY).await;
    let pp = PostParams::default();
    let creds: Secret = serde_json::from_value(json!({
        "metadata": {"name": "vault-creds"}, "stringData": {"token": bao.root_token()}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&pp, &creds)
        .await
        .unwrap();
    let store: SecretStore = serde_json::from_value(json!({
        "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
        "metadata": {"name": "vault"},
        "spec": {"provider": {"vault": {
            "server": bao.addr(), "path": mount, "version": "v2",
            "auth": {"tokenSecretRef": {"name": "vault-creds", "key": "token"}}
        }}}
    }))
    .unwrap();
    let stores: Api<SecretStore> = Api::namespaced(client.clone(), &ns);
    stores.create(&pp, &store).await.unwrap();
    let es: ExternalSecret = serde_json::from_value(json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"name": "app"},
        "spec": {"secretStoreRef": {"name": "vault"}, "refreshInterval": "1h",
                 "data": [{"secretKey": "password",
                           "remoteRef": {"key": "app", "property": "password"}}]}
    }))
    .unwrap();
    Api::<ExternalSecret>::namespaced(client.clone(), &ns)
        .create(&pp, &es)
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let value = wait_for(
        Duration::from_secs(30),
        || format!("Secret app not synced; log:\n{}", ctl.log()),
        || async {
            let s = secrets.get_opt("app").await.ok()??;
            s.data?.get("password").map(|v| v.0.clone())
        },
    )
    .await;
    assert_eq!(value, canary.as_bytes());
    let (_, ready) = wait_store_ready(&stores, "vault", &ctl).await;
    assert_eq!(ready.1, "Valid");
    // What the provider reports (ESO says ReadWrite for Vault; refsync's Vault provider keeps
    // the ReadOnly default, as it does not push).
    assert!(
        stores
            .get("vault")
            .await
            .unwrap()
            .status
            .unwrap()
            .capabilities
            .is_some()
    );

    let m = wait_for(
        Duration::from_secs(10),
        || "ExternalSecret metrics".into(),
        || async {
            let m = ctl.metrics().await;
            m.contains("externalsecret_status_condition{condition=\"Ready\",name=\"app\"")
                .then_some(m)
        },
    )
    .await;
    for want in [
        format!("externalsecret_sync_calls_total{{name=\"app\",namespace=\"{ns}\"}} "),
        format!(
            "externalsecret_status_condition{{condition=\"Ready\",name=\"app\",namespace=\"{ns}\",status=\"True\"}} 1"
        ),
        "externalsecret_provider_api_calls_count{call=".to_string(),
        "provider=\"HashiCorp/Vault\",status=\"success\"}".to_string(),
        "refsync_provider_calls_total ".to_string(),
        format!(
            "secretstore_status_condition{{condition=\"Ready\",name=\"vault\",namespace=\"{ns}\",status=\"True\"}} 1"
        ),
    ] {
        assert!(m.contains(&want), "missing {want:?} in /metrics:\n{m}");
    }
    assert!(!m.contains(&canary), "the canary value is in /metrics");
    assert!(
        !m.contains(bao.root_token()),
        "the Vault token is in /metrics"
    );
    let log = ctl.log();
    assert!(
        log.contains("store status updated"),
        "log not captured:\n{log}"
    );
    assert!(!log.contains(&canary), "the canary value is in the log");
    assert!(
        !log.contains(bao.root_token()),
        "the Vault token is in the log"
    );
}
