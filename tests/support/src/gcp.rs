//! The in-process GCP Secret Manager emulator (`tests/gcpsm-emulator`).
//!
//! Unlike the other servers this one runs inside the test process, on the
//! tokio runtime of the test that starts it, so it is started per test
//! (it starts in microseconds and gives every test an empty store).

pub use gcpsm_emulator::{Auth, Config, Handle};

/// A running emulator; dropping it stops the server.
pub struct GcpSm {
    handle: Handle,
}

impl std::fmt::Debug for GcpSm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpSm")
            .field("endpoint", &self.endpoint())
            .finish()
    }
}

impl GcpSm {
    /// Starts an emulator accepting every request (no auth) on a free
    /// 127.0.0.1 port, in the current tokio runtime.
    pub async fn start() -> anyhow::Result<GcpSm> {
        Self::start_with(Config::default()).await
    }

    /// Starts an emulator with the given configuration (e.g. service-account
    /// JWT auth).
    pub async fn start_with(config: Config) -> anyhow::Result<GcpSm> {
        let handle = gcpsm_emulator::spawn(config)
            .await
            .map_err(|e| anyhow::anyhow!("cannot start the GCP Secret Manager emulator: {e}"))?;
        Ok(GcpSm { handle })
    }

    /// `http://127.0.0.1:PORT`, for the client's endpoint override.
    pub fn endpoint(&self) -> String {
        self.handle.endpoint()
    }

    /// The emulator handle (request counters etc.).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}
