//! Operations endpoints of the running manager: `/healthz` (the process serves), `/readyz` (the
//! manager is running — leading or standing by for the lease — and, when its admission webhook is
//! on, a serving certificate is loaded, so the webhook Service only routes to replicas that can
//! answer), and Prometheus `/metrics` (reconciles, errors by category, reconcile durations, and the
//! webhook's `tvk_manager_webhook_*` admission metrics).

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tvk_webhook::{metrics::WebhookMetrics, tls::ServingCertificate};

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
    /// Metrics of the TrilioVaultManager admission webhook.
    pub webhook: Arc<WebhookMetrics>,
    ready: AtomicBool,
    webhook_certificate: OnceLock<Arc<ServingCertificate>>,
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
        let webhook = Arc::new(WebhookMetrics::new());
        webhook.register_in(registry.sub_registry_with_prefix("webhook"));
        Self {
            registry,
            reconciles,
            errors,
            duration,
            webhook,
            ready: AtomicBool::new(false),
            webhook_certificate: OnceLock::new(),
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

    /// Marks the manager running (leading, or standing by for the lease).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// Makes readiness also wait for the admission webhook's serving certificate.
    pub fn require_webhook_certificate(&self, certificate: Arc<ServingCertificate>) {
        let _ = self.webhook_certificate.set(certificate);
    }

    /// Whether `/readyz` answers 200, and if not, why.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if !self.ready.load(Ordering::Relaxed) {
            return Err("starting");
        }
        match self.webhook_certificate.get() {
            Some(certificate) if !certificate.is_loaded() => Err(
                "no webhook serving certificate loaded yet (see the log; check --webhook-cert-dir or --webhook-self-signed)",
            ),
            _ => Ok(()),
        }
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
                match m.readiness() {
                    Ok(()) => (StatusCode::OK, "ready").into_response(),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
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
        let certificate = Arc::new(ServingCertificate::new());
        metrics.require_webhook_certificate(certificate.clone());
        let not_ready = get("/readyz").await;
        assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
        assert!(
            not_ready.contains("webhook serving certificate"),
            "{not_ready}"
        );
        metrics.webhook.observe_certificate_reload(true);
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
        assert!(
            body.contains("tvk_manager_webhook_certificate_reloads_total{result=\"success\"} 1"),
            "{body}"
        );
    }
}
