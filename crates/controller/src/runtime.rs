//! The controller process: leader election, the ExternalSecret, ClusterExternalSecret and store
//! controllers, the HTTP endpoints, and an orderly shutdown on SIGTERM/SIGINT.
//!
//! Shutdown order: stop taking new work (controllers drain their in-flight reconciles, bounded
//! by `shutdown_timeout`), then release the lease (writes stop; another replica takes over at
//! once instead of after the lease duration), then stop the HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use refsync_core::api::{ClusterSecretStore, SecretStore};
use refsync_core::engine::Engine;
use refsync_core::fetch::Fetcher;
use refsync_core::provider::{ProviderRegistry, SecretReader};
use tokio::sync::watch;

use crate::context::{Config, Context};
use crate::leader::{self, LeaderOptions, LeaderState};
use crate::metrics::Metrics;
use crate::reconcile::store;
use crate::source::cluster::KubeReader;

/// A shutdown trigger every task can hold and await (cloneable, `Send + Sync`).
pub type Shutdown = Shared<BoxFuture<'static, ()>>;

/// A trigger and the future that resolves once it is pulled.
pub fn shutdown_pair() -> (watch::Sender<bool>, Shutdown) {
    let (tx, mut rx) = watch::channel(false);
    let fut = async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
    .boxed()
    .shared();
    (tx, fut)
}

/// Process settings beyond the reconcilers' [`Config`].
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    pub leader: LeaderOptions,
    pub metrics_addr: SocketAddr,
    pub health_addr: SocketAddr,
    /// How long in-flight reconciles may take to finish after SIGTERM.
    pub shutdown_timeout: Duration,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            leader: LeaderOptions::default(),
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            health_addr: SocketAddr::from(([0, 0, 0, 0], 8081)),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// The shared context, with provider calls counted in the metrics.
pub fn context(
    client: kube::Client,
    registry: ProviderRegistry,
    config: Config,
    fetch_ttl: Duration,
) -> Arc<Context> {
    let metrics = Arc::new(Metrics::new());
    let mut engine = Engine::new(registry, Fetcher::new(fetch_ttl));
    engine.calls = metrics.clone();
    Arc::new(Context {
        client,
        engine: Arc::new(engine),
        metrics,
        config,
        leader: Arc::new(AtomicBool::new(false)),
    })
}

/// Yields each time this replica becomes leader.
fn on_acquire(rx: watch::Receiver<bool>) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            rx.changed().await.ok()?;
            if *rx.borrow_and_update() {
                return Some(((), rx));
            }
        }
    })
}

/// Registers the handlers now (a signal during start-up is not lost); the future resolves on
/// the first SIGTERM or SIGINT.
fn termination_signal() -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}

/// Runs until SIGTERM/SIGINT (then returns `Ok` after an orderly shutdown) or until a
/// controller stops on its own (an error).
pub async fn run(ctx: Arc<Context>, opts: RuntimeOptions) -> anyhow::Result<()> {
    let signal = termination_signal()?;
    let mut signal = std::pin::pin!(signal);

    let (stop_controllers, controllers_stopped) = shutdown_pair();
    let (stop_lease, lease_stopped) = shutdown_pair();
    let (stop_http, http_stopped) = shutdown_pair();

    let ready = Arc::new(AtomicBool::new(false));
    let http = crate::http::serve(
        ctx.clone(),
        ready.clone(),
        opts.metrics_addr,
        opts.health_addr,
        http_stopped,
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on --metrics-addr {} / --health-addr {}: {e}",
            opts.metrics_addr,
            opts.health_addr
        )
    })?;
    let http = tokio::spawn(http);

    let leader_state = LeaderState::new(ctx.leader.clone(), ctx.metrics.clone());
    let acquired = leader_state.changes.subscribe();
    let leader = tokio::spawn(leader::run(
        ctx.client.clone(),
        opts.leader.clone(),
        leader_state.clone(),
        lease_stopped,
    ));

    let reader: Arc<dyn SecretReader> = Arc::new(KubeReader {
        client: ctx.client.clone(),
    });
    let (ss_ready_tx, ss_ready) = tokio::sync::oneshot::channel();
    let (css_ready_tx, css_ready) = tokio::sync::oneshot::channel();
    let mut controllers = tokio::task::JoinSet::new();
    controllers.spawn(store::run::<SecretStore>(
        ctx.clone(),
        reader.clone(),
        on_acquire(acquired.clone()),
        ss_ready_tx,
        controllers_stopped.clone(),
    ));
    controllers.spawn(store::run::<ClusterSecretStore>(
        ctx.clone(),
        reader,
        on_acquire(acquired),
        css_ready_tx,
        controllers_stopped.clone(),
    ));
    controllers.spawn(crate::reconcile::external_secret::run(
        ctx.clone(),
        controllers_stopped.clone(),
    ));
    // ClusterExternalSecrets fan out cluster-wide, so not under `--namespace` (see
    // `cluster_external_secret::run`).
    if ctx.config.namespace.is_none() {
        controllers.spawn(crate::reconcile::cluster_external_secret::run(
            ctx.clone(),
            controllers_stopped.clone(),
        ));
    } else {
        tracing::info!("--namespace is set: ClusterExternalSecrets are not reconciled");
    }
    {
        let ready = ready.clone();
        tokio::spawn(async move {
            if ss_ready.await.is_ok() && css_ready.await.is_ok() {
                ready.store(true, Ordering::SeqCst);
                tracing::info!("caches synced, controllers running");
            }
        });
    }

    let outcome = tokio::select! {
        name = &mut signal => {
            tracing::info!(signal = name, "shutting down");
            Ok(())
        }
        _ = controllers.join_next() => {
            Err(anyhow::anyhow!("a controller stopped unexpectedly"))
        }
    };

    ready.store(false, Ordering::SeqCst);
    stop_controllers.send_replace(true);
    let drained = tokio::time::timeout(opts.shutdown_timeout, async {
        while controllers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(timeout = ?opts.shutdown_timeout,
            "in-flight reconciles did not finish in time; stopping anyway");
        controllers.abort_all();
    }
    stop_lease.send_replace(true);
    if tokio::time::timeout(Duration::from_secs(5), leader)
        .await
        .is_err()
    {
        tracing::warn!("releasing the leader lease timed out");
    }
    stop_http.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), http).await;
    tracing::info!("stopped");
    outcome
}
