//! Service-account JWT authentication, as Google's client performs it with a JSON key.
//! Keys are generated at run time; none is ever written to the repository.

mod common;

use std::sync::OnceLock;

use common::*;
use gcpsm_emulator::{Auth, Config};
use google_cloud_auth::credentials::{Credentials, anonymous, service_account};
use google_cloud_gax::error::rpc::Code;
use rsa::RsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::json;

const EMAIL: &str = "refsync@refsync-test.iam.gserviceaccount.com";
const KEY_ID: &str = "0123456789abcdef0123456789abcdef01234567";

struct KeyPair {
    private_pkcs8_pem: String,
    public_pem: String,
}

fn generate() -> KeyPair {
    let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("generate RSA key");
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

/// Two throwaway keys, made once per test binary: `[registered, unregistered]`.
fn keys() -> &'static [KeyPair; 2] {
    static KEYS: OnceLock<[KeyPair; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let a = std::thread::spawn(generate);
        let b = generate();
        [a.join().expect("keygen thread"), b]
    })
}

fn sa_credentials(key: &KeyPair, email: &str, key_id: &str, endpoint: &str) -> Credentials {
    let json = json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": key_id,
        "private_key": key.private_pkcs8_pem,
        "client_email": email,
        "client_id": "100000000000000000001",
        "auth_uri": format!("{endpoint}/o/oauth2/auth"),
        "token_uri": format!("{endpoint}/token"),
    });
    service_account::Builder::new(json)
        .build()
        .expect("service account credentials")
}

async fn secured() -> gcpsm_emulator::Handle {
    let keys = tokio::task::spawn_blocking(keys).await.expect("keys");
    gcpsm_emulator::spawn(Config {
        auth: Auth::ServiceAccounts(vec![(
            EMAIL.to_string(),
            KEY_ID.to_string(),
            keys[0].public_pem.clone(),
        )]),
    })
    .await
    .expect("spawn")
}

#[tokio::test]
async fn signed_requests_succeed() {
    let emu = secured().await;
    let client = client_with(
        &emu,
        sa_credentials(&keys()[0], EMAIL, KEY_ID, &emu.endpoint()),
    )
    .await;
    let parent = format!("projects/{PROJECT}");
    create_secret(&client, &parent, "authed", &[]).await;
    add_version(&client, &format!("{parent}/secrets/authed"), b"ok").await;
    let got = client
        .access_secret_version()
        .set_name(format!("{parent}/secrets/authed/versions/latest"))
        .send()
        .await
        .expect("signed access");
    assert_eq!(&got.payload.expect("payload").data[..], b"ok");
    assert_eq!(emu.request_count("access"), 1);
}

#[tokio::test]
async fn anonymous_requests_are_unauthenticated() {
    let emu = secured().await;
    let client = client_with(&emu, anonymous::Builder::new().build()).await;
    let err = client
        .access_secret_version()
        .set_name(format!("projects/{PROJECT}/secrets/x/versions/latest"))
        .send()
        .await
        .expect_err("anonymous");
    assert_eq!(code_of(&err), Some(Code::Unauthenticated), "{err}");
    assert_eq!(err.http_status_code(), Some(401));
    // The call reached the emulator once: UNAUTHENTICATED is not retried.
    assert_eq!(emu.request_count("access"), 1);
}

#[tokio::test]
async fn unregistered_or_forged_keys_are_unauthenticated() {
    let emu = secured().await;
    let endpoint = emu.endpoint();
    let keys = tokio::task::spawn_blocking(keys).await.expect("keys");
    let cases = [
        (
            "unregistered key id",
            sa_credentials(
                &keys[1],
                EMAIL,
                "feedfacefeedfacefeedfacefeedfacefeedface",
                &endpoint,
            ),
        ),
        (
            "registered key id, other key's signature",
            sa_credentials(&keys[1], EMAIL, KEY_ID, &endpoint),
        ),
        (
            "registered key, other client_email",
            sa_credentials(
                &keys[0],
                "intruder@elsewhere.iam.gserviceaccount.com",
                KEY_ID,
                &endpoint,
            ),
        ),
    ];
    for (what, creds) in cases {
        let client = client_with(&emu, creds).await;
        let err = client
            .list_secrets()
            .set_parent(format!("projects/{PROJECT}"))
            .send()
            .await
            .expect_err(what);
        assert_eq!(code_of(&err), Some(Code::Unauthenticated), "{what}: {err}");
    }
    assert_eq!(emu.request_count("list_secrets"), 3);
}

#[tokio::test]
async fn bad_public_key_is_a_spawn_error() {
    let err = gcpsm_emulator::spawn(Config {
        auth: Auth::ServiceAccounts(vec![(EMAIL.into(), KEY_ID.into(), "not a pem".into())]),
    })
    .await
    .expect_err("spawn must refuse a bad key");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
