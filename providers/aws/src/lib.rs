#![forbid(unsafe_code)]
//! `spec.provider.aws` (not implemented yet).

use std::sync::Arc;

use async_trait::async_trait;
use refsync_core::api::SecretStoreSpec;
use refsync_core::{Error, Provider, ProviderFactory, Result, StoreContext};

/// Builds Aws providers from `spec.provider.aws`.
pub struct AwsFactory;

#[async_trait]
impl ProviderFactory for AwsFactory {
    fn key(&self) -> &'static str {
        "aws"
    }

    async fn build(&self, _spec: &SecretStoreSpec, _ctx: &StoreContext) -> Result<Arc<dyn Provider>> {
        Err(Error::unsupported("spec.provider.aws: not implemented yet"))
    }
}
