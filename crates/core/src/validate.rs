//! Offline validation of a manifest set: everything that can be known without calling a
//! provider or a cluster (`refsync validate`, and the checks a pull request should run).

use std::collections::BTreeMap;

use crate::api::{CreationPolicy, StoreKind};
use crate::engine::namespace_allowed;
use crate::manifest::ManifestSet;
use crate::plan;
use crate::provider::ProviderRegistry;

/// One problem, tied to the object and file it is in.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub file: String,
    pub message: String,
}

/// Validates every object of `set`. `registry` says which providers this binary has.
pub fn validate(set: &ManifestSet, registry: &ProviderRegistry) -> Vec<Finding> {
    let mut out = Vec::new();
    for e in &set.errors {
        out.push(Finding {
            kind: String::new(),
            namespace: String::new(),
            name: String::new(),
            file: e.origin.to_string(),
            message: e.message.clone(),
        });
    }
    for ((ns, name), store) in &set.secret_stores {
        if let Err(e) = registry.provider_key(&store.spec) {
            out.push(finding("SecretStore", ns, name, "", e.message));
        }
    }
    for (name, store) in &set.cluster_secret_stores {
        if let Err(e) = registry.provider_key(&store.spec.clone().into()) {
            out.push(finding("ClusterSecretStore", "", name, "", e.message));
        }
        for (i, c) in store.spec.conditions.iter().enumerate() {
            for (j, re) in c.namespace_regexes.iter().enumerate() {
                if let Err(e) = crate::assemble::compile_regex(re) {
                    out.push(finding(
                        "ClusterSecretStore",
                        "",
                        name,
                        "",
                        format!("spec.conditions[{i}].namespaceRegexes[{j}]: {}", e.message),
                    ));
                }
            }
        }
    }

    // Which ExternalSecret writes which Secret, to find two writing the same one.
    let mut targets: BTreeMap<(String, String), Vec<(String, String)>> = BTreeMap::new();
    for (es, origin) in set.all_external_secrets() {
        let ns = es.metadata.namespace.clone().unwrap_or_default();
        let name = es.metadata.name.clone().unwrap_or_default();
        let file = origin.to_string();
        let mut add =
            |message: String| out.push(finding("ExternalSecret", &ns, &name, &file, message));
        match plan::plan(&es) {
            Err(errors) => errors.into_iter().for_each(|e| add(e.message)),
            Ok(p) => {
                for store in p.stores() {
                    if let Some(message) = check_store(set, &store, &ns) {
                        add(message);
                    }
                }
            }
        }
        if !matches!(
            es.spec.target.creation_policy,
            CreationPolicy::None | CreationPolicy::Merge
        ) {
            targets
                .entry((ns.clone(), crate::assemble::target_name(&es)))
                .or_default()
                .push((name.clone(), file.clone()));
        }
    }
    for ((ns, secret), owners) in targets {
        if owners.len() > 1 {
            for (owner, file) in &owners {
                let others: Vec<&str> = owners
                    .iter()
                    .filter(|(o, _)| o != owner)
                    .map(|(o, _)| o.as_str())
                    .collect();
                out.push(finding(
                    "ExternalSecret",
                    &ns,
                    owner,
                    file,
                    format!(
                        "spec.target.name: Secret {ns}/{secret} is also written by {}",
                        others.join(", ")
                    ),
                ));
            }
        }
    }
    out.sort_by(|a, b| {
        (&a.file, &a.namespace, &a.name, &a.message).cmp(&(
            &b.file,
            &b.namespace,
            &b.name,
            &b.message,
        ))
    });
    out
}

fn finding(kind: &str, ns: &str, name: &str, file: &str, message: String) -> Finding {
    Finding {
        kind: kind.into(),
        namespace: ns.into(),
        name: name.into(),
        file: file.into(),
        message,
    }
}

/// Whether the store an ExternalSecret in `ns` names exists and admits it.
fn check_store(set: &ManifestSet, store: &plan::StoreName, ns: &str) -> Option<String> {
    match store.kind {
        StoreKind::SecretStore => {
            if set
                .secret_stores
                .contains_key(&(ns.to_string(), store.name.clone()))
            {
                return None;
            }
            let elsewhere: Vec<&str> = set
                .secret_stores
                .keys()
                .filter(|(_, n)| *n == store.name)
                .map(|(other, _)| other.as_str())
                .collect();
            Some(if elsewhere.is_empty() {
                format!(
                    "spec.secretStoreRef: SecretStore {ns}/{} not found",
                    store.name
                )
            } else {
                format!(
                    "spec.secretStoreRef: SecretStore {} exists only in namespace {}; a SecretStore is visible only from its own namespace (use a ClusterSecretStore to share it)",
                    store.name,
                    elsewhere.join(", ")
                )
            })
        }
        StoreKind::ClusterSecretStore => match set.cluster_secret_stores.get(&store.name) {
            None => Some(format!(
                "spec.secretStoreRef: ClusterSecretStore {} not found",
                store.name
            )),
            Some(css) => match namespace_allowed(&css.spec.conditions, ns, None) {
                Ok(true) => None,
                Ok(false)
                    if css
                        .spec
                        .conditions
                        .iter()
                        .any(|c| c.namespace_selector.is_some()) =>
                {
                    None
                }
                Ok(false) => Some(format!(
                    "spec.secretStoreRef: ClusterSecretStore {} does not allow namespace {ns} (spec.conditions)",
                    store.name
                )),
                Err(e) => Some(format!(
                    "spec.secretStoreRef: ClusterSecretStore {}: {}",
                    store.name, e.message
                )),
            },
        },
    }
}
