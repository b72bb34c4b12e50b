#![forbid(unsafe_code)]
//! The refsync engine: provider trait, plan, fetch, assemble and templates. No kube client.

pub mod template;
