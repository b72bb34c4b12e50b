//! The labels and annotations ESO puts on what it manages; refsync writes the same ones.

/// On every managed Secret (ESO's managed-Secret cache selects on it).
pub const LABEL_MANAGED: &str = "reconcile.external-secrets.io/managed";
pub const LABEL_MANAGED_VALUE: &str = "true";
/// Hash of `<namespace>/<name>` of the owning ExternalSecret (creationPolicy Owner).
pub const LABEL_OWNER: &str = "reconcile.external-secrets.io/created-by";
/// Hash of the Secret's data, so unchanged data causes no write.
pub const ANNOTATION_DATA_HASH: &str = "reconcile.external-secrets.io/data-hash";
/// Changing its value forces a sync of the ExternalSecret.
pub const ANNOTATION_FORCE_SYNC: &str = "force-sync";
/// Where a Secret rendered from manifests came from (refsync's own).
pub const ANNOTATION_SOURCE: &str = "refsync.io/source";
