//! An OCI image layout on disk (`dir:PATH`): the air-gap transfer medium.
//!
//! `oci-layout`, `index.json` (one entry per image, named by the
//! `org.opencontainers.image.ref.name` annotation) and `blobs/sha256/<hex>`. Blobs are written
//! to a `.partial` file in the same directory, verified while they stream, synced and only then
//! renamed to their digest: a blob under its final name is always complete and correct, so an
//! interrupted run resumes by skipping finished blobs. `index.json` is replaced atomically after
//! an image's blobs and manifests are in place (data first, metadata last). One writer per
//! layout at a time.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use crate::{
    error::OciError,
    manifest::{ANNOTATION_REF_NAME, Descriptor, Manifest, OCI_INDEX},
    reference::Digest,
};

const LAYOUT_FILE: &str = "oci-layout";
const INDEX_FILE: &str = "index.json";
const PARTIAL_SUFFIX: &str = ".partial";
/// Largest `index.json` read (a layout from outside is hostile input).
const MAX_INDEX_BYTES: u64 = 64 * 1024 * 1024;

/// `index.json` of a layout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayoutIndex {
    /// Always 2.
    pub schema_version: u32,
    /// Always the OCI index media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// One descriptor per named image.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// An OCI image layout directory.
#[derive(Debug)]
pub struct OciLayout {
    root: PathBuf,
    index_lock: tokio::sync::Mutex<()>,
}

static PARTIAL_COUNTER: AtomicU64 = AtomicU64::new(0);

impl OciLayout {
    /// Opens an existing layout (a source): `oci-layout` must exist and say version 1.x.
    pub fn open(root: &Path) -> Result<Self, OciError> {
        let marker = root.join(LAYOUT_FILE);
        let text = std::fs::read_to_string(&marker).map_err(|e| OciError::InvalidLayout {
            path: root.to_owned(),
            reason: format!("cannot read {LAYOUT_FILE}: {e}"),
        })?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| OciError::InvalidLayout {
                path: root.to_owned(),
                reason: format!("{LAYOUT_FILE} is not JSON: {e}"),
            })?;
        let version = value["imageLayoutVersion"].as_str().unwrap_or_default();
        if !version.starts_with("1.") {
            return Err(OciError::InvalidLayout {
                path: root.to_owned(),
                reason: format!("unsupported imageLayoutVersion {version:?}"),
            });
        }
        Ok(Self {
            root: root.to_owned(),
            index_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Opens a layout as a destination, creating it when missing, and removes `.partial`
    /// leftovers of an interrupted run.
    pub fn create(root: &Path) -> Result<Self, OciError> {
        let blobs = root.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).map_err(|e| OciError::io("create", &blobs, e))?;
        let marker = root.join(LAYOUT_FILE);
        if !marker.exists() {
            write_atomic_sync(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = root.join(INDEX_FILE);
        if !index.exists() {
            let empty = LayoutIndex {
                schema_version: 2,
                media_type: Some(OCI_INDEX.to_owned()),
                manifests: Vec::new(),
            };
            let bytes = serde_json::to_vec_pretty(&empty).map_err(|e| OciError::InvalidLayout {
                path: root.to_owned(),
                reason: e.to_string(),
            })?;
            write_atomic_sync(&index, &bytes)?;
        }
        let entries = std::fs::read_dir(&blobs).map_err(|e| OciError::io("list", &blobs, e))?;
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .ends_with(PARTIAL_SUFFIX)
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Self::open(root)
    }

    /// The layout's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob lives (the digest's hex is validated, so this stays inside the layout).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Whether the layout holds the blob complete and correct. A file of the wrong size or
    /// content (bit rot, a foreign writer) is removed so that it is copied again.
    pub async fn has_verified_blob(&self, digest: &Digest, size: u64) -> Result<bool, OciError> {
        let path = self.blob_path(digest);
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.len() == size => {}
            Ok(_) => {
                tracing::warn!(blob = %digest, path = %path.display(), "removing a blob of the wrong size");
                remove_if_exists(&path).await?;
                return Ok(false);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(OciError::io("inspect", &path, e)),
        }
        let mut stream = self.read_blob_unverified(digest).await?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = stream.next().await {
            hasher.update(&chunk?);
        }
        if Digest::from_hasher(hasher) == *digest {
            Ok(true)
        } else {
            tracing::warn!(blob = %digest, path = %path.display(), "removing a corrupted blob");
            remove_if_exists(&path).await?;
            Ok(false)
        }
    }

    /// Streams a blob's bytes as stored; callers verify them (see [`crate::copy`]).
    pub async fn read_blob_unverified(
        &self,
        digest: &Digest,
    ) -> Result<impl Stream<Item = Result<bytes::Bytes, OciError>> + use<>, OciError> {
        let path = self.blob_path(digest);
        let file = tokio::fs::File::open(&path).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                OciError::NotFound {
                    what: format!("blob {digest} in layout {}", self.root.display()),
                }
            } else {
                OciError::io("open", &path, e)
            }
        })?;
        let reader = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
        Ok(reader.map(move |r| r.map_err(|e| OciError::io("read", &path, e))))
    }

    /// Writes a blob from a stream that verifies itself (it yields an error instead of its end
    /// when the digest or size is wrong): the bytes go to a `.partial` file, renamed to the
    /// digest only after the stream ended cleanly and the file was synced.
    pub async fn write_blob<S>(&self, digest: &Digest, mut stream: S) -> Result<u64, OciError>
    where
        S: Stream<Item = Result<bytes::Bytes, OciError>> + Unpin,
    {
        let path = self.blob_path(digest);
        let partial = path.with_file_name(format!(
            ".{}-{}-{}{PARTIAL_SUFFIX}",
            digest.hex(),
            std::process::id(),
            PARTIAL_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = async {
            let mut file = tokio::fs::File::create(&partial)
                .await
                .map_err(|e| OciError::io("create", &partial, e))?;
            let mut written = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                file.write_all(&chunk)
                    .await
                    .map_err(|e| OciError::io("write", &partial, e))?;
                written += chunk.len() as u64;
            }
            file.sync_all()
                .await
                .map_err(|e| OciError::io("sync", &partial, e))?;
            drop(file);
            tokio::fs::rename(&partial, &path)
                .await
                .map_err(|e| OciError::io("rename", &partial, e))?;
            Ok(written)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        result
    }

    /// Reads a manifest blob, verifying its digest and size cap, and parses it.
    pub async fn read_manifest(
        &self,
        descriptor: &Descriptor,
        what: &str,
    ) -> Result<Manifest, OciError> {
        if descriptor.size > crate::manifest::MAX_MANIFEST_BYTES as u64 {
            return Err(OciError::ManifestTooLarge {
                what: what.to_owned(),
                limit: crate::manifest::MAX_MANIFEST_BYTES,
            });
        }
        let path = self.blob_path(&descriptor.digest);
        let bytes = tokio::fs::read(&path).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                OciError::NotFound {
                    what: format!("manifest of {what} in layout {}", self.root.display()),
                }
            } else {
                OciError::io("read", &path, e)
            }
        })?;
        Manifest::parse(
            bytes.into(),
            Some(&descriptor.media_type),
            Some(&descriptor.digest),
            what,
        )
    }

    /// Writes a manifest blob (already verified: it was parsed from its digest).
    pub async fn write_manifest(&self, manifest: &Manifest) -> Result<(), OciError> {
        if self
            .has_verified_blob(&manifest.digest, manifest.bytes.len() as u64)
            .await?
        {
            return Ok(());
        }
        let chunk: Result<bytes::Bytes, OciError> = Ok(manifest.bytes.clone());
        self.write_blob(&manifest.digest, futures::stream::iter([chunk]))
            .await
            .map(|_| ())
    }

    /// Reads `index.json`.
    pub async fn read_index(&self) -> Result<LayoutIndex, OciError> {
        let path = self.root.join(INDEX_FILE);
        let size = tokio::fs::metadata(&path)
            .await
            .map_err(|e| OciError::io("read", &path, e))?
            .len();
        if size > MAX_INDEX_BYTES {
            return Err(OciError::InvalidLayout {
                path: self.root.clone(),
                reason: format!("{INDEX_FILE} is larger than {MAX_INDEX_BYTES} bytes"),
            });
        }
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| OciError::io("read", &path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| OciError::InvalidLayout {
            path: self.root.clone(),
            reason: format!("{INDEX_FILE} is not a valid image index: {e}"),
        })
    }

    /// Names an image in `index.json` (replacing an entry of the same name), atomically.
    pub async fn add_image(
        &self,
        name: &str,
        manifest: &Descriptor,
        annotations: BTreeMap<String, String>,
    ) -> Result<(), OciError> {
        let _guard = self.index_lock.lock().await;
        let mut index = self.read_index().await?;
        index.manifests.retain(|d| {
            d.annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_REF_NAME))
                .is_none_or(|n| n != name)
        });
        let mut entry = manifest.clone();
        let mut all = annotations;
        all.insert(ANNOTATION_REF_NAME.to_owned(), name.to_owned());
        entry.annotations = Some(all);
        index.manifests.push(entry);
        index
            .manifests
            .sort_by(|a, b| ref_name(a).cmp(&ref_name(b)));
        let bytes = serde_json::to_vec_pretty(&index).map_err(|e| OciError::InvalidLayout {
            path: self.root.clone(),
            reason: e.to_string(),
        })?;
        let path = self.root.join(INDEX_FILE);
        tokio::task::spawn_blocking(move || write_atomic_sync(&path, &bytes))
            .await
            .map_err(|e| {
                OciError::io(
                    "write",
                    self.root.join(INDEX_FILE),
                    std::io::Error::other(e),
                )
            })?
    }
}

/// The ref name of an `index.json` entry.
pub fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_REF_NAME))
        .map(String::as_str)
}

async fn remove_if_exists(path: &Path) -> Result<(), OciError> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(OciError::io("remove", path, e)),
    }
}

/// Writes a small file through a temp file + fsync + rename, so readers see old or new.
fn write_atomic_sync(path: &Path, bytes: &[u8]) -> Result<(), OciError> {
    use std::io::Write as _;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp).map_err(|e| OciError::io("create", &tmp, e))?;
    file.write_all(bytes)
        .map_err(|e| OciError::io("write", &tmp, e))?;
    file.sync_all().map_err(|e| OciError::io("sync", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| OciError::io("rename", &tmp, e))
}
