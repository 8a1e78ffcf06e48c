#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! ClusterBackup → ClusterRestore end to end with no cluster: the controllers under real
//! watches against tvk-test-apiserver, tvk-test-kubelet running every Job's REAL command
//! (`tvk-metamover snapshot`/`commit`/`restore-plan`/`restore`, `tvk-datamover
//! backup`/`restore`) against moto S3. A ClusterBackupPlan covers namespace `shop` by
//! `backupComponents[]` and `web` and `logs` by a `namespaceSelector[]` label (not `other`,
//! whose label differs); `shop` and `web` each have workloads and a PVC with generated data. A
//! full ClusterBackup, changed data, an incremental; then ClusterRestores of the incremental:
//! into new namespaces (every object back, volumes bit-exact, `createdNamespaces`,
//! `excludeComponents`), and into existing namespaces (`restoreNamespaceLabelsAnnotations`
//! Append and Replace, a component's post-restore hook exec'd by the test API server).

mod common;
#[path = "common/kubelet_world.rs"]
mod kubelet_world;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use kubelet_world::{V1, World, data_snapshots, pattern, write_at};
use serde_json::{Value, json};

const SIZE: u64 = 4 << 20;
const TERMINAL_BACKUP: &[&str] = &["Available", "Failed"];
const TERMINAL_RESTORE: &[&str] = &["Completed", "Failed"];

/// An application in `ns`: service account, config map (`marker` in its data), secret,
/// deployment, service and a bare pod `db-0` (labelled for hooks).
fn seed_app(world: &World, ns: &str, marker: &str) {
    let objs = [
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": ns}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config", "namespace": ns},
            "data": {"marker": marker}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-secret", "namespace": ns},
            "type": "Opaque", "data": {"token": "czNjcjN0"}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": ns},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "app"}},
                "template": {"metadata": {"labels": {"app": "app"}}, "spec": {
                    "serviceAccountName": "app",
                    "containers": [{"name": "app", "image": "nginx:1.27",
                        "envFrom": [{"configMapRef": {"name": "app-config"}}],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "app", "namespace": ns},
            "spec": {"selector": {"app": "app"}, "ports": [{"port": 80}]}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db-0", "namespace": ns,
                "labels": {"role": "db"}},
            "spec": {"containers": [{"name": "db", "image": "postgres:16"}]}}),
    ];
    for o in objs {
        world.server.create(o).unwrap();
    }
}

/// The kinds and names every restored namespace must hold.
const RESTORED: &[(&str, &str, &str)] = &[
    ("v1", "ServiceAccount", "app"),
    ("v1", "ConfigMap", "app-config"),
    ("v1", "Secret", "app-secret"),
    ("apps/v1", "Deployment", "app"),
    ("v1", "Service", "app"),
    ("v1", "Pod", "db-0"),
    ("v1", "PersistentVolumeClaim", "data"),
];

fn labels(v: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(v["metadata"]["labels"].clone()).unwrap_or_default()
}

/// Creates ClusterBackup `name` of plan `estate` and waits for it to be Available.
async fn cluster_backup(world: &World, name: &str, type_: &str) -> Value {
    world
        .server
        .create(
            json!({"apiVersion": V1, "kind": "ClusterBackup", "metadata": {"name": name},
            "spec": {"type": type_, "clusterBackupPlan": {"name": "estate"}}}),
        )
        .unwrap();
    world
        .wait_terminal(
            "ClusterBackup",
            None,
            name,
            TERMINAL_BACKUP,
            "Available",
            100,
        )
        .await
}

/// Marks restored pods of `namespace` Running once they exist (there is no kubelet for
/// application pods), so post-restore hooks find them.
async fn run_restored_pods(world: &World, namespace: &str) {
    let pods: Api<Pod> = Api::namespaced(world.ctx.client.clone(), namespace);
    for _ in 0..1200 {
        if let Some(p) = world.server.get("v1", "Pod", Some(namespace), "db-0") {
            if p["status"]["phase"] == "Running" {
                return;
            }
            let _ = pods
                .patch_status(
                    "db-0",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"phase": "Running",
                        "containerStatuses": [{"name": "db", "ready": true, "restartCount": 0, "image": "postgres:16", "imageID": "",
                            "state": {"running": {}}}]}})),
                )
                .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_cluster_backup_full_incremental_then_cluster_restores_with_real_jobs() {
    let hook_log = std::env::temp_dir().join(tvk_testkit::unique_name("hook-log"));
    let world = World::start(&[
        ("shop", json!({"team": "shop", "env": "prod"})),
        ("web", json!({"tier": "gold"})),
        ("logs", json!({"tier": "gold"})),
        ("other", json!({"tier": "bronze"})),
    ])
    .await;
    eprintln!("cluster_e2e: started");
    seed_app(&world, "shop", "shop-v1");
    seed_app(&world, "web", "web-v1");
    world
        .server
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "log-config", "namespace": "logs"},
            "data": {"level": "debug"}}))
        .unwrap();
    world
        .server
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "not-covered", "namespace": "other"},
            "data": {"x": "y"}}))
        .unwrap();
    eprintln!("cluster_e2e: seeded");
    let (shop_file, _shop_pvc) = world.volume("shop", "data", "4Mi").await;
    let (web_file, _web_pvc) = world.volume("web", "data", "4Mi").await;
    write_at(&shop_file, 0, &pattern(1 << 20, 1));
    write_at(&shop_file, SIZE - 4096, &pattern(4096, 2));
    write_at(&web_file, 512 << 10, &pattern(2 << 20, 3));

    eprintln!("cluster_e2e: volumes");
    world
        .server
        .create(json!({"apiVersion": V1, "kind": "ClusterBackupPlan", "metadata": {"name": "estate"},
            "spec": {"backupConfig": {"target": {"name": "s3", "namespace": common::NS}},
                "backupComponents": [{"namespace": "shop"}],
                "namespaceSelector": [{"name": "tiered", "labelSelector": [{"matchLabels": {"tier": "gold"}}]}],
                "clusterBackupPlanFlags": {"skipImageBackup": true}}}))
        .unwrap();
    let plan = world
        .plan_available("ClusterBackupPlan", None, "estate")
        .await;
    let covered: Vec<&str> = plan["status"]["backupPlans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(covered, ["logs", "shop", "web"], "{:#}", plan["status"]);
    let plan_uid = plan["metadata"]["uid"].as_str().unwrap().to_string();

    eprintln!("cluster_e2e: plan available");
    // Full.
    let full = cluster_backup(&world, "full", "Full").await;
    let full_uid = full["metadata"]["uid"].as_str().unwrap().to_string();
    assert_eq!(full["status"]["location"], format!("{plan_uid}/{full_uid}"));
    let ds = data_snapshots(&full);
    assert_eq!(ds.len(), 2, "{:#}", full["status"]["snapshot"]);

    eprintln!("cluster_e2e: full done");
    // Change data in both volumes; incremental.
    write_at(&shop_file, 64 << 10, &pattern(64 << 10, 4));
    write_at(&web_file, SIZE - 1, &[0xEE]);
    write_at(&web_file, 3 << 20, &pattern(4096, 5));
    let shop_v2 = std::fs::read(&shop_file).unwrap();
    let web_v2 = std::fs::read(&web_file).unwrap();
    let incr = cluster_backup(&world, "incr", "Incremental").await;
    let incr_uid = incr["metadata"]["uid"].as_str().unwrap().to_string();
    let ds2 = data_snapshots(&incr);
    assert_eq!(ds2.len(), 2, "{:#}", incr["status"]["snapshot"]);
    for d in &ds2 {
        assert_eq!(d["snapshotType"], "Incremental", "{d:#}");
    }
    // The real datamover ran four uploads; the incremental's two name the full as parent.
    let uploads: Vec<_> = world
        .kubelet
        .runs()
        .into_iter()
        .filter(|r| r.command.get(1).map(String::as_str) == Some("backup"))
        .collect();
    assert_eq!(uploads.len(), 4, "{}", world.job_runs());
    for u in &uploads[2..] {
        let p = u.command.iter().position(|a| a == "--parent").unwrap();
        assert_eq!(u.command[p + 1], full_uid);
    }
    // The target holds the committed metadata of both.
    for uid in [&full_uid, &incr_uid] {
        assert!(
            world
                .s3_get(&format!("{plan_uid}/{uid}/_metadata/commit.json"))
                .await
                .is_some(),
            "{uid} not committed"
        );
    }

    eprintln!("cluster_e2e: incr done");
    // ClusterRestore 1: both application namespaces into new ones; `logs` excluded.
    world
        .server
        .create(
            json!({"apiVersion": V1, "kind": "ClusterRestore", "metadata": {"name": "to-new"},
            "spec": {"source": {"type": "ClusterBackup", "clusterBackup": {"name": "incr"}},
                "components": [
                    {"backupNamespace": "shop", "restoreNamespace": "shop-r"},
                    {"backupNamespace": "web", "restoreNamespace": "web-r"}],
                "excludeComponents": ["logs"],
                // No Deployment controller here: workloads never become ready.
                "globalConfig": {"resourcesReadyWaitSeconds": 1}}}),
        )
        .unwrap();
    let r1 = world
        .wait_terminal(
            "ClusterRestore",
            None,
            "to-new",
            TERMINAL_RESTORE,
            "Completed",
            100,
        )
        .await;
    let mut created: Vec<String> =
        serde_json::from_value(r1["status"]["createdNamespaces"].clone()).unwrap_or_default();
    created.sort();
    assert_eq!(created, ["shop-r", "web-r"], "{:#}", r1["status"]);
    for (ns, marker) in [("shop-r", "shop-v1"), ("web-r", "web-v1")] {
        for (v, k, name) in RESTORED {
            assert!(
                world.server.get(v, k, Some(ns), name).is_some(),
                "{k} {name} not restored into {ns}"
            );
        }
        let cm = world
            .server
            .get("v1", "ConfigMap", Some(ns), "app-config")
            .unwrap();
        assert_eq!(cm["data"]["marker"], marker, "{ns} got the wrong ConfigMap");
    }
    assert_eq!(
        world.volume_bytes("shop-r", "data").await,
        shop_v2,
        "shop's restored volume differs from the incremental's data"
    );
    assert_eq!(
        world.volume_bytes("web-r", "data").await,
        web_v2,
        "web's restored volume differs from the incremental's data"
    );
    // Excluded and uncovered namespaces: nothing of theirs anywhere new.
    for ns in ["shop-r", "web-r"] {
        assert!(
            world
                .server
                .get("v1", "ConfigMap", Some(ns), "log-config")
                .is_none()
        );
        assert!(
            world
                .server
                .get("v1", "ConfigMap", Some(ns), "not-covered")
                .is_none()
        );
    }
    assert!(
        world
            .server
            .get("v1", "Namespace", None, "logs-r")
            .is_none()
    );

    eprintln!("cluster_e2e: restore 1 done");
    // ClusterRestore 2: into namespaces that exist, with labels of their own; shop's
    // component Replaces its labels and runs a post-restore hook, web's (globalConfig)
    // Appends.
    for (ns, l) in [
        ("shop-x", json!({"team": "old", "keep": "1"})),
        ("web-x", json!({"tier": "silver", "keep": "1"})),
    ] {
        world
            .server
            .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": l}}))
            .unwrap();
    }
    // This product's own kinds (Hooks too) are never backed up: the post-restore hook is
    // created where the restore runs it.
    let record = format!(
        "echo \"$TVK_EXEC_NAMESPACE $TVK_EXEC_POD $TVK_EXEC_CONTAINER\" >> {}",
        hook_log.display()
    );
    world
        .server
        .create(json!({"apiVersion": V1, "kind": "Hook", "metadata": {"name": "reindex", "namespace": "shop-x"},
            "spec": {"post": {"execAction": {"command": ["sh", "-c", record]}, "timeoutSeconds": 20}}}))
        .unwrap();
    world
        .server
        .create(json!({"apiVersion": V1, "kind": "ClusterRestore", "metadata": {"name": "to-existing"},
            "spec": {"source": {"type": "ClusterBackup", "clusterBackup": {"name": "incr"}},
                "components": [
                    {"backupNamespace": "shop", "restoreNamespace": "shop-x",
                        "restoreConfig": {"restoreFlags": {"restoreNamespaceLabelsAnnotations": "Replace"}},
                        "hookConfig": {"podReadyWaitSeconds": 60, "hooks": [
                            {"hook": {"name": "reindex"}, "podSelector": {"labels": [{"matchLabels": {"role": "db"}}]}}]}},
                    {"backupNamespace": "web", "restoreNamespace": "web-x"}],
                "excludeComponents": ["logs"],
                "globalConfig": {"resourcesReadyWaitSeconds": 1,
                    "restoreFlags": {"restoreNamespaceLabelsAnnotations": "Append"}}}}))
        .unwrap();
    run_restored_pods(&world, "shop-x").await;
    let r2 = world
        .wait_terminal(
            "ClusterRestore",
            None,
            "to-existing",
            TERMINAL_RESTORE,
            "Completed",
            100,
        )
        .await;
    let created2: Vec<String> =
        serde_json::from_value(r2["status"]["createdNamespaces"].clone()).unwrap_or_default();
    assert!(created2.is_empty(), "{:#}", r2["status"]);
    let shop_x = labels(&world.server.get("v1", "Namespace", None, "shop-x").unwrap());
    assert_eq!(
        shop_x.get("team").map(String::as_str),
        Some("shop"),
        "{shop_x:?}"
    );
    assert_eq!(
        shop_x.get("env").map(String::as_str),
        Some("prod"),
        "{shop_x:?}"
    );
    assert!(
        !shop_x.contains_key("keep"),
        "Replace keeps no other label: {shop_x:?}"
    );
    let web_x = labels(&world.server.get("v1", "Namespace", None, "web-x").unwrap());
    assert_eq!(
        web_x.get("tier").map(String::as_str),
        Some("silver"),
        "Append keeps what is there: {web_x:?}"
    );
    assert_eq!(
        web_x.get("keep").map(String::as_str),
        Some("1"),
        "{web_x:?}"
    );
    for (v, k, name) in RESTORED {
        assert!(
            world.server.get(v, k, Some("shop-x"), name).is_some(),
            "{k} {name} not in shop-x"
        );
        assert!(
            world.server.get(v, k, Some("web-x"), name).is_some(),
            "{k} {name} not in web-x"
        );
    }
    assert_eq!(world.volume_bytes("shop-x", "data").await, shop_v2);
    // The hook ran once, in the restored pod of shop-x (not web-x: no hook there).
    let log = std::fs::read_to_string(&hook_log).unwrap_or_default();
    assert_eq!(log.trim(), "shop-x db-0 db", "hook runs: {log:?}");
    world.stop().await;
    let _ = std::fs::remove_file(&hook_log);
}
