#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `tvk-metamover images backup|restore|gc` end to end, as the Jobs run them: the binary
//! against the in-memory API server (tvk-test-apiserver), real docker-registry instances A and
//! B (one behind a Basic-auth proxy), and a filesystem or moto S3 target. The backup side runs
//! the real `snapshot` first and reads what it wrote.

#[path = "../../oci/tests/common/mod.rs"]
mod common;

#[path = "common/mod.rs"]
mod run;

use run::{Run, S3_ENV, create_backup, create_plan};
use std::path::Path;

use base64::{Engine, engine::general_purpose::STANDARD};
use kube::Api;
use serde_json::{Value, json};
use tvk_oci::{Digest, store::BackupImages};
use tvk_test_apiserver::ApiServer;
use tvk_testkit::TempDir;

/// The binary with the test S3 server's credentials.
async fn metamover(kubeconfig: &Path, args: &[&str]) -> Run {
    run::metamover_env(kubeconfig, args, &S3_ENV).await
}

fn docker_config(registry: &str, user: &str, password: &str) -> String {
    let auth = STANDARD.encode(format!("{user}:{password}"));
    STANDARD.encode(json!({"auths": {registry: {"auth": auth}}}).to_string())
}

fn pull_secret(ns: &str, name: &str, registry: &str, user: &str, password: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": name, "namespace": ns},
        "data": {".dockerconfigjson": docker_config(registry, user, password)}})
}

/// A namespace with a plan; returns (plan uid).
fn seed_namespace(server: &ApiServer, ns: &str) -> String {
    if server
        .create(serde_json::to_value(tvk_api::crd::all().remove(0)).unwrap())
        .is_ok()
    {
        for crd in tvk_api::crd::all().into_iter().skip(1) {
            server.create(serde_json::to_value(&crd).unwrap()).unwrap();
        }
    }
    server
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
        .unwrap();
    create_plan(server, ns, json!({}))
}

fn container(name: &str, image: &str) -> Value {
    json!({"name": name, "image": image})
}

/// Deletes a manifest from a docker-registry by digest (the distribution API's DELETE).
fn delete_manifest(registry: &str, repo: &str, digest: &Digest) {
    tvk_testkit::http_without_body(
        registry,
        "DELETE",
        &format!("/v2/{repo}/manifests/{digest}"),
        202,
    )
    .unwrap();
}

async fn backup_status_images(server: &ApiServer, ns: &str, name: &str) -> Vec<Value> {
    let client = server.client();
    let b: Api<tvk_api::Backup> = Api::namespaced(client, ns);
    let b = b.get(name).await.unwrap();
    let snapshot = b.status.unwrap().snapshot.unwrap();
    snapshot["images"].as_array().cloned().unwrap_or_default()
}

/// Target flags for each kind (the temp dir and moto server are kept alive by the caller).
struct Targets {
    _dir: TempDir,
    _moto: tvk_testkit::LocalServer,
    flags: Vec<(&'static str, Vec<String>)>,
}

fn targets() -> Targets {
    let dir = TempDir::new("mm-images").unwrap();
    let moto = tvk_testkit::moto().unwrap();
    let bucket = tvk_testkit::unique_name("mm-images");
    tvk_testkit::create_bucket(moto.addr(), &bucket).unwrap();
    Targets {
        flags: vec![
            (
                "filesystem",
                vec!["--target".into(), dir.path().to_str().unwrap().into()],
            ),
            (
                "s3",
                vec![
                    "--target".into(),
                    format!("s3://{bucket}/tvk"),
                    "--s3-endpoint".into(),
                    moto.url(),
                ],
            ),
        ],
        _dir: dir,
        _moto: moto,
    }
}

fn args<'a>(base: &[&'a str], target: &'a [String]) -> Vec<&'a str> {
    base.iter()
        .copied()
        .chain(target.iter().map(String::as_str))
        .collect()
}

/// Runs `cmd` (`["snapshot"]`, `["images", "backup"]`) for Backup `ns/name` on `target`.
async fn for_backup(kc: &Path, cmd: &[&str], ns: &str, name: &str, target: &[String]) -> Run {
    let base = [
        cmd,
        &["--kind", "Backup", "--namespace", ns, "--name", name],
    ]
    .concat();
    metamover(kc, &args(&base, target)).await
}

/// Runs `images restore` for Restore `ns/name` of the backup at `location` on `target`.
async fn images_restore(kc: &Path, ns: &str, name: &str, location: &str, target: &[String]) -> Run {
    let base = [
        "images",
        "restore",
        "--kind",
        "Restore",
        "--namespace",
        ns,
        "--name",
        name,
        "--location",
        location,
    ];
    metamover(kc, &args(&base, target)).await
}

/// Backup: every workload kind's images (init, regular, ephemeral; by tag and by digest; one
/// behind Basic auth reached with the service account's pull secret) are stored, listed in
/// status.snapshot.images with digests and platforms, and recorded in images.json; a rerun
/// reuses the record; a second backup copies no blob; an image missing from its registry fails
/// the backup naming it and the workload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_backup_stores_records_and_is_incremental() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let a = tvk_testkit::registry("A").unwrap().addr().to_string();
    let web = common::push_index_image(&a, &tvk_testkit::unique_name("mm/web"), Some("1.0")).await;
    let tool = common::push_docker_image(&a, &tvk_testkit::unique_name("mm/tool")).await;
    let private_repo = tvk_testkit::unique_name("mm/private");
    let private = common::push_docker_image(&a, &private_repo).await;
    let proxy = common::start_proxy(
        a.parse().unwrap(),
        common::ProxyMode::Basic {
            user: "puller".into(),
            password: "s3cret".into(),
        },
    )
    .await;
    let web_ref = format!("{a}/{}:1.0", web.repository);
    let private_ref = format!("{}/{private_repo}@{}", proxy.addr_string(), private.digest);
    let targets = targets();
    for (kind, target) in &targets.flags {
        let server = ApiServer::start().await.unwrap();
        let kc = server.kubeconfig_path().to_path_buf();
        let ns = "shop";
        let plan_uid = seed_namespace(&server, ns);
        server
            .create(pull_secret(
                ns,
                "private-pull",
                &proxy.addr_string(),
                "puller",
                "s3cret",
            ))
            .unwrap();
        server
            .create(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "runner", "namespace": ns},
                "imagePullSecrets": [{"name": "private-pull"}, {"name": "missing-secret"}]}))
            .unwrap();
        server
            .create(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": ns},
                "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"initContainers": [container("init", &tool.reference)],
                        "containers": [container("web", &web_ref)]}}}}))
            .unwrap();
        server
            .create(json!({"apiVersion": "batch/v1", "kind": "CronJob",
                "metadata": {"name": "report", "namespace": ns},
                "spec": {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": {
                    "spec": {"serviceAccountName": "runner", "restartPolicy": "Never",
                        "containers": [container("report", &private_ref)]}}}}}}))
            .unwrap();
        server
            .create(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "debug", "namespace": ns},
                "spec": {"containers": [container("main", &web_ref)],
                    "ephemeralContainers": [container("dbg", &tool.reference)]}}))
            .unwrap();

        let backup_uid = create_backup(&server, ns, "b1");
        let snap = for_backup(&kc, &["snapshot"], ns, "b1", target).await;
        snap.ok();
        let run = for_backup(&kc, &["images", "backup"], ns, "b1", target).await;
        let result = run.ok().clone();
        assert_eq!(result["images"], 3, "{kind}: {result}");
        assert!(
            result["blobsCopied"].as_u64().unwrap() > 0,
            "{kind}: {result}"
        );
        assert_eq!(result["reused"], false);
        assert!(
            run.lines.iter().any(|l| l["event"] == "warning"
                && l["message"].as_str().unwrap().contains("missing-secret")),
            "{kind}: {:?}",
            run.lines
        );

        let images = backup_status_images(&server, ns, "b1").await;
        let by_image = |r: &str| {
            images
                .iter()
                .find(|i| i["image"] == r)
                .unwrap_or_else(|| panic!("{kind}: {r} not in {images:?}"))
                .clone()
        };
        let w = by_image(&web_ref);
        assert_eq!(w["digest"], web.digest.to_string());
        assert_eq!(w["platforms"], json!(["linux/amd64", "linux/arm64"]));
        assert_eq!(by_image(&tool.reference)["digest"], tool.digest.to_string());
        assert_eq!(by_image(&private_ref)["platforms"], json!(["linux/amd64"]));

        // The record on the target names workloads and sizes.
        let record = read_record(kind, target, &plan_uid, &backup_uid).await;
        let tool_record = record
            .images
            .iter()
            .find(|i| i.image == tool.reference)
            .unwrap();
        assert_eq!(
            tool_record.workloads,
            ["Deployment shop/web", "Pod shop/debug"]
        );
        assert!(tool_record.size > 20_000);
        assert_eq!(tool_record.repository, format!("{a}/{}", tool.repository));

        // A rerun reuses the record.
        let again = for_backup(&kc, &["images", "backup"], ns, "b1", target).await;
        assert_eq!(again.ok()["reused"], true);

        // A second backup of the same application writes no blob.
        create_backup(&server, ns, "b2");
        for_backup(&kc, &["snapshot"], ns, "b2", target).await.ok();
        let second = for_backup(&kc, &["images", "backup"], ns, "b2", target).await;
        let second = second.ok();
        assert_eq!(second["images"], 3, "{kind}");
        assert_eq!(second["blobsCopied"], 0, "{kind}: {second}");
        assert_eq!(second["bytesCopied"], 0, "{kind}: {second}");
        assert!(second["blobsSkipped"].as_u64().unwrap() > 0);

        // An image deleted before the backup fails it, naming the image and the workload.
        let gone_ref = format!("{a}/{}:9.9", tvk_testkit::unique_name("mm/gone"));
        server
            .create(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": "db", "namespace": ns},
                "spec": {"selector": {"matchLabels": {"app": "db"}}, "serviceName": "db",
                    "template": {"metadata": {"labels": {"app": "db"}},
                        "spec": {"containers": [container("db", &gone_ref)]}}}}))
            .unwrap();
        create_backup(&server, ns, "b3");
        for_backup(&kc, &["snapshot"], ns, "b3", target).await.ok();
        let failed = for_backup(&kc, &["images", "backup"], ns, "b3", target).await;
        assert_eq!(
            failed.code, 1,
            "{kind}: {:?} {}",
            failed.lines, failed.stderr
        );
        let error = failed.error();
        assert!(error.contains(&gone_ref), "{kind}: {error}");
        assert!(error.contains("StatefulSet shop/db"), "{kind}: {error}");
        assert_eq!(failed.result()["category"], "ImageNotFound");
        assert_eq!(failed.result()["retryable"], false);
    }
}

async fn read_record(kind: &str, target: &[String], plan: &str, backup: &str) -> BackupImages {
    use tvk_datamover::target::{S3Config, Target};
    let target = match target[1].strip_prefix("s3://") {
        Some(rest) => {
            let (bucket, prefix) = rest.split_once('/').unwrap();
            let cfg = S3Config {
                bucket: bucket.into(),
                prefix: prefix.into(),
                endpoint: Some(target[3].clone()),
                region: tvk_testkit::S3_REGION.into(),
                access_key_id: tvk_testkit::S3_ACCESS_KEY.into(),
                secret_access_key: tvk_testkit::S3_SECRET_KEY.into(),
                ..S3Config::default()
            };
            Target::s3(&cfg, tokio::runtime::Handle::current()).unwrap()
        }
        None => Target::filesystem(Path::new(&target[1])).unwrap(),
    };
    let store = tvk_metamover::images_backup::image_store(&target).unwrap();
    store
        .read_record(&format!("{plan}/{backup}"))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{kind}: no images.json"))
}

fn create_restore(
    server: &ApiServer,
    ns: &str,
    name: &str,
    registry: &str,
    repository: &str,
    secret: &str,
    overwrite: bool,
) -> String {
    let r = server
        .create(
            json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Restore",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"source": {"type": "Backup", "backup": {"name": "b1", "namespace": ns}},
                "restoreFlags": {"overrideImageIfExist": overwrite},
                "actionFlags": {"imageRestore": true},
                "imageRegistry": {"registry": registry, "repository": repository,
                    "registryAuthSecret": {"name": secret}}}}),
        )
        .unwrap();
    r["metadata"]["uid"].as_str().unwrap().to_owned()
}

async fn restore_status_images(server: &ApiServer, ns: &str, name: &str) -> Vec<Value> {
    let r: Api<tvk_api::Restore> = Api::namespaced(server.client(), ns);
    let status = r.get(name).await.unwrap().status.unwrap();
    serde_json::to_value(status.images.unwrap())
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Restore: an original still in registry A is left alone (Reachable); images deleted from A
/// are pushed from the target into B under `<repository>/<last element>:<tag>` and recorded
/// (Pushed); a tag in B that names another image gets a new `-tvk-<uid>` tag (PushedNewTag)
/// and stays untouched, unless overrideImageIfExist (Overwritten); every digest is in B
/// (skopeo); a registry refusing the credentials fails with the image and registry named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_restore_pushes_only_what_is_gone() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let a = tvk_testkit::registry("A").unwrap().addr().to_string();
    let b = tvk_testkit::registry("B").unwrap().addr().to_string();
    let keep =
        common::push_index_image(&a, &tvk_testkit::unique_name("rs/keep"), Some("1.0")).await;
    let gone =
        common::push_index_image(&a, &tvk_testkit::unique_name("rs/gone"), Some("2.0")).await;
    let clash_repo = tvk_testkit::unique_name("rs/clash");
    let clash = common::push_docker_image(&a, &clash_repo).await;
    let a_client = common::client(&a);
    let clash_manifest = a_client
        .get_manifest(&clash_repo, &clash.digest.to_string(), None)
        .await
        .unwrap();
    a_client
        .put_manifest(&clash_repo, "3.0", &clash_manifest)
        .await
        .unwrap();
    let refs = [
        format!("{a}/{}:1.0", keep.repository),
        format!("{a}/{}:2.0", gone.repository),
        format!("{a}/{clash_repo}:3.0"),
    ];

    let server = ApiServer::start().await.unwrap();
    let kc = server.kubeconfig_path().to_path_buf();
    let ns = "shop";
    let plan_uid = seed_namespace(&server, ns);
    server
        .create(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [container("keep", &refs[0]), container("gone", &refs[1]),
                    container("clash", &refs[2])]}}}}))
        .unwrap();
    let backup_uid = create_backup(&server, ns, "b1");
    let dir = TempDir::new("mm-images-restore").unwrap();
    let target = vec![
        "--target".to_owned(),
        dir.path().to_str().unwrap().to_owned(),
    ];
    for_backup(&kc, &["snapshot"], ns, "b1", &target).await.ok();
    for_backup(&kc, &["images", "backup"], ns, "b1", &target)
        .await
        .ok();

    // The application's registry loses two of its images.
    delete_manifest(&a, &gone.repository, &gone.digest);
    delete_manifest(&a, &clash_repo, &clash.digest);
    // Registry B already has another image where the third one would go.
    let restore_repo = tvk_testkit::unique_name("restored");
    let clash_last = clash_repo.rsplit('/').next().unwrap();
    let clash_dest = format!("{restore_repo}/{clash_last}");
    let other = common::push_docker_image(&b, &clash_dest).await;
    let b_client = common::client(&b);
    let other_manifest = b_client
        .get_manifest(&clash_dest, &other.digest.to_string(), None)
        .await
        .unwrap();
    b_client
        .put_manifest(&clash_dest, "3.0", &other_manifest)
        .await
        .unwrap();

    server
        .create(pull_secret(ns, "push", &b, "pusher", "pw"))
        .unwrap();
    let location = format!("{plan_uid}/{backup_uid}");
    let uid = create_restore(&server, ns, "r1", &b, &restore_repo, "push", false);
    let run = images_restore(&kc, ns, "r1", &location, &target).await;
    run.ok();
    let status = restore_status_images(&server, ns, "r1").await;
    let entry = |r: &str| status.iter().find(|i| i["image"] == r).unwrap().clone();
    let k = entry(&refs[0]);
    assert_eq!(k["result"], "Reachable");
    assert!(k.get("restoredImage").is_none(), "{k}");
    let gone_last = gone.repository.rsplit('/').next().unwrap();
    let g = entry(&refs[1]);
    assert_eq!(g["result"], "Pushed");
    assert_eq!(g["digest"], gone.digest.to_string());
    assert_eq!(
        g["restoredImage"],
        format!("{b}/{restore_repo}/{gone_last}:2.0")
    );
    common::assert_image_at(&b, &format!("{restore_repo}/{gone_last}"), &gone).await;
    let c = entry(&refs[2]);
    assert_eq!(c["result"], "PushedNewTag");
    let new_tag = format!("3.0-tvk-{}", &uid.replace('-', "")[..8]);
    assert_eq!(c["restoredImage"], format!("{b}/{clash_dest}:{new_tag}"));
    common::assert_image_at(&b, &clash_dest, &clash).await;
    assert_eq!(
        b_client
            .resolve_manifest(&clash_dest, &new_tag)
            .await
            .unwrap(),
        Some(clash.digest.clone())
    );
    assert_eq!(
        b_client.resolve_manifest(&clash_dest, "3.0").await.unwrap(),
        Some(other.digest.clone()),
        "the other image's tag was overwritten"
    );
    // Nothing was pushed for the reachable one.
    let keep_last = keep.repository.rsplit('/').next().unwrap();
    assert!(!common::skopeo_has_manifest(
        &b,
        &format!("{restore_repo}/{keep_last}"),
        &keep.digest
    ));

    // With overrideImageIfExist the tag is taken over.
    create_restore(&server, ns, "r2", &b, &restore_repo, "push", true);
    images_restore(&kc, ns, "r2", &location, &target).await.ok();
    let status = restore_status_images(&server, ns, "r2").await;
    let c = status.iter().find(|i| i["image"] == refs[2]).unwrap();
    assert_eq!(c["result"], "Overwritten");
    assert_eq!(c["restoredImage"], format!("{b}/{clash_dest}:3.0"));
    assert_eq!(
        b_client.resolve_manifest(&clash_dest, "3.0").await.unwrap(),
        Some(clash.digest.clone())
    );

    // A restore registry that refuses the credentials: a clear error naming image and registry.
    let guarded = common::start_proxy(
        b.parse().unwrap(),
        common::ProxyMode::Basic {
            user: "pusher".into(),
            password: "right".into(),
        },
    )
    .await;
    let guarded_addr = guarded.addr_string();
    server
        .create(pull_secret(
            ns,
            "wrong",
            &guarded_addr,
            "pusher",
            "bad-pass-7",
        ))
        .unwrap();
    create_restore(
        &server,
        ns,
        "r3",
        &guarded_addr,
        &restore_repo,
        "wrong",
        false,
    );
    let refused = images_restore(&kc, ns, "r3", &location, &target).await;
    assert_eq!(refused.code, 1, "{:?} {}", refused.lines, refused.stderr);
    let error = refused.error();
    // Images are restored in reference order: the first one not reachable fails.
    assert!(error.contains(&refs[2]), "{error}");
    assert!(error.contains("refused access"), "{error}");
    assert!(error.contains("registryAuthSecret shop/wrong"), "{error}");
    assert!(error.contains(&guarded_addr), "{error}");
    assert!(
        !error.contains("bad-pass-7"),
        "a credential leaked: {error}"
    );
    assert_eq!(refused.result()["category"], "RegistryAuth");
    // No workload may be rewritten to it: the status records nothing.
    let r3: Api<tvk_api::Restore> = Api::namespaced(server.client(), ns);
    assert!(
        r3.get("r3")
            .await
            .unwrap()
            .status
            .and_then(|s| s.images)
            .is_none()
    );
}

/// gc through the command: with the default grace nothing young goes; with no grace the blobs
/// of a backup whose record is gone are removed and the others stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_gc_command_reports_what_it_removed() {
    let a = tvk_testkit::registry("A").unwrap().addr().to_string();
    let image = common::push_docker_image(&a, &tvk_testkit::unique_name("gc/cmd")).await;
    let dir = TempDir::new("mm-images-gc").unwrap();
    let target = tvk_datamover::target::Target::filesystem(dir.path()).unwrap();
    let store = tvk_metamover::images_backup::image_store(&target).unwrap();
    let engine = tvk_oci::copy::CopyEngine::new(2);
    engine
        .copy_image(
            &image.reference,
            &tvk_oci::copy::ImageLocation {
                endpoint: tvk_oci::copy::Endpoint::Registry(common::client(&a)),
                repository: image.repository.clone(),
            },
            &tvk_oci::copy::ImageLocation {
                endpoint: tvk_oci::copy::Endpoint::Store(store.clone()),
                repository: String::new(),
            },
            &image.digest,
            None,
        )
        .await
        .unwrap();
    let kc = dir.path().join("no-kubeconfig");
    std::fs::write(
        &kc,
        "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n",
    )
    .unwrap();
    let t = dir.path().to_str().unwrap();
    let young = metamover(&kc, &["images", "gc", "--target", t]).await;
    let young = young.ok();
    assert_eq!(young["removedBlobs"], 0, "{young}");
    assert_eq!(young["keptYoungBlobs"], 3, "{young}");
    let old = metamover(
        &kc,
        &["images", "gc", "--target", t, "--grace-seconds", "0"],
    )
    .await;
    let old = old.ok();
    assert_eq!(old["removedBlobs"], 3, "{old}");
    assert!(old["removedBytes"].as_u64().unwrap() > 20_000, "{old}");
    assert!(
        std::fs::read_dir(dir.path().join("_images/blobs/sha256"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0
    );
}

/// A registry answering 503/429 to every third request: the backup still stores every image
/// (retried inside); one answering every request so: exit 75 (the control plane retries the
/// Job), the image and registry named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_backup_retries_a_flaky_registry_then_reports_retryable() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let a = tvk_testkit::registry("A").unwrap().addr().to_string();
    let image =
        common::push_index_image(&a, &tvk_testkit::unique_name("flaky/app"), Some("1")).await;
    for (every, expect_ok) in [(3u64, true), (1, false)] {
        let proxy =
            common::start_proxy(a.parse().unwrap(), common::ProxyMode::Flaky { every }).await;
        let reference = format!("{}/{}:1", proxy.addr_string(), image.repository);
        let server = ApiServer::start().await.unwrap();
        let kc = server.kubeconfig_path().to_path_buf();
        let ns = "flaky";
        seed_namespace(&server, ns);
        server
            .create(json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
                "metadata": {"name": "agent", "namespace": ns},
                "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {"containers": [container("agent", &reference)]}}}}))
            .unwrap();
        create_backup(&server, ns, "b1");
        let dir = TempDir::new("mm-images-flaky").unwrap();
        let target = vec![
            "--target".to_owned(),
            dir.path().to_str().unwrap().to_owned(),
        ];
        for_backup(&kc, &["snapshot"], ns, "b1", &target).await.ok();
        let run = for_backup(&kc, &["images", "backup"], ns, "b1", &target).await;
        assert!(proxy.injected_failures() > 0);
        if expect_ok {
            assert_eq!(run.ok()["images"], 1);
            let images = backup_status_images(&server, ns, "b1").await;
            assert_eq!(images[0]["digest"], image.digest.to_string());
        } else {
            assert_eq!(run.code, 75, "{:?} {}", run.lines, run.stderr);
            assert_eq!(run.result()["retryable"], true);
            let error = run.error();
            assert!(error.contains(&reference), "{error}");
            assert!(error.contains("DaemonSet flaky/agent"), "{error}");
        }
    }
}
