//! `tvk-control-plane`: the application's controllers, between the API (`tvk-api`) and the
//! execution layer (Jobs running `tvk-metamover` and `tvk-datamover`).
//!
//! One module per controller, each a short pipeline (fetch → validate → build → apply →
//! status) with `reconcile(obj, ctx) -> Result<Action, Error>` and `error_policy`:
//! [`target_controller`] (probes targets), [`plan_controller`] (validates plans, owns their
//! CronJobs) and [`backup_controller`] (the backup phase machine). [`target_access`] is the one
//! place a Target becomes Job flags; [`runner`] starts everything behind a Lease; the
//! [`operations`] endpoints serve health and metrics on 8080.

#![forbid(unsafe_code)]

pub mod backup_controller;
pub mod config;
pub mod context;
pub mod create_backup;
pub mod encryption;
pub mod error;
pub mod hooks;
pub mod jobs;
pub mod key_copy_sweep;
pub mod kinds;
pub use tvk_lease as leader;
pub mod naming;
pub mod operations;
pub mod plan_controller;
pub mod progress;
pub mod restore_controller;
pub mod retention;
pub mod runner;
pub mod status_patch;
pub mod target_access;
pub mod target_controller;
pub mod volumes;

pub use context::Context;
pub use error::{Error, Result};

/// Installs ring as the process-wide rustls provider (kube, S3 and diagnosis clients share it);
/// a second call, or one after another component installed a provider, changes nothing.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
