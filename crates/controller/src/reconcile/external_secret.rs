//! The ExternalSecret reconciler: plan → fetch → assemble through the engine, then the target
//! Secret compared and written, ESO's status and Events, requeued at the next refresh.
//!
//! Watches: ExternalSecrets (spec, label and annotation changes only — our own status writes
//! do not trigger), managed Secrets (a Secret deleted or edited by hand is restored at once),
//! SecretStores and ClusterSecretStores (a spec change drops the store's client and cached
//! values and refreshes the ExternalSecrets that use it).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use refsync_core::api::{
    ClusterSecretStore, CreationPolicy, DeletionPolicy, ExternalSecret, ExternalSecretStatus,
    LocalObjectReference, SecretStore, StoreKind,
};
use refsync_core::assemble::{Outcome, target_name};
use refsync_core::duration::parse_go_duration;
use refsync_core::plan::StoreName;
use refsync_core::{hash, plan};

use crate::context::{Context, NoTriggerBackoff};
use crate::error::{Error, Result};
use crate::events::{Publisher, Reporter};
use crate::labels::{
    ANNOTATION_DATA_HASH, ANNOTATION_FORCE_SYNC, LABEL_MANAGED, LABEL_MANAGED_VALUE, LABEL_OWNER,
};
use crate::sink::cluster::{SecretSink, WritePlan, owning_external_secret, plan_write};
use crate::source::cluster::{ClusterStores, KubeReader};
use crate::status::{self, *};

const CONTROLLER: &str = "externalsecret";
/// First error backoff; doubles per consecutive failure up to `config.max_backoff`.
const BASE_BACKOFF: Duration = Duration::from_millis(500);

type Key = (String, String);

/// Which ExternalSecrets target which Secret name (for Secrets without an ownerReference:
/// Orphan and Merge targets).
#[derive(Default)]
struct TargetIndex {
    by_target: HashMap<Key, BTreeSet<String>>,
    by_es: HashMap<Key, String>,
}

impl TargetIndex {
    fn set(&mut self, ns: &str, name: &str, target: String) {
        self.remove(ns, name);
        self.by_target
            .entry((ns.to_string(), target.clone()))
            .or_default()
            .insert(name.to_string());
        self.by_es
            .insert((ns.to_string(), name.to_string()), target);
    }

    fn remove(&mut self, ns: &str, name: &str) {
        if let Some(old) = self.by_es.remove(&(ns.to_string(), name.to_string())) {
            let k = (ns.to_string(), old);
            if let Some(set) = self.by_target.get_mut(&k) {
                set.remove(name);
                if set.is_empty() {
                    self.by_target.remove(&k);
                }
            }
        }
    }
}

/// How long a deferred refresh waits before it looks at the backlog again.
const DEFER_STEP: Duration = Duration::from_secs(5);

/// ExternalSecrets waiting for their first sync, or for the sync of changed spec, labels or
/// annotations: queued by a watch event, not yet picked up by a reconcile (by key, with the
/// `syncedResourceVersion` they wait for). While any wait, due periodic refreshes of synced
/// ExternalSecrets yield to them ([`defer_refresh`]). Kept from the events and reconciles, so
/// its size costs nothing to read.
#[derive(Default)]
struct Backlog(Mutex<HashMap<Key, String>>);

fn srv_of(es: &ExternalSecret) -> String {
    hash::synced_resource_version(
        es.metadata.generation.unwrap_or_default(),
        es.metadata.labels.as_ref(),
        es.metadata.annotations.as_ref(),
    )
}

impl Backlog {
    /// `es` is queued for a reconcile (its watch event passed the trigger filter).
    fn queued(&self, es: &ExternalSecret) {
        let srv = srv_of(es);
        let synced = es
            .status
            .as_ref()
            .and_then(|s| s.synced_resource_version.as_deref());
        let mut m = lock(&self.0);
        if synced == Some(srv.as_str()) || es.metadata.deletion_timestamp.is_some() {
            m.remove(&key_of(es));
        } else {
            m.insert(key_of(es), srv);
        }
    }

    /// A reconcile of `es` started: it no longer waits (its retries, if it fails, are not
    /// waited for).
    fn started(&self, es: &ExternalSecret) {
        let key = key_of(es);
        let mut m = lock(&self.0);
        if m.get(&key).is_some_and(|srv| *srv == srv_of(es)) {
            m.remove(&key);
        }
    }

    fn forget(&self, key: &Key) {
        lock(&self.0).remove(key);
    }

    fn len(&self) -> usize {
        lock(&self.0).len()
    }
}

/// How long a due periodic refresh waits (`None`: run it now): while `backlog` ExternalSecrets
/// wait for their first or changed sync, it is retried every [`DEFER_STEP`], but never later
/// than one interval after it was due. Only for a refresh that is due by time alone: the
/// caller never defers a force-sync, a changed spec, a failure's retry, a store change or a
/// target Secret to restore.
fn defer_refresh(
    backlog: usize,
    interval: Duration,
    st: &ExternalSecretStatus,
    now: chrono::DateTime<Utc>,
) -> Option<Duration> {
    if backlog == 0 || interval.is_zero() {
        return None;
    }
    let refreshed = chrono::DateTime::parse_from_rfc3339(st.refresh_time.as_deref()?).ok()?;
    let due = refreshed.with_timezone(&Utc) + chrono::Duration::from_std(interval).ok()?;
    let late = (now - due).to_std().ok()?;
    let left = interval.checked_sub(late).filter(|d| !d.is_zero())?;
    Some(DEFER_STEP.min(left))
}

/// Everything the ExternalSecret reconciler keeps between reconciles.
pub struct EsReconciler {
    pub ctx: Arc<Context>,
    pub stores: ClusterStores,
    pub sink: SecretSink,
    pub reader: Arc<KubeReader>,
    recorder: Publisher,
    es_store: Store<ExternalSecret>,
    /// The status this replica last wrote, by ExternalSecret uid, until the cache shows that
    /// write: the cached object may lag behind our own write, and re-deciding from a stale
    /// status would write it twice.
    written: Mutex<HashMap<String, WrittenStatus>>,
    failures: Mutex<HashMap<Key, u32>>,
    /// ExternalSecrets whose store changed: refresh them even within the interval.
    forced: Mutex<HashSet<Key>>,
    targets: Mutex<TargetIndex>,
    backlog: Backlog,
    /// True once the store and managed-Secret caches have their initial lists. (kube's
    /// `Store::wait_until_ready` wakes only its most recent waiter, so one task waits on it
    /// and reconciles wait on this.)
    caches_ready: tokio::sync::watch::Receiver<bool>,
    /// A reconcile returned without requeueing because this replica was not leading: every
    /// ExternalSecret is reconciled again once it leads (see [`resync_all`]).
    skipped_as_follower: AtomicBool,
}

/// A status this replica wrote, and the `resourceVersion` the write produced.
struct WrittenStatus {
    revision: Option<u64>,
    status: ExternalSecretStatus,
}

fn revision(rv: Option<&str>) -> Option<u64> {
    rv?.parse().ok()
}

/// Whether the cached `es` is at least as new as the write `w` (then `w` is no longer needed).
fn cache_caught_up(es: &ExternalSecret, w: &WrittenStatus) -> bool {
    match (
        revision(es.metadata.resource_version.as_deref()),
        w.revision,
    ) {
        (Some(cached), Some(ours)) => cached >= ours,
        _ => es.status.as_ref() == Some(&w.status),
    }
}

fn key_of(es: &ExternalSecret) -> Key {
    (es.namespace().unwrap_or_default(), es.name_any())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The stores an ExternalSecret names (default store and every `sourceRef.storeRef`).
fn store_names(es: &ExternalSecret) -> BTreeSet<StoreName> {
    let mut out = BTreeSet::new();
    let mut add = |r: &refsync_core::api::SecretStoreRef| {
        if let Some(n) = r.name.clone().filter(|n| !n.is_empty()) {
            out.insert(StoreName {
                kind: r.kind.unwrap_or_default(),
                name: n,
            });
        }
    };
    if let Some(r) = &es.spec.secret_store_ref {
        add(r);
    }
    for d in &es.spec.data {
        if let Some(r) = d.source_ref.as_ref().and_then(|s| s.store_ref.as_ref()) {
            add(r);
        }
    }
    for d in &es.spec.data_from {
        if let Some(r) = d.source_ref.as_ref().and_then(|s| s.store_ref.as_ref()) {
            add(r);
        }
    }
    out
}

/// Generation, labels, annotations and deletion: what makes an ExternalSecret worth a
/// reconcile (ESO's `shouldEnqueueExternalSecretUpdate`); status-only updates are filtered.
fn es_trigger_hash(es: &ExternalSecret) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    es.metadata.generation.hash(&mut h);
    es.metadata.labels.hash(&mut h);
    es.metadata.annotations.hash(&mut h);
    es.metadata.finalizers.hash(&mut h);
    es.metadata.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

impl EsReconciler {
    fn status_of(&self, es: &ExternalSecret) -> ExternalSecretStatus {
        let uid = es.metadata.uid.as_deref().unwrap_or_default();
        let mut written = lock(&self.written);
        if let Some(w) = written.get(uid) {
            if !cache_caught_up(es, w) {
                return w.status.clone();
            }
            written.remove(uid);
        }
        es.status.clone().unwrap_or_default()
    }

    async fn publish(&self, es: &ExternalSecret, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &es.object_ref(&())).await {
            tracing::warn!(
                externalsecret = %format!("{}/{}", es.namespace().unwrap_or_default(), es.name_any()),
                error = %e,
                "could not publish event {reason}"
            );
        }
    }

    /// ESO's `markAsFailed`: Warning `UpdateFailed` with the error, `Ready=False`.
    async fn fail(
        &self,
        es: &ExternalSecret,
        st: &mut ExternalSecretStatus,
        message: &str,
        err: &Error,
    ) {
        let (ns, name) = key_of(es);
        tracing::warn!(externalsecret = %format!("{ns}/{name}"), error = %err, "{message}");
        self.publish(es, EventType::Warning, EVENT_UPDATE_FAILED, err.to_string())
            .await;
        status::mark_failed(st, message, Utc::now());
        self.ctx.metrics.es_sync_error(&name, &ns);
    }

    async fn write_status(
        &self,
        es: &ExternalSecret,
        before: &ExternalSecretStatus,
        after: &ExternalSecretStatus,
    ) -> Result<()> {
        let (ns, name) = key_of(es);
        if let Some(c) = status::ready(after) {
            self.ctx
                .metrics
                .set_es_condition(&name, &ns, CONDITION_READY, c.status == "True");
        }
        if before == after {
            return Ok(());
        }
        let api: Api<ExternalSecret> = Api::namespaced(self.ctx.client.clone(), &ns);
        let rv = status::write(&api, &name, after).await?;
        self.ctx
            .metrics
            .secret_writes
            .with_label_values(&["status"])
            .inc();
        if let Some(uid) = es.metadata.uid.clone() {
            lock(&self.written).insert(
                uid,
                WrittenStatus {
                    revision: revision(rv.as_deref()),
                    status: after.clone(),
                },
            );
        }
        Ok(())
    }

    fn requeue(
        &self,
        es: &ExternalSecret,
        interval: Duration,
        st: &ExternalSecretStatus,
    ) -> Action {
        match status::next_refresh(interval, st, Utc::now(), self.ctx.config.jitter) {
            Some(d) => Action::requeue(d),
            None => Action::await_change(),
        }
        .tap_debug(es)
    }

    /// One ExternalSecret: decide, sync, write, report.
    async fn sync(&self, es: &ExternalSecret) -> Result<Action> {
        let start = Utc::now();
        let (ns, name) = key_of(es);
        let before = self.status_of(es);
        let mut st = before.clone();

        let interval = match es.spec.refresh_interval.as_deref() {
            None => Duration::from_secs(3600),
            Some(s) => match parse_go_duration(s) {
                Ok(d) => d,
                Err(e) => {
                    let err = Error::Sync(e.context("spec.refreshInterval"));
                    self.fail(es, &mut st, MSG_ERROR_GET_SECRET_DATA, &err)
                        .await;
                    self.write_status(es, &before, &st).await?;
                    return Err(err);
                }
            },
        };

        // ESO skips an ExternalSecret whose store another controller class owns.
        if let Some(store) = self.stores.foreign_store(store_names(es), &ns) {
            tracing::debug!(externalsecret = %format!("{ns}/{name}"), %store, "skipping: store belongs to another controller class");
            return Ok(Action::await_change());
        }

        let srv = srv_of(es);
        let target = target_name(es);
        // From the caches only: a target they do not know is read later, when needed (not valid
        // anyway unless Orphan: an unlabelled Secret fails the label check).
        let live = self.sink.cached(&ns, &target);
        let forced = lock(&self.forced).remove(&(ns.clone(), name.clone()));
        let failed = status::ready(&st).is_some_and(|c| c.status == "False");
        let refresh = forced
            || failed
            || status::should_refresh(es.spec.refresh_policy, interval, &st, &srv, start);
        let valid = secret_valid(es, live.as_deref());
        if !refresh && valid {
            return Ok(self.requeue(es, interval, &st));
        }
        // A refresh due by time alone yields to ExternalSecrets not synced yet.
        if !forced
            && !failed
            && valid
            && st.synced_resource_version.as_deref() == Some(srv.as_str())
            && let Some(after) = defer_refresh(self.backlog.len(), interval, &st, start)
        {
            tracing::trace!(externalsecret = %format!("{ns}/{name}"), ?after, "refresh deferred");
            return Ok(Action::requeue(after));
        }

        // A changed force-sync annotation (or any change with one set) reads the remote values
        // again instead of the refresh-window cache.
        let synced_before = st
            .synced_resource_version
            .as_deref()
            .filter(|s| !s.is_empty());
        if synced_before.is_some_and(|s| s != srv)
            && es.annotations().contains_key(ANNOTATION_FORCE_SYNC)
        {
            self.invalidate_reads(es, &ns).await;
        }

        let synced = match self
            .ctx
            .engine
            .sync(es, &self.stores, self.reader.clone())
            .await
        {
            Ok(s) => s,
            Err(e) => {
                let err = Error::Sync(e);
                self.fail(es, &mut st, MSG_ERROR_GET_SECRET_DATA, &err)
                    .await;
                self.write_status(es, &before, &st).await?;
                return Err(err);
            }
        };

        for note in &synced.missing {
            self.publish(
                es,
                EventType::Normal,
                EVENT_MISSING_PROVIDER_SECRET,
                note.clone(),
            )
            .await;
        }
        let policy = es.spec.target.creation_policy;
        // Whether a target the caches do not know exists is read only where it decides
        // something: Merge never creates, and Delete removes only a Secret we own. Owner and
        // Orphan targets are created blind (`write_secret`).
        let live = match (&synced.outcome, policy, live) {
            (Outcome::Delete { .. }, _, None)
            | (Outcome::Write(_), CreationPolicy::Merge, None) => {
                self.sink.live(&ns, &target).await?
            }
            (_, _, live) => live,
        };
        match synced.outcome {
            Outcome::Retain { .. } => {
                status::mark_done(&mut st, REASON_SYNCED, MSG_SYNCED_RETAIN, &srv, start);
            }
            Outcome::Delete { name: secret_name } => {
                if policy != CreationPolicy::Owner {
                    let err = Error::DeleteNotOwner {
                        name: secret_name,
                        policy: format!("{policy:?}"),
                    };
                    self.fail(es, &mut st, MSG_ERROR_DELETE_SECRET, &err).await;
                    self.write_status(es, &before, &st).await?;
                    return Ok(Action::await_change());
                }
                let ours = live
                    .as_deref()
                    .is_some_and(|s| owning_external_secret(s) == Some(name.as_str()));
                if ours {
                    match self.sink.delete(&ns, &secret_name).await {
                        Ok(true) => {
                            self.ctx
                                .metrics
                                .secret_writes
                                .with_label_values(&["delete"])
                                .inc();
                            self.publish(es, EventType::Normal, EVENT_DELETED, NOTE_DELETED.into())
                                .await;
                        }
                        Ok(false) => {}
                        Err(err) => {
                            self.fail(es, &mut st, MSG_ERROR_DELETE_SECRET, &err).await;
                            self.write_status(es, &before, &st).await?;
                            return Err(err);
                        }
                    }
                }
                status::mark_done(&mut st, REASON_DELETED, MSG_DELETED, &srv, start);
            }
            Outcome::Write(desired) => match policy {
                CreationPolicy::None => {
                    status::mark_done(&mut st, REASON_SYNCED, MSG_SYNCED, &srv, start);
                }
                CreationPolicy::Merge if live.is_none() => {
                    status::mark_done(&mut st, REASON_MISSING, MSG_MISSING, &srv, start);
                }
                _ => {
                    if policy == CreationPolicy::Owner
                        && let Err(err) = self.delete_orphans(es, &st, &target).await
                    {
                        self.fail(es, &mut st, MSG_ERROR_DELETE_ORPHANED, &err)
                            .await;
                        self.write_status(es, &before, &st).await?;
                        return Err(err);
                    }
                    match self.write_secret(es, &desired, live).await {
                        Ok(()) => {
                            st.binding = Some(LocalObjectReference {
                                name: target.clone(),
                            });
                            status::mark_done(&mut st, REASON_SYNCED, MSG_SYNCED, &srv, start);
                        }
                        Err(err) => {
                            let (msg, retry) = match &err {
                                Error::OwnedByOther(_) => (MSG_ERROR_IS_OWNED, false),
                                Error::Immutable(_) => (MSG_ERROR_UPDATE_IMMUTABLE, false),
                                _ => (MSG_ERROR_UPDATE_SECRET, true),
                            };
                            if err.is_conflict() {
                                return Ok(Action::requeue(Duration::from_millis(100)));
                            }
                            self.fail(es, &mut st, msg, &err).await;
                            self.write_status(es, &before, &st).await?;
                            if retry {
                                return Err(err);
                            }
                            return Ok(Action::await_change());
                        }
                    }
                }
            },
        }
        self.write_status(es, &before, &st).await?;
        Ok(self.requeue(es, interval, &st))
    }

    /// Writes the target when it differs from `live`. `live` is `None` when the caches do not
    /// know the target: an Owner or Orphan target is then created in one request, and read and
    /// compared only if it exists after all (an unlabelled Secret to adopt, or one created
    /// meanwhile).
    async fn write_secret(
        &self,
        es: &ExternalSecret,
        desired: &refsync_core::assemble::DesiredSecret,
        live: Option<Arc<Secret>>,
    ) -> Result<()> {
        let ns = desired.namespace.clone();
        let live = match live {
            Some(s) => Some(s),
            None => {
                if es.spec.target.creation_policy != CreationPolicy::Merge
                    && let WritePlan::Apply { secret, .. } = plan_write(es, desired, None)?
                    && self.sink.create(&ns, *secret).await?
                {
                    self.ctx
                        .metrics
                        .secret_writes
                        .with_label_values(&["apply"])
                        .inc();
                    self.publish(es, EventType::Normal, EVENT_CREATED, NOTE_CREATED.into())
                        .await;
                    return Ok(());
                }
                self.sink.live(&ns, &desired.name).await?
            }
        };
        match plan_write(es, desired, live.as_deref())? {
            WritePlan::UpToDate => {
                self.ctx.metrics.secret_writes_skipped.inc();
                Ok(())
            }
            WritePlan::Apply {
                secret,
                remove_keys,
                create,
            } => {
                self.sink.apply(&ns, &secret, &remove_keys).await?;
                self.ctx
                    .metrics
                    .secret_writes
                    .with_label_values(&["apply"])
                    .inc();
                let (reason, note) = if create {
                    (EVENT_CREATED, NOTE_CREATED)
                } else {
                    (EVENT_UPDATED, NOTE_UPDATED)
                };
                self.publish(es, EventType::Normal, reason, note.into())
                    .await;
                Ok(())
            }
        }
    }

    /// creationPolicy Owner after a `target.name` change: the Secrets this ExternalSecret
    /// created under another name are deleted (ESO's `deleteOrphanedSecrets`).
    async fn delete_orphans(
        &self,
        es: &ExternalSecret,
        st: &ExternalSecretStatus,
        target: &str,
    ) -> Result<()> {
        let bound = st.binding.as_ref().map(|b| b.name.as_str());
        if bound.is_none_or(|b| b.is_empty() || b == target) {
            return Ok(());
        }
        let (ns, name) = key_of(es);
        let owner = hash::created_by(&ns, &name);
        let mut candidates: Vec<String> = self
            .sink
            .cached_with_label(&ns, LABEL_OWNER, &owner)
            .iter()
            .map(|s| s.name_any())
            .collect();
        if let Some(b) = bound {
            candidates.push(b.to_string());
        }
        candidates.sort();
        candidates.dedup();
        for secret_name in candidates.into_iter().filter(|n| n != target) {
            let Some(s) = self.sink.live(&ns, &secret_name).await? else {
                continue;
            };
            let labelled = s.labels().get(LABEL_OWNER) == Some(&owner);
            if !labelled || owning_external_secret(&s) != Some(name.as_str()) {
                continue;
            }
            if self.sink.delete(&ns, &secret_name).await? {
                self.ctx
                    .metrics
                    .secret_writes
                    .with_label_values(&["delete"])
                    .inc();
                self.publish(
                    es,
                    EventType::Normal,
                    EVENT_DELETED,
                    NOTE_DELETED_ORPHANED.into(),
                )
                .await;
            }
        }
        Ok(())
    }

    /// A deleted ExternalSecret carrying ESO's cleanup finalizer: under `deletionPolicy:
    /// Delete` the target Secret it controls is deleted (ESO's `cleanupManagedSecrets`), then
    /// the finalizer is removed. Left alone when its store belongs to another controller class
    /// (that controller finalizes it).
    async fn finalize(&self, es: &ExternalSecret) -> Result<Action> {
        let Some(finalizers) = es
            .metadata
            .finalizers
            .as_ref()
            .filter(|f| f.iter().any(|x| x == FINALIZER_CLEANUP))
        else {
            return Ok(Action::await_change());
        };
        let (ns, name) = key_of(es);
        if self.stores.foreign_store(store_names(es), &ns).is_some() {
            return Ok(Action::await_change());
        }
        if es.spec.target.deletion_policy == DeletionPolicy::Delete {
            let target = target_name(es);
            let uid = es.metadata.uid.as_deref();
            let controlled = |s: &Secret| {
                s.metadata.owner_references.iter().flatten().any(|o| {
                    o.controller == Some(true) && uid.is_some() && Some(o.uid.as_str()) == uid
                })
            };
            if let Some(live) = self.sink.live(&ns, &target).await?
                && controlled(&live)
                && self.sink.delete(&ns, &target).await?
            {
                self.ctx
                    .metrics
                    .secret_writes
                    .with_label_values(&["delete"])
                    .inc();
                tracing::debug!(externalsecret = %format!("{ns}/{name}"), secret = %target, "deleted managed secret of deleted ExternalSecret");
            }
        }
        let rest: Vec<&String> = finalizers
            .iter()
            .filter(|f| *f != FINALIZER_CLEANUP)
            .collect();
        // The resourceVersion makes the patch fail (409) if the finalizers changed meanwhile.
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": es.metadata.resource_version,
                "finalizers": rest,
            }
        });
        let api: Api<ExternalSecret> = Api::namespaced(self.ctx.client.clone(), &ns);
        match api
            .patch(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(Action::await_change()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::await_change()),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                Ok(Action::requeue(Duration::from_millis(100)))
            }
            Err(e) => Err(Error::kube(
                format!("remove finalizer of ExternalSecret {ns}/{name}"),
                e,
            )),
        }
    }

    async fn invalidate_reads(&self, es: &ExternalSecret, ns: &str) {
        let Ok(p) = plan::plan(es) else {
            return;
        };
        let mut by_store: HashMap<StoreName, Vec<refsync_core::fetch::Read>> = HashMap::new();
        for r in p.data.iter().chain(&p.data_from) {
            by_store
                .entry(r.store.clone())
                .or_default()
                .push(r.read.clone());
        }
        for (store, reads) in by_store {
            if let Ok(resolved) =
                refsync_core::engine::StoreSource::resolve(&self.stores, &store, ns).await
            {
                self.ctx
                    .engine
                    .fetcher
                    .invalidate_reads(&resolved.id, &reads);
            }
        }
    }
}

trait TapDebug {
    fn tap_debug(self, es: &ExternalSecret) -> Self;
}

impl TapDebug for Action {
    fn tap_debug(self, es: &ExternalSecret) -> Self {
        tracing::trace!(externalsecret = %format!("{}/{}", es.namespace().unwrap_or_default(), es.name_any()), action = ?self, "requeue");
        self
    }
}

/// ESO's `isSecretValid`: the target exists with the managed label and a data-hash matching
/// its data (Orphan targets are always valid).
fn secret_valid(es: &ExternalSecret, live: Option<&Secret>) -> bool {
    if es.spec.target.creation_policy == CreationPolicy::Orphan {
        return true;
    }
    let Some(s) = live else {
        return false;
    };
    if s.labels().get(LABEL_MANAGED).map(String::as_str) != Some(LABEL_MANAGED_VALUE) {
        return false;
    }
    let data = s.data.clone().unwrap_or_default();
    s.annotations().get(ANNOTATION_DATA_HASH)
        == Some(&hash::data_hash(data.iter().map(|(k, v)| (k, &v.0))))
}

async fn reconcile(es: Arc<ExternalSecret>, r: Arc<EsReconciler>) -> Result<Action> {
    r.backlog.started(&es);
    if !r.ctx.is_leader() {
        r.skipped_as_follower.store(true, Ordering::SeqCst);
        return Ok(Action::await_change());
    }
    // The store and Secret caches are filled before the first decision.
    let _ = r.caches_ready.clone().wait_for(|ready| *ready).await;
    if es.metadata.deletion_timestamp.is_some() {
        return r.finalize(&es).await;
    }
    let started = Instant::now();
    let (ns, name) = key_of(&es);
    tracing::trace!(externalsecret = %format!("{ns}/{name}"), "reconcile");
    let result = r.sync(&es).await;
    tracing::debug!(externalsecret = %format!("{ns}/{name}"), ok = result.is_ok(), elapsed = ?started.elapsed(), "reconciled");
    let secs = started.elapsed().as_secs_f64();
    let m = &r.ctx.metrics;
    m.es_reconciled(&name, &ns, secs);
    m.reconcile_seconds
        .with_label_values(&[CONTROLLER])
        .observe(secs);
    match &result {
        Ok(_) => {
            lock(&r.failures).remove(&(ns, name));
        }
        Err(e) => {
            m.reconcile_errors
                .with_label_values(&[CONTROLLER, e.metric_label()])
                .inc();
        }
    }
    result
}

fn error_policy(es: Arc<ExternalSecret>, err: &Error, r: Arc<EsReconciler>) -> Action {
    let n = {
        let mut f = lock(&r.failures);
        let n = f.entry(key_of(&es)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let backoff = BASE_BACKOFF
        .saturating_mul(1u32 << (n - 1).min(20))
        .min(r.ctx.config.max_backoff);
    tracing::debug!(
        externalsecret = %format!("{}/{}", es.namespace().unwrap_or_default(), es.name_any()),
        error = %err, ?backoff, "reconcile failed"
    );
    Action::requeue(backoff)
}

fn api_for<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Turns raw store watch events into the stores worth requeueing for: created after start,
/// spec changed (generation), or deleted. Changed and deleted stores are forgotten by the
/// engine (client and cached values).
fn store_changes<K>(
    engine: Arc<refsync_core::engine::Engine>,
    kind: StoreKind,
) -> impl FnMut(watcher::Event<K>) -> Option<(K, bool)>
where
    K: Resource + Clone,
{
    let mut seen: HashMap<(String, String), Option<i64>> = HashMap::new();
    move |ev| match ev {
        watcher::Event::InitApply(o) => {
            seen.insert(
                (
                    o.meta().namespace.clone().unwrap_or_default(),
                    o.meta().name.clone().unwrap_or_default(),
                ),
                o.meta().generation,
            );
            None
        }
        watcher::Event::Apply(o) => {
            let ns = o.meta().namespace.clone().unwrap_or_default();
            let name = o.meta().name.clone().unwrap_or_default();
            match seen.insert((ns.clone(), name.clone()), o.meta().generation) {
                Some(g) if g == o.meta().generation => None,
                Some(_) => {
                    engine.forget_store(kind, &ns, &name);
                    Some((o, true))
                }
                None => Some((o, false)),
            }
        }
        watcher::Event::Delete(o) => {
            let ns = o.meta().namespace.clone().unwrap_or_default();
            let name = o.meta().name.clone().unwrap_or_default();
            seen.remove(&(ns.clone(), name.clone()));
            engine.forget_store(kind, &ns, &name);
            Some((o, true))
        }
        watcher::Event::Init | watcher::Event::InitDone => None,
    }
}

/// The ExternalSecrets (from the cache) that use store `kind/name` (`namespace` for a
/// SecretStore); `force` marks them for a refresh within their interval.
fn users_of(
    r: &EsReconciler,
    kind: StoreKind,
    namespace: Option<&str>,
    name: &str,
    force: bool,
) -> Vec<ObjectRef<ExternalSecret>> {
    let want = StoreName {
        kind,
        name: name.to_string(),
    };
    let users: Vec<ObjectRef<ExternalSecret>> = r
        .es_store
        .state()
        .into_iter()
        .filter(|es| namespace.is_none_or(|ns| es.namespace().as_deref() == Some(ns)))
        .filter(|es| store_names(es).contains(&want))
        .map(|es| ObjectRef::from_obj(es.as_ref()))
        .collect();
    if force {
        let mut f = lock(&r.forced);
        for u in &users {
            f.insert((u.namespace.clone().unwrap_or_default(), u.name.clone()));
        }
    }
    users
}

/// Whether every ExternalSecret is to be reconciled now, `leading` being the leader flag at
/// this tick: on gaining leadership, and on leading while a reconcile was skipped as a follower
/// since the last resync (the flag can drop and come back between two ticks, as when a lease
/// renewal fails while the lease is still valid; such a skipped reconcile requeued nothing).
fn resync_all(leading: bool, was_leading: &AtomicBool, skipped: &AtomicBool) -> bool {
    let was = was_leading.swap(leading, Ordering::SeqCst);
    let gained = leading && !was;
    // `skipped` is cleared only while leading: what a follower skips waits for leadership.
    gained | (leading && skipped.swap(false, Ordering::SeqCst))
}

/// Builds the ExternalSecret controller and runs it until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + 'static) {
    let client = ctx.client.clone();
    let ns = ctx.config.namespace.clone();
    let es_api: Api<ExternalSecret> = api_for(&client, ns.as_deref());
    let ss_api: Api<SecretStore> = api_for(&client, ns.as_deref());
    let css_api: Api<ClusterSecretStore> = Api::all(client.clone());
    let secret_api: Api<Secret> = api_for(&client, ns.as_deref());

    let (es_store, es_writer) = reflector::store::<ExternalSecret>();
    let (ss_store, ss_writer) = reflector::store::<SecretStore>();
    let (css_store, css_writer) = reflector::store::<ClusterSecretStore>();
    let (secret_store, secret_writer) = reflector::store::<Secret>();

    let reporter = Reporter {
        controller: "refsync".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let (ready_tx, caches_ready) = tokio::sync::watch::channel(false);
    {
        let (ss, css, sec) = (ss_store.clone(), css_store.clone(), secret_store.clone());
        tokio::spawn(async move {
            let _ = ss.wait_until_ready().await;
            let _ = css.wait_until_ready().await;
            let _ = sec.wait_until_ready().await;
            let _ = ready_tx.send(true);
        });
    }
    let r = Arc::new(EsReconciler {
        caches_ready,
        stores: ClusterStores {
            client: client.clone(),
            secret_stores: ss_store,
            cluster_stores: css_store,
            config: ctx.config.clone(),
        },
        sink: SecretSink {
            client: client.clone(),
            managed: secret_store,
            written: Default::default(),
        },
        reader: Arc::new(KubeReader {
            client: client.clone(),
        }),
        recorder: Publisher::new(client.clone(), reporter),
        es_store: es_store.clone(),
        written: Mutex::new(HashMap::new()),
        failures: Mutex::new(HashMap::new()),
        forced: Mutex::new(HashSet::new()),
        targets: Mutex::new(TargetIndex::default()),
        backlog: Backlog::default(),
        skipped_as_follower: AtomicBool::new(false),
        ctx: ctx.clone(),
    });

    // ExternalSecrets: cache, target index, metrics cleanup, then only meaningful changes.
    let ri = r.clone();
    let es_stream = watcher(es_api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(crate::trim::external_secret)
        .reflect(es_writer)
        .inspect(move |ev| match ev {
            Ok(watcher::Event::Apply(es) | watcher::Event::InitApply(es)) => {
                let (ns, name) = key_of(es);
                lock(&ri.targets).set(&ns, &name, target_name(es));
                // Our status write reached the cache: the copy is no longer needed.
                if let Some(uid) = es.metadata.uid.as_deref() {
                    let mut written = lock(&ri.written);
                    if written.get(uid).is_some_and(|w| cache_caught_up(es, w)) {
                        written.remove(uid);
                    }
                }
            }
            Ok(watcher::Event::Delete(es)) => {
                let (ns, name) = key_of(es);
                lock(&ri.targets).remove(&ns, &name);
                ri.backlog.forget(&(ns.clone(), name.clone()));
                lock(&ri.failures).remove(&(ns.clone(), name.clone()));
                if let Some(uid) = &es.metadata.uid {
                    lock(&ri.written).remove(uid);
                }
                ri.ctx.metrics.forget_es(&name, &ns);
            }
            _ => {}
        })
        .applied_objects()
        .predicate_filter(es_trigger_hash, Default::default())
        .inspect({
            let ri = r.clone();
            move |es| {
                if let Ok(es) = es {
                    ri.backlog.queued(es);
                }
            }
        });

    // Managed Secrets: cache (for compare-before-write) and requeue of their ExternalSecret.
    let secret_stream = watcher(
        secret_api,
        watcher::Config::default()
            .labels(&format!("{LABEL_MANAGED}={LABEL_MANAGED_VALUE}"))
            .any_semantic(),
    )
    .default_backoff()
    .modify(crate::trim::managed_secret)
    .reflect(secret_writer)
    .touched_objects();
    let ri = r.clone();
    let secret_mapper = move |s: Secret| {
        let ns = s.namespace().unwrap_or_default();
        let mut out: Vec<ObjectRef<ExternalSecret>> = Vec::new();
        if let Some(owner) = owning_external_secret(&s) {
            out.push(ObjectRef::new(owner).within(&ns));
        }
        if let Some(names) = lock(&ri.targets).by_target.get(&(ns.clone(), s.name_any())) {
            out.extend(names.iter().map(|n| ObjectRef::new(n).within(&ns)));
        }
        out
    };

    let ri = r.clone();
    let ss_stream = watcher(ss_api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(ss_writer)
        .filter_map({
            let mut f = store_changes::<SecretStore>(ctx.engine.clone(), StoreKind::SecretStore);
            move |ev| {
                future::ready(match ev {
                    Ok(ev) => f(ev).map(|(s, force)| {
                        if force {
                            users_of(
                                &ri,
                                StoreKind::SecretStore,
                                s.namespace().as_deref(),
                                &s.name_any(),
                                true,
                            );
                        }
                        Ok(s)
                    }),
                    Err(e) => Some(Err(e)),
                })
            }
        });
    let ri = r.clone();
    let ss_mapper = move |s: SecretStore| {
        users_of(
            &ri,
            StoreKind::SecretStore,
            s.namespace().as_deref(),
            &s.name_any(),
            false,
        )
    };
    let ri = r.clone();
    let css_stream = watcher(css_api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(css_writer)
        .filter_map({
            let mut f = store_changes::<ClusterSecretStore>(
                ctx.engine.clone(),
                StoreKind::ClusterSecretStore,
            );
            move |ev| {
                future::ready(match ev {
                    Ok(ev) => f(ev).map(|(s, force)| {
                        if force {
                            users_of(
                                &ri,
                                StoreKind::ClusterSecretStore,
                                None,
                                &s.name_any(),
                                true,
                            );
                        }
                        Ok(s)
                    }),
                    Err(e) => Some(Err(e)),
                })
            }
        });
    let ri = r.clone();
    let css_mapper = move |s: ClusterSecretStore| {
        users_of(
            &ri,
            StoreKind::ClusterSecretStore,
            None,
            &s.name_any(),
            false,
        )
    };

    // Gaining the lease reconciles everything (a follower did nothing), and so does leading
    // again after a reconcile was skipped as a follower, however short that was.
    let leader = ctx.leader.clone();
    let ri = r.clone();
    let was_leader = Arc::new(AtomicBool::new(leader.load(Ordering::Relaxed)));
    let leader_gained = futures::stream::unfold((), move |()| {
        let leader = leader.clone();
        let was = was_leader.clone();
        let ri = ri.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = leader.load(Ordering::SeqCst);
                if resync_all(now, &was, &ri.skipped_as_follower) {
                    lock(&ri.written).clear();
                    return Some(((), ()));
                }
            }
        }
    });

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(());
    });

    Controller::for_stream(es_stream, es_store)
        .with_config(ControllerConfig::default().concurrency(ctx.config.concurrency))
        .trigger_backoff(NoTriggerBackoff)
        .watches_stream(secret_stream, secret_mapper)
        .watches_stream(ss_stream, ss_mapper)
        .watches_stream(css_stream, css_mapper)
        .reconcile_all_on(leader_gained)
        .graceful_shutdown_on(async move {
            let _ = stop_rx.await;
        })
        .run(reconcile, error_policy, r)
        .for_each(|res| {
            if let Err(e) = res {
                tracing::debug!(error = %e, "externalsecret controller");
            }
            future::ready(())
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_refreshed(at: chrono::DateTime<Utc>) -> ExternalSecretStatus {
        ExternalSecretStatus {
            refresh_time: Some(status::timestamp(at)),
            ..Default::default()
        }
    }

    #[test]
    fn due_refresh_waits_for_the_backlog_at_most_one_interval() {
        let interval = Duration::from_secs(30);
        let t0 = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let st = status_refreshed(t0);
        let at = |secs: i64| t0 + chrono::Duration::seconds(secs);
        // No backlog: runs now.
        assert_eq!(defer_refresh(0, interval, &st, at(31)), None);
        // Due and a backlog: waits a step.
        assert_eq!(defer_refresh(5, interval, &st, at(31)), Some(DEFER_STEP));
        // Near the bound: waits only until it.
        assert_eq!(
            defer_refresh(5, interval, &st, at(58)),
            Some(Duration::from_secs(2))
        );
        // One interval late: runs whatever waits.
        assert_eq!(defer_refresh(5, interval, &st, at(60)), None);
        assert_eq!(defer_refresh(5, interval, &st, at(90)), None);
        // Never refreshed, or no periodic refresh: nothing to defer.
        assert_eq!(
            defer_refresh(5, interval, &ExternalSecretStatus::default(), at(31)),
            None
        );
        assert_eq!(defer_refresh(5, Duration::ZERO, &st, at(31)), None);
    }

    #[test]
    fn backlog_counts_queued_unsynced_until_their_reconcile_starts() {
        let b = Backlog::default();
        let mut es = ExternalSecret::new("a", Default::default());
        es.metadata.namespace = Some("ns".into());
        es.metadata.generation = Some(1);
        b.queued(&es);
        assert_eq!(b.len(), 1);
        // A reconcile of an older version leaves it waiting.
        let mut old = es.clone();
        old.metadata.generation = Some(0);
        b.started(&old);
        assert_eq!(b.len(), 1);
        b.started(&es);
        assert_eq!(b.len(), 0);
        // Synced for its current version: not waiting.
        es.status = Some(ExternalSecretStatus {
            synced_resource_version: Some(srv_of(&es)),
            ..Default::default()
        });
        b.queued(&es);
        assert_eq!(b.len(), 0);
        // Spec changed since: waiting again, until deleted.
        es.metadata.generation = Some(2);
        b.queued(&es);
        assert_eq!(b.len(), 1);
        b.forget(&key_of(&es));
        assert_eq!(b.len(), 0);
    }
}

#[cfg(test)]
mod resync_tests {
    use super::*;

    #[test]
    fn a_reconcile_skipped_during_a_short_loss_of_leadership_triggers_a_resync() {
        let (was, skipped) = (AtomicBool::new(true), AtomicBool::new(false));
        assert!(
            !resync_all(true, &was, &skipped),
            "steady leader: nothing to do"
        );
        // Leadership dropped and came back between two ticks; a reconcile ran in between.
        skipped.store(true, Ordering::SeqCst);
        assert!(resync_all(true, &was, &skipped));
        assert!(!resync_all(true, &was, &skipped), "once only");
    }

    #[test]
    fn a_follower_resyncs_when_it_gains_leadership_and_not_before() {
        let (was, skipped) = (AtomicBool::new(false), AtomicBool::new(false));
        skipped.store(true, Ordering::SeqCst);
        assert!(!resync_all(false, &was, &skipped));
        assert!(!resync_all(false, &was, &skipped));
        assert!(resync_all(true, &was, &skipped));
        assert!(!resync_all(true, &was, &skipped));
        // Lost and gained again over two ticks: a resync for the gain.
        assert!(!resync_all(false, &was, &skipped));
        assert!(resync_all(true, &was, &skipped));
    }
}
