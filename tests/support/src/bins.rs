//! Locations of the pinned server binaries installed by `tests/servers/install.sh`.

use std::path::PathBuf;

use anyhow::bail;

/// Pinned versions; keep in sync with `tests/servers/install.sh`.
pub const KUBE_VERSION: &str = "1.35.4";
pub const ETCD_VERSION: &str = "3.6.16";
pub const OPENBAO_VERSION: &str = "2.7.2";
pub const MOTO_VERSION: &str = "5.2.5";

/// `$REFSYNC_CACHE_DIR`, else `~/.cache/refsync`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("REFSYNC_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache").join("refsync")
}

fn locate(env: &str, rel: String, what: &str) -> anyhow::Result<PathBuf> {
    let (path, origin) = match std::env::var_os(env) {
        Some(p) => (PathBuf::from(p), format!("from ${env}")),
        None => (
            cache_dir().join(&rel),
            format!("default location; override with ${env}"),
        ),
    };
    if !path.is_file() {
        bail!(
            "{what} binary not found at {} ({origin}). Run `tests/servers/install.sh` \
             (or `tests/run`, which runs it) to install the test servers.",
            path.display()
        );
    }
    Ok(path)
}

pub fn kube_apiserver() -> anyhow::Result<PathBuf> {
    locate(
        "REFSYNC_KUBE_APISERVER",
        format!("bin/kube-apiserver-v{KUBE_VERSION}"),
        "kube-apiserver",
    )
}

pub fn etcd() -> anyhow::Result<PathBuf> {
    locate("REFSYNC_ETCD", format!("bin/etcd-v{ETCD_VERSION}"), "etcd")
}

pub fn bao() -> anyhow::Result<PathBuf> {
    locate(
        "REFSYNC_BAO",
        format!("venv/openbao-{OPENBAO_VERSION}/bin/bao"),
        "OpenBao (bao)",
    )
}

pub fn moto_server() -> anyhow::Result<PathBuf> {
    locate(
        "REFSYNC_MOTO_SERVER",
        format!("venv/moto-{MOTO_VERSION}/bin/moto_server"),
        "moto_server",
    )
}
