//! The AWS provider against a real moto server (refsync-testenv): conformance for both
//! services, auth flows through moto's STS, batch call counts, and ESO's read semantics.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_secretsmanager::primitives::Blob;
use refsync_core::api::{
    AwsAuth, AwsAuthSecretRef, AwsJwtAuth, AwsProvider, AwsServiceType, AwsTag, SecretKeySelector,
    SecretStoreProvider, SecretStoreSpec, ServiceAccountSelector, StoreKind,
};
use refsync_core::conformance::{self, Backend, Features};
use refsync_core::{
    CallCounter, Error, ErrorKind, FindRef, Provider, ProviderFactory, RemoteRef, Result,
    SecretBytes, SecretMap, SecretReader, StoreContext,
};
use refsync_provider_aws::{Aws, AwsFactory, Endpoints};
use refsync_testenv::Moto;

const NS: &str = "team-a";

/// Secrets and ServiceAccount tokens in memory, as the render front end would serve them.
#[derive(Default)]
struct MemReader {
    secrets: BTreeMap<(String, String), SecretMap>,
    token: Option<String>,
    token_requests: Mutex<Vec<(String, String, Vec<String>)>>,
}

#[async_trait]
impl SecretReader for MemReader {
    async fn secret_key(&self, namespace: &str, name: &str, key: &str) -> Result<SecretBytes> {
        self.secrets
            .get(&(namespace.to_string(), name.to_string()))
            .and_then(|d| d.get(key))
            .cloned()
            .ok_or_else(|| Error::not_found(format!("Secret {namespace}/{name} has no key {key}")))
    }
    async fn secret_data(&self, namespace: &str, name: &str) -> Result<SecretMap> {
        self.secrets
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| Error::not_found(format!("Secret {namespace}/{name} not found")))
    }
    async fn config_map_key(&self, namespace: &str, name: &str, _key: &str) -> Result<String> {
        Err(Error::not_found(format!(
            "ConfigMap {namespace}/{name} not found"
        )))
    }
    async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        audiences: &[String],
        _expiration_seconds: Option<i64>,
    ) -> Result<SecretBytes> {
        self.token_requests.lock().unwrap().push((
            namespace.into(),
            name.into(),
            audiences.to_vec(),
        ));
        self.token
            .clone()
            .map(SecretBytes::from)
            .ok_or_else(|| Error::unsupported("no token"))
    }
}

fn reader_with_keys(moto: &Moto) -> MemReader {
    let mut data = SecretMap::new();
    data.insert("access-key".into(), SecretBytes::from(moto.access_key_id()));
    data.insert(
        "secret-access-key".into(),
        SecretBytes::from(format!("{}\n", moto.secret_access_key())),
    );
    let mut r = MemReader::default();
    r.secrets.insert((NS.into(), "awssm-secret".into()), data);
    r
}

fn sel(name: &str, key: &str) -> Option<SecretKeySelector> {
    Some(SecretKeySelector {
        name: Some(name.into()),
        namespace: None,
        key: Some(key.into()),
    })
}

fn static_auth() -> Option<AwsAuth> {
    Some(AwsAuth {
        secret_ref: Some(AwsAuthSecretRef {
            access_key_id_secret_ref: sel("awssm-secret", "access-key"),
            secret_access_key_secret_ref: sel("awssm-secret", "secret-access-key"),
            session_token_secret_ref: None,
        }),
        jwt: None,
    })
}

fn spec(service: AwsServiceType, f: impl FnOnce(&mut AwsProvider)) -> SecretStoreSpec {
    let mut aws = AwsProvider {
        service,
        region: "us-east-1".into(),
        auth: static_auth(),
        ..Default::default()
    };
    f(&mut aws);
    SecretStoreSpec {
        provider: SecretStoreProvider {
            aws: Some(aws),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn ctx(reader: MemReader, calls: Arc<CallCounter>) -> StoreContext {
    StoreContext {
        kind: StoreKind::SecretStore,
        name: "aws-store".into(),
        namespace: NS.into(),
        reader: Arc::new(reader),
        calls,
    }
}

async fn build(
    moto: &Moto,
    spec: &SecretStoreSpec,
    reader: MemReader,
    calls: Arc<CallCounter>,
) -> Result<Arc<Aws>> {
    Aws::build(spec, &ctx(reader, calls), &Endpoints::all(moto.endpoint())).await
}

async fn admin_conf(moto: &Moto) -> aws_config::SdkConfig {
    let creds = aws_credential_types::Credentials::new(
        moto.access_key_id(),
        moto.secret_access_key(),
        None,
        None,
        "test",
    );
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(moto.region()))
        .endpoint_url(moto.endpoint())
        .credentials_provider(creds)
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .load()
        .await
}

async fn sm_admin(moto: &Moto) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&admin_conf(moto).await)
}

async fn ssm_admin(moto: &Moto) -> aws_sdk_ssm::Client {
    aws_sdk_ssm::Client::new(&admin_conf(moto).await)
}

/// Creates or updates a Secrets Manager secret; returns its new version id.
async fn sm_put(
    sm: &aws_sdk_secretsmanager::Client,
    name: &str,
    value: &[u8],
    tags: &BTreeMap<String, String>,
) -> String {
    let tag_list: Vec<_> = tags
        .iter()
        .map(|(k, v)| {
            aws_sdk_secretsmanager::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
        })
        .collect();
    let text = std::str::from_utf8(value).ok();
    let mut create = sm
        .create_secret()
        .name(name)
        .set_tags(if tag_list.is_empty() {
            None
        } else {
            Some(tag_list)
        });
    create = match text {
        Some(t) => create.secret_string(t),
        None => create.secret_binary(Blob::new(value)),
    };
    match create.send().await {
        Ok(o) => o.version_id().unwrap().to_string(),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_exists_exception()) =>
        {
            let mut put = sm.put_secret_value().secret_id(name);
            put = match text {
                Some(t) => put.secret_string(t),
                None => put.secret_binary(Blob::new(value)),
            };
            put.send()
                .await
                .expect("PutSecretValue")
                .version_id()
                .unwrap()
                .to_string()
        }
        Err(e) => panic!("CreateSecret {name}: {e:?}"),
    }
}

/// Creates or overwrites a SecureString parameter; returns its version.
async fn ssm_put(
    ssm: &aws_sdk_ssm::Client,
    name: &str,
    value: &str,
    tags: &BTreeMap<String, String>,
) -> i64 {
    use aws_sdk_ssm::types::{ParameterType, Tag};
    let tag_list: Vec<Tag> = tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build().unwrap())
        .collect();
    let first = ssm
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(ParameterType::SecureString)
        .set_tags(if tag_list.is_empty() {
            None
        } else {
            Some(tag_list)
        })
        .send()
        .await;
    match first {
        Ok(o) => o.version(),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_parameter_already_exists()) =>
        {
            ssm.put_parameter()
                .name(name)
                .value(value)
                .r#type(ParameterType::SecureString)
                .overwrite(true)
                .send()
                .await
                .expect("PutParameter overwrite")
                .version()
        }
        Err(e) => panic!("PutParameter {name}: {e:?}"),
    }
}

struct SmBackend {
    moto: &'static Moto,
    prefix: String,
    sm: aws_sdk_secretsmanager::Client,
}

#[async_trait]
impl Backend for SmBackend {
    fn prefix(&self) -> String {
        self.prefix.clone()
    }
    async fn put(
        &self,
        key: &str,
        value: &[u8],
        tags: &BTreeMap<String, String>,
    ) -> Result<Option<String>> {
        Ok(Some(format!(
            "uuid/{}",
            sm_put(&self.sm, key, value, tags).await
        )))
    }
    async fn provider(&self) -> Result<Arc<dyn Provider>> {
        let p: Arc<dyn Provider> = build(
            self.moto,
            &spec(AwsServiceType::SecretsManager, |_| {}),
            reader_with_keys(self.moto),
            Default::default(),
        )
        .await?;
        Ok(p)
    }
    fn features(&self) -> Features {
        Features {
            find_by_tags: true,
            find_by_path: true,
            versions: true,
            metadata: true,
        }
    }
}

struct SsmBackend {
    moto: &'static Moto,
    prefix: String,
    ssm: aws_sdk_ssm::Client,
}

#[async_trait]
impl Backend for SsmBackend {
    fn prefix(&self) -> String {
        self.prefix.clone()
    }
    async fn put(
        &self,
        key: &str,
        value: &[u8],
        tags: &BTreeMap<String, String>,
    ) -> Result<Option<String>> {
        let v = std::str::from_utf8(value).map_err(|_| Error::invalid("SSM values are text"))?;
        Ok(Some(ssm_put(&self.ssm, key, v, tags).await.to_string()))
    }
    async fn provider(&self) -> Result<Arc<dyn Provider>> {
        let p: Arc<dyn Provider> = build(
            self.moto,
            &spec(AwsServiceType::ParameterStore, |_| {}),
            reader_with_keys(self.moto),
            Default::default(),
        )
        .await?;
        Ok(p)
    }
    fn features(&self) -> Features {
        Features {
            find_by_tags: true,
            find_by_path: true,
            versions: true,
            metadata: true,
        }
    }
}

#[tokio::test]
async fn conformance_secrets_manager() {
    let moto = Moto::shared().await;
    let b = SmBackend {
        moto,
        prefix: format!("{}/", moto.unique_prefix("conf-sm")),
        sm: sm_admin(moto).await,
    };
    let report = conformance::run(&b).await;
    assert!(report.not_supported.is_empty(), "{report:?}");
}

#[tokio::test]
async fn conformance_parameter_store() {
    let moto = Moto::shared().await;
    // Parameter paths start with `/` so find by name (GetParametersByPath under `/`) sees them.
    let b = SsmBackend {
        moto,
        prefix: format!("/{}/", moto.unique_prefix("conf-ps")),
        ssm: ssm_admin(moto).await,
    };
    let report = conformance::run(&b).await;
    assert!(report.not_supported.is_empty(), "{report:?}");
}

#[tokio::test]
async fn secrets_manager_batches_twenty_ids_per_call() {
    let moto = Moto::shared().await;
    let sm = sm_admin(moto).await;
    let p = moto.unique_prefix("batch-sm");
    let n = 45;
    for i in 0..n {
        sm_put(
            &sm,
            &format!("{p}/k{i}"),
            format!("v{i}").as_bytes(),
            &BTreeMap::new(),
        )
        .await;
    }
    let calls = Arc::new(CallCounter::default());
    let aws = build(
        moto,
        &spec(AwsServiceType::SecretsManager, |_| {}),
        reader_with_keys(moto),
        calls.clone(),
    )
    .await
    .unwrap();
    let mut refs: Vec<RemoteRef> = (0..n)
        .map(|i| RemoteRef::new(format!("{p}/k{i}")))
        .collect();
    refs.push(RemoteRef::new(format!("{p}/missing")));
    refs.push(RemoteRef::new(format!("{p}/k3"))); // a duplicate is read once
    let got = aws.get_secrets(&refs).await;
    assert_eq!(got.len(), n + 2);
    for (i, g) in got.iter().take(n).enumerate() {
        assert_eq!(g.as_ref().unwrap().expose(), format!("v{i}").as_bytes());
    }
    assert_eq!(
        got[n].as_ref().unwrap_err().kind,
        ErrorKind::NotFound,
        "{:?}",
        got[n]
    );
    assert_eq!(got[n + 1].as_ref().unwrap().expose(), b"v3");
    // 46 distinct ids → ⌈46/20⌉ = 3 calls; ESO would make 46 GetSecretValue calls.
    assert_eq!(calls.count("BatchGetSecretValue"), 3);
    assert_eq!(calls.count("GetSecretValue"), 0);
    assert_eq!(calls.total(), 3);

    // A versioned ref falls back to its own GetSecretValue.
    let calls2 = Arc::new(CallCounter::default());
    let aws = build(
        moto,
        &spec(AwsServiceType::SecretsManager, |_| {}),
        reader_with_keys(moto),
        calls2.clone(),
    )
    .await
    .unwrap();
    let refs = vec![
        RemoteRef::new(format!("{p}/k1")),
        RemoteRef {
            version: Some("AWSCURRENT".into()),
            ..RemoteRef::new(format!("{p}/k2"))
        },
    ];
    let got = aws.get_secrets(&refs).await;
    assert_eq!(got[0].as_ref().unwrap().expose(), b"v1");
    assert_eq!(got[1].as_ref().unwrap().expose(), b"v2");
    assert_eq!(
        (
            calls2.count("BatchGetSecretValue"),
            calls2.count("GetSecretValue")
        ),
        (1, 1)
    );
}

#[tokio::test]
async fn parameter_store_batches_ten_names_per_call() {
    let moto = Moto::shared().await;
    let ssm = ssm_admin(moto).await;
    let p = format!("/{}", moto.unique_prefix("batch-ps"));
    let n = 25;
    for i in 0..n {
        ssm_put(
            &ssm,
            &format!("{p}/k{i}"),
            &format!("v{i}"),
            &BTreeMap::new(),
        )
        .await;
    }
    let calls = Arc::new(CallCounter::default());
    let aws = build(
        moto,
        &spec(AwsServiceType::ParameterStore, |_| {}),
        reader_with_keys(moto),
        calls.clone(),
    )
    .await
    .unwrap();
    let mut refs: Vec<RemoteRef> = (0..n)
        .map(|i| RemoteRef::new(format!("{p}/k{i}")))
        .collect();
    refs.push(RemoteRef::new(format!("{p}/missing")));
    let got = aws.get_secrets(&refs).await;
    for (i, g) in got.iter().take(n).enumerate() {
        assert_eq!(g.as_ref().unwrap().expose(), format!("v{i}").as_bytes());
    }
    assert_eq!(got[n].as_ref().unwrap_err().kind, ErrorKind::NotFound);
    // 26 names → ⌈26/10⌉ = 3 calls instead of 26 GetParameter.
    assert_eq!(calls.count("GetParameters"), 3);
    assert_eq!(calls.count("GetParameter"), 0);
    assert_eq!(calls.total(), 3);
}

#[tokio::test]
async fn assume_role_chain_uses_the_assumed_credentials() {
    let moto = Moto::shared().await;
    let sm = sm_admin(moto).await;
    let p = moto.unique_prefix("assume");
    sm_put(
        &sm,
        &format!("{p}/db"),
        br#"{"password":"pw-1"}"#,
        &BTreeMap::new(),
    )
    .await;

    let calls = Arc::new(CallCounter::default());
    let s = spec(AwsServiceType::SecretsManager, |a| {
        a.additional_roles = vec!["arn:aws:iam::123456789012:role/refsync-hop".into()];
        a.role = Some("arn:aws:iam::123456789012:role/refsync-reader".into());
        a.external_id = Some("ext-123".into());
        a.session_tags = vec![AwsTag {
            key: "team".into(),
            value: "a".into(),
        }];
        a.transitive_tag_keys = vec!["team".into()];
    });
    let aws = build(moto, &s, reader_with_keys(moto), calls.clone())
        .await
        .unwrap();
    aws.validate().await.unwrap();
    let arn = aws.caller_identity().await.unwrap();
    assert!(
        arn.contains(":assumed-role/refsync-reader/"),
        "caller identity: {arn}"
    );
    let akid = aws.access_key_id().await.unwrap();
    assert_ne!(
        akid,
        moto.access_key_id(),
        "reads must not use the base keys"
    );
    assert!(
        akid.starts_with("ASIA"),
        "moto's assumed-role keys start with ASIA: {akid}"
    );

    for _ in 0..3 {
        let v = aws
            .get_secret(&RemoteRef::new(format!("{p}/db")))
            .await
            .unwrap();
        assert_eq!(v.expose(), br#"{"password":"pw-1"}"#);
    }
    // Two links, each assumed once and cached across validate, identity and reads.
    assert_eq!(calls.count("AssumeRole"), 2);
}

#[tokio::test]
async fn web_identity_exchanges_the_service_account_token() {
    let moto = Moto::shared().await;
    let ssm = ssm_admin(moto).await;
    let p = format!("/{}", moto.unique_prefix("irsa"));
    ssm_put(&ssm, &format!("{p}/token"), "irsa-value", &BTreeMap::new()).await;

    let mut reader = MemReader::default();
    // A JWT-shaped token made at run time; moto accepts any.
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    reader.token = Some(format!(
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0ZXN0LXtoken{n}.c2ln"
    ));
    let s = spec(AwsServiceType::ParameterStore, |a| {
        a.auth = Some(AwsAuth {
            secret_ref: None,
            jwt: Some(AwsJwtAuth {
                service_account_ref: Some(ServiceAccountSelector {
                    name: "external-secrets".into(),
                    namespace: None,
                    audiences: Some(vec!["extra-aud".into()]),
                }),
            }),
        });
        a.role = Some("arn:aws:iam::123456789012:role/refsync-irsa".into());
    });
    let calls = Arc::new(CallCounter::default());
    let reader = Arc::new(reader);
    let c = StoreContext {
        kind: StoreKind::SecretStore,
        name: "irsa".into(),
        namespace: NS.into(),
        reader: reader.clone(),
        calls: calls.clone(),
    };
    let aws = Aws::build(&s, &c, &Endpoints::all(moto.endpoint()))
        .await
        .unwrap();
    let v = aws
        .get_secret(&RemoteRef::new(format!("{p}/token")))
        .await
        .unwrap();
    assert_eq!(v.expose(), b"irsa-value");
    let arn = aws.caller_identity().await.unwrap();
    assert!(
        arn.contains(":assumed-role/refsync-irsa/"),
        "caller identity: {arn}"
    );
    assert_eq!(calls.count("AssumeRoleWithWebIdentity"), 1);
    assert_eq!(calls.count("AssumeRole"), 0);
    let reqs = reader.token_requests.lock().unwrap().clone();
    assert_eq!(
        reqs,
        vec![(
            NS.to_string(),
            "external-secrets".to_string(),
            vec!["sts.amazonaws.com".to_string(), "extra-aud".to_string()]
        )]
    );
}

#[tokio::test]
async fn secrets_manager_semantics() {
    let moto = Moto::shared().await;
    let sm = sm_admin(moto).await;
    let p = moto.unique_prefix("sem-sm");
    let calls = Arc::new(CallCounter::default());

    // Binary secrets come back raw.
    let bin: &[u8] = &[0, 159, 146, 150, 255, 10];
    sm_put(&sm, &format!("{p}/bin"), bin, &BTreeMap::new()).await;
    // Versions: stages and uuid/<VersionId>.
    let v1 = sm_put(&sm, &format!("{p}/ver"), b"one", &BTreeMap::new()).await;
    sm_put(&sm, &format!("{p}/ver"), b"two", &BTreeMap::new()).await;
    // Metadata: tags as a JSON object.
    let tags: BTreeMap<String, String> = [
        ("env".to_string(), "prod".to_string()),
        ("owner".to_string(), "a&b".to_string()),
    ]
    .into();
    sm_put(&sm, &format!("{p}/tagged"), b"x", &tags).await;
    // Path find.
    sm_put(&sm, &format!("{p}/app/one"), b"1", &BTreeMap::new()).await;
    sm_put(&sm, &format!("{p}/app/two"), b"2", &BTreeMap::new()).await;
    sm_put(&sm, &format!("{p}/other/three"), b"3", &BTreeMap::new()).await;

    // The store prefix is prepended to keys.
    let s = spec(AwsServiceType::SecretsManager, |a| {
        a.prefix = Some(format!("{p}/"))
    });
    let aws = build(moto, &s, reader_with_keys(moto), calls.clone())
        .await
        .unwrap();
    assert_eq!(aws.metrics_name(), "AWS/SecretsManager");
    assert_eq!(
        aws.get_secret(&RemoteRef::new("bin"))
            .await
            .unwrap()
            .expose(),
        bin
    );
    assert_eq!(
        aws.get_secrets(&[RemoteRef::new("bin")]).await[0]
            .as_ref()
            .unwrap()
            .expose(),
        bin
    );
    let at = |v: &str| RemoteRef {
        version: Some(v.into()),
        ..RemoteRef::new("ver")
    };
    assert_eq!(
        aws.get_secret(&RemoteRef::new("ver"))
            .await
            .unwrap()
            .expose(),
        b"two"
    );
    assert_eq!(
        aws.get_secret(&at("AWSPREVIOUS")).await.unwrap().expose(),
        b"one"
    );
    assert_eq!(
        aws.get_secret(&at(&format!("uuid/{v1}")))
            .await
            .unwrap()
            .expose(),
        b"one"
    );
    assert_eq!(
        aws.get_secret(&at("uuid/00000000-0000-0000-0000-00000000dead"))
            .await
            .unwrap_err()
            .kind,
        ErrorKind::NotFound
    );
    let md = aws
        .get_secret(&RemoteRef {
            metadata: true,
            ..RemoteRef::new("tagged")
        })
        .await
        .unwrap();
    assert_eq!(md.expose(), br#"{"env":"prod","owner":"a\u0026b"}"#);
    assert_eq!(calls.count("DescribeSecret"), 1);

    // By ARN (no prefix store).
    let arn = sm
        .describe_secret()
        .secret_id(format!("{p}/ver"))
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    let plain = build(
        moto,
        &spec(AwsServiceType::SecretsManager, |_| {}),
        reader_with_keys(moto),
        calls.clone(),
    )
    .await
    .unwrap();
    assert_eq!(
        plain
            .get_secret(&RemoteRef::new(arn.clone()))
            .await
            .unwrap()
            .expose(),
        b"two"
    );
    let singles = calls.count("GetSecretValue");
    assert_eq!(
        plain.get_secrets(&[RemoteRef::new(arn)]).await[0]
            .as_ref()
            .unwrap()
            .expose(),
        b"two"
    );
    assert_eq!(
        calls.count("GetSecretValue"),
        singles,
        "an ARN is answered by the batch"
    );

    // find: name regexp with a path filter (BatchGetSecretValue with filters).
    let before = calls.count("BatchGetSecretValue");
    let found = plain
        .find(&FindRef {
            path: Some(format!("{p}/app/")),
            name_regexp: Some(".*".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        found.keys().cloned().collect::<Vec<_>>(),
        vec![format!("{p}/app/one"), format!("{p}/app/two")]
    );
    assert_eq!(calls.count("BatchGetSecretValue"), before + 1);
    assert_eq!(calls.count("ListSecrets"), 0);
    // find: name regexp without a path: ListSecrets, then values in one batch, not one call each.
    let before = calls.count("BatchGetSecretValue");
    let found = plain
        .find(&FindRef {
            name_regexp: Some(format!("^{}/(app|other)/", regex_escape(&p))),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(found.len(), 3);
    assert_eq!(found[&format!("{p}/other/three")].expose(), b"3");
    assert_eq!(calls.count("BatchGetSecretValue"), before + 1);
    assert_eq!(
        calls.count("GetSecretValue"),
        singles,
        "find reads values in batches only"
    );
    // find: tags.
    let found = plain
        .find(&FindRef {
            tags: tags.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        found.keys().cloned().collect::<Vec<_>>(),
        vec![format!("{p}/tagged")]
    );
    // find needs a name or tags.
    let e = plain
        .find(&FindRef {
            path: Some("x".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}

#[tokio::test]
async fn parameter_store_semantics() {
    let moto = Moto::shared().await;
    let ssm = ssm_admin(moto).await;
    let p = format!("/{}", moto.unique_prefix("sem-ps"));
    let tags: BTreeMap<String, String> = [("env".to_string(), "prod".to_string())].into();
    ssm_put(
        &ssm,
        &format!("{p}/app/db"),
        r#"{"a.b":"dotted","a":{"b":"nested"}}"#,
        &tags,
    )
    .await;
    ssm_put(&ssm, &format!("{p}/app/db"), r#"{"v":2}"#, &BTreeMap::new()).await;
    ssm_put(&ssm, &format!("{p}/app/deep/x"), "x", &BTreeMap::new()).await;
    ssm_put(&ssm, &format!("{p}/other"), "o", &BTreeMap::new()).await;

    let calls = Arc::new(CallCounter::default());
    let s = spec(AwsServiceType::ParameterStore, |a| {
        a.prefix = Some(format!("{p}/"))
    });
    let aws = build(moto, &s, reader_with_keys(moto), calls.clone())
        .await
        .unwrap();
    assert_eq!(aws.metrics_name(), "AWS/ParameterStore");
    assert_eq!(
        aws.get_secret(&RemoteRef::new("app/db"))
            .await
            .unwrap()
            .expose(),
        br#"{"v":2}"#
    );
    let v1 = RemoteRef {
        version: Some("1".into()),
        ..RemoteRef::new("app/db")
    };
    let old = aws.get_secret(&v1).await.unwrap();
    assert_eq!(
        refsync_core::convert::property(old.expose(), "a.b", aws.property_mode()).unwrap(),
        b"dotted"
    );
    let v9 = RemoteRef {
        version: Some("9".into()),
        ..RemoteRef::new("app/db")
    };
    assert_eq!(
        aws.get_secret(&v9).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    let md = aws
        .get_secret(&RemoteRef {
            metadata: true,
            ..RemoteRef::new("app/db")
        })
        .await
        .unwrap();
    assert_eq!(md.expose(), br#"{"env":"prod"}"#);
    assert_eq!(calls.count("ListTagsForResource"), 1);

    // find by path, recursive, names matched.
    let found = aws
        .find(&FindRef {
            path: Some(format!("{p}/app")),
            name_regexp: Some(".*".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        found.keys().cloned().collect::<Vec<_>>(),
        vec![format!("{p}/app/db"), format!("{p}/app/deep/x")]
    );
    assert!(calls.count("GetParametersByPath") >= 1);
    // find by tags (DescribeParameters, then values by GetParameters).
    let before = calls.count("GetParameters");
    let found = aws
        .find(&FindRef {
            path: Some(p.clone()),
            tags: tags.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        found.keys().cloned().collect::<Vec<_>>(),
        vec![format!("{p}/app/db")]
    );
    assert_eq!(found[&format!("{p}/app/db")].expose(), br#"{"v":2}"#);
    assert_eq!(calls.count("GetParameters"), before + 1);
}

#[tokio::test]
async fn store_configuration_errors() {
    let moto = Moto::shared().await;
    // A missing credentials Secret fails the store and names the field.
    let e = build(
        moto,
        &spec(AwsServiceType::SecretsManager, |_| {}),
        MemReader::default(),
        Default::default(),
    )
    .await
    .unwrap_err();
    assert!(
        e.message
            .contains("spec.provider.aws.auth.secretRef.accessKeyIDSecretRef"),
        "{e}"
    );
    // A missing selector field.
    let s = spec(AwsServiceType::SecretsManager, |a| {
        a.auth
            .as_mut()
            .unwrap()
            .secret_ref
            .as_mut()
            .unwrap()
            .secret_access_key_secret_ref = None;
    });
    let e = build(moto, &s, reader_with_keys(moto), Default::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.message.contains("secretAccessKeySecretRef"), "{e}");
    // CertificateManager is not implemented.
    let s = spec(AwsServiceType::CertificateManager, |_| {});
    let e = build(moto, &s, reader_with_keys(moto), Default::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported);
    // jwt needs the role.
    let s = spec(AwsServiceType::SecretsManager, |a| {
        a.auth = Some(AwsAuth {
            secret_ref: None,
            jwt: Some(AwsJwtAuth {
                service_account_ref: Some(ServiceAccountSelector {
                    name: "sa".into(),
                    namespace: None,
                    audiences: None,
                }),
            }),
        })
    });
    let e = build(moto, &s, reader_with_keys(moto), Default::default())
        .await
        .unwrap_err();
    assert!(e.message.contains("spec.provider.aws.role"), "{e}");
    // An unreachable endpoint is Transient, and names no credential.
    let aws = Aws::build(
        &spec(AwsServiceType::SecretsManager, |_| {}),
        &ctx(reader_with_keys(moto), Default::default()),
        &Endpoints::all("http://127.0.0.1:9"),
    )
    .await
    .unwrap();
    let e = aws.get_secret(&RemoteRef::new("x")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(!format!("{e:?}").contains(moto.secret_access_key()));
    // A failing link of the role chain surfaces with its own kind and operation.
    let s = spec(AwsServiceType::SecretsManager, |a| {
        a.role = Some("arn:aws:iam::123456789012:role/r".into())
    });
    let eps = Endpoints {
        sts: Some("http://127.0.0.1:9".into()),
        ..Endpoints::all(moto.endpoint())
    };
    let aws = Aws::build(&s, &ctx(reader_with_keys(moto), Default::default()), &eps)
        .await
        .unwrap();
    let e = aws.get_secret(&RemoteRef::new("x")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains("AssumeRole"), "{e}");
    let e = aws.validate().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    // The factory registers under `aws`.
    assert_eq!(AwsFactory.key(), "aws");
}
