//! Command line: `backup`, `restore`, `verify`, `info`, `coalesce`, `probe` against a target, and
//! `image …` (local image-level commands, used by the benchmark harness).
//! Exit codes: 0 ok, 1 fatal (bad input, corruption), 75 (EX_TEMPFAIL) retryable.

use std::{
    io::IsTerminal,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use clap::{Parser, Subcommand};
use tvk_datamover::{
    Error, Result,
    backup::{BackupJob, ParentIndex, run_backup},
    coalesce::{CoalesceState, coalesce_with_key},
    crypt::EncryptionKey,
    flatten::flatten_chain,
    index::IndexReader,
    object_io::{LocalFileSink, LocalObject, RandomRead, WriteMode},
    probe::probe_target,
    progress::{BarProgress, JsonProgress, NoProgress, Progress},
    qcow2::{DEFAULT_CLUSTER_BITS, reader::Qcow2Image},
    repository::{
        VolumeBackupId, VolumeBackupRequest, backup_volume_with_key, load_manifest, open_chain,
        restore_volume_to_with_key, verify_volume_with_key,
    },
    restore::{Chain, Destination, RestoreJob, run_restore},
    target_args::TargetArgs,
    volume::read_changed_blocks,
};

/// Exit code of a retryable failure (sysexits EX_TEMPFAIL).
const EXIT_RETRYABLE: u8 = 75;

#[derive(Parser, Debug)]
#[command(
    name = "tvk-datamover",
    version,
    about = "QCOW2 volume backups: backup, restore, coalesce, verify"
)]
struct Cli {
    /// Progress output: auto (bar on a terminal, JSON lines otherwise), json, bar, none.
    #[arg(long, global = true, default_value = "auto")]
    progress: String,
    /// Seconds between JSON progress lines (fractions allowed, e.g. 0.05).
    #[arg(
        long,
        global = true,
        env = "TVK_DATAMOVER_PROGRESS_INTERVAL",
        default_value_t = 2.0,
        value_parser = parse_interval
    )]
    progress_interval: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Back up a volume to the target (full, or incremental with --parent).
    Backup {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        id: IdArgs,
        #[command(flatten)]
        key: KeyArgs,
        /// Source volume: block device or file.
        #[arg(long)]
        source: PathBuf,
        /// Parent backup id (same plan and volume): take an incremental.
        #[arg(long)]
        parent: Option<String>,
        /// Changed-block list from CSI SnapshotMetadata (JSON `[{"offset":..,"length":..}]`).
        #[arg(long, requires = "parent")]
        changed_blocks: Option<PathBuf>,
    },
    /// Restore a committed backup into a file or block device.
    Restore {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        id: IdArgs,
        #[command(flatten)]
        key: KeyArgs,
        /// Destination file or block device.
        #[arg(long)]
        dest: PathBuf,
        /// Overwrite an existing file in place (zeros written where needed) instead of
        /// recreating it sparse. Block devices are always written in place.
        #[arg(long)]
        in_place: bool,
    },
    /// Check a backup's structure; with --read-data[=PERCENT] also read and check data.
    Verify {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        id: IdArgs,
        #[command(flatten)]
        key: KeyArgs,
        /// Percentage of data clusters to read and check (bare flag = 100, all, plus whole
        /// object digests).
        #[arg(long, num_args = 0..=1, default_missing_value = "100", value_parser = clap::value_parser!(u8).range(0..=100))]
        read_data: Option<u8>,
    },
    /// Show a backup's manifest and chain.
    Info {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        id: IdArgs,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Remove expired backups of a plan's volume, folding them into their successors.
    Coalesce {
        #[command(flatten)]
        target: TargetArgs,
        /// Backup plan.
        #[arg(long)]
        plan: String,
        /// Volume id.
        #[arg(long)]
        volume: String,
        /// Backup ids to remove (repeat).
        #[arg(long, required = true)]
        expire: Vec<String>,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Check that the target can hold backups: create-only write, read back, list and delete
    /// of `.tvk-probe/<unique>` (the Target controller's validation Job).
    Probe {
        #[command(flatten)]
        target: TargetArgs,
        /// Also verify that the S3 bucket has Object Lock enabled (GetObjectLockConfiguration);
        /// the probe fails with kind ObjectLock when it has not (Targets with
        /// `objectLockingEnabled: true`).
        #[arg(long)]
        expect_object_lock: bool,
    },
    /// Image-level operations on local files (benchmarks, debugging).
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(clap::Args, Debug)]
struct IdArgs {
    /// Backup plan.
    #[arg(long)]
    plan: String,
    /// Backup id.
    #[arg(long)]
    backup: String,
    /// Volume id (e.g. the PVC's UID or name).
    #[arg(long)]
    volume: String,
}

/// The key of encrypted backups.
#[derive(clap::Args, Debug)]
struct KeyArgs {
    /// File holding the encryption key (the backup plan's encryption Secret mounted into the
    /// Job): backups are written encrypted (LUKS in qcow2, keyed digest index); encrypted
    /// backups need it to restore, verify and coalesce. The key itself is never accepted on
    /// the command line nor printed.
    #[arg(long, value_name = "PATH")]
    encryption_key_file: Option<PathBuf>,
}

impl KeyArgs {
    fn load(&self) -> Result<Option<EncryptionKey>> {
        self.encryption_key_file
            .as_deref()
            .map(EncryptionKey::from_file)
            .transpose()
    }
}

impl IdArgs {
    fn id(&self) -> Result<VolumeBackupId> {
        VolumeBackupId::new(&self.plan, &self.backup, &self.volume)
    }
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// Full backup of SRC into the qcow2 image OUT, with its digest index.
    Full {
        /// Source volume (file or block device).
        src: PathBuf,
        /// Output image.
        out: PathBuf,
        /// Digest index path (default OUT.index).
        #[arg(long)]
        index: Option<PathBuf>,
        /// log2 of the cluster size.
        #[arg(long, default_value_t = DEFAULT_CLUSTER_BITS)]
        cluster_bits: u32,
        /// Skip fsync (scratch output only).
        #[arg(long)]
        no_sync: bool,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Incremental backup of SRC into OUT, backed by PREV; STATE/index is the parent's index
    /// and is replaced by the new one.
    Incremental {
        /// Source volume.
        src: PathBuf,
        /// Previous image (the overlay's backing file; must be in OUT's directory).
        prev: PathBuf,
        /// Output image.
        out: PathBuf,
        /// State directory holding `index`.
        state: PathBuf,
        /// Changed-block list (JSON `[{"offset":..,"length":..}]`): read only these ranges.
        #[arg(long)]
        changed_blocks: Option<PathBuf>,
        /// Skip fsync.
        #[arg(long)]
        no_sync: bool,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Restore the chain ending at TOP into OUT (a file, sparse, or a block device).
    /// Backing files are followed only as plain names in TOP's own directory.
    Restore {
        /// Top image.
        top: PathBuf,
        /// Output file or block device.
        out: PathBuf,
        /// Digest index of the top backup: every cluster is verified against it.
        #[arg(long)]
        index: Option<PathBuf>,
        /// Skip fsync.
        #[arg(long)]
        no_sync: bool,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Flatten overlay SRC on its base PREV into the standalone image OUT.
    Squash {
        /// Overlay.
        src: PathBuf,
        /// Its base image.
        prev: PathBuf,
        /// Output image.
        out: PathBuf,
        /// Skip fsync.
        #[arg(long)]
        no_sync: bool,
        #[command(flatten)]
        key: KeyArgs,
    },
}

/// `--progress-interval`: seconds, finite, from 0.01 to one day.
fn parse_interval(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.01..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds from 0.01 to 86400 (e.g. 2 or 0.5)"
        )),
    }
}

/// Runs the CLI and maps errors to exit codes, printing a final JSON result line.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let interval = Duration::from_secs_f64(cli.progress_interval);
    let progress: Box<dyn Progress> = match cli.progress.as_str() {
        "none" => Box::new(NoProgress),
        "json" => Box::new(JsonProgress::new(interval)),
        "bar" => Box::new(BarProgress::new("working")),
        _ if std::io::stderr().is_terminal() => Box::new(BarProgress::new("working")),
        _ => Box::new(JsonProgress::new(interval)),
    };
    match run(cli.command, progress.as_ref()) {
        Ok(result) => {
            println!(
                "{}",
                serde_json::json!({"event": "result", "ok": true, "result": result})
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let retryable = e.is_retryable();
            println!(
                "{}",
                serde_json::json!({"event": "result", "ok": false, "error": e.to_string(),
                    "kind": e.kind().as_str(), "category": e.category(), "retryable": retryable})
            );
            eprintln!("error: {e}");
            if retryable {
                ExitCode::from(EXIT_RETRYABLE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(command: Command, progress: &dyn Progress) -> Result<serde_json::Value> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("start", "async runtime", e))?;
    let handle = runtime.handle().clone();
    match command {
        Command::Image(c) => run_image(c, progress),
        Command::Probe {
            target,
            expect_object_lock,
        } => {
            let target = target.open(handle)?;
            let r = probe_target(&target, expect_object_lock)?;
            serde_json::to_value(r).map_err(|e| Error::Usage(e.to_string()))
        }
        Command::Backup {
            target,
            id,
            source,
            parent,
            changed_blocks,
            key,
        } => {
            let key = key.load()?;
            let target = target.open(handle)?;
            let changed = changed_blocks
                .as_deref()
                .map(read_changed_blocks)
                .transpose()?;
            let out = backup_volume_with_key(
                &target,
                VolumeBackupRequest {
                    id: id.id()?,
                    parent,
                    source: &source,
                    changed_blocks: changed,
                    progress,
                },
                key.as_ref(),
            )?;
            Ok(serde_json::json!({
                "alreadyCommitted": out.already_committed,
                "bytesRead": out.bytes_read,
                "manifest": out.manifest,
            }))
        }
        Command::Restore {
            target,
            id,
            dest,
            in_place,
            key,
        } => {
            let key = key.load()?;
            let target = target.open(handle)?;
            let out = if in_place {
                Destination::open_in_place(&dest)?
            } else {
                Destination::open(&dest)?
            };
            let s = restore_volume_to_with_key(&target, &id.id()?, out, progress, key.as_ref())?;
            Ok(restore_json(&s))
        }
        Command::Verify {
            target,
            id,
            read_data,
            key,
        } => {
            let key = key.load()?;
            let target = target.open(handle)?;
            let r = verify_volume_with_key(
                &target,
                &id.id()?,
                read_data.unwrap_or(0),
                progress,
                key.as_ref(),
            )?;
            serde_json::to_value(r).map_err(|e| Error::Usage(e.to_string()))
        }
        Command::Info { target, id, key } => {
            let key = key.load()?;
            let target = target.open(handle)?;
            let id = id.id()?;
            let m = load_manifest(&target, &id)?.ok_or_else(|| {
                Error::Usage(format!(
                    "backup {} is not committed on the target",
                    id.backup
                ))
            })?;
            // With a key: whether it opens every image of the chain.
            if key.is_some() {
                open_chain(&target, &m, key.as_ref())?;
                return Ok(serde_json::json!({"manifest": m, "keyOpensChain": true}));
            }
            Ok(serde_json::json!({"manifest": m}))
        }
        Command::Coalesce {
            target,
            plan,
            volume,
            expire,
            key,
        } => {
            let key = key.load()?;
            let target = target.open(handle)?;
            let on_state = |state: CoalesceState| {
                println!(
                    "{}",
                    serde_json::json!({"event": "coalesce", "coalesceInfo": {"state": state}})
                );
            };
            let r = coalesce_with_key(
                &target,
                &plan,
                &volume,
                &expire,
                progress,
                &on_state,
                key.as_ref(),
            )?;
            serde_json::to_value(r).map_err(|e| Error::Usage(e.to_string()))
        }
    }
}

fn open_image(path: &Path, key: Option<&EncryptionKey>) -> Result<Qcow2Image> {
    let obj: Arc<dyn RandomRead> = Arc::new(LocalObject::open(path)?);
    Qcow2Image::open_with_key(obj, key)
}

fn open_index(path: &Path) -> Result<IndexReader<std::fs::File>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io("open index", path.display(), e))?;
    IndexReader::new(&path.display().to_string(), f)
}

/// Stored backing name for `prev` as seen from `out`: `prev`'s file name, which must live in
/// the same directory (chains on a target always use relative names).
fn sibling_name(prev: &Path, out: &Path) -> Result<String> {
    let dir = |p: &Path| {
        std::fs::canonicalize(
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
        .map_err(|e| Error::io("resolve directory of", p.display(), e))
    };
    if dir(prev)? != dir(out)? {
        return Err(Error::Usage(format!(
            "{} must be in the same directory as {} (backing names are stored relative)",
            prev.display(),
            out.display()
        )));
    }
    prev.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| Error::Usage(format!("{} has no usable file name", prev.display())))
}

fn run_image(c: ImageCommand, progress: &dyn Progress) -> Result<serde_json::Value> {
    match c {
        ImageCommand::Full {
            src,
            out,
            index,
            cluster_bits,
            no_sync,
            key,
        } => {
            let key = key.load()?;
            let index = index.unwrap_or_else(|| with_suffix(&out, ".index"));
            let cs = 1usize << cluster_bits;
            let s = run_backup(BackupJob {
                source: &src,
                parent: None,
                changed_blocks: None,
                image_sink: Box::new(LocalFileSink::create(&out, cs, !no_sync)?),
                index_sink: Box::new(LocalFileSink::create(&index, 0, !no_sync)?),
                cluster_bits,
                progress,
                encryption: key,
            })?;
            Ok(summary_json(&s))
        }
        ImageCommand::Incremental {
            src,
            prev,
            out,
            state,
            changed_blocks,
            no_sync,
            key,
        } => {
            let key = key.load()?;
            let index_path = state.join("index");
            let parent_file = std::fs::File::open(&index_path)
                .map_err(|e| Error::io("open parent index", index_path.display(), e))?;
            let backing_name = sibling_name(&prev, &out)?;
            let prev_image = open_image(&prev, key.as_ref())?;
            let cluster_bits = prev_image.header().cluster_bits;
            let changed = changed_blocks
                .as_deref()
                .map(read_changed_blocks)
                .transpose()?;
            let s = run_backup(BackupJob {
                source: &src,
                parent: Some(ParentIndex {
                    name: index_path.display().to_string(),
                    reader: Box::new(parent_file),
                    backing_name,
                }),
                changed_blocks: changed,
                image_sink: Box::new(LocalFileSink::create(&out, 1 << cluster_bits, !no_sync)?),
                index_sink: Box::new(LocalFileSink::create(&index_path, 0, !no_sync)?),
                cluster_bits,
                progress,
                encryption: key,
            })?;
            Ok(summary_json(&s))
        }
        ImageCommand::Restore {
            top,
            out,
            index,
            no_sync,
            key,
        } => {
            let key = key.load()?;
            let chain = local_chain(&top, key.as_ref())?;
            let dest = Destination::open(&out)?.with_write_mode(WriteMode::for_output(!no_sync));
            let index = index.as_deref().map(open_index).transpose()?;
            let s = run_restore(
                RestoreJob {
                    chain: &chain,
                    index,
                    backup_id: &top.display().to_string(),
                    progress,
                    durable: !no_sync,
                },
                &dest,
            )?;
            Ok(restore_json(&s))
        }
        ImageCommand::Squash {
            src,
            prev,
            out,
            no_sync,
            key,
        } => {
            let key = key.load()?;
            let chain = Chain::new(vec![
                open_image(&prev, key.as_ref())?,
                open_image(&src, key.as_ref())?,
            ])?;
            let cs = chain.cluster_size() as usize;
            let s = flatten_chain::<std::fs::File>(
                &chain,
                None,
                &src.display().to_string(),
                Box::new(LocalFileSink::create(&out, cs, !no_sync)?),
                progress,
            )?;
            Ok(serde_json::json!({"imageBytes": s.image_len, "dataClusters": s.data_clusters}))
        }
    }
}

/// Opens TOP and its backing files, following only plain names in TOP's directory.
fn local_chain(top: &Path, key: Option<&EncryptionKey>) -> Result<Chain> {
    let dir = top.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut layers = vec![open_image(top, key)?];
    while let Some(name) = layers.last().and_then(|l| l.header().backing_file.clone()) {
        if layers.len() >= 256 {
            return Err(Error::Usage("backing chain deeper than 256 images".into()));
        }
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(Error::image(
                top.display(),
                format!(
                    "backing file name {name:?} is not a plain file name in the same directory; refusing to follow it"
                ),
            ));
        }
        if let Some(fmt) = layers
            .last()
            .and_then(|l| l.header().backing_format.clone())
            && fmt != "qcow2"
        {
            return Err(Error::image(
                top.display(),
                format!("backing format {fmt:?} is not qcow2"),
            ));
        }
        layers.push(open_image(&dir.join(name), key)?);
    }
    layers.reverse();
    Chain::new(layers)
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn restore_json(s: &tvk_datamover::restore::RestoreSummary) -> serde_json::Value {
    serde_json::json!({
        "virtualSize": s.virtual_size,
        "bytesWritten": s.bytes_written,
        "bytesZeroedOffloaded": s.bytes_zeroed_offloaded,
        "bytesZerosWritten": s.bytes_zeros_written,
    })
}

fn summary_json(s: &tvk_datamover::backup::BackupSummary) -> serde_json::Value {
    serde_json::json!({
        "virtualSize": s.virtual_size,
        "imageBytes": s.image.image_len,
        "dataClusters": s.image.data_clusters,
        "zeroClusters": s.image.zero_clusters,
        "indexBytes": s.index.len,
        "indexBlake3": s.index.blake3,
        "bytesRead": s.bytes_read,
    })
}
