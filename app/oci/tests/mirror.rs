#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! End-to-end mirror runs against real docker-registry instances on 127.0.0.1: the three flows,
//! re-runs, interruption, corruption on disk and in transit, missing images, token auth, catalog
//! images, ImageSetConfiguration, and the resources written for the cluster.

mod common;

use std::{path::Path, sync::Arc};

use common::*;
use semver::Version;
use tvk_oci::{
    Digest, ImageReference, OciError,
    mirror::{MirrorError, MirrorOptions, MirrorSource, MirrorSummary, NoProgress, run},
};
use tvk_testkit::{LocalServer, TempDir, private_registry};

struct World {
    src: LocalServer,
    bundle_100: TestImage,
    bundle_110: TestImage,
    bundle_200: TestImage,
    related_100: TestImage,
    related_110: TestImage,
    related_200: TestImage,
}

impl World {
    async fn new() -> Self {
        let src = private_registry().unwrap();
        let a = src.addr().to_string();
        Self {
            bundle_100: push_docker_image(&a, "tvk/bundle").await,
            bundle_110: push_docker_image(&a, "tvk/bundle").await,
            bundle_200: push_docker_image(&a, "tvk/bundle").await,
            related_100: push_index_image(&a, "tvk/manager", Some("1.0.0")).await,
            related_110: push_docker_list_image(&a, "tvk/manager").await,
            related_200: push_index_image(&a, "tvk/controller", None).await,
            src,
        }
    }

    fn addr(&self) -> String {
        self.src.addr().to_string()
    }

    fn fbc(&self) -> String {
        fbc_yaml(&FbcImages {
            bundle_100: &self.bundle_100,
            bundle_110: &self.bundle_110,
            bundle_200: &self.bundle_200,
            related_100: &self.related_100,
            related_110: &self.related_110,
            related_200: &self.related_200,
        })
    }

    /// The FBC with every image reference pointing at `addr` instead of the source registry.
    fn catalog_dir_via(&self, addr: &str) -> TempDir {
        let dir = TempDir::new("fbc").unwrap();
        std::fs::create_dir_all(dir.path().join("tvk")).unwrap();
        let text = self.fbc().replace(&self.addr(), addr);
        std::fs::write(dir.path().join("tvk/catalog.yaml"), text).unwrap();
        dir
    }

    fn catalog_dir(&self) -> TempDir {
        self.catalog_dir_via(&self.addr())
    }
}

fn options(source: MirrorSource, destination: &str) -> MirrorOptions {
    let mut o = MirrorOptions::new(source, destination.parse().unwrap());
    o.source_tls.verify = false;
    o.destination_tls.verify = false;
    o
}

async fn mirror(o: MirrorOptions) -> Result<MirrorSummary, MirrorError> {
    run(o, Arc::new(NoProgress)).await
}

fn read_yaml(path: &Path) -> serde_json::Value {
    tvk_api::yaml::parse_single(&std::fs::read_to_string(path).unwrap(), &Default::default())
        .unwrap()
}

fn incomplete(
    result: Result<MirrorSummary, MirrorError>,
) -> (Vec<tvk_oci::mirror::ImageFailure>, MirrorSummary) {
    match result {
        Err(MirrorError::Incomplete { failures, summary }) => (failures, *summary),
        Err(other) => panic!("expected an incomplete run, got: {other}"),
        Ok(s) => panic!("expected failure, run succeeded: {s:?}"),
    }
}

#[tokio::test]
async fn registry_to_registry_by_channel_copies_every_digest_writes_resources_and_reruns_as_no_op()
{
    let world = World::new().await;
    let dst = private_registry().unwrap();
    let d = dst.addr().to_string();
    let catalog = world.catalog_dir();
    let out = TempDir::new("out").unwrap();
    let mut o = options(
        MirrorSource::CatalogDir(catalog.path().to_owned()),
        &format!("docker://{d}/mirror"),
    );
    o.selection.channels = vec!["stable".into()];
    o.output_dir = Some(out.path().to_owned());

    let summary = mirror(o.clone()).await.unwrap();
    assert_eq!(summary.images, 4, "{summary:?}");
    assert!(summary.blobs_copied >= 8, "{summary:?}");
    assert!(summary.bytes_copied > 100_000, "{summary:?}");
    for image in [
        &world.bundle_100,
        &world.bundle_110,
        &world.related_100,
        &world.related_110,
    ] {
        assert_image_at(&d, &format!("mirror/{}", image.repository), image).await;
    }
    assert!(!skopeo_has_manifest(
        &d,
        "mirror/tvk/controller",
        &world.related_200.digest
    ));
    // The tag the source reference carried is not part of a digest-pinned catalog reference.
    let idms = read_yaml(&out.path().join("imageDigestMirrorSet.yaml"));
    assert_eq!(idms["apiVersion"], "config.openshift.io/v1");
    assert_eq!(idms["kind"], "ImageDigestMirrorSet");
    let mirrors = idms["spec"]["imageDigestMirrors"].as_array().unwrap();
    assert_eq!(mirrors.len(), 2, "{idms:?}");
    for m in mirrors {
        let source = m["source"].as_str().unwrap();
        let repo = source.strip_prefix(&format!("{}/", world.addr())).unwrap();
        assert_eq!(
            m["mirrors"][0].as_str().unwrap(),
            format!("{d}/mirror/{repo}")
        );
    }
    let icsp = read_yaml(&out.path().join("imageContentSourcePolicy.yaml"));
    assert_eq!(icsp["kind"], "ImageContentSourcePolicy");
    assert_eq!(
        icsp["spec"]["repositoryDigestMirrors"],
        idms["spec"]["imageDigestMirrors"]
    );
    let mapping = std::fs::read_to_string(out.path().join("mapping.txt")).unwrap();
    assert_eq!(mapping.lines().count(), 4, "{mapping}");
    let line = format!(
        "{}/tvk/manager@{}={d}/mirror/tvk/manager@{}",
        world.addr(),
        world.related_100.digest,
        world.related_100.digest
    );
    assert!(mapping.lines().any(|l| l == line), "{mapping}");
    assert!(!out.path().join("catalogSource").exists());

    // A re-run asks only the destination (one HEAD per image): it succeeds even with the
    // source registry gone.
    drop(world.src);
    let again = mirror(o).await.unwrap();
    assert_eq!(again.blobs_copied, 0, "{again:?}");
    assert_eq!(again.bytes_copied, 0, "{again:?}");
    assert_eq!(again.images_already_present, 4, "{again:?}");
    assert_eq!(again.manifests_written, 0, "{again:?}");
}

#[tokio::test]
async fn same_registry_mirror_mounts_blobs_instead_of_copying() {
    let world = World::new().await;
    let a = world.addr();
    let catalog = world.catalog_dir();
    let mut o = options(
        MirrorSource::CatalogDir(catalog.path().to_owned()),
        &format!("docker://{a}/copy"),
    );
    o.selection.channels = vec!["fast".into()];
    o.selection.heads_only = true;
    let summary = mirror(o).await.unwrap();
    assert_eq!(summary.images, 2, "{summary:?}");
    assert_eq!(summary.blobs_copied, 0, "{summary:?}");
    assert!(summary.blobs_mounted >= 7, "{summary:?}");
    assert_image_at(&a, "copy/tvk/controller", &world.related_200).await;
    assert_image_at(&a, "copy/tvk/bundle", &world.bundle_200).await;
}

#[tokio::test]
async fn registry_to_dir_then_dir_to_registry_keeps_every_digest_and_original_names() {
    let world = World::new().await;
    let catalog = world.catalog_dir();
    let layout = TempDir::new("layout").unwrap();
    let dir_dest = format!("dir:{}", layout.path().display());
    let mut o = options(
        MirrorSource::CatalogDir(catalog.path().to_owned()),
        &dir_dest,
    );
    o.selection.min_version = Some(Version::new(1, 1, 0));
    let listing = TempDir::new("listing").unwrap();
    o.output_dir = Some(listing.path().to_owned());
    let summary = mirror(o.clone()).await.unwrap();
    assert_eq!(summary.images, 4, "{summary:?}");
    for image in [
        &world.bundle_110,
        &world.bundle_200,
        &world.related_110,
        &world.related_200,
    ] {
        assert_image_in_layout(layout.path(), image);
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.path().join("index.json")).unwrap()).unwrap();
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert!(
        names.contains(&world.related_200.reference.as_str()),
        "{names:?}"
    );
    assert_eq!(names.len(), 4);
    // skopeo reads the layout we wrote, by the names we gave. (Only OCI-typed entries: skopeo
    // 1.9 skips index.json entries of Docker media types, which we must keep to keep digests.)
    assert_layout_manifest_via_skopeo(
        layout.path(),
        &world.related_200.reference,
        &world.related_200.digest,
    );
    let listed = std::fs::read_to_string(listing.path().join("mapping.txt")).unwrap();
    assert_eq!(listed.lines().count(), 4, "{listed}");

    let again = mirror(o).await.unwrap();
    assert_eq!(again.blobs_copied, 0, "{again:?}");
    assert!(again.blobs_skipped >= 10, "{again:?}");

    let dst = private_registry().unwrap();
    let d = dst.addr().to_string();
    let out = TempDir::new("out").unwrap();
    let mut o = options(
        MirrorSource::Layout(layout.path().to_owned()),
        &format!("docker://{d}/air/gap"),
    );
    o.output_dir = Some(out.path().to_owned());
    let summary = mirror(o.clone()).await.unwrap();
    assert_eq!(summary.images, 4, "{summary:?}");
    for image in [
        &world.bundle_110,
        &world.bundle_200,
        &world.related_110,
        &world.related_200,
    ] {
        assert_image_at(&d, &format!("air/gap/{}", image.repository), image).await;
    }
    let idms = read_yaml(&out.path().join("imageDigestMirrorSet.yaml"));
    let sources: Vec<String> = idms["spec"]["imageDigestMirrors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}={}",
                m["source"].as_str().unwrap(),
                m["mirrors"][0].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        sources.contains(&format!(
            "{}/tvk/controller={d}/air/gap/tvk/controller",
            world.addr()
        )),
        "{sources:?}"
    );
    let again = mirror(o).await.unwrap();
    assert_eq!(
        (again.blobs_copied, again.images_already_present),
        (0, 4),
        "{again:?}"
    );
}

#[tokio::test]
async fn interrupted_run_to_dir_resumes_without_recopying_finished_blobs() {
    let world = World::new().await;
    let catalog = world.catalog_dir();
    let layout = TempDir::new("layout").unwrap();
    let mut o = options(
        MirrorSource::CatalogDir(catalog.path().to_owned()),
        &format!("dir:{}", layout.path().display()),
    );
    o.parallelism = 1;
    let progress = Arc::new(CountingProgress::default());
    let run_future = run(o.clone(), progress.clone());
    tokio::select! {
        result = run_future => panic!("the run finished before it could be interrupted: {result:?}"),
        () = async {
            while progress.blobs.load(std::sync::atomic::Ordering::SeqCst) < 3 {
                let _ = tokio::time::timeout(std::time::Duration::from_millis(20), progress.notify.notified()).await;
            }
        } => {}
    }
    // The future is dropped here: an interruption mid-copy.
    let blobs_dir = layout.path().join("blobs/sha256");
    let finished: Vec<String> = std::fs::read_dir(&blobs_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(finished.len() >= 3, "{finished:?}");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.path().join("index.json")).unwrap()).unwrap();
    assert!(
        index["manifests"].as_array().unwrap().len() < 6,
        "an interrupted run named every image: {index}"
    );
    // Simulate what a crash can leave: a partial temp file, and a blob under its final name
    // with wrong content (as if written by something that did not verify).
    let victim = &world.related_200.blobs[0];
    std::fs::write(
        blobs_dir.join(format!(".{}-1-1.partial", victim.hex())),
        b"half",
    )
    .unwrap();
    std::fs::write(blobs_dir.join(victim.hex()), b"not the blob").unwrap();

    let summary = mirror(o).await.unwrap();
    assert_eq!(summary.images, 6, "{summary:?}");
    // Every config/layer blob finished before the interruption (except the one replaced by
    // garbage) is skipped, not copied again. (Manifests are not counted as blobs.)
    let all_blobs: Vec<String> = [
        &world.bundle_100,
        &world.bundle_110,
        &world.bundle_200,
        &world.related_100,
        &world.related_110,
        &world.related_200,
    ]
    .iter()
    .flat_map(|i| i.blobs.iter().map(|d| d.hex().to_owned()))
    .collect();
    let finished_blobs = finished
        .iter()
        .filter(|f| all_blobs.contains(f) && **f != victim.hex())
        .count();
    assert!(finished_blobs >= 2, "{finished:?}");
    assert!(
        summary.blobs_skipped as usize >= finished_blobs,
        "{summary:?} after {finished:?}"
    );
    assert_eq!(
        summary.blobs_copied as usize + summary.blobs_skipped as usize,
        all_blobs.len(),
        "{summary:?}"
    );
    for image in [
        &world.bundle_100,
        &world.bundle_110,
        &world.bundle_200,
        &world.related_100,
        &world.related_110,
        &world.related_200,
    ] {
        assert_image_in_layout(layout.path(), image);
    }
    let leftovers: Vec<String> = std::fs::read_dir(&blobs_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn corrupted_blob_in_layout_is_refused_and_not_reported_mirrored() {
    let world = World::new().await;
    let catalog = world.catalog_dir();
    let layout = TempDir::new("layout").unwrap();
    let mut o = options(
        MirrorSource::CatalogDir(catalog.path().to_owned()),
        &format!("dir:{}", layout.path().display()),
    );
    o.selection.min_version = Some(Version::new(2, 0, 0));
    mirror(o).await.unwrap();
    let layer = layout
        .path()
        .join("blobs/sha256")
        .join(world.related_200.blobs[0].hex());
    let mut bytes = std::fs::read(&layer).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&layer, bytes).unwrap();

    let dst = private_registry().unwrap();
    let d = dst.addr().to_string();
    let out = TempDir::new("out").unwrap();
    let mut o = options(
        MirrorSource::Layout(layout.path().to_owned()),
        &format!("docker://{d}/air"),
    );
    o.output_dir = Some(out.path().to_owned());
    let (failures, summary) = incomplete(mirror(o).await);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].image, world.related_200.reference);
    assert!(
        matches!(failures[0].error, OciError::DigestMismatch { .. }),
        "{}",
        failures[0].error
    );
    assert!(
        failures[0]
            .error
            .to_string()
            .contains(&world.related_200.blobs[0].to_string())
    );
    assert!(
        summary
            .mirrored
            .iter()
            .all(|m| m.source.repository != "tvk/controller"),
        "{summary:?}"
    );
    assert!(!skopeo_has_manifest(
        &d,
        "air/tvk/controller",
        &world.related_200.digest
    ));
    assert!(!out.path().join("imageDigestMirrorSet.yaml").exists());
}

#[tokio::test]
async fn lying_source_registry_is_detected_and_nothing_is_mirrored() {
    let world = World::new().await;
    let proxy = start_proxy(world.src.addr(), ProxyMode::FlipBlobBytes).await;
    let catalog = world.catalog_dir_via(&proxy.addr_string());
    let dst = private_registry().unwrap();
    let d = dst.addr().to_string();
    let mut o = options(
        MirrorSource::CatalogDir(catalog.path().to_owned()),
        &format!("docker://{d}/m"),
    );
    o.selection.channels = vec!["fast".into()];
    o.selection.heads_only = true;
    let (failures, summary) = incomplete(mirror(o).await);
    assert_eq!(failures.len(), 2, "{failures:?}");
    for f in &failures {
        assert!(
            matches!(f.error, OciError::DigestMismatch { .. }),
            "{}: {}",
            f.image,
            f.error
        );
        assert!(f.error.to_string().contains("refused"), "{}", f.error);
    }
    assert!(summary.mirrored.is_empty(), "{summary:?}");
    assert!(!skopeo_has_manifest(
        &d,
        "m/tvk/controller",
        &world.related_200.digest
    ));
    assert!(!skopeo_has_manifest(
        &d,
        "m/tvk/bundle",
        &world.bundle_200.digest
    ));
    let c = client(&d);
    assert!(
        !c.has_blob("m/tvk/controller", &world.related_200.blobs[0])
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn missing_image_fails_naming_it() {
    let world = World::new().await;
    let missing = format!("{}/tvk/gone@{}", world.addr(), Digest::of(b"no such image"));
    let catalog = TempDir::new("fbc").unwrap();
    let text = world.fbc().replace(&world.related_200.reference, &missing);
    std::fs::write(catalog.path().join("catalog.yaml"), text).unwrap();
    let dst = private_registry().unwrap();
    let mut o = options(
        MirrorSource::CatalogDir(catalog.path().to_owned()),
        &format!("docker://{}/m", dst.addr()),
    );
    o.selection.min_version = Some(Version::new(2, 0, 0));
    let result = mirror(o).await;
    let message = result
        .as_ref()
        .map(|_| String::new())
        .unwrap_or_else(|e| e.to_string());
    let (failures, summary) = incomplete(result);
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].image, missing);
    assert!(
        matches!(failures[0].error, OciError::NotFound { .. }),
        "{}",
        failures[0].error
    );
    assert!(
        message.contains(&missing) && message.contains("not found"),
        "{message}"
    );
    assert_eq!(
        summary.mirrored.len(),
        1,
        "the bundle image is still mirrored: {summary:?}"
    );
}

#[tokio::test]
async fn token_auth_registries_on_both_sides_are_handled_and_bad_credentials_fail_clearly() {
    let world = World::new().await;
    let dst = private_registry().unwrap();
    let mode = ProxyMode::BearerToken {
        user: "mirror-user".into(),
        password: "s3cret-pass".into(),
    };
    let src_proxy = start_proxy(world.src.addr(), mode.clone()).await;
    let dst_proxy = start_proxy(dst.addr(), mode).await;
    let catalog = world.catalog_dir_via(&src_proxy.addr_string());
    let auth_dir = TempDir::new("auth").unwrap();
    let authfile = auth_dir.path().join("auth.json");
    let write_auth = |password: &str| {
        use base64::Engine as _;
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("mirror-user:{password}"));
        std::fs::write(
            &authfile,
            format!(
                r#"{{"auths":{{"{}":{{"auth":"{auth}"}},"{}/m":{{"username":"mirror-user","password":"{password}"}}}}}}"#,
                src_proxy.addr_string(),
                dst_proxy.addr_string()
            ),
        )
        .unwrap();
    };
    // Capture every log line (debug level) of both runs: no credential or token may appear.
    let logs = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || LogSink(sink.clone()))
        .finish();
    let _log_guard = tracing::subscriber::set_default(subscriber);
    write_auth("s3cret-pass");
    let mut o = options(
        MirrorSource::CatalogDir(catalog.path().to_owned()),
        &format!("docker://{}/m", dst_proxy.addr_string()),
    );
    o.selection.channels = vec!["fast".into()];
    o.selection.heads_only = true;
    o.authfile = Some(authfile.clone());
    let summary = mirror(o.clone()).await.unwrap();
    assert_eq!(summary.images, 2);
    // One token per scope, cached and shared by parallel requests: the source was read from
    // two repositories.
    assert_eq!(src_proxy.tokens_issued(), 2, "{:?}", src_proxy.scopes());
    assert!(dst_proxy.tokens_issued() >= 1);
    assert!(
        src_proxy
            .scopes()
            .iter()
            .any(|s| s.contains("repository%3Atvk%2Fcontroller%3Apull")),
        "{:?}",
        src_proxy.scopes()
    );
    assert!(
        dst_proxy.scopes().iter().any(|s| s.contains("pull%2Cpush")),
        "{:?}",
        dst_proxy.scopes()
    );
    assert_image_at(
        &dst.addr().to_string(),
        "m/tvk/controller",
        &world.related_200,
    )
    .await;

    write_auth("wrong-pass");
    let (failures, _) = incomplete(mirror(o).await);
    for f in &failures {
        assert!(
            matches!(f.error, OciError::Unauthorized { .. }),
            "{}",
            f.error
        );
        let text = f.error.to_string();
        assert!(
            !text.contains("wrong-pass") && !text.contains("test-token"),
            "{text}"
        );
    }
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("DEBUG"),
        "the log capture saw nothing: {logs}"
    );
    for secret in ["s3cret-pass", "wrong-pass", "test-token", "bWlycm9yLXVzZXI"] {
        assert!(
            !logs.contains(secret),
            "{secret} leaked into the logs:\n{logs}"
        );
    }
}

struct LogSink(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const CATALOG_SOURCE_GLOB: &str = "catalogSource-tvk-index-mirror.yaml";

#[tokio::test]
async fn catalog_image_is_read_selected_by_channel_and_version_and_gets_a_catalog_source() {
    let world = World::new().await;
    let catalog_image = push_catalog_image(
        &world.addr(),
        "catalogs/tvk-index",
        "v1",
        &[("tvk/catalog.yaml", &world.fbc())],
    )
    .await;
    let dst = private_registry().unwrap();
    let d = dst.addr().to_string();
    let out = TempDir::new("out").unwrap();
    let mut o = options(
        MirrorSource::CatalogImage(ImageReference::parse(&catalog_image.reference).unwrap()),
        &format!("docker://{d}/mirror"),
    );
    o.selection.channels = vec!["fast".into()];
    o.selection.min_version = Some(Version::new(1, 5, 0));
    o.output_dir = Some(out.path().to_owned());
    let summary = mirror(o).await.unwrap();
    let sources: Vec<String> = summary
        .mirrored
        .iter()
        .map(|m| m.source.repository.clone())
        .collect();
    assert_eq!(
        sources,
        ["catalogs/tvk-index", "tvk/bundle", "tvk/controller"],
        "{summary:?}"
    );
    assert_image_at(&d, "mirror/catalogs/tvk-index", &catalog_image).await;
    assert_image_at(&d, "mirror/tvk/controller", &world.related_200).await;
    // The catalog keeps its tag at the mirror, too.
    assert_manifest_via_skopeo(&d, "mirror/catalogs/tvk-index", &catalog_image.digest);
    let tagged = client(&d)
        .resolve_manifest("mirror/catalogs/tvk-index", "v1")
        .await
        .unwrap();
    assert_eq!(tagged, Some(catalog_image.digest.clone()));
    let cs = read_yaml(&out.path().join(CATALOG_SOURCE_GLOB));
    assert_eq!(cs["apiVersion"], "operators.coreos.com/v1alpha1");
    assert_eq!(cs["kind"], "CatalogSource");
    assert_eq!(cs["metadata"]["namespace"], "openshift-marketplace");
    assert_eq!(cs["spec"]["sourceType"], "grpc");
    // OLM supplies the opm server: the catalog image is FROM scratch.
    assert_eq!(
        cs["spec"]["grpcPodConfig"]["extractContent"]["catalogDir"],
        "/configs"
    );
    assert_eq!(
        cs["spec"]["image"].as_str().unwrap(),
        format!("{d}/mirror/catalogs/tvk-index@{}", catalog_image.digest)
    );
}

#[tokio::test]
async fn image_set_configuration_selects_per_channel_ranges_and_additional_images() {
    let world = World::new().await;
    let catalog_image = push_catalog_image(
        &world.addr(),
        "catalogs/tvk-index",
        "v1",
        &[("tvk/catalog.yaml", &world.fbc())],
    )
    .await;
    let extra = push_index_image(&world.addr(), "extra/tool", Some("latest")).await;
    let dir = TempDir::new("isc").unwrap();
    let config = dir.path().join("isc.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: mirror.openshift.io/v2alpha1\nkind: ImageSetConfiguration\nmirror:\n  operators:\n  - catalog: {}\n    packages:\n    - name: tvk\n      channels:\n      - name: stable\n        minVersion: 1.1.0\n        maxVersion: 1.1.0\n  additionalImages:\n  - name: {}/extra/tool:latest\n",
            catalog_image.reference,
            world.addr()
        ),
    )
    .unwrap();
    let dst = private_registry().unwrap();
    let d = dst.addr().to_string();
    let out = TempDir::new("out").unwrap();
    let mut o = options(
        MirrorSource::ImageSetConfig(config.clone()),
        &format!("docker://{d}/isc"),
    );
    o.output_dir = Some(out.path().to_owned());
    let summary = mirror(o).await.unwrap();
    let mut got: Vec<String> = summary
        .mirrored
        .iter()
        .map(|m| {
            m.source
                .with_digest(m.source.digest.clone().unwrap())
                .to_string()
        })
        .collect();
    got.sort();
    let mut want = vec![
        format!(
            "{}/catalogs/tvk-index@{}",
            world.addr(),
            catalog_image.digest
        ),
        format!("{}/extra/tool@{}", world.addr(), extra.digest),
        world.bundle_110.reference.clone(),
        world.related_110.reference.clone(),
    ];
    want.sort();
    assert_eq!(got, want, "{summary:?}");
    assert_image_at(&d, "isc/extra/tool", &extra).await;
    assert_image_at(&d, "isc/tvk/manager", &world.related_110).await;
    assert!(out.path().join(CATALOG_SOURCE_GLOB).exists());

    std::fs::write(
        &config,
        "apiVersion: mirror.openshift.io/v1\nkind: ImageSetConfiguration\n",
    )
    .unwrap();
    let err = mirror(options(
        MirrorSource::ImageSetConfig(config),
        &format!("docker://{d}/isc"),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("v2alpha1"), "{err}");
}

#[tokio::test]
async fn transient_registry_errors_are_retried_and_a_dead_registry_fails_after_the_budget() {
    let world = World::new().await;
    let flaky = start_proxy(world.src.addr(), ProxyMode::Flaky { every: 3 }).await;
    let catalog = world.catalog_dir_via(&flaky.addr_string());
    let dst = private_registry().unwrap();
    let d = dst.addr().to_string();
    let mut o = options(
        MirrorSource::CatalogDir(catalog.path().to_owned()),
        &format!("docker://{d}/m"),
    );
    o.selection.channels = vec!["fast".into()];
    o.retry.base_delay = std::time::Duration::from_millis(5);
    let summary = mirror(o.clone()).await.unwrap();
    assert_eq!(summary.images, 4, "{summary:?}");
    assert!(
        flaky.injected_failures() >= 3,
        "the proxy injected {} failures",
        flaky.injected_failures()
    );
    assert_image_at(&d, "m/tvk/controller", &world.related_200).await;

    let dead = start_proxy(world.src.addr(), ProxyMode::Flaky { every: 1 }).await;
    let catalog = world.catalog_dir_via(&dead.addr_string());
    o.source = MirrorSource::CatalogDir(catalog.path().to_owned());
    // A fresh destination namespace: images already mirrored would not touch the source.
    o.destination = format!("docker://{d}/fresh").parse().unwrap();
    o.retry.max_attempts = 3;
    let (failures, summary) = incomplete(mirror(o).await);
    assert!(summary.mirrored.is_empty());
    assert_eq!(failures.len(), 4);
    for f in &failures {
        assert!(f.image.contains(&dead.addr_string()), "{}", f.image);
        assert!(f.error.is_transient(), "{}", f.error);
    }
}

/// A docker-registry serving TLS with a certificate for 127.0.0.1 signed by a test CA.
struct TlsRegistry {
    addr: String,
    ca_file: std::path::PathBuf,
    _server: tvk_testkit::LocalServer,
    _dir: TempDir,
}

fn tls_registry() -> TlsRegistry {
    let dir = TempDir::new("tls-registry").unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tvk-oci test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let ca_file = dir.path().join("ca.pem");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    let server = tvk_testkit::private_tls_registry(&cert, &key).unwrap();
    TlsRegistry {
        addr: server.addr().to_string(),
        ca_file,
        _server: server,
        _dir: dir,
    }
}

#[tokio::test]
async fn custom_ca_file_is_trusted_and_an_unknown_certificate_is_refused() {
    let tls = tls_registry();
    // Seeding with verification off also shows tls_verify=false is honoured over https.
    let image = push_index_image(&tls.addr, "secure/app", None).await;
    let catalog = TempDir::new("fbc").unwrap();
    std::fs::write(
        catalog.path().join("catalog.yaml"),
        format!(
            "schema: olm.package\nname: p\n---\nschema: olm.channel\nname: c\npackage: p\nentries: [{{name: p.v1.0.0}}]\n---\nschema: olm.bundle\nname: p.v1.0.0\npackage: p\nimage: {}\nproperties: []\n",
            image.reference
        ),
    )
    .unwrap();
    let dst = private_registry().unwrap();
    let d = dst.addr().to_string();
    let mut o = options(
        MirrorSource::CatalogDir(catalog.path().to_owned()),
        &format!("docker://{d}/m"),
    );
    o.source_tls.verify = true;
    o.retry.max_attempts = 2;

    let (failures, _) = incomplete(mirror(o.clone()).await);
    assert_eq!(
        failures[0].error.category(),
        "RegistryUnreachable",
        "{}",
        failures[0].error
    );
    let mut chain = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(&failures[0].error);
    while let Some(e) = source {
        chain.push_str(&format!("{e}; "));
        source = e.source();
    }
    assert!(chain.to_lowercase().contains("certificate"), "{chain}");

    o.source_tls.ca_file = Some(tls.ca_file.clone());
    let summary = mirror(o).await.unwrap();
    assert_eq!(summary.images, 1);
    assert_image_at(&d, "m/secure/app", &image).await;
}

#[tokio::test]
async fn truncated_blobs_are_refused_as_truncated() {
    let world = World::new().await;
    let proxy = start_proxy(world.src.addr(), ProxyMode::TruncateBlobs).await;
    let catalog = world.catalog_dir_via(&proxy.addr_string());
    let dst = private_registry().unwrap();
    let d = dst.addr().to_string();
    let mut o = options(
        MirrorSource::CatalogDir(catalog.path().to_owned()),
        &format!("docker://{d}/m"),
    );
    o.selection.min_version = Some(Version::new(2, 0, 0));
    o.retry.max_attempts = 2;
    o.retry.base_delay = std::time::Duration::from_millis(5);
    let (failures, summary) = incomplete(mirror(o).await);
    assert_eq!(failures.len(), 2, "{failures:?}");
    for f in &failures {
        assert!(
            matches!(f.error, OciError::SizeMismatch { .. }),
            "{}: {}",
            f.image,
            f.error
        );
        assert!(f.error.to_string().contains("truncated"), "{}", f.error);
    }
    assert!(summary.mirrored.is_empty());
    assert!(!skopeo_has_manifest(
        &d,
        "m/tvk/controller",
        &world.related_200.digest
    ));
}

#[tokio::test]
async fn basic_auth_registry_is_handled() {
    let world = World::new().await;
    let proxy = start_proxy(
        world.src.addr(),
        ProxyMode::Basic {
            user: "reader".into(),
            password: "basic-pass".into(),
        },
    )
    .await;
    let catalog = world.catalog_dir_via(&proxy.addr_string());
    let auth_dir = TempDir::new("auth").unwrap();
    let authfile = auth_dir.path().join("config.json");
    std::fs::write(
        &authfile,
        format!(
            r#"{{"auths":{{"http://{}/v1/":{{"username":"reader","password":"basic-pass"}}}}}}"#,
            proxy.addr_string()
        ),
    )
    .unwrap();
    let dst = private_registry().unwrap();
    let d = dst.addr().to_string();
    let mut o = options(
        MirrorSource::CatalogDir(catalog.path().to_owned()),
        &format!("docker://{d}/m"),
    );
    o.selection.min_version = Some(Version::new(2, 0, 0));
    let (failures, _) = incomplete(mirror(o.clone()).await);
    assert!(
        failures
            .iter()
            .all(|f| matches!(f.error, OciError::Unauthorized { .. })),
        "{failures:?}"
    );
    o.authfile = Some(authfile);
    let summary = mirror(o).await.unwrap();
    assert_eq!(summary.images, 2);
    assert_image_at(&d, "m/tvk/controller", &world.related_200).await;
}

/// Writes a layout whose only image is `manifest` (named like a mirrored image).
fn hostile_layout(manifest: &[u8], media_type: &str) -> (TempDir, Digest) {
    let dir = TempDir::new("hostile").unwrap();
    let blobs = dir.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let digest = Digest::of(manifest);
    std::fs::write(blobs.join(digest.hex()), manifest).unwrap();
    std::fs::write(
        dir.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{media_type}","digest":"{digest}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"quay.io/evil/app@{digest}"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();
    (dir, digest)
}

#[tokio::test]
async fn malformed_and_unknown_manifests_in_a_layout_are_refused_by_name() {
    let dst = private_registry().unwrap();
    let d = dst.addr().to_string();
    let (layout, _) = hostile_layout(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#, tvk_oci::manifest::OCI_MANIFEST);
    let (failures, _) = incomplete(
        mirror(options(
            MirrorSource::Layout(layout.path().to_owned()),
            &format!("docker://{d}/m"),
        ))
        .await,
    );
    assert!(
        matches!(failures[0].error, OciError::MalformedManifest { .. }),
        "{}",
        failures[0].error
    );
    assert!(
        failures[0].error.to_string().contains("quay.io/evil/app"),
        "{}",
        failures[0].error
    );

    let (layout, _) = hostile_layout(
        br#"{"schemaVersion":2,"mediaType":"application/vnd.example.thing+json"}"#,
        "application/vnd.example.thing+json",
    );
    let (failures, _) = incomplete(
        mirror(options(
            MirrorSource::Layout(layout.path().to_owned()),
            &format!("docker://{d}/m"),
        ))
        .await,
    );
    assert!(
        matches!(failures[0].error, OciError::UnsupportedMediaType { .. }),
        "{}",
        failures[0].error
    );
    assert!(
        failures[0]
            .error
            .to_string()
            .contains("application/vnd.example.thing+json")
    );

    let (layout, digest) = hostile_layout(b"{not json", tvk_oci::manifest::OCI_MANIFEST);
    let (failures, _) = incomplete(
        mirror(options(
            MirrorSource::Layout(layout.path().to_owned()),
            &format!("docker://{d}/m"),
        ))
        .await,
    );
    assert!(
        matches!(failures[0].error, OciError::MalformedManifest { .. }),
        "{}",
        failures[0].error
    );
    assert!(!skopeo_has_manifest(&d, "m/evil/app", &digest));
}

#[tokio::test]
async fn interrupted_registry_to_registry_run_resumes_without_recopying_finished_blobs() {
    let world = World::new().await;
    let catalog = world.catalog_dir();
    let dst = private_registry().unwrap();
    let d = dst.addr().to_string();
    let mut o = options(
        MirrorSource::CatalogDir(catalog.path().to_owned()),
        &format!("docker://{d}/m"),
    );
    o.parallelism = 1;
    let progress = Arc::new(CountingProgress::default());
    tokio::select! {
        result = run(o.clone(), progress.clone()) => panic!("the run finished before it could be interrupted: {result:?}"),
        () = async {
            while progress.blobs.load(std::sync::atomic::Ordering::SeqCst) < 4 {
                let _ = tokio::time::timeout(std::time::Duration::from_millis(20), progress.notify.notified()).await;
            }
        } => {}
    }
    let done_before = progress.blobs.load(std::sync::atomic::Ordering::SeqCst);
    let images = [
        &world.bundle_100,
        &world.bundle_110,
        &world.bundle_200,
        &world.related_100,
        &world.related_110,
        &world.related_200,
    ];
    let total: usize = images.iter().map(|i| i.blobs.len()).sum();
    let summary = mirror(o).await.unwrap();
    assert!(
        summary.blobs_copied as usize <= total - done_before as usize,
        "re-copied finished blobs: {summary:?} after {done_before} of {total}"
    );
    for image in images {
        assert_image_at(&d, &format!("m/{}", image.repository), image).await;
    }
}
