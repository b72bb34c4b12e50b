//! The cluster source: stores from reflector caches (with ESO's tenancy and controller-class
//! rules) and the Secrets, ConfigMaps and ServiceAccount tokens they reference, read from the
//! apiserver on demand (no cache of every Secret in the cluster).

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};
use refsync_core::api::{ClusterSecretStore, SecretStore, SecretStoreSpec, StoreKind};
use refsync_core::engine::{ResolvedStore, StoreSource, namespace_allowed};
use refsync_core::fetch::StoreId;
use refsync_core::plan::StoreName;
use refsync_core::{Error, Result, SecretBytes, SecretMap};

use crate::context::Config;

/// Whether a store belongs to this controller (ESO's `--controller-class` rule).
pub fn store_is_ours(spec_controller: Option<&str>, config: &Config) -> bool {
    match spec_controller.filter(|c| !c.is_empty()) {
        Some(class) => config.controller_class.as_deref() == Some(class),
        None => !config.only_classed_stores,
    }
}

/// Resolves stores from the SecretStore and ClusterSecretStore reflectors.
#[derive(Clone)]
pub struct ClusterStores {
    pub client: Client,
    pub secret_stores: Store<SecretStore>,
    pub cluster_stores: Store<ClusterSecretStore>,
    pub config: Config,
}

/// A store found in the caches, before the tenancy check.
enum Found {
    Namespaced(std::sync::Arc<SecretStore>),
    Cluster(std::sync::Arc<ClusterSecretStore>),
}

impl ClusterStores {
    fn find(&self, name: &StoreName, namespace: &str) -> Option<Found> {
        match name.kind {
            StoreKind::SecretStore => self
                .secret_stores
                .get(&ObjectRef::new(&name.name).within(namespace))
                .map(Found::Namespaced),
            StoreKind::ClusterSecretStore => self
                .cluster_stores
                .get(&ObjectRef::new(&name.name))
                .map(Found::Cluster),
        }
    }

    /// The first store `names` refers to that another controller class owns (ESO skips such
    /// an ExternalSecret without touching it). Missing stores are not reported here.
    pub fn foreign_store(
        &self,
        names: impl IntoIterator<Item = StoreName>,
        namespace: &str,
    ) -> Option<StoreName> {
        names.into_iter().find(|n| {
            let class = match self.find(n, namespace) {
                Some(Found::Namespaced(s)) => s.spec.controller.clone(),
                Some(Found::Cluster(s)) => s.spec.controller.clone(),
                None => return false,
            };
            !store_is_ours(class.as_deref(), &self.config)
        })
    }

    async fn namespace_labels(&self, namespace: &str) -> Result<BTreeMap<String, String>> {
        let ns = Api::<Namespace>::all(self.client.clone())
            .get_opt(namespace)
            .await
            .map_err(|e| Error::transient(format!("get Namespace {namespace}: {e}")))?;
        Ok(ns.and_then(|n| n.metadata.labels).unwrap_or_default())
    }
}

/// A store's identity in the fetch cache: its generation changes with its spec only, so a
/// status write by the store reconciler does not drop the provider client or cached values.
fn version_of<K: Resource>(obj: &K) -> String {
    let m = obj.meta();
    match (m.generation, &m.resource_version) {
        (Some(g), _) => g.to_string(),
        (None, Some(rv)) => rv.clone(),
        (None, None) => String::new(),
    }
}

#[async_trait]
impl StoreSource for ClusterStores {
    async fn resolve(&self, name: &StoreName, namespace: &str) -> Result<ResolvedStore> {
        match self.find(name, namespace) {
            None => Err(Error::config(match name.kind {
                StoreKind::SecretStore => format!(
                    "spec.secretStoreRef: SecretStore {namespace}/{} not found (a SecretStore is only visible from its own namespace)",
                    name.name
                ),
                StoreKind::ClusterSecretStore => format!(
                    "spec.secretStoreRef: ClusterSecretStore {} not found",
                    name.name
                ),
            })),
            Some(Found::Namespaced(store)) => {
                if !store_is_ours(store.spec.controller.as_deref(), &self.config) {
                    return Err(Error::config(format!(
                        "SecretStore {namespace}/{} belongs to controller class {:?}, not this controller",
                        name.name,
                        store.spec.controller.as_deref().unwrap_or_default()
                    )));
                }
                Ok(ResolvedStore {
                    id: StoreId {
                        kind: StoreKind::SecretStore,
                        namespace: namespace.to_string(),
                        name: name.name.clone(),
                        version: version_of(store.as_ref()),
                    },
                    spec: store.spec.clone(),
                })
            }
            Some(Found::Cluster(store)) => {
                if !store_is_ours(store.spec.controller.as_deref(), &self.config) {
                    return Err(Error::config(format!(
                        "ClusterSecretStore {} belongs to controller class {:?}, not this controller",
                        name.name,
                        store.spec.controller.as_deref().unwrap_or_default()
                    )));
                }
                let conditions = &store.spec.conditions;
                let needs_labels = conditions.iter().any(|c| c.namespace_selector.is_some());
                let labels = if needs_labels {
                    Some(self.namespace_labels(namespace).await?)
                } else {
                    None
                };
                let allowed = namespace_allowed(conditions, namespace, labels.as_ref())
                    .map_err(|e| e.context(format!("ClusterSecretStore {}", name.name)))?;
                if !allowed {
                    return Err(Error::config(format!(
                        "using cluster store {:?} is not allowed from namespace {namespace:?}: denied by spec.condition",
                        name.name
                    )));
                }
                let spec: SecretStoreSpec = store.spec.clone().into();
                Ok(ResolvedStore {
                    id: StoreId {
                        kind: StoreKind::ClusterSecretStore,
                        namespace: String::new(),
                        name: name.name.clone(),
                        version: version_of(store.as_ref()),
                    },
                    spec,
                })
            }
        }
    }
}

/// Reads Secrets, ConfigMaps and ServiceAccount tokens from the apiserver when a store or a
/// template needs them.
#[derive(Clone)]
pub struct KubeReader {
    pub client: Client,
}

impl KubeReader {
    async fn secret(&self, namespace: &str, name: &str) -> Result<Secret> {
        Api::<Secret>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| kube_error(e, &format!("get Secret {namespace}/{name}")))?
            .ok_or_else(|| Error::not_found(format!("Secret {namespace}/{name} not found")))
    }
}

fn kube_error(e: kube::Error, what: &str) -> Error {
    match &e {
        kube::Error::Api(s) if s.code == 403 || s.code == 401 => {
            Error::auth(format!("{what}: {}", s.message))
        }
        kube::Error::Api(s) if s.code == 404 => Error::not_found(format!("{what}: {}", s.message)),
        kube::Error::Api(s) if s.code == 400 || s.code == 422 => {
            Error::config(format!("{what}: {}", s.message))
        }
        _ => Error::transient(format!("{what}: {e}")),
    }
}

#[async_trait]
impl refsync_core::SecretReader for KubeReader {
    async fn secret_key(&self, namespace: &str, name: &str, key: &str) -> Result<SecretBytes> {
        let s = self.secret(namespace, name).await?;
        s.data
            .and_then(|mut d| d.remove(key))
            .map(|v| SecretBytes::new(v.0))
            .ok_or_else(|| Error::not_found(format!("Secret {namespace}/{name} has no key {key}")))
    }

    async fn secret_data(&self, namespace: &str, name: &str) -> Result<SecretMap> {
        let s = self.secret(namespace, name).await?;
        Ok(s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, SecretBytes::new(v.0)))
            .collect())
    }

    async fn config_map_key(&self, namespace: &str, name: &str, key: &str) -> Result<String> {
        let cm = Api::<ConfigMap>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| kube_error(e, &format!("get ConfigMap {namespace}/{name}")))?
            .ok_or_else(|| Error::not_found(format!("ConfigMap {namespace}/{name} not found")))?;
        if let Some(v) = cm.data.as_ref().and_then(|d| d.get(key)) {
            return Ok(v.clone());
        }
        if let Some(v) = cm.binary_data.as_ref().and_then(|d| d.get(key)) {
            return String::from_utf8(v.0.clone()).map_err(|_| {
                Error::invalid(format!(
                    "ConfigMap {namespace}/{name} key {key} is not valid UTF-8"
                ))
            });
        }
        Err(Error::not_found(format!(
            "ConfigMap {namespace}/{name} has no key {key}"
        )))
    }

    async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        audiences: &[String],
        expiration_seconds: Option<i64>,
    ) -> Result<SecretBytes> {
        let req = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audiences.to_vec(),
                expiration_seconds,
                ..Default::default()
            },
            ..Default::default()
        };
        let out = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace)
            .create_token_request(name, &PostParams::default(), &req)
            .await
            .map_err(|e| {
                kube_error(
                    e,
                    &format!("TokenRequest for ServiceAccount {namespace}/{name}"),
                )
            })?;
        let token = out.status.map(|s| s.token).unwrap_or_default();
        if token.is_empty() {
            return Err(Error::auth(format!(
                "TokenRequest for ServiceAccount {namespace}/{name} returned no token"
            )));
        }
        Ok(SecretBytes::new(token.into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_class() {
        let mut c = Config::default();
        assert!(store_is_ours(None, &c));
        assert!(store_is_ours(Some(""), &c));
        assert!(!store_is_ours(Some("other"), &c));
        c.controller_class = Some("mine".into());
        assert!(store_is_ours(Some("mine"), &c));
        assert!(!store_is_ours(Some("other"), &c));
        c.only_classed_stores = true;
        assert!(!store_is_ours(None, &c));
        assert!(store_is_ours(Some("mine"), &c));
    }
}
