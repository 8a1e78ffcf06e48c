#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The image store of a backup target through the copy engine, against real servers: registry A
//! → store (moto S3 and a filesystem target) → registry B; multi-arch indexes, a layer large
//! enough for a multipart upload, the second copy writing no blob, a corrupted stored blob
//! refused with the image named, and garbage collection.

mod common;

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path as ObjPath};
use tvk_datamover::target::{S3Config, Target};
use tvk_oci::{
    Digest, OciError,
    copy::{CopyEngine, Endpoint, ImageLocation},
    manifest::{self, Manifest},
    store::{BackupImages, ImageStore, StoredImage},
};

/// A target of each kind: (name, target, the temp dir keeping a filesystem target alive).
struct Targets {
    _moto: tvk_testkit::LocalServer,
    _dir: tvk_testkit::TempDir,
    all: Vec<(&'static str, Target)>,
}

fn targets() -> Targets {
    let moto = tvk_testkit::moto().unwrap();
    let bucket = tvk_testkit::unique_name("img-store");
    tvk_testkit::create_bucket(moto.addr(), &bucket).unwrap();
    let cfg = S3Config {
        bucket,
        prefix: "team/prod".into(),
        endpoint: Some(moto.url()),
        region: tvk_testkit::S3_REGION.into(),
        access_key_id: tvk_testkit::S3_ACCESS_KEY.into(),
        secret_access_key: tvk_testkit::S3_SECRET_KEY.into(),
        ..S3Config::default()
    };
    let s3 = Target::s3(&cfg, tokio::runtime::Handle::current()).unwrap();
    let dir = tvk_testkit::TempDir::new("img-store").unwrap();
    let fs = Target::filesystem(dir.path()).unwrap();
    Targets {
        _moto: moto,
        _dir: dir,
        all: vec![("filesystem", fs), ("s3", s3)],
    }
}

fn image_store(target: &Target) -> (Arc<ImageStore>, Arc<dyn ObjectStore>, String) {
    let (store, prefix) = target.object_store().unwrap();
    (
        Arc::new(ImageStore::new(
            store.clone(),
            &prefix,
            target.display_name(),
        )),
        store,
        prefix,
    )
}

fn registry_at(addr: &str, repository: &str) -> ImageLocation {
    ImageLocation {
        endpoint: Endpoint::Registry(common::client(addr)),
        repository: repository.to_owned(),
    }
}

fn at_store(store: &Arc<ImageStore>) -> ImageLocation {
    ImageLocation {
        endpoint: Endpoint::Store(store.clone()),
        repository: String::new(),
    }
}

fn key(prefix: &str, rel: &str) -> ObjPath {
    if prefix.is_empty() {
        ObjPath::from(rel)
    } else {
        ObjPath::from(format!("{prefix}/{rel}"))
    }
}

/// Pushes a single-platform OCI image with one random layer of `layer_bytes`.
async fn push_big_image(addr: &str, repo: &str, layer_bytes: usize) -> common::TestImage {
    let client = common::client(addr);
    let layer: Vec<u8> = (0..layer_bytes).map(|_| fastrand::u8(..)).collect();
    let layer_digest = client
        .put_blob_bytes(repo, Bytes::from(layer))
        .await
        .unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "s390x", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(b"unused").to_string()]},
    }))
    .unwrap();
    let config_size = config.len();
    let config_digest = client
        .put_blob_bytes(repo, Bytes::from(config))
        .await
        .unwrap();
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST,
        "config": {"mediaType": manifest::OCI_CONFIG, "digest": config_digest.to_string(), "size": config_size},
        "layers": [{"mediaType": manifest::OCI_LAYER_GZIP, "digest": layer_digest.to_string(), "size": layer_bytes}],
    });
    let m = Manifest::parse(
        Bytes::from(serde_json::to_vec(&m).unwrap()),
        None,
        None,
        repo,
    )
    .unwrap();
    client
        .put_manifest(repo, &m.digest.to_string(), &m)
        .await
        .unwrap();
    client.put_manifest(repo, "v1", &m).await.unwrap();
    common::TestImage {
        reference: format!("{addr}/{repo}:v1"),
        repository: repo.to_owned(),
        digest: m.digest.clone(),
        manifests: vec![m.digest],
        blobs: vec![layer_digest, config_digest],
    }
}

/// Registry A → store → registry B on both target kinds: every manifest and blob lands in the
/// store under its digest, platforms and sizes are described from the store, a second copy
/// writes no blob (and leaves every stored object untouched), and the restore into B is
/// complete (skopeo and HEADs) and tagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_round_trip_through_the_store_on_s3_and_filesystem() {
    let a = tvk_testkit::registry("A").unwrap().addr().to_string();
    let b = tvk_testkit::registry("B").unwrap().addr().to_string();
    let targets = targets();
    for (kind, target) in &targets.all {
        let repo = tvk_testkit::unique_name("store/multi");
        let multi = common::push_index_image(&a, &repo, Some("1.0")).await;
        let big_repo = tvk_testkit::unique_name("store/big");
        // Above the single-PUT limit: stored by a multipart upload.
        let big = push_big_image(&a, &big_repo, 9 << 20).await;
        let (store, raw, prefix) = image_store(target);

        let engine = CopyEngine::new(4);
        for image in [&multi, &big] {
            let copied = engine
                .copy_image(
                    &image.reference,
                    &registry_at(&a, &image.repository),
                    &at_store(&store),
                    &image.digest,
                    None,
                )
                .await
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(copied.descriptor.digest, image.digest);
        }
        let all: Vec<&Digest> = multi
            .manifests
            .iter()
            .chain(&multi.blobs)
            .chain(&big.manifests)
            .chain(&big.blobs)
            .collect();
        for d in &all {
            let stored = raw
                .get(&key(&prefix, &ImageStore::blob_key(d)))
                .await
                .unwrap_or_else(|e| panic!("{kind}: {d} not stored: {e}"))
                .bytes()
                .await
                .unwrap();
            assert_eq!(&&Digest::of(&stored), d, "{kind}: stored bytes of {d}");
        }
        let copied_blobs = engine.stats().blobs_copied.load(Ordering::Relaxed);
        assert_eq!(
            copied_blobs as usize,
            multi.blobs.len() + big.blobs.len(),
            "{kind}"
        );

        let summary = store
            .describe(&multi.digest, &multi.reference)
            .await
            .unwrap();
        assert_eq!(summary.platforms, ["linux/amd64", "linux/arm64"], "{kind}");
        assert_eq!(summary.media_type, manifest::OCI_INDEX);
        assert_eq!(
            summary.blobs.len(),
            multi.manifests.len() + multi.blobs.len()
        );
        let big_summary = store.describe(&big.digest, &big.reference).await.unwrap();
        assert_eq!(big_summary.platforms, ["linux/s390x"], "{kind}");
        assert!(big_summary.size > 9 << 20);

        // A second backup of the same images writes nothing.
        let before: Vec<_> = listing(&raw, &prefix).await;
        let again = CopyEngine::new(4);
        for image in [&multi, &big] {
            again
                .copy_image(
                    &image.reference,
                    &registry_at(&a, &image.repository),
                    &at_store(&store),
                    &image.digest,
                    None,
                )
                .await
                .unwrap();
        }
        assert_eq!(
            again.stats().blobs_copied.load(Ordering::Relaxed),
            0,
            "{kind}"
        );
        assert_eq!(
            again.stats().bytes_copied.load(Ordering::Relaxed),
            0,
            "{kind}"
        );
        assert_eq!(
            listing(&raw, &prefix).await,
            before,
            "{kind}: the store changed"
        );

        // Restore into registry B, tagged.
        let dest_repo = tvk_testkit::unique_name("restored/multi");
        store_to_registry(&store, &b, &dest_repo, &multi, Some("1.0"))
            .await
            .unwrap();
        common::assert_image_at(&b, &dest_repo, &multi).await;
        let b_client = common::client(&b);
        assert_eq!(
            b_client.resolve_manifest(&dest_repo, "1.0").await.unwrap(),
            Some(multi.digest.clone())
        );
        let big_dest = tvk_testkit::unique_name("restored/big");
        store_to_registry(&store, &b, &big_dest, &big, None)
            .await
            .unwrap();
        common::assert_image_at(&b, &big_dest, &big).await;
    }
}

async fn listing(raw: &Arc<dyn ObjectStore>, prefix: &str) -> Vec<(String, u64, i64)> {
    use futures::TryStreamExt;
    let root = key(prefix, "_images");
    let mut all: Vec<_> = raw
        .list(Some(&root))
        .map_ok(|m| {
            (
                m.location.to_string(),
                m.size,
                m.last_modified.timestamp_nanos_opt().unwrap_or_default(),
            )
        })
        .try_collect()
        .await
        .unwrap();
    all.sort();
    all
}

async fn store_to_registry(
    store: &Arc<ImageStore>,
    registry: &str,
    repository: &str,
    image: &common::TestImage,
    tag: Option<&str>,
) -> Result<(), OciError> {
    CopyEngine::new(4)
        .copy_image(
            &image.reference,
            &at_store(store),
            &registry_at(registry, repository),
            &image.digest,
            tag,
        )
        .await
        .map(|_| ())
}

/// A stored layer whose bytes changed (same size) is refused on the way out with the image
/// named, and the destination never gets the manifest; a missing one is named too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_or_missing_stored_blob_is_refused_naming_the_image() {
    let a = tvk_testkit::registry("A").unwrap().addr().to_string();
    let b = tvk_testkit::registry("B").unwrap().addr().to_string();
    let targets = targets();
    for (kind, target) in &targets.all {
        let repo = tvk_testkit::unique_name("store/corrupt");
        let image = common::push_docker_image(&a, &repo).await;
        let (store, raw, prefix) = image_store(target);
        CopyEngine::new(2)
            .copy_image(
                &image.reference,
                &registry_at(&a, &repo),
                &at_store(&store),
                &image.digest,
                None,
            )
            .await
            .unwrap();
        let layer = &image.blobs[0];
        let path = key(&prefix, &ImageStore::blob_key(layer));
        let mut bytes = raw
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        bytes[100] ^= 0x40;
        raw.put(&path, PutPayload::from(bytes)).await.unwrap();

        let dest = tvk_testkit::unique_name("restored/corrupt");
        let err = store_to_registry(&store, &b, &dest, &image, None)
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, OciError::DigestMismatch { .. }),
            "{kind}: {message}"
        );
        assert!(message.contains(&image.reference), "{kind}: {message}");
        assert!(message.contains(&layer.to_string()), "{kind}: {message}");
        assert!(
            !common::skopeo_has_manifest(&b, &dest, &image.digest),
            "{kind}: a manifest over a corrupted blob reached the registry"
        );

        raw.delete(&path).await.unwrap();
        let err = store_to_registry(&store, &b, &dest, &image, None)
            .await
            .unwrap_err();
        assert!(matches!(err, OciError::NotFound { .. }), "{kind}: {err}");
        assert!(err.to_string().contains(&image.reference), "{kind}: {err}");

        // Backing the image up again repairs the store.
        CopyEngine::new(2)
            .copy_image(
                &image.reference,
                &registry_at(&a, &repo),
                &at_store(&store),
                &image.digest,
                None,
            )
            .await
            .unwrap();
        store_to_registry(&store, &b, &dest, &image, None)
            .await
            .unwrap();
        common::assert_image_at(&b, &dest, &image).await;
    }
}

/// Pushes a single-platform OCI image of the given layers (blobs shared by content).
async fn push_layers(addr: &str, repo: &str, arch: &str, layers: &[&Bytes]) -> common::TestImage {
    let client = common::client(addr);
    let mut descriptors = Vec::new();
    let mut blobs = Vec::new();
    for layer in layers {
        let d = client.put_blob_bytes(repo, (*layer).clone()).await.unwrap();
        descriptors.push(serde_json::json!({"mediaType": manifest::OCI_LAYER_GZIP,
            "digest": d.to_string(), "size": layer.len()}));
        blobs.push(d);
    }
    let config = Bytes::from(
        serde_json::to_vec(&serde_json::json!({"architecture": arch, "os": "linux"})).unwrap(),
    );
    let config_size = config.len();
    let config_digest = client.put_blob_bytes(repo, config).await.unwrap();
    blobs.push(config_digest.clone());
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST,
        "config": {"mediaType": manifest::OCI_CONFIG, "digest": config_digest.to_string(), "size": config_size},
        "layers": descriptors,
    });
    let m = Manifest::parse(
        Bytes::from(serde_json::to_vec(&m).unwrap()),
        None,
        None,
        repo,
    )
    .unwrap();
    client
        .put_manifest(repo, &m.digest.to_string(), &m)
        .await
        .unwrap();
    common::TestImage {
        reference: format!("{addr}/{repo}@{}", m.digest),
        repository: repo.to_owned(),
        digest: m.digest.clone(),
        manifests: vec![m.digest],
        blobs,
    }
}

fn random(len: usize) -> Bytes {
    Bytes::from((0..len).map(|_| fastrand::u8(..)).collect::<Vec<u8>>())
}

fn record_of(images: &[&common::TestImage]) -> BackupImages {
    BackupImages {
        images: images
            .iter()
            .map(|image| StoredImage {
                image: image.reference.clone(),
                repository: image.repository.clone(),
                digest: image.digest.to_string(),
                media_type: manifest::OCI_MANIFEST.into(),
                platforms: Vec::new(),
                size: 0,
                workloads: vec!["Deployment ns/app".into()],
            })
            .collect(),
    }
}

/// Garbage collection: blobs only an expired backup used go, a layer it shared with a
/// remaining backup stays, every blob of the remaining backup's multi-arch index stays, and
/// an unreferenced blob younger than the grace period stays; records are create-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_keeps_what_a_backup_reaches_and_young_blobs() {
    let a = tvk_testkit::registry("A").unwrap().addr().to_string();
    let b = tvk_testkit::registry("B").unwrap().addr().to_string();
    let targets = targets();
    for (kind, target) in &targets.all {
        let (store, raw, prefix) = image_store(target);
        let repo = tvk_testkit::unique_name("gc/app");
        let shared = random(3000);
        let own = random(4000);
        // `old` (only in the expired backup) and `new` share the layer `shared`.
        let old = push_layers(&a, &repo, "amd64", &[&shared, &own]).await;
        let new = push_layers(&a, &repo, "arm64", &[&shared]).await;
        let multi = common::push_index_image(&a, &tvk_testkit::unique_name("gc/multi"), None).await;
        for image in [&old, &new, &multi] {
            CopyEngine::new(2)
                .copy_image(
                    &image.reference,
                    &registry_at(&a, &image.repository),
                    &at_store(&store),
                    &image.digest,
                    None,
                )
                .await
                .unwrap();
        }
        let expired = record_of(&[&old, &multi]);
        store
            .write_record("plan-1/backup-1", &expired)
            .await
            .unwrap();
        store
            .write_record("plan-2/backup-9", &record_of(&[&new, &multi]))
            .await
            .unwrap();
        // Rewriting the same record is a no-op, a different one is refused.
        store
            .write_record("plan-1/backup-1", &expired)
            .await
            .unwrap();
        let err = store
            .write_record("plan-1/backup-1", &record_of(&[&new]))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("never replaced"), "{err}");
        assert_eq!(
            store.list_records().await.unwrap(),
            [
                "plan-1/backup-1/_metadata/images.json",
                "plan-2/backup-9/_metadata/images.json"
            ]
        );
        assert_eq!(
            store.read_record("plan-1/backup-1").await.unwrap(),
            Some(expired)
        );

        // Backup 1 expires (retention deleted its metadata).
        raw.delete(&key(&prefix, "plan-1/backup-1/_metadata/images.json"))
            .await
            .unwrap();
        let only_old: Vec<&Digest> = vec![&old.digest, &old.blobs[1], &old.blobs[2]];
        // Everything is young: a one-hour grace removes nothing, even unreferenced.
        let report = store
            .collect_garbage(Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(report.removed_blobs, 0, "{kind}: {report:?}");
        assert_eq!(report.kept_young_blobs, 3, "{kind}: {report:?}");
        for d in &only_old {
            assert!(
                raw.head(&key(&prefix, &ImageStore::blob_key(d)))
                    .await
                    .is_ok()
            );
        }

        // Without grace the expired backup's own blobs go; the shared layer and everything of
        // the remaining backup stay.
        let report = store.collect_garbage(Duration::ZERO).await.unwrap();
        assert_eq!(report.removed_blobs, 3, "{kind}: {report:?}");
        assert_eq!(report.records, 1);
        assert_eq!(report.missing_blobs, 0);
        for d in &only_old {
            assert!(
                raw.head(&key(&prefix, &ImageStore::blob_key(d)))
                    .await
                    .is_err(),
                "{kind}: unreferenced blob {d} survived"
            );
        }
        for d in new
            .manifests
            .iter()
            .chain(&new.blobs)
            .chain(&multi.manifests)
            .chain(&multi.blobs)
        {
            assert!(
                raw.head(&key(&prefix, &ImageStore::blob_key(d)))
                    .await
                    .is_ok(),
                "{kind}: referenced blob {d} was deleted"
            );
        }
        assert_eq!(new.blobs[0], old.blobs[0], "the layer is shared");
        // The remaining backup still restores whole.
        for image in [&new, &multi] {
            let dest = tvk_testkit::unique_name("gc/restored");
            store_to_registry(&store, &b, &dest, image, None)
                .await
                .unwrap();
            common::assert_image_at(&b, &dest, image).await;
        }
    }
}
