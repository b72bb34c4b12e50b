//! What the reflector caches keep of each object: the fields some reader uses, nothing else.
//!
//! At 10,000 ExternalSecrets the caches hold 10,000 ExternalSecrets and 10,000 managed
//! Secrets; their `managedFields` (a JSON tree per field manager, parsed into
//! `serde_json::Value` maps) cost more than the rest of the object. The readers:
//!
//! - ExternalSecrets (the reconciler's cache): spec, status, and metadata name, namespace,
//!   uid, generation, resourceVersion, labels, annotations (the synced-resource-version hash
//!   covers all of them), finalizers, deletionTimestamp. No reader uses their
//!   `managedFields` (the ClusterExternalSecret reconciler reads its ExternalSecrets from the
//!   apiserver).
//! - Managed Secrets (the sink's cache): everything but the `managedFields` of other field
//!   managers: the sink reads refsync's own entries ([`crate::sink::cluster::applied_by_us`],
//!   every operation is kept).

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
use refsync_core::api::ExternalSecret;
use serde_json::{Map, Value};

use crate::context::FIELD_MANAGER;

/// Drops what no reader of the ExternalSecret cache uses.
pub fn external_secret(es: &mut ExternalSecret) {
    es.metadata.managed_fields = None;
}

/// Drops the `managedFields` entries of other field managers, and of refsync's own entries
/// keeps only what [`crate::sink::cluster::applied_by_us`] reads: the data keys, label keys and
/// annotation keys (not the ownerReference, type and timestamps of the full field set).
pub fn managed_secret(secret: &mut Secret) {
    if let Some(mf) = secret.metadata.managed_fields.as_mut() {
        mf.retain(|e| e.manager.as_deref() == Some(FIELD_MANAGER));
        if mf.is_empty() {
            secret.metadata.managed_fields = None;
        } else {
            for e in mf.iter_mut() {
                e.time = None;
                if let Some(FieldsV1(fields)) = e.fields_v1.as_mut() {
                    *fields = key_sets(fields);
                }
            }
            mf.shrink_to_fit();
        }
    }
}

/// `{f:data: {f:k: {}}, f:metadata: {f:labels: {..}, f:annotations: {..}}}` of a field set,
/// each key's own subtree emptied.
fn key_sets(fields: &Value) -> Value {
    fn only_keys(v: &Value) -> Value {
        Value::Object(
            v.as_object()
                .map(|o| {
                    o.keys()
                        .filter(|k| k.starts_with("f:"))
                        .map(|k| (k.clone(), Value::Object(Map::new())))
                        .collect()
                })
                .unwrap_or_default(),
        )
    }
    let mut out = Map::new();
    if let Some(d) = fields.get("f:data") {
        out.insert("f:data".into(), only_keys(d));
    }
    if let Some(m) = fields.get("f:metadata") {
        let mut meta = Map::new();
        for k in ["f:labels", "f:annotations"] {
            if let Some(v) = m.get(k) {
                meta.insert(k.into(), only_keys(v));
            }
        }
        out.insert("f:metadata".into(), Value::Object(meta));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::cluster::applied_by_us;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};

    fn entry(manager: &str, operation: &str, fields: serde_json::Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    #[test]
    fn managed_secret_keeps_every_entry_of_ours_and_what_the_sink_reads() {
        let ours_apply = entry(
            FIELD_MANAGER,
            "Apply",
            serde_json::json!({"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:l": {}}}}),
        );
        let ours_update = entry(
            FIELD_MANAGER,
            "Update",
            serde_json::json!({"f:data": {"f:b": {}}}),
        );
        let mut s: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "s", "namespace": "ns", "resourceVersion": "7", "uid": "u",
                "labels": {"l": "1"}, "annotations": {"x": "y"},
                "ownerReferences": [{"apiVersion": "external-secrets.io/v1",
                    "kind": "ExternalSecret", "name": "es", "uid": "e", "controller": true}],
            },
            "data": {"a": "MQ==", "b": "Mg=="},
            "type": "Opaque",
        }))
        .unwrap();
        s.metadata.managed_fields = Some(vec![
            entry(
                "kubectl",
                "Update",
                serde_json::json!({"f:data": {"f:c": {}}}),
            ),
            ours_apply.clone(),
            entry("other", "Apply", serde_json::json!({"f:data": {"f:d": {}}})),
            ours_update.clone(),
        ]);
        let before = applied_by_us(&s);
        let mut trimmed = s.clone();
        managed_secret(&mut trimmed);
        assert_eq!(
            trimmed.metadata.managed_fields,
            Some(vec![ours_apply, ours_update])
        );
        assert_eq!(applied_by_us(&trimmed), before);
        // Nothing else changed.
        trimmed.metadata.managed_fields = s.metadata.managed_fields.clone();
        assert_eq!(trimmed, s);

        let mut foreign = s.clone();
        foreign.metadata.managed_fields = Some(vec![entry("x", "Update", serde_json::json!({}))]);
        managed_secret(&mut foreign);
        assert_eq!(foreign.metadata.managed_fields, None);
    }

    #[test]
    fn our_entry_keeps_only_the_key_sets() {
        let mut s = Secret::default();
        s.metadata.managed_fields = Some(vec![entry(
            FIELD_MANAGER,
            "Apply",
            serde_json::json!({
                "f:data": {".": {}, "f:a": {}, "f:b": {}},
                "f:metadata": {
                    "f:labels": {"f:l": {}},
                    "f:annotations": {"f:h": {}},
                    "f:ownerReferences": {"k:{\"uid\":\"e\"}": {"f:name": {}}},
                },
                "f:type": {},
                "f:immutable": {},
            }),
        )]);
        let before = applied_by_us(&s);
        managed_secret(&mut s);
        let mf = s.metadata.managed_fields.as_ref().unwrap();
        assert_eq!(
            mf[0].fields_v1.as_ref().unwrap().0,
            serde_json::json!({
                "f:data": {"f:a": {}, "f:b": {}},
                "f:metadata": {"f:labels": {"f:l": {}}, "f:annotations": {"f:h": {}}},
            })
        );
        assert_eq!(applied_by_us(&s), before);
        assert_eq!(before.data.len(), 2);
    }

    #[test]
    fn external_secret_keeps_spec_status_and_the_hashed_metadata() {
        let es: ExternalSecret = serde_json::from_value(serde_json::json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {
                "name": "es", "namespace": "ns", "uid": "u", "generation": 3,
                "resourceVersion": "9", "labels": {"a": "b"},
                "annotations": {"force-sync": "1"}, "finalizers": ["f"],
                "managedFields": [{"manager": "kubectl", "operation": "Apply",
                    "fieldsV1": {"f:spec": {"f:data": {}}}}],
            },
            "spec": {"refreshInterval": "1h", "secretStoreRef": {"name": "s"},
                "data": [{"secretKey": "k", "remoteRef": {"key": "r"}}]},
            "status": {"refreshTime": "2026-01-01T00:00:00Z"},
        }))
        .unwrap();
        let mut trimmed = es.clone();
        external_secret(&mut trimmed);
        assert_eq!(trimmed.metadata.managed_fields, None);
        let mut back = trimmed.clone();
        back.metadata.managed_fields = es.metadata.managed_fields.clone();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&es).unwrap()
        );
    }
}
