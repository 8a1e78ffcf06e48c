//! The T4K-compatible API every other crate builds on (group `triliovault.trilio.io`, `v1`).
//!
//! - the kinds, one module per group: [`target`], [`policy`], [`hook`], [`backup_plan`],
//!   [`backup`], [`restore`], with shared types in [`common`]; re-exported at the root;
//! - [`snapshot`]: the typed model of a Backup's `status.snapshot` (free-form in the CRD), shared
//!   by the metamover and the control plane;
//! - [`crd`]: the CRDs generated from them (`cargo xtask crds` writes `templates/crds/`) and the
//!   structural-schema check;
//! - [`admission`]: the contract between the pure validation/defaulting of each kind
//!   ([`validation`]) and the places that run it — the admission webhook (`tvk-webhook`), the
//!   offline `kubectl-tvk validate` and the manager;
//! - [`quantity`]: Kubernetes quantities as bytes (the one parser of the workspace);
//! - [`yaml`]: the one YAML reader/writer of the workspace, hardened for hostile input.
//!
//! No network, no async runtime: every binary links this crate.

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
pub mod quantity;
pub mod restore;
pub mod restore_plan;
pub mod snapshot;
pub mod target;
pub mod validation;
pub mod yaml;

pub use backup::{Backup, BackupSpec, BackupStatus, ClusterBackup, ClusterBackupSpec};
pub use backup_plan::{
    BackupPlan, BackupPlanSpec, BackupPlanStatus, ClusterBackupPlan, ClusterBackupPlanSpec,
};
pub use hook::{Hook, HookSpec};
pub use policy::{Policy, PolicySpec};
pub use restore::{ClusterRestore, ClusterRestoreSpec, Restore, RestoreSpec, RestoreStatus};
pub use target::{Target, TargetSpec, TargetStatus};
