//! The checked-in CRDs are exactly what the types generate.

use std::path::Path;

use refsync_api::SecretStore;

#[test]
fn unknown_provider_is_kept() {
    let store: SecretStore = serde_json::from_value(serde_json::json!({
        "apiVersion": "external-secrets.io/v1",
        "kind": "SecretStore",
        "metadata": {"name": "s", "namespace": "n"},
        "spec": {"provider": {"azurekv": {"vaultUrl": "https://x"}}}
    }))
    .unwrap();
    assert_eq!(store.spec.provider.configured(), vec!["azurekv"]);
}

#[test]
fn checked_in_crds_match_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/crd/refsync-crds.yaml");
    let generated = refsync_api::crds_yaml();
    if std::env::var_os("REFSYNC_UPDATE_CRDS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "config/crd/refsync-crds.yaml drifted from the types: run `refsync crds > config/crd/refsync-crds.yaml` \
         (or REFSYNC_UPDATE_CRDS=1 cargo test -p refsync-api)"
    );
}
