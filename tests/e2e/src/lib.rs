#![forbid(unsafe_code)]
//! Helpers for end-to-end tests: find (or build) the `refsync` binary, run it, and read the
//! Secrets it prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use base64::Engine;

pub mod gcp;
pub mod process;

pub use process::ControllerProcess;

/// The `refsync` binary of this build: next to the test executable's `deps/` directory, built
/// with `cargo build -p refsync` if it is not there yet.
pub fn refsync_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        // target/<profile>/deps/<test> → target/<profile>/refsync
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target profile dir")
            .to_path_buf();
        let bin = profile_dir.join("refsync");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-q", "-p", "refsync"])
            .env(
                "CARGO_TARGET_DIR",
                profile_dir.parent().expect("target dir"),
            )
            .status()
            .expect("run cargo build -p refsync");
        assert!(status.success(), "cargo build -p refsync failed");
        assert!(bin.exists(), "{} not found after building", bin.display());
        bin
    })
    .clone()
}

/// What one `refsync render` run produced.
#[derive(Debug)]
pub struct Rendered {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    /// `namespace/name` → Secret data (decoded).
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// The Secret documents as JSON.
    pub documents: Vec<serde_json::Value>,
}

/// Runs `refsync render --manifests <dir>` with extra environment variables.
pub fn render(dir: &Path, env: &[(&str, String)]) -> anyhow::Result<Rendered> {
    let out = Command::new(refsync_bin())
        .args(["render", "--manifests"])
        .arg(dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()?;
    let stdout = String::from_utf8(out.stdout)?;
    let stderr = String::from_utf8(out.stderr)?;
    let documents: Vec<serde_json::Value> = if stdout.trim().is_empty() {
        Vec::new()
    } else {
        serde_saphyr::from_multiple(&stdout)?
    };
    let mut secrets = BTreeMap::new();
    for doc in &documents {
        let ns = doc
            .pointer("/metadata/namespace")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let name = doc
            .pointer("/metadata/name")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let mut data = BTreeMap::new();
        for (k, v) in doc
            .get("data")
            .and_then(|d| d.as_object())
            .into_iter()
            .flatten()
        {
            let b64 = v.as_str().unwrap_or_default();
            data.insert(
                k.clone(),
                base64::engine::general_purpose::STANDARD.decode(b64)?,
            );
        }
        secrets.insert(format!("{ns}/{name}"), data);
    }
    Ok(Rendered {
        success: out.status.success(),
        stdout,
        stderr,
        secrets,
        documents,
    })
}

/// Writes `files` (name → YAML) into a fresh temporary directory.
pub fn manifest_dir(files: &[(&str, &str)]) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text)?;
    }
    Ok(dir)
}

/// Applies refsync's CRDs to a cluster and waits until each is Established.
pub async fn install_crds(client: &kube::Client) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, Patch, PatchParams};
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for crd in refsync_api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply("refsync-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await?;
        names.push(name);
    }
    refsync_testenv::kube_env::wait_crds_established(
        client,
        &names,
        std::time::Duration::from_secs(60),
    )
    .await
}
