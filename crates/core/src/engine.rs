//! The pipeline behind every front end: plan → fetch → assemble for one ExternalSecret, with
//! stores resolved by the source and credentials read through a `SecretReader`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::future::join_all;

use crate::api::{
    ClusterSecretStoreCondition, DeletionPolicy, ExternalSecret, SecretStoreSpec, StoreKind,
};
use crate::assemble::{self, Fetched, FetchedFrom, Outcome, TemplateSourceKind, TemplateSources};
use crate::error::{Error, ErrorKind, Result};
use crate::fetch::{Fetcher, Read, ReadValue, StoreId};
use crate::plan::{self, StoreName};
use crate::provider::{CallObserver, Provider, ProviderRegistry, SecretReader, StoreContext};

/// A store found for an ExternalSecret, tenancy already checked.
#[derive(Clone, Debug)]
pub struct ResolvedStore {
    pub id: StoreId,
    pub spec: SecretStoreSpec,
}

/// Finds stores: the manifest set offline, the informer caches in the controller.
#[async_trait]
pub trait StoreSource: Send + Sync {
    /// The store `name` as seen from an ExternalSecret in `namespace`. A namespaced store is
    /// looked up in that namespace only; a cluster store's `conditions` must admit it.
    async fn resolve(&self, name: &StoreName, namespace: &str) -> Result<ResolvedStore>;
}

/// Whether a ClusterSecretStore's `conditions` admit `namespace` (ORed; no conditions = all).
/// `labels` are the namespace's labels, `None` when they cannot be known (offline).
pub fn namespace_allowed(
    conditions: &[ClusterSecretStoreCondition],
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> Result<bool> {
    if conditions.is_empty() {
        return Ok(true);
    }
    for (i, c) in conditions.iter().enumerate() {
        if c.namespaces.iter().any(|n| n == namespace) {
            return Ok(true);
        }
        for (j, re) in c.namespace_regexes.iter().enumerate() {
            let re = assemble::compile_regex(re)
                .map_err(|e| e.context(format!("spec.conditions[{i}].namespaceRegexes[{j}]")))?;
            if re.is_match(namespace) {
                return Ok(true);
            }
        }
        if let (Some(sel), Some(labels)) = (&c.namespace_selector, labels)
            && crate::selector::matches(sel, labels)
                .map_err(|e| e.context(format!("spec.conditions[{i}].namespaceSelector")))?
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The result of syncing one ExternalSecret.
#[derive(Debug)]
pub struct Synced {
    pub outcome: Outcome,
    /// The stores it read from.
    pub stores: Vec<StoreId>,
    /// Entries whose remote secret does not exist and that were skipped because the
    /// `deletionPolicy` is not `Retain` (ESO's `MissingProviderSecret` Event text, naming the
    /// field, e.g. `secret does not exist at provider using spec.data[1] (key=db)`).
    pub missing: Vec<String>,
}

/// Plans, fetches and assembles; holds the provider clients and the fetch cache.
pub struct Engine {
    pub registry: ProviderRegistry,
    pub fetcher: Fetcher,
    /// Where providers report API calls (metrics in the controller).
    pub calls: Arc<dyn CallObserver>,
    providers: Mutex<HashMap<StoreId, Arc<dyn Provider>>>,
}

impl Engine {
    pub fn new(registry: ProviderRegistry, fetcher: Fetcher) -> Self {
        Engine {
            registry,
            fetcher,
            calls: Arc::new(crate::provider::CallCounter::default()),
            providers: Mutex::new(HashMap::new()),
        }
    }

    /// The provider client of a store, built once per store version and shared.
    pub async fn provider(
        &self,
        store: &ResolvedStore,
        reader: Arc<dyn SecretReader>,
    ) -> Result<Arc<dyn Provider>> {
        if let Some(p) = self
            .providers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&store.id)
        {
            return Ok(p.clone());
        }
        let ctx = StoreContext {
            kind: store.id.kind,
            name: store.id.name.clone(),
            namespace: store.id.namespace.clone(),
            reader,
            calls: self.calls.clone(),
        };
        let built = self.registry.build(&store.spec, &ctx).await?;
        let mut map = self.providers.lock().unwrap_or_else(|p| p.into_inner());
        // Older versions of the same store are dropped: their clients are stale.
        map.retain(|id, _| {
            !(id.kind == store.id.kind
                && id.namespace == store.id.namespace
                && id.name == store.id.name)
        });
        map.insert(store.id.clone(), built.clone());
        Ok(built)
    }

    /// Drops a store's client and cached values (store changed or deleted).
    pub fn forget_store(&self, kind: StoreKind, namespace: &str, name: &str) {
        let mut map = self.providers.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<StoreId> = map
            .keys()
            .filter(|id| id.kind == kind && id.namespace == namespace && id.name == name)
            .cloned()
            .collect();
        for id in gone {
            map.remove(&id);
            self.fetcher.invalidate(Some(&id));
        }
    }

    /// plan → fetch → assemble for one ExternalSecret.
    pub async fn sync(
        &self,
        es: &ExternalSecret,
        stores: &dyn StoreSource,
        reader: Arc<dyn SecretReader>,
    ) -> Result<Synced> {
        let namespace = es.metadata.namespace.clone().unwrap_or_default();
        let plan = plan::plan(es).map_err(join_errors)?;

        // Resolve each distinct store once.
        let mut resolved: BTreeMap<StoreName, (ResolvedStore, Arc<dyn Provider>)> = BTreeMap::new();
        for name in plan.stores() {
            let store = stores.resolve(&name, &namespace).await?;
            let provider = self.provider(&store, reader.clone()).await?;
            resolved.insert(name, (store, provider));
        }

        // Group reads per store, keeping each read's place in the spec.
        #[derive(Clone, Copy)]
        enum Slot {
            Data(usize),
            From(usize),
        }
        let mut groups: BTreeMap<StoreName, Vec<(Slot, Read)>> = BTreeMap::new();
        for (i, r) in plan.data.iter().enumerate() {
            groups
                .entry(r.store.clone())
                .or_default()
                .push((Slot::Data(i), r.read.clone()));
        }
        for (i, r) in plan.data_from.iter().enumerate() {
            groups
                .entry(r.store.clone())
                .or_default()
                .push((Slot::From(i), r.read.clone()));
        }
        let calls = groups.iter().map(|(name, items)| {
            let (store, provider) = &resolved[name];
            let reads: Vec<Read> = items.iter().map(|(_, r)| r.clone()).collect();
            async move {
                let values = self.fetcher.fetch(&store.id, provider, &reads).await;
                (provider.property_mode(), values)
            }
        });
        let results = join_all(calls).await;

        let mut fetched = Fetched {
            data: (0..plan.data.len())
                .map(|_| Err(Error::transient("not fetched")))
                .collect(),
            data_from: (0..plan.data_from.len())
                .map(|_| Err(Error::transient("not fetched")))
                .collect(),
        };
        for ((_, items), (mode, values)) in groups.iter().zip(results) {
            for ((slot, _), value) in items.iter().zip(values) {
                match *slot {
                    Slot::Data(i) => {
                        fetched.data[i] = value.and_then(|v| match v {
                            ReadValue::Secret(s) => Ok((s, mode)),
                            ReadValue::Map(_) => {
                                Err(Error::transient("internal: map for a single read"))
                            }
                        })
                    }
                    Slot::From(i) => {
                        fetched.data_from[i] = value.map(|v| match v {
                            ReadValue::Secret(s) => FetchedFrom::Extract(s, mode),
                            ReadValue::Map(m) => FetchedFrom::Find(m),
                        })
                    }
                }
            }
        }

        let missing = missing_entries(es, &fetched);
        let data = assemble::provider_data(es, &fetched)?;
        let sources = template_sources(es, &namespace, reader.as_ref()).await?;
        let outcome = assemble::assemble(es, data, &sources)?;
        Ok(Synced {
            outcome,
            stores: resolved.values().map(|(s, _)| s.id.clone()).collect(),
            missing,
        })
    }
}

/// The entries `provider_data` skips as missing (not-found under a non-`Retain` policy).
fn missing_entries(es: &ExternalSecret, fetched: &Fetched) -> Vec<String> {
    if es.spec.target.deletion_policy == DeletionPolicy::Retain {
        return Vec::new();
    }
    let from = fetched
        .data_from
        .iter()
        .enumerate()
        .filter(|(_, r)| r.as_ref().is_err_and(|e| e.is_not_found()))
        .map(|(i, _)| format!("secret does not exist at provider using spec.dataFrom[{i}]"));
    let data = fetched
        .data
        .iter()
        .enumerate()
        .filter(|(_, r)| r.as_ref().is_err_and(|e| e.is_not_found()))
        .map(|(i, _)| {
            let key = es
                .spec
                .data
                .get(i)
                .map(|d| d.remote_ref.key.as_str())
                .unwrap_or_default();
            format!("secret does not exist at provider using spec.data[{i}] (key={key})")
        });
    from.chain(data).collect()
}

/// Joins plan errors into one, keeping the most telling kind.
pub fn join_errors(errors: Vec<Error>) -> Error {
    let kind = if errors.iter().any(|e| e.kind == ErrorKind::Unsupported) {
        ErrorKind::Unsupported
    } else {
        ErrorKind::Invalid
    };
    Error::new(
        kind,
        errors
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>()
            .join("; "),
    )
}

/// Reads the ConfigMap and Secret keys `templateFrom` names, from the ExternalSecret's namespace.
async fn template_sources(
    es: &ExternalSecret,
    namespace: &str,
    reader: &dyn SecretReader,
) -> Result<TemplateSources> {
    let mut out = TemplateSources::default();
    let Some(tpl) = &es.spec.target.template else {
        return Ok(out);
    };
    for (i, from) in tpl.template_from.iter().enumerate() {
        let at = format!("spec.target.template.templateFrom[{i}]");
        if let Some(cm) = &from.config_map {
            for item in &cm.items {
                let v = reader
                    .config_map_key(namespace, &cm.name, &item.key)
                    .await
                    .map_err(|e| e.context(format!("{at}.configMap")))?;
                out.entries.insert(
                    (
                        TemplateSourceKind::ConfigMap,
                        cm.name.clone(),
                        item.key.clone(),
                    ),
                    v.into(),
                );
            }
        }
        if let Some(s) = &from.secret {
            for item in &s.items {
                let v = reader
                    .secret_key(namespace, &s.name, &item.key)
                    .await
                    .map_err(|e| e.context(format!("{at}.secret")))?;
                out.entries.insert(
                    (TemplateSourceKind::Secret, s.name.clone(), item.key.clone()),
                    v,
                );
            }
        }
    }
    Ok(out)
}
