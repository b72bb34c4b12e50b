#![forbid(unsafe_code)]
//! `spec.provider.vault`: HashiCorp Vault and OpenBao, KV v1 and v2, with ESO's semantics.
//!
//! - Reads return the secret's whole data map as JSON (Go's `json.Marshal` layout, as ESO does);
//!   the engine applies `property` with [`PropertyMode::ExactKeyThenGjson`].
//! - Keys combine with the store `path` as ESO's `buildPath` (see [`paths`]).
//! - `metadataPolicy: Fetch` returns KV v2 metadata (`custom_metadata` plus `created_time`,
//!   `current_version`, `delete_version_after`) as a JSON object of strings.
//! - `find` LISTs the mount recursively below `find.path` and matches names by regexp or
//!   `custom_metadata` by tags, like ESO's `GetAllSecrets`.
//! - Tokens are obtained once, cached, renewed (renewable tokens) or re-obtained before they
//!   expire, and re-obtained when Vault says the cached one is no longer valid.
//!
//! Built on reqwest (the workspace's 0.12) rather than `vaultrs` 0.8: vaultrs keeps one token
//! and namespace in a client that needs `&mut` to change them, has no `X-Vault-Index` tracking,
//! and would add reqwest 0.13 and rustify to the build; the few Vault endpoints used here are
//! plain JSON over HTTP.

mod auth;
mod http;
pub mod paths;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use futures::StreamExt as _;
use refsync_core::api::{
    CaProviderType, SecretStoreSpec, StoreKind, VaultKvVersion, VaultProvider,
};
use refsync_core::assemble::compile_regex;
use refsync_core::{
    Error, FindRef, PropertyMode, Provider, ProviderFactory, RemoteRef, Result, SecretBytes,
    SecretMap, StoreContext,
};
use reqwest::Method;
use reqwest::header::HeaderValue;

use crate::auth::{AuthMethod, Login};
use crate::http::{Http, HttpConfig, Response};
use crate::paths::{KvVersion, data_path, go_json, go_string, metadata_path};

/// ESO's metrics provider label.
pub const METRICS_NAME: &str = "HashiCorp/Vault";

/// Concurrent reads during `find` and `get_secrets`.
const FIND_CONCURRENCY: usize = 8;
/// Upper bound on the number of entries a `find` LISTs.
const FIND_MAX_ENTRIES: usize = 100_000;

/// Builds Vault providers from `spec.provider.vault`.
pub struct VaultFactory;

#[async_trait]
impl ProviderFactory for VaultFactory {
    fn key(&self) -> &'static str {
        "vault"
    }

    async fn build(&self, spec: &SecretStoreSpec, ctx: &StoreContext) -> Result<Arc<dyn Provider>> {
        let vault = spec
            .provider
            .vault
            .as_ref()
            .ok_or_else(|| Error::config("spec.provider.vault is required"))?;
        Ok(Arc::new(Vault::new(vault, ctx).await?))
    }
}

/// A cached token and when to refresh it.
struct Cached {
    token: SecretBytes,
    /// `None`: never (non-expiring tokens, tokens from a Secret).
    refresh_at: Option<Instant>,
    renewable: bool,
    /// The lease the last login granted; a renewal that grants much less (near `max_ttl`) is
    /// replaced by a new login.
    login_lease: Duration,
    from_login: bool,
}

impl Cached {
    fn new(l: Login, login_lease: Duration) -> Self {
        Cached {
            refresh_at: refresh_at(l.lease),
            token: l.token,
            renewable: l.renewable,
            login_lease,
            from_login: l.from_login,
        }
    }
}

/// When to refresh a token with `lease`: a third of the lease before it ends (at least a minute
/// before for leases over two minutes, half-way for shorter ones).
fn refresh_at(lease: Duration) -> Option<Instant> {
    if lease.is_zero() {
        return None;
    }
    let margin = (lease / 3).max(Duration::from_secs(60).min(lease / 2));
    Some(Instant::now() + lease - margin)
}

/// A Vault store.
pub struct Vault {
    http: Http,
    mount: Option<String>,
    version: KvVersion,
    auth: AuthMethod,
    /// Namespace for logins and token calls (`auth.namespace`, else `namespace`).
    auth_namespace: Option<HeaderValue>,
    ctx: StoreContext,
    token: tokio::sync::Mutex<Option<Cached>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("mount", &self.mount)
            .field("version", &self.version)
            .field("auth", &self.auth.name())
            .finish_non_exhaustive()
    }
}

fn namespace_header(ns: Option<&str>, field: &str) -> Result<Option<HeaderValue>> {
    match ns.map(str::trim).filter(|n| !n.is_empty()) {
        None => Ok(None),
        Some(n) => HeaderValue::from_str(n)
            .map(Some)
            .map_err(|_| Error::config(format!("{field}: {n:?} is not a valid namespace"))),
    }
}

impl Vault {
    /// Checks the spec and builds the HTTP client (reading CA and client certificates); logs in
    /// lazily, on first use.
    pub async fn new(spec: &VaultProvider, ctx: &StoreContext) -> Result<Self> {
        const F: &str = "spec.provider.vault";
        let server = spec.server.trim();
        if server.is_empty() {
            return Err(Error::config(format!("{F}.server is required")));
        }
        let url = reqwest::Url::parse(server).map_err(|e| {
            Error::config(format!("{F}.server: {server:?} is not a valid URL: {e}"))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(Error::config(format!(
                "{F}.server: {server:?} must be an http(s):// address"
            )));
        }
        let mount = spec
            .path
            .as_deref()
            .map(|p| p.trim().trim_matches('/'))
            .filter(|p| !p.is_empty());
        if let Some(m) = mount
            && m.split('/').any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(Error::config(format!(
                "{F}.path: {m:?} is not a valid mount path"
            )));
        }
        let version = match spec.version.unwrap_or_default() {
            VaultKvVersion::V1 => KvVersion::V1,
            VaultKvVersion::V2 => KvVersion::V2,
        };
        let namespace = namespace_header(spec.namespace.as_deref(), &format!("{F}.namespace"))?;
        let auth_spec = spec.auth.as_ref();
        let auth_namespace = match auth_spec.and_then(|a| a.namespace.as_deref()) {
            Some(n) => namespace_header(Some(n), &format!("{F}.auth.namespace"))?,
            None => namespace.clone(),
        };
        let auth = AuthMethod::from_spec(auth_spec)?;

        let mut headers = http::parse_headers(&spec.headers.clone().unwrap_or_default())?;
        let read_your_writes = spec.read_your_writes.unwrap_or(false);
        let forward = spec.forward_inconsistent.unwrap_or(false);
        if read_your_writes && forward {
            headers.insert(
                "x-vault-inconsistent",
                HeaderValue::from_static("forward-active-node"),
            );
        }

        let roots = ca_roots(spec, ctx).await?;
        let identity = match auth_spec.and_then(|a| a.cert.as_ref()) {
            Some(c) if matches!(auth, AuthMethod::Cert { .. }) => {
                let cert = c.client_cert.as_ref().ok_or_else(|| {
                    Error::config(format!("{F}.auth.cert.clientCert is required"))
                })?;
                let key = c
                    .secret_ref
                    .as_ref()
                    .ok_or_else(|| Error::config(format!("{F}.auth.cert.secretRef is required")))?;
                let cert = ctx
                    .read_selector(cert, &format!("{F}.auth.cert.clientCert"))
                    .await?;
                let key = ctx
                    .read_selector(key, &format!("{F}.auth.cert.secretRef"))
                    .await?;
                Some(identity(&cert, &key, &format!("{F}.auth.cert"))?)
            }
            _ => client_tls(spec, ctx).await?,
        };
        let http = Http::new(HttpConfig {
            server: server.to_string(),
            namespace,
            headers,
            read_your_writes: read_your_writes || forward,
            roots,
            identity,
        })?;
        Ok(Vault {
            http,
            mount: mount.map(str::to_string),
            version,
            auth,
            auth_namespace,
            ctx: ctx.clone(),
            token: tokio::sync::Mutex::new(None),
        })
    }

    fn observe(&self, call: &'static str, ok: bool) {
        self.ctx.calls.observe(METRICS_NAME, call, ok);
    }

    /// The current token: cached, renewed or obtained anew.
    async fn current_token(&self) -> Result<Option<SecretBytes>> {
        if matches!(self.auth, AuthMethod::None) {
            return Ok(None);
        }
        let mut guard = self.token.lock().await;
        if let Some(c) = guard.as_ref() {
            if c.refresh_at.is_none_or(|t| Instant::now() < t) {
                return Ok(Some(c.token.clone()));
            }
            if c.renewable
                && let Some(renewed) = self.renew(&c.token).await
                && renewed.lease * 3 >= c.login_lease * 2
            {
                let login_lease = c.login_lease;
                let c = guard.insert(Cached::new(renewed, login_lease));
                return Ok(Some(c.token.clone()));
            }
        }
        *guard = None;
        let login = self
            .auth
            .login(&self.http, self.auth_namespace.as_ref(), &self.ctx)
            .await?;
        match login {
            None => Ok(None),
            Some(l) => {
                let lease = l.lease;
                let c = guard.insert(Cached::new(l, lease));
                Ok(Some(c.token.clone()))
            }
        }
    }

    /// `auth/token/renew-self`; `None` if it did not work (a new login follows).
    async fn renew(&self, token: &SecretBytes) -> Option<Login> {
        let resp = self
            .http
            .send(
                Method::POST,
                "auth/token/renew-self",
                &[],
                Some(token),
                self.auth_namespace.as_ref(),
                None,
            )
            .await;
        let ok = resp.as_ref().is_ok_and(Response::ok);
        self.observe("RenewSelf", ok);
        if !ok {
            return None;
        }
        let mut l = auth::parse_auth(resp.ok()?.body.as_ref()).ok()?;
        l.from_login = true;
        Some(l)
    }

    /// Forgets `token` if it is still the cached one.
    async fn invalidate(&self, token: &SecretBytes) {
        let mut guard = self.token.lock().await;
        if guard.as_ref().is_some_and(|c| c.token == *token) {
            *guard = None;
        }
    }

    /// `auth/token/lookup-self`.
    async fn lookup_self(&self, token: &SecretBytes) -> Result<Response> {
        let resp = self
            .http
            .send(
                Method::GET,
                "auth/token/lookup-self",
                &[],
                Some(token),
                self.auth_namespace.as_ref(),
                None,
            )
            .await;
        self.observe("LookupSelf", resp.as_ref().is_ok_and(Response::ok));
        resp
    }

    /// An authenticated request for secret data. On 403, if Vault no longer knows the cached
    /// token (revoked, expired early), obtains a new one and tries once more.
    async fn call(
        &self,
        path: &str,
        query: &[(&str, &str)],
        call: &'static str,
    ) -> Result<Response> {
        let path = encode_path(path)?;
        let token = self.current_token().await?;
        let resp = self
            .send_observed(&path, query, token.as_ref(), call)
            .await?;
        if resp.status.as_u16() != 403 {
            return Ok(resp);
        }
        let Some(token) = token else { return Ok(resp) };
        let still_valid = self.lookup_self(&token).await.is_ok_and(|r| r.ok());
        if still_valid {
            return Ok(resp);
        }
        self.invalidate(&token).await;
        let fresh = self.current_token().await?;
        if fresh.as_ref() == Some(&token) {
            return Ok(resp);
        }
        self.send_observed(&path, query, fresh.as_ref(), call).await
    }

    async fn send_observed(
        &self,
        path: &str,
        query: &[(&str, &str)],
        token: Option<&SecretBytes>,
        call: &'static str,
    ) -> Result<Response> {
        let resp = self
            .http
            .send(
                Method::GET,
                path,
                query,
                token,
                self.http.namespace.as_ref(),
                None,
            )
            .await;
        // As ESO (the Vault Go client returns no error for a 404).
        self.observe(
            call,
            resp.as_ref()
                .is_ok_and(|r| r.ok() || r.status.as_u16() == 404),
        );
        resp
    }

    /// The data map of a key (KV v2: `data.data`), or NotFound.
    async fn read_data(&self, key: &str, version: Option<&str>) -> Result<serde_json::Value> {
        let path = data_path(self.mount.as_deref(), self.version, key);
        let query: Vec<(&str, &str)> = version.map(|v| ("version", v)).into_iter().collect();
        let resp = self.call(&path, &query, "ReadSecretData").await?;
        let what = match version {
            Some(v) => format!("secret {key:?} version {v} (at {path})"),
            None => format!("secret {key:?} (at {path})"),
        };
        if resp.status.as_u16() == 404 {
            return Err(Error::not_found(format!("vault: {what} not found")));
        }
        if !resp.ok() {
            return Err(resp.error(&format!("read {what}")));
        }
        let data = resp.body.as_ref().and_then(|b| b.get("data"));
        let data = match self.version {
            KvVersion::V2 => {
                let d = data.and_then(|d| d.get("data")).ok_or_else(|| {
                    Error::transient(format!("vault: read {what}: failed to find data field"))
                })?;
                if d.is_null() {
                    return Err(Error::not_found(format!(
                        "vault: {what} has no data (deleted or destroyed)"
                    )));
                }
                d
            }
            KvVersion::V1 => {
                data.ok_or_else(|| Error::not_found(format!("vault: {what} has no data")))?
            }
        };
        if !data.is_object() {
            return Err(Error::transient(format!(
                "vault: read {what}: the data is not a JSON object"
            )));
        }
        Ok(data.clone())
    }

    /// KV v2 metadata of a key as ESO's `readSecretMetadata`: system keys and custom_metadata.
    async fn read_metadata(&self, key: &str) -> Result<serde_json::Map<String, serde_json::Value>> {
        if self.version == KvVersion::V1 {
            return Err(Error::unsupported(
                "vault: cannot perform metadata fetch operations with kv version v1",
            ));
        }
        let path = metadata_path(self.mount.as_deref(), self.version, key);
        let resp = self.call(&path, &[], "ReadSecretData").await?;
        if resp.status.as_u16() == 404 {
            return Err(Error::not_found(format!(
                "vault: metadata of secret {key:?} (at {path}) not found"
            )));
        }
        if !resp.ok() {
            return Err(resp.error(&format!("read metadata of {key:?} (at {path})")));
        }
        let data = resp.body.as_ref().and_then(|b| b.get("data"));
        let mut out = serde_json::Map::new();
        for k in ["created_time", "current_version", "delete_version_after"] {
            if let Some(v) = data.and_then(|d| d.get(k)).filter(|v| !v.is_null()) {
                out.insert(k.to_string(), serde_json::Value::String(go_string(v)));
            }
        }
        if let Some(custom) = data
            .and_then(|d| d.get("custom_metadata"))
            .and_then(|c| c.as_object())
        {
            for (k, v) in custom {
                out.insert(k.clone(), serde_json::Value::String(go_string(v)));
            }
        }
        Ok(out)
    }

    /// Every secret name below `dir` (`""` or ending in `/`), relative to the mount.
    async fn list(&self, mount: &str, dir: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_string()];
        while let Some(d) = stack.pop() {
            let path = metadata_path(Some(mount), self.version, &d);
            let resp = self.call(&path, &[("list", "true")], "ListSecrets").await?;
            if resp.status.as_u16() == 404 {
                continue;
            }
            if !resp.ok() {
                return Err(resp.error(&format!("list {path}")));
            }
            let keys = resp
                .body
                .as_ref()
                .and_then(|b| b.pointer("/data/keys"))
                .and_then(|k| k.as_array())
                .cloned()
                .unwrap_or_default();
            for k in keys.iter().filter_map(|k| k.as_str()) {
                let full = format!("{d}{k}");
                if k.ends_with('/') {
                    stack.push(full);
                } else {
                    out.push(full);
                }
                if out.len() + stack.len() > FIND_MAX_ENTRIES {
                    return Err(Error::limit(format!(
                        "vault: find below {mount}/{dir} lists more than {FIND_MAX_ENTRIES} entries"
                    )));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Percent-encodes each segment of a Vault path; `.`/`..` segments are refused.
fn encode_path(path: &str) -> Result<String> {
    let mut out = String::with_capacity(path.len());
    for (i, seg) in path.split('/').enumerate() {
        if seg == "." || seg == ".." {
            return Err(Error::invalid(format!(
                "vault: path {path:?} must not contain `.` or `..` segments"
            )));
        }
        if i > 0 {
            out.push('/');
        }
        for b in seg.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    Ok(out)
}

fn pem_roots(pem: &[u8], field: &str) -> Result<Vec<reqwest::Certificate>> {
    let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
        Error::config(format!(
            "{field}: cannot parse the CA certificates: {}",
            http::describe(&e)
        ))
    })?;
    if certs.is_empty() {
        return Err(Error::config(format!("{field}: no PEM certificate found")));
    }
    Ok(certs)
}

async fn ca_roots(spec: &VaultProvider, ctx: &StoreContext) -> Result<Vec<reqwest::Certificate>> {
    const F: &str = "spec.provider.vault";
    let mut roots = Vec::new();
    if let Some(b) = spec
        .ca_bundle
        .as_deref()
        .map(str::trim)
        .filter(|b| !b.is_empty())
    {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|_| {
                Error::config(format!(
                    "{F}.caBundle: not valid base64 (it holds a base64-encoded PEM bundle)"
                ))
            })?;
        roots.extend(pem_roots(&pem, &format!("{F}.caBundle"))?);
    }
    if let Some(p) = &spec.ca_provider {
        let field = format!("{F}.caProvider");
        let key = p
            .key
            .as_deref()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| Error::config(format!("{field}.key is required")))?;
        if p.name.is_empty() {
            return Err(Error::config(format!("{field}.name is required")));
        }
        let ns = match ctx.kind {
            StoreKind::ClusterSecretStore => p
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| {
                    Error::config(format!(
                        "{field}.namespace is required for a ClusterSecretStore"
                    ))
                })?,
            StoreKind::SecretStore => ctx.namespace.clone(),
        };
        let pem = match p.type_ {
            CaProviderType::Secret => ctx
                .reader
                .secret_key(&ns, &p.name, key)
                .await
                .map_err(|e| e.context(&field))?
                .into_vec(),
            CaProviderType::ConfigMap => ctx
                .reader
                .config_map_key(&ns, &p.name, key)
                .await
                .map_err(|e| e.context(&field))?
                .into_bytes(),
        };
        roots.extend(pem_roots(&pem, &field)?);
    }
    Ok(roots)
}

fn identity(cert: &SecretBytes, key: &SecretBytes, field: &str) -> Result<reqwest::Identity> {
    let mut pem = Vec::with_capacity(cert.len() + key.len() + 1);
    pem.extend_from_slice(key.expose());
    pem.push(b'\n');
    pem.extend_from_slice(cert.expose());
    let pem = SecretBytes::from(pem);
    reqwest::Identity::from_pem(pem.expose()).map_err(|_| {
        Error::config(format!(
            "{field}: the client certificate and key are not a valid PEM pair"
        ))
    })
}

async fn client_tls(spec: &VaultProvider, ctx: &StoreContext) -> Result<Option<reqwest::Identity>> {
    const F: &str = "spec.provider.vault.tls";
    let Some(tls) = &spec.tls else {
        return Ok(None);
    };
    match (&tls.cert_secret_ref, &tls.key_secret_ref) {
        (None, None) => Ok(None),
        (Some(c), Some(k)) => {
            let mut c = c.clone();
            if c.key.as_deref().is_none_or(str::is_empty) {
                c.key = Some("tls.crt".into());
            }
            let mut k = k.clone();
            if k.key.as_deref().is_none_or(str::is_empty) {
                k.key = Some("tls.key".into());
            }
            let cert = ctx.read_selector(&c, &format!("{F}.certSecretRef")).await?;
            let key = ctx.read_selector(&k, &format!("{F}.keySecretRef")).await?;
            Ok(Some(identity(&cert, &key, F)?))
        }
        _ => Err(Error::config(format!(
            "{F}: when provided, both certSecretRef and keySecretRef must be set"
        ))),
    }
}

#[async_trait]
impl Provider for Vault {
    fn metrics_name(&self) -> &'static str {
        METRICS_NAME
    }

    async fn get_secret(&self, r: &RemoteRef) -> Result<SecretBytes> {
        if r.metadata {
            let md = self.read_metadata(&r.key).await?;
            return Ok(SecretBytes::from(go_json(&serde_json::Value::Object(md))));
        }
        let data = self.read_data(&r.key, r.version.as_deref()).await?;
        Ok(SecretBytes::from(go_json(&data)))
    }

    /// Reads run concurrently (a few at a time); Vault has no batch read.
    async fn get_secrets(&self, refs: &[RemoteRef]) -> Vec<Result<SecretBytes>> {
        let futs: Vec<_> = refs.iter().map(|r| self.get_secret(r)).collect();
        futures::stream::iter(futs)
            .buffered(FIND_CONCURRENCY)
            .collect()
            .await
    }

    async fn find(&self, f: &FindRef) -> Result<SecretMap> {
        let mount = self.mount.as_deref().ok_or_else(|| {
            Error::config("spec.provider.vault.path: the KV mount is required for dataFrom[].find")
        })?;
        if self.version == KvVersion::V1 && !f.tags.is_empty() {
            return Err(Error::unsupported(
                "vault: cannot perform find by tag operations with kv version v1",
            ));
        }
        let dir = match f.path.as_deref().map(|p| p.trim_matches('/')) {
            Some(p) if !p.is_empty() => format!("{p}/"),
            _ => String::new(),
        };
        let candidates = self.list(mount, &dir).await?;
        let selected: Vec<String> = if let Some(re) = &f.name_regexp {
            // As ESO: with a name, tags are not looked at.
            let re = compile_regex(re)?;
            candidates.into_iter().filter(|c| re.is_match(c)).collect()
        } else {
            let checks = futures::stream::iter(candidates)
                .map(|name| async move {
                    let md = self.read_metadata(&name).await?;
                    let hit = f
                        .tags
                        .iter()
                        .all(|(k, v)| md.get(k).and_then(|x| x.as_str()) == Some(v.as_str()));
                    Ok::<_, Error>(hit.then_some(name))
                })
                .buffered(FIND_CONCURRENCY)
                .collect::<Vec<_>>()
                .await;
            let mut names = Vec::new();
            for c in checks {
                if let Some(n) = c? {
                    names.push(n);
                }
            }
            names
        };
        let reads = futures::stream::iter(selected)
            .map(|name| async move {
                let v = self.get_secret(&RemoteRef::new(name.clone())).await;
                (name, v)
            })
            .buffered(FIND_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut out = SecretMap::new();
        for (name, v) in reads {
            match v {
                Ok(v) => {
                    out.insert(name, v);
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn validate(&self) -> Result<()> {
        let token = self.current_token().await?;
        if let Some(t) = &token {
            let resp = self.lookup_self(t).await?;
            if !resp.ok() {
                self.invalidate(t).await;
                let mut e = resp.error(&format!(
                    "the {} token is not valid (token lookup)",
                    self.auth.name()
                ));
                if resp.status.as_u16() == 400 {
                    e.kind = refsync_core::ErrorKind::Auth;
                }
                return Err(e);
            }
        }
        let Some(mount) = &self.mount else {
            if token.is_none() {
                // Nothing else was asked of the server: at least check that it answers.
                let resp = self
                    .http
                    .send(Method::GET, "sys/health", &[], None, None, None)
                    .await;
                self.observe("Health", resp.is_ok());
                resp?;
            }
            return Ok(());
        };
        // Any token with some capability under the mount may read this (Vault's UI preflight).
        let path = encode_path(&format!("sys/internal/ui/mounts/{mount}"))?;
        let resp = self
            .http
            .send(
                Method::GET,
                &path,
                &[],
                token.as_ref(),
                self.http.namespace.as_ref(),
                None,
            )
            .await;
        self.observe("LookupMount", resp.as_ref().is_ok_and(Response::ok));
        let resp = resp?;
        if !resp.ok() {
            let mut e = resp.error(&format!(
                "KV mount {mount:?} (spec.provider.vault.path) not found or not accessible"
            ));
            if resp.status.as_u16() == 400 {
                e.kind = refsync_core::ErrorKind::Config;
            }
            return Err(e);
        }
        let data = resp.body.as_ref().and_then(|b| b.get("data"));
        let kind = data
            .and_then(|d| d.get("type"))
            .and_then(|t| t.as_str())
            .unwrap_or("");
        if !kind.is_empty() && kind != "kv" && kind != "generic" {
            return Err(Error::config(format!(
                "spec.provider.vault.path: mount {mount:?} is a {kind:?} engine, not kv"
            )));
        }
        let mounted_v2 = data
            .and_then(|d| d.pointer("/options/version"))
            .and_then(|v| v.as_str())
            .is_some_and(|v| v == "2");
        if !kind.is_empty() {
            let want_v2 = self.version == KvVersion::V2;
            if mounted_v2 != want_v2 {
                return Err(Error::config(format!(
                    "spec.provider.vault.version: mount {mount:?} is KV {}, the store says {}",
                    if mounted_v2 { "v2" } else { "v1" },
                    if want_v2 { "v2" } else { "v1" }
                )));
            }
        }
        Ok(())
    }

    fn property_mode(&self) -> PropertyMode {
        PropertyMode::ExactKeyThenGjson
    }

    async fn close(&self) {
        let cached = self.token.lock().await.take();
        if let Some(c) = cached
            && c.from_login
        {
            let resp = self
                .http
                .send(
                    Method::POST,
                    "auth/token/revoke-self",
                    &[],
                    Some(&c.token),
                    self.auth_namespace.as_ref(),
                    None,
                )
                .await;
            self.observe("RevokeSelf", resp.as_ref().is_ok_and(Response::ok));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded() {
        assert_eq!(
            encode_path("secret/data/a b/c?d").unwrap(),
            "secret/data/a%20b/c%3Fd"
        );
        assert!(encode_path("secret/data/../x").is_err());
        assert_eq!(encode_path("secret/metadata/").unwrap(), "secret/metadata/");
    }

    #[test]
    fn refresh_schedule() {
        assert!(refresh_at(Duration::ZERO).is_none());
        let now = Instant::now();
        let t = refresh_at(Duration::from_secs(3600)).unwrap();
        assert!(t >= now + Duration::from_secs(2399) && t <= now + Duration::from_secs(2401));
        let t = refresh_at(Duration::from_secs(10)).unwrap();
        assert!(t <= now + Duration::from_secs(6));
    }
}
