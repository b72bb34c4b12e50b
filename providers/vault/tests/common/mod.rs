//! Shared test helpers: an in-memory `SecretReader`, store contexts, and OpenBao admin calls.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use refsync_core::api::{SecretKeySelector, StoreKind, VaultAuth, VaultKvVersion, VaultProvider};
use refsync_core::{
    CallCounter, Error, Result, SecretBytes, SecretMap, SecretReader, StoreContext,
};
use refsync_provider_vault::Vault;
use refsync_testenv::OpenBao;

pub const NS: &str = "team-a";

type Objects<V> = Mutex<BTreeMap<(String, String), BTreeMap<String, V>>>;

/// Secrets and ConfigMaps in memory; ServiceAccount tokens from a real kube-apiserver if set.
#[derive(Default)]
pub struct MemReader {
    pub secrets: Objects<Vec<u8>>,
    pub config_maps: Objects<String>,
    pub kube: Option<kube::Client>,
}

impl MemReader {
    pub fn put_secret(&self, ns: &str, name: &str, key: &str, value: impl Into<Vec<u8>>) {
        self.secrets
            .lock()
            .unwrap()
            .entry((ns.into(), name.into()))
            .or_default()
            .insert(key.into(), value.into());
    }

    pub fn put_config_map(&self, ns: &str, name: &str, key: &str, value: &str) {
        self.config_maps
            .lock()
            .unwrap()
            .entry((ns.into(), name.into()))
            .or_default()
            .insert(key.into(), value.into());
    }
}

#[async_trait]
impl SecretReader for MemReader {
    async fn secret_key(&self, namespace: &str, name: &str, key: &str) -> Result<SecretBytes> {
        let m = self.secrets.lock().unwrap();
        m.get(&(namespace.into(), name.into()))
            .and_then(|d| d.get(key))
            .map(|v| SecretBytes::from(v.clone()))
            .ok_or_else(|| {
                Error::not_found(format!("secret {namespace}/{name} key {key} not found"))
            })
    }

    async fn secret_data(&self, namespace: &str, name: &str) -> Result<SecretMap> {
        let m = self.secrets.lock().unwrap();
        m.get(&(namespace.into(), name.into()))
            .map(|d| {
                d.iter()
                    .map(|(k, v)| (k.clone(), SecretBytes::from(v.clone())))
                    .collect()
            })
            .ok_or_else(|| Error::not_found(format!("secret {namespace}/{name} not found")))
    }

    async fn config_map_key(&self, namespace: &str, name: &str, key: &str) -> Result<String> {
        let m = self.config_maps.lock().unwrap();
        m.get(&(namespace.into(), name.into()))
            .and_then(|d| d.get(key))
            .cloned()
            .ok_or_else(|| {
                Error::not_found(format!("configmap {namespace}/{name} key {key} not found"))
            })
    }

    async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        audiences: &[String],
        expiration_seconds: Option<i64>,
    ) -> Result<SecretBytes> {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;
        let Some(client) = &self.kube else {
            return Err(Error::unsupported("no cluster in this test"));
        };
        let api: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), namespace);
        let tr = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audiences.to_vec(),
                expiration_seconds,
                ..Default::default()
            },
            ..Default::default()
        };
        let out = api
            .create_token_request(name, &Default::default(), &tr)
            .await
            .map_err(|e| Error::auth(format!("TokenRequest {namespace}/{name}: {e}")))?;
        let token = out.status.map(|s| s.token).unwrap_or_default();
        Ok(SecretBytes::from(token))
    }
}

pub fn ctx(reader: Arc<MemReader>, calls: Arc<CallCounter>) -> StoreContext {
    StoreContext {
        kind: StoreKind::SecretStore,
        name: "vault-store".into(),
        namespace: NS.into(),
        reader,
        calls,
    }
}

pub fn sel(name: &str, key: &str) -> SecretKeySelector {
    SecretKeySelector {
        name: Some(name.into()),
        namespace: None,
        key: Some(key.into()),
    }
}

/// A store spec for `mount` on `server`, token auth from Secret `vault-token/token`.
pub fn token_spec(server: &str, mount: Option<&str>, version: u8) -> VaultProvider {
    VaultProvider {
        server: server.into(),
        path: mount.map(str::to_string),
        version: Some(if version == 1 {
            VaultKvVersion::V1
        } else {
            VaultKvVersion::V2
        }),
        auth: Some(VaultAuth {
            token_secret_ref: Some(sel("vault-token", "token")),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A reader holding the root token as `vault-token/token`.
pub fn root_reader(bao: &OpenBao) -> Arc<MemReader> {
    let r = MemReader::default();
    r.put_secret(NS, "vault-token", "token", bao.root_token());
    Arc::new(r)
}

pub async fn build(
    spec: &VaultProvider,
    reader: Arc<MemReader>,
    calls: Arc<CallCounter>,
) -> Result<Vault> {
    Vault::new(spec, &ctx(reader, calls)).await
}

/// A root-token request against OpenBao; fails the test on a non-2xx status.
pub async fn admin(
    bao: &OpenBao,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    // A fresh KV v2 mount answers 400 ("upgrading to versioned data") for a moment: retry
    // failed requests for up to 5 s before failing the test.
    let mut attempt = 0;
    let text = loop {
        let mut req = bao.request(method.clone(), path);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status.is_success() {
            break text;
        }
        attempt += 1;
        assert!(attempt < 50, "{method} {path}: HTTP {status}: {text}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }
}

/// Writes a KV secret (v2: with optional custom_metadata); returns the v2 version number.
pub async fn kv_put(
    bao: &OpenBao,
    mount: &str,
    version: u8,
    key: &str,
    data: serde_json::Value,
    tags: &BTreeMap<String, String>,
) -> Option<String> {
    if version == 1 {
        admin(
            bao,
            reqwest::Method::POST,
            &format!("{mount}/{key}"),
            Some(data),
        )
        .await;
        return None;
    }
    let out = admin(
        bao,
        reqwest::Method::POST,
        &format!("{mount}/data/{key}"),
        Some(serde_json::json!({"data": data})),
    )
    .await;
    if !tags.is_empty() {
        admin(
            bao,
            reqwest::Method::POST,
            &format!("{mount}/metadata/{key}"),
            Some(serde_json::json!({"custom_metadata": tags})),
        )
        .await;
    }
    out.pointer("/data/version")
        .and_then(|v| v.as_u64())
        .map(|v| v.to_string())
}

/// A policy that can read everything under `mount`.
pub async fn read_policy(bao: &OpenBao, mount: &str) -> String {
    let name = refsync_testenv::unique_name("read");
    let policy = format!(
        "path \"{mount}/*\" {{ capabilities = [\"read\", \"list\"] }}\npath \"{mount}\" {{ capabilities = [\"read\", \"list\"] }}\n"
    );
    admin(
        bao,
        reqwest::Method::PUT,
        &format!("sys/policies/acl/{name}"),
        Some(serde_json::json!({"policy": policy})),
    )
    .await;
    name
}

/// Enables an auth method at a fresh path; returns the path.
pub async fn enable_auth(bao: &OpenBao, kind: &str) -> String {
    let path = refsync_testenv::unique_name(kind);
    admin(
        bao,
        reqwest::Method::POST,
        &format!("sys/auth/{path}"),
        Some(serde_json::json!({"type": kind})),
    )
    .await;
    path
}
