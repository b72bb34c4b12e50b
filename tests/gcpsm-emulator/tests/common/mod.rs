//! Shared helpers: every test talks to the emulator only through Google's official client.
#![allow(dead_code)]

use gcpsm_emulator::{Config, Handle};
use google_cloud_auth::credentials::{Credentials, anonymous};
use google_cloud_gax::error::rpc::Code;
use google_cloud_secretmanager_v1::client::SecretManagerService;
use google_cloud_secretmanager_v1::model::{Replication, Secret, SecretPayload, replication};

pub const PROJECT: &str = "refsync-test";

pub fn project_number() -> u64 {
    gcpsm_emulator::project_number(PROJECT)
}

pub async fn client_with(handle: &Handle, credentials: Credentials) -> SecretManagerService {
    SecretManagerService::builder()
        .with_endpoint(handle.endpoint())
        .with_credentials(credentials)
        .build()
        .await
        .expect("build client")
}

/// An emulator without auth and a client with anonymous credentials (never ADC: that could
/// reach for a metadata server).
pub async fn setup() -> (Handle, SecretManagerService) {
    let handle = gcpsm_emulator::spawn(Config::default())
        .await
        .expect("spawn emulator");
    let client = client_with(&handle, anonymous::Builder::new().build()).await;
    (handle, client)
}

pub fn automatic() -> Replication {
    Replication::new().set_automatic(replication::Automatic::new())
}

pub async fn create_secret(
    client: &SecretManagerService,
    parent: &str,
    id: &str,
    labels: &[(&str, &str)],
) -> Secret {
    let mut secret = Secret::new().set_labels(labels.iter().copied());
    if !parent.contains("/locations/") {
        secret = secret.set_replication(automatic());
    }
    client
        .create_secret()
        .set_parent(parent)
        .set_secret_id(id)
        .set_secret(secret)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create {parent}/secrets/{id}: {e}"))
}

pub async fn add_version(
    client: &SecretManagerService,
    secret: &str,
    data: &[u8],
) -> google_cloud_secretmanager_v1::model::SecretVersion {
    client
        .add_secret_version()
        .set_parent(secret)
        .set_payload(SecretPayload::new().set_data(bytes::Bytes::copy_from_slice(data)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("add version to {secret}: {e}"))
}

pub fn code_of(err: &google_cloud_secretmanager_v1::Error) -> Option<Code> {
    err.status().map(|s| s.code)
}

pub fn message_of(err: &google_cloud_secretmanager_v1::Error) -> String {
    err.status().map(|s| s.message.clone()).unwrap_or_default()
}
