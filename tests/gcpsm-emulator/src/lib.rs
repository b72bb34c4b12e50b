//! A faithful, in-memory emulator of Google Cloud Secret Manager's v1 REST API, for tests only.
//!
//! It speaks what Google's official clients send: `/v1/projects/{p}[/locations/{l}]/secrets/...`,
//! `$alt=json;enum-encoding=int` (enums as numbers), camelCase JSON, int64 as strings, base64
//! bytes, Google's error envelope, resource names with project *numbers*, and (optionally)
//! self-signed RS256 service-account JWTs as bearer tokens.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let emu = gcpsm_emulator::spawn(gcpsm_emulator::Config::default()).await?;
//! let endpoint = emu.endpoint(); // "http://127.0.0.1:PORT", for `with_endpoint`
//! # let _ = endpoint; Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod auth;
mod error;
mod filter;
mod names;
mod routes;
mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use names::project_number;
/// Page size used when a list call sends `pageSize=0` (Google's clients always send it).
pub use store::DEFAULT_PAGE_SIZE;

/// How the emulator authenticates callers.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    /// Accept every request, with or without credentials.
    #[default]
    None,
    /// Require `Authorization: Bearer <jwt>` signed (RS256) by one of these service-account keys:
    /// `(client_email, private_key_id, public_key_pem)`. The JWT header's `kid` picks the key and
    /// `iss` must be its `client_email`. The PEM may be SPKI (`PUBLIC KEY`) or PKCS#1.
    ServiceAccounts(Vec<(String, String, String)>),
}

/// Emulator configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub auth: Auth,
}

/// The Secret Manager RPCs the emulator serves (and counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    ListSecrets,
    CreateSecret,
    GetSecret,
    UpdateSecret,
    DeleteSecret,
    AddSecretVersion,
    ListSecretVersions,
    GetSecretVersion,
    AccessSecretVersion,
    EnableSecretVersion,
    DisableSecretVersion,
    DestroySecretVersion,
}

impl Method {
    pub const ALL: [Method; 12] = [
        Method::ListSecrets,
        Method::CreateSecret,
        Method::GetSecret,
        Method::UpdateSecret,
        Method::DeleteSecret,
        Method::AddSecretVersion,
        Method::ListSecretVersions,
        Method::GetSecretVersion,
        Method::AccessSecretVersion,
        Method::EnableSecretVersion,
        Method::DisableSecretVersion,
        Method::DestroySecretVersion,
    ];

    /// The RPC name, e.g. `AccessSecretVersion`.
    pub fn rpc_name(self) -> &'static str {
        match self {
            Method::ListSecrets => "ListSecrets",
            Method::CreateSecret => "CreateSecret",
            Method::GetSecret => "GetSecret",
            Method::UpdateSecret => "UpdateSecret",
            Method::DeleteSecret => "DeleteSecret",
            Method::AddSecretVersion => "AddSecretVersion",
            Method::ListSecretVersions => "ListSecretVersions",
            Method::GetSecretVersion => "GetSecretVersion",
            Method::AccessSecretVersion => "AccessSecretVersion",
            Method::EnableSecretVersion => "EnableSecretVersion",
            Method::DisableSecretVersion => "DisableSecretVersion",
            Method::DestroySecretVersion => "DestroySecretVersion",
        }
    }

    /// Short names: `list_secrets`, `create_secret`, `get_secret`, `update_secret`,
    /// `delete_secret`, `add_version`, `list_versions`, `get_version`, `access`, `enable`,
    /// `disable`, `destroy`.
    pub fn short_name(self) -> &'static str {
        match self {
            Method::ListSecrets => "list_secrets",
            Method::CreateSecret => "create_secret",
            Method::GetSecret => "get_secret",
            Method::UpdateSecret => "update_secret",
            Method::DeleteSecret => "delete_secret",
            Method::AddSecretVersion => "add_version",
            Method::ListSecretVersions => "list_versions",
            Method::GetSecretVersion => "get_version",
            Method::AccessSecretVersion => "access",
            Method::EnableSecretVersion => "enable",
            Method::DisableSecretVersion => "disable",
            Method::DestroySecretVersion => "destroy",
        }
    }

    /// Parses an RPC name or a short name, ignoring case and `_`/`-`.
    pub fn from_name(name: &str) -> Option<Method> {
        let norm = |s: &str| {
            s.chars()
                .filter(|c| *c != '_' && *c != '-')
                .flat_map(char::to_lowercase)
                .collect::<String>()
        };
        let want = norm(name);
        Method::ALL
            .into_iter()
            .find(|m| norm(m.rpc_name()) == want || norm(m.short_name()) == want)
    }
}

pub(crate) struct AppState {
    pub(crate) store: Mutex<store::Store>,
    pub(crate) verifier: Option<auth::Verifier>,
    pub(crate) counts: Mutex<HashMap<Method, u64>>,
}

impl AppState {
    fn new(config: &Config) -> std::io::Result<Self> {
        let verifier = match &config.auth {
            Auth::None => None,
            Auth::ServiceAccounts(accounts) => Some(auth::Verifier::new(accounts)?),
        };
        Ok(Self {
            store: Mutex::new(store::Store::default()),
            verifier,
            counts: Mutex::new(HashMap::new()),
        })
    }
}

/// A running emulator. Dropping it stops the server.
pub struct Handle {
    addr: SocketAddr,
    state: Arc<AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("gcpsm_emulator::Handle")
            .field("endpoint", &self.endpoint())
            .finish()
    }
}

impl Handle {
    /// `http://127.0.0.1:PORT`, ready for `SecretManagerService::builder().with_endpoint(..)`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many requests reached `method` (by RPC name such as `"AccessSecretVersion"` or short
    /// name such as `"access"`), whatever their outcome, including ones rejected as
    /// unauthenticated. Panics on a name that is no method, so a typo cannot pass as zero.
    pub fn request_count(&self, method: &str) -> u64 {
        let m = Method::from_name(method)
            .unwrap_or_else(|| panic!("gcpsm-emulator: no method called {method:?}"));
        self.count(m)
    }

    /// How many requests reached `method`.
    pub fn count(&self, method: Method) -> u64 {
        lock(&self.state.counts).get(&method).copied().unwrap_or(0)
    }

    /// All requests counted so far, over every method.
    pub fn total_requests(&self) -> u64 {
        lock(&self.state.counts).values().sum()
    }

    /// Sets every request count back to zero (the stored secrets are kept).
    pub fn reset_counts(&self) {
        lock(&self.state.counts).clear();
    }

    /// Stops the server and waits for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Graceful: the listener closes now, idle connections close, in-flight requests finish.
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts the emulator on `127.0.0.1:0` in the current Tokio runtime.
pub async fn spawn(config: Config) -> std::io::Result<Handle> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    spawn_on(listener, config)
}

/// Starts the emulator on a listener the caller bound.
pub fn spawn_on(listener: TcpListener, config: Config) -> std::io::Result<Handle> {
    let addr = listener.local_addr()?;
    let state = Arc::new(AppState::new(&config)?);
    let (tx, rx) = oneshot::channel::<()>();
    let app = routes::router(state.clone());
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
    });
    Ok(Handle {
        addr,
        state,
        shutdown: Some(tx),
        task: Some(task),
    })
}

/// Serves on `listener` until `shutdown` resolves (for the stand-alone binary).
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = Arc::new(AppState::new(&config)?);
    axum::serve(listener, routes::router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
