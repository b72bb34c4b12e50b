//! The provider conformance suite against the gcpsm emulator, through Google's official client.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use common::*;
use refsync_core::conformance::{self, Backend, Features};
use refsync_core::{Provider, Result};

struct Gcp {
    env: Env,
    location: Option<&'static str>,
}

#[async_trait]
impl Backend for Gcp {
    fn prefix(&self) -> String {
        "conf-".to_string()
    }

    async fn put(
        &self,
        key: &str,
        value: &[u8],
        tags: &BTreeMap<String, String>,
    ) -> Result<Option<String>> {
        Ok(Some(self.env.put(self.location, key, value, tags).await))
    }

    async fn provider(&self) -> Result<Arc<dyn Provider>> {
        Ok(Arc::new(
            self.env
                .provider(store(self.location), Reader::default())
                .await?,
        ))
    }

    fn features(&self) -> Features {
        // Metadata is ESO's nested `{"annotations":..,"labels":..}` document, not the flat map the
        // suite checks: tested in features.rs (metadata_is_esos_document).
        Features {
            find_by_tags: true,
            find_by_path: false,
            versions: true,
            metadata: false,
        }
    }
}

#[tokio::test]
async fn conformance_global() {
    let backend = Gcp {
        env: Env::start().await,
        location: None,
    };
    let report = conformance::run(&backend).await;
    assert_eq!(report.not_supported, vec!["metadata"], "{report:?}");
    assert!(
        report.passed.contains(&"find-by-tags") && report.passed.contains(&"versions"),
        "{report:?}"
    );
    // Every call the provider made reached the emulator, and was reported to the observer.
    assert!(backend.env.calls.count("AccessSecretVersion") > 0);
}

#[tokio::test]
async fn conformance_regional() {
    let backend = Gcp {
        env: Env::start().await,
        location: Some("europe-west4"),
    };
    let report = conformance::run(&backend).await;
    assert_eq!(report.not_supported, vec!["metadata"], "{report:?}");
}
