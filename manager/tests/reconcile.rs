#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Reconcile tests against kube-fake-client's in-memory apiserver (it implements server-side
//! apply with field managers). Every write is recorded by an interceptor so the tests assert the
//! exact calls: field manager, order, prune deletes, status writes, and no writes at all when
//! nothing changed.

mod support;

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::ConfigMap};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;
use support::{NS, Write, cluster_spec, current, setup, tvm};
use tvk_manager::{
    operations::Metrics,
    reconcile::{self, Context, Inventory},
    render::{Renderer, TemplateSource},
    tvm::{ConditionType, TrilioVaultManager, TrilioVaultManagerSpec},
};

#[tokio::test]
async fn install_applies_everything_in_order_with_one_field_manager_then_writes_status() {
    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.io}\nspec:\n  group: example.io\n  scope: Namespaced\n  names: {kind: Widget, plural: widgets}\n  versions: []\n";
    let templates = TemplateSource::embedded()
        .without_crds()
        .with_file("crds/widgets.example.io.yaml", crd);
    let (client, ctx, recorder) = setup(tvm(cluster_spec()), templates).await;
    reconcile::apply_tvm(current(&client).await, ctx.clone())
        .await
        .unwrap();
    let writes = recorder.take();
    let applies: Vec<&Write> = writes.iter().filter(|w| w.verb == "patch").collect();
    // The webhook Secret first (the CA must exist before render), then the manifest in order,
    // CRDs first.
    assert_eq!(applies[0].kind, "Secret");
    assert_eq!(applies[0].name, "tvk-webhook-serving-cert");
    assert_eq!(applies[1].kind, "CustomResourceDefinition");
    let kinds: Vec<&str> = applies[1..].iter().map(|w| w.kind.as_str()).collect();
    let first_deployment = kinds.iter().position(|k| *k == "Deployment").unwrap();
    let last_rbac = kinds.iter().rposition(|k| k.contains("Role")).unwrap();
    assert!(last_rbac < first_deployment, "{kinds:?}");
    assert_eq!(*kinds.last().unwrap(), "ValidatingWebhookConfiguration");
    assert!(
        writes
            .iter()
            .filter(|w| w.verb != "delete")
            .all(|w| w.field_manager.as_deref() == Some("tvk-manager")),
        "{writes:?}"
    );
    assert_eq!(writes.last().unwrap().verb, "patch-status");

    let tvm = current(&client).await;
    let status = tvm.status.as_ref().unwrap();
    assert_eq!(status.status.as_deref(), Some("Deployed"));
    assert_eq!(status.helm_revision, Some(1));
    assert_eq!(
        status.release_version.as_deref(),
        Some(tvk_manager::render::APP_VERSION)
    );
    let deployed = status
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::Deployed)
        .unwrap();
    assert_eq!(format!("{:?}", deployed.reason), "Some(InstallSuccessful)");
    let manifest = status
        .deployed_release
        .as_ref()
        .unwrap()
        .manifest
        .as_ref()
        .unwrap();
    assert!(
        manifest.len() < 16 * 1024,
        "status stays small: {} bytes",
        manifest.len()
    );
    assert_eq!(Inventory::decode(manifest).objects.len(), applies.len() - 1);

    // Owner reference on namespaced objects; inventory labels everywhere.
    let deployment = Api::<Deployment>::namespaced(client.clone(), NS)
        .get("tvk-control-plane")
        .await
        .unwrap();
    assert_eq!(deployment.owner_references()[0].uid, "0b7c-uid");
    assert_eq!(
        deployment.labels()["app.kubernetes.io/managed-by"],
        "tvk-manager"
    );

    // A CA bundle was generated and injected.
    let webhook =
        Api::<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration>::all(
            client.clone(),
        )
        .get("tvk-trilio-system-validating")
        .await
        .unwrap();
    assert!(
        webhook.webhooks.unwrap()[0]
            .client_config
            .ca_bundle
            .as_ref()
            .is_some_and(|b| !b.0.is_empty())
    );
}

#[tokio::test]
async fn a_second_reconcile_with_nothing_changed_writes_nothing() {
    let (client, ctx, recorder) = setup(
        tvm(cluster_spec()),
        TemplateSource::embedded().without_crds(),
    )
    .await;
    reconcile::apply_tvm(current(&client).await, ctx.clone())
        .await
        .unwrap();
    recorder.take();
    reconcile::apply_tvm(current(&client).await, ctx.clone())
        .await
        .unwrap();
    assert_eq!(
        recorder.take(),
        vec![],
        "no-change reconcile must not write"
    );
}

/// The benchmark's scenario (`benches/reconcile.rs`): the whole application, CRDs included.
#[tokio::test]
async fn a_no_change_reconcile_of_the_whole_application_sends_zero_writes() {
    let (client, ctx, recorder, installed) = support::installed_whole_application().await;
    for _ in 0..3 {
        reconcile::apply_tvm(installed.clone(), ctx.clone())
            .await
            .unwrap();
    }
    assert_eq!(
        recorder.take(),
        vec![],
        "no-change reconciles must not write"
    );
    assert_eq!(current(&client).await.status, installed.status);
}

#[tokio::test]
async fn deleted_and_edited_objects_are_healed() {
    let (client, ctx, recorder) = setup(
        tvm(cluster_spec()),
        TemplateSource::embedded().without_crds(),
    )
    .await;
    reconcile::apply_tvm(current(&client).await, ctx.clone())
        .await
        .unwrap();
    let deployments = Api::<Deployment>::namespaced(client.clone(), NS);
    deployments
        .delete("tvk-webhook", &DeleteParams::default())
        .await
        .unwrap();
    let configmaps = Api::<ConfigMap>::namespaced(client.clone(), NS);
    configmaps
        .patch(
            "tvk-config",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"config.yaml": "edited"}})),
        )
        .await
        .unwrap();
    recorder.take();
    reconcile::apply_tvm(current(&client).await, ctx.clone())
        .await
        .unwrap();
    let mut healed: Vec<String> = recorder
        .take()
        .into_iter()
        .filter(|w| w.verb == "patch")
        .map(|w| format!("{}/{}", w.kind, w.name))
        .collect();
    healed.sort();
    assert_eq!(healed, ["ConfigMap/tvk-config", "Deployment/tvk-webhook"]);
    assert!(deployments.get_opt("tvk-webhook").await.unwrap().is_some());
    assert_ne!(
        configmaps.get("tvk-config").await.unwrap().data.unwrap()["config.yaml"],
        "edited"
    );
    assert_eq!(
        current(&client)
            .await
            .status
            .as_ref()
            .unwrap()
            .helm_revision,
        Some(1),
        "heal is not a new revision"
    );
}

#[tokio::test]
async fn objects_no_longer_rendered_are_pruned_and_the_revision_moves() {
    let (client, ctx, recorder) = setup(
        tvm(TrilioVaultManagerSpec {
            ingress_config: Some(tvk_manager::tvm::IngressConfig {
                host: Some("tvk.example.com".into()),
                ..Default::default()
            }),
            ..cluster_spec()
        }),
        TemplateSource::embedded().without_crds(),
    )
    .await;
    reconcile::apply_tvm(current(&client).await, ctx.clone())
        .await
        .unwrap();
    let ingresses =
        Api::<k8s_openapi::api::networking::v1::Ingress>::namespaced(client.clone(), NS);
    assert!(ingresses.get_opt("tvk-ingress").await.unwrap().is_some());
    // Something not ours with the same name pattern must survive.
    let api = Api::<TrilioVaultManager>::namespaced(client.clone(), NS);
    let mut tvm = (*current(&client).await).clone();
    tvm.spec.ingress_config = None;
    tvm.metadata.managed_fields = None;
    api.replace("triliovault-manager", &Default::default(), &tvm)
        .await
        .unwrap();
    recorder.take();
    reconcile::apply_tvm(current(&client).await, ctx.clone())
        .await
        .unwrap();
    let writes = recorder.take();
    assert_eq!(
        writes
            .iter()
            .filter(|w| w.verb == "delete")
            .map(|w| w.name.as_str())
            .collect::<Vec<_>>(),
        ["tvk-ingress"]
    );
    assert!(ingresses.get_opt("tvk-ingress").await.unwrap().is_none());
    let status = current(&client).await.status.clone().unwrap();
    assert_eq!(status.helm_revision, Some(2));
    let updated = status
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::Deployed)
        .unwrap();
    assert_eq!(format!("{:?}", updated.reason), "Some(UpdateSuccessful)");
}

#[tokio::test]
async fn an_invalid_spec_is_irreconcilable_and_nothing_is_applied() {
    let mut bad = tvm(cluster_spec());
    bad.spec.helm_values = Some(json!({"schedule_policy_timezone": "UTC"}));
    let (client, ctx, recorder) = setup(bad, TemplateSource::embedded().without_crds()).await;
    reconcile::apply_tvm(current(&client).await, ctx.clone())
        .await
        .unwrap();
    let writes = recorder.take();
    assert!(writes.iter().all(|w| w.kind != "Deployment"), "{writes:?}");
    let status = current(&client).await.status.clone().unwrap();
    assert_eq!(status.status.as_deref(), Some("Irreconcilable"));
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::Irreconcilable)
        .unwrap();
    assert!(
        c.message
            .as_ref()
            .unwrap()
            .contains("schedulePolicyTimezone"),
        "{c:?}"
    );
}

#[tokio::test]
async fn a_downgrade_is_refused_and_nothing_changes() {
    let (client, ctx, recorder) = setup(
        tvm(cluster_spec()),
        TemplateSource::embedded().without_crds(),
    )
    .await;
    let api = Api::<TrilioVaultManager>::namespaced(client.clone(), NS);
    api.patch_status(
        "triliovault-manager",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"releaseVersion": "99.0.0"}})),
    )
    .await
    .unwrap();
    recorder.take();
    reconcile::apply_tvm(current(&client).await, ctx.clone())
        .await
        .unwrap();
    let writes = recorder.take();
    assert_eq!(
        writes.iter().map(|w| w.verb).collect::<Vec<_>>(),
        ["patch-status"],
        "{writes:?}"
    );
    let status = current(&client).await.status.clone().unwrap();
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::Irreconcilable)
        .unwrap();
    assert!(
        c.message
            .as_ref()
            .unwrap()
            .contains("downgrades are not supported")
    );
    assert_eq!(status.release_version.as_deref(), Some("99.0.0"));
}

#[tokio::test]
async fn uninstall_deletes_what_was_installed_but_keeps_crds_unless_asked() {
    let (client, ctx, recorder) = setup(
        tvm(cluster_spec()),
        TemplateSource::embedded().without_crds(),
    )
    .await;
    reconcile::apply_tvm(current(&client).await, ctx.clone())
        .await
        .unwrap();
    recorder.take();
    reconcile::cleanup_tvm(current(&client).await, ctx.clone())
        .await
        .unwrap();
    let deleted: Vec<String> = recorder
        .take()
        .into_iter()
        .filter(|w| w.verb == "delete")
        .map(|w| w.name)
        .collect();
    assert!(deleted.contains(&"tvk-control-plane".to_string()));
    assert!(deleted.contains(&"tvk-trilio-system-validating".to_string()));
    assert!(
        !deleted
            .iter()
            .any(|n| n.ends_with(".triliovault.trilio.io")),
        "CRDs kept: {deleted:?}"
    );
    // Webhook configurations go first, CRD-consuming workloads before RBAC.
    let validating = deleted
        .iter()
        .position(|n| n == "tvk-trilio-system-validating")
        .unwrap();
    let sa = deleted
        .iter()
        .position(|n| n == "tvk-control-plane")
        .unwrap();
    assert!(validating < sa);
    assert!(
        Api::<Deployment>::namespaced(client.clone(), NS)
            .get_opt("tvk-control-plane")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn an_upgrade_from_the_previous_template_set_applies_the_new_one_and_prunes_the_old() {
    // "Previous release": the same templates plus an object the current release dropped.
    let legacy = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: tvk-legacy-settings\n  namespace: {{Release.namespace}}\ndata: {mode: old}\n";
    let previous = TemplateSource::embedded()
        .without_crds()
        .with_file("legacy.yaml.hbs", legacy);
    let (client, old_ctx, recorder) = setup(tvm(cluster_spec()), previous).await;
    reconcile::apply_tvm(current(&client).await, old_ctx)
        .await
        .unwrap();
    let configmaps = Api::<ConfigMap>::namespaced(client.clone(), NS);
    assert!(
        configmaps
            .get_opt("tvk-legacy-settings")
            .await
            .unwrap()
            .is_some()
    );
    // The previous manager recorded an older version.
    Api::<TrilioVaultManager>::namespaced(client.clone(), NS)
        .patch_status(
            "triliovault-manager",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"releaseVersion": "0.0.9"}})),
        )
        .await
        .unwrap();
    recorder.take();

    let ctx = Arc::new(Context {
        client: client.clone(),
        renderer: Arc::new(Renderer::new(&TemplateSource::embedded().without_crds()).unwrap()),
        related_images: vec![],
        resync: Duration::from_secs(300),
        crd_timeout: Duration::from_secs(2),
        recorder: None,
        metrics: Arc::new(Metrics::default()),
    });
    reconcile::apply_tvm(current(&client).await, ctx)
        .await
        .unwrap();
    let writes = recorder.take();
    let deleted: Vec<&str> = writes
        .iter()
        .filter(|w| w.verb == "delete")
        .map(|w| w.name.as_str())
        .collect();
    assert_eq!(deleted, ["tvk-legacy-settings"]);
    // Prune comes after every apply, and the status is written last.
    let first_delete = writes.iter().position(|w| w.verb == "delete").unwrap();
    assert!(writes[..first_delete].iter().all(|w| w.verb == "patch"));
    assert_eq!(writes.last().unwrap().verb, "patch-status");
    assert!(
        configmaps
            .get_opt("tvk-legacy-settings")
            .await
            .unwrap()
            .is_none()
    );
    let status = current(&client).await.status.clone().unwrap();
    assert_eq!(
        status.release_version.as_deref(),
        Some(tvk_manager::render::APP_VERSION)
    );
    assert_eq!(status.helm_revision, Some(2));
    let updated = status
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::Updated)
        .unwrap();
    assert_eq!(format!("{:?}", updated.reason), "Some(UpdateSuccessful)");
}

#[tokio::test]
async fn a_second_cluster_scoped_tvm_is_irreconcilable() {
    let mut first = tvm(cluster_spec());
    first.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2020-01-01T00:00:00Z".parse().unwrap(),
    ));
    let (client, ctx, recorder) = setup(first, TemplateSource::embedded().without_crds()).await;
    let mut other = tvm(cluster_spec());
    other.metadata.name = Some("second".into());
    other.metadata.namespace = Some("other-ns".into());
    other.metadata.uid = Some("second-uid".into());
    other.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));
    let others = Api::<TrilioVaultManager>::namespaced(client.clone(), "other-ns");
    others.create(&Default::default(), &other).await.unwrap();
    let other = Arc::new(others.get("second").await.unwrap());
    recorder.take();
    reconcile::apply_tvm(other, ctx).await.unwrap();
    let writes = recorder.take();
    assert_eq!(
        writes.iter().map(|w| w.verb).collect::<Vec<_>>(),
        ["patch-status"],
        "{writes:?}"
    );
    let status = others.get("second").await.unwrap().status.unwrap();
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::Irreconcilable)
        .unwrap();
    assert!(
        c.message
            .as_ref()
            .unwrap()
            .contains("already Cluster-scoped"),
        "{c:?}"
    );
}

#[tokio::test]
async fn install_records_an_event_on_the_tvm() {
    let (client, ctx, _recorder) = setup(
        tvm(cluster_spec()),
        TemplateSource::embedded().without_crds(),
    )
    .await;
    let ctx = Arc::new(Context {
        client: client.clone(),
        renderer: ctx.renderer.clone(),
        related_images: vec![],
        resync: Duration::from_secs(300),
        crd_timeout: Duration::from_secs(2),
        recorder: Some(reconcile::recorder(client.clone())),
        metrics: Arc::new(Metrics::default()),
    });
    reconcile::apply_tvm(current(&client).await, ctx.clone())
        .await
        .unwrap();
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), NS)
        .list(&Default::default())
        .await
        .unwrap();
    let event = events
        .items
        .iter()
        .find(|e| e.reason.as_deref() == Some("Reconciled"))
        .expect("a Reconciled event");
    assert_eq!(
        event.regarding.as_ref().unwrap().name.as_deref(),
        Some("triliovault-manager")
    );
    assert!(
        event
            .note
            .as_ref()
            .unwrap()
            .starts_with("installed version"),
        "{:?}",
        event.note
    );
}
