//! ESO's documentation manifests (the contract) load through the manifest reader.

use std::path::{Path, PathBuf};

use refsync_core::manifest::ManifestSet;

/// These documentation pages nest unescaped double quotes inside double-quoted scalars: no
/// YAML parser accepts them. The test asserts that, so a fixed page is noticed.
const NOT_YAML_UPSTREAM: &[&str] = &[
    "filtercertchain-template-v2-external-secret.yaml",
    "filterpem-template-v2-external-secret.yaml",
    "pkcs12-template-v2-external-secret.yaml",
];

/// Documentation pages with placeholders where values go (`projectID: [PROJECT_ID]`,
/// `auth: ...`): not objects any apiserver accepts. Each must fail naming the field.
const PLACEHOLDERS: &[(&str, &str)] = &[
    (
        "gcpsm-sa-secret-store.yaml",
        "spec.provider.gcpsm.projectID",
    ),
    (
        "gcpsm-wif-core-controller-secret-store.yaml",
        "spec.provider.gcpsm.projectID",
    ),
    (
        "gcpsm-wif-iam-secret-store.yaml",
        "spec.provider.gcpsm.projectID",
    ),
    (
        "gcpsm-wif-non-native-iam-secret-store.yaml",
        "spec.provider.gcpsm.projectID",
    ),
    (
        "gcpsm-wif-sa-secret-store-with-explicit-name-and-location.yaml",
        "spec.provider.gcpsm.auth.workloadIdentity.clusterLocation",
    ),
    (
        "gcpsm-wif-sa-secret-store.yaml",
        "spec.provider.gcpsm.projectID",
    ),
    ("vault-mtls-store.yaml", "spec.provider.vault.auth"),
];

fn load(dir: &Path) -> (ManifestSet, usize) {
    let mut set = ManifestSet::default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut skipped = 0;
    for f in files {
        // ESO's documentation wraps some snippets in Jekyll `{% raw %}` markers.
        let text: String = std::fs::read_to_string(&f)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("{%"))
            .map(|l| format!("{l}\n"))
            .collect();
        let before = set.errors.len();
        set.add_text(&text, &f, "default");
        let name = f.file_name().unwrap().to_str().unwrap();
        if let Some((_, field)) = PLACEHOLDERS.iter().find(|(f, _)| *f == name) {
            assert_eq!(
                set.errors.len(),
                before + 1,
                "{name} has placeholders and must fail"
            );
            let e = set.errors.pop().unwrap();
            assert!(
                e.message.contains(field),
                "{name}: error must name {field}: {}",
                e.message
            );
            skipped += 1;
            continue;
        }
        if NOT_YAML_UPSTREAM.contains(&name) {
            assert_eq!(
                set.errors.len(),
                before + 1,
                "{name} is expected to be invalid YAML upstream"
            );
            set.errors.pop();
            skipped += 1;
        }
    }
    (set, skipped)
}

#[test]
fn eso_documentation_snippets_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/eso/snippets");
    if !dir.is_dir() {
        eprintln!(
            "{} is not present; project examples are checked by project_examples_load",
            dir.display()
        );
        return;
    }
    let (set, skipped) = load(&dir);
    let errors: Vec<String> = set
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.origin, e.message))
        .collect();
    assert!(
        errors.is_empty(),
        "snippets failed to load:\n{}",
        errors.join("\n")
    );
    assert_eq!(skipped, NOT_YAML_UPSTREAM.len() + PLACEHOLDERS.len());
    let n = set.external_secrets.len()
        + set.secret_stores.len()
        + set.cluster_secret_stores.len()
        + set.cluster_external_secrets.len();
    assert!(n >= 50, "only {n} documents loaded");
    assert!(
        set.external_secrets.len() >= 40,
        "{}",
        set.external_secrets.len()
    );
}

#[test]
fn project_examples_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/examples");
    for ex in ["quickstart", "broken"] {
        let set = ManifestSet::load_dir(&root.join(ex), "default").unwrap();
        assert!(set.errors.is_empty(), "{ex}: {:?}", set.errors);
        assert!(!set.external_secrets.is_empty());
    }
}
