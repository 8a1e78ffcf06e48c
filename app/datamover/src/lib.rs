//! The data plane of the backup system: turns a volume (a block device or file, seen through a
//! PVC created from a CSI snapshot) into QCOW2 images on a backup target and back.
//!
//! Controllers run the `tvk-datamover` binary in Kubernetes Jobs; this library is everything
//! behind it:
//! - [`qcow2`]: our own QCOW2 v3 streaming writer and validating reader.
//! - [`index`]: the per-cluster BLAKE3 digest index beside every image (the whole volume's
//!   state at that backup), so incrementals never read old images and restore/verify check
//!   every cluster.
//! - [`volume`] + [`backup`]: sparse pipelined reading of the source, full and incremental
//!   backups (overlay on the parent, zero-flag clusters for discarded/zeroed data, optional
//!   changed-block list).
//! - [`restore`]: hydrating a chain into a file (sparse) or block device (zeros written).
//!
//! Decisions (see each module for details): 64 KiB clusters; images are written as one
//! sequential stream with the header cluster supplied last (S3 multipart friendly);
//! memory is bounded by a few 4 MiB chunks plus one L2 table whatever the volume size.
#![forbid(unsafe_code)]

pub mod backup;
pub mod coalesce;
pub mod error;
pub mod flatten;
pub mod index;
pub mod manifest;
pub mod object_io;
pub mod progress;
pub mod qcow2;
pub mod repository;
pub mod restore;
pub mod target;
pub mod untrusted_input;
pub mod volume;

pub use error::{Error, Result};
