//! What the metamover's binary tests share: running `tvk-metamover` as the Jobs do, and a
//! one-ConfigMap backup on a filesystem target with a Location restore of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tvk_test_apiserver::ApiServer;
use tvk_testkit::TempDir;

/// One run of the binary: exit code, its JSON lines, stderr.
pub struct Run {
    pub code: i32,
    pub lines: Vec<Value>,
    pub stderr: String,
}

impl Run {
    /// The `result` line.
    pub fn result(&self) -> &Value {
        self.lines
            .iter()
            .rev()
            .find(|l| l["event"] == "result")
            .unwrap_or_else(|| panic!("no result line; stderr: {}", self.stderr))
    }

    /// The result's summary of a successful run.
    pub fn ok(&self) -> &Value {
        assert_eq!(self.code, 0, "{:?}\n{}", self.lines, self.stderr);
        &self.result()["result"]
    }

    /// The result's error text.
    pub fn error(&self) -> String {
        self.result()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// Runs `tvk-metamover` with `KUBECONFIG`.
pub async fn metamover(kubeconfig: &Path, args: &[&str]) -> Run {
    metamover_env(kubeconfig, args, &[]).await
}

/// Runs `tvk-metamover` with `KUBECONFIG` and more environment.
pub async fn metamover_env(kubeconfig: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tvk-metamover"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    Run {
        code: out.status.code().unwrap_or(-1),
        lines: stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
            .collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Backup `b1` of plan `plan` in namespace `vault` (ConfigMap `settings` with `token`),
/// snapshotted and committed by the binary on a filesystem target; Restore `r1` in namespace
/// `copy` from its location.
pub struct OneBackup {
    pub server: ApiServer,
    pub dir: TempDir,
    pub target: PathBuf,
    /// The plan's key file ("the plan's key").
    pub key: PathBuf,
    /// `<plan uid>/<backup uid>`.
    pub location: String,
}

pub const NS: &str = "vault";

impl OneBackup {
    /// Backs up the ConfigMap; `encrypted`: the plan names an encryption Secret and the
    /// snapshot and commit get the key.
    pub async fn new(prefix: &str, token: &str, encrypted: bool) -> Self {
        let dir = TempDir::new(prefix).unwrap();
        let target = dir.path().join("target");
        std::fs::create_dir(&target).unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "the plan's key").unwrap();
        let server = ApiServer::start().await.unwrap();
        install_tvk_crds(&server);
        create_namespaces(&server, &[NS, "copy"]);
        server
            .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "settings", "namespace": NS}, "data": {"token": token}}))
            .unwrap();
        let encryption = if encrypted {
            json!({"encryption": {"encryptionSecret": {"name": "key", "namespace": NS}}})
        } else {
            json!({})
        };
        let plan_uid = create_plan(&server, NS, encryption);
        let location = format!("{plan_uid}/{}", create_backup(&server, NS, "b1"));
        let w = Self {
            server,
            dir,
            target,
            key,
            location,
        };
        let keyf = w.key.to_str().unwrap().to_owned();
        let backup_args = |cmd: &'static str| {
            let mut a = vec![
                cmd,
                "--kind",
                "Backup",
                "--namespace",
                NS,
                "--name",
                "b1",
                "--target",
                w.target.to_str().unwrap(),
            ];
            if encrypted {
                a.extend(["--encryption-key-file", keyf.as_str()]);
            }
            a
        };
        let kc = w.server.kubeconfig_path();
        let snap = metamover(kc, &backup_args("snapshot")).await;
        assert_eq!(snap.code, 0, "{:?}\n{}", snap.lines, snap.stderr);
        let backups: kube::Api<tvk_api::Backup> = kube::Api::namespaced(w.server.client(), NS);
        backups
            .patch_status(
                "b1",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"status": {"location": w.location}})),
            )
            .await
            .unwrap();
        let commit = metamover(kc, &backup_args("commit")).await;
        assert_eq!(commit.code, 0, "{:?}\n{}", commit.lines, commit.stderr);
        w.server
            .create(
                json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Restore",
                "metadata": {"name": "r1", "namespace": "copy"},
                "spec": {"source": {"type": "Location", "location": w.location,
                    "target": {"name": "t", "namespace": NS}}, "resourcesReadyWaitSeconds": 0}}),
            )
            .unwrap();
        w
    }

    /// Runs `cmd` (restore-plan, restore, …) for Restore `r1` with `extra` arguments.
    pub async fn restore_run(&self, cmd: &str, extra: &[&str]) -> Run {
        let mut a = restore_args(cmd, "r1", &self.location, self.target.to_str().unwrap());
        a.extend_from_slice(extra);
        metamover(self.server.kubeconfig_path(), &a).await
    }
}

/// BackupPlan `plan` in `ns` backing up to target `ns/t`, with the spec fields of `extra` too;
/// returns its uid.
pub fn create_plan(server: &ApiServer, ns: &str, extra: Value) -> String {
    let mut spec = json!({"backupConfig": {"target": {"name": "t", "namespace": ns}}});
    if let (Some(s), Value::Object(e)) = (spec.as_object_mut(), extra) {
        s.extend(e);
    }
    let plan = server
        .create(
            json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "BackupPlan",
            "metadata": {"name": "plan", "namespace": ns}, "spec": spec}),
        )
        .unwrap();
    plan["metadata"]["uid"].as_str().unwrap().to_owned()
}

/// Backup `name` of plan `ns/plan`, Full and InProgress as the control plane creates it;
/// returns its uid.
pub fn create_backup(server: &ApiServer, ns: &str, name: &str) -> String {
    let backup = server
        .create(
            json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Backup",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"type": "Full", "backupPlan": {"name": "plan", "namespace": ns}},
            "status": {"status": "InProgress"}}),
        )
        .unwrap();
    backup["metadata"]["uid"].as_str().unwrap().to_owned()
}

/// Registers TrilioVault's CustomResourceDefinitions (Backup, Restore, plans, …) on `server`.
pub fn install_tvk_crds(server: &ApiServer) {
    for c in tvk_api::crd::all() {
        server.create(serde_json::to_value(&c).unwrap()).unwrap();
    }
}

/// Creates the namespaces `names` (no labels).
pub fn create_namespaces(server: &ApiServer, names: &[&str]) {
    for n in names {
        server
            .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}))
            .unwrap();
    }
}

/// The arguments of `cmd` (`restore-plan`, `restore`, …) for Restore `copy/name` of the backup
/// at `location` on target `tdir`.
pub fn restore_args<'a>(
    cmd: &'a str,
    name: &'a str,
    location: &'a str,
    tdir: &'a str,
) -> Vec<&'a str> {
    vec![
        cmd,
        "--kind",
        "Restore",
        "--namespace",
        "copy",
        "--name",
        name,
        "--location",
        location,
        "--target",
        tdir,
    ]
}

/// The test S3 server's credentials in the environment, as the Jobs get them.
pub const S3_ENV: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", tvk_testkit::S3_ACCESS_KEY),
    ("AWS_SECRET_ACCESS_KEY", tvk_testkit::S3_SECRET_KEY),
];

/// ClusterBackupPlan `cp` backing up to target `default/t`, with the spec fields of `extra`
/// (`backupComponents`, `namespaceSelector`), and its ClusterBackup `cb` (Full); returns both
/// as stored.
pub fn create_cluster_plan_and_backup(server: &ApiServer, extra: Value) -> (Value, Value) {
    let mut spec = json!({"backupConfig": {"target": {"name": "t", "namespace": "default"}}});
    if let (Some(s), Value::Object(e)) = (spec.as_object_mut(), extra) {
        s.extend(e);
    }
    let plan = server
        .create(
            json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "ClusterBackupPlan",
            "metadata": {"name": "cp"}, "spec": spec}),
        )
        .unwrap();
    let backup = server
        .create(json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "ClusterBackup",
            "metadata": {"name": "cb"}, "spec": {"type": "Full", "clusterBackupPlan": {"name": "cp"}}}))
        .unwrap();
    (plan, backup)
}
