#![forbid(unsafe_code)]
//! The refsync engine: provider trait, plan, fetch, assemble and templates. No kube client.
//!
//! source → **plan** → **fetch** → **assemble** → sink: the front ends (render, plan,
//! validate, the controller) supply the source and the sink; everything between lives here.

pub use refsync_api as api;

pub mod assemble;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod convert;
pub mod duration;
pub mod engine;
pub mod error;
pub mod fetch;
pub mod hash;
pub mod manifest;
pub mod plan;
pub mod provider;
pub mod secret;
pub mod selector;
pub mod template;
pub mod validate;

pub use error::{Error, ErrorKind, Result};
pub use provider::{
    CallCounter, CallObserver, Capabilities, FindRef, PropertyMode, Provider, ProviderFactory,
    ProviderRegistry, RemoteRef, SecretReader, StoreContext,
};
pub use secret::{SecretBytes, SecretMap};
