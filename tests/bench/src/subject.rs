//! The subjects: `refsync controller` (subprocess), ESO v0.16.2 (through refsync-testenv's
//! launcher), and the bare-client limit (this binary as a worker subprocess).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use refsync_testenv::KubeEnv;
use refsync_testenv::eso::{ESO_VERSION, Eso, EsoOptions};

use crate::procstat::{self, ProcStat};
use crate::workload::Owner;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SubjectKind {
    /// `refsync controller`, leader election off.
    Refsync,
    /// ESO v0.16.2 at its defaults (`--concurrent 1`, client QPS 50, burst 100).
    Eso,
    /// ESO v0.16.2 with `--concurrent 10 --client-qps 500 --client-burst 1000`.
    EsoTuned,
    /// A bare client making only the writes.
    Limit,
}

impl SubjectKind {
    pub fn name(self) -> &'static str {
        match self {
            SubjectKind::Refsync => "refsync",
            SubjectKind::Eso => "eso",
            SubjectKind::EsoTuned => "eso-tuned",
            SubjectKind::Limit => "limit",
        }
    }

    pub fn is_eso(self) -> bool {
        matches!(self, SubjectKind::Eso | SubjectKind::EsoTuned)
    }

    fn eso_options(self) -> EsoOptions {
        match self {
            SubjectKind::EsoTuned => EsoOptions {
                concurrent: 10,
                client_qps: 500.0,
                client_burst: 1000,
                ..EsoOptions::default()
            },
            _ => EsoOptions::default(),
        }
    }
}

pub fn refsync_bin(args: &crate::Args) -> PathBuf {
    if let Some(p) = &args.refsync_bin {
        return p.clone();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("release/refsync")
}

fn command_output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub fn versions(subject: SubjectKind, args: &crate::Args) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    v.insert(
        "kube-apiserver".into(),
        refsync_testenv::bins::KUBE_VERSION.into(),
    );
    v.insert("etcd".into(), refsync_testenv::bins::ETCD_VERSION.into());
    v.insert(
        "openbao".into(),
        refsync_testenv::bins::OPENBAO_VERSION.into(),
    );
    let rev = std::env::var("REFSYNC_BENCH_REV")
        .unwrap_or_else(|_| command_output("git", &["rev-parse", "--short", "HEAD"]));
    v.insert("git".into(), rev);
    match subject {
        SubjectKind::Refsync => {
            let bin = refsync_bin(args);
            v.insert(
                "refsync".into(),
                command_output(&bin.display().to_string(), &["--version"]),
            );
        }
        SubjectKind::Eso | SubjectKind::EsoTuned => {
            v.insert("external-secrets".into(), ESO_VERSION.into());
        }
        SubjectKind::Limit => {}
    }
    v
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

enum Inner {
    Refsync {
        child: Child,
        log: PathBuf,
        /// Started under `--subject-wrapper`: `child` is the wrapper, `pid` the controller.
        wrapped: bool,
    },
    Eso(Box<Eso>),
    Limit {
        child: Child,
        done: Option<ProcStat>,
    },
}

/// A started subject.
pub struct Running {
    inner: Inner,
    pid: u32,
    metrics_url: Option<String>,
    pub args: Vec<String>,
}

/// The pid of the process whose argv[0] is `bin` and whose command line contains `needle`.
fn find_pid(bin: &Path, needle: &str) -> Option<u32> {
    let bin = bin.display().to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let parts: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        if parts.first().is_some_and(|a| *a == bin) && parts.iter().any(|p| p.contains(needle)) {
            return Some(pid);
        }
    }
    None
}

impl Running {
    pub async fn start(
        kind: SubjectKind,
        args: &crate::Args,
        kube: &KubeEnv,
        work: &Path,
        owners: &[Owner],
    ) -> anyhow::Result<Running> {
        let kubeconfig = work.join("kubeconfig");
        kube.write_kubeconfig(&kubeconfig)?;
        match kind {
            SubjectKind::Refsync => {
                let bin = refsync_bin(args);
                anyhow::ensure!(
                    bin.is_file(),
                    "{} not found: run `cargo build --release -p refsync` first (or pass --refsync-bin)",
                    bin.display()
                );
                let port = free_port()?;
                let addr = format!("127.0.0.1:{port}");
                let log = work.join("refsync.log");
                let cargs: Vec<String> = vec![
                    "controller".into(),
                    "--kubeconfig".into(),
                    kubeconfig.display().to_string(),
                    "--leader-elect=false".into(),
                    "--metrics-addr".into(),
                    addr.clone(),
                    "--health-addr".into(),
                    addr.clone(),
                ];
                let wrapper: Vec<&str> = args
                    .subject_wrapper
                    .as_deref()
                    .map(|w| w.split_whitespace().collect())
                    .unwrap_or_default();
                let mut cmd = match wrapper.split_first() {
                    Some((first, rest)) => {
                        let mut c = Command::new(first);
                        c.args(rest).arg(&bin);
                        c
                    }
                    None => Command::new(&bin),
                };
                let child = cmd
                    .args(&cargs)
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log)?)
                    .spawn()
                    .with_context(|| format!("start {}", bin.display()))?;
                let wrapped = !wrapper.is_empty();
                let pid = if wrapped {
                    let mut found = None;
                    for _ in 0..200 {
                        found = find_pid(&bin, &addr);
                        if found.is_some() {
                            break;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    found.context("find the wrapped refsync process")?
                } else {
                    child.id()
                };
                Ok(Running {
                    pid,
                    inner: Inner::Refsync {
                        child,
                        log,
                        wrapped,
                    },
                    metrics_url: Some(format!("http://{addr}/metrics")),
                    args: cargs,
                })
            }
            SubjectKind::Eso | SubjectKind::EsoTuned => {
                let opts = kind.eso_options();
                let eso = Eso::start(kube, opts.clone()).await?;
                let bin = refsync_testenv::eso::eso_bin()?;
                let needle = format!("--metrics-addr={}", eso.metrics_addr());
                let pid = find_pid(&bin, &needle).context("find the ESO process")?;
                Ok(Running {
                    pid,
                    metrics_url: Some(format!("http://{}/metrics", eso.metrics_addr())),
                    inner: Inner::Eso(Box::new(eso)),
                    args: vec![
                        format!("--concurrent={}", opts.concurrent),
                        format!("--client-qps={}", opts.client_qps),
                        format!("--client-burst={}", opts.client_burst),
                        "--enable-leader-election=false".into(),
                    ],
                })
            }
            SubjectKind::Limit => {
                let owners_file = work.join("owners.json");
                std::fs::write(&owners_file, serde_json::to_vec(owners)?)?;
                let cargs: Vec<String> = vec![
                    "--limit-worker".into(),
                    "--kubeconfig".into(),
                    kubeconfig.display().to_string(),
                    "--owners".into(),
                    owners_file.display().to_string(),
                    "--limit-concurrency".into(),
                    args.limit_concurrency.to_string(),
                ];
                let child = Command::new(std::env::current_exe()?)
                    .args(&cargs)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .context("start the limit worker")?;
                Ok(Running {
                    pid: child.id(),
                    inner: Inner::Limit { child, done: None },
                    metrics_url: None,
                    args: cargs[5..].to_vec(),
                })
            }
        }
    }

    /// Fails if a controller exited (or the limit worker failed).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match &mut self.inner {
            Inner::Refsync { child, log, .. } => {
                if let Some(st) = child.try_wait()? {
                    let text = std::fs::read_to_string(log).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    bail!(
                        "refsync exited ({st}); log tail:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
            Inner::Eso(eso) => {
                if let Some(st) = eso.exit_status() {
                    bail!("ESO exited ({st}); log tail:\n{}", eso.log_tail(40));
                }
            }
            Inner::Limit { child, done } => {
                if done.is_none()
                    && let Some(st) = child.try_wait()?
                {
                    if !st.success() {
                        bail!("the limit worker failed ({st})");
                    }
                    *done = Some(read_limit_stat(child)?);
                }
            }
        }
        Ok(())
    }

    /// The subject's peak RSS and CPU so far (None once it exited).
    pub async fn stat(&self) -> Option<ProcStat> {
        if let Inner::Limit { done: Some(s), .. } = &self.inner {
            return Some(*s);
        }
        procstat::read(self.pid).ok()
    }

    /// `externalsecret_provider_api_calls_count` on the subject's `/metrics`, by `call`.
    pub async fn provider_calls(&self) -> Option<BTreeMap<String, f64>> {
        let url = self.metrics_url.as_ref()?;
        let text = crate::measure::scrape(url).await.ok()?;
        Some(crate::measure::metric_by(
            &text,
            "externalsecret_provider_api_calls_count",
            &["call"],
        ))
    }

    /// Waits for the limit worker and returns its own peak RSS and CPU.
    pub async fn wait_limit(&mut self) -> anyhow::Result<ProcStat> {
        loop {
            self.check_alive()?;
            if let Inner::Limit { done: Some(s), .. } = &self.inner {
                return Ok(*s);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    pub fn stop(&mut self) {
        match &mut self.inner {
            Inner::Refsync {
                child,
                wrapped: true,
                ..
            } => {
                // SIGTERM to the controller; the wrapper exits once it did (bounded).
                let _ = Command::new("kill")
                    .args(["-TERM", &self.pid.to_string()])
                    .status();
                for _ in 0..600 {
                    if !matches!(child.try_wait(), Ok(None)) {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            Inner::Refsync { child, .. } | Inner::Limit { child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Inner::Eso(eso) => eso.stop(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_limit_stat(child: &mut Child) -> anyhow::Result<ProcStat> {
    let mut out = String::new();
    child
        .stdout
        .take()
        .context("limit worker stdout")?
        .read_to_string(&mut out)?;
    let line = out.lines().last().context("limit worker printed nothing")?;
    Ok(serde_json::from_str(line)?)
}
