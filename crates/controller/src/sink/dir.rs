//! The render sink: Secret manifests as YAML, to stdout or one file per Secret.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use refsync_core::{Error, Result};

/// One Secret as a YAML document (with `apiVersion` and `kind`).
pub fn to_yaml(secret: &Secret) -> Result<String> {
    let mut v = serde_json::to_value(secret)
        .map_err(|e| Error::invalid(format!("serialize Secret: {e}")))?;
    if let Some(obj) = v.as_object_mut() {
        let mut ordered = serde_json::Map::new();
        ordered.insert("apiVersion".into(), "v1".into());
        ordered.insert("kind".into(), "Secret".into());
        for (k, val) in std::mem::take(obj) {
            ordered.insert(k, val);
        }
        *obj = ordered;
    }
    serde_saphyr::to_string(&v).map_err(|e| Error::invalid(format!("serialize Secret: {e}")))
}

/// Writes `secret` to `<dir>/<namespace>/<name>.yaml`; returns the path.
pub fn write(dir: &Path, secret: &Secret) -> Result<PathBuf> {
    let ns = secret.metadata.namespace.as_deref().unwrap_or("default");
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    let sub = dir.join(ns);
    std::fs::create_dir_all(&sub).map_err(|e| Error::config(format!("{}: {e}", sub.display())))?;
    let path = sub.join(format!("{name}.yaml"));
    let text = to_yaml(secret)?;
    write_private(&path, text.as_bytes())
        .map_err(|e| Error::config(format!("{}: {e}", path.display())))?;
    Ok(path)
}

/// Rendered Secrets hold secret values: the files are readable by their owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path)?;
    f.write_all(bytes)
}
