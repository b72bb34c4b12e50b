//! A `refsync` subprocess (`controller`, or another subcommand) with its metrics and health
//! endpoints on a free local port and its log (stderr) in a file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A running `refsync` process; killed when dropped. When the test is failing (or
/// `REFSYNC_E2E_KEEP_LOGS` is set) its log is kept and its path printed.
pub struct ControllerProcess {
    pub child: Child,
    /// `POD_NAME` (the leader identity starts with it; the Events' instance).
    pub name: String,
    /// Port of `/metrics`, `/healthz` and `/readyz`.
    pub port: u16,
    log: PathBuf,
    /// Byte offset of the log where [`ControllerProcess::log_since_mark`] starts.
    mark: AtomicU64,
    dir: Option<tempfile::TempDir>,
}

/// How to start a [`ControllerProcess`]: `refsync <command…> <args…> --kubeconfig <file>
/// --metrics-addr/--health-addr 127.0.0.1:<free> [--log-level <level>]`, with `POD_NAME=name`.
pub struct Spawn {
    name: String,
    command: Vec<OsString>,
    args: Vec<OsString>,
    kubeconfig: Option<Kubeconfig>,
    log_level: Option<String>,
    envs: Vec<(String, String)>,
}

enum Kubeconfig {
    File(PathBuf),
    Contents(Vec<u8>),
}

impl ControllerProcess {
    /// `refsync controller` named `name`, logging at `$REFSYNC_E2E_LOG` (default
    /// `info,kube=warn`).
    pub fn builder(name: &str) -> Spawn {
        Spawn {
            name: name.to_string(),
            command: vec!["controller".into()],
            args: Vec::new(),
            kubeconfig: None,
            log_level: Some(
                std::env::var("REFSYNC_E2E_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
            ),
            envs: Vec::new(),
        }
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Marks the current end of the log: [`ControllerProcess::log_since_mark`] starts there.
    pub fn mark(&self) {
        let len = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        self.mark.store(len, Ordering::Relaxed);
    }

    /// The log written since the last [`ControllerProcess::mark`]: its first and last
    /// `lines / 2` lines when longer than `lines`.
    pub fn log_since_mark(&self, lines: usize) -> String {
        let log = std::fs::read(&self.log).unwrap_or_default();
        let from = usize::try_from(self.mark.load(Ordering::Relaxed))
            .unwrap_or(usize::MAX)
            .min(log.len());
        let text = String::from_utf8_lossy(&log[from..]);
        let all: Vec<&str> = text.lines().collect();
        if all.len() <= lines {
            return all.join("\n");
        }
        let half = lines / 2;
        format!(
            "{}\n[... {} lines ...]\n{}",
            all[..half].join("\n"),
            all.len() - 2 * half,
            all[all.len() - half..].join("\n")
        )
    }

    /// `http://127.0.0.1:<port><path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `GET <path>` on the HTTP port: status and body, `None` while it does not answer.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let resp = reqwest::get(self.url(path)).await.ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().await.ok()?))
    }

    /// The `/metrics` text (empty while the endpoint does not answer).
    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .await
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// The value of one sample line (`name{labels}`) in `/metrics`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics().await, series)
    }

    /// Waits until `/readyz` answers 200; fails with the log's tail after `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) {
        let t0 = Instant::now();
        while !matches!(self.get("/readyz").await, Some((200, _))) {
            assert!(
                t0.elapsed() < timeout,
                "{} not ready within {timeout:?}; log:\n{}",
                self.name,
                self.log_tail(60)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `kill <sig> <pid>` (`sig` like `-TERM`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {} failed", self.child.id());
    }

    /// `kill -9`, and reaps the process.
    pub fn kill9(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let keep = std::thread::panicking() || std::env::var_os("REFSYNC_E2E_KEEP_LOGS").is_some();
        if keep && let Some(dir) = self.dir.take() {
            let _ = dir.keep();
            eprintln!("{} log kept: {}", self.name, self.log.display());
        }
    }
}

/// The value of the sample `series` (`name{labels}`, exactly as exposed) in a Prometheus text.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

impl Spawn {
    /// The subcommand and its leading arguments instead of `controller` (e.g. a Helm chart's
    /// container arguments).
    pub fn command<I, S>(mut self, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.command = command.into_iter().map(Into::into).collect();
        self
    }

    /// Arguments after the subcommand.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An existing kubeconfig file.
    pub fn kubeconfig(mut self, path: &Path) -> Self {
        self.kubeconfig = Some(Kubeconfig::File(path.to_path_buf()));
        self
    }

    /// A kubeconfig written (as JSON) into the process's own directory.
    pub fn kubeconfig_of(mut self, kubeconfig: &kube::config::Kubeconfig) -> Self {
        let json = serde_json::to_vec(kubeconfig).expect("serialize kubeconfig");
        self.kubeconfig = Some(Kubeconfig::Contents(json));
        self
    }

    /// `--log-level` (`None`: no flag).
    pub fn log_level(mut self, level: Option<&str>) -> Self {
        self.log_level = level.map(str::to_string);
        self
    }

    /// One more environment variable.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.envs.push((key.to_string(), value.into()));
        self
    }

    /// Starts the process.
    pub fn start(self) -> ControllerProcess {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = match self
            .kubeconfig
            .expect("a kubeconfig for the refsync process")
        {
            Kubeconfig::File(path) => path,
            Kubeconfig::Contents(bytes) => {
                let path = dir.path().join("kubeconfig");
                std::fs::write(&path, bytes).unwrap();
                path
            }
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let log = dir.path().join("refsync.log");
        let mut cmd = Command::new(crate::refsync_bin());
        cmd.args(&self.command)
            .args(&self.args)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--metrics-addr", &addr, "--health-addr", &addr]);
        if let Some(level) = &self.log_level {
            cmd.args(["--log-level", level]);
        }
        let child = cmd
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .env("POD_NAME", &self.name)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start refsync");
        ControllerProcess {
            child,
            name: self.name,
            port,
            log,
            mark: AtomicU64::new(0),
            dir: Some(dir),
        }
    }
}
