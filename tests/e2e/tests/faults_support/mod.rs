//! Helpers of the fault-matrix test: a TCP proxy that delays responses, snapshots of the target
//! Secrets and the apiserver's own count of Secret writes.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ListParams};
use refsync_api::ExternalSecret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// A TCP proxy on 127.0.0.1 in front of `upstream`: requests pass at once, every chunk of the
/// response is held until it is `delay` old (checked every 50 ms, so lowering the delay releases
/// what is held). With the upstream down, connections are accepted and closed at once.
pub struct SlowProxy {
    port: u16,
    delay_ms: Arc<AtomicU64>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl SlowProxy {
    /// `upstream`: `http://127.0.0.1:PORT` or `127.0.0.1:PORT`.
    pub async fn start(upstream: &str) -> SlowProxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (delay, all) = (delay_ms.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let (upstream, delay) = (upstream.clone(), delay.clone());
                let conn = tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return; // upstream down: the client sees the connection closed
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (mut cr, mut cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = async move {
                        let mut sw = sw;
                        let _ = tokio::io::copy(&mut cr, &mut sw).await;
                        let _ = sw.shutdown().await;
                    };
                    let down = async move {
                        let mut sr = sr;
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match sr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let arrived = Instant::now();
                            loop {
                                let due =
                                    arrived + Duration::from_millis(delay.load(Ordering::Relaxed));
                                let now = Instant::now();
                                if now >= due {
                                    break;
                                }
                                tokio::time::sleep((due - now).min(Duration::from_millis(50)))
                                    .await;
                            }
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = cw.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
                let mut all = all.lock().unwrap();
                all.retain(|t| !t.is_finished());
                all.push(conn.abort_handle());
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
        SlowProxy {
            port,
            delay_ms,
            tasks,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::Relaxed);
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// Target Secret name → (data, resourceVersion).
pub type Snapshot = BTreeMap<String, (BTreeMap<String, Vec<u8>>, String)>;

/// Every Secret in `ns` (retrying while the apiserver does not answer).
pub async fn snapshot(client: &Client, ns: &str) -> Snapshot {
    let api = Api::<Secret>::namespaced(client.clone(), ns);
    let t0 = Instant::now();
    let list = loop {
        match api.list(&ListParams::default()).await {
            Ok(l) => break l,
            Err(e) => {
                assert!(t0.elapsed() < Duration::from_secs(60), "list Secrets: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    list.items
        .into_iter()
        .map(|s| {
            let data = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            (
                s.metadata.name.unwrap_or_default(),
                (data, s.metadata.resource_version.unwrap_or_default()),
            )
        })
        .collect()
}

/// What changed between two snapshots: `(deleted, data changed, resourceVersion changed)`.
pub fn diff(before: &Snapshot, after: &Snapshot) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut deleted, mut changed, mut written) = (vec![], vec![], vec![]);
    for (name, (data, rv)) in before {
        match after.get(name) {
            None => deleted.push(name.clone()),
            Some((d, r)) => {
                if d != data {
                    changed.push(name.clone());
                }
                if r != rv {
                    written.push(name.clone());
                }
            }
        }
    }
    (deleted, changed, written)
}

/// The kube-apiserver's own count of write requests on Secrets (POST/PUT/PATCH/APPLY/DELETE, every
/// response code) from `apiserver_request_total`.
pub fn secret_write_requests(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| l.contains("resource=\"secrets\""))
        .filter(|l| {
            [
                "POST",
                "PUT",
                "PATCH",
                "APPLY",
                "DELETE",
                "DELETECOLLECTION",
            ]
            .iter()
            .any(|v| l.contains(&format!("verb=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// `(Ready status, refreshTime)` of every ExternalSecret in `ns`, or `None` while the apiserver
/// does not answer.
pub async fn es_states(client: &Client, ns: &str) -> Option<BTreeMap<String, (String, String)>> {
    let list = Api::<ExternalSecret>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .ok()?;
    Some(
        list.items
            .into_iter()
            .map(|es| {
                let st = es.status.unwrap_or_default();
                let ready = st
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Ready")
                    .map(|c| c.status.clone())
                    .unwrap_or_default();
                (
                    es.metadata.name.unwrap_or_default(),
                    (ready, st.refresh_time.unwrap_or_default()),
                )
            })
            .collect(),
    )
}

/// Whether a `refreshTime` is at or after `since` (whole seconds, as the status stores it).
pub fn refreshed_since(refresh_time: &str, since: Timestamp) -> bool {
    refresh_time
        .parse::<Timestamp>()
        .is_ok_and(|t| t.as_second() >= since.as_second())
}
