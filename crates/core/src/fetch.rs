//! fetch: runs remote reads through providers, once per distinct (store, read) in a window.
//!
//! Identical reads in flight are coalesced (single-flight); results are kept for `ttl` (the
//! refresh window); the `Get`s of one store requested together go to the provider as one
//! `get_secrets` call so batch APIs can serve them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use crate::error::{Error, Result};
use crate::provider::{FindRef, Provider, RemoteRef};
use crate::secret::{SecretBytes, SecretMap};

/// A store as the cache knows it: changing the store's spec changes its identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreId {
    pub kind: crate::api::StoreKind,
    /// Empty for cluster stores.
    pub namespace: String,
    pub name: String,
    /// resourceVersion in the cluster, a hash of the spec offline.
    pub version: String,
}

impl std::fmt::Display for StoreId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One remote read.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Read {
    Get(RemoteRef),
    Find(FindRef),
}

/// What a read returns.
#[derive(Clone, Debug)]
pub enum ReadValue {
    Secret(SecretBytes),
    Map(SecretMap),
}

type Key = (StoreId, Read);
type Batch = Shared<BoxFuture<'static, Arc<Vec<Result<ReadValue>>>>>;

struct Cached {
    value: Result<ReadValue>,
    at: Instant,
}

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct FetchStats {
    /// `get_secrets`/`find` calls made to providers.
    pub provider_calls: AtomicU64,
    /// Reads served by the window cache.
    pub cache_hits: AtomicU64,
    /// Reads that joined a call already in flight.
    pub inflight_hits: AtomicU64,
    /// Reads requested in total.
    pub reads: AtomicU64,
}

/// Shared by the whole process.
pub struct Fetcher {
    ttl: Duration,
    cache: Mutex<HashMap<Key, Cached>>,
    inflight: Mutex<HashMap<Key, (Batch, usize)>>,
    pub stats: FetchStats,
}

impl Fetcher {
    /// `ttl` is how long a successful read is reused; zero disables the cache (single-flight
    /// and batching still apply).
    pub fn new(ttl: Duration) -> Self {
        Fetcher {
            ttl,
            cache: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            stats: FetchStats::default(),
        }
    }

    /// Forgets every cached value of a store (its spec changed or it was deleted) or, with
    /// `None`, everything.
    pub fn invalidate(&self, store: Option<&StoreId>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match store {
            Some(id) => cache.retain(|(s, _), _| s != id),
            None => cache.clear(),
        }
    }

    /// Forgets one read (a force-sync must see the remote value again).
    pub fn invalidate_reads(&self, store: &StoreId, reads: &[Read]) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        for r in reads {
            cache.remove(&(store.clone(), r.clone()));
        }
    }

    pub fn cached_entries(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Executes `reads` against one store's provider; the result is index-aligned.
    pub async fn fetch(
        &self,
        store: &StoreId,
        provider: &Arc<dyn Provider>,
        reads: &[Read],
    ) -> Vec<Result<ReadValue>> {
        self.stats
            .reads
            .fetch_add(reads.len() as u64, Ordering::Relaxed);
        let mut out: Vec<Option<Result<ReadValue>>> = vec![None; reads.len()];
        let mut waits: Vec<(usize, Wait)> = Vec::new();
        let mut new_gets: Vec<(usize, RemoteRef)> = Vec::new();
        let mut new_finds: Vec<(usize, FindRef)> = Vec::new();
        // Checking the cache and the calls in flight, and registering new calls, happen under
        // one lock so two concurrent requests never both start a call for the same read.
        let mut started: Vec<(Vec<usize>, Batch)> = Vec::new();
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            let mut seen: HashMap<&Read, usize> = HashMap::new();
            for (i, read) in reads.iter().enumerate() {
                let key = (store.clone(), read.clone());
                if let Some(c) = cache.get(&key)
                    && c.at.elapsed() < self.ttl
                {
                    self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                    out[i] = Some(c.value.clone());
                    continue;
                }
                if let Some((batch, idx)) = inflight.get(&key) {
                    self.stats.inflight_hits.fetch_add(1, Ordering::Relaxed);
                    waits.push((i, Wait::Batch(batch.clone(), *idx)));
                    continue;
                }
                if let Some(first) = seen.get(read) {
                    // The same read twice in one request: answer both from one call.
                    waits.push((i, Wait::SameAs(*first)));
                    continue;
                }
                seen.insert(read, i);
                match read {
                    Read::Get(r) => new_gets.push((i, r.clone())),
                    Read::Find(f) => new_finds.push((i, f.clone())),
                }
            }

            // One batch future for all new gets, one per find.
            if !new_gets.is_empty() {
                let refs: Vec<RemoteRef> = new_gets.iter().map(|(_, r)| r.clone()).collect();
                let p = provider.clone();
                self.stats.provider_calls.fetch_add(1, Ordering::Relaxed);
                let fut: BoxFuture<'static, Arc<Vec<Result<ReadValue>>>> = async move {
                    let results = p.get_secrets(&refs).await;
                    let mut v: Vec<Result<ReadValue>> = results
                        .into_iter()
                        .map(|r| r.map(ReadValue::Secret))
                        .collect();
                    v.resize_with(refs.len(), || {
                        Err(Error::transient(
                            "provider returned fewer results than requested",
                        ))
                    });
                    Arc::new(v)
                }
                .boxed();
                started.push((new_gets.iter().map(|(i, _)| *i).collect(), fut.shared()));
            }
            for (i, f) in &new_finds {
                let p = provider.clone();
                let f = f.clone();
                self.stats.provider_calls.fetch_add(1, Ordering::Relaxed);
                let fut: BoxFuture<'static, Arc<Vec<Result<ReadValue>>>> =
                    async move { Arc::new(vec![p.find(&f).await.map(ReadValue::Map)]) }.boxed();
                started.push((vec![*i], fut.shared()));
            }
            for (idxs, batch) in &started {
                for (pos, i) in idxs.iter().enumerate() {
                    inflight.insert((store.clone(), reads[*i].clone()), (batch.clone(), pos));
                }
            }
        }
        for (idxs, batch) in started {
            let results = batch.await;
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            for (pos, i) in idxs.iter().enumerate() {
                let key = (store.clone(), reads[*i].clone());
                inflight.remove(&key);
                let value = results
                    .get(pos)
                    .cloned()
                    .unwrap_or_else(|| Err(Error::transient("missing result")));
                if value.is_ok() && !self.ttl.is_zero() {
                    cache.insert(
                        key,
                        Cached {
                            value: value.clone(),
                            at: Instant::now(),
                        },
                    );
                }
                out[*i] = Some(value);
            }
        }
        // Reads in flight elsewhere first, so a duplicate below finds its original answered.
        for (i, wait) in &waits {
            if let Wait::Batch(batch, idx) = wait {
                let results = batch.clone().await;
                out[*i] = Some(
                    results
                        .get(*idx)
                        .cloned()
                        .unwrap_or_else(|| Err(Error::transient("missing result"))),
                );
            }
        }
        for (i, wait) in &waits {
            if let Wait::SameAs(first) = wait {
                out[*i] = out[*first].clone();
            }
        }
        out.into_iter()
            .map(|v| v.unwrap_or_else(|| Err(Error::transient("read was not executed"))))
            .collect()
    }
}

/// How a read that starts no call of its own gets its answer.
enum Wait {
    /// Joins a call in flight (its result at this index).
    Batch(Batch, usize),
    /// The same read earlier in this request.
    SameAs(usize),
}
