//! Reconcilers: the kube-runtime controllers of refsync's custom resources.

pub mod cluster_external_secret;
pub mod external_secret;
pub mod manifests;
pub mod store;
