//! The command line: `tvk-metamover snapshot|commit --kind … --namespace … --name … <target>`.
//! JSON lines on stdout (`{"event": …}`), a final `{"event":"result",…}` line, exit 0 ok,
//! 1 permanent failure, 75 retry later (like the datamover).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use tvk_datamover::target_args::TargetArgs;

use crate::{
    commit,
    error::{Error, Result},
    images_backup, images_restore,
    restore::{self, RestoreKind, RestoreRef},
    snapshot::{self, BackupKind, BackupRef},
};

/// Exit code of a retryable failure (sysexits EX_TEMPFAIL).
pub const EXIT_RETRYABLE: u8 = 75;

/// `tvk-metamover`.
#[derive(Parser, Debug)]
#[command(
    name = "tvk-metamover",
    version,
    about = "Metadata snapshot, commit and restore of TrilioVault backups"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The backup a command works on.
#[derive(clap::Args, Debug, Clone)]
pub struct BackupArgs {
    /// `Backup` or `ClusterBackup`.
    #[arg(long, value_enum)]
    pub kind: BackupKind,
    /// Namespace of the Backup (not used for a ClusterBackup).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Name of the Backup or ClusterBackup.
    #[arg(long)]
    pub name: String,
    /// File holding the backup plan's encryption key (its Secret mounted into the Job): the
    /// metadata written under `_metadata/` is encrypted with it ([`crate::seal`]).
    #[arg(long, value_name = "PATH")]
    pub encryption_key_file: Option<std::path::PathBuf>,
    /// The backup is encrypted: refuse any metadata object that is not sealed (the control
    /// plane gives it to every Job of a backup whose `status.encryptionEnabled` is true).
    #[arg(long, requires = "encryption_key_file")]
    pub require_sealed: bool,
}

/// The metadata key from `--encryption-key-file`, if given; with `require_sealed`
/// (`--require-sealed`) it refuses plain objects ([`crate::seal::MetadataKey::require_sealed`]).
fn metadata_key(
    path: Option<&std::path::Path>,
    require_sealed: bool,
) -> Result<Option<crate::seal::MetadataKey>> {
    let key = path.map(crate::seal::MetadataKey::from_file).transpose()?;
    Ok(key.map(|k| {
        if require_sealed {
            k.require_sealed()
        } else {
            k
        }
    }))
}

impl BackupArgs {
    fn to_ref(&self) -> Result<BackupRef> {
        if self.kind == BackupKind::Backup && self.namespace.is_none() {
            return Err(Error::Usage(
                "--namespace is required with --kind Backup".into(),
            ));
        }
        Ok(BackupRef {
            kind: self.kind,
            namespace: match self.kind {
                BackupKind::Backup => self.namespace.clone(),
                BackupKind::ClusterBackup => None,
            },
            name: self.name.clone(),
        })
    }
}

/// The restore a command works on.
#[derive(clap::Args, Debug, Clone)]
pub struct RestoreArgs {
    /// `Restore` or `ClusterRestore`.
    #[arg(long, value_enum)]
    pub kind: RestoreKind,
    /// Namespace of the Restore (not used for a ClusterRestore).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Name of the Restore or ClusterRestore.
    #[arg(long)]
    pub name: String,
    /// The backup on the target: `<plan uid>/<backup uid>`.
    #[arg(long)]
    pub location: String,
    /// File holding the key of an encrypted backup (the Secret named by the Restore's
    /// `spec.encryption`, or the backup plan's, mounted into the Job).
    #[arg(long, value_name = "PATH")]
    pub encryption_key_file: Option<std::path::PathBuf>,
    /// The restored backup is encrypted (its `status.encryptionEnabled`): refuse any metadata
    /// object that is not sealed, so plain metadata swapped into the target is never restored.
    /// (`images restore` reads only the plain `images.json` records and ignores it.)
    #[arg(long, requires = "encryption_key_file")]
    pub require_sealed: bool,
}

impl RestoreArgs {
    fn to_ref(&self) -> Result<RestoreRef> {
        if self.kind == RestoreKind::Restore && self.namespace.is_none() {
            return Err(Error::Usage(
                "--namespace is required with --kind Restore".into(),
            ));
        }
        Ok(RestoreRef {
            kind: self.kind,
            namespace: match self.kind {
                RestoreKind::Restore => self.namespace.clone(),
                RestoreKind::ClusterRestore => None,
            },
            name: self.name.clone(),
        })
    }
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Capture the backup's metadata to the target and record status.snapshot.
    Snapshot {
        /// The backup.
        #[command(flatten)]
        backup: BackupArgs,
        /// Objects per list page (memory holds one page at a time).
        #[arg(long, default_value_t = snapshot::PAGE_SIZE)]
        page_size: u32,
        /// The target.
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Write the commit object, after every volume is uploaded.
    Commit {
        /// The backup.
        #[command(flatten)]
        backup: BackupArgs,
        /// The target.
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Compute a restore's plan (phase Validation) into status.restoreApplication.
    RestorePlan {
        /// The restore.
        #[command(flatten)]
        restore: RestoreArgs,
        /// The target.
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Restore the planned objects (phase MetadataRestore).
    Restore {
        /// The restore.
        #[command(flatten)]
        restore: RestoreArgs,
        /// The target.
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Create the StorageClasses the plan creates (restoreFlags.restoreStorageClass), before the
    /// DataRestore phase provisions claims of those classes; create-only.
    RestoreStorageClasses {
        /// The restore.
        #[command(flatten)]
        restore: RestoreArgs,
        /// The target.
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Container images of backups: store, restore, collect.
    #[command(subcommand)]
    Images(ImagesCommand),
}

/// `tvk-metamover images …`.
#[derive(Subcommand, Debug)]
pub enum ImagesCommand {
    /// Store the backed-up workloads' images on the target and record status.snapshot.images
    /// (phase ImageBackup).
    Backup {
        /// The backup.
        #[command(flatten)]
        backup: BackupArgs,
        /// The target.
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Push the backup's images whose originals are gone into the Restore's imageRegistry and
    /// record status.images (phase ImageRestore).
    Restore {
        /// The restore.
        #[command(flatten)]
        restore: RestoreArgs,
        /// The target.
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Delete the stored image blobs no backup's images.json reaches (retention).
    Gc {
        /// The target.
        #[command(flatten)]
        target: TargetArgs,
        /// Blobs younger than this are never collected (uploads in flight).
        #[arg(long, default_value_t = 3600)]
        grace_seconds: u64,
    },
}

fn emit(v: Value) {
    println!("{v}");
}

/// Parses the arguments, runs, prints the result line and maps errors to exit codes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // kube's and object_store's TLS stacks link more than one rustls provider: pick ring, as
    // the rest of the workspace does (an error only means one is installed already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    match run(cli.command) {
        Ok(result) => {
            emit(json!({"event": "result", "ok": true, "result": result}));
            ExitCode::SUCCESS
        }
        Err(e) => {
            let retryable = e.is_retryable();
            emit(
                json!({"event": "result", "ok": false, "error": e.to_string(),
                "category": e.category(), "retryable": retryable}),
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

fn run(command: Command) -> Result<Value> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Usage(format!("failed to start the async runtime: {e}")))?;
    runtime.block_on(async move {
        // Garbage collection works on the target alone (no Kubernetes client needed).
        if let Command::Images(ImagesCommand::Gc {
            target,
            grace_seconds,
        }) = command
        {
            let target = target.open(tokio::runtime::Handle::current())?;
            let out = images_backup::run_gc(
                target,
                std::time::Duration::from_secs(grace_seconds),
                &emit,
            )
            .await?;
            return serde_json::to_value(&out).map_err(|e| Error::json("encode the result", e));
        }
        let client = kube::Client::try_default().await.map_err(|e| {
            Error::Usage(format!(
                "failed to configure the Kubernetes client (in-cluster service account or KUBECONFIG): {e}"
            ))
        })?;
        let handle = tokio::runtime::Handle::current();
        match command {
            Command::Snapshot {
                backup,
                page_size,
                target,
            } => {
                let r = backup.to_ref()?;
                let target = target.open(handle)?;
                let opts = snapshot::Options {
                    page_size,
                    encryption: metadata_key(backup.encryption_key_file.as_deref(), backup.require_sealed)?,
                };
                let out = snapshot::run(client, target, &r, &opts, &emit).await?;
                Ok(json!({
                    "documents": out.index.documents.len(),
                    "objects": out.index.documents.iter().map(|d| d.count).sum::<u64>(),
                    "helmReleases": out.index.helm.len(),
                    "pvcs": out.index.pvcs.len(),
                    "dataSnapshots": out.snapshot.data_snapshots().count(),
                    "warnings": out.index.warnings,
                    "reused": out.reused,
                }))
            }
            Command::Commit { backup, target } => {
                let r = backup.to_ref()?;
                let target = target.open(handle)?;
                let key = metadata_key(backup.encryption_key_file.as_deref(), backup.require_sealed)?;
                let out = commit::run(client, target, &r, &emit, key.as_ref()).await?;
                Ok(json!({"commit": out.key, "volumes": out.volumes,
                    "alreadyCommitted": out.already_committed}))
            }
            Command::RestorePlan { restore, target } => {
                let r = restore.to_ref()?;
                let target = target.open(handle)?;
                let key = metadata_key(restore.encryption_key_file.as_deref(), restore.require_sealed)?;
                let plan =
                    restore::run_plan(client, target, &r, &restore.location, &emit, key.as_ref())
                        .await?;
                Ok(json!({"counts": plan.counts, "volumes": plan.volumes.len(),
                    "namespaces": plan.namespaces, "blocking": plan.blocking,
                    "warnings": plan.warnings}))
            }
            Command::Restore { restore, target } => {
                let r = restore.to_ref()?;
                let target = target.open(handle)?;
                let key = metadata_key(restore.encryption_key_file.as_deref(), restore.require_sealed)?;
                let out = restore::run_restore(
                    client,
                    target,
                    &r,
                    &restore.location,
                    &emit,
                    key.as_ref(),
                )
                .await?;
                Ok(json!({"created": out.created, "patched": out.patched,
                    "skipped": out.skipped, "notReady": out.not_ready}))
            }
            Command::RestoreStorageClasses { restore, target } => {
                let r = restore.to_ref()?;
                let target = target.open(handle)?;
                let key = metadata_key(restore.encryption_key_file.as_deref(), restore.require_sealed)?;
                let created = restore::run_storage_classes(
                    client,
                    target,
                    &r,
                    &restore.location,
                    key.as_ref(),
                )
                .await?;
                Ok(json!({"created": created}))
            }
            Command::Images(ImagesCommand::Backup { backup, target }) => {
                let r = backup.to_ref()?;
                let target = target.open(handle)?;
                let key = metadata_key(backup.encryption_key_file.as_deref(), backup.require_sealed)?;
                let out = images_backup::run_backup(client, target, &r, &emit, key.as_ref()).await?;
                Ok(json!({"images": out.images.len(), "blobsCopied": out.blobs_copied,
                    "blobsSkipped": out.blobs_skipped, "bytesCopied": out.bytes_copied,
                    "reused": out.reused}))
            }
            Command::Images(ImagesCommand::Restore { restore, target }) => {
                let r = restore.to_ref()?;
                let target = target.open(handle)?;
                let out =
                    images_restore::run_restore(client, target, &r, &restore.location, &emit)
                        .await?;
                Ok(json!({"images": out.images, "noImagesStored": out.no_record}))
            }
            Command::Images(ImagesCommand::Gc { .. }) => {
                Err(Error::Usage("images gc was handled above".into()))
            }
        }
    })
}
