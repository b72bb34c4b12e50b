//! Service-account-key auth for real: throwaway RSA keys made at run time, the public key
//! registered with the emulator, the key JSON in a Secret read through the store's reader.

mod common;

use common::*;
use refsync_core::{ErrorKind, Provider, RemoteRef};

#[tokio::test]
async fn service_account_key_authenticates_and_nothing_goes_to_google() {
    let keys = keys().await;
    let env = Env::start_with(registered(&keys[0])).await;
    let trap = Trap::start().await;
    // Fixtures through an admin client signing with the registered key.
    let admin = admin_with_key(&env, &keys[0], &trap.url).await;
    put_with(&admin, "db-password", b"hunter2-but-longer").await;
    env.emu.handle().reset_counts();

    let reader =
        Reader::default().with_secret(NS, "gcp-sa", "key.json", key_json(&keys[0], &trap.url));
    let p = env
        .provider(key_ref_store("gcp-sa"), reader)
        .await
        .expect("provider builds");
    p.validate().await.expect("validate with a registered key");
    let v = p
        .get_secret(&RemoteRef::new("db-password"))
        .await
        .expect("read with a registered key");
    assert_eq!(v.expose(), b"hunter2-but-longer");
    let found = p
        .find(&refsync_core::FindRef {
            name_regexp: Some("^db-".into()),
            ..Default::default()
        })
        .await
        .expect("find");
    assert_eq!(found.len(), 1);

    // An unregistered key (same email and key id, different key pair): Auth, on read and validate.
    let reader =
        Reader::default().with_secret(NS, "other-sa", "key.json", key_json(&keys[1], &trap.url));
    let bad = env
        .provider(key_ref_store("other-sa"), reader)
        .await
        .expect("builds (no call yet)");
    let e = bad
        .get_secret(&RemoteRef::new("db-password"))
        .await
        .expect_err("unregistered key");
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(e.message.contains("UNAUTHENTICATED"), "{e}");
    let e = bad
        .validate()
        .await
        .expect_err("validate with an unregistered key");
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    let text = format!("{e} {e:?}");
    assert!(
        !text.contains("PRIVATE KEY") && !text.contains("hunter2"),
        "{text}"
    );

    // Every request the providers made reached the emulator (nothing went elsewhere), and the
    // key's token_uri was never called: google-cloud-auth signs its own JWTs.
    assert_eq!(
        env.emu.handle().total_requests(),
        env.calls.total(),
        "emulator saw every provider call"
    );
    assert_eq!(
        env.calls.total(),
        6,
        "validate, access, list, access, access(401), list(401)"
    );
    assert_eq!(trap.hits(), 0, "the token endpoint was called");
}

#[tokio::test]
async fn credentials_are_cached_across_calls() {
    let keys = keys().await;
    let env = Env::start_with(registered(&keys[0])).await;
    let trap = Trap::start().await;
    let admin = admin_with_key(&env, &keys[0], &trap.url).await;
    put_with(&admin, "a", b"1").await;
    let reader =
        Reader::default().with_secret(NS, "gcp-sa", "key.json", key_json(&keys[0], &trap.url));
    let p = env
        .provider(key_ref_store("gcp-sa"), reader)
        .await
        .expect("provider");
    let refs: Vec<RemoteRef> = (0..20).map(|_| RemoteRef::new("a")).collect();
    for r in p.get_secrets(&refs).await {
        assert_eq!(r.expect("read").expose(), b"1");
    }
    assert_eq!(trap.hits(), 0);
}

#[tokio::test]
async fn key_secret_problems_are_config_errors() {
    let keys = keys().await;
    let env = Env::start_with(registered(&keys[0])).await;
    // Missing Secret key → the reader's NotFound, naming the store field.
    let e = env
        .provider(key_ref_store("absent"), Reader::default())
        .await
        .expect_err("no secret");
    assert!(
        e.message
            .contains("spec.provider.gcpsm.auth.secretRef.secretAccessKeySecretRef"),
        "{e}"
    );
    // Not JSON / not a service account key: Config, and the content never quoted.
    for (bad, what) in [
        ("-----BEGIN PRIVATE KEY-----canary".to_string(), "not JSON"),
        (
            serde_json::json!({"type": "authorized_user", "refresh_token": "canary"}).to_string(),
            "service_account",
        ),
        (
            serde_json::json!({"type": "service_account", "private_key": "canary"}).to_string(),
            "client_email",
        ),
    ] {
        let reader = Reader::default().with_secret(NS, "gcp-sa", "key.json", bad);
        let e = env
            .provider(key_ref_store("gcp-sa"), reader)
            .await
            .expect_err("bad key");
        assert_eq!(e.kind, ErrorKind::Config, "{e}");
        assert!(
            e.message.contains(what) && !e.message.contains("canary"),
            "{e}"
        );
    }
    assert_eq!(env.emu.handle().total_requests(), 0);
}

async fn admin_with_key(
    env: &Env,
    key: &KeyPair,
    trap: &str,
) -> google_cloud_secretmanager_v1::client::SecretManagerService {
    let json: serde_json::Value = serde_json::from_str(&key_json(key, trap)).expect("json");
    google_cloud_secretmanager_v1::client::SecretManagerService::builder()
        .with_endpoint(env.emu.endpoint())
        .with_credentials(
            google_cloud_auth::credentials::service_account::Builder::new(json)
                .build()
                .expect("admin credentials"),
        )
        .build()
        .await
        .expect("admin client")
}

async fn put_with(
    admin: &google_cloud_secretmanager_v1::client::SecretManagerService,
    id: &str,
    value: &[u8],
) {
    use google_cloud_secretmanager_v1::model::{Replication, Secret, SecretPayload, replication};
    let parent = format!("projects/{PROJECT}");
    admin
        .create_secret()
        .set_parent(&parent)
        .set_secret_id(id)
        .set_secret(
            Secret::new()
                .set_replication(Replication::new().set_automatic(replication::Automatic::new())),
        )
        .send()
        .await
        .expect("create");
    admin
        .add_secret_version()
        .set_parent(format!("{parent}/secrets/{id}"))
        .set_payload(SecretPayload::new().set_data(bytes::Bytes::copy_from_slice(value)))
        .send()
        .await
        .expect("add version");
}
