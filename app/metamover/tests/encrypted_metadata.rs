#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Encrypted metadata end to end through the binary, as the Jobs run it: `snapshot` and
//! `commit` with `--encryption-key-file` write only sealed objects under `_metadata/`;
//! `restore-plan` without the key or with a wrong one fails naming what is needed; with the key
//! the plan and the restore go through and the restored ConfigMap holds the backed-up data.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tvk_test_apiserver::ApiServer;
use tvk_testkit::TempDir;

struct Run {
    code: i32,
    result: Value,
    stderr: String,
}

async fn metamover(kubeconfig: &Path, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tvk-metamover"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rev()
        .find(|l| l["event"] == "result")
        .unwrap_or(Value::Null);
    Run {
        code: out.status.code().unwrap_or(-1),
        result,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const MARKER: &str = "tvk-plaintext-marker-7f3a";

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        if p.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_sealed_and_restores_only_with_the_key() {
    let dir = TempDir::new("meta-enc").unwrap();
    let target = dir.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "the plan's key").unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "another key").unwrap();
    let server = ApiServer::start().await.unwrap();
    for c in tvk_api::crd::all() {
        server.create(serde_json::to_value(&c).unwrap()).unwrap();
    }
    let ns = "vault";
    for n in [ns, "copy"] {
        server
            .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}))
            .unwrap();
    }
    server
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": ns}, "data": {"token": MARKER}}))
        .unwrap();
    let plan = server
        .create(
            json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "BackupPlan",
            "metadata": {"name": "plan", "namespace": ns},
            "spec": {"backupConfig": {"target": {"name": "t", "namespace": ns}},
                "encryption": {"encryptionSecret": {"name": "key", "namespace": ns}}}}),
        )
        .unwrap();
    let backup = server
        .create(
            json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Backup",
            "metadata": {"name": "b1", "namespace": ns},
            "spec": {"type": "Full", "backupPlan": {"name": "plan", "namespace": ns}},
            "status": {"status": "InProgress"}}),
        )
        .unwrap();
    let location = format!(
        "{}/{}",
        plan["metadata"]["uid"].as_str().unwrap(),
        backup["metadata"]["uid"].as_str().unwrap()
    );
    let kc = server.kubeconfig_path();
    let tdir = target.to_str().unwrap();
    let keyf = key.to_str().unwrap();
    let backup_args = |cmd: &'static str| {
        vec![
            cmd,
            "--kind",
            "Backup",
            "--namespace",
            ns,
            "--name",
            "b1",
            "--target",
            tdir,
            "--encryption-key-file",
            keyf,
        ]
    };
    let snap = metamover(kc, &backup_args("snapshot")).await;
    assert_eq!(snap.code, 0, "{}\n{}", snap.result, snap.stderr);
    let backups: kube::Api<tvk_api::Backup> = kube::Api::namespaced(server.client(), ns);
    backups
        .patch_status(
            "b1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"location": location}})),
        )
        .await
        .unwrap();
    let commit = metamover(kc, &backup_args("commit")).await;
    assert_eq!(commit.code, 0, "{}\n{}", commit.result, commit.stderr);

    // Every stored metadata object is sealed; none holds the marker or the ConfigMap's name.
    let meta = target.join(&location).join("_metadata");
    let files = files_under(&meta);
    assert!(files.len() >= 4, "{files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            bytes.starts_with(b"TVKSEAL1"),
            "{} is not sealed",
            f.display()
        );
        for needle in [MARKER.as_bytes(), b"settings"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds plaintext",
                f.display()
            );
        }
    }

    server
        .create(
            json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Restore",
            "metadata": {"name": "r1", "namespace": "copy"},
            "spec": {"source": {"type": "Location", "location": location,
                "target": {"name": "t", "namespace": ns}}, "resourcesReadyWaitSeconds": 0}}),
        )
        .unwrap();
    let restore_args = |cmd: &'static str, k: Option<&'static str>| {
        let mut a = vec![
            cmd.to_string(),
            "--kind".into(),
            "Restore".into(),
            "--namespace".into(),
            "copy".into(),
            "--name".into(),
            "r1".into(),
            "--location".into(),
            location.clone(),
            "--target".into(),
            tdir.to_string(),
        ];
        if let Some(k) = k {
            a.push("--encryption-key-file".into());
            a.push(k.into());
        }
        a
    };
    let run = |a: Vec<String>| async move {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        metamover(kc, &refs).await
    };
    let keyf: &'static str = Box::leak(keyf.to_string().into_boxed_str());
    let wrongf: &'static str = Box::leak(wrong.to_str().unwrap().to_string().into_boxed_str());
    let no_key = run(restore_args("restore-plan", None)).await;
    assert_eq!(no_key.code, 1, "{}", no_key.result);
    assert!(
        no_key.result["error"]
            .as_str()
            .unwrap()
            .contains("spec.encryption.encryptionSecret"),
        "{}",
        no_key.result
    );
    let bad = run(restore_args("restore-plan", Some(wrongf))).await;
    assert_eq!(bad.code, 1, "{}", bad.result);
    assert!(
        bad.result["error"]
            .as_str()
            .unwrap()
            .contains("does not open"),
        "{}",
        bad.result
    );
    let plan = run(restore_args("restore-plan", Some(keyf))).await;
    assert_eq!(plan.code, 0, "{}\n{}", plan.result, plan.stderr);
    let restored = run(restore_args("restore", Some(keyf))).await;
    assert_eq!(restored.code, 0, "{}\n{}", restored.result, restored.stderr);
    let cm = server
        .get("v1", "ConfigMap", Some("copy"), "settings")
        .unwrap();
    assert_eq!(cm["data"]["token"], MARKER);
}
