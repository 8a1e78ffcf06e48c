#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Backup phase machine against kube-fake-client: every transition this version runs,
//! each failure it reports, adoption of existing Jobs, terminal states that never change, and
//! the metamover Job golden file (`UPDATE_GOLDEN=1` rewrites it).

mod common;

use k8s_openapi::api::batch::v1::Job;
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use tvk_api::backup::{Backup, BackupPhase, BackupPhaseStatus, BackupState};
use tvk_control_plane::backup_controller;

const NS: &str = common::NS;

fn world(plan_state: &str, target_state: &str) -> Vec<Value> {
    vec![
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Target",
            "metadata": {"name": "s3", "namespace": NS, "uid": "t-1"},
            "spec": {"type": "ObjectStore", "vendor": "AWS", "objectStoreCredentials": {"bucketName": "b", "credentialSecret": {"name": "c"}}},
            "status": {"status": target_state, "condition": [{"phase": "Validation", "status": "Failed", "reason": "AuthenticationFailed: the endpoint refused the credentials"}]}}),
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "BackupPlan",
            "metadata": {"name": "app", "namespace": NS, "uid": "plan-uid"},
            "spec": {"backupConfig": {"target": {"name": "s3"}}},
            "status": {"status": plan_state, "condition": [{"phase": "Validation", "status": "Failed", "reason": "Hook x does not exist"}]}}),
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Backup",
            // See tests/plan.rs: kube-fake-client needs one finalizer present to append ours.
            "metadata": {"name": "app-full-1", "namespace": NS, "uid": "bkp-uid", "finalizers": ["example.com/keep"]},
            "spec": {"type": "Full", "backupPlan": {"name": "app"}}}),
    ]
}

async fn reconcile(client: &kube::Client) -> Backup {
    let ctx = common::context(client.clone(), "Namespaced");
    let api: Api<Backup> = Api::namespaced(client.clone(), NS);
    let backup = api.get("app-full-1").await.unwrap();
    let first_time = !backup
        .finalizers()
        .contains(&backup_controller::FINALIZER.to_string());
    backup_controller::reconcile(backup.into(), ctx.clone())
        .await
        .unwrap();
    if first_time {
        // Adding the finalizer ends a reconcile; the change triggers the next one.
        let backup = api.get("app-full-1").await.unwrap();
        backup_controller::reconcile(backup.into(), ctx)
            .await
            .unwrap();
    }
    api.get("app-full-1").await.unwrap()
}

async fn jobs(client: &kube::Client) -> Vec<Job> {
    Api::<Job>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels("triliovault.trilio.io/backup-uid=bkp-uid"))
        .await
        .unwrap()
        .items
}

async fn finish_job(client: &kube::Client, name: &str, ok: bool) {
    common::finish_job(client, name, ok, "exit code 1: bucket refused the write").await;
}

async fn write_snapshot(client: &kube::Client, snapshot: Value) {
    Api::<Backup>::namespaced(client.clone(), NS)
        .patch_status(
            "app-full-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"snapshot": snapshot}})),
        )
        .await
        .unwrap();
}

fn condition(b: &Backup, phase: BackupPhase) -> (Option<BackupPhaseStatus>, String) {
    common::backup_condition(b.status.as_ref(), phase)
}

#[tokio::test]
async fn a_metadata_only_backup_goes_from_creation_to_available() {
    let (client, writes) = common::fake(world("Available", "Available")).await;
    let b = reconcile(&client).await;
    let s = b.status.clone().unwrap();
    assert_eq!(s.status, Some(BackupState::InProgress));
    assert_eq!(s.phase, Some(BackupPhase::MetaSnapshot));
    assert_eq!(s.location.as_deref(), Some("plan-uid/bkp-uid"));
    assert!(s.start_timestamp.is_some());
    // MetaSnapshot: one Job, adopted on every later reconcile.
    reconcile(&client).await;
    reconcile(&client).await;
    let j = jobs(&client).await;
    assert_eq!(j.len(), 1, "one Job per step, however often we reconcile");
    let creates = writes
        .take()
        .iter()
        .filter(|w| w.as_str() == "create Job")
        .count();
    assert_eq!(creates, 1);
    let job = &j[0];
    let args = common::job_args(job);
    assert_eq!(
        &args[..7],
        [
            "snapshot",
            "--kind",
            "Backup",
            "--namespace",
            NS,
            "--name",
            "app-full-1"
        ]
    );
    assert!(args.contains(&"s3://b".to_string()));
    assert_eq!(
        job.metadata.owner_references.as_ref().unwrap()[0].uid,
        "bkp-uid"
    );
    // The metamover reports no PVCs.
    finish_job(&client, job.metadata.name.as_deref().unwrap(), true).await;
    write_snapshot(
        &client,
        json!({"custom": {"resources": [], "dataSnapshots": []}}),
    )
    .await;
    let b = reconcile(&client).await;
    let s = b.status.clone().unwrap();
    assert_eq!(s.phase, Some(BackupPhase::MetadataUpload), "{s:?}");
    // The image backup Job runs alongside; the commit waits for it.
    assert_eq!(
        condition(&b, BackupPhase::ImageBackup).0,
        Some(BackupPhaseStatus::InProgress)
    );
    assert!(
        s.snapshot.is_some(),
        "the metamover's status.snapshot is kept"
    );
    let images = job_with(&client, "images").await;
    assert_eq!(
        &common::job_args(&images)[..8],
        [
            "images",
            "backup",
            "--kind",
            "Backup",
            "--namespace",
            NS,
            "--name",
            "app-full-1"
        ]
    );
    reconcile(&client).await;
    assert!(
        jobs(&client)
            .await
            .iter()
            .all(|j| common::job_args(j)[0] != "commit"),
        "no commit before the images are stored"
    );
    finish_job(&client, images.metadata.name.as_deref().unwrap(), true).await;
    write_snapshot(
        &client,
        json!({"images": [{"image": "nginx:1.27", "digest": "sha256:aa"}, {"image": "redis:7", "digest": "sha256:bb"}]}),
    )
    .await;
    // The next reconcile completes ImageBackup and starts the commit Job.
    let b = reconcile(&client).await;
    assert_eq!(
        condition(&b, BackupPhase::ImageBackup),
        (
            Some(BackupPhaseStatus::Completed),
            "2 image(s) stored on the target".to_string()
        )
    );
    let commit = jobs(&client)
        .await
        .into_iter()
        .find(|j| common::job_args(j)[0] == "commit");
    let commit = commit.expect("commit Job");
    finish_job(&client, commit.metadata.name.as_deref().unwrap(), true).await;
    let b = reconcile(&client).await;
    let s = b.status.clone().unwrap();
    assert_eq!(s.status, Some(BackupState::Available), "{s:?}");
    assert_eq!(s.percentage_completion, Some(100));
    assert!(s.completion_timestamp.is_some() && s.duration.is_some());
    assert_eq!(
        condition(&b, BackupPhase::Cleanup).0,
        Some(BackupPhaseStatus::Completed)
    );
    assert!(jobs(&client).await.is_empty(), "cleanup deletes the Jobs");
    // Terminal: nothing changes any more.
    writes.take();
    let again = reconcile(&client).await;
    assert_eq!(again.status, b.status);
    assert!(writes.take().is_empty());
}

async fn job_with(client: &kube::Client, first_arg: &str) -> Job {
    jobs(client)
        .await
        .into_iter()
        .find(|j| common::job_args(j)[0] == first_arg)
        .unwrap_or_else(|| panic!("no {first_arg} Job"))
}

#[tokio::test]
async fn a_failed_image_backup_job_fails_the_backup_at_image_backup() {
    let (client, _) = common::fake(world("Available", "Available")).await;
    reconcile(&client).await;
    reconcile(&client).await;
    let snapshot = job_with(&client, "snapshot").await;
    finish_job(&client, snapshot.metadata.name.as_deref().unwrap(), true).await;
    write_snapshot(
        &client,
        json!({"custom": {"resources": [], "dataSnapshots": []}}),
    )
    .await;
    reconcile(&client).await;
    let images = job_with(&client, "images").await;
    finish_job(&client, images.metadata.name.as_deref().unwrap(), false).await;
    let b = reconcile(&client).await;
    let s = b.status.clone().unwrap();
    assert_eq!(s.status, Some(BackupState::Failed), "{s:?}");
    assert_eq!(s.phase, Some(BackupPhase::ImageBackup));
    let (state, reason) = condition(&b, BackupPhase::ImageBackup);
    assert_eq!(state, Some(BackupPhaseStatus::Failed));
    assert!(reason.contains("bucket refused the write"), "{reason}");
    assert!(jobs(&client).await.is_empty(), "a failure deletes the Jobs");
}

#[tokio::test]
async fn skip_image_backup_skips_the_phase_without_a_job() {
    let mut objs = world("Available", "Available");
    objs[1]["spec"]["backupPlanFlags"] = json!({"skipImageBackup": true});
    let (client, _) = common::fake(objs).await;
    reconcile(&client).await;
    reconcile(&client).await;
    let snapshot = job_with(&client, "snapshot").await;
    finish_job(&client, snapshot.metadata.name.as_deref().unwrap(), true).await;
    write_snapshot(
        &client,
        json!({"custom": {"resources": [], "dataSnapshots": []}}),
    )
    .await;
    let b = reconcile(&client).await;
    assert_eq!(
        condition(&b, BackupPhase::ImageBackup),
        (
            Some(BackupPhaseStatus::Skipped),
            "backupPlanFlags.skipImageBackup is set".to_string()
        )
    );
    assert!(
        jobs(&client)
            .await
            .iter()
            .all(|j| common::job_args(j)[0] != "images")
    );
    reconcile(&client).await;
    job_with(&client, "commit").await;
}

#[tokio::test]
async fn retention_that_expires_backups_runs_the_image_gc_job() {
    let mut objs = world("Available", "Available");
    objs[1]["spec"]["backupConfig"]["retentionPolicy"] = json!({"name": "keep"});
    objs.push(
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Policy",
        "metadata": {"name": "keep", "namespace": NS},
        "spec": {"type": "Retention", "retentionConfig": {"latest": 1}}}),
    );
    objs.push(json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Backup",
        "metadata": {"name": "app-full-0", "namespace": NS, "uid": "old-uid"},
        "spec": {"type": "Full", "backupPlan": {"name": "app"}},
        "status": {"status": "Available", "location": "plan-uid/old-uid",
            "startTimestamp": "2026-01-01T00:00:00Z", "completionTimestamp": "2026-01-01T00:05:00Z"}}));
    let (client, _) = common::fake(objs).await;
    reconcile(&client).await;
    reconcile(&client).await;
    let snapshot = job_with(&client, "snapshot").await;
    finish_job(&client, snapshot.metadata.name.as_deref().unwrap(), true).await;
    write_snapshot(
        &client,
        json!({"custom": {"resources": [], "dataSnapshots": []}}),
    )
    .await;
    reconcile(&client).await;
    let images = job_with(&client, "images").await;
    finish_job(&client, images.metadata.name.as_deref().unwrap(), true).await;
    reconcile(&client).await;
    let commit = job_with(&client, "commit").await;
    finish_job(&client, commit.metadata.name.as_deref().unwrap(), true).await;
    let b = reconcile(&client).await;
    assert_eq!(b.status.unwrap().phase, Some(BackupPhase::Retention));
    // Retention expires the old backup, then collects the image blobs on the target.
    let b = reconcile(&client).await;
    let (state, reason) = condition(&b, BackupPhase::Retention);
    assert_eq!(state, Some(BackupPhaseStatus::InProgress), "{reason}");
    assert!(reason.contains("expired 1 backup(s)"), "{reason}");
    assert!(
        Api::<Backup>::namespaced(client.clone(), NS)
            .get_opt("app-full-0")
            .await
            .unwrap()
            .is_none()
    );
    let gc = jobs(&client)
        .await
        .into_iter()
        .find(|j| common::job_args(j)[1] == "gc")
        .expect("the images gc Job");
    assert_eq!(common::job_args(&gc)[..2], ["images", "gc"]);
    assert!(common::job_args(&gc).contains(&"s3://b".to_string()));
    // Still running: the summary is kept.
    let b = reconcile(&client).await;
    assert!(
        condition(&b, BackupPhase::Retention)
            .1
            .contains("expired 1 backup(s)")
    );
    finish_job(&client, gc.metadata.name.as_deref().unwrap(), true).await;
    let b = reconcile(&client).await;
    let s = b.status.clone().unwrap();
    assert_eq!(s.status, Some(BackupState::Available), "{s:?}");
    let (state, reason) = condition(&b, BackupPhase::Retention);
    assert_eq!(state, Some(BackupPhaseStatus::Completed));
    assert!(
        reason.contains("expired 1 backup(s)")
            && reason.contains("image blobs no backup references were collected"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_coalescing_backup_is_left_to_retention() {
    let mut objs = world("Available", "Available");
    objs[2]["status"] = json!({"status": "Coalescing", "phase": "Cleanup", "phaseStatus": "Completed",
        "coalesceInfo": {"state": "CommitStarted"}});
    let (client, writes) = common::fake(objs).await;
    let b = reconcile(&client).await;
    let s = b.status.unwrap();
    assert_eq!(s.status, Some(BackupState::Coalescing), "{s:?}");
    assert_eq!(s.phase, Some(BackupPhase::Cleanup));
    assert!(
        writes.take().iter().all(|w| !w.starts_with("patch_status")),
        "no status write on a Coalescing backup"
    );
    assert!(jobs(&client).await.is_empty());
}

#[tokio::test]
async fn image_backup_job_golden() {
    let (client, _) = common::fake(world("Available", "Available")).await;
    reconcile(&client).await;
    reconcile(&client).await;
    let snapshot = job_with(&client, "snapshot").await;
    finish_job(&client, snapshot.metadata.name.as_deref().unwrap(), true).await;
    write_snapshot(
        &client,
        json!({"custom": {"resources": [], "dataSnapshots": []}}),
    )
    .await;
    reconcile(&client).await;
    let mut job = job_with(&client, "images").await;
    job.metadata.resource_version = None;
    job.metadata.creation_timestamp = None;
    job.metadata.uid = None;
    job.metadata.generation = None;
    job.metadata.managed_fields = None;
    job.status = None;
    let text = tvk_api::yaml::to_string(&job).unwrap();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/job-imagebackup.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_default();
    pretty_assertions::assert_eq!(golden, text, "run with UPDATE_GOLDEN=1 to accept");
}

#[tokio::test]
async fn unavailable_plan_or_target_fails_validation_with_the_reason() {
    let (client, _) = common::fake(world("Unavailable", "Available")).await;
    let b = reconcile(&client).await;
    let s = b.status.clone().unwrap();
    assert_eq!(s.status, Some(BackupState::Failed));
    assert_eq!(s.phase, Some(BackupPhase::PreBackupValidation));
    assert!(
        condition(&b, BackupPhase::PreBackupValidation)
            .1
            .contains("Hook x does not exist")
    );
    assert!(jobs(&client).await.is_empty());

    let (client, _) = common::fake(world("Available", "Unavailable")).await;
    let b = reconcile(&client).await;
    assert_eq!(b.status.as_ref().unwrap().status, Some(BackupState::Failed));
    assert!(
        condition(&b, BackupPhase::PreBackupValidation)
            .1
            .contains("AuthenticationFailed")
    );
}

#[tokio::test]
async fn a_failed_metamover_job_fails_the_backup_and_is_removed() {
    let (client, _) = common::fake(world("Available", "Available")).await;
    reconcile(&client).await;
    reconcile(&client).await;
    let name = jobs(&client).await[0].metadata.name.clone().unwrap();
    finish_job(&client, &name, false).await;
    let b = reconcile(&client).await;
    let s = b.status.clone().unwrap();
    assert_eq!(s.status, Some(BackupState::Failed));
    assert_eq!(s.phase, Some(BackupPhase::MetaSnapshot));
    let reason = condition(&b, BackupPhase::MetaSnapshot).1;
    assert!(
        reason.contains("BackoffLimitExceeded") && reason.contains(&name),
        "{reason}"
    );
    assert!(
        jobs(&client).await.is_empty(),
        "temporary objects are removed"
    );
}

#[tokio::test]
async fn volumes_move_the_backup_to_data_snapshot() {
    let (client, _) = common::fake(world("Available", "Available")).await;
    reconcile(&client).await;
    reconcile(&client).await;
    let name = jobs(&client).await[0].metadata.name.clone().unwrap();
    finish_job(&client, &name, true).await;
    write_snapshot(&client, json!({"custom": {"dataSnapshots": [{"persistentVolumeClaimName": "mysql-data", "size": "10Gi"}]}})).await;
    let b = reconcile(&client).await;
    let s = b.status.clone().unwrap();
    assert_eq!(s.status, Some(BackupState::InProgress));
    assert_eq!(s.phase, Some(BackupPhase::DataSnapshot));
    assert_eq!(s.percentage_completion, Some(20));
    let reason = condition(&b, BackupPhase::DataSnapshot).1;
    assert!(reason.contains("1 PersistentVolumeClaim"), "{reason}");
    // The volume steps themselves: tests/backup_volumes.rs.
}

#[tokio::test]
async fn a_metamover_that_wrote_no_snapshot_is_a_clear_failure() {
    let (client, _) = common::fake(world("Available", "Available")).await;
    reconcile(&client).await;
    reconcile(&client).await;
    let name = jobs(&client).await[0].metadata.name.clone().unwrap();
    finish_job(&client, &name, true).await;
    let b = reconcile(&client).await;
    assert_eq!(b.status.as_ref().unwrap().status, Some(BackupState::Failed));
    assert!(
        condition(&b, BackupPhase::MetaSnapshot)
            .1
            .contains("wrote no status.snapshot")
    );
}

#[tokio::test]
async fn metamover_job_golden() {
    let (client, _) = common::fake(world("Available", "Available")).await;
    reconcile(&client).await;
    reconcile(&client).await;
    let mut job = jobs(&client).await.remove(0);
    job.metadata.resource_version = None;
    job.metadata.creation_timestamp = None;
    job.metadata.uid = None;
    job.metadata.generation = None;
    job.metadata.managed_fields = None;
    job.status = None;
    let text = tvk_api::yaml::to_string(&job).unwrap();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/job-metasnapshot.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_default();
    pretty_assertions::assert_eq!(golden, text, "run with UPDATE_GOLDEN=1 to accept");
}

#[tokio::test]
async fn a_second_backup_of_the_plan_waits_for_the_first() {
    let mut objs = world("Available", "Available");
    objs.push(
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Backup",
        "metadata": {"name": "app-incr-0", "namespace": NS, "uid": "other-uid"},
        "spec": {"type": "Incremental", "backupPlan": {"name": "app"}},
        "status": {"status": "InProgress", "phase": "MetaSnapshot", "phaseStatus": "InProgress"}}),
    );
    let (client, _) = common::fake(objs).await;
    let b = reconcile(&client).await;
    let s = b.status.clone().unwrap();
    assert_eq!(s.status, Some(BackupState::Pending), "{s:?}");
    assert!(
        condition(&b, BackupPhase::PreBackupValidation)
            .1
            .contains("app-incr-0")
    );
    assert!(
        jobs(&client).await.is_empty(),
        "no Job while the other backup runs"
    );
    // The other one finishes: this one starts.
    Api::<Backup>::namespaced(client.clone(), NS)
        .patch_status(
            "app-incr-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"status": "Available"}})),
        )
        .await
        .unwrap();
    let b = reconcile(&client).await;
    assert_eq!(b.status.unwrap().status, Some(BackupState::InProgress));
}

#[tokio::test]
async fn an_encrypted_backups_metamover_jobs_get_the_key_and_require_sealed_metadata() {
    let mut objects = world("Available", "Available");
    objects[1]["spec"]["encryption"] = json!({"encryptionSecret": {"name": "key"}});
    objects.push(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "key", "namespace": NS},
        "type": "Opaque", "data": {"encryptionKey": "a2V5"}}));
    let (client, _writes) = common::fake(objects).await;
    let b = reconcile(&client).await;
    assert_eq!(
        b.status.as_ref().unwrap().encryption_enabled,
        Some(true),
        "{:?}",
        b.status
    );
    reconcile(&client).await;
    let j = jobs(&client).await;
    assert_eq!(j.len(), 1);
    let args = common::job_args(&j[0]);
    assert_eq!(args[0], "snapshot");
    assert!(
        args.contains(&"--encryption-key-file=/etc/tvk/encryption/encryptionKey".to_string()),
        "{args:?}"
    );
    assert!(args.contains(&"--require-sealed".to_string()), "{args:?}");
    // An unencrypted backup's Jobs get neither.
    let (client, _writes) = common::fake(world("Available", "Available")).await;
    reconcile(&client).await;
    reconcile(&client).await;
    let args = common::job_args(&jobs(&client).await[0]);
    assert!(
        !args
            .iter()
            .any(|a| a == "--require-sealed" || a.starts_with("--encryption-key-file")),
        "{args:?}"
    );
}
