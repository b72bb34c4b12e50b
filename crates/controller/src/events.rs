//! Kubernetes Events (`events.k8s.io/v1`) with a small, bounded memory of recent ones.
//!
//! The same fields as kube-runtime's `Recorder` (reason, note, action, type, `regarding`,
//! `reportingController`, `reportingInstance`, `eventTime`, name `<regarding>.<nanos hex>`),
//! and the same aggregation: an Event repeated for the same object (same type, action,
//! reason, reporter and `regarding`) within [`SERIES_TTL`] updates the first one's `series`
//! (count, last observed time) instead of creating another. Unlike `Recorder`, which keeps a
//! full copy of every Event it published for six minutes and walks them all on every publish,
//! this keeps a hash and the Event's name per key, at most [`MAX_REMEMBERED`] of them, and
//! drops expired ones at most once per [`GC_EVERY`] (an ExternalSecret controller at 10,000
//! objects publishes 10,000 `Created` Events in a few minutes).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};

/// Repeats within this window become a series of the first Event (kube-runtime's TTL).
pub const SERIES_TTL: Duration = Duration::from_secs(6 * 60);
/// Keys remembered at most; beyond that a repeat is published as a new Event.
pub const MAX_REMEMBERED: usize = 4096;
/// Expired keys are dropped at most this often (or when the memory is full).
const GC_EVERY: Duration = Duration::from_secs(10);

/// Who publishes (`reportingController`, and `reportingInstance`, which defaults to it).
#[derive(Clone, Debug)]
pub struct Reporter {
    pub controller: String,
    pub instance: Option<String>,
}

#[derive(Debug)]
struct Seen {
    namespace: String,
    name: String,
    count: i32,
    first: Instant,
}

#[derive(Debug)]
struct Memory {
    seen: HashMap<u64, Seen>,
    last_gc: Instant,
}

impl Memory {
    fn gc(&mut self, now: Instant, force: bool) {
        if force || now.duration_since(self.last_gc) >= GC_EVERY {
            self.seen
                .retain(|_, s| now.duration_since(s.first) < SERIES_TTL);
            self.last_gc = now;
        }
    }
}

/// Publishes Events; cheap to share (`&self`).
pub struct Publisher {
    client: kube::Client,
    reporter: Reporter,
    memory: Mutex<Memory>,
}

/// What a publish sends: a new Event, or a series update of one published before.
#[derive(Debug, PartialEq)]
enum Next {
    Create,
    Series {
        namespace: String,
        name: String,
        count: i32,
    },
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Publisher {
    pub fn new(client: kube::Client, reporter: Reporter) -> Self {
        Publisher {
            client,
            reporter,
            memory: Mutex::new(Memory {
                seen: HashMap::new(),
                last_gc: Instant::now(),
            }),
        }
    }

    fn key(&self, ev: &Event, regarding: &ObjectReference) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        matches!(ev.type_, EventType::Warning).hash(&mut h);
        ev.action.hash(&mut h);
        ev.reason.hash(&mut h);
        self.reporter.controller.hash(&mut h);
        self.reporter.instance.hash(&mut h);
        for r in std::iter::once(Some(regarding)).chain(std::iter::once(ev.secondary.as_ref())) {
            match r {
                Some(r) => {
                    true.hash(&mut h);
                    r.api_version.hash(&mut h);
                    r.kind.hash(&mut h);
                    r.name.hash(&mut h);
                    r.namespace.hash(&mut h);
                    r.uid.hash(&mut h);
                }
                None => false.hash(&mut h),
            }
        }
        h.finish()
    }

    /// Whether `key` was published within the TTL (then its count is taken).
    fn decide(&self, key: u64, now: Instant) -> Next {
        let mut mem = lock(&self.memory);
        mem.gc(now, false);
        match mem.seen.get_mut(&key) {
            Some(s) if now.duration_since(s.first) < SERIES_TTL => {
                s.count = s.count.saturating_add(1);
                Next::Series {
                    namespace: s.namespace.clone(),
                    name: s.name.clone(),
                    count: s.count,
                }
            }
            _ => Next::Create,
        }
    }

    fn remember(&self, key: u64, namespace: String, name: String, now: Instant) {
        let mut mem = lock(&self.memory);
        if mem.seen.len() >= MAX_REMEMBERED && !mem.seen.contains_key(&key) {
            mem.gc(now, true);
            if mem.seen.len() >= MAX_REMEMBERED {
                return;
            }
        }
        mem.seen.insert(
            key,
            Seen {
                namespace,
                name,
                count: 1,
                first: now,
            },
        );
    }

    fn forget(&self, key: u64) {
        lock(&self.memory).seen.remove(&key);
    }

    /// The Event object a first publish creates.
    fn build(&self, ev: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        K8sEvent {
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            note: ev.note.clone(),
            metadata: ObjectMeta {
                namespace: Some(namespace),
                name: Some(format!(
                    "{}.{:x}",
                    regarding
                        .name
                        .as_deref()
                        .unwrap_or(&self.reporter.controller),
                    now.as_nanosecond()
                )),
                ..Default::default()
            },
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            related: ev.secondary.clone(),
            ..Default::default()
        }
    }

    /// Publishes `ev` about `regarding` (in its namespace; `default` for cluster objects).
    pub async fn publish(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let key = self.key(ev, regarding);
        let now = Instant::now();
        if let Next::Series {
            namespace,
            name,
            count,
        } = self.decide(key, now)
        {
            let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
            let patch = serde_json::json!({
                "series": {"count": count, "lastObservedTime": MicroTime(Timestamp::now())}
            });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                // Gone (expired or deleted): publish it anew.
                Err(kube::Error::Api(s)) if s.code == 404 => self.forget(key),
                Err(e) => return Err(e),
            }
        }
        let event = self.build(ev, regarding, Timestamp::now());
        let namespace = event.metadata.namespace.clone().unwrap_or_default();
        let name = event.metadata.name.clone().unwrap_or_default();
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        api.create(&PostParams::default(), &event).await?;
        self.remember(key, namespace, name, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher() -> Publisher {
        // A client that is never used: these tests cover the decisions only. Building one
        // needs a rustls crypto provider chosen when several are linked (workspace builds).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        Publisher::new(
            client,
            Reporter {
                controller: "refsync".into(),
                instance: None,
            },
        )
    }

    fn ev(reason: &str, note: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Reconcile".into(),
            secondary: None,
        }
    }

    fn obj(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("external-secrets.io/v1".into()),
            kind: Some("ExternalSecret".into()),
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn fields_match_kube_runtime_recorder() {
        let p = publisher();
        let now = Timestamp::now();
        let e = p.build(&ev("Created", "secret created"), &obj("a"), now);
        assert_eq!(e.reason.as_deref(), Some("Created"));
        assert_eq!(e.note.as_deref(), Some("secret created"));
        assert_eq!(e.action.as_deref(), Some("Reconcile"));
        assert_eq!(e.type_.as_deref(), Some("Normal"));
        assert_eq!(e.reporting_controller.as_deref(), Some("refsync"));
        assert_eq!(e.reporting_instance.as_deref(), Some("refsync"));
        assert_eq!(e.regarding, Some(obj("a")));
        assert_eq!(e.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(
            e.metadata.name,
            Some(format!("a.{:x}", now.as_nanosecond()))
        );
        assert!(e.series.is_none());
        let mut cluster = obj("s");
        cluster.namespace = None;
        let e = p.build(&ev("Valid", "ok"), &cluster, now);
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
    }

    #[tokio::test]
    async fn repeats_become_a_series_and_memory_is_bounded() {
        let p = publisher();
        let t0 = Instant::now();
        let k = p.key(&ev("Updated", "x"), &obj("a"));
        assert_eq!(p.decide(k, t0), Next::Create);
        p.remember(k, "ns".into(), "a.1".into(), t0);
        // The note is not part of the key (as kube-runtime's Recorder).
        assert_eq!(k, p.key(&ev("Updated", "y"), &obj("a")));
        assert_ne!(k, p.key(&ev("Updated", "x"), &obj("b")));
        assert_ne!(k, p.key(&ev("Created", "x"), &obj("a")));
        assert_eq!(
            p.decide(k, t0),
            Next::Series {
                namespace: "ns".into(),
                name: "a.1".into(),
                count: 2
            }
        );
        assert!(matches!(p.decide(k, t0), Next::Series { count: 3, .. }));
        // Past the TTL: a new Event.
        assert_eq!(p.decide(k, t0 + SERIES_TTL), Next::Create);

        for i in 0..(MAX_REMEMBERED as u64 + 10) {
            p.remember(i + 1000, "ns".into(), format!("e{i}"), t0);
        }
        assert_eq!(lock(&p.memory).seen.len(), MAX_REMEMBERED);
        // Once the remembered ones expire, new ones fit again.
        p.remember(7, "ns".into(), "n".into(), t0 + SERIES_TTL);
        assert_eq!(lock(&p.memory).seen.len(), 1);
    }
}
