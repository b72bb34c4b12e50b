//! The `v1/Secret` refsync writes for an ExternalSecret: data, type, ESO's labels and
//! annotations, and ownership.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use refsync_core::api::{CreationPolicy, ExternalSecret};
use refsync_core::assemble::DesiredSecret;
use refsync_core::hash;

use crate::labels::*;

/// Builds the Secret for `desired`, as ESO would write it for `es`.
pub fn build_secret(es: &ExternalSecret, desired: &DesiredSecret) -> Secret {
    let data: BTreeMap<String, ByteString> = desired
        .data
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(v.expose().to_vec())))
        .collect();
    let mut labels = desired.labels.clone();
    let mut annotations = desired.annotations.clone();
    labels.insert(LABEL_MANAGED.into(), LABEL_MANAGED_VALUE.into());
    annotations.insert(
        ANNOTATION_DATA_HASH.into(),
        hash::data_hash(desired.data.iter().map(|(k, v)| (k, v.expose()))),
    );
    let policy = es.spec.target.creation_policy;
    let mut owner_references = None;
    if policy == CreationPolicy::Owner {
        let ns = es.metadata.namespace.clone().unwrap_or_default();
        let name = es.metadata.name.clone().unwrap_or_default();
        labels.insert(LABEL_OWNER.into(), hash::created_by(&ns, &name));
        if let Some(uid) = es.metadata.uid.clone() {
            owner_references = Some(vec![OwnerReference {
                api_version: ExternalSecret::api_version(&()).into_owned(),
                kind: ExternalSecret::kind(&()).into_owned(),
                name,
                uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]);
        }
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(desired.name.clone()),
            namespace: Some(desired.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references,
            finalizers: (!desired.finalizers.is_empty()).then(|| desired.finalizers.clone()),
            ..Default::default()
        },
        type_: Some(desired.type_.clone().unwrap_or_else(|| "Opaque".into())),
        data: Some(data),
        immutable: desired.immutable.then_some(true),
        ..Default::default()
    }
}
