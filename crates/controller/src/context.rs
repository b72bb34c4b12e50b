//! What every reconciler shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use refsync_core::engine::Engine;

use crate::metrics::Metrics;

/// The field manager of every server-side apply refsync sends.
pub const FIELD_MANAGER: &str = "refsync";

/// Controller settings (from flags).
#[derive(Clone, Debug)]
pub struct Config {
    /// Watch only this namespace (all when `None`).
    pub namespace: Option<String>,
    /// Reconcile only stores with this `spec.controller` (plus unclassed stores, unless
    /// `only_classed_stores`).
    pub controller_class: Option<String>,
    pub only_classed_stores: bool,
    /// Reconciles running at once.
    pub concurrency: u16,
    /// Upper bound of the per-object error backoff.
    pub max_backoff: Duration,
    /// Fraction of the refresh interval added as random jitter to each requeue (0.0–1.0).
    pub jitter: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespace: None,
            controller_class: None,
            only_classed_stores: false,
            concurrency: 32,
            max_backoff: Duration::from_secs(300),
            jitter: 0.1,
        }
    }
}

/// Shared by all reconcilers.
pub struct Context {
    pub client: kube::Client,
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub config: Config,
    /// True while this replica holds the leader lease: only then are Secrets, statuses and
    /// Events written.
    pub leader: Arc<AtomicBool>,
}

impl Context {
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }
}

/// The backoff for kube-runtime's `Controller::trigger_backoff`: none. kube wraps all of a
/// controller's trigger streams together in one backoff (0.8 s doubling to 30 s, reset only
/// after 2 minutes without an error), so a single failing watch held every trigger, the
/// reconcile of everything on gaining the lease included, for as long as that backoff: after an
/// apiserver restart followed by an etcd restart, over 8 s with the lease already back. Each
/// watch refsync hands a controller has a backoff of its own (`default_backoff()`), so a failing
/// watch still does not retry in a tight loop.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTriggerBackoff;

impl Iterator for NoTriggerBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl kube::runtime::utils::Backoff for NoTriggerBackoff {
    fn reset(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_trigger_backoff_never_waits_and_never_gives_up() {
        let mut b = NoTriggerBackoff;
        for _ in 0..100 {
            assert_eq!(b.next(), Some(Duration::ZERO));
        }
    }
}
