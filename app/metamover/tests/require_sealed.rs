#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `--require-sealed` through the binary: a backup whose metadata is plain (as a target writer
//! could swap in for an encrypted one) is refused by `restore-plan` and `restore` given a key
//! and the flag, with an error naming the object; given the key alone it is read as today.

use std::path::Path;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_metadata_is_refused_when_the_backup_must_be_sealed() {
    let dir = TempDir::new("meta-require-sealed").unwrap();
    let target = dir.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "the plan's key").unwrap();
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
            "metadata": {"name": "settings", "namespace": ns}, "data": {"token": "x"}}))
        .unwrap();
    let plan = server
        .create(
            json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "BackupPlan",
            "metadata": {"name": "plan", "namespace": ns},
            "spec": {"backupConfig": {"target": {"name": "t", "namespace": ns}}}}),
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
    // A plain backup (no key): what a writer to the target could put in an encrypted one's place.
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
    let commit_json = target.join(&location).join("_metadata/commit.json");
    assert!(
        !std::fs::read(&commit_json)
            .unwrap()
            .starts_with(b"TVKSEAL1")
    );

    server
        .create(
            json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Restore",
            "metadata": {"name": "r1", "namespace": "copy"},
            "spec": {"source": {"type": "Location", "location": location,
                "target": {"name": "t", "namespace": ns}}, "resourcesReadyWaitSeconds": 0}}),
        )
        .unwrap();
    let restore_args = |cmd: &str, require_sealed: bool| {
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
            "--encryption-key-file".into(),
            keyf.to_string(),
        ];
        if require_sealed {
            a.push("--require-sealed".into());
        }
        a
    };
    let run = |a: Vec<String>| async move {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        metamover(kc, &refs).await
    };
    let commit_key = format!("{location}/_metadata/commit.json");
    let refused = |run: &Run, cmd: &str| {
        assert_eq!(run.code, 1, "{cmd}: {}", run.result);
        let error = run.result["error"].as_str().unwrap();
        assert!(error.contains(&commit_key), "{cmd}: {error}");
        assert!(error.contains("not encrypted"), "{cmd}: {error}");
    };
    refused(
        &run(restore_args("restore-plan", true)).await,
        "restore-plan",
    );
    // The flag needs a key (it says the backup is encrypted).
    let no_key = run(vec![
        "restore-plan".into(),
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
        "--require-sealed".into(),
    ])
    .await;
    assert_eq!(no_key.code, 2, "{}", no_key.stderr);
    assert!(
        no_key.stderr.contains("--encryption-key-file"),
        "{}",
        no_key.stderr
    );
    // Without the flag, a key given for a plain backup reads it as before.
    let plan = run(restore_args("restore-plan", false)).await;
    assert_eq!(plan.code, 0, "{}\n{}", plan.result, plan.stderr);
    // `restore` reads the backup again: refused with the flag, nothing restored.
    refused(&run(restore_args("restore", true)).await, "restore");
    assert!(
        server
            .get("v1", "ConfigMap", Some("copy"), "settings")
            .is_none()
    );
    let restored = run(restore_args("restore", false)).await;
    assert_eq!(restored.code, 0, "{}\n{}", restored.result, restored.stderr);
    assert_eq!(
        server
            .get("v1", "ConfigMap", Some("copy"), "settings")
            .unwrap()["data"]["token"],
        "x"
    );
}
