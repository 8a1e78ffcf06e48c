//! Operations endpoints of the control plane on port 8080: `/healthz` (the process serves),
//! `/readyz` (this replica leads and its controllers run) and Prometheus `/metrics`: reconciles
//! and errors per controller, backups by result, backup durations and bytes, Job failures.

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

/// Labels: controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `target`, `backupplan`, `backup`, …
    pub controller: String,
}

/// Labels: controller and error category.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The controller.
    pub controller: String,
    /// [`crate::error::Error::category`].
    pub category: String,
}

/// Labels: a backup's terminal result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `Available` or `Failed`.
    pub result: String,
}

/// Labels: the phase whose Job failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// The backup phase (`MetaSnapshot`, `DataUpload`, …) or `TargetValidation`.
    pub phase: String,
}

/// The control plane's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles run.
    pub reconciles: Family<ControllerLabels, Counter>,
    /// Failed reconciles.
    pub errors: Family<ErrorLabels, Counter>,
    /// Backups that reached a terminal state.
    pub backups: Family<ResultLabels, Counter>,
    /// Backup durations (start to terminal), seconds.
    pub backup_duration: Histogram,
    /// Bytes of volume data backed up.
    pub backup_bytes: Counter,
    /// Jobs that failed.
    pub job_failures: Family<JobLabels, Counter>,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tvk_control_plane");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let backups = Family::<ResultLabels, Counter>::default();
        let backup_duration = Histogram::new([
            10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0,
        ]);
        let backup_bytes = Counter::default();
        let job_failures = Family::<JobLabels, Counter>::default();
        registry.register("reconciles", "reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "failed reconciles by error category",
            errors.clone(),
        );
        registry.register(
            "backups",
            "backups that reached a terminal state, by result",
            backups.clone(),
        );
        registry.register(
            "backup_duration_seconds",
            "time from a backup's start to its terminal state",
            backup_duration.clone(),
        );
        registry.register(
            "backup_bytes",
            "bytes of volume data in Available backups",
            backup_bytes.clone(),
        );
        registry.register(
            "job_failures",
            "execution-layer Jobs that failed, by phase",
            job_failures.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            backups,
            backup_duration,
            backup_bytes,
            job_failures,
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    /// Records one reconcile of `controller`.
    pub fn observe(&self, controller: &str, error_category: Option<&str>) {
        self.reconciles
            .get_or_create(&ControllerLabels {
                controller: controller.to_string(),
            })
            .inc();
        if let Some(category) = error_category {
            self.errors
                .get_or_create(&ErrorLabels {
                    controller: controller.to_string(),
                    category: category.to_string(),
                })
                .inc();
        }
    }

    /// Records a backup that reached a terminal state.
    pub fn backup_finished(&self, result: &str, duration: Option<Duration>, bytes: u64) {
        self.backups
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
        if let Some(d) = duration {
            self.backup_duration.observe(d.as_secs_f64());
        }
        self.backup_bytes.inc_by(bytes);
    }

    /// Records a failed Job.
    pub fn job_failed(&self, phase: &str) {
        self.job_failures
            .get_or_create(&JobLabels {
                phase: phase.to_string(),
            })
            .inc();
    }

    /// Marks the control plane ready (leads, controllers started).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
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
                    (StatusCode::SERVICE_UNAVAILABLE, "not leading yet").into_response()
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
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use std::future::IntoFuture;

    use super::*;

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        text
    }

    #[tokio::test]
    async fn endpoints_answer_over_http() {
        let metrics = Arc::new(Metrics::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(axum::serve(listener, router(metrics.clone())).into_future());
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        metrics.set_ready(true);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        metrics.observe("backup", Some("JobFailed"));
        metrics.backup_finished("Available", Some(Duration::from_secs(42)), 4096);
        metrics.job_failed("DataUpload");
        let body = get(addr, "/metrics").await;
        for expected in [
            "tvk_control_plane_reconciles_total{controller=\"backup\"} 1",
            "tvk_control_plane_reconcile_errors_total{controller=\"backup\",category=\"JobFailed\"} 1",
            "tvk_control_plane_backups_total{result=\"Available\"} 1",
            "tvk_control_plane_backup_duration_seconds_count 1",
            "tvk_control_plane_backup_bytes_total 4096",
            "tvk_control_plane_job_failures_total{phase=\"DataUpload\"} 1",
        ] {
            assert!(body.contains(expected), "{expected} missing in\n{body}");
        }
    }
}
