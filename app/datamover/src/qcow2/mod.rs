//! QCOW2 (version 3; version 2 read too) — our own reader and streaming writer.
//!
//! Why our own: no maintained crate writes QCOW2 as a sequential stream (what S3 multipart
//! needs), and the reader must treat every field as hostile (RELIABILITY.md 12–17).
//!
//! What we write ([`writer::Qcow2Writer`]):
//! - 64 KiB clusters by default, refcount order 4 (16-bit), no extended L2, no compression,
//!   incompatible/compatible/autoclear features all 0, `header_length` 112.
//! - Layout, in host order: cluster 0 = header (+ backing-format extension + backing name),
//!   *written last*; then, per 512 MiB L2 range of the guest in guest order, that range's data
//!   clusters followed by its L2 table (so the writer never keeps more than one L2 table in
//!   memory, whatever the volume size); then the refcount blocks, the refcount table and the
//!   L1 table at the very end. Every cluster has refcount exactly 1 (nothing is shared), which
//!   is why `qemu-img check` finds no errors and no leaks and why refcount blocks need no
//!   bookkeeping.
//! - Zero-flag L2 entries (bit 0, host offset 0) for clusters that read as zero in this layer
//!   but not in the backing chain (discarded or zeroed since the parent backup).
//! - Backing file name stored as given (callers pass a relative name) with the backing-format
//!   extension `qcow2`.
//!
//! What we read ([`reader::Qcow2Image`]): uncompressed v2/v3 images, including ones
//! `qemu-img create/convert` wrote. Every header field and table entry is bounds-checked before
//! use; memory is capped (L1 ≤ 32 MiB, refcount table ≤ 8 MiB, as in qemu). The reader never
//! opens a backing file itself: callers resolve chain members from the backup manifest.

pub mod reader;
pub mod writer;

use crate::error::{Error, Result};

/// `QFI\xfb`.
pub const MAGIC: u32 = 0x5146_49fb;
/// 64 KiB clusters.
pub const DEFAULT_CLUSTER_BITS: u32 = 16;
/// Smallest cluster size qemu accepts (512 B).
pub const MIN_CLUSTER_BITS: u32 = 9;
/// Largest cluster size qemu accepts (2 MiB).
pub const MAX_CLUSTER_BITS: u32 = 21;
/// Header length we write (v3 fields + compression type + padding).
pub const HEADER_LENGTH: u32 = 112;
/// Largest L1 table we accept, in bytes (qemu's QCOW_MAX_L1_SIZE).
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// Largest refcount table we accept, in bytes (qemu's QCOW_MAX_REFTABLE_SIZE).
pub const MAX_REFCOUNT_TABLE_BYTES: u64 = 8 << 20;
/// Most internal snapshots we accept in a header (qemu's QCOW_MAX_SNAPSHOTS).
pub const MAX_SNAPSHOTS: u32 = 65536;
/// Largest virtual size we accept (64 PiB; qemu's limit is similar).
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 56;
/// Longest backing file name (qemu's limit).
pub const MAX_BACKING_NAME: u32 = 1023;

/// Header extension: end of extensions.
pub const EXT_END: u32 = 0;
/// Header extension: backing file format name.
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Header extension: external data file name.
pub const EXT_DATA_FILE: u32 = 0x4441_5441;
/// Header extension: full disk encryption.
pub const EXT_CRYPTO: u32 = 0x0537_be77;

/// Incompatible feature: dirty (refcounts may be stale).
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature: corrupt.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature: external data file.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature: compression type field valid.
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature: extended L2 entries (subclusters).
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

/// L1/L2 entry: refcount is exactly one.
pub const FLAG_COPIED: u64 = 1 << 63;
/// L2 entry: compressed cluster.
pub const FLAG_COMPRESSED: u64 = 1 << 62;
/// L2 entry (v3): cluster reads as zeros.
pub const FLAG_ZERO: u64 = 1;
/// Host offset bits of an L1/L2 entry.
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

/// A parsed and validated QCOW2 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Guest (virtual disk) size in bytes.
    pub size: u64,
    /// Entries in the active L1 table.
    pub l1_size: u32,
    /// Host offset of the L1 table.
    pub l1_table_offset: u64,
    /// Host offset of the refcount table.
    pub refcount_table_offset: u64,
    /// Clusters of the refcount table.
    pub refcount_table_clusters: u32,
    /// Internal snapshots (not supported for reading; their tables are ignored).
    pub nb_snapshots: u32,
    /// Host offset of the snapshot table.
    pub snapshots_offset: u64,
    /// Incompatible feature bits.
    pub incompatible_features: u64,
    /// Compatible feature bits.
    pub compatible_features: u64,
    /// Autoclear feature bits.
    pub autoclear_features: u64,
    /// log2 of refcount bits.
    pub refcount_order: u32,
    /// Header length (v3).
    pub header_length: u32,
    /// Backing file name as stored (never opened by the reader).
    pub backing_file: Option<String>,
    /// Backing format from the header extension, if present.
    pub backing_format: Option<String>,
    /// LUKS encryption (`crypt_method` 2): where the LUKS area lies in the image.
    pub crypt: Option<CryptArea>,
}

/// The full-disk-encryption header extension: host offset and length of the LUKS area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CryptArea {
    /// Host offset (cluster aligned).
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
}

/// `crypt_method` of LUKS encryption.
pub const CRYPT_LUKS: u32 = 2;

impl Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }
    /// Entries per L2 table.
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / 8
    }
    /// Guest clusters (the last one may be partial).
    pub fn guest_clusters(&self) -> u64 {
        self.size.div_ceil(self.cluster_size())
    }

    /// Parses and validates the header from the start of the image. `head` must hold the
    /// first cluster (or the whole file when it is shorter); `file_len` is the object length.
    pub fn parse(image: &str, head: &[u8], file_len: u64) -> Result<Header> {
        let bad = |reason: String| Error::image(image, reason);
        if head.len() < 72 {
            return Err(bad(format!(
                "truncated header: {} bytes, a qcow2 header needs at least 72",
                head.len()
            )));
        }
        if be32(head, 0) != MAGIC {
            return Err(bad("not a qcow2 image (bad magic)".into()));
        }
        let version = be32(head, 4);
        if version != 2 && version != 3 {
            return Err(bad(format!("unsupported qcow2 version {version}")));
        }
        let backing_file_offset = be64(head, 8);
        let backing_file_size = be32(head, 16);
        let cluster_bits = be32(head, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(bad(format!(
                "invalid cluster_bits {cluster_bits} (allowed {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS})"
            )));
        }
        let cluster_size = 1u64 << cluster_bits;
        let size = be64(head, 24);
        let crypt_method = be32(head, 32);
        let l1_size = be32(head, 36);
        let l1_table_offset = be64(head, 40);
        let refcount_table_offset = be64(head, 48);
        let refcount_table_clusters = be32(head, 56);
        let nb_snapshots = be32(head, 60);
        let snapshots_offset = be64(head, 64);
        let (incompat, compat, autoclear, refcount_order, header_length) = if version == 3 {
            if head.len() < 104 {
                return Err(bad(format!(
                    "truncated v3 header: {} bytes, need 104",
                    head.len()
                )));
            }
            (
                be64(head, 72),
                be64(head, 80),
                be64(head, 88),
                be32(head, 96),
                be32(head, 100),
            )
        } else {
            (0, 0, 0, 4, 72)
        };
        if version == 3 && header_length < 104 {
            return Err(bad(format!(
                "invalid header_length {header_length} (a v3 header is at least 104 bytes)"
            )));
        }
        if u64::from(header_length) > cluster_size || header_length as usize > head.len() {
            return Err(bad(format!(
                "invalid header_length {header_length}: larger than the first cluster or the file"
            )));
        }
        if incompat & !INCOMPAT_KNOWN != 0 {
            return Err(bad(format!(
                "unknown incompatible feature bits {:#x}; refusing to read an image this tool does not understand",
                incompat & !INCOMPAT_KNOWN
            )));
        }
        if incompat & INCOMPAT_CORRUPT != 0 {
            return Err(bad(
                "image is marked corrupt; repair it with `qemu-img check -r all` first".into(),
            ));
        }
        if incompat & INCOMPAT_DIRTY != 0 {
            return Err(bad(
                "image has the dirty bit set (not closed cleanly, refcounts may be stale); run `qemu-img check -r leaks` first".into(),
            ));
        }
        if incompat & INCOMPAT_DATA_FILE != 0 {
            return Err(bad(
                "image uses an external data file, which is not accepted".into(),
            ));
        }
        if incompat & INCOMPAT_EXTL2 != 0 {
            return Err(bad(
                "image uses extended L2 entries (subclusters), which are not supported".into(),
            ));
        }
        if crypt_method == 1 {
            return Err(bad(
                "image uses qemu's legacy AES-CBC encryption (crypt_method 1), which is insecure and not supported; convert it to LUKS encryption (encrypt.format=luks)".into(),
            ));
        }
        if crypt_method > CRYPT_LUKS {
            return Err(bad(format!(
                "unknown encryption method (crypt_method {crypt_method})"
            )));
        }
        if refcount_order > 6 {
            return Err(bad(format!("invalid refcount_order {refcount_order}")));
        }
        if size > MAX_VIRTUAL_SIZE {
            return Err(bad(format!(
                "virtual size {size} exceeds the supported maximum {MAX_VIRTUAL_SIZE}"
            )));
        }
        // L1 table: size bounded first (memory cap), then placement.
        if u64::from(l1_size) * 8 > MAX_L1_BYTES {
            return Err(bad(format!(
                "L1 table too large: l1_size {l1_size} exceeds the limit of {} entries",
                MAX_L1_BYTES / 8
            )));
        }
        let l2_entries = cluster_size / 8;
        let needed_l1 = size.div_ceil(cluster_size).div_ceil(l2_entries);
        if u64::from(l1_size) < needed_l1 {
            return Err(bad(format!(
                "L1 table too small: l1_size {l1_size} but the virtual size needs {needed_l1}"
            )));
        }
        if l1_size > 0
            && !table_fits(
                l1_table_offset,
                u64::from(l1_size) * 8,
                cluster_size,
                file_len,
            )
        {
            return Err(bad(format!(
                "invalid L1 table offset {l1_table_offset:#x} (misaligned or beyond the end of the file)"
            )));
        }
        let reftable_bytes = u64::from(refcount_table_clusters) * cluster_size;
        if reftable_bytes > MAX_REFCOUNT_TABLE_BYTES {
            return Err(bad(format!(
                "refcount table too large: {refcount_table_clusters} clusters exceed the limit of {} bytes",
                MAX_REFCOUNT_TABLE_BYTES
            )));
        }
        if refcount_table_clusters == 0 {
            return Err(bad("refcount table has zero clusters".into()));
        }
        if !table_fits(
            refcount_table_offset,
            reftable_bytes,
            cluster_size,
            file_len,
        ) {
            return Err(bad(format!(
                "invalid refcount table offset {refcount_table_offset:#x} (misaligned or beyond the end of the file)"
            )));
        }
        if nb_snapshots > MAX_SNAPSHOTS {
            return Err(bad(format!(
                "too many snapshots: nb_snapshots {nb_snapshots} exceeds the limit of {MAX_SNAPSHOTS}"
            )));
        }
        if nb_snapshots > 0 && !table_fits(snapshots_offset, 1, cluster_size, file_len) {
            return Err(bad(format!(
                "invalid snapshot table offset {snapshots_offset:#x}"
            )));
        }

        // Header extensions (v3), bounded by the first cluster.
        let mut backing_format = None;
        let mut crypt = None;
        let ext_limit = head.len().min(cluster_size as usize);
        if version == 3 {
            let mut pos = header_length as usize;
            loop {
                if pos + 8 > ext_limit {
                    return Err(bad("header extensions run past the first cluster".into()));
                }
                let ext_type = be32(head, pos);
                let ext_len = be32(head, pos + 4) as usize;
                pos += 8;
                if ext_type == EXT_END {
                    break;
                }
                let padded = ext_len.div_ceil(8) * 8;
                if pos + padded > ext_limit {
                    return Err(bad(format!(
                        "header extension {ext_type:#x} of {ext_len} bytes runs past the first cluster"
                    )));
                }
                let data = &head[pos..pos + ext_len];
                match ext_type {
                    EXT_BACKING_FORMAT => {
                        let fmt = std::str::from_utf8(data)
                            .map_err(|_| bad("backing format is not UTF-8".into()))?;
                        backing_format = Some(fmt.to_string());
                    }
                    EXT_DATA_FILE => {
                        return Err(bad(
                            "image names an external data file, which is not accepted".into(),
                        ));
                    }
                    EXT_CRYPTO => {
                        if ext_len != 16 {
                            return Err(bad(format!(
                                "encryption header extension of {ext_len} bytes (expected 16)"
                            )));
                        }
                        let area = CryptArea {
                            offset: be64(data, 0),
                            length: be64(data, 8),
                        };
                        if area.length < 592 || area.length > crate::crypt::MAX_AREA_LEN {
                            return Err(bad(format!(
                                "invalid LUKS header length {} (allowed 592..={})",
                                area.length,
                                crate::crypt::MAX_AREA_LEN
                            )));
                        }
                        if !table_fits(area.offset, area.length, cluster_size, file_len) {
                            return Err(bad(format!(
                                "invalid LUKS header offset {:#x} (misaligned or beyond the end of the file)",
                                area.offset
                            )));
                        }
                        crypt = Some(area);
                    }
                    _ => {}
                }
                pos += padded;
            }
        }
        match (crypt_method, crypt) {
            (CRYPT_LUKS, None) => {
                return Err(bad(
                    "image is LUKS encrypted (crypt_method 2) but has no encryption header extension".into(),
                ));
            }
            (0, Some(_)) => {
                return Err(bad(
                    "image has an encryption header extension but crypt_method 0".into(),
                ));
            }
            _ => {}
        }
        let backing_file = if backing_file_offset != 0 {
            if backing_file_size == 0 || backing_file_size > MAX_BACKING_NAME {
                return Err(bad(format!(
                    "invalid backing file name length {backing_file_size}"
                )));
            }
            let end = backing_file_offset.checked_add(u64::from(backing_file_size));
            match end {
                Some(end)
                    if end <= ext_limit as u64
                        && backing_file_offset >= u64::from(header_length) =>
                {
                    let raw = &head[backing_file_offset as usize..end as usize];
                    let name = std::str::from_utf8(raw)
                        .map_err(|_| bad("backing file name is not UTF-8".into()))?;
                    Some(name.to_string())
                }
                _ => {
                    return Err(bad(format!(
                        "invalid backing file offset {backing_file_offset:#x}: outside the first cluster"
                    )));
                }
            }
        } else {
            None
        };
        Ok(Header {
            version,
            cluster_bits,
            size,
            l1_size,
            l1_table_offset,
            refcount_table_offset,
            refcount_table_clusters,
            nb_snapshots,
            snapshots_offset,
            incompatible_features: incompat,
            compatible_features: compat,
            autoclear_features: autoclear,
            refcount_order,
            header_length,
            backing_file,
            backing_format,
            crypt,
        })
    }
}

/// Whether a table of `bytes` at `offset` is cluster-aligned and inside the file.
fn table_fits(offset: u64, bytes: u64, cluster_size: u64, file_len: u64) -> bool {
    offset != 0
        && offset.is_multiple_of(cluster_size)
        && offset.checked_add(bytes).is_some_and(|end| end <= file_len)
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}
