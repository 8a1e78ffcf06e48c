//! `tvk-webhook`: the admission webhook of the application's custom resources.
//!
//! The API server sends every CREATE and UPDATE of our kinds here as an AdmissionReview; the
//! webhook runs the kind's pure validation and defaulting from `tvk_api::admission` (the same code
//! `kubectl-tvk validate` runs offline) and answers with a denial listing every field error, or
//! with a JSON patch of defaults. It is generic over an [`AdmissionRegistry`](tvk_api::admission::AdmissionRegistry):
//! the manager reuses this server for its TrilioVaultManager kind, and renders its webhook
//! configurations with [`paths::validate_path`] / [`paths::mutate_path`] so both sides agree.
//!
//! Layers, from the inside out: [`review`] (body → AdmissionReview answer, pure), with the
//! optional [`cluster_rules`] (rules that read the cluster's state, which the manager supplies for
//! its kind), [`router`] (axum routes, body-size cap, metrics, logs), [`tls`] (the serving
//! certificate, reloaded from disk when it rotates), [`server`] (the TLS admission listener as
//! [`AdmissionServer`], which the manager embeds, and the whole [`WebhookServer`] with its
//! operations listener; graceful shutdown).

#![forbid(unsafe_code)]

pub mod cluster_rules;
pub mod error;
pub mod metrics;
pub mod paths;
pub mod review;
pub mod router;
pub mod server;
pub mod tls;

pub use cluster_rules::{ClusterDenial, ClusterRuleSet, ClusterRules};
pub use error::Error;
pub use paths::{WebhookKind, mutate_path, validate_path, webhook_path};
pub use router::{
    DEFAULT_MAX_BODY_BYTES, admission_router, admission_router_with_rules, operations_router,
};
pub use server::{AdmissionConfig, AdmissionServer, WebhookConfig, WebhookServer};
pub use tls::CertificateFiles;
