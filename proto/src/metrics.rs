//! The listener `wardd` and `ward-coordinator` serve their Prometheus
//! metrics and health check on: plain HTTP on an address of its own
//! (`[metrics] listen`), `/metrics` in the Prometheus text format (0.0.4,
//! which every Prometheus scrapes and `promtool check metrics` lints) and
//! `/healthz`, nothing else.

use std::{future::Future, net::SocketAddr};

use axum::{
    Router,
    http::{
        StatusCode,
        header::{self, HeaderName},
    },
    routing::get,
};

/// The content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds `listen` (`ADDR:PORT`); the error names the setting.
pub async fn bind(listen: &str) -> std::io::Result<tokio::net::TcpListener> {
    let addr: SocketAddr = listen.parse().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("metrics.listen `{listen}` is not ADDR:PORT"),
        )
    })?;
    tokio::net::TcpListener::bind(addr).await
}

type Answer = (StatusCode, [(HeaderName, &'static str); 1], String);

fn answer(result: Result<String, String>, content_type: &'static str) -> Answer {
    match result {
        Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{why}\n"),
        ),
    }
}

/// Serves until the listener fails: `/metrics` answers `scrape()`'s
/// exposition (503 with its error), `/healthz` 200 `ok` when `health()`
/// is `Ok` (503 with why).
pub async fn serve<S, SF, H, HF>(
    listener: tokio::net::TcpListener,
    scrape: S,
    health: H,
) -> std::io::Result<()>
where
    S: Fn() -> SF + Clone + Send + Sync + 'static,
    SF: Future<Output = Result<String, String>> + Send,
    H: Fn() -> HF + Clone + Send + Sync + 'static,
    HF: Future<Output = Result<(), String>> + Send,
{
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let scrape = scrape.clone();
                async move { answer(scrape().await, PROMETHEUS_TEXT) }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let health = health.clone();
                async move {
                    let ok = health().await.map(|()| "ok\n".to_owned());
                    answer(ok, "text/plain; charset=utf-8")
                }
            }),
        );
    axum::serve(listener, app).await
}
