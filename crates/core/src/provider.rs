//! The provider contract: what every backend crate implements, and how stores become providers.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::api::{MetadataPolicy, SecretStoreSpec, StoreKind};
use crate::error::{Error, Result};
use crate::secret::{SecretBytes, SecretMap};

/// One remote read, without the parts the engine applies itself (`property`, decoding): two
/// ExternalSecrets reading different properties of one key make one provider call.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteRef {
    pub key: String,
    pub version: Option<String>,
    /// `Fetch` returns the secret's metadata (tags, labels, custom metadata) as a JSON object.
    pub metadata: bool,
}

impl RemoteRef {
    pub fn new(key: impl Into<String>) -> Self {
        RemoteRef {
            key: key.into(),
            version: None,
            metadata: false,
        }
    }

    pub fn from_api(r: &crate::api::ExternalSecretDataRemoteRef) -> Self {
        RemoteRef {
            key: r.key.clone(),
            version: r.version.clone().filter(|v| !v.is_empty()),
            metadata: r.metadata_policy == Some(MetadataPolicy::Fetch),
        }
    }
}

/// `dataFrom[].find`: select many secrets by name, tags and path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FindRef {
    pub path: Option<String>,
    /// A Go RE2 regular expression matched against the secret's name.
    pub name_regexp: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// How a provider's raw value is searched for `property`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropertyMode {
    /// gjson path only (fake).
    Gjson,
    /// A top-level key equal to the whole property first, then a gjson path (Vault: keys may
    /// contain dots).
    ExactKeyThenGjson,
    /// The property with its dots escaped (a literal dotted key) first, then a gjson path (AWS, GCP).
    EscapedDotsThenGjson,
}

/// Which operations a store supports (its `status.capabilities`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capabilities {
    ReadOnly,
    WriteOnly,
    ReadWrite,
}

impl Capabilities {
    pub fn as_str(self) -> &'static str {
        match self {
            Capabilities::ReadOnly => "ReadOnly",
            Capabilities::WriteOnly => "WriteOnly",
            Capabilities::ReadWrite => "ReadWrite",
        }
    }
}

/// A configured client for one store. Built once per store (and per change of the store), shared
/// by every ExternalSecret that uses it, so it must be cheap to call concurrently.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The name used in metrics labels, as ESO names it (`HashiCorp/Vault`, `AWS/SecretsManager`).
    fn metrics_name(&self) -> &'static str;

    /// The raw value of one remote secret (the whole JSON document for structured secrets).
    /// A missing secret or version is `ErrorKind::NotFound`.
    async fn get_secret(&self, r: &RemoteRef) -> Result<SecretBytes>;

    /// Many reads at once. The default runs them one by one; providers with batch APIs
    /// (Secrets Manager `BatchGetSecretValue`, SSM `GetParameters`) override it. The result has
    /// one entry per input, in order.
    async fn get_secrets(&self, refs: &[RemoteRef]) -> Vec<Result<SecretBytes>> {
        let mut out = Vec::with_capacity(refs.len());
        for r in refs {
            out.push(self.get_secret(r).await);
        }
        out
    }

    /// `dataFrom[].find`: every matching secret by its remote name (keys are converted to valid
    /// Secret keys by the engine, not here).
    async fn find(&self, f: &FindRef) -> Result<SecretMap>;

    /// Checks that the store works (reachable, credentials accepted): its Ready condition.
    async fn validate(&self) -> Result<()>;

    fn property_mode(&self) -> PropertyMode {
        PropertyMode::Gjson
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ReadOnly
    }

    /// Releases what the client holds (tokens, leases). Called when the store goes away.
    async fn close(&self) {}
}

/// Reads the Kubernetes objects a store's credentials or a template refer to: the manifest set
/// in render mode, the apiserver in the controller.
#[async_trait]
pub trait SecretReader: Send + Sync {
    /// `data[key]` of a Secret.
    async fn secret_key(&self, namespace: &str, name: &str, key: &str) -> Result<SecretBytes>;
    /// The whole `data` of a Secret.
    async fn secret_data(&self, namespace: &str, name: &str) -> Result<SecretMap>;
    /// `data[key]` of a ConfigMap.
    async fn config_map_key(&self, namespace: &str, name: &str, key: &str) -> Result<String>;
    /// A token for a ServiceAccount (TokenRequest). Not available offline.
    async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        audiences: &[String],
        expiration_seconds: Option<i64>,
    ) -> Result<SecretBytes> {
        let _ = (audiences, expiration_seconds);
        Err(Error::unsupported(format!(
            "a token for ServiceAccount {namespace}/{name} cannot be requested here (no cluster)"
        )))
    }
}

/// Counts provider API calls (ESO's `externalsecret_provider_api_calls_count`): providers
/// report each remote call with its provider name (`AWS/SecretsManager`), call name
/// (`GetSecretValue`) and outcome.
pub trait CallObserver: Send + Sync {
    fn observe(&self, provider: &'static str, call: &'static str, ok: bool);
}

/// Counts calls in memory; the default observer, and handy in tests.
#[derive(Debug, Default)]
pub struct CallCounter {
    counts: std::sync::Mutex<BTreeMap<(&'static str, &'static str, bool), u64>>,
}

impl CallCounter {
    /// Calls of `call` so far (successful and failed).
    pub fn count(&self, call: &str) -> u64 {
        let m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        m.iter()
            .filter(|((_, c, _), _)| *c == call)
            .map(|(_, n)| *n)
            .sum()
    }

    pub fn total(&self) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }
}

impl CallObserver for CallCounter {
    fn observe(&self, provider: &'static str, call: &'static str, ok: bool) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((provider, call, ok))
            .or_default() += 1;
    }
}

/// Everything a factory needs to know about the store it builds a provider for.
#[derive(Clone)]
pub struct StoreContext {
    pub kind: StoreKind,
    pub name: String,
    /// The store's namespace (namespaced stores) or the ExternalSecret's (cluster stores, for
    /// references that omit a namespace, as ESO does).
    pub namespace: String,
    pub reader: Arc<dyn SecretReader>,
    /// Where providers report their API calls.
    pub calls: Arc<dyn CallObserver>,
}

impl StoreContext {
    /// Where a `SecretKeySelector` points: a namespaced store may only read its own namespace.
    pub fn ref_namespace(&self, requested: Option<&str>) -> Result<String> {
        match (self.kind, requested) {
            (StoreKind::ClusterSecretStore, Some(ns)) if !ns.is_empty() => Ok(ns.to_string()),
            (StoreKind::ClusterSecretStore, _) if self.namespace.is_empty() => {
                Err(Error::config(format!(
                    "ClusterSecretStore {}: a namespace is required in references to Secrets",
                    self.name
                )))
            }
            (StoreKind::SecretStore, Some(ns)) if !ns.is_empty() && ns != self.namespace => {
                Err(Error::config(format!(
                    "SecretStore {}/{} may only reference Secrets in its own namespace, not {ns}",
                    self.namespace, self.name
                )))
            }
            _ => Ok(self.namespace.clone()),
        }
    }

    /// Reads the key a `SecretKeySelector` names; `field` names it in errors.
    pub async fn read_selector(
        &self,
        sel: &crate::api::SecretKeySelector,
        field: &str,
    ) -> Result<SecretBytes> {
        let name = sel
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Error::config(format!("{field}.name is required")))?;
        let key = sel
            .key
            .as_deref()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| Error::config(format!("{field}.key is required")))?;
        let ns = self.ref_namespace(sel.namespace.as_deref())?;
        self.reader
            .secret_key(&ns, name, key)
            .await
            .map_err(|e| e.context(field))
    }
}

/// Builds providers for one `spec.provider` key.
#[async_trait]
pub trait ProviderFactory: Send + Sync {
    /// The `spec.provider` key this factory serves (`vault`, `aws`, `gcpsm`, `fake`).
    fn key(&self) -> &'static str;
    /// Builds a client; errors name the store field at fault.
    async fn build(&self, spec: &SecretStoreSpec, ctx: &StoreContext) -> Result<Arc<dyn Provider>>;
}

/// The providers compiled into this binary, by `spec.provider` key.
#[derive(Clone, Default)]
pub struct ProviderRegistry {
    factories: BTreeMap<&'static str, Arc<dyn ProviderFactory>>,
}

impl ProviderRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, f: Arc<dyn ProviderFactory>) -> &mut Self {
        self.factories.insert(f.key(), f);
        self
    }

    pub fn keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.factories.keys().copied()
    }

    /// The one provider key a store configures, or a Config error naming `spec.provider`.
    pub fn provider_key<'a>(&self, spec: &'a SecretStoreSpec) -> Result<&'a str> {
        let keys = spec.provider.configured();
        match keys.as_slice() {
            [] => Err(Error::config("spec.provider: no provider is configured")),
            [one] => {
                if self.factories.contains_key(one) {
                    Ok(one)
                } else {
                    Err(Error::unsupported(format!(
                        "spec.provider.{one}: provider {one} is not supported by refsync (supported: {})",
                        self.keys().collect::<Vec<_>>().join(", ")
                    )))
                }
            }
            many => Err(Error::config(format!(
                "spec.provider: exactly one provider must be configured, found {}",
                many.join(", ")
            ))),
        }
    }

    pub async fn build(
        &self,
        spec: &SecretStoreSpec,
        ctx: &StoreContext,
    ) -> Result<Arc<dyn Provider>> {
        let key = self.provider_key(spec)?;
        let factory = self.factories.get(key).ok_or_else(|| {
            Error::unsupported(format!("provider {key} is not supported by refsync"))
        })?;
        factory
            .build(spec, ctx)
            .await
            .map_err(|e| e.context(format!("{} {}/{}", ctx.kind, ctx.namespace, ctx.name)))
    }
}
