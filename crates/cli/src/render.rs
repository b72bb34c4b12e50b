//! `refsync render`: manifests in, Secrets out, one summary line per ExternalSecret.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use refsync_controller::sink::{dir, secret::build_secret};
use refsync_controller::source::dir::ManifestStores;
use refsync_core::assemble::{Outcome, target_name};
use refsync_core::engine::Engine;
use refsync_core::fetch::Fetcher;
use refsync_core::manifest::ManifestSet;

use crate::args::RenderArgs;

pub async fn run(args: RenderArgs) -> ExitCode {
    let set = match ManifestSet::load_dir(&args.manifests, &args.namespace) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = 0usize;
    for err in &set.errors {
        eprintln!("error: {}: {}", err.origin, err.message);
        tracing::error!(origin = %err.origin, "{}", err.message);
        failed += 1;
    }
    let engine = Engine::new(
        crate::providers::registry(),
        Fetcher::new(Duration::from_secs(60)),
    );
    let stores = ManifestStores { set: &set };
    let mut docs = Vec::new();
    let externals = set.all_external_secrets();
    if externals.is_empty() && set.errors.is_empty() {
        eprintln!(
            "warning: no ExternalSecret found under {}",
            args.manifests.display()
        );
    }
    for (es, origin) in &externals {
        let ns = es.metadata.namespace.clone().unwrap_or_default();
        let name = es.metadata.name.clone().unwrap_or_default();
        let store = es
            .spec
            .secret_store_ref
            .as_ref()
            .map(|r| {
                format!(
                    "{}/{}",
                    r.kind.unwrap_or_default(),
                    r.name.clone().unwrap_or_default()
                )
            })
            .unwrap_or_else(|| "-".into());
        let summary = match engine.sync(es, &stores, set.clone()).await {
            Ok(synced) => match synced.outcome {
                Outcome::Write(desired)
                    if es.spec.target.creation_policy
                        == refsync_core::api::CreationPolicy::None =>
                {
                    format!(
                        "ok: creationPolicy=None, Secret {} not written (keys: {})",
                        desired.name,
                        keys(&desired)
                    )
                }
                Outcome::Write(desired)
                    if es.spec.target.creation_policy
                        == refsync_core::api::CreationPolicy::Merge =>
                {
                    // Offline there is no existing Secret to merge into; ESO creates nothing.
                    format!(
                        "ok: secret will not be created due to CreationPolicy=Merge (keys: {})",
                        keys(&desired)
                    )
                }
                Outcome::Write(desired) => {
                    let secret = build_secret(es, &desired);
                    let keys = keys(&desired);
                    match &args.out {
                        Some(out) => match dir::write(out, &secret) {
                            Ok(path) => format!(
                                "ok: Secret {} (keys: {keys}) -> {}",
                                desired.name,
                                path.display()
                            ),
                            Err(e) => {
                                failed += 1;
                                format!("error: {e}")
                            }
                        },
                        None => match dir::to_yaml(&secret) {
                            Ok(y) => {
                                docs.push(y);
                                format!("ok: Secret {} (keys: {keys})", desired.name)
                            }
                            Err(e) => {
                                failed += 1;
                                format!("error: {e}")
                            }
                        },
                    }
                }
                Outcome::Delete { name } => format!(
                    "ok: no remote data; Secret {name} would be deleted (deletionPolicy=Delete)"
                ),
                Outcome::Retain { name } => {
                    format!(
                        "ok: no remote data; Secret {name} retained due to DeletionPolicy=Retain"
                    )
                }
            },
            Err(e) => {
                failed += 1;
                tracing::error!(externalsecret = %format!("{ns}/{name}"), kind = %e.kind, "{}", e.message);
                format!("error: ExternalSecret {ns}/{name} ({origin}): {e}")
            }
        };
        let _ = target_name(es);
        eprintln!("{ns}/{name}\tstore={store}\t{summary}");
    }
    let text: String = docs.iter().map(|d| format!("---\n{d}")).collect();
    crate::output::stdout(&text);
    eprintln!(
        "{} ExternalSecret(s), {} failed; provider calls: {}",
        externals.len(),
        failed,
        engine
            .fetcher
            .stats
            .provider_calls
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn keys(d: &refsync_core::assemble::DesiredSecret) -> String {
    d.data.keys().cloned().collect::<Vec<_>>().join(",")
}
