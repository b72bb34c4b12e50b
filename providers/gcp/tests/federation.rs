//! Workload identity (federation) stores: what can be checked without Google's STS. Building
//! makes no request; the token exchange itself needs STS, which the emulator does not serve.

mod common;

use std::sync::Arc;

use common::*;
use refsync_core::api::{
    GcpConfigMapKeyRef, GcpSmAuth, GcpSmProvider, GcpWorkloadIdentity,
    GcpWorkloadIdentityFederation, ServiceAccountSelector,
};
use refsync_core::{CallCounter, ErrorKind};
use refsync_provider_gcp::GcpSm;

fn wif(cred: Option<&str>, sa: Option<&str>) -> GcpSmProvider {
    GcpSmProvider {
        auth: Some(GcpSmAuth {
            workload_identity_federation: Some(GcpWorkloadIdentityFederation {
                cred_config: cred.map(|k| GcpConfigMapKeyRef { name: "wif".into(), key: k.into(), namespace: None }),
                service_account_ref: sa.map(|n| ServiceAccountSelector { name: n.into(), ..Default::default() }),
                audience: Some(
                    "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k8s".into(),
                ),
                gcp_service_account_email: Some("reader@proj-1.iam.gserviceaccount.com".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..store(None)
    }
}

fn reader_with_cred_config(key: &str, text: &str) -> Reader {
    let mut r = Reader::default();
    r.config_maps
        .insert((NS.into(), "wif".into(), key.into()), text.into());
    r
}

async fn build(g: GcpSmProvider, reader: Reader) -> refsync_core::Result<GcpSm> {
    // No endpoint override: these stores would talk to Google, so only building is tested.
    GcpSm::build(&g, &ctx(reader, Arc::new(CallCounter::default())), None).await
}

#[tokio::test]
async fn cred_config_from_a_config_map_builds() {
    let text = r#"{"type":"external_account","audience":"x","subject_token_type":"urn:ietf:params:oauth:token-type:jwt",
        "credential_source":{"file":"/var/run/refsync/token"}}"#;
    build(
        wif(Some("config.json"), None),
        reader_with_cred_config("config.json", text),
    )
    .await
    .expect("builds");
}

#[tokio::test]
async fn cred_config_problems_name_the_field() {
    let exec = r#"{"type":"external_account","audience":"x","credential_source":{"executable":{"command":"/bin/sh"}}}"#;
    let e = build(wif(Some("c"), None), reader_with_cred_config("c", exec))
        .await
        .expect_err("executable");
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(
        e.message.contains("workloadIdentityFederation.credConfig")
            && e.message.contains("executable"),
        "{e}"
    );
    let e = build(wif(Some("missing"), None), Reader::default())
        .await
        .expect_err("no configmap");
    assert!(e.message.contains("credConfig"), "{e}");
    let e = build(wif(Some("c"), Some("sa")), Reader::default())
        .await
        .expect_err("two sources");
    assert!(e.message.contains("exactly one of"), "{e}");
}

#[tokio::test]
async fn service_account_ref_builds_without_a_token_request() {
    // The Kubernetes token is requested only when a Secret Manager call needs an access token.
    let calls = Arc::new(CallCounter::default());
    GcpSm::build(
        &wif(None, Some("eso")),
        &ctx(Reader::default(), calls.clone()),
        None,
    )
    .await
    .expect("builds");
    assert_eq!(calls.count("GenerateServiceAccountToken"), 0);
}

#[tokio::test]
async fn gke_workload_identity_needs_cluster_coordinates() {
    let wi = |loc: Option<&str>, name: Option<&str>| GcpSmProvider {
        auth: Some(GcpSmAuth {
            workload_identity: Some(GcpWorkloadIdentity {
                service_account_ref: ServiceAccountSelector {
                    name: "eso".into(),
                    ..Default::default()
                },
                cluster_location: loc.map(str::to_string),
                cluster_name: name.map(str::to_string),
                cluster_project_id: None,
            }),
            ..Default::default()
        }),
        ..store(None)
    };
    let e = build(wi(Some("europe-west1"), None), Reader::default())
        .await
        .expect_err("no cluster name");
    assert!(e.message.contains("workloadIdentity.clusterName"), "{e}");
    let e = build(wi(None, Some("c")), Reader::default())
        .await
        .expect_err("no cluster location");
    assert!(
        e.message.contains("workloadIdentity.clusterLocation"),
        "{e}"
    );
    build(wi(Some("europe-west1"), Some("c")), Reader::default())
        .await
        .expect("builds");
}
