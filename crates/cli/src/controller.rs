//! `refsync controller`: flags → kube client, context and runtime options → run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use refsync_controller::context::Config;
use refsync_controller::leader::{LeaderOptions, default_identity};
use refsync_controller::runtime::{self, RuntimeOptions};

#[derive(clap::Args, Debug)]
pub struct ControllerArgs {
    /// Kubeconfig file. Without it: the in-cluster ServiceAccount, else `$KUBECONFIG`, else
    /// `~/.kube/config`.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (all namespaces when unset). ClusterSecretStores are still
    /// watched; ClusterExternalSecrets are not reconciled in this mode (their fan-out spans
    /// namespaces).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Process only stores whose `spec.controller` is this class (plus stores without a
    /// class, unless `--only-classed-stores`). ESO's default class is `default` too.
    #[arg(long, default_value = "default")]
    pub controller_class: String,
    /// Ignore stores that set no `spec.controller`.
    #[arg(long)]
    pub only_classed_stores: bool,
    /// Reconciles running at once (per controller).
    #[arg(long, default_value_t = 32)]
    pub concurrent: u16,
    /// Elect a leader among replicas (`--leader-elect=false`: this replica always writes).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true")]
    pub leader_elect: bool,
    /// Namespace of the leader Lease (defaults to `$POD_NAMESPACE`, else `default`).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub leader_election_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "refsync-controller")]
    pub lease_name: String,
    /// Seconds a leader's lease stays valid without renewal (a crashed leader is replaced
    /// after at most this long).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..))]
    pub lease_duration: u64,
    /// Address of `/metrics`.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Address of `/healthz` and `/readyz` (may equal `--metrics-addr`).
    #[arg(long, default_value = "0.0.0.0:8081")]
    pub health_addr: SocketAddr,
    /// Random extra delay added to each refresh, as a fraction of the refresh interval
    /// (0.0–1.0): spreads the provider calls of objects created together.
    #[arg(long, default_value_t = 0.1)]
    pub refresh_jitter: f64,
    /// Upper bound, in seconds, of the per-object retry backoff after errors.
    #[arg(long, default_value_t = 300)]
    pub max_backoff: u64,
    /// Seconds a fetched remote value is reused by other ExternalSecrets reading the same key.
    #[arg(long, default_value_t = 10)]
    pub fetch_cache_ttl: u64,
    /// Seconds in-flight reconciles may take to finish after SIGTERM.
    #[arg(long, default_value_t = 10)]
    pub shutdown_timeout: u64,
    /// Where ExternalSecrets come from: `cluster` (the CRDs), `dir` (`--manifests`) or `git`
    /// (`--repo`, `--ref`, `--path`, `--interval`).
    #[arg(long, value_enum, default_value_t = crate::tree::SourceKind::Cluster)]
    pub source: crate::tree::SourceKind,
    #[command(flatten)]
    pub tree: Box<crate::tree::TreeArgs>,
}

pub async fn run(args: ControllerArgs) -> ExitCode {
    match start(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "controller failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn start(args: ControllerArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.refresh_jitter),
        "--refresh-jitter must be between 0.0 and 1.0, got {}",
        args.refresh_jitter
    );
    let kube_config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("read --kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("use --kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no cluster configuration (in-cluster, $KUBECONFIG or ~/.kube/config)")?,
    };
    let client = kube::Client::try_from(kube_config).context("build the Kubernetes client")?;
    let config = Config {
        namespace: args.namespace.clone(),
        controller_class: Some(args.controller_class.clone()).filter(|c| !c.is_empty()),
        only_classed_stores: args.only_classed_stores,
        concurrency: args.concurrent.max(1),
        max_backoff: Duration::from_secs(args.max_backoff.max(1)),
        jitter: args.refresh_jitter,
    };
    let ctx = runtime::context(
        client,
        crate::providers::registry(),
        config,
        Duration::from_secs(args.fetch_cache_ttl),
    );
    let opts = RuntimeOptions {
        leader: LeaderOptions {
            enabled: args.leader_elect,
            lease_name: args.lease_name,
            namespace: args.leader_election_namespace,
            identity: default_identity(),
            duration_secs: args.lease_duration,
            grace_secs: (args.lease_duration / 3).max(1),
        },
        metrics_addr: args.metrics_addr,
        health_addr: args.health_addr,
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
    };
    tracing::info!(namespace = ?opts.leader.namespace, lease = %opts.leader.lease_name,
        leader_elect = opts.leader.enabled, "starting the controller");
    if args.source != crate::tree::SourceKind::Cluster {
        return crate::tree::run(ctx, opts, args.source, &args.tree).await;
    }
    runtime::run(ctx, opts).await
}
