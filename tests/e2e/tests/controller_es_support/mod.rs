//! Shared by the `controller_es*` tests: an in-process ExternalSecret controller (leader) on the
//! real kube-apiserver of refsync-testenv, and small helpers to wait for what it writes.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, Resource};
use refsync_api::{ExternalSecret, SecretStore};
use refsync_controller::context::{Config, Context};
use refsync_controller::metrics::Metrics;
use refsync_core::ProviderRegistry;
use refsync_core::engine::Engine;
use refsync_core::fetch::Fetcher;
use refsync_testenv::KubeEnv;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub const MANAGER: &str = "refsync-e2e";

/// A running controller; stopped on drop.
pub struct Controller {
    pub ctx: Arc<Context>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub async fn client() -> Client {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    let env = KubeEnv::shared().await;
    let client = env.client().await;
    refsync_e2e::install_crds(&client)
        .await
        .expect("install CRDs");
    client
}

pub async fn namespace(prefix: &str) -> String {
    KubeEnv::shared()
        .await
        .create_namespace(prefix)
        .await
        .expect("create namespace")
}

/// Starts the controller as leader with `config`, values cached for `fetch_ttl`.
pub fn start(client: &Client, config: Config, fetch_ttl: Duration) -> Controller {
    let mut registry = ProviderRegistry::new();
    registry
        .register(Arc::new(refsync_provider_fake::FakeFactory))
        .register(Arc::new(refsync_provider_vault::VaultFactory));
    let metrics = Arc::new(Metrics::new());
    let mut engine = Engine::new(registry, Fetcher::new(fetch_ttl));
    engine.calls = metrics.clone();
    let ctx = Arc::new(Context {
        client: client.clone(),
        engine: Arc::new(engine),
        metrics,
        config,
        leader: Arc::new(AtomicBool::new(true)),
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run_ctx = ctx.clone();
    tokio::spawn(async move {
        refsync_controller::reconcile::external_secret::run(run_ctx, async move {
            let _ = rx.await;
        })
        .await;
    });
    Controller {
        ctx,
        stop: Some(tx),
    }
}

/// A controller watching `ns` only.
pub fn start_in(client: &Client, ns: &str, fetch_ttl: Duration) -> Controller {
    start(
        client,
        Config {
            namespace: Some(ns.to_string()),
            concurrency: 16,
            ..Config::default()
        },
        fetch_ttl,
    )
}

/// Server-side applies a JSON manifest (namespaced by its metadata).
pub async fn apply<K>(client: &Client, manifest: Value) -> K
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    let ns = manifest["metadata"]["namespace"]
        .as_str()
        .unwrap()
        .to_string();
    let name = manifest["metadata"]["name"].as_str().unwrap().to_string();
    Api::<K>::namespaced(client.clone(), &ns)
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&manifest),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e}"))
}

pub async fn fake_store(client: &Client, ns: &str, name: &str, data: Value) -> SecretStore {
    apply(
        client,
        serde_json::json!({
            "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"provider": {"fake": {"data": data}}}
        }),
    )
    .await
}

pub async fn external_secret(client: &Client, ns: &str, name: &str, spec: Value) -> ExternalSecret {
    apply(
        client,
        serde_json::json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec
        }),
    )
    .await
}

/// Polls `f` until it returns `Some`, for at most `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn get_secret(client: &Client, ns: &str, name: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

pub async fn get_es(client: &Client, ns: &str, name: &str) -> ExternalSecret {
    Api::<ExternalSecret>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap()
}

/// `(status, reason, message)` of the Ready condition.
pub fn ready(es: &ExternalSecret) -> Option<(String, String, String)> {
    es.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

/// Waits until the ExternalSecret's Ready condition has `reason` (and returns it).
pub async fn wait_reason(client: &Client, ns: &str, name: &str, reason: &str) -> ExternalSecret {
    wait_for(
        &format!("{ns}/{name} reason {reason}"),
        Duration::from_secs(30),
        || async {
            let es = get_es(client, ns, name).await;
            (ready(&es).map(|r| r.1) == Some(reason.to_string())).then_some(es)
        },
    )
    .await
}

pub fn data(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
}

/// Waits until Secret `name` has `key` = `value`.
pub async fn wait_value(client: &Client, ns: &str, name: &str, key: &str, value: &str) -> Secret {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = get_secret(client, ns, name).await
            && data(&s, key).as_deref() == Some(value)
        {
            return s;
        }
        if Instant::now() > deadline {
            let all = Api::<ExternalSecret>::namespaced(client.clone(), ns)
                .list(&ListParams::default())
                .await
                .unwrap();
            let st: Vec<_> = all
                .items
                .iter()
                .map(|e| (e.metadata.name.clone(), e.status.clone()))
                .collect();
            panic!("timed out waiting for Secret {ns}/{name} {key}={value}; statuses: {st:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn wait_value_quiet(
    client: &Client,
    ns: &str,
    name: &str,
    key: &str,
    value: &str,
) -> Secret {
    wait_for(
        &format!("Secret {ns}/{name} {key}={value}"),
        Duration::from_secs(30),
        || async {
            let s = get_secret(client, ns, name).await?;
            (data(&s, key).as_deref() == Some(value)).then_some(s)
        },
    )
    .await
}

/// Events about object `name` in `ns`: `(type, reason, note)`.
pub async fn events(client: &Client, ns: &str, name: &str) -> Vec<(String, String, String)> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

/// The value of one counter/gauge sample in the metrics text (0 when absent).
pub fn metric(ctx: &Context, series: &str) -> f64 {
    ctx.metrics
        .encode()
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}
