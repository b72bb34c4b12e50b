//! Google's JSON error envelope: `{"error":{"code":404,"message":"...","status":"NOT_FOUND"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A canonical Google RPC error, rendered as the REST error envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: Status,
    pub message: String,
}

/// The subset of `google.rpc.Code` the emulator produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    InvalidArgument,
    FailedPrecondition,
    NotFound,
    AlreadyExists,
    Unauthenticated,
    Unimplemented,
    Internal,
}

impl Status {
    fn http(self) -> StatusCode {
        match self {
            Status::InvalidArgument | Status::FailedPrecondition => StatusCode::BAD_REQUEST,
            Status::NotFound => StatusCode::NOT_FOUND,
            Status::AlreadyExists => StatusCode::CONFLICT,
            Status::Unauthenticated => StatusCode::UNAUTHORIZED,
            Status::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Status::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Status::InvalidArgument => "INVALID_ARGUMENT",
            Status::FailedPrecondition => "FAILED_PRECONDITION",
            Status::NotFound => "NOT_FOUND",
            Status::AlreadyExists => "ALREADY_EXISTS",
            Status::Unauthenticated => "UNAUTHENTICATED",
            Status::Unimplemented => "UNIMPLEMENTED",
            Status::Internal => "INTERNAL",
        }
    }
}

impl ApiError {
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Status::InvalidArgument, message)
    }

    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(Status::FailedPrecondition, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Status::NotFound, message)
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            Status::Unauthenticated,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, \
             login cookie or other valid authentication credential. See \
             https://developers.google.com/identity/sign-in/web/devconsole-project.",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.status.http();
        let body = json!({
            "error": {
                "code": code.as_u16(),
                "message": self.message,
                "status": self.status.name(),
            }
        });
        let mut resp = (code, axum::Json(body)).into_response();
        if self.status == Status::Unauthenticated {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static(
                    "Bearer realm=\"https://accounts.google.com/\"",
                ),
            );
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
