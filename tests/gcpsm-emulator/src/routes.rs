//! HTTP routing: one fallback handler that parses Google's `/v1/{name}:verb` paths itself, since
//! the `:verb` suffix does not fit axum's path patterns.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method as HttpMethod, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value as Json};

use crate::error::{ApiError, ApiResult, Status};
use crate::names::{Target, parse_target};
use crate::store::State as VersionState;
use crate::{AppState, Method, lock};

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

async fn handle(
    State(state): State<Arc<AppState>>,
    method: HttpMethod,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match dispatch(&state, &method, &uri, &headers, &body) {
        Ok(json) => axum::Json(json).into_response(),
        Err(e) => e.into_response(),
    }
}

fn not_found(path: &str) -> ApiError {
    ApiError::not_found(format!("The requested URL {path} was not found on this server."))
}

fn unimplemented(rpc: &str) -> ApiError {
    ApiError::new(
        Status::Unimplemented,
        format!("Method {rpc} is not implemented by gcpsm-emulator."),
    )
}

/// Decodes `%XX` escapes in a path (names only ever hold ASCII, so invalid UTF-8 is an error).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn dispatch(
    state: &AppState,
    http: &HttpMethod,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Json> {
    let raw_path = uri.path();
    let path = percent_decode(raw_path).ok_or_else(|| not_found(raw_path))?;
    let Some(rest) = path.strip_prefix("/v1/") else {
        return Err(not_found(raw_path));
    };
    let (name, verb) = match rest.rsplit_once('/') {
        Some((head, last)) => match last.split_once(':') {
            Some((seg, verb)) => (format!("{head}/{seg}"), Some(verb)),
            None => (rest.to_string(), None),
        },
        None => (rest.to_string(), None),
    };

    let Query(query): Query<HashMap<String, String>> =
        Query::try_from_uri(uri).map_err(|_| ApiError::invalid("Invalid query string."))?;
    let q = |k: &str| query.get(k).map(String::as_str).unwrap_or("");

    // Which RPC is this? Decided before authentication so that rejected calls count too.
    let target = parse_target(&name);
    let rpc = match (&target, http, verb) {
        (Ok(Target::Secrets(_)), &HttpMethod::GET, None) => Some(Method::ListSecrets),
        (Ok(Target::Secrets(_)), &HttpMethod::POST, None) => Some(Method::CreateSecret),
        (Ok(Target::Secret(..)), &HttpMethod::GET, None) => Some(Method::GetSecret),
        (Ok(Target::Secret(..)), &HttpMethod::PATCH, None) => Some(Method::UpdateSecret),
        (Ok(Target::Secret(..)), &HttpMethod::DELETE, None) => Some(Method::DeleteSecret),
        (Ok(Target::Secret(..)), &HttpMethod::POST, Some("addVersion")) => {
            Some(Method::AddSecretVersion)
        }
        (Ok(Target::Versions(..)), &HttpMethod::GET, None) => Some(Method::ListSecretVersions),
        (Ok(Target::Version(..)), &HttpMethod::GET, None) => Some(Method::GetSecretVersion),
        (Ok(Target::Version(..)), &HttpMethod::GET, Some("access")) => {
            Some(Method::AccessSecretVersion)
        }
        (Ok(Target::Version(..)), &HttpMethod::POST, Some("enable")) => {
            Some(Method::EnableSecretVersion)
        }
        (Ok(Target::Version(..)), &HttpMethod::POST, Some("disable")) => {
            Some(Method::DisableSecretVersion)
        }
        (Ok(Target::Version(..)), &HttpMethod::POST, Some("destroy")) => {
            Some(Method::DestroySecretVersion)
        }
        _ => None,
    };
    if let Some(m) = rpc {
        *lock(&state.counts).entry(m).or_insert(0) += 1;
    }

    if let Some(verifier) = &state.verifier {
        verifier.verify(headers)?;
    }

    let Some(rpc) = rpc else {
        // Known-but-unsupported verbs get UNIMPLEMENTED; anything else is a bad name or URL.
        if let Some(v) = verb
            && matches!(
                v,
                "setIamPolicy"
                    | "getIamPolicy"
                    | "testIamPermissions"
                    | "enableManagedRotation"
                    | "rotateSecret"
            )
        {
            return Err(unimplemented(v));
        }
        target?;
        return Err(not_found(raw_path));
    };
    let target = target?;
    let body = parse_body(body)?;
    let mut store = lock(&state.store);
    match (rpc, target) {
        (Method::ListSecrets, Target::Secrets(parent)) => {
            store.list_secrets(&parent, page_size(q("pageSize"))?, q("pageToken"), q("filter"))
        }
        (Method::CreateSecret, Target::Secrets(parent)) => {
            store.create_secret(&parent, q("secretId"), &body)
        }
        (Method::GetSecret, Target::Secret(parent, id)) => store.get_secret(&parent, &id),
        (Method::UpdateSecret, Target::Secret(parent, id)) => {
            let mask = query
                .get("updateMask")
                .or_else(|| query.get("update_mask"))
                .map(String::as_str)
                .unwrap_or("");
            store.update_secret(&parent, &id, &body, mask)
        }
        (Method::DeleteSecret, Target::Secret(parent, id)) => {
            store.delete_secret(&parent, &id, q("etag"))
        }
        (Method::AddSecretVersion, Target::Secret(parent, id)) => {
            store.add_version(&parent, &id, &body)
        }
        (Method::ListSecretVersions, Target::Versions(parent, id)) => store.list_versions(
            &parent,
            &id,
            page_size(q("pageSize"))?,
            q("pageToken"),
            q("filter"),
        ),
        (Method::GetSecretVersion, Target::Version(parent, id, v)) => {
            store.get_version(&parent, &id, &v)
        }
        (Method::AccessSecretVersion, Target::Version(parent, id, v)) => {
            store.access_version(&parent, &id, &v)
        }
        (m, Target::Version(parent, id, v)) => {
            let to = match m {
                Method::EnableSecretVersion => VersionState::Enabled,
                Method::DisableSecretVersion => VersionState::Disabled,
                _ => VersionState::Destroyed,
            };
            let etag = body.get("etag").and_then(Json::as_str).unwrap_or("");
            store.set_version_state(&parent, &id, &v, to, etag)
        }
        _ => Err(not_found(raw_path)),
    }
}

fn page_size(s: &str) -> ApiResult<i64> {
    if s.is_empty() {
        return Ok(0);
    }
    s.parse::<i64>()
        .map_err(|_| ApiError::invalid(format!("Invalid value at 'page_size' (TYPE_INT32), \"{s}\"")))
}

fn parse_body(body: &Bytes) -> ApiResult<Map<String, Json>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Json>(body) {
        Ok(Json::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::invalid(
            "Invalid JSON payload received. Expected an object.",
        )),
        Err(e) => Err(ApiError::invalid(format!(
            "Invalid JSON payload received. {e}"
        ))),
    }
}
