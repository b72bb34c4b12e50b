//! plan: one ExternalSecret → the remote reads it needs, per store, plus the validation
//! errors that name the object's field. Pure; `refsync validate` stops here.

use std::collections::BTreeSet;

use crate::api::{CreationPolicy, DeletionPolicy, ExternalSecret, SecretStoreRef, StoreKind};
use crate::assemble::compile_regex;
use crate::error::{Error, Result};
use crate::fetch::Read;
use crate::provider::{FindRef, RemoteRef};
use crate::template;

/// A store an ExternalSecret names: `(kind, name)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreName {
    pub kind: StoreKind,
    pub name: String,
}

impl std::fmt::Display for StoreName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// One read and the store it goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRead {
    pub store: StoreName,
    pub read: Read,
}

/// The reads of one ExternalSecret, index-aligned with `spec.data` and `spec.dataFrom`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncPlan {
    pub data: Vec<PlannedRead>,
    pub data_from: Vec<PlannedRead>,
}

impl SyncPlan {
    /// The distinct stores the plan reads from.
    pub fn stores(&self) -> BTreeSet<StoreName> {
        self.data
            .iter()
            .chain(&self.data_from)
            .map(|r| r.store.clone())
            .collect()
    }
}

fn store_name(r: &SecretStoreRef, field: &str) -> Result<StoreName> {
    let name = r
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::invalid(format!("{field}.name is required")))?;
    Ok(StoreName {
        kind: r.kind.unwrap_or_default(),
        name,
    })
}

/// The store an entry reads from: its own `sourceRef.storeRef`, else the ExternalSecret's.
fn entry_store(
    es: &ExternalSecret,
    source: Option<&crate::api::StoreSourceRef>,
    field: &str,
) -> Result<StoreName> {
    if let Some(src) = source {
        if src.generator_ref.is_some() {
            return Err(Error::unsupported(format!(
                "{field}.sourceRef.generatorRef: generators are not supported by refsync"
            )));
        }
        if let Some(r) = &src.store_ref {
            return store_name(r, &format!("{field}.sourceRef.storeRef"));
        }
    }
    match &es.spec.secret_store_ref {
        Some(r) => store_name(r, "spec.secretStoreRef"),
        None => Err(Error::invalid(format!(
            "spec.secretStoreRef is required ({field} has no sourceRef.storeRef)"
        ))),
    }
}

/// `property` paths are bounded (gjson recurses per path component).
fn check_property(
    r: &crate::api::ExternalSecretDataRemoteRef,
    field: &str,
    errors: &mut Vec<Error>,
) {
    if let Some(p) = &r.property
        && !crate::convert::property_within_limits(p)
    {
        errors.push(Error::limit(format!(
            "{field}.property: a path of {} bytes with more than {} components is not supported",
            p.len(),
            crate::convert::MAX_PROPERTY_COMPONENTS
        )));
    }
}

/// Plans an ExternalSecret, collecting every validation error (each names its field).
pub fn plan(es: &ExternalSecret) -> std::result::Result<SyncPlan, Vec<Error>> {
    let mut errors = Vec::new();
    let mut plan = SyncPlan::default();
    let spec = &es.spec;

    if let Some(ri) = &spec.refresh_interval
        && let Err(e) = crate::duration::parse_go_duration(ri)
    {
        errors.push(e.context("spec.refreshInterval"));
    }
    let t = &spec.target;
    if t.deletion_policy == DeletionPolicy::Delete && t.creation_policy == CreationPolicy::Merge {
        errors.push(Error::invalid(
            "spec.target: deletionPolicy=Delete must not be used when creationPolicy=Merge",
        ));
    }
    if t.deletion_policy == DeletionPolicy::Merge && t.creation_policy == CreationPolicy::None {
        errors.push(Error::invalid(
            "spec.target: deletionPolicy=Merge must not be used with creationPolicy=None (there is no Secret to merge into)",
        ));
    }
    if t.creation_policy == CreationPolicy::CreateOrMerge {
        errors.push(Error::unsupported(
            "spec.target.creationPolicy: CreateOrMerge is not supported by refsync yet",
        ));
    }
    if t.manifest.is_some() {
        errors.push(Error::unsupported(
            "spec.target.manifest: non-Secret targets are not supported by refsync",
        ));
    }
    // The Secret's name: the apiserver refuses anything but a DNS subdomain; say so here, on
    // the field that sets it, rather than as a write failure.
    let secret_name = crate::assemble::target_name(es);
    if !secret_name.is_empty()
        && let Some(why) = crate::convert::dns_subdomain_problem(&secret_name)
    {
        errors.push(Error::invalid(
            if t.name.as_deref().is_some_and(|n| !n.is_empty()) {
                format!("spec.target.name: Secret name {why}")
            } else {
                format!(
                    "metadata.name: the target Secret takes the ExternalSecret's name, which {why} \
                     (set spec.target.name)"
                )
            },
        ));
    }
    if spec.data.is_empty() && spec.data_from.is_empty() {
        errors.push(Error::invalid("spec: either data or dataFrom must be set"));
    }

    let mut keys = BTreeSet::new();
    for (i, d) in spec.data.iter().enumerate() {
        let field = format!("spec.data[{i}]");
        if d.secret_key.is_empty() {
            errors.push(Error::invalid(format!("{field}.secretKey is required")));
        } else if let Err(e) = crate::convert::validate_key(&d.secret_key) {
            errors.push(e.context(format!("{field}.secretKey")));
        }
        if !keys.insert(d.secret_key.clone()) {
            errors.push(Error::invalid(format!(
                "{field}.secretKey: duplicate secretKey {:?}",
                d.secret_key
            )));
        }
        if d.remote_ref.key.is_empty() {
            errors.push(Error::invalid(format!("{field}.remoteRef.key is required")));
        }
        check_property(&d.remote_ref, &format!("{field}.remoteRef"), &mut errors);
        match entry_store(es, d.source_ref.as_ref(), &field) {
            Ok(store) => plan.data.push(PlannedRead {
                store,
                read: Read::Get(RemoteRef::from_api(&d.remote_ref)),
            }),
            Err(e) => errors.push(e),
        }
    }
    for (i, d) in spec.data_from.iter().enumerate() {
        let field = format!("spec.dataFrom[{i}]");
        for (j, rw) in d.rewrite.iter().enumerate() {
            let at = format!("{field}.rewrite[{j}]");
            if let Some(re) = &rw.regexp
                && let Err(e) = compile_regex(&re.source)
            {
                errors.push(e.context(format!("{at}.regexp.source")));
            }
            if let Some(tr) = &rw.transform
                && let Err(e) = template::check("transform", &tr.template)
            {
                errors.push(Error::invalid(format!("{at}.transform.template: {e}")));
            }
            if rw.merge.is_some() {
                errors.push(Error::unsupported(format!(
                    "{at}.merge: rewrite.merge is not supported by refsync yet"
                )));
            }
        }
        let read = match (&d.extract, &d.find) {
            (Some(_), Some(_)) => {
                errors.push(Error::invalid(format!(
                    "{field}: extract and find are mutually exclusive"
                )));
                continue;
            }
            (Some(x), None) => {
                if x.key.is_empty() {
                    errors.push(Error::invalid(format!("{field}.extract.key is required")));
                }
                check_property(x, &format!("{field}.extract"), &mut errors);
                Read::Get(RemoteRef::from_api(x))
            }
            (None, Some(f)) => {
                let regexp = f
                    .name
                    .as_ref()
                    .and_then(|n| n.regexp.clone())
                    .filter(|r| !r.is_empty());
                if let Some(re) = &regexp
                    && let Err(e) = compile_regex(re)
                {
                    errors.push(e.context(format!("{field}.find.name.regexp")));
                }
                let tags = f.tags.clone().unwrap_or_default();
                if regexp.is_none()
                    && tags.is_empty()
                    && f.path.as_deref().is_none_or(str::is_empty)
                {
                    errors.push(Error::invalid(format!(
                        "{field}.find: one of name, tags or path is required"
                    )));
                }
                Read::Find(FindRef {
                    path: f.path.clone().filter(|p| !p.is_empty()),
                    name_regexp: regexp,
                    tags,
                })
            }
            (None, None) => {
                let generator = d
                    .source_ref
                    .as_ref()
                    .is_some_and(|s| s.generator_ref.is_some());
                errors.push(if generator {
                    Error::unsupported(format!(
                        "{field}.sourceRef.generatorRef: generators are not supported by refsync"
                    ))
                } else {
                    Error::invalid(format!("{field}: one of extract or find is required"))
                });
                continue;
            }
        };
        match entry_store(es, d.source_ref.as_ref(), &field) {
            Ok(store) => plan.data_from.push(PlannedRead { store, read }),
            Err(e) => errors.push(e),
        }
    }
    if let Some(tpl) = &t.template {
        if tpl.engine_version == Some(crate::api::TemplateEngineVersion::V1) {
            errors.push(Error::unsupported(
                "spec.target.template.engineVersion: v1 was removed from the External Secrets API; use v2",
            ));
        }
        for (k, src) in tpl.data.iter().flatten() {
            if let Err(e) = crate::convert::validate_key(k) {
                errors.push(e.context(format!(
                    "spec.target.template.data.{}",
                    crate::convert::escape_controls(k)
                )));
            }
            if let Err(e) = template::check(k, src) {
                errors.push(Error::invalid(format!(
                    "spec.target.template.data.{k}: {e}"
                )));
            }
        }
        if let Some(md) = &tpl.metadata {
            for (what, map) in [("labels", &md.labels), ("annotations", &md.annotations)] {
                for (k, src) in map.iter().flatten() {
                    if let Some(why) = crate::convert::qualified_name_problem(k) {
                        errors.push(Error::invalid(format!(
                            "spec.target.template.metadata.{what}: key {:?} is not a valid {} key: {why}",
                            crate::convert::escape_controls(k),
                            &what[..what.len() - 1]
                        )));
                    }
                    // A literal label value (no template action) is checked as written.
                    if what == "labels"
                        && !src.contains("{{")
                        && let Some(why) = crate::convert::label_value_problem(src)
                    {
                        errors.push(Error::invalid(format!(
                            "spec.target.template.metadata.labels.{k}: label value {why}"
                        )));
                    }
                    if let Err(e) = template::check(k, src) {
                        errors.push(Error::invalid(format!(
                            "spec.target.template.metadata.{what}.{k}: {e}"
                        )));
                    }
                }
            }
        }
        for (i, from) in tpl.template_from.iter().enumerate() {
            if let Some(lit) = &from.literal
                && let Err(e) = template::check("literal", lit)
            {
                errors.push(Error::invalid(format!(
                    "spec.target.template.templateFrom[{i}].literal: {e}"
                )));
            }
        }
    }
    if errors.is_empty() {
        Ok(plan)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod hostile_tests {
    use super::*;

    fn es(spec: serde_json::Value, name: &str) -> ExternalSecret {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn errors(spec: serde_json::Value, name: &str) -> Vec<String> {
        match plan(&es(spec, name)) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(|e| e.message.clone()).collect(),
        }
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "secretStoreRef": {"name": "s"},
            "data": [{"secretKey": "k", "remoteRef": {"key": "db"}}],
        })
    }

    #[test]
    fn target_names_the_apiserver_would_refuse_are_errors() {
        let mut spec = base();
        spec["target"] = serde_json::json!({"name": "Bad_Name!"});
        let e = errors(spec, "app");
        assert!(
            e[0].starts_with("spec.target.name: Secret name must be"),
            "{e:?}"
        );
        let mut spec = base();
        spec["target"] = serde_json::json!({"name": "a".repeat(254)});
        assert!(errors(spec, "app")[0].contains("no more than 253"));
        let e = errors(base(), &"e".repeat(254));
        assert!(
            e[0].starts_with("metadata.name: the target Secret"),
            "{e:?}"
        );
        assert!(errors(base(), "app").is_empty());
    }

    #[test]
    fn hostile_property_paths_and_static_template_keys() {
        let mut spec = base();
        spec["data"][0]["remoteRef"]["property"] = vec!["a"; 5000].join(".").into();
        let e = errors(spec, "app");
        assert!(
            e[0].starts_with("spec.data[0].remoteRef.property:"),
            "{e:?}"
        );
        let mut spec = base();
        spec["target"] = serde_json::json!({"template": {
            "data": {"bad key": "x"},
            "metadata": {"labels": {"bad key!": "x", "team": "v".repeat(64), "ok": "{{ .k }}"}},
        }});
        let e = errors(spec, "app").join("\n");
        assert!(
            e.contains("spec.target.template.data.bad key: key has invalid character"),
            "{e}"
        );
        assert!(
            e.contains(
                "spec.target.template.metadata.labels: key \"bad key!\" is not a valid label key"
            ),
            "{e}"
        );
        assert!(
            e.contains(
                "spec.target.template.metadata.labels.team: label value must be no more than 63"
            ),
            "{e}"
        );
    }
}
