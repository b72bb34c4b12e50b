#![forbid(unsafe_code)]
//! Real servers for refsync's integration tests.
//!
//! Each server is started on a free 127.0.0.1 port the first time a test in
//! the current test binary asks for it (`KubeEnv::shared()`,
//! `OpenBao::shared()`, `Moto::shared()`) and is shared by all tests of that
//! binary; tests isolate themselves with unique namespaces, mounts, paths and
//! name prefixes. Servers run behind a small `sh` watchdog that stops them
//! and deletes their data directories as soon as the test process exits,
//! however it exits.
//!
//! Binaries are the pinned versions installed by `tests/servers/install.sh`
//! under `~/.cache/refsync/` (see [`bins`]); a missing binary or a server
//! that does not become ready is a test failure, never a skip.
//!
//! The GCP Secret Manager emulator ([`GcpSm`]) runs in-process and is
//! started per test.

pub mod bins;
pub mod eso;
pub mod gcp;
pub mod kube_env;
pub mod moto;
pub mod openbao;
pub mod process;

pub use gcp::GcpSm;
pub use kube_env::KubeEnv;
pub use moto::Moto;
pub use openbao::OpenBao;
pub use process::unique_name;

/// Several crates in the workspace enable both of rustls' crypto back ends, and rustls then
/// refuses to pick one: choose ring for the whole process before any TLS client is built.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
