//! The fetch step: identical reads are coalesced, cached for the window, and batched per store.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use refsync_core::api::StoreKind;
use refsync_core::fetch::{Fetcher, Read, ReadValue, StoreId};
use refsync_core::{Error, FindRef, Provider, RemoteRef, Result, SecretBytes, SecretMap};

/// Counts calls and answers after a delay, so concurrent callers overlap.
#[derive(Default)]
struct Counting {
    get_secrets_calls: AtomicU64,
    keys_requested: AtomicU64,
}

#[async_trait]
impl Provider for Counting {
    fn metrics_name(&self) -> &'static str {
        "Counting"
    }
    async fn get_secret(&self, r: &RemoteRef) -> Result<SecretBytes> {
        Ok(SecretBytes::from(format!("value-of-{}", r.key)))
    }
    async fn get_secrets(&self, refs: &[RemoteRef]) -> Vec<Result<SecretBytes>> {
        self.get_secrets_calls.fetch_add(1, Ordering::SeqCst);
        self.keys_requested
            .fetch_add(refs.len() as u64, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        refs.iter()
            .map(|r| {
                if r.key == "missing" {
                    Err(Error::not_found("missing"))
                } else {
                    Ok(SecretBytes::from(format!("value-of-{}", r.key)))
                }
            })
            .collect()
    }
    async fn find(&self, _f: &FindRef) -> Result<SecretMap> {
        Ok(SecretMap::new())
    }
    async fn validate(&self) -> Result<()> {
        Ok(())
    }
}

fn store() -> StoreId {
    StoreId {
        kind: StoreKind::SecretStore,
        namespace: "ns".into(),
        name: "s".into(),
        version: "1".into(),
    }
}

fn get(key: &str) -> Read {
    Read::Get(RemoteRef::new(key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_readers_of_a_hundred_keys_cost_one_call_per_key_at_most() {
    let fetcher = Arc::new(Fetcher::new(Duration::from_secs(3600)));
    let counting = Arc::new(Counting::default());
    let provider: Arc<dyn Provider> = counting.clone();
    let mut tasks = Vec::new();
    for i in 0..10_000 {
        let (f, p) = (fetcher.clone(), provider.clone());
        tasks.push(tokio::spawn(async move {
            let key = format!("k{}", i % 100);
            let out = f.fetch(&store(), &p, &[get(&key)]).await;
            match &out[0] {
                Ok(ReadValue::Secret(s)) => {
                    assert_eq!(s.expose(), format!("value-of-{key}").as_bytes())
                }
                other => panic!("{other:?}"),
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let keys = counting.keys_requested.load(Ordering::SeqCst);
    assert_eq!(
        keys, 100,
        "each distinct key is requested from the provider exactly once"
    );
    assert!(counting.get_secrets_calls.load(Ordering::SeqCst) <= 100);
    let s = &fetcher.stats;
    assert_eq!(
        s.cache_hits.load(Ordering::SeqCst) + s.inflight_hits.load(Ordering::SeqCst),
        9_900,
        "the other reads were served by the cache or joined a call in flight"
    );
}

#[tokio::test]
async fn one_request_is_one_batch_with_errors_in_place() {
    let fetcher = Fetcher::new(Duration::ZERO);
    let counting = Arc::new(Counting::default());
    let provider: Arc<dyn Provider> = counting.clone();
    let reads = vec![get("a"), get("missing"), get("b"), get("a")];
    let out = fetcher.fetch(&store(), &provider, &reads).await;
    assert_eq!(counting.get_secrets_calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        counting.keys_requested.load(Ordering::SeqCst),
        3,
        "the duplicate read is not sent twice"
    );
    assert!(matches!(&out[0], Ok(ReadValue::Secret(s)) if s.expose() == b"value-of-a"));
    assert!(matches!(&out[1], Err(e) if e.is_not_found()));
    assert!(matches!(&out[2], Ok(ReadValue::Secret(s)) if s.expose() == b"value-of-b"));
    assert!(matches!(&out[3], Ok(ReadValue::Secret(s)) if s.expose() == b"value-of-a"));
    // No cache with a zero window: the next request calls again; errors are never cached.
    fetcher.fetch(&store(), &provider, &[get("a")]).await;
    assert_eq!(counting.get_secrets_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn invalidation_forgets_a_store() {
    let fetcher = Fetcher::new(Duration::from_secs(60));
    let counting = Arc::new(Counting::default());
    let provider: Arc<dyn Provider> = counting.clone();
    fetcher.fetch(&store(), &provider, &[get("a")]).await;
    fetcher.fetch(&store(), &provider, &[get("a")]).await;
    assert_eq!(counting.get_secrets_calls.load(Ordering::SeqCst), 1);
    fetcher.invalidate(Some(&store()));
    fetcher.fetch(&store(), &provider, &[get("a")]).await;
    assert_eq!(counting.get_secrets_calls.load(Ordering::SeqCst), 2);
}
