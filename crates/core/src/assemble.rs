//! assemble: fetched bytes → the desired Secret. Pure: no I/O, exact bytes, unit-tested.
//!
//! Mirrors ESO's `GetProviderSecretData` + `ApplyTemplate`: `dataFrom` entries merge in order,
//! then `data` entries override; missing remote data is an error under `deletionPolicy:
//! Retain` and skipped otherwise; an empty result means Retain-nothing or Delete.

use std::collections::BTreeMap;

use crate::api::{
    CreationPolicy, DeletionPolicy, ExternalSecret, ExternalSecretRewrite, TemplateMergePolicy,
    TemplateScope, TemplateTarget,
};
use crate::convert::{self, MAX_VALUE_BYTES};
use crate::error::{Error, ErrorKind, Result};
use crate::provider::PropertyMode;
use crate::secret::{SecretBytes, SecretMap};
use crate::template;

/// What the fetch step produced for one `spec.data[]` entry: the raw value and how its
/// provider resolves `property`.
pub type FetchedValue = Result<(SecretBytes, PropertyMode)>;

/// What the fetch step produced for one `spec.dataFrom[]` entry.
#[derive(Debug)]
pub enum FetchedFrom {
    Extract(SecretBytes, PropertyMode),
    Find(SecretMap),
}

/// Everything fetched for one ExternalSecret, index-aligned with its spec.
#[derive(Debug, Default)]
pub struct Fetched {
    pub data: Vec<FetchedValue>,
    pub data_from: Vec<Result<FetchedFrom>>,
}

/// `templateFrom` sources, read before assembling: (kind, object name, key) → bytes.
#[derive(Debug, Default, Clone)]
pub struct TemplateSources {
    pub entries: BTreeMap<(TemplateSourceKind, String, String), SecretBytes>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TemplateSourceKind {
    ConfigMap,
    Secret,
}

/// The Secret an ExternalSecret wants, before ownership and bookkeeping metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredSecret {
    pub name: String,
    pub namespace: String,
    /// `None` leaves the type to the sink (`Opaque` for a new Secret).
    pub type_: Option<String>,
    pub data: BTreeMap<String, SecretBytes>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub finalizers: Vec<String>,
    pub immutable: bool,
}

/// What to do with the target Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Write(DesiredSecret),
    /// No remote data and `deletionPolicy: Delete`: delete the Secret (reason `SecretDeleted`).
    Delete {
        name: String,
    },
    /// No remote data and `deletionPolicy: Retain`: leave everything (`secret retained due to
    /// DeletionPolicy=Retain`).
    Retain {
        name: String,
    },
}

/// The target Secret's name: `target.name`, else the ExternalSecret's name.
pub fn target_name(es: &ExternalSecret) -> String {
    es.spec
        .target
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| es.metadata.name.clone().unwrap_or_default())
}

/// Step one: the provider data map (ESO's `GetProviderSecretData`).
pub fn provider_data(es: &ExternalSecret, fetched: &Fetched) -> Result<SecretMap> {
    let retain = es.spec.target.deletion_policy == DeletionPolicy::Retain;
    let mut out = SecretMap::new();
    for (i, entry) in es.spec.data_from.iter().enumerate() {
        let at = |what: &str| format!("error processing spec.dataFrom[{i}].{what}");
        let result = fetched
            .data_from
            .get(i)
            .ok_or_else(|| Error::invalid("internal: dataFrom entry was not fetched"))?;
        let (what, map) = match (result, &entry.extract, &entry.find) {
            (Err(e), _, _) => {
                let what = if entry.find.is_some() {
                    "find"
                } else {
                    "extract"
                };
                if e.is_not_found() && !retain {
                    continue;
                }
                return Err(e.clone().context(at(what)));
            }
            (Ok(FetchedFrom::Extract(raw, mode)), Some(r), _) => {
                let doc = match r.property.as_deref().filter(|p| !p.is_empty()) {
                    Some(p) => match convert::property(raw.expose(), p, *mode) {
                        Some(v) => SecretBytes::from(v),
                        None if retain => {
                            return Err(Error::not_found(format!(
                                "property {p} does not exist in key {}",
                                r.key
                            ))
                            .context(at("extract")));
                        }
                        None => continue,
                    },
                    None => raw.clone(),
                };
                if doc.len() > MAX_VALUE_BYTES {
                    return Err(Error::limit(format!(
                        "{}: key {}: a value of {} bytes exceeds the Kubernetes Secret limit of {MAX_VALUE_BYTES} bytes",
                        at("extract"),
                        r.key,
                        doc.len()
                    )));
                }
                let map = convert::json_to_map(doc.expose())
                    .map_err(|e| e.context(format!("key {}", r.key)))
                    .and_then(|m| {
                        finish_map(
                            m,
                            &entry.rewrite,
                            r.conversion_strategy,
                            r.decoding_strategy,
                            r.null_byte_policy,
                        )
                    })
                    .map_err(|e| e.context(at("extract")))?;
                ("extract", map)
            }
            (Ok(FetchedFrom::Find(found)), _, Some(f)) => {
                let map = finish_map(
                    found.clone(),
                    &entry.rewrite,
                    f.conversion_strategy,
                    f.decoding_strategy,
                    f.null_byte_policy,
                )
                .map_err(|e| e.context(at("find")))?;
                ("find", map)
            }
            _ => {
                return Err(Error::invalid(format!(
                    "spec.dataFrom[{i}]: one of extract or find is required (generators are not supported by refsync)"
                )));
            }
        };
        let _ = what;
        out.extend(map);
    }
    for (i, entry) in es.spec.data.iter().enumerate() {
        let r = &entry.remote_ref;
        let at = format!("error processing spec.data[{i}] (key: {})", r.key);
        let result = fetched
            .data
            .get(i)
            .ok_or_else(|| Error::invalid("internal: data entry was not fetched"))?;
        let value = match result {
            Err(e) if e.is_not_found() && !retain => continue,
            Err(e) => return Err(e.clone().context(at)),
            Ok((raw, mode)) => match r.property.as_deref().filter(|p| !p.is_empty()) {
                None => raw.expose().to_vec(),
                Some(p) => match convert::property(raw.expose(), p, *mode) {
                    Some(v) => v,
                    None if retain => {
                        return Err(
                            Error::not_found(format!("property {p} does not exist")).context(at)
                        );
                    }
                    None => continue,
                },
            },
        };
        let value = convert::decode(r.decoding_strategy, &value).map_err(|e| e.context(&at))?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(Error::limit(format!(
                "{at}: a value of {} bytes exceeds the Kubernetes Secret limit of {MAX_VALUE_BYTES} bytes",
                value.len()
            )));
        }
        check_null_bytes(r.null_byte_policy, &entry.secret_key, &value)
            .map_err(|e| e.context(&at))?;
        out.insert(entry.secret_key.clone(), SecretBytes::from(value));
    }
    Ok(out)
}

/// Rewrite (or convert keys), validate keys, decode, null-byte check: ESO's order for
/// `extract` and `find`.
fn finish_map(
    map: SecretMap,
    rewrite: &[ExternalSecretRewrite],
    conversion: Option<crate::api::ConversionStrategy>,
    decoding: Option<crate::api::DecodingStrategy>,
    nulls: Option<crate::api::NullBytePolicy>,
) -> Result<SecretMap> {
    let mut map = if rewrite.is_empty() {
        map.into_iter()
            .map(|(k, v)| (convert::convert_key(conversion, &k), v))
            .collect()
    } else {
        rewrite_map(rewrite, map)?
    };
    convert::validate_keys(&mut map)?;
    let mut out = SecretMap::new();
    for (k, v) in map {
        let decoded =
            convert::decode(decoding, v.expose()).map_err(|e| e.context(format!("key {k}")))?;
        check_null_bytes(nulls, &k, &decoded)?;
        out.insert(k, SecretBytes::from(decoded));
    }
    Ok(out)
}

fn check_null_bytes(
    policy: Option<crate::api::NullBytePolicy>,
    key: &str,
    value: &[u8],
) -> Result<()> {
    if policy == Some(crate::api::NullBytePolicy::Fail) && value.contains(&0) {
        return Err(Error::invalid(format!(
            "fetched secret value for key {key:?} contains null bytes; use a text-safe format such as PEM/base64 or leave nullBytePolicy unset for intentional binary data"
        )));
    }
    Ok(())
}

/// `rewrite[]`, in order: `regexp` (Go RE2 replacement syntax) or `transform` (a template over
/// `.value`, the key).
pub fn rewrite_map(ops: &[ExternalSecretRewrite], mut map: SecretMap) -> Result<SecretMap> {
    for (i, op) in ops.iter().enumerate() {
        let at = format!("failed rewrite operation[{i}]");
        map = match (&op.regexp, &op.transform, &op.merge) {
            (Some(re), _, _) => {
                let compiled = compile_regex(&re.source)
                    .map_err(|e| e.context(format!("{at}: regexp.source")))?;
                let target = go_replacement(&re.target);
                map.into_iter()
                    .map(|(k, v)| (compiled.replace_all(&k, target.as_str()).into_owned(), v))
                    .collect()
            }
            (None, Some(t), _) => {
                let mut out = SecretMap::new();
                for (k, v) in map {
                    let data = serde_json::json!({ "value": k });
                    let key =
                        template::render_json("transform", &t.template, &data).map_err(|e| {
                            Error::invalid(format!("{at}: transform failed for key {k:?}: {e}"))
                        })?;
                    let key = String::from_utf8(key).map_err(|_| {
                        Error::invalid(format!("{at}: transform produced a key that is not UTF-8"))
                    })?;
                    out.insert(key, v);
                }
                out
            }
            (None, None, Some(_)) => {
                return Err(Error::unsupported(format!(
                    "{at}: rewrite.merge is not supported by refsync yet"
                )));
            }
            (None, None, None) => map,
        };
    }
    Ok(map)
}

/// Compiles a user regexp with bounded size (RE2 semantics: linear time, no backtracking).
pub fn compile_regex(source: &str) -> Result<regex::Regex> {
    regex::RegexBuilder::new(source)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .map_err(|e| Error::invalid(format!("invalid regexp: {}", one_line(&e.to_string()))))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Go's `Regexp.ReplaceAllString` expands `$1`/`${1}`/`${name}` like Rust's `regex`, except
/// that Go treats `$name` greedily the same way; the syntaxes coincide, so the target is kept.
fn go_replacement(target: &str) -> String {
    target.to_string()
}

/// Step two: the Secret from the provider data (ESO's `ApplyTemplate` + deletion policy).
pub fn assemble(
    es: &ExternalSecret,
    data: SecretMap,
    sources: &TemplateSources,
) -> Result<Outcome> {
    let name = target_name(es);
    let target = &es.spec.target;
    if target.manifest.is_some() {
        return Err(Error::unsupported(
            "spec.target.manifest: non-Secret targets are not supported by refsync",
        ));
    }
    if data.is_empty() {
        match target.deletion_policy {
            DeletionPolicy::Delete => {
                if target.creation_policy != CreationPolicy::Owner {
                    return Err(Error::config(format!(
                        "unable to delete secret {name}: creationPolicy={:?} is not Owner",
                        target.creation_policy
                    )));
                }
                return Ok(Outcome::Delete { name });
            }
            DeletionPolicy::Retain => return Ok(Outcome::Retain { name }),
            DeletionPolicy::Merge => {}
        }
    }

    let mut desired = DesiredSecret {
        name,
        namespace: es.metadata.namespace.clone().unwrap_or_default(),
        type_: None,
        data: BTreeMap::new(),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        finalizers: Vec::new(),
        immutable: target.immutable.unwrap_or(false),
    };

    let Some(tpl) = &target.template else {
        desired.labels = es.metadata.labels.clone().unwrap_or_default();
        desired.annotations = es.metadata.annotations.clone().unwrap_or_default();
        desired.data = data;
        return check_size(desired, es);
    };

    if let Some(md) = &tpl.metadata {
        desired.labels = md.labels.clone().unwrap_or_default();
        desired.annotations = md.annotations.clone().unwrap_or_default();
        desired.finalizers = md.finalizers.clone().unwrap_or_default();
    }
    if let Some(t) = tpl.type_.as_ref().filter(|t| !t.is_empty()) {
        desired.type_ = Some(t.clone());
    }
    let tpl_data = tpl.data.as_ref().filter(|d| !d.is_empty());
    let no_template = tpl_data.is_none() && tpl.template_from.is_empty();
    if tpl.merge_policy == Some(TemplateMergePolicy::Merge) || no_template {
        desired
            .data
            .extend(data.iter().map(|(k, v)| (k.clone(), v.clone())));
    }

    let values: template::TemplateValues = data
        .iter()
        .map(|(k, v)| (k.clone(), v.expose().to_vec()))
        .collect();

    for (i, from) in tpl.template_from.iter().enumerate() {
        let at = format!("spec.target.template.templateFrom[{i}]");
        let target = from.target.unwrap_or_default();
        let decoding = from.values_decoding_strategy;
        for (kind, r) in [
            (TemplateSourceKind::ConfigMap, &from.config_map),
            (TemplateSourceKind::Secret, &from.secret),
        ] {
            let Some(r) = r else { continue };
            for item in &r.items {
                let src = sources
                    .entries
                    .get(&(kind, r.name.clone(), item.key.clone()))
                    .ok_or_else(|| {
                        Error::not_found(format!(
                            "{at}: {kind:?} {} has no key {}",
                            r.name, item.key
                        ))
                    })?;
                let text = std::str::from_utf8(src.expose()).map_err(|_| {
                    Error::invalid(format!(
                        "{at}: template {}/{} is not UTF-8",
                        r.name, item.key
                    ))
                })?;
                match item.template_as.unwrap_or_default() {
                    TemplateScope::Values => {
                        let out = render(&item.key, text, &values, &at)?;
                        apply(&mut desired, target, &item.key, out, decoding, &at)?;
                    }
                    TemplateScope::KeysAndValues => {
                        apply_keys_and_values(&mut desired, target, text, &values, decoding, &at)?;
                    }
                }
            }
        }
        if let Some(lit) = &from.literal {
            apply_keys_and_values(&mut desired, target, lit, &values, decoding, &at)?;
        }
    }
    if let Some(d) = tpl_data {
        for (k, src) in d {
            let at = format!("spec.target.template.data.{k}");
            let out = render(k, src, &values, &at)?;
            apply(&mut desired, TemplateTarget::Data, k, out, None, &at)?;
        }
    }
    if let Some(md) = &tpl.metadata {
        for (target, map) in [
            (TemplateTarget::Labels, &md.labels),
            (TemplateTarget::Annotations, &md.annotations),
        ] {
            for (k, src) in map.iter().flatten() {
                let at = format!(
                    "spec.target.template.metadata.{}.{k}",
                    if target == TemplateTarget::Labels {
                        "labels"
                    } else {
                        "annotations"
                    }
                );
                let out = render(k, src, &values, &at)?;
                apply(&mut desired, target, k, out, None, &at)?;
            }
        }
    }
    check_size(desired, es)
}

fn render(
    name: &str,
    source: &str,
    values: &template::TemplateValues,
    at: &str,
) -> Result<Vec<u8>> {
    template::render(name, source, values).map_err(|e| {
        let kind = if matches!(e, template::TemplateError::Limit { .. }) {
            ErrorKind::Limit
        } else {
            ErrorKind::Invalid
        };
        Error::new(kind, format!("{at}: {e}"))
    })
}

fn apply(
    desired: &mut DesiredSecret,
    target: TemplateTarget,
    key: &str,
    value: Vec<u8>,
    decoding: Option<crate::api::DecodingStrategy>,
    at: &str,
) -> Result<()> {
    let value = convert::decode(decoding, &value).map_err(|e| e.context(at))?;
    match target {
        TemplateTarget::Data => {
            desired
                .data
                .insert(key.to_string(), SecretBytes::from(value));
        }
        TemplateTarget::Labels | TemplateTarget::Annotations => {
            let text = String::from_utf8(value).map_err(|_| {
                Error::invalid(format!("{at}: rendered metadata value is not UTF-8"))
            })?;
            let map = if target == TemplateTarget::Labels {
                &mut desired.labels
            } else {
                &mut desired.annotations
            };
            map.insert(key.to_string(), text);
        }
    }
    Ok(())
}

/// `templateAs: KeysAndValues` and `literal`: the rendered text is a YAML map of key → value.
fn apply_keys_and_values(
    desired: &mut DesiredSecret,
    target: TemplateTarget,
    source: &str,
    values: &template::TemplateValues,
    decoding: Option<crate::api::DecodingStrategy>,
    at: &str,
) -> Result<()> {
    let out = render(source, source, values, at)?;
    let text = String::from_utf8(out)
        .map_err(|_| Error::invalid(format!("{at}: rendered template is not UTF-8")))?;
    let map: BTreeMap<String, String> = crate::manifest::yaml_from_str(&text).map_err(|_| {
        Error::invalid(format!(
            "{at}: could not unmarshal template to 'map[string][]byte'"
        ))
    })?;
    for (k, v) in map {
        apply(desired, target, &k, v.into_bytes(), decoding, at)?;
    }
    Ok(())
}

/// Labels and annotations the apiserver would refuse, named by the field they came from
/// (label values can be rendered from secret data: messages never quote them).
fn check_metadata(desired: &DesiredSecret, es: &ExternalSecret) -> Result<()> {
    let md = es
        .spec
        .target
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref());
    for (what, map, from_template) in [
        (
            "labels",
            &desired.labels,
            md.and_then(|m| m.labels.as_ref()),
        ),
        (
            "annotations",
            &desired.annotations,
            md.and_then(|m| m.annotations.as_ref()),
        ),
    ] {
        let field = |k: &str| {
            if from_template.is_some_and(|t| t.contains_key(k)) {
                format!("spec.target.template.metadata.{what}")
            } else if es.spec.target.template.is_some() {
                format!("spec.target.template.templateFrom ({what})")
            } else {
                format!("metadata.{what}")
            }
        };
        for (k, v) in map {
            if let Some(why) = convert::qualified_name_problem(k) {
                return Err(Error::invalid(format!(
                    "{}: key {:?} is not a valid {} key: {why}",
                    field(k),
                    convert::escape_controls(k),
                    &what[..what.len() - 1]
                )));
            }
            if what == "labels"
                && let Some(why) = convert::label_value_problem(v)
            {
                return Err(Error::invalid(format!(
                    "{}: the value of label {:?} {why}",
                    field(k),
                    convert::escape_controls(k)
                )));
            }
        }
    }
    let annotations: usize = desired
        .annotations
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if annotations > 256 * 1024 {
        return Err(Error::limit(format!(
            "annotations of Secret {} would take {annotations} bytes; the Kubernetes limit is 262144",
            desired.name
        )));
    }
    Ok(())
}

fn check_size(desired: DesiredSecret, es: &ExternalSecret) -> Result<Outcome> {
    check_metadata(&desired, es)?;
    let total: usize = desired.data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_VALUE_BYTES {
        return Err(Error::limit(format!(
            "Secret {} would hold {total} bytes; the Kubernetes limit is {MAX_VALUE_BYTES}",
            desired.name
        )));
    }
    for k in desired.data.keys() {
        convert::validate_key(k).map_err(|e| e.context("spec.target"))?;
    }
    Ok(Outcome::Write(desired))
}

#[cfg(test)]
mod hostile_tests {
    use super::*;

    fn es(spec: serde_json::Value) -> ExternalSecret {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": "app", "namespace": "ns"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn data() -> SecretMap {
        let mut m = SecretMap::new();
        m.insert("pass".into(), SecretBytes::from("canary-value"));
        m
    }

    #[test]
    fn rendered_labels_the_apiserver_would_refuse_are_errors_without_the_value() {
        let e = es(serde_json::json!({
            "secretStoreRef": {"name": "s"},
            "target": {"template": {"metadata": {"labels": {"leak": "{{ .pass }} !"}}}},
            "data": [{"secretKey": "pass", "remoteRef": {"key": "db"}}],
        }));
        let err = assemble(&e, data(), &TemplateSources::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.target.template.metadata.labels: the value of label \"leak\""),
            "{err}"
        );
        assert!(!err.contains("canary"), "{err}");
        let ok = es(serde_json::json!({
            "secretStoreRef": {"name": "s"},
            "target": {"template": {"metadata": {"labels": {"v": "{{ .pass }}"}}}},
            "data": [{"secretKey": "pass", "remoteRef": {"key": "db"}}],
        }));
        assert!(assemble(&ok, data(), &TemplateSources::default()).is_ok());
    }

    #[test]
    fn a_value_over_the_secret_limit_names_its_entry() {
        let e = es(serde_json::json!({
            "secretStoreRef": {"name": "s"},
            "data": [{"secretKey": "big", "remoteRef": {"key": "huge"}}],
        }));
        let fetched = Fetched {
            data: vec![Ok((
                SecretBytes::from(vec![b'a'; MAX_VALUE_BYTES + 1]),
                PropertyMode::Gjson,
            ))],
            data_from: Vec::new(),
        };
        let err = provider_data(&e, &fetched).unwrap_err().to_string();
        assert!(
            err.contains("spec.data[0] (key: huge): a value of 1048577 bytes exceeds"),
            "{err}"
        );
    }
}
