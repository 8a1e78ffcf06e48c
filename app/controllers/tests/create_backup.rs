#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `create-backup` (what CronJobs run) against kube-fake-client.

mod common;

use kube::{Api, api::ListParams};
use serde_json::json;
use tvk_api::backup::{Backup, BackupType};
use tvk_control_plane::create_backup::create_backup;

fn plan(state: &str) -> serde_json::Value {
    json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "BackupPlan",
        "metadata": {"name": "shop", "namespace": "app", "uid": "p"},
        "spec": {"backupConfig": {"target": {"name": "s3"}, "maxIncrBackupsPerFullBackup": 1}},
        "status": {"status": state}})
}

#[tokio::test]
async fn creates_one_backup_per_minute_and_forces_a_full_when_needed() {
    let (client, _) = common::fake(vec![plan("Available")]).await;
    let t: jiff::Timestamp = "2026-05-01T10:00:30Z".parse().unwrap();
    // No base yet: the scheduled incremental becomes a full.
    let name = create_backup(client.clone(), "app", "shop", BackupType::Incremental, t)
        .await
        .unwrap();
    assert_eq!(name, "shop-full-202605011000");
    // A retried pod in the same minute adopts it.
    let again = create_backup(client.clone(), "app", "shop", BackupType::Incremental, t)
        .await
        .unwrap();
    assert_eq!(again, name);
    let api: Api<Backup> = Api::namespaced(client.clone(), "app");
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    let b = api.get(&name).await.unwrap();
    assert_eq!(b.spec.type_, BackupType::Full);
    assert_eq!(b.spec.backup_plan.name.as_deref(), Some("shop"));
}

#[tokio::test]
async fn refuses_while_the_plan_is_unavailable() {
    let (client, _) = common::fake(vec![plan("Unavailable")]).await;
    let t: jiff::Timestamp = "2026-05-01T10:00:30Z".parse().unwrap();
    let err = create_backup(client.clone(), "app", "shop", BackupType::Full, t)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not Available"), "{err}");
    let err = create_backup(client, "app", "gone", BackupType::Full, t)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}
