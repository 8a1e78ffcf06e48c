#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! BackupPlan controller: reference validation and CronJobs, against kube-fake-client, plus the
//! CronJob golden file (`UPDATE_GOLDEN=1` rewrites it).

mod common;

use k8s_openapi::api::batch::v1::CronJob;
use kube::{Api, ResourceExt, api::ListParams};
use serde_json::{Value, json};
use tvk_api::backup_plan::{BackupPlan, PlanState};
use tvk_control_plane::plan_controller::{self, CronInputs, ScheduleKind, cron_jobs};

const APP: &str = "trilio-system";

fn objects(target_state: &str) -> Vec<Value> {
    vec![
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Target",
            "metadata": {"name": "s3", "namespace": APP, "uid": "t-1"},
            "spec": {"type": "ObjectStore", "vendor": "AWS", "objectStoreCredentials": {"bucketName": "b", "credentialSecret": {"name": "c"}}},
            "status": {"status": target_state, "condition": [{"phase": "Validation", "status": "Failed", "reason": "BucketNotFound: the bucket does not exist"}]}}),
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Policy",
            "metadata": {"name": "daily", "namespace": APP},
            "spec": {"type": "Schedule", "scheduleConfig": {"schedule": ["0 1 * * *"]}}}),
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Policy",
            "metadata": {"name": "hourly", "namespace": APP},
            "spec": {"type": "Schedule", "scheduleConfig": {"schedule": ["15 * * * *", "45 * * * *"]}}}),
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Policy",
            "metadata": {"name": "keep", "namespace": APP},
            "spec": {"type": "Retention", "retentionConfig": {"latest": 3}}}),
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Hook",
            "metadata": {"name": "fsfreeze", "namespace": APP},
            "spec": {"post": {"execAction": {"command": ["true"]}}}}),
    ]
}

fn plan(overrides: Value) -> Value {
    let mut plan = json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "BackupPlan",
        // kube's finalizer helper adds the first finalizer with a JSON-patch `test` of a null
        // `/metadata/finalizers`, which the apiserver accepts and kube-fake-client does not;
        // with one finalizer present it appends instead.
        "metadata": {"name": "mysql", "namespace": APP, "uid": "p-uid-1", "generation": 1,
            "finalizers": ["example.com/keep"]},
        "spec": {"backupConfig": {"target": {"name": "s3"}, "retentionPolicy": {"name": "keep"},
            "schedulePolicy": {"fullBackupPolicy": {"name": "daily"}, "incrementalBackupPolicy": {"name": "hourly"}},
            "maxIncrBackupsPerFullBackup": 5},
          "hookConfig": {"mode": "Sequential", "hooks": [{"hook": {"name": "fsfreeze"}, "podSelector": {"regex": "mysql-.*"}}]}}});
    json_merge(&mut plan, overrides);
    plan
}

fn json_merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                json_merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

async fn reconcile_plan(client: &kube::Client) -> BackupPlan {
    let ctx = common::context(client.clone(), "Namespaced");
    let api: Api<BackupPlan> = Api::namespaced(client.clone(), APP);
    let plan = api.get("mysql").await.unwrap();
    let first_time = !plan
        .finalizers()
        .contains(&plan_controller::FINALIZER.to_string());
    plan_controller::reconcile(plan.into(), ctx.clone())
        .await
        .unwrap();
    if first_time {
        // Adding the finalizer ends a reconcile; the change triggers the next one.
        let plan = api.get("mysql").await.unwrap();
        plan_controller::reconcile(plan.into(), ctx).await.unwrap();
    }
    api.get("mysql").await.unwrap()
}

async fn cron_jobs_of(client: &kube::Client) -> Vec<CronJob> {
    Api::<CronJob>::namespaced(client.clone(), common::NS)
        .list(&ListParams::default().labels("triliovault.trilio.io/backupplan-uid=p-uid-1"))
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn a_valid_plan_gets_its_cron_jobs_and_is_available() {
    let mut objs = objects("Available");
    objs.push(plan(json!({})));
    let (client, writes) = common::fake(objs).await;
    let plan = reconcile_plan(&client).await;
    let status = plan.status.clone().unwrap();
    assert_eq!(status.status, Some(PlanState::Available), "{status:?}");
    assert_eq!(
        status.full_backup_crons,
        Some(vec!["0 1 * * *".to_string()])
    );
    assert_eq!(
        status.incremental_crons,
        Some(vec!["15 * * * *".to_string(), "45 * * * *".to_string()])
    );
    assert_eq!(status.pause_schedule, Some(false));
    assert_eq!(
        status.stats.unwrap()["backupSummary"]["totalAvailableBackups"],
        0
    );
    assert!(
        plan.finalizers()
            .contains(&plan_controller::FINALIZER.to_string())
    );
    let crons = cron_jobs_of(&client).await;
    assert_eq!(crons.len(), 3);
    for cj in &crons {
        let spec = cj.spec.as_ref().unwrap();
        assert_eq!(spec.time_zone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(spec.suspend, Some(false));
    }
    writes.take();
    // A second reconcile with nothing changed writes nothing.
    reconcile_plan(&client).await;
    assert_eq!(writes.take(), Vec::<String>::new());
}

#[tokio::test]
async fn pause_suspends_and_a_removed_schedule_deletes_its_cron_jobs() {
    let mut objs = objects("Available");
    objs.push(plan(
        json!({"spec": {"backupPlanFlags": {"pauseSchedule": true}}}),
    ));
    let (client, _) = common::fake(objs).await;
    let plan = reconcile_plan(&client).await;
    assert_eq!(plan.status.unwrap().pause_schedule, Some(true));
    assert!(
        cron_jobs_of(&client)
            .await
            .iter()
            .all(|c| c.spec.as_ref().unwrap().suspend == Some(true))
    );
    let api: Api<BackupPlan> = Api::namespaced(client.clone(), APP);
    api.patch(
        "mysql",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Json::<()>(serde_json::from_value(json!([
            {"op": "remove", "path": "/spec/backupConfig/schedulePolicy/incrementalBackupPolicy"}
        ])).unwrap()),
    )
    .await
    .unwrap();
    let plan = reconcile_plan(&client).await;
    assert_eq!(plan.status.unwrap().incremental_crons, Some(vec![]));
    let crons = cron_jobs_of(&client).await;
    assert_eq!(crons.len(), 1, "the incremental CronJobs are deleted");
}

#[tokio::test]
async fn bad_references_make_the_plan_unavailable_with_every_reason() {
    let mut objs = objects("Unavailable");
    objs.push(plan(json!({"spec": {
        "backupConfig": {"retentionPolicy": {"name": "daily"}},
        "hookConfig": {"hooks": [{"hook": {"name": "missing-hook"}, "podSelector": {"regex": "x"}}]},
        "encryption": {"encryptionSecret": {"name": "no-such-secret"}}}})));
    let (client, _) = common::fake(objs).await;
    let plan = reconcile_plan(&client).await;
    let status = plan.status.unwrap();
    assert_eq!(status.status, Some(PlanState::Unavailable));
    let reason = status.condition.unwrap()[0].reason.clone().unwrap();
    for expected in [
        "Target trilio-system/s3 is not Available (BucketNotFound",
        "retentionPolicy Policy trilio-system/daily is of type Schedule, not Retention",
        "Hook trilio-system/missing-hook, which does not exist",
        "encryptionSecret trilio-system/no-such-secret does not exist",
    ] {
        assert!(
            reason.contains(expected),
            "{expected:?} missing in {reason}"
        );
    }
    // Its schedules do not fire while it is unusable.
    assert!(
        cron_jobs_of(&client)
            .await
            .iter()
            .all(|c| c.spec.as_ref().unwrap().suspend == Some(true))
    );
}

#[test]
fn cron_job_golden() {
    let config = common::config("Cluster");
    let inputs = CronInputs {
        kind: "BackupPlan",
        namespace: "shop",
        name: "mysql",
        uid: "0f1e2d3c-uid",
        suspend: false,
        schedules: vec![(ScheduleKind::Incremental, vec!["*/30 * * * *".into()])],
    };
    let jobs = cron_jobs(&inputs, &config).unwrap();
    let text = tvk_api::yaml::to_string(&jobs[0]).unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/cronjob-incremental.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_default();
    pretty_assertions::assert_eq!(golden, text, "run with UPDATE_GOLDEN=1 to accept");
}
