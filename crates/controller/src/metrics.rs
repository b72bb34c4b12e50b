//! Metrics with ESO's names and labels, so existing dashboards and alerts keep working, plus
//! refsync's own (`refsync_*`). Labels carry object names and bounded enums only: never a value.

use prometheus::{
    CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntGauge, Opts,
    Registry, TextEncoder,
};
use refsync_core::CallObserver;

/// Every metric the controller exports.
pub struct Metrics {
    pub registry: Registry,
    /// `externalsecret_sync_calls_total{name,namespace}`
    pub sync_calls_total: CounterVec,
    /// `externalsecret_sync_calls_error{name,namespace}` (ESO's name: no `_total`).
    pub sync_calls_error: CounterVec,
    /// `externalsecret_status_condition{name,namespace,condition,status}` (1 for the current
    /// status, 0 for the other).
    pub es_status_condition: GaugeVec,
    /// `externalsecret_reconcile_duration{name,namespace}` (seconds of the last reconcile).
    pub reconcile_duration: GaugeVec,
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
            sync_calls_total: counter(
                &r,
                "externalsecret_sync_calls_total",
                "Total number of the External Secret sync calls",
                nc,
            ),
            sync_calls_error: counter(
                &r,
                "externalsecret_sync_calls_error",
                "Total number of the External Secret sync errors",
                nc,
            ),
            es_status_condition: gauge(
                &r,
                "externalsecret_status_condition",
                "The status condition of a specific External Secret",
                c,
            ),
            reconcile_duration: gauge(
                &r,
                "externalsecret_reconcile_duration",
                "The duration time to reconcile the External Secret",
                nc,
            ),
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
        let (on, off) = if status {
            ("True", "False")
        } else {
            ("False", "True")
        };
        self.es_status_condition
            .with_label_values(&[name, namespace, condition, on])
            .set(1.0);
        self.es_status_condition
            .with_label_values(&[name, namespace, condition, off])
            .set(0.0);
    }

    /// Drops every series of a deleted ExternalSecret (conditions, duration, sync counters).
    pub fn forget_es(&self, name: &str, namespace: &str) {
        for cond in ["Ready", "Deleted"] {
            for st in ["True", "False"] {
                let _ = self
                    .es_status_condition
                    .remove_label_values(&[name, namespace, cond, st]);
            }
        }
        let _ = self
            .reconcile_duration
            .remove_label_values(&[name, namespace]);
        for per_es in [&self.sync_calls_total, &self.sync_calls_error] {
            let _ = per_es.remove_label_values(&[name, namespace]);
        }
    }

    /// The text exposition format for `/metrics`.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
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
        m.sync_calls_total.with_label_values(&["a", "ns"]).inc();
        m.sync_calls_error.with_label_values(&["a", "ns"]).inc();
        m.set_es_condition("a", "ns", "Ready", true);
        m.reconcile_duration
            .with_label_values(&["a", "ns"])
            .set(0.1);
        m.observe("HashiCorp/Vault", "ReadSecretData", true);
        let text = m.encode();
        for want in [
            "# TYPE externalsecret_sync_calls_total counter",
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
