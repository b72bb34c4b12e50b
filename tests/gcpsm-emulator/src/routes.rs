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
    ApiError::not_found(format!(
        "The requested URL {path} was not found on this server."
    ))
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
        (Method::ListSecrets, Target::Secrets(parent)) => store.list_secrets(
            &parent,
            page_size(q("pageSize"))?,
            q("pageToken"),
            q("filter"),
        ),
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
    s.parse::<i64>().map_err(|_| {
        ApiError::invalid(format!(
            "Invalid value at 'page_size' (TYPE_INT32), \"{s}\""
        ))
    })
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

#[cfg(test)]
mod tests {
    //! Wire shapes and hostile input, below the official client (which the tests/ directory
    //! uses for everything else).
    use super::*;
    use crate::Config;
    use serde_json::json;

    fn call(state: &AppState, method: HttpMethod, uri: &str, body: &str) -> ApiResult<Json> {
        let uri: Uri = uri.parse().expect("test uri");
        dispatch(
            state,
            &method,
            &uri,
            &HeaderMap::new(),
            &Bytes::copy_from_slice(body.as_bytes()),
        )
    }

    fn state() -> AppState {
        AppState::new(&Config::default()).expect("state")
    }

    const Q: &str = "$alt=json;enum-encoding=int";

    #[test]
    fn wire_shapes_match_google() {
        let s = state();
        let n = crate::project_number("my-proj");
        let created = call(
            &s,
            HttpMethod::POST,
            &format!("/v1/projects/my-proj/secrets?secretId=a&{Q}"),
            r#"{"replication":{"automatic":{}},"labels":{"k":"v"},"topics":[{"name":"t"}]}"#,
        )
        .expect("create");
        assert_eq!(created["name"], json!(format!("projects/{n}/secrets/a")));
        assert_eq!(
            created["topics"],
            json!([{"name": "t"}]),
            "unmodelled fields echo"
        );
        assert!(
            created["createTime"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );

        let v = call(
            &s,
            HttpMethod::POST,
            &format!("/v1/projects/my-proj/secrets/a:addVersion?{Q}"),
            &format!(
                r#"{{"payload":{{"data":"aGVsbG8=","dataCrc32c":"{}"}}}}"#,
                crc32c::crc32c(b"hello")
            ),
        )
        .expect("add");
        assert_eq!(v["state"], json!(1), "enums are numbers");
        assert_eq!(v["clientSpecifiedPayloadChecksum"], json!(true));
        let a = call(
            &s,
            HttpMethod::GET,
            &format!("/v1/projects/{n}/secrets/a/versions/latest:access?{Q}"),
            "",
        )
        .expect("access");
        assert_eq!(a["payload"]["data"], json!("aGVsbG8="));
        assert_eq!(
            a["payload"]["dataCrc32c"],
            json!(crc32c::crc32c(b"hello").to_string()),
            "int64 as string"
        );

        let patched = call(
            &s,
            HttpMethod::PATCH,
            &format!("/v1/projects/my-proj/secrets/a?updateMask=versionAliases&{Q}"),
            r#"{"versionAliases":{"cur":"1"}}"#,
        )
        .expect("patch");
        assert_eq!(patched["versionAliases"], json!({"cur": "1"}));

        let d = call(
            &s,
            HttpMethod::POST,
            &format!("/v1/projects/my-proj/secrets/a/versions/1:destroy?{Q}"),
            "{}",
        )
        .expect("destroy");
        assert_eq!(d["state"], json!(3));
    }

    #[test]
    fn hostile_input_gets_google_errors_not_panics() {
        let s = state();
        call(
            &s,
            HttpMethod::POST,
            "/v1/projects/my-proj/secrets?secretId=a",
            r#"{"replication":{"automatic":{}}}"#,
        )
        .expect("create");
        let cases: &[(HttpMethod, &str, &str, Status)] = &[
            (
                HttpMethod::POST,
                "/v1/projects/my-proj/secrets?secretId=b",
                "{not json",
                Status::InvalidArgument,
            ),
            (
                HttpMethod::POST,
                "/v1/projects/my-proj/secrets?secretId=b",
                "[1,2]",
                Status::InvalidArgument,
            ),
            (
                HttpMethod::POST,
                "/v1/projects/my-proj/secrets?secretId=b",
                r#"{"replication":{"automatic":{},"userManaged":{"replicas":[]}}}"#,
                Status::InvalidArgument,
            ),
            (
                HttpMethod::POST,
                "/v1/projects/my-proj/secrets?secretId=b",
                r#"{"replication":{"userManaged":{"replicas":[{}]}}}"#,
                Status::InvalidArgument,
            ),
            (
                HttpMethod::POST,
                "/v1/projects/my-proj/secrets?secretId=b",
                r#"{"replication":"x","labels":"y"}"#,
                Status::InvalidArgument,
            ),
            (
                HttpMethod::POST,
                "/v1/projects/my-proj/secrets/a:addVersion",
                r#"{"payload":{"data":"!!!"}}"#,
                Status::InvalidArgument,
            ),
            (
                HttpMethod::POST,
                "/v1/projects/my-proj/secrets/a:addVersion",
                r#"{"payload":{"data":"aGk=","dataCrc32c":"-1"}}"#,
                Status::InvalidArgument,
            ),
            (
                HttpMethod::POST,
                "/v1/projects/my-proj/secrets/a:addVersion",
                r#"{"payload":{"data":"aGk=","dataCrc32c":"abc"}}"#,
                Status::InvalidArgument,
            ),
            (
                HttpMethod::POST,
                "/v1/projects/my-proj/secrets/a:addVersion",
                r#"{"payload":{"data":5}}"#,
                Status::InvalidArgument,
            ),
            (
                HttpMethod::POST,
                "/v1/projects/my-proj/secrets/a:addVersion",
                "{}",
                Status::InvalidArgument,
            ),
            (
                HttpMethod::GET,
                "/v1/projects/my-proj/secrets?pageSize=-1",
                "",
                Status::InvalidArgument,
            ),
            (
                HttpMethod::GET,
                "/v1/projects/my-proj/secrets?pageSize=abc",
                "",
                Status::InvalidArgument,
            ),
            (
                HttpMethod::GET,
                "/v1/projects/my-proj/secrets?pageToken=%FF%FE",
                "",
                Status::InvalidArgument,
            ),
            (
                HttpMethod::GET,
                "/v1/projects/my-proj/secrets/a/versions?pageToken=Z2NwLWVtdTp4",
                "",
                Status::InvalidArgument,
            ),
            (
                HttpMethod::GET,
                "/v1/projects/my-proj/secrets/a/versions/99999999999999999999999:access",
                "",
                Status::InvalidArgument,
            ),
            (
                HttpMethod::GET,
                "/v1/projects/my-proj/secrets/a/versions/-1:access",
                "",
                Status::NotFound,
            ),
            (
                HttpMethod::GET,
                "/v1/projects/my-proj/secrets/%ZZ",
                "",
                Status::NotFound,
            ),
            (
                HttpMethod::GET,
                "/v1/projects/my-proj/secrets/a%2Fb",
                "",
                Status::NotFound,
            ),
            (
                HttpMethod::GET,
                "/v1/projects/my-proj/secrets/a/versions/1/extra",
                "",
                Status::NotFound,
            ),
            (
                HttpMethod::GET,
                "/v1/projects/X!/secrets",
                "",
                Status::InvalidArgument,
            ),
            (
                HttpMethod::GET,
                "/v1/projects/my-proj/locations//secrets",
                "",
                Status::InvalidArgument,
            ),
            (
                HttpMethod::GET,
                "/v1/projects/my-proj/locations",
                "",
                Status::InvalidArgument,
            ),
            (HttpMethod::GET, "/v2/anything", "", Status::NotFound),
            (HttpMethod::GET, "/", "", Status::NotFound),
            (
                HttpMethod::PUT,
                "/v1/projects/my-proj/secrets/a",
                "",
                Status::NotFound,
            ),
            (
                HttpMethod::POST,
                "/v1/projects/my-proj/secrets/a:frobnicate",
                "",
                Status::NotFound,
            ),
            (
                HttpMethod::POST,
                "/v1/projects/my-proj/secrets/a:setIamPolicy",
                "{}",
                Status::Unimplemented,
            ),
            (
                HttpMethod::PATCH,
                "/v1/projects/my-proj/secrets/a",
                r#"{"labels":{}}"#,
                Status::InvalidArgument,
            ),
            (
                HttpMethod::PATCH,
                "/v1/projects/my-proj/secrets/a?updateMask=replication",
                "{}",
                Status::InvalidArgument,
            ),
            (
                HttpMethod::PATCH,
                "/v1/projects/my-proj/secrets/a?updateMask=versionAliases",
                r#"{"versionAliases":{"latest":"1"}}"#,
                Status::InvalidArgument,
            ),
            (
                HttpMethod::PATCH,
                "/v1/projects/my-proj/secrets/a?updateMask=labels",
                r#"{"labels":{"k":"v"},"etag":"\"stale\""}"#,
                Status::FailedPrecondition,
            ),
            (
                HttpMethod::DELETE,
                "/v1/projects/my-proj/secrets/a?etag=%22stale%22",
                "",
                Status::FailedPrecondition,
            ),
            (
                HttpMethod::GET,
                "/v1/projects/my-proj/secrets?filter=labels.%3D",
                "",
                Status::InvalidArgument,
            ),
        ];
        for (method, uri, body, want) in cases {
            let got = call(&s, method.clone(), uri, body);
            assert_eq!(
                got.as_ref().map_err(|e| e.status),
                Err(*want),
                "{method} {uri} {body}: {got:?}"
            );
        }
        // Oversized payloads are refused.
        let big = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            vec![0u8; 64 * 1024 + 1],
        );
        let err = call(
            &s,
            HttpMethod::POST,
            "/v1/projects/my-proj/secrets/a:addVersion",
            &format!(r#"{{"payload":{{"data":"{big}"}}}}"#),
        );
        assert_eq!(err.map_err(|e| e.status), Err(Status::InvalidArgument));
    }
}
