//! Engine throughput without I/O: `cargo bench -p refsync-core --bench engine`.
//!
//! N ExternalSecrets (10 keys each, `property` lookups, one template) read 100 distinct remote
//! keys through one in-memory provider; prints ExternalSecrets/s, provider keys requested, and
//! per-phase timings. The provider answers from memory, so this measures refsync's own CPU:
//! plan, fetch (dedup, cache), assemble, templates.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use refsync_core::api::{ExternalSecret, SecretStoreSpec, StoreKind};
use refsync_core::engine::{Engine, ResolvedStore, StoreSource};
use refsync_core::fetch::{Fetcher, StoreId};
use refsync_core::plan::StoreName;
use refsync_core::{
    Error, FindRef, Provider, ProviderFactory, ProviderRegistry, RemoteRef, Result, SecretBytes,
    SecretMap, SecretReader, StoreContext,
};

struct Memory {
    keys_requested: Arc<AtomicU64>,
}

#[async_trait]
impl Provider for Memory {
    fn metrics_name(&self) -> &'static str {
        "Memory"
    }
    async fn get_secret(&self, r: &RemoteRef) -> Result<SecretBytes> {
        self.keys_requested.fetch_add(1, Ordering::Relaxed);
        Ok(SecretBytes::from(format!(
            r#"{{"user":"u-{}","password":"p-{}","port":5432}}"#,
            r.key, r.key
        )))
    }
    async fn find(&self, _: &FindRef) -> Result<SecretMap> {
        Ok(SecretMap::new())
    }
    async fn validate(&self) -> Result<()> {
        Ok(())
    }
}

struct MemoryFactory(Arc<AtomicU64>);

#[async_trait]
impl ProviderFactory for MemoryFactory {
    fn key(&self) -> &'static str {
        "fake"
    }
    async fn build(&self, _: &SecretStoreSpec, _: &StoreContext) -> Result<Arc<dyn Provider>> {
        Ok(Arc::new(Memory {
            keys_requested: self.0.clone(),
        }))
    }
}

struct OneStore(ResolvedStore);

#[async_trait]
impl StoreSource for OneStore {
    async fn resolve(&self, _: &StoreName, _: &str) -> Result<ResolvedStore> {
        Ok(self.0.clone())
    }
}

struct NoReader;

#[async_trait]
impl SecretReader for NoReader {
    async fn secret_key(&self, _: &str, _: &str, _: &str) -> Result<SecretBytes> {
        Err(Error::not_found("none"))
    }
    async fn secret_data(&self, _: &str, _: &str) -> Result<SecretMap> {
        Err(Error::not_found("none"))
    }
    async fn config_map_key(&self, _: &str, _: &str, _: &str) -> Result<String> {
        Err(Error::not_found("none"))
    }
}

fn external_secret(i: usize) -> ExternalSecret {
    let data: Vec<serde_json::Value> = (0..10)
        .map(|k| {
            serde_json::json!({
                "secretKey": format!("k{k}"),
                "remoteRef": {"key": format!("path-{}", (i * 10 + k) % 100), "property": if k % 2 == 0 { "user" } else { "password" }}
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "external-secrets.io/v1",
        "kind": "ExternalSecret",
        "metadata": {"name": format!("es-{i}"), "namespace": format!("ns-{}", i % 100)},
        "spec": {
            "secretStoreRef": {"name": "store"},
            "target": {"template": {"mergePolicy": "Merge", "data": {"dsn": "postgres://{{ .k0 }}:{{ .k1 }}@db:5432/app"}}},
            "data": data
        }
    }))
    .expect("valid ExternalSecret")
}

fn main() {
    let n: usize = std::env::var("REFSYNC_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let requested = Arc::new(AtomicU64::new(0));
    let mut registry = ProviderRegistry::new();
    registry.register(Arc::new(MemoryFactory(requested.clone())));
    let engine = Arc::new(Engine::new(
        registry,
        Fetcher::new(Duration::from_secs(3600)),
    ));
    let store = ResolvedStore {
        id: StoreId {
            kind: StoreKind::SecretStore,
            namespace: "ns".into(),
            name: "store".into(),
            version: "1".into(),
        },
        spec: serde_json::from_value(serde_json::json!({"provider": {"fake": {"data": []}}}))
            .expect("spec"),
    };
    let stores = Arc::new(OneStore(store));
    let items: Vec<ExternalSecret> = (0..n).map(external_secret).collect();

    for round in ["cold (first sync)", "warm (refresh within the window)"] {
        let started = Instant::now();
        let results = rt.block_on(async {
            let tasks: Vec<_> = items
                .iter()
                .cloned()
                .map(|es| {
                    let (engine, stores) = (engine.clone(), stores.clone());
                    tokio::spawn(async move {
                        engine
                            .sync(&es, stores.as_ref(), Arc::new(NoReader))
                            .await
                            .map(|_| ())
                    })
                })
                .collect();
            let mut ok = 0usize;
            for t in tasks {
                if matches!(t.await, Ok(Ok(()))) {
                    ok += 1;
                }
            }
            ok
        });
        let took = started.elapsed();
        assert_eq!(results, n, "every ExternalSecret synced");
        println!(
            "{round}: {n} ExternalSecrets in {:.3} s = {:.0}/s; provider keys requested so far: {}",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64(),
            requested.load(Ordering::Relaxed)
        );
    }
    let mut tpl = BTreeMap::new();
    tpl.insert("k0".to_string(), b"user".to_vec());
    tpl.insert("k1".to_string(), b"pass".to_vec());
    let started = Instant::now();
    for _ in 0..n {
        refsync_core::template::render("dsn", "postgres://{{ .k0 }}:{{ .k1 }}@db:5432/app", &tpl)
            .expect("render");
    }
    println!(
        "template render: {:.1} µs each",
        started.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}
