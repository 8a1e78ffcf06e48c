#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! End to end with no cluster: the controllers under real watches (`run_controllers`) against
//! tvk-test-apiserver, the test kubelet (tvk-test-kubelet) running every Job's REAL command —
//! the built `tvk-metamover` (and `tvk-datamover`) binaries, as local processes — against moto
//! S3, and the harness's CSI driver for PVCs and VolumeSnapshots. A sample application is
//! backed up from creation to `Available`; what lands on the target is checked.

mod common;
#[path = "common/kubelet_world.rs"]
mod kubelet_world;

use std::time::Duration;

use kubelet_world::{V1, World, data_snapshots, pattern, write_at};
use serde_json::{Value, json};
use tvk_test_apiserver::ApiServer;

const NS: &str = common::NS;
const APP: &str = "shop";

/// A Helm 3 release Secret's `data.release` (base64 of Helm's base64(gzip(JSON))) of release
/// `db` (chart postgresql 12.1.0, revision 1, deployed) whose manifest is the ConfigMap
/// `db-config` and the Service `db`. Made with Python's gzip/base64 (fixed mtime).
const HELM_RELEASE_DATA: &str = "SDRzSUFBQUFBQUFDQTMyTnZRN0NJQlNGWDRYY3VUVFdrZFhaeWNTSjVSWnVXNks5SUdBVDAvVGRMVlVURjkxT3pzOTNabUFjQ1JUWUZxcE5wNENtR0dud1liVW1pc2w1QnRWVTRManpvR1pJR2ZNOWxSR0ZxMytRaGFVQ00yRE1KUjBwbzhXTVJiL2h3YWZjUjBxMzZ6Y1JtbjNkMUR0WTF2V0k3RHBLS3dDa2xKb3h1UE9ycDhUVWFMNDR0a29jUEhldVAyTFEvSGxSbW9Vb04wcllWcHF0b1BrUDQwUnhjb1orRURURDhnUzcxcVpSRkFFQUFBPT0=";

async fn start() -> World {
    World::start(&[(APP, json!({}))]).await
}

/// Creates the plan and waits for it (and its Target) to be Available.
async fn plan(world: &World) -> Value {
    world.backup_plan(APP, "app", json!({})).await
}

/// Creates a Backup and waits for it to be Available (panics with every Job's output if not).
async fn backup(world: &World, name: &str, type_: &str) -> Value {
    world
        .take_backup(APP, name, "app", type_, "Available")
        .await
}

fn seed_application(server: &ApiServer) {
    let objs = [
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web", "namespace": APP}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-config", "namespace": APP},
            "data": {"LISTEN": ":8080"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web-secret", "namespace": APP},
            "type": "Opaque", "data": {"token": "czNjcjN0"}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": APP},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                    "serviceAccountName": "web",
                    "containers": [{"name": "web", "image": "nginx:1.27",
                        "envFrom": [{"configMapRef": {"name": "web-config"}}],
                        "volumeMounts": [{"name": "s", "mountPath": "/secret"}]}],
                    "volumes": [{"name": "s", "secret": {"secretName": "web-secret"}}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": APP},
            "spec": {"clusterIP": "10.0.0.10", "clusterIPs": ["10.0.0.10"], "selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        // The Helm release `db`: its objects and its storage Secret.
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db-config", "namespace": APP,
            "labels": {"app.kubernetes.io/managed-by": "Helm"}, "annotations": {"meta.helm.sh/release-name": "db"}},
            "data": {"max_connections": "100"}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": APP,
            "labels": {"app.kubernetes.io/managed-by": "Helm"}, "annotations": {"meta.helm.sh/release-name": "db"}},
            "spec": {"clusterIP": "10.0.0.11", "clusterIPs": ["10.0.0.11"], "ports": [{"port": 5432}]}}),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
            "metadata": {"name": "sh.helm.release.v1.db.v1", "namespace": APP,
                "labels": {"owner": "helm", "name": "db", "status": "deployed", "version": "1"}},
            "data": {"release": HELM_RELEASE_DATA}}),
        // Cluster-generated objects that must not be backed up.
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt", "namespace": APP},
            "data": {"ca.crt": "x"}}),
        json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1", "namespace": APP},
            "involvedObject": {"kind": "Pod", "name": "web-1"}, "reason": "Started"}),
    ];
    for o in objs {
        server.create(o).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_metadata_backup_with_real_metamover_jobs_reaches_available() {
    let world = start().await;
    seed_application(&world.server);
    let plan = plan(&world).await;
    let done = backup(&world, "b1", "Full").await;

    // The real metamover ran both Jobs, and nothing else ran.
    let runs = world.kubelet.runs();
    let args: Vec<&str> = runs
        .iter()
        .map(|r| r.command.get(1).map(String::as_str).unwrap_or(""))
        .collect();
    assert_eq!(args, ["snapshot", "commit"], "{runs:#?}");
    assert!(runs.iter().all(|r| r.succeeded && r.exit_code == Some(0)));
    assert!(runs[0].command[0].ends_with("tvk-metamover"));

    // Status: written by the metamover (snapshot) and the controller (phases, location).
    let location = format!(
        "{}/{}",
        plan["metadata"]["uid"].as_str().unwrap(),
        done["metadata"]["uid"].as_str().unwrap()
    );
    assert_eq!(done["status"]["location"], location);
    assert_eq!(done["status"]["percentageCompletion"], 100);
    let charts = done["status"]["snapshot"]["helmCharts"].as_array().unwrap();
    assert_eq!(charts.len(), 1, "{}", done["status"]["snapshot"]);
    assert_eq!(charts[0]["release"], "db");

    // On the target: the metamover's layout, committed, every document as the index says.
    let meta = format!("{location}/_metadata");
    let keys = world.s3_keys(&meta).await;
    for k in ["index.json", "snapshot.json", "commit.json"] {
        assert!(
            keys.contains(&format!("{meta}/{k}")),
            "{k} missing from {keys:#?}"
        );
    }
    let index: Value =
        serde_json::from_slice(&world.s3_get(&format!("{meta}/index.json")).await.unwrap())
            .unwrap();
    let docs = index["documents"].as_array().unwrap();
    let count = |kind: &str| -> u64 {
        docs.iter()
            .filter(|d| d["kind"] == kind && d["namespace"] == APP)
            .map(|d| d["count"].as_u64().unwrap())
            .sum()
    };
    // web-config, db-config (kube-root-ca.crt is cluster-generated).
    assert_eq!(count("ConfigMap"), 2, "{index:#}");
    // web-secret only: the Helm storage Secret is kept under helm/.
    assert_eq!(count("Secret"), 1, "{index:#}");
    assert_eq!(count("Deployment"), 1);
    assert_eq!(count("Service"), 2);
    assert_eq!(count("ServiceAccount"), 1);
    assert_eq!(count("Event"), 0);
    for d in docs {
        let key = format!("{meta}/{}", d["key"].as_str().unwrap());
        let bytes = world
            .s3_get(&key)
            .await
            .unwrap_or_else(|| panic!("{key} listed in the index but not on the target"));
        assert_eq!(bytes.len() as u64, d["bytes"].as_u64().unwrap(), "{key}");
        assert_eq!(
            blake3::hash(&bytes).to_hex().as_str(),
            d["blake3"].as_str().unwrap(),
            "{key}"
        );
    }
    let releases = index["helm"].as_array().unwrap();
    assert_eq!(releases.len(), 1);
    assert_eq!(releases[0]["release"], "db");
    let commit: Value =
        serde_json::from_slice(&world.s3_get(&format!("{meta}/commit.json")).await.unwrap())
            .unwrap();
    assert_eq!(
        commit["backup"]["uid"], done["metadata"]["uid"],
        "{commit:#}"
    );
    assert_eq!(commit["backup"]["planUid"], plan["metadata"]["uid"]);
    let index_bytes = world.s3_get(&format!("{meta}/index.json")).await.unwrap();
    assert_eq!(
        commit["indexBlake3"].as_str().unwrap(),
        blake3::hash(&index_bytes).to_hex().as_str()
    );
    assert_eq!(commit["object"]["metadata"]["name"], "b1");
    // Cleanup removed the backup's Jobs (the Pods go with them).
    for _ in 0..600 {
        if world.server.list("batch/v1", "Job", Some(NS)).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left: Vec<Value> = world
        .server
        .list("batch/v1", "Job", Some(NS))
        .into_iter()
        .map(|j| {
            json!([
                j["metadata"]["name"],
                j["metadata"]["labels"],
                j["metadata"]["deletionTimestamp"],
                j["metadata"]["finalizers"]
            ])
        })
        .collect();
    assert!(left.is_empty(), "Jobs left after cleanup: {left:#?}");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_volume_full_then_incremental_restore_bit_exact() {
    const SIZE: usize = 8 << 20;
    let world = start().await;
    seed_application(&world.server);
    let (file, pvc_uid) = world.volume(APP, "data", "8Mi").await;
    // Application data: 3 MiB of pattern, a hole, 1 MiB of pattern at the end.
    write_at(&file, 0, &pattern(3 << 20, 7));
    write_at(&file, (SIZE - (1 << 20)) as u64, &pattern(1 << 20, 8));
    let v1 = std::fs::read(&file).unwrap();
    let plan = plan(&world).await;
    let plan_uid = plan["metadata"]["uid"].as_str().unwrap().to_string();
    let b1 = backup(&world, "full", "Full").await;
    let b1_uid = b1["metadata"]["uid"].as_str().unwrap().to_string();
    let ds = data_snapshots(&b1);
    assert_eq!(ds.len(), 1, "{}", b1["status"]["snapshot"]);
    assert_eq!(ds[0]["persistentVolumeClaimName"], "data");
    assert_eq!(ds[0]["location"], format!("{plan_uid}/{b1_uid}/{pvc_uid}"));

    // Change some blocks: 64 KiB in the data, 4 KiB into the hole, the last byte.
    write_at(&file, 1 << 20, &pattern(64 << 10, 9));
    write_at(&file, 5 << 20, &pattern(4 << 10, 10));
    write_at(&file, (SIZE - 1) as u64, &[0xEE]);
    let v2 = std::fs::read(&file).unwrap();
    assert_ne!(v1, v2);
    let b2 = backup(&world, "incr", "Incremental").await;
    let b2_uid = b2["metadata"]["uid"].as_str().unwrap().to_string();
    let ds2 = data_snapshots(&b2);
    assert_eq!(ds2.len(), 1);
    assert_eq!(
        ds2[0]["snapshotType"], "Incremental",
        "{}",
        b2["status"]["snapshot"]
    );

    // The real datamover Jobs ran: one backup per volume per backup, the second with --parent.
    let uploads: Vec<_> = world
        .kubelet
        .runs()
        .into_iter()
        .filter(|r| r.command.get(1).map(String::as_str) == Some("backup"))
        .collect();
    assert_eq!(uploads.len(), 2, "{uploads:#?}");
    assert!(!uploads[0].command.contains(&"--parent".to_string()));
    let parent = uploads[1]
        .command
        .iter()
        .position(|a| a == "--parent")
        .unwrap();
    assert_eq!(uploads[1].command[parent + 1], b1_uid);

    // On the target: both images; the incremental holds only what changed.
    let image_size = |keys: &[String], backup: &str| {
        let k = format!("{plan_uid}/{backup}/{pvc_uid}/data.qcow2");
        assert!(keys.contains(&k), "{k} missing: {keys:#?}");
    };
    let keys = world.s3_keys(&plan_uid).await;
    image_size(&keys, &b1_uid);
    image_size(&keys, &b2_uid);
    let full_img = world
        .s3_get(&format!("{plan_uid}/{b1_uid}/{pvc_uid}/data.qcow2"))
        .await
        .unwrap();
    let incr_img = world
        .s3_get(&format!("{plan_uid}/{b2_uid}/{pvc_uid}/data.qcow2"))
        .await
        .unwrap();
    assert!(
        incr_img.len() * 4 < full_img.len(),
        "incremental {} vs full {}",
        incr_img.len(),
        full_img.len()
    );

    // Restored with the real datamover: bit-exact with the volume at each backup.
    let r1 = world
        .restore_volume(&plan_uid, &b1_uid, &pvc_uid, SIZE as u64)
        .await;
    assert!(
        r1 == v1,
        "the full backup does not restore to the data at its time"
    );
    let r2 = world
        .restore_volume(&plan_uid, &b2_uid, &pvc_uid, SIZE as u64)
        .await;
    assert!(
        r2 == v2,
        "the incremental does not restore to the data at its time"
    );

    // Cleanup: no temporary claims, snapshots or Jobs left in the install namespace.
    let left = || -> Vec<Value> {
        let mut left = Vec::new();
        for (v, k, ns) in [
            ("batch/v1", "Job", NS),
            ("v1", "PersistentVolumeClaim", NS),
            ("snapshot.storage.k8s.io/v1", "VolumeSnapshot", NS),
            ("snapshot.storage.k8s.io/v1", "VolumeSnapshot", APP),
        ] {
            left.extend(world.server.list(v, k, Some(ns)).into_iter().map(|o| {
                json!([
                    k,
                    o["metadata"]["name"],
                    o["metadata"]["deletionTimestamp"],
                    o["metadata"]["finalizers"]
                ])
            }));
        }
        left
    };
    for _ in 0..600 {
        if left().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        left().is_empty(),
        "temporary objects left after cleanup: {:#?}",
        left()
    );
    world.stop().await;
}

/// Backup, then Restore into another namespace with every Job's real command: the
/// metaprocessor's restore-plan and restore, and a datamover restore Job that hydrates a
/// staging claim whose volume is then re-bound to the restored claim — the restored volume
/// holds the backed-up bytes and the application's objects are back in the new namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_restore_into_another_namespace_with_real_jobs() {
    const SIZE: usize = 8 << 20;
    const DEST: &str = "shop-restored";
    let world = start().await;
    seed_application(&world.server);
    let (file, _) = world.volume(APP, "data", "8Mi").await;
    write_at(&file, 1 << 20, &pattern(2 << 20, 21));
    write_at(&file, (SIZE - 4096) as u64, &pattern(4096, 22));
    let backed_up = std::fs::read(&file).unwrap();
    plan(&world).await;
    backup(&world, "full", "Full").await;

    world
        .server
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DEST}}))
        .unwrap();
    world
        .server
        .create(json!({"apiVersion": V1, "kind": "Restore", "metadata": {"name": "back", "namespace": DEST},
            "spec": {"source": {"type": "Backup", "backup": {"name": "full", "namespace": APP}},
                // No Deployment controller here: the Deployment never becomes ready.
                "resourcesReadyWaitSeconds": 2}}))
        .unwrap();
    let done = world
        .wait_terminal(
            "Restore",
            Some(DEST),
            "back",
            &["Completed", "Failed"],
            "Completed",
            240,
        )
        .await;
    // The application's objects, in the new namespace.
    for (v, k, name) in [
        ("v1", "ConfigMap", "web-config"),
        ("v1", "Secret", "web-secret"),
        ("v1", "ServiceAccount", "web"),
        ("apps/v1", "Deployment", "web"),
        ("v1", "Service", "web"),
        ("v1", "PersistentVolumeClaim", "data"),
    ] {
        assert!(
            world.server.get(v, k, Some(DEST), name).is_some(),
            "{k} {name} not restored into {DEST}"
        );
    }
    let cm = world
        .server
        .get("v1", "ConfigMap", Some(DEST), "web-config")
        .unwrap();
    assert_eq!(cm["data"]["LISTEN"], ":8080");
    assert!(
        done["status"]["restoreApplication"]["warnings"]
            .to_string()
            .contains("was not ready after resourcesReadyWaitSeconds"),
        "a workload that never became ready is a warning: {}",
        done["status"]["restoreApplication"]["warnings"]
    );
    // The volume: the restored claim's storage holds the backed-up bytes.
    let restored = world
        .kubelet
        .volume_file(DEST, "data", Duration::from_secs(30))
        .await
        .unwrap();
    let bytes = std::fs::read(&restored).unwrap();
    assert_eq!(bytes.len(), backed_up.len());
    assert!(
        bytes == backed_up,
        "the restored volume differs from the backed-up data"
    );
    // The real commands ran: restore-plan, datamover restore, metaprocessor restore.
    let commands: Vec<String> = world
        .kubelet
        .runs()
        .iter()
        .filter_map(|r| r.command.get(1).cloned())
        .collect();
    for c in ["restore-plan", "restore"] {
        assert!(commands.iter().any(|x| x == c), "{c} not run: {commands:?}");
    }
    world.stop().await;
}
