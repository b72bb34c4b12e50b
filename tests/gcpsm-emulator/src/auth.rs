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
                    format!(
                        "public key for {client_email} ({private_key_id}) is not an RSA PEM: {e}"
                    ),
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
            Some(serde_json::Value::Array(list)) => {
                list.iter().any(|a| a.as_str() == Some(SERVICE_AUDIENCE))
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use rsa::RsaPrivateKey;
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    use serde_json::json;

    const EMAIL: &str = "sa@p.iam.gserviceaccount.com";

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    struct Fixture {
        verifier: Verifier,
        signing: EncodingKey,
    }

    fn fixture() -> Fixture {
        let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("keygen");
        let public = key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("public pem");
        let private = key.to_pkcs8_pem(LineEnding::LF).expect("private pem");
        let verifier = Verifier::new(&[(EMAIL.into(), "kid-1".into(), public)]).expect("verifier");
        let signing = EncodingKey::from_rsa_pem(private.as_bytes()).expect("encoding key");
        Fixture { verifier, signing }
    }

    fn headers(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header value"),
        );
        h
    }

    fn sign(f: &Fixture, kid: Option<&str>, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, &claims, &f.signing).expect("sign")
    }

    fn good_claims() -> serde_json::Value {
        json!({
            "iss": EMAIL, "sub": EMAIL, "scope": CLOUD_PLATFORM_SCOPE,
            "aud": null, "iat": now() - 10, "exp": now() + 3610,
        })
    }

    #[test]
    fn jwt_checks() {
        let f = fixture();
        let ok = |t: &str| f.verifier.verify(&headers(t)).is_ok();
        assert!(ok(&sign(&f, Some("kid-1"), good_claims())));

        let mut aud = good_claims();
        aud["scope"] = json!(null);
        aud["aud"] = json!(SERVICE_AUDIENCE);
        assert!(
            ok(&sign(&f, Some("kid-1"), aud)),
            "audience instead of scope"
        );

        let mut expired = good_claims();
        expired["iat"] = json!(now() - 7200);
        expired["exp"] = json!(now() - 3600);
        assert!(!ok(&sign(&f, Some("kid-1"), expired)), "expired");

        let mut no_scope = good_claims();
        no_scope["scope"] = json!("https://www.googleapis.com/auth/pubsub");
        assert!(!ok(&sign(&f, Some("kid-1"), no_scope)), "wrong scope");

        let mut other_sub = good_claims();
        other_sub["sub"] = json!("someone@else");
        assert!(
            !ok(&sign(&f, Some("kid-1"), other_sub)),
            "sub differs from iss"
        );

        assert!(!ok(&sign(&f, None, good_claims())), "no kid");
        assert!(!ok(&sign(&f, Some("kid-2"), good_claims())), "unknown kid");

        let hs = jsonwebtoken::encode(
            &Header {
                kid: Some("kid-1".into()),
                ..Header::new(Algorithm::HS256)
            },
            &good_claims(),
            &EncodingKey::from_secret(b"secret"),
        )
        .expect("hs256");
        assert!(!ok(&hs), "HS256 is refused");

        assert!(!ok("not.a.jwt"));
        assert!(f.verifier.verify(&HeaderMap::new()).is_err(), "no header");
        let mut basic = HeaderMap::new();
        basic.insert(
            axum::http::header::AUTHORIZATION,
            "Basic dXNlcjpwYXNz".parse().expect("header value"),
        );
        assert!(f.verifier.verify(&basic).is_err(), "not a bearer");
    }
}
