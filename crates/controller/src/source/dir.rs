//! The manifest source: stores resolved from a manifest set (a directory or a git checkout),
//! with the same tenancy rules as in a cluster.

use async_trait::async_trait;
use refsync_core::api::StoreKind;
use refsync_core::engine::{ResolvedStore, StoreSource, namespace_allowed};
use refsync_core::fetch::StoreId;
use refsync_core::manifest::ManifestSet;
use refsync_core::plan::StoreName;
use refsync_core::{Error, Result};
use sha2::{Digest, Sha256};

/// Resolves stores from a `ManifestSet`.
pub struct ManifestStores<'a> {
    pub set: &'a ManifestSet,
}

fn spec_version<T: serde::Serialize>(spec: &T) -> String {
    let json = serde_json::to_vec(spec).unwrap_or_default();
    hex::encode(&Sha256::digest(&json)[..8])
}

#[async_trait]
impl StoreSource for ManifestStores<'_> {
    async fn resolve(&self, name: &StoreName, namespace: &str) -> Result<ResolvedStore> {
        match name.kind {
            StoreKind::SecretStore => {
                let store = self
                    .set
                    .secret_stores
                    .get(&(namespace.to_string(), name.name.clone()))
                    .ok_or_else(|| {
                        Error::config(format!(
                            "spec.secretStoreRef: SecretStore {namespace}/{} not found (a SecretStore is only visible from its own namespace)",
                            name.name
                        ))
                    })?;
                Ok(ResolvedStore {
                    id: StoreId {
                        kind: StoreKind::SecretStore,
                        namespace: namespace.to_string(),
                        name: name.name.clone(),
                        version: spec_version(&store.spec),
                    },
                    spec: store.spec.clone(),
                })
            }
            StoreKind::ClusterSecretStore => {
                let store = self
                    .set
                    .cluster_secret_stores
                    .get(&name.name)
                    .ok_or_else(|| {
                        Error::config(format!(
                            "spec.secretStoreRef: ClusterSecretStore {} not found",
                            name.name
                        ))
                    })?;
                if !namespace_allowed(&store.spec.conditions, namespace, None)? {
                    return Err(Error::config(format!(
                        "ClusterSecretStore {} does not allow namespace {namespace} (spec.conditions; namespaceSelector cannot be evaluated offline)",
                        name.name
                    )));
                }
                Ok(ResolvedStore {
                    id: StoreId {
                        kind: StoreKind::ClusterSecretStore,
                        namespace: String::new(),
                        name: name.name.clone(),
                        version: spec_version(&store.spec),
                    },
                    spec: store.spec.clone().into(),
                })
            }
        }
    }
}
