//! The GCP Secret Manager emulator's service-account key flow, for tests: a throwaway RSA key
//! made at run time with the openssl CLI (nothing committed), the emulator's registered
//! identity, a self-signed JWT as google-cloud-auth makes one, and fixture writes through the
//! emulator's REST API (the tests' own setup, not the code under test).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

pub const PROJECT: &str = "refsync-e2e";
pub const EMAIL: &str = "refsync-e2e@refsync-e2e.iam.gserviceaccount.com";
pub const KEY_ID: &str = "e2e0000000000000000000000000000000000001";

/// A 2048-bit RSA key made now: (PKCS#8 private PEM, SPKI public PEM, private key file).
pub fn openssl_key(dir: &Path, name: &str) -> (String, String, PathBuf) {
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
    let p = private.to_str().expect("utf-8 temp path");
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        p,
    ]);
    let public = String::from_utf8(run(&["pkey", "-in", p, "-pubout"])).expect("PEM is text");
    let pem = std::fs::read_to_string(&private).expect("read private key");
    assert!(
        pem.starts_with("-----BEGIN PRIVATE KEY-----"),
        "PKCS#8 PEM expected"
    );
    (pem, public, private)
}

/// A self-signed service-account JWT for `EMAIL` / `KEY_ID`, for the fixture writes.
pub fn admin_jwt(private_key_file: &Path) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
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
    std::fs::write(&input_file, &signing_input).expect("write JWT input");
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

/// Creates secret `id` (with `labels`; 409 = exists is fine) in `PROJECT` and adds a version
/// holding `value`, signed by `jwt`.
pub async fn put(endpoint: &str, jwt: &str, id: &str, value: &[u8], labels: serde_json::Value) {
    let http = reqwest::Client::new();
    let base = format!("{endpoint}/v1/projects/{PROJECT}/secrets");
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
