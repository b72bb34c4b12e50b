//! OpenBao in dev mode (in-memory storage, unsealed, KV v2 at `secret/`).

use std::ffi::OsString;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::OnceCell;

use crate::bins;
use crate::process::{
    ServerProcess, StartError, free_port, random_string, server_dir, start_timeout, unique_name,
    with_port_retry,
};

/// A running OpenBao dev server with a generated root token.
pub struct OpenBao {
    proc: ServerProcess,
    addr: String,
    root_token: String,
}

impl std::fmt::Debug for OpenBao {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The root token is deliberately not printed.
        f.debug_struct("OpenBao")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

static SHARED: OnceCell<Result<OpenBao, String>> = OnceCell::const_new();

impl OpenBao {
    /// The OpenBao shared by all tests of this test binary, started on first
    /// use. Panics (failing the test) if it cannot start.
    pub async fn shared() -> &'static OpenBao {
        let r = SHARED
            .get_or_init(|| async { OpenBao::start().await.map_err(|e| format!("{e:#}")) })
            .await;
        match r {
            Ok(b) => b,
            Err(e) => panic!("refsync-testenv: cannot start OpenBao: {e}"),
        }
    }

    /// Starts a dedicated OpenBao dev server (stopped when dropped).
    pub async fn start() -> anyhow::Result<OpenBao> {
        let bin = bins::bao()?;
        let t0 = std::time::Instant::now();
        let bao = with_port_retry("openbao", || async {
            let dir = server_dir("openbao")?;
            let port = free_port()?;
            let addr = format!("http://127.0.0.1:{port}");
            let root_token = random_string(32);
            let args: Vec<OsString> =
                vec!["server".into(), "-dev".into(), "-log-level=warn".into()];
            // Passed through the environment so that it does not show in `ps`.
            // HOME points into the temp dir: dev mode writes ~/.vault-token.
            let envs = [
                ("BAO_DEV_ROOT_TOKEN_ID", OsString::from(&root_token)),
                (
                    "BAO_DEV_LISTEN_ADDRESS",
                    OsString::from(format!("127.0.0.1:{port}")),
                ),
                ("HOME", dir.clone().into_os_string()),
                ("BAO_ADDR", OsString::from(&addr)),
                ("BAO_DISABLE_MLOCK", OsString::from("true")),
            ];
            let proc = ServerProcess::spawn("openbao", &bin, &args, &envs, &dir)?;
            let http = http_client()?;
            let health = format!("{addr}/v1/sys/health");
            let res = proc
                .wait_ready(start_timeout(30), || {
                    let (http, health) = (http.clone(), health.clone());
                    async move {
                        let body: serde_json::Value =
                            http.get(&health).send().await?.json().await?;
                        Ok(body["initialized"] == true
                            && body["sealed"] == false
                            && body["standby"] == false)
                    }
                })
                .await;
            match res {
                Ok(()) => Ok(OpenBao {
                    proc,
                    addr,
                    root_token,
                }),
                Err(e) => Err(StartError::classify(&proc, e)),
            }
        })
        .await?;
        eprintln!(
            "refsync-testenv: OpenBao {} ready at {} in {:.1?}",
            bins::OPENBAO_VERSION,
            bao.addr,
            t0.elapsed()
        );
        Ok(bao)
    }

    /// `http://127.0.0.1:PORT` (what `BAO_ADDR` / `VAULT_ADDR` would be).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The generated root token.
    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// A unique path prefix `<prefix>-<random>` for use under the dev
    /// server's default KV v2 mount `secret/`.
    pub fn unique_prefix(&self, prefix: &str) -> String {
        unique_name(prefix)
    }

    /// Enables a fresh KV mount at `<prefix>-<random>` (`version` 1 or 2)
    /// and returns the mount path.
    pub async fn create_kv_mount(&self, prefix: &str, version: u8) -> anyhow::Result<String> {
        let mount = unique_name(prefix);
        let body =
            serde_json::json!({ "type": "kv", "options": { "version": version.to_string() } });
        let resp = self
            .request(reqwest::Method::POST, &format!("sys/mounts/{mount}"))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("enable KV mount {mount}"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            bail!("enable KV mount {mount}: HTTP {status}: {text}");
        }
        Ok(mount)
    }

    /// A request to `/v1/<path>` with the root token set, on a fresh
    /// reqwest client (clients are bound to the runtime that first used them).
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}/v1/{}", self.addr, path.trim_start_matches('/'));
        http_client()
            .expect("refsync-testenv: reqwest client")
            .request(method, url)
            .header("X-Vault-Token", &self.root_token)
    }

    /// Environment for a subprocess talking to this server (the root token
    /// included).
    pub fn env_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("BAO_ADDR", self.addr.clone()),
            ("VAULT_ADDR", self.addr.clone()),
            ("BAO_TOKEN", self.root_token.clone()),
            ("VAULT_TOKEN", self.root_token.clone()),
        ]
    }

    /// The last `n` output lines of the server.
    pub fn log_tail(&self, n: usize) -> String {
        self.proc.log_tail(n)
    }
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("reqwest client")
}
