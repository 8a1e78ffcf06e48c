//! The two shapes of I/O the data plane needs from any place an image lives:
//! [`RandomRead`] (positioned reads of a stored object: a local file or S3 range GETs) and
//! [`ObjectSink`] (a write-once object produced as a sequential stream, whose first
//! `reserved` bytes — the QCOW2 header cluster — are supplied last).

use std::{
    fs::File,
    io::{Seek, SeekFrom},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        mpsc::{SyncSender, sync_channel},
    },
    thread::JoinHandle,
};

use bytes::Bytes;

use crate::{
    error::{Error, Result},
    volume::MappedFile,
};

/// Positioned reads of an immutable stored object.
pub trait RandomRead: Send + Sync {
    /// Name used in error messages (object or file name).
    fn name(&self) -> &str;
    /// Object length in bytes.
    fn len(&self) -> u64;
    /// Whether the object is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` from `offset`; reading past the end is an error.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// `len` bytes from `offset` without copying them (a local file maps its page cache), or
    /// `None` where the object cannot do that: the caller then uses [`Self::read_exact_at`].
    fn map(&self, offset: u64, len: usize) -> Option<Bytes> {
        let _ = (offset, len);
        None
    }
}

/// A local file opened for positioned reads (zero-copy through [`MappedFile`] windows).
#[derive(Debug)]
pub struct LocalObject {
    mapped: MappedFile,
    len: u64,
    name: String,
}

impl LocalObject {
    /// Opens `path` read-only. The length is taken by seeking to the end, so block devices work.
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| Error::io("open", path.display(), e))?;
        let len = file
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io("seek", path.display(), e))?;
        Ok(Self {
            mapped: MappedFile::new(file, len),
            len,
            name: path.display().to_string(),
        })
    }
}

impl RandomRead for LocalObject {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self, offset, buf.len())?;
        self.mapped
            .file()
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io("read", &self.name, e))
    }
    fn map(&self, offset: u64, len: usize) -> Option<Bytes> {
        check_range(self, offset, len).ok()?;
        self.mapped.map(offset, len)
    }
}

/// An object held in memory (tests, fuzzing, small metadata fetched in one range read).
#[derive(Debug, Clone)]
pub struct MemoryObject {
    /// The bytes.
    pub data: Bytes,
    /// Name used in errors.
    pub name: String,
}

impl RandomRead for MemoryObject {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self, offset, buf.len())?;
        let start = offset as usize;
        buf.copy_from_slice(&self.data[start..start + buf.len()]);
        Ok(())
    }
}

fn check_range(obj: &dyn RandomRead, offset: u64, len: usize) -> Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= obj.len() => Ok(()),
        _ => Err(Error::io(
            "read",
            obj.name(),
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "range {offset}+{len} is beyond the end of the object ({} bytes); the object is truncated",
                    obj.len()
                ),
            ),
        )),
    }
}

/// A write-once object produced sequentially. The first `reserved()` bytes are not part of
/// the stream: [`ObjectSink::finish`] supplies them (the QCOW2 header, known only at the end).
pub trait ObjectSink: Send {
    /// Appends bytes after everything appended so far.
    fn append(&mut self, data: Bytes) -> Result<()>;
    /// Supplies the reserved head, makes the object durable and returns its total length.
    fn finish(self: Box<Self>, head: Bytes) -> Result<u64>;
    /// Drops a partial object (best effort; an unfinished object is never visible as committed).
    fn abort(self: Box<Self>);
}

/// Alignment of `O_DIRECT` writes: offset, length and memory address (4 KiB covers devices
/// with 512-byte and 4 KiB logical blocks).
const DIRECT_ALIGN: usize = 4096;

/// Environment variable overriding [`WriteMode::for_output`]: `TVK_DATAMOVER_IO=buffered`
/// sends every write through the page cache, `TVK_DATAMOVER_IO=direct` uses direct I/O even
/// for output that is not fsynced (comparisons, debugging).
pub const IO_MODE_ENV: &str = "TVK_DATAMOVER_IO";

/// How the large aligned pieces of a local output (image, restored volume) reach the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// `pwrite` into the page cache.
    Buffered,
    /// `O_DIRECT` where the file system supports it ([`DirectWrites`]).
    Direct,
}

impl WriteMode {
    /// The measured default for an output that is fsynced before it is used (`durable`: every
    /// Job command) or not (`--no-sync`: benchmarks, scratch output); [`IO_MODE_ENV`] overrides.
    ///
    /// Measured on the 4 GiB bench volume (interleaved runs, same binary, README "Write
    /// mode"): with the final fsync, direct I/O wins clearly (full backup 0.36 s against 0.63 s
    /// buffered + fsync, restore 0.40 s against 0.67 s) — the data has to reach the device
    /// anyway and direct I/O moves it there without a CPU copy and without a flush at the end.
    /// Without the fsync nothing has to reach the device before the command ends: buffered
    /// writes into a mostly free page cache finish as soon as the copy is done, while direct
    /// writes wait for the disk (on an idle box qemu-img's buffered `convert` beat our direct
    /// writes by 1.4–2×), so output that is not fsynced is written buffered.
    pub fn for_output(durable: bool) -> Self {
        match std::env::var(IO_MODE_ENV).as_deref() {
            Ok("buffered") => Self::Buffered,
            Ok("direct") => Self::Direct,
            _ if durable => Self::Direct,
            _ => Self::Buffered,
        }
    }
}

/// The `O_DIRECT` companion of a file being written: large aligned writes go straight from
/// their buffer (usually a page-cache mapping of the source) to the device, without the
/// copy into the page cache that was most of a backup's and a restore's CPU time (perf:
/// `copy_folio_from_iter_atomic`, 60 %) and without dirtying memory, which on a busy node
/// stalls writers in dirty-page throttling. Everything else (small or unaligned pieces,
/// metadata, zeroing, `fsync`) uses the ordinary descriptor; Linux keeps the two coherent.
/// A file system without `O_DIRECT` (or one refusing a write with `EINVAL`) falls back to the
/// page cache for good; so does NFS, deliberately (see [`DirectWrites::open`]). Durability is unchanged: callers still `fsync` before they commit.
#[derive(Debug)]
pub struct DirectWrites {
    file: Option<File>,
    enabled: std::sync::atomic::AtomicBool,
}

impl DirectWrites {
    /// Opens `path` (which must exist) for direct writes, or a disabled companion where that
    /// is not possible or `mode` is [`WriteMode::Buffered`].
    pub fn open(path: &Path, mode: WriteMode) -> Self {
        use std::os::unix::fs::OpenOptionsExt;
        let file = (mode == WriteMode::Direct)
            .then(|| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
                    .open(path)
                    .ok()
            })
            .flatten()
            // Not on NFS (a filesystem target is usually a mounted share): the client sends
            // each direct write synchronously instead of batching them, and nothing was
            // measured there; buffered writes plus the final fsync stay the known path.
            .filter(|f| {
                rustix::fs::fstatfs(f).is_ok_and(|s| s.f_type != rustix::fs::NFS_SUPER_MAGIC)
            });
        Self {
            enabled: file.is_some().into(),
            file,
        }
    }

    /// A companion that never writes directly.
    pub fn disabled() -> Self {
        Self {
            file: None,
            enabled: false.into(),
        }
    }

    /// Writes `data` at `off`: directly when everything is aligned, else through `buffered`.
    pub fn write_all_at(&self, buffered: &File, data: &[u8], off: u64) -> std::io::Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        let aligned = (data.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN)
            && data.len().is_multiple_of(DIRECT_ALIGN)
            && off.is_multiple_of(DIRECT_ALIGN as u64);
        if aligned
            && !data.is_empty()
            && self.enabled.load(Relaxed)
            && let Some(direct) = &self.file
        {
            match direct.write_all_at(data, off) {
                Ok(()) => return Ok(()),
                // Not supported here after all: the page cache from now on (positioned
                // writes are idempotent, so rewriting the whole piece is safe).
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    self.enabled.store(false, Relaxed)
                }
                Err(e) => return Err(e),
            }
        }
        buffered.write_all_at(data, off)
    }
}

/// Allocates a local output's blocks just before its data is written (`fallocate`): a
/// restore allocates each range's data spans (size kept), an image sink allocates ahead in
/// steps ([`LocalFileSink`]), instead of the per-block reservations of delayed allocation
/// that buffered writes otherwise make on ext4 while they hold the inode lock; aligned direct
/// writes into allocated blocks also take that lock shared, so they overlap. Measured on the
/// benchmark's volume (ext4, 410 MiB of data): verified restore 0.36 -> 0.29 CPU-s, full
/// backup 0.35 -> 0.31 CPU-s, with about as many extents (see the datamover README). What is
/// allocated but not written is released again (holes stay holes, the output occupies what
/// it did), and allocated blocks read as zeros until written. A full filesystem is reported
/// before the data is written, as [`crate::error::ErrorKind::NoSpace`]. Not used for block
/// devices, on NFS (each allocation would be a synchronous round trip to the server), nor
/// where the filesystem does not support it (detected at the first call).
#[derive(Debug)]
pub struct Preallocate {
    enabled: std::sync::atomic::AtomicBool,
}

impl Preallocate {
    /// For `file`: enabled for a regular file on a local filesystem.
    pub fn for_file(file: &File) -> Self {
        let regular = file.metadata().is_ok_and(|m| m.is_file());
        let local =
            rustix::fs::fstatfs(file).is_ok_and(|s| s.f_type != rustix::fs::NFS_SUPER_MAGIC);
        Self {
            enabled: (regular && local).into(),
        }
    }

    /// Whether allocations are still made.
    pub fn enabled(&self) -> bool {
        self.enabled.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Returns `[off, off + len)` of `file` to the filesystem (a hole, size kept): what was
    /// allocated ahead but will not be written. Best effort: where punching fails the range
    /// stays allocated and reads as zeros.
    pub fn release(&self, file: &File, off: u64, len: u64) {
        if len > 0 && self.enabled() {
            let mode =
                rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
            let _ = rustix::fs::fallocate(file, mode, off, len);
        }
    }

    /// Allocates `[off, off + len)` of `file` (named `name` in errors), its size kept.
    pub fn range(&self, file: &File, name: &str, off: u64, len: u64) -> Result<()> {
        self.allocate(file, name, off, len, rustix::fs::FallocateFlags::KEEP_SIZE)
    }

    /// Allocates `[off, off + len)` of `file` growing its size to cover it: for a file
    /// whose final length is set afterwards, which frees whatever lies past it (blocks
    /// allocated past the size, with [`Self::range`], would stay allocated on ext4 when the
    /// final length grows the file).
    pub fn ahead(&self, file: &File, name: &str, off: u64, len: u64) -> Result<()> {
        self.allocate(file, name, off, len, rustix::fs::FallocateFlags::empty())
    }

    fn allocate(
        &self,
        file: &File,
        name: &str,
        off: u64,
        len: u64,
        mode: rustix::fs::FallocateFlags,
    ) -> Result<()> {
        use rustix::io::Errno;
        use std::sync::atomic::Ordering::Relaxed;
        if len == 0 || !self.enabled.load(Relaxed) {
            return Ok(());
        }
        match rustix::fs::fallocate(file, mode, off, len) {
            Ok(()) | Err(Errno::INTR | Errno::AGAIN) => Ok(()),
            Err(e @ (Errno::NOSPC | Errno::DQUOT)) => Err(Error::io(
                "allocate space in",
                name,
                std::io::Error::new(
                    std::io::Error::from(e).kind(),
                    format!(
                        "{e}: no room for the next {len} bytes at offset {off}; free space there or write to a larger volume"
                    ),
                ),
            )),
            Err(_) => {
                // Not supported here (or refused for another reason): the writes allocate.
                self.enabled.store(false, Relaxed);
                Ok(())
            }
        }
    }
}

/// Threads writing a [`LocalFileSink`]'s pieces with direct I/O: each write waits for the
/// device, so several in flight keep it busy (one at a time left it idle between requests).
/// Buffered writes have no thread of their own: they only copy into the page cache (the
/// producer's thread does that itself, with no hand-over and no wake-up per piece), and
/// concurrent buffered writers of one file serialise on its inode lock anyway.
const SINK_DIRECT_WRITERS: usize = 3;

/// A piece of a [`LocalFileSink`] at its offset.
struct SinkPiece {
    offset: u64,
    data: Bytes,
}

/// Sink writing a local file, so reading, hashing and writing overlap: with direct I/O
/// ([`DirectWrites`], where the file system supports it) through background writer threads,
/// otherwise straight into the page cache from the caller's thread. The file is written
/// under `<name>.partial` and renamed into place by [`ObjectSink::finish`] after `fsync`, so
/// a crash never leaves a complete-looking object.
pub struct LocalFileSink {
    path: PathBuf,
    partial: PathBuf,
    reserved: usize,
    file: Arc<(File, DirectWrites)>,
    preallocate: Preallocate,
    /// End of the blocks allocated ahead of the appends ([`SINK_ALLOCATION_STEP`]).
    allocated_to: u64,
    /// Queue of the direct writers; `None` for buffered writes (done in [`ObjectSink::append`])
    /// and once joined.
    tx: Option<SyncSender<SinkPiece>>,
    writers: Vec<JoinHandle<std::io::Result<()>>>,
    /// Offset of the next appended byte.
    next: u64,
    durable: bool,
    joined: bool,
}

/// Writes a piece (already cut before its zero tail) at `offset`.
fn write_piece(file: &(File, DirectWrites), data: &[u8], offset: u64) -> std::io::Result<()> {
    if !data.is_empty() {
        file.1.write_all_at(&file.0, data, offset)?;
    }
    Ok(())
}

impl LocalFileSink {
    /// Creates `<path>.partial` (replacing a stale one) with `reserved` head bytes left for later.
    /// `durable` = fsync before rename (backups); benches and scratch output may skip it. The
    /// write mode follows [`WriteMode::for_output`].
    pub fn create(path: &Path, reserved: usize, durable: bool) -> Result<Self> {
        let partial = partial_path(path);
        let file = File::create(&partial).map_err(|e| Error::io("create", partial.display(), e))?;
        let direct = DirectWrites::open(&partial, WriteMode::for_output(durable));
        let writer_count = if direct.file.is_some() {
            SINK_DIRECT_WRITERS
        } else {
            0
        };
        let preallocate = Preallocate::for_file(&file);
        let file = Arc::new((file, direct));
        let mut sink = Self {
            path: path.to_path_buf(),
            partial,
            reserved,
            file,
            preallocate,
            allocated_to: reserved as u64,
            tx: None,
            writers: Vec::with_capacity(writer_count),
            next: reserved as u64,
            durable,
            joined: false,
        };
        if writer_count == 0 {
            return Ok(sink);
        }
        let (tx, rx) = sync_channel::<SinkPiece>(8);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for _ in 0..writer_count {
            let (rx, file) = (rx.clone(), sink.file.clone());
            let spawned = std::thread::Builder::new().name("tvk-writer".into()).spawn(
                move || -> std::io::Result<()> {
                    loop {
                        let piece = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return Err(std::io::Error::other("writer queue poisoned")),
                        };
                        let Ok(SinkPiece { offset, data }) = piece else {
                            return Ok(());
                        };
                        write_piece(&file, &data, offset)?;
                    }
                },
            );
            match spawned {
                Ok(h) => sink.writers.push(h),
                Err(e) => {
                    drop(tx);
                    for w in sink.writers.drain(..) {
                        let _ = w.join();
                    }
                    return Err(Error::io(
                        "start writer thread for",
                        sink.partial.display(),
                        e,
                    ));
                }
            }
        }
        sink.tx = Some(tx);
        Ok(sink)
    }

    /// Waits for every writer; returns the first error. The length is set afterwards (a hole
    /// at the very end still counts towards it).
    fn join(&mut self) -> Result<u64> {
        drop(self.tx.take());
        if self.joined {
            return Err(Error::Usage("local file sink finished twice".into()));
        }
        self.joined = true;
        let mut first: Option<std::io::Error> = None;
        for w in self.writers.drain(..) {
            let r = w
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("writer thread panicked")));
            if let Err(e) = r
                && first.is_none()
            {
                first = Some(e);
            }
        }
        if let Some(e) = first {
            return Err(Error::io("write", self.partial.display(), e));
        }
        self.file
            .0
            .set_len(self.next)
            .map_err(|e| Error::io("write", self.partial.display(), e))?;
        Ok(self.next)
    }
}

/// Length of `data` without its trailing all-zero 4 KiB blocks (counted from the start).
fn nonzero_prefix(data: &[u8]) -> usize {
    static ZEROS: [u8; 4096] = [0; 4096];
    let mut end = data.len();
    while end > 0 {
        let start = (end - 1) / 4096 * 4096;
        if data[start..end] != ZEROS[..end - start] {
            break;
        }
        end = start;
    }
    end
}

/// `<path>.partial`: where an object is written before it is complete.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// How far ahead a [`LocalFileSink`] allocates its file (see [`Preallocate`]). One
/// `fallocate` per piece scattered a 410 MiB image over ~200 extents of a busy ext4 (the
/// allocator filled small free gaps); allocating as much again as the file holds, up to
/// 64 MiB at a time, keeps it in about as few extents as delayed allocation does (12
/// against 8-11) with 16 calls.
const SINK_ALLOCATION_STEP: u64 = 64 << 20;

impl LocalFileSink {
    /// Allocates ahead for a piece of `len` bytes at `self.next` whose first `keep` bytes
    /// will be written: the rest of the piece (its zero tail), where already allocated, is
    /// released again so it stays a hole. The file's size follows the allocation (see
    /// [`Preallocate::ahead`]) until [`Self::join`] sets the length, which frees the blocks
    /// past the last piece.
    fn allocate(&mut self, keep: u64, len: u64) -> Result<()> {
        if !self.preallocate.enabled() {
            return Ok(());
        }
        let file = &self.file.0;
        let end = self.next + keep;
        if end > self.allocated_to {
            let name = self.partial.display().to_string();
            let from = self.allocated_to.max(self.next);
            // As much again as the file holds (a small index stays small), up to a step —
            // only while the filesystem has room to spare: blocks held ahead by this file
            // until its length is set must not starve the other files of the same backup
            // (its index, beside it) on a nearly full target.
            let ahead = self.next.clamp(1 << 20, SINK_ALLOCATION_STEP);
            let spare = rustix::fs::fstatvfs(file)
                .is_ok_and(|v| v.f_bavail.saturating_mul(v.f_frsize) >= ahead.saturating_mul(16));
            let step = if spare { end.max(from + ahead) } else { end };
            match self.preallocate.ahead(file, &name, from, step - from) {
                Ok(()) => self.allocated_to = step,
                // Filled meanwhile: just what this piece needs, or the error.
                Err(e) if e.kind() == crate::error::ErrorKind::NoSpace && step > end => {
                    self.preallocate.ahead(file, &name, from, end - from)?;
                    self.allocated_to = end;
                }
                Err(e) => return Err(e),
            }
        }
        let tail = self.allocated_to.min(self.next + len).saturating_sub(end);
        self.preallocate.release(file, end, tail);
        Ok(())
    }
}

impl ObjectSink for LocalFileSink {
    fn append(&mut self, mut data: Bytes) -> Result<()> {
        let len = data.len() as u64;
        // The zero tail (mostly of metadata clusters) stays a hole, as qemu leaves it: the
        // image then occupies no more disk than qemu's.
        data.truncate(nonzero_prefix(&data));
        if !self.joined {
            self.allocate(data.len() as u64, len)?;
        }
        if self.writers.is_empty() && !self.joined {
            write_piece(&self.file, &data, self.next)
                .map_err(|e| Error::io("write", self.partial.display(), e))?;
            self.next += len;
            return Ok(());
        }
        let sent = match &self.tx {
            Some(tx) => tx
                .send(SinkPiece {
                    offset: self.next,
                    data,
                })
                .is_ok(),
            None => false,
        };
        if sent {
            self.next += len;
            Ok(())
        } else {
            // The writers stopped: their error says why.
            match self.join() {
                Err(e) => Err(e),
                Ok(_) => Err(Error::io(
                    "write",
                    self.partial.display(),
                    std::io::Error::other("writer thread stopped early"),
                )),
            }
        }
    }

    fn finish(mut self: Box<Self>, head: Bytes) -> Result<u64> {
        let len = self.join()?;
        if head.len() != self.reserved {
            return Err(Error::Usage(format!(
                "internal error: head of {} bytes for {} reserved",
                head.len(),
                self.reserved
            )));
        }
        let file = &self.file.0;
        file.write_all_at(&head[..nonzero_prefix(&head)], 0)
            .map_err(|e| Error::io("write", self.partial.display(), e))?;
        if self.durable {
            file.sync_all()
                .map_err(|e| Error::io("fsync", self.partial.display(), e))?;
        }
        std::fs::rename(&self.partial, &self.path)
            .map_err(|e| Error::io("rename into place", self.path.display(), e))?;
        if self.durable {
            sync_parent_dir(&self.path)?;
        }
        Ok(len)
    }

    fn abort(mut self: Box<Self>) {
        let _ = self.join();
        let _ = std::fs::remove_file(&self.partial);
    }
}

/// fsyncs the directory holding `path`, so a rename into it is durable.
pub fn sync_parent_dir(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        let dir = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let f = File::open(dir).map_err(|e| Error::io("open directory", dir.display(), e))?;
        f.sync_all()
            .map_err(|e| Error::io("fsync directory", dir.display(), e))?;
    }
    Ok(())
}

/// A sink collecting everything in memory (tests, fuzz seeds, small objects).
#[derive(Debug, Default)]
pub struct MemorySink {
    /// Reserved head length.
    pub reserved: usize,
    /// Appended chunks.
    pub chunks: Vec<Bytes>,
    /// Where the finished object goes.
    pub out: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl ObjectSink for MemorySink {
    fn append(&mut self, data: Bytes) -> Result<()> {
        self.chunks.push(data);
        Ok(())
    }
    fn finish(self: Box<Self>, head: Bytes) -> Result<u64> {
        let mut v = head.to_vec();
        for c in &self.chunks {
            v.extend_from_slice(c);
        }
        let len = v.len() as u64;
        if let Ok(mut out) = self.out.lock() {
            *out = v;
        }
        Ok(len)
    }
    fn abort(self: Box<Self>) {}
}
