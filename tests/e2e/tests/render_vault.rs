//! `refsync render` against the real OpenBao dev server: a token store and an AppRole store
//! (credentials in `v1/Secret` manifests), with properties, a literal dotted key, a whole
//! document, an old version, metadata, `dataFrom.extract` and `dataFrom.find`.

use base64::Engine;
use refsync_e2e::{manifest_dir, render};
use refsync_testenv::OpenBao;
use reqwest::Method;
use serde_json::{Value, json};

async fn admin(bao: &OpenBao, method: Method, path: &str, body: Option<Value>) -> Value {
    // A fresh KV v2 mount answers 400 ("upgrading to versioned data") for a moment: retry.
    let mut attempt = 0;
    loop {
        let mut req = bao.request(method.clone(), path);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("OpenBao request");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status.is_success() {
            return serde_json::from_str(&text).unwrap_or(Value::Null);
        }
        attempt += 1;
        assert!(attempt < 50, "{method} {path}: HTTP {status}: {text}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn render_reads_kv_v2_with_token_and_approle_auth() {
    let bao = OpenBao::shared().await;
    let mount = bao.create_kv_mount("e2e", 2).await.unwrap();
    let put = |key: &'static str, data: Value| {
        let path = format!("{mount}/data/{key}");
        async move { admin(bao, Method::POST, &path, Some(json!({ "data": data }))).await }
    };
    put(
        "app/db",
        json!({"user": "admin", "password": "pw-old", "conn.url": "pg://db"}),
    )
    .await;
    put(
        "app/db",
        json!({"user": "admin", "password": "pw-e2e", "conn.url": "pg://db"}),
    )
    .await;
    admin(
        bao,
        Method::POST,
        &format!("{mount}/metadata/app/db"),
        Some(json!({"custom_metadata": {"owner": "team-a"}})),
    )
    .await;
    put("team/a", json!({"v": "A"})).await;
    put("team/sub/b", json!({"v": "B"})).await;

    // AppRole with a read policy on the mount.
    let policy = format!("e2e-{mount}");
    admin(
        bao,
        Method::PUT,
        &format!("sys/policies/acl/{policy}"),
        Some(json!({"policy": format!("path \"{mount}/*\" {{ capabilities = [\"read\", \"list\"] }}")})),
    )
    .await;
    let approle = format!("approle-{mount}");
    admin(
        bao,
        Method::POST,
        &format!("sys/auth/{approle}"),
        Some(json!({"type": "approle"})),
    )
    .await;
    admin(
        bao,
        Method::POST,
        &format!("auth/{approle}/role/e2e"),
        Some(json!({"token_policies": [policy]})),
    )
    .await;
    let role_id = admin(
        bao,
        Method::GET,
        &format!("auth/{approle}/role/e2e/role-id"),
        None,
    )
    .await["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_id = admin(
        bao,
        Method::POST,
        &format!("auth/{approle}/role/e2e/secret-id"),
        None,
    )
    .await["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_string();

    let stores = format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: vault-creds
  namespace: shop
data:
  token: {token}
  secret-id: {sid}
---
apiVersion: external-secrets.io/v1
kind: SecretStore
metadata:
  name: vault-token
  namespace: shop
spec:
  provider:
    vault:
      server: {addr}
      path: {mount}
      version: v2
      auth:
        tokenSecretRef:
          name: vault-creds
          key: token
---
apiVersion: external-secrets.io/v1
kind: SecretStore
metadata:
  name: vault-approle
  namespace: shop
spec:
  provider:
    vault:
      server: {addr}
      path: {mount}
      auth:
        appRole:
          path: {approle}
          roleId: {role_id}
          secretRef:
            name: vault-creds
            key: secret-id
"#,
        token = b64(bao.root_token()),
        sid = b64(&secret_id),
        addr = bao.addr(),
    );
    let externals = r#"apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata:
  name: db
  namespace: shop
spec:
  secretStoreRef:
    name: vault-token
  data:
    - secretKey: password
      remoteRef:
        key: app/db
        property: password
    - secretKey: url
      remoteRef:
        key: app/db
        property: conn.url
    - secretKey: old
      remoteRef:
        key: app/db
        property: password
        version: "1"
    - secretKey: whole
      remoteRef:
        key: app/db
    - secretKey: owner
      remoteRef:
        key: app/db
        property: owner
        metadataPolicy: Fetch
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata:
  name: apps
  namespace: shop
spec:
  secretStoreRef:
    name: vault-approle
  dataFrom:
    - extract:
        key: app/db
    - find:
        path: team
        name:
          regexp: ".*"
      rewrite:
        - regexp:
            source: "^team/(.*)$"
            target: "team-$1"
        - regexp:
            source: "/"
            target: "-"
"#;
    let dir = manifest_dir(&[
        ("stores.yaml", &stores),
        ("externalsecrets.yaml", externals),
    ])
    .unwrap();
    let d = dir.path().to_path_buf();
    let r = tokio::task::spawn_blocking(move || render(&d, &[]))
        .await
        .unwrap()
        .unwrap();
    assert!(r.success, "render failed: {}", r.stderr);

    let db = &r.secrets["shop/db"];
    assert_eq!(db["password"], b"pw-e2e");
    assert_eq!(
        db["url"], b"pg://db",
        "a dotted property is a literal key first (ESO's Vault rule)"
    );
    assert_eq!(db["old"], b"pw-old");
    assert_eq!(
        db["whole"],
        br#"{"conn.url":"pg://db","password":"pw-e2e","user":"admin"}"#
    );
    assert_eq!(db["owner"], b"team-a");
    assert_eq!(db.len(), 5);

    let apps = &r.secrets["shop/apps"];
    assert_eq!(apps["user"], b"admin");
    assert_eq!(apps["password"], b"pw-e2e");
    assert_eq!(apps["conn.url"], b"pg://db");
    assert_eq!(apps["team-a"], br#"{"v":"A"}"#);
    assert_eq!(apps["team-sub-b"], br#"{"v":"B"}"#);
    assert_eq!(apps.len(), 5, "{:?}", apps.keys().collect::<Vec<_>>());

    assert!(
        r.stderr.contains("2 ExternalSecret(s), 0 failed"),
        "{}",
        r.stderr
    );
    for secret in [bao.root_token(), secret_id.as_str()] {
        assert!(
            !r.stderr.contains(secret) && !r.stdout.contains(secret),
            "credentials leaked"
        );
    }
}
