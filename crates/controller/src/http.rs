//! Health and metrics endpoints: `/healthz` (the process serves requests), `/readyz` (the
//! caches are synced and the controllers started), `/metrics` (Prometheus text format).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::context::Context;

#[derive(Clone)]
struct HttpState {
    ctx: Arc<Context>,
    ready: Arc<AtomicBool>,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    export_fetch_stats(&s.ctx);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.ctx.metrics.encode(),
    )
}

/// Copies the fetch layer's counters into the `refsync_fetch_*` gauges.
pub fn export_fetch_stats(ctx: &Context) {
    use std::sync::atomic::Ordering::Relaxed;
    let f = &ctx.engine.fetcher;
    let m = &ctx.metrics;
    m.fetch_cache_entries
        .set(i64::try_from(f.cached_entries()).unwrap_or(i64::MAX));
    let hits = f.stats.cache_hits.load(Relaxed) + f.stats.inflight_hits.load(Relaxed);
    m.fetch_dedup_hits
        .set(i64::try_from(hits).unwrap_or(i64::MAX));
    m.fetch_provider_calls
        .set(i64::try_from(f.stats.provider_calls.load(Relaxed)).unwrap_or(i64::MAX));
}

fn health_routes() -> Router<HttpState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

fn metrics_routes() -> Router<HttpState> {
    Router::new().route("/metrics", get(metrics))
}

/// Binds both listeners (one when the addresses are equal) before returning, so a bad address
/// fails start-up; the returned future serves until `shutdown` resolves.
pub async fn serve(
    ctx: Arc<Context>,
    ready: Arc<AtomicBool>,
    metrics_addr: SocketAddr,
    health_addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + Clone + 'static,
) -> std::io::Result<impl Future<Output = ()> + Send> {
    let state = HttpState { ctx, ready };
    let mut servers = Vec::new();
    if metrics_addr == health_addr {
        let app = health_routes().merge(metrics_routes()).with_state(state);
        servers.push((tokio::net::TcpListener::bind(metrics_addr).await?, app));
    } else {
        let m = tokio::net::TcpListener::bind(metrics_addr).await?;
        let h = tokio::net::TcpListener::bind(health_addr).await?;
        servers.push((m, metrics_routes().with_state(state.clone())));
        servers.push((h, health_routes().with_state(state)));
    }
    for (l, _) in &servers {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(%addr, "serving HTTP");
        }
    }
    Ok(async move {
        let runs = servers.into_iter().map(|(listener, app)| {
            let shutdown = shutdown.clone();
            async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    tracing::error!(error = %e, "HTTP server failed");
                }
            }
        });
        futures::future::join_all(runs).await;
    })
}
