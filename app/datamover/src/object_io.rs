//! The two shapes of I/O the data plane needs from any place an image lives:
//! [`RandomRead`] (positioned reads of a stored object: a local file or S3 range GETs) and
//! [`ObjectSink`] (a write-once object produced as a sequential stream, whose first
//! `reserved` bytes — the QCOW2 header cluster — are supplied last).

use std::{
    fs::File,
    io::{Seek, SeekFrom, Write},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::mpsc::{Receiver, SyncSender, sync_channel},
    thread::JoinHandle,
};

use bytes::Bytes;

use crate::error::{Error, Result};

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

/// A local file opened for positioned reads.
#[derive(Debug)]
pub struct LocalObject {
    file: File,
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
            file,
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
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io("read", &self.name, e))
    }
    fn map(&self, offset: u64, len: usize) -> Option<Bytes> {
        check_range(self, offset, len).ok()?;
        crate::volume::map_source(&self.file, offset, len)
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

enum WriterMessage {
    Data(Bytes),
}

/// Sink writing a local file through a background writer thread, so reading, hashing and
/// writing overlap. The file is written under `<name>.partial` and renamed into place by
/// [`ObjectSink::finish`] after `fsync`, so a crash never leaves a complete-looking object.
pub struct LocalFileSink {
    path: PathBuf,
    partial: PathBuf,
    reserved: usize,
    tx: Option<SyncSender<WriterMessage>>,
    writer: Option<JoinHandle<std::io::Result<(File, u64)>>>,
    durable: bool,
}

impl LocalFileSink {
    /// Creates `<path>.partial` (replacing a stale one) with `reserved` head bytes left for later.
    /// `durable` = fsync before rename (backups); benches and scratch output may skip it.
    pub fn create(path: &Path, reserved: usize, durable: bool) -> Result<Self> {
        let partial = partial_path(path);
        let mut file =
            File::create(&partial).map_err(|e| Error::io("create", partial.display(), e))?;
        file.seek(SeekFrom::Start(reserved as u64))
            .map_err(|e| Error::io("seek", partial.display(), e))?;
        let (tx, rx): (SyncSender<WriterMessage>, Receiver<WriterMessage>) = sync_channel(8);
        let writer = std::thread::Builder::new()
            .name("tvk-writer".into())
            .spawn(move || {
                let mut written = reserved as u64;
                let mut file = file;
                for WriterMessage::Data(data) in rx {
                    // Zero tails (mostly of metadata clusters) are skipped, leaving holes,
                    // as qemu does: the image then occupies no more disk than qemu's.
                    let keep = nonzero_prefix(&data);
                    file.write_all(&data[..keep])?;
                    if keep < data.len() {
                        file.seek(SeekFrom::Current((data.len() - keep) as i64))?;
                    }
                    written += data.len() as u64;
                }
                // A hole at the very end still counts towards the length.
                file.set_len(written)?;
                Ok((file, written))
            })
            .map_err(|e| Error::io("start writer thread for", partial.display(), e))?;
        Ok(Self {
            path: path.to_path_buf(),
            partial,
            reserved,
            tx: Some(tx),
            writer: Some(writer),
            durable,
        })
    }

    fn join(&mut self) -> Result<(File, u64)> {
        drop(self.tx.take());
        let Some(writer) = self.writer.take() else {
            return Err(Error::Usage("local file sink finished twice".into()));
        };
        match writer.join() {
            Ok(r) => r.map_err(|e| Error::io("write", self.partial.display(), e)),
            Err(_) => Err(Error::io(
                "write",
                self.partial.display(),
                std::io::Error::other("writer thread panicked"),
            )),
        }
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

impl ObjectSink for LocalFileSink {
    fn append(&mut self, data: Bytes) -> Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(WriterMessage::Data(data)).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            // The writer stopped: its error says why.
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
        let (file, len) = self.join()?;
        if head.len() != self.reserved {
            return Err(Error::Usage(format!(
                "internal error: head of {} bytes for {} reserved",
                head.len(),
                self.reserved
            )));
        }
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
