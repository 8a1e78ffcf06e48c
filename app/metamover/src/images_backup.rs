//! `tvk-metamover images backup` and `images gc`: the async edges of image backup.
//!
//! `backup` reads the Backup (its `status.location`), the workload documents the `snapshot`
//! command wrote (checked against the index's BLAKE3), collects their images
//! ([`crate::images::collect_images`]), resolves each to a digest with the workloads' pull
//! secrets (the pod's `imagePullSecrets` and its service account's, read from the API), copies
//! it with every platform into the target's image store (skipping every blob already there),
//! writes `<location>/_metadata/images.json` create-only once every blob is stored, checks the
//! blobs are still there (a concurrent `gc` cannot have taken one), and merge-patches
//! `status.snapshot.images` only. A rerun that finds `images.json` reuses it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};
use tvk_api::{Backup, ClusterBackup, snapshot::SnapshotImage};
use tvk_datamover::target::Target;
use tvk_oci::{
    Digest, ImageReference,
    auth::CredentialStore,
    copy::{CopyEngine, Endpoint, ImageLocation},
    registry::{RegistryConfig, RegistryPool},
    store::{BackupImages, ImageStore, StoredImage},
};

use crate::{
    commit::location_of,
    error::{Error, Result, is_status},
    images::{ImageUse, WorkloadImages, collect_images, image_error, workload_images},
    layout::{self, Index},
    snapshot::{BackupKind, BackupRef, FIELD_MANAGER, ProgressFn, blocking, load, read_json},
};

/// Largest decompressed workload document read.
const MAX_DOCUMENT: u64 = 2 << 30;
/// Blobs copied at once.
const BLOB_PARALLELISM: usize = 4;

/// What `images backup` did.
#[derive(Debug)]
pub struct BackupOutcome {
    /// The images recorded.
    pub images: Vec<StoredImage>,
    /// Blobs written now.
    pub blobs_copied: u64,
    /// Blobs the store already had.
    pub blobs_skipped: u64,
    /// Bytes written now.
    pub bytes_copied: u64,
    /// `images.json` was written by an earlier run and reused.
    pub reused: bool,
}

/// The target's image store.
pub fn image_store(target: &Target) -> Result<Arc<ImageStore>> {
    let (store, prefix) = target.object_store()?;
    Ok(Arc::new(ImageStore::new(
        store,
        &prefix,
        target.display_name(),
    )))
}

fn backup_display(r: &BackupRef) -> String {
    match (&r.kind, &r.namespace) {
        (BackupKind::Backup, Some(ns)) => format!("Backup {ns}/{}", r.name),
        (BackupKind::Backup, None) => format!("Backup {}", r.name),
        (BackupKind::ClusterBackup, _) => format!("ClusterBackup {}", r.name),
    }
}

/// Reads the workloads of the backup from the metadata `snapshot` wrote.
async fn stored_workloads(
    target: &Target,
    location: &layout::BackupLocation,
    seal: Option<&crate::seal::MetadataKey>,
) -> Result<Vec<Value>> {
    let index_key = location.index_key();
    let index: Index = read_json(target, index_key.clone(), seal)
        .await?
        .ok_or_else(|| Error::Layout {
            key: index_key.clone(),
            reason: "the metadata snapshot has not been written; run `tvk-metamover snapshot` \
                     first"
                .into(),
        })?;
    let mut objects = Vec::new();
    for doc in index
        .documents
        .iter()
        .filter(|d| crate::images::is_workload_kind(&d.group, &d.kind))
    {
        let key = location.key(&doc.key);
        let t = target.clone();
        let (k, size) = (key.clone(), doc.bytes);
        let bytes = blocking(move || Ok(t.read_all(&k, size)?)).await?;
        if layout::digest(&bytes) != doc.blake3 {
            return Err(Error::Layout {
                key,
                reason: "its content does not match the BLAKE3 digest in the index (damaged on \
                         the target); run the snapshot again"
                    .into(),
            });
        }
        let bytes = crate::seal::open(seal, &key, bytes.into())?;
        objects.extend(layout::read_document(&bytes, MAX_DOCUMENT)?);
    }
    Ok(objects)
}

/// The `imagePullSecrets` of every service account the workloads run as (absent accounts
/// have none, as for the kubelet).
async fn service_account_secrets(
    client: &Client,
    workloads: &[WorkloadImages],
) -> Result<BTreeMap<(String, String), Vec<String>>> {
    let mut out = BTreeMap::new();
    for w in workloads.iter().filter(|w| !w.images.is_empty()) {
        let ns = w.namespace.clone().unwrap_or_default();
        let key = (ns.clone(), w.service_account.clone());
        if out.contains_key(&key) {
            continue;
        }
        let secrets = match Api::<ServiceAccount>::namespaced(client.clone(), &ns)
            .get(&w.service_account)
            .await
        {
            Ok(sa) => sa
                .image_pull_secrets
                .unwrap_or_default()
                .into_iter()
                .filter_map(|s| (!s.name.is_empty()).then_some(s.name))
                .collect(),
            Err(e) if is_status(&e, 404) => Vec::new(),
            Err(e) => {
                return Err(Error::kube(
                    format!("read service account {ns}/{}", w.service_account),
                    e,
                ));
            }
        };
        out.insert(key, secrets);
    }
    Ok(out)
}

/// Credentials from pull secrets, in order (earlier secrets win for the same registry). A
/// missing secret is skipped with a warning, as the kubelet does; a secret of another type or
/// an unreadable one is an error naming it.
pub async fn credentials_from_secrets(
    client: &Client,
    secrets: &[(String, String)],
    warnings: &mut Vec<String>,
) -> Result<CredentialStore> {
    let mut store = CredentialStore::anonymous();
    for (ns, name) in secrets {
        let secret = match Api::<Secret>::namespaced(client.clone(), ns)
            .get(name)
            .await
        {
            Ok(s) => s,
            Err(e) if is_status(&e, 404) => {
                warnings.push(format!("pull secret {ns}/{name} does not exist; skipped"));
                continue;
            }
            Err(e) => return Err(Error::kube(format!("read pull secret {ns}/{name}"), e)),
        };
        let key = match secret.type_.as_deref() {
            Some("kubernetes.io/dockerconfigjson") => ".dockerconfigjson",
            Some("kubernetes.io/dockercfg") => ".dockercfg",
            other => {
                return Err(Error::Usage(format!(
                    "secret {ns}/{name} is of type {:?}, not kubernetes.io/dockerconfigjson; \
                     registry credentials must be a dockerconfigjson secret",
                    other.unwrap_or("Opaque")
                )));
            }
        };
        let data = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .ok_or_else(|| {
                Error::Usage(format!(
                    "secret {ns}/{name} has no {key} key; recreate it with `kubectl create \
                     secret docker-registry`"
                ))
            })?;
        store
            .merge_docker_config(&data.0, &format!("secret {ns}/{name}"))
            .map_err(|e| Error::Usage(e.to_string()))?;
    }
    Ok(store)
}

fn describe_use(u: &ImageUse) -> String {
    let workloads: Vec<&str> = u.workloads.iter().map(String::as_str).collect();
    format!("image {} (used by {})", u.image, workloads.join(", "))
}

fn auth_hint(u: &ImageUse) -> String {
    if u.pull_secrets.is_empty() {
        "no pull secret was given; add one to the workload's imagePullSecrets or its service \
         account"
            .into()
    } else {
        let names: Vec<String> = u
            .pull_secrets
            .iter()
            .map(|(ns, n)| format!("{ns}/{n}"))
            .collect();
        format!("pull secrets tried: {}", names.join(", "))
    }
}

/// Runs `images backup` for one backup.
pub async fn run_backup(
    client: Client,
    target: Target,
    r: &BackupRef,
    progress: ProgressFn<'_>,
    seal: Option<&crate::seal::MetadataKey>,
) -> Result<BackupOutcome> {
    let loaded = load(&client, r, false).await?;
    let id = &loaded.identity;
    let location = location_of(&loaded.object, &id.plan_uid, &id.uid)?;
    let store = image_store(&target)?;

    if let Some(record) = store
        .read_record(&location.location)
        .await
        .map_err(|e| image_error("read the image record", e))?
    {
        verify_stored(&store, &record).await?;
        patch_backup_status(&client, r, &record).await?;
        progress(json!({"event": "reused", "images": record.images.len()}));
        return Ok(BackupOutcome {
            images: record.images,
            blobs_copied: 0,
            blobs_skipped: 0,
            bytes_copied: 0,
            reused: true,
        });
    }

    let objects = stored_workloads(&target, &location, seal).await?;
    let workloads: Vec<WorkloadImages> = objects.iter().filter_map(workload_images).collect();
    let sa_secrets = service_account_secrets(&client, &workloads).await?;
    let uses = collect_images(&workloads, &sa_secrets);
    progress(json!({"event": "collected", "images": uses.len(),
        "workloads": workloads.iter().filter(|w| !w.images.is_empty()).count()}));

    let mut warnings = Vec::new();
    let mut pools: HashMap<Vec<(String, String)>, RegistryPool> = HashMap::new();
    let engine = CopyEngine::new(BLOB_PARALLELISM);
    let destination = ImageLocation {
        endpoint: Endpoint::Store(store.clone()),
        repository: String::new(),
    };
    let mut images = Vec::new();
    for u in &uses {
        let what = describe_use(u);
        let reference = ImageReference::parse(&u.image).map_err(|e| image_error(&what, e))?;
        if !pools.contains_key(&u.pull_secrets) {
            let credentials =
                credentials_from_secrets(&client, &u.pull_secrets, &mut warnings).await?;
            let pool = RegistryPool::new(RegistryConfig {
                credentials: Arc::new(credentials),
                ..RegistryConfig::default()
            })
            .map_err(|e| image_error(&what, e))?;
            pools.insert(u.pull_secrets.clone(), pool);
        }
        let Some(pool) = pools.get(&u.pull_secrets) else {
            continue;
        };
        let registry = pool.client(&reference.registry);
        let on_error = |e: tvk_oci::OciError| {
            let context = match &e {
                tvk_oci::OciError::Unauthorized { .. } | tvk_oci::OciError::Forbidden { .. } => {
                    format!(
                        "{what} in registry {} ({})",
                        reference.registry,
                        auth_hint(u)
                    )
                }
                _ => format!("{what} in registry {}", reference.registry),
            };
            image_error(&context, e)
        };
        let digest = match &reference.digest {
            Some(d) => d.clone(),
            None => registry
                .resolve_manifest(&reference.repository, &reference.manifest_reference())
                .await
                .map_err(on_error)?
                .ok_or_else(|| Error::Image {
                    message: format!(
                        "{what} does not exist in registry {}: tag {} of {} was not found; \
                         fix the workload's image or push the image, then back up again",
                        reference.registry,
                        reference.manifest_reference(),
                        reference.repository
                    ),
                    retryable: false,
                    category: "ImageNotFound",
                })?,
        };
        let source = ImageLocation {
            endpoint: Endpoint::Registry(registry.clone()),
            repository: reference.repository.clone(),
        };
        engine
            .copy_image(&u.image, &source, &destination, &digest, None)
            .await
            .map_err(on_error)?;
        let summary = store
            .describe(&digest, &u.image)
            .await
            .map_err(|e| image_error(&what, e))?;
        progress(
            json!({"event": "image", "image": u.image, "digest": digest.to_string(),
            "platforms": summary.platforms, "size": summary.size}),
        );
        images.push(StoredImage {
            image: u.image.clone(),
            repository: reference.repository_name(),
            digest: digest.to_string(),
            media_type: summary.media_type,
            platforms: summary.platforms,
            size: summary.size,
            workloads: u.workloads.iter().cloned().collect(),
        });
    }
    for w in &warnings {
        progress(json!({"event": "warning", "message": w}));
    }
    let record = BackupImages { images };
    store
        .write_record(&location.location, &record)
        .await
        .map_err(|e| image_error("write the image record", e))?;
    // A garbage collection that listed the records before ours was written may have taken a
    // blob this backup skipped as present: check, and fail (retryably) rather than record a
    // backup whose images are incomplete.
    verify_stored(&store, &record).await?;
    patch_backup_status(&client, r, &record).await?;
    let stats = engine.stats();
    Ok(BackupOutcome {
        images: record.images,
        blobs_copied: stats.blobs_copied.load(Ordering::Relaxed),
        blobs_skipped: stats.blobs_skipped.load(Ordering::Relaxed),
        bytes_copied: stats.bytes_copied.load(Ordering::Relaxed),
        reused: false,
    })
}

/// Every blob of every recorded image is in the store.
async fn verify_stored(store: &ImageStore, record: &BackupImages) -> Result<()> {
    for image in &record.images {
        let what = format!("stored image {}", image.image);
        let digest = Digest::parse(&image.digest).map_err(|e| image_error(&what, e))?;
        let summary = store
            .describe(&digest, &image.image)
            .await
            .map_err(|e| image_error(&what, e))?;
        for blob in &summary.blobs {
            if store
                .blob_size(blob)
                .await
                .map_err(|e| image_error(&what, e))?
                .is_none()
            {
                return Err(Error::Image {
                    message: format!(
                        "{what}: blob {blob} is missing from the image store of {} (removed by a \
                         concurrent garbage collection?); run the image backup again",
                        store.display()
                    ),
                    retryable: true,
                    category: "Target",
                });
            }
        }
    }
    Ok(())
}

/// Merge-patches `status.snapshot.images` only (field manager `tvk-metamover`).
async fn patch_backup_status(client: &Client, r: &BackupRef, record: &BackupImages) -> Result<()> {
    let images: Vec<SnapshotImage> = record
        .images
        .iter()
        .map(|i| SnapshotImage {
            image: i.image.clone(),
            digest: i.digest.clone(),
            platforms: i.platforms.clone(),
            ..SnapshotImage::default()
        })
        .collect();
    let patch = Patch::Merge(json!({"status": {"snapshot": {"images": images}}}));
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let what = backup_display(r);
    let result = match r.kind {
        BackupKind::Backup => {
            let ns = r.namespace.as_deref().unwrap_or_default();
            Api::<Backup>::namespaced(client.clone(), ns)
                .patch_status(&r.name, &pp, &patch)
                .await
                .map(|_| ())
        }
        BackupKind::ClusterBackup => Api::<ClusterBackup>::all(client.clone())
            .patch_status(&r.name, &pp, &patch)
            .await
            .map(|_| ()),
    };
    result.map_err(|e| Error::kube(format!("patch the status of {what}"), e))
}

/// What `images gc` did.
pub type GcOutcome = tvk_oci::store::GcReport;

/// Runs `images gc` on the whole target.
pub async fn run_gc(
    target: Target,
    grace: Duration,
    progress: ProgressFn<'_>,
) -> Result<GcOutcome> {
    let store = image_store(&target)?;
    let report = store
        .collect_garbage(grace)
        .await
        .map_err(|e| image_error("collect unused image blobs", e))?;
    progress(
        json!({"event": "collected", "removedBlobs": report.removed_blobs,
        "removedBytes": report.removed_bytes}),
    );
    Ok(report)
}
