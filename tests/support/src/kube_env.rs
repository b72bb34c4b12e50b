//! etcd + kube-apiserver, started like controller-runtime's envtest does.
//!
//! All key material (CA, serving certificate, admin client certificate,
//! service-account signing key) is generated at start-up and lives only in
//! memory and in the servers' temp dirs.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{
    AuthInfo, Cluster, Context as KubeContext, KubeConfigOptions, Kubeconfig, NamedAuthInfo,
    NamedCluster, NamedContext,
};
use kube::{Api, Client, Config};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::sync::OnceCell;

use crate::bins;
use crate::process::{
    ServerProcess, StartError, free_port, random_string, server_dir, start_timeout, unique_name,
    with_port_retry,
};

/// Label put on every namespace created by [`KubeEnv::create_namespace`].
pub const NAMESPACE_LABEL: &str = "refsync.dev/testenv";

/// A running etcd + kube-apiserver with admin (system:masters) client
/// credentials.
pub struct KubeEnv {
    // Declaration order = drop order: the apiserver stops before etcd.
    apiserver: ServerProcess,
    etcd: ServerProcess,
    etcd_url: String,
    server_url: String,
    kubeconfig: Kubeconfig,
    /// Set by [`KubeEnv::start_restartable`]: what a restart in place needs.
    restart: Option<Restart>,
}

/// Everything needed to start etcd and kube-apiserver again on the same
/// ports with the same data and credentials.
struct Restart {
    pki: Pki,
    apiserver_port: u16,
    etcd_prefix: String,
    etcd_client_port: u16,
    etcd_peer_port: u16,
    /// etcd's data directory, inside `_data`'s directory.
    etcd_data: PathBuf,
    // Declared last: dropped (directory deleted) after both servers stopped.
    _data: ServerProcess,
}

impl std::fmt::Debug for KubeEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeEnv")
            .field("server_url", &self.server_url)
            .field("etcd_url", &self.etcd_url)
            .finish_non_exhaustive()
    }
}

static SHARED: OnceCell<Result<KubeEnv, String>> = OnceCell::const_new();

struct Pki {
    ca_pem: String,
    serving_cert_pem: String,
    serving_key_pem: String,
    admin_cert_pem: String,
    admin_key_pem: String,
    sa_public_pem: String,
    sa_private_pem: String,
}

fn generate_pki() -> anyhow::Result<Pki> {
    let ca_key = KeyPair::generate().context("generate CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "refsync-testenv-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).context("self-sign CA")?;
    let ca = Issuer::new(ca_params, ca_key);

    let serving_key = KeyPair::generate()?;
    let mut serving = CertificateParams::new(vec![
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
        "kubernetes.default.svc".to_owned(),
        "10.0.0.1".to_owned(),
    ])?;
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving
        .signed_by(&serving_key, &ca)
        .context("sign serving cert")?;

    let admin_key = KeyPair::generate()?;
    let mut admin = CertificateParams::new(Vec::<String>::new())?;
    admin.distinguished_name.push(DnType::CommonName, "admin");
    admin
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    admin.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_cert = admin
        .signed_by(&admin_key, &ca)
        .context("sign admin cert")?;

    let sa_key = KeyPair::generate()?;
    Ok(Pki {
        ca_pem: ca_cert.pem(),
        serving_cert_pem: serving_cert.pem(),
        serving_key_pem: serving_key.serialize_pem(),
        admin_cert_pem: admin_cert.pem(),
        admin_key_pem: admin_key.serialize_pem(),
        sa_public_pem: sa_key.public_key_pem(),
        sa_private_pem: sa_key.serialize_pem(),
    })
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

fn build_kubeconfig(server_url: &str, pki: &Pki) -> Kubeconfig {
    const NAME: &str = "refsync-testenv";
    Kubeconfig {
        clusters: vec![NamedCluster {
            name: NAME.into(),
            cluster: Some(Cluster {
                server: Some(server_url.to_owned()),
                certificate_authority_data: Some(B64.encode(&pki.ca_pem)),
                ..Default::default()
            }),
            ..Default::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: "admin".into(),
            auth_info: Some(AuthInfo {
                client_certificate_data: Some(B64.encode(&pki.admin_cert_pem)),
                client_key_data: Some(B64.encode(&pki.admin_key_pem).into()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        contexts: vec![NamedContext {
            name: NAME.into(),
            context: Some(KubeContext {
                cluster: NAME.into(),
                user: Some("admin".into()),
                namespace: Some("default".into()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        current_context: Some(NAME.into()),
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        ..Default::default()
    }
}

async fn config_from(kubeconfig: &Kubeconfig) -> anyhow::Result<Config> {
    Config::from_custom_kubeconfig(kubeconfig.clone(), &KubeConfigOptions::default())
        .await
        .context("build kube::Config from the generated kubeconfig")
}

async fn start_etcd() -> anyhow::Result<(ServerProcess, String)> {
    let bin = bins::etcd()?;
    with_port_retry("etcd", || async {
        let (client_port, peer_port) = (free_port()?, free_port()?);
        spawn_etcd(&bin, client_port, peer_port, None).await
    })
    .await
}

/// Starts etcd on the given ports; its data goes to `data_dir` (kept when
/// etcd stops) or, when `None`, into its own temp dir (deleted with it).
async fn spawn_etcd(
    bin: &Path,
    client_port: u16,
    peer_port: u16,
    data_dir: Option<&Path>,
) -> Result<(ServerProcess, String), StartError> {
    let dir = server_dir("etcd")?;
    let data = data_dir.map_or_else(|| dir.join("data"), Path::to_path_buf);
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let args: Vec<OsString> = vec![
        "--name=refsync-testenv".into(),
        format!("--data-dir={}", data.display()).into(),
        format!("--listen-client-urls={client_url}").into(),
        format!("--advertise-client-urls={client_url}").into(),
        format!("--listen-peer-urls={peer_url}").into(),
        format!("--initial-advertise-peer-urls={peer_url}").into(),
        format!("--initial-cluster=refsync-testenv={peer_url}").into(),
        "--unsafe-no-fsync=true".into(),
        "--log-level=warn".into(),
    ];
    let proc = ServerProcess::spawn("etcd", bin, &args, &[], &dir)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .context("reqwest client")?;
    let health = format!("{client_url}/health");
    let res = proc
        .wait_ready(start_timeout(30), || {
            let http = http.clone();
            let health = health.clone();
            async move {
                let body: serde_json::Value = http.get(&health).send().await?.json().await?;
                Ok(body["health"] == "true")
            }
        })
        .await;
    match res {
        Ok(()) => Ok((proc, client_url)),
        Err(e) => Err(StartError::classify(&proc, e)),
    }
}

/// Starts kube-apiserver on `port` against `etcd_url` under `etcd_prefix`
/// and waits for `/readyz`.
async fn spawn_apiserver(
    bin: &Path,
    pki: &Pki,
    etcd_url: &str,
    etcd_prefix: &str,
    port: u16,
    kubeconfig: &Kubeconfig,
) -> Result<ServerProcess, StartError> {
    let dir = server_dir("kube-apiserver")?;
    let server_url = format!("https://127.0.0.1:{port}");
    let p = |f: &str| dir.join(f);
    std::fs::write(p("ca.crt"), &pki.ca_pem).context("write ca.crt")?;
    std::fs::write(p("apiserver.crt"), &pki.serving_cert_pem).context("write apiserver.crt")?;
    write_private(&p("apiserver.key"), &pki.serving_key_pem)?;
    std::fs::write(p("sa.pub"), &pki.sa_public_pem).context("write sa.pub")?;
    write_private(&p("sa.key"), &pki.sa_private_pem)?;
    std::fs::create_dir_all(p("certs")).context("create cert dir")?;
    let path = |f: &str| p(f).display().to_string();
    let mut args: Vec<OsString> = [
        format!("--etcd-servers={etcd_url}"),
        format!("--etcd-prefix={etcd_prefix}"),
        format!("--cert-dir={}", path("certs")),
        format!("--tls-cert-file={}", path("apiserver.crt")),
        format!("--tls-private-key-file={}", path("apiserver.key")),
        format!("--client-ca-file={}", path("ca.crt")),
        format!("--secure-port={port}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        "--authorization-mode=RBAC".into(),
        format!("--service-account-issuer={server_url}"),
        format!("--service-account-key-file={}", path("sa.pub")),
        format!("--service-account-signing-key-file={}", path("sa.key")),
        "--service-cluster-ip-range=10.0.0.0/24".into(),
        "--allow-privileged=true".into(),
        "--disable-admission-plugins=ServiceAccount".into(),
        "--endpoint-reconciler-type=none".into(),
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    args.extend(audit_args(&dir)?);
    let proc = ServerProcess::spawn("kube-apiserver", bin, &args, &[], &dir)?;
    let config = config_from(kubeconfig).await?;
    let client = Client::try_from(config).context("build kube client")?;
    let res = proc
        .wait_ready(start_timeout(120), || {
            let client = client.clone();
            async move {
                let req = http::Request::get("/readyz").body(Vec::new())?;
                let body = client.request_text(req).await?;
                Ok(body.trim() == "ok")
            }
        })
        .await;
    match res {
        Ok(()) => Ok(proc),
        Err(e) => Err(StartError::classify(&proc, e)),
    }
}

impl KubeEnv {
    /// The etcd + kube-apiserver shared by all tests of this test binary,
    /// started on first use. Panics (failing the test) if it cannot start.
    pub async fn shared() -> &'static KubeEnv {
        let r = SHARED
            .get_or_init(|| async { KubeEnv::start().await.map_err(|e| format!("{e:#}")) })
            .await;
        match r {
            Ok(env) => env,
            Err(e) => panic!("refsync-testenv: cannot start etcd + kube-apiserver: {e}"),
        }
    }

    /// Starts a dedicated etcd + kube-apiserver (stopped when dropped).
    pub async fn start() -> anyhow::Result<KubeEnv> {
        Self::start_inner(false).await
    }

    /// Like [`KubeEnv::start`], but both servers can be stopped and started
    /// again in place ([`KubeEnv::stop_apiserver`],
    /// [`KubeEnv::start_apiserver_again`], [`KubeEnv::stop_etcd`],
    /// [`KubeEnv::start_etcd_again`]): same ports, same certificates, and
    /// etcd's data kept in a directory that outlives etcd (deleted, like the
    /// others, when the environment is dropped or the test process exits).
    /// Never restart [`KubeEnv::shared`]: other tests use it.
    pub async fn start_restartable() -> anyhow::Result<KubeEnv> {
        Self::start_inner(true).await
    }

    async fn start_inner(restartable: bool) -> anyhow::Result<KubeEnv> {
        crate::install_crypto_provider();
        let apiserver_bin = bins::kube_apiserver()?;
        let t0 = std::time::Instant::now();
        let (etcd, etcd_url, data) = if restartable {
            let holder = ServerProcess::hold_dir("etcd-data")?;
            let data_dir = holder.dir().join("data");
            let etcd_bin = bins::etcd()?;
            let ((proc, url), ports) = with_port_retry("etcd", || async {
                // A failed attempt may have left a member with other peer URLs.
                let _ = std::fs::remove_dir_all(&data_dir);
                let ports = (free_port()?, free_port()?);
                let started = spawn_etcd(&etcd_bin, ports.0, ports.1, Some(&data_dir)).await?;
                Ok((started, ports))
            })
            .await?;
            (proc, url, Some((holder, data_dir, ports)))
        } else {
            let (proc, url) = start_etcd().await?;
            (proc, url, None)
        };
        let pki = generate_pki()?;
        let etcd_prefix = format!("/refsync-{}", random_string(6));
        let (apiserver, server_url, kubeconfig, apiserver_port) =
            with_port_retry("kube-apiserver", || async {
                let port = free_port()?;
                let server_url = format!("https://127.0.0.1:{port}");
                let kubeconfig = build_kubeconfig(&server_url, &pki);
                let proc = spawn_apiserver(
                    &apiserver_bin,
                    &pki,
                    &etcd_url,
                    &etcd_prefix,
                    port,
                    &kubeconfig,
                )
                .await?;
                Ok((proc, server_url, kubeconfig, port))
            })
            .await?;
        eprintln!(
            "refsync-testenv: etcd {} + kube-apiserver {} ready at {server_url} in {:.1?}",
            bins::ETCD_VERSION,
            bins::KUBE_VERSION,
            t0.elapsed()
        );
        let restart = data.map(
            |(holder, etcd_data, (etcd_client_port, etcd_peer_port))| Restart {
                pki,
                apiserver_port,
                etcd_prefix,
                etcd_client_port,
                etcd_peer_port,
                etcd_data,
                _data: holder,
            },
        );
        Ok(KubeEnv {
            apiserver,
            etcd,
            etcd_url,
            server_url,
            kubeconfig,
            restart,
        })
    }

    fn restart_info(&self) -> anyhow::Result<&Restart> {
        self.restart
            .as_ref()
            .context("this KubeEnv was not started with KubeEnv::start_restartable()")
    }

    /// Stops kube-apiserver (SIGTERM; waits until it exited). etcd keeps
    /// running. Only for [`KubeEnv::start_restartable`] environments.
    pub fn stop_apiserver(&self) -> anyhow::Result<()> {
        self.restart_info()?;
        self.apiserver.stop();
        anyhow::ensure!(
            self.apiserver.exit_status().is_some(),
            "kube-apiserver did not stop"
        );
        Ok(())
    }

    /// Starts kube-apiserver again on the same port with the same
    /// certificates and etcd prefix (the kubeconfig stays valid) and waits
    /// for `/readyz`. Stops the running one first if needed.
    pub async fn start_apiserver_again(&mut self) -> anyhow::Result<()> {
        let bin = bins::kube_apiserver()?;
        let r = self.restart_info()?;
        self.apiserver.stop();
        let proc = spawn_apiserver(
            &bin,
            &r.pki,
            &self.etcd_url,
            &r.etcd_prefix,
            r.apiserver_port,
            &self.kubeconfig,
        )
        .await
        .map_err(|(StartError::PortTaken(e) | StartError::Other(e))| e)
        .context("start kube-apiserver again")?;
        self.apiserver = proc;
        Ok(())
    }

    /// Stops etcd (SIGTERM; waits until it exited); its data is kept.
    /// kube-apiserver keeps running (and fails its requests meanwhile).
    pub fn stop_etcd(&self) -> anyhow::Result<()> {
        self.restart_info()?;
        self.etcd.stop();
        anyhow::ensure!(self.etcd.exit_status().is_some(), "etcd did not stop");
        Ok(())
    }

    /// Starts etcd again on the same ports with the same data and waits for
    /// its `/health`. Stops the running one first if needed.
    pub async fn start_etcd_again(&mut self) -> anyhow::Result<()> {
        let bin = bins::etcd()?;
        let r = self.restart_info()?;
        self.etcd.stop();
        let (proc, _) = spawn_etcd(
            &bin,
            r.etcd_client_port,
            r.etcd_peer_port,
            Some(&r.etcd_data),
        )
        .await
        .map_err(|(StartError::PortTaken(e) | StartError::Other(e))| e)
        .context("start etcd again")?;
        self.etcd = proc;
        Ok(())
    }

    /// kube-apiserver's Prometheus metrics (`GET /metrics` as admin).
    pub async fn apiserver_metrics(&self) -> anyhow::Result<String> {
        let client = self.client().await;
        let req = http::Request::get("/metrics").body(Vec::new())?;
        client
            .request_text(req)
            .await
            .context("GET /metrics from kube-apiserver")
    }

    /// `https://127.0.0.1:PORT`
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// `http://127.0.0.1:PORT` of the backing etcd.
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// In-memory kubeconfig with the CA and the admin client certificate
    /// (user `admin`, group `system:masters`) embedded.
    pub fn kubeconfig(&self) -> Kubeconfig {
        self.kubeconfig.clone()
    }

    /// Writes the kubeconfig (JSON, which is valid YAML) to `path` with
    /// mode 0600, e.g. for `refsync --kubeconfig` / `KUBECONFIG` of a
    /// subprocess.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> anyhow::Result<()> {
        let path = path.as_ref();
        let json =
            serde_json::to_string_pretty(&self.kubeconfig).context("serialize kubeconfig")?;
        if path.exists() {
            std::fs::remove_file(path).with_context(|| format!("replace {}", path.display()))?;
        }
        write_private(path, &json)
    }

    /// A fresh `kube::Config` for the admin user.
    pub async fn config(&self) -> kube::Config {
        crate::install_crypto_provider();
        config_from(&self.kubeconfig)
            .await
            .expect("refsync-testenv: kubeconfig is valid")
    }

    /// A fresh admin `kube::Client`. Create one per test (clients are bound
    /// to the tokio runtime they were first used on).
    pub async fn client(&self) -> Client {
        Client::try_from(self.config().await).expect("refsync-testenv: build kube client")
    }

    /// Creates a namespace `<prefix>-<random>` (labelled
    /// [`NAMESPACE_LABEL`]) and returns its name.
    pub async fn create_namespace(&self, prefix: &str) -> anyhow::Result<String> {
        let name = unique_name(prefix);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(self.client().await)
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("create namespace {name}"))?;
        Ok(name)
    }

    /// The last `n` output lines of kube-apiserver and etcd (for debugging).
    pub fn log_tail(&self, n: usize) -> String {
        format!(
            "--- kube-apiserver ---\n{}\n--- etcd ---\n{}",
            self.apiserver.log_tail(n),
            self.etcd.log_tail(n)
        )
    }
}

/// With `REFSYNC_RUN_DIR` set (the test command sets it), the apiserver writes an audit log of
/// every write to Secrets, ConfigMaps, Events and external-secrets.io objects (request bodies)
/// to `$REFSYNC_RUN_DIR/audit/`: after the whole run, `leak-scan` checks that no Secret value
/// ever appeared in an Event, a status or a ConfigMap the controllers wrote.
fn audit_args(dir: &Path) -> anyhow::Result<Vec<OsString>> {
    let Some(run) = std::env::var_os("REFSYNC_RUN_DIR") else {
        return Ok(Vec::new());
    };
    let audit_dir = Path::new(&run).join("audit");
    std::fs::create_dir_all(&audit_dir).context("create audit log dir")?;
    let policy = dir.join("audit-policy.yaml");
    std::fs::write(
        &policy,
        r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Request
    verbs: [create, update, patch]
    resources:
      - group: ""
        resources: [secrets, configmaps, events]
      - group: events.k8s.io
      - group: external-secrets.io
  - level: None
"#,
    )
    .context("write audit policy")?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "kube-apiserver".into());
    let log = audit_dir.join(format!("{name}.log"));
    Ok(vec![
        format!("--audit-policy-file={}", policy.display()).into(),
        format!("--audit-log-path={}", log.display()).into(),
        "--audit-log-format=json".into(),
        "--audit-log-mode=blocking".into(),
        "--audit-log-maxsize=0".into(),
    ])
}

/// Waits until every CRD in `names` has the condition `Established=True` (its API is served),
/// failing after `timeout` with the name of the first that is not.
pub async fn wait_crds_established(
    client: &Client,
    names: &[String],
    timeout: Duration,
) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = std::time::Instant::now() + timeout;
    for name in names {
        loop {
            let crd = api
                .get(name)
                .await
                .with_context(|| format!("get CRD {name}"))?;
            let established = crd
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if established {
                break;
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "CRD {name} not Established within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
