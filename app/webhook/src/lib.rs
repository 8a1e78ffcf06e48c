//! `tvk-webhook`: the admission webhook of the application's custom resources.
//!
//! The API server sends every CREATE and UPDATE of our kinds here as an AdmissionReview; the
//! webhook runs the kind's pure validation and defaulting from `tvk_api::admission` (the same code
//! `kubectl-tvk validate` runs offline) and answers with a denial listing every field error, or
//! with a JSON patch of defaults. It is generic over an [`AdmissionRegistry`](tvk_api::admission::AdmissionRegistry):
//! the manager reuses this server for its TrilioVaultManager kind, and renders its webhook
//! configurations with [`paths::validate_path`] / [`paths::mutate_path`] so both sides agree.
//!
//! Layers, from the inside out: [`review`] (body → AdmissionReview answer, pure), [`router`]
//! (axum routes, body-size cap, metrics, logs), [`tls`] (the serving certificate, reloaded from
//! disk when it rotates), [`server`] (both listeners, graceful shutdown).

#![forbid(unsafe_code)]

pub mod error;
pub mod metrics;
pub mod paths;
pub mod review;
pub mod router;
pub mod server;
pub mod tls;

pub use error::Error;
pub use paths::{WebhookKind, mutate_path, validate_path, webhook_path};
pub use router::{DEFAULT_MAX_BODY_BYTES, admission_router, operations_router};
pub use server::{WebhookConfig, WebhookServer};
pub use tls::CertificateFiles;
