//! The generated CRDs are accepted by a real kube-apiserver and serve the documented objects.

use kube::api::{Api, PostParams};
use refsync_api::{ExternalSecret, SecretStore};
use refsync_testenv::KubeEnv;

#[tokio::test]
async fn crds_install_and_accept_objects() {
    let env = KubeEnv::shared().await;
    let client = env.client().await;
    refsync_e2e::install_crds(&client).await.unwrap();
    let ns = env.create_namespace("crds").await.unwrap();
    let store: SecretStore = serde_json::from_value(serde_json::json!({
        "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
        "metadata": {"name": "fake", "namespace": ns},
        "spec": {"provider": {"fake": {"data": [{"key": "k", "value": "v"}]}}}
    }))
    .unwrap();
    Api::<SecretStore>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &store)
        .await
        .unwrap();
    let es: ExternalSecret = serde_json::from_value(serde_json::json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"name": "es", "namespace": ns},
        "spec": {"secretStoreRef": {"name": "fake"}, "data": [{"secretKey": "a", "remoteRef": {"key": "k"}}]}
    }))
    .unwrap();
    let created = Api::<ExternalSecret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &es)
        .await
        .unwrap();
    // The apiserver applies the CRD defaults ESO relies on.
    assert_eq!(created.spec.refresh_interval.as_deref(), Some("1h0m0s"));
    assert_eq!(
        created.spec.target.creation_policy,
        refsync_api::CreationPolicy::Owner
    );
    assert_eq!(
        created.spec.target.deletion_policy,
        refsync_api::DeletionPolicy::Retain
    );
    // An unknown provider key is preserved by the schema.
    let other: SecretStore = serde_json::from_value(serde_json::json!({
        "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
        "metadata": {"name": "other", "namespace": ns},
        "spec": {"provider": {"azurekv": {"vaultUrl": "https://example.invalid"}}}
    }))
    .unwrap();
    let got = Api::<SecretStore>::namespaced(client, &ns)
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    assert_eq!(got.spec.provider.configured(), vec!["azurekv"]);
}
