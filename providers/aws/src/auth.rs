//! Credentials: static keys from a Secret, web identity (IRSA) with a ServiceAccount token,
//! the SDK's default chain, then `additionalRoles` and `role` assumed in a chain. Every link is
//! cached until shortly before it expires, so reads do not call STS.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_sdk_sts::types::Tag;
use refsync_core::{CallObserver, Error, SecretReader};

use crate::errors::classify;

pub(crate) const STS: &str = "AWS/STS";

/// How long before expiry cached credentials are renewed.
const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);

/// Caches another provider's credentials until `REFRESH_BEFORE` their expiry; one refresh at a
/// time (concurrent callers wait for it instead of all calling STS).
pub(crate) struct Cached {
    inner: SharedCredentialsProvider,
    current: tokio::sync::Mutex<Option<Credentials>>,
}

impl fmt::Debug for Cached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cached").finish_non_exhaustive()
    }
}

impl Cached {
    pub(crate) fn new(inner: impl ProvideCredentials + 'static) -> Self {
        Cached {
            inner: SharedCredentialsProvider::new(inner),
            current: tokio::sync::Mutex::new(None),
        }
    }

    pub(crate) async fn get(&self) -> Result<Credentials, CredentialsError> {
        let mut cur = self.current.lock().await;
        if let Some(c) = cur.as_ref()
            && fresh(c, SystemTime::now())
        {
            return Ok(c.clone());
        }
        let c = self.inner.provide_credentials().await?;
        *cur = Some(c.clone());
        Ok(c)
    }
}

fn fresh(c: &Credentials, now: SystemTime) -> bool {
    match c.expiry() {
        None => true,
        Some(exp) => exp > now + REFRESH_BEFORE,
    }
}

impl ProvideCredentials for Cached {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.get())
    }
}

fn sts_credentials(
    c: Option<&aws_sdk_sts::types::Credentials>,
    source: &'static str,
) -> Result<Credentials, CredentialsError> {
    let c = c.ok_or_else(|| {
        CredentialsError::provider_error(Error::auth("STS returned no credentials"))
    })?;
    let expiry = SystemTime::try_from(c.expiration).map_err(|_| {
        CredentialsError::provider_error(Error::auth("STS returned an invalid expiration"))
    })?;
    Ok(Credentials::new(
        c.access_key_id.clone(),
        c.secret_access_key.clone(),
        Some(c.session_token.clone()),
        Some(expiry),
        source,
    ))
}

fn session_name(base: &str) -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{base}-{secs}")
}

/// `sts:AssumeRole` with the previous link's credentials.
pub(crate) struct AssumeRole {
    pub(crate) sts: aws_sdk_sts::Client,
    pub(crate) role: String,
    pub(crate) external_id: Option<String>,
    pub(crate) tags: Vec<Tag>,
    pub(crate) transitive_tag_keys: Vec<String>,
    pub(crate) calls: Arc<dyn CallObserver>,
}

impl fmt::Debug for AssumeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssumeRole")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl AssumeRole {
    async fn load(&self) -> Result<Credentials, CredentialsError> {
        let mut req = self
            .sts
            .assume_role()
            .role_arn(&self.role)
            .role_session_name(session_name("refsync"))
            .set_external_id(self.external_id.clone());
        if !self.tags.is_empty() {
            req = req.set_tags(Some(self.tags.clone()));
            if !self.transitive_tag_keys.is_empty() {
                req = req.set_transitive_tag_keys(Some(self.transitive_tag_keys.clone()));
            }
        }
        let out = req.send().await;
        self.calls.observe(STS, "AssumeRole", out.is_ok());
        match out {
            Ok(o) => sts_credentials(o.credentials(), "refsync-assume-role"),
            Err(e) => Err(CredentialsError::provider_error(classify(
                STS,
                "AssumeRole",
                &self.role,
                &e,
            ))),
        }
    }
}

impl ProvideCredentials for AssumeRole {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.load())
    }
}

/// `sts:AssumeRoleWithWebIdentity` with a fresh ServiceAccount token from the reader.
pub(crate) struct WebIdentity {
    pub(crate) sts: aws_sdk_sts::Client,
    pub(crate) role: String,
    pub(crate) reader: Arc<dyn SecretReader>,
    pub(crate) namespace: String,
    pub(crate) service_account: String,
    pub(crate) audiences: Vec<String>,
    pub(crate) calls: Arc<dyn CallObserver>,
}

impl fmt::Debug for WebIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebIdentity")
            .field("role", &self.role)
            .field(
                "service_account",
                &format_args!("{}/{}", self.namespace, self.service_account),
            )
            .finish_non_exhaustive()
    }
}

impl WebIdentity {
    async fn load(&self) -> Result<Credentials, CredentialsError> {
        let token = self
            .reader
            .service_account_token(
                &self.namespace,
                &self.service_account,
                &self.audiences,
                None,
            )
            .await
            .map_err(|e| {
                CredentialsError::provider_error(e.context(format!(
                    "spec.provider.aws.auth.jwt.serviceAccountRef: token for ServiceAccount {}/{}",
                    self.namespace, self.service_account
                )))
            })?;
        let token = std::str::from_utf8(token.expose())
            .map_err(|_| {
                CredentialsError::provider_error(Error::auth(
                    "the ServiceAccount token is not UTF-8",
                ))
            })?
            .to_string();
        let out = self
            .sts
            .assume_role_with_web_identity()
            .role_arn(&self.role)
            .role_session_name("external-secrets-provider-aws")
            .web_identity_token(token)
            .send()
            .await;
        self.calls
            .observe(STS, "AssumeRoleWithWebIdentity", out.is_ok());
        match out {
            Ok(o) => sts_credentials(o.credentials(), "refsync-web-identity"),
            Err(e) => Err(CredentialsError::provider_error(classify(
                STS,
                "AssumeRoleWithWebIdentity",
                &self.role,
                &e,
            ))),
        }
    }
}

impl ProvideCredentials for WebIdentity {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.load())
    }
}

/// An STS client for `conf`, with `creds` (None: unsigned, for web identity) and the
/// `AWS_STS_ENDPOINT` override.
pub(crate) fn sts_client(
    conf: &SdkConfig,
    creds: Option<SharedCredentialsProvider>,
    endpoint: Option<&str>,
) -> aws_sdk_sts::Client {
    let mut b = aws_sdk_sts::config::Builder::from(conf);
    match creds {
        Some(c) => b = b.credentials_provider(c),
        None => b = b.allow_no_auth(),
    }
    if let Some(e) = endpoint {
        b = b.endpoint_url(e);
    }
    aws_sdk_sts::Client::from_conf(b.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness() {
        let now = SystemTime::now();
        let c = |exp: Option<SystemTime>| Credentials::new("a", "b", None, exp, "t");
        assert!(fresh(&c(None), now));
        assert!(fresh(&c(Some(now + Duration::from_secs(3600))), now));
        assert!(!fresh(&c(Some(now + Duration::from_secs(60))), now));
        assert!(!fresh(&c(Some(now - Duration::from_secs(60))), now));
    }

    #[derive(Debug)]
    struct Counting(std::sync::atomic::AtomicU32, Duration);
    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            future::ProvideCredentials::ready(Ok(Credentials::new(
                format!("AK{n}"),
                "s",
                None,
                Some(SystemTime::now() + self.1),
                "t",
            )))
        }
    }

    #[tokio::test]
    async fn cache_renews_near_expiry_only() {
        let long = Cached::new(Counting(Default::default(), Duration::from_secs(3600)));
        assert_eq!(long.get().await.unwrap().access_key_id(), "AK0");
        assert_eq!(long.get().await.unwrap().access_key_id(), "AK0");
        let short = Cached::new(Counting(Default::default(), Duration::from_secs(10)));
        assert_eq!(short.get().await.unwrap().access_key_id(), "AK0");
        assert_eq!(short.get().await.unwrap().access_key_id(), "AK1");
    }
}
