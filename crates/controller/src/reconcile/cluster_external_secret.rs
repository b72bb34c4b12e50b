//! The ClusterExternalSecret reconciler: `spec.externalSecretSpec` fanned out as one
//! ExternalSecret per selected namespace, as ESO's `clusterexternalsecret` controller does.
//!
//! - Namespaces: `namespaceSelectors` (ORed), the deprecated `namespaceSelector`, and
//!   `namespaces` (matched through the `kubernetes.io/metadata.name` label, like ESO). A
//!   terminating namespace counts as not selected.
//! - Each ExternalSecret is named `externalSecretName` (default: the ClusterExternalSecret's
//!   name), carries `externalSecretMetadata` labels/annotations (plus the ClusterExternalSecret's
//!   `force-sync` annotation) and a controller ownerReference to the ClusterExternalSecret. It is
//!   written with server-side apply under [`FIELD_MANAGER`] and only when the live object is not
//!   already in step (compared first; nothing is sent otherwise).
//! - An ExternalSecret controller-owned by this ClusterExternalSecret in a namespace that is no
//!   longer selected (label removed, namespace terminating, `externalSecretName` changed) is
//!   deleted at once. An ExternalSecret of the same name it does not own is left alone and
//!   reported in `status.failedNamespaces` (`external secret already exists in namespace`).
//! - Status as ESO: `externalSecretName`, `provisionedNamespaces` (sorted), `failedNamespaces`
//!   (sorted), one `Ready` condition (`True`, or `False` with `one or more namespaces failed`);
//!   written only when it changes. `clusterexternalsecret_status_condition` and
//!   `clusterexternalsecret_reconcile_duration` metrics.
//! - Deletion: like ESO (2.x) the ClusterExternalSecret carries the finalizer
//!   `externalsecrets.external-secrets.io/clusterexternalsecret-cleanup`; on deletion the
//!   ExternalSecrets it owns are deleted, then the finalizer is removed (the ownerReference
//!   alone would need the garbage collector).
//!
//! Watches: ClusterExternalSecrets (spec, labels, annotations, finalizers, deletion), Namespaces
//! (metadata only: a label change, a new, terminating or deleted namespace re-evaluates every
//! ClusterExternalSecret) and ExternalSecrets (metadata only; an owned one edited or deleted by
//! someone else is put back, and the deletion of a foreign one that blocked a namespace
//! provisions that namespace at once). Each reconcile also runs every `spec.refreshTime`
//! (default 1h, ESO's).
//!
//! Differences from ESO, on purpose:
//! - ESO replaces the ExternalSecret's labels and annotations wholesale; refsync's server-side
//!   apply removes only the ones it set itself, so labels other tools add (Argo CD, ...) stay.
//! - ESO puts a finalizer `externalsecrets.external-secrets.io/ces-<name>` on every target
//!   namespace; refsync does not (a namespace must never hang in `Terminating` because the
//!   controller is gone) and removes ESO's when it finds one, so taking over from ESO leaves no
//!   namespace stuck. It deletes the ExternalSecret of a terminating namespace itself.
//! - ESO leaves `clusterexternalsecret_status_condition` untouched when `Ready` turns `False`;
//!   refsync sets the `False` series to 1 then, so alerts see it.
//! - An invalid `spec.refreshTime` (ESO cannot even decode the object) gives `Ready=False` with
//!   a message naming the field; the namespaces are still provisioned, refreshed hourly.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, future, stream};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::{PartialObjectMeta, Selector, SelectorExt};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use refsync_core::api::{
    ClusterExternalSecret, ClusterExternalSecretNamespaceFailure, ClusterExternalSecretStatus,
    Condition, ExternalSecret, ExternalSecretSpec,
};
use refsync_core::duration::parse_go_duration;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::context::{Context, FIELD_MANAGER};
use crate::error::{Error, Result};
use crate::labels::ANNOTATION_FORCE_SYNC;

const CONTROLLER: &str = "clusterexternalsecret";
const API_VERSION: &str = "external-secrets.io/v1";
const KIND: &str = "ClusterExternalSecret";
const GROUP: &str = "external-secrets.io";

/// ESO's finalizer on a ClusterExternalSecret: its ExternalSecrets are deleted before it goes.
pub const FINALIZER: &str = "externalsecrets.external-secrets.io/clusterexternalsecret-cleanup";
/// ESO's per-ClusterExternalSecret namespace finalizer (`<prefix><ces name>`): never added by
/// refsync, removed when found.
pub const NAMESPACE_FINALIZER_PREFIX: &str = "externalsecrets.external-secrets.io/ces-";
/// The label every namespace carries with its own name (`spec.namespaces` matches on it).
const LABEL_NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";

/// ESO's `Ready=False` message.
pub const MSG_NAMESPACES_FAILED: &str = "one or more namespaces failed";
/// ESO's `failedNamespaces[].reason` for an ExternalSecret of the same name it does not own.
pub const REASON_ALREADY_EXISTS: &str = "external secret already exists in namespace";
/// ESO's `RequeueInterval` default (`spec.refreshTime` unset).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);
/// Namespaces provisioned at once within one reconcile.
const FAN_OUT: usize = 8;
const BASE_BACKOFF: Duration = Duration::from_millis(500);

type Key = (String, String);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the reconciler needs of a namespace.
#[derive(Clone, Debug, PartialEq)]
struct NsInfo {
    labels: BTreeMap<String, String>,
    terminating: bool,
    finalizers: Vec<String>,
    resource_version: Option<String>,
}

impl NsInfo {
    fn of(meta: &ObjectMeta) -> Self {
        NsInfo {
            labels: meta.labels.clone().unwrap_or_default(),
            terminating: meta.deletion_timestamp.is_some(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone(),
        }
    }
}

/// An ExternalSecret controller-owned by a ClusterExternalSecret, as its metadata shows it.
#[derive(Clone, Debug, PartialEq)]
struct OwnedEs {
    ces: String,
    owner_uid: String,
    uid: String,
    generation: Option<i64>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    deleting: bool,
}

/// The ClusterExternalSecret that controls `meta` (ESO's `isExternalSecretOwnedBy`: the
/// controller ownerReference's group, kind and name), with the reference's uid.
fn controlling_ces(meta: &ObjectMeta) -> Option<(String, String)> {
    meta.owner_references.iter().flatten().find_map(|o| {
        let group = o.api_version.split('/').next().unwrap_or_default();
        (o.controller == Some(true) && o.kind == KIND && group == GROUP)
            .then(|| (o.name.clone(), o.uid.clone()))
    })
}

impl OwnedEs {
    fn of(meta: &ObjectMeta) -> Option<Self> {
        let (ces, owner_uid) = controlling_ces(meta)?;
        Some(OwnedEs {
            ces,
            owner_uid,
            uid: meta.uid.clone().unwrap_or_default(),
            generation: meta.generation,
            labels: meta.labels.clone().unwrap_or_default(),
            annotations: meta.annotations.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
        })
    }
}

/// The ExternalSecret one ClusterExternalSecret wants in one namespace.
struct Desired {
    spec: ExternalSecretSpec,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    owner: OwnerReference,
    /// Hash of all of the above: what was last applied, per ExternalSecret uid.
    hash: u64,
}

impl Desired {
    fn of(ces: &ClusterExternalSecret) -> Self {
        let meta = ces
            .spec
            .external_secret_metadata
            .clone()
            .unwrap_or_default();
        let labels = meta.labels.unwrap_or_default();
        // ESO copies the ClusterExternalSecret's force-sync annotation and drops any other.
        let mut annotations = meta.annotations.unwrap_or_default();
        annotations.remove(ANNOTATION_FORCE_SYNC);
        if let Some(v) = ces.annotations().get(ANNOTATION_FORCE_SYNC) {
            annotations.insert(ANNOTATION_FORCE_SYNC.to_string(), v.clone());
        }
        let owner = OwnerReference {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            name: ces.name_any(),
            uid: ces.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let spec = ces.spec.external_secret_spec.clone();
        let mut h = DefaultHasher::new();
        serde_json::to_string(&spec)
            .unwrap_or_default()
            .hash(&mut h);
        labels.hash(&mut h);
        annotations.hash(&mut h);
        owner.uid.hash(&mut h);
        owner.name.hash(&mut h);
        Desired {
            spec,
            labels,
            annotations,
            owner,
            hash: h.finish(),
        }
    }

    fn body(&self, ns: &str, name: &str) -> Value {
        json!({
            "apiVersion": API_VERSION,
            "kind": "ExternalSecret",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": self.labels,
                "annotations": self.annotations,
                "ownerReferences": [self.owner],
            },
            "spec": self.spec,
        })
    }

    /// Every desired label and annotation is there with its value, and the controller
    /// reference points at this ClusterExternalSecret (uid included).
    fn metadata_present(
        &self,
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
        owner_uid: &str,
    ) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self
                .annotations
                .iter()
                .all(|(k, v)| annotations.get(k) == Some(v))
            && owner_uid == self.owner.uid
    }

    /// The live ExternalSecret needs no write: same spec, desired metadata present, and no
    /// label or annotation refsync applied earlier that is no longer desired.
    fn in_step(&self, es: &ExternalSecret) -> bool {
        let Some((_, owner_uid)) = controlling_ces(&es.metadata) else {
            return false;
        };
        let owner_ok = es
            .metadata
            .owner_references
            .iter()
            .flatten()
            .filter(|o| o.uid == self.owner.uid)
            .any(|o| *o == self.owner);
        if es.spec != self.spec
            || !owner_ok
            || !self.metadata_present(
                es.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()),
                es.metadata.annotations.as_ref().unwrap_or(&BTreeMap::new()),
                &owner_uid,
            )
        {
            return false;
        }
        let (labels, annotations) = applied_metadata_keys(&es.metadata);
        labels.iter().all(|k| self.labels.contains_key(k))
            && annotations.iter().all(|k| self.annotations.contains_key(k))
    }
}

/// The label and annotation keys refsync's own server-side apply (not an update) manages on
/// the object, read from `managedFields`.
fn applied_metadata_keys(meta: &ObjectMeta) -> (Vec<String>, Vec<String>) {
    let mut labels = Vec::new();
    let mut annotations = Vec::new();
    for mf in meta.managed_fields.iter().flatten() {
        if mf.manager.as_deref() != Some(FIELD_MANAGER)
            || mf.operation.as_deref() != Some("Apply")
            || mf.subresource.as_deref().is_some_and(|s| !s.is_empty())
        {
            continue;
        }
        let Some(fields) = &mf.fields_v1 else {
            continue;
        };
        let m = &fields.0["f:metadata"];
        for (section, out) in [
            ("f:labels", &mut labels),
            ("f:annotations", &mut annotations),
        ] {
            if let Some(obj) = m[section].as_object() {
                out.extend(
                    obj.keys()
                        .filter_map(|k| k.strip_prefix("f:"))
                        .map(str::to_string),
                );
            }
        }
    }
    (labels, annotations)
}

/// The namespace selectors of a ClusterExternalSecret, compiled (ESO's order: the deprecated
/// `namespaceSelector`, then `namespaceSelectors`, then one per `namespaces` entry). An error
/// names the field.
fn compile_selectors(ces: &ClusterExternalSecret) -> std::result::Result<Vec<Selector>, String> {
    let mut out = Vec::new();
    let mut add = |field: String, sel: &LabelSelector| -> std::result::Result<(), String> {
        for (i, req) in sel.match_expressions.iter().flatten().enumerate() {
            let empty = req.values.as_ref().is_none_or(|v| v.is_empty());
            let problem = match req.operator.as_str() {
                "In" | "NotIn" if empty => Some("values must be non-empty for In and NotIn"),
                "Exists" | "DoesNotExist" if !empty => {
                    Some("values must be empty for Exists and DoesNotExist")
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => None,
                _ => Some("operator must be In, NotIn, Exists or DoesNotExist"),
            };
            if let Some(p) = problem {
                return Err(format!(
                    "failed to convert label selector {field}.matchExpressions[{i}] \
                     (key {:?}, operator {:?}): {p}",
                    req.key, req.operator
                ));
            }
        }
        let s = Selector::try_from(sel.clone())
            .map_err(|e| format!("failed to convert label selector {field}: {e}"))?;
        out.push(s);
        Ok(())
    };
    if let Some(s) = &ces.spec.namespace_selector {
        add("spec.namespaceSelector".into(), s)?;
    }
    for (i, s) in ces.spec.namespace_selectors.iter().enumerate() {
        add(format!("spec.namespaceSelectors[{i}]"), s)?;
    }
    for ns in &ces.spec.namespaces {
        out.push(Selector::from_iter([(
            LABEL_NAMESPACE_NAME.to_string(),
            ns.clone(),
        )]));
    }
    Ok(out)
}

/// Which namespaces a ClusterExternalSecret selects (a terminating namespace never is).
fn selected_namespaces(
    selectors: &[Selector],
    namespaces: &HashMap<String, NsInfo>,
) -> BTreeSet<String> {
    namespaces
        .iter()
        .filter(|(_, ns)| !ns.terminating && selectors.iter().any(|s| s.matches(&ns.labels)))
        .map(|(name, _)| name.clone())
        .collect()
}

/// ESO's `Ready` condition: no reason, no transition time; a message only when failing.
fn ready_condition(failed: bool, message: Option<String>) -> Condition {
    let message = match (failed, message) {
        (_, Some(m)) => Some(m),
        (true, None) => Some(MSG_NAMESPACES_FAILED.to_string()),
        (false, None) => None,
    };
    Condition {
        type_: "Ready".into(),
        status: if message.is_some() { "False" } else { "True" }.into(),
        reason: None,
        message,
        last_transition_time: None,
    }
}

fn failures(map: BTreeMap<String, String>) -> Vec<ClusterExternalSecretNamespaceFailure> {
    map.into_iter()
        .map(
            |(namespace, reason)| ClusterExternalSecretNamespaceFailure {
                namespace,
                reason: Some(reason),
            },
        )
        .collect()
}

/// The outcome of one namespace.
enum NsOutcome {
    Provisioned,
    /// Another object of the name is there (not ours).
    Blocked,
    Failed {
        reason: String,
        conflict: bool,
    },
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Which caches have their initial lists.
#[derive(Clone, Copy, Default)]
struct Ready {
    namespaces: bool,
    external_secrets: bool,
}

/// Everything the ClusterExternalSecret reconciler keeps between reconciles.
pub struct CesReconciler {
    ctx: Arc<Context>,
    namespaces: Mutex<HashMap<String, NsInfo>>,
    ns_init: Mutex<Option<HashMap<String, NsInfo>>>,
    /// ExternalSecrets controller-owned by a ClusterExternalSecret, by (namespace, name).
    owned: Mutex<HashMap<Key, OwnedEs>>,
    owned_init: Mutex<Option<HashMap<Key, OwnedEs>>>,
    /// What refsync last applied or found in step, by ExternalSecret uid: (generation, hash of
    /// the desired object). A match with the watched metadata skips the GET.
    synced: Mutex<HashMap<String, (Option<i64>, u64)>>,
    /// The status this replica last wrote, by ClusterExternalSecret uid (the cache may lag).
    written: Mutex<HashMap<String, ClusterExternalSecretStatus>>,
    /// Per ClusterExternalSecret: the foreign ExternalSecrets that block a namespace (their
    /// deletion reconciles it at once).
    blocked: Mutex<HashMap<String, BTreeSet<Key>>>,
    failures: Mutex<HashMap<String, u32>>,
    ready: watch::Sender<Ready>,
}

impl CesReconciler {
    fn new(ctx: Arc<Context>) -> Self {
        CesReconciler {
            ctx,
            namespaces: Mutex::default(),
            ns_init: Mutex::default(),
            owned: Mutex::default(),
            owned_init: Mutex::default(),
            synced: Mutex::default(),
            written: Mutex::default(),
            blocked: Mutex::default(),
            failures: Mutex::default(),
            ready: watch::channel(Ready::default()).0,
        }
    }

    /// A namespace event; `Some(())` when every ClusterExternalSecret must be looked at again.
    fn on_namespace(
        &self,
        ev: std::result::Result<watcher::Event<PartialObjectMeta<Namespace>>, watcher::Error>,
    ) -> Option<()> {
        match ev {
            Err(e) => {
                tracing::warn!(error = %e, "namespace watch failed; retrying");
                None
            }
            Ok(watcher::Event::Init) => {
                *lock(&self.ns_init) = Some(HashMap::new());
                None
            }
            Ok(watcher::Event::InitApply(ns)) => {
                if let Some(buf) = lock(&self.ns_init).as_mut() {
                    buf.insert(ns.name_any(), NsInfo::of(&ns.metadata));
                }
                None
            }
            Ok(watcher::Event::InitDone) => {
                let fresh = lock(&self.ns_init).take().unwrap_or_default();
                *lock(&self.namespaces) = fresh;
                self.ready.send_modify(|r| r.namespaces = true);
                Some(())
            }
            Ok(watcher::Event::Apply(ns)) => {
                let info = NsInfo::of(&ns.metadata);
                let old = lock(&self.namespaces).insert(ns.name_any(), info.clone());
                let changed = old.is_none_or(|o| {
                    o.labels != info.labels
                        || o.terminating != info.terminating
                        || has_eso_finalizer(&o.finalizers) != has_eso_finalizer(&info.finalizers)
                });
                changed.then_some(())
            }
            Ok(watcher::Event::Delete(ns)) => {
                lock(&self.namespaces).remove(&ns.name_any());
                Some(())
            }
        }
    }

    /// An ExternalSecret event; the ClusterExternalSecrets to reconcile because of it.
    fn on_external_secret(
        &self,
        ev: std::result::Result<watcher::Event<PartialObjectMeta<ExternalSecret>>, watcher::Error>,
    ) -> Vec<ObjectRef<ClusterExternalSecret>> {
        let key_of = |es: &PartialObjectMeta<ExternalSecret>| {
            (es.namespace().unwrap_or_default(), es.name_any())
        };
        let mut out = BTreeSet::new();
        match ev {
            Err(e) => {
                tracing::warn!(error = %e, "ExternalSecret metadata watch failed; retrying");
            }
            Ok(watcher::Event::Init) => {
                *lock(&self.owned_init) = Some(HashMap::new());
            }
            Ok(watcher::Event::InitApply(es)) => {
                if let (Some(buf), Some(o)) =
                    (lock(&self.owned_init).as_mut(), OwnedEs::of(&es.metadata))
                {
                    buf.insert(key_of(&es), o);
                }
            }
            Ok(watcher::Event::InitDone) => {
                let fresh = lock(&self.owned_init).take().unwrap_or_default();
                let mut owned = lock(&self.owned);
                // A re-list: whatever changed meanwhile is looked at again.
                for (k, o) in owned.iter() {
                    if fresh.get(k) != Some(o) {
                        out.insert(o.ces.clone());
                    }
                }
                for (k, o) in fresh.iter() {
                    if owned.get(k) != Some(o) {
                        out.insert(o.ces.clone());
                    }
                }
                *owned = fresh;
                drop(owned);
                self.ready.send_modify(|r| r.external_secrets = true);
            }
            Ok(watcher::Event::Apply(es)) => {
                let key = key_of(&es);
                let new = OwnedEs::of(&es.metadata);
                let mut owned = lock(&self.owned);
                let old = match &new {
                    Some(o) => owned.insert(key.clone(), o.clone()),
                    None => owned.remove(&key),
                };
                drop(owned);
                if old != new {
                    out.extend(old.map(|o| o.ces));
                    out.extend(new.map(|o| o.ces));
                }
            }
            Ok(watcher::Event::Delete(es)) => {
                let key = key_of(&es);
                if let Some(o) = lock(&self.owned).remove(&key) {
                    lock(&self.synced).remove(&o.uid);
                    out.insert(o.ces);
                }
                for (ces, keys) in lock(&self.blocked).iter() {
                    if keys.contains(&key) {
                        out.insert(ces.clone());
                    }
                }
            }
        }
        out.into_iter().map(|n| ObjectRef::new(&n)).collect()
    }

    async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| r.namespaces && r.external_secrets).await;
    }

    fn status_of(&self, ces: &ClusterExternalSecret) -> ClusterExternalSecretStatus {
        let uid = ces.metadata.uid.clone().unwrap_or_default();
        lock(&self.written)
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| ces.status.clone().unwrap_or_default())
    }

    fn set_condition_metric(&self, name: &str, ready: bool) {
        let (on, off) = if ready {
            ("True", "False")
        } else {
            ("False", "True")
        };
        let g = &self.ctx.metrics.clusterexternalsecret_status_condition;
        g.with_label_values(&[name, "Ready", on]).set(1.0);
        g.with_label_values(&[name, "Ready", off]).set(0.0);
    }

    fn forget_metrics(&self, name: &str) {
        let m = &self.ctx.metrics;
        for st in ["True", "False"] {
            let _ = m
                .clusterexternalsecret_status_condition
                .remove_label_values(&[name, "Ready", st]);
        }
        let _ = m
            .clusterexternalsecret_reconcile_duration
            .remove_label_values(&[name, ""]);
    }

    /// Writes the status when it differs from the last one (ours or the object's).
    async fn write_status(
        &self,
        ces: &ClusterExternalSecret,
        before: &ClusterExternalSecretStatus,
        after: ClusterExternalSecretStatus,
    ) -> Result<()> {
        let name = ces.name_any();
        let ready = after
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        self.set_condition_metric(&name, ready);
        if *before == after {
            return Ok(());
        }
        // Empty lists are sent as `[]`: an apply that omitted them would leave a value another
        // manager (ESO, before the switch) wrote.
        let patch = json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "status": {
                "externalSecretName": after.external_secret_name,
                "provisionedNamespaces": after.provisioned_namespaces,
                "failedNamespaces": after.failed_namespaces,
                "conditions": after.conditions,
            },
        });
        Api::<ClusterExternalSecret>::all(self.ctx.client.clone())
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|e| Error::kube(format!("patch status of ClusterExternalSecret {name}"), e))?;
        self.ctx
            .metrics
            .secret_writes
            .with_label_values(&["clusterexternalsecret_status"])
            .inc();
        tracing::info!(clusterexternalsecret = %name, ready,
            provisioned = after.provisioned_namespaces.len(),
            failed = after.failed_namespaces.len(), "status updated");
        if let Some(uid) = ces.metadata.uid.clone() {
            lock(&self.written).insert(uid, after);
        }
        Ok(())
    }

    /// Adds or removes [`FINALIZER`] (a merge patch guarded by resourceVersion: a concurrent
    /// change is a conflict, retried, never a lost finalizer).
    async fn set_finalizer(&self, ces: &ClusterExternalSecret, present: bool) -> Result<()> {
        let name = ces.name_any();
        let mut list: Vec<String> = ces.finalizers().to_vec();
        list.retain(|f| f != FINALIZER);
        if present {
            list.push(FINALIZER.to_string());
        }
        let patch = json!({
            "metadata": {
                "finalizers": list,
                "resourceVersion": ces.resource_version(),
            }
        });
        let api = Api::<ClusterExternalSecret>::all(self.ctx.client.clone());
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if !present && is_not_found(&e) => Ok(()),
            Err(e) => Err(Error::kube(
                format!("update finalizers of ClusterExternalSecret {name}"),
                e,
            )),
        }
    }

    /// Removes ESO's namespace finalizer for this ClusterExternalSecret wherever it is. A
    /// failure (RBAC without `patch` on namespaces) is logged, never fatal.
    async fn drop_eso_namespace_finalizers(&self, ces_name: &str) {
        let finalizer = format!("{NAMESPACE_FINALIZER_PREFIX}{ces_name}");
        let carriers: Vec<(String, Vec<String>, Option<String>)> = lock(&self.namespaces)
            .iter()
            .filter(|(_, ns)| ns.finalizers.contains(&finalizer))
            .map(|(n, ns)| {
                (
                    n.clone(),
                    ns.finalizers.clone(),
                    ns.resource_version.clone(),
                )
            })
            .collect();
        let api = Api::<Namespace>::all(self.ctx.client.clone());
        for (ns, mut list, resource_version) in carriers {
            list.retain(|f| *f != finalizer);
            // Guarded by resourceVersion: a finalizer someone adds meanwhile is never lost.
            let patch = json!({
                "metadata": {"finalizers": list, "resourceVersion": resource_version}
            });
            match api
                .patch(&ns, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => tracing::info!(clusterexternalsecret = %ces_name, namespace = %ns,
                    "removed ESO's namespace finalizer {finalizer}"),
                Err(e) if is_not_found(&e) => {}
                Err(e) => tracing::warn!(clusterexternalsecret = %ces_name, namespace = %ns,
                    error = %e, "cannot remove ESO's namespace finalizer {finalizer}"),
            }
        }
    }

    /// Deletes `ns/name` if this ClusterExternalSecret controls it (uid-guarded, so an object
    /// recreated meanwhile by someone else is not touched).
    async fn delete_owned(&self, ces_name: &str, ns: &str, name: &str) -> Result<(), kube::Error> {
        let api = Api::<ExternalSecret>::namespaced(self.ctx.client.clone(), ns);
        let known = lock(&self.owned)
            .get(&(ns.to_string(), name.to_string()))
            .filter(|o| o.ces == ces_name)
            .map(|o| (o.uid.clone(), o.deleting));
        let uid = match known {
            Some((_, true)) => return Ok(()),
            Some((uid, false)) => uid,
            None => match api.get_opt(name).await? {
                Some(es) if controlling_ces(&es.metadata).is_some_and(|(c, _)| c == ces_name) => {
                    if es.metadata.deletion_timestamp.is_some() {
                        return Ok(());
                    }
                    es.metadata.uid.unwrap_or_default()
                }
                _ => return Ok(()),
            },
        };
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => {
                self.ctx
                    .metrics
                    .secret_writes
                    .with_label_values(&["externalsecret_delete"])
                    .inc();
                tracing::info!(clusterexternalsecret = %ces_name,
                    externalsecret = %format!("{ns}/{name}"), "ExternalSecret deleted");
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Makes `ns/name` the desired ExternalSecret, writing only when it is not in step.
    async fn ensure(&self, ces_name: &str, ns: &str, name: &str, desired: &Desired) -> NsOutcome {
        let key = (ns.to_string(), name.to_string());
        let cached = lock(&self.owned).get(&key).cloned();
        if let Some(o) = cached.filter(|o| o.ces == ces_name && !o.deleting)
            && lock(&self.synced).get(&o.uid) == Some(&(o.generation, desired.hash))
            && desired.metadata_present(&o.labels, &o.annotations, &o.owner_uid)
        {
            return NsOutcome::Provisioned;
        }
        let api = Api::<ExternalSecret>::namespaced(self.ctx.client.clone(), ns);
        let live = match api.get_opt(name).await {
            Ok(l) => l,
            Err(e) => {
                return NsOutcome::Failed {
                    conflict: is_conflict(&e),
                    reason: format!("could not get existing ExternalSecret: {e}"),
                };
            }
        };
        if let Some(es) = &live {
            if controlling_ces(&es.metadata).is_none_or(|(c, _)| c != ces_name) {
                return NsOutcome::Blocked;
            }
            if desired.in_step(es) {
                if let Some(uid) = es.metadata.uid.clone() {
                    lock(&self.synced).insert(uid, (es.metadata.generation, desired.hash));
                }
                return NsOutcome::Provisioned;
            }
        }
        let failed = |e: kube::Error| NsOutcome::Failed {
            conflict: is_conflict(&e),
            reason: format!("could not create or update ExternalSecret: {e}"),
        };
        let applied = match api
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&desired.body(ns, name)),
            )
            .await
        {
            Ok(es) => es,
            Err(e) => return failed(e),
        };
        self.ctx
            .metrics
            .secret_writes
            .with_label_values(&["externalsecret_apply"])
            .inc();
        // Spec fields another manager set (kubectl edit) survive an apply; ESO replaces the
        // whole spec, and so does this.
        let applied = if applied.spec != desired.spec {
            let mut whole = applied;
            whole.spec = desired.spec.clone();
            let pp = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PostParams::default()
            };
            match api.replace(name, &pp, &whole).await {
                Ok(es) => es,
                Err(e) => return failed(e),
            }
        } else {
            applied
        };
        tracing::info!(clusterexternalsecret = %ces_name, externalsecret = %format!("{ns}/{name}"),
            created = live.is_none(), "ExternalSecret applied");
        if let Some(uid) = applied.metadata.uid.clone() {
            lock(&self.synced).insert(uid, (applied.metadata.generation, desired.hash));
        }
        NsOutcome::Provisioned
    }

    /// One live ClusterExternalSecret: fan out, prune, report.
    async fn sync(&self, ces: &ClusterExternalSecret) -> Result<Action> {
        let name = ces.name_any();
        if !ces.finalizers().iter().any(|f| f == FINALIZER) {
            self.set_finalizer(ces, true).await?;
        }
        let before = self.status_of(ces);
        let es_name = ces
            .spec
            .external_secret_name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| name.clone());
        let (interval, spec_problem) = match ces.spec.refresh_time.as_deref() {
            None => (DEFAULT_REFRESH, None),
            Some(s) => match parse_go_duration(s) {
                Ok(d) => (d, None),
                Err(e) => {
                    let msg = format!("invalid spec.refreshTime: {e}");
                    tracing::warn!(clusterexternalsecret = %name, error = %msg,
                        "using the default refresh of 1h");
                    (DEFAULT_REFRESH, Some(msg))
                }
            },
        };

        let selectors = match compile_selectors(ces) {
            Ok(s) => s,
            Err(msg) => {
                // ESO: the namespace list is unknown; provisioned namespaces stay as they were.
                tracing::warn!(clusterexternalsecret = %name, error = %msg,
                    "failed to get target Namespaces");
                let mut after = before.clone();
                after.external_secret_name = Some(es_name);
                after.failed_namespaces =
                    failures(BTreeMap::from([("unknown".into(), msg.clone())]));
                after.conditions = vec![ready_condition(true, None)];
                self.write_status(ces, &before, after).await?;
                return Err(Error::Sync(refsync_core::Error::invalid(msg)));
            }
        };
        let targets = selected_namespaces(&selectors, &lock(&self.namespaces));

        let mut failed: BTreeMap<String, String> = BTreeMap::new();
        let mut conflict = false;

        // Prune: owned ExternalSecrets that are not wanted any more.
        let stale: Vec<Key> = lock(&self.owned)
            .iter()
            .filter(|(k, o)| o.ces == name && !(targets.contains(&k.0) && k.1 == es_name))
            .map(|(k, _)| k.clone())
            .collect();
        // Also the ones the last status names, in case they were never seen in the cache.
        let mut stale: BTreeSet<Key> = stale.into_iter().collect();
        if let Some(prev) = before
            .external_secret_name
            .as_deref()
            .filter(|p| !p.is_empty())
        {
            for ns in &before.provisioned_namespaces {
                if !(targets.contains(ns) && prev == es_name) {
                    stale.insert((ns.clone(), prev.to_string()));
                }
            }
        }
        for (ns, es) in &stale {
            if let Err(e) = self.delete_owned(&name, ns, es).await {
                tracing::warn!(clusterexternalsecret = %name, externalsecret = %format!("{ns}/{es}"),
                    error = %e, "unable to delete external secret");
                conflict |= is_conflict(&e);
                failed.insert(
                    ns.clone(),
                    format!("external secret in non matching namespace could not be deleted: {e}"),
                );
            }
        }

        self.drop_eso_namespace_finalizers(&name).await;

        // Fan out.
        let desired = Desired::of(ces);
        let (desired, owner, es) = (&desired, name.as_str(), es_name.as_str());
        let outcomes: Vec<(String, NsOutcome)> = stream::iter(targets)
            .map(move |ns| async move {
                let outcome = self.ensure(owner, &ns, es, desired).await;
                (ns, outcome)
            })
            .buffer_unordered(FAN_OUT)
            .collect()
            .await;
        let mut provisioned = Vec::new();
        let mut blocked = BTreeSet::new();
        for (ns, outcome) in outcomes {
            match outcome {
                NsOutcome::Provisioned => provisioned.push(ns),
                NsOutcome::Blocked => {
                    tracing::warn!(clusterexternalsecret = %name, namespace = %ns,
                        externalsecret = %es_name, "{REASON_ALREADY_EXISTS}");
                    blocked.insert((ns.clone(), es_name.clone()));
                    failed.insert(ns, REASON_ALREADY_EXISTS.into());
                }
                NsOutcome::Failed {
                    reason,
                    conflict: c,
                } => {
                    tracing::warn!(clusterexternalsecret = %name, namespace = %ns, error = %reason,
                        "failed to create or update external secret");
                    conflict |= c;
                    failed.insert(ns, reason);
                }
            }
        }
        provisioned.sort();
        {
            let mut b = lock(&self.blocked);
            if blocked.is_empty() {
                b.remove(&name);
            } else {
                b.insert(name.clone(), blocked);
            }
        }

        let condition = ready_condition(!failed.is_empty(), spec_problem);
        let after = ClusterExternalSecretStatus {
            external_secret_name: Some(es_name),
            failed_namespaces: failures(failed),
            provisioned_namespaces: provisioned,
            conditions: vec![condition],
        };
        self.write_status(ces, &before, after).await?;

        if conflict {
            return Err(Error::kube(
                format!("ClusterExternalSecret {name}: conflict, will retry"),
                kube::Error::Api(
                    kube::core::Status::failure("conflict", "Conflict")
                        .with_code(409)
                        .boxed(),
                ),
            ));
        }
        Ok(if interval.is_zero() {
            Action::await_change()
        } else {
            Action::requeue(interval)
        })
    }

    /// A ClusterExternalSecret being deleted: its ExternalSecrets go, then its finalizer.
    async fn cleanup(&self, ces: &ClusterExternalSecret) -> Result<Action> {
        let name = ces.name_any();
        let st = ces.status.clone().unwrap_or_default();
        let mut doomed: BTreeSet<Key> = lock(&self.owned)
            .iter()
            .filter(|(_, o)| o.ces == name)
            .map(|(k, _)| k.clone())
            .collect();
        let es_name = st
            .external_secret_name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| name.clone());
        doomed.extend(
            st.provisioned_namespaces
                .iter()
                .map(|ns| (ns.clone(), es_name.clone())),
        );
        for (ns, es) in &doomed {
            self.delete_owned(&name, ns, es).await.map_err(|e| {
                Error::kube(
                    format!("delete ExternalSecret {ns}/{es} of ClusterExternalSecret {name}"),
                    e,
                )
            })?;
        }
        self.drop_eso_namespace_finalizers(&name).await;
        if ces.finalizers().iter().any(|f| f == FINALIZER) {
            self.set_finalizer(ces, false).await?;
        }
        tracing::info!(clusterexternalsecret = %name, externalsecrets = doomed.len(),
            "ClusterExternalSecret deleted; its ExternalSecrets removed");
        self.forget_metrics(&name);
        lock(&self.blocked).remove(&name);
        if let Some(uid) = &ces.metadata.uid {
            lock(&self.written).remove(uid);
        }
        Ok(Action::await_change())
    }
}

fn has_eso_finalizer(finalizers: &[String]) -> bool {
    finalizers
        .iter()
        .any(|f| f.starts_with(NAMESPACE_FINALIZER_PREFIX))
}

/// Spec, labels, annotations, finalizers and deletion: what makes a ClusterExternalSecret
/// worth a reconcile (our own status writes are not).
fn ces_trigger_hash(ces: &ClusterExternalSecret) -> Option<u64> {
    let mut h = DefaultHasher::new();
    ces.metadata.uid.hash(&mut h);
    ces.metadata.generation.hash(&mut h);
    ces.metadata.labels.hash(&mut h);
    ces.metadata.annotations.hash(&mut h);
    ces.metadata.finalizers.hash(&mut h);
    ces.metadata.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

async fn reconcile(ces: Arc<ClusterExternalSecret>, r: Arc<CesReconciler>) -> Result<Action> {
    r.wait_ready().await;
    // A follower writes nothing; it reconciles everything on acquiring the lease.
    if !r.ctx.is_leader() {
        return Ok(Action::await_change());
    }
    let start = Instant::now();
    let name = ces.name_any();
    let _timer = r
        .ctx
        .metrics
        .reconcile_seconds
        .with_label_values(&[CONTROLLER])
        .start_timer();
    if ces.metadata.deletion_timestamp.is_some() {
        return r.cleanup(&ces).await;
    }
    let out = r.sync(&ces).await;
    r.ctx
        .metrics
        .clusterexternalsecret_reconcile_duration
        .with_label_values(&[&name, ""])
        .set(start.elapsed().as_secs_f64());
    if out.is_ok() {
        lock(&r.failures).remove(&name);
    }
    out
}

fn error_policy(ces: Arc<ClusterExternalSecret>, err: &Error, r: Arc<CesReconciler>) -> Action {
    let name = ces.name_any();
    tracing::warn!(clusterexternalsecret = %name, error = %err, "reconcile failed");
    r.ctx
        .metrics
        .reconcile_errors
        .with_label_values(&[CONTROLLER, err.metric_label()])
        .inc();
    let n = {
        let mut f = lock(&r.failures);
        let n = f.entry(name).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let backoff = BASE_BACKOFF
        .saturating_mul(1u32 << (n - 1).min(16))
        .min(r.ctx.config.max_backoff);
    Action::requeue(backoff)
}

/// Runs the ClusterExternalSecret controller until `shutdown` resolves (in-flight reconciles
/// finish first). Each time this replica becomes leader (`ctx.leader`) every
/// ClusterExternalSecret is reconciled again, since a follower writes nothing.
///
/// Cluster-wide only: `runtime::run` does not start it under `--namespace` (a controller scoped
/// to one namespace can neither list namespaces nor write ExternalSecrets in the others, and
/// several such replicas would overwrite each other's status of the same cluster-scoped
/// object). ESO's chart turns its ClusterExternalSecret reconciler off in that mode too.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let r = Arc::new(CesReconciler::new(ctx.clone()));

    // Gaining the lease reconciles everything (what another leader wrote meanwhile is not in
    // our memory of past writes).
    let ri = r.clone();
    let was_leader = Arc::new(AtomicBool::new(ctx.is_leader()));
    let leader_acquired = stream::unfold((), move |()| {
        let ri = ri.clone();
        let was = was_leader.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = ri.ctx.is_leader();
                if now && !was.swap(now, Ordering::Relaxed) {
                    lock(&ri.written).clear();
                    lock(&ri.synced).clear();
                    return Some(((), ()));
                }
                was.store(now, Ordering::Relaxed);
            }
        }
    });

    let (ces_store, ces_writer) = reflector::store();
    let ces_stream = watcher(
        Api::<ClusterExternalSecret>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .reflect(ces_writer)
    .applied_objects()
    .predicate_filter(ces_trigger_hash, Default::default());

    let ri = r.clone();
    let ns_changes = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .filter_map(move |ev| future::ready(ri.on_namespace(ev)));

    let ri = r.clone();
    let es_changes = watcher(
        Api::<PartialObjectMeta<ExternalSecret>>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .flat_map(move |ev| stream::iter(ri.on_external_secret(ev)));

    Controller::for_stream(ces_stream, ces_store)
        .with_config(ControllerConfig::default().concurrency(ctx.config.concurrency.max(1)))
        .trigger_backoff(crate::context::NoTriggerBackoff)
        .reconcile_all_on(ns_changes)
        .reconcile_all_on(leader_acquired)
        .reconcile_on(es_changes)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, r)
        .for_each(|res| {
            if let Err(e) = res {
                tracing::debug!(error = %e, "clusterexternalsecret controller");
            }
            future::ready(())
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        FieldsV1, LabelSelectorRequirement, ManagedFieldsEntry,
    };

    fn ces(spec: Value) -> ClusterExternalSecret {
        serde_json::from_value(json!({
            "apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": "c", "uid": "u1"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn ns(labels: &[(&str, &str)], terminating: bool) -> NsInfo {
        NsInfo {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            terminating,
            finalizers: vec![],
            resource_version: None,
        }
    }

    #[test]
    fn selectors_are_ored_and_terminating_namespaces_never_match() {
        let c = ces(json!({
            "externalSecretSpec": {},
            "namespaceSelector": {"matchLabels": {"team": "a"}},
            "namespaceSelectors": [
                {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]}
            ],
            "namespaces": ["named"],
        }));
        let sel = compile_selectors(&c).unwrap();
        let all = HashMap::from([
            ("a".to_string(), ns(&[("team", "a")], false)),
            ("p".to_string(), ns(&[("env", "prod")], false)),
            ("x".to_string(), ns(&[("env", "dev")], false)),
            ("gone".to_string(), ns(&[("team", "a")], true)),
            (
                "named".to_string(),
                ns(&[(LABEL_NAMESPACE_NAME, "named")], false),
            ),
        ]);
        let got: Vec<_> = selected_namespaces(&sel, &all).into_iter().collect();
        assert_eq!(got, ["a", "named", "p"]);
    }

    #[test]
    fn empty_selector_matches_all_and_none_matches_nothing() {
        let all = HashMap::from([("a".to_string(), ns(&[], false))]);
        let c = ces(json!({"externalSecretSpec": {}, "namespaceSelectors": [{}]}));
        assert_eq!(
            selected_namespaces(&compile_selectors(&c).unwrap(), &all).len(),
            1
        );
        let c = ces(json!({"externalSecretSpec": {}}));
        assert!(selected_namespaces(&compile_selectors(&c).unwrap(), &all).is_empty());
    }

    #[test]
    fn bad_selector_names_the_field() {
        let mut c = ces(json!({"externalSecretSpec": {}}));
        c.spec.namespace_selectors = vec![
            LabelSelector::default(),
            LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "k".into(),
                    operator: "In".into(),
                    values: Some(vec![]),
                }]),
                ..Default::default()
            },
        ];
        let err = compile_selectors(&c).unwrap_err();
        assert!(
            err.contains("spec.namespaceSelectors[1].matchExpressions[0]"),
            "{err}"
        );
        c.spec.namespace_selectors[1]
            .match_expressions
            .as_mut()
            .unwrap()[0]
            .operator = "Foo".into();
        assert!(compile_selectors(&c).unwrap_err().contains("operator"));
    }

    #[test]
    fn force_sync_comes_from_the_cluster_external_secret_only() {
        let mut c = ces(json!({
            "externalSecretSpec": {},
            "externalSecretMetadata": {"annotations": {"a": "1", "force-sync": "x"}, "labels": {"l": "v"}},
        }));
        let d = Desired::of(&c);
        assert_eq!(
            d.annotations,
            BTreeMap::from([("a".to_string(), "1".to_string())])
        );
        c.metadata.annotations = Some(BTreeMap::from([("force-sync".into(), "t1".into())]));
        let d2 = Desired::of(&c);
        assert_eq!(
            d2.annotations.get("force-sync").map(String::as_str),
            Some("t1")
        );
        assert_ne!(d.hash, d2.hash);
        let body = d2.body("ns", "es");
        assert_eq!(body["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "u1");
        assert_eq!(body["metadata"]["labels"]["l"], "v");
    }

    fn live(d: &Desired, labels: &[(&str, &str)], applied_labels: &[&str]) -> ExternalSecret {
        let mut es = ExternalSecret::new("es", d.spec.clone());
        es.metadata.owner_references = Some(vec![d.owner.clone()]);
        es.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        es.metadata.annotations = Some(d.annotations.clone());
        let f: serde_json::Map<String, Value> = applied_labels
            .iter()
            .map(|k| (format!("f:{k}"), json!({})))
            .collect();
        es.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some(FIELD_MANAGER.into()),
            operation: Some("Apply".into()),
            fields_v1: Some(FieldsV1(json!({"f:metadata": {"f:labels": f}}))),
            ..Default::default()
        }]);
        es
    }

    #[test]
    fn in_step_compares_spec_metadata_owner_and_our_stale_labels() {
        let c = ces(json!({
            "externalSecretSpec": {"refreshInterval": "1m"},
            "externalSecretMetadata": {"labels": {"l": "v"}},
        }));
        let d = Desired::of(&c);
        // Others' labels are fine.
        assert!(d.in_step(&live(&d, &[("l", "v"), ("argo", "x")], &["l"])));
        // A label we applied earlier and no longer want: not in step.
        assert!(!d.in_step(&live(&d, &[("l", "v"), ("old", "x")], &["l", "old"])));
        // A missing or different label.
        assert!(!d.in_step(&live(&d, &[("l", "w")], &["l"])));
        // A different spec.
        let mut es = live(&d, &[("l", "v")], &["l"]);
        es.spec.refresh_interval = Some("2m".into());
        assert!(!d.in_step(&es));
        // Owned by another uid (a recreated ClusterExternalSecret).
        let mut es = live(&d, &[("l", "v")], &["l"]);
        es.metadata.owner_references.as_mut().unwrap()[0].uid = "old".into();
        assert!(!d.in_step(&es));
    }

    #[test]
    fn ownership_is_the_controller_reference_by_group_kind_and_name() {
        let mut m = ObjectMeta::default();
        assert!(controlling_ces(&m).is_none());
        m.owner_references = Some(vec![OwnerReference {
            api_version: "external-secrets.io/v1beta1".into(),
            kind: KIND.into(),
            name: "c".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: None,
        }]);
        assert_eq!(controlling_ces(&m), Some(("c".into(), "u".into())));
        m.owner_references.as_mut().unwrap()[0].controller = None;
        assert!(controlling_ces(&m).is_none());
    }

    #[test]
    fn ready_condition_as_eso() {
        let ok = ready_condition(false, None);
        assert_eq!((ok.status.as_str(), ok.message.as_deref()), ("True", None));
        let bad = ready_condition(true, None);
        assert_eq!(
            (bad.status.as_str(), bad.message.as_deref()),
            ("False", Some(MSG_NAMESPACES_FAILED))
        );
        assert!(bad.reason.is_none() && bad.last_transition_time.is_none());
    }
}
