//! Reading manifests: multi-document YAML (or JSON) files from a directory into typed objects,
//! bounded against hostile input, with errors that name the file and document.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use base64::Engine;
use serde::de::DeserializeOwned;

use crate::api::{ClusterExternalSecret, ClusterSecretStore, ExternalSecret, SecretStore};
use crate::error::{Error, Result};
use crate::provider::SecretReader;
use crate::secret::{SecretBytes, SecretMap};

/// Largest manifest file read.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Most files read from one directory tree.
pub const MAX_FILES: usize = 20_000;

/// YAML parsing options: bounded depth, events and aliases (alias bombs fail fast); duplicate
/// keys: the last wins, as with the decoder kubectl uses.
fn yaml_options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::LastWins;
    let mut b = serde_saphyr::Budget::default();
    b.max_depth = 64;
    b.max_events = 2_000_000;
    b.max_aliases = 10_000;
    b.max_anchors = 10_000;
    b.max_nodes = 1_000_000;
    b.max_total_scalar_bytes = 64 * 1024 * 1024;
    b.max_recorded_anchor_events = 100_000;
    b.max_documents = 100_000;
    o.budget = Some(b);
    let mut a = o.alias_limits;
    a.max_total_replayed_events = 100_000;
    o.alias_limits = a;
    o
}

/// One YAML document into `T`, under the same bounds as manifests.
pub fn yaml_from_str<T: DeserializeOwned>(text: &str) -> std::result::Result<T, String> {
    serde_saphyr::from_str_with_options(text, yaml_options())
        .map_err(|e| first_line(&e.to_string()))
}

fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}

/// Where an object came from, for messages and annotations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    /// 0-based document index within the file.
    pub doc: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (document {})", self.file.display(), self.doc + 1)
    }
}

/// A document that could not be read; the rest of the set is still usable.
#[derive(Clone, Debug)]
pub struct ManifestError {
    pub origin: Origin,
    pub message: String,
}

/// Everything read from a manifest tree.
#[derive(Default)]
pub struct ManifestSet {
    pub external_secrets: Vec<(ExternalSecret, Origin)>,
    pub cluster_external_secrets: Vec<(ClusterExternalSecret, Origin)>,
    pub secret_stores: BTreeMap<(String, String), SecretStore>,
    pub cluster_secret_stores: BTreeMap<String, ClusterSecretStore>,
    secrets: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>,
    config_maps: BTreeMap<(String, String), BTreeMap<String, String>>,
    pub errors: Vec<ManifestError>,
}

impl std::fmt::Debug for ManifestSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestSet")
            .field("external_secrets", &self.external_secrets.len())
            .field("secret_stores", &self.secret_stores.len())
            .field("cluster_secret_stores", &self.cluster_secret_stores.len())
            .field("secrets", &self.secrets.len())
            .field("config_maps", &self.config_maps.len())
            .field("errors", &self.errors.len())
            .finish()
    }
}

impl ManifestSet {
    /// Reads every `.yaml`, `.yml` and `.json` file under `root` (hidden directories skipped).
    pub fn load_dir(root: &Path, default_namespace: &str) -> Result<ManifestSet> {
        let mut set = ManifestSet::default();
        let mut files = Vec::new();
        collect_files(root, &mut files)?;
        files.sort();
        for file in files {
            let origin = Origin {
                file: file.clone(),
                doc: 0,
            };
            let meta = std::fs::metadata(&file)
                .map_err(|e| Error::config(format!("{}: {e}", file.display())))?;
            if meta.len() > MAX_FILE_BYTES {
                set.errors.push(ManifestError {
                    origin,
                    message: format!(
                        "file is {} bytes; the limit is {MAX_FILE_BYTES}",
                        meta.len()
                    ),
                });
                continue;
            }
            match std::fs::read(&file) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => set.add_text(&text, &file, default_namespace),
                    Err(_) => set.errors.push(ManifestError {
                        origin,
                        message: "file is not UTF-8".into(),
                    }),
                },
                Err(e) => set.errors.push(ManifestError {
                    origin,
                    message: e.to_string(),
                }),
            }
        }
        Ok(set)
    }

    /// Adds the documents of one YAML stream.
    pub fn add_text(&mut self, text: &str, file: &Path, default_namespace: &str) {
        let docs: Vec<serde_json::Value> =
            match serde_saphyr::from_multiple_with_options(text, yaml_options()) {
                Ok(d) => d,
                Err(e) => {
                    self.errors.push(ManifestError {
                        origin: Origin {
                            file: file.to_path_buf(),
                            doc: 0,
                        },
                        message: format!("not valid YAML: {}", first_line(&e.to_string())),
                    });
                    return;
                }
            };
        for (i, doc) in docs.into_iter().enumerate() {
            let origin = Origin {
                file: file.to_path_buf(),
                doc: i,
            };
            if doc.is_null() {
                continue;
            }
            if doc.get("kind").and_then(|k| k.as_str()) == Some("List") {
                for item in doc
                    .get("items")
                    .and_then(|i| i.as_array())
                    .into_iter()
                    .flatten()
                {
                    self.add_object(item.clone(), &origin, default_namespace);
                }
                continue;
            }
            self.add_object(doc, &origin, default_namespace);
        }
    }

    fn add_object(&mut self, mut doc: serde_json::Value, origin: &Origin, default_namespace: &str) {
        normalize_metadata(&mut doc);
        let api = doc
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let kind = doc
            .get("kind")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let name = doc
            .pointer("/metadata/name")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let cluster_scoped = matches!(
            kind.as_str(),
            "ClusterSecretStore" | "ClusterExternalSecret"
        );
        if let Some(obj) = doc.get_mut("metadata").and_then(|m| m.as_object_mut())
            && !cluster_scoped
            && obj
                .get("namespace")
                .and_then(|n| n.as_str())
                .is_none_or(str::is_empty)
        {
            obj.insert("namespace".into(), default_namespace.into());
        }
        let ns = doc
            .pointer("/metadata/namespace")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        // The object as the other front ends name it: `Kind namespace/name` (cluster-scoped:
        // `Kind name`), control characters escaped.
        let what = crate::convert::escape_controls(&if cluster_scoped || ns.is_empty() {
            format!("{kind} {name}")
        } else {
            format!("{kind} {ns}/{name}")
        });
        let mut fail = |message: String| {
            self.errors.push(ManifestError {
                origin: origin.clone(),
                message: format!("{what}: {message}"),
            })
        };
        if name.is_empty() && !kind.is_empty() {
            fail("metadata.name is required (a non-empty string)".into());
            return;
        }
        let eso = api.starts_with("external-secrets.io/");
        // Names the apiserver would refuse: said here, on the field, for the kinds refsync reads.
        if eso || (api == "v1" && matches!(kind.as_str(), "Secret" | "ConfigMap")) {
            if let Some(why) = crate::convert::dns_subdomain_problem(&name) {
                fail(format!("metadata.name {why}"));
                return;
            }
            if !cluster_scoped && let Some(why) = crate::convert::dns_label_problem(&ns) {
                fail(format!("metadata.namespace {why}"));
                return;
            }
        }
        // v1beta1 has the same shape for everything refsync reads; ESO no longer serves it, but
        // manifests in git still use it.
        let api = if api == "external-secrets.io/v1beta1" {
            "external-secrets.io/v1".to_string()
        } else {
            api
        };
        match (eso, api.as_str(), kind.as_str()) {
            (true, "external-secrets.io/v1", "ExternalSecret") => {
                match typed::<ExternalSecret>(doc) {
                    Ok(es) => self.external_secrets.push((es, origin.clone())),
                    Err(e) => fail(e),
                }
            }
            (true, "external-secrets.io/v1", "ClusterExternalSecret") => {
                match typed::<ClusterExternalSecret>(doc) {
                    Ok(ces) => self.cluster_external_secrets.push((ces, origin.clone())),
                    Err(e) => fail(e),
                }
            }
            (true, "external-secrets.io/v1", "SecretStore") => match typed::<SecretStore>(doc) {
                Ok(s) => {
                    self.secret_stores.insert((ns, name), s);
                }
                Err(e) => fail(e),
            },
            (true, "external-secrets.io/v1", "ClusterSecretStore") => {
                match typed::<ClusterSecretStore>(doc) {
                    Ok(s) => {
                        self.cluster_secret_stores.insert(name, s);
                    }
                    Err(e) => fail(e),
                }
            }
            // Pushing is out of refsync's scope.
            (true, _, "PushSecret" | "ClusterPushSecret") => {}
            (true, _, _) => fail(format!(
                "apiVersion {api} is not served by refsync (use external-secrets.io/v1)"
            )),
            (false, "v1", "Secret") => match secret_data(&doc) {
                Ok(data) => {
                    self.secrets.insert((ns, name), data);
                }
                Err(e) => fail(e),
            },
            (false, "v1", "ConfigMap") => {
                let data = doc
                    .get("data")
                    .and_then(|d| {
                        serde_json::from_value::<BTreeMap<String, String>>(d.clone()).ok()
                    })
                    .unwrap_or_default();
                self.config_maps.insert((ns, name), data);
            }
            _ => {}
        }
    }

    /// The ExternalSecrets, including those a ClusterExternalSecret would create in the
    /// namespaces it lists (label selectors need a cluster and are not expanded offline).
    pub fn all_external_secrets(&self) -> Vec<(ExternalSecret, Origin)> {
        let mut out = self.external_secrets.clone();
        for (ces, origin) in &self.cluster_external_secrets {
            let name = ces
                .spec
                .external_secret_name
                .clone()
                .unwrap_or_else(|| ces.metadata.name.clone().unwrap_or_default());
            for ns in &ces.spec.namespaces {
                let mut es = ExternalSecret::new(&name, ces.spec.external_secret_spec.clone());
                es.metadata.namespace = Some(ns.clone());
                if let Some(md) = &ces.spec.external_secret_metadata {
                    es.metadata.labels = md.labels.clone();
                    es.metadata.annotations = md.annotations.clone();
                }
                out.push((es, origin.clone()));
            }
        }
        out
    }
}

fn typed<T: DeserializeOwned>(doc: serde_json::Value) -> std::result::Result<T, String> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde messages quote offending scalars; a manifest holds no secret values except in
        // Secrets, which are not parsed here.
        format!("invalid field {path}: {inner}")
    })
}

/// Labels and annotations must be strings; YAML writers often leave numbers and booleans bare
/// (`sha: 1234`). Kubernetes refuses those; refsync renders them as their text.
fn normalize_metadata(doc: &mut serde_json::Value) {
    for field in ["labels", "annotations"] {
        if let Some(map) = doc
            .pointer_mut(&format!("/metadata/{field}"))
            .and_then(|m| m.as_object_mut())
        {
            for v in map.values_mut() {
                match v {
                    serde_json::Value::Number(n) => *v = serde_json::Value::String(n.to_string()),
                    serde_json::Value::Bool(b) => *v = serde_json::Value::String(b.to_string()),
                    _ => {}
                }
            }
        }
    }
}

fn secret_data(doc: &serde_json::Value) -> std::result::Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    if let Some(data) = doc.get("data").and_then(|d| d.as_object()) {
        for (k, v) in data {
            let s = v
                .as_str()
                .ok_or_else(|| format!("data.{k} must be a base64 string"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .map_err(|_| format!("data.{k} is not valid base64"))?;
            out.insert(k.clone(), bytes);
        }
    }
    if let Some(data) = doc.get("stringData").and_then(|d| d.as_object()) {
        for (k, v) in data {
            let s = v
                .as_str()
                .ok_or_else(|| format!("stringData.{k} must be a string"))?;
            out.insert(k.clone(), s.as_bytes().to_vec());
        }
    }
    Ok(out)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if dir.is_file() {
        out.push(dir.to_path_buf());
        return Ok(());
    }
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::config(format!("{}: {e}", dir.display())))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        let Ok(ft) = entry.file_type() else { continue };
        if hidden || ft.is_symlink() {
            continue;
        }
        if ft.is_dir() {
            collect_files(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
        if out.len() > MAX_FILES {
            return Err(Error::limit(format!(
                "more than {MAX_FILES} manifest files under {}",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// In render mode, credentials and templates come from the manifests themselves.
#[async_trait]
impl SecretReader for ManifestSet {
    async fn secret_key(&self, namespace: &str, name: &str, key: &str) -> Result<SecretBytes> {
        let data = self
            .secrets
            .get(&(namespace.to_string(), name.to_string()))
            .ok_or_else(|| {
                Error::not_found(format!(
                    "Secret {namespace}/{name} not found in the manifests"
                ))
            })?;
        data.get(key)
            .map(|v| SecretBytes::from(v.clone()))
            .ok_or_else(|| Error::not_found(format!("Secret {namespace}/{name} has no key {key}")))
    }

    async fn secret_data(&self, namespace: &str, name: &str) -> Result<SecretMap> {
        let data = self
            .secrets
            .get(&(namespace.to_string(), name.to_string()))
            .ok_or_else(|| {
                Error::not_found(format!(
                    "Secret {namespace}/{name} not found in the manifests"
                ))
            })?;
        Ok(data
            .iter()
            .map(|(k, v)| (k.clone(), SecretBytes::from(v.clone())))
            .collect())
    }

    async fn config_map_key(&self, namespace: &str, name: &str, key: &str) -> Result<String> {
        let data = self
            .config_maps
            .get(&(namespace.to_string(), name.to_string()))
            .ok_or_else(|| {
                Error::not_found(format!(
                    "ConfigMap {namespace}/{name} not found in the manifests"
                ))
            })?;
        data.get(key).cloned().ok_or_else(|| {
            Error::not_found(format!("ConfigMap {namespace}/{name} has no key {key}"))
        })
    }
}

#[cfg(test)]
mod hostile_tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        let mut set = ManifestSet::default();
        set.add_text(text, Path::new("x.yaml"), "default");
        set.errors.into_iter().map(|e| e.message).collect()
    }

    #[test]
    fn errors_name_kind_namespace_and_name() {
        let e = errors(
            "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {name: app, namespace: team}\nspec: {refreshInterval: {a: 1}}\n",
        );
        assert!(
            e[0].starts_with("ExternalSecret team/app: invalid field spec.refreshInterval:"),
            "{e:?}"
        );
        let e = errors(
            "apiVersion: external-secrets.io/v1\nkind: ClusterSecretStore\nmetadata: {name: cs}\nspec: {provider: 1}\n",
        );
        assert!(
            e[0].starts_with("ClusterSecretStore cs: invalid field spec.provider"),
            "{e:?}"
        );
    }

    #[test]
    fn names_the_apiserver_would_refuse_are_errors() {
        let e = errors(&format!(
            "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {{name: {}, namespace: team}}\nspec: {{}}\n",
            "e".repeat(254)
        ));
        assert!(
            e[0].contains(": metadata.name must be no more than 253"),
            "{e:?}"
        );
        let e = errors(
            "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {name: app, namespace: Not_A_Label}\nspec: {}\n",
        );
        assert!(
            e[0].starts_with("ExternalSecret Not_A_Label/app: metadata.namespace must be"),
            "{e:?}"
        );
        // Control characters in names are escaped in messages.
        let e = errors(
            "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {name: \"a\\x1b[31m\", namespace: team}\nspec: {}\n",
        );
        assert!(!e[0].chars().any(char::is_control), "{e:?}");
        // Kinds refsync does not read keep whatever names they have.
        assert!(
            errors("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: Not_Valid}\n")
                .is_empty()
        );
    }
}
