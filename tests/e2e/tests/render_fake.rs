//! `refsync render` as a user runs it: the shipped quickstart, and broken manifests.

use std::path::Path;

use refsync_e2e::render;

fn examples(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../config/examples")
        .join(name)
}

#[test]
fn quickstart_renders_exact_secrets() {
    let r = render(&examples("quickstart"), &[]).unwrap();
    assert!(r.success, "render failed: {}", r.stderr);
    let db = &r.secrets["shop/db-credentials"];
    assert_eq!(db["username"], b"shop");
    assert_eq!(db["password"], b"example-only-not-a-secret");
    assert_eq!(db.len(), 2);
    let api = &r.secrets["shop/api"];
    assert_eq!(
        String::from_utf8(api["config.json"].clone()).unwrap(),
        r#"{"token": "example-token-v2", "db": "shop@db:5432"}"#
    );
    assert_eq!(api.len(), 1, "a template with data keeps only its keys");
    let flags = &r.secrets["shop/flags"];
    assert_eq!(
        flags["feature-flags"],
        br#"{"checkout":"on","search":"off"}"#
    );
    // ESO's bookkeeping metadata.
    let doc = r
        .documents
        .iter()
        .find(|d| d.pointer("/metadata/name").unwrap() == "db-credentials")
        .unwrap();
    assert_eq!(
        doc.pointer("/metadata/labels/reconcile.external-secrets.io~1managed")
            .unwrap(),
        "true"
    );
    assert_eq!(doc.pointer("/metadata/labels/app").unwrap(), "shop");
    assert!(
        doc.pointer("/metadata/annotations/reconcile.external-secrets.io~1data-hash")
            .is_some()
    );
    assert!(r.stderr.contains("shop/db-credentials\tstore=SecretStore/demo-store\tok: Secret db-credentials (keys: password,username)"), "{}", r.stderr);
    assert!(
        r.stderr.contains("3 ExternalSecret(s), 0 failed"),
        "{}",
        r.stderr
    );
}

#[test]
fn broken_manifests_fail_naming_object_and_field_without_values() {
    let r = render(&examples("broken"), &[]).unwrap();
    assert!(!r.success, "broken manifests must fail");
    let e = &r.stderr;
    assert!(
        e.contains("shop/bad-template") && e.contains("spec.target.template.data.broken"),
        "{e}"
    );
    assert!(e.contains("nosuchfunction"), "{e}");
    assert!(
        e.contains("shop/missing-key") && e.contains("spec.data[0] (key: /shop/does-not-exist)"),
        "{e}"
    );
    assert!(
        e.contains("shop/unknown-store") && e.contains("SecretStore shop/no-such-store not found"),
        "{e}"
    );
    assert!(
        e.contains("shop/unsupported-provider")
            && e.contains("provider azurekv is not supported by refsync"),
        "{e}"
    );
    assert!(e.contains("4 ExternalSecret(s), 4 failed"), "{e}");
    assert!(
        !e.contains("canary-do-not-print") && !r.stdout.contains("canary"),
        "a secret value leaked:\n{e}"
    );
    assert!(r.documents.is_empty());
}

#[test]
fn hostile_yaml_is_bounded() {
    // A billion-laughs alias bomb and a deeply nested document.
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..30 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let deep = format!(
        "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {{name: deep}}\nspec: {}{}\n",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let dir = refsync_e2e::manifest_dir(&[("bomb.yaml", &bomb), ("deep.yaml", &deep)]).unwrap();
    refsync_e2e::refsync_bin();
    let started = std::time::Instant::now();
    let r = render(dir.path(), &[]).unwrap();
    assert!(!r.success);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        r.stderr.contains("bomb.yaml") && r.stderr.contains("deep.yaml"),
        "{}",
        r.stderr
    );
}
