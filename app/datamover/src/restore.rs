//! Restore: hydrate a chain of images into a file or block device.
//!
//! The chain's L2 maps are merged one 512 MiB range at a time (newest layer wins per
//! cluster); only allocated clusters are read, each checked against the top backup's digest
//! index BEFORE it is written. Holes stay holes on a fresh file; on a block device every
//! zero cluster is written as zeros. A mismatch stops the restore naming backup, image and
//! guest offset; nothing unverified reaches the destination.

use std::{
    fs::{File, OpenOptions},
    io::Read,
    os::unix::fs::{FileExt, FileTypeExt},
    path::Path,
    sync::{Arc, mpsc::sync_channel},
};

use bytes::Bytes;

use crate::{
    error::{Error, Result},
    index::{ClusterState, IndexReader},
    object_io::{DirectWrites, Preallocate, WriteMode},
    progress::Progress,
    qcow2::reader::{ClusterMapping, Qcow2Image},
    volume::{BufferPool, is_zero},
};

/// Largest run of clusters read and verified as one piece.
/// (1 MiB, like a backup's chunks: a run stays in the CPU caches from verifying to writing.)
const RUN_BYTES: u64 = 1 << 20;

/// Bytes of runs handed to a worker at once. A changed chain breaks runs at every cluster
/// another layer holds, and holes end them (644 runs of the bench chain's restore), and one
/// hand-over per run cost 2 556 context switches; batched up to 1 MiB: 653, and the
/// verified restore took 0.170 s instead of 0.200 s, 0.335 CPU-s instead of 0.40 (10
/// interleaved rounds under SCHED_FIFO, buffered writes; 2 MiB measured the same; fsynced
/// direct writes unchanged at 0.42-0.43 s, bound by the disk).
const RUN_BATCH_BYTES: u64 = RUN_BYTES;

/// Where one guest cluster comes from after merging the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// Reads zeros.
    Zero,
    /// Data in layer `layer` at `host`; bytes from `valid` on read as zeros (the cluster
    /// straddles the end of that layer's virtual size).
    Data {
        /// Layer index (0 = base).
        layer: usize,
        /// Host offset.
        host: u64,
        /// Valid bytes of the cluster.
        valid: u64,
    },
}

/// A chain of images, base first, top last.
#[derive(Debug)]
pub struct Chain {
    layers: Vec<Qcow2Image>,
    cluster_bits: u32,
    /// Key of the index's keyed digests when the chain is encrypted.
    digest_key: Option<[u8; 32]>,
}

impl Chain {
    /// Builds a chain from members the manifest named (base first). All layers must share the
    /// cluster size. Backing names stored in the images are NOT followed.
    pub fn new(layers: Vec<Qcow2Image>) -> Result<Self> {
        let Some(top) = layers.last() else {
            return Err(Error::Usage("empty chain".into()));
        };
        let cluster_bits = top.header().cluster_bits;
        for l in &layers {
            if l.header().cluster_bits != cluster_bits {
                return Err(Error::image(
                    l.name(),
                    "cluster size differs from the rest of the chain",
                ));
            }
        }
        // All layers encrypted (with the key that opened them) or none.
        let digest_key = top.encryption_key().map(|k| k.index_key());
        if let Some(l) = layers
            .iter()
            .find(|l| l.is_encrypted() != top.is_encrypted())
        {
            return Err(Error::image(
                l.name(),
                "the chain mixes encrypted and unencrypted images",
            ));
        }
        Ok(Self {
            layers,
            cluster_bits,
            digest_key,
        })
    }

    /// Whether the chain is encrypted (its index then holds keyed digests).
    pub fn is_encrypted(&self) -> bool {
        self.digest_key.is_some()
    }

    /// The digest of a cluster as this chain's index records it.
    pub fn digest(&self, cluster: &[u8]) -> [u8; 32] {
        crate::index::cluster_digest(self.digest_key.as_ref(), cluster)
    }

    /// The layers, base first.
    pub fn layers(&self) -> &[Qcow2Image] {
        &self.layers
    }

    /// Guest size (the top image's).
    pub fn virtual_size(&self) -> u64 {
        self.layers.last().map_or(0, |t| t.header().size)
    }

    /// Cluster size.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Guest clusters per L2 range.
    pub fn range_clusters(&self) -> u64 {
        self.cluster_size() / 8
    }

    /// Number of L2 ranges of the guest.
    pub fn ranges(&self) -> u64 {
        self.virtual_size()
            .div_ceil(self.cluster_size())
            .div_ceil(self.range_clusters())
    }

    /// Merged mapping of the guest clusters of L2 range `k` (truncated at the guest end).
    pub fn resolve_range(&self, k: u64) -> Result<Vec<Resolved>> {
        let cs = self.cluster_size();
        let per = self.range_clusters();
        let first = k * per;
        let guest_clusters = self.virtual_size().div_ceil(cs);
        let n = per.min(guest_clusters.saturating_sub(first)) as usize;
        let mut out: Vec<Option<Resolved>> = vec![None; n];
        // Top down; below a layer whose size ends before a cluster, that cluster reads zeros.
        for (li, layer) in self.layers.iter().enumerate().rev() {
            if out.iter().all(Option::is_some) {
                break;
            }
            let size = layer.header().size;
            let maps = if k < layer.l1_ranges() {
                layer.l2_mappings(k)?
            } else {
                Vec::new()
            };
            for (i, slot) in out.iter_mut().enumerate() {
                if slot.is_some() {
                    continue;
                }
                let g = first + i as u64;
                if g * cs >= size {
                    *slot = Some(Resolved::Zero);
                    continue;
                }
                match maps.get(i).copied().unwrap_or(ClusterMapping::Unallocated) {
                    ClusterMapping::Unallocated => {}
                    ClusterMapping::Zero => *slot = Some(Resolved::Zero),
                    ClusterMapping::Data(host) => {
                        *slot = Some(Resolved::Data {
                            layer: li,
                            host,
                            valid: (size - g * cs).min(cs),
                        })
                    }
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or(Resolved::Zero))
            .collect())
    }
}

/// The destination of a restore.
#[derive(Debug)]
pub struct Destination {
    file: File,
    name: String,
    /// Zero clusters must be written (block device, or an existing file we do not truncate).
    zero_fill: bool,
    /// A block device (sized by the device, never resized).
    is_block: bool,
    /// `fallocate` zeroing still worth trying (cleared at the first "not supported").
    offload_zeroing: std::sync::atomic::AtomicBool,
    /// Allocates each range's data before it is written.
    preallocate: Preallocate,
    /// Direct writes of verified data (see [`DirectWrites`]).
    direct: DirectWrites,
}

impl Destination {
    /// Opens `path`: a block device is written in place (zeros written where needed); a
    /// regular file is created or truncated (and sized by the restore), so holes stay holes.
    pub fn open(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let is_block = std::fs::metadata(path)
            .map(|m| m.file_type().is_block_device())
            .unwrap_or(false);
        let file = OpenOptions::new()
            .write(true)
            .create(!is_block)
            .truncate(!is_block)
            .open(path)
            .map_err(|e| Error::io("open destination", &name, e))?;
        Ok(Self {
            preallocate: Preallocate::for_file(&file),
            file,
            name,
            zero_fill: is_block,
            is_block,
            offload_zeroing: true.into(),
            direct: DirectWrites::open(path, WriteMode::for_output(true)),
        })
    }

    /// Opens an existing file or block device to be overwritten in place: nothing is
    /// truncated, and every cluster that must read as zeros is written with zeros (what a
    /// pre-used volume needs).
    pub fn open_in_place(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let is_block = std::fs::metadata(path)
            .map(|m| m.file_type().is_block_device())
            .map_err(|e| Error::io("open destination", &name, e))?;
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open destination", &name, e))?;
        Ok(Self {
            preallocate: Preallocate::for_file(&file),
            file,
            name,
            zero_fill: true,
            is_block,
            offload_zeroing: true.into(),
            direct: DirectWrites::open(path, WriteMode::for_output(true)),
        })
    }

    /// Makes `[off, off + len)` read as zeros. A block device is asked to zero the range
    /// itself (`fallocate(FALLOC_FL_ZERO_RANGE)`, the kernel's `BLKZEROOUT`: WRITE ZEROES or
    /// an unmap that guarantees zeros where the device has one); a file gets a hole punched
    /// (it stays sparse). Where that is not supported (old kernels, tmpfs, some NFS servers)
    /// zeros are written. Returns whether the range was zeroed without writing zeros.
    fn zero_range(&self, off: u64, len: u64) -> Result<bool> {
        use rustix::fs::FallocateFlags as F;
        use std::sync::atomic::Ordering::Relaxed;
        if self.offload_zeroing.load(Relaxed) {
            let mode = if self.is_block {
                F::ZERO_RANGE | F::KEEP_SIZE
            } else {
                F::PUNCH_HOLE | F::KEEP_SIZE
            };
            match rustix::fs::fallocate(&self.file, mode, off, len) {
                Ok(()) => return Ok(true),
                Err(
                    rustix::io::Errno::OPNOTSUPP
                    | rustix::io::Errno::NOSYS
                    | rustix::io::Errno::INVAL
                    | rustix::io::Errno::NODEV
                    | rustix::io::Errno::NOTTY,
                ) => self.offload_zeroing.store(false, Relaxed),
                Err(e) => return Err(Error::io("zero a range of", &self.name, e.into())),
            }
        }
        static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(ZEROS.len() as u64) as usize;
            self.file
                .write_all_at(&ZEROS[..n], off + done)
                .map_err(|e| Error::io("write", &self.name, e))?;
            done += n as u64;
        }
        Ok(false)
    }

    /// Writes data with `mode` ([`Self::open`] and [`Self::open_in_place`] use direct I/O,
    /// the measured choice for a restore that is fsynced: see [`WriteMode::for_output`]).
    pub fn with_write_mode(mut self, mode: WriteMode) -> Self {
        self.direct = DirectWrites::open(Path::new(&self.name), mode);
        self
    }

    /// Disables `fallocate` zeroing (tests of the zero-writing fallback).
    #[doc(hidden)]
    pub fn without_offloaded_zeroing(self) -> Self {
        self.offload_zeroing
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self
    }

    fn prepare(&self, size: u64) -> Result<()> {
        if self.is_block {
            let mut f = &self.file;
            let len = std::io::Seek::seek(&mut f, std::io::SeekFrom::End(0))
                .map_err(|e| Error::io("size destination", &self.name, e))?;
            if len < size {
                return Err(Error::Usage(format!(
                    "destination {} holds {len} bytes, the volume needs {size}",
                    self.name
                )));
            }
            Ok(())
        } else {
            self.file
                .set_len(size)
                .map_err(|e| Error::io("size destination", &self.name, e))
        }
    }
}

/// A restore request.
pub struct RestoreJob<'a, R: Read> {
    /// The chain (members from the manifest).
    pub chain: &'a Chain,
    /// The top backup's index; `None` only for images made by other tools (no verification).
    pub index: Option<IndexReader<R>>,
    /// Backup id for error messages.
    pub backup_id: &'a str,
    /// Progress.
    pub progress: &'a dyn Progress,
    /// fsync the destination at the end.
    pub durable: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Guest size.
    pub virtual_size: u64,
    /// Bytes of data written.
    pub bytes_written: u64,
    /// Bytes zeroed by the device or filesystem (`fallocate`), without writing zeros.
    pub bytes_zeroed_offloaded: u64,
    /// Bytes zeroed by writing zeros (fallback).
    pub bytes_zeros_written: u64,
}

/// Work for the restore workers.
enum Job {
    /// Read, verify and write runs of clusters.
    Runs(Vec<RunJob>),
    /// Make `(offset, length)` read as zeros.
    Zero(u64, u64),
}

/// Clusters contiguous in one layer, read and verified as one piece.
struct RunJob {
    layer: usize,
    host: u64,
    first: u64,
    /// Per cluster: the index's state (None without an index) and the valid byte count.
    checks: Vec<(Option<ClusterState>, u64)>,
}

fn stopped() -> Error {
    Error::Usage("restore pipeline stopped".into())
}

/// Reads a run and checks every cluster against the index; returns what to write.
fn verify_run(
    chain: &Chain,
    job: &RunJob,
    pool: &Arc<BufferPool>,
    size: u64,
    mismatch: &dyn Fn(u64, &str, String) -> Error,
) -> Result<(u64, Bytes, usize)> {
    let cs = chain.cluster_size();
    let layer = &chain.layers[job.layer];
    let count = job.checks.len() as u64;
    let len = (count * cs) as usize;
    // Straight from the page cache when every cluster is whole; otherwise a buffer whose
    // clusters' tails past the layer's end can be zeroed.
    let whole = job.checks.iter().all(|(_, valid)| *valid == cs);
    let data = match whole.then(|| layer.map_host(job.host, len)).flatten() {
        Some(m) => m,
        None => {
            let mut chunk = pool.take(len);
            let buf = chunk.as_mut_slice();
            layer.read_host(job.host, buf)?;
            for (c, (_, valid)) in job.checks.iter().enumerate() {
                let c = c as u64;
                if *valid < cs {
                    buf[(c * cs + valid) as usize..((c + 1) * cs) as usize].fill(0);
                }
            }
            Bytes::from_owner(chunk)
        }
    };
    for (c, (want, _)) in job.checks.iter().enumerate() {
        let c = c as u64;
        let cluster = &data[(c * cs) as usize..((c + 1) * cs) as usize];
        let bad = match want {
            Some(ClusterState::Data(h)) => {
                (chain.digest(cluster) != *h).then_some("does not match its recorded BLAKE3 digest")
            }
            Some(_) => (!is_zero(cluster)).then_some("holds data where the index records zeros"),
            None => None,
        };
        if let Some(what) = bad {
            return Err(mismatch(
                (job.first + c) * cs,
                layer.name(),
                format!("cluster at host offset {:#x} {what}", job.host + c * cs),
            ));
        }
    }
    // Clip the last cluster at the guest end.
    let start = job.first * cs;
    let len = ((count * cs).min(size - start)) as usize;
    Ok((start, data, len))
}

/// Restores `job.chain` into `dest`.
pub fn run_restore<R: Read>(job: RestoreJob<'_, R>, dest: &Destination) -> Result<RestoreSummary> {
    let chain = job.chain;
    let cs = chain.cluster_size();
    let mut size = chain.virtual_size();
    let mut index = job.index;
    if let Some(ix) = &index {
        let h = ix.header();
        // The image header rounds the size up to 512 bytes (for qemu); the index is exact.
        if h.virtual_size.next_multiple_of(512) != size || h.cluster_bits != chain.cluster_bits {
            return Err(Error::DigestMismatch {
                backup: job.backup_id.to_string(),
                image: "index".into(),
                offset: 0,
                detail: format!(
                    "index describes a {} byte volume with 2^{} byte clusters, the image {} bytes with 2^{}",
                    h.virtual_size, h.cluster_bits, size, chain.cluster_bits
                ),
            });
        }
        h.check_digest_kind(
            &format!("index of backup {}", job.backup_id),
            chain.is_encrypted(),
        )?;
        size = h.virtual_size;
    }
    dest.prepare(size)?;
    // Pipeline without per-range barriers: this thread merges the L2 maps and reads the
    // index, sending runs to workers that read, verify and write them (direct I/O where the
    // destination supports it). Buffers are pooled; every queue is bounded, so memory is too.
    let pool = Arc::new(BufferPool::default());
    // At least 4: with direct writes a worker waits for the device after verifying its run,
    // and the others keep hashing (and keep several writes in flight) meanwhile. Buffered
    // writes serialise on the destination's inode lock, and a worker waiting for it leaves
    // its core to another worker's hashing. (One worker per core for buffered writes was
    // tried: the same CPU time, and no better wall time on the loaded box, 0.65 s against
    // 0.47 s in one A/B; kept at 4.)
    let workers = std::thread::available_parallelism().map_or(4, |n| n.get().clamp(4, 8));
    let failed = std::sync::atomic::AtomicBool::new(false);
    let first_error: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
    let fail = |e: Error| {
        failed.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut slot) = first_error.lock()
            && slot.is_none()
        {
            *slot = Some(e);
        }
    };
    let mismatch = |offset: u64, image: &str, detail: String| Error::DigestMismatch {
        backup: job.backup_id.to_string(),
        image: image.to_string(),
        offset,
        detail,
    };
    let written = std::sync::atomic::AtomicU64::new(0);
    let zeroed = std::sync::atomic::AtomicU64::new(0);
    let zeros_written = std::sync::atomic::AtomicU64::new(0);
    // Each worker reads (maps), verifies and writes its run itself, so the bytes it hashed
    // are still in its core's cache when it copies them into the destination (a separate
    // writer thread re-read them from DRAM). Workers never stop receiving before the queue
    // closes — after a failure they drain it without working — so the producer's blocking
    // send cannot hang.
    let (jtx, jrx) = sync_channel::<Job>(workers * 2);
    let jrx = std::sync::Mutex::new(jrx);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (jrx, pool, fail, mismatch, failed) = (&jrx, &pool, &fail, &mismatch, &failed);
            let (written, zeroed, zeros_written) = (&written, &zeroed, &zeros_written);
            scope.spawn(move || {
                loop {
                    let job = match jrx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    if failed.load(std::sync::atomic::Ordering::Relaxed) {
                        continue;
                    }
                    let r = match job {
                        Job::Runs(runs) => runs.iter().try_for_each(|run| {
                            let (off, data, len) = verify_run(chain, run, pool, size, mismatch)?;
                            dest.direct
                                .write_all_at(&dest.file, &data[..len], off)
                                .map_err(|e| Error::io("write", &dest.name, e))?;
                            written.fetch_add(len as u64, std::sync::atomic::Ordering::Relaxed);
                            Ok(())
                        }),
                        Job::Zero(off, len) => dest.zero_range(off, len).map(|offloaded| {
                            let counter = if offloaded { zeroed } else { zeros_written };
                            counter.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
                        }),
                    };
                    if let Err(e) = r {
                        fail(e);
                    }
                }
            });
        }
        let send_batch =
            |b: Vec<RunJob>| -> Result<()> { jtx.send(Job::Runs(b)).map_err(|_| stopped()) };
        let push = |batch: &mut Vec<RunJob>, batched: &mut u64, j: RunJob| -> Result<()> {
            *batched += j.checks.len() as u64 * cs;
            batch.push(j);
            if *batched >= RUN_BATCH_BYTES {
                *batched = 0;
                send_batch(std::mem::take(batch))?;
            }
            Ok(())
        };
        let mut produce = || -> Result<()> {
            let mut batch: Vec<RunJob> = Vec::new();
            let mut batched = 0u64;
            for k in 0..chain.ranges() {
                if failed.load(std::sync::atomic::Ordering::Relaxed) {
                    return Ok(());
                }
                let resolved = chain.resolve_range(k)?;
                let first = k * chain.range_clusters();
                let mut expected: Vec<Option<ClusterState>> = Vec::with_capacity(resolved.len());
                if let Some(ix) = index.as_mut() {
                    for _ in 0..resolved.len() {
                        expected.push(Some(ix.next_cluster()?.ok_or_else(|| {
                            mismatch(first * cs, "index", "index ended early".into())
                        })?));
                    }
                }
                let mut run: Option<RunJob> = None;
                let mut runs: Vec<RunJob> = Vec::new();
                let mut zero_runs: Vec<(u64, u64)> = Vec::new();
                for (i, r) in resolved.iter().enumerate() {
                    let g = first + i as u64;
                    let want = expected.get(i).copied().flatten();
                    match *r {
                        Resolved::Zero => {
                            if let Some(ClusterState::Data(_)) = want {
                                return Err(mismatch(
                                    g * cs,
                                    chain.layers.last().map_or("", |l| l.name()),
                                    "the index records data but the chain has none (an image is missing clusters)".into(),
                                ));
                            }
                            match zero_runs.last_mut() {
                                Some((s, n)) if *s + *n == g => *n += 1,
                                _ => zero_runs.push((g, 1)),
                            }
                        }
                        Resolved::Data { layer, host, valid } => {
                            let extends = run.as_ref().is_some_and(|j| {
                                j.layer == layer
                                    && j.first + j.checks.len() as u64 == g
                                    && j.host + j.checks.len() as u64 * cs == host
                                    && (j.checks.len() as u64 + 1) * cs <= RUN_BYTES
                            });
                            if !extends && let Some(j) = run.take() {
                                runs.push(j);
                            }
                            run.get_or_insert_with(|| RunJob {
                                layer,
                                host,
                                first: g,
                                checks: Vec::new(),
                            })
                            .checks
                            .push((want, valid));
                        }
                    }
                }
                runs.extend(run.take());
                // The range's data extents, allocated in guest order before any is written
                // (see [`Preallocate`]; one call per data span: the bench chain's restore
                // makes 219, 21 ms in all even under strace, which slows every call).
                let mut span: Option<(u64, u64)> = None;
                for j in &runs {
                    let start = j.first * cs;
                    let end = ((j.first + j.checks.len() as u64) * cs).min(size);
                    match &mut span {
                        Some((_, e)) if *e == start => *e = end,
                        _ => {
                            if let Some((s, e)) = span.replace((start, end)) {
                                dest.preallocate.range(&dest.file, &dest.name, s, e - s)?;
                            }
                        }
                    }
                }
                if let Some((s, e)) = span {
                    dest.preallocate.range(&dest.file, &dest.name, s, e - s)?;
                }
                for j in runs {
                    push(&mut batch, &mut batched, j)?;
                }
                if dest.zero_fill {
                    for (s, n) in zero_runs {
                        let off = s * cs;
                        let end = ((s + n) * cs).min(size);
                        if end > off {
                            jtx.send(Job::Zero(off, end - off)).map_err(|_| stopped())?;
                        }
                    }
                }
                job.progress
                    .update(((first + resolved.len() as u64) * cs).min(size), size);
            }
            if !batch.is_empty() {
                send_batch(batch)?;
            }
            Ok(())
        };
        if let Err(e) = produce() {
            fail(e);
        }
        drop(jtx);
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    let written = written.into_inner();
    if let Some(ix) = index {
        ix.finish()?;
    }
    if job.durable {
        dest.file
            .sync_all()
            .map_err(|e| Error::io("fsync", &dest.name, e))?;
    }
    Ok(RestoreSummary {
        virtual_size: size,
        bytes_written: written,
        bytes_zeroed_offloaded: zeroed.into_inner(),
        bytes_zeros_written: zeros_written.into_inner(),
    })
}
