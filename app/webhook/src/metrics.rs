//! Prometheus metrics of the webhook, served on `/metrics` of the plain-HTTP listener.
//!
//! Label values are bounded: `kind` is a kind this registry serves or `unknown`, never a string
//! taken from the request, so a hostile client cannot grow the series without limit.

use std::{fmt::Write as _, time::Duration};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

use crate::{paths::WebhookKind, review::Verdict};

/// Labels of one admission request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// `validate` or `mutate`.
    pub webhook: String,
    /// The reviewed kind, or `unknown`.
    pub kind: String,
    /// `CREATE`, `UPDATE`, `DELETE`, `CONNECT` or `unknown`.
    pub operation: String,
    /// `allowed`, `patched`, `denied`, `malformed` or `too_large`.
    pub result: String,
}

/// Labels of the latency histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// `validate` or `mutate`.
    pub webhook: String,
}

/// Labels of a certificate reload.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `success` or `failure`.
    pub result: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~3.3 s: admission must answer well inside the API server's 10 s timeout.
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ])
}

/// The webhook's metrics and the registry that encodes them.
#[derive(Debug)]
pub struct WebhookMetrics {
    registry: Registry,
    requests: Family<AdmissionLabels, Counter>,
    latency: Family<WebhookLabels, Histogram, fn() -> Histogram>,
    certificate_reloads: Family<ReloadLabels, Counter>,
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WebhookMetrics {
    /// Registers every metric under the `tvk_webhook` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tvk_webhook");
        let requests = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission requests by webhook, kind, operation and result",
            requests.clone(),
        );
        let latency = Family::<WebhookLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "admission_duration_seconds",
            "Time to review one admission request, body read included",
            latency.clone(),
        );
        let certificate_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Serving certificate (re)loads from disk by result",
            certificate_reloads.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            certificate_reloads,
        }
    }

    /// Registers the same metrics (shared, not copied) in another registry, so a process that
    /// embeds the admission listener (the manager) exports them on its own `/metrics`.
    pub fn register_in(&self, registry: &mut Registry) {
        registry.register(
            "admission_requests",
            "Admission requests by webhook, kind, operation and result",
            self.requests.clone(),
        );
        registry.register(
            "admission_duration_seconds",
            "Time to review one admission request, body read included",
            self.latency.clone(),
        );
        registry.register(
            "certificate_reloads",
            "Serving certificate (re)loads from disk by result",
            self.certificate_reloads.clone(),
        );
    }

    /// Counts one admission request and records its latency.
    pub fn observe_request(
        &self,
        webhook: WebhookKind,
        kind: Option<&str>,
        operation: Option<&str>,
        result: &str,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&AdmissionLabels {
                webhook: webhook.as_str().to_owned(),
                kind: kind.unwrap_or("unknown").to_owned(),
                operation: operation.unwrap_or("unknown").to_owned(),
                result: result.to_owned(),
            })
            .inc();
        self.latency
            .get_or_create(&WebhookLabels {
                webhook: webhook.as_str().to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a review with its verdict.
    pub fn observe_verdict(
        &self,
        webhook: WebhookKind,
        kind: Option<&str>,
        operation: Option<&str>,
        verdict: Verdict,
        elapsed: Duration,
    ) {
        self.observe_request(webhook, kind, operation, verdict.as_str(), elapsed);
    }

    /// Counts a certificate load attempt.
    pub fn observe_certificate_reload(&self, success: bool) {
        self.certificate_reloads
            .get_or_create(&ReloadLabels {
                result: if success { "success" } else { "failure" }.to_owned(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(err) = encode(&mut text, &self.registry) {
            // Encoding into a String cannot fail short of a formatter bug; say so in the output.
            text.clear();
            let _ = writeln!(text, "# failed to encode metrics: {err}");
        }
        text
    }
}
