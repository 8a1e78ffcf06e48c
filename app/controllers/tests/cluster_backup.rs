#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! ClusterBackupPlan and ClusterBackup against tvk-test-apiserver (kube-fake-client treats every
//! custom resource as namespaced): the plan's coverage
//! (`status.backupPlans`), validation and CronJobs; `create-backup --kind ClusterBackupPlan`;
//! a ClusterBackup through the shared phase machine to `Available` with its metamover Jobs
//! (`--kind ClusterBackup`, no `--namespace`, owned by the ClusterBackup).

mod common;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use tvk_api::{
    backup::{BackupPhase, BackupPhaseStatus, BackupState, BackupType, ClusterBackup},
    backup_plan::{ClusterBackupPlan, PlanState},
};
use tvk_control_plane::{backup_controller, create_backup, plan_controller};
use tvk_test_apiserver::ApiServer;

const NS: &str = common::NS;

fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn world(components: Value, plan_state: Option<&str>) -> Vec<Value> {
    let mut plan = json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "ClusterBackupPlan",
        // See tests/plan.rs: kube-fake-client needs one finalizer present to append ours.
        "metadata": {"name": "estate", "uid": "cplan-uid", "finalizers": ["example.com/keep"]},
        "spec": {"backupConfig": {"target": {"name": "s3"},
                "schedulePolicy": {"fullBackupPolicy": {"name": "daily"}}},
            "backupComponents": components,
            "namespaceSelector": [{"name": "tiered", "labelSelector": [{"matchLabels": {"tier": "gold"}}]}]}});
    if let Some(state) = plan_state {
        plan["status"] = json!({"status": state});
    }
    vec![
        namespace(NS, json!({})),
        namespace("shop", json!({})),
        namespace("web", json!({"tier": "gold"})),
        namespace("other", json!({"tier": "bronze"})),
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Target",
            "metadata": {"name": "s3", "namespace": NS, "uid": "t-1"},
            "spec": {"type": "ObjectStore", "vendor": "AWS", "objectStoreCredentials": {"bucketName": "b", "credentialSecret": {"name": "c"}}},
            "status": {"status": "Available"}}),
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Policy",
            "metadata": {"name": "daily", "namespace": NS},
            "spec": {"type": "Schedule", "scheduleConfig": {"schedule": ["0 1 * * *"]}}}),
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Hook",
            "metadata": {"name": "flush", "namespace": "shop"},
            "spec": {"pre": {"execAction": {"command": ["true"]}}, "post": {"execAction": {"command": ["true"]}}}}),
        plan,
    ]
}

/// The test API server with our CRDs and `objects` (status kept); the server lives as long as
/// the returned handle.
async fn start(objects: Vec<Value>) -> (ApiServer, kube::Client) {
    tvk_control_plane::install_tls_provider();
    let server = ApiServer::start().await.unwrap();
    for crd in tvk_api::crd::all() {
        server.create(serde_json::to_value(crd).unwrap()).unwrap();
    }
    for o in objects {
        server.create(o).unwrap();
    }
    let client = server.client();
    (server, client)
}

async fn reconcile_plan(client: &kube::Client) -> ClusterBackupPlan {
    let ctx = common::context(client.clone(), "Cluster");
    let api: Api<ClusterBackupPlan> = Api::all(client.clone());
    for _ in 0..2 {
        let plan = api.get("estate").await.unwrap();
        plan_controller::reconcile(plan.into(), ctx.clone())
            .await
            .unwrap();
    }
    api.get("estate").await.unwrap()
}

fn reason(plan: &ClusterBackupPlan) -> String {
    plan.status.as_ref().unwrap().condition.as_ref().unwrap()[0]
        .reason
        .clone()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_cluster_plan_reports_the_namespaces_it_covers_and_gets_its_cron_job() {
    let components = json!([{"namespace": "shop",
        "hookConfig": {"hooks": [{"hook": {"name": "flush"}, "podSelector": {"regex": "db-.*"}}]}}]);
    let (_server, client) = start(world(components, None)).await;
    let plan = reconcile_plan(&client).await;
    let status = plan.status.clone().unwrap();
    assert_eq!(
        status.status,
        Some(PlanState::Available),
        "{}",
        reason(&plan)
    );
    let covered = status.backup_plans.clone().unwrap();
    assert_eq!(
        covered,
        vec![
            json!({"namespace": "shop", "selectedBy": ["backupComponents[0]"], "hooks": true}),
            json!({"namespace": "web", "selectedBy": ["namespaceSelector tiered"], "hooks": false}),
        ]
    );
    assert_eq!(
        status.full_backup_crons,
        Some(vec!["0 1 * * *".to_string()])
    );
    let crons = Api::<CronJob>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(crons.len(), 1);
    let args = crons[0]
        .spec
        .as_ref()
        .unwrap()
        .job_template
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap();
    assert_eq!(
        args,
        [
            "create-backup",
            "--kind",
            "ClusterBackupPlan",
            "--name",
            "estate",
            "--type",
            "Full"
        ],
        "a cluster plan's CronJob names no namespace"
    );
}

#[tokio::test]
async fn a_missing_component_namespace_or_hook_makes_the_cluster_plan_unavailable() {
    let components = json!([
        {"namespace": "gone"},
        {"namespace": "shop", "hookConfig": {"hooks": [{"hook": {"name": "nohook"}, "podSelector": {"regex": "x"}}]}}
    ]);
    let (_server, client) = start(world(components, None)).await;
    let plan = reconcile_plan(&client).await;
    assert_eq!(
        plan.status.as_ref().unwrap().status,
        Some(PlanState::Unavailable)
    );
    let why = reason(&plan);
    assert!(
        why.contains("backupComponents[0]: namespace gone does not exist"),
        "{why}"
    );
    assert!(
        why.contains("Hook shop/nohook, which does not exist"),
        "{why}"
    );
    let crons = Api::<CronJob>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(
        crons[0].spec.as_ref().unwrap().suspend,
        Some(true),
        "an Unavailable plan's schedule is suspended"
    );
}

#[tokio::test]
async fn create_backup_makes_a_cluster_backup_of_a_cluster_plan() {
    let (_server, client) = start(world(json!([{"namespace": "shop"}]), Some("Available"))).await;
    let t: jiff::Timestamp = "2026-05-01T10:00:30Z".parse().unwrap();
    let name = create_backup::create_backup_of::<ClusterBackupPlan>(
        client.clone(),
        "",
        "estate",
        BackupType::Incremental,
        t,
    )
    .await
    .unwrap();
    assert_eq!(name, "estate-full-202605011000", "no base yet: a full");
    let b = Api::<ClusterBackup>::all(client.clone())
        .get(&name)
        .await
        .unwrap();
    assert_eq!(b.spec.type_, BackupType::Full);
    assert_eq!(b.spec.cluster_backup_plan.name.as_deref(), Some("estate"));
}

async fn reconcile_backup(client: &kube::Client) -> ClusterBackup {
    let ctx = common::context(client.clone(), "Cluster");
    let api: Api<ClusterBackup> = Api::all(client.clone());
    let backup = api.get("estate-1").await.unwrap();
    let first_time = !backup
        .finalizers()
        .contains(&backup_controller::FINALIZER.to_string());
    backup_controller::reconcile(backup.into(), ctx.clone())
        .await
        .unwrap();
    if first_time {
        let backup = api.get("estate-1").await.unwrap();
        backup_controller::reconcile(backup.into(), ctx)
            .await
            .unwrap();
    }
    api.get("estate-1").await.unwrap()
}

async fn job_with(client: &kube::Client, uid: &str, first_arg: &str) -> Job {
    Api::<Job>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels(&format!("triliovault.trilio.io/backup-uid={uid}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|j| common::job_args(j)[0] == first_arg)
        .unwrap_or_else(|| panic!("no {first_arg} Job"))
}

async fn finish(client: &kube::Client, job: &Job) {
    Api::<Job>::namespaced(client.clone(), NS)
        .patch_status(
            &job.name_any(),
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}),
            ),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_cluster_backup_runs_the_phase_machine_to_available() {
    let mut objects = world(json!([{"namespace": "shop"}]), Some("Available"));
    objects.push(
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "ClusterBackup",
        "metadata": {"name": "estate-1", "uid": "cb-uid", "finalizers": ["example.com/keep"]},
        "spec": {"type": "Full", "clusterBackupPlan": {"name": "estate"}}}),
    );
    let (_server, client) = start(objects).await;
    let b = reconcile_backup(&client).await;
    let uid = b.uid().unwrap();
    let plan_uid = Api::<ClusterBackupPlan>::all(client.clone())
        .get("estate")
        .await
        .unwrap()
        .uid()
        .unwrap();
    let s = b.status.clone().unwrap();
    assert_eq!(s.status, Some(BackupState::InProgress), "{s:?}");
    assert_eq!(s.phase, Some(BackupPhase::MetaSnapshot));
    assert_eq!(s.location, Some(format!("{plan_uid}/{uid}")));
    reconcile_backup(&client).await;
    let snapshot_job = job_with(&client, &uid, "snapshot").await;
    let args = common::job_args(&snapshot_job);
    assert_eq!(
        &args[..5],
        ["snapshot", "--kind", "ClusterBackup", "--name", "estate-1"],
        "no --namespace for a ClusterBackup"
    );
    let owner = &snapshot_job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("ClusterBackup", uid.as_str())
    );
    assert_eq!(
        snapshot_job
            .annotations()
            .get("triliovault.trilio.io/backup-ref")
            .map(String::as_str),
        Some("/estate-1")
    );
    finish(&client, &snapshot_job).await;
    Api::<ClusterBackup>::all(client.clone())
        .patch_status(
            "estate-1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"snapshot": {"custom": {"resources": [], "dataSnapshots": []}}}}),
            ),
        )
        .await
        .unwrap();
    let b = reconcile_backup(&client).await;
    assert_eq!(
        b.status.as_ref().unwrap().phase,
        Some(BackupPhase::MetadataUpload)
    );
    let images = job_with(&client, &uid, "images").await;
    let args = common::job_args(&images);
    assert_eq!(
        &args[..6],
        [
            "images",
            "backup",
            "--kind",
            "ClusterBackup",
            "--name",
            "estate-1"
        ]
    );
    finish(&client, &images).await;
    reconcile_backup(&client).await;
    let commit = job_with(&client, &uid, "commit").await;
    finish(&client, &commit).await;
    let b = reconcile_backup(&client).await;
    let s = b.status.clone().unwrap();
    assert_eq!(s.status, Some(BackupState::Available), "{s:?}");
    let cleanup = s
        .condition
        .unwrap()
        .into_iter()
        .find(|c| c.phase == Some(BackupPhase::Cleanup))
        .unwrap();
    assert_eq!(cleanup.status, Some(BackupPhaseStatus::Completed));
    assert!(
        Api::<Job>::namespaced(client.clone(), NS)
            .list(&ListParams::default().labels(&format!("triliovault.trilio.io/backup-uid={uid}")))
            .await
            .unwrap()
            .items
            .is_empty(),
        "cleanup deletes the ClusterBackup's Jobs"
    );
}

#[tokio::test]
async fn a_cluster_backup_of_a_missing_plan_fails_validation() {
    let (_server, client) = start(vec![
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "ClusterBackup",
        "metadata": {"name": "estate-1", "uid": "cb-uid", "finalizers": ["example.com/keep"]},
        "spec": {"type": "Full", "clusterBackupPlan": {"name": "estate"}}}),
    ])
    .await;
    let b = reconcile_backup(&client).await;
    let s = b.status.unwrap();
    assert_eq!(s.status, Some(BackupState::Failed));
    let c = &s.condition.unwrap()[0];
    assert!(
        c.reason.as_deref().unwrap().contains(
            "ClusterBackupPlan estate does not exist; create it or correct spec.clusterBackupPlan"
        ),
        "{c:?}"
    );
}
