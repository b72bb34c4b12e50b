//! The cluster sink: the target Secret compared with what should be there, and written with
//! server-side apply only when something differs.
//!
//! What refsync last applied is read from the Secret's `managedFields` (manager
//! [`FIELD_MANAGER`], operation `Apply`): those data keys, labels and annotations are the ones
//! it may remove; everything else on the Secret belongs to someone else and is left alone.
//!
//! A target missing from the managed-Secret cache is first created blind ([`SecretSink::create`]:
//! one request); only when it turns out to exist is it read and compared. Unlabelled Secrets (to
//! adopt or merge into) are not cached, so without this every first sync would be a GET (a 404,
//! usually) and an apply.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};
use refsync_core::api::{CreationPolicy, ExternalSecret};
use refsync_core::assemble::DesiredSecret;
use refsync_core::hash;

use crate::context::FIELD_MANAGER;
use crate::error::{Error, Result};
use crate::labels::ANNOTATION_DATA_HASH;
use crate::sink::secret::build_secret;

/// What refsync's own field manager set on a Secret (from `managedFields`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub data: BTreeSet<String>,
    pub labels: BTreeSet<String>,
    pub annotations: BTreeSet<String>,
}

fn field_keys(v: Option<&serde_json::Value>) -> BTreeSet<String> {
    v.and_then(|v| v.as_object())
        .map(|o| {
            o.keys()
                .filter_map(|k| k.strip_prefix("f:").map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The fields refsync applied to `secret`.
pub fn applied_by_us(secret: &Secret) -> Applied {
    let mut out = Applied::default();
    for mf in secret.metadata.managed_fields.iter().flatten() {
        if mf.manager.as_deref() != Some(FIELD_MANAGER)
            || mf.operation.as_deref() != Some("Apply")
            || mf.subresource.as_deref().is_some_and(|s| !s.is_empty())
        {
            continue;
        }
        let Some(fields) = mf.fields_v1.as_ref().map(|f| &f.0) else {
            continue;
        };
        out.data.extend(field_keys(fields.get("f:data")));
        let meta = fields.get("f:metadata");
        out.labels
            .extend(field_keys(meta.and_then(|m| m.get("f:labels"))));
        out.annotations
            .extend(field_keys(meta.and_then(|m| m.get("f:annotations"))));
    }
    out
}

/// The ExternalSecret that controller-owns `secret`, if any.
pub fn owning_external_secret(secret: &Secret) -> Option<&str> {
    secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| {
            o.controller == Some(true)
                && o.kind == "ExternalSecret"
                && o.api_version.split('/').next() == Some("external-secrets.io")
        })
        .map(|o| o.name.as_str())
}

/// What to send for one desired Secret.
#[derive(Debug)]
pub enum WritePlan {
    /// The live Secret already matches: send nothing.
    UpToDate,
    /// Server-side apply `secret`, then remove `remove_keys` (data keys another manager owns
    /// that an Owner/Orphan target must not keep).
    Apply {
        secret: Box<Secret>,
        remove_keys: Vec<String>,
        create: bool,
    },
}

/// Compares the live Secret with the desired one (ESO's mutation + `DeepEqual`), refusing a
/// target another ExternalSecret owns and a change to immutable data.
pub fn plan_write(
    es: &ExternalSecret,
    desired: &DesiredSecret,
    live: Option<&Secret>,
) -> Result<WritePlan> {
    let es_name = es.metadata.name.as_deref().unwrap_or_default();
    let policy = es.spec.target.creation_policy;
    let mut secret = build_secret(es, desired);
    let Some(live) = live else {
        return Ok(WritePlan::Apply {
            secret: Box::new(secret),
            remove_keys: Vec::new(),
            create: true,
        });
    };
    if let Some(owner) = owning_external_secret(live)
        && owner != es_name
    {
        return Err(Error::OwnedByOther(owner.to_string()));
    }
    let applied = applied_by_us(live);
    let live_data = live.data.clone().unwrap_or_default();
    let desired_data = secret.data.clone().unwrap_or_default();

    // The data the Secret ends up with, and the keys to remove beyond what SSA removes.
    let (expected, remove_keys): (BTreeMap<String, ByteString>, Vec<String>) =
        if policy == CreationPolicy::Merge {
            let mut merged: BTreeMap<String, ByteString> = live_data
                .iter()
                .filter(|(k, _)| !applied.data.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            merged.extend(desired_data.clone());
            (merged, Vec::new())
        } else {
            let extra = live_data
                .keys()
                .filter(|k| !desired_data.contains_key(*k) && !applied.data.contains(*k))
                .cloned()
                .collect();
            (desired_data.clone(), extra)
        };
    let data_hash = hash::data_hash(expected.iter().map(|(k, v)| (k, &v.0)));
    if let Some(a) = secret.metadata.annotations.as_mut() {
        a.insert(ANNOTATION_DATA_HASH.into(), data_hash);
    }

    let live_type = live.type_.as_deref().unwrap_or("Opaque");
    let want_type = secret.type_.as_deref().unwrap_or("Opaque");
    let data_same = live_data == expected;
    if live.immutable == Some(true) && (!data_same || live_type != want_type) {
        return Err(Error::Immutable(desired.name.clone()));
    }

    let subset = |want: Option<&BTreeMap<String, String>>,
                  have: Option<&BTreeMap<String, String>>,
                  ours: &BTreeSet<String>| {
        let empty = BTreeMap::new();
        let want = want.unwrap_or(&empty);
        let have = have.unwrap_or(&empty);
        want.iter().all(|(k, v)| have.get(k) == Some(v))
            && ours
                .iter()
                .all(|k| want.contains_key(k) || !have.contains_key(k))
    };
    let labels_same = subset(
        secret.metadata.labels.as_ref(),
        live.metadata.labels.as_ref(),
        &applied.labels,
    );
    let annotations_same = subset(
        secret.metadata.annotations.as_ref(),
        live.metadata.annotations.as_ref(),
        &applied.annotations,
    );
    let uid = es.metadata.uid.as_deref();
    let has_our_ref = live
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| Some(o.uid.as_str()) == uid && o.controller == Some(true));
    let owner_same = if policy == CreationPolicy::Owner {
        uid.is_none() || has_our_ref
    } else {
        !has_our_ref
    };
    let immutable_same = !desired.immutable || live.immutable == Some(true);
    let finalizers_same = secret
        .metadata
        .finalizers
        .iter()
        .flatten()
        .all(|f| live.metadata.finalizers.iter().flatten().any(|l| l == f));

    if data_same
        && remove_keys.is_empty()
        && live_type == want_type
        && labels_same
        && annotations_same
        && owner_same
        && immutable_same
        && finalizers_same
    {
        return Ok(WritePlan::UpToDate);
    }
    Ok(WritePlan::Apply {
        secret: Box::new(secret),
        remove_keys,
        create: false,
    })
}

/// Reads and writes target Secrets.
#[derive(Clone)]
pub struct SecretSink {
    pub client: Client,
    /// Secrets labelled `reconcile.external-secrets.io/managed=true` (a reflector).
    pub managed: Store<Secret>,
    /// What this replica applied last, by (namespace, name), until the cache shows that version:
    /// the cache lags behind our own writes (much longer while its watch reconnects after an
    /// apiserver restart), and comparing with the stale copy would write the Secret again.
    pub written: Written,
}

/// The Secrets this replica applied, by (namespace, name).
pub type Written = Arc<Mutex<HashMap<(String, String), Arc<Secret>>>>;

/// A `resourceVersion` no object has: etcd revisions are positive `int64`s counted up from 1 one
/// write at a time, so this one is never reached.
const NO_STORED_VERSION: &str = "9223372036854775807";

/// `resourceVersion` as a number (etcd's revision), when it is one.
fn revision(s: &Secret) -> Option<u64> {
    s.metadata.resource_version.as_deref()?.parse().ok()
}

impl SecretSink {
    fn api(&self, namespace: &str) -> Api<Secret> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The target as the caches know it: this replica's own last write when the managed-Secret
    /// cache has not caught up with it yet, else the cached copy. `None` says only that it is
    /// not a managed Secret we know of: an unlabelled Secret may still exist.
    pub fn cached(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        let cached = self.managed.get(&ObjectRef::new(name).within(namespace));
        let key = (namespace.to_string(), name.to_string());
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ours) = written.get(&key) {
            let newer = match (cached.as_deref().and_then(revision), revision(ours)) {
                (Some(c), Some(o)) => o > c,
                _ => false,
            };
            if newer {
                return Some(ours.clone());
            }
            written.remove(&key);
        }
        cached
    }

    /// The live target: from the caches, else a GET (an unlabelled Secret to adopt or merge
    /// into).
    pub async fn live(&self, namespace: &str, name: &str) -> Result<Option<Arc<Secret>>> {
        if let Some(s) = self.cached(namespace, name) {
            return Ok(Some(s));
        }
        self.api(namespace)
            .get_opt(name)
            .await
            .map(|o| o.map(Arc::new))
            .map_err(|e| Error::kube(format!("get Secret {namespace}/{name}"), e))
    }

    /// Creates `secret` unless a Secret of that name exists: `Ok(false)` when one does (then
    /// nothing was changed; read it and plan the write against it).
    ///
    /// This is the same server-side apply as [`SecretSink::apply`] (same field manager, same
    /// fields, owned as `Apply`, so later applies remove what we stop writing), made create-only
    /// by a `resourceVersion` precondition no stored object can carry: the apiserver checks a
    /// given `resourceVersion` against an existing object (409 Conflict when it differs) and
    /// ignores it when the apply creates the object. A plain POST would do too, but its fields
    /// would be owned by an `Update` entry that later applies cannot drop fields from.
    pub async fn create(&self, namespace: &str, mut secret: Secret) -> Result<bool> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        secret.metadata.resource_version = Some(NO_STORED_VERSION.into());
        let created = match self
            .api(namespace)
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await
        {
            Ok(s) => s,
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(false),
            Err(e) => return Err(Error::kube(format!("create Secret {namespace}/{name}"), e)),
        };
        let mut created = created;
        crate::trim::managed_secret(&mut created);
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((namespace.to_string(), name), Arc::new(created));
        Ok(true)
    }

    /// Sends a planned write.
    pub async fn apply(
        &self,
        namespace: &str,
        secret: &Secret,
        remove_keys: &[String],
    ) -> Result<()> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let api = self.api(namespace);
        let mut applied = api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(secret),
            )
            .await
            .map_err(|e| Error::kube(format!("apply Secret {namespace}/{name}"), e))?;
        if !remove_keys.is_empty() {
            let nulls: serde_json::Map<String, serde_json::Value> = remove_keys
                .iter()
                .map(|k| (k.clone(), serde_json::Value::Null))
                .collect();
            applied = api
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({ "data": nulls })),
                )
                .await
                .map_err(|e| {
                    Error::kube(format!("remove keys from Secret {namespace}/{name}"), e)
                })?;
        }
        crate::trim::managed_secret(&mut applied);
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((namespace.to_string(), name), Arc::new(applied));
        Ok(())
    }

    /// Deletes a Secret; `false` when it was already gone.
    pub async fn delete(&self, namespace: &str, name: &str) -> Result<bool> {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(namespace.to_string(), name.to_string()));
        match self
            .api(namespace)
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(Error::kube(format!("delete Secret {namespace}/{name}"), e)),
        }
    }

    /// Secrets in `namespace` carrying `label=value`, from the managed cache.
    pub fn cached_with_label(&self, namespace: &str, label: &str, value: &str) -> Vec<Arc<Secret>> {
        self.managed
            .state()
            .into_iter()
            .filter(|s| {
                s.meta().namespace.as_deref() == Some(namespace)
                    && s.meta()
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(label))
                        .map(String::as_str)
                        == Some(value)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        FieldsV1, ManagedFieldsEntry, OwnerReference,
    };
    use refsync_core::SecretBytes;

    fn es(policy: CreationPolicy) -> ExternalSecret {
        let mut es = ExternalSecret::new("es", Default::default());
        es.metadata.namespace = Some("ns".into());
        es.metadata.uid = Some("uid-1".into());
        es.spec.target.creation_policy = policy;
        es
    }

    fn desired(pairs: &[(&str, &str)]) -> DesiredSecret {
        DesiredSecret {
            name: "es".into(),
            namespace: "ns".into(),
            type_: None,
            data: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), SecretBytes::from(*v)))
                .collect(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            finalizers: Vec::new(),
            immutable: false,
        }
    }

    fn with_fields(mut s: Secret, fields: serde_json::Value) -> Secret {
        s.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some(FIELD_MANAGER.into()),
            operation: Some("Apply".into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }]);
        s
    }

    #[test]
    fn up_to_date_sends_nothing_and_changes_apply() {
        let e = es(CreationPolicy::Owner);
        let d = desired(&[("a", "1")]);
        let live = build_secret(&e, &d);
        assert!(matches!(
            plan_write(&e, &d, Some(&live)).unwrap(),
            WritePlan::UpToDate
        ));
        // Someone else's label is fine.
        let mut other = live.clone();
        other
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("team".into(), "x".into());
        assert!(matches!(
            plan_write(&e, &d, Some(&other)).unwrap(),
            WritePlan::UpToDate
        ));
        // Changed data is written.
        let d2 = desired(&[("a", "2")]);
        assert!(matches!(
            plan_write(&e, &d2, Some(&live)).unwrap(),
            WritePlan::Apply { .. }
        ));
    }

    #[test]
    fn adoption_removes_foreign_keys_and_other_owner_is_refused() {
        let e = es(CreationPolicy::Owner);
        let d = desired(&[("a", "1")]);
        let mut live = build_secret(&e, &d);
        live.metadata.owner_references = None;
        live.data
            .as_mut()
            .unwrap()
            .insert("old".into(), ByteString(b"x".to_vec()));
        match plan_write(&e, &d, Some(&live)).unwrap() {
            WritePlan::Apply { remove_keys, .. } => {
                assert_eq!(remove_keys, vec!["old".to_string()])
            }
            p => panic!("{p:?}"),
        }
        live.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "external-secrets.io/v1".into(),
            kind: "ExternalSecret".into(),
            name: "other".into(),
            uid: "uid-2".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        assert!(
            matches!(plan_write(&e, &d, Some(&live)), Err(Error::OwnedByOther(o)) if o == "other")
        );
    }

    #[test]
    fn merge_keeps_foreign_keys_and_hashes_the_whole_data() {
        let e = es(CreationPolicy::Merge);
        let d = desired(&[("a", "1")]);
        let mut live = Secret::default();
        live.metadata.name = Some("es".into());
        live.data = Some([("keep".to_string(), ByteString(b"k".to_vec()))].into());
        let WritePlan::Apply {
            secret,
            remove_keys,
            ..
        } = plan_write(&e, &d, Some(&live)).unwrap()
        else {
            panic!()
        };
        assert!(remove_keys.is_empty());
        let mut all = BTreeMap::new();
        all.insert("a".to_string(), b"1".to_vec());
        all.insert("keep".to_string(), b"k".to_vec());
        assert_eq!(
            secret.metadata.annotations.unwrap()[ANNOTATION_DATA_HASH],
            hash::data_hash(all.iter())
        );
        // After the write: our key applied by us, the other key kept → up to date.
        let mut after = build_secret(&e, &d);
        after
            .data
            .as_mut()
            .unwrap()
            .insert("keep".into(), ByteString(b"k".to_vec()));
        after
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANNOTATION_DATA_HASH.into(), hash::data_hash(all.iter()));
        let after = with_fields(after, serde_json::json!({"f:data": {"f:a": {}}}));
        assert!(matches!(
            plan_write(&e, &d, Some(&after)).unwrap(),
            WritePlan::UpToDate
        ));
        // Our key no longer desired (deletionPolicy Merge, no data): SSA drops it.
        let none = desired(&[]);
        assert!(matches!(
            plan_write(&e, &none, Some(&after)).unwrap(),
            WritePlan::Apply { .. }
        ));
        assert_eq!(applied_by_us(&after).data, ["a".to_string()].into());
    }

    #[test]
    fn immutable_data_change_is_refused() {
        let e = es(CreationPolicy::Owner);
        let d = desired(&[("a", "1")]);
        let mut live = build_secret(&e, &d);
        live.immutable = Some(true);
        let d2 = desired(&[("a", "2")]);
        assert!(matches!(
            plan_write(&e, &d2, Some(&live)),
            Err(Error::Immutable(_))
        ));
    }
}
