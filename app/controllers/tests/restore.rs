#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Restore and ClusterRestore phase machine against tvk-test-apiserver (HTTP, discovery,
//! status subresources): every transition, every failure it reports, the DataRestore claims,
//! volumes and Jobs (shape golden-tested, parallelism bounded, re-bind of the hydrated volume),
//! cleanupOnFailure deleting exactly what the restore created, terminal states that never
//! change, and a restarted controller adopting its Jobs. The test plays the kubelet, the volume
//! binder and the metaprocessor: it marks Jobs finished, binds staging claims to volumes and
//! writes `status.restoreApplication`; the Jobs' commands are not run here.

mod common;

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::batch::v1::Job;
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use tvk_api::restore::{ClusterRestore, Restore, RestorePhase, RestorePhaseStatus, RestoreState};
use tvk_control_plane::{context::Context, restore_controller};
use tvk_test_apiserver::ApiServer;

const NS: &str = common::NS;
const DEST: &str = "dest";
const V1: &str = "triliovault.trilio.io/v1";
const LOCATION: &str = "plan-uid/bkp-uid";

struct World {
    server: ApiServer,
    ctx: Arc<Context>,
}

async fn world(max_parallel: u32) -> World {
    let server = common::restore_server(&["plan"]).await;
    server
        .create(
            json!({"apiVersion": V1, "kind": "Backup", "metadata": {"name": "bkp", "namespace": NS},
        "spec": {"type": "Full", "backupPlan": {"name": "plan"}},
        "status": {"status": "Available", "location": LOCATION}}),
        )
        .unwrap();
    let mut ctx = common::restore_context(&server, None);
    Arc::make_mut(&mut ctx.config)
        .job_spec
        .max_parallel_data_jobs = max_parallel;
    World {
        server,
        ctx: Arc::new(ctx),
    }
}

fn restore_obj(name: &str, source: Value, extra: Value) -> Value {
    let mut spec = json!({"source": source});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({"apiVersion": V1, "kind": "Restore", "metadata": {"name": name, "namespace": DEST}, "spec": spec})
}

fn backup_source() -> Value {
    json!({"type": "Backup", "backup": {"name": "bkp", "namespace": NS}})
}

impl World {
    fn restores(&self) -> Api<Restore> {
        Api::namespaced(self.ctx.client.clone(), DEST)
    }

    async fn reconcile(&self, name: &str) -> Restore {
        let r = self.restores().get(name).await.unwrap();
        Box::pin(restore_controller::reconcile(&r, &self.ctx))
            .await
            .unwrap();
        self.restores().get(name).await.unwrap()
    }

    async fn jobs(&self, uid: &str) -> Vec<Job> {
        Api::<Job>::namespaced(self.ctx.client.clone(), NS)
            .list(
                &ListParams::default().labels(&format!("triliovault.trilio.io/restore-uid={uid}")),
            )
            .await
            .unwrap()
            .items
    }

    async fn finish_job(&self, name: &str, ok: bool, message: &str) {
        common::finish_job(&self.ctx.client, name, ok, message).await;
    }

    /// The metaprocessor's part: a merge patch of status.restoreApplication.
    async fn write_plan(&self, name: &str, plan: Value) {
        self.restores()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"restoreApplication": plan}})),
            )
            .await
            .unwrap();
    }

    /// The volume binder's part: a PV for the staging claim, the claim bound to it.
    fn bind_staging(&self, claim: &str, pv: &str) {
        self.server
            .create(json!({"apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": pv, "annotations": {"pv.kubernetes.io/provisioned-by": "hostpath.csi.test", "unrelated": "x"}},
                "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "volumeMode": "Block",
                         "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "fast",
                         "claimRef": {"namespace": NS, "name": claim},
                         "csi": {"driver": "hostpath.csi.test", "volumeHandle": format!("handle-{pv}"), "volumeAttributes": {"a": "b"}}}}))
            .unwrap();
        self.server
            .apply(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": NS}, "spec": {"volumeName": pv}}))
            .unwrap();
    }
}

/// Asserts `r` failed in `phase` and returns that phase's condition reason.
fn failed_in(r: &Restore, phase: RestorePhase) -> String {
    assert_eq!(state(r), (Some(RestoreState::Failed), Some(phase)));
    condition(r, phase).1
}

fn condition(r: &Restore, phase: RestorePhase) -> (Option<RestorePhaseStatus>, String) {
    let c = r
        .status
        .as_ref()
        .unwrap()
        .condition
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.phase == Some(phase))
        .unwrap_or_else(|| panic!("no {phase:?} condition in {:?}", r.status))
        .clone();
    (c.status, c.reason.unwrap_or_default())
}

fn state(r: &Restore) -> (Option<RestoreState>, Option<RestorePhase>) {
    let s = r.status.as_ref().unwrap();
    (s.status, s.phase)
}

fn volume(pvc: &str, mode: &str, size: &str) -> Value {
    json!({"namespace": DEST, "pvcName": pvc, "sourceNamespace": "app", "sourcePvcName": pvc,
        "location": format!("{LOCATION}/uid-{pvc}"), "size": size, "volumeMode": mode,
        "accessModes": ["ReadWriteOnce"], "storageClassName": "fast",
        "pvcMetadata": json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": pvc, "namespace": DEST, "labels": {"app": "demo"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}}).to_string()})
}

fn plan(volumes: Vec<Value>) -> Value {
    json!({"source": {"location": LOCATION, "backupName": "bkp", "backupNamespace": NS, "kind": "Backup"},
        "objects": [{"apiVersion": "v1", "kind": "ConfigMap", "namespace": DEST, "name": "settings", "action": "Create"}],
        "counts": {"create": 1, "skip": 0, "patch": 0, "exclude": 0},
        "volumes": volumes, "namespaces": [{"name": DEST, "exists": true}]})
}

/// Runs Validation to its Job and completes it with `plan_value`.
async fn validated(w: &World, name: &str, plan_value: Value) -> Restore {
    let r = w.reconcile(name).await;
    let uid = r.uid().unwrap();
    assert_eq!(
        state(&r),
        (
            Some(RestoreState::InProgress),
            Some(RestorePhase::Validation)
        )
    );
    let jobs = w.jobs(&uid).await;
    assert_eq!(jobs.len(), 1);
    w.write_plan(name, plan_value).await;
    w.finish_job(&jobs[0].name_any(), true, "").await;
    w.reconcile(name).await
}

#[tokio::test]
async fn a_restore_of_a_backup_runs_every_phase_to_completed() {
    let w = world(1).await;
    w.server
        .create(restore_obj("rst", backup_source(), json!({})))
        .unwrap();
    let r = w.reconcile("rst").await;
    let uid = r.uid().unwrap();
    let s = r.status.clone().unwrap();
    assert_eq!(s.status, Some(RestoreState::InProgress));
    assert!(s.start_timestamp.is_some());
    assert_eq!(s.percentage_completion, Some(0));
    // Validation: one metaprocessor Job, however often we reconcile.
    w.reconcile("rst").await;
    let jobs = w.jobs(&uid).await;
    assert_eq!(jobs.len(), 1, "one Job per step");
    let v = &jobs[0];
    assert!(
        v.name_any().starts_with("tvk-validation-"),
        "{}",
        v.name_any()
    );
    assert_eq!(
        &common::job_args(v)[..10],
        &[
            "restore-plan",
            "--kind",
            "Restore",
            "--namespace",
            DEST,
            "--name",
            "rst",
            "--location",
            LOCATION,
            "--target"
        ]
        .map(String::from)
    );
    assert_eq!(
        common::arg_after(v, "--target").as_deref(),
        Some("s3://bucket")
    );
    assert_eq!(
        v.annotations()
            .get("triliovault.trilio.io/restore-ref")
            .map(String::as_str),
        Some("dest/rst")
    );
    assert!(v.labels().get("triliovault.trilio.io/backup-uid").is_none());
    // Nothing is written to the destination before Validation completes.
    assert!(
        w.server
            .list("v1", "PersistentVolumeClaim", Some(DEST))
            .is_empty()
    );

    w.write_plan(
        "rst",
        plan(vec![
            volume("data", "Filesystem", "1Gi"),
            volume("raw", "Block", "3Gi"),
        ]),
    )
    .await;
    w.finish_job(&v.name_any(), true, "").await;
    let r = w.reconcile("rst").await;
    assert_eq!(
        state(&r),
        (
            Some(RestoreState::InProgress),
            Some(RestorePhase::DataRestore)
        )
    );
    let (vs, reason) = condition(&r, RestorePhase::Validation);
    assert_eq!(vs, Some(RestorePhaseStatus::Completed));
    assert!(
        reason.contains("1 object(s) to create") && reason.contains("2 volume(s)"),
        "{reason}"
    );
    assert_eq!(
        r.status.as_ref().unwrap().size,
        Some(
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                (4u64 << 30).to_string()
            )
        )
    );

    // DataRestore, maxParallelDataJobs 1: one data Job and its Block staging claim at a time.
    let r = w.reconcile("rst").await;
    let data_jobs: Vec<Job> = w
        .jobs(&uid)
        .await
        .into_iter()
        .filter(|j| j.name_any().starts_with("tvk-datarestore-"))
        .collect();
    assert_eq!(data_jobs.len(), 1, "bounded by maxParallelDataJobs");
    let first = &data_jobs[0];
    assert_eq!(
        common::arg_after(first, "--plan").as_deref(),
        Some("plan-uid")
    );
    assert_eq!(
        common::arg_after(first, "--backup").as_deref(),
        Some("bkp-uid")
    );
    assert_eq!(
        common::arg_after(first, "--volume").as_deref(),
        Some("uid-data")
    );
    assert_eq!(
        common::arg_after(first, "--dest").as_deref(),
        Some("/dev/tvk-volume")
    );
    let claim_name = first
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find_map(|v| {
            v.persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.clone())
        })
        .unwrap();
    let staging = w
        .server
        .get("v1", "PersistentVolumeClaim", Some(NS), &claim_name)
        .unwrap();
    assert!(claim_name.starts_with("tvk-rst-"), "{claim_name}");
    assert_eq!(staging["spec"]["volumeMode"], "Block");
    assert_eq!(staging["spec"]["storageClassName"], "fast");
    assert_eq!(
        staging["spec"]["resources"]["requests"]["storage"],
        (1u64 << 30).to_string()
    );
    assert_eq!(r.status.as_ref().unwrap().percentage_completion, Some(0));

    // The Job hydrates the staging claim; the binder had bound it to pv-data.
    w.bind_staging(&claim_name, "pv-data");
    w.finish_job(&first.name_any(), true, "").await;
    let r = w.reconcile("rst").await;
    // Re-bind: a new volume with the same storage, Filesystem mode, pre-bound to dest/data.
    let finals = w.server.list("v1", "PersistentVolume", None);
    let final_pv = finals
        .iter()
        .find(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("tvk-rst-pv-")
        })
        .expect("final volume");
    assert_eq!(final_pv["spec"]["csi"]["volumeHandle"], "handle-pv-data");
    assert_eq!(final_pv["spec"]["csi"]["volumeAttributes"]["a"], "b");
    assert_eq!(final_pv["spec"]["volumeMode"], "Filesystem");
    assert_eq!(final_pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(final_pv["spec"]["claimRef"]["namespace"], DEST);
    assert_eq!(final_pv["spec"]["claimRef"]["name"], "data");
    assert_eq!(
        final_pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"],
        "hostpath.csi.test"
    );
    assert!(
        final_pv["metadata"]["annotations"]
            .get("unrelated")
            .is_none()
    );
    assert!(
        w.server
            .get("v1", "PersistentVolume", None, "pv-data")
            .is_none(),
        "staging volume deleted"
    );
    assert!(
        w.server
            .get("v1", "PersistentVolumeClaim", Some(NS), &claim_name)
            .is_none(),
        "staging claim deleted"
    );
    let data = w
        .server
        .get("v1", "PersistentVolumeClaim", Some(DEST), "data")
        .unwrap();
    assert_eq!(data["spec"]["volumeName"], final_pv["metadata"]["name"]);
    assert_eq!(data["spec"]["volumeMode"], "Filesystem");
    assert_eq!(data["metadata"]["labels"]["app"], "demo");
    assert_eq!(
        data["metadata"]["labels"]["triliovault.trilio.io/restore-uid"],
        uid.as_str()
    );
    // 1 GiB of 4 finished: 20 % of the 80 the data phase spans. The second Job started.
    assert_eq!(r.status.as_ref().unwrap().percentage_completion, Some(20));
    let second: Vec<Job> = w
        .jobs(&uid)
        .await
        .into_iter()
        .filter(|j| {
            j.name_any().starts_with("tvk-datarestore-") && j.name_any() != first.name_any()
        })
        .collect();
    assert_eq!(second.len(), 1);
    assert_eq!(
        common::arg_after(&second[0], "--volume").as_deref(),
        Some("uid-raw")
    );
    let claim2 = object_claim(&second[0]);
    w.bind_staging(&claim2, "pv-raw");
    w.finish_job(&second[0].name_any(), true, "").await;
    let r = w.reconcile("rst").await;
    let raw = w
        .server
        .get("v1", "PersistentVolumeClaim", Some(DEST), "raw")
        .unwrap();
    assert_eq!(raw["spec"]["volumeMode"], "Block");
    assert_eq!(
        condition(&r, RestorePhase::DataRestore).0,
        Some(RestorePhaseStatus::Completed)
    );
    // After the data: ImageRestore (skipped without actionFlags.imageRestore).
    assert_eq!(
        condition(&r, RestorePhase::ImageRestore).0,
        Some(RestorePhaseStatus::Skipped)
    );
    assert_eq!(
        state(&r),
        (
            Some(RestoreState::InProgress),
            Some(RestorePhase::MetadataRestore)
        )
    );
    assert_eq!(r.status.as_ref().unwrap().percentage_completion, Some(80));

    // MetadataRestore: the metaprocessor's restore Job.
    let r = w.reconcile("rst").await;
    let meta: Vec<Job> = w
        .jobs(&uid)
        .await
        .into_iter()
        .filter(|j| j.name_any().starts_with("tvk-metadatarestore-"))
        .collect();
    assert_eq!(meta.len(), 1);
    assert_eq!(common::job_args(&meta[0])[0], "restore");
    assert_eq!(
        common::arg_after(&meta[0], "--location").as_deref(),
        Some(LOCATION)
    );
    assert_eq!(state(&r).1, Some(RestorePhase::MetadataRestore));
    w.finish_job(&meta[0].name_any(), true, "").await;
    let r = w.reconcile("rst").await;
    let s = r.status.clone().unwrap();
    assert_eq!(s.status, Some(RestoreState::Completed), "{s:?}");
    assert_eq!(s.percentage_completion, Some(100));
    assert!(s.completion_timestamp.is_some() && s.duration.is_some());
    assert_eq!(
        condition(&r, RestorePhase::RestoreCleanup).0,
        Some(RestorePhaseStatus::Completed)
    );
    assert_eq!(
        condition(&r, RestorePhase::Unquiesce).0,
        Some(RestorePhaseStatus::Skipped)
    );
    assert_eq!(
        condition(&r, RestorePhase::AddProtection).0,
        Some(RestorePhaseStatus::Skipped)
    );
    assert!(
        w.jobs(&uid).await.is_empty(),
        "the restore's Jobs are deleted"
    );
    // The plan written by the metaprocessor survives the controller's status writes.
    assert!(
        s.restore_application.unwrap()["volumes"]
            .as_array()
            .unwrap()
            .len()
            == 2
    );
    // The restored claims stay.
    assert!(
        w.server
            .get("v1", "PersistentVolumeClaim", Some(DEST), "data")
            .is_some()
    );

    // Terminal: nothing changes, nothing is written.
    let mark = w.server.mark();
    w.reconcile("rst").await;
    w.reconcile("rst").await;
    assert_eq!(w.server.writes_since(mark), 0);
}

fn object_claim(job: &Job) -> String {
    job.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find_map(|v| {
            v.persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.clone())
        })
        .unwrap()
}

#[tokio::test]
async fn unusable_sources_fail_validation_with_the_reason_and_start_nothing() {
    let w = world(4).await;
    w.server.create(json!({"apiVersion": V1, "kind": "Backup", "metadata": {"name": "running", "namespace": NS},
        "spec": {"type": "Full", "backupPlan": {"name": "plan"}}, "status": {"status": "InProgress"}})).unwrap();
    w.server.create(json!({"apiVersion": V1, "kind": "Target", "metadata": {"name": "down", "namespace": NS},
        "spec": {"type": "ObjectStore", "vendor": "AWS", "objectStoreCredentials": {"bucketName": "b", "credentialSecret": {"name": "c"}}},
        "status": {"status": "Unavailable", "condition": [{"phase": "Validation", "status": "Failed", "reason": "AuthenticationFailed: refused"}]}})).unwrap();
    let cases = [
        (
            "missing",
            json!({"type": "Backup", "backup": {"name": "nope", "namespace": NS}}),
            "Backup trilio-system/nope does not exist",
        ),
        (
            "inprogress",
            json!({"type": "Backup", "backup": {"name": "running", "namespace": NS}}),
            "is not Available (status InProgress)",
        ),
        (
            "snapshot",
            json!({"type": "Snapshot", "snapshot": {"name": "s"}}),
            "source type Snapshot is not supported by this version",
        ),
        (
            "badloc",
            json!({"type": "Location", "target": {"name": "s3", "namespace": NS}, "location": "../etc"}),
            "is not a backup location",
        ),
        (
            "noloc",
            json!({"type": "Location", "target": {"name": "s3", "namespace": NS}}),
            "spec.source.location is not set",
        ),
        (
            "down",
            json!({"type": "Location", "target": {"name": "down", "namespace": NS}, "location": LOCATION}),
            "AuthenticationFailed: refused",
        ),
        (
            "notarget",
            json!({"type": "Location", "target": {"name": "gone", "namespace": NS}, "location": LOCATION}),
            "Target trilio-system/gone does not exist",
        ),
    ];
    for (name, source, expected) in cases {
        w.server
            .create(restore_obj(name, source, json!({})))
            .unwrap();
        let r = w.reconcile(name).await;
        assert_eq!(
            state(&r),
            (Some(RestoreState::Failed), Some(RestorePhase::Validation)),
            "{name}"
        );
        let (st, reason) = condition(&r, RestorePhase::Validation);
        assert_eq!(st, Some(RestorePhaseStatus::Failed));
        assert!(reason.contains(expected), "{name}: {reason}");
        assert!(w.jobs(&r.uid().unwrap()).await.is_empty(), "{name}: no Job");
    }
}

#[tokio::test]
async fn a_location_source_validates_with_the_target_and_location() {
    let w = world(4).await;
    w.server.create(restore_obj("loc", json!({"type": "Location", "target": {"name": "s3", "namespace": NS}, "location": "p-1/b-2"}), json!({}))).unwrap();
    let r = w.reconcile("loc").await;
    let jobs = w.jobs(&r.uid().unwrap()).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        common::arg_after(&jobs[0], "--location").as_deref(),
        Some("p-1/b-2")
    );
    assert_eq!(
        common::arg_after(&jobs[0], "--target").as_deref(),
        Some("s3://bucket")
    );
    // A location is not known to be encrypted: no --require-sealed.
    assert!(!common::job_args(&jobs[0]).contains(&"--require-sealed".to_string()));
}

#[tokio::test]
async fn a_blocking_plan_fails_validation_with_every_problem_and_writes_nothing() {
    let w = world(4).await;
    w.server
        .create(restore_obj("rst", backup_source(), json!({})))
        .unwrap();
    let mut p = plan(vec![volume("data", "Filesystem", "1Gi")]);
    p["blocking"] = json!([
        "ConfigMap dest/settings already exists; set restoreFlags.skipIfAlreadyExists or patchIfAlreadyExists, or delete it",
        "StorageClass fast does not exist; create it or map it with restoreStorageClass"
    ]);
    let r = validated(&w, "rst", p).await;
    let reason = failed_in(&r, RestorePhase::Validation);
    assert!(
        reason.contains("2 problem(s)")
            && reason.contains("dest/settings")
            && reason.contains("StorageClass fast"),
        "{reason}"
    );
    assert!(
        w.server
            .list("v1", "PersistentVolumeClaim", Some(DEST))
            .is_empty()
    );
    assert!(
        w.server
            .list("v1", "PersistentVolumeClaim", Some(NS))
            .is_empty()
    );
    assert!(
        w.jobs(&r.uid().unwrap()).await.is_empty(),
        "Jobs deleted on failure"
    );
}

#[tokio::test]
async fn a_failed_validation_job_or_a_missing_plan_fails_validation() {
    let w = world(4).await;
    w.server
        .create(restore_obj("jobfail", backup_source(), json!({})))
        .unwrap();
    let r = w.reconcile("jobfail").await;
    let job = w.jobs(&r.uid().unwrap()).await.remove(0);
    w.finish_job(
        &job.name_any(),
        false,
        "exit code 1: no _metadata/commit.json at plan-uid/bkp-uid",
    )
    .await;
    let r = w.reconcile("jobfail").await;
    assert_eq!(
        state(&r),
        (Some(RestoreState::Failed), Some(RestorePhase::Validation))
    );
    assert!(
        condition(&r, RestorePhase::Validation)
            .1
            .contains("commit.json")
    );

    w.server
        .create(restore_obj("noplan", backup_source(), json!({})))
        .unwrap();
    let r = w.reconcile("noplan").await;
    let job = w.jobs(&r.uid().unwrap()).await.remove(0);
    w.finish_job(&job.name_any(), true, "").await;
    let r = w.reconcile("noplan").await;
    assert_eq!(state(&r).0, Some(RestoreState::Failed));
    assert!(
        condition(&r, RestorePhase::Validation)
            .1
            .contains("wrote no status.restoreApplication")
    );
}

#[tokio::test]
async fn only_metadata_skips_data_restore() {
    let w = world(4).await;
    w.server
        .create(restore_obj(
            "meta",
            backup_source(),
            json!({"restoreFlags": {"onlyMetadata": true}}),
        ))
        .unwrap();
    let r = validated(&w, "meta", plan(vec![volume("data", "Filesystem", "1Gi")])).await;
    assert_eq!(
        state(&r),
        (
            Some(RestoreState::InProgress),
            Some(RestorePhase::MetadataRestore)
        )
    );
    let (st, reason) = condition(&r, RestorePhase::DataRestore);
    assert_eq!(st, Some(RestorePhaseStatus::Skipped));
    assert!(reason.contains("onlyMetadata"));
    w.reconcile("meta").await;
    assert!(
        w.server
            .list("v1", "PersistentVolumeClaim", Some(NS))
            .is_empty(),
        "no staging claim"
    );
}

#[tokio::test]
async fn a_failed_data_job_with_cleanup_on_failure_deletes_only_what_the_restore_made() {
    let w = world(4).await;
    // A claim of someone else in the destination: never touched.
    w.server.create(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "other", "namespace": DEST},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})).unwrap();
    w.server
        .create(restore_obj(
            "rst",
            backup_source(),
            json!({"actionFlags": {"cleanupOnFailure": true}}),
        ))
        .unwrap();
    let r = validated(
        &w,
        "rst",
        plan(vec![
            volume("data", "Filesystem", "1Gi"),
            volume("raw", "Block", "1Gi"),
        ]),
    )
    .await;
    let uid = r.uid().unwrap();
    w.reconcile("rst").await;
    let data_jobs: Vec<Job> = w
        .jobs(&uid)
        .await
        .into_iter()
        .filter(|j| j.name_any().starts_with("tvk-datarestore-"))
        .collect();
    assert_eq!(data_jobs.len(), 2, "both volumes in parallel (max 4)");
    let (ok, bad) = if common::arg_after(&data_jobs[0], "--volume").as_deref() == Some("uid-data") {
        (&data_jobs[0], &data_jobs[1])
    } else {
        (&data_jobs[1], &data_jobs[0])
    };
    w.bind_staging(&object_claim(ok), "pv-ok");
    w.finish_job(&ok.name_any(), true, "").await;
    w.bind_staging(&object_claim(bad), "pv-bad");
    w.finish_job(
        &bad.name_any(),
        false,
        "exit code 1: digest mismatch in uid-raw at offset 65536",
    )
    .await;
    let r = w.reconcile("rst").await;
    let reason = failed_in(&r, RestorePhase::DataRestore);
    assert!(
        reason.contains("volume dest/raw") && reason.contains("digest mismatch"),
        "{reason}"
    );
    assert_eq!(
        condition(&r, RestorePhase::RestoreCleanup).0,
        Some(RestorePhaseStatus::Completed)
    );
    // The restored claim of the good volume and its volume are gone, the other claim stays.
    assert!(
        w.server
            .get("v1", "PersistentVolumeClaim", Some(DEST), "data")
            .is_none()
    );
    assert!(
        w.server
            .get("v1", "PersistentVolumeClaim", Some(DEST), "other")
            .is_some()
    );
    assert!(
        w.server
            .list("v1", "PersistentVolume", None)
            .iter()
            .all(|p| p["metadata"]["name"] == "pv-bad"
                || !p["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("tvk-rst-pv-"))
    );
    // Staging claims and Jobs are gone.
    assert!(
        w.server
            .list("v1", "PersistentVolumeClaim", Some(NS))
            .is_empty()
    );
    assert!(w.jobs(&uid).await.is_empty());
    let mark = w.server.mark();
    w.reconcile("rst").await;
    assert_eq!(w.server.writes_since(mark), 0, "terminal");
}

#[tokio::test]
async fn a_failed_metadata_restore_names_the_object_and_cleanup_spares_unlabelled_objects() {
    let w = world(4).await;
    w.server
        .create(restore_obj(
            "rst",
            backup_source(),
            json!({"actionFlags": {"cleanupOnFailure": true}}),
        ))
        .unwrap();
    let r = validated(&w, "rst", plan(vec![])).await;
    let uid = r.uid().unwrap();
    assert_eq!(
        condition(&r, RestorePhase::DataRestore).0,
        Some(RestorePhaseStatus::Skipped)
    );
    w.reconcile("rst").await;
    // What the metaprocessor did: created one ConfigMap (labelled), and a pre-existing
    // ConfigMap of the same name as one it lists is not labelled.
    w.server.create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "made", "namespace": DEST,
        "labels": {"triliovault.trilio.io/restore-uid": uid}}})).unwrap();
    w.server.create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": DEST}, "data": {"mine": "yes"}})).unwrap();
    let mut p = plan(vec![]);
    p["objects"] = json!([
        {"apiVersion": "v1", "kind": "ConfigMap", "namespace": DEST, "name": "made", "action": "Create", "result": "Created"},
        {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": DEST, "name": "web", "action": "Create", "result": "Failed",
         "error": "admission webhook denied the request: image must come from registry.example.com"}]);
    p["created"] = json!([
        {"apiVersion": "v1", "kind": "ConfigMap", "namespace": DEST, "name": "made"},
        {"apiVersion": "v1", "kind": "ConfigMap", "namespace": DEST, "name": "settings"}]);
    w.write_plan("rst", p).await;
    let meta = w
        .jobs(&uid)
        .await
        .into_iter()
        .find(|j| j.name_any().starts_with("tvk-metadatarestore-"))
        .unwrap();
    w.finish_job(&meta.name_any(), false, "exit code 1").await;
    let r = w.reconcile("rst").await;
    assert_eq!(
        state(&r),
        (
            Some(RestoreState::Failed),
            Some(RestorePhase::MetadataRestore)
        )
    );
    let (_, reason) = condition(&r, RestorePhase::MetadataRestore);
    assert!(
        reason.contains("Deployment dest/web: admission webhook denied"),
        "{reason}"
    );
    let (_, cleanup) = condition(&r, RestorePhase::RestoreCleanup);
    assert!(
        cleanup.contains("1 object(s)") && cleanup.contains("ConfigMap dest/settings"),
        "{cleanup}"
    );
    assert!(
        w.server
            .get("v1", "ConfigMap", Some(DEST), "made")
            .is_none()
    );
    let kept = w
        .server
        .get("v1", "ConfigMap", Some(DEST), "settings")
        .unwrap();
    assert_eq!(kept["data"]["mine"], "yes");
}

#[tokio::test]
async fn without_cleanup_on_failure_restored_claims_stay() {
    let w = world(4).await;
    w.server
        .create(restore_obj("rst", backup_source(), json!({})))
        .unwrap();
    let r = validated(&w, "rst", plan(vec![volume("data", "Filesystem", "1Gi")])).await;
    let uid = r.uid().unwrap();
    w.reconcile("rst").await;
    let job = w
        .jobs(&uid)
        .await
        .into_iter()
        .find(|j| j.name_any().starts_with("tvk-datarestore-"))
        .unwrap();
    w.bind_staging(&object_claim(&job), "pv-1");
    w.finish_job(&job.name_any(), true, "").await;
    w.reconcile("rst").await;
    let meta = w
        .jobs(&uid)
        .await
        .into_iter()
        .find(|j| j.name_any().starts_with("tvk-metadatarestore-"));
    let meta = match meta {
        Some(m) => m,
        None => {
            w.reconcile("rst").await;
            w.jobs(&uid)
                .await
                .into_iter()
                .find(|j| j.name_any().starts_with("tvk-metadatarestore-"))
                .unwrap()
        }
    };
    w.finish_job(&meta.name_any(), false, "exit code 1").await;
    let r = w.reconcile("rst").await;
    assert_eq!(state(&r).0, Some(RestoreState::Failed));
    assert!(
        w.server
            .get("v1", "PersistentVolumeClaim", Some(DEST), "data")
            .is_some()
    );
    assert!(w.jobs(&uid).await.is_empty());
}

#[tokio::test]
async fn a_restarted_controller_adopts_its_jobs() {
    let w = world(4).await;
    w.server
        .create(restore_obj("rst", backup_source(), json!({})))
        .unwrap();
    let r = w.reconcile("rst").await;
    let uid = r.uid().unwrap();
    let name = w.jobs(&uid).await[0].name_any();
    // A new controller (fresh context) after a restart: same Job, nothing duplicated.
    let mut ctx = Context::new(w.server.client(), common::config("Cluster"), None);
    ctx.backup_poll = Duration::from_millis(100);
    let r = w.restores().get("rst").await.unwrap();
    restore_controller::reconcile(&r, &ctx).await.unwrap();
    let jobs = w.jobs(&uid).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].name_any(), name);
    // A Job whose creation answered 409 (made by the previous leader) is adopted, not an error.
    let stale = w.restores().get("rst").await.unwrap();
    Api::<Job>::namespaced(w.ctx.client.clone(), NS)
        .delete(&name, &Default::default())
        .await
        .unwrap();
    restore_controller::reconcile(&stale, &ctx).await.unwrap();
    restore_controller::reconcile(&stale, &w.ctx).await.unwrap();
    assert_eq!(w.jobs(&uid).await.len(), 1);
}

#[tokio::test]
async fn a_cluster_restore_of_a_cluster_backup_completes() {
    let w = world(4).await;
    w.server
        .create(
            json!({"apiVersion": V1, "kind": "ClusterBackupPlan", "metadata": {"name": "cplan"},
        "spec": {"backupConfig": {"target": {"name": "s3", "namespace": NS}}}}),
        )
        .unwrap();
    w.server
        .create(
            json!({"apiVersion": V1, "kind": "ClusterBackup", "metadata": {"name": "cbkp"},
        "spec": {"type": "Full", "clusterBackupPlan": {"name": "cplan"}},
        "status": {"status": "Available", "location": "cplan-uid/cbkp-uid"}}),
        )
        .unwrap();
    w.server
        .create(
            json!({"apiVersion": V1, "kind": "ClusterRestore", "metadata": {"name": "crst"},
        "spec": {"source": {"type": "ClusterBackup", "clusterBackup": {"name": "cbkp"}},
                 "components": [{"backupNamespace": "app", "restoreNamespace": DEST}]}}),
        )
        .unwrap();
    let api: Api<ClusterRestore> = Api::all(w.ctx.client.clone());
    let step = || async {
        let r = api.get("crst").await.unwrap();
        restore_controller::reconcile(&r, &w.ctx).await.unwrap();
        api.get("crst").await.unwrap()
    };
    let r = step().await;
    let uid = r.uid().unwrap();
    let jobs = w.jobs(&uid).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        &common::job_args(&jobs[0])[..7],
        &[
            "restore-plan",
            "--kind",
            "ClusterRestore",
            "--name",
            "crst",
            "--location",
            "cplan-uid/cbkp-uid"
        ]
        .map(String::from)
    );
    assert_eq!(
        jobs[0]
            .annotations()
            .get("triliovault.trilio.io/restore-ref")
            .map(String::as_str),
        Some("crst")
    );
    assert_eq!(
        jobs[0].owner_references()[0].uid,
        uid,
        "owned by the ClusterRestore"
    );
    let mut p = plan(vec![]);
    p["source"]["kind"] = json!("ClusterBackup");
    api.patch_status(
        "crst",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"restoreApplication": p, "createdNamespaces": [DEST]}})),
    )
    .await
    .unwrap();
    w.finish_job(&jobs[0].name_any(), true, "").await;
    let r = step().await;
    assert_eq!(
        r.status.as_ref().unwrap().phase,
        Some(RestorePhase::MetadataRestore)
    );
    let r = step().await;
    let meta = w
        .jobs(&uid)
        .await
        .into_iter()
        .find(|j| j.name_any().starts_with("tvk-metadatarestore-"))
        .unwrap();
    assert!(!common::job_args(&meta).contains(&"--namespace".to_string()));
    assert_eq!(
        r.status.as_ref().unwrap().status,
        Some(RestoreState::InProgress)
    );
    w.finish_job(&meta.name_any(), true, "").await;
    let r = step().await;
    let s = r.status.unwrap();
    assert_eq!(s.status, Some(RestoreState::Completed));
    assert_eq!(
        s.created_namespaces,
        Some(vec![DEST.to_string()]),
        "the metaprocessor's field survives"
    );
}

#[tokio::test]
async fn data_restore_job_and_claim_golden() {
    let w = world(4).await;
    w.server
        .create(restore_obj("rst", backup_source(), json!({})))
        .unwrap();
    let r = validated(&w, "rst", plan(vec![volume("data", "Filesystem", "1Gi")])).await;
    let uid = r.uid().unwrap();
    w.reconcile("rst").await;
    let mut job = w
        .jobs(&uid)
        .await
        .into_iter()
        .find(|j| j.name_any().starts_with("tvk-datarestore-"))
        .unwrap();
    let claim_name = object_claim(&job);
    let job_name = job.name_any();
    job.metadata.resource_version = None;
    job.metadata.creation_timestamp = None;
    job.metadata.uid = None;
    job.metadata.generation = None;
    job.metadata.managed_fields = None;
    job.status = None;
    let mut claim: k8s_openapi::api::core::v1::PersistentVolumeClaim = serde_json::from_value(
        w.server
            .get("v1", "PersistentVolumeClaim", Some(NS), &claim_name)
            .unwrap(),
    )
    .unwrap();
    claim.metadata.resource_version = None;
    claim.metadata.creation_timestamp = None;
    claim.metadata.uid = None;
    claim.metadata.generation = None;
    claim.metadata.managed_fields = None;
    claim.status = None;
    let text = format!(
        "{}---\n{}",
        tvk_api::yaml::to_string(&job).unwrap(),
        tvk_api::yaml::to_string(&claim).unwrap()
    )
    .replace(&uid, "RESTORE-UID")
    .replace(&job_name, "tvk-datarestore-HASH")
    .replace(&claim_name, "tvk-rst-HASH");
    let key = claim
        .labels()
        .get("triliovault.trilio.io/restore-volume")
        .unwrap()
        .clone();
    let text = text.replace(&key, "VOLUME-KEY");
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/restore-data-job.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_default();
    pretty_assertions::assert_eq!(golden, text, "run with UPDATE_GOLDEN=1 to accept");
}

/// Puts an object on moto (unsigned; moto does not check signatures).
fn put_object(addr: std::net::SocketAddr, bucket: &str, key: &str, body: &str) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "PUT /{bucket}/{key} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "put failed: {resp}");
}

#[tokio::test]
async fn a_location_without_a_commit_object_is_refused_before_any_job() {
    let moto = tvk_testkit::moto().unwrap();
    let bucket = tvk_testkit::unique_name("rst");
    tvk_testkit::create_bucket(moto.addr(), &bucket).unwrap();
    put_object(moto.addr(), &bucket, "p-1/b-ok/_metadata/commit.json", "{}");
    put_object(
        moto.addr(),
        &bucket,
        "p-1/b-half/_metadata/index.json",
        "{}",
    );
    let w = world(4).await;
    w.server.create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "moto-creds", "namespace": NS},
        "stringData": {"accessKey": tvk_testkit::S3_ACCESS_KEY, "secretKey": tvk_testkit::S3_SECRET_KEY}})).unwrap();
    w.server.create(json!({"apiVersion": V1, "kind": "Target", "metadata": {"name": "moto", "namespace": NS},
        "spec": {"type": "ObjectStore", "vendor": "MinIO", "objectStoreCredentials": {"bucketName": bucket, "url": moto.url(),
            "region": tvk_testkit::S3_REGION, "credentialSecret": {"name": "moto-creds"}}},
        "status": {"status": "Available"}})).unwrap();
    let source = |loc: &str| json!({"type": "Location", "target": {"name": "moto", "namespace": NS}, "location": loc});
    w.server
        .create(restore_obj("half", source("p-1/b-half"), json!({})))
        .unwrap();
    let r = w.reconcile("half").await;
    let reason = failed_in(&r, RestorePhase::Validation);
    assert!(
        reason.contains("p-1/b-half/_metadata/commit.json does not exist"),
        "{reason}"
    );
    assert!(w.jobs(&r.uid().unwrap()).await.is_empty());

    w.server
        .create(restore_obj("ok", source("p-1/b-ok"), json!({})))
        .unwrap();
    let r = w.reconcile("ok").await;
    assert_eq!(
        state(&r),
        (
            Some(RestoreState::InProgress),
            Some(RestorePhase::Validation)
        )
    );
    assert_eq!(w.jobs(&r.uid().unwrap()).await.len(), 1);
}

/// A restore into a namespace that does not exist yet (a ClusterRestore's mapping): the
/// DataRestore phase creates it, labelled, before the final claims need it, and a failed
/// restore with cleanupOnFailure deletes it again — and only it.
#[tokio::test]
async fn a_missing_destination_namespace_is_created_for_the_volumes_and_removed_on_failure() {
    let w = world(4).await;
    w.server
        .create(restore_obj(
            "rst",
            backup_source(),
            json!({"actionFlags": {"cleanupOnFailure": true}}),
        ))
        .unwrap();
    let mut vol = volume("data", "Block", "1Gi");
    vol["namespace"] = json!("fresh");
    let mut claim: Value = serde_json::from_str(vol["pvcMetadata"].as_str().unwrap()).unwrap();
    claim["metadata"]["namespace"] = json!("fresh");
    vol["pvcMetadata"] = json!(claim.to_string());
    let mut plan_value = plan(vec![vol]);
    plan_value["namespaces"] =
        json!([{"name": DEST, "exists": true}, {"name": "fresh", "exists": false}]);
    let r = validated(&w, "rst", plan_value).await;
    let uid = r.uid().unwrap();
    assert_eq!(
        state(&r),
        (
            Some(RestoreState::InProgress),
            Some(RestorePhase::DataRestore)
        )
    );
    w.reconcile("rst").await;
    let ns = w
        .server
        .get("v1", "Namespace", None, "fresh")
        .expect("the destination namespace is created before its claims");
    assert_eq!(
        ns["metadata"]["labels"]["triliovault.trilio.io/restore-uid"],
        json!(uid)
    );
    let data_jobs: Vec<Job> = w
        .jobs(&uid)
        .await
        .into_iter()
        .filter(|j| j.name_any().starts_with("tvk-datarestore-"))
        .collect();
    assert_eq!(data_jobs.len(), 1);
    w.bind_staging(&object_claim(&data_jobs[0]), "pv-data");
    w.finish_job(
        &data_jobs[0].name_any(),
        false,
        "exit code 1: target unreachable",
    )
    .await;
    let r = w.reconcile("rst").await;
    assert_eq!(
        state(&r),
        (Some(RestoreState::Failed), Some(RestorePhase::DataRestore))
    );
    let (_, reason) = condition(&r, RestorePhase::RestoreCleanup);
    assert!(reason.contains("1 namespace(s)"), "{reason}");
    let gone = w
        .server
        .get("v1", "Namespace", None, "fresh")
        .is_none_or(|ns| !ns["metadata"]["deletionTimestamp"].is_null());
    assert!(gone, "the namespace this restore created is deleted");
    assert!(
        w.server.get("v1", "Namespace", None, DEST).is_some(),
        "an existing namespace is never deleted"
    );
}

/// A failed pod of Job `job` (labelled as the Job controller does) whose container exited
/// `code` leaving `message` (the tool's JSON lines) as its termination message.
async fn failed_pod(w: &World, job: &str, code: i32, message: &str) {
    let name = format!("{job}-pod");
    w.server
        .create(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS,
                "labels": {"batch.kubernetes.io/job-name": job, "job-name": job}},
            "spec": {"containers": [{"name": "c", "image": "x"}]}}))
        .unwrap();
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(w.ctx.client.clone(), NS)
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed", "containerStatuses": [{"name": "c", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "message": message}}}]}})),
        )
        .await
        .unwrap();
}

fn registry() -> Value {
    json!({"registry": "127.0.0.1:5002", "repository": "restored",
        "registryAuthSecret": {"name": "push-creds"}, "skipTLSVerify": true})
}

#[tokio::test]
async fn image_restore_without_a_complete_registry_fails_validation_naming_the_field() {
    let w = world(4).await;
    let cases = [
        (
            "noregistry",
            json!({"actionFlags": {"imageRestore": true}}),
            "spec.imageRegistry is not",
        ),
        (
            "norepo",
            json!({"actionFlags": {"imageRestore": true},
                "imageRegistry": {"registry": "r.example:5000", "repository": "", "registryAuthSecret": {"name": "s"}}}),
            "spec.imageRegistry.repository is empty",
        ),
        (
            "nosecret",
            json!({"actionFlags": {"imageRestore": true},
                "imageRegistry": {"registry": "", "repository": "x", "registryAuthSecret": {}}}),
            "spec.imageRegistry.registry and spec.imageRegistry.registryAuthSecret.name are empty",
        ),
    ];
    for (name, extra, expected) in cases {
        w.server
            .create(restore_obj(name, backup_source(), extra))
            .unwrap();
        let r = w.reconcile(name).await;
        assert_eq!(
            state(&r),
            (Some(RestoreState::Failed), Some(RestorePhase::Validation)),
            "{name}"
        );
        let (_, reason) = condition(&r, RestorePhase::Validation);
        assert!(reason.contains(expected), "{name}: {reason}");
        assert!(w.jobs(&r.uid().unwrap()).await.is_empty(), "{name}: no Job");
    }
    // Without imageRestore a missing registry is fine, and ImageRestore is skipped.
    w.server
        .create(restore_obj("plain", backup_source(), json!({})))
        .unwrap();
    let r = validated(&w, "plain", plan(vec![])).await;
    assert_eq!(state(&r).1, Some(RestorePhase::MetadataRestore));
    let (st, reason) = condition(&r, RestorePhase::ImageRestore);
    assert_eq!(st, Some(RestorePhaseStatus::Skipped));
    assert!(
        reason.contains("actionFlags.imageRestore is not set"),
        "{reason}"
    );
}

#[tokio::test]
async fn image_restore_runs_its_job_after_data_restore_and_before_metadata_restore() {
    let w = world(4).await;
    w.server
        .create(restore_obj(
            "img",
            backup_source(),
            json!({"actionFlags": {"imageRestore": true}, "imageRegistry": registry()}),
        ))
        .unwrap();
    let r = validated(&w, "img", plan(vec![volume("data", "Filesystem", "1Gi")])).await;
    let uid = r.uid().unwrap();
    // Volumes first: DataRestore runs, no image Job yet.
    assert_eq!(state(&r).1, Some(RestorePhase::DataRestore));
    w.reconcile("img").await;
    let data: Vec<Job> = w
        .jobs(&uid)
        .await
        .into_iter()
        .filter(|j| j.name_any().starts_with("tvk-datarestore-"))
        .collect();
    assert_eq!(data.len(), 1);
    assert!(
        w.jobs(&uid)
            .await
            .iter()
            .all(|j| !j.name_any().starts_with("tvk-imagerestore-"))
    );
    w.bind_staging(&object_claim(&data[0]), "pv-img");
    w.finish_job(&data[0].name_any(), true, "").await;
    let r = w.reconcile("img").await;
    assert_eq!(
        condition(&r, RestorePhase::DataRestore).0,
        Some(RestorePhaseStatus::Completed)
    );
    assert_eq!(
        state(&r),
        (
            Some(RestoreState::InProgress),
            Some(RestorePhase::ImageRestore)
        )
    );
    assert!(
        condition(&r, RestorePhase::ImageRestore)
            .1
            .contains("127.0.0.1:5002/restored"),
    );
    // One metaprocessor Job running `images restore`, however often we reconcile.
    w.reconcile("img").await;
    w.reconcile("img").await;
    let images: Vec<Job> = w
        .jobs(&uid)
        .await
        .into_iter()
        .filter(|j| j.name_any().starts_with("tvk-imagerestore-"))
        .collect();
    assert_eq!(images.len(), 1, "one Job per step");
    let job = &images[0];
    assert_eq!(
        &common::job_args(job)[..11],
        &[
            "images",
            "restore",
            "--kind",
            "Restore",
            "--namespace",
            DEST,
            "--name",
            "img",
            "--location",
            LOCATION,
            "--target"
        ]
        .map(String::from)
    );
    assert_eq!(
        common::arg_after(job, "--target").as_deref(),
        Some("s3://bucket")
    );
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("tvk-metamover"));
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("ghcr.io/tvk-rs/tvk-metamover:0.1.0")
    );
    assert_eq!(
        job.labels()
            .get("triliovault.trilio.io/restore-uid")
            .map(String::as_str),
        Some(uid.as_str())
    );
    // No metadata Job before the images are done.
    assert!(
        w.jobs(&uid)
            .await
            .iter()
            .all(|j| !j.name_any().starts_with("tvk-metadatarestore-"))
    );
    // The metaprocessor's part: status.images.
    w.restores()
        .patch_status(
            "img",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"images": [
                {"image": "docker.io/library/nginx:1.25", "digest": "sha256:aa", "result": "Reachable"},
                {"image": "gone.example/app/web:v1", "digest": "sha256:bb",
                 "restoredImage": "127.0.0.1:5002/restored/web:v1", "result": "Pushed"}]}})),
        )
        .await
        .unwrap();
    w.finish_job(&job.name_any(), true, "").await;
    let r = w.reconcile("img").await;
    let (st, reason) = condition(&r, RestorePhase::ImageRestore);
    assert_eq!(st, Some(RestorePhaseStatus::Completed));
    assert!(
        reason.contains("2 image(s)")
            && reason.contains("1 Pushed")
            && reason.contains("1 Reachable")
            && reason.contains("gone.example/app/web:v1 -> 127.0.0.1:5002/restored/web:v1"),
        "{reason}"
    );
    assert_eq!(state(&r).1, Some(RestorePhase::MetadataRestore));
    // The controller's status writes keep the metaprocessor's images.
    assert_eq!(r.status.as_ref().unwrap().images.as_ref().unwrap().len(), 2);
    w.reconcile("img").await;
    let meta: Vec<Job> = w
        .jobs(&uid)
        .await
        .into_iter()
        .filter(|j| j.name_any().starts_with("tvk-metadatarestore-"))
        .collect();
    assert_eq!(meta.len(), 1);
    w.finish_job(&meta[0].name_any(), true, "").await;
    let r = w.reconcile("img").await;
    assert_eq!(state(&r).0, Some(RestoreState::Completed));
    assert_eq!(r.status.as_ref().unwrap().images.as_ref().unwrap().len(), 2);
}

#[tokio::test]
async fn a_failed_image_restore_job_fails_the_restore_with_the_tools_error() {
    let w = world(4).await;
    w.server
        .create(restore_obj(
            "img",
            backup_source(),
            json!({"actionFlags": {"imageRestore": true, "cleanupOnFailure": true}, "imageRegistry": registry()}),
        ))
        .unwrap();
    // No volumes: DataRestore is skipped, ImageRestore begins at once.
    let r = validated(&w, "img", plan(vec![])).await;
    let uid = r.uid().unwrap();
    assert_eq!(
        condition(&r, RestorePhase::DataRestore).0,
        Some(RestorePhaseStatus::Skipped)
    );
    assert_eq!(state(&r).1, Some(RestorePhase::ImageRestore));
    w.reconcile("img").await;
    let job = w
        .jobs(&uid)
        .await
        .into_iter()
        .find(|j| j.name_any().starts_with("tvk-imagerestore-"))
        .unwrap();
    failed_pod(
        &w,
        &job.name_any(),
        1,
        "{\"event\":\"result\",\"ok\":false,\"error\":\"image gone.example/app/web:v1: registry 127.0.0.1:5002 refused the credentials of Secret dest/push-creds\"}",
    )
    .await;
    w.finish_job(&job.name_any(), false, "BackoffLimitExceeded")
        .await;
    let r = w.reconcile("img").await;
    assert_eq!(
        state(&r),
        (Some(RestoreState::Failed), Some(RestorePhase::ImageRestore))
    );
    let (st, reason) = condition(&r, RestorePhase::ImageRestore);
    assert_eq!(st, Some(RestorePhaseStatus::Failed));
    assert!(
        reason.contains("gone.example/app/web:v1") && reason.contains("refused the credentials"),
        "{reason}"
    );
    assert!(w.jobs(&uid).await.is_empty(), "Jobs deleted");
    assert!(
        w.jobs(&uid)
            .await
            .iter()
            .all(|j| !j.name_any().starts_with("tvk-metadatarestore-")),
        "no metadata restore after a failed image restore"
    );
}

/// The restore's data Jobs, oldest first.
async fn data_jobs(w: &World, uid: &str) -> Vec<Job> {
    let mut jobs: Vec<Job> = w
        .jobs(uid)
        .await
        .into_iter()
        .filter(|j| j.name_any().starts_with("tvk-datarestore-"))
        .collect();
    jobs.sort_by_key(|j| j.metadata.creation_timestamp.clone().map(|t| t.0));
    jobs
}

#[tokio::test]
async fn a_data_job_that_exits_75_is_retried_under_a_new_name_and_its_retry_can_succeed() {
    let w = world(4).await;
    w.server
        .create(restore_obj("rst", backup_source(), json!({})))
        .unwrap();
    let r = validated(&w, "rst", plan(vec![volume("data", "Filesystem", "1Gi")])).await;
    let uid = r.uid().unwrap();
    w.reconcile("rst").await;
    let first = data_jobs(&w, &uid).await;
    assert_eq!(first.len(), 1);
    let claim = object_claim(&first[0]);
    failed_pod(
        &w,
        &first[0].name_any(),
        75,
        "{\"event\":\"result\",\"ok\":false,\"error\":\"S3 answered 503 SlowDown\",\"retryable\":true}",
    )
    .await;
    w.finish_job(&first[0].name_any(), false, "BackoffLimitExceeded")
        .await;
    let r = w.reconcile("rst").await;
    assert_eq!(state(&r).0, Some(RestoreState::InProgress));
    let (st, reason) = condition(&r, RestorePhase::DataRestore);
    assert_eq!(st, Some(RestorePhaseStatus::InProgress));
    assert!(
        reason.contains("volume dest/data: attempt 2 of 4") && reason.contains("503 SlowDown"),
        "{reason}"
    );
    let jobs = data_jobs(&w, &uid).await;
    assert_eq!(jobs.len(), 2, "the failed Job stays until cleanup");
    let second = jobs
        .iter()
        .find(|j| j.name_any() != first[0].name_any())
        .unwrap();
    assert_eq!(object_claim(second), claim, "the same staging claim");
    assert_eq!(
        common::arg_after(second, "--volume").as_deref(),
        Some("uid-data")
    );
    // Reconciling again adopts the retry, no third Job.
    w.reconcile("rst").await;
    assert_eq!(data_jobs(&w, &uid).await.len(), 2);
    w.bind_staging(&claim, "pv-data");
    w.finish_job(&second.name_any(), true, "").await;
    let r = w.reconcile("rst").await;
    assert_eq!(
        condition(&r, RestorePhase::DataRestore).0,
        Some(RestorePhaseStatus::Completed)
    );
    assert!(
        w.server
            .get("v1", "PersistentVolumeClaim", Some(DEST), "data")
            .is_some()
    );
}

#[tokio::test]
async fn a_data_job_failing_75_four_times_or_1_once_fails_the_restore() {
    let w = world(4).await;
    w.server
        .create(restore_obj("rst", backup_source(), json!({})))
        .unwrap();
    let r = validated(&w, "rst", plan(vec![volume("data", "Filesystem", "1Gi")])).await;
    let uid = r.uid().unwrap();
    w.reconcile("rst").await;
    for attempt in 0..4 {
        let jobs = data_jobs(&w, &uid).await;
        assert_eq!(jobs.len(), attempt + 1, "attempt {attempt}");
        let current = jobs
            .iter()
            .find(|j| {
                j.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_none()
            })
            .unwrap();
        failed_pod(
            &w,
            &current.name_any(),
            75,
            &format!("{{\"event\":\"result\",\"ok\":false,\"error\":\"timeout {attempt}\"}}"),
        )
        .await;
        w.finish_job(&current.name_any(), false, "BackoffLimitExceeded")
            .await;
        let r = w.reconcile("rst").await;
        if attempt < 3 {
            assert_eq!(state(&r).0, Some(RestoreState::InProgress));
        } else {
            assert_eq!(
                state(&r),
                (Some(RestoreState::Failed), Some(RestorePhase::DataRestore))
            );
            let reason = condition(&r, RestorePhase::DataRestore).1;
            assert!(
                reason.contains("volume dest/data")
                    && reason.contains("after 3 retries")
                    && reason.contains("timeout 3"),
                "{reason}"
            );
        }
    }
    assert!(w.jobs(&uid).await.is_empty(), "Jobs deleted");

    // A permanent failure (exit 1) is not retried.
    w.server
        .create(restore_obj("perm", backup_source(), json!({})))
        .unwrap();
    let r = validated(&w, "perm", plan(vec![volume("data", "Filesystem", "1Gi")])).await;
    let uid = r.uid().unwrap();
    w.reconcile("perm").await;
    let job = data_jobs(&w, &uid).await.remove(0);
    failed_pod(
        &w,
        &job.name_any(),
        1,
        "{\"event\":\"result\",\"ok\":false,\"error\":\"digest mismatch at offset 4096\"}",
    )
    .await;
    w.finish_job(&job.name_any(), false, "BackoffLimitExceeded")
        .await;
    let r = w.reconcile("perm").await;
    assert_eq!(state(&r).0, Some(RestoreState::Failed));
    let reason = condition(&r, RestorePhase::DataRestore).1;
    assert!(
        reason.contains("digest mismatch at offset 4096") && !reason.contains("retr"),
        "{reason}"
    );
}

fn app_pod(w: &World, name: &str, labels: Value, phase: &str) {
    w.server
        .create(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": DEST, "labels": labels},
            "spec": {"containers": [{"name": "main", "image": "busybox"}, {"name": "sidecar", "image": "busybox"}]},
            "status": {"phase": phase}}))
        .unwrap();
}

fn post_hook(w: &World, name: &str, command: &[&str]) {
    w.server
        .create(json!({"apiVersion": V1, "kind": "Hook",
            "metadata": {"name": name, "namespace": DEST},
            "spec": {"post": {"execAction": {"command": command}, "timeoutSeconds": 10}}}))
        .unwrap();
}

/// Validation (no volumes) and MetadataRestore done: the restore is at its post hooks.
async fn to_post_hooks(w: &World, name: &str) -> String {
    let r = validated(w, name, plan(vec![])).await;
    let uid = r.uid().unwrap();
    w.reconcile(name).await;
    let meta = w
        .jobs(&uid)
        .await
        .into_iter()
        .find(|j| j.name_any().starts_with("tvk-metadatarestore-"))
        .unwrap();
    w.finish_job(&meta.name_any(), true, "").await;
    uid
}

#[tokio::test]
async fn post_restore_hooks_wait_for_the_restored_pods_then_run_in_plan_order() {
    let w = world(4).await;
    post_hook(&w, "reindex", &["reindex", "--all"]);
    post_hook(&w, "warm", &["warm-cache"]);
    w.server.on_exec(|_req: &tvk_test_apiserver::ExecRequest| {
        tvk_test_apiserver::ExecResult::exited(0, "ok", "")
    });
    w.server
        .create(restore_obj(
            "hooked",
            backup_source(),
            json!({"hookConfig": {"mode": "Sequential", "podReadyWaitSeconds": 60, "hooks": [
                {"hook": {"name": "reindex"}, "podSelector": {"labels": [{"matchLabels": {"app": "db"}}]}, "containerRegex": "^main$"},
                {"hook": {"name": "warm"}, "podSelector": {"regex": "^web-"}}]}}),
        ))
        .unwrap();
    to_post_hooks(&w, "hooked").await;
    let r = w.reconcile("hooked").await;
    assert_eq!(
        condition(&r, RestorePhase::MetadataRestore).0,
        Some(RestorePhaseStatus::Completed)
    );
    assert_eq!(
        state(&r),
        (
            Some(RestoreState::InProgress),
            Some(RestorePhase::HookTargetIdentification)
        )
    );
    assert!(
        condition(&r, RestorePhase::HookTargetIdentification)
            .1
            .contains("up to 60s"),
    );
    // No pod yet, then one Running and one still Pending: the hooks wait.
    let r = w.reconcile("hooked").await;
    assert_eq!(state(&r).1, Some(RestorePhase::HookTargetIdentification));
    app_pod(&w, "db-0", json!({"app": "db"}), "Running");
    app_pod(&w, "web-0", json!({"app": "web"}), "Pending");
    let r = w.reconcile("hooked").await;
    assert_eq!(state(&r).1, Some(RestorePhase::HookTargetIdentification));
    assert!(w.server.execs().is_empty(), "nothing runs while pods start");
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(w.ctx.client.clone(), DEST)
        .patch_status(
            "web-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    let r = w.reconcile("hooked").await;
    let (st, reason) = condition(&r, RestorePhase::HookTargetIdentification);
    assert_eq!(st, Some(RestorePhaseStatus::Completed));
    assert!(
        reason.contains("2 post-restore hook(s) apply to 2 pod(s)"),
        "{reason}"
    );
    assert_eq!(state(&r).1, Some(RestorePhase::Unquiesce));
    let r = w.reconcile("hooked").await;
    let s = r.status.clone().unwrap();
    assert_eq!(s.status, Some(RestoreState::Completed), "{s:?}");
    let (st, reason) = condition(&r, RestorePhase::Unquiesce);
    assert_eq!(st, Some(RestorePhaseStatus::Completed));
    assert!(reason.contains("3 step(s)"), "{reason}");
    // Plan order: reindex in db-0's main container, then warm in both of web-0's.
    let ran: Vec<(String, String, String)> = w
        .server
        .execs()
        .iter()
        .map(|e| {
            (
                e.request.pod.clone(),
                e.request.container.clone(),
                e.request.command[0].clone(),
            )
        })
        .collect();
    assert_eq!(
        ran,
        [
            ("db-0", "main", "reindex"),
            ("web-0", "main", "warm-cache"),
            ("web-0", "sidecar", "warm-cache")
        ]
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    );
}

#[tokio::test]
async fn a_failed_post_restore_hook_fails_the_restore_naming_hook_pod_and_container() {
    let w = world(4).await;
    post_hook(&w, "reindex", &["reindex"]);
    app_pod(&w, "db-0", json!({"app": "db"}), "Running");
    w.server.on_exec(|req: &tvk_test_apiserver::ExecRequest| {
        if req.container == "sidecar" {
            tvk_test_apiserver::ExecResult::exited(3, "", "index locked")
        } else {
            tvk_test_apiserver::ExecResult::exited(0, "", "")
        }
    });
    w.server
        .create(restore_obj(
            "hooked",
            backup_source(),
            json!({"actionFlags": {"cleanupOnFailure": true},
                "hookConfig": {"hooks": [{"hook": {"name": "reindex"}, "podSelector": {"regex": "^db-"}}]}}),
        ))
        .unwrap();
    let uid = to_post_hooks(&w, "hooked").await;
    w.reconcile("hooked").await;
    let r = w.reconcile("hooked").await;
    assert_eq!(state(&r).1, Some(RestorePhase::Unquiesce));
    let r = w.reconcile("hooked").await;
    let reason = failed_in(&r, RestorePhase::Unquiesce);
    assert!(
        reason.contains("Restore dest/hooked")
            && reason.contains("reindex")
            && reason.contains("db-0")
            && reason.contains("sidecar")
            && reason.contains("index locked"),
        "{reason}"
    );
    assert!(w.jobs(&uid).await.is_empty());

    // A Hook that does not exist fails HookTargetIdentification naming the field.
    w.server
        .create(restore_obj(
            "nohook",
            backup_source(),
            json!({"hookConfig": {"hooks": [{"hook": {"name": "missing"}, "podSelector": {"regex": "^db-"}}]}}),
        ))
        .unwrap();
    to_post_hooks(&w, "nohook").await;
    w.reconcile("nohook").await;
    let r = w.reconcile("nohook").await;
    assert_eq!(
        state(&r),
        (
            Some(RestoreState::Failed),
            Some(RestorePhase::HookTargetIdentification)
        )
    );
    let (_, reason) = condition(&r, RestorePhase::HookTargetIdentification);
    assert!(
        reason.contains("missing") && reason.contains("hookConfig.hooks[0]"),
        "{reason}"
    );
}

#[tokio::test]
async fn when_the_pod_wait_is_over_hooks_run_where_pods_run_and_the_rest_is_a_warning() {
    let w = world(4).await;
    post_hook(&w, "reindex", &["reindex"]);
    w.server.on_exec(|_req: &tvk_test_apiserver::ExecRequest| {
        tvk_test_apiserver::ExecResult::exited(0, "", "")
    });
    app_pod(&w, "db-0", json!({"app": "db"}), "Running");
    w.server
        .create(restore_obj(
            "hooked",
            backup_source(),
            json!({"hookConfig": {"podReadyWaitSeconds": 1, "hooks": [
                {"hook": {"name": "reindex"}, "podSelector": {"regex": "^db-"}, "containerRegex": "^main$"},
                {"hook": {"name": "reindex"}, "podSelector": {"regex": "^never-"}}]}}),
        ))
        .unwrap();
    to_post_hooks(&w, "hooked").await;
    w.reconcile("hooked").await;
    let r = w.reconcile("hooked").await;
    assert_eq!(state(&r).1, Some(RestorePhase::HookTargetIdentification));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = w.reconcile("hooked").await;
    let (st, reason) = condition(&r, RestorePhase::HookTargetIdentification);
    assert_eq!(st, Some(RestorePhaseStatus::Completed));
    assert!(reason.contains("1 warning(s)"), "{reason}");
    let r = w.reconcile("hooked").await;
    assert_eq!(state(&r).0, Some(RestoreState::Completed));
    assert_eq!(w.server.execs().len(), 1);
}

fn env_of(job: &Job) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
    job.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .env
        .clone()
        .unwrap_or_default()
}

#[tokio::test]
async fn spec_env_reaches_the_restore_jobs_without_replacing_the_control_planes_variables() {
    let w = world(4).await;
    w.server
        .create(restore_obj(
            "env",
            backup_source(),
            json!({"env": [{"name": "RUST_LOG", "value": "debug"},
                           {"name": "AWS_ACCESS_KEY_ID", "value": "hijack"}]}),
        ))
        .unwrap();
    let r = w.reconcile("env").await;
    let uid = r.uid().unwrap();
    let validation = w.jobs(&uid).await.remove(0);
    let env = env_of(&validation);
    assert!(
        env.iter()
            .any(|e| e.name == "RUST_LOG" && e.value.as_deref() == Some("debug")),
        "{env:?}"
    );
    let keys: Vec<_> = env
        .iter()
        .filter(|e| e.name == "AWS_ACCESS_KEY_ID")
        .collect();
    assert_eq!(keys.len(), 1, "{env:?}");
    assert!(
        keys[0].value.is_none() && keys[0].value_from.is_some(),
        "the Target's credentials stay: {env:?}"
    );
    // The data Jobs get it too.
    w.write_plan("env", plan(vec![volume("data", "Filesystem", "1Gi")]))
        .await;
    w.finish_job(&validation.name_any(), true, "").await;
    w.reconcile("env").await;
    w.reconcile("env").await;
    let data = data_jobs(&w, &uid).await;
    assert!(
        env_of(&data[0])
            .iter()
            .any(|e| e.name == "RUST_LOG" && e.value.as_deref() == Some("debug"))
    );

    // A variable read from a Secret of the Restore's namespace cannot reach a Job elsewhere.
    w.server
        .create(restore_obj(
            "secretenv",
            backup_source(),
            json!({"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "t"}}}]}),
        ))
        .unwrap();
    let r = w.reconcile("secretenv").await;
    let reason = failed_in(&r, RestorePhase::Validation);
    assert!(
        reason.contains("spec.env[0] TOKEN reads Secret tok")
            && reason.contains("namespace trilio-system"),
        "{reason}"
    );
    assert!(w.jobs(&r.uid().unwrap()).await.is_empty());
}

#[tokio::test]
async fn a_second_restore_into_the_same_namespace_waits_pending_until_the_first_finishes() {
    let w = world(4).await;
    w.server
        .create(restore_obj("first", backup_source(), json!({})))
        .unwrap();
    let first = w.reconcile("first").await;
    assert_eq!(state(&first).0, Some(RestoreState::InProgress));
    w.server
        .create(restore_obj("second", backup_source(), json!({})))
        .unwrap();
    let second = w.reconcile("second").await;
    assert_eq!(
        state(&second),
        (Some(RestoreState::Pending), Some(RestorePhase::Validation))
    );
    let (st, reason) = condition(&second, RestorePhase::Validation);
    assert_eq!(st, Some(RestorePhaseStatus::InProgress));
    assert!(reason.contains("Restore dest/first"), "{reason}");
    assert!(w.jobs(&second.uid().unwrap()).await.is_empty());
    // Waiting writes nothing more.
    let mark = w.server.mark();
    w.reconcile("second").await;
    assert_eq!(w.server.writes_since(mark), 0);
    // A third one waits for both (the older Pending one goes first).
    w.server
        .create(restore_obj("third", backup_source(), json!({})))
        .unwrap();
    let third = w.reconcile("third").await;
    assert_eq!(state(&third).0, Some(RestoreState::Pending));
    // The first ends (its Validation Job fails); the second starts, the third still waits.
    let job = w.jobs(&first.uid().unwrap()).await.remove(0);
    w.finish_job(&job.name_any(), false, "no commit").await;
    assert_eq!(
        state(&w.reconcile("first").await).0,
        Some(RestoreState::Failed)
    );
    let third = w.reconcile("third").await;
    assert_eq!(state(&third).0, Some(RestoreState::Pending));
    assert!(
        condition(&third, RestorePhase::Validation)
            .1
            .contains("Restore dest/second")
    );
    let second = w.reconcile("second").await;
    assert_eq!(state(&second).0, Some(RestoreState::InProgress));
    assert_eq!(w.jobs(&second.uid().unwrap()).await.len(), 1);
    assert!(second.status.unwrap().start_timestamp.is_some());
}

/// A ClusterBackup `cbkp` whose snapshot has a volume in namespace `app`, and a reconcile of
/// ClusterRestore `name` (created with `spec` when it does not exist).
async fn cluster_restore(w: &World, name: &str, spec: Option<Value>) -> ClusterRestore {
    if w.server.get(V1, "ClusterBackup", None, "cbkp").is_none() {
        w.server
            .create(
                json!({"apiVersion": V1, "kind": "ClusterBackupPlan", "metadata": {"name": "cplan"},
                "spec": {"backupConfig": {"target": {"name": "s3", "namespace": NS}}}}),
            )
            .unwrap();
        w.server
            .create(
                json!({"apiVersion": V1, "kind": "ClusterBackup", "metadata": {"name": "cbkp"},
                "spec": {"type": "Full", "clusterBackupPlan": {"name": "cplan"}},
                "status": {"status": "Available", "location": "cplan-uid/cbkp-uid",
                    "snapshot": {"custom": {"dataSnapshots": [
                        {"persistentVolumeClaimName": "data", "namespace": "app"}]}}}}),
            )
            .unwrap();
    }
    if let Some(spec) = spec {
        let mut spec = spec;
        spec["source"] = json!({"type": "ClusterBackup", "clusterBackup": {"name": "cbkp"}});
        w.server
            .create(json!({"apiVersion": V1, "kind": "ClusterRestore", "metadata": {"name": name}, "spec": spec}))
            .unwrap();
    }
    let api: Api<ClusterRestore> = Api::all(w.ctx.client.clone());
    let r = api.get(name).await.unwrap();
    Box::pin(restore_controller::reconcile(&r, &w.ctx))
        .await
        .unwrap();
    api.get(name).await.unwrap()
}

fn cluster_state(r: &ClusterRestore) -> (Option<RestoreState>, String) {
    let s = r.status.clone().unwrap_or_default();
    let reason = s
        .condition
        .iter()
        .flatten()
        .find(|c| c.phase == Some(RestorePhase::Validation))
        .and_then(|c| c.reason.clone())
        .unwrap_or_default();
    (s.status, reason)
}

#[tokio::test]
async fn cluster_restores_and_restores_wait_for_each_other_in_shared_namespaces() {
    let w = world(4).await;
    w.server
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "app"}}))
        .unwrap();
    // A Restore runs in dest; a ClusterRestore mapping app → dest waits for it.
    w.server
        .create(restore_obj("first", backup_source(), json!({})))
        .unwrap();
    assert_eq!(
        state(&w.reconcile("first").await).0,
        Some(RestoreState::InProgress)
    );
    let c1 = cluster_restore(
        &w,
        "c1",
        Some(json!({"components": [{"backupNamespace": "app", "restoreNamespace": DEST}]})),
    )
    .await;
    let (st, reason) = cluster_state(&c1);
    assert_eq!(st, Some(RestoreState::Pending), "{reason}");
    assert!(
        reason.contains("Restore dest/first is restoring into namespace dest"),
        "{reason}"
    );
    assert!(
        w.jobs(&c1.uid().unwrap()).await.is_empty(),
        "nothing started"
    );
    // One into other namespaces does not wait.
    let c2 = cluster_restore(
        &w,
        "c2",
        Some(json!({"components": [{"backupNamespace": "app", "restoreNamespace": "elsewhere"}]})),
    )
    .await;
    assert_eq!(
        cluster_state(&c2).0,
        Some(RestoreState::InProgress),
        "{}",
        cluster_state(&c2).1
    );
    // A newer Restore into dest waits for both the running one and the older ClusterRestore.
    w.server
        .create(restore_obj("second", backup_source(), json!({})))
        .unwrap();
    assert_eq!(
        state(&w.reconcile("second").await).0,
        Some(RestoreState::Pending)
    );
    // The first ends: the older ClusterRestore goes next, the Restore still waits — for it.
    let job = w.jobs(&first_uid(&w).await).await.remove(0);
    w.finish_job(&job.name_any(), false, "no commit").await;
    assert_eq!(
        state(&w.reconcile("first").await).0,
        Some(RestoreState::Failed)
    );
    let second = w.reconcile("second").await;
    assert_eq!(state(&second).0, Some(RestoreState::Pending));
    assert!(
        condition(&second, RestorePhase::Validation)
            .1
            .contains("ClusterRestore c1 is restoring into namespace dest"),
        "{:?}",
        condition(&second, RestorePhase::Validation)
    );
    let c1 = cluster_restore(&w, "c1", None).await;
    assert_eq!(
        cluster_state(&c1).0,
        Some(RestoreState::InProgress),
        "{}",
        cluster_state(&c1).1
    );
    assert_eq!(w.jobs(&c1.uid().unwrap()).await.len(), 1);
    // Unmapped namespaces of the ClusterBackup restore into themselves: a ClusterRestore
    // without components waits for a Restore running in `app` (the backup's volume is there).
    w.server
        .create(json!({"apiVersion": V1, "kind": "Restore", "metadata": {"name": "inapp", "namespace": "app"},
            "spec": {"source": backup_source()}}))
        .unwrap();
    let inapp: Api<Restore> = Api::namespaced(w.ctx.client.clone(), "app");
    let r = inapp.get("inapp").await.unwrap();
    Box::pin(restore_controller::reconcile(&r, &w.ctx))
        .await
        .unwrap();
    let c3 = cluster_restore(&w, "c3", Some(json!({}))).await;
    let (st, reason) = cluster_state(&c3);
    assert_eq!(st, Some(RestoreState::Pending), "{reason}");
    assert!(reason.contains("Restore app/inapp"), "{reason}");
    // Excluding that namespace, it has nothing to wait for.
    let c4 = cluster_restore(&w, "c4", Some(json!({"excludeComponents": ["app"]}))).await;
    assert_ne!(
        cluster_state(&c4).0,
        Some(RestoreState::Pending),
        "{}",
        cluster_state(&c4).1
    );
}

async fn first_uid(w: &World) -> String {
    w.restores().get("first").await.unwrap().uid().unwrap()
}

#[tokio::test]
async fn protect_restored_app_copies_the_source_plan_into_the_destination() {
    let w = world(4).await;
    w.server.create(json!({"apiVersion": V1, "kind": "BackupPlan", "metadata": {"name": "shop-plan", "namespace": NS},
        "spec": {"backupConfig": {"target": {"name": "s3"}, "retentionPolicy": {"name": "keep"},
            "schedulePolicy": {"fullBackupPolicy": {"name": "nightly", "namespace": "policies"}}},
            "hookConfig": {"hooks": [{"hook": {"name": "freeze"}, "podSelector": {"regex": "^db-"}}]}},
        "status": {"status": "Available"}})).unwrap();
    w.server
        .create(
            json!({"apiVersion": V1, "kind": "Backup", "metadata": {"name": "shop-bkp", "namespace": NS},
        "spec": {"type": "Full", "backupPlan": {"name": "shop-plan"}},
        "status": {"status": "Available", "location": LOCATION}}),
        )
        .unwrap();
    w.server
        .create(restore_obj(
            "prot",
            json!({"type": "Backup", "backup": {"name": "shop-bkp", "namespace": NS}}),
            json!({"actionFlags": {"protectRestoredApp": true}}),
        ))
        .unwrap();
    let uid = to_post_hooks(&w, "prot").await;
    let r = w.reconcile("prot").await;
    assert_eq!(
        state(&r),
        (
            Some(RestoreState::InProgress),
            Some(RestorePhase::AddProtection)
        )
    );
    let r = w.reconcile("prot").await;
    assert_eq!(state(&r).0, Some(RestoreState::Completed));
    let (st, reason) = condition(&r, RestorePhase::AddProtection);
    assert_eq!(st, Some(RestorePhaseStatus::Completed));
    assert!(
        reason.contains("BackupPlan dest/shop-plan")
            && reason.contains("trilio-system/shop-plan")
            && reason.contains("Target trilio-system/s3"),
        "{reason}"
    );
    let plan = w
        .server
        .get(V1, "BackupPlan", Some(DEST), "shop-plan")
        .unwrap();
    let c = &plan["spec"]["backupConfig"];
    assert_eq!(c["target"], json!({"name": "s3", "namespace": NS}));
    assert_eq!(
        c["retentionPolicy"],
        json!({"name": "keep", "namespace": NS})
    );
    assert_eq!(
        c["schedulePolicy"]["fullBackupPolicy"],
        json!({"name": "nightly", "namespace": "policies"})
    );
    assert_eq!(
        plan["spec"]["hookConfig"]["hooks"][0]["hook"],
        json!({"name": "freeze", "namespace": NS})
    );
    assert_eq!(
        plan["metadata"]["labels"]["triliovault.trilio.io/restore-uid"],
        uid.as_str()
    );
    assert_eq!(
        plan["metadata"]["annotations"]["triliovault.trilio.io/copied-from-backupplan"],
        "trilio-system/shop-plan"
    );
    assert!(plan.get("status").is_none_or(Value::is_null));

    // A plan of that name already there is left alone.
    w.server.create(json!({"apiVersion": V1, "kind": "BackupPlan", "metadata": {"name": "plan", "namespace": DEST},
        "spec": {"backupConfig": {"target": {"name": "elsewhere"}}}})).unwrap();
    w.server
        .create(restore_obj(
            "prot2",
            backup_source(),
            json!({"actionFlags": {"protectRestoredApp": true}}),
        ))
        .unwrap();
    to_post_hooks(&w, "prot2").await;
    w.reconcile("prot2").await;
    let r = w.reconcile("prot2").await;
    assert_eq!(state(&r).0, Some(RestoreState::Completed));
    assert!(
        condition(&r, RestorePhase::AddProtection)
            .1
            .contains("already exists (not created by this restore)")
    );
    let kept = w.server.get(V1, "BackupPlan", Some(DEST), "plan").unwrap();
    assert_eq!(kept["spec"]["backupConfig"]["target"]["name"], "elsewhere");
}

#[tokio::test]
async fn protect_restored_app_without_a_source_plan_fails_validation() {
    let w = world(4).await;
    w.server
        .create(restore_obj(
            "loc",
            json!({"type": "Location", "target": {"name": "s3", "namespace": NS}, "location": LOCATION}),
            json!({"actionFlags": {"protectRestoredApp": true}}),
        ))
        .unwrap();
    let r = w.reconcile("loc").await;
    assert_eq!(
        state(&r),
        (Some(RestoreState::Failed), Some(RestorePhase::Validation))
    );
    assert!(
        condition(&r, RestorePhase::Validation)
            .1
            .contains("actionFlags.protectRestoredApp")
    );
    assert!(w.jobs(&r.uid().unwrap()).await.is_empty());
}

#[tokio::test]
async fn a_running_restore_jobs_progress_lines_move_the_percentage_forward_only() {
    let w = world(4).await;
    w.server
        .create(restore_obj("prog", backup_source(), json!({})))
        .unwrap();
    let r = validated(
        &w,
        "prog",
        plan(vec![
            volume("data", "Filesystem", "1Gi"),
            volume("raw", "Block", "3Gi"),
        ]),
    )
    .await;
    assert_eq!(state(&r).1, Some(RestorePhase::DataRestore));
    let uid = r.uid().unwrap();
    w.reconcile("prog").await;
    let job_of = |jobs: &[Job], volume: &str| {
        jobs.iter()
            .find(|j| common::arg_after(j, "--volume").as_deref() == Some(volume))
            .unwrap()
            .name_any()
    };
    let jobs = w.jobs(&uid).await;
    let (data_job, raw_job) = (job_of(&jobs, "uid-data"), job_of(&jobs, "uid-raw"));
    let logs = w.server.temp_dir().join("restore-progress");
    let (data_log, raw_log) = (logs.join("data"), logs.join("raw"));
    for (job, dir) in [(&data_job, &data_log), (&raw_job, &raw_log)] {
        std::fs::create_dir_all(dir).unwrap();
        common::running_pod_with_log(&w.ctx.client, NS, job, dir).await;
    }
    let pct = |r: &Restore| r.status.as_ref().unwrap().percentage_completion.unwrap();
    // Logs are read at most once per poll interval (100 ms here).
    let after_poll = || tokio::time::sleep(Duration::from_millis(150));
    common::log_progress(&data_log, 50, 100);
    after_poll().await;
    let r = w.reconcile("prog").await;
    assert_eq!(pct(&r), 10, "80 × (½ GiB of 4 GiB)");
    common::log_progress(&raw_log, 1, 3);
    after_poll().await;
    assert_eq!(pct(&w.reconcile("prog").await), 30, "80 × (½ + 1 of 4 GiB)");
    // A lower report never moves it back.
    common::log_progress(&data_log, 0, 100);
    common::log_progress(&raw_log, 0, 3);
    after_poll().await;
    let r = w.reconcile("prog").await;
    assert_eq!(pct(&r), 30);
    assert_eq!(state(&r).1, Some(RestorePhase::DataRestore));
}

#[tokio::test]
async fn an_encrypted_backups_restore_jobs_get_the_key_and_require_sealed_metadata() {
    let w = world(4).await;
    w.server
        .apply(json!({"apiVersion": V1, "kind": "BackupPlan", "metadata": {"name": "plan", "namespace": NS},
            "spec": {"backupConfig": {"target": {"name": "s3"}},
                "encryption": {"encryptionSecret": {"name": "key"}}}}))
        .unwrap();
    w.server
        .create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "key", "namespace": NS},
            "type": "Opaque", "data": {"encryptionKey": "a2V5"}}))
        .unwrap();
    Api::<tvk_api::Backup>::namespaced(w.ctx.client.clone(), NS)
        .patch_status(
            "bkp",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"encryptionEnabled": true}})),
        )
        .await
        .unwrap();
    w.server
        .create(restore_obj("enc", backup_source(), json!({})))
        .unwrap();
    let r = w.reconcile("enc").await;
    w.reconcile("enc").await;
    let jobs = w.jobs(&r.uid().unwrap()).await;
    assert_eq!(jobs.len(), 1, "{:?}", r.status);
    let args = common::job_args(&jobs[0]);
    assert_eq!(args[0], "restore-plan");
    assert!(
        args.contains(&"--encryption-key-file=/etc/tvk/encryption/encryptionKey".to_string()),
        "{args:?}"
    );
    assert!(args.contains(&"--require-sealed".to_string()), "{args:?}");
}

/// A plan with one volume of class `fast` that `restoreStorageClass` creates.
fn plan_creating_class() -> Value {
    let mut p = plan(vec![volume("data", "Filesystem", "1Gi")]);
    p["objects"].as_array_mut().unwrap().insert(
        0,
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "name": "fast",
            "action": "Create"}),
    );
    p
}

fn create_class_restore(w: &World, name: &str) {
    w.server
        .create(restore_obj(
            name,
            backup_source(),
            json!({"restoreFlags": {"restoreStorageClass": true}}),
        ))
        .unwrap();
}

#[tokio::test]
async fn planned_storage_classes_are_created_by_a_metaprocessor_job_before_any_data_job() {
    let w = world(4).await;
    create_class_restore(&w, "sc");
    let p = plan_creating_class();
    let r = validated(&w, "sc", p).await;
    let uid = r.uid().unwrap();
    assert_eq!(state(&r).1, Some(RestorePhase::DataRestore));
    let by_prefix = |jobs: Vec<Job>, prefix: &str| -> Vec<Job> {
        jobs.into_iter()
            .filter(|j| j.name_any().starts_with(prefix))
            .collect()
    };
    // The class Job first; no data Job while it runs, however often we reconcile.
    w.reconcile("sc").await;
    w.reconcile("sc").await;
    let (class_jobs, data_jobs): (Vec<Job>, Vec<Job>) =
        by_prefix(w.jobs(&uid).await, "tvk-datarestore-")
            .into_iter()
            .partition(|j| {
                common::job_args(j).first().map(String::as_str) == Some("restore-storage-classes")
            });
    assert_eq!(class_jobs.len(), 1, "one restore-storage-classes Job");
    assert!(data_jobs.is_empty(), "no data Job before the classes exist");
    assert_eq!(
        common::arg_after(&class_jobs[0], "--name").as_deref(),
        Some("sc"),
        "the metaprocessor gets the restore"
    );
    w.finish_job(&class_jobs[0].name_any(), true, "").await;
    w.reconcile("sc").await;
    let data: Vec<Job> = by_prefix(w.jobs(&uid).await, "tvk-datarestore-")
        .into_iter()
        .filter(|j| j.name_any() != class_jobs[0].name_any())
        .collect();
    assert_eq!(data.len(), 1, "the data Job follows the class Job");

    // A failed class Job fails the restore naming it (a new world: one restore per namespace
    // at a time).
    let w = world(4).await;
    create_class_restore(&w, "sc2");
    let p = plan_creating_class();
    let r = validated(&w, "sc2", p).await;
    let uid = r.uid().unwrap();
    w.reconcile("sc2").await;
    let job = by_prefix(w.jobs(&uid).await, "tvk-datarestore-").remove(0);
    w.finish_job(&job.name_any(), false, "forbidden: storageclasses")
        .await;
    let r = w.reconcile("sc2").await;
    assert_eq!(
        state(&r),
        (Some(RestoreState::Failed), Some(RestorePhase::DataRestore))
    );
    assert!(
        condition(&r, RestorePhase::DataRestore)
            .1
            .contains(&job.name_any()),
        "{}",
        condition(&r, RestorePhase::DataRestore).1
    );
}
