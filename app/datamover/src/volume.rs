//! Sparse, pipelined reading of a source volume (file or block device).
//!
//! A reader thread walks the ranges to examine, finds data extents with
//! `SEEK_DATA`/`SEEK_HOLE` (a block device, or a filesystem without them, is read whole), and
//! sends cluster-aligned chunks of up to [`CHUNK_BYTES`] in volume order through a bounded
//! channel — so reading overlaps hashing and writing, and memory stays bounded.

use std::{
    fs::File,
    os::unix::fs::FileExt,
    path::Path,
    sync::{Arc, Mutex},
    thread::JoinHandle,
};

use bytes::Bytes;
use rustix::{fs::SeekFrom, io::Errno};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Bytes per chunk read.
/// 1 MiB: measured against 256 KiB – 4 MiB on the 4 GiB bench volume, it keeps a chunk in the
/// CPU caches from hashing to writing (4 MiB chunks made the writer's copy read DRAM again).
pub const CHUNK_BYTES: u64 = 1 << 20;

/// A byte range of the volume, shaped like one entry of CSI SnapshotMetadata's
/// `GetMetadataDelta` response (`{"offset":..,"length":..}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteRange {
    /// Start, in bytes.
    pub offset: u64,
    /// Length, in bytes.
    pub length: u64,
}

/// Recycles chunk buffers: fresh 4 MiB allocations cost a page fault and a clear per 4 KiB
/// page, which profiling showed as a quarter of a full backup's CPU time.
#[derive(Debug, Default)]
pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
}

/// Buffers kept for reuse (bounds the pool's memory to 16 × [`CHUNK_BYTES`]).
const POOL_KEEP: usize = 16;

impl BufferPool {
    /// A buffer of exactly `len` bytes with unspecified contents. Pooled vectors keep their
    /// full length, so reuse never zero-fills again.
    pub fn take(self: &Arc<Self>, len: usize) -> ChunkBuffer {
        let mut data = self
            .free
            .lock()
            .ok()
            .and_then(|mut f| f.pop())
            .unwrap_or_default();
        if data.len() < len {
            data.resize(len.max(CHUNK_BYTES as usize), 0);
        }
        ChunkBuffer {
            data,
            len,
            pool: Some(self.clone()),
        }
    }
}

/// A chunk of volume data; returns to its pool when the last reference is dropped.
#[derive(Debug)]
pub struct ChunkBuffer {
    data: Vec<u8>,
    len: usize,
    pool: Option<Arc<BufferPool>>,
}

impl ChunkBuffer {
    /// The bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.data[..self.len]
    }
}

impl AsRef<[u8]> for ChunkBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

impl Drop for ChunkBuffer {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take()
            && let Ok(mut free) = pool.free.lock()
            && free.len() < POOL_KEEP
        {
            free.push(std::mem::take(&mut self.data));
        }
    }
}

/// Reads a changed-block list (JSON array of [`ByteRange`]).
pub fn read_changed_blocks(path: &Path) -> Result<Vec<ByteRange>> {
    let text = std::fs::read(path).map_err(|e| Error::io("read", path.display(), e))?;
    serde_json::from_slice(&text).map_err(|e| {
        Error::Usage(format!(
            "changed-block list {} is not a JSON array of {{\"offset\",\"length\"}}: {e}",
            path.display()
        ))
    })
}

/// One piece of the volume, in order.
#[derive(Debug)]
pub enum Piece {
    /// Clusters examined and found to be holes.
    Hole {
        /// First cluster.
        first: u64,
        /// Count.
        count: u64,
    },
    /// Clusters not examined (unchanged per the changed-block list).
    Unchanged {
        /// First cluster.
        first: u64,
        /// Count.
        count: u64,
    },
    /// Clusters read; `data` is whole clusters (the last partial cluster zero-padded): a
    /// read-only mapping of the source's page cache, or a pooled buffer.
    Data {
        /// First cluster.
        first: u64,
        /// The bytes.
        data: Bytes,
    },
}

/// An opened source volume.
#[derive(Debug)]
pub struct SourceVolume {
    mapped: MappedFile,
    size: u64,
    name: String,
}

impl SourceVolume {
    /// Opens a file or block device read-only.
    pub fn open(path: &Path) -> Result<Self> {
        let file =
            File::open(path).map_err(|e| Error::io("open source volume", path.display(), e))?;
        let size = rustix::fs::seek(&file, SeekFrom::End(0))
            .map_err(|e| Error::io("seek", path.display(), e.into()))?;
        Ok(Self {
            mapped: MappedFile::new(file, size),
            size,
            name: path.display().to_string(),
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Starts the reader thread ("tvk-read"), which hands every piece (in volume order) to
    /// `deliver` as `Ok(Some(piece))`, then `Ok(None)` after the last one or an error instead,
    /// until `deliver` returns `false` (the consumer stopped). `examine`
    /// lists cluster ranges `[start, end)` to read, sorted and disjoint; `None` = the whole
    /// volume. Everything else is reported `Unchanged`.
    pub fn stream<F>(
        self,
        cluster_bits: u32,
        examine: Option<Vec<(u64, u64)>>,
        mut deliver: F,
    ) -> Result<JoinHandle<()>>
    where
        F: FnMut(Result<Option<Piece>>) -> bool + Send + 'static,
    {
        let pool = Arc::new(BufferPool::default());
        let name = self.name.clone();
        std::thread::Builder::new()
            .name("tvk-read".into())
            .spawn(move || {
                match self.produce(cluster_bits, examine, &mut deliver, &pool) {
                    Ok(()) => deliver(Ok(None)),
                    Err(e) => deliver(Err(e)),
                };
            })
            .map_err(|e| Error::io("start the reader thread for", name, e))
    }

    fn produce(
        &self,
        cluster_bits: u32,
        examine: Option<Vec<(u64, u64)>>,
        deliver: &mut dyn FnMut(Result<Option<Piece>>) -> bool,
        pool: &Arc<BufferPool>,
    ) -> Result<()> {
        let cs = 1u64 << cluster_bits;
        let clusters = self.size.div_ceil(cs);
        let ranges = examine.unwrap_or_else(|| vec![(0, clusters)]);
        let mut send = |p: Piece| {
            if deliver(Ok(Some(p))) {
                Ok(())
            } else {
                Err(Error::Usage("backup stopped".into()))
            }
        };
        let mut pos = 0u64;
        for (start, end) in ranges {
            let end = end.min(clusters);
            if start >= end {
                continue;
            }
            if start > pos {
                send(Piece::Unchanged {
                    first: pos,
                    count: start - pos,
                })?;
            }
            pos = start;
            for (ds, de) in self.data_extents(start * cs, (end * cs).min(self.size))? {
                let first = ds / cs;
                let last = de.div_ceil(cs).min(end);
                let first = first.max(pos);
                if first >= last {
                    continue;
                }
                if first > pos {
                    send(Piece::Hole {
                        first: pos,
                        count: first - pos,
                    })?;
                }
                let mut c = first;
                while c < last {
                    let n = (CHUNK_BYTES / cs).max(1).min(last - c);
                    let off = c * cs;
                    let avail = self.size.saturating_sub(off).min(n * cs) as usize;
                    let data = match (avail as u64 == n * cs)
                        .then(|| self.mapped.map(off, avail))
                        .flatten()
                    {
                        Some(m) => m,
                        None => {
                            let mut data = pool.take((n * cs) as usize);
                            let buf = data.as_mut_slice();
                            self.mapped
                                .file()
                                .read_exact_at(&mut buf[..avail], off)
                                .map_err(|e| Error::io("read source volume", &self.name, e))?;
                            buf[avail..].fill(0);
                            Bytes::from_owner(data)
                        }
                    };
                    send(Piece::Data { first: c, data })?;
                    c += n;
                }
                pos = last;
            }
            if end > pos {
                send(Piece::Hole {
                    first: pos,
                    count: end - pos,
                })?;
                pos = end;
            }
        }
        if clusters > pos {
            send(Piece::Unchanged {
                first: pos,
                count: clusters - pos,
            })?;
        }
        Ok(())
    }

    /// Data extents intersecting `[from, to)` as byte ranges (merged, in order).
    fn data_extents(&self, from: u64, to: u64) -> Result<Vec<(u64, u64)>> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut off = from;
        while off < to {
            let data = match rustix::fs::seek(self.mapped.file(), SeekFrom::Data(off)) {
                Ok(d) => d,
                Err(Errno::NXIO) => break,
                // No SEEK_DATA here (block device, old filesystem): everything is data.
                Err(Errno::INVAL) | Err(Errno::OPNOTSUPP) => {
                    out.push((off, to));
                    break;
                }
                Err(e) => return Err(Error::io("seek data in", &self.name, e.into())),
            };
            if data >= to {
                break;
            }
            let hole = match rustix::fs::seek(self.mapped.file(), SeekFrom::Hole(data)) {
                Ok(h) => h,
                Err(Errno::NXIO) => to,
                Err(e) => return Err(Error::io("seek hole in", &self.name, e.into())),
            }
            .min(to);
            out.push((data, hole));
            off = hole;
        }
        Ok(out)
    }
}

/// Bytes per mapping window of a [`MappedFile`] (a multiple of every page and cluster size).
/// 8, 16 and 32 MiB windows cost the same CPU time in A/B runs of the bench volume (within
/// the noise of a loaded box); 8 MiB keeps a restore's resident set lowest (29 MiB against
/// 42 MiB with 16 MiB windows: two layers, each with windows held by runs in flight).
pub const MAP_WINDOW: u64 = 8 << 20;

/// Zero-copy reads of a file's page cache through read-only mappings of [`MAP_WINDOW`]
/// aligned windows, shared by every piece inside a window; a window is unmapped when the
/// last piece of it is dropped. Each piece's pages are populated when it is handed out
/// (`MADV_POPULATE_READ`, in the thread that asks), so nothing faults page by page later.
///
/// Why windows: a `pread` copy of every source byte into a buffer costs more than mapping
/// (on the bench box: 2.3 ms per 16 MiB in 1 MiB reads against 0.95 ms to populate and
/// 0.3 ms to unmap; a full backup with `pread` took 0.32 CPU-s against 0.29 mapped), so
/// sources and local images are read from mappings; one mapping per 1 MiB piece then cost an
/// `munmap` each — with several threads
/// a TLB shoot-down IPI to the other cores each time (perf: `smp_call_function_many_cond`,
/// ~3 % of a full backup) — and mapping the whole file would make every byte read count
/// towards the process's resident memory. Windows bound both: memory is the windows still
/// referenced by pieces in flight.
#[derive(Debug)]
pub struct MappedFile {
    file: File,
    len: u64,
    window: Mutex<Option<(u64, Arc<memmap2::Mmap>)>>,
    /// Cleared when the file cannot be mapped at all (callers then `pread`).
    enabled: std::sync::atomic::AtomicBool,
}

/// A piece of a mapped window (the owner of a zero-copy [`Bytes`]).
struct WindowSlice {
    map: Arc<memmap2::Mmap>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for WindowSlice {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len]
    }
}

impl MappedFile {
    /// Wraps `file`, whose size is `len` (taken once: the file must not shrink while mapped).
    pub fn new(file: File, len: u64) -> Self {
        Self {
            file,
            len,
            window: Mutex::new(None),
            enabled: true.into(),
        }
    }

    /// The file, for positioned reads and seeks.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// `len` bytes at `off` without a copy, pages populated; `None` where that is not
    /// possible (the file cannot be mapped, the range is past its end, or populating the
    /// pages failed — an I/O error then surfaces as an error of the caller's `pread`
    /// instead of a `SIGBUS` on first touch).
    pub fn map(&self, off: u64, len: usize) -> Option<Bytes> {
        use std::sync::atomic::Ordering::Relaxed;
        let end = off.checked_add(len as u64)?;
        if len == 0 || end > self.len || !self.enabled.load(Relaxed) {
            return None;
        }
        let (start, map) = {
            let mut slot = self.window.lock().ok()?;
            match slot.as_ref() {
                Some((start, map)) if *start <= off && end <= *start + map.len() as u64 => {
                    (*start, map.clone())
                }
                _ => {
                    let start = off / MAP_WINDOW * MAP_WINDOW;
                    let wend = end.next_multiple_of(MAP_WINDOW).min(self.len);
                    let Some(map) = map_window(&self.file, start, (wend - start) as usize) else {
                        self.enabled.store(false, Relaxed);
                        return None;
                    };
                    let map = Arc::new(map);
                    *slot = Some((start, map.clone()));
                    (start, map)
                }
            }
        };
        let rel = (off - start) as usize;
        match map.advise_range(memmap2::Advice::PopulateRead, rel, len) {
            Ok(()) => {}
            // Before Linux 5.14: the pages fault in when first touched.
            Err(e) if e.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => {}
            Err(_) => return None,
        }
        Some(Bytes::from_owner(WindowSlice {
            map,
            start: rel,
            len,
        }))
    }
}

/// Maps `len` bytes of `file` at `off` (page-aligned) read-only; `None` where the file
/// cannot be mapped.
fn map_window(file: &File, off: u64, len: usize) -> Option<memmap2::Mmap> {
    // SAFETY: the mapping is read-only and private to this process, and we never create a
    // mutable view of it. Its contents could change (or the access fault with SIGBUS) only if
    // another process modified or truncated the file while it is mapped: a backup's source is
    // a CSI snapshot (or a device) nobody writes to, and images are immutable once committed.
    // The length is taken from the file's size at open and the range is checked against it by
    // the only caller, [`MappedFile::map`].
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::MmapOptions::new().offset(off).len(len).map(file) };
    map.ok()
}

/// Turns byte ranges into sorted, merged cluster ranges `[start, end)`.
pub fn cluster_ranges(ranges: &[ByteRange], cluster_bits: u32, size: u64) -> Vec<(u64, u64)> {
    let cs = 1u64 << cluster_bits;
    let mut v: Vec<(u64, u64)> = ranges
        .iter()
        .filter(|r| r.length > 0 && r.offset < size)
        .map(|r| {
            let end = r.offset.saturating_add(r.length).min(size);
            (r.offset / cs, end.div_ceil(cs))
        })
        .collect();
    v.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

/// Whether `buf` is all zeros. Compares 4 KiB blocks with a static zero block (glibc's
/// `memcmp`, dispatched to the widest SIMD the CPU has) and stops at the first non-zero
/// block, so data clusters cost almost nothing to classify.
pub fn is_zero(buf: &[u8]) -> bool {
    static ZEROS: [u8; 4096] = [0; 4096];
    buf.chunks(4096).all(|block| block == &ZEROS[..block.len()])
}
