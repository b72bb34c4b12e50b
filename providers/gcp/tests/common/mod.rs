//! Shared test helpers: the emulator (refsync-testenv), an admin client (Google's official
//! client, anonymous), an in-memory `SecretReader`, stores and throwaway RSA keys.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use google_cloud_auth::credentials::anonymous;
use google_cloud_gax::error::rpc::Code;
use google_cloud_secretmanager_v1::client::SecretManagerService;
use google_cloud_secretmanager_v1::model::{Replication, Secret, SecretPayload, replication};
use refsync_core::api::{
    GcpSmAuth, GcpSmAuthSecretRef, GcpSmProvider, SecretKeySelector, SecretStoreProvider,
    SecretStoreSpec, StoreKind,
};
use refsync_core::{
    CallCounter, Error, Result, SecretBytes, SecretMap, SecretReader, StoreContext,
};
use refsync_provider_gcp::GcpSm;
use refsync_testenv::gcp::{Auth, Config, GcpSm as Emulator};
use rsa::RsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

pub const PROJECT: &str = "refsync-gcp-test";
pub const NS: &str = "apps";
pub const EMAIL: &str = "refsync-reader@refsync-gcp-test.iam.gserviceaccount.com";
pub const KEY_ID: &str = "5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ff";

/// Secrets and ConfigMaps by (namespace, name, key).
#[derive(Default)]
pub struct Reader {
    pub secrets: HashMap<(String, String, String), Vec<u8>>,
    pub config_maps: HashMap<(String, String, String), String>,
}

impl Reader {
    pub fn with_secret(
        mut self,
        ns: &str,
        name: &str,
        key: &str,
        value: impl Into<Vec<u8>>,
    ) -> Self {
        self.secrets
            .insert((ns.into(), name.into(), key.into()), value.into());
        self
    }
}

#[async_trait]
impl SecretReader for Reader {
    async fn secret_key(&self, namespace: &str, name: &str, key: &str) -> Result<SecretBytes> {
        self.secrets
            .get(&(namespace.into(), name.into(), key.into()))
            .map(|v| SecretBytes::new(v.clone()))
            .ok_or_else(|| Error::not_found(format!("Secret {namespace}/{name} has no key {key}")))
    }
    async fn secret_data(&self, namespace: &str, name: &str) -> Result<SecretMap> {
        Ok(self
            .secrets
            .iter()
            .filter(|((n, s, _), _)| n == namespace && s == name)
            .map(|((_, _, k), v)| (k.clone(), SecretBytes::new(v.clone())))
            .collect())
    }
    async fn config_map_key(&self, namespace: &str, name: &str, key: &str) -> Result<String> {
        self.config_maps
            .get(&(namespace.into(), name.into(), key.into()))
            .cloned()
            .ok_or_else(|| {
                Error::not_found(format!("ConfigMap {namespace}/{name} has no key {key}"))
            })
    }
}

pub fn ctx(reader: Reader, calls: Arc<CallCounter>) -> StoreContext {
    StoreContext {
        kind: StoreKind::SecretStore,
        name: "gcp".into(),
        namespace: NS.into(),
        reader: Arc::new(reader),
        calls,
    }
}

pub fn spec(g: GcpSmProvider) -> SecretStoreSpec {
    SecretStoreSpec {
        provider: SecretStoreProvider {
            gcpsm: Some(g),
            ..Default::default()
        },
        ..Default::default()
    }
}

pub fn store(location: Option<&str>) -> GcpSmProvider {
    GcpSmProvider {
        project_id: Some(PROJECT.into()),
        location: location.map(str::to_string),
        ..Default::default()
    }
}

pub fn key_ref_store(secret_name: &str) -> GcpSmProvider {
    GcpSmProvider {
        auth: Some(GcpSmAuth {
            secret_ref: Some(GcpSmAuthSecretRef {
                secret_access_key_secret_ref: Some(SecretKeySelector {
                    name: Some(secret_name.into()),
                    key: Some("key.json".into()),
                    namespace: None,
                }),
            }),
            ..Default::default()
        }),
        ..store(None)
    }
}

/// An emulator without auth, an admin client and a provider (anonymous, endpoint override).
pub struct Env {
    pub emu: Emulator,
    pub admin: SecretManagerService,
    pub calls: Arc<CallCounter>,
}

impl Env {
    pub async fn start() -> Env {
        Self::start_with(Config::default()).await
    }

    pub async fn start_with(config: Config) -> Env {
        let emu = Emulator::start_with(config)
            .await
            .expect("the gcpsm emulator starts");
        let admin = SecretManagerService::builder()
            .with_endpoint(emu.endpoint())
            .with_credentials(anonymous::Builder::new().build())
            .build()
            .await
            .expect("admin client");
        Env {
            emu,
            admin,
            calls: Arc::new(CallCounter::default()),
        }
    }

    pub async fn provider(&self, g: GcpSmProvider, reader: Reader) -> Result<GcpSm> {
        GcpSm::build(
            &g,
            &ctx(reader, self.calls.clone()),
            Some(self.emu.endpoint()),
        )
        .await
    }

    /// Creates `projects/PROJECT[/locations/L]/secrets/id` (if needed) with labels and
    /// annotations, adds a version and returns its number.
    pub async fn put(
        &self,
        location: Option<&str>,
        id: &str,
        value: &[u8],
        labels: &BTreeMap<String, String>,
    ) -> String {
        self.put_annotated(location, id, value, labels, &BTreeMap::new())
            .await
    }

    pub async fn put_annotated(
        &self,
        location: Option<&str>,
        id: &str,
        value: &[u8],
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
    ) -> String {
        let parent = match location {
            Some(l) => format!("projects/{PROJECT}/locations/{l}"),
            None => format!("projects/{PROJECT}"),
        };
        let mut secret = Secret::new()
            .set_labels(labels.iter().map(|(k, v)| (k.clone(), v.clone())))
            .set_annotations(annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
        if location.is_none() {
            secret = secret
                .set_replication(Replication::new().set_automatic(replication::Automatic::new()));
        }
        let created = self
            .admin
            .create_secret()
            .set_parent(&parent)
            .set_secret_id(id)
            .set_secret(secret)
            .send()
            .await;
        if let Err(e) = created {
            assert_eq!(
                e.status().map(|s| s.code),
                Some(Code::AlreadyExists),
                "create {id}: {e}"
            );
        }
        let v = self
            .admin
            .add_secret_version()
            .set_parent(format!("{parent}/secrets/{id}"))
            .set_payload(SecretPayload::new().set_data(bytes::Bytes::copy_from_slice(value)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("add version to {id}: {e}"));
        v.name.rsplit('/').next().expect("version id").to_string()
    }
}

pub struct KeyPair {
    pub private_pkcs8_pem: String,
    pub public_pem: String,
}

fn generate() -> KeyPair {
    let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("generate an RSA key");
    KeyPair {
        private_pkcs8_pem: key
            .to_pkcs8_pem(LineEnding::LF)
            .expect("PKCS#8 PEM")
            .to_string(),
        public_pem: key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("SPKI PEM"),
    }
}

/// Two throwaway keys made at run time, once per test binary: `[registered, unregistered]`.
pub async fn keys() -> &'static [KeyPair; 2] {
    static KEYS: OnceLock<[KeyPair; 2]> = OnceLock::new();
    tokio::task::spawn_blocking(|| {
        KEYS.get_or_init(|| {
            let other = std::thread::spawn(generate);
            let first = generate();
            [first, other.join().expect("keygen thread")]
        })
    })
    .await
    .expect("keygen")
}

/// A service-account key file whose `token_uri`/`auth_uri` point at `trap`.
pub fn key_json(key: &KeyPair, trap: &str) -> String {
    serde_json::json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": KEY_ID,
        "private_key": key.private_pkcs8_pem,
        "client_email": EMAIL,
        "client_id": "100000000000000000042",
        "auth_uri": format!("{trap}/o/oauth2/auth"),
        "token_uri": format!("{trap}/token"),
    })
    .to_string()
}

pub fn registered(key: &KeyPair) -> Config {
    Config {
        auth: Auth::ServiceAccounts(vec![(
            EMAIL.to_string(),
            KEY_ID.to_string(),
            key.public_pem.clone(),
        )]),
    }
}

/// A TCP listener that counts every connection made to it (and answers none): the
/// service-account key's token endpoint, so a test can prove it is never called.
pub struct Trap {
    pub url: String,
    pub hits: Arc<AtomicUsize>,
}

impl Trap {
    pub async fn start() -> Trap {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind trap");
        let url = format!("http://{}", listener.local_addr().expect("trap addr"));
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                h.fetch_add(1, Ordering::SeqCst);
                drop(conn);
            }
        });
        Trap { url, hits }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}
