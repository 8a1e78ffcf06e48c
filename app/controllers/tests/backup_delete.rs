#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Deleting a Backup deletes its data on the target (moto) — and only its data; an
//! unreachable target keeps the finalizer (RELIABILITY 22).

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
    let moto = moto().unwrap();
    let bucket = unique_name("bkp-del");
    common::create_bucket(moto.addr(), &bucket);
    let (url, b2, handle) = (
        moto.url(),
        bucket.clone(),
        tokio::runtime::Handle::current(),
    );
    tokio::task::spawn_blocking(move || {
        let s = store(&url, &b2, handle);
        for key in [
            "plan-uid/bkp-uid/_metadata/index.json",
            "plan-uid/bkp-uid/_metadata/commit.json",
            "plan-uid/other-uid/_metadata/commit.json",
        ] {
            s.put_create_only(key, bytes::Bytes::from_static(b"{}"))
                .unwrap();
        }
    })
    .await
    .unwrap();
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
