//! The T4K-compatible API every other crate builds on (group `triliovault.trilio.io`, `v1`).
//!
//! `admission` is the contract between the pure validation/defaulting of each kind and the
//! places that run it: the admission webhook (`tvk-webhook`), the offline `kubectl-tvk validate`
//! and the manager's own TrilioVaultManager webhook. `yaml` is the one YAML reader/writer of the
//! workspace.

#![forbid(unsafe_code)]

pub mod admission;
pub mod yaml;
