//! SecretStore and ClusterSecretStore controllers: build the store's provider client, call
//! `validate()`, and report the result as ESO does (`Ready` condition, `status.capabilities`,
//! Events, `*_status_condition` metrics).
//!
//! Differences from ESO, on purpose: status is written (server-side apply) only when it
//! changes, and the `Valid` / `StoreUnmaintained` / `InvalidProviderConfig` Events go with those
//! status changes instead of with every refresh; failure messages carry the cause after ESO's
//! text (`unable to validate store: <cause>`), so `kubectl get` tells what is wrong.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Resource, ResourceExt};
use refsync_core::api::{
    ClusterSecretStore, Condition, SecretStore, SecretStoreSpec, SecretStoreStatus, StoreKind,
};
use refsync_core::provider::{SecretReader, StoreContext};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::{Context, FIELD_MANAGER};
use crate::error::{Error, Result};
use crate::events::{Publisher, Reporter};
use crate::source::cluster::store_is_ours;

/// ESO's `store-requeue-interval` default: how often a store without `spec.refreshInterval`
/// is validated again.
pub const DEFAULT_STORE_REQUEUE: Duration = Duration::from_secs(300);
/// How soon a store that failed validation is tried again (at most).
const FAILED_REQUEUE: Duration = Duration::from_secs(60);

/// The annotation that silences the unmaintained-provider warning.
pub const IGNORE_MAINTENANCE_ANNOTATION: &str = "external-secrets.io/ignore-maintenance-checks";

const MSG_VALIDATED: &str = "store validated";
const MSG_UNMAINTAINED: &str =
    "store isn't currently maintained. Please plan and prepare accordingly.";
const REASON_VALID: &str = "Valid";
const REASON_INVALID_PROVIDER_CONFIG: &str = "InvalidProviderConfig";
const REASON_UNMAINTAINED: &str = "StoreUnmaintained";

/// Provider keys ESO marks as not maintained.
const UNMAINTAINED_PROVIDERS: &[&str] = &["fake"];

/// What the two store kinds have in common for this controller.
pub trait StoreObject:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Serialize + Send + Sync + 'static
{
    const KIND: StoreKind;
    fn spec(&self) -> SecretStoreSpec;
    fn status(&self) -> Option<&SecretStoreStatus>;
    /// The API to watch: a namespaced store honours `--namespace`.
    fn watch_api(client: kube::Client, namespace: Option<&str>) -> Api<Self>;
    fn object_api(client: kube::Client, namespace: Option<&str>) -> Api<Self>;
    fn set_condition_metric(ctx: &Context, name: &str, namespace: &str, ready: bool);
    /// Drops the condition series of a deleted store.
    fn forget_condition_metric(ctx: &Context, name: &str, namespace: &str);
}

impl StoreObject for SecretStore {
    const KIND: StoreKind = StoreKind::SecretStore;
    fn spec(&self) -> SecretStoreSpec {
        self.spec.clone()
    }
    fn status(&self) -> Option<&SecretStoreStatus> {
        self.status.as_ref()
    }
    fn watch_api(client: kube::Client, namespace: Option<&str>) -> Api<Self> {
        match namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    }
    fn object_api(client: kube::Client, namespace: Option<&str>) -> Api<Self> {
        Api::namespaced(client, namespace.unwrap_or_default())
    }
    fn set_condition_metric(ctx: &Context, name: &str, namespace: &str, ready: bool) {
        let (on, off) = if ready {
            ("True", "False")
        } else {
            ("False", "True")
        };
        let g = &ctx.metrics.secretstore_status_condition;
        g.with_label_values(&[name, namespace, "Ready", on])
            .set(1.0);
        g.with_label_values(&[name, namespace, "Ready", off])
            .set(0.0);
    }
    fn forget_condition_metric(ctx: &Context, name: &str, namespace: &str) {
        for st in ["True", "False"] {
            let _ = ctx
                .metrics
                .secretstore_status_condition
                .remove_label_values(&[name, namespace, "Ready", st]);
        }
    }
}

impl StoreObject for ClusterSecretStore {
    const KIND: StoreKind = StoreKind::ClusterSecretStore;
    fn spec(&self) -> SecretStoreSpec {
        self.spec.clone().into()
    }
    fn status(&self) -> Option<&SecretStoreStatus> {
        self.status.as_ref()
    }
    fn watch_api(client: kube::Client, _: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
    fn object_api(client: kube::Client, _: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
    fn set_condition_metric(ctx: &Context, name: &str, _: &str, ready: bool) {
        let (on, off) = if ready {
            ("True", "False")
        } else {
            ("False", "True")
        };
        let g = &ctx.metrics.clustersecretstore_status_condition;
        g.with_label_values(&[name, "Ready", on]).set(1.0);
        g.with_label_values(&[name, "Ready", off]).set(0.0);
    }
    fn forget_condition_metric(ctx: &Context, name: &str, _: &str) {
        for st in ["True", "False"] {
            let _ = ctx
                .metrics
                .clustersecretstore_status_condition
                .remove_label_values(&[name, "Ready", st]);
        }
    }
}

/// The context of one store controller.
struct StoreCtx {
    ctx: Arc<Context>,
    recorder: Publisher,
    reader: Arc<dyn SecretReader>,
}

/// The outcome of building and validating a store's client.
#[derive(Debug, PartialEq)]
enum Validation {
    Valid { capabilities: &'static str },
    Invalid { message: String, cause: String },
}

/// Runs the controller of one store kind until `shutdown` resolves (in-flight reconciles
/// finish first). `leader_acquired` yields each time this replica becomes leader: every store
/// is validated again then, since a follower writes nothing.
pub async fn run<S: StoreObject>(
    ctx: Arc<Context>,
    reader: Arc<dyn SecretReader>,
    leader_acquired: impl futures::Stream<Item = ()> + Send + 'static,
    ready: tokio::sync::oneshot::Sender<()>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api = S::watch_api(ctx.client.clone(), ctx.config.namespace.as_deref());
    // A deleted store's condition series go with it (the reconciler never sees the deletion).
    let (cache, writer) = reflector::store::<S>();
    let forget_ctx = ctx.clone();
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .inspect(move |ev| {
            if let Ok(watcher::Event::Delete(o)) = ev {
                S::forget_condition_metric(
                    &forget_ctx,
                    &o.name_any(),
                    &o.namespace().unwrap_or_default(),
                );
            }
        })
        .applied_objects();
    let controller = Controller::for_stream(stream, cache)
        .with_config(
            kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency.max(1)),
        )
        .trigger_backoff(crate::context::NoTriggerBackoff)
        .reconcile_all_on(leader_acquired)
        .graceful_shutdown_on(shutdown);
    let store = controller.store();
    tokio::spawn(async move {
        // kube-runtime's readiness signal wakes only one waiter (the applier also waits on
        // it), so poll it with a timeout instead of relying on the wake-up.
        loop {
            let tick = tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready());
            match tick.await {
                Ok(Ok(())) => {
                    tracing::debug!(kind = %S::KIND, "store cache synced");
                    let _ = ready.send(());
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!(kind = %S::KIND, error = %e, "store cache never synced");
                    return;
                }
                Err(_) => {}
            }
        }
    });
    let reporter = Reporter {
        controller: match S::KIND {
            StoreKind::SecretStore => "secret-store".into(),
            StoreKind::ClusterSecretStore => "cluster-secret-store".into(),
        },
        instance: std::env::var("POD_NAME").ok(),
    };
    let sctx = Arc::new(StoreCtx {
        recorder: Publisher::new(ctx.client.clone(), reporter),
        ctx,
        reader,
    });
    controller
        .run(reconcile::<S>, error_policy::<S>, sctx)
        .for_each(|res| async move {
            match res {
                Ok(_) | Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(e) => tracing::warn!(kind = %S::KIND, error = %e, "store controller error"),
            }
        })
        .await;
}

fn error_policy<S: StoreObject>(obj: Arc<S>, err: &Error, sctx: Arc<StoreCtx>) -> Action {
    tracing::warn!(kind = %S::KIND, name = %obj.name_any(), namespace = ?obj.namespace(),
        error = %err, "store reconcile failed");
    sctx.ctx
        .metrics
        .reconcile_errors
        .with_label_values(&[controller_label(S::KIND), err.metric_label()])
        .inc();
    Action::requeue(Duration::from_secs(5))
}

fn controller_label(kind: StoreKind) -> &'static str {
    match kind {
        StoreKind::SecretStore => "secretstore",
        StoreKind::ClusterSecretStore => "clustersecretstore",
    }
}

async fn reconcile<S: StoreObject>(obj: Arc<S>, sctx: Arc<StoreCtx>) -> Result<Action> {
    let ctx = &sctx.ctx;
    let spec = obj.spec();
    if !store_is_ours(spec.controller.as_deref(), &ctx.config) {
        return Ok(Action::await_change());
    }
    if obj.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // A follower neither validates (provider calls) nor writes; it runs again on acquiring the
    // lease.
    if !ctx.is_leader() {
        return Ok(Action::await_change());
    }
    let _timer = ctx
        .metrics
        .reconcile_seconds
        .with_label_values(&[controller_label(S::KIND)])
        .start_timer();
    let name = obj.name_any();
    let namespace = obj.namespace().unwrap_or_default();
    let interval = spec
        .refresh_interval
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s.unsigned_abs()))
        .unwrap_or(DEFAULT_STORE_REQUEUE);

    let validation = validate(&sctx, S::KIND, &name, &namespace, &spec).await;
    let ready = matches!(validation, Validation::Valid { .. });
    S::set_condition_metric(ctx, &name, &namespace, ready);

    let previous = obj.status();
    let prev_ready = previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let (status, reason, message, capabilities) = match &validation {
        Validation::Valid { capabilities } => (
            "True",
            REASON_VALID,
            MSG_VALIDATED.to_string(),
            Some(capabilities.to_string()),
        ),
        Validation::Invalid { message, .. } => (
            "False",
            REASON_INVALID_PROVIDER_CONFIG,
            message.clone(),
            // ESO leaves the last known capabilities in place on failure.
            previous.and_then(|s| s.capabilities.clone()),
        ),
    };
    let unchanged = prev_ready.is_some_and(|c| {
        c.status == status
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(message.as_str())
    }) && previous.and_then(|s| s.capabilities.as_deref())
        == capabilities.as_deref();

    if let Validation::Invalid { cause, .. } = &validation {
        tracing::warn!(kind = %S::KIND, name = %name, namespace = %namespace, error = %cause,
            "store validation failed");
    }
    if !unchanged && ctx.is_leader() {
        let last_transition_time = prev_ready
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(now_rfc3339);
        let new_status = SecretStoreStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: status.into(),
                reason: Some(reason.into()),
                message: Some(message.clone()),
                last_transition_time: Some(last_transition_time),
            }],
            capabilities,
        };
        let patch = serde_json::json!({
            "apiVersion": "external-secrets.io/v1",
            "kind": S::KIND.to_string(),
            "status": new_status,
        });
        S::object_api(ctx.client.clone(), obj.namespace().as_deref())
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|e| {
                Error::kube(format!("patch status of {} {namespace}/{name}", S::KIND), e)
            })?;
        ctx.metrics
            .secret_writes
            .with_label_values(&["store_status"])
            .inc();
        tracing::info!(kind = %S::KIND, name = %name, namespace = %namespace, ready = %status,
            reason = %reason, "store status updated");
        publish_events(&sctx, obj.as_ref(), &validation, &spec).await;
    }
    Ok(Action::requeue(if ready {
        interval
    } else {
        interval.min(FAILED_REQUEUE)
    }))
}

/// Builds a fresh client for the store (as ESO does for validation, so the current credentials
/// are what gets checked), validates it and closes it.
async fn validate(
    sctx: &StoreCtx,
    kind: StoreKind,
    name: &str,
    namespace: &str,
    spec: &SecretStoreSpec,
) -> Validation {
    let store_ctx = StoreContext {
        kind,
        name: name.to_string(),
        namespace: namespace.to_string(),
        reader: sctx.reader.clone(),
        calls: sctx.ctx.engine.calls.clone(),
    };
    let provider = match sctx.ctx.engine.registry.build(spec, &store_ctx).await {
        Ok(p) => p,
        Err(e) => {
            return Validation::Invalid {
                message: format!("unable to create client: {e}"),
                cause: e.to_string(),
            };
        }
    };
    let result = provider.validate().await;
    let capabilities = provider.capabilities().as_str();
    provider.close().await;
    match result {
        Ok(()) => Validation::Valid { capabilities },
        Err(e) => Validation::Invalid {
            message: format!("unable to validate store: {e}"),
            cause: e.to_string(),
        },
    }
}

async fn publish_events<S: StoreObject>(
    sctx: &StoreCtx,
    obj: &S,
    validation: &Validation,
    spec: &SecretStoreSpec,
) {
    let mut events = Vec::new();
    match validation {
        Validation::Valid { .. } => {
            let ignore = obj
                .annotations()
                .contains_key(IGNORE_MAINTENANCE_ANNOTATION);
            let unmaintained = spec
                .provider
                .configured()
                .iter()
                .any(|k| UNMAINTAINED_PROVIDERS.contains(k));
            if unmaintained && !ignore {
                events.push((
                    EventType::Warning,
                    REASON_UNMAINTAINED,
                    MSG_UNMAINTAINED.into(),
                ));
            }
            events.push((EventType::Normal, REASON_VALID, MSG_VALIDATED.into()));
        }
        Validation::Invalid { cause, .. } => {
            events.push((
                EventType::Warning,
                REASON_INVALID_PROVIDER_CONFIG,
                truncate(cause, 1000),
            ));
        }
    }
    let reference = obj.object_ref(&());
    for (type_, reason, note) in events {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Validate".into(),
            secondary: None,
        };
        if let Err(e) = sctx.recorder.publish(&ev, &reference).await {
            tracing::warn!(name = %obj.name_any(), reason, error = %e, "cannot publish Event");
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ééé", 3), "é…");
    }
}
