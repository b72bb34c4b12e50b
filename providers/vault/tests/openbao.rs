//! The Vault provider against the real OpenBao dev server from refsync-testenv.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use refsync_core::api::{VaultAppRole, VaultAuth, VaultJwtAuth, VaultProvider, VaultUserPassAuth};
use refsync_core::conformance::{Backend, Features};
use refsync_core::{CallCounter, ErrorKind, FindRef, Provider, RemoteRef, Result};
use refsync_testenv::OpenBao;
use reqwest::Method;
use serde_json::json;

struct VaultBackend {
    bao: &'static OpenBao,
    mount: String,
    version: u8,
    prefix: String,
    calls: Arc<CallCounter>,
}

#[async_trait]
impl Backend for VaultBackend {
    fn prefix(&self) -> String {
        self.prefix.clone()
    }

    async fn put(
        &self,
        key: &str,
        value: &[u8],
        tags: &BTreeMap<String, String>,
    ) -> Result<Option<String>> {
        let data = match serde_json::from_slice::<serde_json::Value>(value) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            _ => json!({ "value": String::from_utf8_lossy(value) }),
        };
        Ok(kv_put(self.bao, &self.mount, self.version, key, data, tags).await)
    }

    async fn provider(&self) -> Result<Arc<dyn Provider>> {
        let spec = token_spec(self.bao.addr(), Some(&self.mount), self.version);
        Ok(Arc::new(
            build(&spec, root_reader(self.bao), self.calls.clone()).await?,
        ))
    }

    fn expected_raw(&self, value: &[u8]) -> Vec<u8> {
        vault_document(value)
    }

    fn value_property(&self) -> Option<&'static str> {
        Some("value")
    }

    fn features(&self) -> Features {
        let v2 = self.version == 2;
        Features {
            find_by_tags: v2,
            find_by_path: true,
            versions: v2,
            metadata: v2,
        }
    }
}

async fn conformance(version: u8) {
    let bao = OpenBao::shared().await;
    let mount = bao.create_kv_mount("conf", version).await.unwrap();
    let calls = Arc::new(CallCounter::default());
    let backend = VaultBackend {
        bao,
        mount,
        version,
        prefix: "run-a/".into(),
        calls: calls.clone(),
    };
    let report = refsync_core::conformance::run(&backend).await;
    eprintln!(
        "KV v{version}: passed {:?}, not supported {:?}",
        report.passed, report.not_supported
    );
    if version == 2 {
        assert!(
            report.not_supported.is_empty(),
            "{:?}",
            report.not_supported
        );
    }
    // Token auth: no login, the token is read once.
    assert_eq!(calls.count("Login"), 0);
    assert!(calls.count("ReadSecretData") > 0);
}

#[tokio::test]
async fn conformance_kv_v2() {
    conformance(2).await;
}

#[tokio::test]
async fn conformance_kv_v1() {
    conformance(1).await;
}

#[tokio::test]
async fn keys_versions_metadata_like_eso() {
    let bao = OpenBao::shared().await;
    let mount = bao.create_kv_mount("keys", 2).await.unwrap();
    let tags: BTreeMap<String, String> = [("owner".to_string(), "team-a".to_string())].into();
    let v1 = kv_put(
        bao,
        &mount,
        2,
        "app/db",
        json!({"user": "u1", "dot.key": "lit", "n": {"x": "<&>"}}),
        &tags,
    )
    .await
    .unwrap();
    kv_put(
        bao,
        &mount,
        2,
        "app/db",
        json!({"user": "u2", "dot.key": "lit", "n": {"x": "<&>"}}),
        &BTreeMap::new(),
    )
    .await;

    let calls = Arc::new(CallCounter::default());
    let p = build(
        &token_spec(bao.addr(), Some(&mount), 2),
        root_reader(bao),
        calls.clone(),
    )
    .await
    .unwrap();
    let expect = br#"{"dot.key":"lit","n":{"x":"\u003c\u0026\u003e"},"user":"u2"}"#;
    // Plain key, key with the mount, key with mount/data.
    for key in [
        "app/db".to_string(),
        format!("{mount}/app/db"),
        format!("{mount}/data/app/db"),
    ] {
        let v = p
            .get_secret(&RemoteRef::new(key.clone()))
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(v.expose(), expect, "{key}");
    }
    // No mount in the store: the key carries it.
    let nomount = build(
        &token_spec(bao.addr(), None, 2),
        root_reader(bao),
        calls.clone(),
    )
    .await
    .unwrap();
    let v = nomount
        .get_secret(&RemoteRef::new(format!("{mount}/app/db")))
        .await
        .unwrap();
    assert_eq!(v.expose(), expect);
    // Exact dotted key wins over gjson.
    let mode = p.property_mode();
    assert_eq!(
        refsync_core::convert::property(v.expose(), "dot.key", mode).unwrap(),
        b"lit"
    );
    assert_eq!(
        refsync_core::convert::property(v.expose(), "n.x", mode).unwrap(),
        b"<&>"
    );
    // Versions.
    let old = p
        .get_secret(&RemoteRef {
            key: "app/db".into(),
            version: Some(v1),
            metadata: false,
        })
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(old.expose()).contains(r#""user":"u1""#));
    let e = p
        .get_secret(&RemoteRef {
            key: "app/db".into(),
            version: Some("99".into()),
            metadata: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    // Metadata: custom_metadata plus ESO's system keys.
    let md = p
        .get_secret(&RemoteRef {
            key: "app/db".into(),
            version: None,
            metadata: true,
        })
        .await
        .unwrap();
    let md: serde_json::Value = serde_json::from_slice(md.expose()).unwrap();
    assert_eq!(md["owner"], "team-a");
    assert_eq!(md["current_version"], "2");
    assert!(md["created_time"].is_string());
    // A soft-deleted latest version is NotFound.
    admin(bao, Method::DELETE, &format!("{mount}/data/app/db"), None).await;
    let e = p.get_secret(&RemoteRef::new("app/db")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    // Metrics: ESO's call names.
    assert!(calls.count("ReadSecretData") >= 8);
}

#[tokio::test]
async fn find_recurses_below_path() {
    let bao = OpenBao::shared().await;
    let mount = bao.create_kv_mount("find", 2).await.unwrap();
    let t = |v: &str| -> BTreeMap<String, String> { [("env".to_string(), v.to_string())].into() };
    kv_put(bao, &mount, 2, "a/x", json!({"k": "1"}), &t("prod")).await;
    kv_put(bao, &mount, 2, "a/b/y", json!({"k": "2"}), &t("prod")).await;
    kv_put(bao, &mount, 2, "a/b/c/z", json!({"k": "3"}), &t("dev")).await;
    kv_put(bao, &mount, 2, "other", json!({"k": "4"}), &t("prod")).await;
    let calls = Arc::new(CallCounter::default());
    let p = build(
        &token_spec(bao.addr(), Some(&mount), 2),
        root_reader(bao),
        calls.clone(),
    )
    .await
    .unwrap();

    let all = p
        .find(&FindRef {
            name_regexp: Some(".*".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        all.keys().collect::<Vec<_>>(),
        ["a/b/c/z", "a/b/y", "a/x", "other"]
    );
    let under = p
        .find(&FindRef {
            path: Some("a/b".into()),
            name_regexp: Some("y|z".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(under.keys().collect::<Vec<_>>(), ["a/b/c/z", "a/b/y"]);
    assert_eq!(under["a/b/y"].expose(), br#"{"k":"2"}"#);
    let prod = p
        .find(&FindRef {
            path: Some("a".into()),
            tags: t("prod"),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(prod.keys().collect::<Vec<_>>(), ["a/b/y", "a/x"]);
    assert!(calls.count("ListSecrets") >= 3);
    // A path with nothing below it: empty, not an error.
    let none = p
        .find(&FindRef {
            path: Some("nothing".into()),
            name_regexp: Some(".*".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
    // find needs the store's mount.
    let nomount = build(
        &token_spec(bao.addr(), None, 2),
        root_reader(bao),
        calls.clone(),
    )
    .await
    .unwrap();
    let e = nomount
        .find(&FindRef {
            name_regexp: Some(".*".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.to_string().contains("spec.provider.vault.path"), "{e}");
    // KV v1 cannot find by tags.
    let m1 = bao.create_kv_mount("find1", 1).await.unwrap();
    let v1 = build(
        &token_spec(bao.addr(), Some(&m1), 1),
        root_reader(bao),
        calls.clone(),
    )
    .await
    .unwrap();
    let e = v1
        .find(&FindRef {
            tags: t("prod"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported);
}

#[tokio::test]
async fn validate_gives_clear_reasons() {
    let bao = OpenBao::shared().await;
    let calls = Arc::new(CallCounter::default());
    let mount = bao.create_kv_mount("val", 2).await.unwrap();

    // Unreachable address.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = build(
        &token_spec(&format!("http://127.0.0.1:{port}"), Some(&mount), 2),
        root_reader(bao),
        calls.clone(),
    )
    .await
    .unwrap();
    let e = p.validate().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.to_string().contains("onnect"), "{e}");

    // No auth and no mount: validate still checks that the server answers.
    let mut noauth = token_spec(&format!("http://127.0.0.1:{port}"), None, 2);
    noauth.auth = None;
    let p = build(&noauth, root_reader(bao), calls.clone())
        .await
        .unwrap();
    assert_eq!(p.validate().await.unwrap_err().kind, ErrorKind::Transient);
    noauth.server = bao.addr().into();
    let p = build(&noauth, root_reader(bao), calls.clone())
        .await
        .unwrap();
    p.validate().await.unwrap();

    // Bad address.
    let e = build(
        &token_spec("vault.example:8200", None, 2),
        root_reader(bao),
        calls.clone(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.to_string().contains("spec.provider.vault.server"), "{e}");

    // Bad token: Auth, and the token is not in the message.
    let r = MemReader::default();
    r.put_secret(NS, "vault-token", "token", "s.not-a-real-token-7f3a");
    let p = build(
        &token_spec(bao.addr(), Some(&mount), 2),
        Arc::new(r),
        calls.clone(),
    )
    .await
    .unwrap();
    let e = p.validate().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(!format!("{e} {e:?}").contains("not-a-real-token"), "{e}");
    let e = p.get_secret(&RemoteRef::new("x")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");

    // Missing mount.
    let p = build(
        &token_spec(bao.addr(), Some("no-such-mount"), 2),
        root_reader(bao),
        calls.clone(),
    )
    .await
    .unwrap();
    let e = p.validate().await.unwrap_err();
    assert!(e.to_string().contains("no-such-mount"), "{e}");
    assert!(e.to_string().contains("spec.provider.vault.path"), "{e}");

    // Wrong KV version.
    let p = build(
        &token_spec(bao.addr(), Some(&mount), 1),
        root_reader(bao),
        calls.clone(),
    )
    .await
    .unwrap();
    let e = p.validate().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.to_string().contains("is KV v2"), "{e}");

    // Missing token Secret.
    let p = build(
        &token_spec(bao.addr(), Some(&mount), 2),
        Arc::new(MemReader::default()),
        calls.clone(),
    )
    .await
    .unwrap();
    let e = p.validate().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("tokenSecretRef"), "{e}");

    // Working store.
    let p = build(
        &token_spec(bao.addr(), Some(&mount), 2),
        root_reader(bao),
        calls.clone(),
    )
    .await
    .unwrap();
    p.validate().await.unwrap();
    assert!(calls.count("LookupSelf") >= 2);

    // Unsupported auth methods say so.
    let mut spec = token_spec(bao.addr(), Some(&mount), 2);
    spec.auth = Some(VaultAuth {
        ldap: Some(Default::default()),
        ..Default::default()
    });
    let e = build(&spec, root_reader(bao), calls.clone())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("ldap"), "{e}");
    spec.auth = Some(VaultAuth {
        gcp: Some(json!({})),
        ..Default::default()
    });
    assert_eq!(
        build(&spec, root_reader(bao), calls.clone())
            .await
            .unwrap_err()
            .kind,
        ErrorKind::Unsupported
    );
    spec.auth = Some(VaultAuth {
        iam: Some(json!({})),
        ..Default::default()
    });
    assert_eq!(
        build(&spec, root_reader(bao), calls.clone())
            .await
            .unwrap_err()
            .kind,
        ErrorKind::Unsupported
    );
    // appRole without a role id.
    spec.auth = Some(VaultAuth {
        app_role: Some(VaultAppRole {
            path: "approle".into(),
            secret_ref: sel("x", "y"),
            ..Default::default()
        }),
        ..Default::default()
    });
    let e = build(&spec, root_reader(bao), calls.clone())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.to_string().contains("roleId"), "{e}");
}

/// An AppRole at a fresh auth path with `policy`; returns (path, role_id, secret_id).
async fn approle(
    bao: &OpenBao,
    policy: &str,
    token_ttl: &str,
    token_max_ttl: &str,
) -> (String, String, String) {
    let path = enable_auth(bao, "approle").await;
    admin(
        bao,
        Method::POST,
        &format!("auth/{path}/role/app"),
        Some(json!({"token_policies": [policy], "token_ttl": token_ttl, "token_max_ttl": token_max_ttl})),
    )
    .await;
    let rid = admin(
        bao,
        Method::GET,
        &format!("auth/{path}/role/app/role-id"),
        None,
    )
    .await;
    let sid = admin(
        bao,
        Method::POST,
        &format!("auth/{path}/role/app/secret-id"),
        None,
    )
    .await;
    (
        path,
        rid["data"]["role_id"].as_str().unwrap().to_string(),
        sid["data"]["secret_id"].as_str().unwrap().to_string(),
    )
}

fn approle_spec(bao: &OpenBao, mount: &str, path: &str, role_id: Option<&str>) -> VaultProvider {
    VaultProvider {
        server: bao.addr().into(),
        path: Some(mount.into()),
        auth: Some(VaultAuth {
            app_role: Some(VaultAppRole {
                path: path.into(),
                role_id: role_id.map(str::to_string),
                role_ref: Some(sel("approle", "role-id")),
                secret_ref: sel("approle", "secret-id"),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn approle_login_is_cached_across_reads() {
    let bao = OpenBao::shared().await;
    let mount = bao.create_kv_mount("ar", 2).await.unwrap();
    kv_put(
        bao,
        &mount,
        2,
        "db",
        json!({"password": "pw-1"}),
        &BTreeMap::new(),
    )
    .await;
    let policy = read_policy(bao, &mount).await;
    let (path, role_id, secret_id) = approle(bao, &policy, "1h", "4h").await;

    let reader = MemReader::default();
    reader.put_secret(NS, "approle", "secret-id", secret_id.clone());
    reader.put_secret(NS, "approle", "role-id", format!("{role_id}\n"));
    let reader = Arc::new(reader);
    let calls = Arc::new(CallCounter::default());

    // roleRef from a Secret.
    let p = Arc::new(
        build(
            &approle_spec(bao, &mount, &path, None),
            reader.clone(),
            calls.clone(),
        )
        .await
        .unwrap(),
    );
    p.validate().await.unwrap();
    const N: usize = 25;
    // Sequential and concurrent reads.
    for _ in 0..N {
        assert_eq!(
            p.get_secret(&RemoteRef::new("db")).await.unwrap().expose(),
            br#"{"password":"pw-1"}"#
        );
    }
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { p.get_secret(&RemoteRef::new("db")).await.map(|v| v.len()) })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    eprintln!(
        "appRole: {} reads, Login = {}, ReadSecretData = {}, LookupSelf = {}",
        2 * N,
        calls.count("Login"),
        calls.count("ReadSecretData"),
        calls.count("LookupSelf")
    );
    assert_eq!(calls.count("Login"), 1, "one login for {} reads", 2 * N);
    assert_eq!(calls.count("ReadSecretData"), 2 * N as u64);

    // close() revokes the login token (RevokeSelf); a later read logs in again, once.
    p.close().await;
    assert_eq!(calls.count("RevokeSelf"), 1);
    assert_eq!(
        p.get_secret(&RemoteRef::new("db")).await.unwrap().expose(),
        br#"{"password":"pw-1"}"#
    );
    assert_eq!(calls.count("Login"), 2);

    // roleId literal wins over roleRef; a wrong secret id is an Auth error without the value.
    reader.put_secret(NS, "approle", "secret-id", "wrong-secret-id-9c1d");
    let p2 = build(
        &approle_spec(bao, &mount, &path, Some(&role_id)),
        reader.clone(),
        calls.clone(),
    )
    .await
    .unwrap();
    let e = p2.validate().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(!format!("{e:?}").contains("wrong-secret-id"), "{e}");
}

#[tokio::test]
async fn revoked_token_is_replaced_once() {
    let bao = OpenBao::shared().await;
    let mount = bao.create_kv_mount("rv", 2).await.unwrap();
    kv_put(bao, &mount, 2, "k", json!({"a": "b"}), &BTreeMap::new()).await;
    let policy = read_policy(bao, &mount).await;
    let (path, role_id, secret_id) = approle(bao, &policy, "1h", "4h").await;
    let reader = MemReader::default();
    reader.put_secret(NS, "approle", "secret-id", secret_id);
    let reader = Arc::new(reader);
    let calls = Arc::new(CallCounter::default());
    let p = build(
        &approle_spec(bao, &mount, &path, Some(&role_id)),
        reader.clone(),
        calls.clone(),
    )
    .await
    .unwrap();
    p.get_secret(&RemoteRef::new("k")).await.unwrap();
    // Revoke every token of that role (as an operator would) via the role's accessor listing.
    let accessors = admin(
        bao,
        Method::from_bytes(b"LIST").unwrap(),
        "auth/token/accessors",
        None,
    )
    .await;
    for a in accessors["data"]["keys"].as_array().unwrap() {
        let info = admin(
            bao,
            Method::POST,
            "auth/token/lookup-accessor",
            Some(json!({"accessor": a})),
        )
        .await;
        if info["data"]["path"]
            .as_str()
            .is_some_and(|p| p.starts_with(&format!("auth/{path}/")))
        {
            admin(
                bao,
                Method::POST,
                "auth/token/revoke-accessor",
                Some(json!({"accessor": a})),
            )
            .await;
        }
    }
    p.get_secret(&RemoteRef::new("k")).await.unwrap();
    assert_eq!(calls.count("Login"), 2);
    // A real permission denial is not retried forever: one lookup, no new login.
    let other = bao.create_kv_mount("rv-other", 2).await.unwrap();
    kv_put(bao, &other, 2, "k", json!({"a": "b"}), &BTreeMap::new()).await;
    let denied = build(
        &VaultProvider {
            path: Some(other.clone()),
            ..approle_spec(bao, &mount, &path, Some(&role_id))
        },
        reader.clone(),
        calls.clone(),
    )
    .await
    .unwrap();
    let lookups = calls.count("LookupSelf");
    let e = denied.get_secret(&RemoteRef::new("k")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(e.to_string().contains("permission denied"), "{e}");
    assert_eq!(
        calls.count("Login"),
        3,
        "one login for the new store, none after the denial"
    );
    assert_eq!(calls.count("LookupSelf"), lookups + 1);
}

#[tokio::test]
async fn short_tokens_are_renewed_then_replaced() {
    let bao = OpenBao::shared().await;
    let mount = bao.create_kv_mount("ttl", 2).await.unwrap();
    kv_put(bao, &mount, 2, "k", json!({"a": "b"}), &BTreeMap::new()).await;
    let policy = read_policy(bao, &mount).await;
    // ttl 6 s: refresh after 3 s; max_ttl 10 s: the renewal near the end grants too little.
    let (path, role_id, secret_id) = approle(bao, &policy, "6s", "10s").await;
    let reader = MemReader::default();
    reader.put_secret(NS, "approle", "secret-id", secret_id);
    let calls = Arc::new(CallCounter::default());
    let p = build(
        &approle_spec(bao, &mount, &path, Some(&role_id)),
        Arc::new(reader),
        calls.clone(),
    )
    .await
    .unwrap();
    p.get_secret(&RemoteRef::new("k")).await.unwrap();
    assert_eq!((calls.count("Login"), calls.count("RenewSelf")), (1, 0));
    tokio::time::sleep(Duration::from_millis(3500)).await;
    p.get_secret(&RemoteRef::new("k")).await.unwrap();
    assert_eq!(
        (calls.count("Login"), calls.count("RenewSelf")),
        (1, 1),
        "renewed at 3.5 s"
    );
    tokio::time::sleep(Duration::from_millis(3500)).await;
    // At 7 s the renewal can grant only 3 s (max_ttl): a new login instead.
    p.get_secret(&RemoteRef::new("k")).await.unwrap();
    assert_eq!(calls.count("Login"), 2, "logged in again near max_ttl");
}

#[tokio::test]
async fn userpass_login() {
    let bao = OpenBao::shared().await;
    let mount = bao.create_kv_mount("up", 1).await.unwrap();
    kv_put(
        bao,
        &mount,
        1,
        "svc/cfg",
        json!({"url": "https://x"}),
        &BTreeMap::new(),
    )
    .await;
    let policy = read_policy(bao, &mount).await;
    let path = enable_auth(bao, "userpass").await;
    admin(
        bao,
        Method::POST,
        &format!("auth/{path}/users/alice"),
        Some(json!({"password": "pa55-word", "token_policies": [policy]})),
    )
    .await;
    let reader = MemReader::default();
    reader.put_secret(NS, "up", "password", "pa55-word");
    let calls = Arc::new(CallCounter::default());
    let spec = VaultProvider {
        server: bao.addr().into(),
        path: Some(mount.clone()),
        version: Some(refsync_core::api::VaultKvVersion::V1),
        auth: Some(VaultAuth {
            user_pass: Some(VaultUserPassAuth {
                path: path.clone(),
                username: "alice".into(),
                secret_ref: Some(sel("up", "password")),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let reader = Arc::new(reader);
    let p = build(&spec, reader.clone(), calls.clone()).await.unwrap();
    p.validate().await.unwrap();
    for _ in 0..5 {
        assert_eq!(
            p.get_secret(&RemoteRef::new("svc/cfg"))
                .await
                .unwrap()
                .expose(),
            br#"{"url":"https://x"}"#
        );
    }
    assert_eq!(calls.count("Login"), 1);
    // KV v1 has no metadata.
    let e = p
        .get_secret(&RemoteRef {
            key: "svc/cfg".into(),
            version: None,
            metadata: true,
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported);
    // Wrong password: Auth.
    reader.put_secret(NS, "up", "password", "nope");
    let p = build(&spec, reader.clone(), calls.clone()).await.unwrap();
    let e = p.validate().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(e.to_string().contains("userPass"), "{e}");
}

#[tokio::test]
async fn jwt_login_with_runtime_rsa_key() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

    let bao = OpenBao::shared().await;
    let mount = bao.create_kv_mount("jwt", 2).await.unwrap();
    kv_put(
        bao,
        &mount,
        2,
        "k",
        json!({"a": "jwt-ok"}),
        &BTreeMap::new(),
    )
    .await;
    let policy = read_policy(bao, &mount).await;

    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA key");
    let pub_pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let priv_pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();

    let path = enable_auth(bao, "jwt").await;
    admin(
        bao,
        Method::POST,
        &format!("auth/{path}/config"),
        Some(json!({"jwt_validation_pubkeys": [pub_pem], "bound_issuer": "refsync-test"})),
    )
    .await;
    admin(
        bao,
        Method::POST,
        &format!("auth/{path}/role/reader"),
        Some(json!({"role_type": "jwt", "bound_audiences": ["vault"], "user_claim": "sub", "token_policies": [policy], "token_ttl": "1h"})),
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"iss": "refsync-test", "sub": "refsync", "aud": "vault", "iat": now, "nbf": now - 5, "exp": now + 600});
    let jwt = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(priv_pem.as_bytes()).unwrap(),
    )
    .unwrap();

    let reader = MemReader::default();
    reader.put_secret(NS, "jwt", "token", jwt);
    let calls = Arc::new(CallCounter::default());
    let spec = VaultProvider {
        server: bao.addr().into(),
        path: Some(mount.clone()),
        auth: Some(VaultAuth {
            jwt: Some(VaultJwtAuth {
                path: path.clone(),
                role: Some("reader".into()),
                secret_ref: Some(sel("jwt", "token")),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let p = build(&spec, Arc::new(reader), calls.clone()).await.unwrap();
    p.validate().await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            p.get_secret(&RemoteRef::new("k")).await.unwrap().expose(),
            br#"{"a":"jwt-ok"}"#
        );
    }
    // ESO reports JWT logins as WriteSecretData.
    assert_eq!(calls.count("WriteSecretData"), 1);

    // A JWT for another audience is refused: Auth.
    let bad = json!({"iss": "refsync-test", "sub": "refsync", "aud": "other", "iat": now, "exp": now + 600});
    let bad = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &bad,
        &EncodingKey::from_rsa_pem(priv_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let reader = MemReader::default();
    reader.put_secret(NS, "jwt", "token", bad);
    let p = build(&spec, Arc::new(reader), calls.clone()).await.unwrap();
    assert_eq!(p.validate().await.unwrap_err().kind, ErrorKind::Auth);
}

#[tokio::test]
async fn namespace_and_headers() {
    let bao = OpenBao::shared().await;
    // OpenBao has namespaces: a mount inside one is reached only with X-Vault-Namespace.
    let ns = refsync_testenv::unique_name("ns");
    admin(bao, Method::POST, &format!("sys/namespaces/{ns}"), None).await;
    let mount = "kvns";
    let resp = bao
        .request(Method::POST, &format!("sys/mounts/{mount}"))
        .header("X-Vault-Namespace", &ns)
        .json(&json!({"type": "kv", "options": {"version": "2"}}))
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "{}",
        resp.text().await.unwrap_or_default()
    );
    let resp = bao
        .request(Method::POST, &format!("{mount}/data/k"))
        .header("X-Vault-Namespace", &ns)
        .json(&json!({"data": {"in": "namespace"}}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());

    let calls = Arc::new(CallCounter::default());
    let mut spec = token_spec(bao.addr(), Some(mount), 2);
    spec.namespace = Some(ns.clone());
    spec.read_your_writes = Some(true);
    spec.forward_inconsistent = Some(true);
    spec.headers = Some([("X-Refsync-Test".to_string(), "1".to_string())].into());
    // The root token lives in the root namespace.
    spec.auth.as_mut().unwrap().namespace = Some("".into());
    let p = build(&spec, root_reader(bao), calls.clone()).await.unwrap();
    p.validate().await.unwrap();
    assert_eq!(
        p.get_secret(&RemoteRef::new("k")).await.unwrap().expose(),
        br#"{"in":"namespace"}"#
    );
    // Without the namespace the mount does not exist.
    let p = build(
        &token_spec(bao.addr(), Some(mount), 2),
        root_reader(bao),
        calls.clone(),
    )
    .await
    .unwrap();
    assert!(p.validate().await.is_err());
    assert!(p.get_secret(&RemoteRef::new("k")).await.is_err());
    // A bad header name is a Config error naming the field.
    let mut spec = token_spec(bao.addr(), Some(mount), 2);
    spec.headers = Some([("bad header".to_string(), "x".to_string())].into());
    let e = build(&spec, root_reader(bao), calls.clone())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("spec.provider.vault.headers"), "{e}");
}

/// What Vault returns for a fixture: objects as written, anything else as `{"value": ..}`.
fn vault_document(value: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Value>(value) {
        Ok(serde_json::Value::Object(_)) => value.to_vec(),
        _ => serde_json::to_vec(&json!({ "value": String::from_utf8_lossy(value) }))
            .unwrap_or_default(),
    }
}
