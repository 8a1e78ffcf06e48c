#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Deleting a Backup deletes its data on the target (moto) — and only its data; an
//! unreachable target keeps the finalizer (RELIABILITY 22); a backup that stored images gets an
//! `images gc` Job before its finalizer goes.

mod common;

use std::time::Duration;

use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use tvk_api::backup::Backup;
use tvk_control_plane::backup_controller;
use tvk_datamover::target::{S3Config, Target as Store};
use tvk_testkit::{S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, moto, unique_name};

const NS: &str = common::NS;

fn objects(endpoint: &str, bucket: &str) -> Vec<Value> {
    vec![
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Target",
            "metadata": {"name": "s3", "namespace": NS, "uid": "t-1"},
            "spec": {"type": "ObjectStore", "vendor": "MinIO", "objectStoreCredentials": {
                "bucketName": bucket, "url": endpoint, "region": S3_REGION, "credentialSecret": {"name": "c"}}},
            "status": {"status": "Available"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "c", "namespace": NS},
            "stringData": {"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}}),
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "BackupPlan",
            "metadata": {"name": "app", "namespace": NS, "uid": "plan-uid"},
            "spec": {"backupConfig": {"target": {"name": "s3"}}}, "status": {"status": "Available"}}),
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Backup",
            "metadata": {"name": "b1", "namespace": NS, "uid": "bkp-uid",
                "finalizers": ["example.com/keep", backup_controller::FINALIZER]},
            "spec": {"type": "Full", "backupPlan": {"name": "app"}},
            "status": {"status": "Available", "location": "plan-uid/bkp-uid"}}),
    ]
}

fn store(endpoint: &str, bucket: &str, handle: tokio::runtime::Handle) -> Store {
    let cfg = S3Config {
        bucket: bucket.into(),
        endpoint: Some(endpoint.into()),
        region: S3_REGION.into(),
        access_key_id: S3_ACCESS_KEY.into(),
        secret_access_key: S3_SECRET_KEY.into(),
        max_retries: 1,
        retry_timeout: Duration::from_secs(5),
        ..S3Config::default()
    };
    Store::s3(&cfg, handle).unwrap()
}

/// A moto bucket holding `keys` (each `{}`).
async fn bucket_with(keys: &[&str]) -> (tvk_testkit::LocalServer, String) {
    let moto = moto().unwrap();
    let bucket = unique_name("bkp-del");
    tvk_testkit::create_bucket(moto.addr(), &bucket).unwrap();
    let (url, b2, handle) = (
        moto.url(),
        bucket.clone(),
        tokio::runtime::Handle::current(),
    );
    let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let s = store(&url, &b2, handle);
        for key in keys {
            s.put_create_only(&key, bytes::Bytes::from_static(b"{}"))
                .unwrap();
        }
    })
    .await
    .unwrap();
    (moto, bucket)
}

async fn delete_and_reconcile(client: &kube::Client) -> Result<(), tvk_control_plane::Error> {
    // kube-fake-client deletes at once, finalizers or not; hand the controller what the
    // apiserver would show: the Backup with its deletionTimestamp set.
    let api: Api<Backup> = Api::namespaced(client.clone(), NS);
    let mut b = api.get("b1").await.unwrap();
    b.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));
    let ctx = common::context(client.clone(), "Namespaced");
    backup_controller::reconcile(b.into(), ctx)
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_backup_deletes_its_metadata_and_nothing_else() {
    let (moto, bucket) = bucket_with(&[
        "plan-uid/bkp-uid/_metadata/index.json",
        "plan-uid/bkp-uid/_metadata/commit.json",
        "plan-uid/other-uid/_metadata/commit.json",
    ])
    .await;
    let (client, _) = common::fake(objects(&moto.url(), &bucket)).await;
    delete_and_reconcile(&client).await.unwrap();
    let (url, b2, handle) = (
        moto.url(),
        bucket.clone(),
        tokio::runtime::Handle::current(),
    );
    let left =
        tokio::task::spawn_blocking(move || store(&url, &b2, handle).list("plan-uid").unwrap())
            .await
            .unwrap();
    assert_eq!(
        left,
        ["plan-uid/other-uid/_metadata/commit.json"],
        "another backup is untouched"
    );
    let api: Api<Backup> = Api::namespaced(client, NS);
    let b = api.get_opt("b1").await.unwrap();
    assert!(
        b.is_none_or(|b| !b
            .finalizers()
            .contains(&backup_controller::FINALIZER.to_string())),
        "our finalizer is released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_keeps_the_finalizer() {
    // Nothing listens on port 9 of 127.0.0.1 (discard): connections are refused.
    let (client, _) = common::fake(objects("http://127.0.0.1:9", "b")).await;
    let err = delete_and_reconcile(&client).await.unwrap_err();
    assert_eq!(err.category(), "TargetError", "{err}");
    let b: Backup = Api::namespaced(client, NS).get("b1").await.unwrap();
    assert!(
        b.finalizers()
            .contains(&backup_controller::FINALIZER.to_string())
    );
}

/// `objects` with the Backup having stored `images` (and the plan backing images up unless
/// `skip`), its metadata on the target.
async fn with_images(skip: bool) -> (tvk_testkit::LocalServer, kube::Client, String) {
    let (moto, bucket) = bucket_with(&[
        "plan-uid/bkp-uid/_metadata/images.json",
        "plan-uid/bkp-uid/_metadata/commit.json",
    ])
    .await;
    let mut objs = objects(&moto.url(), &bucket);
    objs[3]["status"]["snapshot"] = json!({"images": [
        {"image": "registry.example/web:1", "digest": "sha256:aa"}]});
    if skip {
        objs[2]["spec"]["backupPlanFlags"] = json!({"skipImageBackup": true});
    }
    let (client, _) = common::fake(objs).await;
    (moto, client, bucket)
}

fn gc_jobs(jobs: &[k8s_openapi::api::batch::v1::Job]) -> Vec<Vec<String>> {
    jobs.iter()
        .map(common::job_args)
        .filter(|args| args.starts_with(&["images".to_string(), "gc".to_string()]))
        .collect()
}

async fn jobs(client: &kube::Client) -> Vec<k8s_openapi::api::batch::v1::Job> {
    Api::<k8s_openapi::api::batch::v1::Job>::namespaced(client.clone(), NS)
        .list(&Default::default())
        .await
        .unwrap()
        .items
}

fn finalizer_kept(b: Option<Backup>) -> bool {
    b.is_some_and(|b| {
        b.finalizers()
            .contains(&backup_controller::FINALIZER.to_string())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_backup_with_images_runs_the_image_gc_job_before_releasing_it() {
    let (_moto, client, _bucket) = with_images(false).await;
    // First pass: metadata deleted, the gc Job started, the finalizer kept while it runs.
    let err = delete_and_reconcile(&client).await.unwrap_err();
    assert!(
        err.to_string().contains("images gc Job is running"),
        "{err}"
    );
    let all = jobs(&client).await;
    let gc = gc_jobs(&all);
    assert_eq!(gc.len(), 1, "one images gc Job: {all:#?}");
    assert!(
        gc[0].iter().any(|a| a == "--target"),
        "the gc Job gets the Target's flags: {:?}",
        gc[0]
    );
    let job_name = all
        .iter()
        .find(|j| j.name_any().starts_with("tvk-retention-"))
        .unwrap()
        .name_any();
    let api: Api<Backup> = Api::namespaced(client.clone(), NS);
    assert!(finalizer_kept(api.get_opt("b1").await.unwrap()));
    // Still running: a second pass neither duplicates the Job nor releases the backup.
    delete_and_reconcile(&client).await.unwrap_err();
    assert_eq!(gc_jobs(&jobs(&client).await).len(), 1);
    // The Job succeeds: the finalizer goes, and the Job with it.
    Api::<k8s_openapi::api::batch::v1::Job>::namespaced(client.clone(), NS)
        .patch_status(
            &job_name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"succeeded": 1,
                "conditions": [{"type": "Complete", "status": "True"}]}})),
        )
        .await
        .unwrap();
    delete_and_reconcile(&client).await.unwrap();
    assert!(!finalizer_kept(api.get_opt("b1").await.unwrap()));
    assert!(
        gc_jobs(&jobs(&client).await).is_empty(),
        "the gc Job is deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_image_gc_job_does_not_keep_the_backup() {
    let (_moto, client, _bucket) = with_images(false).await;
    delete_and_reconcile(&client).await.unwrap_err();
    let job_name = jobs(&client)
        .await
        .iter()
        .find(|j| j.name_any().starts_with("tvk-retention-"))
        .unwrap()
        .name_any();
    Api::<k8s_openapi::api::batch::v1::Job>::namespaced(client.clone(), NS)
        .patch_status(
            &job_name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"failed": 1,
                "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "gc failed"}]}})),
        )
        .await
        .unwrap();
    delete_and_reconcile(&client).await.unwrap();
    let api: Api<Backup> = Api::namespaced(client.clone(), NS);
    assert!(!finalizer_kept(api.get_opt("b1").await.unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_image_gc_when_the_plan_skips_images() {
    let (_moto, client, _bucket) = with_images(true).await;
    delete_and_reconcile(&client).await.unwrap();
    assert!(gc_jobs(&jobs(&client).await).is_empty());
    let api: Api<Backup> = Api::namespaced(client, NS);
    assert!(!finalizer_kept(api.get_opt("b1").await.unwrap()));
}
