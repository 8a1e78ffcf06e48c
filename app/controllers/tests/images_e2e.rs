#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Container images in backups end to end (issue #9), with no cluster: the controllers under
//! real watches against tvk-test-apiserver, the test kubelet running every Job's REAL command
//! (`tvk-metamover snapshot`, `images backup`, `commit`, `restore-plan`, `images restore`,
//! `restore`) against moto S3 and two real docker-registry instances. An application whose
//! images live in registry A is backed up; its images are deleted from A; a Restore with
//! `imageRestore` into registry B brings them back: the restored workload references B and
//! every digest is in B (skopeo).

mod common;
#[path = "common/kubelet_world.rs"]
mod kubelet_world;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::{Command, Stdio},
};

use kubelet_world::{V1, World};
use serde_json::json;
use tvk_testkit::unique_name;

const NS: &str = common::NS;
const APP: &str = "shop";
const DEST: &str = "shop-restored";

fn sha256(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

/// Base64 of `bytes` (coreutils; the test API server keeps `stringData` as given).
fn base64(bytes: &[u8]) -> String {
    let mut child = Command::new("base64")
        .arg("-w0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
}

/// Pushes a small single-layer OCI image to `registry/repo:tag` through the distribution API
/// (monolithic blob uploads); returns its manifest digest.
async fn push_image(registry: &str, repo: &str, tag: &str) -> String {
    let http = reqwest::Client::new();
    let layer: Vec<u8> = (0..30_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ repo.len() as u8)
        .collect();
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux",
        "config": {"Labels": {"repo": repo}}, "rootfs": {"type": "layers", "diff_ids": []}}))
    .unwrap();
    for blob in [&layer, &config] {
        let digest = sha256(blob);
        let r = http
            .post(format!("http://{registry}/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            202,
            "upload session: {:?}",
            r.text().await
        );
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("http://{registry}{location}")
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let r = http
            .put(format!("{location}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(blob.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            201,
            "blob upload: {:?}",
            r.text().await
        );
    }
    let manifest = serde_json::to_vec(&json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": sha256(&layer), "size": layer.len()}]}))
    .unwrap();
    let r = http
        .put(format!("http://{registry}/v2/{repo}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        201,
        "manifest upload: {:?}",
        r.text().await
    );
    sha256(&manifest)
}

/// Deletes a manifest from a docker-registry by digest (its tags go with it).
fn delete_manifest(registry: &str, repo: &str, digest: &str) {
    let mut s = TcpStream::connect(registry).unwrap();
    write!(
        s,
        "DELETE /v2/{repo}/manifests/{digest} HTTP/1.1\r\nHost: {registry}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 202"),
        "manifest delete failed: {resp}"
    );
}

fn skopeo_digest(reference: &str) -> Option<String> {
    tvk_testkit::require_tool("skopeo", "apt-get install skopeo").unwrap();
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ])
        .output()
        .unwrap();
    out.status.success().then(|| sha256(&out.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_images_backed_up_deleted_and_restored_into_another_registry() {
    let a = tvk_testkit::registry("A").unwrap().addr().to_string();
    let b = tvk_testkit::registry("B").unwrap().addr().to_string();
    let web_repo = unique_name("e2e/web");
    let init_repo = unique_name("e2e/init");
    let web_digest = push_image(&a, &web_repo, "1.0").await;
    let init_digest = push_image(&a, &init_repo, "boot").await;
    let web_ref = format!("{a}/{web_repo}:1.0");
    let init_ref = format!("{a}/{init_repo}@{init_digest}");

    let world = World::start(&[(APP, json!({})), (DEST, json!({}))]).await;
    let (server, kubelet) = (&world.server, &world.kubelet);

    // The application: its images are in registry A.
    server
        .create(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": APP},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                    "initContainers": [{"name": "boot", "image": init_ref}],
                    "containers": [{"name": "web", "image": web_ref}]}}}}))
        .unwrap();
    server
        .create(json!({"apiVersion": V1, "kind": "BackupPlan", "metadata": {"name": "app", "namespace": APP},
            "spec": {"backupConfig": {"target": {"name": "s3", "namespace": NS}}}}))
        .unwrap();
    world.plan_available("BackupPlan", Some(APP), "app").await;
    server
        .create(
            json!({"apiVersion": V1, "kind": "Backup", "metadata": {"name": "b1", "namespace": APP},
            "spec": {"type": "Full", "backupPlan": {"name": "app"}}}),
        )
        .unwrap();
    let backup = world
        .wait_terminal(
            "Backup",
            Some(APP),
            "b1",
            &["Available", "Failed"],
            "Available",
            240,
        )
        .await;
    let images = backup["status"]["snapshot"]["images"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let digest_of = |r: &str| {
        images
            .iter()
            .find(|i| i["image"] == r)
            .unwrap_or_else(|| panic!("{r} not in status.snapshot.images: {images:?}"))["digest"]
            .clone()
    };
    assert_eq!(digest_of(&web_ref), web_digest);
    assert_eq!(digest_of(&init_ref), init_digest);

    // The registry loses the application's images.
    delete_manifest(&a, &web_repo, &web_digest);
    delete_manifest(&a, &init_repo, &init_digest);
    assert_eq!(skopeo_digest(&web_ref), None, "the image is still in A");

    // Restore into another namespace, images into registry B.
    let restore_repo = unique_name("restored");
    let docker_config =
        json!({"auths": {b.clone(): {"username": "pusher", "password": "pw"}}}).to_string();
    server
        .create(
            json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "registry-b", "namespace": DEST},
            "data": {".dockerconfigjson": base64(docker_config.as_bytes())}}),
        )
        .unwrap();
    server
        .create(json!({"apiVersion": V1, "kind": "Restore", "metadata": {"name": "back", "namespace": DEST},
            "spec": {"source": {"type": "Backup", "backup": {"name": "b1", "namespace": APP}},
                "actionFlags": {"imageRestore": true},
                "imageRegistry": {"registry": b, "repository": restore_repo,
                    "registryAuthSecret": {"name": "registry-b"}},
                "resourcesReadyWaitSeconds": 2}}))
        .unwrap();
    let done = world
        .wait_terminal(
            "Restore",
            Some(DEST),
            "back",
            &["Completed", "Failed"],
            "Completed",
            300,
        )
        .await;
    let restored = done["status"]["images"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let web_last = web_repo.rsplit('/').next().unwrap();
    let init_last = init_repo.rsplit('/').next().unwrap();
    let new_web = format!("{b}/{restore_repo}/{web_last}:1.0");
    let new_init = format!("{b}/{restore_repo}/{init_last}@{init_digest}");
    for (original, new) in [(&web_ref, &new_web), (&init_ref, &new_init)] {
        let entry = restored
            .iter()
            .find(|i| i["image"] == **original)
            .unwrap_or_else(|| panic!("{original} not in status.images: {restored:?}"));
        assert_eq!(entry["result"], "Pushed", "{entry}");
        assert_eq!(entry["restoredImage"], **new, "{entry}");
    }
    // Every digest is in B, by the reference the workload now uses.
    assert_eq!(skopeo_digest(&new_web), Some(web_digest.clone()));
    assert_eq!(skopeo_digest(&new_init), Some(init_digest.clone()));
    // The restored workload references B.
    let deploy = server
        .get("apps/v1", "Deployment", Some(DEST), "web")
        .unwrap_or_else(|| {
            panic!(
                "Deployment web not restored\nJobs run:\n{}",
                world.job_runs()
            )
        });
    let spec = &deploy["spec"]["template"]["spec"];
    assert_eq!(spec["containers"][0]["image"], new_web, "{spec:#}");
    assert_eq!(spec["initContainers"][0]["image"], new_init, "{spec:#}");
    let commands: Vec<String> = kubelet
        .runs()
        .iter()
        .map(|r| {
            r.command
                .iter()
                .skip(1)
                .take(2)
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    for c in ["images backup", "images restore"] {
        assert!(
            commands.iter().any(|x| x.starts_with(c)),
            "{c} not run: {commands:?}"
        );
    }

    world.stop().await;
}
