//! Reconcilers: the kube-runtime controllers of refsync's custom resources.

pub mod external_secret;
pub mod store;
