//! Verification of the self-signed RS256 JWTs that Google's client libraries send when they use a
//! service-account key (`kid` = private_key_id, `iss` = `sub` = client_email).

use std::collections::HashMap;

use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};

/// The scope Google's clients request for Secret Manager.
const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Audience a self-signed JWT may carry instead of a scope.
const SERVICE_AUDIENCE: &str = "https://secretmanager.googleapis.com/";

struct RegisteredKey {
    client_email: String,
    key: DecodingKey,
}

/// Verifier for the registered service-account keys, indexed by `private_key_id`.
pub(crate) struct Verifier {
    keys: HashMap<String, RegisteredKey>,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    aud: Option<serde_json::Value>,
}

impl Verifier {
    /// Builds the verifier; a public key that is not a valid RSA PEM is an `InvalidInput` error.
    pub(crate) fn new(accounts: &[(String, String, String)]) -> std::io::Result<Self> {
        install_crypto_provider();
        let mut keys = HashMap::new();
        for (client_email, private_key_id, public_key_pem) in accounts {
            let key = DecodingKey::from_rsa_pem(public_key_pem.as_bytes()).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("public key for {client_email} ({private_key_id}) is not an RSA PEM: {e}"),
                )
            })?;
            keys.insert(
                private_key_id.clone(),
                RegisteredKey {
                    client_email: client_email.clone(),
                    key,
                },
            );
        }
        Ok(Self { keys })
    }

    /// Checks the request's `Authorization: Bearer <jwt>`; any failure is UNAUTHENTICATED.
    pub(crate) fn verify(&self, headers: &HeaderMap) -> ApiResult<String> {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(ApiError::unauthenticated)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| ApiError::unauthenticated())?;
        if header.alg != Algorithm::RS256 {
            return Err(ApiError::unauthenticated());
        }
        let kid = header.kid.ok_or_else(ApiError::unauthenticated)?;
        let registered = self.keys.get(&kid).ok_or_else(ApiError::unauthenticated)?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_aud = false;
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "iss"]);
        validation.set_issuer(&[registered.client_email.as_str()]);
        let data = jsonwebtoken::decode::<Claims>(token, &registered.key, &validation)
            .map_err(|_| ApiError::unauthenticated())?;
        let claims = data.claims;
        if claims.iss != registered.client_email {
            return Err(ApiError::unauthenticated());
        }
        if claims.sub.as_deref().is_some_and(|s| s != claims.iss) {
            return Err(ApiError::unauthenticated());
        }
        let scoped = claims
            .scope
            .as_deref()
            .is_some_and(|s| s.split_whitespace().any(|s| s == CLOUD_PLATFORM_SCOPE));
        let audienced = match &claims.aud {
            Some(serde_json::Value::String(a)) => a == SERVICE_AUDIENCE,
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .any(|a| a.as_str() == Some(SERVICE_AUDIENCE)),
            _ => false,
        };
        if !scoped && !audienced {
            return Err(ApiError::unauthenticated());
        }
        Ok(claims.iss)
    }
}

fn install_crypto_provider() {
    // Another crate in the same process may already have installed one; either is fine.
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}
