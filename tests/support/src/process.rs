//! Server processes started through a small `sh` watchdog.
//!
//! The watchdog starts the server in the background and then blocks reading
//! its stdin, which is a pipe whose only write end lives in the test process.
//! When the test process exits for any reason (normal exit, panic, SIGKILL),
//! the kernel closes that pipe, the watchdog sees EOF, terminates the server
//! (SIGTERM, then SIGKILL after a grace period) and removes the server's data
//! directory. No `unsafe`, no reliance on destructors of statics.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Number of output lines of each server kept for error messages.
const LOG_LINES: usize = 400;

/// `sh -c WATCHDOG refsync-watchdog <data-dir> <program> <args...>`
const WATCHDOG: &str = r#"
exec 2>&1
dir=$1; shift
# Keep the pipe from the test process on fd 3 for the killer; the server
# itself must not hold it.
exec 3<&0 </dev/null
# Ctrl-C in a terminal reaches the whole process group: let the server stop,
# but keep the watchdog alive so that it cleans up.
trap '' INT
"$@" 3<&- &
pid=$!
{
  cat <&3 >/dev/null
  kill -TERM "$pid" 2>/dev/null || exit 0
  i=0
  while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  kill -KILL "$pid" 2>/dev/null
} >/dev/null 2>&1 &
exec 3<&-
wait "$pid"
rc=$?
rm -rf "$dir"
exit "$rc"
"#;

/// Environment variable: when set to `1`, server output is echoed to the
/// test's stderr (prefixed with the server name) in addition to being kept
/// for error messages.
pub const ECHO_ENV: &str = "REFSYNC_TEST_SERVER_LOGS";

/// One running server (behind its watchdog).
pub struct ServerProcess {
    name: String,
    child: Mutex<Child>,
    // Dropping this closes the watchdog's stdin, which stops the server.
    stdin: Mutex<Option<ChildStdin>>,
    log: Arc<Mutex<VecDeque<String>>>,
    dir: PathBuf,
}

impl std::fmt::Debug for ServerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerProcess")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl ServerProcess {
    /// Starts `program args...` under the watchdog. `dir` is the server's
    /// private data directory; it is deleted when the server stops.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[OsString],
        envs: &[(&str, OsString)],
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WATCHDOG)
            .arg("refsync-watchdog")
            .arg(dir)
            .arg(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "{name}: cannot spawn `sh` watchdog for {}",
                program.display()
            )
        })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("watchdog stdout")?;
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_LINES)));
        let echo = std::env::var(ECHO_ENV).is_ok_and(|v| v == "1");
        {
            let log = Arc::clone(&log);
            let name = name.to_owned();
            std::thread::Builder::new()
                .name(format!("{name}-log"))
                .spawn(move || {
                    let mut reader = BufReader::new(stdout);
                    let mut buf = Vec::new();
                    loop {
                        buf.clear();
                        match reader.read_until(b'\n', &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                        let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                        if echo {
                            let _ = writeln!(std::io::stderr(), "[{name}] {line}");
                        }
                        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                        if log.len() == LOG_LINES {
                            log.pop_front();
                        }
                        log.push_back(line);
                    }
                })
                .context("spawn log reader thread")?;
        }
        Ok(Self {
            name: name.to_owned(),
            child: Mutex::new(child),
            stdin: Mutex::new(stdin),
            log,
            dir: dir.to_owned(),
        })
    }

    /// A placeholder "server" (`sleep`) whose only job is to own a fresh
    /// data directory: the directory outlives restarts of the servers that
    /// keep their data in it and is deleted, like every server's, when this
    /// placeholder stops (on drop, or when the test process exits).
    pub fn hold_dir(name: &str) -> anyhow::Result<Self> {
        let dir = server_dir(name)?;
        let args: Vec<OsString> = vec!["2147483647".into()];
        Self::spawn(name, Path::new("sleep"), &args, &[], &dir)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's private data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `Some(status)` once the server (and its watchdog) exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child.try_wait().ok().flatten()
    }

    /// The last `n` lines of the server's stdout/stderr.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let skip = log.len().saturating_sub(n);
        log.iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether the output contains `needle` (e.g. "address already in use").
    pub fn log_contains(&self, needle: &str) -> bool {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().any(|l| l.contains(needle))
    }

    /// Stops the server and waits (up to ~10 s) for the watchdog to exit.
    pub fn stop(&self) {
        drop(self.stdin.lock().unwrap_or_else(|e| e.into_inner()).take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.exit_status().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls `probe` until it returns `Ok(true)`, failing early if the
    /// process exits and with the output tail on timeout.
    pub async fn wait_ready<F, Fut>(&self, timeout: Duration, mut probe: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<bool>>,
    {
        let start = Instant::now();
        let mut last_err: Option<anyhow::Error> = None;
        loop {
            if let Some(status) = self.exit_status() {
                bail!(
                    "{} exited before becoming ready ({status}); last output:\n{}",
                    self.name,
                    self.log_tail(60)
                );
            }
            match probe().await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last_err = Some(e),
            }
            if start.elapsed() > timeout {
                let last = last_err
                    .map(|e| format!("{e:#}"))
                    .unwrap_or_else(|| "not ready".into());
                bail!(
                    "{} did not become ready within {timeout:?} (last probe: {last}); last output:\n{}",
                    self.name,
                    self.log_tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Creates a private directory for a server under the system temp dir. The
/// watchdog removes it when the server stops.
pub fn server_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("refsync-{name}-"))
        .tempdir()
        .context("create server temp dir")?;
    Ok(dir.keep())
}

/// A currently free TCP port on 127.0.0.1 (there is a small window in which
/// another process may take it; starts are retried on "address already in use").
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Start timeout for servers (`REFSYNC_SERVER_START_TIMEOUT` seconds overrides).
pub fn start_timeout(default_secs: u64) -> Duration {
    let secs = std::env::var("REFSYNC_SERVER_START_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_secs);
    Duration::from_secs(secs)
}

/// Runs `start` up to three times while it fails because a port was taken in
/// the meantime.
pub async fn with_port_retry<T, F, Fut>(what: &str, mut start: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StartError>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match start().await {
            Ok(v) => return Ok(v),
            Err(StartError::PortTaken(e)) if attempt < 3 => {
                eprintln!("refsync-testenv: {what}: port taken, retrying: {e:#}");
            }
            Err(StartError::PortTaken(e) | StartError::Other(e)) => return Err(e),
        }
    }
}

/// Start failure, distinguishing a lost port race (retryable).
#[derive(Debug)]
pub enum StartError {
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

impl StartError {
    /// Classifies a failed readiness wait of `proc`.
    pub fn classify(proc: &ServerProcess, err: anyhow::Error) -> Self {
        if proc.exit_status().is_some()
            && (proc.log_contains("address already in use")
                || proc.log_contains("Address already in use"))
        {
            StartError::PortTaken(err)
        } else {
            StartError::Other(err)
        }
    }
}

impl From<anyhow::Error> for StartError {
    fn from(e: anyhow::Error) -> Self {
        StartError::Other(e)
    }
}

/// Random lowercase alphanumeric string (for names, tokens and keys).
pub fn random_string(len: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// A unique DNS-1123 label `<prefix>-<random>` (max 63 chars).
pub fn unique_name(prefix: &str) -> String {
    let mut p: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    p.truncate(50);
    let p = p.trim_matches('-');
    let suffix = random_string(8);
    if p.is_empty() {
        format!("t-{suffix}")
    } else {
        format!("{p}-{suffix}")
    }
}
