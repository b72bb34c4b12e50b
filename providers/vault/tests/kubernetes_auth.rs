//! Kubernetes auth: OpenBao verifies a real ServiceAccount token (TokenRequest API) through the
//! real kube-apiserver's TokenReview API.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use common::*;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::api::{ObjectMeta, PostParams};
use refsync_core::api::{
    ServiceAccountSelector, StoreKind, VaultAuth, VaultJwtAuth, VaultKubernetesAuth,
    VaultKubernetesServiceAccountTokenAuth, VaultProvider,
};
use refsync_core::{CallCounter, ErrorKind, Provider, RemoteRef, SecretReader, StoreContext};
use refsync_provider_vault::Vault;
use refsync_testenv::{KubeEnv, OpenBao};
use reqwest::Method;
use serde_json::json;

async fn create_sa(client: &kube::Client, ns: &str, name: &str) {
    let api: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), ns);
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &sa)
        .await
        .unwrap_or_else(|e| panic!("create ServiceAccount {ns}/{name}: {e}"));
}

#[tokio::test]
async fn kubernetes_auth_with_token_request_and_token_review() {
    let kube_env = KubeEnv::shared().await;
    let bao = OpenBao::shared().await;
    let client = kube_env.client().await;
    let ns = kube_env.create_namespace("vault-k8s").await.unwrap();

    // A reviewer ServiceAccount allowed to create TokenReviews, and the one the store uses.
    create_sa(&client, &ns, "token-reviewer").await;
    create_sa(&client, &ns, "vault-reader").await;
    let crb = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("{ns}-reviewer")),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "system:auth-delegator".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "token-reviewer".into(),
            namespace: Some(ns.clone()),
            ..Default::default()
        }]),
    };
    kube::Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &crb)
        .await
        .unwrap();

    let reader = Arc::new(MemReader {
        kube: Some(client.clone()),
        ..Default::default()
    });
    let reviewer_jwt = reader
        .service_account_token(&ns, "token-reviewer", &[], Some(3600))
        .await
        .unwrap();
    let reviewer_jwt = String::from_utf8(reviewer_jwt.into_vec()).unwrap();

    let kc = kube_env.kubeconfig();
    let ca_b64 = kc.clusters[0]
        .cluster
        .as_ref()
        .unwrap()
        .certificate_authority_data
        .clone()
        .unwrap();
    let ca_pem = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(ca_b64)
            .unwrap(),
    )
    .unwrap();

    let mount = bao.create_kv_mount("k8s", 2).await.unwrap();
    kv_put(
        bao,
        &mount,
        2,
        "app",
        json!({"from": "kubernetes-auth"}),
        &BTreeMap::new(),
    )
    .await;
    let policy = read_policy(bao, &mount).await;
    let path = enable_auth(bao, "kubernetes").await;
    admin(
        bao,
        Method::POST,
        &format!("auth/{path}/config"),
        Some(json!({
            "kubernetes_host": kube_env.server_url(),
            "kubernetes_ca_cert": ca_pem,
            "token_reviewer_jwt": reviewer_jwt,
            "disable_local_ca_jwt": true,
        })),
    )
    .await;
    admin(
        bao,
        Method::POST,
        &format!("auth/{path}/role/reader"),
        Some(json!({
            "bound_service_account_names": ["vault-reader"],
            "bound_service_account_namespaces": [ns],
            "token_policies": [policy],
            "token_ttl": "1h",
        })),
    )
    .await;

    let calls = Arc::new(CallCounter::default());
    let ctx = StoreContext {
        kind: StoreKind::SecretStore,
        name: "vault".into(),
        namespace: ns.clone(),
        reader: reader.clone(),
        calls: calls.clone(),
    };
    let spec = |k: VaultKubernetesAuth| VaultProvider {
        server: bao.addr().into(),
        path: Some(mount.clone()),
        auth: Some(VaultAuth {
            kubernetes: Some(k),
            ..Default::default()
        }),
        ..Default::default()
    };

    // serviceAccountRef: TokenRequest, then login; one login for many reads.
    let sa_spec = spec(VaultKubernetesAuth {
        mount_path: path.clone(),
        role: "reader".into(),
        service_account_ref: Some(ServiceAccountSelector {
            name: "vault-reader".into(),
            ..Default::default()
        }),
        secret_ref: None,
    });
    let p = Vault::new(&sa_spec, &ctx).await.unwrap();
    p.validate()
        .await
        .unwrap_or_else(|e| panic!("kubernetes login: {e}\n{}", bao.log_tail(20)));
    for _ in 0..10 {
        assert_eq!(
            p.get_secret(&RemoteRef::new("app")).await.unwrap().expose(),
            br#"{"from":"kubernetes-auth"}"#
        );
    }
    assert_eq!(calls.count("Login"), 1);

    // secretRef: a token stored in a Secret (key defaults to `token`).
    let sa_token = reader
        .service_account_token(&ns, "vault-reader", &[], Some(600))
        .await
        .unwrap();
    reader.put_secret(&ns, "sa-token", "token", sa_token.expose().to_vec());
    let p = Vault::new(
        &spec(VaultKubernetesAuth {
            mount_path: path.clone(),
            role: "reader".into(),
            service_account_ref: None,
            secret_ref: Some(refsync_core::api::SecretKeySelector {
                name: Some("sa-token".into()),
                ..Default::default()
            }),
        }),
        &ctx,
    )
    .await
    .unwrap();
    assert_eq!(
        p.get_secret(&RemoteRef::new("app")).await.unwrap().expose(),
        br#"{"from":"kubernetes-auth"}"#
    );

    // A ServiceAccount the role is not bound to: Auth.
    create_sa(&client, &ns, "other").await;
    let p = Vault::new(
        &spec(VaultKubernetesAuth {
            mount_path: path.clone(),
            role: "reader".into(),
            service_account_ref: Some(ServiceAccountSelector {
                name: "other".into(),
                ..Default::default()
            }),
            secret_ref: None,
        }),
        &ctx,
    )
    .await
    .unwrap();
    let e = p.validate().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");

    // jwt auth with kubernetesServiceAccountToken: the token comes from the TokenRequest API
    // (audience `vault`), OpenBao checks it against the apiserver's JWKS (anonymous read of the
    // issuer discovery endpoints granted here, as clusters do for OIDC federation).
    let discovery = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("{ns}-discovery")),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "system:service-account-issuer-discovery".into(),
        },
        subjects: Some(vec![Subject {
            kind: "Group".into(),
            name: "system:unauthenticated".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        }]),
    };
    kube::Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &discovery)
        .await
        .unwrap();
    let jwt_path = enable_auth(bao, "jwt").await;
    admin(
        bao,
        Method::POST,
        &format!("auth/{jwt_path}/config"),
        Some(json!({
            "jwks_url": format!("{}/openid/v1/jwks", kube_env.server_url()),
            "jwks_ca_pem": ca_pem,
            "bound_issuer": kube_env.server_url(),
        })),
    )
    .await;
    admin(
        bao,
        Method::POST,
        &format!("auth/{jwt_path}/role/sa"),
        Some(json!({
            "role_type": "jwt",
            "bound_audiences": ["vault"],
            "user_claim": "sub",
            "bound_subject": format!("system:serviceaccount:{ns}:vault-reader"),
            "token_policies": [policy],
            "token_ttl": "1h",
        })),
    )
    .await;
    let j = VaultProvider {
        server: bao.addr().into(),
        path: Some(mount.clone()),
        auth: Some(VaultAuth {
            jwt: Some(VaultJwtAuth {
                path: jwt_path.clone(),
                role: Some("sa".into()),
                secret_ref: None,
                kubernetes_service_account_token: Some(VaultKubernetesServiceAccountTokenAuth {
                    service_account_ref: ServiceAccountSelector {
                        name: "vault-reader".into(),
                        ..Default::default()
                    },
                    audiences: None, // ESO's default: ["vault"]
                    expiration_seconds: None,
                }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let p = Vault::new(&j, &ctx).await.unwrap();
    p.validate().await.unwrap_or_else(|e| {
        panic!(
            "jwt login with a TokenRequest token: {e}\n{}",
            bao.log_tail(20)
        )
    });
    assert_eq!(
        p.get_secret(&RemoteRef::new("app")).await.unwrap().expose(),
        br#"{"from":"kubernetes-auth"}"#
    );
}
