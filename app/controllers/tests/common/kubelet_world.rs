//! The end-to-end world shared by the test-kubelet suites (`backup_e2e.rs`, `cluster_e2e.rs`;
//! included with `#[path = "common/kubelet_world.rs"] mod kubelet_world;` next to `mod common;`):
//! tvk-test-apiserver with our CRDs, a moto bucket behind an S3 Target in the install namespace,
//! the harness's CSI driver (StorageClass `hostpath`, VolumeSnapshotClass `hostpath-snap`),
//! tvk-test-kubelet running every Job's REAL command (the built `tvk-metamover` and
//! `tvk-datamover`) and the controllers under real watches (`run_controllers`).

#![allow(dead_code)]

use std::{path::PathBuf, sync::Arc, time::Duration};

use futures::FutureExt;
use serde_json::{Value, json};
use tvk_control_plane::{context::Context, runner};
use tvk_test_apiserver::ApiServer;
use tvk_test_kubelet::{Kubelet, Options, workspace_binary};
use tvk_testkit::{S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, moto, unique_name};

use crate::common::NS;

pub const V1: &str = "triliovault.trilio.io/v1";
pub const METAMOVER_IMAGE: &str = "ghcr.io/tvk-rs/tvk-metamover:0.1.0";
pub const DATAMOVER_IMAGE: &str = "ghcr.io/tvk-rs/tvk-datamover:0.1.0";

/// Polls `check` every 100 ms for up to `secs` seconds.
pub async fn wait_for(what: &str, secs: u64, mut check: impl FnMut() -> Option<Value>) -> Value {
    for _ in 0..secs * 10 {
        if let Some(v) = check() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {secs} s waiting for {what}");
}

/// Deterministic test data: xorshift bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `data` at `offset` of a volume's backing file.
pub fn write_at(file: &std::path::Path, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.write_all_at(data, offset).unwrap();
}

/// The bucket through the datamover's own target code (signed requests, as the Jobs make).
pub fn store(endpoint: &str, bucket: &str) -> tvk_datamover::target::Target {
    let cfg = tvk_datamover::target::S3Config {
        bucket: bucket.into(),
        endpoint: Some(endpoint.into()),
        region: S3_REGION.into(),
        access_key_id: S3_ACCESS_KEY.into(),
        secret_access_key: S3_SECRET_KEY.into(),
        max_retries: 1,
        retry_timeout: Duration::from_secs(10),
        ..tvk_datamover::target::S3Config::default()
    };
    tvk_datamover::target::Target::s3(&cfg, tokio::runtime::Handle::current()).unwrap()
}

/// The data snapshots of a (Cluster)Backup's `status.snapshot`, wherever the metamover put
/// them (custom components, Helm charts, per-namespace entries).
pub fn data_snapshots(backup: &Value) -> Vec<Value> {
    fn walk(v: &Value, out: &mut Vec<Value>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == "dataSnapshots" {
                        out.extend(x.as_array().cloned().unwrap_or_default());
                    } else {
                        walk(x, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    walk(&backup["status"]["snapshot"], &mut all);
    all
}

/// The running world: API server, moto bucket, kubelet, controllers.
pub struct World {
    pub server: ApiServer,
    pub kubelet: Kubelet,
    pub ctx: Arc<Context>,
    pub endpoint: String,
    pub bucket: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    controllers: Option<tokio::task::JoinHandle<()>>,
    _moto: tvk_testkit::LocalServer,
}

impl World {
    /// Starts everything; `namespaces` (name, labels) are created besides the install
    /// namespace.
    pub async fn start(namespaces: &[(&str, Value)]) -> World {
        tvk_control_plane::install_tls_provider();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn")
            .with_test_writer()
            .try_init();
        let metamover = workspace_binary("tvk-metamover", "tvk-metamover").unwrap();
        let datamover = workspace_binary("tvk-datamover", "tvk-datamover").unwrap();
        let moto = moto().unwrap();
        let bucket = unique_name("kubelet-e2e");
        tvk_testkit::create_bucket(moto.addr(), &bucket).unwrap();
        let server = ApiServer::start().await.unwrap();
        for crd in tvk_api::crd::all() {
            server.create(serde_json::to_value(crd).unwrap()).unwrap();
        }
        server
            .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
            .unwrap();
        for (ns, labels) in namespaces {
            server
                .create(json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": ns, "labels": labels}}))
                .unwrap();
        }
        server
            .create(json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": "hostpath"}, "provisioner": "hostpath.csi.test", "reclaimPolicy": "Delete"}))
            .unwrap();
        server
            .create(json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
                "metadata": {"name": "hostpath-snap"}, "driver": "hostpath.csi.test", "deletionPolicy": "Delete"}))
            .unwrap();
        // The Target lives where the Jobs run (its Secret must be readable by them).
        server.create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds", "namespace": NS},
            "stringData": {"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}})).unwrap();
        server.create(json!({"apiVersion": V1, "kind": "Target", "metadata": {"name": "s3", "namespace": NS},
            "spec": {"type": "ObjectStore", "vendor": "MinIO", "objectStoreCredentials": {
                "bucketName": bucket, "url": moto.url(), "region": S3_REGION, "credentialSecret": {"name": "s3-creds"}}}})).unwrap();

        let opts = Options::new(server.kubeconfig_path())
            .image(METAMOVER_IMAGE, metamover)
            .image(DATAMOVER_IMAGE, datamover);
        let kubelet = Kubelet::start(server.client(), opts).await.unwrap();

        let mut ctx = Context::new(server.client(), crate::common::config("Cluster"), None);
        ctx.backup_poll = Duration::from_millis(200);
        let ctx = Arc::new(ctx);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let controllers = tokio::spawn(runner::run_controllers(
            ctx.clone(),
            stop_rx.map(|_| ()).boxed(),
        ));
        World {
            endpoint: moto.url(),
            server,
            kubelet,
            ctx,
            bucket,
            stop: Some(stop_tx),
            controllers: Some(controllers),
            _moto: moto,
        }
    }

    /// Every Job the kubelet ran, with its command and output (for failure messages).
    pub fn job_runs(&self) -> String {
        self.kubelet
            .runs()
            .iter()
            .map(|r| {
                format!(
                    "{}/{} {:?} {} {}\n  stdout: {}\n  stderr: {}",
                    r.namespace, r.name, r.command, r.reason, r.message, r.stdout, r.stderr
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits for the Target to be Available, then for the plan (`kind` BackupPlan or
    /// ClusterBackupPlan, already created) to be Available, nudging it (plans do not watch
    /// Targets; they are looked at again periodically).
    pub async fn plan_available(&self, kind: &str, namespace: Option<&str>, name: &str) -> Value {
        wait_for("the Target to be Available", 60, || {
            self.server
                .get(V1, "Target", Some(NS), "s3")
                .filter(|t| t["status"]["status"] == "Available")
        })
        .await;
        wait_for(&format!("{kind} {name} to be Available"), 60, || {
            let p = self.server.get(V1, kind, namespace, name)?;
            if p["status"]["status"] != "Available" {
                let mut meta = json!({"name": name, "annotations": {"nudge": unique_name("n")}});
                if let Some(ns) = namespace {
                    meta["namespace"] = json!(ns);
                }
                let _ = self
                    .server
                    .apply(json!({"apiVersion": V1, "kind": kind, "metadata": meta}));
                return None;
            }
            Some(p)
        })
        .await
    }

    /// Creates BackupPlan `namespace/name` on the Target `s3` with image backup skipped (images
    /// with real registries: tests/images_e2e.rs) and `extra_spec` merged into its spec, and
    /// waits for it to be Available.
    pub async fn backup_plan(&self, namespace: &str, name: &str, extra_spec: Value) -> Value {
        let mut spec = json!({"backupConfig": {"target": {"name": "s3", "namespace": NS}},
            "backupPlanFlags": {"skipImageBackup": true}});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
            s.extend(e.clone());
        }
        self.server
            .create(json!({"apiVersion": V1, "kind": "BackupPlan",
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}))
            .unwrap();
        self.plan_available("BackupPlan", Some(namespace), name)
            .await
    }

    /// Creates Backup `namespace/name` (`type_` Full or Incremental) of BackupPlan `plan` and
    /// waits for it to end; panics with every Job's output unless it ends `expect`.
    pub async fn take_backup(
        &self,
        namespace: &str,
        name: &str,
        plan: &str,
        type_: &str,
        expect: &str,
    ) -> Value {
        self.server
            .create(json!({"apiVersion": V1, "kind": "Backup",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"type": type_, "backupPlan": {"name": plan}}}))
            .unwrap();
        self.wait_terminal(
            "Backup",
            Some(namespace),
            name,
            &["Available", "Failed"],
            expect,
            240,
        )
        .await
    }

    /// Waits until `kind namespace/name` has a terminal `status.status` (one of `done`);
    /// panics with its status and every Job's output unless it is `ok`.
    pub async fn wait_terminal(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        done: &[&str],
        ok: &str,
        secs: u64,
    ) -> Value {
        let v = wait_for(&format!("{kind} {name} to finish"), secs, || {
            self.server.get(V1, kind, namespace, name).filter(|b| {
                b["status"]["status"]
                    .as_str()
                    .is_some_and(|s| done.contains(&s))
            })
        })
        .await;
        if v["status"]["status"] != ok {
            panic!(
                "{kind} {name} ended {}:\n{:#}\nJobs run:\n{}",
                v["status"]["status"],
                v["status"],
                self.job_runs()
            );
        }
        v
    }

    /// An object of the bucket, `None` when absent.
    pub async fn s3_get(&self, key: &str) -> Option<Vec<u8>> {
        let s = store(&self.endpoint, &self.bucket);
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            let prefix = key.rsplit_once('/').map_or("", |(p, _)| p).to_string();
            if !s.list(&prefix).unwrap().contains(&key) {
                return None;
            }
            Some(s.read_all(&key, 1 << 30).unwrap())
        })
        .await
        .unwrap()
    }

    /// Keys under `prefix`.
    pub async fn s3_keys(&self, prefix: &str) -> Vec<String> {
        let s = store(&self.endpoint, &self.bucket);
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || s.list(&prefix).unwrap())
            .await
            .unwrap()
    }

    /// Creates PVC `namespace/name` requesting `storage` (a quantity) on the harness's CSI
    /// driver and returns its backing file once bound, and its UID.
    pub async fn volume(&self, namespace: &str, name: &str, storage: &str) -> (PathBuf, String) {
        self.server
            .create(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"storageClassName": "hostpath", "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": storage}}}}))
            .unwrap();
        let file = self
            .kubelet
            .volume_file(namespace, name, Duration::from_secs(30))
            .await
            .unwrap();
        let uid = self
            .server
            .get("v1", "PersistentVolumeClaim", Some(namespace), name)
            .unwrap()["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string();
        (file, uid)
    }

    /// The bytes of the restored claim `namespace/name`'s storage.
    pub async fn volume_bytes(&self, namespace: &str, name: &str) -> Vec<u8> {
        let file = self
            .kubelet
            .volume_file(namespace, name, Duration::from_secs(30))
            .await
            .unwrap();
        std::fs::read(file).unwrap()
    }

    /// Restores one volume of one backup with the real `tvk-datamover restore` into a new file.
    pub async fn restore_volume(
        &self,
        plan_uid: &str,
        backup_uid: &str,
        pvc_uid: &str,
        size: u64,
    ) -> Vec<u8> {
        let dest = self
            .kubelet
            .work_dir()
            .join(format!("restore-{backup_uid}-{pvc_uid}.img"));
        std::fs::File::create(&dest).unwrap().set_len(size).unwrap();
        let out = tokio::process::Command::new(datamover())
            .args([
                "restore",
                "--target",
                &format!("s3://{}", self.bucket),
                "--s3-endpoint",
                &self.endpoint,
                "--s3-region",
                S3_REGION,
                "--plan",
                plan_uid,
                "--backup",
                backup_uid,
                "--volume",
                pvc_uid,
                "--dest",
            ])
            .arg(&dest)
            .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "tvk-datamover restore of {backup_uid}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(&dest).unwrap()
    }

    /// Stops the controllers and the kubelet.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(c) = self.controllers.take() {
            tokio::time::timeout(Duration::from_secs(20), c)
                .await
                .unwrap()
                .unwrap();
        }
        self.kubelet.shutdown().await;
    }
}

/// The tvk-datamover binary (for restores the test runs itself).
pub fn datamover() -> PathBuf {
    workspace_binary("tvk-datamover", "tvk-datamover").unwrap()
}
