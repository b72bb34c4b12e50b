//! The validating admission webhook (`refsync webhook`): ESO's `/validate-…` endpoints for
//! ExternalSecret, SecretStore, ClusterSecretStore and ClusterExternalSecret over TLS, with
//! certificates either managed here (generated, kept in a Secret, injected into the
//! ValidatingWebhookConfiguration, rotated) or provided as files (cert-manager) and reloaded.

pub mod certs;
pub mod review;
pub mod selfmanaged;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use prometheus::{CounterVec, Gauge, HistogramOpts, HistogramVec, IntCounter, Opts, Registry};
use refsync_core::ProviderRegistry;

use certs::{CertResolver, PemPair};
use review::Resource;
pub use selfmanaged::SelfManagedOptions;

/// Where the serving certificate comes from.
pub enum CertSource {
    /// Generated and rotated by the webhook itself.
    SelfManaged(Box<SelfManagedOptions>),
    /// `tls.crt` / `tls.key` in a directory (a mounted cert-manager Secret), re-read every
    /// `reload_interval`.
    Provided {
        dir: PathBuf,
        reload_interval: Duration,
    },
}

pub struct WebhookOptions {
    /// The HTTPS listener of the `/validate-…` endpoints.
    pub addr: SocketAddr,
    pub health_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub certs: CertSource,
    /// The providers this binary implements (stores naming others are refused).
    pub registry: ProviderRegistry,
}

/// The webhook's metrics: controller-runtime's webhook names (what ESO's webhook exports), and
/// refsync's certificate gauges.
pub struct WebhookMetrics {
    pub registry: Registry,
    /// `controller_runtime_webhook_requests_total{webhook,code}`
    pub requests: CounterVec,
    /// `controller_runtime_webhook_latency_seconds{webhook}`
    pub latency: HistogramVec,
    /// `refsync_webhook_denied_total{webhook}`
    pub denied: CounterVec,
    /// `refsync_webhook_certificate_expiry_timestamp_seconds`
    pub cert_expiry: Gauge,
    /// `refsync_webhook_certificate_writes_total`: certificates generated and stored.
    pub cert_rotations: IntCounter,
}

impl WebhookMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = CounterVec::new(
            Opts::new(
                "controller_runtime_webhook_requests_total",
                "Admission requests by webhook path and HTTP status code",
            ),
            &["webhook", "code"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "controller_runtime_webhook_latency_seconds",
                "Time to answer an admission request",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            &["webhook"],
        )
        .expect("valid metric");
        let denied = CounterVec::new(
            Opts::new("refsync_webhook_denied_total", "Admission requests refused"),
            &["webhook"],
        )
        .expect("valid metric");
        let cert_expiry = Gauge::new(
            "refsync_webhook_certificate_expiry_timestamp_seconds",
            "Expiry (Unix seconds) of the serving certificate",
        )
        .expect("valid metric");
        let cert_rotations = IntCounter::new(
            "refsync_webhook_certificate_writes_total",
            "Certificates generated and stored in the certificate Secret",
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(denied.clone()),
            Box::new(cert_expiry.clone()),
            Box::new(cert_rotations.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        WebhookMetrics {
            registry,
            requests,
            latency,
            denied,
            cert_expiry,
            cert_rotations,
        }
    }

    fn encode(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone)]
struct AppState {
    registry: Arc<ProviderRegistry>,
    metrics: Arc<WebhookMetrics>,
    resolver: Arc<CertResolver>,
}

/// The `/validate-…` routes (no TLS; [`run`] adds it).
fn validate_routes(state: AppState) -> Router {
    let mut r = Router::new();
    for res in Resource::ALL {
        r = r.route(
            &res.path(),
            post(
                move |State(s): State<AppState>, body: Bytes| async move { handle(res, &s, &body) },
            ),
        );
    }
    // An object is at most ~1.5 MiB in etcd; leave room for old + new object in one review.
    r.layer(DefaultBodyLimit::max(8 * 1024 * 1024))
        .with_state(state)
}

fn handle(res: Resource, s: &AppState, body: &[u8]) -> axum::response::Response {
    let started = Instant::now();
    let label = res.metric_label();
    let review: review::AdmissionReview = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            s.metrics.requests.with_label_values(&[label, "400"]).inc();
            return (
                StatusCode::BAD_REQUEST,
                format!("not an AdmissionReview: {e}"),
            )
                .into_response();
        }
    };
    let Some(req) = review.request else {
        s.metrics.requests.with_label_values(&[label, "400"]).inc();
        return (StatusCode::BAD_REQUEST, "AdmissionReview without request").into_response();
    };
    let verdict = review::decide(res, &req, &s.registry);
    if !verdict.allowed {
        s.metrics.denied.with_label_values(&[label]).inc();
        tracing::info!(webhook = label, uid = %req.uid, reason = %verdict.message,
            "admission refused");
    }
    let out = review::response(&review.api_version, &req.uid, &verdict);
    s.metrics.requests.with_label_values(&[label, "200"]).inc();
    s.metrics
        .latency
        .with_label_values(&[label])
        .observe(started.elapsed().as_secs_f64());
    axum::Json(out).into_response()
}

fn health_routes(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<AppState>| async move {
                if s.resolver.is_loaded() {
                    (StatusCode::OK, "ok")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no serving certificate yet",
                    )
                }
            }),
        )
        .with_state(state)
}

fn metrics_routes(state: AppState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<AppState>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    s.metrics.encode(),
                )
            }),
        )
        .with_state(state)
}

/// Runs the webhook until `shutdown` resolves. Binds every listener before serving, so a bad
/// address fails at once.
pub async fn run(
    opts: WebhookOptions,
    shutdown: impl Future<Output = ()> + Send + Clone + 'static,
) -> anyhow::Result<()> {
    let resolver = Arc::new(CertResolver::default());
    let metrics = Arc::new(WebhookMetrics::new());
    let state = AppState {
        registry: Arc::new(opts.registry),
        metrics: metrics.clone(),
        resolver: resolver.clone(),
    };
    let tls = tokio::net::TcpListener::bind(opts.addr)
        .await
        .with_context(|| format!("bind --port/--bind {}", opts.addr))?;
    let mut plain = Vec::new();
    if opts.metrics_addr == opts.health_addr {
        let app = health_routes(state.clone()).merge(metrics_routes(state.clone()));
        plain.push((bind(opts.health_addr, "--health-addr").await?, app));
    } else {
        plain.push((
            bind(opts.health_addr, "--health-addr").await?,
            health_routes(state.clone()),
        ));
        plain.push((
            bind(opts.metrics_addr, "--metrics-addr").await?,
            metrics_routes(state.clone()),
        ));
    }
    tracing::info!(addr = %tls.local_addr()?, "serving the admission webhook (HTTPS)");

    let certs_task: tokio::task::JoinHandle<()> = match opts.certs {
        CertSource::SelfManaged(sm) => tokio::spawn(selfmanaged::run(
            *sm,
            resolver.clone(),
            metrics.clone(),
            shutdown.clone(),
        )),
        CertSource::Provided {
            dir,
            reload_interval,
        } => tokio::spawn(watch_provided(
            dir,
            reload_interval,
            resolver.clone(),
            metrics.clone(),
            shutdown.clone(),
        )),
    };
    let mut servers = Vec::new();
    for (listener, app) in plain {
        let sd = shutdown.clone();
        servers.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(sd).await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        }));
    }
    serve_tls(tls, validate_routes(state), resolver, shutdown).await;
    for s in servers {
        let _ = s.await;
    }
    certs_task.abort();
    Ok(())
}

async fn bind(addr: SocketAddr, flag: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {flag} {addr}"))
}

/// Accepts TLS connections and serves `app` over HTTP/1.1 on each. When the certificate is
/// replaced, open connections are closed gracefully so clients reconnect and see it.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    resolver: Arc<CertResolver>,
    shutdown: impl Future<Output = ()> + Send + Clone + 'static,
) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = match rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b.with_no_client_auth().with_cert_resolver(resolver.clone()),
        Err(e) => {
            tracing::error!(error = %e, "TLS configuration failed");
            return;
        }
    };
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let mut stop = std::pin::pin!(shutdown.clone());
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => return,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let mut rotated = resolver.subscribe();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
            let mut conn = std::pin::pin!(conn);
            let mut shutdown = std::pin::pin!(shutdown);
            let mut closing = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(%peer, error = %e, "connection ended");
                        }
                        return;
                    }
                    r = rotated.changed(), if !closing => {
                        let _ = r;
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    _ = &mut shutdown, if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
}

/// Provided mode: loads `tls.crt` / `tls.key` from `dir` and reloads them when they change
/// (cert-manager renews the Secret, the kubelet updates the mount). A bad pair is reported
/// and the previous one kept.
async fn watch_provided(
    dir: PathBuf,
    interval: Duration,
    resolver: Arc<CertResolver>,
    metrics: Arc<WebhookMetrics>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_error = String::new();
    loop {
        let read = async {
            let cert = tokio::fs::read_to_string(dir.join("tls.crt"))
                .await
                .with_context(|| format!("read {}", dir.join("tls.crt").display()))?;
            let key = tokio::fs::read_to_string(dir.join("tls.key"))
                .await
                .with_context(|| format!("read {}", dir.join("tls.key").display()))?;
            let pair = PemPair { cert, key };
            let changed = resolver.set(&pair)?;
            anyhow::Ok((pair, changed))
        };
        match read.await {
            Ok((pair, changed)) => {
                last_error.clear();
                if changed {
                    tracing::info!(dir = %dir.display(), "loaded the serving certificate");
                    if let Ok(info) = certs::inspect(&pair.cert) {
                        metrics.cert_expiry.set(info.not_after as f64);
                    }
                }
            }
            Err(e) => {
                let msg = format!("{e:#}");
                if msg != last_error {
                    tracing::error!(error = %msg, "cannot load the serving certificate");
                    last_error = msg;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = &mut shutdown => return,
        }
    }
}
