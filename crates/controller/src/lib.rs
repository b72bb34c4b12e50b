#![forbid(unsafe_code)]
//! Sources (where ExternalSecrets and stores come from), sinks (where Secrets go) and the
//! reconcilers that join them through the core engine.

pub mod context;
pub mod labels;
pub mod metrics;
pub mod sink;
pub mod source;
pub mod error;
pub mod reconcile;
pub mod status;
pub mod http;
pub mod leader;
pub mod runtime;
