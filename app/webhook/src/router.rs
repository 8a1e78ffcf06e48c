//! The HTTP routers: admission endpoints (served over TLS) and operations endpoints (plain HTTP).

use std::{sync::Arc, time::Instant};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{
        DefaultBodyLimit, State,
        rejection::{BytesRejection, FailedToBufferBody},
    },
    http::{StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tracing::{debug, info, warn};
use tvk_api::admission::{AdmissionRegistry, GroupVersionKind};

use crate::{
    cluster_rules::ClusterRuleSet,
    metrics::WebhookMetrics,
    paths::{WebhookKind, webhook_path},
    review::{Verdict, review_with_rules, wire_review},
    tls::ServingCertificate,
};

/// The default cap on an AdmissionReview body. The API server caps objects at ~1.5 MiB, and an
/// UPDATE carries two of them plus the envelope.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug)]
struct AdmissionState {
    registry: Arc<AdmissionRegistry>,
    rules: ClusterRuleSet,
    metrics: Arc<WebhookMetrics>,
    max_body_bytes: usize,
    paths: Vec<String>,
}

/// `POST /validate-…` and `POST /mutate-…` for every kind of `registry`.
pub fn admission_router(
    registry: Arc<AdmissionRegistry>,
    metrics: Arc<WebhookMetrics>,
    max_body_bytes: usize,
) -> Router {
    admission_router_with_rules(registry, ClusterRuleSet::new(), metrics, max_body_bytes)
}

/// [`admission_router`] whose validating endpoints also apply `rules`, the cluster-state rules
/// of the kinds that have some (see [`crate::cluster_rules`]).
pub fn admission_router_with_rules(
    registry: Arc<AdmissionRegistry>,
    rules: ClusterRuleSet,
    metrics: Arc<WebhookMetrics>,
    max_body_bytes: usize,
) -> Router {
    let endpoints: Vec<(WebhookKind, GroupVersionKind, String)> = registry
        .iter()
        .flat_map(|kind| {
            let gvk = kind.gvk();
            [WebhookKind::Validate, WebhookKind::Mutate].map(|webhook| {
                let path = webhook_path(webhook, &gvk);
                (webhook, gvk.clone(), path)
            })
        })
        .collect();
    let state = Arc::new(AdmissionState {
        registry,
        rules,
        metrics,
        max_body_bytes,
        paths: endpoints.iter().map(|(_, _, path)| path.clone()).collect(),
    });
    let mut router = Router::new();
    for (webhook, gvk, path) in endpoints {
        let gvk = Arc::new(gvk);
        router = router.route(
            &path,
            post(
                move |State(state): State<Arc<AdmissionState>>,
                      body: Result<Bytes, BytesRejection>| {
                    let gvk = Arc::clone(&gvk);
                    async move { admit(&state, webhook, &gvk, body).await }
                },
            ),
        );
    }
    router
        .fallback(unknown_path)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn admit(
    state: &AdmissionState,
    webhook: WebhookKind,
    served: &GroupVersionKind,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let body = match body {
        Ok(body) => body,
        Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_))) => {
            state.metrics.observe_request(
                webhook,
                Some(&served.kind),
                None,
                "too_large",
                started.elapsed(),
            );
            warn!(kind = %served.kind, webhook = webhook.as_str(), limit = state.max_body_bytes, "refused an admission request body over the size limit");
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the admission request body is larger than {} bytes, the limit of this \
                     webhook (--max-body-bytes)",
                    state.max_body_bytes
                ),
            )
                .into_response();
        }
        Err(rejection) => {
            state.metrics.observe_request(
                webhook,
                Some(&served.kind),
                None,
                "malformed",
                started.elapsed(),
            );
            return (
                StatusCode::BAD_REQUEST,
                format!("failed to read the admission request body: {rejection}"),
            )
                .into_response();
        }
    };
    let outcome = review_with_rules(&state.registry, &state.rules, webhook, served, &body).await;
    state.metrics.observe_verdict(
        webhook,
        outcome.kind.as_deref(),
        outcome.operation,
        outcome.verdict,
        started.elapsed(),
    );
    let uid = outcome.uid.as_deref().unwrap_or("");
    let object = outcome.object.as_deref().unwrap_or("");
    let operation = outcome.operation.unwrap_or("");
    match outcome.verdict {
        Verdict::Allowed | Verdict::Patched => debug!(
            uid,
            kind = %served.kind,
            object,
            operation,
            webhook = webhook.as_str(),
            verdict = outcome.verdict.as_str(),
            "admitted"
        ),
        Verdict::Denied | Verdict::Malformed => info!(
            uid,
            kind = %served.kind,
            object,
            operation,
            webhook = webhook.as_str(),
            verdict = outcome.verdict.as_str(),
            reason = %outcome.message,
            "denied"
        ),
    }
    Json(wire_review(&outcome.review)).into_response()
}

async fn unknown_path(State(state): State<Arc<AdmissionState>>, uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        format!(
            "no admission endpoint at {}; this webhook serves POST {}",
            uri.path(),
            state.paths.join(", ")
        ),
    )
        .into_response()
}

#[derive(Debug)]
struct OperationsState {
    metrics: Arc<WebhookMetrics>,
    certificate: Arc<ServingCertificate>,
}

/// `/healthz`, `/readyz` (ready once a serving certificate is loaded) and `/metrics`.
pub fn operations_router(
    metrics: Arc<WebhookMetrics>,
    certificate: Arc<ServingCertificate>,
) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Arc::new(OperationsState {
            metrics,
            certificate,
        }))
}

async fn readyz(State(state): State<Arc<OperationsState>>) -> Response {
    if state.certificate.is_loaded() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no serving certificate loaded yet (see the log for why)\n",
        )
            .into_response()
    }
}

async fn metrics_text(State(state): State<Arc<OperationsState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
