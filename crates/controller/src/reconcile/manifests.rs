//! The manifests reconciler: ExternalSecrets read from a directory or a git repository instead
//! of the cluster. Each readable state of the tree is synced through the engine and written
//! with the cluster sink (compare before write); Secrets whose ExternalSecret left the tree are
//! pruned per `creationPolicy`. A tree that cannot be read changes nothing.
//!
//! Status cannot be written back to git: each ExternalSecret's result goes to ESO's metrics,
//! Events on the target Secret, and a summary ConfigMap (conditions only, no values).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use prometheus::{GaugeVec, IntCounterVec, IntGauge, Opts};
use refsync_core::api::{CreationPolicy, ExternalSecret};
use refsync_core::assemble::{Outcome, target_name};
use refsync_core::duration::parse_go_duration;
use tokio::sync::mpsc;

use crate::context::{Context, FIELD_MANAGER};
use crate::error::{Error, Result};
use crate::events::{Publisher, Reporter};
use crate::labels::{LABEL_MANAGED, LABEL_MANAGED_VALUE};
use crate::sink::cluster::{SecretSink, WritePlan};
use crate::sink::diff::{
    self, ANNOTATION_EXTERNAL_SECRET, Change, Prune, PruneAction, SOURCE_ANNOTATIONS, SourceRef,
    Wanted,
};
use crate::source::cluster::KubeReader;
use crate::source::dir::ManifestStores;
use crate::source::watch::{Snapshot, SourceError, TreeSource};
use crate::status::*;

const CONTROLLER: &str = "manifests";
const BASE_BACKOFF: Duration = Duration::from_millis(500);
/// Event reason on a Secret whose ExternalSecret left the tree.
pub const EVENT_PRUNED: &str = "Pruned";

/// Settings of the manifests reconciler.
#[derive(Clone, Debug)]
pub struct ManifestOptions {
    /// Written as `refsync.io/source` on every Secret; pruning only touches Secrets with it.
    pub source_name: String,
    /// The summary ConfigMap (`namespace`, `name`); `None`: none written.
    pub status_config_map: Option<(String, String)>,
}

type Key = (String, String);
/// One sync: the ExternalSecret, its record and refresh interval (or the error), seconds taken.
type SyncResult = (Key, Result<(Record, Duration)>, f64);

/// One ExternalSecret of the current tree.
#[derive(Clone)]
struct Entry {
    es: ExternalSecret,
    file: String,
    spec_hash: u64,
}

/// What the summary ConfigMap shows for one ExternalSecret.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
struct Record {
    ready: String,
    reason: String,
    message: String,
    secret: String,
    file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    commit: Option<String>,
    #[serde(rename = "lastTransitionTime")]
    last_transition_time: String,
}

struct EsState {
    spec_hash: u64,
    next_due: Instant,
    failures: u32,
    record: Option<Record>,
}

/// The reconciler's state between ticks.
pub struct ManifestReconciler {
    ctx: Arc<Context>,
    sink: SecretSink,
    reader: Arc<KubeReader>,
    recorder: Publisher,
    opts: ManifestOptions,
    commit_info: GaugeVec,
    source_errors: IntCounterVec,
    source_ok: IntGauge,
    description: String,
    current: Option<Snapshot>,
    entries: BTreeMap<Key, Entry>,
    states: HashMap<Key, EsState>,
    source_error: Option<String>,
    last_status: Option<BTreeMap<String, String>>,
}

fn key_of(es: &ExternalSecret) -> Key {
    (es.namespace().unwrap_or_default(), es.name_any())
}

fn spec_hash(es: &ExternalSecret, file: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&es.spec)
        .unwrap_or_default()
        .hash(&mut h);
    es.metadata.labels.hash(&mut h);
    es.metadata.annotations.hash(&mut h);
    file.hash(&mut h);
    h.finish()
}

fn register<C: prometheus::core::Collector + Clone + 'static>(ctx: &Context, c: C) -> C {
    if let Err(e) = ctx.metrics.registry.register(Box::new(c.clone())) {
        tracing::warn!(error = %e, "metric already registered");
    }
    c
}

impl ManifestReconciler {
    pub fn new(
        ctx: Arc<Context>,
        sink: SecretSink,
        opts: ManifestOptions,
        description: String,
    ) -> Self {
        #[allow(clippy::expect_used)]
        let commit_info = register(
            &ctx,
            GaugeVec::new(
                Opts::new(
                    "refsync_git_commit_info",
                    "The git commit whose manifests are applied (1 for the current sha)",
                ),
                &["sha"],
            )
            .expect("valid metric"),
        );
        #[allow(clippy::expect_used)]
        let source_errors = register(
            &ctx,
            IntCounterVec::new(
                Opts::new(
                    "refsync_manifest_source_errors_total",
                    "Manifest trees that could not be read, by kind",
                ),
                &["kind"],
            )
            .expect("valid metric"),
        );
        #[allow(clippy::expect_used)]
        let source_ok = register(
            &ctx,
            IntGauge::new(
                "refsync_manifest_source_ok",
                "1 when the last read of the manifest tree succeeded",
            )
            .expect("valid metric"),
        );
        let reporter = Reporter {
            controller: "refsync".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        ManifestReconciler {
            recorder: Publisher::new(ctx.client.clone(), reporter),
            reader: Arc::new(KubeReader {
                client: ctx.client.clone(),
            }),
            ctx,
            sink,
            opts,
            commit_info,
            source_errors,
            source_ok,
            description,
            current: None,
            entries: BTreeMap::new(),
            states: HashMap::new(),
            source_error: None,
            last_status: None,
        }
    }

    /// A tree that could not be read: report it, change nothing.
    pub fn source_failed(&mut self, err: &SourceError) {
        tracing::error!(source = %self.description, error = %err, "manifest source cannot be read; keeping the last applied state");
        if let SourceError::Manifests { all, .. } = err {
            for m in all {
                tracing::error!(source = %self.description, "unparsable manifest: {m}");
            }
        }
        self.source_errors
            .with_label_values(&[err.metric_label()])
            .inc();
        self.source_ok.set(0);
        self.source_error = Some(err.to_string());
    }

    /// A new readable tree: index it; changed ExternalSecrets are due now.
    pub fn snapshot(&mut self, snap: Snapshot) {
        self.source_error = None;
        self.source_ok.set(1);
        if let Some(sha) = &snap.commit {
            self.commit_info.reset();
            self.commit_info.with_label_values(&[sha]).set(1.0);
            tracing::info!(source = %self.description, commit = %sha, "applying commit");
        } else {
            tracing::info!(source = %self.description, revision = %snap.revision, "applying manifests");
        }
        let mut entries = BTreeMap::new();
        for (es, origin) in snap.set.all_external_secrets() {
            let file = relative(&origin.file, &snap.root);
            let key = key_of(&es);
            let h = spec_hash(&es, &file);
            if entries.contains_key(&key) {
                tracing::warn!(externalsecret = %format!("{}/{}", key.0, key.1), file = %file, "duplicate ExternalSecret in the tree; the first one wins");
                continue;
            }
            entries.insert(
                key,
                Entry {
                    es,
                    file,
                    spec_hash: h,
                },
            );
        }
        let now = Instant::now();
        for (key, e) in &entries {
            let st = self.states.entry(key.clone()).or_insert(EsState {
                spec_hash: e.spec_hash,
                next_due: now,
                failures: 0,
                record: None,
            });
            if st.spec_hash != e.spec_hash {
                st.spec_hash = e.spec_hash;
                st.next_due = now;
                st.failures = 0;
            }
        }
        let gone: Vec<Key> = self
            .states
            .keys()
            .filter(|k| !entries.contains_key(*k))
            .cloned()
            .collect();
        for (ns, name) in gone {
            self.states.remove(&(ns.clone(), name.clone()));
            self.ctx.metrics.forget_es(&name, &ns);
        }
        self.entries = entries;
        self.current = Some(snap);
    }

    /// A managed Secret changed or vanished: its ExternalSecret is due now.
    pub fn secret_touched(&mut self, s: &Secret) {
        if s.annotations().get(crate::labels::ANNOTATION_SOURCE) != Some(&self.opts.source_name) {
            return;
        }
        let Some(es) = s.annotations().get(ANNOTATION_EXTERNAL_SECRET) else {
            return;
        };
        let key = (s.namespace().unwrap_or_default(), es.clone());
        if let Some(st) = self.states.get_mut(&key)
            && st.failures == 0
        {
            st.next_due = Instant::now();
        }
    }

    fn wanted(&self) -> Wanted {
        self.entries
            .iter()
            .map(|((ns, name), e)| (ns.clone(), name.clone(), target_name(&e.es)))
            .collect()
    }

    /// Prunes Secrets of this source whose ExternalSecret left the tree.
    pub async fn prune(&mut self) {
        if self.current.is_none() {
            return;
        }
        let cached = self.sink.managed.state();
        let plan = diff::prune_plan(
            cached.iter().map(|s| s.as_ref()),
            &self.opts.source_name,
            &self.wanted(),
        );
        for p in plan {
            if let Err(e) = self.prune_one(&p).await {
                tracing::warn!(secret = %format!("{}/{}", p.namespace, p.name), error = %e, "prune failed; retried at the next tick");
            }
        }
    }

    async fn prune_one(&self, p: &Prune) -> Result<()> {
        let what = format!("{}/{}", p.namespace, p.name);
        let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &p.namespace);
        let note = match &p.action {
            PruneAction::Delete => {
                if !self.sink.delete(&p.namespace, &p.name).await? {
                    return Ok(());
                }
                self.ctx
                    .metrics
                    .secret_writes
                    .with_label_values(&["delete"])
                    .inc();
                format!(
                    "secret deleted: ExternalSecret {} was removed from {} (creationPolicy=Owner)",
                    p.external_secret, self.description
                )
            }
            PruneAction::Release => {
                let nulls: serde_json::Map<String, serde_json::Value> = SOURCE_ANNOTATIONS
                    .iter()
                    .map(|k| (k.to_string(), serde_json::Value::Null))
                    .collect();
                api.patch(
                    &p.name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"metadata": {"annotations": nulls}})),
                )
                .await
                .map_err(|e| Error::kube(format!("release Secret {what}"), e))?;
                format!(
                    "secret kept: ExternalSecret {} was removed from {} (creationPolicy={})",
                    p.external_secret,
                    self.description,
                    if p.policy.is_empty() {
                        "Orphan"
                    } else {
                        &p.policy
                    }
                )
            }
            PruneAction::RemoveKeys(keys) => {
                // Applying an empty object under our field manager removes every field only we
                // set: our keys, labels and annotations. Keys others wrote stay.
                let empty = serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": p.name, "namespace": p.namespace},
                });
                api.patch(
                    &p.name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&empty),
                )
                .await
                .map_err(|e| Error::kube(format!("remove keys from Secret {what}"), e))?;
                format!(
                    "keys removed ({}): ExternalSecret {} was removed from {} (creationPolicy=Merge)",
                    keys.join(", "),
                    p.external_secret,
                    self.description
                )
            }
        };
        tracing::info!(secret = %what, externalsecret = %p.external_secret, "{note}");
        let mut obj = Secret::default();
        obj.metadata.name = Some(p.name.clone());
        obj.metadata.namespace = Some(p.namespace.clone());
        self.event(&obj, EventType::Normal, EVENT_PRUNED, note)
            .await;
        Ok(())
    }

    async fn event(&self, secret: &Secret, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &secret.object_ref(&())).await {
            tracing::debug!(error = %e, "could not publish event {reason}");
        }
    }

    /// Syncs every ExternalSecret that is due, `concurrency` at a time.
    pub async fn sync_due(&mut self) {
        let Some(snap) = self.current.clone() else {
            return;
        };
        let now = Instant::now();
        let due: Vec<Entry> = self
            .entries
            .iter()
            .filter(|(k, _)| self.states.get(*k).is_none_or(|s| s.next_due <= now))
            .map(|(_, e)| e.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        let this = &*self;
        let results: Vec<SyncResult> = futures::stream::iter(due.into_iter().map(|e| {
            let snap = &snap;
            async move {
                let started = Instant::now();
                let r = this.sync_one(&e, snap).await;
                (key_of(&e.es), r, started.elapsed().as_secs_f64())
            }
        }))
        .buffer_unordered(usize::from(self.ctx.config.concurrency.max(1)))
        .collect()
        .await;
        let now = Instant::now();
        for (key, result, secs) in results {
            let (ns, name) = &key;
            let m = &self.ctx.metrics;
            m.es_reconciled(name, ns, secs);
            m.reconcile_seconds
                .with_label_values(&[CONTROLLER])
                .observe(secs);
            let Some(st) = self.states.get_mut(&key) else {
                continue;
            };
            let file = self
                .entries
                .get(&key)
                .map(|e| e.file.clone())
                .unwrap_or_default();
            let target = self
                .entries
                .get(&key)
                .map(|e| target_name(&e.es))
                .unwrap_or_default();
            let ts = timestamp(Utc::now());
            let mut record = match result {
                Ok((record, interval)) => {
                    st.failures = 0;
                    st.next_due = if interval.is_zero() {
                        // refreshInterval 0: only when the tree changes.
                        now + Duration::from_secs(365 * 24 * 3600)
                    } else {
                        now + interval
                    };
                    m.set_es_condition(name, ns, CONDITION_READY, true);
                    record
                }
                Err(err) => {
                    st.failures = st.failures.saturating_add(1);
                    let backoff = BASE_BACKOFF
                        .saturating_mul(1u32 << (st.failures - 1).min(20))
                        .min(self.ctx.config.max_backoff);
                    st.next_due = now + backoff;
                    m.set_es_condition(name, ns, CONDITION_READY, false);
                    m.es_sync_error(name, ns);
                    m.reconcile_errors
                        .with_label_values(&[CONTROLLER, err.metric_label()])
                        .inc();
                    tracing::warn!(externalsecret = %format!("{ns}/{name}"), file = %file, error = %err, ?backoff, "sync failed");
                    Record {
                        ready: "False".into(),
                        reason: REASON_SYNCED_ERROR.into(),
                        message: err.to_string(),
                        secret: target.clone(),
                        file: file.clone(),
                        commit: snap.commit.clone(),
                        last_transition_time: ts.clone(),
                    }
                }
            };
            // Keep the transition time while the condition's status stays the same.
            if let Some(prev) = &st.record
                && prev.ready == record.ready
            {
                record.last_transition_time = prev.last_transition_time.clone();
            }
            st.record = Some(record);
        }
    }

    /// One ExternalSecret: engine → compare → write. Returns its record and refresh interval.
    async fn sync_one(&self, e: &Entry, snap: &Snapshot) -> Result<(Record, Duration)> {
        let es = &e.es;
        let (ns, name) = key_of(es);
        if let Some(only) = &self.ctx.config.namespace
            && *only != ns
        {
            return Err(Error::Sync(refsync_core::Error::config(format!(
                "metadata.namespace: {ns} is outside the watched namespace {only}"
            ))));
        }
        let interval = match es.spec.refresh_interval.as_deref() {
            None => Duration::from_secs(3600),
            Some(s) => {
                parse_go_duration(s).map_err(|e| Error::Sync(e.context("spec.refreshInterval")))?
            }
        };
        let target = target_name(es);
        let record = |reason: &str, message: &str| Record {
            ready: "True".into(),
            reason: reason.into(),
            message: message.into(),
            secret: target.clone(),
            file: e.file.clone(),
            commit: snap.commit.clone(),
            last_transition_time: timestamp(Utc::now()),
        };
        let stores = ManifestStores { set: &snap.set };
        let synced = self
            .ctx
            .engine
            .sync(es, &stores, self.reader.clone())
            .await
            .map_err(|err| {
                Error::Sync(err.context(format!("ExternalSecret {ns}/{name} ({})", e.file)))
            })?;
        let live = self.sink.live(&ns, &target).await?;
        let policy = es.spec.target.creation_policy;
        match synced.outcome {
            Outcome::Retain { .. } => Ok((record(REASON_SYNCED, MSG_SYNCED_RETAIN), interval)),
            Outcome::Delete { name: secret_name } => {
                if policy != CreationPolicy::Owner {
                    return Err(Error::DeleteNotOwner {
                        name: secret_name,
                        policy: format!("{policy:?}"),
                    });
                }
                let ours = live.as_deref().is_some_and(|s| {
                    s.annotations().get(crate::labels::ANNOTATION_SOURCE)
                        == Some(&self.opts.source_name)
                        && s.annotations().get(ANNOTATION_EXTERNAL_SECRET) == Some(&name)
                });
                if ours && self.sink.delete(&ns, &secret_name).await? {
                    self.ctx
                        .metrics
                        .secret_writes
                        .with_label_values(&["delete"])
                        .inc();
                    if let Some(s) = live.as_deref() {
                        self.event(s, EventType::Normal, EVENT_DELETED, NOTE_DELETED.into())
                            .await;
                    }
                }
                Ok((record(REASON_DELETED, MSG_DELETED), interval))
            }
            Outcome::Write(desired) => match policy {
                CreationPolicy::None => Ok((record(REASON_SYNCED, MSG_SYNCED), interval)),
                CreationPolicy::Merge if live.is_none() => {
                    Ok((record(REASON_MISSING, MSG_MISSING), interval))
                }
                _ => {
                    diff::check_target(es, live.as_deref(), &self.opts.source_name)?;
                    let src = SourceRef {
                        name: &self.opts.source_name,
                        file: &e.file,
                        commit: snap.commit.as_deref(),
                    };
                    let desired = diff::with_source(es, &desired, &src);
                    let (change, plan) = diff::compare(es, &desired, live.as_deref())?;
                    match plan {
                        WritePlan::UpToDate => {
                            self.ctx.metrics.secret_writes_skipped.inc();
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
                            tracing::info!(externalsecret = %format!("{ns}/{name}"), file = %e.file, commit = ?snap.commit, "{}", diff::describe(&change));
                            let (reason, note) = if create {
                                (EVENT_CREATED, NOTE_CREATED)
                            } else {
                                (EVENT_UPDATED, NOTE_UPDATED)
                            };
                            let note = match &snap.commit {
                                Some(c) => format!("{note} from {} at {c}", e.file),
                                None => format!("{note} from {}", e.file),
                            };
                            self.event(&secret, EventType::Normal, reason, note).await;
                        }
                    }
                    Ok((record(REASON_SYNCED, MSG_SYNCED), interval))
                }
            },
        }
    }

    /// The summary ConfigMap's data: one key per ExternalSecret plus `_source`.
    fn status_data(&self) -> BTreeMap<String, String> {
        let mut data = BTreeMap::new();
        let source = serde_json::json!({
            "source": self.description,
            "name": self.opts.source_name,
            "commit": self.current.as_ref().and_then(|s| s.commit.clone()),
            "revision": self.current.as_ref().map(|s| s.revision.clone()),
            "error": self.source_error,
        });
        data.insert("_source".to_string(), source.to_string());
        for ((ns, name), st) in &self.states {
            if let Some(r) = &st.record {
                data.insert(
                    format!("{ns}.{name}"),
                    serde_json::to_string(r).unwrap_or_default(),
                );
            }
        }
        data
    }

    /// Writes the summary ConfigMap when its content changed.
    pub async fn write_status(&mut self) {
        let Some((ns, name)) = self.opts.status_config_map.clone() else {
            return;
        };
        let data = self.status_data();
        if self.last_status.as_ref() == Some(&data) {
            return;
        }
        let cm = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "labels": {"app.kubernetes.io/managed-by": "refsync"}},
            "data": data,
        });
        let api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &ns);
        match api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&cm),
            )
            .await
        {
            Ok(_) => self.last_status = Some(data),
            Err(e) => {
                tracing::warn!(configmap = %format!("{ns}/{name}"), error = %e, "cannot write the status ConfigMap")
            }
        }
    }
}

fn relative(file: &Path, root: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap_or(file);
    let s = rel.display().to_string();
    if s.is_empty() {
        file.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        s
    }
}

/// Runs the manifests reconciler until `shutdown` resolves: the tree source in its own task,
/// a label-selected cache of managed Secrets, and a one-second tick for refreshes and retries.
pub async fn run(
    ctx: Arc<Context>,
    mut source: TreeSource,
    opts: ManifestOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let client = ctx.client.clone();
    let secret_api: Api<Secret> = match &ctx.config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (secret_store, secret_writer) = reflector::store::<Secret>();
    let (touched_tx, mut touched_rx) = mpsc::unbounded_channel::<Secret>();
    let secrets = watcher(
        secret_api,
        watcher::Config::default()
            .labels(&format!("{LABEL_MANAGED}={LABEL_MANAGED_VALUE}"))
            .any_semantic(),
    )
    .default_backoff()
    .modify(crate::trim::managed_secret)
    .reflect(secret_writer)
    .touched_objects();
    let secrets_task = tokio::spawn(async move {
        let mut secrets = std::pin::pin!(secrets);
        while let Some(ev) = secrets.next().await {
            match ev {
                Ok(s) => {
                    let _ = touched_tx.send(s);
                }
                Err(e) => tracing::debug!(error = %e, "managed Secret watch"),
            }
        }
    });
    let description = source.describe();
    let (snap_tx, mut snap_rx) = mpsc::channel::<std::result::Result<Snapshot, SourceError>>(1);
    let source_task = tokio::spawn(async move {
        loop {
            let r = source.next().await;
            if snap_tx.send(r).await.is_err() {
                return;
            }
        }
    });

    let sink = SecretSink {
        client: client.clone(),
        managed: secret_store.clone(),
        written: Default::default(),
    };
    let mut r = ManifestReconciler::new(ctx.clone(), sink, opts, description);
    let _ = secret_store.wait_until_ready().await;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending_prune = false;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(res) = snap_rx.recv() => match res {
                Ok(snap) => {
                    r.snapshot(snap);
                    pending_prune = true;
                }
                Err(e) => r.source_failed(&e),
            },
            Some(s) = touched_rx.recv() => {
                r.secret_touched(&s);
                while let Ok(s) = touched_rx.try_recv() {
                    r.secret_touched(&s);
                }
            }
            _ = tick.tick() => {}
        }
        if !ctx.is_leader() {
            continue;
        }
        r.sync_due().await;
        if pending_prune {
            r.prune().await;
            pending_prune = false;
        }
        r.write_status().await;
    }
    source_task.abort();
    secrets_task.abort();
}

/// The Secrets a tree would prune, read from the apiserver (for `refsync plan`): Secrets
/// labelled as managed and annotated with `source`, in all namespaces (or `namespaces` when
/// listing all is forbidden).
pub async fn live_managed_secrets(
    client: &kube::Client,
    namespaces: &HashSet<String>,
) -> std::result::Result<Vec<Secret>, kube::Error> {
    let lp =
        kube::api::ListParams::default().labels(&format!("{LABEL_MANAGED}={LABEL_MANAGED_VALUE}"));
    match Api::<Secret>::all(client.clone()).list(&lp).await {
        Ok(l) => Ok(l.items),
        Err(kube::Error::Api(s)) if s.code == 403 => {
            let mut out = Vec::new();
            for ns in namespaces {
                out.extend(
                    Api::<Secret>::namespaced(client.clone(), ns)
                        .list(&lp)
                        .await?
                        .items,
                );
            }
            Ok(out)
        }
        Err(e) => Err(e),
    }
}

/// What `refsync plan` reports for one ExternalSecret.
pub enum PlanLine {
    Change(Change),
    /// Nothing would be written (creationPolicy None, Merge into a missing Secret, Retain).
    Skipped(String),
    /// `deletionPolicy: Delete` with no remote data: the Secret would be deleted.
    Deleted,
}

/// Plans one ExternalSecret of a tree against the live cluster (no writes).
pub async fn plan_one(
    ctx: &Context,
    es: &ExternalSecret,
    file: &str,
    set: &refsync_core::manifest::ManifestSet,
    source_name: &str,
) -> Result<(String, PlanLine)> {
    let (ns, name) = key_of(es);
    let target = target_name(es);
    let reader: Arc<KubeReader> = Arc::new(KubeReader {
        client: ctx.client.clone(),
    });
    let stores = ManifestStores { set };
    let synced =
        ctx.engine.sync(es, &stores, reader).await.map_err(|err| {
            Error::Sync(err.context(format!("ExternalSecret {ns}/{name} ({file})")))
        })?;
    let live = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&target)
        .await
        .map_err(|e| Error::kube(format!("get Secret {ns}/{target}"), e))?;
    let policy = es.spec.target.creation_policy;
    let line = match synced.outcome {
        Outcome::Retain { .. } => PlanLine::Skipped("no remote data, deletionPolicy=Retain".into()),
        Outcome::Delete { .. } => {
            let ours = live.as_ref().is_some_and(|s| {
                s.annotations().get(crate::labels::ANNOTATION_SOURCE)
                    == Some(&source_name.to_string())
                    && s.annotations().get(ANNOTATION_EXTERNAL_SECRET) == Some(&name)
            });
            if ours && policy == CreationPolicy::Owner {
                PlanLine::Deleted
            } else {
                PlanLine::Skipped("no remote data, deletionPolicy=Delete".into())
            }
        }
        Outcome::Write(desired) => match policy {
            CreationPolicy::None => PlanLine::Skipped("creationPolicy=None".into()),
            CreationPolicy::Merge if live.is_none() => {
                PlanLine::Skipped("creationPolicy=Merge and the Secret does not exist".into())
            }
            _ => {
                diff::check_target(es, live.as_ref(), source_name)?;
                // The commit is not compared (see `diff::compare`): keep the live one.
                let live_commit = live
                    .as_ref()
                    .and_then(|s| s.annotations().get(diff::ANNOTATION_SOURCE_COMMIT).cloned());
                let src = SourceRef {
                    name: source_name,
                    file,
                    commit: live_commit.as_deref(),
                };
                let desired = diff::with_source(es, &desired, &src);
                PlanLine::Change(diff::compare(es, &desired, live.as_ref())?.0)
            }
        },
    };
    Ok((format!("{ns}/{target}"), line))
}

/// The file of an origin relative to the tree root (for annotations and messages).
pub fn origin_file(file: &Path, root: &Path) -> String {
    relative(file, root)
}

/// The controller process with a tree source instead of the CRD watches: leader election,
/// `/metrics` and health endpoints, and the manifests reconciler, until SIGTERM/SIGINT.
pub async fn serve(
    ctx: Arc<Context>,
    opts: crate::runtime::RuntimeOptions,
    source: TreeSource,
    mopts: ManifestOptions,
) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (stop_loop, loop_stopped) = crate::runtime::shutdown_pair();
    let (stop_lease, lease_stopped) = crate::runtime::shutdown_pair();
    let (stop_http, http_stopped) = crate::runtime::shutdown_pair();
    let ready = Arc::new(AtomicBool::new(true));
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
    let leader_state = crate::leader::LeaderState::new(ctx.leader.clone(), ctx.metrics.clone());
    let leader = tokio::spawn(crate::leader::run(
        ctx.client.clone(),
        opts.leader.clone(),
        leader_state,
        lease_stopped,
    ));
    let mut reconciler = tokio::spawn(run(ctx.clone(), source, mopts, loop_stopped));
    let outcome = tokio::select! {
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
        _ = &mut reconciler => Err(anyhow::anyhow!("the manifests reconciler stopped unexpectedly")),
    };
    ready.store(false, Ordering::SeqCst);
    stop_loop.send_replace(true);
    let _ = tokio::time::timeout(opts.shutdown_timeout, reconciler).await;
    stop_lease.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), leader).await;
    stop_http.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), http).await;
    outcome
}
