//! Classifies the client's errors. Messages carry the RPC, the resource name and the server's
//! status text: Secret Manager never echoes payloads, and none of ours is ever formatted in.

use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::error::{CredentialsError, Error as GaxError};
use refsync_core::{Error, ErrorKind};

/// `call` on `what` failed with `err`. `hint` is appended to authentication failures.
pub(crate) fn classify(err: &GaxError, call: &str, what: &str, hint: &str) -> Error {
    let (kind, detail) = kind_and_detail(err);
    let mut message = format!("GCP Secret Manager {call} {what}: {detail}");
    if kind == ErrorKind::Auth && !hint.is_empty() {
        message.push_str(" (");
        message.push_str(hint);
        message.push(')');
    }
    Error::new(kind, message)
}

fn kind_and_detail(err: &GaxError) -> (ErrorKind, String) {
    if let Some(status) = err.status() {
        let kind = match status.code {
            Code::NotFound => ErrorKind::NotFound,
            Code::PermissionDenied | Code::Unauthenticated => ErrorKind::Auth,
            Code::Unavailable
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::Internal
            | Code::Unknown
            | Code::Cancelled => ErrorKind::Transient,
            // A disabled or destroyed version: ESO reports it as an ordinary error (not
            // NoSecretError), so the target Secret is kept; retrying will not help until someone
            // enables a version.
            Code::FailedPrecondition => ErrorKind::Config,
            Code::InvalidArgument | Code::OutOfRange => ErrorKind::Invalid,
            Code::Unimplemented => ErrorKind::Unsupported,
            _ => match err.http_status_code() {
                Some(code) => http_kind(code),
                None => ErrorKind::Transient,
            },
        };
        let code = format!("{:?}", status.code);
        return (
            kind,
            format!("{} ({})", one_line(&status.message), screaming(&code)),
        );
    }
    if let Some(code) = err.http_status_code() {
        return (http_kind(code), format!("HTTP {code}"));
    }
    if err.is_authentication() {
        // google-cloud-auth failed to make a token (bad key, STS refused the subject token, ...).
        let transient = std::error::Error::source(err)
            .and_then(|s| s.downcast_ref::<CredentialsError>())
            .is_some_and(CredentialsError::is_transient);
        let kind = if transient {
            ErrorKind::Transient
        } else {
            ErrorKind::Auth
        };
        return (
            kind,
            format!("cannot get credentials: {}", one_line(&err.to_string())),
        );
    }
    if err.is_timeout() {
        return (ErrorKind::Transient, "timed out".to_string());
    }
    if err.is_exhausted() {
        return (
            ErrorKind::Transient,
            format!("retries exhausted: {}", one_line(&err.to_string())),
        );
    }
    if err.is_io() || err.is_connect() || err.is_transport() {
        return (
            ErrorKind::Transient,
            format!("network error: {}", one_line(&err.to_string())),
        );
    }
    if err.is_binding() {
        return (
            ErrorKind::Invalid,
            format!("invalid request: {}", one_line(&err.to_string())),
        );
    }
    (ErrorKind::Transient, one_line(&err.to_string()))
}

fn http_kind(code: u16) -> ErrorKind {
    match code {
        401 | 403 => ErrorKind::Auth,
        404 => ErrorKind::NotFound,
        408 | 429 => ErrorKind::Transient,
        400..=499 => ErrorKind::Config,
        _ => ErrorKind::Transient,
    }
}

/// `PermissionDenied` → `PERMISSION_DENIED`, as Google writes status codes.
fn screaming(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn one_line(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    // Bound what a misbehaving server can put into a status condition.
    if s.len() > 512 {
        let mut end = 512;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use google_cloud_gax::error::rpc::Status;

    fn service(code: Code, msg: &str) -> GaxError {
        GaxError::service(Status::default().set_code(code).set_message(msg))
    }

    #[test]
    fn status_codes_map_to_kinds() {
        let cases = [
            (Code::NotFound, ErrorKind::NotFound),
            (Code::PermissionDenied, ErrorKind::Auth),
            (Code::Unauthenticated, ErrorKind::Auth),
            (Code::Unavailable, ErrorKind::Transient),
            (Code::ResourceExhausted, ErrorKind::Transient),
            (Code::DeadlineExceeded, ErrorKind::Transient),
            (Code::FailedPrecondition, ErrorKind::Config),
            (Code::InvalidArgument, ErrorKind::Invalid),
        ];
        for (code, kind) in cases {
            let e = classify(
                &service(code, "m"),
                "AccessSecretVersion",
                "projects/p/secrets/x",
                "hint",
            );
            assert_eq!(e.kind, kind, "{code:?}");
        }
        let e = classify(
            &service(Code::PermissionDenied, "denied"),
            "GetSecret",
            "x",
            "hint",
        );
        assert_eq!(
            e.message,
            "GCP Secret Manager GetSecret x: denied (PERMISSION_DENIED) (hint)"
        );
    }

    #[test]
    fn http_only_errors() {
        let e = GaxError::http(
            429,
            Default::default(),
            bytes::Bytes::from_static(b"slow down"),
        );
        assert_eq!(
            classify(&e, "ListSecrets", "projects/p", "").kind,
            ErrorKind::Transient
        );
        let e = GaxError::http(503, Default::default(), bytes::Bytes::new());
        assert_eq!(
            classify(&e, "ListSecrets", "projects/p", "").kind,
            ErrorKind::Transient
        );
    }
}
