#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! NFS Targets against tvk-test-apiserver: the share becomes a PersistentVolume and claim, and
//! once the claim is Bound a validation Job in the install namespace runs `tvk-datamover probe`
//! on it (the test plays the Job controller and the pod). Success makes the Target Available and
//! deletes the Job; a failed probe makes it Unavailable with the datamover's own error; a Target
//! outside the install namespace is refused with where to create it.

mod common;

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::{batch::v1::Job, core::v1::PersistentVolumeClaim};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;
use tvk_api::target::{Target, TargetState};
use tvk_control_plane::{context::Context, target_controller};
use tvk_test_apiserver::ApiServer;

const NS: &str = common::NS;

async fn world() -> (ApiServer, Arc<Context>) {
    tvk_control_plane::install_tls_provider();
    let server = ApiServer::start().await.unwrap();
    for crd in tvk_api::crd::all() {
        server.create(serde_json::to_value(crd).unwrap()).unwrap();
    }
    for ns in [NS, "apps"] {
        server
            .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .unwrap();
    }
    let ctx = Context::new(server.client(), common::config("Cluster"), None);
    (server, Arc::new(ctx))
}

fn nfs_target(ns: &str) -> serde_json::Value {
    json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Target",
        "metadata": {"name": "share", "namespace": ns},
        "spec": {"type": "NFS", "vendor": "Other",
                 "nfsCredentials": {"nfsExport": "10.0.0.5:/exports/tvk", "nfsOptions": "nfsvers=4,hard"}}})
}

async fn reconcile(ctx: &Arc<Context>, ns: &str) -> (Target, Duration) {
    let api: Api<Target> = Api::namespaced(ctx.client.clone(), ns);
    let t = api.get("share").await.unwrap();
    let action = target_controller::reconcile(Arc::new(t), ctx.clone())
        .await
        .unwrap();
    let requeue = format!("{action:?}");
    let secs = if requeue.contains("5s") {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(60)
    };
    (api.get("share").await.unwrap(), secs)
}

fn condition_reason(t: &Target) -> String {
    t.status.as_ref().unwrap().condition.as_ref().unwrap()[0]
        .reason
        .clone()
        .unwrap_or_default()
}

async fn bind(ctx: &Arc<Context>, ns: &str, claim: &str) {
    Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns)
        .patch_status(
            claim,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Bound"}})),
        )
        .await
        .unwrap();
}

async fn probe_jobs(ctx: &Arc<Context>) -> Vec<Job> {
    Api::<Job>::namespaced(ctx.client.clone(), NS)
        .list(&ListParams::default().labels("triliovault.trilio.io/target-uid"))
        .await
        .unwrap()
        .items
}

async fn finish(server: &ApiServer, ctx: &Arc<Context>, job: &str, ok: bool, log: &str) {
    if !ok {
        server.create(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{job}-x1"), "namespace": NS, "labels": {"job-name": job, "batch.kubernetes.io/job-name": job}},
            "spec": {"containers": [{"name": "metadata", "image": "img"}]},
            "status": {"phase": "Failed", "containerStatuses": [{"name": "metadata", "image": "img", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 1, "message": log}}}]}})).unwrap();
    }
    let (kind, reason) = if ok {
        ("Complete", "Completed")
    } else {
        ("Failed", "BackoffLimitExceeded")
    };
    Api::<Job>::namespaced(ctx.client.clone(), NS)
        .patch_status(
            job,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{"type": kind, "status": "True", "reason": reason, "message": "Job has reached the specified backoff limit"}]}})),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_bound_share_is_probed_by_a_datamover_job_then_available() {
    let (server, ctx) = world().await;
    server.create(nfs_target(NS)).unwrap();
    let (t, _) = reconcile(&ctx, NS).await;
    assert_eq!(
        t.status.as_ref().unwrap().status,
        Some(TargetState::Unavailable)
    );
    assert!(
        condition_reason(&t).starts_with("ClaimNotBound"),
        "{}",
        condition_reason(&t)
    );
    assert!(
        probe_jobs(&ctx).await.is_empty(),
        "no Job before the claim is bound"
    );
    let claim = target_controller::nfs_volume_name(&t);
    bind(&ctx, NS, &claim).await;

    let (_, requeue) = reconcile(&ctx, NS).await;
    assert_eq!(requeue, Duration::from_secs(5), "polls the running Job");
    let jobs = probe_jobs(&ctx).await;
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    assert_eq!(
        c.image.as_deref(),
        Some("ghcr.io/tvk-rs/tvk-datamover:0.1.0")
    );
    assert_eq!(pod.service_account_name.as_deref(), Some("tvk-datamover"));
    let args = c.args.clone().unwrap();
    assert_eq!(args[0], "probe");
    let at = args.iter().position(|a| a == "--target").unwrap();
    assert_eq!(args[at + 1], "/mnt/target");
    let claims: Vec<String> = pod
        .volumes
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.persistent_volume_claim.map(|p| p.claim_name))
        .collect();
    assert_eq!(claims, vec![claim.clone()]);
    assert_eq!(
        job.owner_references()[0].uid,
        t.uid().unwrap(),
        "owned by the Target"
    );
    assert!(
        !job.labels()
            .contains_key("triliovault.trilio.io/backup-uid")
    );
    // A reconcile while it runs neither writes status nor starts a second Job.
    let before = Api::<Target>::namespaced(ctx.client.clone(), NS)
        .get("share")
        .await
        .unwrap();
    let (during, _) = reconcile(&ctx, NS).await;
    assert_eq!(during.resource_version(), before.resource_version());
    assert_eq!(probe_jobs(&ctx).await.len(), 1);

    finish(&server, &ctx, &job.name_any(), true, "").await;
    let (t, _) = reconcile(&ctx, NS).await;
    assert_eq!(
        t.status.as_ref().unwrap().status,
        Some(TargetState::Available)
    );
    assert!(condition_reason(&t).starts_with("ProbeSucceeded"));
    assert_eq!(
        t.status
            .as_ref()
            .unwrap()
            .nfs_persistent_volume_claim
            .as_ref()
            .unwrap()
            .name
            .as_deref(),
        Some(claim.as_str())
    );
    assert!(
        probe_jobs(&ctx).await.is_empty(),
        "a finished probe Job is deleted"
    );

    // Re-validation probes anew; a failed probe names the datamover's error.
    reconcile(&ctx, NS).await;
    let jobs = probe_jobs(&ctx).await;
    assert_eq!(jobs.len(), 1);
    finish(
        &server,
        &ctx,
        &jobs[0].name_any(),
        false,
        "{\"event\":\"start\"}\n{\"event\":\"result\",\"ok\":false,\"error\":\"create .tvk-probe/abc on /mnt/target: Permission denied (os error 13)\",\"kind\":\"Permission\",\"retryable\":false}",
    )
    .await;
    let (t, _) = reconcile(&ctx, NS).await;
    assert_eq!(
        t.status.as_ref().unwrap().status,
        Some(TargetState::Unavailable)
    );
    // The reason comes from the datamover's error kind, the message is its own error.
    let reason = condition_reason(&t);
    assert!(
        reason.starts_with("PermissionDenied") && reason.contains("Permission denied"),
        "{reason}"
    );
}

#[test]
fn a_failed_probe_jobs_reason_is_its_error_kind_else_probe_failed() {
    use tvk_control_plane::target_controller::nfs_probe_failure;
    use tvk_datamover::error::ErrorKind;
    let full = nfs_probe_failure("ns", "job", Some(ErrorKind::NoSpace), "write: ENOSPC");
    assert_eq!(full.reason, "NoSpace");
    assert!(full.message.contains("write: ENOSPC") && full.message.contains("share is full"));
    let denied = nfs_probe_failure("ns", "job", Some(ErrorKind::Permission), "EACCES");
    assert_eq!(denied.reason, "PermissionDenied");
    for kind in [None, Some(ErrorKind::Corrupt)] {
        let other = nfs_probe_failure("ns", "job", kind, "boom");
        assert_eq!(other.reason, "ProbeFailed");
        assert!(other.message.contains("Job ns/job") && other.message.contains("boom"));
    }
}

#[tokio::test]
async fn a_share_outside_the_install_namespace_is_refused_with_where_to_create_it() {
    let (server, ctx) = world().await;
    server.create(nfs_target("apps")).unwrap();
    let (t, _) = reconcile(&ctx, "apps").await;
    bind(&ctx, "apps", &target_controller::nfs_volume_name(&t)).await;
    let (t, _) = reconcile(&ctx, "apps").await;
    assert_eq!(
        t.status.as_ref().unwrap().status,
        Some(TargetState::Unavailable)
    );
    let reason = condition_reason(&t);
    assert!(reason.starts_with("NotReachableFromJobs"), "{reason}");
    assert!(reason.contains(NS), "says where: {reason}");
    assert!(probe_jobs(&ctx).await.is_empty());
}
