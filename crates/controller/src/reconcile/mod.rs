//! Reconcilers: the kube-runtime controllers of refsync's custom resources.

pub mod external_secret;
pub mod manifests;
pub mod store;
