#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `cleanupConfig` (in-place restore) in the Restore phase machine against tvk-test-apiserver
//! (its garbage collector honours finalizers and foreground deletion): after the plan, exactly
//! the existing objects and claims the restore recreates are deleted — objects not in the
//! backup, excluded ones and the Namespace survive —, the restore waits for them to be gone
//! (a finalizer holds it), then DataRestore replaces the claim with the restored one; a
//! finalizer that outlasts `gracefulDeletionTimeoutSeconds` fails Validation naming the object.
//! The test plays the metaprocessor (writes the plan), the kubelet and the volume binder.

mod common;

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::{apps::v1::Deployment, batch::v1::Job};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use tvk_api::restore::{Restore, RestorePhase, RestorePhaseStatus, RestoreState};
use tvk_control_plane::{context::Context, restore_controller};
use tvk_test_apiserver::ApiServer;

const NS: &str = common::NS;
const DEST: &str = "dest";
const V1: &str = "triliovault.trilio.io/v1";
const LOCATION: &str = "plan-uid/bkp-uid";
const UID_LABEL: &str = "triliovault.trilio.io/restore-uid";

struct World {
    server: ApiServer,
    ctx: Arc<Context>,
}

async fn world() -> World {
    let server = common::restore_server(&["plan"]).await;
    server
        .create(
            json!({"apiVersion": V1, "kind": "Backup", "metadata": {"name": "bkp", "namespace": NS},
        "spec": {"type": "Full", "backupPlan": {"name": "plan"}},
        "status": {"status": "Available", "location": LOCATION}}),
        )
        .unwrap();
    let recorder = tvk_control_plane::context::recorder(server.client());
    let ctx = common::restore_context(&server, Some(recorder));
    World {
        server,
        ctx: Arc::new(ctx),
    }
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
            .list(&ListParams::default().labels(&format!("{UID_LABEL}={uid}")))
            .await
            .unwrap()
            .items
    }

    async fn finish_job(&self, name: &str) {
        Api::<Job>::namespaced(self.ctx.client.clone(), NS)
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"conditions": [{"type": "Complete", "status": "True", "reason": "Completed", "message": ""}]}})),
            )
            .await
            .unwrap();
    }

    /// Creates the Restore, runs Validation to its Job and completes it with `plan`.
    async fn validated(&self, name: &str, spec_extra: Value, plan: Value) -> Restore {
        let mut spec =
            json!({"source": {"type": "Backup", "backup": {"name": "bkp", "namespace": NS}}});
        spec.as_object_mut()
            .unwrap()
            .extend(spec_extra.as_object().unwrap().clone());
        self.server
            .create(json!({"apiVersion": V1, "kind": "Restore",
                "metadata": {"name": name, "namespace": DEST}, "spec": spec}))
            .unwrap();
        let r = self.reconcile(name).await;
        let uid = r.uid().unwrap();
        let jobs = self.jobs(&uid).await;
        assert_eq!(jobs.len(), 1);
        self.restores()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"restoreApplication": plan}})),
            )
            .await
            .unwrap();
        self.finish_job(&jobs[0].name_any()).await;
        self.reconcile(name).await
    }

    fn exists(&self, api_version: &str, kind: &str, name: &str) -> bool {
        self.server
            .get(api_version, kind, Some(DEST), name)
            .is_some()
    }

    /// The application as it is now in the destination (drifted from the backup).
    fn existing_application(&self) {
        for (name, data) in [("settings", "drifted"), ("keep", "not in the backup")] {
            self.server
                .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": DEST}, "data": {"v": data}}))
                .unwrap();
        }
        self.server
            .create(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "excluded", "namespace": DEST}, "data": {}}))
            .unwrap();
        // A finalizer holds the Deployment until "its controller" lets go.
        self.server
            .create(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": DEST, "finalizers": ["example.com/hold"]},
                "spec": {"replicas": 5, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "web", "image": "nginx:drifted"}]}}}}))
            .unwrap();
        for name in ["data", "other"] {
            self.server
                .create(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": name, "namespace": DEST, "labels": {"generation": "old"}},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
                .unwrap();
        }
    }

    async fn release_deployment(&self) {
        Api::<Deployment>::namespaced(self.ctx.client.clone(), DEST)
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await
            .unwrap();
    }
}

const REPLACES: &str =
    "exists in the destination: deleted before the restore (cleanupConfig), then restored";

fn plan() -> Value {
    json!({"source": {"location": LOCATION, "backupName": "bkp", "backupNamespace": NS, "kind": "Backup"},
        "objects": [
            {"apiVersion": "v1", "kind": "Namespace", "name": DEST, "action": "Skip", "reason": "a Restore's own namespace"},
            {"apiVersion": "v1", "kind": "ConfigMap", "namespace": DEST, "name": "settings", "action": "Create", "reason": REPLACES},
            {"apiVersion": "v1", "kind": "Secret", "namespace": DEST, "name": "excluded", "action": "Exclude", "reason": "excludeResources"},
            {"apiVersion": "v1", "kind": "Service", "namespace": DEST, "name": "web", "action": "Create"},
            {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": DEST, "name": "web", "action": "Create", "reason": REPLACES}],
        "counts": {"create": 3, "skip": 1, "patch": 0, "exclude": 1},
        "volumes": [{"namespace": DEST, "pvcName": "data", "sourceNamespace": "app", "sourcePvcName": "data",
            "location": format!("{LOCATION}/uid-data"), "size": "1Gi", "volumeMode": "Filesystem",
            "accessModes": ["ReadWriteOnce"], "storageClassName": "fast",
            "pvcMetadata": json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data", "namespace": DEST, "labels": {"generation": "restored"}},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}).to_string()}],
        "warnings": ["PersistentVolumeClaim dest/data exists: deleted before the restore (cleanupConfig) and replaced by the backed-up claim and its data"],
        "namespaces": [{"name": DEST, "exists": true}]})
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

fn events_about(w: &World, name: &str) -> Vec<String> {
    w.server
        .list("events.k8s.io/v1", "Event", Some(DEST))
        .into_iter()
        .chain(w.server.list("v1", "Event", Some(DEST)))
        .filter(|e| e["regarding"]["name"] == name || e["involvedObject"]["name"] == name)
        .map(|e| {
            format!(
                "{} {}",
                e["reason"].as_str().unwrap_or_default(),
                e["note"]
                    .as_str()
                    .or(e["message"].as_str())
                    .unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test]
async fn cleanup_config_deletes_exactly_what_the_restore_recreates_waits_then_restores() {
    let w = world().await;
    w.existing_application();
    let r = w
        .validated(
            "rst",
            json!({"cleanupConfig": {"enabled": true, "gracefulDeletionTimeoutSeconds": 60}}),
            plan(),
        )
        .await;
    let uid = r.uid().unwrap();
    // Deleted: what the plan creates and exists. The Deployment is held by its finalizer.
    assert_eq!(
        state(&r),
        (
            Some(RestoreState::InProgress),
            Some(RestorePhase::Validation)
        )
    );
    let (st, reason) = condition(&r, RestorePhase::Validation);
    assert_eq!(st, Some(RestorePhaseStatus::InProgress));
    assert!(
        reason.starts_with("cleanupConfig: deleting the existing application")
            && reason.contains("Deployment dest/web")
            && reason.contains("ConfigMap dest/settings")
            && reason.contains("PersistentVolumeClaim dest/data")
            && reason.contains("60 s"),
        "{reason}"
    );
    assert!(!w.exists("v1", "ConfigMap", "settings"));
    assert!(!w.exists("v1", "PersistentVolumeClaim", "data"));
    let web = w
        .server
        .get("apps/v1", "Deployment", Some(DEST), "web")
        .unwrap();
    assert!(web["metadata"]["deletionTimestamp"].is_string());
    // Survivors: not in the backup, excluded by the restore, the namespace, another claim.
    assert!(w.exists("v1", "ConfigMap", "keep"));
    assert!(w.exists("v1", "Secret", "excluded"));
    assert!(w.exists("v1", "PersistentVolumeClaim", "other"));
    assert!(w.server.get("v1", "Namespace", None, DEST).is_some());
    let events = events_about(&w, "rst");
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("CleanupDeleted") && e.contains("ConfigMap dest/settings")),
        "{events:?}"
    );
    // Still held: the restore waits and writes nothing to the destination.
    let r = w.reconcile("rst").await;
    assert_eq!(
        condition(&r, RestorePhase::Validation).0,
        Some(RestorePhaseStatus::InProgress)
    );
    assert!(
        w.jobs(&uid)
            .await
            .iter()
            .all(|j| j.name_any().starts_with("tvk-validation-")),
        "no data Job yet"
    );

    // Let go: the Deployment is gone, Validation completes, DataRestore starts.
    w.release_deployment().await;
    assert!(!w.exists("apps/v1", "Deployment", "web"));
    let r = w.reconcile("rst").await;
    assert_eq!(
        state(&r),
        (
            Some(RestoreState::InProgress),
            Some(RestorePhase::DataRestore)
        )
    );
    let (st, reason) = condition(&r, RestorePhase::Validation);
    assert_eq!(st, Some(RestorePhaseStatus::Completed));
    assert!(
        reason.contains("cleanupConfig deleted the existing application first")
            && reason.contains("Deployment dest/web"),
        "{reason}"
    );

    // The restored claim replaces the old one.
    w.reconcile("rst").await;
    let job = w
        .jobs(&uid)
        .await
        .into_iter()
        .find(|j| j.name_any().starts_with("tvk-datarestore-"))
        .expect("data Job");
    let claim = job
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
    w.server
        .create(json!({"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": "pv-data", "annotations": {"pv.kubernetes.io/provisioned-by": "hostpath.csi.test"}},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
                     "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "fast",
                     "claimRef": {"namespace": NS, "name": claim},
                     "csi": {"driver": "hostpath.csi.test", "volumeHandle": "handle-data"}}}))
        .unwrap();
    w.server
        .apply(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": NS}, "spec": {"volumeName": "pv-data"}}))
        .unwrap();
    w.finish_job(&job.name_any()).await;
    w.reconcile("rst").await;
    let data = w
        .server
        .get("v1", "PersistentVolumeClaim", Some(DEST), "data")
        .expect("the restored claim");
    assert_eq!(data["metadata"]["labels"]["generation"], "restored");
    assert_eq!(data["metadata"]["labels"][UID_LABEL], uid.as_str());
    let other = w
        .server
        .get("v1", "PersistentVolumeClaim", Some(DEST), "other")
        .unwrap();
    assert_eq!(other["metadata"]["labels"]["generation"], "old");
}

#[tokio::test]
async fn a_finalizer_outlasting_the_timeout_fails_validation_naming_the_object() {
    let w = world().await;
    w.existing_application();
    let r = w
        .validated(
            "rst",
            json!({"cleanupConfig": {"enabled": true, "gracefulDeletionTimeoutSeconds": 60}}),
            plan(),
        )
        .await;
    assert_eq!(
        condition(&r, RestorePhase::Validation).0,
        Some(RestorePhaseStatus::InProgress)
    );
    // Two minutes later (the wait counts from the condition's timestamp).
    let mut conditions = r.status.as_ref().unwrap().condition.clone().unwrap();
    for c in &mut conditions {
        if c.phase == Some(RestorePhase::Validation) {
            let earlier = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(120);
            c.timestamp = Some(earlier.to_string());
        }
    }
    w.restores()
        .patch_status(
            "rst",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"condition": conditions}})),
        )
        .await
        .unwrap();
    let r = w.reconcile("rst").await;
    assert_eq!(
        state(&r),
        (Some(RestoreState::Failed), Some(RestorePhase::Validation))
    );
    let (_, reason) = condition(&r, RestorePhase::Validation);
    assert!(
        reason.contains("after 60 s these objects are still present: Deployment dest/web")
            && reason.contains("gracefulDeletionTimeoutSeconds"),
        "{reason}"
    );
    // What is still present names only the held object; what cleanupConfig deleted and the
    // failed restore did not bring back is named after it.
    let (present, deleted) = reason
        .split_once("; cleanupConfig deleted 3 existing object(s)")
        .unwrap_or_else(|| panic!("{reason}"));
    assert!(!present.contains("ConfigMap dest/settings"), "{reason}");
    assert!(deleted.contains("ConfigMap dest/settings"), "{reason}");
    // Nothing was restored; what was not the application's is still there.
    assert!(w.exists("v1", "ConfigMap", "keep"));
    assert!(!w.exists("v1", "PersistentVolumeClaim", "data"));
}

#[tokio::test]
async fn without_cleanup_config_nothing_is_deleted() {
    let w = world().await;
    w.existing_application();
    let r = w
        .validated("rst", json!({"cleanupConfig": {"enabled": false}}), plan())
        .await;
    assert_eq!(
        state(&r),
        (
            Some(RestoreState::InProgress),
            Some(RestorePhase::DataRestore)
        )
    );
    for (kind, name) in [
        ("ConfigMap", "settings"),
        ("PersistentVolumeClaim", "data"),
        ("ConfigMap", "keep"),
    ] {
        assert!(w.exists("v1", kind, name), "{kind} {name}");
    }
    let web = w
        .server
        .get("apps/v1", "Deployment", Some(DEST), "web")
        .unwrap();
    assert!(web["metadata"].get("deletionTimestamp").is_none());
}

#[tokio::test]
async fn a_cluster_restore_cleans_where_its_config_says_so_per_namespace() {
    let w = world().await;
    w.server
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kept"}}))
        .unwrap();
    for ns in [DEST, "kept"] {
        w.server
            .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "settings", "namespace": ns}, "data": {"v": "drifted"}}))
            .unwrap();
    }
    w.server
        .create(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "app-reader"}, "rules": []}),
        )
        .unwrap();
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
    // globalConfig turns it on; the component restored into `kept` turns it off.
    w.server
        .create(json!({"apiVersion": V1, "kind": "ClusterRestore", "metadata": {"name": "crst"},
            "spec": {"source": {"type": "ClusterBackup", "clusterBackup": {"name": "cbkp"}},
                "globalConfig": {"cleanupConfig": {"enabled": true, "gracefulDeletionTimeoutSeconds": 120}},
                "components": [
                    {"backupNamespace": "app", "restoreNamespace": DEST},
                    {"backupNamespace": "other", "restoreNamespace": "kept",
                     "restoreConfig": {"cleanupConfig": {"enabled": false}}}]}}))
        .unwrap();
    let api: Api<tvk_api::restore::ClusterRestore> = Api::all(w.ctx.client.clone());
    let step = || async {
        let r = api.get("crst").await.unwrap();
        Box::pin(restore_controller::reconcile(&r, &w.ctx))
            .await
            .unwrap();
        api.get("crst").await.unwrap()
    };
    let r = step().await;
    let uid = r.uid().unwrap();
    let jobs = w.jobs(&uid).await;
    assert_eq!(jobs.len(), 1);
    api.patch_status(
        "crst",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"restoreApplication": {
            "source": {"location": "cplan-uid/cbkp-uid", "backupName": "cbkp", "kind": "ClusterBackup"},
            "objects": [
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "name": "app-reader", "action": "Create", "reason": REPLACES},
                {"apiVersion": "v1", "kind": "ConfigMap", "namespace": DEST, "name": "settings", "action": "Create", "reason": REPLACES},
                {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "kept", "name": "settings", "action": "Create"}],
            "counts": {"create": 3, "skip": 0, "patch": 0, "exclude": 0},
            "namespaces": [{"name": DEST, "exists": true}, {"name": "kept", "exists": true}]}}})),
    )
    .await
    .unwrap();
    w.finish_job(&jobs[0].name_any()).await;
    // Foreground deletions finish in the API server's garbage collector: a pass or two.
    let mut r = step().await;
    for _ in 0..20 {
        if r.status.as_ref().unwrap().phase != Some(RestorePhase::Validation) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        r = step().await;
    }
    let s = r.status.as_ref().unwrap();
    assert_eq!(s.phase, Some(RestorePhase::MetadataRestore), "{s:?}");
    let reason = s
        .condition
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.phase == Some(RestorePhase::Validation))
        .and_then(|c| c.reason.clone())
        .unwrap();
    assert!(
        reason.contains("ConfigMap dest/settings") && reason.contains("ClusterRole app-reader"),
        "{reason}"
    );
    assert!(!w.exists("v1", "ConfigMap", "settings"));
    assert!(
        w.server
            .get(
                "rbac.authorization.k8s.io/v1",
                "ClusterRole",
                None,
                "app-reader"
            )
            .is_none(),
        "cluster-scoped objects follow globalConfig"
    );
    let kept = w
        .server
        .get("v1", "ConfigMap", Some("kept"), "settings")
        .unwrap();
    assert_eq!(kept["data"]["v"], "drifted", "cleanup is off for `kept`");
}

#[tokio::test]
async fn a_restore_failing_after_cleanup_config_names_the_deleted_objects_it_did_not_restore() {
    let w = world().await;
    w.existing_application();
    w.validated(
        "rst",
        json!({"cleanupConfig": {"enabled": true, "gracefulDeletionTimeoutSeconds": 60}}),
        plan(),
    )
    .await;
    w.release_deployment().await;
    let r = w.reconcile("rst").await;
    assert_eq!(state(&r).1, Some(RestorePhase::DataRestore));
    // What cleanupConfig deleted is recorded on the restore.
    let recorded = r
        .annotations()
        .get("triliovault.trilio.io/cleanup-deleted")
        .cloned()
        .unwrap_or_default();
    assert!(
        recorded.contains("settings") && recorded.contains("web"),
        "{recorded}"
    );
    // The data Job fails for good: the restore fails before restoring any object.
    w.reconcile("rst").await;
    let uid = r.uid().unwrap();
    let job = w
        .jobs(&uid)
        .await
        .into_iter()
        .find(|j| j.name_any().starts_with("tvk-datarestore-"))
        .expect("data Job");
    common::finish_job(
        &w.ctx.client,
        &job.name_any(),
        false,
        "the target refused the read",
    )
    .await;
    let r = w.reconcile("rst").await;
    assert_eq!(state(&r).0, Some(RestoreState::Failed), "{:?}", r.status);
    let (st, reason) = condition(&r, RestorePhase::DataRestore);
    assert_eq!(st, Some(RestorePhaseStatus::Failed));
    assert!(
        reason.contains("cleanupConfig deleted 3 existing object(s)")
            && reason.contains("ConfigMap dest/settings")
            && reason.contains("Deployment dest/web")
            && reason.contains("PersistentVolumeClaim dest/data")
            && reason.contains("restore again from the same backup"),
        "{reason}"
    );
    let events = events_about(&w, "rst");
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("CleanupObjectsNotRestored")
                && e.contains("ConfigMap dest/settings")),
        "{events:?}"
    );
    // Objects cleanupConfig never touched are not named.
    assert!(
        !reason.contains("dest/keep") && !reason.contains("dest/other"),
        "{reason}"
    );
}
