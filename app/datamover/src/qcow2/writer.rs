//! Streaming QCOW2 v3 writer (layout in the module docs of [`crate::qcow2`]).

use bytes::{BufMut, Bytes, BytesMut};

use super::{
    DEFAULT_CLUSTER_BITS, EXT_BACKING_FORMAT, FLAG_COPIED, FLAG_ZERO, HEADER_LENGTH, MAGIC,
    MAX_BACKING_NAME, MAX_CLUSTER_BITS, MAX_VIRTUAL_SIZE, MIN_CLUSTER_BITS,
};
use crate::{
    crypt::{self, EncryptionKey, LuksCipher},
    error::{Error, Result},
    object_io::ObjectSink,
};

/// Options of a new image.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// Guest size in bytes.
    pub virtual_size: u64,
    /// log2 cluster size (default 16 = 64 KiB).
    pub cluster_bits: u32,
    /// Backing file name to store (relative to this image), with format `qcow2`.
    pub backing_file: Option<String>,
    /// Encrypt the image (LUKS, `crypt_method` 2) with this key as passphrase.
    pub encryption: Option<EncryptionKey>,
}

impl ImageOptions {
    /// A base image of `virtual_size` with 64 KiB clusters.
    pub fn new(virtual_size: u64) -> Self {
        Self {
            virtual_size,
            cluster_bits: DEFAULT_CLUSTER_BITS,
            backing_file: None,
            encryption: None,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSummary {
    /// Object length in bytes.
    pub image_len: u64,
    /// Data clusters stored.
    pub data_clusters: u64,
    /// Zero-flag clusters recorded.
    pub zero_clusters: u64,
}

/// Writes an image as one sequential stream: data clusters must be supplied in increasing
/// guest order. Memory: one L2 table plus the L1 table (8 bytes per 512 MiB of guest).
pub struct Qcow2Writer {
    sink: Option<Box<dyn ObjectSink>>,
    opts: ImageOptions,
    cs: u64,
    l2_entries: u64,
    guest_clusters: u64,
    l1: Vec<u64>,
    /// Current L2 table: (L1 index, entries).
    l2: Option<(u64, Vec<u64>)>,
    /// Next free host cluster (cluster 0 is the header).
    next_host: u64,
    /// Next guest cluster that may be written (enforces increasing order).
    next_guest: u64,
    data_clusters: u64,
    zero_clusters: u64,
    /// Encrypted images: the master key's cipher and the LUKS area (host offset, length).
    crypt: Option<(LuksCipher, u64, u64)>,
}

impl std::fmt::Debug for Qcow2Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Writer")
            .field("opts", &self.opts)
            .finish()
    }
}

impl Qcow2Writer {
    /// Starts an image on `sink`, whose reserved head must be one cluster.
    pub fn new(sink: Box<dyn ObjectSink>, opts: ImageOptions) -> Result<Self> {
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&opts.cluster_bits) {
            return Err(Error::Usage(format!(
                "cluster_bits {} out of range",
                opts.cluster_bits
            )));
        }
        if opts.virtual_size > MAX_VIRTUAL_SIZE {
            return Err(Error::Usage(format!(
                "virtual size {} is too large",
                opts.virtual_size
            )));
        }
        if let Some(b) = &opts.backing_file
            && (b.is_empty() || b.len() > MAX_BACKING_NAME as usize)
        {
            return Err(Error::Usage(format!(
                "backing file name of {} bytes is not storable",
                b.len()
            )));
        }
        let cs = 1u64 << opts.cluster_bits;
        let l2_entries = cs / 8;
        let guest_clusters = opts.virtual_size.div_ceil(cs);
        let l1_size = guest_clusters.div_ceil(l2_entries);
        if l1_size * 8 > super::MAX_L1_BYTES {
            return Err(Error::Usage(format!(
                "virtual size {} needs an L1 table larger than readers accept; use larger clusters",
                opts.virtual_size
            )));
        }
        let mut sink = sink;
        let mut next_host = 1;
        let crypt = match &opts.encryption {
            None => None,
            Some(key) => {
                // The LUKS area follows the header cluster, padded to whole clusters.
                let (cipher, mut area) = crypt::create(key)?;
                let len = area.len() as u64;
                area.resize(len.next_multiple_of(cs) as usize, 0);
                let clusters = area.len() as u64 / cs;
                sink.append(Bytes::from(area))?;
                let offset = next_host * cs;
                next_host += clusters;
                Some((cipher, offset, len))
            }
        };
        Ok(Self {
            sink: Some(sink),
            crypt,
            cs,
            l2_entries,
            guest_clusters,
            l1: vec![0; l1_size as usize],
            l2: None,
            next_host,
            next_guest: 0,
            data_clusters: 0,
            zero_clusters: 0,
            opts,
        })
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        self.cs
    }

    fn sink(&mut self) -> Result<&mut Box<dyn ObjectSink>> {
        self.sink
            .as_mut()
            .ok_or_else(|| Error::Usage("qcow2 writer used after finish".into()))
    }

    fn check_order(&mut self, guest: u64, count: u64) -> Result<()> {
        if guest < self.next_guest || guest + count > self.guest_clusters {
            return Err(Error::Usage(format!(
                "internal error: guest cluster {guest} (+{count}) written out of order or past the end"
            )));
        }
        self.next_guest = guest + count;
        Ok(())
    }

    /// Makes the L2 table of `l1_index` current, writing out the previous one.
    fn enter_range(&mut self, l1_index: u64) -> Result<()> {
        if self.l2.as_ref().is_some_and(|(i, _)| *i == l1_index) {
            return Ok(());
        }
        self.flush_l2()?;
        self.l2 = Some((l1_index, vec![0; self.l2_entries as usize]));
        Ok(())
    }

    fn flush_l2(&mut self) -> Result<()> {
        let Some((l1_index, entries)) = self.l2.take() else {
            return Ok(());
        };
        let mut buf = BytesMut::with_capacity(self.cs as usize);
        for e in &entries {
            buf.put_u64(*e);
        }
        let host = self.next_host * self.cs;
        self.next_host += 1;
        self.l1[l1_index as usize] = host | FLAG_COPIED;
        self.sink()?.append(buf.freeze())
    }

    /// Stores `data` (a whole number of clusters; the caller pads the last partial cluster
    /// with zeros) as the guest clusters starting at `guest`.
    pub fn put_data(&mut self, guest: u64, data: Bytes) -> Result<()> {
        let cs = self.cs as usize;
        if !data.len().is_multiple_of(cs) {
            return Err(Error::Usage(format!(
                "internal error: data of {} bytes is not whole clusters",
                data.len()
            )));
        }
        let count = (data.len() / cs) as u64;
        self.check_order(guest, count)?;
        let mut done = 0u64;
        while done < count {
            let g = guest + done;
            let l1_index = g / self.l2_entries;
            self.enter_range(l1_index)?;
            // Clusters of this run inside the current L2 range.
            let in_range = (self.l2_entries - g % self.l2_entries).min(count - done);
            let first_host = self.next_host;
            if let Some((_, entries)) = self.l2.as_mut() {
                for k in 0..in_range {
                    let slot = ((g + k) % self.l2_entries) as usize;
                    entries[slot] = ((first_host + k) * self.cs) | FLAG_COPIED;
                }
            }
            self.next_host += in_range;
            let mut piece = data.slice(done as usize * cs..(done + in_range) as usize * cs);
            if let Some((cipher, _, _)) = &self.crypt {
                let mut enc = BytesMut::from(&piece[..]);
                cipher.encrypt(&mut enc, first_host * self.cs)?;
                piece = enc.freeze();
            }
            self.sink()?.append(piece)?;
            done += in_range;
        }
        self.data_clusters += count;
        Ok(())
    }

    /// Records guest cluster `guest` as reading zeros (zero flag, no data).
    pub fn put_zero(&mut self, guest: u64) -> Result<()> {
        self.check_order(guest, 1)?;
        self.enter_range(guest / self.l2_entries)?;
        if let Some((_, entries)) = self.l2.as_mut() {
            entries[(guest % self.l2_entries) as usize] = FLAG_ZERO;
        }
        self.zero_clusters += 1;
        Ok(())
    }

    /// Writes the L2 table in progress, refcount blocks, refcount table and L1 table, then the
    /// header into the reserved first cluster, and makes the object durable.
    pub fn finish(mut self) -> Result<ImageSummary> {
        self.flush_l2()?;
        let cs = self.cs;
        let l1_bytes = self.l1.len() as u64 * 8;
        let l1_clusters = l1_bytes.div_ceil(cs);
        let refcounts_per_block = cs * 8 / 16;
        let before = self.next_host;
        // Fixpoint: refcount blocks must also cover themselves and the tables after them.
        let mut blocks = 1u64;
        let (total, table_clusters) = loop {
            let table_clusters = (blocks * 8).div_ceil(cs);
            let total = before + blocks + table_clusters + l1_clusters;
            let need = total.div_ceil(refcounts_per_block);
            if need <= blocks {
                break (total, table_clusters);
            }
            blocks = need;
        };
        let blocks_start = before;
        let table_start = blocks_start + blocks;
        let l1_start = table_start + table_clusters;
        let sink = self
            .sink
            .take()
            .ok_or_else(|| Error::Usage("qcow2 writer finished twice".into()))?;
        let mut sink = sink;
        // Refcount blocks: every cluster below `total` has refcount 1.
        for b in 0..blocks {
            let mut buf = BytesMut::zeroed(cs as usize);
            let first = b * refcounts_per_block;
            let n = total.saturating_sub(first).min(refcounts_per_block) as usize;
            for i in 0..n {
                buf[i * 2 + 1] = 1;
            }
            sink.append(buf.freeze())?;
        }
        // Refcount table.
        let mut table = BytesMut::zeroed((table_clusters * cs) as usize);
        for b in 0..blocks {
            let off = (blocks_start + b) * cs;
            table[b as usize * 8..b as usize * 8 + 8].copy_from_slice(&off.to_be_bytes());
        }
        sink.append(table.freeze())?;
        // L1 table.
        if l1_clusters > 0 {
            let mut l1 = BytesMut::zeroed((l1_clusters * cs) as usize);
            for (i, e) in self.l1.iter().enumerate() {
                l1[i * 8..i * 8 + 8].copy_from_slice(&e.to_be_bytes());
            }
            sink.append(l1.freeze())?;
        }
        let head = self.header_cluster(
            if l1_clusters > 0 { l1_start * cs } else { 0 },
            table_start * cs,
            table_clusters as u32,
        );
        let image_len = sink.finish(head)?;
        Ok(ImageSummary {
            image_len,
            data_clusters: self.data_clusters,
            zero_clusters: self.zero_clusters,
        })
    }

    /// Abandons the image (the partial object is removed where the sink can).
    pub fn abort(mut self) {
        if let Some(sink) = self.sink.take() {
            sink.abort();
        }
    }

    fn header_cluster(
        &self,
        l1_offset: u64,
        reftable_offset: u64,
        reftable_clusters: u32,
    ) -> Bytes {
        let mut h = BytesMut::with_capacity(self.cs as usize);
        let backing = self.opts.backing_file.as_deref().unwrap_or("");
        // Extensions start at HEADER_LENGTH; backing format ext = 8 + 8 ("qcow2" padded);
        // encryption ext = 8 + 16; end = 8.
        let ext_len =
            if backing.is_empty() { 8 } else { 16 + 8 } + if self.crypt.is_some() { 24 } else { 0 };
        let backing_offset = if backing.is_empty() {
            0
        } else {
            u64::from(HEADER_LENGTH) + ext_len
        };
        h.put_u32(MAGIC);
        h.put_u32(3);
        h.put_u64(backing_offset);
        h.put_u32(backing.len() as u32);
        h.put_u32(self.opts.cluster_bits);
        // qemu counts the size in 512-byte sectors and rounds DOWN; round up so it sees every
        // byte (the digest index and manifest keep the exact size for restore).
        h.put_u64(self.opts.virtual_size.next_multiple_of(512));
        h.put_u32(if self.crypt.is_some() {
            super::CRYPT_LUKS
        } else {
            0
        });
        h.put_u32(self.l1.len() as u32);
        h.put_u64(l1_offset);
        h.put_u64(reftable_offset);
        h.put_u32(reftable_clusters);
        h.put_u32(0); // nb_snapshots
        h.put_u64(0); // snapshots_offset
        h.put_u64(0); // incompatible
        h.put_u64(0); // compatible
        h.put_u64(0); // autoclear
        h.put_u32(4); // refcount_order
        h.put_u32(HEADER_LENGTH);
        h.put_u8(0); // compression type zlib (unused: nothing is compressed)
        h.put_bytes(0, 7);
        if !backing.is_empty() {
            h.put_u32(EXT_BACKING_FORMAT);
            h.put_u32(5);
            h.put_slice(b"qcow2\0\0\0");
        }
        if let Some((_, offset, len)) = &self.crypt {
            h.put_u32(super::EXT_CRYPTO);
            h.put_u32(16);
            h.put_u64(*offset);
            h.put_u64(*len);
        }
        h.put_u32(super::EXT_END);
        h.put_u32(0);
        h.put_slice(backing.as_bytes());
        h.resize(self.cs as usize, 0);
        h.freeze()
    }
}
