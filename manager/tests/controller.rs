#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The running controller, in process, against tvk-test-apiserver (an in-memory apiserver over
//! HTTP with discovery, watches, server-side apply, CRDs that become Established and garbage
//! collection): exactly what `tvk-manager run` starts, with leader election, driven through a
//! real `kube::Client`. A TVM is created → the application appears and the status says Deployed;
//! a deleted Deployment, a deleted cluster-scoped webhook configuration and an edited ConfigMap
//! are restored by the label-filtered watches alone (nothing calls reconcile by hand); the
//! periodic resync reconciles without writing anything; stopping finishes and releases the Lease.

use std::{future::Future, sync::Arc, time::Duration};

use k8s_openapi::api::{
    admissionregistration::v1::ValidatingWebhookConfiguration,
    apps::v1::Deployment,
    coordination::v1::Lease,
    core::v1::{ConfigMap, Namespace},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;
use tvk_manager::{
    leader::LeaderElector,
    operations::Metrics,
    reconcile::{self, Context},
    render::{Renderer, TemplateSource},
    tvm::{ApplicationScope, TrilioVaultManager, TrilioVaultManagerSpec},
};
use tvk_test_apiserver::ApiServer;

const NS: &str = "trilio-system";
const LEASE: &str = "tvk-manager-leader";

/// Polls `check` every 100 ms until it returns true; fails naming `what` after `timeout`.
async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_controller_installs_heals_resyncs_and_stops_cleanly() {
    // kube's TLS stack needs one process-wide provider when several are compiled in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,tvk_manager=debug")
        .with_test_writer()
        .try_init();
    let server = ApiServer::start().await.unwrap();
    let client = server.client();
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(NS.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    server
        .apply(serde_json::to_value(tvk_manager::crd::tvm_crd()).unwrap())
        .unwrap();
    let tvms = Api::<TrilioVaultManager>::namespaced(client.clone(), NS);
    let mut tvm = TrilioVaultManager::new(
        "triliovault-manager",
        TrilioVaultManagerSpec {
            application_scope: ApplicationScope::Cluster,
            ..Default::default()
        },
    );
    tvm.metadata.namespace = Some(NS.into());
    // Another controller's finalizer: kube's finalizer helper adds ours with a JSON patch whose
    // first operation tests `/metadata/finalizers` for null, which a real apiserver accepts on a
    // missing list but tvk-test-apiserver (json-patch, strict RFC 6902) refuses with 422; with a
    // list present, the helper tests the list and appends, which both accept.
    tvm.metadata.finalizers = Some(vec!["example.com/audit".into()]);
    tvms.create(&PostParams::default(), &tvm).await.unwrap();

    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(Context {
        client: client.clone(),
        renderer: Arc::new(Renderer::new(&TemplateSource::embedded()).unwrap()),
        related_images: vec![],
        resync: Duration::from_secs(2),
        crd_timeout: Duration::from_secs(30),
        recorder: Some(reconcile::recorder(client.clone())),
        metrics: metrics.clone(),
    });
    let elector = LeaderElector::new(client.clone(), NS, LEASE, "manager-0");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(reconcile::run(ctx, None, Some(elector), async move {
        let _ = stop_rx.await;
    }));

    // Install: the objects appear and the status says Deployed.
    eventually("the TVM is Deployed", Duration::from_secs(60), || async {
        tvms.get("triliovault-manager")
            .await
            .ok()
            .and_then(|t| t.status)
            .and_then(|s| s.status)
            .as_deref()
            == Some("Deployed")
    })
    .await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), NS);
    let control_plane = deployments.get("tvk-control-plane").await.unwrap();
    assert_eq!(
        control_plane.owner_references()[0].name,
        "triliovault-manager"
    );
    let status = tvms
        .get("triliovault-manager")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.helm_revision, Some(1));
    let lease = Api::<Lease>::namespaced(client.clone(), NS)
        .get(LEASE)
        .await
        .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("manager-0")
    );

    // A deleted Deployment comes back through the owned-objects watch.
    let old_uid = deployments.get("tvk-webhook").await.unwrap().uid();
    deployments
        .delete("tvk-webhook", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the deleted Deployment is recreated",
        Duration::from_secs(30),
        || async {
            deployments
                .get_opt("tvk-webhook")
                .await
                .unwrap()
                .is_some_and(|d| d.uid() != old_uid)
        },
    )
    .await;

    // A deleted cluster-scoped webhook configuration comes back through its mapped watch.
    let webhooks = Api::<ValidatingWebhookConfiguration>::all(client.clone());
    let name = format!("tvk-{NS}-validating");
    let old_uid = webhooks.get(&name).await.unwrap().uid();
    webhooks
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the deleted ValidatingWebhookConfiguration is recreated",
        Duration::from_secs(30),
        || async {
            webhooks
                .get_opt(&name)
                .await
                .unwrap()
                .is_some_and(|w| w.uid() != old_uid)
        },
    )
    .await;

    // A field edited out of band is set back.
    let configmaps = Api::<ConfigMap>::namespaced(client.clone(), NS);
    let rendered = configmaps.get("tvk-config").await.unwrap().data.unwrap();
    let edited = configmaps
        .patch(
            "tvk-config",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"config.yaml": "edited by hand"}})),
        )
        .await
        .unwrap();
    assert_eq!(edited.data.unwrap()["config.yaml"], "edited by hand");
    eventually(
        "the edited ConfigMap is set back",
        Duration::from_secs(30),
        || async { configmaps.get("tvk-config").await.unwrap().data.as_ref() == Some(&rendered) },
    )
    .await;
    let status = tvms
        .get("triliovault-manager")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(
        status.helm_revision,
        Some(1),
        "healing is not a new revision"
    );

    // Periodic resync: with nothing changing (after the heal's Event is out), reconciles keep
    // coming every 2 s and write nothing but the lease renewals.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mark = server.mark();
    let count = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("tvk_manager_reconciles_total "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let start = count(&metrics.encode());
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let resyncs = count(&metrics.encode()) - start;
    assert!(
        resyncs >= 2,
        "{resyncs} reconciles in 4.5 s with a 2 s resync"
    );
    let writes: Vec<String> = server
        .requests_since(mark)
        .into_iter()
        .filter(|r| r.is_write() && !r.path.contains("/leases/"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        writes,
        Vec::<String>::new(),
        "a resync of an unchanged TVM writes nothing"
    );

    // Graceful stop: run returns and the Lease is released at once.
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("run returns within 20 s of the stop")
        .unwrap();
    let lease = Api::<Lease>::namespaced(client.clone(), NS)
        .get(LEASE)
        .await
        .unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity, None, "lease released");
    let standby = LeaderElector::new(client.clone(), NS, LEASE, "manager-1");
    assert!(
        standby
            .try_acquire_or_renew(jiff::Timestamp::now())
            .await
            .unwrap(),
        "another replica takes over without waiting for expiry"
    );
    server.shutdown().await;
}
