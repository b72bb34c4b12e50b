//! External Secrets Operator (ESO) as a real process next to a [`KubeEnv`]: for the
//! migration tests (ESO ⇄ refsync on one cluster) and the ESO benchmark.
//!
//! The binary and its CRDs are the pinned versions built by `tests/servers/install.sh`
//! (`bin/external-secrets-v0.16.2`, `eso-crds-v0.16.2/`). ESO runs only its controller
//! manager (the root command): no webhook, no cert-controller, leader election off, metrics on
//! a free 127.0.0.1 port, the admin kubeconfig passed through `KUBECONFIG` (ESO's root command
//! does not register controller-runtime's `--kubeconfig` flag).
//!
//! ESO's CRDs have the same names as refsync's (`externalsecrets.external-secrets.io`, …):
//! apply them with [`install_eso_crds`] on a private `KubeEnv::start()` when a test needs the
//! CRD set a real ESO cluster has, so that other tests of the binary keep refsync's.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::bins;
use crate::kube_env::KubeEnv;
use crate::process::{ServerProcess, StartError, free_port, server_dir, with_port_retry};

/// Pinned ESO version; keep in sync with `tests/servers/install.sh`.
pub const ESO_VERSION: &str = "0.16.2";

/// ESO's field manager for the Secret of ExternalSecret `es_name` (`fieldOwnerTemplate`).
pub fn eso_field_manager(es_name: &str) -> String {
    format!("externalsecrets.external-secrets.io/{es_name}")
}

/// The ESO binary (`$REFSYNC_ESO` overrides the default location).
pub fn eso_bin() -> anyhow::Result<PathBuf> {
    let (path, origin) = match std::env::var_os("REFSYNC_ESO") {
        Some(p) => (PathBuf::from(p), "from $REFSYNC_ESO"),
        None => (
            bins::cache_dir().join(format!("bin/external-secrets-v{ESO_VERSION}")),
            "default location; override with $REFSYNC_ESO",
        ),
    };
    if !path.is_file() {
        bail!(
            "External Secrets Operator v{ESO_VERSION} binary not found at {} ({origin}). Run \
             `tests/servers/install.sh` (or `tests/run`) to build it from the Go module proxy.",
            path.display()
        );
    }
    Ok(path)
}

/// The directory with ESO's CRD manifests (`$REFSYNC_ESO_CRDS` overrides).
pub fn eso_crds_dir() -> anyhow::Result<PathBuf> {
    let (path, origin) = match std::env::var_os("REFSYNC_ESO_CRDS") {
        Some(p) => (PathBuf::from(p), "from $REFSYNC_ESO_CRDS"),
        None => (
            bins::cache_dir().join(format!("eso-crds-v{ESO_VERSION}")),
            "default location; override with $REFSYNC_ESO_CRDS",
        ),
    };
    if !path.is_dir() {
        bail!(
            "ESO v{ESO_VERSION} CRDs not found at {} ({origin}). Run `tests/servers/install.sh`.",
            path.display()
        );
    }
    Ok(path)
}

/// Server-side applies every ESO CRD (`<group>_<plural>.yaml` in [`eso_crds_dir`], sent as
/// YAML: the apiserver decodes `application/apply-patch+yaml` itself) under field manager
/// `refsync-testenv-eso` and waits until each is Established. Returns the CRD names.
pub async fn install_eso_crds(client: &kube::Client) -> anyhow::Result<Vec<String>> {
    let dir = eso_crds_dir()?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        // kustomization.yaml sits next to the CRDs.
        .filter(|p| {
            std::fs::read_to_string(p).is_ok_and(|t| t.contains("kind: CustomResourceDefinition"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no CRD manifests in {}", dir.display());
    }
    let mut names = Vec::new();
    for file in &files {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .context("CRD file name")?;
        let Some((group, plural)) = stem.split_once('_') else {
            bail!(
                "{}: expected a `<group>_<plural>.yaml` CRD file name",
                file.display()
            );
        };
        let name = format!("{plural}.{group}");
        let body = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
        let req = http::Request::patch(format!(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}?fieldManager=refsync-testenv-eso&force=true"
        ))
        .header(http::header::CONTENT_TYPE, "application/apply-patch+yaml")
        .body(body)?;
        client
            .request_text(req)
            .await
            .with_context(|| format!("apply CRD {name} from {}", file.display()))?;
        names.push(name);
    }
    crate::kube_env::wait_crds_established(client, &names, Duration::from_secs(60))
        .await
        .context("ESO CRDs")?;
    Ok(names)
}

/// How to run ESO. Defaults are ESO's own flag defaults, except what a test needs
/// (`--enable-leader-election=false`, free metrics port).
#[derive(Debug, Clone)]
pub struct EsoOptions {
    /// `--concurrent` (reconciles at once per controller; ESO's default 1).
    pub concurrent: u32,
    /// `--client-qps` (ESO's default 50).
    pub client_qps: f32,
    /// `--client-burst` (ESO's default 100).
    pub client_burst: u32,
    /// `--controller-class` (ESO's default `default`).
    pub controller_class: Option<String>,
    /// `--namespace`: watch only this namespace.
    pub namespace: Option<String>,
    /// `--enable-cluster-store-reconciler` (ESO's default true).
    pub enable_cluster_store_reconciler: bool,
    /// `--loglevel` (`info` logs one line per synced ExternalSecret).
    pub log_level: String,
    /// Further flags, passed as they are.
    pub extra_args: Vec<String>,
    /// How long to wait for the ExternalSecret controller's workers to start.
    pub start_timeout: Duration,
}

impl Default for EsoOptions {
    fn default() -> Self {
        Self {
            concurrent: 1,
            client_qps: 50.0,
            client_burst: 100,
            controller_class: None,
            namespace: None,
            enable_cluster_store_reconciler: true,
            log_level: "info".into(),
            extra_args: Vec::new(),
            start_timeout: Duration::from_secs(90),
        }
    }
}

impl EsoOptions {
    fn args(&self, metrics_addr: &str) -> Vec<OsString> {
        let mut args: Vec<String> = vec![
            format!("--metrics-addr={metrics_addr}"),
            "--enable-leader-election=false".into(),
            format!("--concurrent={}", self.concurrent.max(1)),
            format!("--client-qps={}", self.client_qps),
            format!("--client-burst={}", self.client_burst),
            format!(
                "--enable-cluster-store-reconciler={}",
                self.enable_cluster_store_reconciler
            ),
            format!("--loglevel={}", self.log_level),
            "--zap-time-encoding=iso8601".into(),
        ];
        if let Some(c) = &self.controller_class {
            args.push(format!("--controller-class={c}"));
        }
        if let Some(ns) = &self.namespace {
            args.push(format!("--namespace={ns}"));
        }
        args.extend(self.extra_args.iter().cloned());
        args.into_iter().map(OsString::from).collect()
    }
}

/// A running ESO controller manager (stopped when dropped or by [`Eso::stop`]).
pub struct Eso {
    proc: ServerProcess,
    metrics_addr: String,
}

impl std::fmt::Debug for Eso {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eso")
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

/// Whether ESO's ExternalSecret controller has started its workers (its caches are synced).
fn workers_started(log: &str) -> bool {
    log.lines()
        .any(|l| l.contains("Starting workers") && l.contains("\"controller\":\"externalsecret\""))
}

impl Eso {
    /// Starts ESO against `kube` and waits until its ExternalSecret controller runs (metrics
    /// served and the controller's workers started, or a reconcile already counted). The
    /// CRDs must be installed first ([`install_eso_crds`]): ESO exits without them.
    pub async fn start(kube: &KubeEnv, opts: EsoOptions) -> anyhow::Result<Eso> {
        let bin = eso_bin()?;
        let t0 = std::time::Instant::now();
        let eso = with_port_retry("external-secrets", || async {
            let dir = server_dir("eso")?;
            let kubeconfig = dir.join("kubeconfig");
            kube.write_kubeconfig(&kubeconfig)?;
            let port = free_port()?;
            let metrics_addr = format!("127.0.0.1:{port}");
            let args = opts.args(&metrics_addr);
            let envs = [("KUBECONFIG", OsString::from(&kubeconfig))];
            let proc = ServerProcess::spawn("external-secrets", &bin, &args, &envs, &dir)?;
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .context("reqwest client")?;
            let url = format!("http://{metrics_addr}/metrics");
            let res = proc
                .wait_ready(opts.start_timeout, || {
                    let http = http.clone();
                    let url = url.clone();
                    let started = workers_started(&proc.log_tail(usize::MAX));
                    async move {
                        let text = http.get(&url).send().await?.text().await?;
                        let reconciled = metric_sum(
                            &text,
                            "controller_runtime_reconcile_total",
                            &[("controller", "externalsecret")],
                        ) > 0.0;
                        Ok(started || reconciled)
                    }
                })
                .await;
            match res {
                Ok(()) => Ok(Eso {
                    proc,
                    metrics_addr: metrics_addr.clone(),
                }),
                Err(e) => Err(StartError::classify(&proc, e)),
            }
        })
        .await?;
        eprintln!(
            "refsync-testenv: external-secrets v{ESO_VERSION} ready (metrics {}) in {:.1?}",
            eso.metrics_addr,
            t0.elapsed()
        );
        Ok(eso)
    }

    /// `127.0.0.1:PORT` of ESO's `/metrics`.
    pub fn metrics_addr(&self) -> &str {
        &self.metrics_addr
    }

    /// The text of ESO's `/metrics`.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let url = format!("http://{}/metrics", self.metrics_addr);
        let text = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?
            .error_for_status()?
            .text()
            .await?;
        Ok(text)
    }

    /// Stops ESO (SIGTERM, SIGKILL after 5 s) and waits for it to exit.
    pub fn stop(&self) {
        self.proc.stop();
    }

    /// `Some(status)` once ESO exited.
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        self.proc.exit_status()
    }

    /// The last `n` lines of ESO's log (JSON lines).
    pub fn log_tail(&self, n: usize) -> String {
        self.proc.log_tail(n)
    }

    /// Whether a kept log line contains `needle`.
    pub fn log_contains(&self, needle: &str) -> bool {
        self.proc.log_contains(needle)
    }
}

/// Sum of the samples of metric `name` (Prometheus text format) whose labels include every
/// `(label, value)` of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (label_part, value) = match rest.strip_prefix('{') {
                Some(r) => {
                    let (lp, v) = r.split_once('}')?;
                    (lp, v)
                }
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            let ok = labels
                .iter()
                .all(|(k, v)| label_part.contains(&format!("{k}=\"{v}\"")));
            if !ok {
                return None;
            }
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        // (`sum()` of no samples is -0.0)
        .fold(0.0, |a, b| a + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_filters_by_labels() {
        let text = "# HELP x\ncontroller_runtime_reconcile_total{controller=\"externalsecret\",result=\"success\"} 3\n\
                    controller_runtime_reconcile_total{controller=\"clusterexternalsecret\",result=\"success\"} 5\n\
                    controller_runtime_reconcile_total{controller=\"externalsecret\",result=\"error\"} 1\n\
                    other 7\n";
        assert_eq!(
            metric_sum(
                text,
                "controller_runtime_reconcile_total",
                &[("controller", "externalsecret")]
            ),
            4.0
        );
        assert_eq!(metric_sum(text, "other", &[]), 7.0);
    }

    #[test]
    fn workers_started_needs_the_externalsecret_controller() {
        assert!(!workers_started(
            r#"{"msg":"Starting workers","controller":"clusterexternalsecret","worker count":1}"#
        ));
        assert!(workers_started(
            r#"{"msg":"Starting workers","controller":"externalsecret","worker count":1}"#
        ));
    }
}
