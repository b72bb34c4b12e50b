#![forbid(unsafe_code)]
//! `spec.provider.vault` (not implemented yet).

use std::sync::Arc;

use async_trait::async_trait;
use refsync_core::api::SecretStoreSpec;
use refsync_core::{Error, Provider, ProviderFactory, Result, StoreContext};

/// Builds Vault providers from `spec.provider.vault`.
pub struct VaultFactory;

#[async_trait]
impl ProviderFactory for VaultFactory {
    fn key(&self) -> &'static str {
        "vault"
    }

    async fn build(&self, _spec: &SecretStoreSpec, _ctx: &StoreContext) -> Result<Arc<dyn Provider>> {
        Err(Error::unsupported("spec.provider.vault: not implemented yet"))
    }
}
