//! TLS and cert auth: a dedicated OpenBao dev server with two extra TLS listeners configured from
//! a file (the dev listener stays plain HTTP for setup). One listener requests client
//! certificates optionally (cert auth), the other requires them (`tls` client certificate).
//! All keys and certificates are generated here at run time with rcgen.

mod common;

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use refsync_core::api::{
    CaProvider, CaProviderType, VaultAuth, VaultCertAuth, VaultClientTls, VaultProvider,
};
use refsync_core::{CallCounter, ErrorKind, Provider, RemoteRef};
use refsync_testenv::process::{ServerProcess, free_port, random_string, server_dir};
use reqwest::Method;
use serde_json::json;

struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "refsync vault test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let mut s =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    s.distinguished_name.push(DnType::CommonName, "openbao");
    s.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = s.signed_by(&server_key, &issuer).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut c = CertificateParams::new(Vec::<String>::new()).unwrap();
    c.distinguished_name
        .push(DnType::CommonName, "refsync-client");
    c.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = c.signed_by(&client_key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client_cert.pem(),
        client_key: client_key.serialize_pem(),
    }
}

struct TlsBao {
    _proc: ServerProcess,
    http: String,
    tls: String,
    mtls: String,
    root: String,
}

impl TlsBao {
    async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let c = reqwest::Client::new();
        // A fresh KV v2 mount answers 400 for a moment ("upgrading"): retry up to 5 s.
        let mut attempt = 0;
        let text = loop {
            let mut req = c
                .request(method.clone(), format!("{}/v1/{path}", self.http))
                .header("X-Vault-Token", &self.root);
            if let Some(b) = &body {
                req = req.json(b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if status.is_success() {
                break text;
            }
            attempt += 1;
            assert!(attempt < 50, "{method} {path}: {status}: {text}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }
}

async fn start(pki: &Pki) -> TlsBao {
    let bin = refsync_testenv::bins::bao().expect("OpenBao binary (tests/servers/install.sh)");
    let dir = server_dir("openbao-tls").unwrap();
    let (p_http, p_tls, p_mtls) = (
        free_port().unwrap(),
        free_port().unwrap(),
        free_port().unwrap(),
    );
    let w = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    };
    let (cert, key, ca) = (
        w("server.crt", &pki.server_cert),
        w("server.key", &pki.server_key),
        w("ca.crt", &pki.ca_pem),
    );
    let config = format!(
        r#"listener "tcp" {{
  address = "127.0.0.1:{p_tls}"
  tls_cert_file = "{cert}"
  tls_key_file = "{key}"
}}
listener "tcp" {{
  address = "127.0.0.1:{p_mtls}"
  tls_cert_file = "{cert}"
  tls_key_file = "{key}"
  tls_require_and_verify_client_cert = true
  tls_client_ca_file = "{ca}"
}}
"#
    );
    let config = w("listeners.hcl", &config);
    let root = random_string(32);
    let args: Vec<OsString> = vec![
        "server".into(),
        "-dev".into(),
        format!("-config={config}").into(),
        "-log-level=warn".into(),
    ];
    let envs = [
        ("BAO_DEV_ROOT_TOKEN_ID", OsString::from(&root)),
        (
            "BAO_DEV_LISTEN_ADDRESS",
            OsString::from(format!("127.0.0.1:{p_http}")),
        ),
        ("HOME", dir.clone().into_os_string()),
        ("BAO_DISABLE_MLOCK", OsString::from("true")),
    ];
    let proc = ServerProcess::spawn("openbao-tls", &bin, &args, &envs, &dir).unwrap();
    let http = format!("http://127.0.0.1:{p_http}");
    let health = format!("{http}/v1/sys/health");
    proc.wait_ready(Duration::from_secs(30), || {
        let health = health.clone();
        async move {
            let b: serde_json::Value = reqwest::get(&health).await?.json().await?;
            Ok(b["sealed"] == false && b["standby"] == false)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("OpenBao with TLS listeners did not start: {e:#}"));
    TlsBao {
        _proc: proc,
        http,
        tls: format!("https://127.0.0.1:{p_tls}"),
        mtls: format!("https://127.0.0.1:{p_mtls}"),
        root,
    }
}

#[tokio::test]
async fn tls_ca_client_certs_and_cert_auth() {
    let pki = pki();
    let bao = start(&pki).await;
    bao.admin(
        Method::POST,
        "sys/mounts/kv",
        Some(json!({"type": "kv", "options": {"version": "2"}})),
    )
    .await;
    bao.admin(
        Method::POST,
        "kv/data/app",
        Some(json!({"data": {"tls": "works"}})),
    )
    .await;
    bao.admin(
        Method::PUT,
        "sys/policies/acl/kv-read",
        Some(json!({"policy": "path \"kv/*\" { capabilities = [\"read\", \"list\"] }"})),
    )
    .await;
    bao.admin(Method::POST, "sys/auth/cert", Some(json!({"type": "cert"})))
        .await;
    bao.admin(
        Method::POST,
        "auth/cert/certs/web",
        Some(json!({"certificate": pki.ca_pem, "token_policies": ["kv-read"], "token_ttl": "1h"})),
    )
    .await;

    let reader = MemReader::default();
    reader.put_secret(NS, "client-tls", "tls.crt", pki.client_cert.clone());
    reader.put_secret(NS, "client-tls", "tls.key", pki.client_key.clone());
    reader.put_secret(NS, "vault-token", "token", bao.root.clone());
    reader.put_config_map(NS, "ca", "ca.crt", &pki.ca_pem);
    reader.put_secret(NS, "ca-secret", "ca.crt", pki.ca_pem.clone());
    let reader = Arc::new(reader);
    let calls = Arc::new(CallCounter::default());
    let ca_b64 = base64::engine::general_purpose::STANDARD.encode(&pki.ca_pem);

    // Cert auth over TLS with caBundle.
    let cert_spec = VaultProvider {
        server: bao.tls.clone(),
        path: Some("kv".into()),
        ca_bundle: Some(ca_b64.clone()),
        auth: Some(VaultAuth {
            cert: Some(VaultCertAuth {
                path: "cert".into(),
                vault_role: Some("web".into()),
                client_cert: Some(sel("client-tls", "tls.crt")),
                secret_ref: Some(sel("client-tls", "tls.key")),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let p = build(&cert_spec, reader.clone(), calls.clone())
        .await
        .unwrap();
    p.validate().await.unwrap();
    for _ in 0..5 {
        assert_eq!(
            p.get_secret(&RemoteRef::new("app")).await.unwrap().expose(),
            br#"{"tls":"works"}"#
        );
    }
    assert_eq!(
        calls.count("Login"),
        1,
        "cert auth: one login for five reads"
    );

    // caProvider (ConfigMap and Secret) with token auth.
    for (t, name) in [
        (CaProviderType::ConfigMap, "ca"),
        (CaProviderType::Secret, "ca-secret"),
    ] {
        let mut spec = token_spec(&bao.tls, Some("kv"), 2);
        spec.ca_provider = Some(CaProvider {
            type_: t,
            name: name.into(),
            key: Some("ca.crt".into()),
            namespace: None,
        });
        let p = build(&spec, reader.clone(), calls.clone()).await.unwrap();
        p.validate().await.unwrap();
        assert_eq!(
            p.get_secret(&RemoteRef::new("app")).await.unwrap().expose(),
            br#"{"tls":"works"}"#
        );
    }

    // Without the CA: a clear TLS reason.
    let p = build(
        &token_spec(&bao.tls, Some("kv"), 2),
        reader.clone(),
        calls.clone(),
    )
    .await
    .unwrap();
    let e = p.validate().await.unwrap_err();
    eprintln!("validate without the CA: {e}");
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(
        e.to_string().to_lowercase().contains("certificate"),
        "TLS reason in: {e}"
    );

    // A listener that requires a client certificate: the `tls` block provides it.
    let mut spec = token_spec(&bao.mtls, Some("kv"), 2);
    spec.ca_bundle = Some(ca_b64.clone());
    let p = build(&spec, reader.clone(), calls.clone()).await.unwrap();
    let e = p
        .validate()
        .await
        .expect_err("no client certificate: refused");
    eprintln!("validate without a client certificate: {e}");
    spec.tls = Some(VaultClientTls {
        cert_secret_ref: Some(sel("client-tls", "")),
        key_secret_ref: Some(sel("client-tls", "")),
    });
    let p = build(&spec, reader.clone(), calls.clone()).await.unwrap();
    p.validate().await.unwrap();
    assert_eq!(
        p.get_secret(&RemoteRef::new("app")).await.unwrap().expose(),
        br#"{"tls":"works"}"#
    );

    // Config errors name their field.
    spec.tls = Some(VaultClientTls {
        cert_secret_ref: Some(sel("client-tls", "tls.crt")),
        key_secret_ref: None,
    });
    let e = build(&spec, reader.clone(), calls.clone())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("spec.provider.vault.tls"), "{e}");
    let mut bad = token_spec(&bao.tls, Some("kv"), 2);
    bad.ca_bundle = Some("not base64!".into());
    let e = build(&bad, reader.clone(), calls.clone())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.to_string().contains("caBundle"), "{e}");
    // A client key that does not parse: Config, no key material in the message.
    reader.put_secret(NS, "broken", "tls.crt", pki.client_cert.clone());
    reader.put_secret(
        NS,
        "broken",
        "tls.key",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let mut c = cert_spec.clone();
    c.auth.as_mut().unwrap().cert.as_mut().unwrap().client_cert = Some(sel("broken", "tls.crt"));
    c.auth.as_mut().unwrap().cert.as_mut().unwrap().secret_ref = Some(sel("broken", "tls.key"));
    let e = build(&c, reader.clone(), calls.clone()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
}
