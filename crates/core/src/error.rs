//! Errors with a kind: the kind, not the text, decides retry, backoff and status reasons.

use std::fmt;

/// What went wrong, as far as retrying and reporting care.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The remote secret, key, property or version does not exist (ESO's `NoSecretErr`).
    NotFound,
    /// The provider refused the credentials or the caller lacks permission.
    Auth,
    /// The store or the ExternalSecret is misconfigured; retrying will not help until it changes.
    Config,
    /// The manifest is invalid (bad field value, bad regexp, bad template).
    Invalid,
    /// refsync does not implement what the manifest asks for.
    Unsupported,
    /// Network failure, timeout, throttling, 5xx: retry with backoff.
    Transient,
    /// A limit protecting refsync from hostile input was hit.
    Limit,
}

impl ErrorKind {
    /// A short, bounded label for metrics.
    pub fn metric_label(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Auth => "auth",
            ErrorKind::Config => "config",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Transient => "transient",
            ErrorKind::Limit => "limit",
        }
    }

    /// Whether retrying the same call later may succeed without anyone changing anything.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Transient | ErrorKind::Auth)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.metric_label())
    }
}

/// The engine's error. The message names objects and fields, never secret values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, message)
    }
    pub fn auth(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Auth, message)
    }
    pub fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Invalid, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unsupported, message)
    }
    pub fn transient(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Transient, message)
    }
    pub fn limit(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Limit, message)
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    /// Prefixes the message with where it happened (`spec.data[0] (key: db)`), keeping the kind.
    pub fn context(self, at: impl fmt::Display) -> Self {
        Error {
            kind: self.kind,
            message: format!("{at}: {}", self.message),
        }
    }
}
