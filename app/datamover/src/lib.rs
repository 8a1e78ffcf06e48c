//! The data plane of the backup system: turns a volume (a block device or file, seen through a
//! PVC created from a CSI snapshot) into QCOW2 images on a backup target and back.
//!
//! Controllers run the `tvk-datamover` binary in Kubernetes Jobs (`backup`, `restore`,
//! `verify`, `info`, `coalesce`; JSON progress lines on stdout; exit 0 ok, 1 fatal, 75 retry
//! later). This library is everything behind it:
//! - [`qcow2`]: our own QCOW2 v3 streaming writer and validating reader.
//! - [`index`]: the per-cluster BLAKE3 digest index beside every image (the whole volume's
//!   state at that backup), so incrementals never read old images and restore/verify check
//!   every cluster.
//! - [`volume`] + [`backup`]: sparse pipelined reading of the source, full and incremental
//!   backups (overlay on the parent, zero-flag clusters for discarded/zeroed data, optional
//!   changed-block list shaped like CSI SnapshotMetadata's `GetMetadataDelta` ranges).
//! - [`restore`]: hydrating a chain into a file (sparse) or block device (zeros written).
//! - [`flatten`] + [`coalesce`]: retention without modifying committed objects.
//! - [`probe`]: checks that a target can hold backups (write, read, list, delete).
//! - [`manifest`] + [`repository`] + [`target`]: the commit protocol and object layout on a
//!   filesystem path (NFS) or S3.
//!
//! Decisions:
//! - 64 KiB clusters, refcount order 4, features all 0. Images are one sequential stream; the
//!   header cluster is supplied last (S3 multipart part 1 is uploaded last, a file gets a
//!   positioned write). Each 512 MiB range's L2 table follows its data, refcounts and L1 come
//!   last — so memory is one L2 table plus a few 4 MiB read chunks whatever the volume size
//!   (restore reads the L2 tables one range read each rather than all metadata in one read:
//!   the price of bounded writer memory).
//! - The image header rounds the virtual size up to 512 bytes (qemu counts sectors and would
//!   otherwise cut the tail); the manifest and index keep the exact size, and restore writes
//!   exactly that many bytes.
//! - Integrity: BLAKE3 per cluster in the index (checked before any byte reaches a restore
//!   destination), the index's own trailer checksum, and per object in the manifest (index:
//!   whole object; image: header cluster and body separately, because the header is written
//!   last). `verify --read-data` checks all of them.
//! - Commit: data objects first (files: `.partial` + fsync + rename), then the manifest
//!   create-only (`If-None-Match: *` on S3 — moto honours it, see the target tests — and
//!   `link(2)` on a filesystem). Backing names in images are relative and informative only:
//!   chain members always come from the manifest.
//! - Restore zeroes what must read as zero without writing zeros where it can:
//!   `fallocate(FALLOC_FL_ZERO_RANGE)` on a block device (the kernel's `BLKZEROOUT`: WRITE
//!   ZEROES or a zeroing unmap), a punched hole in a file restored in place; zeros are written
//!   only where that is unsupported.
//! - Reads of local sources and images are memory mappings of the page cache
//!   ([`volume::MappedFile`], 8 MiB windows; the crate's one `unsafe` block), in 1 MiB
//!   chunks that stay in the CPU caches from hashing to writing: the `pread` copy was a third
//!   of a full backup's CPU time. A file changed or truncated by someone else while mapped could fault (SIGBUS);
//!   sources are snapshots and committed images are immutable, so nobody does.
//! - Writes of images and restored volumes on local files and block devices that are fsynced
//!   before use (every Job command) use direct I/O ([`object_io::DirectWrites`]) for large
//!   aligned pieces: the data has to reach the device regardless, direct I/O moves it there
//!   without a CPU copy and without a long flush at the end, and dirty-page throttling on a
//!   busy node stalled buffered writers for seconds. Output that is not fsynced (`--no-sync`
//!   image commands: benchmarks) is written through the page cache, which is faster when
//!   nothing waits for the disk. Both choices were measured ([`object_io::WriteMode`]);
//!   `TVK_DATAMOVER_IO=buffered|direct` overrides them.
//! - Local outputs (images on a filesystem target, restored files) are allocated just ahead
//!   of their writes ([`object_io::Preallocate`]: `fallocate` of each restore range's data in
//!   guest order, of an image in growing steps up to 64 MiB with zero tails punched): one
//!   extent allocation instead of ext4's per-block delayed-allocation work under the inode
//!   lock, and aligned direct writes into allocated blocks may run in parallel. Only what is
//!   written stays allocated; a full filesystem is reported (NoSpace) before the data is
//!   written; not on NFS (a server round trip each) or block devices.
//! - Retention on an object-locked target (S3 Object Lock, WORM share): deletions the target
//!   refuses are deferred, recorded under `<plan>/.pending-deletions/<volume>/` and retried by
//!   every later coalesce of the volume ([`coalesce`]).
// The one `unsafe` block, `volume::map_window` (memory-mapping sources and local images for
// zero-copy reads), carries its SAFETY argument; everything else is safe code.
#![deny(unsafe_code)]

pub mod backup;
pub mod coalesce;
pub mod crypt;
pub mod error;
pub mod flatten;
pub mod index;
pub mod manifest;
pub mod object_io;
pub mod probe;
pub mod progress;
pub mod qcow2;
pub mod repository;
pub mod restore;
pub mod target;
pub mod target_args;
pub mod untrusted_input;
pub mod volume;

pub use error::{Error, Result};
