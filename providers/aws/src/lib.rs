#![forbid(unsafe_code)]
//! `spec.provider.aws`: AWS Secrets Manager and Systems Manager Parameter Store, on the official
//! AWS SDK for Rust (rustls with ring, no OpenSSL, no aws-lc).
//!
//! ESO's behaviour is kept (keys, versions, metadata, find, property mode); reads are batched:
//! `get_secrets` uses `BatchGetSecretValue` (20 ids a call) and `GetParameters` (10 names a
//! call) instead of one call per key, falling back to single reads where a batch cannot answer
//! (versions, metadata, a missing `BatchGetSecretValue`/`GetParameters` IAM permission).

mod auth;
mod errors;
mod secretsmanager;
mod ssm;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_sdk_sts::types::Tag;
use refsync_core::api::{
    AwsProvider as AwsSpec, AwsServiceType, SecretKeySelector, SecretStoreSpec, StoreKind,
};
use refsync_core::{
    CallObserver, Capabilities, Error, FindRef, PropertyMode, Provider, ProviderFactory, RemoteRef,
    Result, SecretBytes, SecretMap, StoreContext,
};

use crate::auth::{AssumeRole, Cached, STS, WebIdentity, sts_client};

/// ESO's metric provider names.
pub const METRICS_SECRETS_MANAGER: &str = "AWS/SecretsManager";
pub const METRICS_PARAMETER_STORE: &str = "AWS/ParameterStore";

/// Builds AWS providers from `spec.provider.aws`.
pub struct AwsFactory;

#[async_trait]
impl ProviderFactory for AwsFactory {
    fn key(&self) -> &'static str {
        "aws"
    }

    async fn build(&self, spec: &SecretStoreSpec, ctx: &StoreContext) -> Result<Arc<dyn Provider>> {
        let p: Arc<dyn Provider> = Aws::build(spec, ctx, &Endpoints::from_env()).await?;
        Ok(p)
    }
}

/// Endpoint overrides, as ESO reads them from its environment. The SDK's own
/// `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` are honoured as well (through the SDK's
/// config loader); these take precedence.
#[derive(Clone, Debug, Default)]
pub struct Endpoints {
    /// `AWS_SECRETSMANAGER_ENDPOINT`
    pub secrets_manager: Option<String>,
    /// `AWS_SSM_ENDPOINT`
    pub ssm: Option<String>,
    /// `AWS_STS_ENDPOINT`
    pub sts: Option<String>,
}

impl Endpoints {
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Endpoints {
            secrets_manager: var("AWS_SECRETSMANAGER_ENDPOINT"),
            ssm: var("AWS_SSM_ENDPOINT"),
            sts: var("AWS_STS_ENDPOINT"),
        }
    }

    /// Every service at one endpoint (moto, LocalStack).
    pub fn all(url: impl Into<String>) -> Self {
        let url = url.into();
        Endpoints {
            secrets_manager: Some(url.clone()),
            ssm: Some(url.clone()),
            sts: Some(url),
        }
    }
}

enum Backend {
    SecretsManager(aws_sdk_secretsmanager::Client),
    ParameterStore(aws_sdk_ssm::Client),
}

/// A configured AWS store.
pub struct Aws {
    backend: Backend,
    /// The final credentials (after every assumed role), cached.
    creds: SharedCredentialsProvider,
    sts: aws_sdk_sts::Client,
    prefix: String,
    calls: Arc<dyn CallObserver>,
    /// Cleared when the batch API is denied (an IAM policy granting only the single-read
    /// action): single reads from then on.
    batch_allowed: AtomicBool,
}

impl fmt::Debug for Aws {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aws")
            .field("service", &self.metrics_name())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Aws {
    /// Builds the clients for a store: credentials are resolved lazily (and cached), Secret
    /// references are read now so a wrong reference fails the store at once.
    pub async fn build(
        spec: &SecretStoreSpec,
        ctx: &StoreContext,
        endpoints: &Endpoints,
    ) -> Result<Arc<Aws>> {
        let aws = spec
            .provider
            .aws
            .as_ref()
            .ok_or_else(|| Error::config("spec.provider.aws is required"))?;
        if aws.service == AwsServiceType::CertificateManager {
            return Err(Error::unsupported(
                "spec.provider.aws.service: CertificateManager is not supported by refsync (SecretsManager and ParameterStore are)",
            ));
        }
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        // Bounded calls: a server that accepts connections but never answers must not hold a
        // reconcile forever (each attempt and the whole operation, retries included).
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .operation_attempt_timeout(Duration::from_secs(30))
            .operation_timeout(Duration::from_secs(60))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(timeouts);
        if !aws.region.trim().is_empty() {
            loader = loader.region(Region::new(aws.region.trim().to_string()));
        }
        if let Some(rc) = retry_config(spec)? {
            loader = loader.retry_config(rc);
        }
        let auth = aws.auth.clone().unwrap_or_default();
        let calls = ctx.calls.clone();

        // The first link: web identity, static keys, or the SDK's default chain.
        let mut role_consumed = false;
        let (conf, base): (SdkConfig, SharedCredentialsProvider) = if let Some(jwt) = &auth.jwt {
            let sa = jwt
                .service_account_ref
                .as_ref()
                .filter(|s| !s.name.is_empty())
                .ok_or_else(|| {
                    Error::config("spec.provider.aws.auth.jwt.serviceAccountRef.name is required")
                })?;
            // ESO takes the role from the ServiceAccount's `eks.amazonaws.com/role-arn`
            // annotation; the SecretReader cannot read ServiceAccounts, so the store's `role`
            // is the web-identity role here.
            let role = aws.role.clone().filter(|r| !r.is_empty()).ok_or_else(|| {
                Error::config(
                    "spec.provider.aws.role is required with auth.jwt: refsync assumes it with the ServiceAccount token \
                     (the ServiceAccount's eks.amazonaws.com/role-arn annotation is not read)",
                )
            })?;
            role_consumed = true;
            let namespace = match (ctx.kind, sa.namespace.as_deref()) {
                (StoreKind::ClusterSecretStore, Some(ns)) if !ns.is_empty() => ns.to_string(),
                _ => ctx.namespace.clone(),
            };
            let mut audiences = vec!["sts.amazonaws.com".to_string()];
            audiences.extend(sa.audiences.clone().unwrap_or_default());
            let conf = loader.no_credentials().load().await;
            let web = WebIdentity {
                sts: sts_client(&conf, None, endpoints.sts.as_deref()),
                role,
                reader: ctx.reader.clone(),
                namespace,
                service_account: sa.name.clone(),
                audiences,
                calls: calls.clone(),
            };
            (conf, SharedCredentialsProvider::new(Cached::new(web)))
        } else if let Some(sr) = &auth.secret_ref {
            let keys = SecretRefKeys::new(sr, ctx)?;
            // Read now: a wrong reference fails the store instead of the first read.
            let first = keys.read().await?;
            let conf = loader.no_credentials().load().await;
            let provider = SecretRefCreds {
                keys,
                first: std::sync::Mutex::new(Some(first)),
            };
            (conf, SharedCredentialsProvider::new(Cached::new(provider)))
        } else {
            let conf = loader.load().await;
            let chain = conf.credentials_provider().ok_or_else(|| {
                Error::config("spec.provider.aws.auth: no credentials configured and the default AWS credential chain is unavailable")
            })?;
            (
                conf.clone(),
                SharedCredentialsProvider::new(Cached::new(chain)),
            )
        };
        if conf.region().is_none() {
            return Err(Error::config(
                "spec.provider.aws.region is required (no default region is configured)",
            ));
        }

        // additionalRoles, then role.
        let mut creds = base;
        for (i, role) in aws.additional_roles.iter().enumerate() {
            if role.is_empty() {
                return Err(Error::config(format!(
                    "spec.provider.aws.additionalRoles[{i}] must not be empty"
                )));
            }
            let link = AssumeRole {
                sts: sts_client(&conf, Some(creds.clone()), endpoints.sts.as_deref()),
                role: role.clone(),
                external_id: None,
                tags: Vec::new(),
                transitive_tag_keys: Vec::new(),
                calls: calls.clone(),
            };
            creds = SharedCredentialsProvider::new(Cached::new(link));
        }
        if let Some(role) = aws
            .role
            .as_ref()
            .filter(|r| !r.is_empty() && !role_consumed)
        {
            let link = AssumeRole {
                sts: sts_client(&conf, Some(creds.clone()), endpoints.sts.as_deref()),
                role: role.clone(),
                external_id: aws.external_id.clone().filter(|e| !e.is_empty()),
                tags: session_tags(aws, ctx)?,
                transitive_tag_keys: aws.transitive_tag_keys.clone(),
                calls: calls.clone(),
            };
            creds = SharedCredentialsProvider::new(Cached::new(link));
        }

        let backend = match aws.service {
            AwsServiceType::ParameterStore => {
                let mut b =
                    aws_sdk_ssm::config::Builder::from(&conf).credentials_provider(creds.clone());
                if let Some(e) = &endpoints.ssm {
                    b = b.endpoint_url(e);
                }
                Backend::ParameterStore(aws_sdk_ssm::Client::from_conf(b.build()))
            }
            _ => {
                let mut b = aws_sdk_secretsmanager::config::Builder::from(&conf)
                    .credentials_provider(creds.clone());
                if let Some(e) = &endpoints.secrets_manager {
                    b = b.endpoint_url(e);
                }
                Backend::SecretsManager(aws_sdk_secretsmanager::Client::from_conf(b.build()))
            }
        };
        Ok(Arc::new(Aws {
            backend,
            sts: sts_client(&conf, Some(creds.clone()), endpoints.sts.as_deref()),
            creds,
            prefix: aws.prefix.clone().unwrap_or_default(),
            calls,
            batch_allowed: AtomicBool::new(true),
        }))
    }

    /// The ARN STS sees for this store's credentials (`GetCallerIdentity`): which identity the
    /// reads run as, after every assumed role.
    pub async fn caller_identity(&self) -> Result<String> {
        let out = self.sts.get_caller_identity().send().await;
        self.calls.observe(STS, "GetCallerIdentity", out.is_ok());
        let out = out.map_err(|e| errors::classify(STS, "GetCallerIdentity", "", &e))?;
        Ok(out.arn().unwrap_or_default().to_string())
    }

    /// The access key id of this store's current credentials (not secret: it names the key).
    pub async fn access_key_id(&self) -> Result<String> {
        Ok(self.credentials().await?.access_key_id().to_string())
    }

    async fn credentials(&self) -> Result<Credentials> {
        self.creds
            .provide_credentials()
            .await
            .map_err(|e| credentials_error(&e))
    }

    fn batch_allowed(&self) -> bool {
        self.batch_allowed.load(Ordering::Relaxed)
    }

    fn deny_batch(&self) {
        if self.batch_allowed.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                provider = self.metrics_name(),
                "the batch read API is denied (IAM); falling back to one call per key"
            );
        }
    }
}

/// A `CredentialsError` as a refsync error: our own providers carry one inside.
pub(crate) fn credentials_error(e: &CredentialsError) -> Error {
    errors::credentials_cause(e).unwrap_or_else(|| Error::auth("loading AWS credentials failed"))
}

fn retry_config(spec: &SecretStoreSpec) -> Result<Option<RetryConfig>> {
    let Some(rs) = &spec.retry_settings else {
        return Ok(None);
    };
    // ESO: maxRetries defaults to 3 when retrySettings is set; it is the attempt count.
    let attempts = rs.max_retries.unwrap_or(3).max(1) as u32;
    let mut rc = RetryConfig::standard().with_max_attempts(attempts);
    if let Some(iv) = rs.retry_interval.as_deref().filter(|s| !s.is_empty()) {
        let d = refsync_core::duration::parse_go_duration(iv)
            .map_err(|e| e.context("spec.retrySettings.retryInterval"))?;
        if d > Duration::ZERO {
            rc = rc.with_initial_backoff(d).with_max_backoff(d);
        }
    }
    Ok(Some(rc))
}

/// `sessionTags`, or the tags `sessionTagsPolicy: Simple|Custom` builds (as ESO does).
fn session_tags(aws: &AwsSpec, ctx: &StoreContext) -> Result<Vec<Tag>> {
    let pairs: Vec<(String, String)> = match aws.session_tags_policy.as_deref() {
        Some("Simple") | Some("Custom") => {
            let mut m = BTreeMap::new();
            if aws.session_tags_policy.as_deref() == Some("Custom") {
                for (k, v) in aws.custom_session_tags.iter().flatten() {
                    if !k.is_empty() && !v.is_empty() {
                        m.insert(k.clone(), v.clone());
                    }
                }
            }
            m.insert("esoNamespace".to_string(), ctx.namespace.clone());
            m.insert("esoStoreName".to_string(), ctx.name.clone());
            m.insert("esoStoreKind".to_string(), ctx.kind.to_string());
            m.into_iter().collect()
        }
        None | Some("") | Some("None") => aws
            .session_tags
            .iter()
            .map(|t| (t.key.clone(), t.value.clone()))
            .collect(),
        Some(other) => {
            return Err(Error::config(format!(
                "spec.provider.aws.sessionTagsPolicy: unknown value {other:?} (None, Simple or Custom)"
            )));
        }
    };
    pairs
        .into_iter()
        .enumerate()
        .map(|(i, (k, v))| {
            Tag::builder().key(k).value(v).build().map_err(|_| {
                Error::config(format!(
                    "spec.provider.aws.sessionTags[{i}]: key and value are required"
                ))
            })
        })
        .collect()
}

/// The Secret keys `auth.secretRef` names.
#[derive(Clone)]
struct SecretRefKeys {
    ctx: StoreContext,
    access_key_id: SecretKeySelector,
    secret_access_key: SecretKeySelector,
    session_token: Option<SecretKeySelector>,
}

const SECRET_REF: &str = "spec.provider.aws.auth.secretRef";

impl SecretRefKeys {
    fn new(sr: &refsync_core::api::AwsAuthSecretRef, ctx: &StoreContext) -> Result<Self> {
        Ok(SecretRefKeys {
            ctx: ctx.clone(),
            access_key_id: sr.access_key_id_secret_ref.clone().ok_or_else(|| {
                Error::config(format!("{SECRET_REF}.accessKeyIDSecretRef is required"))
            })?,
            secret_access_key: sr.secret_access_key_secret_ref.clone().ok_or_else(|| {
                Error::config(format!("{SECRET_REF}.secretAccessKeySecretRef is required"))
            })?,
            session_token: sr.session_token_secret_ref.clone(),
        })
    }

    async fn read(&self) -> Result<Credentials> {
        let text = |b: SecretBytes, field: &str| -> Result<String> {
            let s = String::from_utf8(b.into_vec()).map_err(|_| {
                Error::config(format!("{SECRET_REF}.{field}: the value is not UTF-8"))
            })?;
            // ESO trims nothing, but a trailing newline from `kubectl create secret --from-file`
            // is never part of a key.
            Ok(s.trim_end_matches(['\r', '\n']).to_string())
        };
        let field = |f: &str| format!("{SECRET_REF}.{f}");
        let akid = text(
            self.ctx
                .read_selector(&self.access_key_id, &field("accessKeyIDSecretRef"))
                .await?,
            "accessKeyIDSecretRef",
        )?;
        let sak = text(
            self.ctx
                .read_selector(&self.secret_access_key, &field("secretAccessKeySecretRef"))
                .await?,
            "secretAccessKeySecretRef",
        )?;
        let token = match &self.session_token {
            Some(sel) => Some(text(
                self.ctx
                    .read_selector(sel, &field("sessionTokenSecretRef"))
                    .await?,
                "sessionTokenSecretRef",
            )?)
            .filter(|t| !t.is_empty()),
            None => None,
        };
        if akid.is_empty() || sak.is_empty() {
            return Err(Error::config(format!(
                "{SECRET_REF}: the access key id and secret access key must not be empty"
            )));
        }
        // Re-read the Secret every few minutes so a rotated key is picked up without a store
        // change (ESO reads it on every reconcile).
        Ok(Credentials::new(
            akid,
            sak,
            token,
            Some(SystemTime::now() + SECRET_REF_TTL),
            "refsync-secret-ref",
        ))
    }
}

const SECRET_REF_TTL: Duration = Duration::from_secs(15 * 60);

/// Static keys from a Secret, re-read when the cache renews them.
struct SecretRefCreds {
    keys: SecretRefKeys,
    /// The keys read while building the store, used once.
    first: std::sync::Mutex<Option<Credentials>>,
}

impl fmt::Debug for SecretRefCreds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretRefCreds").finish_non_exhaustive()
    }
}

impl SecretRefCreds {
    async fn load(&self) -> std::result::Result<Credentials, CredentialsError> {
        let first = self.first.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(c) = first {
            return Ok(c);
        }
        self.keys
            .read()
            .await
            .map_err(CredentialsError::provider_error)
    }
}

impl ProvideCredentials for SecretRefCreds {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.load())
    }
}

/// Tags as ESO's metadata document: a JSON object, keys sorted, HTML characters escaped as Go's
/// `encoding/json` does.
pub(crate) fn tags_json(tags: &BTreeMap<String, String>) -> SecretBytes {
    let s = serde_json::to_string(tags).unwrap_or_else(|_| "{}".to_string());
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    SecretBytes::from(out)
}

#[async_trait]
impl Provider for Aws {
    fn metrics_name(&self) -> &'static str {
        match self.backend {
            Backend::SecretsManager(_) => METRICS_SECRETS_MANAGER,
            Backend::ParameterStore(_) => METRICS_PARAMETER_STORE,
        }
    }

    async fn get_secret(&self, r: &RemoteRef) -> Result<SecretBytes> {
        match &self.backend {
            Backend::SecretsManager(c) => self.sm_get(c, r).await,
            Backend::ParameterStore(c) => self.ssm_get(c, r).await,
        }
    }

    async fn get_secrets(&self, refs: &[RemoteRef]) -> Vec<Result<SecretBytes>> {
        match &self.backend {
            Backend::SecretsManager(c) => self.sm_get_many(c, refs).await,
            Backend::ParameterStore(c) => self.ssm_get_many(c, refs).await,
        }
    }

    async fn find(&self, f: &FindRef) -> Result<SecretMap> {
        match &self.backend {
            Backend::SecretsManager(c) => self.sm_find(c, f).await,
            Backend::ParameterStore(c) => self.ssm_find(c, f).await,
        }
    }

    async fn validate(&self) -> Result<()> {
        // As ESO: the store is ready when its credentials resolve (assumed roles included).
        self.credentials().await.map(|_| ())
    }

    fn property_mode(&self) -> PropertyMode {
        PropertyMode::EscapedDotsThenGjson
    }

    fn capabilities(&self) -> Capabilities {
        // ESO reports ReadWrite for both services.
        Capabilities::ReadWrite
    }
}

/// The batchable reads of `refs` (no version, no metadata) by distinct remote id (`id` maps a
/// key to it): the ids to fetch, and a function placing their results at every index that
/// asked for them. Indices left `None` are read one by one by the caller.
pub(crate) fn batch_plan(refs: &[RemoteRef], id: impl Fn(&str) -> String) -> BatchPlan {
    let ids: Vec<(usize, String)> = refs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.version.is_none() && !r.metadata)
        .map(|(i, r)| (i, id(&r.key)))
        .collect();
    BatchPlan {
        len: refs.len(),
        groups: group_indices(ids.iter().map(|(i, id)| (*i, id.as_str()))),
    }
}

pub(crate) struct BatchPlan {
    len: usize,
    groups: Vec<(String, Vec<usize>)>,
}

impl BatchPlan {
    /// The distinct ids to fetch in one batch.
    pub(crate) fn ids(&self) -> Vec<String> {
        self.groups.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Places the batch's results (aligned with `ids()`) at the indices that asked for them.
    pub(crate) fn scatter(
        &self,
        fetched: Vec<Result<SecretBytes>>,
    ) -> Vec<Option<Result<SecretBytes>>> {
        let mut out: Vec<Option<Result<SecretBytes>>> = vec![None; self.len];
        for ((_, idx), res) in self.groups.iter().zip(fetched) {
            for &i in idx {
                out[i] = Some(res.clone());
            }
        }
        out
    }
}

/// Splits `refs` into groups by key, keeping every index a key appears at.
pub(crate) fn group_indices<'a>(
    keys: impl Iterator<Item = (usize, &'a str)>,
) -> Vec<(String, Vec<usize>)> {
    let mut order: Vec<(String, Vec<usize>)> = Vec::new();
    let mut pos: BTreeMap<&'a str, usize> = BTreeMap::new();
    for (i, k) in keys {
        match pos.get(k) {
            Some(&p) => order[p].1.push(i),
            None => {
                pos.insert(k, order.len());
                order.push((k.to_string(), vec![i]));
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_json_is_go_shaped() {
        let mut m = BTreeMap::new();
        m.insert("b".to_string(), "<x&y>".to_string());
        m.insert("a".to_string(), "1".to_string());
        assert_eq!(
            tags_json(&m).expose(),
            br#"{"a":"1","b":"\u003cx\u0026y\u003e"}"#
        );
        assert_eq!(tags_json(&BTreeMap::new()).expose(), b"{}");
    }

    #[test]
    fn grouping_dedups() {
        let g = group_indices([(0, "a"), (1, "b"), (2, "a")].into_iter());
        assert_eq!(
            g,
            vec![("a".to_string(), vec![0, 2]), ("b".to_string(), vec![1])]
        );
    }
}
