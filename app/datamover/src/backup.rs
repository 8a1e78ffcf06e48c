//! Full and incremental backup of one volume into an image + digest index.
//!
//! Pipeline: reader thread (sparse reads: windows of page-cache mappings, pieces handed over
//! in batches) → hashing threads, one per core but one, each taking whole 1 MiB chunks for
//! zero detection and BLAKE3 of their clusters (several chunks in flight, results consumed
//! in volume order) → this thread (per-cluster decision against the parent's index, then
//! the image writes: buffered ones right here, direct ones handed to the sink's writer
//! threads), which hashes chunks itself whenever the one it needs next is not done yet.
//! Hashing whole chunks ahead of the decisions keeps both cores busy with few wake-ups;
//! splitting each chunk's clusters over rayon (an earlier design) blocked this thread once
//! per chunk and cost ~14 000 context switches per 4 GiB volume.
//! An incremental never reads old images:
//! it compares with the parent's index, which describes the parent's whole volume.

use std::{
    io::Read,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, SyncSender, TryRecvError, sync_channel},
    },
    thread::JoinHandle,
};

use bytes::Bytes;

use crate::{
    error::{Error, Result},
    index::{ClusterState, IndexReader, IndexSummary, IndexWriter},
    object_io::ObjectSink,
    progress::Progress,
    qcow2::writer::{ImageOptions, ImageSummary, Qcow2Writer},
    volume::{ByteRange, Piece, SourceVolume, cluster_ranges, is_zero},
};

/// The parent backup an incremental builds on.
pub struct ParentIndex {
    /// Name for errors.
    pub name: String,
    /// The parent's index, streamed.
    pub reader: Box<dyn Read + Send>,
    /// Backing file name to store in the overlay (relative to the new image).
    pub backing_name: String,
}

impl std::fmt::Debug for ParentIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParentIndex")
            .field("name", &self.name)
            .field("backing_name", &self.backing_name)
            .finish()
    }
}

/// What to back up and where.
pub struct BackupJob<'a> {
    /// Source volume (file or block device).
    pub source: &'a Path,
    /// `None` = full backup.
    pub parent: Option<ParentIndex>,
    /// Changed-block list: with a parent, only these byte ranges are read.
    pub changed_blocks: Option<Vec<ByteRange>>,
    /// Where the image goes (head reserved: one cluster).
    pub image_sink: Box<dyn ObjectSink>,
    /// Where the index goes (no head).
    pub index_sink: Box<dyn ObjectSink>,
    /// log2 cluster size.
    pub cluster_bits: u32,
    /// Progress reporting.
    pub progress: &'a dyn Progress,
    /// Encrypt the image (LUKS) with this key ([`crate::crypt`]).
    pub encryption: Option<crate::crypt::EncryptionKey>,
}

/// What a backup produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// Volume size in bytes.
    pub virtual_size: u64,
    /// The image.
    pub image: ImageSummary,
    /// The index.
    pub index: IndexSummary,
    /// Bytes read from the source.
    pub bytes_read: u64,
}

/// Runs a backup. On error nothing is completed: partial objects are aborted.
pub fn run_backup(job: BackupJob<'_>) -> Result<BackupSummary> {
    let volume = SourceVolume::open(job.source)?;
    let size = volume.size();
    let cs = 1u64 << job.cluster_bits;
    let opts = ImageOptions {
        virtual_size: size,
        cluster_bits: job.cluster_bits,
        backing_file: job.parent.as_ref().map(|p| p.backing_name.clone()),
        encryption: job.encryption.clone(),
    };
    let mut writer = Qcow2Writer::new(job.image_sink, opts)?;
    // Encrypted backups record keyed digests (see `index`).
    let digest_key = job.encryption.as_ref().map(|k| k.index_key());
    let mut index = IndexWriter::new(job.index_sink, job.cluster_bits, size)
        .with_keyed_digests(digest_key.is_some());
    let mut parent = match job.parent {
        Some(p) => {
            let r = IndexReader::new(&p.name, p.reader)?;
            if r.header().cluster_bits != job.cluster_bits {
                writer.abort();
                index.abort();
                return Err(Error::index(
                    &p.name,
                    "parent index has a different cluster size; take a full backup",
                ));
            }
            if r.header().keyed != digest_key.is_some() {
                writer.abort();
                index.abort();
                return Err(Error::index(
                    &p.name,
                    "the parent backup is encrypted and this one is not, or the reverse: an incremental cannot change encryption; take a full backup",
                ));
            }
            Some(r)
        }
        None => None,
    };
    let examine = match (&parent, &job.changed_blocks) {
        (Some(_), Some(ranges)) => Some(cluster_ranges(ranges, job.cluster_bits, size)),
        _ => None,
    };
    let (mut pieces, stages) = match hash_ahead(volume, job.cluster_bits, examine, digest_key) {
        Ok(started) => started,
        Err(e) => {
            writer.abort();
            index.abort();
            return Err(e);
        }
    };
    let mut engine = Engine {
        writer: &mut writer,
        index: &mut index,
        parent: parent.as_mut(),
        cs,
        bytes_read: 0,
        progress: job.progress,
        size,
    };
    let mut result = Ok(());
    while let Some(piece) = pieces.next() {
        let r = piece.and_then(|(p, states)| engine.handle(p, states));
        if let Err(e) = r {
            result = Err(e);
            break;
        }
    }
    let bytes_read = engine.bytes_read;
    // Closing the queue stops the reader, whose exit closes the workers' queue.
    drop(pieces);
    stages.join();
    if let Err(e) = result {
        writer.abort();
        index.abort();
        return Err(e);
    }
    // The parent index must be intact to the last byte before we rely on it for a commit.
    if let Some(p) = parent
        && let Err(e) = p.finish()
    {
        writer.abort();
        index.abort();
        return Err(e);
    }
    // Finish (and fsync) the index and the image in parallel: the flushes overlap.
    let (image, index) = std::thread::scope(|s| {
        let index_done = s.spawn(move || index.finish());
        let image = writer.finish();
        let index = index_done
            .join()
            .unwrap_or_else(|_| Err(Error::Usage("internal error: index writer panicked".into())));
        (image, index)
    });
    let (image, index) = (image?, index?);
    job.progress.update(size, size);
    Ok(BackupSummary {
        virtual_size: size,
        image,
        index,
        bytes_read,
    })
}

/// Chunks hashed ahead of the decisions (bounds the pieces in flight: 1 MiB each).
const HASH_AHEAD: usize = 8;

/// A data chunk to classify: taken by exactly one thread (a hashing thread, or the decision
/// thread when it would otherwise wait), which sends the clusters' states.
struct HashJob {
    data: Bytes,
    taken: AtomicBool,
    states: SyncSender<Vec<ClusterState>>,
}

impl HashJob {
    /// Whether the caller got the job (nobody else computes it then).
    fn take(&self) -> bool {
        !self.taken.swap(true, Ordering::AcqRel)
    }

    /// Computes and sends the states (never blocks: room for exactly this one result).
    fn run(&self, cs: usize, key: Option<&[u8; 32]>) {
        let _ = self.states.send(cluster_states(&self.data, cs, key));
    }
}

/// A piece with, for data, its hashing job and where the job's states arrive.
type Hashed = Result<(Piece, Option<(Arc<HashJob>, Receiver<Vec<ClusterState>>)>)>;

/// Zero test and BLAKE3 (keyed with `key` for encrypted backups) of each whole cluster of
/// `data`.
fn cluster_states(data: &[u8], cs: usize, key: Option<&[u8; 32]>) -> Vec<ClusterState> {
    data.chunks(cs)
        .map(|c| {
            if is_zero(c) {
                ClusterState::Zero
            } else {
                ClusterState::Data(crate::index::cluster_digest(key, c))
            }
        })
        .collect()
}

/// Hashing threads: one per core but one. The decision thread hashes too whenever the chunk
/// it needs next is not done yet (see [`Pieces::next`]), so the work of the last core is shared
/// between the decisions, the image writes and hashing as the load demands.
fn hash_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).clamp(1, 7))
}

/// The reading and hashing stages of a backup.
struct Stages {
    reader: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
}

impl Stages {
    /// Waits for every thread (they stop once the receiver of [`hash_ahead`] is dropped).
    fn join(self) {
        let _ = self.reader.join();
        for w in self.workers {
            let _ = w.join();
        }
    }
}

/// The decision thread's end of the pipeline: the volume's pieces in order, each data chunk
/// with its states. While the states of the next chunk are not ready it takes queued chunks
/// (that one first, then those read after it) and hashes them itself instead of sleeping.
struct Pieces {
    rx: Receiver<Vec<Hashed>>,
    /// Pieces received, not yet handled.
    ahead: std::collections::VecDeque<Hashed>,
    cs: usize,
    key: Option<[u8; 32]>,
}

impl Pieces {
    /// The next piece with its states; `None` at the end.
    fn next(&mut self) -> Option<Result<(Piece, Option<Vec<ClusterState>>)>> {
        if self.ahead.is_empty() {
            self.ahead.extend(self.rx.recv().ok()?);
        }
        let item = self.ahead.pop_front()?;
        Some(item.and_then(|(piece, job)| {
            let states = match job {
                Some((job, states)) => Some(self.wait(&job, &states)?),
                None => None,
            };
            Ok((piece, states))
        }))
    }

    fn wait(
        &mut self,
        job: &HashJob,
        states: &Receiver<Vec<ClusterState>>,
    ) -> Result<Vec<ClusterState>> {
        let stopped =
            || Error::Usage("internal error: a hashing task stopped without a result".into());
        if job.take() {
            return Ok(cluster_states(&job.data, self.cs, self.key.as_ref()));
        }
        loop {
            match states.try_recv() {
                Ok(v) => return Ok(v),
                Err(TryRecvError::Disconnected) => return Err(stopped()),
                Err(TryRecvError::Empty) => {}
            }
            // A hashing thread has this chunk: hash a later one meanwhile.
            let mut later = self.take_ahead();
            if later.is_none()
                && self.ahead.len() < 2 * PIECE_BATCH
                && let Ok(batch) = self.rx.try_recv()
            {
                self.ahead.extend(batch);
                later = self.take_ahead();
            }
            match later {
                Some(j) => j.run(self.cs, self.key.as_ref()),
                None => return states.recv().map_err(|_| stopped()),
            }
        }
    }

    /// The first received chunk nobody hashes yet, now ours.
    fn take_ahead(&self) -> Option<Arc<HashJob>> {
        self.ahead.iter().find_map(|item| match item {
            Ok((_, Some((j, _)))) if j.take() => Some(j.clone()),
            _ => None,
        })
    }
}

/// Data chunks per hand-over to the hashing threads, and per hand-over of pieces to the
/// decision thread (with at most [`PIECE_BATCH`] pieces): one wake-up per piece (holes and
/// short data runs make ~1 200 pieces of a 4 GiB bench volume) kept the threads
/// ping-ponging in slices of 10–20 µs.
const JOB_BATCH: usize = 2;
/// See [`JOB_BATCH`]; also for the decision thread: data chunks per batch.
const PIECE_BATCH_DATA: usize = 4;
/// Most pieces per batch for the decision thread.
const PIECE_BATCH: usize = 64;

/// Starts the reader, which passes the volume's pieces on in order (each data chunk with its
/// hashing job), and the hashing threads taking the jobs (several chunks ahead, in parallel).
/// Plain threads blocking on bounded queues, not a work-stealing pool: its idle workers spun
/// in `sched_yield` on the 2-core benchmark box, and a dispatcher thread between reader and
/// pool added a wake-up per chunk. Everything stops when either end closes.
fn hash_ahead(
    volume: SourceVolume,
    cluster_bits: u32,
    examine: Option<Vec<(u64, u64)>>,
    digest_key: Option<[u8; 32]>,
) -> Result<(Pieces, Stages)> {
    let cs = 1usize << cluster_bits;
    let (jtx, jrx) = sync_channel::<Vec<Arc<HashJob>>>(HASH_AHEAD / JOB_BATCH);
    let jrx = Arc::new(Mutex::new(jrx));
    let mut workers = Vec::new();
    for _ in 0..hash_workers() {
        let jrx = jrx.clone();
        let spawned = std::thread::Builder::new()
            .name("tvk-hash".into())
            .spawn(move || {
                loop {
                    let jobs = match jrx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(jobs) = jobs else { return };
                    for job in jobs {
                        if job.take() {
                            job.run(cs, digest_key.as_ref());
                        }
                    }
                }
            });
        match spawned {
            Ok(h) => workers.push(h),
            // Fewer workers are slower, not wrong; none at all cannot work.
            Err(e) if workers.is_empty() => {
                return Err(Error::io("start hashing thread for", "backup", e));
            }
            Err(_) => break,
        }
    }
    let (tx, rx) = sync_channel::<Vec<Hashed>>(HASH_AHEAD / PIECE_BATCH_DATA);
    let mut batch: Vec<Hashed> = Vec::with_capacity(PIECE_BATCH);
    let mut batch_data = 0usize;
    let mut jobs: Vec<Arc<HashJob>> = Vec::with_capacity(JOB_BATCH);
    let reader = volume.stream(cluster_bits, examine, move |piece| {
        let end = !matches!(piece, Ok(Some(_)));
        match piece {
            Ok(Some(p)) => {
                let job = match &p {
                    Piece::Data { data, .. } => {
                        let (stx, srx) = sync_channel(1);
                        let job = Arc::new(HashJob {
                            data: data.clone(),
                            taken: AtomicBool::new(false),
                            states: stx,
                        });
                        jobs.push(job.clone());
                        batch_data += 1;
                        Some((job, srx))
                    }
                    Piece::Hole { .. } | Piece::Unchanged { .. } => None,
                };
                batch.push(Ok((p, job)));
            }
            Ok(None) => {}
            Err(e) => batch.push(Err(e)),
        }
        if (end || jobs.len() >= JOB_BATCH)
            && !jobs.is_empty()
            && jtx.send(std::mem::take(&mut jobs)).is_err()
        {
            // The hashing threads stopped (only when the backup is over).
            return false;
        }
        if end || batch_data >= PIECE_BATCH_DATA || batch.len() >= PIECE_BATCH {
            batch_data = 0;
            if !batch.is_empty() && tx.send(std::mem::take(&mut batch)).is_err() {
                return false;
            }
        }
        true
    })?;
    let pieces = Pieces {
        rx,
        ahead: std::collections::VecDeque::with_capacity(PIECE_BATCH),
        cs,
        key: digest_key,
    };
    Ok((pieces, Stages { reader, workers }))
}

struct Engine<'a, 'p> {
    writer: &'a mut Qcow2Writer,
    index: &'a mut IndexWriter,
    parent: Option<&'a mut IndexReader<Box<dyn Read + Send + 'p>>>,
    cs: u64,
    bytes_read: u64,
    progress: &'a dyn Progress,
    size: u64,
}

impl Engine<'_, '_> {
    fn parent_state(&mut self) -> Result<Option<ClusterState>> {
        match self.parent.as_mut() {
            // Past the parent's end (volume grew): the chain reads zeros there.
            Some(p) => Ok(Some(p.next_cluster()?.unwrap_or(ClusterState::Unallocated))),
            None => Ok(None),
        }
    }

    fn handle(&mut self, piece: Piece, states: Option<Vec<ClusterState>>) -> Result<()> {
        match piece {
            Piece::Hole { first, count } => {
                if self.parent.is_none() {
                    self.index.push_many(ClusterState::Unallocated, count)?;
                } else {
                    for c in first..first + count {
                        let p = self.parent_state()?;
                        if p.is_some_and(|p| !p.reads_zero()) {
                            self.writer.put_zero(c)?;
                        }
                        self.index.push(ClusterState::Unallocated)?;
                    }
                }
                self.report(first + count);
            }
            Piece::Unchanged { first, count } => {
                for _ in 0..count {
                    let p = self.parent_state()?.ok_or_else(|| {
                        Error::Usage("internal error: unchanged clusters without a parent".into())
                    })?;
                    self.index.push(p)?;
                }
                self.report(first + count);
            }
            Piece::Data { first, data } => {
                let cs = self.cs as usize;
                let n = data.as_ref().len() / cs;
                self.bytes_read += data.as_ref().len() as u64;
                let states = states.ok_or_else(|| {
                    Error::Usage("internal error: a data chunk without its states".into())
                })?;
                // Runs of clusters to store, flushed as one slice each (no copies).
                let mut run_start: Option<usize> = None;
                for (i, state) in states.iter().enumerate() {
                    let parent = self.parent_state()?;
                    let store = match (state, parent) {
                        (ClusterState::Data(_), None) => true,
                        (ClusterState::Data(h), Some(ClusterState::Data(ph))) => *h != ph,
                        (ClusterState::Data(_), Some(_)) => true,
                        _ => false,
                    };
                    if !store && let Some(s) = run_start.take() {
                        self.writer
                            .put_data(first + s as u64, data.slice(s * cs..i * cs))?;
                    }
                    if store {
                        run_start.get_or_insert(i);
                    } else if state.reads_zero() && parent.is_some_and(|p| !p.reads_zero()) {
                        self.writer.put_zero(first + i as u64)?;
                    }
                    self.index.push(*state)?;
                }
                if let Some(s) = run_start {
                    self.writer
                        .put_data(first + s as u64, data.slice(s * cs..n * cs))?;
                }
                self.report(first + n as u64);
            }
        }
        Ok(())
    }

    fn report(&self, next_cluster: u64) {
        self.progress
            .update((next_cluster * self.cs).min(self.size), self.size);
    }
}
