//! `tvk-metamover`: the metadata side of a backup, run by the control plane as a Job.
//!
//! `snapshot` reads a Backup (or ClusterBackup) and its plan, finds the application's objects
//! ([`discovery`] of the served resource types, [`selection`] of what the plan names — whole
//! namespaces, label and GVK selectors, [`helm`] releases, OLM operators — plus their
//! dependencies), removes what belongs to this cluster only ([`clean`]), writes the objects to
//! the backup target under `<plan uid>/<backup uid>/_metadata/` ([`layout`]) and records in the
//! Backup's `status.snapshot` what was captured and which PVCs the data Jobs must protect.
//! `commit` writes the commit object last, once the control plane has uploaded every volume.
//! The restore side (the metaprocessor) reads the same layout: `restore-plan` computes a
//! restore's plan ([`plan`], pure) against the destination, `restore` carries it out
//! ([`restore`]). `images backup|restore|gc` store the workloads' container images on the
//! target and bring them back into a registry ([`images`], [`images_backup`],
//! [`images_restore`]).
//!
//! Split: pure modules ([`clean`], [`selection`], [`helm`], [`layout`]) hold every decision and
//! are tested without a cluster; [`snapshot`] and [`commit`] are the thin async edges that list,
//! get and patch through `kube` and write through `tvk_datamover::target::Target`.
#![forbid(unsafe_code)]

pub mod clean;
pub mod cli;
pub mod commit;
pub mod discovery;
pub mod error;
pub mod helm;
pub mod images;
pub mod images_backup;
pub mod images_restore;
pub mod layout;
pub mod object;
pub mod plan;
pub mod restore;
pub mod seal;
pub mod selection;
pub mod snapshot;

pub use error::{Error, Result};
