#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Opt-in real-cluster test (`KUBECONFIG`): install, heal, uninstall through the reconciler's
//! stages against a real apiserver (CRDs become Established for real, server-side apply and
//! owner references are checked by the apiserver). Pods need the images to start; this test
//! only asserts the objects.
//!
//! `cargo test -p tvk-manager --test e2e -- --ignored`

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Namespace},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use tvk_manager::{
    operations::Metrics,
    reconcile::{self, Context},
    render::{Renderer, TemplateSource},
    tvm::{ApplicationScope, TrilioVaultManager, TrilioVaultManagerSpec},
};

async fn get_tvm(api: &Api<TrilioVaultManager>, name: &str) -> Arc<TrilioVaultManager> {
    Arc::new(api.get(name).await.unwrap())
}

#[tokio::test]
#[ignore = "needs KUBECONFIG: real-cluster e2e"]
async fn e2e_install_heal_uninstall() {
    let client = Client::try_default()
        .await
        .expect("KUBECONFIG must point at a cluster for the e2e suite");
    let ns = format!("tvk-e2e-{}", std::process::id());
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.clone()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    crds.patch(
        "triliovaultmanagers.triliovault.trilio.io",
        &PatchParams::apply("tvk-e2e").force(),
        &Patch::Apply(tvk_manager::crd::tvm_crd()),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let tvms = Api::<TrilioVaultManager>::namespaced(client.clone(), &ns);
    let mut tvm = TrilioVaultManager::new(
        "e2e",
        TrilioVaultManagerSpec {
            application_scope: ApplicationScope::Namespaced,
            ..Default::default()
        },
    );
    tvm.metadata.namespace = Some(ns.clone());
    tvms.create(&PostParams::default(), &tvm).await.unwrap();
    let ctx = Arc::new(Context {
        client: client.clone(),
        renderer: Arc::new(Renderer::new(&TemplateSource::embedded()).unwrap()),
        related_images: vec![],
        resync: Duration::from_secs(300),
        crd_timeout: Duration::from_secs(60),
        recorder: Some(reconcile::recorder(client.clone())),
        metrics: Arc::new(Metrics::default()),
    });

    // Install.
    reconcile::apply_tvm(get_tvm(&tvms, "e2e").await, ctx.clone())
        .await
        .unwrap();
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let control_plane = deployments.get("tvk-control-plane").await.unwrap();
    assert_eq!(control_plane.owner_references()[0].name, "e2e");
    let status = get_tvm(&tvms, "e2e").await.status.clone().unwrap();
    assert_eq!(status.status.as_deref(), Some("Deployed"));

    // Heal a deleted Deployment.
    deployments
        .delete("tvk-webhook", &DeleteParams::default())
        .await
        .unwrap();
    reconcile::apply_tvm(get_tvm(&tvms, "e2e").await, ctx.clone())
        .await
        .unwrap();
    assert!(deployments.get_opt("tvk-webhook").await.unwrap().is_some());

    // Uninstall: objects go, app CRDs stay.
    reconcile::cleanup_tvm(get_tvm(&tvms, "e2e").await, ctx.clone())
        .await
        .unwrap();
    assert!(
        deployments
            .get_opt("tvk-control-plane")
            .await
            .unwrap()
            .is_none_or(|d| d.metadata.deletion_timestamp.is_some())
    );
    assert!(
        crds.get_opt("targets.triliovault.trilio.io")
            .await
            .unwrap()
            .is_some()
    );
    tvms.delete("e2e", &DeleteParams::default()).await.unwrap();
    Api::<Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
}
