//! `refsync render` against the GCP Secret Manager emulator, authenticating with a
//! service-account key that lives in a `v1/Secret` manifest next to the store. The RSA key is
//! made at run time (openssl); its public half is registered with the emulator, which rejects
//! every request not signed by it. `GCP_SECRETMANAGER_ENDPOINT` points the binary at the
//! emulator; the key's `token_uri` points at a listener that counts connections, so the test
//! proves nothing went to a token endpoint.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use refsync_e2e::{manifest_dir, render};
use refsync_testenv::gcp::{Auth, Config, GcpSm};

const PROJECT: &str = "refsync-e2e";
const EMAIL: &str = "refsync-e2e@refsync-e2e.iam.gserviceaccount.com";
const KEY_ID: &str = "e2e0000000000000000000000000000000000001";

/// A 2048-bit RSA key made now: (PKCS#8 private PEM, SPKI public PEM, private key file).
fn openssl_key(dir: &Path, name: &str) -> (String, String, std::path::PathBuf) {
    let private = dir.join(format!("{name}.pem"));
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("this test needs the openssl CLI to make a throwaway RSA key: {e}")
            });
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let p = private.to_str().unwrap();
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        p,
    ]);
    let public = String::from_utf8(run(&["pkey", "-in", p, "-pubout"])).unwrap();
    let pem = std::fs::read_to_string(&private).unwrap();
    assert!(
        pem.starts_with("-----BEGIN PRIVATE KEY-----"),
        "PKCS#8 PEM expected"
    );
    (pem, public, private)
}

/// A self-signed service-account JWT, as google-cloud-auth makes one, for the fixture writes.
fn admin_jwt(private_key_file: &Path) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": KEY_ID});
    let claims = serde_json::json!({
        "iss": EMAIL, "sub": EMAIL, "scope": "https://www.googleapis.com/auth/cloud-platform",
        "iat": now - 10, "exp": now + 600,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let input_file = private_key_file.with_extension("input");
    std::fs::write(&input_file, &signing_input).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(private_key_file)
        .arg(&input_file)
        .output()
        .expect("openssl dgst");
    assert!(
        out.status.success(),
        "openssl dgst: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(out.stdout))
}

/// Fixture writes through the emulator's REST API (the test's own setup, not the code under test).
async fn put(emu: &GcpSm, jwt: &str, id: &str, value: &[u8], labels: serde_json::Value) {
    let http = reqwest::Client::new();
    let base = format!("{}/v1/projects/{PROJECT}/secrets", emu.endpoint());
    let r = http
        .post(format!("{base}?secretId={id}"))
        .bearer_auth(jwt)
        .json(&serde_json::json!({"replication": {"automatic": {}}, "labels": labels}))
        .send()
        .await
        .expect("create secret");
    assert!(
        r.status().is_success() || r.status() == 409,
        "create {id}: {}",
        r.status()
    );
    let r = http
        .post(format!("{base}/{id}:addVersion"))
        .bearer_auth(jwt)
        .json(&serde_json::json!({"payload": {"data": STANDARD.encode(value)}}))
        .send()
        .await
        .expect("add version");
    assert!(
        r.status().is_success(),
        "add version to {id}: {}",
        r.status()
    );
}

/// Counts connections to the service-account key's token endpoint (there must be none).
fn token_trap() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            h.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    (url, hits)
}

fn manifests(key_json: &str) -> String {
    let indented: String = key_json.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: gcp-sa
  namespace: payments
type: Opaque
stringData:
  key.json: |
{indented}---
apiVersion: external-secrets.io/v1
kind: SecretStore
metadata:
  name: gcp
  namespace: payments
spec:
  provider:
    gcpsm:
      projectID: {PROJECT}
      auth:
        secretRef:
          secretAccessKeySecretRef:
            name: gcp-sa
            key: key.json
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata:
  name: db
  namespace: payments
spec:
  secretStoreRef:
    name: gcp
  target:
    name: db
  data:
    - secretKey: username
      remoteRef:
        key: db-config
        property: user
    - secretKey: password
      remoteRef:
        key: db-password
    - secretKey: previous-password
      remoteRef:
        key: db-password
        version: "1"
    - secretKey: team
      remoteRef:
        key: db-password
        metadataPolicy: Fetch
        property: labels.team
  dataFrom:
    - find:
        tags:
          feature: flags
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_reads_gcp_secret_manager_with_a_service_account_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (private_pem, public_pem, private_file) = openssl_key(tmp.path(), "registered");
    let emu = GcpSm::start_with(Config {
        auth: Auth::ServiceAccounts(vec![(EMAIL.into(), KEY_ID.into(), public_pem)]),
    })
    .await
    .expect("the gcpsm emulator starts");
    let jwt = admin_jwt(&private_file);
    put(
        &emu,
        &jwt,
        "db-config",
        br#"{"user":"payments","port":5432}"#,
        serde_json::json!({}),
    )
    .await;
    put(
        &emu,
        &jwt,
        "db-password",
        b"old-password-1",
        serde_json::json!({"team": "payments"}),
    )
    .await;
    put(
        &emu,
        &jwt,
        "db-password",
        b"current-password-2",
        serde_json::json!({}),
    )
    .await;
    put(
        &emu,
        &jwt,
        "flag-checkout",
        b"on",
        serde_json::json!({"feature": "flags"}),
    )
    .await;
    put(
        &emu,
        &jwt,
        "flag-search",
        b"off",
        serde_json::json!({"feature": "flags"}),
    )
    .await;
    emu.handle().reset_counts();

    let (trap, hits) = token_trap();
    let key_json = serde_json::to_string_pretty(&serde_json::json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": KEY_ID,
        "private_key": private_pem,
        "client_email": EMAIL,
        "client_id": "100000000000000000007",
        "auth_uri": format!("{trap}/o/oauth2/auth"),
        "token_uri": format!("{trap}/token"),
    }))
    .unwrap();
    let dir = manifest_dir(&[("all.yaml", &manifests(&key_json))]).unwrap();
    let endpoint = emu.endpoint();
    let dir_path = dir.path().to_path_buf();
    let r = tokio::task::spawn_blocking(move || {
        render(
            &dir_path,
            &[
                ("GCP_SECRETMANAGER_ENDPOINT", endpoint),
                ("GOOGLE_APPLICATION_CREDENTIALS", String::new()),
            ],
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert!(r.success, "render failed: {}", r.stderr);
    let db = &r.secrets["payments/db"];
    let text = |k: &str| String::from_utf8(db[k].clone()).unwrap();
    assert_eq!(text("username"), "payments");
    assert_eq!(text("password"), "current-password-2");
    assert_eq!(text("previous-password"), "old-password-1");
    assert_eq!(text("team"), "payments");
    assert_eq!(text("flag-checkout"), "on");
    assert_eq!(text("flag-search"), "off");
    assert_eq!(db.len(), 6, "{:?}", db.keys().collect::<Vec<_>>());
    // Nothing but the emulator was asked; the key's token endpoint never.
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the token endpoint was called"
    );
    let h = emu.handle();
    assert_eq!(h.request_count("GetSecret"), 1, "metadata");
    assert_eq!(h.request_count("ListSecrets"), 1, "find by tags");
    assert_eq!(
        h.request_count("AccessSecretVersion"),
        5,
        "one read per distinct (key, version)"
    );
    assert_eq!(h.total_requests(), 7, "{}", r.stderr);
    assert!(
        !r.stdout.contains("PRIVATE KEY"),
        "the credentials Secret is not rendered"
    );
    assert!(
        !r.stderr.contains("PRIVATE KEY") && !r.stderr.contains("current-password-2"),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_with_an_unregistered_key_fails_with_an_auth_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, public_pem, _) = openssl_key(tmp.path(), "registered");
    let (other_pem, _, _) = openssl_key(tmp.path(), "other");
    let emu = GcpSm::start_with(Config {
        auth: Auth::ServiceAccounts(vec![(EMAIL.into(), KEY_ID.into(), public_pem)]),
    })
    .await
    .expect("the gcpsm emulator starts");
    let key_json = serde_json::to_string_pretty(&serde_json::json!({
        "type": "service_account", "project_id": PROJECT, "private_key_id": KEY_ID,
        "private_key": other_pem, "client_email": EMAIL,
    }))
    .unwrap();
    let dir = manifest_dir(&[("all.yaml", &manifests(&key_json))]).unwrap();
    let endpoint = emu.endpoint();
    let dir_path = dir.path().to_path_buf();
    let r = tokio::task::spawn_blocking(move || {
        render(&dir_path, &[("GCP_SECRETMANAGER_ENDPOINT", endpoint)])
    })
    .await
    .unwrap()
    .unwrap();
    assert!(!r.success, "an unregistered key must fail: {}", r.stdout);
    assert!(r.stderr.contains("UNAUTHENTICATED"), "{}", r.stderr);
    assert!(!r.stderr.contains("PRIVATE KEY"), "{}", r.stderr);
    assert!(!r.secrets.contains_key("payments/db"));
}
