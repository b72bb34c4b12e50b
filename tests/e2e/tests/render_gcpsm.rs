//! `refsync render` against the GCP Secret Manager emulator, authenticating with a
//! service-account key that lives in a `v1/Secret` manifest next to the store. The RSA key is
//! made at run time (openssl); its public half is registered with the emulator, which rejects
//! every request not signed by it. `GCP_SECRETMANAGER_ENDPOINT` points the binary at the
//! emulator; the key's `token_uri` points at a listener that counts connections, so the test
//! proves nothing went to a token endpoint.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use refsync_e2e::gcp::{EMAIL, KEY_ID, PROJECT, admin_jwt, openssl_key, put};
use refsync_e2e::{manifest_dir, render};
use refsync_testenv::gcp::{Auth, Config, GcpSm};

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
        &emu.endpoint(),
        &jwt,
        "db-config",
        br#"{"user":"payments","port":5432}"#,
        serde_json::json!({}),
    )
    .await;
    put(
        &emu.endpoint(),
        &jwt,
        "db-password",
        b"old-password-1",
        serde_json::json!({"team": "payments"}),
    )
    .await;
    put(
        &emu.endpoint(),
        &jwt,
        "db-password",
        b"current-password-2",
        serde_json::json!({}),
    )
    .await;
    put(
        &emu.endpoint(),
        &jwt,
        "flag-checkout",
        b"on",
        serde_json::json!({"feature": "flags"}),
    )
    .await;
    put(
        &emu.endpoint(),
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
