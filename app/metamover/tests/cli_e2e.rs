#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The `tvk-metamover` binary end to end, as a Job runs it: a child process reaching the
//! in-memory API server (tvk-test-apiserver) through KUBECONFIG and writing to a filesystem
//! target. A namespace with a Helm release, workloads, cluster-generated objects and PVCs is
//! snapshotted; the layout, the cleaning and `status.snapshot` are checked; `commit` refuses
//! until the volume data is there, then commits exactly once.

mod common;

use common::{
    S3_ENV, create_backup, create_cluster_plan_and_backup, create_plan, install_tvk_crds,
    metamover, metamover_env,
};
use std::{collections::BTreeSet, path::Path};

use base64::{Engine, engine::general_purpose::STANDARD};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};
use tvk_metamover::layout::{Commit, Index, read_document};
use tvk_test_apiserver::ApiServer;
use tvk_testkit::TempDir;

const MANIFEST: &str = "---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: web\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: web-reader\n";

fn helm_secret(ns: &str) -> Value {
    let release = json!({"name": "web", "namespace": ns, "version": 1,
        "info": {"status": "deployed"},
        "chart": {"metadata": {"name": "web", "version": "0.1.0"}}, "manifest": MANIFEST});
    fixture::release_storage_secret(&release, "deployed")
}

#[allow(dead_code)]
mod fixture {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/charts/fixture.rs"
    ));
}

fn seed(server: &ApiServer) -> (String, String) {
    install_tvk_crds(server);
    let ns = "shop";
    server
        .create(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"env": "prod"}}}))
        .unwrap();
    let objs = [
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config", "namespace": ns,
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}}, "data": {"k": "v"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt", "namespace": ns}, "data": {}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "scratch", "namespace": ns,
            "labels": {"backup": "no"}}}),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": "db-pass", "namespace": ns},
            "data": {"p": STANDARD.encode("hunter2")}}),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
            "metadata": {"name": "web-token", "namespace": ns}}),
        helm_secret(ns),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web", "namespace": ns}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
            "spec": {"clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"], "ports": [{"port": 80}]}}),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": ns,
            "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
            "spec": {"volumeName": "pv-1", "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}}),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "waiting", "namespace": ns},
            "spec": {"resources": {"requests": {"storage": "5Gi"}}}, "status": {"phase": "Pending"}}),
        json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1", "namespace": ns},
            "involvedObject": {"kind": "Pod", "name": "x"}, "reason": "Started"}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "web-reader"},
            "rules": []}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "metrics-reader"},
            "rules": []}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "web-crb"},
            "subjects": [{"kind": "ServiceAccount", "name": "web", "namespace": ns}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "metrics-reader"}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "other-crb"},
            "subjects": [{"kind": "ServiceAccount", "name": "web", "namespace": "elsewhere"}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"}}),
    ];
    for o in objs {
        server.create(o).unwrap();
    }
    let deploy = server
        .create(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"serviceAccountName": "web",
                    "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
                    "containers": [{"name": "web", "image": "nginx",
                        "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db-pass", "key": "p"}}}]}]}}},
            "status": {"readyReplicas": 1}}))
        .unwrap();
    let deploy_uid = deploy["metadata"]["uid"].as_str().unwrap().to_owned();
    server
        .create(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web-1", "namespace": ns, "ownerReferences": [{"apiVersion": "apps/v1",
                "kind": "Deployment", "name": "web", "uid": deploy_uid, "controller": true}]},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}))
        .unwrap();
    let plan_uid = create_plan(
        server,
        ns,
        json!({"excludeResources": {"labelSelector": [{"matchLabels": {"backup": "no"}}]}}),
    );
    (plan_uid, create_backup(server, ns, "b1"))
}

fn doc(dir: &Path, index: &Index, ns: Option<&str>, kind: &str) -> Vec<Value> {
    let meta = dir
        .join(&index.backup.plan_uid)
        .join(&index.backup.uid)
        .join("_metadata");
    index
        .documents
        .iter()
        .filter(|d| d.kind == kind && d.namespace.as_deref() == ns)
        .flat_map(|d| {
            let bytes = std::fs::read(meta.join(&d.key)).unwrap();
            assert_eq!(tvk_metamover::layout::digest(&bytes), d.blake3, "{}", d.key);
            read_document(&bytes, 1 << 30).unwrap()
        })
        .collect()
}

fn names(objs: &[Value]) -> BTreeSet<String> {
    objs.iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_commit_a_namespace_backup() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = ApiServer::start().await.unwrap();
    let (plan_uid, backup_uid) = seed(&server);
    let target = TempDir::new("mm-e2e").unwrap();
    let tdir = target.path().to_str().unwrap().to_owned();
    let kc = server.kubeconfig_path().to_path_buf();
    // Pages of 2 objects: every list goes through `continue` tokens.
    let backup_args = [
        "--kind",
        "Backup",
        "--namespace",
        "shop",
        "--name",
        "b1",
        "--target",
        &tdir,
    ];
    let args = [&["snapshot"][..], &backup_args, &["--page-size", "2"]].concat();
    let mark = server.mark();
    let run = metamover(&kc, &args).await;
    assert_eq!(run.code, 0, "{:?}\n{}", run.lines, run.stderr);
    assert_eq!(run.result()["ok"], true);
    assert!(run.lines.iter().any(|l| l["event"] == "inventory"));
    let paged = server
        .requests_since(mark)
        .into_iter()
        .filter(|r| {
            r.path.ends_with("/namespaces/shop/configmaps") && r.query.contains("continue=")
        })
        .count();
    assert!(
        paged >= 2,
        "ConfigMaps were listed in pages in both passes ({paged})"
    );

    let meta = target
        .path()
        .join(&plan_uid)
        .join(&backup_uid)
        .join("_metadata");
    let index: Index =
        serde_json::from_slice(&std::fs::read(meta.join("index.json")).unwrap()).unwrap();
    assert_eq!(index.backup.uid, backup_uid);
    assert_eq!(index.namespaces, ["shop"]);

    // Selection and the ignore list.
    let ns = Some("shop");
    assert_eq!(
        names(&doc(target.path(), &index, ns, "ConfigMap")),
        BTreeSet::from(["app-config".to_owned()])
    );
    assert_eq!(
        names(&doc(target.path(), &index, ns, "Secret")),
        BTreeSet::from(["db-pass".to_owned()])
    );
    assert!(
        doc(target.path(), &index, ns, "ReplicaSet").is_empty(),
        "controller-owned"
    );
    assert!(doc(target.path(), &index, ns, "Event").is_empty());
    assert_eq!(
        names(&doc(target.path(), &index, ns, "PersistentVolumeClaim")).len(),
        2
    );
    assert_eq!(
        names(&doc(target.path(), &index, None, "Namespace")),
        BTreeSet::from(["shop".to_owned()])
    );
    assert_eq!(
        names(&doc(target.path(), &index, None, "ClusterRole")),
        BTreeSet::from(["web-reader".to_owned(), "metrics-reader".to_owned()])
    );
    assert_eq!(
        names(&doc(target.path(), &index, None, "ClusterRoleBinding")),
        BTreeSet::from(["web-crb".to_owned()])
    );

    // Cleaning.
    let deploy = &doc(target.path(), &index, ns, "Deployment")[0];
    assert!(deploy.get("status").is_none());
    for f in [
        "uid",
        "resourceVersion",
        "managedFields",
        "creationTimestamp",
        "generation",
    ] {
        assert!(deploy["metadata"].get(f).is_none(), "{f} left in {deploy}");
    }
    let svc = &doc(target.path(), &index, ns, "Service")[0];
    assert!(svc["spec"].get("clusterIP").is_none() && svc["spec"].get("clusterIPs").is_none());
    let cm = &doc(target.path(), &index, ns, "ConfigMap")[0];
    assert!(
        cm["metadata"].get("annotations").is_none(),
        "last-applied removed: {cm}"
    );
    let pvcs = doc(target.path(), &index, ns, "PersistentVolumeClaim");
    let data = pvcs
        .iter()
        .find(|p| p["metadata"]["name"] == "data")
        .unwrap();
    assert!(data["spec"].get("volumeName").is_none());
    let data_entry = index.pvcs.iter().find(|p| p.name == "data").unwrap();
    assert_eq!(data_entry.volume_name.as_deref(), Some("pv-1"));

    // Helm release storage, separately.
    assert_eq!(index.helm.len(), 1);
    assert_eq!(index.helm[0].release, "web");
    let helm_doc = std::fs::read(meta.join(&index.helm[0].document.key)).unwrap();
    assert_eq!(
        names(&read_document(&helm_doc, 1 << 30).unwrap()),
        BTreeSet::from(["sh.helm.release.v1.web.v1".to_owned()])
    );

    // status.snapshot, and nothing else in status changed.
    let backups: Api<tvk_api::Backup> = Api::namespaced(server.client(), "shop");
    let b = backups.get("b1").await.unwrap();
    let status = b.status.unwrap();
    assert_eq!(
        status.status,
        Some(tvk_api::backup::BackupState::InProgress)
    );
    let snap = tvk_api::snapshot::Snapshot::from_status_value(status.snapshot.as_ref())
        .unwrap()
        .unwrap();
    assert_eq!(snap.helm_charts[0].release, "web");
    assert_eq!(snap.helm_charts[0].revision, Some(1));
    let helm_kinds: BTreeSet<_> = snap.helm_charts[0]
        .resources
        .iter()
        .filter_map(|r| r.group_version_kind.kind.clone())
        .collect();
    assert!(
        helm_kinds.contains("Deployment") && helm_kinds.contains("ServiceAccount"),
        "{helm_kinds:?}"
    );
    let custom = snap.custom.clone().unwrap();
    assert_eq!(custom.data_snapshots.len(), 1);
    let ds = &custom.data_snapshots[0];
    assert_eq!(ds.persistent_volume_claim_name, "data");
    assert_eq!(ds.volume_mode.as_deref(), Some("Filesystem"));
    assert!(
        ds.persistent_volume_claim_metadata
            .as_deref()
            .unwrap()
            .contains("\"data\"")
    );
    assert!(
        custom.warnings.iter().any(|w| w.contains("shop/waiting")),
        "{:?}",
        custom.warnings
    );
    let patches: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/backups/b1/status"))
        .collect();
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].field_manager.as_deref(), Some("tvk-metamover"));

    // Commit refuses while the volume is not on the target.
    let commit_args = [&["commit"][..], &backup_args].concat();
    let refused = metamover(&kc, &commit_args).await;
    assert_eq!(refused.code, 1, "{:?}", refused.lines);
    assert!(
        refused.result()["error"]
            .as_str()
            .unwrap()
            .contains("PVC data"),
        "{:?}",
        refused.result()
    );
    assert!(!meta.join("commit.json").exists());

    // The control plane uploads the volume and records its location.
    let vol = format!("{plan_uid}/{backup_uid}/{}", data_entry.uid);
    std::fs::create_dir_all(target.path().join(&vol)).unwrap();
    std::fs::write(target.path().join(&vol).join("manifest.json"), b"{}").unwrap();
    let mut snap2 = snap.clone();
    for d in snap2.data_snapshots_mut() {
        d.location = Some(vol.clone());
        d.uploaded = Some(true);
    }
    backups
        .patch_status(
            "b1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"snapshot": snap2.to_value().unwrap(),
                "location": format!("{plan_uid}/{backup_uid}")}})),
        )
        .await
        .unwrap();
    // A damaged metadata document is found before anything is committed.
    let victim = meta.join(&index.documents[0].key);
    let original = std::fs::read(&victim).unwrap();
    let mut damaged = original.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0x40;
    std::fs::write(&victim, &damaged).unwrap();
    let refused = metamover(&kc, &commit_args).await;
    assert_eq!(refused.code, 1, "{:?}", refused.lines);
    let err = refused.result()["error"].as_str().unwrap().to_owned();
    assert!(
        err.contains(&index.documents[0].key) && err.contains("BLAKE3"),
        "{err}"
    );
    assert!(!meta.join("commit.json").exists());
    std::fs::write(&victim, &original).unwrap();

    let committed = metamover(&kc, &commit_args).await;
    assert_eq!(
        committed.code, 0,
        "{:?}\n{}",
        committed.lines, committed.stderr
    );
    let commit: Commit =
        serde_json::from_slice(&std::fs::read(meta.join("commit.json")).unwrap()).unwrap();
    assert_eq!(commit.backup.uid, backup_uid);
    assert_eq!(
        commit.index_blake3,
        tvk_metamover::layout::digest(&std::fs::read(meta.join("index.json")).unwrap())
    );
    assert_eq!(
        commit.object["status"]["snapshot"]["custom"]["dataSnapshots"][0]["location"],
        vol.as_str()
    );
    // A rerun of either step is idempotent.
    let again = metamover(&kc, &commit_args).await;
    assert_eq!(again.code, 0);
    assert_eq!(again.result()["result"]["alreadyCommitted"], true);
    let resnap = metamover(&kc, &args).await;
    assert_eq!(resnap.code, 0, "{:?}", resnap.lines);
    assert_eq!(resnap.result()["result"]["reused"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_namespace_fails_permanently_and_naming_it() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = ApiServer::start().await.unwrap();
    install_tvk_crds(&server);
    create_cluster_plan_and_backup(
        &server,
        json!({"backupComponents": [{"namespace": "ghost"}]}),
    );
    let target = TempDir::new("mm-ghost").unwrap();
    let run = metamover(
        server.kubeconfig_path(),
        &[
            "snapshot",
            "--kind",
            "ClusterBackup",
            "--name",
            "cb",
            "--target",
            target.path().to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{:?}", run.lines);
    let err = run.result()["error"].as_str().unwrap().to_owned();
    assert!(err.contains("namespace ghost"), "{err}");
    assert_eq!(run.result()["retryable"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_is_retryable() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = ApiServer::start().await.unwrap();
    let dir = TempDir::new("mm-down").unwrap();
    let kc = dir.path().join("kubeconfig");
    std::fs::copy(server.kubeconfig_path(), &kc).unwrap();
    server.shutdown().await;
    let run = metamover(
        &kc,
        &[
            "snapshot",
            "--kind",
            "Backup",
            "--namespace",
            "x",
            "--name",
            "b",
            "--target",
            dir.path().to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(run.code, 75, "{:?}\n{}", run.lines, run.stderr);
    assert_eq!(run.result()["retryable"], true);
}

/// A ClusterBackup picking its namespace by labels, written to S3 (moto) with the credentials
/// from the environment, as the control plane's Job passes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_backup_by_namespace_selector_to_s3() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = ApiServer::start().await.unwrap();
    seed(&server);
    server
        .create(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "dev-ns", "labels": {"env": "dev"}}}))
        .unwrap();
    server
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "dev-only", "namespace": "dev-ns"}}))
        .unwrap();
    let (plan, cb) = create_cluster_plan_and_backup(
        &server,
        json!({"namespaceSelector": [{"name": "prod", "labelSelector": [{"matchLabels": {"env": "prod"}}]}]}),
    );
    let moto = tvk_testkit::moto().unwrap();
    let bucket = tvk_testkit::unique_name("mm-cli");
    tvk_testkit::create_bucket(moto.addr(), &bucket).unwrap();
    let target = format!("s3://{bucket}/cluster-a");
    let endpoint = moto.url();
    let run = metamover_env(
        server.kubeconfig_path(),
        &[
            "snapshot",
            "--kind",
            "ClusterBackup",
            "--name",
            "cb",
            "--target",
            &target,
            "--s3-endpoint",
            &endpoint,
        ],
        &S3_ENV,
    )
    .await;
    assert_eq!(run.code, 0, "{:?}\n{}", run.lines, run.stderr);

    let cfg = tvk_datamover::target::S3Config {
        bucket,
        prefix: "cluster-a".into(),
        endpoint: Some(endpoint),
        region: tvk_testkit::S3_REGION.into(),
        access_key_id: tvk_testkit::S3_ACCESS_KEY.into(),
        secret_access_key: tvk_testkit::S3_SECRET_KEY.into(),
        ..Default::default()
    };
    let s3 = tvk_datamover::target::Target::s3(&cfg, tokio::runtime::Handle::current()).unwrap();
    let key = format!(
        "{}/{}/_metadata/index.json",
        plan["metadata"]["uid"].as_str().unwrap(),
        cb["metadata"]["uid"].as_str().unwrap()
    );
    let index: Index = tokio::task::spawn_blocking(move || {
        serde_json::from_slice(&s3.read_all(&key, 1 << 24).unwrap()).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(index.namespaces, ["shop"], "dev-ns is not selected");
    assert_eq!(index.backup.kind, "ClusterBackup");
    assert!(
        index
            .documents
            .iter()
            .all(|d| d.namespace.as_deref() != Some("dev-ns"))
    );

    let cbs: Api<tvk_api::ClusterBackup> = Api::all(server.client());
    let status = cbs.get("cb").await.unwrap().status.unwrap();
    let snap = tvk_api::snapshot::Snapshot::from_status_value(status.snapshot.as_ref())
        .unwrap()
        .unwrap();
    let ds: Vec<_> = snap.data_snapshots().collect();
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0].namespace.as_deref(), Some("shop"));
    assert_eq!(snap.helm_charts[0].namespace.as_deref(), Some("shop"));
}

fn crd(group: &str, version: &str, kind: &str, plural: &str) -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(),
                "listKind": format!("{kind}List")},
            "versions": [{"name": version, "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}}}]}})
}

/// An OLM operator named by its Subscription: the Subscription, its installed CSV, the CSV's
/// Deployment and ServiceAccount, OLM-owned RBAC, the OperatorGroup and the custom resources of
/// the CSV's owned CRDs (plus the CRD) are captured; other objects of the namespace are not.
/// OLM's group prefers v1 while Subscriptions are served only in v1alpha1, as in a real cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn olm_operator_with_its_custom_resources() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = ApiServer::start().await.unwrap();
    install_tvk_crds(&server);
    for c in [
        crd(
            "operators.coreos.com",
            "v1alpha1",
            "Subscription",
            "subscriptions",
        ),
        crd(
            "operators.coreos.com",
            "v1alpha1",
            "ClusterServiceVersion",
            "clusterserviceversions",
        ),
        crd(
            "operators.coreos.com",
            "v1",
            "OperatorGroup",
            "operatorgroups",
        ),
        crd(
            "etcd.database.coreos.com",
            "v1beta2",
            "EtcdCluster",
            "etcdclusters",
        ),
    ] {
        server.create(c).unwrap();
    }
    let ns = "ops";
    let csv = "etcdoperator.v0.9.4";
    for o in [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        json!({"apiVersion": "operators.coreos.com/v1alpha1", "kind": "Subscription",
            "metadata": {"name": "etcd", "namespace": ns}, "spec": {"name": "etcd", "channel": "singlenamespace-alpha"},
            "status": {"installedCSV": csv, "currentCSV": csv}}),
        json!({"apiVersion": "operators.coreos.com/v1alpha1", "kind": "ClusterServiceVersion",
            "metadata": {"name": csv, "namespace": ns},
            "spec": {"customresourcedefinitions": {"owned": [
                {"name": "etcdclusters.etcd.database.coreos.com", "kind": "EtcdCluster", "version": "v1beta2"}]},
                "install": {"strategy": "deployment", "spec": {
                    "deployments": [{"name": "etcd-operator", "spec": {}}],
                    "permissions": [{"serviceAccountName": "etcd-operator", "rules": []}]}}}}),
        json!({"apiVersion": "operators.coreos.com/v1", "kind": "OperatorGroup",
            "metadata": {"name": "og", "namespace": ns}, "spec": {"targetNamespaces": [ns]}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "etcd-operator", "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": "etcd"}}, "template": {"metadata": {"labels": {"app": "etcd"}},
                "spec": {"serviceAccountName": "etcd-operator", "containers": [{"name": "o", "image": "etcd-operator"}]}}}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "etcd-operator", "namespace": ns}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": format!("{csv}-x"), "namespace": ns, "labels": {"olm.owner": csv}}, "rules": []}),
        json!({"apiVersion": "etcd.database.coreos.com/v1beta2", "kind": "EtcdCluster",
            "metadata": {"name": "example", "namespace": ns}, "spec": {"size": 3}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "unrelated", "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": "u"}}, "template": {"metadata": {"labels": {"app": "u"}},
                "spec": {"containers": [{"name": "u", "image": "nginx"}]}}}}),
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "BackupPlan", "metadata": {"name": "plan", "namespace": ns},
            "spec": {"backupConfig": {"target": {"name": "t", "namespace": ns}},
                "backupPlanComponents": {"operators": [{"operatorId": "etcd", "subscription": {"name": "etcd"}}]}}}),
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Backup", "metadata": {"name": "b", "namespace": ns},
            "spec": {"type": "Full", "backupPlan": {"name": "plan"}}}),
    ] {
        server.create(o).unwrap();
    }
    let target = TempDir::new("mm-olm").unwrap();
    let run = metamover(
        server.kubeconfig_path(),
        &[
            "snapshot",
            "--kind",
            "Backup",
            "--namespace",
            ns,
            "--name",
            "b",
            "--target",
            target.path().to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{:?}\n{}", run.lines, run.stderr);

    let backups: Api<tvk_api::Backup> = Api::namespaced(server.client(), ns);
    let status = backups.get("b").await.unwrap().status.unwrap();
    let snap = tvk_api::snapshot::Snapshot::from_status_value(status.snapshot.as_ref())
        .unwrap()
        .unwrap();
    assert_eq!(snap.operators.len(), 1);
    let op = &snap.operators[0];
    assert_eq!(op.operator_id, "etcd");
    let summary = |rs: &[tvk_api::common::Resource]| -> BTreeSet<String> {
        rs.iter()
            .flat_map(|r| {
                let k = r.group_version_kind.kind.clone().unwrap_or_default();
                r.objects.iter().flatten().map(move |n| format!("{k}/{n}"))
            })
            .collect()
    };
    assert_eq!(
        summary(&op.custom_resources),
        BTreeSet::from(["EtcdCluster/example".to_owned()])
    );
    let own = summary(&op.operator_resources);
    for expected in [
        "Subscription/etcd".to_owned(),
        format!("ClusterServiceVersion/{csv}"),
        "OperatorGroup/og".to_owned(),
        "Deployment/etcd-operator".to_owned(),
        "ServiceAccount/etcd-operator".to_owned(),
        format!("Role/{csv}-x"),
        "CustomResourceDefinition/etcdclusters.etcd.database.coreos.com".to_owned(),
    ] {
        assert!(own.contains(&expected), "{expected} missing from {own:?}");
    }
    assert!(!own.iter().any(|o| o.contains("unrelated")), "{own:?}");
    // Outside the operator only the Namespace object itself (for restore) is captured.
    let custom = snap.custom.clone().unwrap();
    assert_eq!(
        summary(&custom.resources),
        BTreeSet::from(["Namespace/ops".to_owned()])
    );
}
