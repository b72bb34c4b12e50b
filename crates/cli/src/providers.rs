//! The providers compiled into the binary.

use std::sync::Arc;

use refsync_core::ProviderRegistry;

pub fn registry() -> ProviderRegistry {
    let mut r = ProviderRegistry::new();
    r.register(Arc::new(refsync_provider_fake::FakeFactory))
        .register(Arc::new(refsync_provider_vault::VaultFactory))
        .register(Arc::new(refsync_provider_aws::AwsFactory))
        .register(Arc::new(refsync_provider_gcp::GcpFactory));
    r
}
