#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Restore source types against tvk-test-apiserver: `BackupPlan` restores the plan's latest
//! Available backup and keeps restoring that one once the plan is made (a newer backup completing
//! mid-restore changes nothing); a plan without an Available backup, a missing plan and the
//! source types this version has no resources for fail Validation naming what to use instead.

mod common;

use std::sync::Arc;

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

struct World {
    server: ApiServer,
    ctx: Arc<Context>,
}

fn backup(name: &str, status: &str, completed: &str) -> Value {
    json!({"apiVersion": V1, "kind": "Backup", "metadata": {"name": name, "namespace": NS},
        "spec": {"type": "Full", "backupPlan": {"name": "plan"}},
        "status": {"status": status, "location": format!("plan-uid/{name}-uid"),
            "completionTimestamp": completed}})
}

async fn world() -> World {
    let server = common::restore_server(&["plan", "empty"]).await;
    server
        .create(backup("old", "Available", "2026-01-01T00:00:00Z"))
        .unwrap();
    server
        .create(backup("latest", "Available", "2026-01-02T00:00:00Z"))
        .unwrap();
    server
        .create(backup("broken", "Failed", "2026-01-03T00:00:00Z"))
        .unwrap();
    let ctx = common::restore_context(&server, None);
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
            .list(
                &ListParams::default().labels(&format!("triliovault.trilio.io/restore-uid={uid}")),
            )
            .await
            .unwrap()
            .items
    }

    fn restore(&self, name: &str, source: Value) {
        self.server
            .create(json!({"apiVersion": V1, "kind": "Restore",
                "metadata": {"name": name, "namespace": DEST},
                "spec": {"source": source, "restoreFlags": {"onlyMetadata": true}}}))
            .unwrap();
    }
}

fn failed_validation(r: &Restore) -> String {
    let s = r.status.as_ref().unwrap();
    assert_eq!(
        (s.status, s.phase),
        (Some(RestoreState::Failed), Some(RestorePhase::Validation)),
        "{s:?}"
    );
    s.condition
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.phase == Some(RestorePhase::Validation))
        .and_then(|c| c.reason.clone())
        .unwrap()
}

#[tokio::test]
async fn a_backup_plan_source_restores_its_latest_available_backup_and_keeps_it() {
    let w = world().await;
    w.restore(
        "rst",
        json!({"type": "BackupPlan", "backupPlan": {"name": "plan", "namespace": NS}}),
    );
    let r = w.reconcile("rst").await;
    let uid = r.uid().unwrap();
    let jobs = w.jobs(&uid).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        common::arg_after(&jobs[0], "--location").as_deref(),
        Some("plan-uid/latest-uid"),
        "the latest Available backup, not the later Failed one"
    );
    // The metaprocessor's plan names the backup it read; a newer backup completes meanwhile.
    w.restores()
        .patch_status(
            "rst",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"restoreApplication": {
                "source": {"location": "plan-uid/latest-uid", "backupName": "latest", "backupNamespace": NS, "kind": "Backup"},
                "objects": [], "counts": {"create": 0, "skip": 0, "patch": 0, "exclude": 0},
                "namespaces": [{"name": DEST, "exists": true}]}}})),
        )
        .await
        .unwrap();
    w.server
        .create(backup("newer", "Available", "2026-01-09T00:00:00Z"))
        .unwrap();
    Api::<Job>::namespaced(w.ctx.client.clone(), NS)
        .patch_status(
            &jobs[0].name_any(),
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}),
            ),
        )
        .await
        .unwrap();
    let r = w.reconcile("rst").await;
    let s = r.status.as_ref().unwrap();
    assert_eq!(s.phase, Some(RestorePhase::MetadataRestore), "{s:?}");
    w.reconcile("rst").await;
    let meta = w
        .jobs(&uid)
        .await
        .into_iter()
        .find(|j| j.name_any().starts_with("tvk-metadatarestore-"))
        .expect("metadata Job");
    assert_eq!(
        common::arg_after(&meta, "--location").as_deref(),
        Some("plan-uid/latest-uid"),
        "pinned by the plan"
    );
}

#[tokio::test]
async fn backup_plan_sources_without_a_backup_and_unsupported_types_fail_validation() {
    let w = world().await;
    w.restore(
        "none",
        json!({"type": "BackupPlan", "backupPlan": {"name": "empty", "namespace": NS}}),
    );
    let reason = failed_validation(&w.reconcile("none").await);
    assert!(
        reason.contains(&format!("BackupPlan {NS}/empty has no Available Backup")),
        "{reason}"
    );
    w.restore(
        "missing",
        json!({"type": "BackupPlan", "backupPlan": {"name": "gone", "namespace": NS}}),
    );
    let reason = failed_validation(&w.reconcile("missing").await);
    assert!(
        reason.contains("does not exist") && reason.contains("spec.source.backupPlan"),
        "{reason}"
    );
    for (name, source) in [
        (
            "snap",
            json!({"type": "Snapshot", "snapshot": {"name": "s"}}),
        ),
        (
            "cs",
            json!({"type": "ConsistentSet", "consistentSet": {"name": "c"}}),
        ),
        (
            "crp",
            json!({"type": "ContinuousRestorePlan", "continuousRestorePlan": {"name": "c"}}),
        ),
    ] {
        w.restore(name, source.clone());
        let reason = failed_validation(&w.reconcile(name).await);
        let t = source["type"].as_str().unwrap();
        assert!(
            reason.contains(&format!("source type {t} is not supported"))
                && reason.contains("the latest backup of a BackupPlan"),
            "{reason}"
        );
    }
    // A ClusterRestore of a ClusterSnapshot: refused, naming what to use.
    w.server
        .create(
            json!({"apiVersion": V1, "kind": "ClusterRestore", "metadata": {"name": "cr"},
            "spec": {"source": {"type": "ClusterSnapshot", "clusterSnapshot": {"name": "s"}}}}),
        )
        .unwrap();
    let api: Api<ClusterRestore> = Api::all(w.ctx.client.clone());
    let cr = api.get("cr").await.unwrap();
    Box::pin(restore_controller::reconcile(&cr, &w.ctx))
        .await
        .unwrap();
    let cr = api.get("cr").await.unwrap();
    let s = cr.status.unwrap();
    assert_eq!(s.status, Some(RestoreState::Failed));
    let reason = s
        .condition
        .unwrap()
        .into_iter()
        .find(|c| c.phase == Some(RestorePhase::Validation))
        .and_then(|c| {
            c.status
                .filter(|st| *st == RestorePhaseStatus::Failed)
                .and(c.reason)
        })
        .unwrap();
    assert!(
        reason.contains("source type ClusterSnapshot is not supported")
            && reason.contains("ClusterBackupPlan"),
        "{reason}"
    );
}

#[tokio::test]
async fn protect_restored_app_is_accepted_for_a_backup_plan_source() {
    let w = world().await;
    w.server
        .create(json!({"apiVersion": V1, "kind": "Restore",
            "metadata": {"name": "prot", "namespace": DEST},
            "spec": {"source": {"type": "BackupPlan", "backupPlan": {"name": "plan", "namespace": NS}},
                "restoreFlags": {"onlyMetadata": true},
                "actionFlags": {"protectRestoredApp": true}}}))
        .unwrap();
    let r = w.reconcile("prot").await;
    let s = r.status.as_ref().unwrap();
    assert_eq!(
        (s.status, s.phase),
        (
            Some(RestoreState::InProgress),
            Some(RestorePhase::Validation)
        ),
        "{s:?}"
    );
    assert_eq!(
        w.jobs(&r.uid().unwrap()).await.len(),
        1,
        "the Validation Job runs"
    );
}
