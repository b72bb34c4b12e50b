#![forbid(unsafe_code)]
//! `spec.provider.gcpsm` (not implemented yet).

use std::sync::Arc;

use async_trait::async_trait;
use refsync_core::api::SecretStoreSpec;
use refsync_core::{Error, Provider, ProviderFactory, Result, StoreContext};

/// Builds Gcp providers from `spec.provider.gcpsm`.
pub struct GcpFactory;

#[async_trait]
impl ProviderFactory for GcpFactory {
    fn key(&self) -> &'static str {
        "gcpsm"
    }

    async fn build(&self, _spec: &SecretStoreSpec, _ctx: &StoreContext) -> Result<Arc<dyn Provider>> {
        Err(Error::unsupported("spec.provider.gcpsm: not implemented yet"))
    }
}
