//! Operations endpoints of the running manager: `/healthz` (the process serves), `/readyz` (the
//! controller has started), and Prometheus `/metrics` (reconciles, errors by category, reconcile
//! durations).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

/// Labels of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Error category ([`crate::reconcile::Error::category`]).
    pub category: String,
}

/// The manager's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles run.
    pub reconciles: Counter,
    /// Failed reconciles by category.
    pub errors: Family<ErrorLabels, Counter>,
    /// Reconcile durations in seconds.
    pub duration: Histogram,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tvk_manager");
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]);
        registry.register(
            "reconciles",
            "TrilioVaultManager reconciles run",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "failed reconciles by error category",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "duration of one reconcile",
            duration.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    /// Records one reconcile.
    pub fn observe(&self, elapsed: Duration, error_category: Option<&str>) {
        self.reconciles.inc();
        self.duration.observe(elapsed.as_secs_f64());
        if let Some(category) = error_category {
            self.errors
                .get_or_create(&ErrorLabels {
                    category: category.to_string(),
                })
                .inc();
        }
    }

    /// Marks the manager ready (controller started).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The operations router.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(m): State<Arc<Metrics>>| async move {
                if m.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready").into_response()
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response()
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.encode(),
                )
            }),
        )
        .with_state(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endpoints_answer_over_http() {
        let metrics = Arc::new(Metrics::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(metrics.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let get = |path: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream
                .write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
            let mut text = String::new();
            stream.read_to_string(&mut text).await.unwrap();
            text
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/readyz").await.starts_with("HTTP/1.1 503"));
        metrics.set_ready();
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        metrics.observe(Duration::from_millis(20), Some("ApplyError"));
        let body = get("/metrics").await;
        assert!(body.contains("tvk_manager_reconciles_total 1"), "{body}");
        assert!(
            body.contains("tvk_manager_reconcile_errors_total{category=\"ApplyError\"} 1"),
            "{body}"
        );
        assert!(
            body.contains("tvk_manager_reconcile_duration_seconds_count 1"),
            "{body}"
        );
    }
}
