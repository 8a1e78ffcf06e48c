//! Validating QCOW2 reader: header, L1 table and refcount table are checked at open; each L2
//! table is checked when it is loaded. Nothing is trusted before its bounds are known.

use std::sync::Arc;

use super::{FLAG_COMPRESSED, FLAG_ZERO, Header, OFFSET_MASK};
use crate::{
    crypt::{self, EncryptionKey, LuksCipher},
    error::{Error, Result},
    object_io::RandomRead,
};

/// Where one guest cluster's data comes from in one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterMapping {
    /// Not allocated in this image: read from the backing chain (zeros if none).
    Unallocated,
    /// Reads as zeros, whatever the backing chain holds.
    Zero,
    /// Data at this host offset.
    Data(u64),
}

/// An opened, validated QCOW2 image.
pub struct Qcow2Image {
    src: Arc<dyn RandomRead>,
    header: Header,
    l1: Vec<u64>,
    /// Sorted, non-overlapping host byte ranges holding metadata (header, L1, refcount table,
    /// refcount blocks, L2 tables, snapshot table start). Data clusters must not point there.
    metadata: Vec<(u64, u64)>,
    /// LUKS encrypted images: the cipher of the image's master key, and the key that opened it
    /// (so that coalescing re-encrypts what it rewrites with the same key).
    crypt: Option<(LuksCipher, EncryptionKey)>,
}

impl std::fmt::Debug for Qcow2Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Image")
            .field("name", &self.src.name())
            .field("header", &self.header)
            .finish()
    }
}

impl Qcow2Image {
    /// Opens and validates an unencrypted image (an encrypted one is refused with an error that
    /// asks for the key). Backing files are NOT opened: the caller supplies chain members (named
    /// by a manifest) to whatever merges them.
    pub fn open(src: Arc<dyn RandomRead>) -> Result<Self> {
        Self::open_with_key(src, None)
    }

    /// Opens and validates an image, LUKS encrypted ones with `key` (plain images open with or
    /// without a key).
    pub fn open_with_key(src: Arc<dyn RandomRead>, key: Option<&EncryptionKey>) -> Result<Self> {
        let name = src.name().to_string();
        let file_len = src.len();
        // Enough for any header: cluster_bits is validated before the rest is used.
        let mut first = vec![0u8; file_len.min(512) as usize];
        src.read_exact_at(0, &mut first)?;
        if first.len() < 72 {
            return Err(Error::image(
                &name,
                format!("truncated image: {file_len} bytes is shorter than a qcow2 header"),
            ));
        }
        let cluster_bits = super::be32(&first, 20);
        if !(super::MIN_CLUSTER_BITS..=super::MAX_CLUSTER_BITS).contains(&cluster_bits) {
            // Let Header::parse produce the specific error.
            Header::parse(&name, &first, file_len)?;
        }
        let head_len = file_len.min(1u64 << cluster_bits.min(super::MAX_CLUSTER_BITS));
        let mut head = vec![0u8; head_len as usize];
        src.read_exact_at(0, &mut head)?;
        let header = Header::parse(&name, &head, file_len)?;
        let cs = header.cluster_size();

        let mut l1_raw = vec![0u8; header.l1_size as usize * 8];
        if header.l1_size > 0 {
            src.read_exact_at(header.l1_table_offset, &mut l1_raw)?;
        }
        let l1: Vec<u64> = l1_raw.chunks_exact(8).map(|c| super::be64(c, 0)).collect();

        let mut metadata = vec![(0, cs)];
        if header.l1_size > 0 {
            metadata.push((
                header.l1_table_offset,
                header.l1_table_offset + (u64::from(header.l1_size) * 8).next_multiple_of(cs),
            ));
        }
        let reftable_bytes = u64::from(header.refcount_table_clusters) * cs;
        metadata.push((
            header.refcount_table_offset,
            header.refcount_table_offset + reftable_bytes,
        ));
        if header.nb_snapshots > 0 {
            metadata.push((header.snapshots_offset, header.snapshots_offset + cs));
        }
        let mut reftable = vec![0u8; reftable_bytes as usize];
        src.read_exact_at(header.refcount_table_offset, &mut reftable)?;
        for (i, c) in reftable.chunks_exact(8).enumerate() {
            let block = super::be64(c, 0) & OFFSET_MASK;
            if block == 0 {
                continue;
            }
            if !block.is_multiple_of(cs) || block.checked_add(cs).is_none_or(|e| e > file_len) {
                return Err(Error::image(
                    &name,
                    format!(
                        "refcount table entry {i} points to {block:#x}: misaligned or beyond the end of the file"
                    ),
                ));
            }
            metadata.push((block, block + cs));
        }
        for (i, &e) in l1.iter().enumerate() {
            let l2 = e & OFFSET_MASK;
            if l2 == 0 {
                continue;
            }
            if !l2.is_multiple_of(cs) || l2.checked_add(cs).is_none_or(|end| end > file_len) {
                return Err(Error::image(
                    &name,
                    format!(
                        "L1 entry {i} points to L2 table at {l2:#x}: misaligned or beyond the end of the file"
                    ),
                ));
            }
            metadata.push((l2, l2 + cs));
        }
        let crypt = match (header.crypt, key) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(Error::Usage(format!(
                    "image {name} is encrypted (LUKS): give the key of the backup plan's encryption Secret (--encryption-key-file)"
                )));
            }
            (Some(area), Some(key)) => {
                let mut raw = vec![0u8; area.length as usize];
                src.read_exact_at(area.offset, &mut raw)?;
                metadata.push((area.offset, area.offset + area.length.next_multiple_of(cs)));
                let cipher = crypt::open(&name, &raw, key)?;
                Some((cipher, key.clone()))
            }
        };
        metadata.sort_unstable();
        // Header, L1 and refcount table must not overlap each other or the tables they list
        // (overlapping L2 tables are shared clusters, which only snapshots produce).
        for w in metadata.windows(2) {
            if w[1].0 < w[0].1 && header.nb_snapshots == 0 {
                return Err(Error::image(
                    &name,
                    format!("metadata structures overlap at host offset {:#x}", w[1].0),
                ));
            }
        }
        Ok(Self {
            src,
            header,
            l1,
            metadata,
            crypt,
        })
    }

    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The object name used in errors.
    pub fn name(&self) -> &str {
        self.src.name()
    }

    /// The stored object.
    pub fn source(&self) -> &Arc<dyn RandomRead> {
        &self.src
    }

    /// Number of L1 entries that cover the guest.
    pub fn l1_ranges(&self) -> u64 {
        self.header
            .guest_clusters()
            .div_ceil(self.header.l2_entries())
    }

    /// The mappings of the guest clusters covered by L1 entry `l1_index` (one full L2 table's
    /// worth, `l2_entries` long; entries past the guest size are `Unallocated`).
    pub fn l2_mappings(&self, l1_index: u64) -> Result<Vec<ClusterMapping>> {
        let entries = self.header.l2_entries() as usize;
        let mut out = vec![ClusterMapping::Unallocated; entries];
        let Some(&l1e) = self.l1.get(l1_index as usize) else {
            return Ok(out);
        };
        let l2_off = l1e & OFFSET_MASK;
        if l2_off == 0 {
            return Ok(out);
        }
        let cs = self.header.cluster_size();
        let mut raw = vec![0u8; cs as usize];
        self.src.read_exact_at(l2_off, &mut raw)?;
        let first_guest = l1_index * self.header.l2_entries();
        let guest_clusters = self.header.guest_clusters();
        let file_len = self.src.len();
        for (i, slot) in out.iter_mut().enumerate() {
            let e = super::be64(&raw, i * 8);
            let guest = first_guest + i as u64;
            if e == 0 {
                continue;
            }
            if guest >= guest_clusters {
                // qemu ignores entries past the end; so do we, but never read them.
                continue;
            }
            let guest_off = guest * cs;
            if e & FLAG_COMPRESSED != 0 {
                return Err(Error::image(
                    self.name(),
                    format!(
                        "compressed cluster at guest offset {guest_off:#x}: compressed clusters are not supported; convert the image without -c"
                    ),
                ));
            }
            let host = e & OFFSET_MASK;
            if e & FLAG_ZERO != 0 {
                if self.header.version < 3 {
                    return Err(Error::image(
                        self.name(),
                        format!(
                            "L2 entry for guest offset {guest_off:#x} has the zero flag in a version 2 image"
                        ),
                    ));
                }
                *slot = ClusterMapping::Zero;
                continue;
            }
            if host == 0 {
                continue;
            }
            if !host.is_multiple_of(cs) {
                return Err(Error::image(
                    self.name(),
                    format!(
                        "L2 entry for guest offset {guest_off:#x} points to misaligned host offset {host:#x}"
                    ),
                ));
            }
            if host >= file_len {
                return Err(Error::image(
                    self.name(),
                    format!(
                        "L2 entry for guest offset {guest_off:#x} points to {host:#x}, beyond the end of the file ({file_len} bytes)"
                    ),
                ));
            }
            if self.overlaps_metadata(host, host + cs) {
                return Err(Error::image(
                    self.name(),
                    format!(
                        "L2 entry for guest offset {guest_off:#x} points into metadata at {host:#x}"
                    ),
                ));
            }
            *slot = ClusterMapping::Data(host);
        }
        Ok(out)
    }

    fn overlaps_metadata(&self, start: u64, end: u64) -> bool {
        // First range whose end is > start.
        let i = self.metadata.partition_point(|&(_, e)| e <= start);
        self.metadata.get(i).is_some_and(|&(s, _)| s < end)
    }

    /// `len` bytes of host data at `host` without a copy, where the object can map them and
    /// they lie wholly inside the file. Never for an encrypted image (its data must be
    /// decrypted: use [`Self::read_host`]).
    pub fn map_host(&self, host: u64, len: usize) -> Option<bytes::Bytes> {
        if self.crypt.is_some() {
            return None;
        }
        self.src.map(host, len)
    }

    /// Reads `buf.len()` bytes of host data at `host` (decrypted, for an encrypted image);
    /// bytes past the end of the file (a partially written last cluster, as qemu leaves it)
    /// read as zeros.
    pub fn read_host(&self, host: u64, buf: &mut [u8]) -> Result<()> {
        let avail = self.src.len().saturating_sub(host).min(buf.len() as u64) as usize;
        self.src.read_exact_at(host, &mut buf[..avail])?;
        buf[avail..].fill(0);
        if let Some((cipher, _)) = &self.crypt {
            // Whole sectors only: a sector cut by the end of the file was never written.
            let whole = avail.next_multiple_of(crypt::SECTOR).min(buf.len());
            let whole = whole - whole % crypt::SECTOR;
            cipher.decrypt(&mut buf[..whole], host)?;
        }
        Ok(())
    }

    /// Whether the image is LUKS encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.crypt.is_some()
    }

    /// The key that opened this (encrypted) image.
    pub fn encryption_key(&self) -> Option<&EncryptionKey> {
        self.crypt.as_ref().map(|(_, k)| k)
    }
}
