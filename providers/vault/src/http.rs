//! The HTTP side: one reqwest client per store, Vault's headers, and error classification.

use std::sync::Mutex;
use std::time::Duration;

use refsync_core::{Error, ErrorKind, Result, SecretBytes};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};

const INDEX_HEADER: &str = "x-vault-index";

/// A configured connection to one Vault server.
pub struct Http {
    client: reqwest::Client,
    /// `<server>/v1/`.
    base: String,
    /// `headers` plus `X-Vault-Inconsistent` when configured.
    headers: HeaderMap,
    /// `X-Vault-Namespace` for secret reads (`spec.provider.vault.namespace`).
    pub namespace: Option<HeaderValue>,
    /// readYourWrites / forwardInconsistent: remember the last `X-Vault-Index` and send it back.
    read_your_writes: bool,
    index: Mutex<Option<HeaderValue>>,
}

/// A Vault response: its status and, if any, its JSON body.
pub struct Response {
    pub status: StatusCode,
    pub body: Option<serde_json::Value>,
}

impl Response {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// Vault's `errors` array, joined (error texts from Vault never carry secret values).
    pub fn errors(&self) -> String {
        let errs: Vec<String> = self
            .body
            .as_ref()
            .and_then(|b| b.get("errors"))
            .and_then(|e| e.as_array())
            .map(|a| a.iter().filter_map(|e| e.as_str()).map(one_line).collect())
            .unwrap_or_default();
        if errs.is_empty() {
            self.status
                .canonical_reason()
                .unwrap_or("error")
                .to_ascii_lowercase()
        } else {
            errs.join("; ")
        }
    }

    /// The error for a non-success status; `what` says what was attempted.
    pub fn error(&self, what: &str) -> Error {
        let kind = classify(self.status);
        Error::new(
            kind,
            format!(
                "vault: {what}: {} (HTTP {})",
                self.errors(),
                self.status.as_u16()
            ),
        )
    }
}

/// 404 → NotFound, 401/403 → Auth, 400/405 → Invalid, 412/429/5xx and the rest → Transient.
pub fn classify(status: StatusCode) -> ErrorKind {
    match status.as_u16() {
        404 => ErrorKind::NotFound,
        401 | 403 => ErrorKind::Auth,
        400 | 405 => ErrorKind::Invalid,
        _ => ErrorKind::Transient,
    }
}

fn one_line(s: &str) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.len() > 300 {
        let mut end = 300;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s
    }
}

/// The whole cause chain of a reqwest error (TLS and connection reasons live in the sources).
pub fn describe(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = s.source();
    }
    one_line(&msg)
}

pub struct HttpConfig {
    pub server: String,
    pub namespace: Option<HeaderValue>,
    pub headers: HeaderMap,
    pub read_your_writes: bool,
    pub roots: Vec<reqwest::Certificate>,
    pub identity: Option<reqwest::Identity>,
}

impl Http {
    pub fn new(cfg: HttpConfig) -> Result<Self> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .use_rustls_tls();
        if !cfg.roots.is_empty() {
            // A CA bundle replaces the system roots, as in ESO.
            b = b.tls_built_in_root_certs(false);
            for c in cfg.roots {
                b = b.add_root_certificate(c);
            }
        }
        if let Some(id) = cfg.identity {
            b = b.identity(id);
        }
        let client = b.build().map_err(|e| {
            Error::config(format!(
                "spec.provider.vault: cannot build the HTTP client: {}",
                describe(&e)
            ))
        })?;
        Ok(Http {
            client,
            base: format!("{}/v1/", cfg.server.trim_end_matches('/')),
            headers: cfg.headers,
            namespace: cfg.namespace,
            read_your_writes: cfg.read_your_writes,
            index: Mutex::new(None),
        })
    }

    /// One request to `/v1/<path>`. Network failures are `Transient` errors; any HTTP status is
    /// returned for the caller to judge.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        token: Option<&SecretBytes>,
        namespace: Option<&HeaderValue>,
        body: Option<&serde_json::Value>,
    ) -> Result<Response> {
        let url = format!("{}{}", self.base, path.trim_start_matches('/'));
        let mut req = self
            .client
            .request(method.clone(), &url)
            .headers(self.headers.clone());
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(t) = token {
            let mut v = HeaderValue::from_bytes(t.expose()).map_err(|_| {
                Error::auth("vault: the token contains characters not allowed in an HTTP header")
            })?;
            v.set_sensitive(true);
            req = req.header("X-Vault-Token", v);
        }
        if let Some(ns) = namespace {
            req = req.header("X-Vault-Namespace", ns.clone());
        }
        if self.read_your_writes {
            let idx = self.index.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(idx) = idx {
                req = req.header(INDEX_HEADER, idx);
            }
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Error::transient(format!("vault: {method} {}: {}", path, describe(&e))))?;
        let status = resp.status();
        if self.read_your_writes
            && let Some(idx) = resp.headers().get(INDEX_HEADER)
        {
            *self.index.lock().unwrap_or_else(|p| p.into_inner()) = Some(idx.clone());
        }
        let bytes = resp.bytes().await.map_err(|e| {
            Error::transient(format!(
                "vault: {method} {}: reading the response: {}",
                path,
                describe(&e)
            ))
        })?;
        let body = if bytes.is_empty() {
            None
        } else {
            serde_json::from_slice(&bytes).ok()
        };
        Ok(Response { status, body })
    }
}

/// Parses `headers` into a header map; errors name the field, never the value.
pub fn parse_headers(h: &std::collections::BTreeMap<String, String>) -> Result<HeaderMap> {
    let mut out = HeaderMap::new();
    for (k, v) in h {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
            Error::config(format!(
                "spec.provider.vault.headers: {k:?} is not a valid header name"
            ))
        })?;
        let mut value = HeaderValue::from_str(v).map_err(|_| {
            Error::config(format!(
                "spec.provider.vault.headers[{k}]: the value is not a valid header value"
            ))
        })?;
        value.set_sensitive(true);
        out.insert(name, value);
    }
    Ok(out)
}
