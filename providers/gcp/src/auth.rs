//! `spec.provider.gcpsm.auth` → google-cloud-auth credentials. Everything here is built once per
//! store; google-cloud-auth caches the tokens it makes and renews them before they expire.

use std::future::Future;
use std::sync::Arc;

use google_cloud_auth::credentials::external_account::{self, ProgrammaticBuilder};
use google_cloud_auth::credentials::subject_token::{self, SubjectToken, SubjectTokenProvider};
use google_cloud_auth::credentials::{self as creds, Credentials, anonymous, service_account};
use google_cloud_auth::errors::SubjectTokenProviderError;
use refsync_core::api::{
    GcpSmProvider, GcpWorkloadIdentity, GcpWorkloadIdentityFederation, StoreKind,
};
use refsync_core::{CallObserver, Error, ErrorKind, Result, SecretReader, StoreContext};
use serde_json::Value;

use crate::METRICS_NAME;

pub(crate) const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const STS_TOKEN_URL: &str = "https://sts.googleapis.com/v1/token";
const STS_TOKEN_INFO_URL: &str = "https://sts.googleapis.com/v1/introspect";
const AUTOMOUNTED_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
const GENERATE_SA_TOKEN: &str = "GenerateServiceAccountToken";

/// Which auth method a store uses, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    ServiceAccountKey,
    WorkloadIdentity,
    WorkloadIdentityFederation,
    DefaultCredentials,
    Anonymous,
}

impl Method {
    /// Appended to authentication failures.
    pub(crate) fn hint(self) -> &'static str {
        match self {
            Method::ServiceAccountKey => "auth: service-account key from auth.secretRef",
            Method::WorkloadIdentity => {
                "auth: GKE workload identity; refsync uses the federated token directly and does \
                 not impersonate the iam.gke.io/gcp-service-account annotation's account"
            }
            Method::WorkloadIdentityFederation => "auth: workloadIdentityFederation",
            Method::DefaultCredentials => "auth: application default credentials",
            Method::Anonymous => {
                "auth: none (GCP_SECRETMANAGER_ENDPOINT is set and no auth is configured: requests \
                 are sent without credentials)"
            }
        }
    }
}

/// Builds the store's credentials. With `private_endpoint` (GCP_SECRETMANAGER_ENDPOINT set) no
/// method that would talk to Google (STS, metadata server, OAuth token endpoints) is allowed.
pub(crate) async fn credentials(
    g: &GcpSmProvider,
    ctx: &StoreContext,
    private_endpoint: bool,
) -> Result<(Credentials, Method)> {
    let auth = g.auth.clone().unwrap_or_default();
    if let Some(sr) = &auth.secret_ref {
        const FIELD: &str = "spec.provider.gcpsm.auth.secretRef.secretAccessKeySecretRef";
        let sel = sr
            .secret_access_key_secret_ref
            .as_ref()
            .ok_or_else(|| Error::config(format!("{FIELD} is required")))?;
        let key = ctx.read_selector(sel, FIELD).await?;
        let json: Value = serde_json::from_slice(key.expose()).map_err(|_| {
            Error::config(format!(
                "{FIELD}: the key is not JSON (expected a service-account key file)"
            ))
        })?;
        return Ok((
            service_account_credentials(json, FIELD)?,
            Method::ServiceAccountKey,
        ));
    }
    if let Some(wi) = &auth.workload_identity {
        refuse_on_private_endpoint(
            private_endpoint,
            "spec.provider.gcpsm.auth.workloadIdentity",
        )?;
        return Ok((workload_identity(g, wi, ctx)?, Method::WorkloadIdentity));
    }
    if let Some(wif) = &auth.workload_identity_federation {
        refuse_on_private_endpoint(
            private_endpoint,
            "spec.provider.gcpsm.auth.workloadIdentityFederation",
        )?;
        return Ok((
            workload_identity_federation(wif, ctx).await?,
            Method::WorkloadIdentityFederation,
        ));
    }
    if private_endpoint {
        return private_default_credentials();
    }
    let c = creds::Builder::default()
        .with_scopes([CLOUD_PLATFORM])
        .build()
        .map_err(|e| {
            Error::auth(format!(
                "application default credentials: {}",
                one_line(&e.to_string())
            ))
        })?;
    Ok((c, Method::DefaultCredentials))
}

fn refuse_on_private_endpoint(private_endpoint: bool, field: &str) -> Result<()> {
    if private_endpoint {
        return Err(Error::config(format!(
            "{field}: exchanges tokens with Google's STS, which is not allowed while \
             GCP_SECRETMANAGER_ENDPOINT is set (no request may leave for Google); use auth.secretRef"
        )));
    }
    Ok(())
}

/// Service-account key JSON → credentials. google-cloud-auth signs a JWT per token lifetime
/// itself (RS256, `kid` = `private_key_id`) and never calls the key's `token_uri`.
pub(crate) fn service_account_credentials(json: Value, field: &str) -> Result<Credentials> {
    let str_field = |k: &str| {
        json.get(k)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    if json.get("type").and_then(Value::as_str) != Some("service_account") {
        return Err(Error::config(format!(
            "{field}: the key's \"type\" must be \"service_account\""
        )));
    }
    for k in ["client_email", "private_key", "private_key_id"] {
        if !str_field(k) {
            return Err(Error::config(format!(
                "{field}: the service-account key has no {k:?}"
            )));
        }
    }
    // The builder's error may quote the JSON it could not read: never pass it on.
    service_account::Builder::new(json)
        .build()
        .map_err(|_| Error::config(format!("{field}: not a usable service-account key")))
}

/// With GCP_SECRETMANAGER_ENDPOINT and no auth: a service-account key named by
/// GOOGLE_APPLICATION_CREDENTIALS (signed locally), else no credentials at all. Never the
/// metadata server or a user refresh token (both would call Google).
fn private_default_credentials() -> Result<(Credentials, Method)> {
    const FIELD: &str = "GOOGLE_APPLICATION_CREDENTIALS";
    if let Some(path) = std::env::var_os(FIELD).filter(|p| !p.is_empty()) {
        let text = std::fs::read(&path)
            .map_err(|e| Error::config(format!("{FIELD} {}: {e}", path.to_string_lossy())))?;
        let json: Value = serde_json::from_slice(&text)
            .map_err(|_| Error::config(format!("{FIELD} {}: not JSON", path.to_string_lossy())))?;
        if json.get("type").and_then(Value::as_str) == Some("service_account") {
            return Ok((
                service_account_credentials(json, FIELD)?,
                Method::ServiceAccountKey,
            ));
        }
        return Err(Error::config(format!(
            "{FIELD} {}: only a service_account key can be used while GCP_SECRETMANAGER_ENDPOINT \
             is set (other types call Google's token endpoints)",
            path.to_string_lossy()
        )));
    }
    Ok((anonymous::Builder::new().build(), Method::Anonymous))
}

/// `auth.workloadIdentity` (GKE): a token of the Kubernetes ServiceAccount (audience
/// `PROJECT.svc.id.goog`), exchanged at STS for a federated access token with the audience
/// `identitynamespace:PROJECT.svc.id.goog:https://container.googleapis.com/v1/projects/...`.
fn workload_identity(
    g: &GcpSmProvider,
    wi: &GcpWorkloadIdentity,
    ctx: &StoreContext,
) -> Result<Credentials> {
    const FIELD: &str = "spec.provider.gcpsm.auth.workloadIdentity";
    let sa = &wi.service_account_ref;
    if sa.name.is_empty() {
        return Err(Error::config(format!(
            "{FIELD}.serviceAccountRef.name is required"
        )));
    }
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let project = nonempty(&wi.cluster_project_id).or_else(|| nonempty(&g.project_id)).ok_or_else(|| {
        Error::config(format!(
            "{FIELD}.clusterProjectID (or spec.provider.gcpsm.projectID) is required: refsync does not \
             ask the GKE metadata server"
        ))
    })?;
    let location = nonempty(&wi.cluster_location).ok_or_else(|| {
        Error::config(format!(
            "{FIELD}.clusterLocation is required: refsync does not ask the GKE metadata server"
        ))
    })?;
    let cluster = nonempty(&wi.cluster_name).ok_or_else(|| {
        Error::config(format!(
            "{FIELD}.clusterName is required: refsync does not ask the GKE metadata server"
        ))
    })?;
    let pool = format!("{project}.svc.id.goog");
    let provider = format!(
        "https://container.googleapis.com/v1/projects/{project}/locations/{location}/clusters/{cluster}"
    );
    let mut audiences = vec![pool.clone()];
    audiences.extend(sa.audiences.clone().unwrap_or_default());
    let subject = KubeSubjectToken {
        reader: ctx.reader.clone(),
        calls: ctx.calls.clone(),
        namespace: sa_namespace(ctx, sa.namespace.as_deref()),
        name: sa.name.clone(),
        audiences,
    };
    ProgrammaticBuilder::new(Arc::new(subject))
        .with_audience(format!("identitynamespace:{pool}:{provider}"))
        .with_subject_token_type(JWT_TOKEN_TYPE)
        .with_token_url(STS_TOKEN_URL)
        .with_scopes([CLOUD_PLATFORM])
        .build()
        .map_err(|e| Error::config(format!("{FIELD}: {}", one_line(&e.to_string()))))
}

/// Only a ClusterSecretStore may name another namespace (as ESO does).
fn sa_namespace(ctx: &StoreContext, requested: Option<&str>) -> String {
    match requested {
        Some(ns) if !ns.is_empty() && ctx.kind == StoreKind::ClusterSecretStore => ns.to_string(),
        _ => ctx.namespace.clone(),
    }
}

async fn workload_identity_federation(
    wif: &GcpWorkloadIdentityFederation,
    ctx: &StoreContext,
) -> Result<Credentials> {
    const FIELD: &str = "spec.provider.gcpsm.auth.workloadIdentityFederation";
    let set = [
        wif.cred_config.is_some(),
        wif.service_account_ref.is_some(),
        wif.aws_security_credentials.is_some(),
    ];
    if set.iter().filter(|b| **b).count() != 1 {
        return Err(Error::config(format!(
            "{FIELD}: exactly one of credConfig, awsSecurityCredentials or serviceAccountRef must be provided"
        )));
    }
    let audience = wif.audience.clone().filter(|a| !a.is_empty());
    if (wif.service_account_ref.is_some() || wif.aws_security_credentials.is_some())
        && audience.is_none()
    {
        return Err(Error::config(format!(
            "{FIELD}.audience must be provided when serviceAccountRef or awsSecurityCredentials is provided"
        )));
    }
    if wif.aws_security_credentials.is_some() {
        return Err(Error::unsupported(format!(
            "{FIELD}.awsSecurityCredentials is not supported by refsync (google-cloud-auth takes AWS \
             credentials only from the environment or the EC2 metadata service, not from a Secret)"
        )));
    }
    let email = wif
        .gcp_service_account_email
        .clone()
        .filter(|e| !e.is_empty());
    if let Some(sa) = &wif.service_account_ref {
        if sa.name.is_empty() {
            return Err(Error::config(format!(
                "{FIELD}.serviceAccountRef.name is required"
            )));
        }
        let subject = KubeSubjectToken {
            reader: ctx.reader.clone(),
            calls: ctx.calls.clone(),
            namespace: sa_namespace(ctx, sa.namespace.as_deref()),
            name: sa.name.clone(),
            audiences: sa.audiences.clone().unwrap_or_default(),
        };
        let mut b = ProgrammaticBuilder::new(Arc::new(subject))
            .with_audience(audience.unwrap_or_default())
            .with_subject_token_type(JWT_TOKEN_TYPE)
            .with_token_url(STS_TOKEN_URL)
            .with_scopes([CLOUD_PLATFORM]);
        if let Some(email) = email {
            b = b.with_target_principal(email);
        }
        return b
            .build()
            .map_err(|e| Error::config(format!("{FIELD}: {}", one_line(&e.to_string()))));
    }
    let cc = wif
        .cred_config
        .as_ref()
        .ok_or_else(|| Error::config(format!("{FIELD}.credConfig is required")))?;
    if cc.name.is_empty() || cc.key.is_empty() {
        return Err(Error::config(format!(
            "{FIELD}.credConfig.name and .key are required"
        )));
    }
    let ns = sa_namespace(ctx, cc.namespace.as_deref());
    let text = ctx
        .reader
        .config_map_key(&ns, &cc.name, &cc.key)
        .await
        .map_err(|e| e.context(format!("{FIELD}.credConfig")))?;
    let config = cred_config(
        &text,
        wif,
        &format!(
            "{FIELD}.credConfig (ConfigMap {ns}/{}, key {})",
            cc.name, cc.key
        ),
    )?;
    external_account::Builder::new(config)
        .with_scopes([CLOUD_PLATFORM])
        .build()
        .map_err(|e| Error::config(format!("{FIELD}.credConfig: {}", one_line(&e.to_string()))))
}

/// Checks and completes an `external_account` credential configuration the way ESO does:
/// the operator's own token file and executables are refused, `credential_source.url` must be
/// the store's `externalTokenEndpoint`, STS and impersonation URLs must be Google's.
pub(crate) fn cred_config(
    text: &str,
    wif: &GcpWorkloadIdentityFederation,
    at: &str,
) -> Result<Value> {
    if text.trim().is_empty() {
        return Err(Error::config(format!("{at}: the value is empty")));
    }
    let mut v: Value =
        serde_json::from_str(text).map_err(|e| Error::config(format!("{at}: not JSON: {e}")))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| Error::config(format!("{at}: not a JSON object")))?;
    if obj.get("type").and_then(Value::as_str) != Some("external_account") {
        return Err(Error::config(format!(
            "{at}: \"type\" must be \"external_account\""
        )));
    }
    let mut problems = Vec::new();
    let source_is_automount = obj
        .get("credential_source")
        .and_then(|s| s.get("file"))
        .and_then(Value::as_str)
        .is_some_and(|f| f == AUTOMOUNTED_TOKEN);
    if source_is_automount {
        problems.push(format!(
            "credential_source.file {AUTOMOUNTED_TOKEN} (the operator's own token) is not allowed; use serviceAccountRef"
        ));
    }
    if let Some(src) = obj.get("credential_source").and_then(Value::as_object) {
        let s = |k: &str| {
            src.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        if src.contains_key("executable") {
            problems.push("credential_source.executable is not allowed".to_string());
        }
        let (file, url, env) = (s("file"), s("url"), s("environment_id"));
        if file.is_empty() && url.is_empty() && env.is_empty() {
            problems.push(
                "one of credential_source.file, .url or .environment_id must be provided"
                    .to_string(),
            );
        }
        let endpoint = wif.external_token_endpoint.clone().unwrap_or_default();
        if env.is_empty() && url != endpoint {
            problems.push(format!(
                "credential_source.url {url:?} does not match the store's externalTokenEndpoint {endpoint:?}"
            ));
        }
        if !env.is_empty() && !env.to_ascii_lowercase().starts_with("aws") {
            problems.push(format!(
                "credential_source.environment_id {env:?} must start with aws"
            ));
        }
    } else {
        problems.push("credential_source is required".to_string());
    }
    if let Some(a) = wif.audience.as_deref().filter(|a| !a.is_empty()) {
        obj.insert("audience".into(), Value::from(a));
    }
    if let Some(email) = wif
        .gcp_service_account_email
        .as_deref()
        .filter(|e| !e.is_empty())
    {
        obj.insert(
            "service_account_impersonation_url".into(),
            Value::from(format!(
                "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{email}:generateAccessToken"
            )),
        );
    }
    if obj
        .get("subject_token_type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .is_empty()
    {
        obj.insert("subject_token_type".into(), Value::from(JWT_TOKEN_TYPE));
    }
    let domain = obj
        .get("universe_domain")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
        .unwrap_or("googleapis.com")
        .to_string();
    if obj
        .get("token_url")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .is_empty()
    {
        obj.insert(
            "token_url".into(),
            Value::from(STS_TOKEN_URL.replace("googleapis.com", &domain)),
        );
    }
    if obj
        .get("token_info_url")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .is_empty()
    {
        obj.insert(
            "token_info_url".into(),
            Value::from(STS_TOKEN_INFO_URL.replace("googleapis.com", &domain)),
        );
    }
    if obj
        .get("audience")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .is_empty()
    {
        problems.push("audience is empty".to_string());
    }
    let token_url = obj
        .get("token_url")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !is_sts_url(token_url, "/v1/token") {
        problems.push(format!(
            "token_url {token_url:?} must match ^https://sts\\.[^/\\s]+/v1/token$"
        ));
    }
    let info_url = obj
        .get("token_info_url")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !is_sts_url(info_url, "/v1/introspect") {
        problems.push(format!(
            "token_info_url {info_url:?} must match ^https://sts\\.[^/\\s]+/v1/introspect$"
        ));
    }
    if let Some(u) = obj
        .get("service_account_impersonation_url")
        .and_then(Value::as_str)
        && !u.is_empty()
        && !is_impersonation_url(u)
    {
        problems.push(format!(
            "service_account_impersonation_url {u:?} must be https://iamcredentials.googleapis.com/v1/projects/P/serviceAccounts/EMAIL:generateAccessToken"
        ));
    }
    if !problems.is_empty() {
        return Err(Error::config(format!(
            "{at}: invalid external_account config: {}",
            problems.join("; ")
        )));
    }
    Ok(v)
}

fn is_sts_url(u: &str, path: &str) -> bool {
    u.strip_prefix("https://sts.")
        .and_then(|r| r.strip_suffix(path))
        .is_some_and(|host| {
            !host.is_empty() && !host.contains('/') && !host.contains(char::is_whitespace)
        })
}

fn is_impersonation_url(u: &str) -> bool {
    let Some(rest) = u.strip_prefix("https://iamcredentials.") else {
        return false;
    };
    let Some((host, path)) = rest.split_once('/') else {
        return false;
    };
    let host_ok = host == "googleapis.com"
        || host.strip_suffix(".googleapis.com").is_some_and(|p| {
            p.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
        });
    let Some(rest) = path.strip_prefix("v1/projects/") else {
        return false;
    };
    let Some((proj, rest)) = rest.split_once("/serviceAccounts/") else {
        return false;
    };
    let Some(email) = rest.strip_suffix(":generateAccessToken") else {
        return false;
    };
    let label = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let email_ok = email
        .split_once('@')
        .and_then(|(user, domain)| {
            domain
                .strip_suffix(".iam.gserviceaccount.com")
                .map(|d| (user, d))
        })
        .is_some_and(|(user, d)| label(user) && label(d));
    host_ok && !proj.is_empty() && !proj.contains('/') && email_ok
}

/// A Kubernetes ServiceAccount token (TokenRequest through the store's reader), the subject
/// token of an STS exchange. Called only when google-cloud-auth renews its access token.
#[derive(Clone)]
struct KubeSubjectToken {
    reader: Arc<dyn SecretReader>,
    calls: Arc<dyn CallObserver>,
    namespace: String,
    name: String,
    audiences: Vec<String>,
}

impl std::fmt::Debug for KubeSubjectToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSubjectToken")
            .field(
                "serviceAccount",
                &format_args!("{}/{}", self.namespace, self.name),
            )
            .field("audiences", &self.audiences)
            .finish()
    }
}

#[derive(Debug)]
struct SubjectTokenError {
    message: String,
    transient: bool,
}

impl std::fmt::Display for SubjectTokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SubjectTokenError {}

impl SubjectTokenProviderError for SubjectTokenError {
    fn is_transient(&self) -> bool {
        self.transient
    }
}

impl SubjectTokenProvider for KubeSubjectToken {
    type Error = SubjectTokenError;

    fn subject_token(
        &self,
    ) -> impl Future<Output = std::result::Result<SubjectToken, Self::Error>> + Send {
        let this = self.clone();
        async move {
            let got = this
                .reader
                .service_account_token(&this.namespace, &this.name, &this.audiences, Some(900))
                .await;
            this.calls
                .observe(METRICS_NAME, GENERATE_SA_TOKEN, got.is_ok());
            let token = got.map_err(|e| SubjectTokenError {
                transient: e.kind == ErrorKind::Transient,
                message: format!(
                    "token for ServiceAccount {}/{}: {}",
                    this.namespace, this.name, e.message
                ),
            })?;
            let token = String::from_utf8(token.into_vec()).map_err(|_| SubjectTokenError {
                transient: false,
                message: format!(
                    "token for ServiceAccount {}/{} is not UTF-8",
                    this.namespace, this.name
                ),
            })?;
            Ok(subject_token::Builder::new(token).build())
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wif() -> GcpWorkloadIdentityFederation {
        GcpWorkloadIdentityFederation::default()
    }

    #[test]
    fn cred_config_defaults_and_overrides() {
        let text = r#"{"type":"external_account","audience":"//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q",
            "credential_source":{"file":"/var/run/token/t"}}"#;
        let mut w = wif();
        w.gcp_service_account_email = Some("reader@proj-1.iam.gserviceaccount.com".into());
        let v = cred_config(text, &w, "at").unwrap();
        assert_eq!(v["token_url"], STS_TOKEN_URL);
        assert_eq!(v["token_info_url"], STS_TOKEN_INFO_URL);
        assert_eq!(v["subject_token_type"], JWT_TOKEN_TYPE);
        assert_eq!(
            v["service_account_impersonation_url"],
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/reader@proj-1.iam.gserviceaccount.com:generateAccessToken"
        );
        w.audience = Some("aud-override".into());
        assert_eq!(
            cred_config(text, &w, "at").unwrap()["audience"],
            "aud-override"
        );
    }

    #[test]
    fn cred_config_refusals() {
        let cases = [
            (r#"{"type":"service_account"}"#, "external_account"),
            (
                r#"{"type":"external_account","audience":"a","credential_source":{"file":"/var/run/secrets/kubernetes.io/serviceaccount/token"}}"#,
                "operator's own token",
            ),
            (
                r#"{"type":"external_account","audience":"a","credential_source":{"executable":{"command":"/bin/sh"}}}"#,
                "executable",
            ),
            (
                r#"{"type":"external_account","audience":"a","credential_source":{"url":"http://idp/token"}}"#,
                "externalTokenEndpoint",
            ),
            (
                r#"{"type":"external_account","audience":"a","token_url":"https://evil.example/v1/token","credential_source":{"file":"/t"}}"#,
                "token_url",
            ),
            (
                r#"{"type":"external_account","credential_source":{"file":"/t"}}"#,
                "audience is empty",
            ),
            (
                r#"{"type":"external_account","audience":"a","service_account_impersonation_url":"https://evil.example/x","credential_source":{"file":"/t"}}"#,
                "impersonation",
            ),
            ("", "empty"),
            ("not json", "not JSON"),
        ];
        for (text, want) in cases {
            let e = cred_config(text, &wif(), "at").unwrap_err();
            assert_eq!(e.kind, ErrorKind::Config);
            assert!(e.message.contains(want), "{text}: {}", e.message);
        }
        let mut w = wif();
        w.external_token_endpoint = Some("http://idp/token".into());
        let ok = r#"{"type":"external_account","audience":"a","credential_source":{"url":"http://idp/token"}}"#;
        assert!(cred_config(ok, &w, "at").is_ok());
    }

    #[test]
    fn url_checks() {
        assert!(is_sts_url(
            "https://sts.googleapis.com/v1/token",
            "/v1/token"
        ));
        assert!(!is_sts_url(
            "https://sts.googleapis.com/x/v1/token",
            "/v1/token"
        ));
        assert!(is_impersonation_url(
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/a-b@p-1.iam.gserviceaccount.com:generateAccessToken"
        ));
        assert!(!is_impersonation_url(
            "https://iamcredentials.googleapis.com.evil/v1/projects/-/serviceAccounts/a@p.iam.gserviceaccount.com:generateAccessToken"
        ));
    }

    #[test]
    fn service_account_key_errors_never_quote_the_key() {
        let canary = "-----BEGIN PRIVATE KEY-----canary-key-material";
        let cases = [
            serde_json::json!({"type": "authorized_user", "private_key": canary}),
            serde_json::json!({"type": "service_account", "private_key": canary}),
            serde_json::json!({"type": "service_account", "private_key": canary, "client_email": 7, "private_key_id": "k"}),
        ];
        for json in cases {
            let Err(e) = service_account_credentials(json, "f") else {
                panic!("a bad key was accepted");
            };
            assert_eq!(e.kind, ErrorKind::Config);
            assert!(!e.message.contains("canary"), "{}", e.message);
        }
    }
}
