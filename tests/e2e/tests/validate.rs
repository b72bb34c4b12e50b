//! `refsync validate` on the example tree: exact output, text and JSON, and exit codes.

use std::path::Path;
use std::process::Command;

fn validate(dir: &str, extra: &[&str]) -> (bool, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(refsync_e2e::refsync_bin())
        .current_dir(&root)
        .args(["validate", "--manifests", dir])
        .args(extra)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn validate_names_every_problem_exactly() {
    let (ok, text) = validate("config/examples/validate", &[]);
    assert!(!ok);
    let f = "config/examples/validate/team-b.yaml";
    let expected = format!(
        "error: {f} (document 1): ExternalSecret team-b/borrows-team-a-store: spec.secretStoreRef: SecretStore team-a-store exists only in namespace team-a; a SecretStore is visible only from its own namespace (use a ClusterSecretStore to share it)
error: {f} (document 2): ExternalSecret team-b/app: spec.target.name: Secret team-b/app-secret is also written by app-copy
error: {f} (document 3): ExternalSecret team-b/app-copy: spec.dataFrom[0].find.name.regexp: invalid regexp: regex parse error: (unclosed ^ error: unclosed group
error: {f} (document 3): ExternalSecret team-b/app-copy: spec.target.name: Secret team-b/app-secret is also written by app
error: {f} (document 4): ExternalSecret ops/outsider: spec.secretStoreRef: ClusterSecretStore shared does not allow namespace ops (spec.conditions)
6 object(s) checked, 5 error(s)
"
    );
    assert_eq!(text, expected);
}

#[test]
fn validate_json_output() {
    let (ok, text) = validate("config/examples/validate", &["--output", "json"]);
    assert!(!ok);
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["errors"], 5);
    assert_eq!(doc["objects"], 6);
    let first = &doc["findings"][0];
    assert_eq!(first["kind"], "ExternalSecret");
    assert_eq!(first["namespace"], "team-b");
    assert_eq!(first["name"], "borrows-team-a-store");
    assert_eq!(
        first["file"],
        "config/examples/validate/team-b.yaml (document 1)"
    );
}

#[test]
fn validate_passes_the_quickstart_and_names_broken_templates() {
    let (ok, text) = validate("config/examples/quickstart", &[]);
    assert!(ok, "{text}");
    assert_eq!(text, "4 object(s) checked, 0 error(s)\n");
    let (ok, text) = validate("config/examples/broken", &[]);
    assert!(!ok);
    assert!(
        text.contains("ExternalSecret shop/bad-template: spec.target.template.data.broken:"),
        "{text}"
    );
    assert!(text.contains("SecretStore shop/azure: spec.provider.azurekv: provider azurekv is not supported by refsync"), "{text}");
    assert!(!text.contains("canary"), "{text}");
}
