use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `spec.provider.fake`: static data, for tests and demos.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FakeProvider {
    pub data: Vec<FakeProviderData>,
    /// Forces the store's validation result (0 Ready, 1 Unknown, 2 Error), as ESO's fake does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_result: Option<i32>,
}

#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct FakeProviderData {
    pub key: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

// The value is secret material even in a fake store: keep it out of logs.
impl std::fmt::Debug for FakeProviderData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProviderData")
            .field("key", &self.key)
            .field("value", &"<redacted>")
            .field("version", &self.version)
            .finish()
    }
}
