//! `SecretStore` and `ClusterSecretStore`: where remote values live and how to reach them.
//!
//! Rule: every CRD shape, provider blocks included, lives in this crate; provider crates read
//! their block from here (through `refsync_core::api`).

mod aws;
mod fake;
mod gcp;
mod vault;

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use aws::*;
pub use fake::*;
pub use gcp::*;
pub use vault::*;

use crate::meta::Condition;

/// The fields of `SecretStore.spec` and `ClusterSecretStore.spec` (they are the same).
macro_rules! store_spec {
    ($(#[$attr:meta])* $name:ident) => {
        #[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
        $(#[$attr])*
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            /// The controller class that should process this store; empty = every controller.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub controller: Option<String>,
            pub provider: SecretStoreProvider,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub retry_settings: Option<SecretStoreRetrySettings>,
            /// Seconds between store validations.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub refresh_interval: Option<i64>,
            /// Which namespaces may use a ClusterSecretStore (ORed).
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub conditions: Vec<ClusterSecretStoreCondition>,
        }
    };
}

store_spec!(
    #[kube(
        group = "external-secrets.io",
        version = "v1",
        kind = "SecretStore",
        namespaced,
        status = "SecretStoreStatus",
        shortname = "ss",
        category = "external-secrets",
        printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
        printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
        printcolumn = r#"{"name":"Capabilities","type":"string","jsonPath":".status.capabilities"}"#,
        printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
    )]
    SecretStoreSpec
);

store_spec!(
    #[kube(
        group = "external-secrets.io",
        version = "v1",
        kind = "ClusterSecretStore",
        status = "SecretStoreStatus",
        shortname = "css",
        category = "external-secrets",
        printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
        printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
        printcolumn = r#"{"name":"Capabilities","type":"string","jsonPath":".status.capabilities"}"#,
        printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
    )]
    ClusterSecretStoreSpec
);

impl From<ClusterSecretStoreSpec> for SecretStoreSpec {
    fn from(s: ClusterSecretStoreSpec) -> Self {
        SecretStoreSpec {
            controller: s.controller,
            provider: s.provider,
            retry_settings: s.retry_settings,
            refresh_interval: s.refresh_interval,
            conditions: s.conditions,
        }
    }
}

/// `spec.provider`: exactly one backend. The four refsync supports are typed; any other ESO
/// provider key is kept as opaque JSON so the manifest still parses and can be reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct SecretStoreProvider {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcpsm: Option<GcpSmProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fake: Option<FakeProvider>,
    /// Providers refsync does not implement (`azurekv`, `kubernetes`, ...), by key.
    #[serde(flatten)]
    #[schemars(skip)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl SecretStoreProvider {
    /// The provider keys set in this block, in a stable order.
    pub fn configured(&self) -> Vec<&str> {
        let mut keys = Vec::new();
        if self.vault.is_some() {
            keys.push("vault");
        }
        if self.aws.is_some() {
            keys.push("aws");
        }
        if self.gcpsm.is_some() {
            keys.push("gcpsm");
        }
        if self.fake.is_some() {
            keys.push("fake");
        }
        keys.extend(self.other.keys().map(String::as_str));
        keys
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreRetrySettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSecretStoreCondition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_regexes: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `ReadOnly`, `WriteOnly` or `ReadWrite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<String>,
}
