//! Offline validation of a manifest set: everything that can be known without calling a
//! provider or a cluster (`refsync validate`, and the checks a pull request should run).

use std::collections::BTreeMap;

use crate::api::{
    ClusterExternalSecret, CreationPolicy, DeletionPolicy, ExternalSecret, ExternalSecretSpec,
    SecretStoreSpec, StoreKind, TemplateTarget,
};
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
        for message in check_store_spec(&store.spec, registry) {
            out.push(finding("SecretStore", ns, name, "", message));
        }
    }
    for (name, store) in &set.cluster_secret_stores {
        for message in check_store_spec(&store.spec.clone().into(), registry) {
            out.push(finding("ClusterSecretStore", "", name, "", message));
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
        admission_rules(&es.spec).into_iter().for_each(&mut add);
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

/// The admission webhook's checks of one ExternalSecret: every field error `plan` reports plus
/// ESO's admission-only rules. Each message starts with the field at fault; empty = admitted.
pub fn check_external_secret(es: &ExternalSecret) -> Vec<String> {
    let mut out = admission_rules(&es.spec);
    if let Err(errors) = plan::plan(es) {
        out.extend(errors.into_iter().map(|e| e.message));
    }
    out
}

/// The admission webhook's checks of a ClusterExternalSecret: its `externalSecretSpec` as an
/// ExternalSecret (fields renamed `spec.externalSecretSpec.…`), `refreshTime` and the
/// namespace selectors.
pub fn check_cluster_external_secret(ces: &ClusterExternalSecret) -> Vec<String> {
    let spec = &ces.spec;
    let name = spec
        .external_secret_name
        .clone()
        .or_else(|| ces.metadata.name.clone())
        .unwrap_or_default();
    let es = ExternalSecret::new(&name, spec.external_secret_spec.clone());
    let mut out: Vec<String> = check_external_secret(&es)
        .into_iter()
        .map(|m| reprefix(&m, "spec.externalSecretSpec"))
        .collect();
    if let Some(rt) = &spec.refresh_time
        && let Err(e) = crate::duration::parse_go_duration(rt)
    {
        out.push(format!("spec.refreshTime: {}", e.message));
    }
    let selectors = spec
        .namespace_selector
        .iter()
        .map(|s| ("spec.namespaceSelector".to_string(), s))
        .chain(
            spec.namespace_selectors
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("spec.namespaceSelectors[{i}]"), s)),
        );
    for (field, sel) in selectors {
        if let Err(e) = crate::selector::matches(sel, &BTreeMap::new()) {
            out.push(format!("{field}.{}", e.message));
        }
    }
    out
}

/// The admission webhook's checks of a SecretStore or ClusterSecretStore spec: exactly one
/// provider, one this binary implements (`registry`), and valid `conditions`.
pub fn check_store_spec(spec: &SecretStoreSpec, registry: &ProviderRegistry) -> Vec<String> {
    let mut out = Vec::new();
    if let Err(e) = registry.provider_key(spec) {
        out.push(e.message);
    }
    for (i, c) in spec.conditions.iter().enumerate() {
        for (j, re) in c.namespace_regexes.iter().enumerate() {
            if let Err(e) = crate::assemble::compile_regex(re) {
                out.push(format!(
                    "spec.conditions[{i}].namespaceRegexes[{j}]: {}",
                    e.message
                ));
            }
        }
        if let Some(sel) = &c.namespace_selector
            && let Err(e) = crate::selector::matches(sel, &BTreeMap::new())
        {
            out.push(format!(
                "spec.conditions[{i}].namespaceSelector.{}",
                e.message
            ));
        }
    }
    out
}

/// `spec…` → `<prefix>…` at the start of a message and after `(`, where our messages name
/// fields.
fn reprefix(message: &str, prefix: &str) -> String {
    let rest = message.strip_prefix("spec").unwrap_or(message);
    let head = if rest.len() < message.len() {
        format!("{prefix}{rest}")
    } else {
        message.to_string()
    };
    head.replace("(spec.", &format!("({prefix}."))
}

const SERVICE_ACCOUNT_TOKEN: &str = "kubernetes.io/service-account-token";
const SERVICE_ACCOUNT_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
const BOOTSTRAP_TOKEN: &str = "bootstrap.kubernetes.io/token";

/// ESO's admission rules that `plan` does not apply (plan reports what refsync cannot sync;
/// these refuse what ESO refuses at admission).
fn admission_rules(spec: &ExternalSecretSpec) -> Vec<String> {
    let mut out = Vec::new();
    let t = &spec.target;
    // Delete + Merge is reported by plan.
    if t.deletion_policy == DeletionPolicy::Delete
        && matches!(
            t.creation_policy,
            CreationPolicy::None | CreationPolicy::CreateOrMerge
        )
    {
        out.push(format!(
            "spec.target: deletionPolicy=Delete must not be used when creationPolicy={:?} (the controller does not own the Secret); set creationPolicy=Owner",
            t.creation_policy
        ));
    }
    // Templates that would mint credentials beyond the author's RBAC (ESO's
    // validatePrivilegedTemplate).
    if let Some(tpl) = &t.template {
        match tpl.type_.as_deref() {
            Some(SERVICE_ACCOUNT_TOKEN) => {
                let annotated = tpl
                    .metadata
                    .as_ref()
                    .and_then(|m| m.annotations.as_ref())
                    .is_some_and(|a| a.contains_key(SERVICE_ACCOUNT_NAME_ANNOTATION));
                if annotated {
                    out.push(format!(
                        "spec.target.template.metadata.annotations: template.type={SERVICE_ACCOUNT_TOKEN:?} with annotation {SERVICE_ACCOUNT_NAME_ANNOTATION:?} is not allowed"
                    ));
                }
                for (i, from) in tpl.template_from.iter().enumerate() {
                    if from.target == Some(TemplateTarget::Annotations) {
                        out.push(format!(
                            "spec.target.template.templateFrom[{i}].target: template.type={SERVICE_ACCOUNT_TOKEN:?} with templateFrom target=\"Annotations\" is not allowed"
                        ));
                    }
                }
            }
            Some(BOOTSTRAP_TOKEN) => out.push(format!(
                "spec.target.template.type: template.type={BOOTSTRAP_TOKEN:?} is not allowed"
            )),
            _ => {}
        }
    }
    for (i, d) in spec.data_from.iter().enumerate() {
        let Some(src) = &d.source_ref else { continue };
        if src.store_ref.is_none() && src.generator_ref.is_none() {
            out.push(format!(
                "spec.dataFrom[{i}].sourceRef: one of storeRef or generatorRef is required"
            ));
        }
        if src.generator_ref.is_some() && (d.extract.is_some() || d.find.is_some()) {
            out.push(format!(
                "spec.dataFrom[{i}]: extract, find and sourceRef.generatorRef are mutually exclusive"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::api::{ClusterSecretStore, SecretStore};
    use crate::manifest::yaml_from_str;
    use crate::provider::{Provider, ProviderFactory, StoreContext};

    struct Named(&'static str);

    #[async_trait::async_trait]
    impl ProviderFactory for Named {
        fn key(&self) -> &'static str {
            self.0
        }
        async fn build(
            &self,
            _: &SecretStoreSpec,
            _: &StoreContext,
        ) -> crate::Result<Arc<dyn Provider>> {
            Err(crate::Error::unsupported("test factory"))
        }
    }

    fn registry() -> ProviderRegistry {
        let mut r = ProviderRegistry::new();
        r.register(Arc::new(Named("fake")))
            .register(Arc::new(Named("vault")));
        r
    }

    fn es(spec: &str) -> ExternalSecret {
        let text = format!(
            "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {{name: x, namespace: ns}}\nspec:\n{spec}"
        );
        yaml_from_str(&text).expect("test manifest parses")
    }

    const STORE: &str = "  secretStoreRef: {name: s, kind: SecretStore}\n";

    fn one(errors: &[String], needle: &str) {
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "no error containing {needle:?} in {errors:#?}"
        );
    }

    #[test]
    fn a_good_external_secret_is_admitted() {
        let e = es(&format!(
            "{STORE}  target: {{creationPolicy: Owner, deletionPolicy: Delete}}\n  data:\n  - {{secretKey: a, remoteRef: {{key: k}}}}\n  dataFrom:\n  - find: {{name: {{regexp: '^db-.*'}}}}\n    rewrite:\n    - regexp: {{source: 'db-(.*)', target: '$1'}}\n    - transform: {{template: '{{{{ .value | upper }}}}'}}\n"
        ));
        assert_eq!(check_external_secret(&e), Vec::<String>::new());
    }

    #[test]
    fn policies_eso_refuses() {
        for (creation, deletion, needle) in [
            (
                "Merge",
                "Delete",
                "spec.target: deletionPolicy=Delete must not be used when creationPolicy=Merge",
            ),
            (
                "None",
                "Delete",
                "spec.target: deletionPolicy=Delete must not be used when creationPolicy=None",
            ),
            (
                "None",
                "Merge",
                "spec.target: deletionPolicy=Merge must not be used with creationPolicy=None",
            ),
        ] {
            let e = es(&format!(
                "{STORE}  target: {{creationPolicy: {creation}, deletionPolicy: {deletion}}}\n  data:\n  - {{secretKey: a, remoteRef: {{key: k}}}}\n"
            ));
            one(&check_external_secret(&e), needle);
        }
        for (creation, deletion) in [("Owner", "Delete"), ("Merge", "Merge"), ("None", "Retain")] {
            let e = es(&format!(
                "{STORE}  target: {{creationPolicy: {creation}, deletionPolicy: {deletion}}}\n  data:\n  - {{secretKey: a, remoteRef: {{key: k}}}}\n"
            ));
            assert_eq!(check_external_secret(&e), Vec::<String>::new());
        }
    }

    #[test]
    fn field_errors_name_the_field() {
        let e = es(&format!(
            "{STORE}  data:\n  - {{secretKey: a, remoteRef: {{key: k}}}}\n  - {{secretKey: a, remoteRef: {{key: k2}}}}\n  dataFrom:\n  - find: {{name: {{regexp: '(['}}}}\n  - extract: {{key: k}}\n    rewrite:\n    - regexp: {{source: '*x', target: y}}\n    - transform: {{template: '{{{{ .value '}}\n  target:\n    template:\n      data: {{bad: '{{{{ if }}}}'}}\n      templateFrom:\n      - literal: '{{{{ .a | nosuchfunction }}}}'\n"
        ));
        let errors = check_external_secret(&e);
        one(&errors, "spec.data[1].secretKey: duplicate secretKey \"a\"");
        one(&errors, "spec.dataFrom[0].find.name.regexp:");
        one(&errors, "spec.dataFrom[1].rewrite[0].regexp.source:");
        one(&errors, "spec.dataFrom[1].rewrite[1].transform.template:");
        one(&errors, "spec.target.template.data.bad:");
        one(&errors, "spec.target.template.templateFrom[0].literal:");
    }

    #[test]
    fn data_or_data_from_and_source_refs() {
        let e = es(STORE);
        one(
            &check_external_secret(&e),
            "spec: either data or dataFrom must be set",
        );
        let e = es(&format!(
            "{STORE}  dataFrom:\n  - extract: {{key: k}}\n    sourceRef: {{}}\n"
        ));
        one(
            &check_external_secret(&e),
            "spec.dataFrom[0].sourceRef: one of storeRef or generatorRef is required",
        );
    }

    #[test]
    fn privileged_templates_are_refused() {
        let e = es(&format!(
            "{STORE}  data:\n  - {{secretKey: a, remoteRef: {{key: k}}}}\n  target:\n    template:\n      type: kubernetes.io/service-account-token\n      metadata: {{annotations: {{kubernetes.io/service-account.name: admin}}}}\n      templateFrom:\n      - {{target: Annotations, literal: 'x: y'}}\n"
        ));
        let errors = check_external_secret(&e);
        one(&errors, "spec.target.template.metadata.annotations:");
        one(&errors, "spec.target.template.templateFrom[0].target:");
        let e = es(&format!(
            "{STORE}  data:\n  - {{secretKey: a, remoteRef: {{key: k}}}}\n  target:\n    template: {{type: bootstrap.kubernetes.io/token}}\n"
        ));
        one(&check_external_secret(&e), "spec.target.template.type:");
    }

    fn store(provider: &str) -> SecretStoreSpec {
        let s: SecretStore = yaml_from_str(&format!(
            "apiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata: {{name: s, namespace: ns}}\nspec:\n  provider: {provider}\n"
        ))
        .expect("store parses");
        s.spec
    }

    #[test]
    fn stores_need_exactly_one_supported_provider() {
        let r = registry();
        assert_eq!(
            check_store_spec(&store("{fake: {data: []}}"), &r),
            Vec::<String>::new()
        );
        one(
            &check_store_spec(&store("{}"), &r),
            "spec.provider: no provider is configured",
        );
        one(
            &check_store_spec(
                &store("{fake: {data: []}, vault: {server: 'http://x'}}"),
                &r,
            ),
            "spec.provider: exactly one provider must be configured, found vault, fake",
        );
        one(
            &check_store_spec(&store("{azurekv: {vaultUrl: 'https://x'}}"), &r),
            "spec.provider.azurekv: provider azurekv is not supported by refsync",
        );
        one(
            &check_store_spec(&store("{aws: {service: SecretsManager, region: x}}"), &r),
            "spec.provider.aws: provider aws is not supported by refsync",
        );
    }

    #[test]
    fn cluster_store_conditions() {
        let s: ClusterSecretStore = yaml_from_str(
            "apiVersion: external-secrets.io/v1\nkind: ClusterSecretStore\nmetadata: {name: s}\nspec:\n  provider: {fake: {data: []}}\n  conditions:\n  - namespaceRegexes: ['team-.*', '([']\n  - namespaceSelector: {matchExpressions: [{key: a, operator: Near}]}\n",
        )
        .expect("store parses");
        let errors = check_store_spec(&s.spec.into(), &registry());
        one(&errors, "spec.conditions[0].namespaceRegexes[1]:");
        one(
            &errors,
            "spec.conditions[1].namespaceSelector.matchExpressions[0].operator: unknown operator",
        );
    }

    #[test]
    fn cluster_external_secret_fields_are_renamed() {
        let ces: ClusterExternalSecret = yaml_from_str(
            "apiVersion: external-secrets.io/v1\nkind: ClusterExternalSecret\nmetadata: {name: c}\nspec:\n  refreshTime: 1x\n  namespaceSelectors:\n  - matchExpressions: [{key: a, operator: Near}]\n  externalSecretSpec:\n    secretStoreRef: {name: s, kind: ClusterSecretStore}\n    target: {creationPolicy: Merge, deletionPolicy: Delete}\n    data:\n    - {secretKey: a, remoteRef: {key: k}}\n    - {secretKey: a, remoteRef: {key: k}}\n",
        )
        .expect("ces parses");
        let errors = check_cluster_external_secret(&ces);
        one(
            &errors,
            "spec.externalSecretSpec.target: deletionPolicy=Delete",
        );
        one(
            &errors,
            "spec.externalSecretSpec.data[1].secretKey: duplicate secretKey",
        );
        one(&errors, "spec.refreshTime:");
        one(
            &errors,
            "spec.namespaceSelectors[0].matchExpressions[0].operator",
        );
        assert!(errors.iter().all(|e| !e.starts_with("spec.target")));
    }
}
