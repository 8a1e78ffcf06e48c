//! Reading a file-based catalog out of a catalog image: pull its manifest (the `linux/amd64`
//! entry of an index, else the first), find the configs directory from the
//! `operators.operatorframework.io.index.configs.v1` label (default `/configs`), stream each
//! layer to a temporary file through the digest check, and read the catalog files under that
//! directory from the tar (gzip or plain), later layers overriding earlier ones.

use std::{
    collections::BTreeMap,
    io::Read,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::{
    catalog::{Catalog, MAX_CATALOG_FILE_BYTES, is_catalog_file},
    copy::VerifyingStream,
    error::OciError,
    manifest::{Descriptor, ManifestContent},
    mirror::MirrorError,
    reference::{Digest, ImageReference},
    registry::RegistryClient,
};

/// The label naming where a catalog image keeps its FBC.
pub const CONFIGS_LABEL: &str = "operators.operatorframework.io.index.configs.v1";
/// Most bytes of catalog files read from one image.
const MAX_CATALOG_BYTES: u64 = 1024 * 1024 * 1024;
const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A catalog read from an image, and the digest the image reference resolved to.
#[derive(Debug)]
pub struct CatalogImage {
    /// The parsed catalog.
    pub catalog: Catalog,
    /// The image's (top-level) digest.
    pub digest: Digest,
}

/// Pulls `reference` and parses the catalog in it.
pub async fn read(
    client: &RegistryClient,
    reference: &ImageReference,
) -> Result<CatalogImage, MirrorError> {
    let name = reference.to_string();
    let oci = |source: OciError| MirrorError::Oci {
        what: format!("catalog image {name}"),
        source,
    };
    let repo = &reference.repository;
    let top = client
        .get_manifest(
            repo,
            &reference.manifest_reference(),
            reference.digest.as_ref(),
        )
        .await
        .map_err(oci)?;
    let image = match &top.content {
        ManifestContent::Image { .. } => top.clone(),
        ManifestContent::Index { manifests } => {
            let chosen = manifests
                .iter()
                .find(|d| {
                    d.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                })
                .or_else(|| manifests.first())
                .ok_or_else(|| {
                    oci(OciError::MalformedManifest {
                        what: name.clone(),
                        reason: "an index with no manifests".into(),
                    })
                })?;
            client
                .get_manifest(repo, &chosen.digest.to_string(), Some(&chosen.digest))
                .await
                .map_err(oci)?
        }
    };
    let ManifestContent::Image { config, layers } = &image.content else {
        return Err(oci(OciError::MalformedManifest {
            what: name.clone(),
            reason: "a catalog image must resolve to an image manifest".into(),
        }));
    };
    let temp = TempDir::new().map_err(|e| oci(OciError::io("create", std::env::temp_dir(), e)))?;
    let config_path = download(client, repo, config, &name, &temp.0, MAX_CONFIG_BYTES)
        .await
        .map_err(oci)?;
    let configs_dir = configs_dir(&config_path).unwrap_or_else(|| "configs".to_owned());
    let mut layer_files = Vec::new();
    for layer in layers {
        layer_files.push((
            layer.media_type.clone(),
            download(client, repo, layer, &name, &temp.0, u64::MAX)
                .await
                .map_err(oci)?,
        ));
    }
    let image_name = name.clone();
    let files = tokio::task::spawn_blocking(move || {
        extract_catalog_files(&layer_files, &configs_dir, &image_name)
    })
    .await
    .map_err(|e| {
        oci(OciError::Aborted {
            what: "reading the catalog layers".into(),
            reason: e.to_string(),
        })
    })??;
    drop(temp);
    let mut catalog = Catalog::default();
    for (path, bytes) in files {
        catalog.add_file(&format!("{name}:/{path}"), &bytes)?;
    }
    Ok(CatalogImage {
        catalog,
        digest: top.digest,
    })
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "tvk-oci-catalog-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn download(
    client: &RegistryClient,
    repo: &str,
    blob: &Descriptor,
    name: &str,
    dir: &Path,
    cap: u64,
) -> Result<PathBuf, OciError> {
    let what = format!("blob {} of {name}", blob.digest);
    if blob.size > cap {
        return Err(OciError::SizeMismatch {
            what,
            expected: cap,
            actual: blob.size,
        });
    }
    let response = client.get_blob(repo, &blob.digest).await?;
    let raw = crate::registry::blob_body(response, client.registry(), &what);
    let verdict = Arc::new(Mutex::new(None));
    let mut stream = VerifyingStream::new(
        Box::pin(raw),
        blob.digest.clone(),
        blob.size,
        &what,
        verdict.clone(),
    );
    let path = dir.join(blob.digest.hex());
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| OciError::io("create", &path, e))?;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                return Err(verdict
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .unwrap_or(e));
            }
        };
        file.write_all(&chunk)
            .await
            .map_err(|e| OciError::io("write", &path, e))?;
    }
    file.flush()
        .await
        .map_err(|e| OciError::io("write", &path, e))?;
    Ok(path)
}

fn configs_dir(config_path: &Path) -> Option<String> {
    let bytes = std::fs::read(config_path).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let dir = value["config"]["Labels"][CONFIGS_LABEL].as_str()?;
    Some(dir.trim_matches('/').to_owned())
}

fn normalize(path: &str) -> String {
    path.trim_start_matches("./")
        .trim_start_matches('/')
        .to_owned()
}

/// Reads catalog files under `configs_dir` from the layer tars, applying whiteouts.
fn extract_catalog_files(
    layers: &[(String, PathBuf)],
    configs_dir: &str,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>, MirrorError> {
    let prefix = format!("{configs_dir}/");
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut total = 0u64;
    let bad = |what: String| MirrorError::Oci {
        what: format!("catalog image {name}"),
        source: OciError::MalformedManifest {
            what: name.to_owned(),
            reason: what,
        },
    };
    for (media_type, path) in layers {
        let file = std::fs::File::open(path).map_err(|e| MirrorError::Oci {
            what: format!("catalog image {name}"),
            source: OciError::io("open", path, e),
        })?;
        let reader: Box<dyn Read> = if media_type.ends_with("gzip") {
            Box::new(flate2::read::GzDecoder::new(file))
        } else if media_type.ends_with(".tar") || media_type.ends_with("tar") {
            Box::new(file)
        } else {
            return Err(bad(format!(
                "layer media type {media_type:?} is not supported for catalog images (gzip or plain tar)"
            )));
        };
        let mut archive = tar::Archive::new(reader);
        let entries = archive
            .entries()
            .map_err(|e| bad(format!("a layer is not a tar archive: {e}")))?;
        for entry in entries {
            let mut entry =
                entry.map_err(|e| bad(format!("a layer is not a valid tar archive: {e}")))?;
            let entry_path = normalize(
                &entry
                    .path()
                    .map_err(|e| bad(e.to_string()))?
                    .to_string_lossy(),
            );
            let file_name = entry_path.rsplit('/').next().unwrap_or_default();
            if let Some(hidden) = file_name.strip_prefix(".wh.") {
                let parent = entry_path.rsplit_once('/').map_or("", |(p, _)| p);
                let removed = if parent.is_empty() {
                    hidden.to_owned()
                } else {
                    format!("{parent}/{hidden}")
                };
                files.retain(|k, _| *k != removed && !k.starts_with(&format!("{removed}/")));
                continue;
            }
            if !entry_path.starts_with(&prefix)
                || !entry.header().entry_type().is_file()
                || !is_catalog_file(&entry_path)
            {
                continue;
            }
            let size = entry.size();
            if size > MAX_CATALOG_FILE_BYTES || total + size > MAX_CATALOG_BYTES {
                return Err(bad(format!(
                    "catalog file {entry_path} exceeds the size caps"
                )));
            }
            total += size;
            let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| bad(format!("failed to read {entry_path}: {e}")))?;
            files.insert(entry_path, bytes);
        }
    }
    Ok(files)
}
