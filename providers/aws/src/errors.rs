//! AWS errors → `refsync_core::Error`. Messages are built from the operation, the remote name
//! and the AWS error code only: an SDK error's `Display`/`Debug` can carry request details, and
//! nothing from a response body (a value) may reach a message.

use std::error::Error as StdError;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use refsync_core::{Error, ErrorKind};

/// The kind an AWS error code stands for; `status` is the HTTP status when known.
pub(crate) fn kind_of_code(code: &str, message: Option<&str>, status: Option<u16>) -> ErrorKind {
    match code {
        "ResourceNotFoundException"
        | "ParameterNotFound"
        | "ParameterVersionNotFound"
        | "ParameterVersionLabelNotFound" => ErrorKind::NotFound,
        // A secret scheduled for deletion reads as missing (ESO maps it to NoSecretErr).
        "InvalidParameterException" | "InvalidRequestException"
            if message.is_some_and(|m| m.contains("marked for deletion")) =>
        {
            ErrorKind::NotFound
        }
        "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "ExpiredTokenException"
        | "ExpiredToken"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "InvalidIdentityToken"
        | "InvalidIdentityTokenException"
        | "IDPRejectedClaim"
        | "IDPCommunicationError"
        | "DecryptionFailure"
        | "KMSAccessDeniedException"
        | "NotAuthorized"
        | "AuthFailure"
        | "RegionDisabledException" => ErrorKind::Auth,
        "ThrottlingException"
        | "Throttling"
        | "TooManyRequestsException"
        | "RequestLimitExceeded"
        | "ThrottledException"
        | "InternalServiceError"
        | "InternalServiceErrorException"
        | "InternalFailure"
        | "InternalServerError"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "RequestTimeout"
        | "RequestTimeoutException"
        | "PriorRequestNotComplete" => ErrorKind::Transient,
        _ => match status {
            Some(401 | 403) => ErrorKind::Auth,
            Some(404) => ErrorKind::NotFound,
            Some(429) => ErrorKind::Transient,
            Some(s) if s >= 500 => ErrorKind::Transient,
            Some(_) => ErrorKind::Config,
            None => ErrorKind::Transient,
        },
    }
}

/// Finds a refsync error (our own credential providers put one inside `CredentialsError`) or a
/// `CredentialsError` in an error's source chain.
pub(crate) fn credentials_cause(err: &(dyn StdError + 'static)) -> Option<Error> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    let mut saw_credentials_error = false;
    while let Some(e) = cur {
        if let Some(ours) = e.downcast_ref::<Error>() {
            return Some(ours.clone());
        }
        if let Some(ce) = e.downcast_ref::<CredentialsError>() {
            saw_credentials_error = true;
            match ce {
                CredentialsError::CredentialsNotLoaded(_) => {
                    // Keep looking for a more precise cause; fall back below.
                }
                CredentialsError::InvalidConfiguration(_) => {
                    return Some(Error::config(
                        "the AWS credentials configuration is invalid",
                    ));
                }
                CredentialsError::ProviderTimedOut(_) => {
                    return Some(Error::transient("loading AWS credentials timed out"));
                }
                _ => {}
            }
        }
        cur = e.source();
    }
    saw_credentials_error.then(|| Error::auth("no AWS credentials could be loaded (default chain)"))
}

/// Classifies an SDK error of operation `op` on `what` (a secret or parameter name).
pub(crate) fn classify<E>(
    service: &str,
    op: &str,
    what: &str,
    err: &SdkError<E, HttpResponse>,
) -> Error
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    let at = if what.is_empty() {
        format!("{service} {op}")
    } else {
        format!("{service} {op} {what:?}")
    };
    match err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let code = ctx.err().code().unwrap_or("UnknownError");
            let kind = kind_of_code(code, ctx.err().message(), Some(status));
            Error::new(kind, format!("{at}: {code} (HTTP {status})"))
        }
        SdkError::TimeoutError(_) => Error::transient(format!("{at}: request timed out")),
        SdkError::DispatchFailure(d) => {
            if let Some(e) = credentials_cause(err) {
                return e.context(format!("{at}: credentials"));
            }
            let why = if d.is_timeout() {
                "timeout"
            } else if d.is_io() {
                "I/O error"
            } else {
                "dispatch failure"
            };
            Error::transient(format!("{at}: cannot reach AWS ({why})"))
        }
        SdkError::ResponseError(r) => {
            let status = r.raw().status().as_u16();
            let kind = kind_of_code("", None, Some(status));
            let kind = if kind == ErrorKind::Config {
                ErrorKind::Transient
            } else {
                kind
            };
            Error::new(kind, format!("{at}: unreadable response (HTTP {status})"))
        }
        SdkError::ConstructionFailure(_) => {
            if let Some(e) = credentials_cause(err) {
                return e.context(format!("{at}: credentials"));
            }
            Error::config(format!(
                "{at}: the request could not be built (check region and endpoint)"
            ))
        }
        _ => {
            if let Some(e) = credentials_cause(err) {
                return e.context(format!("{at}: credentials"));
            }
            Error::transient(format!("{at}: request failed"))
        }
    }
}

/// An entry of a batch answer's error list (`BatchGetSecretValue` `Errors`).
pub(crate) fn classify_entry(
    service: &str,
    op: &str,
    what: &str,
    code: Option<&str>,
    message: Option<&str>,
) -> Error {
    let code = code.unwrap_or("UnknownError");
    let kind = match kind_of_code(code, message, None) {
        ErrorKind::Transient if !is_known_transient(code) => ErrorKind::Config,
        k => k,
    };
    Error::new(kind, format!("{service} {op} {what:?}: {code}"))
}

fn is_known_transient(code: &str) -> bool {
    kind_of_code(code, None, Some(400)) == ErrorKind::Transient
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_kinds() {
        assert_eq!(
            kind_of_code("ResourceNotFoundException", None, Some(400)),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind_of_code("ParameterNotFound", None, Some(400)),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind_of_code("AccessDeniedException", None, Some(400)),
            ErrorKind::Auth
        );
        assert_eq!(
            kind_of_code("UnrecognizedClientException", None, Some(400)),
            ErrorKind::Auth
        );
        assert_eq!(
            kind_of_code("ExpiredTokenException", None, Some(400)),
            ErrorKind::Auth
        );
        assert_eq!(
            kind_of_code("ThrottlingException", None, Some(400)),
            ErrorKind::Transient
        );
        assert_eq!(
            kind_of_code("Whatever", None, Some(503)),
            ErrorKind::Transient
        );
        assert_eq!(kind_of_code("Whatever", None, Some(403)), ErrorKind::Auth);
        assert_eq!(
            kind_of_code("ValidationException", None, Some(400)),
            ErrorKind::Config
        );
        assert_eq!(
            kind_of_code(
                "InvalidRequestException",
                Some("secret was marked for deletion"),
                Some(400)
            ),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind_of_code("InvalidRequestException", Some("other"), Some(400)),
            ErrorKind::Config
        );
    }

    #[test]
    fn batch_entries() {
        let e = classify_entry(
            "AWS/SecretsManager",
            "BatchGetSecretValue",
            "x",
            Some("ResourceNotFoundException"),
            None,
        );
        assert_eq!(e.kind, ErrorKind::NotFound);
        let e = classify_entry(
            "AWS/SecretsManager",
            "BatchGetSecretValue",
            "x",
            Some("DecryptionFailure"),
            None,
        );
        assert_eq!(e.kind, ErrorKind::Auth);
        let e = classify_entry(
            "AWS/SecretsManager",
            "BatchGetSecretValue",
            "x",
            Some("InternalServiceError"),
            None,
        );
        assert_eq!(e.kind, ErrorKind::Transient);
        let e = classify_entry(
            "AWS/SecretsManager",
            "BatchGetSecretValue",
            "x",
            Some("Odd"),
            None,
        );
        assert_eq!(e.kind, ErrorKind::Config);
    }
}
