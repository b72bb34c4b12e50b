//! `spec.provider.vault.auth`: how a store gets its Vault token.

use std::path::PathBuf;
use std::time::Duration;

use refsync_core::api::{SecretKeySelector, VaultAuth};
use refsync_core::{Error, ErrorKind, Result, SecretBytes, StoreContext};
use reqwest::Method;
use reqwest::header::HeaderValue;
use serde_json::json;

use crate::METRICS_NAME;
use crate::http::{Http, Response};

const SA_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// Where a JWT for `kubernetes` / `jwt` login comes from.
pub enum JwtSource {
    Secret(SecretKeySelector, &'static str),
    /// `namespace` as requested; resolved at login (a ClusterSecretStore may learn it late).
    ServiceAccount {
        namespace: Option<String>,
        name: String,
        audiences: Vec<String>,
        expiration: i64,
    },
    File(PathBuf),
}

pub enum RoleId {
    Literal(String),
    Ref(SecretKeySelector),
}

/// The configured auth method (the first one set, in ESO's order).
pub enum AuthMethod {
    /// No `auth`: requests carry no token.
    None,
    Token(SecretKeySelector),
    AppRole {
        path: String,
        role_id: RoleId,
        secret: SecretKeySelector,
    },
    Kubernetes {
        path: String,
        role: String,
        jwt: JwtSource,
    },
    UserPass {
        path: String,
        username: String,
        secret: SecretKeySelector,
    },
    Jwt {
        path: String,
        role: String,
        jwt: JwtSource,
    },
    Cert {
        path: String,
        role: Option<String>,
    },
}

/// A token as Vault returned it from a login (or read from a Secret).
pub struct Login {
    pub token: SecretBytes,
    /// 0 = does not expire.
    pub lease: Duration,
    pub renewable: bool,
    /// From a login (revoked on close) rather than from `tokenSecretRef`.
    pub from_login: bool,
}

fn mount_path(p: &str, field: &str) -> Result<String> {
    let p = p.trim().trim_matches('/');
    if p.is_empty() || p.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(Error::config(format!(
            "{field}: {p:?} is not a valid auth mount path"
        )));
    }
    Ok(p.to_string())
}

fn required_selector(sel: &Option<SecretKeySelector>, field: &str) -> Result<SecretKeySelector> {
    sel.clone()
        .ok_or_else(|| Error::config(format!("{field} is required")))
}

impl AuthMethod {
    pub fn from_spec(auth: Option<&VaultAuth>) -> Result<Self> {
        let Some(a) = auth else {
            return Ok(AuthMethod::None);
        };
        const F: &str = "spec.provider.vault.auth";
        if let Some(t) = &a.token_secret_ref {
            return Ok(AuthMethod::Token(t.clone()));
        }
        if let Some(ar) = &a.app_role {
            let role_id = match (&ar.role_id, &ar.role_ref) {
                (Some(id), _) if !id.trim().is_empty() => RoleId::Literal(id.trim().to_string()),
                (_, Some(r)) => RoleId::Ref(r.clone()),
                _ => {
                    return Err(Error::config(format!(
                        "{F}.appRole: neither `roleId` nor `roleRef` was supplied"
                    )));
                }
            };
            return Ok(AuthMethod::AppRole {
                path: mount_path(&ar.path, &format!("{F}.appRole.path"))?,
                role_id,
                secret: ar.secret_ref.clone(),
            });
        }
        if let Some(k) = &a.kubernetes {
            let jwt = if let Some(sa) = &k.service_account_ref {
                JwtSource::ServiceAccount {
                    namespace: sa.namespace.clone(),
                    name: sa.name.clone(),
                    audiences: sa.audiences.clone().unwrap_or_default(),
                    expiration: 600,
                }
            } else if let Some(s) = &k.secret_ref {
                let mut s = s.clone();
                if s.key.as_deref().is_none_or(str::is_empty) {
                    s.key = Some("token".into());
                }
                JwtSource::Secret(s, "spec.provider.vault.auth.kubernetes.secretRef")
            } else {
                JwtSource::File(PathBuf::from(SA_TOKEN_FILE))
            };
            if k.role.trim().is_empty() {
                return Err(Error::config(format!("{F}.kubernetes.role is required")));
            }
            return Ok(AuthMethod::Kubernetes {
                path: mount_path(&k.mount_path, &format!("{F}.kubernetes.mountPath"))?,
                role: k.role.trim().to_string(),
                jwt,
            });
        }
        if a.ldap.is_some() {
            return Err(Error::unsupported(format!(
                "{F}.ldap: LDAP auth is not supported by refsync yet (supported: tokenSecretRef, appRole, kubernetes, jwt, cert, userPass)"
            )));
        }
        if let Some(u) = &a.user_pass {
            if u.username.trim().is_empty() {
                return Err(Error::config(format!("{F}.userPass.username is required")));
            }
            return Ok(AuthMethod::UserPass {
                path: mount_path(&u.path, &format!("{F}.userPass.path"))?,
                username: u.username.trim().to_string(),
                secret: required_selector(&u.secret_ref, &format!("{F}.userPass.secretRef"))?,
            });
        }
        if let Some(j) = &a.jwt {
            let jwt = if let Some(s) = &j.secret_ref {
                JwtSource::Secret(s.clone(), "spec.provider.vault.auth.jwt.secretRef")
            } else if let Some(k) = &j.kubernetes_service_account_token {
                let mut audiences = k.service_account_ref.audiences.clone().unwrap_or_default();
                audiences.extend(
                    k.audiences
                        .clone()
                        .unwrap_or_else(|| vec!["vault".to_string()]),
                );
                JwtSource::ServiceAccount {
                    namespace: k.service_account_ref.namespace.clone(),
                    name: k.service_account_ref.name.clone(),
                    audiences,
                    expiration: k.expiration_seconds.unwrap_or(600),
                }
            } else {
                return Err(Error::config(format!(
                    "{F}.jwt: neither `secretRef` nor `kubernetesServiceAccountToken` was supplied as token source"
                )));
            };
            return Ok(AuthMethod::Jwt {
                path: mount_path(&j.path, &format!("{F}.jwt.path"))?,
                role: j.role.as_deref().unwrap_or("").trim().to_string(),
                jwt,
            });
        }
        if let Some(c) = &a.cert {
            return Ok(AuthMethod::Cert {
                path: mount_path(&c.path, &format!("{F}.cert.path"))?,
                role: c.vault_role.clone().filter(|r| !r.is_empty()),
            });
        }
        if a.iam.is_some() {
            return Err(Error::unsupported(format!(
                "{F}.iam: AWS IAM auth is not supported by refsync yet"
            )));
        }
        if a.gcp.is_some() {
            return Err(Error::unsupported(format!(
                "{F}.gcp: GCP auth is not supported by refsync yet"
            )));
        }
        Err(Error::config(format!(
            "{F}: no valid auth method specified"
        )))
    }

    pub fn name(&self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::Token(_) => "tokenSecretRef",
            AuthMethod::AppRole { .. } => "appRole",
            AuthMethod::Kubernetes { .. } => "kubernetes",
            AuthMethod::UserPass { .. } => "userPass",
            AuthMethod::Jwt { .. } => "jwt",
            AuthMethod::Cert { .. } => "cert",
        }
    }

    /// Gets a token: reads it (`tokenSecretRef`) or logs in. `None` without `auth`.
    pub async fn login(
        &self,
        http: &Http,
        ns: Option<&HeaderValue>,
        ctx: &StoreContext,
    ) -> Result<Option<Login>> {
        let (path, body, call) = match self {
            AuthMethod::None => return Ok(None),
            AuthMethod::Token(sel) => {
                let t = ctx
                    .read_selector(sel, "spec.provider.vault.auth.tokenSecretRef")
                    .await?;
                let t = trim(t);
                if t.is_empty() {
                    return Err(Error::config(
                        "spec.provider.vault.auth.tokenSecretRef: the token is empty",
                    ));
                }
                return Ok(Some(Login {
                    token: t,
                    lease: Duration::ZERO,
                    renewable: false,
                    from_login: false,
                }));
            }
            AuthMethod::AppRole {
                path,
                role_id,
                secret,
            } => {
                let role_id = match role_id {
                    RoleId::Literal(s) => s.clone(),
                    RoleId::Ref(sel) => {
                        let v = ctx
                            .read_selector(sel, "spec.provider.vault.auth.appRole.roleRef")
                            .await?;
                        text(trim(v), "spec.provider.vault.auth.appRole.roleRef")?
                    }
                };
                let secret_id = ctx
                    .read_selector(secret, "spec.provider.vault.auth.appRole.secretRef")
                    .await?;
                let secret_id = text(
                    trim(secret_id),
                    "spec.provider.vault.auth.appRole.secretRef",
                )?;
                (
                    format!("auth/{path}/login"),
                    json!({"role_id": role_id, "secret_id": secret_id}),
                    "Login",
                )
            }
            AuthMethod::Kubernetes { path, role, jwt } => {
                let jwt = jwt_from(jwt, ctx).await?;
                (
                    format!("auth/{path}/login"),
                    json!({"role": role, "jwt": jwt}),
                    "Login",
                )
            }
            AuthMethod::UserPass {
                path,
                username,
                secret,
            } => {
                let pw = ctx
                    .read_selector(secret, "spec.provider.vault.auth.userPass.secretRef")
                    .await?;
                let pw = text(pw, "spec.provider.vault.auth.userPass.secretRef")?;
                (
                    format!("auth/{path}/login/{username}"),
                    json!({"password": pw}),
                    "Login",
                )
            }
            AuthMethod::Jwt { path, role, jwt } => {
                let jwt = jwt_from(jwt, ctx).await?;
                // ESO reports JWT logins as WriteSecretData.
                (
                    format!("auth/{path}/login"),
                    json!({"role": role, "jwt": jwt}),
                    "WriteSecretData",
                )
            }
            AuthMethod::Cert { path, role } => {
                let body = match role {
                    Some(r) => json!({"name": r}),
                    None => json!({}),
                };
                (format!("auth/{path}/login"), body, "Login")
            }
        };
        let resp = http
            .send(Method::POST, &path, &[], None, ns, Some(&body))
            .await;
        drop(body);
        ctx.calls
            .observe(METRICS_NAME, call, resp.as_ref().is_ok_and(Response::ok));
        let resp = resp.map_err(|e| e.context(format!("vault {} login", self.name())))?;
        if !resp.ok() {
            let mut e = resp.error(&format!(
                "{} login at auth/{}",
                self.name(),
                login_mount(&path)
            ));
            // Bad credentials come back as 400 ("invalid role or secret ID"); a missing auth
            // mount as 404 / "no handler for route".
            e.kind = match resp.status.as_u16() {
                400 | 401 | 403 => ErrorKind::Auth,
                404 => ErrorKind::Config,
                _ => e.kind,
            };
            return Err(e);
        }
        parse_auth(resp.body.as_ref()).map(Some)
    }
}

fn login_mount(path: &str) -> &str {
    path.strip_prefix("auth/")
        .and_then(|p| p.split("/login").next())
        .unwrap_or(path)
}

/// `auth.client_token`, `auth.lease_duration`, `auth.renewable` of a login or renew response.
pub fn parse_auth(body: Option<&serde_json::Value>) -> Result<Login> {
    let auth = body
        .and_then(|b| b.get("auth"))
        .filter(|a| a.is_object())
        .ok_or_else(|| Error::transient("vault: the login response has no `auth` block"))?;
    let token = auth
        .get("client_token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::transient("vault: the login response has no client token"))?;
    let lease = auth
        .get("lease_duration")
        .and_then(|l| l.as_u64())
        .unwrap_or(0);
    let renewable = auth
        .get("renewable")
        .and_then(|r| r.as_bool())
        .unwrap_or(false);
    Ok(Login {
        token: SecretBytes::from(token),
        lease: Duration::from_secs(lease),
        renewable,
        from_login: true,
    })
}

fn trim(v: SecretBytes) -> SecretBytes {
    let b = v.expose();
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    if start == 0 && end == b.len() {
        v
    } else {
        SecretBytes::from(&b[start..end])
    }
}

/// Credentials go into a JSON body as strings; they must be UTF-8.
fn text(v: SecretBytes, field: &str) -> Result<String> {
    String::from_utf8(v.into_vec())
        .map_err(|_| Error::config(format!("{field}: the value is not valid UTF-8")))
}

async fn jwt_from(src: &JwtSource, ctx: &StoreContext) -> Result<String> {
    let v = match src {
        JwtSource::Secret(sel, field) => ctx.read_selector(sel, field).await?,
        JwtSource::ServiceAccount {
            namespace,
            name,
            audiences,
            expiration,
        } => {
            let namespace = ctx.ref_namespace(namespace.as_deref())?;
            ctx.reader
                .service_account_token(&namespace, name, audiences, Some(*expiration))
                .await
                .map_err(|e| {
                    e.context(format!(
                        "cannot request a token for ServiceAccount {namespace}/{name}"
                    ))
                })?
        }
        JwtSource::File(p) => {
            let b = tokio::fs::read(p).await.map_err(|e| {
                Error::config(format!(
                    "spec.provider.vault.auth.kubernetes: neither serviceAccountRef nor secretRef is set and the \
                     in-cluster token {} cannot be read: {e}",
                    p.display()
                ))
            })?;
            SecretBytes::from(b)
        }
    };
    text(trim(v), "the JWT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_responses_parse() {
        let body =
            json!({"auth": {"client_token": "t", "lease_duration": 3600, "renewable": true}});
        let l = parse_auth(Some(&body)).unwrap();
        assert_eq!(l.token.expose(), b"t");
        assert_eq!(l.lease, Duration::from_secs(3600));
        assert!(l.renewable);
        assert!(parse_auth(Some(&json!({"auth": null}))).is_err());
        assert!(parse_auth(Some(&json!({"auth": {"client_token": ""}}))).is_err());
        assert!(parse_auth(None).is_err());
        assert_eq!(login_mount("auth/approle/login"), "approle");
        assert_eq!(login_mount("auth/up/login/alice"), "up");
    }

    #[test]
    fn credentials_are_trimmed() {
        assert_eq!(trim(SecretBytes::from(" \tabc\n")).expose(), b"abc");
        assert_eq!(trim(SecretBytes::from("abc")).expose(), b"abc");
        assert_eq!(trim(SecretBytes::from("  ")).expose(), b"");
    }

    #[test]
    fn auth_specs_are_checked() {
        use refsync_core::api::{VaultKubernetesAuth, VaultUserPassAuth};
        assert!(matches!(AuthMethod::from_spec(None), Ok(AuthMethod::None)));
        let k = VaultAuth {
            kubernetes: Some(VaultKubernetesAuth {
                mount_path: "kubernetes".into(),
                role: " ".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = AuthMethod::from_spec(Some(&k)).err().unwrap();
        assert!(e.to_string().contains("auth.kubernetes.role"), "{e}");
        let u = VaultAuth {
            user_pass: Some(VaultUserPassAuth {
                path: "../x".into(),
                username: "u".into(),
                secret_ref: None,
            }),
            ..Default::default()
        };
        let e = AuthMethod::from_spec(Some(&u)).err().unwrap();
        assert!(e.to_string().contains("userPass.path"), "{e}");
        let e = AuthMethod::from_spec(Some(&VaultAuth::default()))
            .err()
            .unwrap();
        assert!(e.to_string().contains("no valid auth method"), "{e}");
    }
}
