//! What the benchmark observes: ExternalSecrets Ready over time (a watch, sampled every
//! 250 ms), Prometheus text metrics (the apiserver's, the controller's, OpenBao's) and
//! force-sync latency.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher;

use crate::workload::es_resource;

/// Whether an ExternalSecret has `Ready=True`.
pub fn is_ready(obj: &DynamicObject) -> bool {
    obj.data
        .pointer("/status/conditions")
        .and_then(|c| c.as_array())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Ready ExternalSecrets, kept current by a watch on all namespaces.
pub struct ReadyWatch {
    ready: Arc<Mutex<HashMap<String, bool>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReadyWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ReadyWatch {
    /// Starts the watch and returns once its initial list is in.
    pub async fn start(client: &Client) -> anyhow::Result<ReadyWatch> {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &es_resource());
        let ready: Arc<Mutex<HashMap<String, bool>>> = Arc::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let state = ready.clone();
        let task = tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut init: HashMap<String, bool> = HashMap::new();
            let mut stream = watcher(api, watcher::Config::default()).boxed();
            while let Some(ev) = stream.next().await {
                let key = |o: &DynamicObject| {
                    format!(
                        "{}/{}",
                        o.metadata.namespace.as_deref().unwrap_or_default(),
                        o.metadata.name.as_deref().unwrap_or_default()
                    )
                };
                match ev {
                    Ok(watcher::Event::Apply(o)) => {
                        let r = is_ready(&o);
                        state
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(key(&o), r);
                    }
                    Ok(watcher::Event::Delete(o)) => {
                        state
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&key(&o));
                    }
                    Ok(watcher::Event::Init) => init.clear(),
                    Ok(watcher::Event::InitApply(o)) => {
                        init.insert(key(&o), is_ready(&o));
                    }
                    Ok(watcher::Event::InitDone) => {
                        *state.lock().unwrap_or_else(|e| e.into_inner()) =
                            std::mem::take(&mut init);
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Err(e) => {
                        eprintln!("  ExternalSecret watch: {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(120), rx)
            .await
            .map_err(|_| anyhow::anyhow!("ExternalSecret watch: no initial list within 120 s"))??;
        Ok(ReadyWatch { ready, task })
    }

    pub fn ready(&self) -> usize {
        self.ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|r| **r)
            .count()
    }
}

/// Samples the ready count every 250 ms from `t0` until `n` are Ready or `timeout` passes.
/// Returns the samples `(seconds, ready)` and the time all were Ready.
pub async fn wait_all_ready(
    watch: &ReadyWatch,
    t0: Instant,
    n: usize,
    timeout: Duration,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(Vec<(f64, usize)>, Option<f64>)> {
    let mut samples = Vec::new();
    let mut last_print = Instant::now();
    loop {
        let ready = watch.ready();
        let t = t0.elapsed().as_secs_f64();
        samples.push((t, ready));
        if ready >= n {
            return Ok((samples, Some(t)));
        }
        if t0.elapsed() > timeout {
            return Ok((samples, None));
        }
        alive()?;
        if last_print.elapsed() > Duration::from_secs(10) {
            eprintln!("  {t:.0} s: {ready}/{n} Ready");
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Sum of the samples of `name` whose labels include all of `labels`, and every sample of
/// `name` grouped by the values of `by` (joined with a space).
pub fn metric_by(text: &str, name: &str, by: &[&str]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = if let Some(r) = rest.strip_prefix('{') {
            match r.rsplit_once('}') {
                Some(x) => x,
                None => continue,
            }
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue;
        };
        let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        let parsed = parse_labels(labels);
        let key = by
            .iter()
            .map(|b| parsed.get(*b).cloned().unwrap_or_default())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        *out.entry(key).or_insert(0.0) += v;
    }
    out
}

fn parse_labels(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s;
    while let Some((k, r)) = rest.split_once("=\"") {
        let mut val = String::new();
        let mut chars = r.char_indices();
        let mut end = r.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        val.push(n);
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => val.push(c),
            }
        }
        out.insert(k.trim_start_matches(',').trim().to_string(), val);
        rest = &r[end..];
    }
    out
}

pub fn metric_total(text: &str, name: &str) -> f64 {
    metric_by(text, name, &[]).values().sum()
}

/// `after - before` per key, zero entries dropped.
pub fn diff(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

/// The apiserver's `apiserver_request_total` by `verb resource subresource`.
pub async fn apiserver_requests(client: &Client) -> anyhow::Result<BTreeMap<String, f64>> {
    let req = http_get("/metrics")?;
    let text = client.request_text(req).await?;
    Ok(metric_by(
        &text,
        "apiserver_request_total",
        &["verb", "resource", "subresource"],
    ))
}

fn http_get(path: &str) -> anyhow::Result<http::Request<Vec<u8>>> {
    Ok(http::Request::get(path).body(Vec::new())?)
}

/// GET a Prometheus text endpoint.
pub async fn scrape(url: &str) -> anyhow::Result<String> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// p-th percentile (nearest rank) of `xs` (sorted in place).
pub fn percentile(xs: &mut [f64], p: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * xs.len() as f64).ceil().max(1.0) as usize;
    Some(xs[rank.min(xs.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_by_groups_labels() {
        let text = "# HELP x\n\
            apiserver_request_total{code=\"201\",component=\"apiserver\",resource=\"secrets\",subresource=\"\",verb=\"POST\"} 3\n\
            apiserver_request_total{code=\"409\",component=\"apiserver\",resource=\"secrets\",subresource=\"\",verb=\"POST\"} 1\n\
            apiserver_request_total{code=\"200\",resource=\"externalsecrets\",subresource=\"status\",verb=\"PATCH\"} 2\n\
            apiserver_request_total_other 9\n";
        let m = metric_by(
            text,
            "apiserver_request_total",
            &["verb", "resource", "subresource"],
        );
        assert_eq!(m.get("POST secrets"), Some(&4.0));
        assert_eq!(m.get("PATCH externalsecrets status"), Some(&2.0));
        assert_eq!(m.len(), 2);
        assert_eq!(metric_total(text, "apiserver_request_total"), 6.0);
    }

    #[test]
    fn percentiles() {
        let mut xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut xs, 50.0), Some(50.0));
        assert_eq!(percentile(&mut xs, 99.0), Some(99.0));
        assert_eq!(percentile(&mut [], 50.0), None);
    }
}
