//! `refsync render` against moto: Secrets Manager and Parameter Store stores with static keys
//! from a Secret manifest, one with an assumed role; the endpoint comes from the environment
//! (ESO's `AWS_*_ENDPOINT` variables, then the SDK's `AWS_ENDPOINT_URL`).

use base64::Engine;
use refsync_e2e::{manifest_dir, render};
use refsync_testenv::Moto;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn render_reads_secrets_manager_and_parameter_store_from_moto() {
    let moto = Moto::shared().await;
    let p = moto.unique_prefix("e2e-aws");
    for (name, value) in [
        (
            "db",
            r#"{"username":"admin","password":"pw-e2e","conn.url":"pg://db"}"#,
        ),
        ("app/a", "value-a"),
        ("app/b", "value-b"),
    ] {
        moto.sm_put(&format!("{p}/{name}"), value).await.unwrap();
    }
    moto.ssm_put(&format!("/{p}/feature"), "on").await.unwrap();

    let stores = format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: aws-creds
  namespace: shop
data:
  access-key: {akid}
  secret-access-key: {sak}
---
apiVersion: external-secrets.io/v1
kind: SecretStore
metadata:
  name: aws-sm
  namespace: shop
spec:
  provider:
    aws:
      service: SecretsManager
      region: us-east-1
      prefix: {p}/
      auth:
        secretRef:
          accessKeyIDSecretRef:
            name: aws-creds
            key: access-key
          secretAccessKeySecretRef:
            name: aws-creds
            key: secret-access-key
---
apiVersion: external-secrets.io/v1
kind: SecretStore
metadata:
  name: aws-sm-role
  namespace: shop
spec:
  provider:
    aws:
      service: SecretsManager
      region: us-east-1
      role: arn:aws:iam::123456789012:role/refsync-e2e
      auth:
        secretRef:
          accessKeyIDSecretRef:
            name: aws-creds
            key: access-key
          secretAccessKeySecretRef:
            name: aws-creds
            key: secret-access-key
---
apiVersion: external-secrets.io/v1
kind: SecretStore
metadata:
  name: aws-ps
  namespace: shop
spec:
  provider:
    aws:
      service: ParameterStore
      region: us-east-1
      auth:
        secretRef:
          accessKeyIDSecretRef:
            name: aws-creds
            key: access-key
          secretAccessKeySecretRef:
            name: aws-creds
            key: secret-access-key
---
apiVersion: external-secrets.io/v1
kind: SecretStore
metadata:
  name: aws-default-chain
  namespace: shop
spec:
  provider:
    aws:
      service: ParameterStore
      region: us-east-1
"#,
        akid = b64(moto.access_key_id()),
        sak = b64(moto.secret_access_key()),
    );
    let externals = format!(
        r#"apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata:
  name: db
  namespace: shop
spec:
  secretStoreRef:
    name: aws-sm
  data:
    - secretKey: username
      remoteRef:
        key: db
        property: username
    - secretKey: url
      remoteRef:
        key: db
        property: conn.url
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata:
  name: apps
  namespace: shop
spec:
  secretStoreRef:
    name: aws-sm-role
  data:
    - secretKey: password
      remoteRef:
        key: {p}/db
        property: password
  dataFrom:
    - find:
        path: {p}/app/
        name:
          regexp: ".*"
      rewrite:
        - regexp:
            source: "^.*/app/(.*)$"
            target: "app-$1"
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata:
  name: flags
  namespace: shop
spec:
  secretStoreRef:
    name: aws-ps
  data:
    - secretKey: feature
      remoteRef:
        key: /{p}/feature
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata:
  name: chain
  namespace: shop
spec:
  secretStoreRef:
    name: aws-default-chain
  data:
    - secretKey: feature
      remoteRef:
        key: /{p}/feature
"#
    );
    let dir = manifest_dir(&[
        ("stores.yaml", &stores),
        ("externalsecrets.yaml", &externals),
    ])
    .unwrap();

    let check = |r: &refsync_e2e::Rendered| {
        assert!(r.success, "render failed: {}", r.stderr);
        let db = &r.secrets["shop/db"];
        assert_eq!(db["username"], b"admin");
        assert_eq!(
            db["url"], b"pg://db",
            "a dotted property is a literal key first (ESO's AWS rule)"
        );
        assert_eq!(db.len(), 2);
        let apps = &r.secrets["shop/apps"];
        assert_eq!(apps["password"], b"pw-e2e");
        assert_eq!(apps["app-a"], b"value-a");
        assert_eq!(apps["app-b"], b"value-b");
        assert_eq!(apps.len(), 3);
        assert_eq!(r.secrets["shop/flags"]["feature"], b"on");
        assert_eq!(
            r.secrets["shop/chain"]["feature"], b"on",
            "no auth: the SDK's default chain (env keys)"
        );
        assert!(
            r.stderr.contains("4 ExternalSecret(s), 0 failed"),
            "{}",
            r.stderr
        );
        assert!(
            !r.stderr.contains(moto.secret_access_key())
                && !r.stdout.contains(moto.secret_access_key())
        );
    };

    // ESO's per-service endpoint variables.
    let endpoint = moto.endpoint().to_string();
    let eso_env = [
        ("AWS_SECRETSMANAGER_ENDPOINT", endpoint.clone()),
        ("AWS_SSM_ENDPOINT", endpoint.clone()),
        ("AWS_STS_ENDPOINT", endpoint.clone()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ("AWS_ACCESS_KEY_ID", moto.access_key_id().to_string()),
        (
            "AWS_SECRET_ACCESS_KEY",
            moto.secret_access_key().to_string(),
        ),
    ];
    let d = dir.path().to_path_buf();
    let r = tokio::task::spawn_blocking(move || render(&d, &eso_env))
        .await
        .unwrap()
        .unwrap();
    check(&r);

    // The SDK's standard variable alone.
    let sdk_env = [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ("AWS_ACCESS_KEY_ID", moto.access_key_id().to_string()),
        (
            "AWS_SECRET_ACCESS_KEY",
            moto.secret_access_key().to_string(),
        ),
    ];
    let d = dir.path().to_path_buf();
    let r = tokio::task::spawn_blocking(move || render(&d, &sdk_env))
        .await
        .unwrap()
        .unwrap();
    check(&r);
}
