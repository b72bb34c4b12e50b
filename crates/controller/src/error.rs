//! The controller's error: what went wrong while reconciling one object. Messages name objects
//! and fields, never secret values.

/// One reconcile failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// plan, fetch or assemble failed (provider unreachable, bad manifest, missing key, ...).
    #[error("{0}")]
    Sync(#[from] refsync_core::Error),
    /// The apiserver refused or failed a request.
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// The target Secret is controller-owned by another ExternalSecret.
    #[error("secret is owned by another ExternalSecret: {0}")]
    OwnedByOther(String),
    /// The target Secret is immutable and its data or type would change.
    #[error("unable to update secret {0}: secret is immutable")]
    Immutable(String),
    /// deletionPolicy Delete asked to delete a Secret this ExternalSecret does not own.
    #[error("unable to delete secret {name}: creationPolicy={policy} is not Owner")]
    DeleteNotOwner { name: String, policy: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn kube(what: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            what: what.into(),
            source,
        }
    }

    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Sync(e) => e.kind.metric_label(),
            Error::Kube { .. } => "kube",
            Error::OwnedByOther(_) => "owned_by_other",
            Error::Immutable(_) => "immutable",
            Error::DeleteNotOwner { .. } => "config",
        }
    }

    /// Whether the apiserver reported a write conflict (retry at once).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube { source: kube::Error::Api(s), .. } if s.code == 409)
    }
}
