//! AdmissionReview v1 in, AdmissionReview v1 out: which rules apply to which resource, and
//! how a refusal is worded (every message names the field at fault).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use refsync_core::ProviderRegistry;
use refsync_core::api::{ClusterExternalSecret, ClusterSecretStore, ExternalSecret, SecretStore};
use refsync_core::validate;

/// The resources the webhook validates, one endpoint each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    ExternalSecret,
    SecretStore,
    ClusterSecretStore,
    ClusterExternalSecret,
}

impl Resource {
    pub const ALL: [Resource; 4] = [
        Resource::ExternalSecret,
        Resource::SecretStore,
        Resource::ClusterSecretStore,
        Resource::ClusterExternalSecret,
    ];

    pub fn kind(self) -> &'static str {
        match self {
            Resource::ExternalSecret => "ExternalSecret",
            Resource::SecretStore => "SecretStore",
            Resource::ClusterSecretStore => "ClusterSecretStore",
            Resource::ClusterExternalSecret => "ClusterExternalSecret",
        }
    }

    /// ESO's path (`/validate-external-secrets-io-v1-externalsecret`, ...).
    pub fn path(self) -> String {
        format!(
            "/validate-external-secrets-io-v1-{}",
            self.kind().to_ascii_lowercase()
        )
    }

    /// The bounded label of this endpoint in metrics.
    pub fn metric_label(self) -> &'static str {
        match self {
            Resource::ExternalSecret => "externalsecret",
            Resource::SecretStore => "secretstore",
            Resource::ClusterSecretStore => "clustersecretstore",
            Resource::ClusterExternalSecret => "clusterexternalsecret",
        }
    }
}

/// The parts of an `admission.k8s.io/v1` AdmissionReview the webhook reads.
#[derive(Debug, Deserialize)]
pub struct AdmissionReview {
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    pub request: Option<AdmissionRequest>,
}

#[derive(Debug, Deserialize)]
pub struct AdmissionRequest {
    pub uid: String,
    #[serde(default)]
    pub operation: String,
    #[serde(default)]
    pub object: Option<Value>,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub allowed: bool,
    /// Why it was refused (empty when allowed).
    pub message: String,
}

impl Verdict {
    fn allow() -> Self {
        Verdict {
            allowed: true,
            message: String::new(),
        }
    }
    fn deny(message: String) -> Self {
        Verdict {
            allowed: false,
            message,
        }
    }
}

/// The AdmissionReview sent back for `uid`.
pub fn response(api_version: &str, uid: &str, v: &Verdict) -> Value {
    let api_version = if api_version.is_empty() {
        "admission.k8s.io/v1"
    } else {
        api_version
    };
    let mut resp = json!({ "uid": uid, "allowed": v.allowed });
    if !v.allowed {
        resp["status"] = json!({
            "code": 403,
            "reason": "Forbidden",
            "message": v.message,
        });
    }
    json!({ "apiVersion": api_version, "kind": "AdmissionReview", "response": resp })
}

/// Decides one request. DELETE (and CONNECT) are always allowed, as in ESO.
pub fn decide(resource: Resource, req: &AdmissionRequest, registry: &ProviderRegistry) -> Verdict {
    if !matches!(req.operation.as_str(), "CREATE" | "UPDATE") {
        return Verdict::allow();
    }
    let Some(object) = &req.object else {
        return Verdict::deny(format!(
            "request.object: the {} to validate is missing",
            resource.kind()
        ));
    };
    if let Some(kind) = object.get("kind").and_then(Value::as_str)
        && kind != resource.kind()
    {
        return Verdict::deny(format!(
            "kind: this endpoint validates {}, not {kind}",
            resource.kind()
        ));
    }
    let errors = match resource {
        Resource::ExternalSecret => {
            parse::<ExternalSecret>(object).map(|es| validate::check_external_secret(&es))
        }
        Resource::SecretStore => {
            parse::<SecretStore>(object).map(|s| validate::check_store_spec(&s.spec, registry))
        }
        Resource::ClusterSecretStore => parse::<ClusterSecretStore>(object)
            .map(|s| validate::check_store_spec(&s.spec.into(), registry)),
        Resource::ClusterExternalSecret => parse::<ClusterExternalSecret>(object)
            .map(|c| validate::check_cluster_external_secret(&c)),
    };
    match errors {
        Err(message) => Verdict::deny(message),
        Ok(errors) if errors.is_empty() => Verdict::allow(),
        Ok(errors) => Verdict::deny(errors.join("; ")),
    }
}

/// Parses the object, naming the field of a parse failure (`spec.data[0]: missing field ...`).
fn parse<T: DeserializeOwned>(object: &Value) -> Result<T, String> {
    serde_path_to_error::deserialize(object).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path.is_empty() || path == "." {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> ProviderRegistry {
        // The webhook's answer about providers depends only on the registered keys.
        ProviderRegistry::new()
    }

    fn request(operation: &str, object: Value) -> AdmissionRequest {
        AdmissionRequest {
            uid: "u1".into(),
            operation: operation.into(),
            object: Some(object),
        }
    }

    fn es(target: Value) -> Value {
        json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": "x", "namespace": "ns"},
            "spec": {
                "secretStoreRef": {"name": "s", "kind": "SecretStore"},
                "target": target,
                "data": [{"secretKey": "a", "remoteRef": {"key": "k"}}]
            }
        })
    }

    #[test]
    fn paths_match_eso() {
        assert_eq!(
            Resource::ExternalSecret.path(),
            "/validate-external-secrets-io-v1-externalsecret"
        );
        assert_eq!(
            Resource::ClusterSecretStore.path(),
            "/validate-external-secrets-io-v1-clustersecretstore"
        );
    }

    #[test]
    fn create_and_update_are_checked_delete_never() {
        let bad = es(json!({"creationPolicy": "Merge", "deletionPolicy": "Delete"}));
        for op in ["CREATE", "UPDATE"] {
            let v = decide(
                Resource::ExternalSecret,
                &request(op, bad.clone()),
                &registry(),
            );
            assert!(!v.allowed);
            assert!(
                v.message.starts_with("spec.target: deletionPolicy=Delete"),
                "{v:?}"
            );
        }
        let v = decide(
            Resource::ExternalSecret,
            &request("DELETE", bad),
            &registry(),
        );
        assert!(v.allowed);
        let good = es(json!({"creationPolicy": "Owner"}));
        assert!(
            decide(
                Resource::ExternalSecret,
                &request("CREATE", good),
                &registry()
            )
            .allowed
        );
    }

    #[test]
    fn parse_failures_name_the_path() {
        let mut obj = es(json!({}));
        obj["spec"]["data"][0]["remoteRef"] = json!({"key": 5});
        let v = decide(
            Resource::ExternalSecret,
            &request("CREATE", obj),
            &registry(),
        );
        assert!(!v.allowed);
        assert!(
            v.message
                .starts_with("spec.data[0].remoteRef.key: invalid type"),
            "{v:?}"
        );
    }

    #[test]
    fn stores_without_a_registered_provider_are_refused() {
        let store = json!({
            "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
            "metadata": {"name": "s", "namespace": "ns"},
            "spec": {"provider": {"vault": {"server": "http://x"}}}
        });
        let v = decide(
            Resource::SecretStore,
            &request("CREATE", store.clone()),
            &registry(),
        );
        assert!(
            v.message
                .starts_with("spec.provider.vault: provider vault is not supported")
        );
        let v = decide(
            Resource::ExternalSecret,
            &request("CREATE", store),
            &registry(),
        );
        assert_eq!(
            v.message,
            "kind: this endpoint validates ExternalSecret, not SecretStore"
        );
    }

    #[test]
    fn the_response_carries_uid_and_reason() {
        let r = response("", "abc", &Verdict::deny("spec.x: bad".into()));
        assert_eq!(r["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(r["response"]["uid"], "abc");
        assert_eq!(r["response"]["allowed"], false);
        assert_eq!(r["response"]["status"]["code"], 403);
        assert_eq!(r["response"]["status"]["message"], "spec.x: bad");
        let r = response("admission.k8s.io/v1", "abc", &Verdict::allow());
        assert!(r["response"].get("status").is_none());
    }
}
