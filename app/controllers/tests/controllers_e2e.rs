#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The controllers as they run in the cluster — `runner::run_controllers` with real watches —
//! against tvk-test-apiserver (HTTP, watches, status subresources, finalizers, garbage
//! collection) and moto: a Target is probed Available, its plan gets CronJobs and becomes
//! Available, a Backup runs its metamover Jobs and becomes Available. The test plays the
//! kubelet and the metamover only by marking Jobs complete and writing `status.snapshot` (the
//! metamover's part); the Job commands themselves are not run here.

mod common;

use std::time::Duration;

use futures::FutureExt;
use serde_json::{Value, json};
use tvk_control_plane::{context::Context, runner};
use tvk_test_apiserver::ApiServer;
use tvk_testkit::{S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, moto, unique_name};

const NS: &str = common::NS;
const V1: &str = "triliovault.trilio.io/v1";

/// Polls for up to 90 s: the whole suite loads both cores of a CI box (the controllers react in
/// well under a second when the box is idle).
async fn wait_for(what: &str, mut check: impl FnMut() -> Option<Value>) -> Value {
    for _ in 0..900 {
        if let Some(v) = check() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_plan_and_backup_reach_available_under_watches() {
    tvk_control_plane::install_tls_provider();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let moto = moto().unwrap();
    let bucket = unique_name("e2e");
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
            "bucketName": bucket, "url": moto.url(), "region": S3_REGION, "credentialSecret": {"name": "s3-creds"}}}})).unwrap();
    server.create(json!({"apiVersion": V1, "kind": "Policy", "metadata": {"name": "daily", "namespace": NS},
        "spec": {"type": "Schedule", "scheduleConfig": {"schedule": ["0 2 * * *"]}}})).unwrap();
    // kube's finalizer helper adds a first finalizer with a JSON-patch `test` of a null
    // /metadata/finalizers, which a real apiserver accepts and tvk-test-apiserver (json-patch)
    // refuses; with one finalizer present it appends instead.
    server.create(json!({"apiVersion": V1, "kind": "BackupPlan", "metadata": {"name": "app", "namespace": NS, "finalizers": ["example.com/keep"]},
        "spec": {"backupConfig": {"target": {"name": "s3"}, "schedulePolicy": {"fullBackupPolicy": {"name": "daily"}}},
            "backupPlanFlags": {"skipImageBackup": true}}})).unwrap();

    let mut ctx = Context::new(server.client(), common::config("Namespaced"), None);
    ctx.backup_poll = Duration::from_millis(200);
    let ctx = std::sync::Arc::new(ctx);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controllers = tokio::spawn(runner::run_controllers(
        ctx.clone(),
        stop_rx.map(|_| ()).boxed(),
    ));

    let target = wait_for("the Target to be Available", || {
        server
            .get(V1, "Target", Some(NS), "s3")
            .filter(|t| t["status"]["status"] == "Available")
    })
    .await;
    assert_eq!(target["status"]["condition"][0]["phase"], "Validation");
    // The plan is looked at again periodically (Targets are not watched by it): nudge it.
    let plan = wait_for("the plan to be Available", || {
        let p = server.get(V1, "BackupPlan", Some(NS), "app")?;
        if p["status"]["status"] != "Available" {
            let _ = server.apply(json!({"apiVersion": V1, "kind": "BackupPlan",
                "metadata": {"name": "app", "namespace": NS, "annotations": {"nudge": unique_name("n")}}}));
            return None;
        }
        Some(p)
    })
    .await;
    assert_eq!(plan["status"]["fullBackupCrons"], json!(["0 2 * * *"]));
    let crons = server.list("batch/v1", "CronJob", Some(NS));
    assert_eq!(crons.len(), 1);
    assert_eq!(crons[0]["spec"]["timeZone"], "Europe/Berlin");

    server
        .create(
            json!({"apiVersion": V1, "kind": "Backup", "metadata": {"name": "b1", "namespace": NS, "finalizers": ["example.com/keep"]},
        "spec": {"type": "Full", "backupPlan": {"name": "app"}}}),
        )
        .unwrap();
    let job = wait_for("the metamover snapshot Job", || {
        server
            .list("batch/v1", "Job", Some(NS))
            .into_iter()
            .find(|j| j["spec"]["template"]["spec"]["containers"][0]["args"][0] == "snapshot")
    })
    .await;
    // Play the kubelet and the metamover: snapshot written, Job complete.
    let name = job["metadata"]["name"].as_str().unwrap().to_string();
    let backup = server.get(V1, "Backup", Some(NS), "b1").unwrap();
    let mut status = backup["status"].clone();
    status["snapshot"] = json!({"custom": {"resources": [], "dataSnapshots": []}});
    let mut b = backup.clone();
    b["status"] = status;
    let client = server.client();
    let backups: kube::Api<tvk_api::Backup> = kube::Api::namespaced(client.clone(), NS);
    backups
        .patch_status(
            "b1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"snapshot": b["status"]["snapshot"]}})),
        )
        .await
        .unwrap();
    let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> =
        kube::Api::namespaced(client.clone(), NS);
    let complete =
        json!({"status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}});
    jobs.patch_status(
        &name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&complete),
    )
    .await
    .unwrap();
    let commit = wait_for("the metamover commit Job", || {
        server
            .list("batch/v1", "Job", Some(NS))
            .into_iter()
            .find(|j| j["spec"]["template"]["spec"]["containers"][0]["args"][0] == "commit")
    })
    .await;
    jobs.patch_status(
        commit["metadata"]["name"].as_str().unwrap(),
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&complete),
    )
    .await
    .unwrap();
    let done = wait_for("the Backup to be Available", || {
        server
            .get(V1, "Backup", Some(NS), "b1")
            .filter(|b| b["status"]["status"] == "Available")
    })
    .await;
    assert_eq!(done["status"]["percentageCompletion"], 100);
    assert_eq!(
        done["status"]["location"],
        format!(
            "{}/{}",
            plan["metadata"]["uid"].as_str().unwrap(),
            done["metadata"]["uid"].as_str().unwrap()
        )
    );
    assert!(
        done["metadata"]["finalizers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "triliovault.trilio.io/backup-data")
    );

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), controllers)
        .await
        .unwrap()
        .unwrap();
}
