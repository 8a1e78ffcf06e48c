#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The metaprocessor end to end, as the restore Jobs run it: a backup written by the real
//! `snapshot` and `commit` commands into a filesystem target, then `restore-plan` and `restore`
//! as child processes against the in-memory API server (tvk-test-apiserver), restoring the
//! namespace `shop` into `copy`.

mod common;

use common::{
    Run, S3_ENV, create_backup, create_cluster_plan_and_backup, create_namespaces, create_plan,
    install_tvk_crds, metamover, metamover_env, restore_args,
};
use std::path::Path;

use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::{Value, json};
use tvk_api::restore_plan::{ObjectResult, PlanAction, RestorePlan};
use tvk_metamover::plan::RESTORE_UID_LABEL;
use tvk_test_apiserver::{ApiServer, Options};
use tvk_testkit::TempDir;

const MANIFEST: &str = "---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: web\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n";

fn helm_secret(ns: &str) -> Value {
    let release = json!({"name": "web", "namespace": ns, "version": 1,
        "info": {"status": "deployed"}, "config": {"image": {"tag": "1"}},
        "chart": {"metadata": {"name": "web", "version": "0.1.0"}}, "manifest": MANIFEST});
    fixture::release_storage_secret(&release, "deployed")
}

const CRD_NAME: &str = "widgets.example.com";

fn crd() -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})
}

/// A namespace `shop` with a Helm release, a custom resource owning the Deployment, a
/// ConfigMap owned by the ServiceAccount, a Service with an IP, a bound PVC and `extra` objects;
/// backed up (snapshot, volume "uploaded", commit). Returns the backup's location.
async fn backed_up_with(server: &ApiServer, target: &Path, extra: Vec<Value>) -> String {
    install_tvk_crds(server);
    server.create(crd()).unwrap();
    let ns = "shop";
    server
        .create(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns,
            "labels": {"team": "blue"}, "annotations": {"owner": "ops"}}}),
        )
        .unwrap();
    create_namespaces(server, &["copy", "other"]);
    server
        .create(
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "fast"}, "provisioner": "csi.example.com"}),
        )
        .unwrap();
    let widget = server
        .create(json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w1", "namespace": ns}, "spec": {"size": 1}}))
        .unwrap();
    let sa = server
        .create(json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "web", "namespace": ns}}))
        .unwrap();
    let objs = [
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config", "namespace": ns},
            "data": {"k": "backed-up"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owned", "namespace": ns,
            "ownerReferences": [{"apiVersion": "v1", "kind": "ServiceAccount", "name": "web",
                "uid": sa["metadata"]["uid"]}]}, "data": {}}),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "db-pass", "namespace": ns}, "data": {"p": STANDARD.encode("pw")}}),
        helm_secret(ns),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
            "spec": {"clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"], "ports": [{"port": 80}]}}),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": ns},
            "spec": {"volumeName": "pv-1", "storageClassName": "fast", "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": ns, "ownerReferences": [{"apiVersion": "example.com/v1",
                "kind": "Widget", "name": "w1", "uid": widget["metadata"]["uid"]}]},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"serviceAccountName": "web",
                    "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
                    "containers": [{"name": "web", "image": "nginx:1"}]}}}}),
    ];
    for o in objs.into_iter().chain(extra) {
        server.create(o).unwrap();
    }
    snapshot_and_commit(server, target, ns).await
}

/// Backup `b1` of plan `plan` in namespace `ns`, as the Jobs and the control plane make it:
/// `snapshot`, then every volume "uploaded" (each `persistentVolumeClaimName` in the Backup's
/// status gets a volume directory under the location, recorded as its `location`), then
/// `commit`. Returns the backup's location.
async fn snapshot_and_commit(server: &ApiServer, target: &Path, ns: &str) -> String {
    let plan_uid = create_plan(server, ns, json!({}));
    let location = format!("{plan_uid}/{}", create_backup(server, ns, "b1"));
    let kc = server.kubeconfig_path();
    let tdir = target.to_str().unwrap();
    let backup_args = [
        "--kind",
        "Backup",
        "--namespace",
        ns,
        "--name",
        "b1",
        "--target",
        tdir,
    ];
    metamover(kc, &[&["snapshot"][..], &backup_args].concat())
        .await
        .ok();
    fn upload(v: &mut Value, server: &ApiServer, ns: &str, target: &Path, location: &str) {
        match v {
            Value::Object(m) => {
                if let Some(pvc) = m.get("persistentVolumeClaimName").and_then(Value::as_str) {
                    let uid = server
                        .get("v1", "PersistentVolumeClaim", Some(ns), pvc)
                        .unwrap()["metadata"]["uid"]
                        .as_str()
                        .unwrap()
                        .to_owned();
                    let vol = format!("{location}/{uid}");
                    std::fs::create_dir_all(target.join(&vol)).unwrap();
                    std::fs::write(target.join(&vol).join("manifest.json"), b"{}").unwrap();
                    m.insert("location".into(), json!(vol));
                }
                m.values_mut()
                    .for_each(|c| upload(c, server, ns, target, location));
            }
            Value::Array(a) => a
                .iter_mut()
                .for_each(|c| upload(c, server, ns, target, location)),
            _ => {}
        }
    }
    let mut status = server
        .get("triliovault.trilio.io/v1", "Backup", Some(ns), "b1")
        .unwrap()["status"]
        .clone();
    upload(&mut status, server, ns, target, &location);
    status["location"] = json!(location);
    let backups: kube::Api<tvk_api::Backup> = kube::Api::namespaced(server.client(), ns);
    backups
        .patch_status(
            "b1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();
    metamover(kc, &[&["commit"][..], &backup_args].concat())
        .await
        .ok();
    location
}

/// A test API server, a filesystem target and the location of a backup committed there: what
/// the tests restore from (Restores in namespace `copy`).
struct World {
    server: ApiServer,
    target: TempDir,
    location: String,
}

impl World {
    /// [`backed_up_with`] `extra`, on a new server and target (`prefix` names the target).
    async fn backed_up(prefix: &str, extra: Vec<Value>) -> Self {
        let mut w = Self::start(prefix, Options::default()).await;
        w.location = backed_up_with(&w.server, w.target.path(), extra).await;
        w
    }

    /// [`helm_backed_up`] on a new server started with `options`.
    async fn helm(
        prefix: &str,
        options: Options,
        config: &Value,
        tamper: Option<(&str, &str)>,
    ) -> Self {
        let mut w = Self::start(prefix, options).await;
        w.location = helm_backed_up(&w.server, w.target.path(), config, tamper).await;
        w
    }

    async fn start(prefix: &str, options: Options) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            server: ApiServer::start_with(options).await.unwrap(),
            target: TempDir::new(prefix).unwrap(),
            location: String::new(),
        }
    }

    fn tdir(&self) -> &str {
        self.target.path().to_str().unwrap()
    }

    /// Creates Restore `copy/name` of the backup with `extra` spec fields (see [`restore`]).
    fn create(&self, name: &str, extra: Value) -> Value {
        self.server
            .create(restore(name, &self.location, extra))
            .unwrap()
    }

    /// Runs `cmd` (`restore-plan`, `restore`) for Restore `copy/name` from the backup.
    async fn run(&self, cmd: &str, name: &str) -> Run {
        self.run_env(cmd, name, &[]).await
    }

    /// [`Self::run`] with more environment.
    async fn run_env(&self, cmd: &str, name: &str, env: &[(&str, &str)]) -> Run {
        metamover_env(
            self.server.kubeconfig_path(),
            &restore_args(cmd, name, &self.location, self.tdir()),
            env,
        )
        .await
    }

    /// Runs `restore-plan` for Restore `copy/name`, which must succeed, and returns the plan
    /// it recorded.
    async fn plan(&self, name: &str) -> RestorePlan {
        self.run("restore-plan", name).await.ok();
        plan_of(&self.server, name)
    }
}

fn restore(name: &str, location: &str, extra: Value) -> Value {
    let mut spec = json!({"source": {"type": "Location", "location": location,
        "target": {"name": "t", "namespace": "shop"}}, "resourcesReadyWaitSeconds": 0});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Restore",
        "metadata": {"name": name, "namespace": "copy"}, "spec": spec})
}

fn plan_of(server: &ApiServer, name: &str) -> RestorePlan {
    let r = server
        .get("triliovault.trilio.io/v1", "Restore", Some("copy"), name)
        .unwrap();
    RestorePlan::from_status_value(r.pointer("/status/restoreApplication"))
        .unwrap()
        .unwrap_or_else(|| panic!("no plan in {r}"))
}

fn planned<'a>(
    plan: &'a RestorePlan,
    kind: &str,
    name: &str,
) -> &'a tvk_api::restore_plan::PlannedObject {
    plan.objects
        .iter()
        .find(|o| o.kind == kind && o.name == name)
        .unwrap_or_else(|| panic!("{kind} {name} not in the plan: {:#?}", plan.objects))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_restored_into_another_namespace() {
    let w = World::backed_up("mm-restore", Vec::new()).await;
    let (server, location) = (&w.server, w.location.as_str());
    // The destination already has a ConfigMap of that name, and the CRD is gone (restored first).
    server
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "app-config", "namespace": "copy"}, "data": {"k": "theirs"}}))
        .unwrap();
    server
        .delete(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            CRD_NAME,
        )
        .unwrap();
    let transform = json!({"custom": [{"transformName": "new-image",
        "resources": {"groupVersionKind": {"group": "apps", "kind": "Deployment"}, "objects": ["web"]},
        "jsonPatches": [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "nginx:2"}]}]});
    let r1 = w.create("r1", json!({"transformComponents": transform}));
    let r1_uid = r1["metadata"]["uid"].as_str().unwrap().to_owned();

    // 1. The conflict blocks the plan; the Job still succeeds (a plan was computed).
    let plan = w.plan("r1").await;
    assert_eq!(plan.source.location, location);
    assert_eq!(plan.source.backup_name.as_deref(), Some("b1"));
    assert!(
        plan.blocking
            .iter()
            .any(|b| b.contains("ConfigMap copy/app-config already exists")
                && b.contains("skipIfAlreadyExists")),
        "{:?}",
        plan.blocking
    );
    // Nothing is written before the plan is clean.
    let refused = w.run("restore", "r1").await;
    assert_eq!(refused.code, 1);
    assert!(
        refused.result()["error"]
            .as_str()
            .unwrap()
            .contains("blocked")
    );
    assert!(
        server
            .get("apps/v1", "Deployment", Some("copy"), "web")
            .is_none()
    );

    // 2. With skipIfAlreadyExists the plan is clean and ordered.
    let restores: kube::Api<tvk_api::Restore> = kube::Api::namespaced(server.client(), "copy");
    restores
        .patch(
            "r1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"spec": {"restoreFlags": {"skipIfAlreadyExists": true}}}),
            ),
        )
        .await
        .unwrap();
    let plan = w.plan("r1").await;
    assert!(plan.blocking.is_empty(), "{:?}", plan.blocking);
    assert_eq!(plan.objects[0].kind, "CustomResourceDefinition");
    assert_eq!(plan.objects[0].action, PlanAction::Create);
    assert_eq!(
        planned(&plan, "ConfigMap", "app-config").action,
        PlanAction::Skip
    );
    assert_eq!(
        planned(&plan, "PersistentVolumeClaim", "data").action,
        PlanAction::Skip
    );
    let widget_pos = plan
        .objects
        .iter()
        .position(|o| o.kind == "Widget")
        .unwrap();
    let deploy_pos = plan
        .objects
        .iter()
        .position(|o| o.kind == "Deployment")
        .unwrap();
    assert!(deploy_pos < widget_pos, "custom resources last");
    let dep = planned(&plan, "Deployment", "web");
    assert_eq!(dep.namespace.as_deref(), Some("copy"));
    assert_eq!(dep.source_namespace.as_deref(), Some("shop"));
    assert_eq!(plan.namespaces.len(), 1);
    assert!(plan.namespaces[0].exists);
    assert_eq!(plan.volumes.len(), 1);
    let v = &plan.volumes[0];
    assert_eq!(
        (v.namespace.as_str(), v.pvc_name.as_str()),
        ("copy", "data")
    );
    assert!(v.location.starts_with(location));
    assert_eq!(v.storage_class_name.as_deref(), Some("fast"));

    // 3. DataRestore (the controller) creates the PVC from the plan.
    let mut pvc: Value = serde_json::from_str(&v.pvc_metadata).unwrap();
    assert_eq!(
        pvc["metadata"]["labels"][RESTORE_UID_LABEL],
        r1_uid.as_str()
    );
    assert!(pvc["spec"].get("volumeName").is_none());
    pvc["apiVersion"] = json!("v1");
    server.create(pvc).unwrap();

    // 4. MetadataRestore.
    let mark = server.mark();
    let run = w.run("restore", "r1").await;
    assert_eq!(run.code, 0, "{:?}\n{}", run.lines, run.stderr);
    let get = |api: &str, kind: &str, name: &str| {
        server
            .get(api, kind, Some("copy"), name)
            .unwrap_or_else(|| panic!("{kind} copy/{name} not restored"))
    };
    // The CRD came back first, then its custom resource.
    assert!(
        server
            .get(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                None,
                CRD_NAME
            )
            .is_some()
    );
    let widget = get("example.com/v1", "Widget", "w1");
    let sa = get("v1", "ServiceAccount", "web");
    let dep = get("apps/v1", "Deployment", "web");
    assert_eq!(dep["metadata"]["namespace"], "copy");
    assert_eq!(
        dep["metadata"]["labels"][RESTORE_UID_LABEL],
        r1_uid.as_str()
    );
    assert_eq!(
        dep["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:2"
    );
    // Owner references re-linked to the restored owners' new UIDs (the Widget came later).
    assert_eq!(
        dep["metadata"]["ownerReferences"][0]["uid"],
        widget["metadata"]["uid"]
    );
    let owned = get("v1", "ConfigMap", "owned");
    assert_eq!(
        owned["metadata"]["ownerReferences"][0]["uid"],
        sa["metadata"]["uid"]
    );
    assert_ne!(
        owned["metadata"]["ownerReferences"][0]["uid"],
        server
            .get("v1", "ServiceAccount", Some("shop"), "web")
            .unwrap()["metadata"]["uid"]
    );
    let svc = get("v1", "Service", "web");
    assert_ne!(svc["spec"].get("clusterIP"), Some(&json!("10.0.0.5")));
    // The existing ConfigMap is left alone.
    assert_eq!(get("v1", "ConfigMap", "app-config")["data"]["k"], "theirs");
    // The Helm release storage, in the new namespace (Helm transforms: helm_* tests below).
    let hs = get("v1", "Secret", "sh.helm.release.v1.web.v1");
    assert_eq!(hs["metadata"]["labels"]["owner"], "helm");
    let text = String::from_utf8(
        STANDARD
            .decode(hs["data"]["release"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let rel = tvk_metamover::helm::decode_release_value(&text, "x").unwrap();
    assert_eq!(rel["namespace"], "copy");
    assert_eq!(rel["config"]["image"]["tag"], "1");
    // The DataRestore PVC was not touched.
    let creates: Vec<_> = server
        .requests_since(mark)
        .into_iter()
        .filter(|q| q.method == "POST")
        .collect();
    assert!(
        !creates
            .iter()
            .any(|q| q.path.contains("persistentvolumeclaims"))
    );
    assert!(
        creates
            .iter()
            .all(|q| q.field_manager.as_deref() == Some("tvk-metamover"))
    );
    // Results in the status.
    let plan = plan_of(server, "r1");
    assert_eq!(
        planned(&plan, "Deployment", "web").result,
        Some(ObjectResult::Created)
    );
    assert_eq!(
        planned(&plan, "ConfigMap", "app-config").result,
        Some(ObjectResult::Skipped)
    );
    assert!(
        plan.created
            .iter()
            .any(|c| c.kind == "Deployment" && c.name == "web")
    );
    assert!(!plan.created.iter().any(|c| c.name == "app-config"));
    // Nothing runs pods here: the Deployment is reported, not waited for forever.
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("Deployment.apps copy/web") && w.contains("not ready")),
        "{:?}",
        plan.warnings
    );
    assert_eq!(
        run.result()["result"]["notReady"][0],
        "Deployment.apps copy/web"
    );
    let n_created = plan.created.len();
    assert_eq!(n_created, creates.len(), "{:#?}", plan.created);

    // 5. A crash after creating everything but before recording it: the rerun recognises its
    // objects by the restore label, creates nothing and restores the record.
    restores
        .patch_status(
            "r1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"restoreApplication": {"created": null}}})),
        )
        .await
        .unwrap();
    let mark = server.mark();
    let rerun = w.run("restore", "r1").await;
    assert_eq!(rerun.code, 0, "{:?}\n{}", rerun.lines, rerun.stderr);
    assert!(
        !server
            .requests_since(mark)
            .iter()
            .any(|q| q.method == "POST"),
        "nothing created twice"
    );
    assert_eq!(plan_of(server, "r1").created.len(), n_created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_transforms_selections_and_missing_commits() {
    let w = World::backed_up("mm-restore-bad", Vec::new()).await;
    let (server, location, target) = (&w.server, w.location.as_str(), w.target.path());

    // A transform that does not apply blocks the plan, naming the transform and the object.
    w.create(
        "bad",
        json!({
            "restoreFlags": {"skipIfAlreadyExists": true},
            "transformComponents": {"custom": [{"transformName": "broken",
                "resources": {"groupVersionKind": {"group": "apps", "kind": "Deployment"}},
                "jsonPatches": [{"op": "replace", "path": "/spec/nothing", "value": 1}]}],
                "helm": [{"transformName": "typo", "release": "wbe",
                    "set": [{"key": "image.tag", "value": "2"}]}]}}),
    );
    let plan = w.plan("bad").await;
    assert!(
        plan.blocking
            .iter()
            .any(|b| b.contains("broken") && b.contains("Deployment.apps copy/web")),
        "{:?}",
        plan.blocking
    );
    assert!(
        plan.blocking
            .iter()
            .any(|b| b.contains("typo names release wbe") && b.contains("releases: web")),
        "{:?}",
        plan.blocking
    );

    // Selectors and exclusions, onlyMetadata.
    w.create("sel", json!({
            "restoreFlags": {"onlyMetadata": true},
            "resourceSelector": {"gvkSelector": [{"groupVersionKind": {"group": "", "kind": "ConfigMap"}},
                {"groupVersionKind": {"group": "apps", "kind": "Deployment"}}]},
            "excludeResourceSelector": {"gvkSelector": [{"groupVersionKind": {"group": "", "kind": "ConfigMap"},
                "objects": ["app-config"]}]}}));
    let plan = w.plan("sel").await;
    assert!(plan.blocking.is_empty(), "{:?}", plan.blocking);
    assert!(plan.volumes.is_empty(), "onlyMetadata");
    assert_eq!(
        planned(&plan, "ConfigMap", "owned").action,
        PlanAction::Create
    );
    assert_eq!(
        planned(&plan, "ConfigMap", "app-config").action,
        PlanAction::Exclude
    );
    assert_eq!(planned(&plan, "Service", "web").action, PlanAction::Exclude);
    assert_eq!(
        planned(&plan, "Deployment", "web").action,
        PlanAction::Create
    );
    // Not selected (with onlyMetadata it would be an ordinary object, not a volume).
    assert_eq!(
        planned(&plan, "PersistentVolumeClaim", "data").action,
        PlanAction::Exclude
    );
    w.run("restore", "sel").await.ok();
    assert!(
        server
            .get("v1", "ConfigMap", Some("copy"), "owned")
            .is_some()
    );
    assert!(
        server
            .get("v1", "ConfigMap", Some("copy"), "app-config")
            .is_none()
    );
    assert!(server.get("v1", "Service", Some("copy"), "web").is_none());

    // A location without commit.json is refused, by name.
    let uncommitted = "p-uid/b-uid";
    std::fs::create_dir_all(target.join(uncommitted).join("_metadata")).unwrap();
    server
        .create(restore("nocommit", uncommitted, json!({})))
        .unwrap();
    let run = metamover(
        server.kubeconfig_path(),
        &restore_args("restore-plan", "nocommit", uncommitted, w.tdir()),
    )
    .await;
    assert_eq!(run.code, 1, "{:?}", run.lines);
    let err = run.result()["error"].as_str().unwrap();
    assert!(
        err.contains("commit.json") && err.contains("p-uid/b-uid"),
        "{err}"
    );
    // Hostile locations never leave the target.
    let run = metamover(
        server.kubeconfig_path(),
        &restore_args("restore-plan", "nocommit", "../etc", w.tdir()),
    )
    .await;
    assert_eq!(run.code, 1);
    // A damaged document is found before anything is planned.
    let index: tvk_metamover::layout::Index = serde_json::from_slice(
        &std::fs::read(target.join(location).join("_metadata/index.json")).unwrap(),
    )
    .unwrap();
    let victim = target
        .join(location)
        .join("_metadata")
        .join(&index.documents[0].key);
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&victim, &bytes).unwrap();
    let run = w.run("restore-plan", "sel").await;
    assert_eq!(run.code, 1);
    assert!(run.result()["error"].as_str().unwrap().contains("BLAKE3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_restore_maps_namespaces_and_records_created_ones() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = ApiServer::start().await.unwrap();
    install_tvk_crds(&server);
    for n in ["shop", "keep"] {
        server
            .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}))
            .unwrap();
        server
            .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "settings", "namespace": n}, "data": {"ns": n}}))
            .unwrap();
    }
    server
        .create(json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "web", "namespace": "shop"}}))
        .unwrap();
    server
        .create(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "web", "namespace": "shop"},
            "subjects": [{"kind": "ServiceAccount", "name": "web", "namespace": "shop"}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}}))
        .unwrap();
    let (plan, backup) = create_cluster_plan_and_backup(
        &server,
        json!({"backupComponents": [{"namespace": "shop"}, {"namespace": "keep"}]}),
    );
    let location = format!(
        "{}/{}",
        plan["metadata"]["uid"].as_str().unwrap(),
        backup["metadata"]["uid"].as_str().unwrap()
    );
    // On S3 (moto), credentials from the environment, as the Jobs get them.
    let moto = tvk_testkit::moto().unwrap();
    let bucket = tvk_testkit::unique_name("mm-restore");
    tvk_testkit::create_bucket(moto.addr(), &bucket).unwrap();
    let tdir = format!("s3://{bucket}/cluster");
    let endpoint = moto.url();
    let kc = server.kubeconfig_path().to_path_buf();
    let backup_args = [
        "--kind",
        "ClusterBackup",
        "--name",
        "cb",
        "--target",
        tdir.as_str(),
        "--s3-endpoint",
        endpoint.as_str(),
    ];
    for cmd in ["snapshot", "commit"] {
        let run = metamover_env(&kc, &[&[cmd][..], &backup_args].concat(), &S3_ENV).await;
        assert_eq!(run.code, 0, "{cmd}: {:?}\n{}", run.lines, run.stderr);
    }
    server
        .create(
            json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "ClusterRestore",
            "metadata": {"name": "cr"},
            "spec": {"source": {"type": "Location", "location": location,
                    "target": {"name": "t", "namespace": "default"}},
                "components": [{"backupNamespace": "shop", "restoreNamespace": "shop2"}],
                "excludeComponents": ["keep"],
                "globalConfig": {"resourcesReadyWaitSeconds": 0}}}),
        )
        .unwrap();
    let cargs = |cmd: &'static str| {
        vec![
            cmd.to_owned(),
            "--kind".into(),
            "ClusterRestore".into(),
            "--name".into(),
            "cr".into(),
            "--location".into(),
            location.clone(),
            "--target".into(),
            tdir.clone(),
            "--s3-endpoint".into(),
            endpoint.clone(),
        ]
    };
    let a = cargs("restore-plan");
    let run = metamover_env(
        &kc,
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &S3_ENV,
    )
    .await;
    assert_eq!(run.code, 0, "{:?}\n{}", run.lines, run.stderr);
    let cr = server
        .get("triliovault.trilio.io/v1", "ClusterRestore", None, "cr")
        .unwrap();
    let plan = RestorePlan::from_status_value(cr.pointer("/status/restoreApplication"))
        .unwrap()
        .unwrap();
    assert!(plan.blocking.is_empty(), "{:?}", plan.blocking);
    assert_eq!(plan.namespaces.len(), 1, "{:?}", plan.namespaces);
    assert_eq!(plan.namespaces[0].name, "shop2");
    assert!(!plan.namespaces[0].exists);
    assert_eq!(
        planned(&plan, "Namespace", "shop2").action,
        PlanAction::Create
    );
    let kept = plan
        .objects
        .iter()
        .find(|o| o.kind == "ConfigMap" && o.namespace.as_deref() == Some("keep"))
        .unwrap();
    assert_eq!(kept.action, PlanAction::Exclude);

    let a = cargs("restore");
    let run = metamover_env(
        &kc,
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &S3_ENV,
    )
    .await;
    assert_eq!(run.code, 0, "{:?}\n{}", run.lines, run.stderr);
    let ns = server.get("v1", "Namespace", None, "shop2").unwrap();
    assert!(ns["metadata"]["labels"][RESTORE_UID_LABEL].is_string());
    assert_eq!(
        server
            .get("v1", "ConfigMap", Some("shop2"), "settings")
            .unwrap()["data"]["ns"],
        "shop"
    );
    let rb = server
        .get(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            Some("shop2"),
            "web",
        )
        .unwrap();
    assert_eq!(rb["subjects"][0]["namespace"], "shop2");
    let cr = server
        .get("triliovault.trilio.io/v1", "ClusterRestore", None, "cr")
        .unwrap();
    assert_eq!(cr["status"]["createdNamespaces"], json!(["shop2"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patched_objects_and_a_failed_object_are_recorded() {
    let w = World::backed_up("mm-restore-patch", Vec::new()).await;
    let server = &w.server;
    server
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "app-config", "namespace": "copy", "labels": {"mine": "yes"}},
            "data": {"k": "theirs"}}))
        .unwrap();
    w.create("p", json!({"restoreFlags": {"patchIfAlreadyExists": true}}));
    let plan = w.plan("p").await;
    assert!(plan.blocking.is_empty(), "{:?}", plan.blocking);
    assert_eq!(
        planned(&plan, "ConfigMap", "app-config").action,
        PlanAction::Patch
    );
    let restored_pvc = plan.volumes[0].pvc_metadata.clone();
    server
        .create(serde_json::from_str(&restored_pvc).unwrap())
        .unwrap();
    w.run("restore", "p").await.ok();
    let cm = server
        .get("v1", "ConfigMap", Some("copy"), "app-config")
        .unwrap();
    assert_eq!(cm["data"]["k"], "backed-up");
    assert_eq!(cm["metadata"]["labels"]["mine"], "yes");
    assert!(
        cm["metadata"]["labels"].get(RESTORE_UID_LABEL).is_none(),
        "a patched object is not this restore's"
    );
    let plan = plan_of(server, "p");
    assert_eq!(
        planned(&plan, "ConfigMap", "app-config").result,
        Some(ObjectResult::Patched)
    );
    assert!(!plan.created.iter().any(|c| c.name == "app-config"));

    // An object that appears after the plan, with no flag for it: the restore stops there,
    // naming it, and records what it did so far.
    w.create("f", json!({}));
    let run = w.run("restore-plan", "f").await;
    assert_eq!(run.code, 0);
    let plan = plan_of(server, "f");
    // Everything restored by "p" is in the way now.
    assert!(!plan.blocking.is_empty());
    // Clear the way except for one Secret, and plan again.
    let restores: kube::Api<tvk_api::Restore> = kube::Api::namespaced(server.client(), "copy");
    restores.delete("p", &Default::default()).await.unwrap();
    server.delete("v1", "Namespace", None, "copy").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while server.get("v1", "Namespace", None, "copy").is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "namespace copy not gone"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    server
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "copy"}}))
        .unwrap();
    w.create("f", json!({"restoreFlags": {"onlyMetadata": true}}));
    let plan = w.plan("f").await;
    assert!(plan.blocking.is_empty(), "{:?}", plan.blocking);
    server
        .create(
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "db-pass", "namespace": "copy"}, "data": {}}),
        )
        .unwrap();
    let run = w.run("restore", "f").await;
    assert_eq!(run.code, 1, "{:?}\n{}", run.lines, run.stderr);
    let err = run.result()["error"].as_str().unwrap();
    assert!(
        err.contains("Secret copy/db-pass") && err.contains("after the plan was made"),
        "{err}"
    );
    let plan = plan_of(server, "f");
    let secret = planned(&plan, "Secret", "db-pass");
    assert_eq!(secret.result, Some(ObjectResult::Failed));
    assert!(
        secret
            .error
            .as_deref()
            .unwrap()
            .contains("after the plan was made")
    );
    // What came before it in order was created and recorded; nothing after it was written.
    assert!(plan.created.iter().any(|c| c.kind == "ServiceAccount"));
    assert!(
        server
            .get("apps/v1", "Deployment", Some("copy"), "web")
            .is_none()
    );
    assert!(!plan.created.iter().any(|c| c.kind == "Deployment"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_point_at_the_images_image_restore_pushed() {
    let w = World::backed_up("mm-restore-images", Vec::new()).await;
    let server = &w.server;
    w.create(
        "img",
        json!({"restoreFlags": {"onlyMetadata": true}, "actionFlags": {"imageRestore": true}}),
    );
    w.run("restore-plan", "img").await.ok();
    assert!(plan_of(server, "img").blocking.is_empty());
    // ImageRestore's record: nginx:1 was pushed to the restore registry, another image was
    // still reachable (no rewrite for it).
    let restores: kube::Api<tvk_api::Restore> = kube::Api::namespaced(server.client(), "copy");
    restores
        .patch_status(
            "img",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"images": [
                {"image": "nginx:1", "digest": "sha256:aa",
                 "restoredImage": "127.0.0.1:5002/restored/nginx:1", "result": "Pushed"},
                {"image": "busybox:1", "digest": "sha256:bb", "result": "Reachable"}]}})),
        )
        .await
        .unwrap();
    w.run("restore", "img").await.ok();
    let dep = server
        .get("apps/v1", "Deployment", Some("copy"), "web")
        .unwrap();
    assert_eq!(
        dep["spec"]["template"]["spec"]["containers"][0]["image"],
        "127.0.0.1:5002/restored/nginx:1"
    );
    // The backed-up Deployment in shop is untouched.
    let orig = server
        .get("apps/v1", "Deployment", Some("shop"), "web")
        .unwrap();
    assert_eq!(
        orig["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backed_up_namespace_labels_and_annotations_reach_the_destination() {
    let w = World::backed_up("mm-restore-nsmeta", Vec::new()).await;
    let server = &w.server;
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(server.client());
    namespaces
        .patch(
            "copy",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"metadata": {"labels": {"team": "red", "local": "yes"}}}),
            ),
        )
        .await
        .unwrap();
    w.create("nsmeta", json!({"restoreFlags": {"onlyMetadata": true, "restoreNamespaceLabelsAnnotations": "Override"}}));
    w.run("restore-plan", "nsmeta").await.ok();
    w.run("restore", "nsmeta").await.ok();
    let ns = server.get("v1", "Namespace", None, "copy").unwrap();
    assert_eq!(ns["metadata"]["labels"]["team"], "blue", "{ns}");
    assert_eq!(ns["metadata"]["labels"]["local"], "yes", "{ns}");
    assert_eq!(ns["metadata"]["annotations"]["owner"], "ops", "{ns}");
    assert!(
        ns["metadata"]["labels"].get(RESTORE_UID_LABEL).is_none(),
        "the namespace is not this restore's: {ns}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_config_plans_existing_objects_for_replacement_and_restore_recreates_them() {
    let w = World::backed_up("mm-restore-inplace", Vec::new()).await;
    let server = &w.server;
    // The application drifted in the destination; something else lives there too.
    for (name, k) in [("app-config", "drifted"), ("mine", "not in the backup")] {
        server
            .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "copy"}, "data": {"k": k}}))
            .unwrap();
    }
    // Without cleanupConfig the existing object blocks, and the message offers it.
    w.create("plain", json!({"restoreFlags": {"onlyMetadata": true}}));
    let plan = w.plan("plain").await;
    assert!(
        plan.blocking
            .iter()
            .any(|b| b.contains("ConfigMap copy/app-config") && b.contains("enable cleanupConfig")),
        "{:?}",
        plan.blocking
    );

    w.create(
        "inplace",
        json!({"restoreFlags": {"onlyMetadata": true},
                "cleanupConfig": {"enabled": true, "gracefulDeletionTimeoutSeconds": 60}}),
    );
    let plan = w.plan("inplace").await;
    assert!(plan.blocking.is_empty(), "{:?}", plan.blocking);
    let cm = planned(&plan, "ConfigMap", "app-config");
    assert_eq!(cm.action, PlanAction::Create);
    assert!(
        cm.reason
            .as_deref()
            .is_some_and(|r| r.contains("cleanupConfig")),
        "{cm:?}"
    );
    assert!(
        plan.objects.iter().all(|o| o.name != "mine"),
        "an object not in the backup is not planned"
    );
    // The control plane's part: the planned object that exists is deleted.
    server
        .delete("v1", "ConfigMap", Some("copy"), "app-config")
        .unwrap();
    w.run("restore", "inplace").await.ok();
    let restored = server
        .get("v1", "ConfigMap", Some("copy"), "app-config")
        .unwrap();
    assert_eq!(restored["data"]["k"], "backed-up");
    assert!(restored["metadata"]["labels"][RESTORE_UID_LABEL].is_string());
    let mine = server.get("v1", "ConfigMap", Some("copy"), "mine").unwrap();
    assert_eq!(mine["data"]["k"], "not in the backup");
    assert_eq!(
        planned(&plan_of(server, "inplace"), "ConfigMap", "app-config").result,
        Some(ObjectResult::Created)
    );
}

mod fixture {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/charts/fixture.rs"
    ));
}

/// A namespace `shop` holding release `web` of tests/charts/webapp, its record's manifest
/// rendered by Go's engine (the oracle; our renderer when the oracle is skipped) — so the record
/// is what Helm would have written — and its objects as they live in the cluster (Helm's
/// ownership annotations, a field the chart never set); backed up and committed. Returns the
/// location. `config`: the release's user values; `tamper` replaces text in the record's
/// manifest (not in the objects). The claims of StatefulSets' volumeClaimTemplates exist bound,
/// and their volumes are "uploaded" (DataRestore restores them).
async fn helm_backed_up(
    server: &ApiServer,
    target: &Path,
    config: &Value,
    tamper: Option<(&str, &str)>,
) -> String {
    install_tvk_crds(server);
    create_namespaces(server, &["shop", "copy"]);
    let chart = fixture::chart_json("webapp");
    let manifest = fixture::oracle_manifest(&chart, "web", "shop", config).unwrap_or_else(|| {
        eprintln!("helm oracle SKIPPED: the record's manifest is rendered by tvk-chart-render");
        let c = tvk_chart_render::Chart::from_release_json(&chart).unwrap();
        let caps = tvk_chart_render::Capabilities {
            kube_version: "v1.32.0".into(),
            api_versions: vec![],
        };
        let req = tvk_chart_render::RenderRequest {
            release_name: "web",
            namespace: "shop",
            revision: 1,
            is_install: true,
            is_upgrade: false,
            user_values: config,
            capabilities: &caps,
        };
        let (docs, _) =
            tvk_chart_render::manifest_docs(&tvk_chart_render::render(&c, &req).unwrap()).unwrap();
        tvk_metamover::plan::render::manifest_text(
            &docs
                .iter()
                .map(|d| (d.source.as_str(), &d.object))
                .collect::<Vec<_>>(),
        )
        .unwrap()
    });
    let recorded = match tamper {
        Some((from, to)) => {
            assert!(manifest.contains(from), "{manifest}");
            manifest.replace(from, to)
        }
        None => manifest.clone(),
    };
    let record = fixture::release_json("web", "shop", 1, &chart, config, &recorded);
    server
        .create(fixture::release_storage_secret(&record, "deployed"))
        .unwrap();
    for d in tvk_chart_render::split_manifest(&manifest).unwrap() {
        let mut o = d.object;
        o["metadata"]["namespace"] = json!("shop");
        o["metadata"]["annotations"]["meta.helm.sh/release-name"] = json!("web");
        o["metadata"]["annotations"]["meta.helm.sh/release-namespace"] = json!("shop");
        if o["kind"] == "Deployment" {
            o["spec"]["revisionHistoryLimit"] = json!(7);
        }
        if o["kind"] == "StatefulSet" {
            let sts = o["metadata"]["name"].as_str().unwrap().to_owned();
            for t in o["spec"]["volumeClaimTemplates"].as_array().unwrap() {
                let claim = format!("{}-{sts}-0", t["metadata"]["name"].as_str().unwrap());
                server
                    .create(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                        "metadata": {"name": claim, "namespace": "shop"},
                        "spec": {"volumeName": format!("pv-{claim}"), "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Gi"}}},
                        "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}}))
                    .unwrap();
            }
        }
        server.create(o).unwrap();
    }
    snapshot_and_commit(server, target, "shop").await
}

/// Restore spec fields: Helm transform `name` of release `web` setting `key` to `value`.
fn helm_set(name: &str, key: &str, value: &str) -> Value {
    json!({"transformComponents": {"helm": [{"transformName": name, "release": "web",
        "set": [{"key": key, "value": value}]}]}})
}

/// The decoded record of a release storage Secret in `copy`.
fn record_in_copy(server: &ApiServer, storage: &str) -> Value {
    let s = server
        .get("v1", "Secret", Some("copy"), storage)
        .unwrap_or_else(|| panic!("Secret copy/{storage} not restored"));
    let text = String::from_utf8(
        STANDARD
            .decode(s["data"]["release"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    tvk_metamover::helm::decode_release_value(&text, storage).unwrap()
}

/// Every field `part` sets has that value in `whole`.
fn holds(whole: &Value, part: &Value) -> bool {
    match (whole, part) {
        (Value::Object(w), Value::Object(p)) => p
            .iter()
            .all(|(k, v)| w.get(k).is_some_and(|wv| holds(wv, v))),
        (Value::Array(w), Value::Array(p)) => {
            w.len() == p.len() && w.iter().zip(p).all(|(a, b)| holds(a, b))
        }
        _ => whole == part,
    }
}

/// `helm get manifest` of a restored release equals its restored objects: every object of
/// the record's manifest exists in `copy` holding every field the manifest gives it, and every
/// object in `copy` that Helm's annotation assigns to the release is in the manifest.
fn manifest_matches_restored(server: &ApiServer, release: &str, record: &Value) {
    let docs = tvk_chart_render::split_manifest(record["manifest"].as_str().unwrap()).unwrap();
    let mut in_manifest = Vec::new();
    for d in &docs {
        let api = d.object["apiVersion"].as_str().unwrap();
        let kind = d.object["kind"].as_str().unwrap();
        let name = d.object["metadata"]["name"].as_str().unwrap();
        let live = server
            .get(api, kind, Some("copy"), name)
            .unwrap_or_else(|| panic!("{kind} copy/{name} of the manifest is not restored"));
        assert!(
            holds(&live, &d.object),
            "{kind} copy/{name}: {live} does not hold the manifest's {}",
            d.object
        );
        in_manifest.push(format!("{kind}/{name}"));
    }
    in_manifest.sort();
    let mut restored = Vec::new();
    for (api, kind) in [
        ("v1", "ConfigMap"),
        ("v1", "Service"),
        ("apps/v1", "Deployment"),
    ] {
        for o in server.list(api, kind, Some("copy")) {
            if o["metadata"]["annotations"]["meta.helm.sh/release-name"] == release {
                restored.push(format!(
                    "{kind}/{}",
                    o["metadata"]["name"].as_str().unwrap()
                ));
            }
        }
    }
    restored.sort();
    assert_eq!(in_manifest, restored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_set_re_renders_the_release_and_a_taken_name_is_renamed_or_retained() {
    let w = World::helm("mm-restore-helm", Options::default(), &json!({}), None).await;
    let server = &w.server;

    // 1. set/setString: the chart is re-rendered and the difference applied.
    w.create(
        "r1",
        json!({"transformComponents": {"helm": [
            {"transformName": "up", "release": "web",
             "set": [{"key": "image.tag", "value": "1.26.1"}, {"key": "replicaCount", "value": "3"},
                     {"key": "extraConfig.enabled", "value": "true"},
                     {"key": "service.enabled", "value": "false"}],
             "setString": [{"key": "config.greeting", "value": "007"}]}]}}),
    );
    let plan = w.plan("r1").await;
    assert!(plan.blocking.is_empty(), "{:?}", plan.blocking);
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("up (release web)") && w.contains("re-rendered")),
        "{:?}",
        plan.warnings
    );
    let svc = planned(&plan, "Service", "web-webapp");
    assert_eq!(svc.action, PlanAction::Exclude);
    assert!(
        svc.reason
            .as_deref()
            .unwrap()
            .contains("release web no longer renders it with the transformed values"),
        "{svc:?}"
    );
    assert_eq!(
        planned(&plan, "ConfigMap", "web-webapp-extra").action,
        PlanAction::Create
    );
    w.run("restore", "r1").await.ok();
    let dep = server
        .get("apps/v1", "Deployment", Some("copy"), "web-webapp")
        .unwrap();
    assert_eq!(
        dep["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.26.1"
    );
    assert_eq!(dep["spec"]["replicas"], 3);
    assert_eq!(
        dep["spec"]["revisionHistoryLimit"], 7,
        "a live field the chart never set survives"
    );
    assert_eq!(
        dep["metadata"]["annotations"]["meta.helm.sh/release-namespace"],
        "copy"
    );
    assert!(
        server
            .get("v1", "Service", Some("copy"), "web-webapp")
            .is_none(),
        "toggled off: not restored"
    );
    let extra = server
        .get("v1", "ConfigMap", Some("copy"), "web-webapp-extra")
        .expect("toggled on: restored");
    assert_eq!(extra["data"]["mode"], "fast");
    assert_eq!(
        server
            .get("v1", "ConfigMap", Some("copy"), "web-webapp")
            .unwrap()["data"]["greeting"],
        "007"
    );
    let rec = record_in_copy(server, "sh.helm.release.v1.web.v1");
    assert_eq!(
        rec["config"],
        json!({"image": {"tag": "1.26.1"}, "replicaCount": 3,
            "extraConfig": {"enabled": true}, "service": {"enabled": false},
            "config": {"greeting": "007"}})
    );
    assert_eq!(rec["namespace"], "copy");
    manifest_matches_restored(server, "web", &rec);

    // 2. A set key addressing a subchart blocks.
    w.create("r2", helm_set("sub", "redis.architecture", "standalone"));
    let plan = w.plan("r2").await;
    assert!(
        plan.blocking
            .iter()
            .any(|b| b.contains("redis.architecture")
                && b.contains("subchart redis")
                && b.contains("does not keep")),
        "{:?}",
        plan.blocking
    );

    // 3. `copy` now has a release web: another restore renames it (retainHelmReleaseName unset).
    let r3 = w.create("r3", json!({}));
    let new_name = format!("web-{}", &r3["metadata"]["uid"].as_str().unwrap()[..5]);
    let plan = w.plan("r3").await;
    assert!(plan.blocking.is_empty(), "{:?}", plan.blocking);
    let dep = planned(&plan, "Deployment", &format!("{new_name}-webapp"));
    assert_eq!(dep.action, PlanAction::Create);
    assert!(
        dep.reason
            .as_deref()
            .is_some_and(|r| r.contains(&format!("restored as {new_name}"))
                && r.contains("renamed from web-webapp")),
        "{dep:?}"
    );
    assert_eq!(
        planned(
            &plan,
            "Secret",
            &format!("sh.helm.release.v1.{new_name}.v1")
        )
        .action,
        PlanAction::Create
    );
    assert!(plan.objects.iter().all(|o| o.name != "web-webapp"));
    w.run("restore", "r3").await.ok();
    let renamed = server
        .get(
            "apps/v1",
            "Deployment",
            Some("copy"),
            &format!("{new_name}-webapp"),
        )
        .unwrap();
    assert_eq!(
        renamed["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"],
        new_name.as_str()
    );
    assert_eq!(
        renamed["metadata"]["annotations"]["meta.helm.sh/release-name"],
        new_name.as_str()
    );
    assert_eq!(renamed["spec"]["revisionHistoryLimit"], 7);
    let storage = server
        .get(
            "v1",
            "Secret",
            Some("copy"),
            &format!("sh.helm.release.v1.{new_name}.v1"),
        )
        .unwrap();
    assert_eq!(storage["metadata"]["labels"]["name"], new_name.as_str());
    let rec = record_in_copy(server, &format!("sh.helm.release.v1.{new_name}.v1"));
    assert_eq!(rec["name"], new_name.as_str());
    manifest_matches_restored(server, &new_name, &rec);
    // r1's release is untouched.
    assert_eq!(
        server
            .get("apps/v1", "Deployment", Some("copy"), "web-webapp")
            .unwrap()["spec"]["replicas"],
        3
    );

    // 4. retainHelmReleaseName: the release keeps its name and its objects are judged by the
    // flags.
    w.create(
        "r4",
        json!({"restoreFlags": {"retainHelmReleaseName": true, "skipIfAlreadyExists": true}}),
    );
    let plan = w.plan("r4").await;
    assert!(plan.blocking.is_empty(), "{:?}", plan.blocking);
    for (kind, name) in [
        ("Secret", "sh.helm.release.v1.web.v1"),
        ("Deployment", "web-webapp"),
    ] {
        let p = planned(&plan, kind, name);
        assert_eq!(p.action, PlanAction::Skip, "{p:?}");
    }
    assert!(
        !plan
            .objects
            .iter()
            .any(|o| o.name.starts_with("sh.helm.release.v1.web-")),
        "not renamed"
    );
    // Retained without skipIfAlreadyExists / patchIfAlreadyExists: the usual blocking conflict.
    w.create(
        "r5",
        json!({"restoreFlags": {"retainHelmReleaseName": true}}),
    );
    let plan = w.plan("r5").await;
    assert!(
        plan.blocking
            .iter()
            .any(|b| b.contains("Secret copy/sh.helm.release.v1.web.v1 already exists")),
        "{:?}",
        plan.blocking
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_set_on_a_record_the_chart_does_not_reproduce_blocks_naming_the_template() {
    let w = World::helm(
        "mm-restore-helm-tampered",
        Options::default(),
        &json!({}),
        Some(("replicas: 1", "replicas: 2")),
    )
    .await;
    let server = &w.server;
    w.create("t1", helm_set("tag", "image.tag", "2"));
    let plan = w.plan("t1").await;
    assert!(
        plan.blocking
            .iter()
            .any(|b| b.contains("webapp/templates/deployment.yaml")
                && b.contains("/spec/replicas")
                && b.contains("recorded 2, rendered 1")
                && b.contains("transformComponents.custom")),
        "{:?}",
        plan.blocking
    );
    // Without a transform the release is restored as backed up: nothing is rendered.
    w.create("t2", json!({}));
    w.run("restore-plan", "t2").await.ok();
    assert!(plan_of(server, "t2").blocking.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_a_release_whose_statefulset_claims_carry_data_is_blocked() {
    let config = json!({"cache": {"enabled": true}});
    let w = World::helm("mm-restore-helm-sts", Options::default(), &config, None).await;
    let server = &w.server;
    // The destination already has a release `web` (installed there by someone else).
    let chart = fixture::chart_json("webapp");
    server
        .create(fixture::release_storage_secret(
            &fixture::release_json("web", "copy", 1, &chart, &json!({}), "---\n"),
            "deployed",
        ))
        .unwrap();
    w.create("s1", json!({}));
    let plan = w.plan("s1").await;
    assert_eq!(plan.volumes.len(), 1, "{:?}", plan.volumes);
    assert_eq!(plan.volumes[0].pvc_name, "data-web-webapp-cache-0");
    assert!(
        plan.blocking
            .iter()
            .any(|b| b.contains("StatefulSet web-webapp-cache")
                && b.contains("volumeClaimTemplates")
                && b.contains("retainHelmReleaseName")),
        "{:?}",
        plan.blocking
    );
    // Restored metadata-only (no data under the old names), the rename goes ahead.
    w.create("s2", json!({"restoreFlags": {"onlyMetadata": true}}));
    let plan = w.plan("s2").await;
    assert!(plan.blocking.is_empty(), "{:?}", plan.blocking);
    let s2 = server
        .get("triliovault.trilio.io/v1", "Restore", Some("copy"), "s2")
        .unwrap();
    let new_name = format!("web-{}", &s2["metadata"]["uid"].as_str().unwrap()[..5]);
    assert_eq!(
        planned(&plan, "StatefulSet", &format!("{new_name}-webapp-cache")).action,
        PlanAction::Create
    );
}

/// What `.Capabilities.KubeVersion` a chart re-rendered by a restore saw: release `web` backed
/// up on a server answering `/version` with `served`, restored with a `set` that turns on
/// the chart's ConfigMap printing the version (`clusterInfo.enabled`), with `env` for the
/// metamover. Returns that ConfigMap's data.
async fn kube_version_seen_by_the_chart(served: &str, env: &[(&str, &str)]) -> Value {
    let options = Options {
        version: tvk_test_apiserver::version_info(served),
        ..Options::default()
    };
    let w = World::helm("mm-restore-helm-version", options, &json!({}), None).await;
    w.create("v1", helm_set("info", "clusterInfo.enabled", "true"));
    w.run_env("restore-plan", "v1", env).await.ok();
    let plan = plan_of(&w.server, "v1");
    assert!(plan.blocking.is_empty(), "{:?}", plan.blocking);
    w.run_env("restore", "v1", env).await.ok();
    w.server
        .get("v1", "ConfigMap", Some("copy"), "web-webapp-cluster")
        .expect("the re-rendered release's ConfigMap is restored")["data"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_rendered_chart_sees_the_destinations_kube_version() {
    assert_eq!(
        kube_version_seen_by_the_chart("v1.31.4", &[]).await,
        json!({"kubeVersion": "v1.31.4", "kubeMinor": "31"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kube_version_override_wins_over_the_servers_version() {
    let env = [(tvk_metamover::restore::KUBE_VERSION_ENV, "v1.29.9")];
    assert_eq!(
        kube_version_seen_by_the_chart("v1.31.4", &env).await,
        json!({"kubeVersion": "v1.29.9", "kubeMinor": "29"})
    );
}

fn resource_version(o: &Value) -> u64 {
    o["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// `restoreFlags.restoreStorageClass`: the backup keeps StorageClass `fast` (used by the bound
/// claim `data`, restored by DataRestore, and the unbound claim `scratch`, restored as an
/// object); the destination lacks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_storage_class_creates_a_missing_class_and_never_touches_an_existing_one() {
    let scratch = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "scratch", "namespace": "shop"},
        "spec": {"storageClassName": "fast", "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": "Pending"}});
    let w = World::backed_up("mm-restore-sc", vec![scratch]).await;
    let (server, location, target) = (&w.server, w.location.as_str(), w.target.path());

    // The backup holds the class, cleaned.
    let index: Value = serde_json::from_slice(
        &std::fs::read(target.join(location).join("_metadata/index.json")).unwrap(),
    )
    .unwrap();
    let held = index["storageClasses"].as_array().unwrap();
    assert_eq!(held.len(), 1, "{index}");
    assert_eq!(held[0]["metadata"]["name"], "fast");
    assert_eq!(held[0]["provisioner"], "csi.example.com");
    for gone in [
        "uid",
        "resourceVersion",
        "managedFields",
        "creationTimestamp",
    ] {
        assert!(
            held[0]["metadata"].get(gone).is_none(),
            "{gone}: {}",
            held[0]
        );
    }

    // The destination lacks it: blocked without the flag, and the message names the flag.
    server
        .delete("storage.k8s.io/v1", "StorageClass", None, "fast")
        .unwrap();
    w.create("sc-no", json!({}));
    let plan = w.plan("sc-no").await;
    assert!(
        plan.blocking
            .iter()
            .any(|b| b.contains("storage class fast")
                && b.contains(
                    "or set restoreFlags.restoreStorageClass to create it from the backup"
                )),
        "{:#?}",
        plan.blocking
    );
    assert!(!plan.objects.iter().any(|o| o.kind == "StorageClass"));
    let run = w.run("restore", "sc-no").await;
    assert_eq!(run.code, 1, "a blocked plan restores nothing");
    assert!(
        server
            .get("storage.k8s.io/v1", "StorageClass", None, "fast")
            .is_none()
    );

    // With the flag: planned first, created, then the claims.
    w.create(
        "sc-yes",
        json!({"restoreFlags": {"restoreStorageClass": true}}),
    );
    let plan = w.plan("sc-yes").await;
    assert!(plan.blocking.is_empty(), "{:#?}", plan.blocking);
    assert_eq!(plan.objects[0].kind, "StorageClass", "{:#?}", plan.objects);
    let sc = planned(&plan, "StorageClass", "fast");
    assert_eq!(sc.action, PlanAction::Create);
    assert!(sc.namespace.is_none());
    assert!(
        sc.reason
            .as_deref()
            .unwrap()
            .contains("restoreStorageClass")
    );
    assert_eq!(
        planned(&plan, "PersistentVolumeClaim", "scratch").action,
        PlanAction::Create
    );
    assert_eq!(plan.volumes.len(), 1);
    assert_eq!(plan.volumes[0].storage_class_name.as_deref(), Some("fast"));
    w.run("restore", "sc-yes").await.ok();
    let created = server
        .get("storage.k8s.io/v1", "StorageClass", None, "fast")
        .expect("the class is created");
    assert_eq!(created["provisioner"], "csi.example.com");
    let restore_uid = server
        .get(
            "triliovault.trilio.io/v1",
            "Restore",
            Some("copy"),
            "sc-yes",
        )
        .unwrap()["metadata"]["uid"]
        .clone();
    assert_eq!(
        created["metadata"]["labels"][RESTORE_UID_LABEL],
        restore_uid
    );
    let pvc = server
        .get("v1", "PersistentVolumeClaim", Some("copy"), "scratch")
        .expect("the claim is restored");
    assert_eq!(pvc["spec"]["storageClassName"], "fast");
    assert!(
        resource_version(&created) < resource_version(&pvc),
        "the class is created before the claim"
    );
    let plan = plan_of(server, "sc-yes");
    assert_eq!(
        planned(&plan, "StorageClass", "fast").result,
        Some(ObjectResult::Created)
    );
    assert!(
        plan.created
            .iter()
            .any(|c| c.kind == "StorageClass" && c.name == "fast" && c.namespace.is_none()),
        "{:?}",
        plan.created
    );

    // An existing class is never planned, replaced or patched.
    server
        .delete("storage.k8s.io/v1", "StorageClass", None, "fast")
        .unwrap();
    let theirs = server
        .create(
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "fast", "labels": {"owner": "admin"}},
            "provisioner": "other.example.com"}),
        )
        .unwrap();
    let flags = json!({"restoreFlags": {"restoreStorageClass": true, "skipIfAlreadyExists": true,
        "patchIfAlreadyExists": false}});
    w.create("sc-keep", flags.clone());
    let plan = w.plan("sc-keep").await;
    assert!(plan.blocking.is_empty(), "{:#?}", plan.blocking);
    assert!(!plan.objects.iter().any(|o| o.kind == "StorageClass"));
    w.run("restore", "sc-keep").await.ok();
    assert_eq!(
        server.get("storage.k8s.io/v1", "StorageClass", None, "fast"),
        Some(theirs.clone()),
        "left unchanged"
    );

    // A class someone creates between the plan and the restore: left alone, Skipped.
    server
        .delete("storage.k8s.io/v1", "StorageClass", None, "fast")
        .unwrap();
    w.create("sc-race", flags);
    w.run("restore-plan", "sc-race").await.ok();
    assert_eq!(
        planned(&plan_of(server, "sc-race"), "StorageClass", "fast").action,
        PlanAction::Create
    );
    let theirs = server
        .create(
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "fast"}, "provisioner": "late.example.com"}),
        )
        .unwrap();
    w.run("restore", "sc-race").await.ok();
    assert_eq!(
        server.get("storage.k8s.io/v1", "StorageClass", None, "fast"),
        Some(theirs),
        "never overwritten or patched"
    );
    let plan = plan_of(server, "sc-race");
    assert_eq!(
        planned(&plan, "StorageClass", "fast").result,
        Some(ObjectResult::Skipped)
    );
    assert!(!plan.created.iter().any(|c| c.kind == "StorageClass"));

    // The entry point for the control plane before DataRestore: creates the planned classes
    // alone; the later `restore` recognises them as this restore's.
    server
        .delete("storage.k8s.io/v1", "StorageClass", None, "fast")
        .unwrap();
    let flags = json!({"restoreFlags": {"restoreStorageClass": true, "skipIfAlreadyExists": true}});
    w.create("sc-early", flags);
    w.run("restore-plan", "sc-early").await.ok();
    let r = tvk_metamover::restore::RestoreRef {
        kind: tvk_metamover::restore::RestoreKind::Restore,
        namespace: Some("copy".into()),
        name: "sc-early".into(),
    };
    let made = tvk_metamover::restore::run_storage_classes(
        server.client(),
        tvk_datamover::target::Target::filesystem(target).unwrap(),
        &r,
        location,
        None,
    )
    .await
    .unwrap();
    assert_eq!(made, 1);
    let early = server
        .get("storage.k8s.io/v1", "StorageClass", None, "fast")
        .expect("created before DataRestore");
    assert_eq!(early["provisioner"], "csi.example.com");
    let plan = plan_of(server, "sc-early");
    assert_eq!(
        planned(&plan, "StorageClass", "fast").result,
        Some(ObjectResult::Created)
    );
    assert!(plan.created.iter().any(|c| c.kind == "StorageClass"));
    w.run("restore", "sc-early").await.ok();
    assert_eq!(
        server.get("storage.k8s.io/v1", "StorageClass", None, "fast"),
        Some(early),
        "not written again"
    );
    let plan = plan_of(server, "sc-early");
    assert_eq!(
        planned(&plan, "StorageClass", "fast").result,
        Some(ObjectResult::Created)
    );
    assert!(plan.created.iter().any(|c| c.kind == "StorageClass"));
}
