#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Retention and deletion of backups against tvk-test-apiserver (HTTP, status subresources,
//! finalizers) and moto: expired backups get coalesce Jobs (golden) and coalesceInfo, and are
//! deleted once the Jobs complete (the test marks them complete: it plays the kubelet; the
//! datamover's coalesce itself is tested in the datamover crate); kept backups are untouched;
//! a deleted backup's metadata goes first and its volume data is handed to a coalesce Job,
//! never deleted in place; failures keep every backup and say why.

mod common;

use std::{path::PathBuf, sync::Arc};

use k8s_openapi::api::batch::v1::Job;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};
use tvk_api::{backup::Backup, backup_plan::BackupPlan, target::Target};
use tvk_control_plane::{
    context::Context,
    retention::{self, RetentionStep},
    target_access::job_access,
};
use tvk_datamover::target::{S3Config, Target as Store};
use tvk_test_apiserver::ApiServer;
use tvk_testkit::{S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, moto, unique_name};

const NS: &str = common::NS;
const V1: &str = "triliovault.trilio.io/v1";

struct Env {
    server: ApiServer,
    ctx: Arc<Context>,
    plan_uid: String,
}

impl Env {
    async fn start(endpoint: &str, bucket: &str, latest: i64) -> Self {
        tvk_control_plane::install_tls_provider();
        let server = ApiServer::start().await.unwrap();
        for crd in tvk_api::crd::all() {
            server.create(serde_json::to_value(crd).unwrap()).unwrap();
        }
        server
            .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
            .unwrap();
        server.create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds", "namespace": NS},
            "stringData": {"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}})).unwrap();
        server.create(json!({"apiVersion": V1, "kind": "Target", "metadata": {"name": "s3", "namespace": NS},
            "spec": {"type": "ObjectStore", "vendor": "MinIO", "objectStoreCredentials": {
                "bucketName": bucket, "url": endpoint, "region": S3_REGION, "credentialSecret": {"name": "s3-creds"}}},
            "status": {"status": "Available"}})).unwrap();
        server.create(json!({"apiVersion": V1, "kind": "Policy", "metadata": {"name": "keep", "namespace": NS},
            "spec": {"type": "Retention", "retentionConfig": {"latest": latest}}})).unwrap();
        let plan = server.create(json!({"apiVersion": V1, "kind": "BackupPlan", "metadata": {"name": "app", "namespace": NS},
            "spec": {"backupConfig": {"target": {"name": "s3"}, "retentionPolicy": {"name": "keep"}}},
            "status": {"status": "Available"}})).unwrap();
        let plan_uid = plan["metadata"]["uid"].as_str().unwrap().to_string();
        let ctx = Arc::new(Context::new(
            server.client(),
            common::config("Namespaced"),
            None,
        ));
        Self {
            server,
            ctx,
            plan_uid,
        }
    }

    /// A Backup of the plan with `status` (state, day) and data on volumes `volumes`.
    async fn backup(&self, name: &str, state: &str, day: u32, volumes: &[&str]) -> String {
        let created = self
            .server
            .create(json!({"apiVersion": V1, "kind": "Backup",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"type": "Full", "backupPlan": {"name": "app"}}}))
            .unwrap();
        let uid = created["metadata"]["uid"].as_str().unwrap().to_string();
        let location = format!("{}/{uid}", self.plan_uid);
        let snapshots: Vec<Value> = volumes
            .iter()
            .map(|v| json!({"persistentVolumeClaimName": format!("pvc-{v}"), "location": format!("{location}/{v}")}))
            .collect();
        let status = json!({"status": {"status": state, "location": location,
            "startTimestamp": format!("2026-11-{day:02}T02:00:00Z"),
            "completionTimestamp": format!("2026-11-{day:02}T02:05:00Z"),
            "snapshot": {"custom": {"resources": [], "dataSnapshots": snapshots}}}});
        self.backups()
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
        uid
    }

    fn backups(&self) -> Api<Backup> {
        Api::namespaced(self.ctx.client.clone(), NS)
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.ctx.client.clone(), NS)
    }

    async fn plan_and_target(&self) -> (BackupPlan, Target) {
        (
            Api::namespaced(self.ctx.client.clone(), NS)
                .get("app")
                .await
                .unwrap(),
            Api::namespaced(self.ctx.client.clone(), NS)
                .get("s3")
                .await
                .unwrap(),
        )
    }

    async fn apply(&self, just: &str) -> RetentionStep {
        let (plan, target) = self.plan_and_target().await;
        let b = self.backups().get(just).await.unwrap();
        retention::apply(&self.ctx, &plan, &target, &b)
            .await
            .unwrap()
    }

    fn coalesce_jobs(&self) -> Vec<Value> {
        self.server
            .list("batch/v1", "Job", Some(NS))
            .into_iter()
            .filter(|j| j["spec"]["template"]["spec"]["containers"][0]["args"][0] == "coalesce")
            .collect()
    }

    async fn finish_job(&self, name: &str, ok: bool) {
        let status = if ok {
            json!({"status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}})
        } else {
            json!({"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                "message": "Container coalesce for pod x failed with exit code 1 matching FailJob rule at index 0"}], "failed": 1}})
        };
        self.jobs()
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }

    fn state(&self, name: &str) -> Option<Value> {
        self.server
            .get(V1, "Backup", Some(NS), name)
            .map(|b| b["status"].clone())
    }
}

fn args(job: &Value) -> Vec<String> {
    job["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_backups_are_coalesced_then_deleted_and_kept_ones_untouched() {
    let env = Env::start("http://127.0.0.1:9", "unused", 2).await;
    let failed = env.backup("b0-failed", "Failed", 1, &[]).await;
    let b1 = env.backup("b1", "Available", 2, &["vol-a", "vol-b"]).await;
    let b2 = env.backup("b2", "Available", 3, &["vol-a"]).await;
    let b3 = env.backup("b3", "Available", 4, &["vol-a", "vol-b"]).await;
    let _b4 = env.backup("b4", "InProgress", 5, &["vol-a", "vol-b"]).await;
    let kept_before = env.state("b3").unwrap();

    // latest: 2 keeps b4 (just committed) and b3; b1 and b2 expire.
    let step = env.apply("b4").await;
    assert!(matches!(step, RetentionStep::Running(_)), "{step:?}");
    let jobs = env.coalesce_jobs();
    assert_eq!(jobs.len(), 2, "one Job per volume");
    let by_volume = |v: &str| {
        jobs.iter()
            .find(|j| args(j)[4] == v)
            .unwrap_or_else(|| panic!("no Job for {v}"))
            .clone()
    };
    let a = args(&by_volume("vol-a"));
    assert_eq!(
        &a[..9],
        [
            "coalesce",
            "--plan",
            env.plan_uid.as_str(),
            "--volume",
            "vol-a",
            "--expire",
            b1.as_str(),
            "--expire",
            b2.as_str()
        ],
        "all expired backups of a volume in one call, oldest first"
    );
    assert_eq!(&a[9..11], ["--target", "s3://unused"]);
    let b = args(&by_volume("vol-b"));
    assert_eq!(&b[4..7], ["vol-b", "--expire", b1.as_str()]);
    assert!(!b.contains(&b2), "b2 has no vol-b");
    for id in [&failed, &b3] {
        assert!(!a.contains(id) && !b.contains(id), "{id} is never expired");
    }
    for name in ["b1", "b2"] {
        let s = env.state(name).unwrap();
        assert_eq!(
            s["status"], "Coalescing",
            "{name}: expired and being folded"
        );
        assert_eq!(s["coalesceInfo"]["state"], "CommitStarted", "{name}");
    }

    // Polling while the Jobs run changes nothing and creates no Job.
    let mark = env.server.mark();
    assert!(matches!(env.apply("b4").await, RetentionStep::Running(_)));
    assert_eq!(
        env.server.writes_since(mark),
        0,
        "no writes while nothing changed"
    );

    // One Job done: still running.
    env.finish_job(
        by_volume("vol-a")["metadata"]["name"].as_str().unwrap(),
        true,
    )
    .await;
    assert!(matches!(env.apply("b4").await, RetentionStep::Running(_)));
    assert_eq!(
        env.state("b2").unwrap()["coalesceInfo"]["state"],
        "Qcow2MovementCompleted"
    );
    assert_eq!(
        env.state("b1").unwrap()["coalesceInfo"]["state"],
        "CommitStarted"
    );
    env.finish_job(
        by_volume("vol-b")["metadata"]["name"].as_str().unwrap(),
        true,
    )
    .await;
    let step = env.apply("b4").await;
    let RetentionStep::Done(report) = step else {
        panic!("{step:?}")
    };
    assert_eq!(report.expired, [format!("{NS}/b1"), format!("{NS}/b2")]);
    assert!(
        env.state("b1").is_none() && env.state("b2").is_none(),
        "expired Backups deleted"
    );
    assert_eq!(
        env.state("b3").unwrap(),
        kept_before,
        "kept backup untouched"
    );
    assert_eq!(env.state("b0-failed").unwrap()["status"], "Failed");
    assert_eq!(env.state("b4").unwrap()["status"], "InProgress");

    // The next run finds nothing to expire.
    let step = env.apply("b4").await;
    assert!(
        matches!(step, RetentionStep::Done(ref r) if r.expired.is_empty()),
        "{step:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_coalesce_fails_retention_only_and_names_the_datamover_error() {
    let env = Env::start("http://127.0.0.1:9", "unused", 1).await;
    env.backup("b1", "Available", 2, &["vol-a"]).await;
    env.backup("b2", "InProgress", 3, &["vol-a"]).await;
    assert!(matches!(env.apply("b2").await, RetentionStep::Running(_)));
    let job = env.coalesce_jobs().remove(0);
    let job_name = job["metadata"]["name"].as_str().unwrap().to_string();
    // The pod's termination message: the tail of the datamover's JSON lines.
    env.server
        .create(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{job_name}-x"), "namespace": NS, "labels": {"job-name": job_name}},
            "spec": {"containers": [{"name": "coalesce", "image": "x"}]},
            "status": {"containerStatuses": [{"name": "coalesce", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
                "state": {"terminated": {"exitCode": 1, "message":
                    "{\"event\":\"coalesce\",\"coalesceInfo\":{\"state\":\"CommitStarted\"}}\n{\"event\":\"coalesce\",\"coalesceInfo\":{\"state\":\"CommitFailed\"}}\n{\"event\":\"result\",\"ok\":false,\"error\":\"image b1/vol-a/data.qcow2 is corrupt at offset 65536\"}\n"}}}]}}))
        .unwrap();
    env.finish_job(&job_name, false).await;
    let step = env.apply("b2").await;
    let RetentionStep::Failed(message) = step else {
        panic!("{step:?}")
    };
    assert!(message.contains("corrupt at offset 65536"), "{message}");
    assert!(message.contains(&format!("{NS}/b1")), "{message}");
    let s = env.state("b1").unwrap();
    assert_eq!(
        s["status"], "Available",
        "not deleted: retried by the next run"
    );
    assert_eq!(s["coalesceInfo"]["state"], "CommitFailed");
    assert_eq!(s["coalesceInfo"]["retryCount"], 1);
    assert!(
        s["coalesceInfo"]["errorMessages"][0]
            .as_str()
            .unwrap()
            .contains("corrupt")
    );
    assert_eq!(env.state("b2").unwrap()["status"], "InProgress");

    // The next backup's retention run retries the marked one with a new Job.
    env.backup("b3", "InProgress", 4, &["vol-a"]).await;
    assert!(matches!(env.apply("b3").await, RetentionStep::Running(_)));
    let retry = env
        .coalesce_jobs()
        .into_iter()
        .find(|j| j["metadata"]["name"] != job_name.as_str())
        .expect("a new Job");
    assert!(args(&retry).contains(&env.backups().get("b1").await.unwrap().metadata.uid.unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_policy_is_a_retention_failure() {
    let env = Env::start("http://127.0.0.1:9", "unused", 1).await;
    env.backup("b1", "Available", 2, &[]).await;
    env.backup("b2", "InProgress", 3, &[]).await;
    env.server.delete(V1, "Policy", Some(NS), "keep").unwrap();
    let step = env.apply("b2").await;
    assert!(
        matches!(&step, RetentionStep::Failed(m) if m.contains("does not exist")),
        "{step:?}"
    );
    env.server.create(json!({"apiVersion": V1, "kind": "Policy", "metadata": {"name": "keep", "namespace": NS},
        "spec": {"type": "Schedule", "scheduleConfig": {"schedule": ["0 1 * * *"]}}})).unwrap();
    let step = env.apply("b2").await;
    assert!(
        matches!(&step, RetentionStep::Failed(m) if m.contains("not Retention")),
        "{step:?}"
    );
    assert_eq!(env.state("b1").unwrap()["status"], "Available");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_only_backups_expire_without_jobs() {
    let env = Env::start("http://127.0.0.1:9", "unused", 1).await;
    env.backup("b1", "Available", 2, &[]).await;
    env.backup("b2", "InProgress", 3, &[]).await;
    let step = env.apply("b2").await;
    assert!(
        matches!(&step, RetentionStep::Done(r) if r.expired == [format!("{NS}/b1")] && r.jobs.is_empty()),
        "{step:?}"
    );
    assert!(env.coalesce_jobs().is_empty());
    assert!(env.state("b1").is_none());
}

fn store(endpoint: &str, bucket: &str, handle: tokio::runtime::Handle) -> Store {
    let cfg = S3Config {
        bucket: bucket.into(),
        endpoint: Some(endpoint.into()),
        region: S3_REGION.into(),
        access_key_id: S3_ACCESS_KEY.into(),
        secret_access_key: S3_SECRET_KEY.into(),
        max_retries: 1,
        retry_timeout: std::time::Duration::from_secs(5),
        ..S3Config::default()
    };
    Store::s3(&cfg, handle).unwrap()
}

async fn put(endpoint: &str, bucket: &str, keys: Vec<String>) {
    let (url, b, handle) = (
        endpoint.to_string(),
        bucket.to_string(),
        tokio::runtime::Handle::current(),
    );
    tokio::task::spawn_blocking(move || {
        let s = store(&url, &b, handle);
        for key in keys {
            s.put_create_only(&key, bytes::Bytes::from_static(b"{}"))
                .unwrap();
        }
    })
    .await
    .unwrap();
}

async fn list(endpoint: &str, bucket: &str, prefix: &str) -> Vec<String> {
    let (url, b, p, handle) = (
        endpoint.to_string(),
        bucket.to_string(),
        prefix.to_string(),
        tokio::runtime::Handle::current(),
    );
    tokio::task::spawn_blocking(move || store(&url, &b, handle).list(&p).unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_backup_deletes_metadata_and_hands_volume_data_to_coalesce() {
    let moto = moto().unwrap();
    let bucket = unique_name("ret-del");
    tvk_testkit::create_bucket(moto.addr(), &bucket).unwrap();
    let env = Env::start(&moto.url(), &bucket, 5).await;
    let b1 = env.backup("b1", "Available", 2, &["vol-a"]).await;
    let b2 = env.backup("b2", "Available", 3, &["vol-a"]).await;
    let p = env.plan_uid.clone();
    put(
        &moto.url(),
        &bucket,
        vec![
            format!("{p}/{b1}/_metadata/commit.json"),
            format!("{p}/{b1}/_metadata/resources/x.json"),
            format!("{p}/{b1}/vol-a/data.qcow2"),
            format!("{p}/{b1}/vol-a/manifest.json"),
            format!("{p}/{b2}/_metadata/commit.json"),
            format!("{p}/{b2}/vol-a/data.qcow2"),
        ],
    )
    .await;
    let (_, target) = env.plan_and_target().await;
    let backup = env.backups().get("b1").await.unwrap();
    let step = retention::delete_backup_data(&env.ctx, &backup, &target)
        .await
        .unwrap();
    assert!(matches!(step, RetentionStep::Running(_)), "{step:?}");
    // Metadata gone; the volume data is left to the coalesce Job (b2's chain may need it).
    let mut left = list(&moto.url(), &bucket, &p).await;
    left.sort();
    let mut expected = vec![
        format!("{p}/{b1}/vol-a/data.qcow2"),
        format!("{p}/{b1}/vol-a/manifest.json"),
        format!("{p}/{b2}/_metadata/commit.json"),
        format!("{p}/{b2}/vol-a/data.qcow2"),
    ];
    expected.sort();
    assert_eq!(left, expected);
    let jobs = env.coalesce_jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        &args(&jobs[0])[..7],
        [
            "coalesce",
            "--plan",
            p.as_str(),
            "--volume",
            "vol-a",
            "--expire",
            b1.as_str()
        ]
    );
    assert_eq!(
        jobs[0]["metadata"]["ownerReferences"][0]["uid"],
        b1.as_str(),
        "the Job goes with the Backup"
    );
    // Running until the Job completes; then done.
    let step = retention::delete_backup_data(&env.ctx, &backup, &target)
        .await
        .unwrap();
    assert!(matches!(step, RetentionStep::Running(_)), "{step:?}");
    env.finish_job(jobs[0]["metadata"]["name"].as_str().unwrap(), true)
        .await;
    let step = retention::delete_backup_data(&env.ctx, &backup, &target)
        .await
        .unwrap();
    let RetentionStep::Done(report) = step else {
        panic!("{step:?}")
    };
    assert_eq!(
        report.metadata_objects_deleted, 0,
        "already deleted by the first call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_waits_for_a_running_backup_of_the_plan_and_skips_coalesced_volumes() {
    let moto = moto().unwrap();
    let bucket = unique_name("ret-wait");
    tvk_testkit::create_bucket(moto.addr(), &bucket).unwrap();
    let env = Env::start(&moto.url(), &bucket, 5).await;
    let b1 = env.backup("b1", "Available", 2, &["vol-a"]).await;
    env.backup("b2", "InProgress", 3, &["vol-a"]).await;
    env.backups()
        .patch_status(
            "b2",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "DataUpload"}})),
        )
        .await
        .unwrap();
    let p = env.plan_uid.clone();
    put(
        &moto.url(),
        &bucket,
        vec![
            format!("{p}/{b1}/_metadata/commit.json"),
            format!("{p}/{b1}/vol-a/data.qcow2"),
        ],
    )
    .await;
    let (_, target) = env.plan_and_target().await;
    let backup = env.backups().get("b1").await.unwrap();
    let step = retention::delete_backup_data(&env.ctx, &backup, &target)
        .await
        .unwrap();
    assert!(
        matches!(&step, RetentionStep::Running(m) if m.contains("b2")),
        "{step:?}"
    );
    assert_eq!(
        list(&moto.url(), &bucket, &p).await.len(),
        2,
        "nothing deleted while b2 runs"
    );

    // b2 done; b1 was already coalesced away by retention: metadata only, no Job.
    env.backups()
        .patch_status(
            "b2",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"status": "Available"}})),
        )
        .await
        .unwrap();
    env.backups()
        .patch_status(
            "b1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"status": "Coalescing",
            "coalesceInfo": {"state": "Qcow2MovementCompleted"}}})),
        )
        .await
        .unwrap();
    let backup = env.backups().get("b1").await.unwrap();
    let step = retention::delete_backup_data(&env.ctx, &backup, &target)
        .await
        .unwrap();
    assert!(
        matches!(&step, RetentionStep::Done(r) if r.metadata_objects_deleted == 1 && r.jobs.is_empty()),
        "{step:?}"
    );
    assert!(env.coalesce_jobs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_is_an_error_to_retry() {
    let env = Env::start("http://127.0.0.1:9", "b", 5).await;
    env.backup("b1", "Available", 2, &["vol-a"]).await;
    let (_, target) = env.plan_and_target().await;
    let backup = env.backups().get("b1").await.unwrap();
    let err = retention::delete_backup_data(&env.ctx, &backup, &target)
        .await
        .unwrap_err();
    assert_eq!(err.category(), "TargetError", "{err}");
    assert!(
        env.coalesce_jobs().is_empty(),
        "no Job before the metadata is gone"
    );
}

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing {}; run with UPDATE_GOLDEN=1", path.display()));
    pretty_assertions::assert_eq!(expected, actual);
}

#[test]
fn coalesce_job_golden() {
    let config = common::config("Namespaced");
    let backup: Backup = serde_json::from_value(json!({"apiVersion": V1, "kind": "Backup",
        "metadata": {"name": "app-full-202611210200", "namespace": NS, "uid": "bkp-uid-4"},
        "spec": {"type": "Full", "backupPlan": {"name": "app"}}}))
    .unwrap();
    let target: Target = serde_json::from_value(json!({"apiVersion": V1, "kind": "Target",
        "metadata": {"name": "s3", "namespace": NS, "uid": "t-1"},
        "spec": {"type": "ObjectStore", "vendor": "AWS", "objectStoreCredentials": {
            "bucketName": "backups", "region": "eu-west-1", "credentialSecret": {"name": "s3-creds"},
            "sslCertConfig": {"certConfigMap": {"name": "ca"}, "certKey": "ca.pem"}}}}))
    .unwrap();
    let access = job_access(&target, NS).unwrap();
    let expire = ["bkp-uid-1".to_string(), "bkp-uid-2".to_string()];
    let call = retention::CoalesceCall {
        plan_uid: "plan-uid",
        volume: "pvc-uid-a",
        expire: &expire,
    };
    let job = retention::coalesce_job(&config, "tvk-coalesce-0123456789", &backup, &call, &access)
        .unwrap();
    golden(
        "job-coalesce.yaml",
        &tvk_api::yaml::to_string(&job).unwrap(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_coalesce_per_volume_at_a_time_and_a_failed_deletion_is_retried_anew() {
    let moto = moto().unwrap();
    let bucket = unique_name("ret-serial");
    tvk_testkit::create_bucket(moto.addr(), &bucket).unwrap();
    let env = Env::start(&moto.url(), &bucket, 5).await;
    let b1 = env.backup("b1", "Available", 2, &["vol-a"]).await;
    let b2 = env.backup("b2", "Available", 3, &["vol-a"]).await;
    let p = env.plan_uid.clone();
    put(
        &moto.url(),
        &bucket,
        vec![
            format!("{p}/{b1}/vol-a/data.qcow2"),
            format!("{p}/{b2}/vol-a/data.qcow2"),
        ],
    )
    .await;
    let (_, target) = env.plan_and_target().await;
    let first = env.backups().get("b1").await.unwrap();
    let second = env.backups().get("b2").await.unwrap();
    let step = retention::delete_backup_data(&env.ctx, &first, &target)
        .await
        .unwrap();
    assert!(matches!(step, RetentionStep::Running(_)), "{step:?}");
    let step = retention::delete_backup_data(&env.ctx, &second, &target)
        .await
        .unwrap();
    assert!(
        matches!(&step, RetentionStep::Running(m) if m.contains("waiting for coalesce Job")),
        "{step:?}"
    );
    let jobs = env.coalesce_jobs();
    assert_eq!(
        jobs.len(),
        1,
        "the second deletion waits for the first coalesce"
    );
    assert_eq!(
        jobs[0]["metadata"]["labels"]["triliovault.trilio.io/coalesce-volume"],
        "vol-a"
    );
    let first_job = jobs[0]["metadata"]["name"].as_str().unwrap().to_string();

    // The first coalesce fails: the deletion reports it and removes the Job for a retry.
    env.finish_job(&first_job, false).await;
    let step = retention::delete_backup_data(&env.ctx, &first, &target)
        .await
        .unwrap();
    assert!(
        matches!(&step, RetentionStep::Failed(m) if m.contains("exit code 1")),
        "{step:?}"
    );
    assert!(env.coalesce_jobs().is_empty(), "the failed Job is gone");
    // Now the second deletion may run; the first one's retry creates its Job again later.
    let step = retention::delete_backup_data(&env.ctx, &second, &target)
        .await
        .unwrap();
    assert!(matches!(step, RetentionStep::Running(_)), "{step:?}");
    let jobs = env.coalesce_jobs();
    assert_eq!(jobs.len(), 1);
    assert!(args(&jobs[0]).contains(&b2));
}
