#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Encrypted backups end to end with no cluster (the same harness as tests/backup_e2e.rs: the
//! controllers under real watches, tvk-test-apiserver, the test kubelet running every Job's
//! real command against moto S3). A BackupPlan naming an encryption Secret: the Secret reaches
//! every Job that reads or writes the backup, nothing on the target holds plaintext of the
//! application's objects or volume, a full and an incremental are Available with
//! `encryptionEnabled`, and a Restore (with the plan's key, or its own) brings both objects and
//! volume back bit-exact; a wrong or missing key fails clearly.

mod common;
#[path = "common/kubelet_world.rs"]
mod kubelet_world;

use base64::Engine as _;
use kubelet_world::{V1, World, data_snapshots, pattern, write_at};
use serde_json::{Value, json};

const NS: &str = common::NS;
const APP: &str = "vault";
const SIZE: usize = 8 << 20;
/// Written into a ConfigMap and, repeated, into the volume: must never appear on the target.
const MARKER: &str = "tvk-plaintext-marker-5e1b9c";
const KEY: &str = "correct horse battery staple";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn start() -> World {
    World::start(&[(APP, json!({}))]).await
}

fn seed(world: &World) {
    for o in [
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": APP},
            "data": {"note": MARKER}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "backup-key", "namespace": APP},
            "type": "Opaque", "data": {"encryptionKey": b64(KEY)}}),
    ] {
        world.server.create(o).unwrap();
    }
}

async fn plan(world: &World, secret: &str) -> Value {
    world
        .backup_plan(
            APP,
            "app",
            json!({"encryption": {"encryptionSecret": {"name": secret}}}),
        )
        .await
}

async fn backup(world: &World, name: &str, type_: &str, expect: &str) -> Value {
    world.take_backup(APP, name, "app", type_, expect).await
}

fn marker_block() -> Vec<u8> {
    MARKER.as_bytes().repeat((64 << 10) / MARKER.len() + 1)[..64 << 10].to_vec()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_encrypted_backups_hold_no_plaintext_and_restore_bit_exact() {
    const DEST: &str = "vault-restored";
    let world = start().await;
    seed(&world);
    let (file, _pvc_uid) = world.volume(APP, "data", "8Mi").await;
    write_at(&file, 0, &pattern(2 << 20, 31));
    write_at(&file, 3 << 20, &marker_block());
    let plan = plan(&world, "backup-key").await;
    let plan_uid = plan["metadata"]["uid"].as_str().unwrap().to_string();
    let full = backup(&world, "full", "Full", "Available").await;
    assert_eq!(
        full["status"]["encryptionEnabled"], true,
        "{}",
        full["status"]
    );

    // Incremental after a change; it builds on the encrypted full.
    write_at(&file, 1 << 20, &pattern(64 << 10, 32));
    write_at(&file, (SIZE - 1) as u64, &[0x5A]);
    let v2 = std::fs::read(&file).unwrap();
    let incr = backup(&world, "incr", "Incremental", "Available").await;
    assert_eq!(incr["status"]["encryptionEnabled"], true);
    let ds = data_snapshots(&incr);
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0]["snapshotType"], "Incremental", "{}", incr["status"]);

    // Every Job that reads or writes the backup got the key as a file, never as a value.
    let runs = world.kubelet.runs();
    for run in &runs {
        let joined = run.command.join(" ");
        assert!(
            !joined.contains(KEY),
            "the key is on a command line: {joined}"
        );
        let sub = run.command.get(1).map(String::as_str).unwrap_or("");
        if ["snapshot", "commit", "backup"].contains(&sub) {
            assert!(
                run.command
                    .iter()
                    .any(|a| a.starts_with("--encryption-key-file=")),
                "{sub} ran without the key: {joined}"
            );
        }
    }
    // The key was copied into the install namespace for the Jobs (the plan's is elsewhere).
    let copies: Vec<Value> = world
        .server
        .list("v1", "Secret", Some(NS))
        .into_iter()
        .filter(|s| {
            s["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("tvk-encryption-"))
        })
        .collect();
    assert_eq!(copies.len(), 1, "{copies:#?}");
    assert_eq!(copies[0]["data"]["encryptionKey"], b64(KEY));

    // Nothing on the target holds the plaintext marker (metadata sealed, images LUKS).
    let keys = world.s3_keys(&plan_uid).await;
    assert!(keys.iter().any(|k| k.ends_with("data.qcow2")), "{keys:#?}");
    assert!(keys.iter().any(|k| k.contains("_metadata/")), "{keys:#?}");
    for k in &keys {
        let bytes = world.s3_get(k).await.unwrap();
        assert!(
            !contains(&bytes, MARKER.as_bytes()),
            "{k} holds the plaintext marker"
        );
    }

    // Restore with the plan's key (the Restore names none): objects and volume come back.
    world
        .server
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DEST}}))
        .unwrap();
    world
        .server
        .create(json!({"apiVersion": V1, "kind": "Restore", "metadata": {"name": "back", "namespace": DEST},
            "spec": {"source": {"type": "Backup", "backup": {"name": "incr", "namespace": APP}},
                "resourcesReadyWaitSeconds": 2}}))
        .unwrap();
    world
        .wait_terminal(
            "Restore",
            Some(DEST),
            "back",
            &["Completed", "Failed"],
            "Completed",
            240,
        )
        .await;
    let cm = world
        .server
        .get("v1", "ConfigMap", Some(DEST), "settings")
        .unwrap();
    assert_eq!(cm["data"]["note"], MARKER);
    let restored = world
        .kubelet
        .volume_file(DEST, "data", std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let bytes = std::fs::read(&restored).unwrap();
    assert!(
        bytes == v2,
        "the restored volume differs from the data at the incremental"
    );
    // Every metaprocessor Job of the encrypted backups, backing up and restoring, refused plain
    // metadata (`--require-sealed`); the datamover never gets the flag.
    let mut sealed_runs = 0;
    for run in world.kubelet.runs() {
        let program = run.command.first().map(String::as_str).unwrap_or("");
        let sub = run.command.get(1).map(String::as_str).unwrap_or("");
        let sealed = run.command.iter().any(|a| a == "--require-sealed");
        let joined = run.command.join(" ");
        if program.ends_with("tvk-metamover")
            && ["snapshot", "commit", "restore-plan", "restore"].contains(&sub)
        {
            assert!(sealed, "{sub} ran without --require-sealed: {joined}");
            sealed_runs += 1;
        } else {
            assert!(!sealed, "{joined}");
        }
    }
    // Two backups' snapshot and commit, and the restore's plan and restore.
    assert!(sealed_runs >= 6, "{sealed_runs}");

    // A Restore naming a wrong key fails, saying so, and writes nothing.
    const WRONG: &str = "vault-wrong";
    world
        .server
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": WRONG}}))
        .unwrap();
    world
        .server
        .create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "other-key", "namespace": WRONG},
            "type": "Opaque", "data": {"encryptionKey": b64("not the key")}}))
        .unwrap();
    world
        .server
        .create(json!({"apiVersion": V1, "kind": "Restore", "metadata": {"name": "wrong", "namespace": WRONG},
            "spec": {"source": {"type": "Backup", "backup": {"name": "full", "namespace": APP}},
                "encryption": {"encryptionSecret": {"name": "other-key"}}}}))
        .unwrap();
    let failed = world
        .wait_terminal(
            "Restore",
            Some(WRONG),
            "wrong",
            &["Completed", "Failed"],
            "Failed",
            240,
        )
        .await;
    let why = failed["status"]["condition"].to_string();
    assert!(why.to_lowercase().contains("key"), "{why}");
    assert!(
        world
            .server
            .get("v1", "ConfigMap", Some(WRONG), "settings")
            .is_none(),
        "a restore with the wrong key wrote objects"
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plan_whose_secret_has_no_key_fails_the_backup_before_anything_is_written() {
    let world = start().await;
    world
        .server
        .create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "empty", "namespace": APP},
            "type": "Opaque", "data": {"other": b64("x")}}))
        .unwrap();
    let plan = plan(&world, "empty").await;
    let plan_uid = plan["metadata"]["uid"].as_str().unwrap().to_string();
    let failed = backup(&world, "b", "Full", "Failed").await;
    let why = failed["status"]["condition"].to_string();
    assert!(
        why.contains("PreBackupValidation") && why.contains("encryptionKey"),
        "{why}"
    );
    assert!(
        world.kubelet.runs().is_empty(),
        "Jobs ran for a backup without a key"
    );
    assert!(world.s3_keys(&plan_uid).await.is_empty());
    world.stop().await;
}
