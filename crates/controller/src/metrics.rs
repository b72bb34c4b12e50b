//! Metrics with ESO's names and labels, so existing dashboards and alerts keep working, plus
//! refsync's own (`refsync_*`). Labels carry object names and bounded enums only: never a value.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use prometheus::{
    CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntGauge, Opts,
    Registry, TextEncoder,
};
use refsync_core::CallObserver;

/// Every metric the controller exports.
pub struct Metrics {
    pub registry: Registry,
    /// The per-ExternalSecret series (`externalsecret_sync_calls_total`,
    /// `externalsecret_sync_calls_error`, `externalsecret_status_condition`,
    /// `externalsecret_reconcile_duration`): see [`PerEs`].
    per_es: PerEs,
    /// `externalsecret_provider_api_calls_count{provider,call,status}` (ESO's name).
    pub provider_api_calls: CounterVec,
    /// `secretstore_status_condition{name,namespace,condition,status}`
    pub secretstore_status_condition: GaugeVec,
    /// `clustersecretstore_status_condition{name,condition,status}`
    pub clustersecretstore_status_condition: GaugeVec,
    /// `clusterexternalsecret_status_condition{name,condition,status}`
    pub clusterexternalsecret_status_condition: GaugeVec,
    /// `clusterexternalsecret_reconcile_duration{name,namespace}` (seconds of the last
    /// reconcile; `namespace` is empty, as ESO's).
    pub clusterexternalsecret_reconcile_duration: GaugeVec,
    /// `refsync_reconcile_seconds{controller}`: reconcile latency distribution.
    pub reconcile_seconds: HistogramVec,
    /// `refsync_reconcile_errors_total{controller,kind}`: failures by error kind.
    pub reconcile_errors: CounterVec,
    /// `refsync_secret_writes_total{operation}`: apiserver writes (apply, delete, status).
    pub secret_writes: CounterVec,
    /// `refsync_secret_writes_skipped_total`: syncs whose Secret was already up to date.
    pub secret_writes_skipped: IntCounter,
    /// `refsync_fetch_cache_entries`
    pub fetch_cache_entries: IntGauge,
    /// `refsync_fetch_dedup_hits_total`: reads served by the window cache or a call in flight.
    pub fetch_dedup_hits: IntGauge,
    /// `refsync_provider_calls_total`: calls the fetch layer made to providers.
    pub fetch_provider_calls: IntGauge,
    /// `refsync_leader`: 1 while this replica holds the lease.
    pub leader: IntGauge,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> CounterVec {
    let c = CounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

impl Metrics {
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let r = Registry::new();
        let nc = &["name", "namespace"];
        let c = &["name", "namespace", "condition", "status"];
        let reconcile_seconds = HistogramVec::new(
            HistogramOpts::new("refsync_reconcile_seconds", "Reconcile latency").buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["controller"],
        )
        .expect("valid metric");
        r.register(Box::new(reconcile_seconds.clone()))
            .expect("unique metric");
        let int_gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            r.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let skipped = IntCounter::new(
            "refsync_secret_writes_skipped_total",
            "Syncs whose Secret was already up to date",
        )
        .expect("valid metric");
        r.register(Box::new(skipped.clone()))
            .expect("unique metric");
        // Memory and CPU of the controller itself (`process_resident_memory_bytes`,
        // `process_cpu_seconds_total`, ...), read from /proc.
        #[cfg(target_os = "linux")]
        let _ = r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        Metrics {
            per_es: PerEs::default(),
            provider_api_calls: counter(
                &r,
                "externalsecret_provider_api_calls_count",
                "Number of API calls towards the secret provider",
                &["provider", "call", "status"],
            ),
            secretstore_status_condition: gauge(
                &r,
                "secretstore_status_condition",
                "The status condition of a specific SecretStore",
                c,
            ),
            clustersecretstore_status_condition: gauge(
                &r,
                "clustersecretstore_status_condition",
                "The status condition of a specific ClusterSecretStore",
                &["name", "condition", "status"],
            ),
            clusterexternalsecret_status_condition: gauge(
                &r,
                "clusterexternalsecret_status_condition",
                "The status condition of a specific ClusterExternalSecret",
                &["name", "condition", "status"],
            ),
            clusterexternalsecret_reconcile_duration: gauge(
                &r,
                "clusterexternalsecret_reconcile_duration",
                "The duration time to reconcile the Cluster External Secret",
                nc,
            ),
            reconcile_seconds,
            reconcile_errors: counter(
                &r,
                "refsync_reconcile_errors_total",
                "Reconcile failures by error kind",
                &["controller", "kind"],
            ),
            secret_writes: counter(
                &r,
                "refsync_secret_writes_total",
                "Writes sent to the apiserver",
                &["operation"],
            ),
            secret_writes_skipped: skipped,
            fetch_cache_entries: int_gauge(
                "refsync_fetch_cache_entries",
                "Remote values kept for the refresh window",
            ),
            fetch_dedup_hits: int_gauge(
                "refsync_fetch_dedup_hits_total",
                "Reads served by the window cache or by a call in flight",
            ),
            fetch_provider_calls: int_gauge(
                "refsync_provider_calls_total",
                "Calls the fetch layer made to providers",
            ),
            leader: int_gauge(
                "refsync_leader",
                "1 while this replica holds the leader lease",
            ),
            registry: r,
        }
    }

    /// Sets ESO's condition gauge pair: the current status 1, the opposite 0.
    pub fn set_es_condition(&self, name: &str, namespace: &str, condition: &str, status: bool) {
        self.per_es.update(name, namespace, |s| {
            match s.conditions.iter_mut().find(|(c, _)| &**c == condition) {
                Some((_, v)) => *v = status,
                None => s.conditions.push((condition.into(), status)),
            }
        });
    }

    /// One reconcile of an ExternalSecret: `externalsecret_sync_calls_total` + 1 and
    /// `externalsecret_reconcile_duration` set to `secs`.
    pub fn es_reconciled(&self, name: &str, namespace: &str, secs: f64) {
        self.per_es.update(name, namespace, |s| {
            s.calls = Some(s.calls.unwrap_or(0).saturating_add(1));
            s.duration = Some(secs);
        });
    }

    /// `externalsecret_sync_calls_error` + 1.
    pub fn es_sync_error(&self, name: &str, namespace: &str) {
        self.per_es.update(name, namespace, |s| {
            s.errors = Some(s.errors.unwrap_or(0).saturating_add(1));
        });
    }

    /// Drops every series of a deleted ExternalSecret (conditions, duration, sync counters).
    pub fn forget_es(&self, name: &str, namespace: &str) {
        lock(&self.per_es.series).remove(&PerEs::key(name, namespace));
    }

    /// The text exposition format for `/metrics`.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        let mut text = String::from_utf8(buf).unwrap_or_default();
        self.per_es.encode(&mut text);
        text
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One ExternalSecret's series (each absent until first set, as a labelled series of the
/// `prometheus` crate).
#[derive(Debug, Default)]
struct EsSeries {
    calls: Option<u64>,
    errors: Option<u64>,
    duration: Option<f64>,
    conditions: Vec<(Box<str>, bool)>,
}

/// The per-ExternalSecret families, kept as one small record per ExternalSecret and written
/// straight to the text format. (As `prometheus` vectors, each of the four series would hold
/// its own copy of the family's descriptor and label pairs, ~1 KiB a series: ~35 MiB at
/// 10,000 ExternalSecrets, plus a protobuf copy of all of them at every scrape.)
#[derive(Debug, Default)]
struct PerEs {
    /// By `namespace/name`.
    series: Mutex<HashMap<Box<str>, EsSeries>>,
}

/// `\`, `"` and newlines escaped, as the text format wants label values.
fn escape_label(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return v.into();
    }
    let mut out = String::with_capacity(v.len() + 8);
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.into()
}

impl PerEs {
    fn key(name: &str, namespace: &str) -> Box<str> {
        format!("{namespace}/{name}").into_boxed_str()
    }

    fn update(&self, name: &str, namespace: &str, f: impl FnOnce(&mut EsSeries)) {
        let mut map = lock(&self.series);
        f(map.entry(Self::key(name, namespace)).or_default());
    }

    /// Appends the four families (those with at least one series) in the text format.
    fn encode(&self, out: &mut String) {
        let map = lock(&self.series);
        // (name, namespace, series), in the order `prometheus` sorts series: by label values.
        let mut rows: Vec<(&str, &str, &EsSeries)> = map
            .iter()
            .map(|(k, s)| {
                let (ns, name) = k.split_once('/').unwrap_or(("", k));
                (name, ns, s)
            })
            .collect();
        rows.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let header = |out: &mut String, name: &str, help: &str, kind: &str| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        };
        let simple = |out: &mut String,
                      metric: &str,
                      help: &str,
                      kind: &str,
                      value: &dyn Fn(&EsSeries) -> Option<f64>| {
            let mut first = true;
            for (name, ns, s) in &rows {
                let Some(v) = value(s) else { continue };
                if std::mem::take(&mut first) {
                    header(out, metric, help, kind);
                }
                let _ = writeln!(
                    out,
                    "{metric}{{name=\"{}\",namespace=\"{}\"}} {v}",
                    escape_label(name),
                    escape_label(ns)
                );
            }
        };
        simple(
            out,
            "externalsecret_reconcile_duration",
            "The duration time to reconcile the External Secret",
            "gauge",
            &|s| s.duration,
        );
        let mut first = true;
        let mut conds: Vec<(&str, &str, &str, bool)> = rows
            .iter()
            .flat_map(|(name, ns, s)| {
                s.conditions
                    .iter()
                    .map(move |(c, v)| (&**c, *name, *ns, *v))
            })
            .collect();
        conds.sort_unstable_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        for (cond, name, ns, status) in conds {
            if std::mem::take(&mut first) {
                header(
                    out,
                    "externalsecret_status_condition",
                    "The status condition of a specific External Secret",
                    "gauge",
                );
            }
            let (name, ns, cond) = (escape_label(name), escape_label(ns), escape_label(cond));
            for (st, on) in [("False", !status), ("True", status)] {
                let _ = writeln!(
                    out,
                    "externalsecret_status_condition{{condition=\"{cond}\",name=\"{name}\",namespace=\"{ns}\",status=\"{st}\"}} {}",
                    if on { 1 } else { 0 }
                );
            }
        }
        simple(
            out,
            "externalsecret_sync_calls_error",
            "Total number of the External Secret sync errors",
            "counter",
            &|s| s.errors.map(|v| v as f64),
        );
        simple(
            out,
            "externalsecret_sync_calls_total",
            "Total number of the External Secret sync calls",
            "counter",
            &|s| s.calls.map(|v| v as f64),
        );
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CallObserver for Metrics {
    fn observe(&self, provider: &'static str, call: &'static str, ok: bool) {
        self.provider_api_calls
            .with_label_values(&[provider, call, if ok { "success" } else { "error" }])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eso_names_are_exported_verbatim() {
        let m = Metrics::new();
        m.es_reconciled("a", "ns", 0.1);
        m.es_sync_error("a", "ns");
        m.set_es_condition("a", "ns", "Ready", true);
        m.observe("HashiCorp/Vault", "ReadSecretData", true);
        let text = m.encode();
        for want in [
            "# TYPE externalsecret_sync_calls_total counter",
            "externalsecret_sync_calls_total{name=\"a\",namespace=\"ns\"} 1",
            "# TYPE externalsecret_reconcile_duration gauge",
            "externalsecret_reconcile_duration{name=\"a\",namespace=\"ns\"} 0.1",
            "# TYPE externalsecret_sync_calls_error counter",
            "externalsecret_sync_calls_error{name=\"a\",namespace=\"ns\"} 1",
            "externalsecret_status_condition{condition=\"Ready\",name=\"a\",namespace=\"ns\",status=\"True\"} 1",
            "externalsecret_status_condition{condition=\"Ready\",name=\"a\",namespace=\"ns\",status=\"False\"} 0",
            "# TYPE externalsecret_provider_api_calls_count counter",
            "externalsecret_provider_api_calls_count{call=\"ReadSecretData\",provider=\"HashiCorp/Vault\",status=\"success\"} 1",
            "# TYPE process_resident_memory_bytes gauge",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        m.forget_es("a", "ns");
        let text = m.encode();
        assert!(!text.contains("externalsecret_status_condition{"));
        assert!(!text.contains("externalsecret_sync_calls_error{"));
    }
}
