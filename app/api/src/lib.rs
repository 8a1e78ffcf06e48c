//! The T4K-compatible API every other crate builds on (group `triliovault.trilio.io`, `v1`).
//!
//! `admission` is the contract between the pure validation/defaulting of each kind and the
//! places that run it: the admission webhook (`tvk-webhook`), the offline `kubectl-tvk validate`
//! and the manager's own TrilioVaultManager webhook. `yaml` is the one YAML reader/writer of the
//! workspace.

#![forbid(unsafe_code)]
// `#[kube(printcolumn(name = …, type_ = …), printcolumn(…))]` repeats keys by design.
#![allow(clippy::duplicated_attributes)]

pub mod admission;
pub mod backup;
pub mod backup_plan;
pub mod common;
pub mod crd;
pub mod hook;
pub mod policy;
pub mod restore;
pub mod target;
pub mod yaml;
