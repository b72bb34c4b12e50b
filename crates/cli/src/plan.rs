//! `refsync plan`: what a manifest tree would change in the cluster, for CI on a pull request.
//! Exit code 0 = no changes, 2 = changes, 1 = errors. Only key names and data hashes are
//! printed, never values.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use refsync_controller::context::{Config, Context};
use refsync_controller::metrics::Metrics;
use refsync_controller::reconcile::manifests::{self, PlanLine};
use refsync_controller::sink::diff::{self, Change, Wanted};
use refsync_core::assemble::target_name;
use refsync_core::engine::Engine;
use refsync_core::fetch::Fetcher;
use refsync_core::manifest::ManifestSet;

#[derive(clap::Args)]
pub struct PlanArgs {
    /// Directory (or file) of YAML manifests.
    #[arg(long)]
    pub manifests: PathBuf,
    /// Kubeconfig file (default: `$KUBECONFIG`, `~/.kube/config`, in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace for objects that do not set one.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// The tree's `refsync.io/source` name (as given to the controller's `--source-name`):
    /// Secrets carrying it whose ExternalSecret is not in the tree are reported as pruned.
    #[arg(long, default_value = "manifests")]
    pub source_name: String,
}

pub async fn run(args: PlanArgs) -> ExitCode {
    match plan(args).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn plan(args: PlanArgs) -> anyhow::Result<u8> {
    let set = ManifestSet::load_dir(&args.manifests, &args.namespace)?;
    let root = args.manifests.clone();
    let mut out = String::new();
    let mut errors = 0usize;
    for err in &set.errors {
        let file = manifests::origin_file(&err.origin.file, &root);
        out.push_str(&format!(
            "error: {file} (document {}): {}\n",
            err.origin.doc + 1,
            err.message
        ));
        errors += 1;
    }
    let client = crate::tree::client(args.kubeconfig.as_deref()).await?;
    let mut engine = Engine::new(
        crate::providers::registry(),
        Fetcher::new(Duration::from_secs(60)),
    );
    let metrics = Arc::new(Metrics::new());
    engine.calls = metrics.clone();
    let ctx = Context {
        client: client.clone(),
        engine: Arc::new(engine),
        metrics,
        config: Config::default(),
        leader: Arc::new(AtomicBool::new(false)),
    };
    let externals = set.all_external_secrets();
    let mut lines: BTreeMap<String, String> = BTreeMap::new();
    let (mut create, mut update, mut prune, mut unchanged) = (0, 0, 0, 0);
    let mut wanted: Wanted = HashSet::new();
    let mut namespaces: HashSet<String> = HashSet::from([args.namespace.clone()]);
    for (es, origin) in &externals {
        let ns = es.metadata.namespace.clone().unwrap_or_default();
        let name = es.metadata.name.clone().unwrap_or_default();
        let target = target_name(es);
        wanted.insert((ns.clone(), name.clone(), target.clone()));
        namespaces.insert(ns.clone());
        let file = manifests::origin_file(&origin.file, &root);
        let line = match manifests::plan_one(&ctx, es, &file, &set, &args.source_name).await {
            Ok((_, PlanLine::Change(c))) => {
                match &c {
                    Change::Create { .. } => create += 1,
                    Change::Update { .. } => update += 1,
                    Change::Unchanged => unchanged += 1,
                }
                diff::describe(&c)
            }
            Ok((_, PlanLine::Deleted)) => {
                prune += 1;
                "deleted (no remote data, deletionPolicy=Delete)".to_string()
            }
            Ok((_, PlanLine::Skipped(why))) => {
                unchanged += 1;
                format!("unchanged ({why})")
            }
            Err(e) => {
                errors += 1;
                format!("error: {e}")
            }
        };
        lines.insert(format!("{ns}/{target}"), line);
    }
    match manifests::live_managed_secrets(&client, &namespaces).await {
        Ok(live) => {
            for p in diff::prune_plan(live.iter(), &args.source_name, &wanted) {
                prune += 1;
                lines.insert(
                    format!("{}/{}", p.namespace, p.name),
                    diff::describe_prune(&p),
                );
            }
        }
        Err(e) => {
            errors += 1;
            out.push_str(&format!("error: cannot list managed Secrets: {e}\n"));
        }
    }
    for (k, v) in &lines {
        out.push_str(&format!("{k}: {v}\n"));
    }
    out.push_str(&format!(
        "Plan: {create} to create, {update} to update, {prune} to prune, {unchanged} unchanged, {errors} error(s).\n"
    ));
    crate::output::stdout(&out);
    Ok(if errors > 0 {
        1
    } else if create + update + prune > 0 {
        2
    } else {
        0
    })
}
