#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Volume data of a backup against tvk-test-apiserver (hooks exec'd as local processes): VolumeSnapshot class choice (default class,
//! excluded driver, missing class), readiness polling, the install-namespace clone of a
//! snapshot, the block-mode temporary claim, datamover Jobs (arguments parsed with the
//! datamover's own target flags, golden file, parallel bound, exit-75 retries, parent of an
//! incremental), the cleanup on success and on failure, and the hook phases around the
//! snapshots (a failed pre hook still unquiesces; post hooks run once the snapshots are ready).

mod common;

use k8s_openapi::api::{batch::v1::Job, core::v1::PersistentVolumeClaim};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use tvk_api::{
    backup::{Backup, BackupPhase, BackupPhaseStatus, BackupState, BackupType},
    snapshot::Snapshot,
};
use tvk_control_plane::{
    Context, backup_controller,
    volumes::{self, VolumeNames, VolumeSnapshot, VolumeSnapshotClass, VolumeSnapshotContent},
};
use tvk_test_apiserver::ApiServer;

const NS: &str = common::NS;
const APP: &str = "shop";
const DRIVER: &str = "hostpath.csi.k8s.io";

fn pvc(name: &str, uid: &str, class: &str, mode: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": APP, "uid": uid},
        "spec": {"storageClassName": class, "volumeMode": mode, "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": "Bound"}})
}

fn world(backup_type: &str, classes: Vec<Value>) -> Vec<Value> {
    let mut w = vec![
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Target",
            "metadata": {"name": "s3", "namespace": NS, "uid": "t-1"},
            "spec": {"type": "ObjectStore", "vendor": "AWS", "objectStoreCredentials": {"bucketName": "b", "credentialSecret": {"name": "c"}}},
            "status": {"status": "Available"}}),
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "BackupPlan",
            "metadata": {"name": "app", "namespace": APP, "uid": "plan-uid"},
            // Image backup is tested in tests/backup.rs.
            "spec": {"backupConfig": {"target": {"name": "s3", "namespace": NS}},
                "backupPlanFlags": {"skipImageBackup": true}},
            "status": {"status": "Available"}}),
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Backup",
            "metadata": {"name": "b1", "namespace": APP, "uid": "bkp-uid", "finalizers": ["example.com/keep"]},
            "spec": {"type": backup_type, "backupPlan": {"name": "app"}}}),
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "fast"}, "provisioner": DRIVER}),
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "nfs"}, "provisioner": "nosnap.csi.example.com"}),
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "other"}, "provisioner": "other.csi.example.com"}),
        pvc("data", "pvc-uid-1", "fast", "Filesystem"),
    ];
    w.extend(classes);
    w
}

fn class(name: &str, driver: &str, default: bool) -> Value {
    let mut c = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
        "metadata": {"name": name}, "driver": driver, "deletionPolicy": "Delete"});
    if default {
        c["metadata"]["annotations"] =
            json!({"snapshot.storage.kubernetes.io/is-default-class": "true"});
    }
    c
}

fn default_classes() -> Vec<Value> {
    vec![
        class("a-plain", DRIVER, false),
        class("z-default", DRIVER, true),
        class("elsewhere", "other2.csi.example.com", true),
    ]
}

/// tvk-test-apiserver (kube-fake-client has no cluster-scoped custom kinds) with our CRDs, the
/// two namespaces and `objects`; the server lives as long as the test process.
async fn fake(objects: Vec<Value>) -> (kube::Client, &'static ApiServer) {
    let server: &'static ApiServer = Box::leak(Box::new(ApiServer::start().await.unwrap()));
    for crd in tvk_api::crd::all() {
        server.create(serde_json::to_value(crd).unwrap()).unwrap();
    }
    for ns in [NS, APP] {
        server
            .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .unwrap();
    }
    for o in objects {
        server.create(o).unwrap();
    }
    (server.client(), server)
}

async fn buid(client: &kube::Client) -> String {
    Api::<Backup>::namespaced(client.clone(), APP)
        .get("b1")
        .await
        .unwrap()
        .uid()
        .unwrap()
}

async fn uid_of_pvc(client: &kube::Client, name: &str) -> String {
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), APP)
        .get(name)
        .await
        .unwrap()
        .uid()
        .unwrap()
}

async fn plan_uid(client: &kube::Client) -> String {
    Api::<tvk_api::BackupPlan>::namespaced(client.clone(), APP)
        .get("app")
        .await
        .unwrap()
        .uid()
        .unwrap()
}

async fn target_uid(client: &kube::Client) -> String {
    Api::<tvk_api::Target>::namespaced(client.clone(), NS)
        .get("s3")
        .await
        .unwrap()
        .uid()
        .unwrap()
}

fn ctx_with(client: &kube::Client, max_parallel: u32) -> std::sync::Arc<Context> {
    let mut config = common::config("Cluster");
    config.job_spec.max_parallel_data_jobs = max_parallel;
    std::sync::Arc::new(Context::new(client.clone(), config, None))
}

async fn reconcile_with(client: &kube::Client, ctx: &std::sync::Arc<Context>) -> Backup {
    let api: Api<Backup> = Api::namespaced(client.clone(), APP);
    for _ in 0..2 {
        let backup = api.get("b1").await.unwrap();
        let first_time = !backup
            .finalizers()
            .contains(&backup_controller::FINALIZER.to_string());
        backup_controller::reconcile(backup.into(), ctx.clone())
            .await
            .unwrap();
        if !first_time {
            break;
        }
    }
    api.get("b1").await.unwrap()
}

async fn jobs(client: &kube::Client) -> Vec<Job> {
    Api::<Job>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels(&format!(
            "triliovault.trilio.io/backup-uid={}",
            buid(client).await
        )))
        .await
        .unwrap()
        .items
}

async fn finish_job(client: &kube::Client, name: &str, ok: bool) {
    common::finish_job(
        client,
        name,
        ok,
        "Job has reached the specified backoff limit",
    )
    .await;
}

/// A failed pod of Job `job` whose container exited `code`.
async fn failed_pod(client: &kube::Client, job: &str, code: i32) {
    failed_pod_saying(client, job, code, "").await;
}

/// A failed pod of Job `job` (labelled as the Job controller does) whose container exited
/// `code` leaving `message` as its termination message.
async fn failed_pod_saying(client: &kube::Client, job: &str, code: i32, message: &str) {
    let name = format!("{job}-pod");
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS,
            "labels": {"batch.kubernetes.io/job-name": job, "job-name": job}},
        "spec": {"containers": [{"name": "data", "image": "x"}]}
    }))
    .unwrap();
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), NS);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    pods.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Failed", "containerStatuses": [{"name": "data", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "message": message}}}]}})),
    )
    .await
    .unwrap();
}

fn condition(b: &Backup, phase: BackupPhase) -> (Option<BackupPhaseStatus>, String) {
    common::backup_condition(b.status.as_ref(), phase)
}

fn snapshot_of(b: &Backup) -> Snapshot {
    Snapshot::from_status_value(b.status.as_ref().unwrap().snapshot.as_ref())
        .unwrap()
        .unwrap()
}

/// Runs the backup through MetaSnapshot with the metamover reporting `pvcs` (names in APP).
async fn to_data_snapshot(
    client: &kube::Client,
    ctx: &std::sync::Arc<Context>,
    pvcs: &[&str],
) -> Backup {
    let b = through_meta_snapshot(client, ctx, pvcs).await;
    assert_eq!(
        b.status.as_ref().unwrap().phase,
        Some(BackupPhase::DataSnapshot)
    );
    b
}

/// The metamover Job finishes and reports `pvcs`; one reconcile after it.
async fn through_meta_snapshot(
    client: &kube::Client,
    ctx: &std::sync::Arc<Context>,
    pvcs: &[&str],
) -> Backup {
    reconcile_with(client, ctx).await;
    reconcile_with(client, ctx).await;
    let name = jobs(client).await[0].metadata.name.clone().unwrap();
    finish_job(client, &name, true).await;
    let ds: Vec<Value> = pvcs
        .iter()
        .map(|p| {
            json!({"persistentVolumeClaimName": p, "size": "1Gi", "volumeMode": "Filesystem",
            "persistentVolumeClaimMetadata": "{}"})
        })
        .collect();
    Api::<Backup>::namespaced(client.clone(), APP)
        .patch_status(
            "b1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"snapshot": {"custom": {"resources": [{"groupVersionKind": {"kind": "ConfigMap"}}], "dataSnapshots": ds}}}})),
        )
        .await
        .unwrap();
    reconcile_with(client, ctx).await
}

async fn snapshot(client: &kube::Client, pvc: &str) -> VolumeSnapshot {
    let names = VolumeNames::new(&buid(client).await, APP, pvc);
    Api::<VolumeSnapshot>::namespaced(client.clone(), APP)
        .get(&names.snapshot)
        .await
        .unwrap()
}

/// The snapshotter's part: the VolumeSnapshot is ready and bound to a content with a handle.
async fn make_ready(client: &kube::Client, pvc: &str) {
    let names = VolumeNames::new(&buid(client).await, APP, pvc);
    let content_name = format!("snapcontent-{pvc}");
    let content: VolumeSnapshotContent = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
        "metadata": {"name": content_name},
        "spec": {"deletionPolicy": "Delete", "driver": DRIVER, "source": {"volumeHandle": format!("vol-{pvc}")},
            "volumeSnapshotRef": {"name": names.snapshot, "namespace": APP}, "volumeSnapshotClassName": "z-default"},
        "status": {"snapshotHandle": format!("handle-{pvc}"), "readyToUse": true}
    }))
    .unwrap();
    let contents = Api::<VolumeSnapshotContent>::all(client.clone());
    contents
        .create(&PostParams::default(), &content)
        .await
        .unwrap();
    contents
        .patch_status(
            &content_name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"snapshotHandle": format!("handle-{pvc}"), "readyToUse": true}}),
            ),
        )
        .await
        .unwrap();
    Api::<VolumeSnapshot>::namespaced(client.clone(), APP)
        .patch_status(
            &names.snapshot,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyToUse": true, "boundVolumeSnapshotContentName": content_name, "restoreSize": "1Gi"}})),
        )
        .await
        .unwrap();
}

/// The clone in the install namespace becomes ready.
async fn make_clone_ready(client: &kube::Client, pvc: &str) {
    let names = VolumeNames::new(&buid(client).await, APP, pvc);
    Api::<VolumeSnapshot>::namespaced(client.clone(), NS)
        .patch_status(
            &names.clone,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyToUse": true, "boundVolumeSnapshotContentName": names.clone_content, "restoreSize": "1Gi"}})),
        )
        .await
        .unwrap();
}

async fn data_jobs(client: &kube::Client) -> Vec<Job> {
    jobs(client)
        .await
        .into_iter()
        .filter(|j| common::job_args(j)[0] == "backup")
        .collect()
}

#[tokio::test]
async fn a_volume_goes_through_snapshot_clone_claim_and_upload_to_available() {
    let (client, _server) = fake(world("Full", default_classes())).await;
    let ctx = ctx_with(&client, 4);
    to_data_snapshot(&client, &ctx, &["data"]).await;
    // DataSnapshot: the VolumeSnapshot with the driver's default class.
    let b = reconcile_with(&client, &ctx).await;
    let vs = snapshot(&client, "data").await;
    assert_eq!(
        vs.spec.volume_snapshot_class_name.as_deref(),
        Some("z-default")
    );
    assert_eq!(
        vs.spec.source.persistent_volume_claim_name.as_deref(),
        Some("data")
    );
    assert_eq!(
        vs.metadata.owner_references.as_ref().unwrap()[0].uid,
        buid(&client).await
    );
    // Not ready yet: requeued, still DataSnapshot.
    assert_eq!(
        condition(&b, BackupPhase::DataSnapshot).0,
        Some(BackupPhaseStatus::InProgress)
    );
    let ds = snapshot_of(&b);
    let d = ds.data_snapshots().next().unwrap();
    let location = format!(
        "{}/{}/{}",
        plan_uid(&client).await,
        buid(&client).await,
        uid_of_pvc(&client, "data").await
    );
    assert_eq!(d.location.as_deref(), Some(location.as_str()));
    assert_eq!(
        d.volume_snapshot.as_ref().unwrap().status,
        Some(BackupState::InProgress)
    );
    assert_eq!(
        d.persistent_volume_claim_metadata.as_deref(),
        Some("{}"),
        "the metamover's fields are kept"
    );
    let b = reconcile_with(&client, &ctx).await;
    assert_eq!(
        b.status.as_ref().unwrap().phase,
        Some(BackupPhase::DataSnapshot)
    );
    make_ready(&client, "data").await;
    let b = reconcile_with(&client, &ctx).await;
    let s = b.status.clone().unwrap();
    assert_eq!(s.phase, Some(BackupPhase::DataUpload), "{s:?}");
    assert_eq!(
        s.size,
        Some(
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                (1u64 << 30).to_string()
            )
        )
    );
    assert_eq!(
        snapshot_of(&b)
            .data_snapshots()
            .next()
            .unwrap()
            .volume_snapshot
            .as_ref()
            .unwrap()
            .status,
        Some(BackupState::Completed)
    );
    // DataUpload: the clone in the install namespace (the PVC lives in another one).
    let b = reconcile_with(&client, &ctx).await;
    let names = VolumeNames::new(&buid(&client).await, APP, "data");
    let content = Api::<VolumeSnapshotContent>::all(client.clone())
        .get(&names.clone_content)
        .await
        .unwrap();
    assert_eq!(content.spec.deletion_policy, "Retain");
    assert_eq!(
        content.spec.source.snapshot_handle.as_deref(),
        Some("handle-data")
    );
    assert_eq!(content.spec.driver, DRIVER);
    assert_eq!(
        content.metadata.annotations.as_ref().unwrap()["snapshot.storage.kubernetes.io/allow-volume-mode-change"],
        "true",
        "a Filesystem volume is read as a block device"
    );
    assert_eq!(
        content.spec.volume_snapshot_ref.namespace.as_deref(),
        Some(NS)
    );
    let clone = Api::<VolumeSnapshot>::namespaced(client.clone(), NS)
        .get(&names.clone)
        .await
        .unwrap();
    assert_eq!(
        clone.spec.source.volume_snapshot_content_name.as_deref(),
        Some(names.clone_content.as_str())
    );
    assert!(
        data_jobs(&client).await.is_empty(),
        "no Job before the clone is ready"
    );
    assert_eq!(b.status.as_ref().unwrap().percentage_completion, Some(20));
    make_clone_ready(&client, "data").await;
    reconcile_with(&client, &ctx).await;
    // The temporary claim: Block, from the clone, the source's class.
    let claim = Api::<PersistentVolumeClaim>::namespaced(client.clone(), NS)
        .get(&names.claim)
        .await
        .unwrap();
    let spec = claim.spec.clone().unwrap();
    assert_eq!(spec.volume_mode.as_deref(), Some("Block"));
    assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
    let source = spec.data_source.unwrap();
    assert_eq!(source.kind, "VolumeSnapshot");
    assert_eq!(source.name, names.clone);
    // The datamover Job, adopted on later reconciles.
    reconcile_with(&client, &ctx).await;
    let j = data_jobs(&client).await;
    assert_eq!(j.len(), 1);
    // The running upload's logs were looked at for progress (remembered in the context).
    reconcile_with(&client, &ctx).await;
    assert_eq!(ctx.log_looks.len(), 1);
    let a = common::job_args(&j[0]);
    assert_eq!(
        a[..9],
        [
            "backup".to_string(),
            "--plan".into(),
            plan_uid(&client).await,
            "--backup".into(),
            buid(&client).await,
            "--volume".into(),
            uid_of_pvc(&client, "data").await,
            "--source".into(),
            "/dev/tvk-volume".into()
        ]
    );
    assert!(
        !a.contains(&"--parent".to_string()),
        "a Full backup has no parent"
    );
    let pod = j[0].spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("tvk-datamover"));
    let dev = &pod.containers[0].volume_devices.as_ref().unwrap()[0];
    assert_eq!(dev.device_path, "/dev/tvk-volume");
    let vol = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == dev.name)
        .unwrap();
    assert_eq!(
        vol.persistent_volume_claim.as_ref().unwrap().claim_name,
        names.claim
    );
    finish_job(&client, j[0].metadata.name.as_deref().unwrap(), true).await;
    let b = reconcile_with(&client, &ctx).await;
    let s = b.status.clone().unwrap();
    assert_eq!(s.phase, Some(BackupPhase::MetadataUpload), "{s:?}");
    assert_eq!(s.percentage_completion, Some(80));
    let d = snapshot_of(&b).data_snapshots().next().unwrap().clone();
    assert_eq!(d.uploaded, Some(true));
    assert_eq!(d.snapshot_type, Some(BackupType::Full));
    let location = format!(
        "{}/{}/{}",
        plan_uid(&client).await,
        buid(&client).await,
        uid_of_pvc(&client, "data").await
    );
    assert_eq!(d.location.as_deref(), Some(location.as_str()));
    // Cleanup after the upload: claim, clone, clone content and snapshot are gone.
    assert!(
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), NS)
            .get_opt(&names.claim)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<VolumeSnapshot>::namespaced(client.clone(), NS)
            .get_opt(&names.clone)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<VolumeSnapshotContent>::all(client.clone())
            .get_opt(&names.clone_content)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<VolumeSnapshot>::namespaced(client.clone(), APP)
            .get_opt(&names.snapshot)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), APP)
            .get_opt("data")
            .await
            .unwrap()
            .is_some(),
        "the user's PVC is untouched"
    );
    // Commit, then Available with the data snapshot recorded.
    reconcile_with(&client, &ctx).await;
    let commit = jobs(&client)
        .await
        .into_iter()
        .find(|j| common::job_args(j)[0] == "commit")
        .unwrap();
    finish_job(&client, commit.metadata.name.as_deref().unwrap(), true).await;
    let b = reconcile_with(&client, &ctx).await;
    let s = b.status.clone().unwrap();
    assert_eq!(s.status, Some(BackupState::Available), "{s:?}");
    assert_eq!(
        s.stats.as_ref().unwrap()["target"]["uid"],
        target_uid(&client).await
    );
    // Terminal: its last look is forgotten (the context's map cannot grow without bound).
    assert!(ctx.log_looks.is_empty());
}

#[tokio::test]
async fn an_excluded_driver_is_skipped_with_a_warning_and_the_backup_completes_without_it() {
    let mut w = world("Full", default_classes());
    w.push(pvc("shared", "pvc-uid-2", "nfs", "Filesystem"));
    let (client, _server) = fake(w).await;
    let ctx = ctx_with(&client, 4);
    to_data_snapshot(&client, &ctx, &["shared"]).await;
    let b = reconcile_with(&client, &ctx).await;
    let s = b.status.clone().unwrap();
    assert_eq!(s.phase, Some(BackupPhase::MetadataUpload), "{s:?}");
    assert_eq!(
        condition(&b, BackupPhase::DataUpload).0,
        Some(BackupPhaseStatus::Skipped)
    );
    let d = snapshot_of(&b).data_snapshots().next().unwrap().clone();
    let c = &d.conditions[0];
    assert_eq!(c.status, Some(BackupPhaseStatus::Skipped));
    assert!(
        c.reason
            .as_deref()
            .unwrap()
            .contains("nosnap.csi.example.com"),
        "{c:?}"
    );
    assert!(
        Api::<VolumeSnapshot>::namespaced(client.clone(), APP)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn a_driver_without_a_snapshot_class_fails_naming_the_pvc_the_driver_and_the_fix() {
    let mut w = world("Full", default_classes());
    w.push(pvc("logs", "pvc-uid-3", "other", "Block"));
    let (client, _server) = fake(w).await;
    let ctx = ctx_with(&client, 4);
    to_data_snapshot(&client, &ctx, &["logs"]).await;
    let b = reconcile_with(&client, &ctx).await;
    let s = b.status.clone().unwrap();
    assert_eq!(s.status, Some(BackupState::Failed));
    assert_eq!(s.phase, Some(BackupPhase::DataSnapshot));
    let reason = condition(&b, BackupPhase::DataSnapshot).1;
    assert!(
        reason.contains("shop/logs")
            && reason.contains("other.csi.example.com")
            && reason.contains("create one"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_single_class_without_the_default_annotation_is_used() {
    let (client, _server) = fake(world("Full", vec![class("only", DRIVER, false)])).await;
    let ctx = ctx_with(&client, 4);
    to_data_snapshot(&client, &ctx, &["data"]).await;
    reconcile_with(&client, &ctx).await;
    assert_eq!(
        snapshot(&client, "data")
            .await
            .spec
            .volume_snapshot_class_name
            .as_deref(),
        Some("only")
    );
}

#[tokio::test]
async fn a_snapshot_error_fails_the_backup_and_cleans_up() {
    let (client, _server) = fake(world("Full", default_classes())).await;
    let ctx = ctx_with(&client, 4);
    to_data_snapshot(&client, &ctx, &["data"]).await;
    reconcile_with(&client, &ctx).await;
    let names = VolumeNames::new(&buid(&client).await, APP, "data");
    Api::<VolumeSnapshot>::namespaced(client.clone(), APP)
        .patch_status(
            &names.snapshot,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"readyToUse": false, "error": {"message": "quota exceeded"}}}),
            ),
        )
        .await
        .unwrap();
    let b = reconcile_with(&client, &ctx).await;
    assert_eq!(b.status.as_ref().unwrap().status, Some(BackupState::Failed));
    let reason = condition(&b, BackupPhase::DataSnapshot).1;
    assert!(
        reason.contains("quota exceeded") && reason.contains("shop/data"),
        "{reason}"
    );
    assert!(
        Api::<VolumeSnapshot>::namespaced(client.clone(), APP)
            .get_opt(&names.snapshot)
            .await
            .unwrap()
            .is_none(),
        "the snapshot is deleted on failure"
    );
}

/// Up to the first data Job of the volume `data`.
async fn to_first_upload(client: &kube::Client, ctx: &std::sync::Arc<Context>) {
    to_data_snapshot(client, ctx, &["data"]).await;
    reconcile_with(client, ctx).await;
    make_ready(client, "data").await;
    reconcile_with(client, ctx).await;
    reconcile_with(client, ctx).await;
    make_clone_ready(client, "data").await;
    reconcile_with(client, ctx).await;
    assert_eq!(data_jobs(client).await.len(), 1);
}

#[tokio::test]
async fn a_job_that_exits_75_is_retried_under_a_new_name_then_fails_after_three_retries() {
    let (client, _server) = fake(world("Full", default_classes())).await;
    let ctx = ctx_with(&client, 4);
    to_first_upload(&client, &ctx).await;
    for attempt in 0..=volumes::MAX_RETRIES {
        let name = VolumeNames::job(&buid(&client).await, APP, "data", attempt);
        failed_pod(&client, &name, volumes::EXIT_RETRYABLE).await;
        finish_job(&client, &name, false).await;
        let b = reconcile_with(&client, &ctx).await;
        if attempt < volumes::MAX_RETRIES {
            assert_eq!(
                b.status.as_ref().unwrap().status,
                Some(BackupState::InProgress)
            );
            let next = VolumeNames::job(&buid(&client).await, APP, "data", attempt + 1);
            assert!(
                data_jobs(&client)
                    .await
                    .iter()
                    .any(|j| j.name_any() == next),
                "attempt {} runs as {next}",
                attempt + 2
            );
        } else {
            let s = b.status.clone().unwrap();
            assert_eq!(s.status, Some(BackupState::Failed));
            assert_eq!(s.phase, Some(BackupPhase::DataUpload));
            let reason = condition(&b, BackupPhase::DataUpload).1;
            assert!(
                reason.contains("shop/data") && reason.contains("after 3 retries"),
                "{reason}"
            );
        }
    }
    // Failure cleanup: Jobs, claim, clone and snapshot gone.
    assert!(jobs(&client).await.is_empty());
    let names = VolumeNames::new(&buid(&client).await, APP, "data");
    assert!(
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), NS)
            .get_opt(&names.claim)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<VolumeSnapshotContent>::all(client.clone())
            .get_opt(&names.clone_content)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<VolumeSnapshot>::namespaced(client.clone(), APP)
            .get_opt(&names.snapshot)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_permanent_job_failure_fails_the_backup_naming_the_pvc_and_the_job_message() {
    let (client, _server) = fake(world("Full", default_classes())).await;
    let ctx = ctx_with(&client, 4);
    to_first_upload(&client, &ctx).await;
    let name = VolumeNames::job(&buid(&client).await, APP, "data", 0);
    failed_pod(&client, &name, 1).await;
    finish_job(&client, &name, false).await;
    let b = reconcile_with(&client, &ctx).await;
    assert_eq!(b.status.as_ref().unwrap().status, Some(BackupState::Failed));
    let reason = condition(&b, BackupPhase::DataUpload).1;
    assert!(
        reason.contains("shop/data")
            && reason.contains("backoff limit")
            && !reason.contains("retr"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_failed_upload_names_the_datamovers_own_error() {
    let (client, _server) = fake(world("Full", default_classes())).await;
    let ctx = ctx_with(&client, 4);
    to_first_upload(&client, &ctx).await;
    let name = VolumeNames::job(&buid(&client).await, APP, "data", 0);
    failed_pod_saying(
        &client,
        &name,
        1,
        "{\"event\":\"progress\",\"percent\":12}\n{\"event\":\"result\",\"ok\":false,\"error\":\"reading /dev/tvk-volume at offset 1048576: Input/output error\"}",
    )
    .await;
    finish_job(&client, &name, false).await;
    let b = reconcile_with(&client, &ctx).await;
    let reason = condition(&b, BackupPhase::DataUpload).1;
    assert!(
        reason.contains("Input/output error") && !reason.contains("backoff limit"),
        "the tool's error, not the Job controller's: {reason}"
    );
}

#[tokio::test]
async fn data_jobs_are_bounded_by_max_parallel_data_jobs() {
    let mut w = world("Full", default_classes());
    w.push(pvc("d2", "pvc-uid-22", "fast", "Block"));
    w.push(pvc("d3", "pvc-uid-23", "fast", "Block"));
    let (client, _server) = fake(w).await;
    let ctx = ctx_with(&client, 2);
    to_data_snapshot(&client, &ctx, &["data", "d2", "d3"]).await;
    reconcile_with(&client, &ctx).await;
    for p in ["data", "d2", "d3"] {
        make_ready(&client, p).await;
    }
    reconcile_with(&client, &ctx).await; // → DataUpload
    reconcile_with(&client, &ctx).await; // clones
    for p in ["data", "d2", "d3"] {
        make_clone_ready(&client, p).await;
    }
    reconcile_with(&client, &ctx).await;
    reconcile_with(&client, &ctx).await;
    let j = data_jobs(&client).await;
    assert_eq!(j.len(), 2, "at most maxParallelDataJobs at once");
    finish_job(&client, j[0].metadata.name.as_deref().unwrap(), true).await;
    let b = reconcile_with(&client, &ctx).await;
    assert_eq!(
        data_jobs(&client).await.len(),
        3,
        "a finished Job frees its slot"
    );
    let pct = b.status.as_ref().unwrap().percentage_completion.unwrap();
    assert_eq!(pct, 40, "20 + 60 × one third of the bytes");
}

#[tokio::test]
async fn an_incremental_uses_the_last_available_backup_with_the_volume_as_parent() {
    let (client, server) = fake(world("Incremental", default_classes())).await;
    let (plan, pvc, target) = (
        plan_uid(&client).await,
        uid_of_pvc(&client, "data").await,
        target_uid(&client).await,
    );
    let prior = |name: &str, done: &str, pvc_uid: &str, target: &str| {
        let created = server
            .create(
                json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Backup",
                "metadata": {"name": name, "namespace": APP},
                "spec": {"type": "Full", "backupPlan": {"name": "app"}},
                "status": {"status": "Available", "completionTimestamp": done,
                    "stats": {"target": {"uid": target}}}}),
            )
            .unwrap();
        let uid = created["metadata"]["uid"].as_str().unwrap().to_string();
        let snapshot = json!({"custom": {"dataSnapshots": [{"persistentVolumeClaimName": "data",
            "uploaded": true, "location": format!("{plan}/{uid}/{pvc_uid}")}]}});
        let mut with_status = server
            .get("triliovault.trilio.io/v1", "Backup", Some(APP), name)
            .unwrap();
        with_status["status"]["snapshot"] = snapshot;
        with_status["status"]["status"] = json!("Available");
        with_status["status"]["completionTimestamp"] = json!(done);
        with_status["status"]["stats"] = json!({"target": {"uid": target}});
        (uid, with_status)
    };
    let mut parent = String::new();
    for (name, done, pvc_uid, t) in [
        ("old", "2026-01-01T00:00:00Z", pvc.as_str(), target.as_str()),
        (
            "newer",
            "2026-01-02T00:00:00Z",
            pvc.as_str(),
            target.as_str(),
        ),
        // Newer, but of a recreated PVC (another uid) or on another Target: not a parent.
        (
            "recreated",
            "2026-01-03T00:00:00Z",
            "pvc-uid-old",
            target.as_str(),
        ),
        ("elsewhere", "2026-01-04T00:00:00Z", pvc.as_str(), "t-2"),
    ] {
        let (uid, obj) = prior(name, done, pvc_uid, t);
        Api::<Backup>::namespaced(client.clone(), APP)
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": obj["status"]})),
            )
            .await
            .unwrap();
        if name == "newer" {
            parent = uid;
        }
    }
    let ctx = ctx_with(&client, 4);
    to_first_upload(&client, &ctx).await;
    let j = data_jobs(&client).await;
    let a = common::job_args(&j[0]);
    let i = a.iter().position(|x| x == "--parent").expect("--parent");
    assert_eq!(a[i + 1], parent);
    finish_job(&client, j[0].metadata.name.as_deref().unwrap(), true).await;
    let b = reconcile_with(&client, &ctx).await;
    assert_eq!(
        snapshot_of(&b)
            .data_snapshots()
            .next()
            .unwrap()
            .snapshot_type,
        Some(BackupType::Incremental)
    );
}

#[tokio::test]
async fn datamover_job_golden_and_its_args_parse_with_the_datamovers_target_flags() {
    let (client, _server) = fake(world("Full", default_classes())).await;
    let ctx = ctx_with(&client, 4);
    to_first_upload(&client, &ctx).await;
    let mut job = data_jobs(&client).await.remove(0);
    job.metadata.resource_version = None;
    job.metadata.uid = None;
    job.metadata.creation_timestamp = None;
    job.metadata.managed_fields = None;
    job.status = None;
    let a = common::job_args(&job);
    let parsed = <mirror::Cli as clap::Parser>::try_parse_from(
        std::iter::once("tvk-datamover".to_string()).chain(a.clone()),
    )
    .unwrap_or_else(|e| panic!("{e}: {a:?}"));
    let mirror::Command::Backup { target, source, .. } = parsed.command;
    assert_eq!(target.target, "s3://b");
    assert_eq!(source, "/dev/tvk-volume");
    // The server's uids (and the names hashed from them) are random: placeholders.
    let uid = buid(&client).await;
    let names = VolumeNames::new(&uid, APP, "data");
    let text = tvk_api::yaml::to_string(&job)
        .unwrap()
        .replace(&VolumeNames::job(&uid, APP, "data", 0), "JOB-NAME")
        .replace(&names.claim, "CLAIM-NAME")
        .replace(&uid, "BACKUP-UID")
        .replace(&plan_uid(&client).await, "PLAN-UID")
        .replace(&uid_of_pvc(&client, "data").await, "PVC-UID");
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/job-dataupload.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap();
    pretty_assertions::assert_eq!(golden, text, "run with UPDATE_GOLDEN=1 to accept");
}

#[test]
fn class_choice_prefers_the_default_then_the_first_by_name() {
    let classes: Vec<VolumeSnapshotClass> = default_classes()
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    assert_eq!(volumes::choose_class(&classes, DRIVER), Some("z-default"));
    assert_eq!(
        volumes::choose_class(&classes[..1], DRIVER),
        Some("a-plain")
    );
    assert_eq!(volumes::choose_class(&classes, "none.csi"), None);
}

/// The `backup` subcommand as the datamover declares it (app/datamover/src/cli.rs; its `Cli`
/// is private), with the datamover's own `TargetArgs`.
mod mirror {
    #[derive(clap::Parser)]
    pub struct Cli {
        #[command(subcommand)]
        pub command: Command,
    }
    #[derive(clap::Subcommand)]
    pub enum Command {
        Backup {
            #[command(flatten)]
            target: tvk_datamover::target_args::TargetArgs,
            #[arg(long)]
            plan: String,
            #[arg(long)]
            backup: String,
            #[arg(long)]
            volume: String,
            #[arg(long)]
            source: String,
            #[arg(long)]
            parent: Option<String>,
        },
    }
}

#[tokio::test]
async fn a_finished_upload_is_recognised_even_when_its_snapshot_is_already_gone() {
    let (client, _server) = fake(world("Full", default_classes())).await;
    let ctx = ctx_with(&client, 4);
    to_first_upload(&client, &ctx).await;
    let j = data_jobs(&client).await;
    finish_job(&client, j[0].metadata.name.as_deref().unwrap(), true).await;
    // As after a crash between the cleanup and the status write.
    let names = VolumeNames::new(&buid(&client).await, APP, "data");
    Api::<VolumeSnapshot>::namespaced(client.clone(), APP)
        .delete(&names.snapshot, &Default::default())
        .await
        .unwrap();
    let b = reconcile_with(&client, &ctx).await;
    let s = b.status.clone().unwrap();
    assert_eq!(s.phase, Some(BackupPhase::MetadataUpload), "{s:?}");
    assert_eq!(
        snapshot_of(&b).data_snapshots().next().unwrap().uploaded,
        Some(true)
    );
}

/// A plan whose hook quiesces the pod `db-0` in APP: the pre command is `pre`, the post command
/// writes `post_marker` (so the test sees that the application was unquiesced).
fn with_hooks(mut objects: Vec<Value>, pre: &str, post_marker: &std::path::Path) -> Vec<Value> {
    objects[1]["spec"]["hookConfig"] = json!({"mode": "Sequential", "hooks": [
        {"hook": {"name": "db-quiesce", "namespace": APP},
         "podSelector": {"labels": [{"matchLabels": {"app": "db"}}]}, "containerRegex": "^db$"}]});
    objects.push(json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Hook",
        "metadata": {"name": "db-quiesce", "namespace": APP},
        "spec": {"pre": {"execAction": {"command": ["sh", "-c", pre]}, "maxRetryCount": 0, "timeoutSeconds": 10},
                 "post": {"execAction": {"command": ["sh", "-c", format!("echo unquiesced >> {}", post_marker.display())]},
                          "maxRetryCount": 0, "timeoutSeconds": 10}}}));
    objects.push(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "db-0", "namespace": APP, "labels": {"app": "db"}},
        "spec": {"containers": [{"name": "db", "image": "postgres"}]},
        "status": {"phase": "Running", "containerStatuses": [{"name": "db", "image": "postgres", "imageID": "",
            "ready": true, "restartCount": 0, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}}));
    objects
}

#[tokio::test]
async fn a_failed_pre_hook_fails_quiesce_and_the_post_hooks_still_run() {
    let dir = tvk_testkit::TempDir::new("hooks").unwrap();
    let marker = dir.path().join("post");
    let (client, _server) = fake(with_hooks(
        world("Full", default_classes()),
        "echo cannot flush >&2; exit 3",
        &marker,
    ))
    .await;
    let ctx = ctx_with(&client, 4);
    let b = through_meta_snapshot(&client, &ctx, &["data"]).await;
    assert_eq!(
        b.status.as_ref().unwrap().phase,
        Some(BackupPhase::HookTargetIdentification)
    );
    let b = reconcile_with(&client, &ctx).await;
    let (state, reason) = condition(&b, BackupPhase::HookTargetIdentification);
    assert_eq!(state, Some(BackupPhaseStatus::Completed), "{reason}");
    assert!(reason.contains("1 pod(s)"), "{reason}");
    let b = reconcile_with(&client, &ctx).await;
    assert_eq!(b.status.as_ref().unwrap().status, Some(BackupState::Failed));
    let (state, reason) = condition(&b, BackupPhase::Quiesce);
    assert_eq!(state, Some(BackupPhaseStatus::Failed));
    assert!(
        reason.contains("cannot flush") && reason.contains("the post hooks ran"),
        "{reason}"
    );
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "unquiesced\n",
        "the application is never left quiesced"
    );
    assert!(
        Api::<VolumeSnapshot>::namespaced(client.clone(), APP)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "no snapshot is taken of an application that could not be quiesced"
    );
}

#[tokio::test]
async fn the_application_is_unquiesced_once_its_snapshots_are_ready() {
    let dir = tvk_testkit::TempDir::new("hooks").unwrap();
    let marker = dir.path().join("post");
    let pre_marker = dir.path().join("pre");
    let (client, _server) = fake(with_hooks(
        world("Full", default_classes()),
        &format!("echo quiesced > {}", pre_marker.display()),
        &marker,
    ))
    .await;
    let ctx = ctx_with(&client, 4);
    through_meta_snapshot(&client, &ctx, &["data"]).await;
    reconcile_with(&client, &ctx).await; // identification
    let b = reconcile_with(&client, &ctx).await; // pre hooks
    assert_eq!(
        condition(&b, BackupPhase::Quiesce).0,
        Some(BackupPhaseStatus::Completed)
    );
    assert!(pre_marker.exists(), "the pre hook ran in the pod");
    assert!(
        !marker.exists(),
        "not unquiesced before the snapshot is taken"
    );
    reconcile_with(&client, &ctx).await; // the VolumeSnapshot
    make_ready(&client, "data").await;
    let b = reconcile_with(&client, &ctx).await;
    assert_eq!(
        condition(&b, BackupPhase::Unquiesce).0,
        Some(BackupPhaseStatus::Completed)
    );
    assert_eq!(
        b.status.as_ref().unwrap().phase,
        Some(BackupPhase::DataUpload)
    );
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "unquiesced\n");
}

#[tokio::test]
async fn a_running_uploads_progress_lines_move_the_percentage_forward_only() {
    let (client, server) = fake(world("Full", default_classes())).await;
    let mut ctx = Context::new(client.clone(), common::config("Cluster"), None);
    // Every reconcile may look at the logs (the production bound is once per poll interval).
    ctx.backup_poll = std::time::Duration::ZERO;
    let ctx = std::sync::Arc::new(ctx);
    to_first_upload(&client, &ctx).await;
    let job = data_jobs(&client).await[0].name_any();
    let pct = |b: &Backup| b.status.as_ref().unwrap().percentage_completion.unwrap();
    // The Job runs, its pod has no progress line yet: the percentage stays at the phase start.
    let log_dir = server.temp_dir().join("progress-logs");
    std::fs::create_dir_all(&log_dir).unwrap();
    common::running_pod_with_log(&client, NS, &job, &log_dir).await;
    assert_eq!(pct(&reconcile_with(&client, &ctx).await), 20);
    common::log_progress(&log_dir, 25, 100);
    let b = reconcile_with(&client, &ctx).await;
    assert_eq!(pct(&b), 35, "20 + 60 × 25 %");
    assert_eq!(
        b.status.as_ref().unwrap().phase,
        Some(BackupPhase::DataUpload)
    );
    common::log_progress(&log_dir, 50, 100);
    assert_eq!(pct(&reconcile_with(&client, &ctx).await), 50);
    // A lower report (a datamover that started over) never moves it back.
    common::log_progress(&log_dir, 10, 100);
    assert_eq!(pct(&reconcile_with(&client, &ctx).await), 50);
    // Nothing readable: unchanged, and no status write.
    std::fs::remove_file(log_dir.join("data.log")).unwrap();
    let mark = server.mark();
    assert_eq!(pct(&reconcile_with(&client, &ctx).await), 50);
    assert_eq!(
        server.writes_since(mark),
        0,
        "{:?}",
        server.requests_since(mark)
    );
    finish_job(&client, &job, true).await;
    let b = reconcile_with(&client, &ctx).await;
    assert_eq!(pct(&b), 80);
    assert_eq!(
        b.status.as_ref().unwrap().phase,
        Some(BackupPhase::MetadataUpload)
    );
    // The log of a Job that is not running is never read.
    let logs_read = server
        .requests_since(mark)
        .iter()
        .filter(|r| r.path.ends_with("/log"))
        .count();
    assert_eq!(logs_read, 1, "only the reconcile while the Job ran");
}

#[tokio::test]
async fn a_failed_image_backup_job_fails_the_backup_during_the_upload_and_cleans_up() {
    let mut w = world("Full", default_classes());
    w[1]["spec"]["backupPlanFlags"] = json!({"skipImageBackup": false});
    let (client, _server) = fake(w).await;
    let ctx = ctx_with(&client, 2);
    to_first_upload(&client, &ctx).await;
    let images = jobs(&client)
        .await
        .into_iter()
        .find(|j| common::job_args(j)[..2] == ["images".to_string(), "backup".to_string()])
        .expect("the image backup Job runs alongside the data phases");
    let b = reconcile_with(&client, &ctx).await;
    assert_eq!(
        condition(&b, BackupPhase::ImageBackup).0,
        Some(BackupPhaseStatus::InProgress)
    );
    assert_eq!(
        b.status.as_ref().unwrap().phase,
        Some(BackupPhase::DataUpload)
    );
    // The images Job fails while the volume is still uploading: noticed at the next
    // reconcile, not when MetadataUpload would wait for it.
    let name = images.name_any();
    failed_pod_saying(
        &client,
        &name,
        1,
        "{\"event\":\"result\",\"ok\":false,\"error\":\"registry.example.com: unauthorized\",\"kind\":\"Auth\",\"retryable\":false}",
    )
    .await;
    finish_job(&client, &name, false).await;
    let b = reconcile_with(&client, &ctx).await;
    let s = b.status.clone().unwrap();
    assert_eq!(s.status, Some(BackupState::Failed), "{s:?}");
    assert_eq!(s.phase, Some(BackupPhase::ImageBackup));
    let (state, reason) = condition(&b, BackupPhase::ImageBackup);
    assert_eq!(state, Some(BackupPhaseStatus::Failed));
    assert!(
        reason.contains(&name) && reason.contains("registry.example.com: unauthorized"),
        "{reason}"
    );
    assert!(jobs(&client).await.is_empty(), "the data Job is cancelled");
    let names = VolumeNames::new(&buid(&client).await, APP, "data");
    assert!(
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), NS)
            .get_opt(&names.claim)
            .await
            .unwrap()
            .is_none(),
        "the temporary claim is deleted"
    );
}
