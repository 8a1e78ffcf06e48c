//! The content-addressed image store on a backup target (container images in backups).
//!
//! Every blob of a backed-up image — manifests, indexes, configs and layers alike — lives once
//! per target prefix under `<prefix>/_images/blobs/sha256/<hex>` (an OCI image layout's blob
//! store; `_` cannot start a plan UID, so nothing clashes), whatever number of images, backups
//! and plans use it: the store is incremental by nature. It works over any
//! [`object_store::ObjectStore`] plus a prefix, so S3 targets and NFS targets (a
//! `LocalFileSystem`) share one code path. The copy engine reaches it as
//! [`crate::copy::Endpoint::Store`]: registry → store at backup, store → registry at restore,
//! with the engine's verification, parallelism and skip-what-exists.
//!
//! Writes are create-only and verified: a blob is written only from a stream that checks its
//! digest and size as it goes (it ends in an error instead of its last chunk when either is
//! wrong), so a wrong blob is never stored under a digest. Blobs up to [`SINGLE_PUT_BYTES`] are
//! written with one create-only `PUT` (S3 `If-None-Match: *`, a hard link on NFS); larger ones
//! by a multipart upload to their final key that is completed only after the stream verified
//! (aborted otherwise): two writers racing on one digest can only write the same bytes.
//! Manifests are written after every blob they reference, an index after its manifests.
//!
//! Per backup, `<plan uid>/<backup uid>/_metadata/images.json` ([`BackupImages`]) lists the
//! images the backup uses; [`ImageStore::collect_garbage`] keeps every blob some `images.json`
//! reaches and deletes the others once they are older than a grace period (measured with the
//! store's own clock, never the local one).

use std::{
    collections::{BTreeSet, HashSet},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart,
    path::Path as ObjPath,
};
use serde::{Deserialize, Serialize};

use crate::{
    error::OciError,
    manifest::{Descriptor, MAX_MANIFEST_BYTES, Manifest, ManifestContent, Platform},
    reference::Digest,
};

/// Folder of the image store under the target prefix.
pub const IMAGES_DIR: &str = "_images";
/// Folder of the blobs inside it.
pub const BLOBS_DIR: &str = "_images/blobs/sha256";
/// Name of a backup's image record, in its `_metadata/` folder.
pub const IMAGES_RECORD: &str = "images.json";
/// Largest blob written with a single create-only `PUT` (larger ones are multipart uploads).
pub const SINGLE_PUT_BYTES: u64 = 8 << 20;
/// Part size of multipart uploads (S3's minimum is 5 MiB).
const PART_BYTES: usize = 8 << 20;
/// Parts uploaded at once per multipart upload.
const PARTS_IN_FLIGHT: usize = 2;
/// Largest `images.json` read (a record on a target is outside input).
pub const MAX_RECORD_BYTES: u64 = 16 << 20;
/// Largest image config read to learn its platform.
const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// Deepest index nesting walked (as the copy engine).
const MAX_DEPTH: u32 = 2;

/// A backup's `images.json`: every image its workloads use, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupImages {
    /// The images, sorted by reference.
    pub images: Vec<StoredImage>,
}

/// One image of a backup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredImage {
    /// The reference exactly as a workload names it.
    pub image: String,
    /// `registry host[:port]/path` it was read from.
    pub repository: String,
    /// Digest of the manifest or index the reference resolved to (`sha256:…`).
    pub digest: String,
    /// Media type of that manifest or index.
    pub media_type: String,
    /// Platforms stored (`os/architecture[/variant]`).
    #[serde(default)]
    pub platforms: Vec<String>,
    /// Bytes of every blob of the image (manifests included).
    pub size: u64,
    /// The workloads using it (`Deployment ns/name`).
    #[serde(default)]
    pub workloads: Vec<String>,
}

/// The key of a backup's `images.json` (relative to the target prefix), for a backup
/// location `<plan uid>/<backup uid>`.
pub fn record_key(location: &str) -> String {
    format!("{}/_metadata/{IMAGES_RECORD}", location.trim_matches('/'))
}

/// What an image in the store consists of (from walking its manifests in the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// Media type of the top-level manifest or index.
    pub media_type: String,
    /// Platforms (`os/architecture[/variant]`), sorted.
    pub platforms: Vec<String>,
    /// Bytes of every blob (manifests, configs, layers).
    pub size: u64,
    /// Every blob reached (manifests, configs, layers; foreign layers are not stored).
    pub blobs: BTreeSet<Digest>,
}

/// What a garbage collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    /// `images.json` records read.
    pub records: usize,
    /// Distinct blobs they reach.
    pub referenced_blobs: usize,
    /// Referenced blobs that were missing from the store (those backups' images are damaged).
    pub missing_blobs: usize,
    /// Blobs deleted.
    pub removed_blobs: u64,
    /// Bytes deleted.
    pub removed_bytes: u64,
    /// Unreferenced blobs kept because they are younger than the grace period.
    pub kept_young_blobs: u64,
}

/// Whether a create-only write created the object or found it there already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Written now.
    Created,
    /// An object was already at the key (untouched).
    AlreadyExists,
}

/// The image store of one backup target.
pub struct ImageStore {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    display: String,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ImageStore({})", self.display)
    }
}

impl ImageStore {
    /// The store under `prefix` (may be empty) of `store`; `display` names the target in
    /// messages (`s3://bucket/prefix`, `/mnt/target`), never with credentials.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, display: impl Into<String>) -> Self {
        Self {
            store,
            prefix: prefix.trim_matches('/').to_owned(),
            display: display.into(),
        }
    }

    /// How messages name this target.
    pub fn display(&self) -> &str {
        &self.display
    }

    fn path(&self, key: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(key)
        } else {
            ObjPath::from(format!("{}/{key}", self.prefix))
        }
    }

    /// The key of a blob, relative to the prefix (the digest's hex is validated, so this stays
    /// inside the store).
    pub fn blob_key(digest: &Digest) -> String {
        format!("{BLOBS_DIR}/{}", digest.hex())
    }

    fn relative(&self, location: &ObjPath) -> String {
        let full = location.as_ref();
        if self.prefix.is_empty() {
            full.to_owned()
        } else {
            full.strip_prefix(&format!("{}/", self.prefix))
                .unwrap_or(full)
                .to_owned()
        }
    }

    fn store_error(action: &'static str, key: &str, source: object_store::Error) -> OciError {
        OciError::Store {
            action,
            key: key.to_owned(),
            source: Box::new(source),
        }
    }

    fn blob_not_found(&self, digest: &Digest, what: &str) -> OciError {
        OciError::NotFound {
            what: format!(
                "blob {digest} of {what} in the image store of {}",
                self.display
            ),
        }
    }

    /// The stored size of a blob, or `None` when it is absent.
    pub async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, OciError> {
        let key = Self::blob_key(digest);
        match self.store.head(&self.path(&key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Self::store_error("inspect", &key, e)),
        }
    }

    /// Whether the store holds the blob with the expected size (the cheap check of an
    /// incremental backup: content was verified when written). A blob of the wrong size (an
    /// interrupted foreign writer, bit rot of the length) is removed so it is written again.
    pub async fn has_blob(&self, digest: &Digest, size: u64) -> Result<bool, OciError> {
        match self.blob_size(digest).await? {
            Some(stored) if stored == size => Ok(true),
            Some(stored) => {
                tracing::warn!(blob = %digest, stored, expected = size,
                    "removing a stored image blob of the wrong size");
                self.delete(&Self::blob_key(digest)).await?;
                Ok(false)
            }
            None => Ok(false),
        }
    }

    /// Streams a blob's bytes as stored; callers verify them (the copy engine does).
    pub async fn read_blob_unverified(
        &self,
        digest: &Digest,
        what: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, OciError>> + Send + use<>, OciError> {
        let key = Self::blob_key(digest);
        let result = match self.store.get(&self.path(&key)).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(self.blob_not_found(digest, what));
            }
            Err(e) => return Err(Self::store_error("read", &key, e)),
        };
        Ok(result
            .into_stream()
            .map_err(move |e| Self::store_error("read", &key, e)))
    }

    /// Reads a whole small blob, refusing more than `limit` bytes, and verifies its digest.
    pub async fn read_blob(
        &self,
        digest: &Digest,
        limit: u64,
        what: &str,
    ) -> Result<Bytes, OciError> {
        let key = Self::blob_key(digest);
        let result = match self.store.get(&self.path(&key)).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(self.blob_not_found(digest, what));
            }
            Err(e) => return Err(Self::store_error("read", &key, e)),
        };
        if result.meta.size > limit {
            return Err(OciError::SizeMismatch {
                what: format!(
                    "blob {digest} of {what} in the image store of {}",
                    self.display
                ),
                expected: limit,
                actual: result.meta.size,
            });
        }
        let bytes = result
            .bytes()
            .await
            .map_err(|e| Self::store_error("read", &key, e))?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(OciError::DigestMismatch {
                what: format!(
                    "blob {digest} of {what} in the image store of {}",
                    self.display
                ),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    /// Writes a blob of `size` bytes from a stream that verifies itself (it yields an error
    /// instead of its end when the digest or size is wrong, as
    /// [`crate::copy::VerifyingStream`] does). Small blobs: one create-only `PUT` of the
    /// buffered bytes (an object already there is the same content and is left alone). Large
    /// ones: a multipart upload completed only after the stream ended cleanly, aborted
    /// otherwise.
    pub async fn write_blob<S>(
        &self,
        digest: &Digest,
        size: u64,
        mut stream: S,
    ) -> Result<(), OciError>
    where
        S: Stream<Item = Result<Bytes, OciError>> + Unpin,
    {
        let key = Self::blob_key(digest);
        let path = self.path(&key);
        if size <= SINGLE_PUT_BYTES {
            let mut buffer = BytesMut::with_capacity(usize::try_from(size).unwrap_or(0));
            while let Some(chunk) = stream.next().await {
                buffer.extend_from_slice(&chunk?);
            }
            self.put_create_only_path(&key, &path, buffer.freeze())
                .await
                .map(|_| ())
        } else {
            let upload = self
                .store
                .put_multipart(&path)
                .await
                .map_err(|e| Self::store_error("start the upload of", &key, e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            loop {
                match stream.next().await {
                    Some(Ok(chunk)) => {
                        if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                            let _ = writer.abort().await;
                            return Err(Self::store_error("upload", &key, e));
                        }
                        writer.put(chunk);
                    }
                    Some(Err(e)) => {
                        // Never complete an upload whose content failed verification.
                        let _ = writer.abort().await;
                        return Err(e);
                    }
                    None => break,
                }
            }
            writer
                .finish()
                .await
                .map(|_| ())
                .map_err(|e| Self::store_error("complete the upload of", &key, e))
        }
    }

    /// Writes a manifest blob (already verified: it was parsed from its digest) unless present.
    pub async fn write_manifest(&self, manifest: &Manifest) -> Result<(), OciError> {
        if self
            .has_blob(&manifest.digest, manifest.bytes.len() as u64)
            .await?
        {
            return Ok(());
        }
        let key = Self::blob_key(&manifest.digest);
        let path = self.path(&key);
        self.put_create_only_path(&key, &path, manifest.bytes.clone())
            .await
            .map(|_| ())
    }

    /// Reads a manifest blob, verifying its size cap and digest, and parses it. `declared` is
    /// the media type its parent descriptor (or record) gives.
    pub async fn read_manifest(
        &self,
        digest: &Digest,
        declared: Option<&str>,
        what: &str,
    ) -> Result<Manifest, OciError> {
        let bytes = self
            .read_blob(digest, MAX_MANIFEST_BYTES as u64, what)
            .await
            .map_err(|e| match e {
                OciError::SizeMismatch { .. } => OciError::ManifestTooLarge {
                    what: what.to_owned(),
                    limit: MAX_MANIFEST_BYTES,
                },
                other => other,
            })?;
        Manifest::parse(bytes, declared, Some(digest), what)
    }

    /// Walks an image in the store from its top-level manifest or index: every blob it
    /// references (each manifest read and verified), its platforms and total size.
    pub async fn describe(&self, digest: &Digest, what: &str) -> Result<ImageSummary, OciError> {
        let top = self.read_manifest(digest, None, what).await?;
        let mut summary = ImageSummary {
            media_type: top.media_type.clone(),
            platforms: Vec::new(),
            size: 0,
            blobs: BTreeSet::new(),
        };
        let mut platforms = BTreeSet::new();
        self.walk(&top, None, 0, what, &mut summary, &mut platforms)
            .await?;
        summary.platforms = platforms.into_iter().collect();
        Ok(summary)
    }

    fn walk<'a>(
        &'a self,
        manifest: &'a Manifest,
        platform: Option<&'a Platform>,
        depth: u32,
        what: &'a str,
        summary: &'a mut ImageSummary,
        platforms: &'a mut BTreeSet<String>,
    ) -> Pin<Box<dyn Future<Output = Result<(), OciError>> + Send + 'a>> {
        Box::pin(async move {
            if summary.blobs.insert(manifest.digest.clone()) {
                summary.size += manifest.bytes.len() as u64;
            }
            match &manifest.content {
                ManifestContent::Image { config, layers } => {
                    if summary.blobs.insert(config.digest.clone()) {
                        summary.size += config.size;
                    }
                    for layer in layers.iter().filter(|l| !l.is_foreign_layer()) {
                        if summary.blobs.insert(layer.digest.clone()) {
                            summary.size += layer.size;
                        }
                    }
                    match platform {
                        Some(p) => {
                            platforms.insert(platform_name(p));
                        }
                        None => {
                            if let Some(p) = self.config_platform(config, what).await? {
                                platforms.insert(p);
                            }
                        }
                    }
                }
                ManifestContent::Index { manifests } => {
                    if depth >= MAX_DEPTH {
                        return Err(OciError::MalformedManifest {
                            what: what.to_owned(),
                            reason: "indexes nested more than two levels deep".into(),
                        });
                    }
                    for child in manifests {
                        let child_manifest = self
                            .read_manifest(&child.digest, Some(&child.media_type), what)
                            .await?;
                        self.walk(
                            &child_manifest,
                            child.platform.as_ref(),
                            depth + 1,
                            what,
                            summary,
                            platforms,
                        )
                        .await?;
                    }
                }
            }
            Ok(())
        })
    }

    /// `os/architecture[/variant]` from an image config, when it names them.
    async fn config_platform(
        &self,
        config: &Descriptor,
        what: &str,
    ) -> Result<Option<String>, OciError> {
        #[derive(Deserialize)]
        struct ConfigPlatform {
            os: Option<String>,
            architecture: Option<String>,
            variant: Option<String>,
        }
        let bytes = self
            .read_blob(&config.digest, MAX_CONFIG_BYTES, what)
            .await?;
        // A config that is not an image config (an artifact's) simply names no platform.
        let Ok(parsed) = serde_json::from_slice::<ConfigPlatform>(&bytes) else {
            return Ok(None);
        };
        Ok(match (parsed.os, parsed.architecture) {
            (Some(os), Some(architecture)) if !os.is_empty() && !architecture.is_empty() => {
                Some(platform_name(&Platform {
                    architecture,
                    os,
                    variant: parsed.variant.filter(|v| !v.is_empty()),
                }))
            }
            _ => None,
        })
    }

    async fn put_create_only_path(
        &self,
        key: &str,
        path: &ObjPath,
        bytes: Bytes,
    ) -> Result<PutOutcome, OciError> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(path, PutPayload::from(bytes), options)
            .await
        {
            Ok(_) => Ok(PutOutcome::Created),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(Self::store_error("write", key, e)),
        }
    }

    /// Writes a small object at `key` (relative to the prefix) only if nothing is there.
    pub async fn put_create_only(&self, key: &str, bytes: Bytes) -> Result<PutOutcome, OciError> {
        self.put_create_only_path(key, &self.path(key), bytes).await
    }

    /// Reads a small object at `key`, refusing more than `limit` bytes; `None` when absent.
    pub async fn get(&self, key: &str, limit: u64) -> Result<Option<Bytes>, OciError> {
        let result = match self.store.get(&self.path(key)).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(Self::store_error("read", key, e)),
        };
        if result.meta.size > limit {
            return Err(OciError::SizeMismatch {
                what: format!("{key} on {}", self.display),
                expected: limit,
                actual: result.meta.size,
            });
        }
        result
            .bytes()
            .await
            .map(Some)
            .map_err(|e| Self::store_error("read", key, e))
    }

    async fn delete(&self, key: &str) -> Result<(), OciError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Self::store_error("delete", key, e)),
        }
    }

    /// Reads a backup's `images.json` (`None` when the backup stored none).
    pub async fn read_record(&self, location: &str) -> Result<Option<BackupImages>, OciError> {
        let key = record_key(location);
        let Some(bytes) = self.get(&key, MAX_RECORD_BYTES).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| OciError::MalformedManifest {
                what: format!("{key} on {}", self.display),
                reason: format!("not a valid image record: {e}"),
            })
    }

    /// Writes a backup's `images.json` create-only. A record already there with the same
    /// content (a rerun) is fine; a different one is refused.
    pub async fn write_record(
        &self,
        location: &str,
        record: &BackupImages,
    ) -> Result<PutOutcome, OciError> {
        let key = record_key(location);
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| OciError::Aborted {
            what: key.clone(),
            reason: format!("failed to encode the image record: {e}"),
        })?;
        let outcome = self.put_create_only(&key, Bytes::from(bytes)).await?;
        if outcome == PutOutcome::AlreadyExists {
            let existing = self.read_record(location).await?;
            if existing.as_ref() != Some(record) {
                return Err(OciError::Aborted {
                    what: format!("{key} on {}", self.display),
                    reason: "a different image record of this backup is already stored; \
                             records are never replaced (delete the backup and take a new one)"
                        .into(),
                });
            }
        }
        Ok(outcome)
    }

    /// Keys of every `<plan>/<backup>/_metadata/images.json` under the prefix, committed or
    /// not (two delimiter listings and a `HEAD` per backup: the volume data is never listed).
    pub async fn list_records(&self) -> Result<Vec<String>, OciError> {
        let root = (!self.prefix.is_empty()).then(|| ObjPath::from(self.prefix.as_str()));
        let plans = self
            .store
            .list_with_delimiter(root.as_ref())
            .await
            .map_err(|e| Self::store_error("list", &self.display, e))?;
        let mut keys = Vec::new();
        for plan in plans.common_prefixes {
            let plan_name = self.relative(&plan);
            if plan_name.starts_with('_') || plan_name.starts_with('.') {
                continue;
            }
            let backups = self
                .store
                .list_with_delimiter(Some(&plan))
                .await
                .map_err(|e| Self::store_error("list", &plan_name, e))?;
            for backup in backups.common_prefixes {
                let location = self.relative(&backup);
                let key = record_key(&location);
                match self.store.head(&self.path(&key)).await {
                    Ok(_) => keys.push(key),
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(Self::store_error("inspect", &key, e)),
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Marks: the blobs every record in `keys` reaches. A referenced manifest missing from
    /// the store is counted (its backup's image is damaged), not fatal; any other error stops
    /// the collection (nothing is deleted on doubt).
    async fn mark(
        &self,
        keys: &[String],
        reachable: &mut HashSet<Digest>,
        report: &mut GcReport,
    ) -> Result<(), OciError> {
        for key in keys {
            let Some(bytes) = self.get(key, MAX_RECORD_BYTES).await? else {
                continue;
            };
            let record: BackupImages =
                serde_json::from_slice(&bytes).map_err(|e| OciError::MalformedManifest {
                    what: format!("{key} on {}", self.display),
                    reason: format!(
                        "not a valid image record ({e}); no image blob was collected, fix or \
                         delete the record"
                    ),
                })?;
            report.records += 1;
            for image in &record.images {
                let digest = Digest::parse(&image.digest)?;
                if reachable.contains(&digest) {
                    continue;
                }
                match self.describe(&digest, &image.image).await {
                    Ok(summary) => reachable.extend(summary.blobs),
                    Err(OciError::NotFound { what }) => {
                        tracing::warn!(record = %key, image = %image.image, missing = %what,
                            "a backed-up image is incomplete in the store");
                        report.missing_blobs += 1;
                        reachable.insert(digest);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// The store's clock: the modification time it gives a scratch object written now.
    async fn store_now(&self) -> Result<i64, OciError> {
        let key = format!(
            "{IMAGES_DIR}/clock/{}-{}",
            std::process::id(),
            fastrand::u64(..)
        );
        let path = self.path(&key);
        self.store
            .put(&path, PutPayload::from_static(b"clock"))
            .await
            .map_err(|e| Self::store_error("write", &key, e))?;
        let meta = self.store.head(&path).await;
        self.delete(&key).await?;
        let meta = meta.map_err(|e| Self::store_error("inspect", &key, e))?;
        Ok(meta.last_modified.timestamp())
    }

    /// Deletes every blob under `_images/` that no `images.json` reaches and that is older than
    /// `grace` by the store's clock (an upload in flight is never collected). Before deleting,
    /// the records are listed again and blobs a record written meanwhile reaches are kept.
    pub async fn collect_garbage(&self, grace: Duration) -> Result<GcReport, OciError> {
        let mut report = GcReport::default();
        let now = self.store_now().await?;
        let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        let first = self.list_records().await?;
        let mut reachable = HashSet::new();
        self.mark(&first, &mut reachable, &mut report).await?;
        let blobs_root = self.path(BLOBS_DIR);
        let stored: Vec<_> = self
            .store
            .list(Some(&blobs_root))
            .try_collect()
            .await
            .map_err(|e| Self::store_error("list", BLOBS_DIR, e))?;
        let mut candidates = Vec::new();
        for meta in stored {
            let key = self.relative(&meta.location);
            let Some(hex) = key.strip_prefix(&format!("{BLOBS_DIR}/")) else {
                continue;
            };
            // Only names that are digests are ours to collect.
            let Ok(digest) = Digest::parse(&format!("sha256:{hex}")) else {
                continue;
            };
            if reachable.contains(&digest) {
                continue;
            }
            if now.saturating_sub(meta.last_modified.timestamp()) < grace {
                report.kept_young_blobs += 1;
                continue;
            }
            candidates.push((digest, key, meta.size));
        }
        // Records written since the first listing (a backup that reused old blobs) keep theirs.
        let second = self.list_records().await?;
        let new: Vec<String> = second.into_iter().filter(|k| !first.contains(k)).collect();
        if !new.is_empty() {
            let mut scratch = GcReport::default();
            self.mark(&new, &mut reachable, &mut scratch).await?;
            report.records += scratch.records;
            report.missing_blobs += scratch.missing_blobs;
        }
        report.referenced_blobs = reachable.len();
        for (digest, key, size) in candidates {
            if reachable.contains(&digest) {
                continue;
            }
            self.delete(&key).await?;
            report.removed_blobs += 1;
            report.removed_bytes += size;
        }
        Ok(report)
    }
}

/// `os/architecture[/variant]`.
pub fn platform_name(platform: &Platform) -> String {
    match &platform.variant {
        Some(variant) => format!("{}/{}/{variant}", platform.os, platform.architecture),
        None => format!("{}/{}", platform.os, platform.architecture),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_inside_the_store() {
        let d = Digest::of(b"x");
        assert_eq!(
            ImageStore::blob_key(&d),
            format!("_images/blobs/sha256/{}", d.hex())
        );
        assert_eq!(
            record_key("plan/backup"),
            "plan/backup/_metadata/images.json"
        );
        assert_eq!(
            record_key("/plan/backup/"),
            "plan/backup/_metadata/images.json"
        );
    }

    #[test]
    fn platform_names() {
        let p = Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: Some("v8".into()),
        };
        assert_eq!(platform_name(&p), "linux/arm64/v8");
        let p = Platform { variant: None, ..p };
        assert_eq!(platform_name(&p), "linux/arm64");
    }
}
