//! `refsync webhook` registered with the real kube-apiserver: a ValidatingWebhookConfiguration
//! whose `url` points at `https://127.0.0.1:PORT/validate-…`; the webhook (self-managed
//! certificates) injects its CA into `caBundle`; good and bad manifests go through the
//! apiserver, which refuses the bad ones with the webhook's reason; certificates rotate (serving
//! and CA) and the apiserver keeps trusting the webhook.
//!
//! Scoping: the namespaced webhooks select this test's namespace by label, the cluster-scoped
//! ones select objects by label (a namespaceSelector does not apply to cluster-scoped objects);
//! the configuration is deleted at the end of each test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use refsync_controller::webhook::certs::{self, PemPair};
use refsync_testenv::KubeEnv;
use refsync_testenv::process::free_port;
use serde_json::{Value, json};

const LABEL: &str = "refsync.dev/webhook-test";

/// A `refsync webhook` subprocess, killed on drop.
struct Webhook {
    child: Child,
    log: PathBuf,
    health: String,
    metrics: String,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Webhook {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

fn start_webhook(ns: &str, config: &str, mode: &str, extra: &[&str]) -> Webhook {
    let env_dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = env_dir.path().join("kubeconfig");
    let rt = tokio::runtime::Handle::current();
    let env = tokio::task::block_in_place(|| rt.block_on(KubeEnv::shared()));
    env.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let log = env_dir.path().join("webhook.log");
    let port = free_port().expect("port");
    let health = free_port().expect("port");
    let metrics = free_port().expect("port");
    let mut cmd = Command::new(refsync_e2e::refsync_bin());
    cmd.args(["--log-level", "info,refsync=debug", "webhook"])
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--cert-mode", mode, "--cert-namespace", ns])
        .args([
            "--cert-secret",
            "webhook-cert",
            "--webhook-config-name",
            config,
        ])
        .args([
            "--service-name",
            "refsync-webhook",
            "--extra-ip-sans",
            "127.0.0.1",
        ])
        .args(["--extra-dns-names", "localhost"])
        .args(["--health-addr", &format!("127.0.0.1:{health}")])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
    let child = cmd.spawn().expect("spawn refsync webhook");
    Webhook {
        child,
        log,
        health: format!("http://127.0.0.1:{health}"),
        metrics: format!("http://127.0.0.1:{metrics}/metrics"),
        port,
        _dir: env_dir,
    }
}

async fn client() -> Client {
    let client = KubeEnv::shared().await.client().await;
    refsync_e2e::install_crds(&client)
        .await
        .expect("install CRDs");
    client
}

/// A namespace labelled `LABEL=<its name>`, so only this test's webhooks see it.
async fn namespace(client: &Client, prefix: &str) -> String {
    let ns = KubeEnv::shared()
        .await
        .create_namespace(prefix)
        .await
        .expect("namespace");
    Api::<Namespace>::all(client.clone())
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {LABEL: ns}}})),
        )
        .await
        .expect("label namespace");
    ns
}

/// ESO's four webhooks, pointed at `https://127.0.0.1:port` and scoped to `scope`.
fn webhook_configuration(name: &str, port: u16, scope: &str, ca_bundle: Option<&str>) -> Value {
    let hook = |resource: &str, kind: &str, namespaced: bool| {
        let mut w = json!({
            "name": format!("validate.{kind}.external-secrets.io"),
            "rules": [{
                "apiGroups": ["external-secrets.io"], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE", "DELETE"],
                "resources": [resource],
                "scope": if namespaced { "Namespaced" } else { "Cluster" },
            }],
            "clientConfig": {
                "url": format!("https://127.0.0.1:{port}/validate-external-secrets-io-v1-{kind}")
            },
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "timeoutSeconds": 5,
            "failurePolicy": "Fail",
        });
        if let Some(ca) = ca_bundle {
            w["clientConfig"]["caBundle"] =
                json!(base64::engine::general_purpose::STANDARD.encode(ca));
        }
        let selector = json!({"matchLabels": {LABEL: scope}});
        if namespaced {
            w["namespaceSelector"] = selector;
        } else {
            w["objectSelector"] = selector;
        }
        w
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            hook("externalsecrets", "externalsecret", true),
            hook("secretstores", "secretstore", true),
            hook("clustersecretstores", "clustersecretstore", false),
            hook("clusterexternalsecrets", "clusterexternalsecret", false),
        ]
    })
}

/// Deletes the configuration when the test ends, however it ends.
struct ConfigGuard {
    client: Client,
    name: String,
}

impl Drop for ConfigGuard {
    fn drop(&mut self) {
        let api: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        let name = self.name.clone();
        let rt = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| {
            let _ = rt.block_on(api.delete(&name, &DeleteParams::default()));
        });
    }
}

async fn register(
    client: &Client,
    name: &str,
    port: u16,
    scope: &str,
    ca_bundle: Option<&str>,
) -> ConfigGuard {
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply("refsync-e2e").force(),
            &Patch::Apply(webhook_configuration(name, port, scope, ca_bundle)),
        )
        .await
        .expect("create ValidatingWebhookConfiguration");
    ConfigGuard {
        client: client.clone(),
        name: name.to_string(),
    }
}

/// Server-side applies `manifest`; the apiserver's error text on refusal.
async fn apply(client: &Client, manifest: Value) -> Result<(), String> {
    let kind = manifest["kind"].as_str().expect("kind").to_string();
    let name = manifest["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let gvk = GroupVersionKind::gvk("external-secrets.io", "v1", &kind);
    let ar = ApiResource::from_gvk_with_plural(&gvk, &format!("{}s", kind.to_lowercase()));
    let api: Api<DynamicObject> = match manifest["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    api.patch(
        &name,
        &PatchParams::apply("refsync-e2e").force(),
        &Patch::Apply(&manifest),
    )
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

async fn delete(client: &Client, kind: &str, ns: Option<&str>, name: &str) -> Result<(), String> {
    let gvk = GroupVersionKind::gvk("external-secrets.io", "v1", kind);
    let ar = ApiResource::from_gvk_with_plural(&gvk, &format!("{}s", kind.to_lowercase()));
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    api.delete(name, &DeleteParams::default())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn es(ns: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"name": name, "namespace": ns}, "spec": spec
    })
}

fn store(ns: &str, name: &str, provider: Value) -> Value {
    json!({
        "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
        "metadata": {"name": name, "namespace": ns}, "spec": {"provider": provider}
    })
}

fn good_es_spec() -> Value {
    json!({
        "secretStoreRef": {"name": "fake", "kind": "SecretStore"},
        "target": {"creationPolicy": "Owner", "deletionPolicy": "Delete"},
        "data": [{"secretKey": "a", "remoteRef": {"key": "k"}}],
        "dataFrom": [{"find": {"name": {"regexp": "^db-.*"}},
                      "rewrite": [{"regexp": {"source": "db-(.*)", "target": "$1"}}]}]
    })
}

async fn assert_refused(client: &Client, manifest: Value, webhook: &str, field: &str) {
    let what = format!(
        "{} {}",
        manifest["kind"].as_str().unwrap_or_default(),
        manifest["metadata"]["name"].as_str().unwrap_or_default()
    );
    let err = apply(client, manifest)
        .await
        .err()
        .unwrap_or_else(|| panic!("{what} was admitted; expected a refusal naming {field}"));
    let prefix = format!(
        "admission webhook \"validate.{webhook}.external-secrets.io\" denied the request: "
    );
    assert!(
        err.contains(&prefix) && err.contains(field),
        "{what}: refusal should come from {webhook} and name {field:?}; got: {err}"
    );
}

async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, wh: &Webhook, mut f: F) -> T
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
            "timed out after {timeout:?} waiting for {what}\n--- webhook log ---\n{}",
            wh.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn pem_ders(pem: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in pem.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN CERTIFICATE") {
            cur = Some(String::new());
        } else if line.starts_with("-----END CERTIFICATE") {
            if let Some(b64) = cur.take() {
                out.push(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .expect("PEM base64"),
                );
            }
        } else if let Some(c) = cur.as_mut() {
            c.push_str(line);
        }
    }
    out
}

fn secret_text(s: &Secret, key: &str) -> String {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

async fn cert_secret(client: &Client, ns: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt("webhook-cert")
        .await
        .ok()
        .flatten()
}

/// The caBundles of the configuration's webhooks (all must be set).
async fn ca_bundles(client: &Client, name: &str) -> Option<Vec<String>> {
    let cfg = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get(name)
        .await
        .ok()?;
    cfg.webhooks
        .unwrap_or_default()
        .iter()
        .map(|w| {
            w.client_config
                .ca_bundle
                .as_ref()
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .filter(|b| !b.is_empty())
        })
        .collect()
}

/// The DER of the certificate the webhook presents to a new connection.
async fn served_cert(port: u16) -> Option<Vec<u8>> {
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let resp = http
        .get(format!("https://127.0.0.1:{port}/"))
        .send()
        .await
        .ok()?;
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate().map(<[u8]>::to_vec))
}

/// Waits for readiness, the Secret, and the CA injected into every webhook of the configuration.
async fn wait_started(client: &Client, wh: &Webhook, ns: &str, config: &str) -> Secret {
    let health = wh.health.clone();
    wait_until("the webhook's /readyz", Duration::from_secs(60), wh, || {
        let url = format!("{health}/readyz");
        async move {
            let r = reqwest::get(url).await.ok()?;
            r.status().is_success().then_some(())
        }
    })
    .await;
    wait_until(
        "caBundle = the Secret's CA",
        Duration::from_secs(30),
        wh,
        || async {
            let s = cert_secret(client, ns).await?;
            let ca = secret_text(&s, "ca.crt");
            let bundles = ca_bundles(client, config).await?;
            (!ca.is_empty() && bundles.iter().all(|b| pem_ders(b) == pem_ders(&ca))).then_some(s)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_refuses_bad_manifests_through_the_apiserver() {
    let client = client().await;
    let ns = namespace(&client, "wh").await;
    let other_ns = KubeEnv::shared()
        .await
        .create_namespace("wh-unscoped")
        .await
        .expect("namespace");
    let config = format!("refsync-webhook-{ns}");
    let wh = start_webhook(&ns, &config, "self", &[]);
    let t_start = Instant::now();
    let _guard = register(&client, &config, wh.port, &ns, None).await;
    let secret = wait_started(&client, &wh, &ns, &config).await;
    assert_eq!(
        secret.type_.as_deref(),
        Some("kubernetes.io/tls"),
        "certificate Secret type"
    );
    for key in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
        assert!(!secret_text(&secret, key).is_empty(), "Secret lacks {key}");
    }
    assert_eq!(
        served_cert(wh.port).await,
        pem_ders(&secret_text(&secret, "tls.crt"))
            .into_iter()
            .next(),
        "the webhook serves the Secret's tls.crt"
    );

    // A `helm upgrade` / `kubectl apply` that resets caBundle is undone by the webhook's watch.
    let ca = secret_text(&secret, "ca.crt");
    let names: Vec<String> = webhook_configuration(&config, wh.port, &ns, None)["webhooks"]
        .as_array()
        .expect("webhooks")
        .iter()
        .map(|w| w["name"].as_str().unwrap_or_default().to_string())
        .collect();
    let reset = json!({"webhooks": names.iter().map(|n| json!({
        "name": n, "clientConfig": {"caBundle": ""}
    })).collect::<Vec<_>>()});
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .patch(&config, &PatchParams::default(), &Patch::Strategic(&reset))
        .await
        .expect("reset caBundle");
    let t_reset = Instant::now();
    wait_until(
        "caBundle re-injected",
        Duration::from_secs(20),
        &wh,
        || async {
            let bundles = ca_bundles(&client, &config).await?;
            bundles
                .iter()
                .all(|b| pem_ders(b) == pem_ders(&ca))
                .then_some(())
        },
    )
    .await;
    let reinjected = t_reset.elapsed();

    // Good manifests are admitted.
    let t0 = Instant::now();
    apply(&client, store(&ns, "fake", json!({"fake": {"data": []}})))
        .await
        .expect("good SecretStore admitted");
    apply(&client, es(&ns, "good", good_es_spec()))
        .await
        .expect("good ExternalSecret admitted");
    let mut merge = good_es_spec();
    merge["target"] = json!({"creationPolicy": "Merge", "deletionPolicy": "Merge"});
    apply(&client, es(&ns, "good-merge", merge))
        .await
        .expect("Merge/Merge admitted");
    let css = |name: &str, provider: Value, conditions: Value| {
        json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
            "metadata": {"name": name, "labels": {LABEL: ns}},
            "spec": {"provider": provider, "conditions": conditions}
        })
    };
    let css_name = format!("{ns}-css");
    apply(
        &client,
        css(
            &css_name,
            json!({"fake": {"data": []}}),
            json!([{"namespaceRegexes": ["^wh-.*"]}]),
        ),
    )
    .await
    .expect("good ClusterSecretStore admitted");
    let ces = |name: &str, spec: Value| {
        json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ClusterExternalSecret",
            "metadata": {"name": name, "labels": {LABEL: ns}},
            "spec": {"externalSecretSpec": spec, "namespaces": [ns], "refreshTime": "1m"}
        })
    };
    let ces_name = format!("{ns}-ces");
    apply(&client, ces(&ces_name, good_es_spec()))
        .await
        .expect("good ClusterExternalSecret admitted");
    let admitted = t0.elapsed();

    // Bad ExternalSecrets are refused with the field named.
    let bad = |f: &dyn Fn(&mut Value)| {
        let mut s = good_es_spec();
        f(&mut s);
        s
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "delete-merge",
            bad(&|s| s["target"] = json!({"creationPolicy": "Merge", "deletionPolicy": "Delete"})),
            "spec.target: deletionPolicy=Delete must not be used when creationPolicy=Merge",
        ),
        (
            "merge-none",
            bad(&|s| s["target"] = json!({"creationPolicy": "None", "deletionPolicy": "Merge"})),
            "spec.target: deletionPolicy=Merge must not be used with creationPolicy=None",
        ),
        (
            "duplicate-key",
            bad(&|s| {
                s["data"] = json!([{"secretKey": "a", "remoteRef": {"key": "k"}},
                                   {"secretKey": "a", "remoteRef": {"key": "k2"}}])
            }),
            "spec.data[1].secretKey: duplicate secretKey \"a\"",
        ),
        (
            "find-regexp",
            bad(&|s| s["dataFrom"][0]["find"]["name"]["regexp"] = json!("([")),
            "spec.dataFrom[0].find.name.regexp",
        ),
        (
            "rewrite-regexp",
            bad(&|s| s["dataFrom"][0]["rewrite"][0]["regexp"]["source"] = json!("*x")),
            "spec.dataFrom[0].rewrite[0].regexp.source",
        ),
        (
            "template",
            bad(&|s| s["target"]["template"] = json!({"data": {"url": "{{ .a "}})),
            "spec.target.template.data.url",
        ),
        (
            "template-from",
            bad(&|s| {
                s["target"]["template"] =
                    json!({"templateFrom": [{"literal": "{{ .a | nosuchfunction }}"}]})
            }),
            "spec.target.template.templateFrom[0].literal",
        ),
        (
            "transform",
            bad(&|s| {
                s["dataFrom"][0]["rewrite"] = json!([{"transform": {"template": "{{ .value "}}])
            }),
            "spec.dataFrom[0].rewrite[0].transform.template",
        ),
        (
            "no-data",
            bad(&|s| {
                s.as_object_mut().map(|o| {
                    o.remove("data");
                    o.remove("dataFrom")
                });
            }),
            "spec: either data or dataFrom must be set",
        ),
        (
            "bootstrap-token",
            bad(&|s| s["target"]["template"] = json!({"type": "bootstrap.kubernetes.io/token"})),
            "spec.target.template.type",
        ),
    ];
    for (name, spec, field) in cases {
        assert_refused(&client, es(&ns, name, spec), "externalsecret", field).await;
    }
    // An update that breaks a good ExternalSecret is refused too.
    let mut broken = good_es_spec();
    broken["target"] = json!({"creationPolicy": "Merge", "deletionPolicy": "Delete"});
    assert_refused(
        &client,
        es(&ns, "good", broken.clone()),
        "externalsecret",
        "spec.target",
    )
    .await;

    // Stores: unsupported provider, two providers, none, bad condition regexp.
    assert_refused(
        &client,
        store(&ns, "azure", json!({"azurekv": {"vaultUrl": "https://x"}})),
        "secretstore",
        "spec.provider.azurekv: provider azurekv is not supported by refsync",
    )
    .await;
    assert_refused(
        &client,
        store(
            &ns,
            "two",
            json!({"fake": {"data": []}, "vault": {"server": "http://v"}}),
        ),
        "secretstore",
        "spec.provider: exactly one provider must be configured",
    )
    .await;
    assert_refused(
        &client,
        store(&ns, "none", json!({})),
        "secretstore",
        "spec.provider: no provider is configured",
    )
    .await;
    assert_refused(
        &client,
        css(
            &format!("{ns}-css-bad"),
            json!({"fake": {"data": []}}),
            json!([{"namespaceRegexes": ["(["]}]),
        ),
        "clustersecretstore",
        "spec.conditions[0].namespaceRegexes[0]",
    )
    .await;
    assert_refused(
        &client,
        css(&format!("{ns}-css-none"), json!({}), json!([])),
        "clustersecretstore",
        "spec.provider: no provider is configured",
    )
    .await;
    assert_refused(
        &client,
        ces(&format!("{ns}-ces-bad"), broken.clone()),
        "clusterexternalsecret",
        "spec.externalSecretSpec.target: deletionPolicy=Delete",
    )
    .await;

    // DELETE is never refused.
    delete(&client, "ExternalSecret", Some(&ns), "good-merge")
        .await
        .expect("delete admitted");
    delete(&client, "ClusterExternalSecret", None, &ces_name)
        .await
        .expect("delete admitted");
    delete(&client, "ClusterSecretStore", None, &css_name)
        .await
        .expect("delete admitted");

    // Outside the configuration's scope the webhook is not consulted.
    apply(&client, es(&other_ns, "unscoped", broken))
        .await
        .expect("a namespace without the label is not subject to this test's webhook");

    // Metrics count the answers.
    let text = reqwest::get(&wh.metrics)
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    for series in [
        "controller_runtime_webhook_requests_total{code=\"200\",webhook=\"externalsecret\"}",
        "refsync_webhook_denied_total{webhook=\"secretstore\"}",
        "controller_runtime_webhook_latency_seconds_bucket",
        "refsync_webhook_certificate_expiry_timestamp_seconds",
    ] {
        assert!(text.contains(series), "/metrics lacks {series}:\n{text}");
    }
    let log = wh.log();
    assert!(log.contains("admission refused"), "refusals are logged");
    eprintln!(
        "webhook e2e: caBundle re-injected {reinjected:.0?} after a reset; 5 good objects admitted through the apiserver in {admitted:.0?}; test body {:.1?}",
        t_start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_and_the_apiserver_keeps_trusting_the_webhook() {
    let client = client().await;
    let ns = namespace(&client, "whrot").await;
    let config = format!("refsync-webhook-{ns}");
    // Serving certificates live 12 s and are replaced 8 s before expiry (every ~4 s); the CA
    // lives 24 s, so it is replaced ~16 s in.
    let wh = start_webhook(
        &ns,
        &config,
        "self",
        &[
            "--cert-validity",
            "12s",
            "--cert-renew-before",
            "8s",
            "--ca-validity",
            "24s",
        ],
    );
    let t_start = Instant::now();
    let _guard = register(&client, &config, wh.port, &ns, None).await;
    let first = wait_started(&client, &wh, &ns, &config).await;
    let first_leaf = secret_text(&first, "tls.crt");
    let first_ca = secret_text(&first, "ca.crt");
    apply(&client, store(&ns, "fake", json!({"fake": {"data": []}})))
        .await
        .expect("store admitted");

    // The serving certificate changes; the new one is served and the apiserver still calls
    // the webhook (admits good, refuses bad).
    let served_first = served_cert(wh.port).await.expect("served certificate");
    let served_next = wait_until(
        "a new serving certificate",
        Duration::from_secs(20),
        &wh,
        || async {
            let s = served_cert(wh.port).await?;
            (s != served_first).then_some(s)
        },
    )
    .await;
    let now = cert_secret(&client, &ns).await.expect("secret");
    assert_ne!(secret_text(&now, "tls.crt"), first_leaf, "tls.crt rotated");
    assert_ne!(
        served_next,
        pem_ders(&first_leaf)[0],
        "the rotated certificate is served"
    );
    apply(&client, es(&ns, "after-leaf-rotation", good_es_spec()))
        .await
        .expect("admitted after the serving certificate rotated");
    let mut bad = good_es_spec();
    bad["target"] = json!({"creationPolicy": "Merge", "deletionPolicy": "Delete"});
    assert_refused(
        &client,
        es(&ns, "bad-after-leaf-rotation", bad.clone()),
        "externalsecret",
        "spec.target",
    )
    .await;

    // The CA rotates: caBundle then holds the new CA and the previous one.
    let rotated = wait_until("a new CA", Duration::from_secs(30), &wh, || async {
        let s = cert_secret(&client, &ns).await?;
        (secret_text(&s, "ca.crt") != first_ca).then_some(s)
    })
    .await;
    let new_ca = secret_text(&rotated, "ca.crt");
    let want: Vec<Vec<u8>> = pem_ders(&new_ca)
        .into_iter()
        .chain(pem_ders(&first_ca))
        .collect();
    wait_until(
        "caBundle = new CA + previous CA",
        Duration::from_secs(15),
        &wh,
        || async {
            let bundles = ca_bundles(&client, &config).await?;
            bundles
                .iter()
                .all(|b| pem_ders(b).starts_with(&want[..1]) && pem_ders(b).contains(&want[1]))
                .then_some(())
        },
    )
    .await;
    // Served certificate chains to the new CA: it is the Secret's current tls.crt.
    wait_until(
        "the certificate signed by the new CA served",
        Duration::from_secs(15),
        &wh,
        || async {
            let s = cert_secret(&client, &ns).await?;
            if secret_text(&s, "ca.crt") != new_ca {
                return Some(()); // rotated again meanwhile; good enough
            }
            let leaf = pem_ders(&secret_text(&s, "tls.crt")).into_iter().next()?;
            (served_cert(wh.port).await? == leaf).then_some(())
        },
    )
    .await;
    apply(&client, es(&ns, "after-ca-rotation", good_es_spec()))
        .await
        .expect("admitted after the CA rotated");
    assert_refused(
        &client,
        es(&ns, "bad-after-ca-rotation", bad),
        "externalsecret",
        "spec.target",
    )
    .await;
    let log = wh.log();
    assert!(
        !log.contains("BEGIN PRIVATE KEY") && !log.contains("BEGIN EC PRIVATE KEY"),
        "private keys never reach the log"
    );
    eprintln!(
        "webhook e2e: serving certificate and CA rotation through the apiserver in {:.1?}",
        t_start.elapsed()
    );
}

fn write_pair(dir: &std::path::Path, pair: &PemPair) {
    // As the kubelet updates a mounted Secret: write aside, then rename into place.
    for (name, text) in [("tls.key", &pair.key), ("tls.crt", &pair.cert)] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, dir.join(name)).expect("rename");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provided_certificates_are_served_and_reloaded() {
    let client = client().await;
    let ns = namespace(&client, "whprov").await;
    let config = format!("refsync-webhook-{ns}");
    let ca = certs::generate_ca(Duration::from_secs(3600)).expect("CA");
    let ca_end = certs::inspect(&ca.cert).expect("CA").not_after;
    let issue = || {
        certs::issue_serving(
            &ca,
            ca_end,
            &["localhost".to_string()],
            &["127.0.0.1".parse().expect("ip")],
            Duration::from_secs(3600),
        )
        .expect("serving certificate")
    };
    let dir = tempfile::tempdir().expect("cert dir");
    let first = issue();
    write_pair(dir.path(), &first);
    let cert_dir = dir.path().display().to_string();
    let wh = start_webhook(
        &ns,
        &config,
        "provided",
        &["--cert-dir", &cert_dir, "--cert-reload-interval", "200ms"],
    );
    let t_start = Instant::now();
    // Provided mode injects nothing: caBundle comes with the configuration (cert-manager's
    // CA injector does this in a cluster).
    let _guard = register(&client, &config, wh.port, &ns, Some(&ca.cert)).await;
    let served = |want: Vec<u8>| {
        let port = wh.port;
        move || {
            let want = want.clone();
            async move { (served_cert(port).await? == want).then_some(()) }
        }
    };
    wait_until(
        "the provided certificate served",
        Duration::from_secs(60),
        &wh,
        served(pem_ders(&first.cert)[0].clone()),
    )
    .await;
    apply(&client, store(&ns, "fake", json!({"fake": {"data": []}})))
        .await
        .expect("store admitted");
    let mut bad = good_es_spec();
    bad["target"] = json!({"creationPolicy": "None", "deletionPolicy": "Merge"});
    assert_refused(
        &client,
        es(&ns, "bad", bad.clone()),
        "externalsecret",
        "spec.target",
    )
    .await;

    // cert-manager renews: the new pair is picked up without a restart.
    let second = issue();
    write_pair(dir.path(), &second);
    wait_until(
        "the renewed certificate served",
        Duration::from_secs(10),
        &wh,
        served(pem_ders(&second.cert)[0].clone()),
    )
    .await;
    apply(&client, es(&ns, "good", good_es_spec()))
        .await
        .expect("admitted with the renewed certificate");

    // A broken pair is refused and the last good one kept.
    let reported = wh
        .log()
        .matches("cannot load the serving certificate")
        .count();
    std::fs::write(dir.path().join("tls.key"), "not a key").expect("write");
    wait_until(
        "the broken pair reported",
        Duration::from_secs(10),
        &wh,
        || async {
            (wh.log()
                .matches("cannot load the serving certificate")
                .count()
                > reported)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        served_cert(wh.port).await,
        Some(pem_ders(&second.cert)[0].clone())
    );
    assert_refused(
        &client,
        es(&ns, "bad2", bad),
        "externalsecret",
        "spec.target",
    )
    .await;
    eprintln!(
        "webhook e2e: provided certificates served and reloaded in {:.1?}",
        t_start.elapsed()
    );
}
