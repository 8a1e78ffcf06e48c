//! The per-cluster digest index written beside every image (`index` object).
//!
//! It records, for every cluster of the virtual disk, the state of the WHOLE volume at that
//! backup — not just what the image holds — so an incremental compares the source with the
//! parent's index alone and never reads old images back. Restore and verify check every
//! cluster they read against it.
//!
//! Format (little-endian), read and written strictly sequentially so memory stays bounded
//! whatever the volume size:
//!
//! ```text
//! header  "TVKCIDX1" | version u32 (1 or 2) | cluster_bits u32 | virtual_size u64 | cluster_count u64
//! record  0x01 count:u64                      `count` unallocated clusters (holes)
//!         0x02 count:u64                      `count` clusters that read as zeros
//!         0x03 count:u32 count × [u8; 32]     data clusters, BLAKE3-256 of each cluster
//!                                             (the last partial cluster padded with zeros)
//! trailer 0xFF BLAKE3-256 of every byte before the trailer tag
//! ```
//!
//! Version 1 holds plain BLAKE3 digests. Version 2 (encrypted backups) holds keyed BLAKE3
//! digests (`blake3::keyed_hash` with [`crate::crypt::EncryptionKey::index_key`], derived from
//! the user's key): plain digests beside encrypted images would let anyone who can read the
//! target confirm guessed cluster contents. A reader knows which kind it holds from the
//! version; an incremental refuses a parent index of the other kind.
//!
//! Runs of holes and zeros are one record each; data records hold at most
//! [`MAX_DATA_RUN`] digests. Readers check the magic, version, that the records add up to
//! exactly `cluster_count`, and the trailer checksum — [`IndexReader::finish`] must be called
//! before anything read is trusted for a commit.

use std::io::{BufReader, Read};

use bytes::{BufMut, Bytes, BytesMut};

use crate::{
    error::{Error, Result},
    object_io::ObjectSink,
};

const MAGIC: &[u8; 8] = b"TVKCIDX1";
const VERSION: u32 = 1;
/// Same layout, keyed BLAKE3 digests.
const VERSION_KEYED: u32 = 2;
const TAG_UNALLOCATED: u8 = 0x01;
const TAG_ZERO: u8 = 0x02;
const TAG_DATA: u8 = 0x03;
const TAG_TRAILER: u8 = 0xFF;
/// Most digests in one data record.
pub const MAX_DATA_RUN: u32 = 4096;
const HEADER_LEN: usize = 32;

/// State of one guest cluster at a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// A hole in the source (reads as zeros).
    Unallocated,
    /// Allocated in the source but all zeros.
    Zero,
    /// Data with this BLAKE3-256 digest.
    Data([u8; 32]),
}

impl ClusterState {
    /// Whether the cluster reads as zeros.
    pub fn reads_zero(&self) -> bool {
        !matches!(self, ClusterState::Data(_))
    }
}

/// Index geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHeader {
    /// log2 cluster size.
    pub cluster_bits: u32,
    /// Volume size in bytes.
    pub virtual_size: u64,
    /// Number of clusters.
    pub cluster_count: u64,
    /// Digests are keyed BLAKE3 (encrypted backups; index version 2).
    pub keyed: bool,
}

impl IndexHeader {
    /// Checks that the index holds the kind of digests the chain needs (keyed for an encrypted
    /// chain, plain otherwise).
    pub fn check_digest_kind(&self, index: &str, keyed: bool) -> Result<()> {
        match (self.keyed, keyed) {
            (true, false) => Err(Error::index(
                index,
                "the index holds keyed digests of an encrypted backup, but the images are read without encryption",
            )),
            (false, true) => Err(Error::index(
                index,
                "the index holds plain digests of an unencrypted backup, but the images are encrypted",
            )),
            _ => Ok(()),
        }
    }
}

/// The digest of one cluster as the index records it: BLAKE3, keyed with `key` for encrypted
/// backups.
pub fn cluster_digest(key: Option<&[u8; 32]>, data: &[u8]) -> [u8; 32] {
    match key {
        Some(k) => *blake3::keyed_hash(k, data).as_bytes(),
        None => *blake3::hash(data).as_bytes(),
    }
}

/// Streams an index out to a sink.
pub struct IndexWriter {
    sink: Option<Box<dyn ObjectSink>>,
    buf: BytesMut,
    hasher: blake3::Hasher,
    header: IndexHeader,
    written: u64,
    run: Run,
}

impl std::fmt::Debug for IndexWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexWriter")
            .field("header", &self.header)
            .finish()
    }
}

enum Run {
    None,
    Unallocated(u64),
    Zero(u64),
    Data(Vec<[u8; 32]>),
}

/// What an index write produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSummary {
    /// Object length.
    pub len: u64,
    /// BLAKE3 of the whole object.
    pub blake3: String,
}

const FLUSH_AT: usize = 1 << 20;

impl IndexWriter {
    /// Starts an index for a volume of `virtual_size` bytes with `cluster_bits` clusters.
    /// The sink must reserve no head.
    pub fn new(sink: Box<dyn ObjectSink>, cluster_bits: u32, virtual_size: u64) -> Self {
        let cluster_count = virtual_size.div_ceil(1 << cluster_bits);
        let mut buf = BytesMut::with_capacity(FLUSH_AT + 4096);
        buf.put_slice(MAGIC);
        buf.put_u32_le(VERSION);
        buf.put_u32_le(cluster_bits);
        buf.put_u64_le(virtual_size);
        buf.put_u64_le(cluster_count);
        Self {
            sink: Some(sink),
            buf,
            hasher: blake3::Hasher::new(),
            header: IndexHeader {
                cluster_bits,
                virtual_size,
                cluster_count,
                keyed: false,
            },
            written: 0,
            run: Run::None,
        }
    }

    /// Marks the index as holding keyed digests (version 2); call before the first push.
    pub fn with_keyed_digests(mut self, keyed: bool) -> Self {
        if keyed {
            self.header.keyed = true;
            self.buf[8..12].copy_from_slice(&VERSION_KEYED.to_le_bytes());
        }
        self
    }

    /// Appends the next cluster's state (clusters in order from 0).
    pub fn push(&mut self, state: ClusterState) -> Result<()> {
        if self.written >= self.header.cluster_count {
            return Err(Error::Usage(
                "internal error: more index entries than clusters".into(),
            ));
        }
        self.written += 1;
        match (&mut self.run, state) {
            (Run::Unallocated(n), ClusterState::Unallocated) => *n += 1,
            (Run::Zero(n), ClusterState::Zero) => *n += 1,
            (Run::Data(v), ClusterState::Data(h)) if v.len() < MAX_DATA_RUN as usize => v.push(h),
            _ => {
                self.emit_run()?;
                self.run = match state {
                    ClusterState::Unallocated => Run::Unallocated(1),
                    ClusterState::Zero => Run::Zero(1),
                    ClusterState::Data(h) => {
                        let mut v = Vec::with_capacity(64);
                        v.push(h);
                        Run::Data(v)
                    }
                };
            }
        }
        Ok(())
    }

    /// Appends `count` clusters of the same hole/zero state.
    pub fn push_many(&mut self, state: ClusterState, count: u64) -> Result<()> {
        match state {
            ClusterState::Data(_) => {
                for _ in 0..count {
                    self.push(state)?;
                }
                Ok(())
            }
            _ => {
                if count == 0 {
                    return Ok(());
                }
                self.push(state)?;
                let rest = count - 1;
                if self.written + rest > self.header.cluster_count {
                    return Err(Error::Usage(
                        "internal error: more index entries than clusters".into(),
                    ));
                }
                self.written += rest;
                match &mut self.run {
                    Run::Unallocated(n) | Run::Zero(n) => *n += rest,
                    _ => {}
                }
                Ok(())
            }
        }
    }

    fn emit_run(&mut self) -> Result<()> {
        match std::mem::replace(&mut self.run, Run::None) {
            Run::None => {}
            Run::Unallocated(n) => {
                self.buf.put_u8(TAG_UNALLOCATED);
                self.buf.put_u64_le(n);
            }
            Run::Zero(n) => {
                self.buf.put_u8(TAG_ZERO);
                self.buf.put_u64_le(n);
            }
            Run::Data(v) => {
                self.buf.put_u8(TAG_DATA);
                self.buf.put_u32_le(v.len() as u32);
                for h in &v {
                    self.buf.put_slice(h);
                }
            }
        }
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let chunk = self.buf.split().freeze();
        self.hasher.update(&chunk);
        match self.sink.as_mut() {
            Some(s) => s.append(chunk),
            None => Err(Error::Usage("index writer used after finish".into())),
        }
    }

    /// Writes the trailer and completes the object. Fails unless every cluster was pushed.
    pub fn finish(mut self) -> Result<IndexSummary> {
        if self.written != self.header.cluster_count {
            return Err(Error::Usage(format!(
                "internal error: index has {} of {} clusters",
                self.written, self.header.cluster_count
            )));
        }
        self.emit_run()?;
        self.flush()?;
        let checksum = self.hasher.finalize();
        let mut trailer = BytesMut::with_capacity(33);
        trailer.put_u8(TAG_TRAILER);
        trailer.put_slice(checksum.as_bytes());
        let trailer = trailer.freeze();
        self.hasher.update(&trailer);
        let whole = self.hasher.finalize().to_hex().to_string();
        let mut sink = self
            .sink
            .take()
            .ok_or_else(|| Error::Usage("index writer finished twice".into()))?;
        sink.append(trailer)?;
        let len = sink.finish(Bytes::new())?;
        Ok(IndexSummary { len, blake3: whole })
    }

    /// Abandons the index.
    pub fn abort(mut self) {
        if let Some(s) = self.sink.take() {
            s.abort();
        }
    }
}

/// Streams an index in, cluster by cluster, validating as it goes.
pub struct IndexReader<R: Read> {
    name: String,
    r: BufReader<R>,
    hasher: blake3::Hasher,
    header: IndexHeader,
    position: u64,
    run_left: u64,
    run_kind: u8,
    whole: blake3::Hasher,
}

impl<R: Read> std::fmt::Debug for IndexReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexReader")
            .field("name", &self.name)
            .field("header", &self.header)
            .finish()
    }
}

impl<R: Read> IndexReader<R> {
    /// Reads and validates the header.
    pub fn new(name: &str, r: R) -> Result<Self> {
        let mut me = Self {
            name: name.to_string(),
            r: BufReader::with_capacity(256 << 10, r),
            hasher: blake3::Hasher::new(),
            header: IndexHeader {
                cluster_bits: 0,
                virtual_size: 0,
                cluster_count: 0,
                keyed: false,
            },
            position: 0,
            run_left: 0,
            run_kind: 0,
            whole: blake3::Hasher::new(),
        };
        let mut h = [0u8; HEADER_LEN];
        me.read(&mut h)?;
        if &h[0..8] != MAGIC {
            return Err(Error::index(name, "not a digest index (bad magic)"));
        }
        let version = le32(&h[8..12]);
        if version != VERSION && version != VERSION_KEYED {
            return Err(Error::index(
                name,
                format!("unsupported index version {version}"),
            ));
        }
        let cluster_bits = le32(&h[12..16]);
        if !(crate::qcow2::MIN_CLUSTER_BITS..=crate::qcow2::MAX_CLUSTER_BITS)
            .contains(&cluster_bits)
        {
            return Err(Error::index(
                name,
                format!("invalid cluster_bits {cluster_bits}"),
            ));
        }
        let virtual_size = le64(&h[16..24]);
        let cluster_count = le64(&h[24..32]);
        if virtual_size > crate::qcow2::MAX_VIRTUAL_SIZE
            || cluster_count != virtual_size.div_ceil(1 << cluster_bits)
        {
            return Err(Error::index(
                name,
                format!("cluster count {cluster_count} does not match virtual size {virtual_size}"),
            ));
        }
        me.header = IndexHeader {
            cluster_bits,
            virtual_size,
            cluster_count,
            keyed: version == VERSION_KEYED,
        };
        Ok(me)
    }

    /// The header.
    pub fn header(&self) -> IndexHeader {
        self.header
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<()> {
        self.r.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::index(&self.name, "truncated index")
            } else {
                Error::io("read", &self.name, e)
            }
        })?;
        self.hasher.update(buf);
        self.whole.update(buf);
        Ok(())
    }

    /// Number of clusters consumed so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next cluster's state, or `None` after the last cluster.
    pub fn next_cluster(&mut self) -> Result<Option<ClusterState>> {
        if self.position >= self.header.cluster_count {
            return Ok(None);
        }
        if self.run_left == 0 {
            let mut tag = [0u8; 1];
            self.read(&mut tag)?;
            let count = match tag[0] {
                TAG_UNALLOCATED | TAG_ZERO => {
                    let mut c = [0u8; 8];
                    self.read(&mut c)?;
                    u64::from_le_bytes(c)
                }
                TAG_DATA => {
                    let mut c = [0u8; 4];
                    self.read(&mut c)?;
                    let n = u32::from_le_bytes(c);
                    if n > MAX_DATA_RUN {
                        return Err(Error::index(
                            &self.name,
                            format!("data record of {n} digests exceeds {MAX_DATA_RUN}"),
                        ));
                    }
                    u64::from(n)
                }
                TAG_TRAILER => {
                    return Err(Error::index(
                        &self.name,
                        format!(
                            "index ends after {} of {} clusters",
                            self.position, self.header.cluster_count
                        ),
                    ));
                }
                t => {
                    return Err(Error::index(
                        &self.name,
                        format!("unknown record tag {t:#x}"),
                    ));
                }
            };
            if count == 0 || count > self.header.cluster_count - self.position {
                return Err(Error::index(
                    &self.name,
                    format!(
                        "record of {count} clusters at cluster {} overruns or is empty",
                        self.position
                    ),
                ));
            }
            self.run_left = count;
            self.run_kind = tag[0];
        }
        self.run_left -= 1;
        self.position += 1;
        Ok(Some(match self.run_kind {
            TAG_UNALLOCATED => ClusterState::Unallocated,
            TAG_ZERO => ClusterState::Zero,
            _ => {
                let mut h = [0u8; 32];
                self.read(&mut h)?;
                ClusterState::Data(h)
            }
        }))
    }

    /// Reads to the end and checks the trailer checksum; returns the BLAKE3 of the whole
    /// object (to compare with the manifest).
    pub fn finish(mut self) -> Result<String> {
        while self.next_cluster()?.is_some() {}
        let before = self.hasher.finalize();
        let mut tag = [0u8; 1];
        self.read(&mut tag)?;
        if tag[0] != TAG_TRAILER {
            return Err(Error::index(
                &self.name,
                "records continue past the last cluster",
            ));
        }
        let mut sum = [0u8; 32];
        self.read(&mut sum)?;
        if sum != *before.as_bytes() {
            return Err(Error::index(
                &self.name,
                "index checksum mismatch: the index is damaged",
            ));
        }
        let mut extra = [0u8; 1];
        match self.r.read(&mut extra) {
            Ok(0) => {}
            Ok(_) => return Err(Error::index(&self.name, "bytes after the index trailer")),
            Err(e) => return Err(Error::io("read", &self.name, e)),
        }
        Ok(self.whole.finalize().to_hex().to_string())
    }
}

fn le32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}
