//! The in-process ExternalSecret controller against real backends on the real kube-apiserver:
//! AWS Secrets Manager and Parameter Store on moto (credentials from a real Kubernetes Secret
//! through `auth.secretRef`), GCP Secret Manager on the emulator (a service-account key, made
//! at run time with openssl, in a real Kubernetes Secret; the emulator rejects anything else), and ESO's `target.immutable`
//! and `refreshPolicy` (`CreatedOnce`, `OnChange`) semantics with a remote value that changes.
//!
//! Endpoints: the providers read them from the process environment (`AWS_SECRETSMANAGER_ENDPOINT`,
//! `AWS_SSM_ENDPOINT`, `AWS_STS_ENDPOINT`, `GCP_SECRETMANAGER_ENDPOINT`), but setting the
//! environment needs `unsafe` under edition 2024 (forbidden here). The controller gets the same
//! providers through factories that pass the endpoint the environment would have given
//! (`Aws::build(.., &Endpoints::all(moto))`, `GcpSm::build(.., Some(emulator))`), the exact code
//! path of `AwsFactory`/`GcpFactory` after the environment read.

mod controller_es_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use controller_es_support::*;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use refsync_api::ExternalSecret;
use refsync_controller::context::{Config, Context};
use refsync_controller::metrics::Metrics;
use refsync_core::api::SecretStoreSpec;
use refsync_core::engine::Engine;
use refsync_core::fetch::Fetcher;
use refsync_core::{Error, Provider, ProviderFactory, ProviderRegistry, Result, StoreContext};
use refsync_e2e::gcp::{EMAIL, KEY_ID, PROJECT, admin_jwt, openssl_key, put};
use refsync_provider_aws::{Aws, Endpoints};
use refsync_testenv::Moto;
use refsync_testenv::gcp::{Auth, Config as EmuConfig, GcpSm as GcpEmulator};
use serde_json::json;

/// `spec.provider.aws` with every service at moto's endpoint.
struct AwsAt(String);

#[async_trait]
impl ProviderFactory for AwsAt {
    fn key(&self) -> &'static str {
        "aws"
    }
    async fn build(&self, spec: &SecretStoreSpec, ctx: &StoreContext) -> Result<Arc<dyn Provider>> {
        let p: Arc<dyn Provider> = Aws::build(spec, ctx, &Endpoints::all(self.0.clone())).await?;
        Ok(p)
    }
}

/// `spec.provider.gcpsm` at the emulator's endpoint.
struct GcpAt(String);

#[async_trait]
impl ProviderFactory for GcpAt {
    fn key(&self) -> &'static str {
        "gcpsm"
    }
    async fn build(&self, spec: &SecretStoreSpec, ctx: &StoreContext) -> Result<Arc<dyn Provider>> {
        let g = spec
            .provider
            .gcpsm
            .as_ref()
            .ok_or_else(|| Error::config("spec.provider.gcpsm is required"))?;
        let p = refsync_provider_gcp::GcpSm::build(g, ctx, Some(self.0.clone())).await?;
        Ok(Arc::new(p))
    }
}

/// A running controller; stopped on drop.
struct Running(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            let _ = s.send(());
        }
    }
}

/// The controller (leader) watching `ns`, with the AWS provider at moto and, when given, the
/// GCP provider at the emulator.
fn start_backends(client: &Client, ns: &str, moto: &Moto, gcp: Option<String>) -> Running {
    let mut registry = ProviderRegistry::new();
    registry.register(Arc::new(AwsAt(moto.endpoint().to_string())));
    if let Some(g) = gcp {
        registry.register(Arc::new(GcpAt(g)));
    }
    let metrics = Arc::new(Metrics::new());
    let mut engine = Engine::new(registry, Fetcher::new(Duration::from_millis(200)));
    engine.calls = metrics.clone();
    let ctx = Arc::new(Context {
        client: client.clone(),
        engine: Arc::new(engine),
        metrics,
        config: Config {
            namespace: Some(ns.to_string()),
            concurrency: 16,
            ..Config::default()
        },
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
    Running(Some(tx))
}

/// Creates or updates a Secrets Manager secret (test fixture).
async fn sm_put(moto: &Moto, name: &str, value: &str) {
    moto.sm_put(name, value)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Creates or overwrites a SecureString parameter (test fixture).
async fn ssm_put(moto: &Moto, name: &str, value: &str) {
    moto.ssm_put(name, value)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// The Kubernetes Secret with moto's throwaway keys, and a store of `service` using it.
async fn aws_store(client: &Client, ns: &str, moto: &Moto, store: &str, service: &str) {
    let creds: Secret = serde_json::from_value(json!({
        "metadata": {"name": "aws-creds"},
        "stringData": {"access-key": moto.access_key_id(), "secret-access-key": moto.secret_access_key()}
    }))
    .unwrap();
    let api = Api::<Secret>::namespaced(client.clone(), ns);
    if api.get_opt("aws-creds").await.unwrap().is_none() {
        api.create(&PostParams::default(), &creds).await.unwrap();
    }
    apply::<refsync_api::SecretStore>(
        client,
        json!({
            "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
            "metadata": {"name": store, "namespace": ns},
            "spec": {"provider": {"aws": {
                "service": service, "region": moto.region(),
                "auth": {"secretRef": {
                    "accessKeyIDSecretRef": {"name": "aws-creds", "key": "access-key"},
                    "secretAccessKeySecretRef": {"name": "aws-creds", "key": "secret-access-key"}
                }}
            }}}
        }),
    )
    .await;
}

/// Sets the force-sync annotation to a new value.
async fn force_sync(client: &Client, ns: &str, name: &str, value: &str) {
    Api::<ExternalSecret>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"force-sync": value}}})),
        )
        .await
        .unwrap();
}

fn all_data(s: &Secret) -> BTreeMap<String, String> {
    s.data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The ExternalSecret's status has recorded a sync of its current spec/labels/annotations
/// (`syncedResourceVersion` moved on from `before`).
async fn wait_synced_after(client: &Client, ns: &str, name: &str, before: &str) -> ExternalSecret {
    wait_for(
        &format!("{ns}/{name} syncedResourceVersion != {before}"),
        Duration::from_secs(30),
        || async {
            let es = get_es(client, ns, name).await;
            let srv = es.status.as_ref()?.synced_resource_version.clone()?;
            (srv != before).then_some(es)
        },
    )
    .await
}

fn srv(es: &ExternalSecret) -> String {
    es.status
        .as_ref()
        .and_then(|s| s.synced_resource_version.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn syncs_from_aws_secrets_manager_and_parameter_store_on_moto() {
    let t0 = Instant::now();
    let client = client().await;
    let ns = namespace("es-aws").await;
    let moto = Moto::shared().await;
    let prefix = moto.unique_prefix("es-aws");
    sm_put(
        moto,
        &format!("{prefix}/db"),
        r#"{"user":"admin","password":"sm-one"}"#,
    )
    .await;
    ssm_put(moto, &format!("/{prefix}/token"), "ps-one").await;

    let _ctl = start_backends(&client, &ns, moto, None);
    aws_store(&client, &ns, moto, "sm", "SecretsManager").await;
    aws_store(&client, &ns, moto, "ps", "ParameterStore").await;
    external_secret(
        &client,
        &ns,
        "app",
        json!({
            "refreshInterval": "1h",
            "secretStoreRef": {"name": "sm"},
            "data": [
                {"secretKey": "user", "remoteRef": {"key": format!("{prefix}/db"), "property": "user"}},
                {"secretKey": "password", "remoteRef": {"key": format!("{prefix}/db"), "property": "password"}},
                {"secretKey": "token", "sourceRef": {"storeRef": {"name": "ps"}},
                 "remoteRef": {"key": format!("/{prefix}/token")}}
            ]
        }),
    )
    .await;
    let first = wait_value(&client, &ns, "app", "token", "ps-one").await;
    assert_eq!(
        all_data(&first),
        map(&[
            ("user", "admin"),
            ("password", "sm-one"),
            ("token", "ps-one")
        ])
    );
    let es = wait_reason(&client, &ns, "app", "SecretSynced").await;
    let t_sync = t0.elapsed();

    // Both remote values change; the 1h refresh would not see them, force-sync does.
    sm_put(
        moto,
        &format!("{prefix}/db"),
        r#"{"user":"admin","password":"sm-two"}"#,
    )
    .await;
    ssm_put(moto, &format!("/{prefix}/token"), "ps-two").await;
    let t1 = Instant::now();
    force_sync(&client, &ns, "app", "1").await;
    let updated = wait_for("Secret app updated", Duration::from_secs(30), || async {
        let s = get_secret(&client, &ns, "app").await?;
        (data(&s, "password").as_deref() == Some("sm-two")
            && data(&s, "token").as_deref() == Some("ps-two"))
        .then_some(s)
    })
    .await;
    assert_eq!(
        all_data(&updated),
        map(&[
            ("user", "admin"),
            ("password", "sm-two"),
            ("token", "ps-two")
        ])
    );
    wait_synced_after(&client, &ns, "app", &srv(&es)).await;
    eprintln!(
        "aws: first sync {t_sync:?} (incl. setup), force-sync update {:?}",
        t1.elapsed()
    );
}

#[tokio::test]
async fn syncs_from_the_gcp_secret_manager_emulator() {
    let t0 = Instant::now();
    let client = client().await;
    let ns = namespace("es-gcp").await;
    let moto = Moto::shared().await;
    // The emulator accepts only requests signed by this throwaway service-account key.
    let tmp = tempfile::tempdir().unwrap();
    let (private_pem, public_pem, private_file) = openssl_key(tmp.path(), "sa");
    let emu = GcpEmulator::start_with(EmuConfig {
        auth: Auth::ServiceAccounts(vec![(EMAIL.into(), KEY_ID.into(), public_pem)]),
    })
    .await
    .expect("start the GCP emulator");
    let jwt = admin_jwt(&private_file);
    let project = PROJECT;
    put(
        &emu.endpoint(),
        &jwt,
        "db-password",
        "gcp-one".as_bytes(),
        json!({}),
    )
    .await;
    put(
        &emu.endpoint(),
        &jwt,
        "db-config",
        r#"{"host":"db.internal","port":"5432"}"#.as_bytes(),
        json!({}),
    )
    .await;
    // The key in a real Kubernetes Secret; its token_uri leads nowhere (never used with a
    // private endpoint: the provider signs its own JWTs).
    let key_json = json!({
        "type": "service_account", "project_id": project, "private_key_id": KEY_ID,
        "private_key": private_pem, "client_email": EMAIL, "client_id": "100000000000000000007",
        "token_uri": "http://127.0.0.1:9/token"
    })
    .to_string();
    let sa: Secret = serde_json::from_value(json!({
        "metadata": {"name": "gcp-sa"}, "stringData": {"key.json": key_json}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();

    let _ctl = start_backends(&client, &ns, moto, Some(emu.endpoint()));
    apply::<refsync_api::SecretStore>(
        &client,
        json!({
            "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
            "metadata": {"name": "gcp", "namespace": ns},
            "spec": {"provider": {"gcpsm": {"projectID": project, "auth": {"secretRef": {
                "secretAccessKeySecretRef": {"name": "gcp-sa", "key": "key.json"}
            }}}}}
        }),
    )
    .await;
    external_secret(
        &client,
        &ns,
        "app",
        json!({
            "refreshInterval": "1h",
            "secretStoreRef": {"name": "gcp"},
            "data": [
                {"secretKey": "password", "remoteRef": {"key": "db-password"}},
                {"secretKey": "host", "remoteRef": {"key": "db-config", "property": "host"}}
            ]
        }),
    )
    .await;
    let first = wait_value(&client, &ns, "app", "password", "gcp-one").await;
    assert_eq!(
        all_data(&first),
        map(&[("password", "gcp-one"), ("host", "db.internal")])
    );
    let es = wait_reason(&client, &ns, "app", "SecretSynced").await;
    let t_sync = t0.elapsed();

    put(
        &emu.endpoint(),
        &jwt,
        "db-password",
        "gcp-two".as_bytes(),
        json!({}),
    )
    .await;
    let t1 = Instant::now();
    force_sync(&client, &ns, "app", "1").await;
    let updated = wait_value(&client, &ns, "app", "password", "gcp-two").await;
    assert_eq!(
        all_data(&updated),
        map(&[("password", "gcp-two"), ("host", "db.internal")])
    );
    wait_synced_after(&client, &ns, "app", &srv(&es)).await;
    eprintln!(
        "gcp: first sync {t_sync:?} (incl. setup), force-sync update {:?}",
        t1.elapsed()
    );
}

/// One Secrets Manager secret `<prefix>/v` = `value` and an ExternalSecret `app` reading it
/// into key `v` with the extra `spec` fields; returns the synced Secret.
async fn policy_setup(
    client: &Client,
    ns: &str,
    moto: &Moto,
    key: &str,
    extra: serde_json::Value,
) -> Secret {
    sm_put(moto, key, "one").await;
    aws_store(client, ns, moto, "sm", "SecretsManager").await;
    let mut spec = json!({
        "refreshInterval": "1s",
        "secretStoreRef": {"name": "sm"},
        "data": [{"secretKey": "v", "remoteRef": {"key": key}}]
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    external_secret(client, ns, "app", spec).await;
    let s = wait_value(client, ns, "app", "v", "one").await;
    wait_reason(client, ns, "app", "SecretSynced").await;
    s
}

#[tokio::test]
async fn immutable_target_is_created_immutable_and_never_rewritten() {
    let t0 = Instant::now();
    let client = client().await;
    let ns = namespace("es-immutable").await;
    let moto = Moto::shared().await;
    let key = format!("{}/v", moto.unique_prefix("es-imm"));
    let _ctl = start_backends(&client, &ns, moto, None);
    let first = policy_setup(
        &client,
        &ns,
        moto,
        &key,
        json!({"target": {"immutable": true}}),
    )
    .await;
    assert_eq!(first.immutable, Some(true), "Secret created immutable");
    let t_sync = t0.elapsed();

    // The remote value changes: ESO refuses to rewrite the immutable data and says so.
    const CANARY: &str = "imm-canary-7c2e91";
    sm_put(moto, &key, CANARY).await;
    force_sync(&client, &ns, "app", "1").await;
    let es = wait_reason(&client, &ns, "app", "SecretSyncedError").await;
    assert_eq!(
        ready(&es).unwrap(),
        (
            "False".into(),
            "SecretSyncedError".into(),
            "could not update secret, target is immutable".into()
        )
    );
    let kept = get_secret(&client, &ns, "app").await.unwrap();
    assert_eq!(
        kept.metadata.resource_version, first.metadata.resource_version,
        "immutable Secret untouched"
    );
    assert_eq!(data(&kept, "v").as_deref(), Some("one"));
    assert_eq!(kept.immutable, Some(true));
    // ESO's markAsFailed: a Warning UpdateFailed Event; the new value appears nowhere.
    let ev = wait_for(
        "Warning UpdateFailed event",
        Duration::from_secs(10),
        || async {
            let ev = events(&client, &ns, "app").await;
            ev.iter()
                .any(|e| e.0 == "Warning" && e.1 == "UpdateFailed")
                .then_some(ev)
        },
    )
    .await;
    assert!(!format!("{ev:?}").contains(CANARY), "value in an Event");
    let status = serde_json::to_string(&get_es(&client, &ns, "app").await.status).unwrap();
    assert!(!status.contains(CANARY), "value in the status");
    eprintln!("immutable: first sync {t_sync:?}, total {:?}", t0.elapsed());
}

#[tokio::test]
async fn refresh_policy_created_once_syncs_once() {
    let t0 = Instant::now();
    let client = client().await;
    let ns = namespace("es-once").await;
    let moto = Moto::shared().await;
    let key = format!("{}/v", moto.unique_prefix("es-once"));
    let _ctl = start_backends(&client, &ns, moto, None);
    let first = policy_setup(
        &client,
        &ns,
        moto,
        &key,
        json!({"refreshPolicy": "CreatedOnce"}),
    )
    .await;
    let t_sync = t0.elapsed();

    // A remote change plus force-sync (and several 1s refresh intervals): no new read, no write.
    sm_put(moto, &key, "two").await;
    force_sync(&client, &ns, "app", "1").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let kept = get_secret(&client, &ns, "app").await.unwrap();
    assert_eq!(data(&kept, "v").as_deref(), Some("one"));
    assert_eq!(
        kept.metadata.resource_version, first.metadata.resource_version,
        "CreatedOnce Secret untouched"
    );
    let es = get_es(&client, &ns, "app").await;
    assert_eq!(ready(&es).unwrap().1, "SecretSynced");
    eprintln!(
        "createdOnce: first sync {t_sync:?}, total {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn refresh_policy_on_change_updates_only_when_the_external_secret_changes() {
    let t0 = Instant::now();
    let client = client().await;
    let ns = namespace("es-onchange").await;
    let moto = Moto::shared().await;
    let key = format!("{}/v", moto.unique_prefix("es-onchange"));
    let _ctl = start_backends(&client, &ns, moto, None);
    let first = policy_setup(
        &client,
        &ns,
        moto,
        &key,
        json!({"refreshPolicy": "OnChange"}),
    )
    .await;
    let t_sync = t0.elapsed();

    // A remote change alone (several 1s refresh intervals pass): not picked up.
    sm_put(moto, &key, "two").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let kept = get_secret(&client, &ns, "app").await.unwrap();
    assert_eq!(data(&kept, "v").as_deref(), Some("one"));
    assert_eq!(
        kept.metadata.resource_version, first.metadata.resource_version,
        "OnChange Secret untouched without a change of the ExternalSecret"
    );

    // A label change on the ExternalSecret: synced again.
    let t1 = Instant::now();
    Api::<ExternalSecret>::namespaced(client.clone(), &ns)
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .unwrap();
    wait_value(&client, &ns, "app", "v", "two").await;
    let t_label = t1.elapsed();

    // An annotation change: synced again.
    sm_put(moto, &key, "three").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        data(&get_secret(&client, &ns, "app").await.unwrap(), "v").as_deref(),
        Some("two")
    );
    let t2 = Instant::now();
    force_sync(&client, &ns, "app", "1").await;
    wait_value(&client, &ns, "app", "v", "three").await;
    eprintln!(
        "onChange: first sync {t_sync:?}, after label {t_label:?}, after annotation {:?}",
        t2.elapsed()
    );
}
