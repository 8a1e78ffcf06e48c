#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Retention with the datamover really running: a chain of three backups of one volume is
//! written to moto by `tvk-datamover backup`; `retention::apply` with `latest: 2` starts the
//! coalesce Job, tvk-test-kubelet runs its real command (`tvk-datamover coalesce …` with the
//! Job's target flags and Secret-sourced credentials), and afterwards the expired backup's
//! objects are gone while both kept backups — one of which was built on the expired one —
//! restore bit-exact.

mod common;

use std::{path::Path, process::Command, sync::Arc, time::Duration};

use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tvk_api::{backup::Backup, backup_plan::BackupPlan, target::Target};
use tvk_control_plane::{
    context::Context,
    retention::{self, RetentionStep},
};
use tvk_datamover::target::{S3Config, Target as Store};
use tvk_test_apiserver::ApiServer;
use tvk_test_kubelet::{Kubelet, Options, workspace_binary};
use tvk_testkit::{S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, TempDir, moto, unique_name};

const NS: &str = common::NS;
const V1: &str = "triliovault.trilio.io/v1";
const VOLUME: &str = "0f9d3c1e-vol-a";
const SIZE: usize = 3 << 20;

fn datamover(bin: &Path, endpoint: &str, bucket: &str, args: &[&str]) {
    let out = Command::new(bin)
        .args(args)
        .args([
            "--target",
            &format!("s3://{bucket}"),
            "--s3-endpoint",
            endpoint,
            "--s3-region",
            S3_REGION,
        ])
        .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tvk-datamover {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Volume contents of generation `g`: a base pattern with a different 256 KiB stripe per
/// generation.
fn contents(g: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    for step in 1..=g {
        let at = step * (512 << 10);
        for b in &mut v[at..at + (256 << 10)] {
            *b = b.wrapping_add(step as u8 * 37);
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_runs_the_real_coalesce_and_kept_backups_restore_bit_exact() {
    tvk_control_plane::install_tls_provider();
    let bin = workspace_binary("tvk-datamover", "tvk-datamover").unwrap();
    let moto = moto().unwrap();
    let bucket = unique_name("ret-real");
    tvk_testkit::create_bucket(moto.addr(), &bucket).unwrap();
    let server = ApiServer::start().await.unwrap();
    for crd in tvk_api::crd::all() {
        server.create(serde_json::to_value(crd).unwrap()).unwrap();
    }
    server
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .unwrap();
    server.create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds", "namespace": NS},
        "stringData": {"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}})).unwrap();
    server.create(json!({"apiVersion": V1, "kind": "Target", "metadata": {"name": "s3", "namespace": NS},
        "spec": {"type": "ObjectStore", "vendor": "MinIO", "objectStoreCredentials": {
            "bucketName": bucket, "url": moto.url(), "region": S3_REGION, "credentialSecret": {"name": "s3-creds"}}},
        "status": {"status": "Available"}})).unwrap();
    server.create(json!({"apiVersion": V1, "kind": "Policy", "metadata": {"name": "keep2", "namespace": NS},
        "spec": {"type": "Retention", "retentionConfig": {"latest": 2}}})).unwrap();
    let plan = server.create(json!({"apiVersion": V1, "kind": "BackupPlan", "metadata": {"name": "app", "namespace": NS},
        "spec": {"backupConfig": {"target": {"name": "s3"}, "retentionPolicy": {"name": "keep2"}}},
        "status": {"status": "Available"}})).unwrap();
    let plan_uid = plan["metadata"]["uid"].as_str().unwrap().to_string();
    let client = server.client();
    let backups: Api<Backup> = Api::namespaced(client.clone(), NS);

    // Three backups of one volume: full, incremental, incremental.
    let dir = TempDir::new("ret-real").unwrap();
    let source = dir.path().join("volume.img");
    let mut uids = Vec::new();
    for (g, name) in ["b1", "b2", "b3"].iter().enumerate() {
        let created = server
            .create(json!({"apiVersion": V1, "kind": "Backup", "metadata": {"name": name, "namespace": NS},
                "spec": {"type": if g == 0 { "Full" } else { "Incremental" }, "backupPlan": {"name": "app"}}}))
            .unwrap();
        let uid = created["metadata"]["uid"].as_str().unwrap().to_string();
        std::fs::write(&source, contents(g)).unwrap();
        let mut args = vec![
            "backup",
            "--plan",
            &plan_uid,
            "--backup",
            &uid,
            "--volume",
            VOLUME,
            "--source",
            source.to_str().unwrap(),
        ];
        let parent = uids.last().cloned();
        if let Some(p) = parent.as_deref() {
            args.extend(["--parent", p]);
        }
        datamover(&bin, &moto.url(), &bucket, &args);
        let location = format!("{plan_uid}/{uid}");
        let status = json!({"status": {"status": if g == 2 { "InProgress" } else { "Available" },
            "location": location,
            "completionTimestamp": format!("2026-11-0{}T02:05:00Z", g + 1),
            "snapshot": {"custom": {"resources": [], "dataSnapshots": [
                {"persistentVolumeClaimName": "data", "location": format!("{location}/{VOLUME}")}]}}}});
        backups
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
        uids.push(uid);
    }

    let ctx = Arc::new(Context::new(
        client.clone(),
        common::config("Namespaced"),
        None,
    ));
    let kubelet = Kubelet::start(
        client.clone(),
        Options::new(server.kubeconfig_path()).image(ctx.config.images.datamover.clone(), &bin),
    )
    .await
    .unwrap();
    let plan: BackupPlan = Api::namespaced(client.clone(), NS)
        .get("app")
        .await
        .unwrap();
    let target: Target = Api::namespaced(client.clone(), NS).get("s3").await.unwrap();
    let just = backups.get("b3").await.unwrap();
    let mut last = None;
    for _ in 0..300 {
        let step = retention::apply(&ctx, &plan, &target, &just).await.unwrap();
        if !matches!(step, RetentionStep::Running(_)) {
            last = Some(step);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let runs = kubelet.runs();
    let step = last.unwrap_or_else(|| panic!("retention still running; runs: {runs:?}"));
    let RetentionStep::Done(report) = step else {
        panic!("{step:?}; runs: {runs:?}")
    };
    assert_eq!(report.expired, [format!("{NS}/b1")]);
    assert_eq!(runs.len(), 1, "one coalesce Job for the one volume");
    assert!(runs[0].succeeded, "{:?}", runs[0]);
    assert_eq!(runs[0].command[1], "coalesce");
    assert!(backups.get_opt("b1").await.unwrap().is_none());
    kubelet.shutdown().await;

    // b1's objects are gone; b2 (built on b1) and b3 restore bit-exact.
    let (url, bkt, handle, prefix) = (
        moto.url(),
        bucket.clone(),
        tokio::runtime::Handle::current(),
        format!("{plan_uid}/{}/", uids[0]),
    );
    let left = tokio::task::spawn_blocking(move || {
        let cfg = S3Config {
            bucket: bkt,
            endpoint: Some(url),
            region: S3_REGION.into(),
            access_key_id: S3_ACCESS_KEY.into(),
            secret_access_key: S3_SECRET_KEY.into(),
            ..S3Config::default()
        };
        Store::s3(&cfg, handle).unwrap().list(&prefix).unwrap()
    })
    .await
    .unwrap();
    assert!(left.is_empty(), "expired backup's objects left: {left:?}");
    for (g, uid) in uids.iter().enumerate().skip(1) {
        let dest = dir.path().join(format!("restored-{g}.img"));
        datamover(
            &bin,
            &moto.url(),
            &bucket,
            &[
                "restore",
                "--plan",
                &plan_uid,
                "--backup",
                uid,
                "--volume",
                VOLUME,
                "--dest",
                dest.to_str().unwrap(),
            ],
        );
        assert!(
            std::fs::read(&dest).unwrap() == contents(g),
            "backup {g} restores bit-exact after coalescing"
        );
    }
}
