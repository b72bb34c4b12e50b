#![forbid(unsafe_code)]
//! `spec.provider.gcpsm`: Google Cloud Secret Manager, through Google's official
//! `google-cloud-secretmanager-v1` client (REST/JSON) and `google-cloud-auth`.
//!
//! - Reads: `AccessSecretVersion` of `projects/P[/locations/L]/secrets/KEY/versions/V` (`latest`
//!   by default); `key` may also be a full resource name. The payload's CRC32C is checked.
//! - `metadataPolicy: Fetch`: `GetSecret`, returned as ESO does:
//!   `{"annotations":{..},"labels":{..}}` (an empty map is `null`, like Go's nil map).
//! - `find`: `ListSecrets` (every page) filtered by name regexp (and `name:PATH`) or by
//!   `labels.K=V` on the server, then one `AccessSecretVersion` per match.
//! - Endpoint: `GCP_SECRETMANAGER_ENDPOINT` if set (then nothing is sent to Google, see
//!   [`auth`]), else the regional endpoint `https://secretmanager.L.rep.googleapis.com` for a
//!   `location`, else Google's global endpoint.

mod auth;
mod errors;
mod names;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use google_cloud_secretmanager_v1::client::SecretManagerService;
use google_cloud_secretmanager_v1::model::AccessSecretVersionResponse;
use refsync_core::api::{GcpSmProvider, SecretStoreSpec};
use refsync_core::assemble::compile_regex;
use refsync_core::{
    CallObserver, Capabilities, Error, ErrorKind, FindRef, PropertyMode, Provider, ProviderFactory,
    RemoteRef, Result, SecretBytes, SecretMap, StoreContext,
};

/// ESO's provider name in `externalsecret_provider_api_calls_count`.
pub const METRICS_NAME: &str = "GCP/SecretManager";
/// Overrides the Secret Manager endpoint (tests, private endpoints): `http(s)://host[:port]`.
pub const ENDPOINT_ENV: &str = "GCP_SECRETMANAGER_ENDPOINT";
/// How many reads `find` and `get_secrets` run at once.
const CONCURRENCY: usize = 8;
/// A bound on list pages, so a misbehaving server cannot page forever.
const MAX_PAGES: usize = 10_000;

const ACCESS: &str = "AccessSecretVersion";
const GET_SECRET: &str = "GetSecret";
const LIST_SECRETS: &str = "ListSecrets";
const LIST_VERSIONS: &str = "ListSecretVersions";

/// Builds GCP Secret Manager providers from `spec.provider.gcpsm`.
pub struct GcpFactory;

#[async_trait]
impl ProviderFactory for GcpFactory {
    fn key(&self) -> &'static str {
        "gcpsm"
    }

    async fn build(&self, spec: &SecretStoreSpec, ctx: &StoreContext) -> Result<Arc<dyn Provider>> {
        let g = spec
            .provider
            .gcpsm
            .as_ref()
            .ok_or_else(|| Error::config("spec.provider.gcpsm is required"))?;
        let endpoint = std::env::var(ENDPOINT_ENV)
            .ok()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty());
        Ok(Arc::new(GcpSm::build(g, ctx, endpoint).await?))
    }
}

/// A configured Secret Manager client for one store.
pub struct GcpSm {
    client: SecretManagerService,
    project: String,
    location: Option<String>,
    latest_or_fetch: bool,
    auth: auth::Method,
    calls: Arc<dyn CallObserver>,
}

impl std::fmt::Debug for GcpSm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpSm")
            .field("project", &self.project)
            .field("location", &self.location)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl GcpSm {
    /// Builds the client once; `endpoint` overrides Google's (as `GCP_SECRETMANAGER_ENDPOINT`).
    pub async fn build(
        g: &GcpSmProvider,
        ctx: &StoreContext,
        endpoint: Option<String>,
    ) -> Result<GcpSm> {
        let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let project = nonempty(&g.project_id)
            .or_else(|| {
                g.auth
                    .as_ref()
                    .and_then(|a| a.workload_identity.as_ref())
                    .and_then(|w| nonempty(&w.cluster_project_id))
            })
            .ok_or_else(|| {
                Error::config(
                    "spec.provider.gcpsm.projectID is required (refsync does not ask the GKE metadata server for it)",
                )
            })?;
        if !names::is_project(&project) {
            return Err(Error::config(format!(
                "spec.provider.gcpsm.projectID {project:?} is not a project ID"
            )));
        }
        let location = nonempty(&g.location);
        if let Some(l) = &location
            && !names::is_location(l)
        {
            return Err(Error::config(format!(
                "spec.provider.gcpsm.location {l:?} is not a location"
            )));
        }
        let latest_or_fetch = match g.secret_version_selection_policy.as_deref() {
            None | Some("") | Some("LatestOrFail") => false,
            Some("LatestOrFetch") => true,
            Some(other) => {
                return Err(Error::config(format!(
                    "spec.provider.gcpsm.secretVersionSelectionPolicy {other:?} must be LatestOrFail or LatestOrFetch"
                )));
            }
        };
        if let Some(e) = &endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(Error::config(format!(
                "{ENDPOINT_ENV} {e:?} must be an http:// or https:// URL"
            )));
        }
        let (credentials, method) = auth::credentials(g, ctx, endpoint.is_some()).await?;
        let mut builder = SecretManagerService::builder().with_credentials(credentials);
        match (&endpoint, &location) {
            (Some(e), _) => builder = builder.with_endpoint(e.trim_end_matches('/')),
            (None, Some(l)) => {
                builder =
                    builder.with_endpoint(format!("https://secretmanager.{l}.rep.googleapis.com"))
            }
            (None, None) => {}
        }
        let client = builder.build().await.map_err(|e| {
            Error::config(format!(
                "spec.provider.gcpsm: cannot build the Secret Manager client: {e}"
            ))
        })?;
        Ok(GcpSm {
            client,
            project,
            location,
            latest_or_fetch,
            auth: method,
            calls: ctx.calls.clone(),
        })
    }

    fn parent(&self) -> String {
        names::parent(&self.project, self.location.as_deref())
    }

    fn fail(&self, err: &google_cloud_secretmanager_v1::Error, call: &str, what: &str) -> Error {
        errors::classify(err, call, what, self.auth.hint())
    }

    async fn access(&self, name: &str) -> Result<SecretBytes> {
        let got = self
            .client
            .access_secret_version()
            .set_name(name)
            .send()
            .await;
        self.calls.observe(METRICS_NAME, ACCESS, got.is_ok());
        let resp = got.map_err(|e| self.fail(&e, ACCESS, name))?;
        payload(resp, name)
    }

    async fn read(&self, r: &RemoteRef) -> Result<SecretBytes> {
        let t = names::resolve(
            &self.project,
            self.location.as_deref(),
            &r.key,
            r.version.as_deref(),
        )?;
        if r.metadata {
            return self.metadata(&t.secret).await;
        }
        let explicit = r.version.as_deref().is_some_and(|v| !v.is_empty()) || t.version != "latest";
        match self.access(&t.version_name()).await {
            Err(e) if self.latest_or_fetch && !explicit && is_disabled_or_destroyed(&e) => {
                self.latest_enabled(&t.secret).await
            }
            other => other,
        }
    }

    /// `secretVersionSelectionPolicy: LatestOrFetch`: the newest ENABLED version.
    async fn latest_enabled(&self, secret: &str) -> Result<SecretBytes> {
        let mut token = String::new();
        let mut best: Option<(i64, i32, String)> = None;
        let mut pages = 0usize;
        loop {
            let got = self
                .client
                .list_secret_versions()
                .set_parent(secret)
                .set_filter("state:ENABLED")
                .set_page_token(token.clone())
                .send()
                .await;
            self.calls.observe(METRICS_NAME, LIST_VERSIONS, got.is_ok());
            let page = got.map_err(|e| self.fail(&e, LIST_VERSIONS, secret))?;
            for v in page.versions {
                let at = v
                    .create_time
                    .map(|t| (t.seconds(), t.nanos()))
                    .unwrap_or_default();
                if best.as_ref().is_none_or(|(s, n, _)| at > (*s, *n)) {
                    best = Some((at.0, at.1, v.name));
                }
            }
            if page.next_page_token.is_empty() || page.next_page_token == token {
                break;
            }
            pages += 1;
            if pages >= MAX_PAGES {
                return Err(Error::limit(format!(
                    "{LIST_VERSIONS} {secret}: more than {MAX_PAGES} pages"
                )));
            }
            token = page.next_page_token;
        }
        let name = best
            .map(|(_, _, n)| n)
            .unwrap_or_else(|| format!("{secret}/versions/latest"));
        self.access(&name).await
    }

    async fn metadata(&self, secret: &str) -> Result<SecretBytes> {
        let got = self.client.get_secret().set_name(secret).send().await;
        self.calls.observe(METRICS_NAME, GET_SECRET, got.is_ok());
        let s = got.map_err(|e| self.fail(&e, GET_SECRET, secret))?;
        Ok(SecretBytes::new(metadata_json(&s.annotations, &s.labels)))
    }

    /// Every secret under the store's parent matching `filter`, by secret ID.
    async fn list(&self, filter: &str) -> Result<Vec<String>> {
        let parent = self.parent();
        let mut token = String::new();
        let mut ids = Vec::new();
        let mut pages = 0usize;
        loop {
            let got = self
                .client
                .list_secrets()
                .set_parent(&parent)
                .set_filter(filter)
                .set_page_token(token.clone())
                .send()
                .await;
            self.calls.observe(METRICS_NAME, LIST_SECRETS, got.is_ok());
            let page = got.map_err(|e| self.fail(&e, LIST_SECRETS, &parent))?;
            ids.extend(
                page.secrets
                    .into_iter()
                    .map(|s| names::secret_id(&s.name).to_string()),
            );
            if page.next_page_token.is_empty() || page.next_page_token == token {
                break;
            }
            pages += 1;
            if pages >= MAX_PAGES {
                return Err(Error::limit(format!(
                    "{LIST_SECRETS} {parent}: more than {MAX_PAGES} pages"
                )));
            }
            token = page.next_page_token;
        }
        Ok(ids)
    }
}

/// The payload of an access response, its CRC32C checked when the server sent one.
fn payload(resp: AccessSecretVersionResponse, name: &str) -> Result<SecretBytes> {
    let p = resp.payload.ok_or_else(|| {
        Error::transient(format!(
            "GCP Secret Manager {ACCESS} {name}: the response has no payload"
        ))
    })?;
    check_crc32c(&p.data, p.data_crc32c, name)?;
    Ok(SecretBytes::new(p.data.to_vec()))
}

fn check_crc32c(data: &[u8], want: Option<i64>, name: &str) -> Result<()> {
    if let Some(want) = want
        && i64::from(crc32c::crc32c(data)) != want
    {
        return Err(Error::transient(format!(
            "GCP Secret Manager {ACCESS} {name}: the payload's CRC32C does not match (corrupted in transit)"
        )));
    }
    Ok(())
}

fn is_disabled_or_destroyed(e: &Error) -> bool {
    e.kind == ErrorKind::Config
        && (e.message.contains("DISABLED state") || e.message.contains("DESTROYED state"))
}

/// ESO's metadata document: `{"annotations":{..},"labels":{..}}`, keys sorted, an empty map as
/// `null` (Go marshals a nil map so).
fn metadata_json(
    annotations: &HashMap<String, String>,
    labels: &HashMap<String, String>,
) -> Vec<u8> {
    let map = |m: &HashMap<String, String>| {
        if m.is_empty() {
            serde_json::Value::Null
        } else {
            let sorted: std::collections::BTreeMap<_, _> = m.iter().collect();
            serde_json::to_value(sorted).unwrap_or(serde_json::Value::Null)
        }
    };
    let doc = serde_json::json!({ "annotations": map(annotations), "labels": map(labels) });
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// The server-side filter for `find.tags` (and `find.path`), as ESO writes it.
fn tags_filter(f: &FindRef) -> String {
    let mut parts: Vec<String> = f
        .tags
        .iter()
        .map(|(k, v)| format!("labels.{k}={v}"))
        .collect();
    if let Some(p) = f.path.as_deref().filter(|p| !p.is_empty()) {
        parts.push(format!("name:{p}"));
    }
    parts.join(" ")
}

#[async_trait]
impl Provider for GcpSm {
    fn metrics_name(&self) -> &'static str {
        METRICS_NAME
    }

    async fn get_secret(&self, r: &RemoteRef) -> Result<SecretBytes> {
        self.read(r).await
    }

    /// Secret Manager has no batch read: the reads run concurrently, results in input order.
    async fn get_secrets(&self, refs: &[RemoteRef]) -> Vec<Result<SecretBytes>> {
        let reads: Vec<_> = refs.iter().map(|r| self.read(r)).collect();
        futures::stream::iter(reads)
            .buffered(CONCURRENCY)
            .collect()
            .await
    }

    async fn find(&self, f: &FindRef) -> Result<SecretMap> {
        let path = f.path.as_deref().filter(|p| !p.is_empty());
        // As ESO: a name regexp wins over tags.
        let ids: Vec<String> = if let Some(re) = &f.name_regexp {
            let re = compile_regex(re)?;
            let filter = path.map(|p| format!("name:{p}")).unwrap_or_default();
            self.list(&filter)
                .await?
                .into_iter()
                .filter(|id| re.is_match(id) && path.is_none_or(|p| id.starts_with(p)))
                .collect()
        } else if !f.tags.is_empty() {
            for (k, v) in &f.tags {
                let ok = |s: &str| {
                    s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                };
                if k.is_empty() || !ok(k) || !ok(v) {
                    return Err(Error::invalid(format!(
                        "find.tags {k:?}: GCP label keys and values are letters, digits, _ and -"
                    )));
                }
            }
            self.list(&tags_filter(f))
                .await?
                .into_iter()
                .filter(|id| path.is_none_or(|p| id.starts_with(p)))
                .collect()
        } else {
            return Err(Error::invalid("find: name.regexp or tags is required"));
        };
        let reads = futures::stream::iter(ids)
            .map(|id| async move {
                let name = format!("{}/secrets/{id}/versions/latest", self.parent());
                self.access(&name).await.map(|v| (id, v))
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        reads.into_iter().collect()
    }

    /// Reachable and the credentials accepted: one `ListSecrets` of one entry. PERMISSION_DENIED
    /// still proves the credentials work (a reader may lack `secrets.list`), so it passes.
    async fn validate(&self) -> Result<()> {
        let parent = self.parent();
        let got = self
            .client
            .list_secrets()
            .set_parent(&parent)
            .set_page_size(1)
            .send()
            .await;
        self.calls.observe(METRICS_NAME, LIST_SECRETS, got.is_ok());
        match got {
            Ok(_) => Ok(()),
            Err(e) => {
                let err = self.fail(&e, LIST_SECRETS, &parent);
                let denied = e.status().is_some_and(|s| {
                    s.code == google_cloud_gax::error::rpc::Code::PermissionDenied
                });
                if denied {
                    tracing::debug!(error = %err, "validate: credentials accepted, listing denied");
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    /// ESO's `getDataByProperty`: a dotted property is first tried as one literal key.
    fn property_mode(&self) -> PropertyMode {
        PropertyMode::EscapedDotsThenGjson
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ReadOnly
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_mismatch_is_transient() {
        let data = b"payload";
        let good = i64::from(crc32c::crc32c(data));
        assert!(check_crc32c(data, Some(good), "n").is_ok());
        assert!(check_crc32c(data, None, "n").is_ok());
        let e = check_crc32c(data, Some(good + 1), "n").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Transient);
        assert!(!e.message.contains("payload\""));
    }

    #[test]
    fn metadata_is_esos_shape() {
        let mut labels = HashMap::new();
        labels.insert("b".to_string(), "2".to_string());
        labels.insert("a".to_string(), "1".to_string());
        let doc = metadata_json(&HashMap::new(), &labels);
        assert_eq!(doc, br#"{"annotations":null,"labels":{"a":"1","b":"2"}}"#);
    }

    #[test]
    fn tags_filter_as_eso() {
        let mut f = FindRef::default();
        f.tags.insert("env".into(), "prod".into());
        f.tags.insert("team".into(), "a".into());
        assert_eq!(tags_filter(&f), "labels.env=prod labels.team=a");
        f.path = Some("db".into());
        assert_eq!(tags_filter(&f), "labels.env=prod labels.team=a name:db");
    }
}
