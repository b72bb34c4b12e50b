//! moto in server mode: an in-memory AWS (Secrets Manager, SSM Parameter
//! Store, STS, ...) on one HTTP endpoint. It accepts any credentials.

use std::ffi::OsString;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::OnceCell;

use crate::bins;
use crate::process::{
    ServerProcess, StartError, free_port, random_string, server_dir, start_timeout, unique_name,
    with_port_retry,
};

/// Region used with moto.
pub const REGION: &str = "us-east-1";

/// A running `moto_server`.
pub struct Moto {
    proc: ServerProcess,
    endpoint: String,
    access_key_id: String,
    secret_access_key: String,
}

impl std::fmt::Debug for Moto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moto")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

static SHARED: OnceCell<Result<Moto, String>> = OnceCell::const_new();

impl Moto {
    /// The moto server shared by all tests of this test binary, started on
    /// first use. Panics (failing the test) if it cannot start.
    pub async fn shared() -> &'static Moto {
        let r = SHARED
            .get_or_init(|| async { Moto::start().await.map_err(|e| format!("{e:#}")) })
            .await;
        match r {
            Ok(m) => m,
            Err(e) => panic!("refsync-testenv: cannot start moto: {e}"),
        }
    }

    /// Starts a dedicated moto server (stopped when dropped).
    pub async fn start() -> anyhow::Result<Moto> {
        let bin = bins::moto_server()?;
        let t0 = std::time::Instant::now();
        let moto = with_port_retry("moto", || async {
            let port = free_port()?;
            let proc = spawn_moto(&bin, port).await?;
            // moto accepts any credentials; generate throwaway ones.
            Ok(Moto {
                proc,
                endpoint: format!("http://127.0.0.1:{port}"),
                access_key_id: format!("TEST{}", random_string(16).to_ascii_uppercase()),
                secret_access_key: random_string(40),
            })
        })
        .await?;
        eprintln!(
            "refsync-testenv: moto {} ready at {} in {:.1?}",
            bins::MOTO_VERSION,
            moto.endpoint,
            t0.elapsed()
        );
        Ok(moto)
    }

    /// Stops the server (SIGTERM; waits until it exited). moto keeps
    /// everything in memory: [`Moto::start_again`] starts an empty one.
    /// Never stop [`Moto::shared`]: other tests use it.
    pub fn stop(&self) -> anyhow::Result<()> {
        self.proc.stop();
        anyhow::ensure!(self.proc.exit_status().is_some(), "moto did not stop");
        Ok(())
    }

    /// Starts moto again on the same port (same endpoint and credentials),
    /// with NO data: the test re-creates what it needs. Stops the running one
    /// first if needed.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let bin = bins::moto_server()?;
        let port: u16 = self
            .endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .context("port of the moto endpoint")?;
        self.proc.stop();
        self.proc = spawn_moto(&bin, port)
            .await
            .map_err(|(StartError::PortTaken(e) | StartError::Other(e))| e)
            .context("start moto again")?;
        Ok(())
    }

    /// `http://127.0.0.1:PORT`, the endpoint URL for every AWS service.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Dummy access key id (moto accepts anything).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// Dummy secret access key (moto accepts anything).
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The region to use ([`REGION`]).
    pub fn region(&self) -> &'static str {
        REGION
    }

    /// A unique name prefix `<prefix>-<random>`: moto has one shared
    /// account, so tests isolate by secret/parameter name.
    pub fn unique_prefix(&self, prefix: &str) -> String {
        unique_name(prefix)
    }

    /// Environment for a subprocess using the AWS SDK against this server.
    pub fn env_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_DEFAULT_REGION", REGION.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
    }

    /// The last `n` output lines of the server.
    pub fn log_tail(&self, n: usize) -> String {
        self.proc.log_tail(n)
    }

    /// One AWS JSON-protocol call (`target` like `secretsmanager.CreateSecret`; moto checks no
    /// signature): the HTTP status and the response body.
    pub async fn call(
        &self,
        target: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let service = match target.split_once('.') {
            Some(("AmazonSSM", _)) => "ssm",
            Some((prefix, _)) => prefix,
            None => anyhow::bail!("AWS target {target}: expected `<service>.<Operation>`"),
        };
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={}/20260101/{REGION}/{service}/aws4_request, \
             SignedHeaders=host, Signature=00",
            self.access_key_id
        );
        let resp = reqwest::Client::new()
            .post(&self.endpoint)
            .header("X-Amz-Target", target)
            .header("Content-Type", "application/x-amz-json-1.1")
            .header("Authorization", auth)
            .body(body.to_string())
            .send()
            .await
            .with_context(|| format!("moto {target}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        ))
    }

    /// [`Moto::call`] that fails on a status other than 2xx.
    pub async fn call_ok(
        &self,
        target: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let (status, resp) = self.call(target, body).await?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "moto {target}: HTTP {status}: {resp}"
        );
        Ok(resp)
    }

    /// Creates the Secrets Manager secret `name` with `value`, or puts `value` as its new
    /// current version if it exists.
    pub async fn sm_put(&self, name: &str, value: &str) -> anyhow::Result<()> {
        let create = serde_json::json!({ "Name": name, "SecretString": value });
        let (status, resp) = self.call("secretsmanager.CreateSecret", &create).await?;
        if (200..300).contains(&status) {
            return Ok(());
        }
        anyhow::ensure!(
            resp["__type"]
                .as_str()
                .is_some_and(|t| t.ends_with("ResourceExistsException")),
            "moto CreateSecret {name}: HTTP {status}: {resp}"
        );
        let put = serde_json::json!({ "SecretId": name, "SecretString": value });
        self.call_ok("secretsmanager.PutSecretValue", &put).await?;
        Ok(())
    }

    /// Creates or overwrites the SecureString parameter `name`.
    pub async fn ssm_put(&self, name: &str, value: &str) -> anyhow::Result<()> {
        let body = serde_json::json!({
            "Name": name, "Value": value, "Type": "SecureString", "Overwrite": true
        });
        self.call_ok("AmazonSSM.PutParameter", &body).await?;
        Ok(())
    }
}

/// Starts `moto_server` on `port` and waits until it answers.
async fn spawn_moto(bin: &std::path::Path, port: u16) -> Result<ServerProcess, StartError> {
    let dir = server_dir("moto")?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let args: Vec<OsString> = vec![
        "-H".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string().into(),
    ];
    let envs = [
        ("HOME", dir.clone().into_os_string()),
        ("PYTHONUNBUFFERED", OsString::from("1")),
    ];
    let proc = ServerProcess::spawn("moto", bin, &args, &envs, &dir)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .context("reqwest client")?;
    let probe_url = format!("{endpoint}/moto-api/data.json");
    let res = proc
        .wait_ready(start_timeout(60), || {
            let (http, url) = (http.clone(), probe_url.clone());
            async move { Ok(http.get(&url).send().await?.status().is_success()) }
        })
        .await;
    match res {
        Ok(()) => Ok(proc),
        Err(e) => Err(StartError::classify(&proc, e)),
    }
}
