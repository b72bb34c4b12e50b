use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::{SecretKeySelector, ServiceAccountSelector};

/// `spec.provider.gcpsm`: Google Cloud Secret Manager.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcpSmProvider {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<GcpSmAuth>,
    #[serde(default, rename = "projectID", skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// Regional secrets: `projects/P/locations/L/secrets/...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_version_selection_policy: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcpSmAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<GcpSmAuthSecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity: Option<GcpWorkloadIdentity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity_federation: Option<GcpWorkloadIdentityFederation>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcpSmAuthSecretRef {
    /// The service-account key JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_secret_ref: Option<SecretKeySelector>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcpWorkloadIdentity {
    pub service_account_ref: ServiceAccountSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    #[serde(
        default,
        rename = "clusterProjectID",
        skip_serializing_if = "Option::is_none"
    )]
    pub cluster_project_id: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcpWorkloadIdentityFederation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cred_config: Option<GcpConfigMapKeyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_ref: Option<ServiceAccountSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::meta::any_object")]
    pub aws_security_credentials: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_token_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp_service_account_email: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GcpConfigMapKeyRef {
    pub name: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}
