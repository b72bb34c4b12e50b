#![forbid(unsafe_code)]
//! Sources (where ExternalSecrets and stores come from), sinks (where Secrets go) and the
//! reconcilers that join them through the core engine.

pub mod context;
pub mod error;
pub mod events;
pub mod http;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod status;
pub mod trim;
pub mod webhook;
