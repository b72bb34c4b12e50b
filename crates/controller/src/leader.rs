//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager), so that only one
//! replica writes Secrets, statuses and Events.
//!
//! `kube-lease-manager` reports acquiring and losing the lease, but a renewal that hangs (an
//! apiserver that stopped answering) would leave it believing it still leads. A watchdog reads
//! the Lease on its own and withdraws leadership as soon as the last renewal this replica saw is
//! older than the lease duration: two replicas never write at the same time for longer than the
//! watchdog's tick.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Leader-election settings (from flags).
#[derive(Clone, Debug)]
pub struct LeaderOptions {
    /// `false` = this replica always leads (single replica, or tests).
    pub enabled: bool,
    pub lease_name: String,
    pub namespace: String,
    /// Unique per process: `<pod or host name>-<random>`.
    pub identity: String,
    /// Seconds a lease stays valid after its last renewal.
    pub duration_secs: u64,
    /// Seconds before expiry at which the holder renews.
    pub grace_secs: u64,
}

impl Default for LeaderOptions {
    fn default() -> Self {
        LeaderOptions {
            enabled: true,
            lease_name: "refsync-controller".into(),
            namespace: "default".into(),
            identity: default_identity(),
            duration_secs: 15,
            grace_secs: 5,
        }
    }
}

/// `$POD_NAME` (or `$HOSTNAME`) plus a random suffix: two processes on one host stay distinct.
pub fn default_identity() -> String {
    use rand::Rng;
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "refsync".into());
    let suffix: String = rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(8)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect();
    format!("{host}-{suffix}")
}

/// Where leadership is published: the flag every writer checks, the `refsync_leader` gauge and
/// a channel that tells controllers when to resync everything (on acquiring the lease).
#[derive(Clone)]
pub struct LeaderState {
    pub flag: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    pub changes: watch::Sender<bool>,
}

impl LeaderState {
    pub fn new(flag: Arc<AtomicBool>, metrics: Arc<Metrics>) -> Self {
        let (changes, _) = watch::channel(flag.load(Ordering::Relaxed));
        LeaderState {
            flag,
            metrics,
            changes,
        }
    }

    fn set(&self, leading: bool) {
        // Writers read the flag first: it is cleared before anything else on losing the lease.
        let was = self.flag.swap(leading, Ordering::SeqCst);
        self.metrics.leader.set(i64::from(leading));
        if was != leading {
            if leading {
                tracing::info!("acquired the leader lease: writing");
            } else {
                tracing::warn!("not leading: writes stopped");
            }
        }
        self.changes.send_replace(leading);
    }
}

/// Runs leader election until `shutdown` resolves, then releases the lease (if held) and
/// returns. With `enabled = false` this replica leads at once.
pub async fn run(
    client: kube::Client,
    opts: LeaderOptions,
    state: LeaderState,
    shutdown: impl Future<Output = ()> + Send,
) {
    if !opts.enabled {
        state.set(true);
        shutdown.await;
        state.set(false);
        return;
    }
    let mut shutdown = std::pin::pin!(shutdown);
    let manager = loop {
        let built = LeaseManagerBuilder::new(client.clone(), &opts.lease_name)
            .with_namespace(&opts.namespace)
            .with_identity(&opts.identity)
            .with_duration(opts.duration_secs)
            .with_grace(
                opts.grace_secs
                    .clamp(1, opts.duration_secs.saturating_sub(1).max(1)),
            )
            .with_field_manager(format!("refsync-{}", opts.identity))
            .build()
            .await;
        match built {
            Ok(m) => break m,
            Err(e) => {
                tracing::error!(lease = %opts.lease_name, namespace = %opts.namespace, error = %e,
                    "cannot set up the leader lease; retrying");
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    };
    tracing::info!(identity = %opts.identity, lease = %opts.lease_name, namespace = %opts.namespace,
        "waiting for the leader lease");

    // What the manager believes, and what the watchdog last confirmed.
    let (held_tx, held_rx) = watch::channel(false);
    let watchdog = watchdog(
        Api::namespaced(client, &opts.namespace),
        opts.clone(),
        held_rx,
        state.clone(),
    );
    let elect = elect(&manager, &held_tx, &state);
    tokio::select! {
        _ = &mut shutdown => {}
        _ = watchdog => {}
        _ = elect => {}
    }
    state.set(false);
    if let Err(e) = manager.release().await {
        tracing::warn!(error = %e, "cannot release the leader lease (it expires on its own)");
    } else {
        tracing::info!("released the leader lease");
    }
}

/// Follows the manager: acquires, renews, reports changes. Errors drop leadership at once; the
/// watchdog gives it back as soon as the Lease shows this replica's renewal again.
///
/// `held` keeps the manager's belief across an error: the manager does not reset it on errors,
/// so after an apiserver restart it goes on renewing the lease without ever reporting a change;
/// clearing `held` here would leave this replica holding the lease forever without writing
/// (and no other replica could take over).
async fn elect(manager: &LeaseManager, held: &watch::Sender<bool>, state: &LeaderState) {
    loop {
        match manager.changed().await {
            Ok(leading) => {
                held.send_replace(leading);
                if !leading {
                    state.set(false);
                }
            }
            Err(e) => {
                state.set(false);
                tracing::warn!(error = %e, "leader lease error; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Confirms from the Lease itself that this replica holds an unexpired lease; only then is the
/// leader flag set.
async fn watchdog(
    api: Api<Lease>,
    opts: LeaderOptions,
    mut held: watch::Receiver<bool>,
    state: LeaderState,
) {
    let duration = Duration::from_secs(opts.duration_secs);
    let tick = Duration::from_secs(1);
    // Until when the last renewal this replica read keeps the lease valid.
    let mut valid_until: Option<SystemTime> = None;
    loop {
        if *held.borrow_and_update() {
            match tokio::time::timeout(tick, api.get_opt(&opts.lease_name)).await {
                Ok(Ok(Some(lease))) => {
                    let spec = lease.spec.unwrap_or_default();
                    valid_until = (spec.holder_identity.as_deref() == Some(&opts.identity))
                        .then(|| {
                            spec.renew_time
                                .or(spec.acquire_time)
                                .map(|t| SystemTime::from(t.0) + duration)
                        })
                        .flatten();
                }
                Ok(Ok(None)) => valid_until = None,
                // Unreachable apiserver: keep the last confirmed deadline.
                Ok(Err(_)) | Err(_) => {}
            }
            let leading = valid_until.is_some_and(|t| SystemTime::now() < t);
            if leading != state.flag.load(Ordering::SeqCst) {
                state.set(leading);
            }
        } else {
            valid_until = None;
            if state.flag.load(Ordering::SeqCst) {
                state.set(false);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            r = held.changed() => if r.is_err() { return },
        }
    }
}
