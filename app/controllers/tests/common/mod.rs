#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Shared test setup: the control plane's configuration, a kube-fake-client with our kinds,
//! moto buckets.

use std::{
    io::{Read, Write},
    sync::{Arc, Mutex},
};

use kube::Client;
use kube_fake_client::{ClientBuilder, interceptor};
use tvk_control_plane::{config::Config, context::Context};

pub const NS: &str = "trilio-system";

pub fn config(scope: &str) -> Config {
    let text = format!(
        r#"
applicationScope: {scope}
installNamespace: {NS}
instanceName: "tvk"
version: "0.1.0"
schedulePolicyTimezone: "Europe/Berlin"
pauseSchedule: false
jobSpec: {{activeDeadlineSeconds: 3600}}
jobResources:
  metadata: {{requests: {{cpu: 10m, memory: 10Mi}}}}
  data: {{requests: {{cpu: 100m, memory: 800Mi}}}}
workerJobsScheduling: {{}}
podAnnotations: {{}}
csiConfig: {{include: [], exclude: [nosnap.csi.example.com]}}
serviceAccounts: {{metamover: tvk-metamover, datamover: tvk-datamover}}
images:
  datamover: "ghcr.io/tvk-rs/tvk-datamover:0.1.0"
  metamover: "ghcr.io/tvk-rs/tvk-metamover:0.1.0"
  pullPolicy: IfNotPresent
  pullSecrets: []
"#
    );
    Config::parse(&text, "config.yaml").unwrap()
}

/// Writes recorded by the interceptor: (verb, kind-or-resource, name).
#[derive(Clone, Default)]
pub struct Writes(pub Arc<Mutex<Vec<String>>>);

impl Writes {
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// A fake apiserver with our kinds (status subresources on) and `objects`.
pub async fn fake(objects: Vec<serde_json::Value>) -> (Client, Writes) {
    let writes = Writes::default();
    let (w1, w2, w3) = (writes.clone(), writes.clone(), writes.clone());
    let funcs = interceptor::Funcs::new()
        .patch_status(move |ctx| {
            w1.0.lock()
                .unwrap()
                .push(format!("patch_status {}", ctx.name));
            Ok(None)
        })
        .patch(move |ctx| {
            w2.0.lock().unwrap().push(format!("patch {}", ctx.name));
            Ok(None)
        })
        .create(move |ctx| {
            let kind = ctx
                .object
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or("?")
                .to_string();
            w3.0.lock().unwrap().push(format!("create {kind}"));
            Ok(None)
        });
    let client = ClientBuilder::new()
        .with_resource::<tvk_api::Target>()
        .with_resource::<tvk_api::Policy>()
        .with_resource::<tvk_api::Hook>()
        .with_resource::<tvk_api::BackupPlan>()
        .with_resource::<tvk_api::Backup>()
        .with_resource::<tvk_api::backup_plan::ClusterBackupPlan>()
        .with_resource::<tvk_api::backup::ClusterBackup>()
        .with_runtime_objects(objects)
        .with_interceptor_funcs(funcs)
        .build()
        .await
        .unwrap();
    (client, writes)
}

pub fn context(client: Client, scope: &str) -> Arc<Context> {
    Arc::new(Context::new(client, config(scope), None))
}

/// Keys in a moto bucket (unsigned ListObjects).
pub fn list_bucket(addr: std::net::SocketAddr, bucket: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /{bucket}?list-type=2 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp
}

/// A running pod of Job `job` whose container log (served as `pods/log` by the test API
/// server) is the file `log_dir/data.log`.
pub async fn running_pod_with_log(
    client: &kube::Client,
    ns: &str,
    job: &str,
    log_dir: &std::path::Path,
) {
    let name = format!("{job}-pod");
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns,
            "labels": {"batch.kubernetes.io/job-name": job, "job-name": job},
            "annotations": {tvk_test_apiserver::ANNOTATION_LOG_DIR: log_dir}},
        "spec": {"containers": [{"name": "data", "image": "x"}]}
    }))
    .unwrap();
    let pods = kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), ns);
    pods.create(&kube::api::PostParams::default(), &pod)
        .await
        .unwrap();
    pods.patch_status(
        &name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();
}

/// Appends a datamover progress line (CRI log format) to the container log.
pub fn log_progress(log_dir: &std::path::Path, done: u64, total: u64) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir.join("data.log"))
        .unwrap();
    writeln!(
        f,
        "2026-01-01T00:00:00.000000000Z stderr F INFO uploading\n\
         2026-01-01T00:00:00.000000000Z stdout F {{\"event\":\"progress\",\"bytesDone\":{done},\"bytesTotal\":{total},\"percent\":0}}"
    )
    .unwrap();
}

/// The arguments of a Job's first container.
pub fn job_args(job: &k8s_openapi::api::batch::v1::Job) -> Vec<String> {
    job.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap_or_default()
}

/// The argument after `flag` in a Job's first container.
#[allow(dead_code)]
pub fn arg_after(job: &k8s_openapi::api::batch::v1::Job, flag: &str) -> Option<String> {
    let args = job_args(job);
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).cloned()
}

/// The Job controller's part: Job `name` of the install namespace ends `Complete` (`ok`) or
/// `Failed` (BackoffLimitExceeded) with `message`.
pub async fn finish_job(client: &Client, name: &str, ok: bool, message: &str) {
    let (kind, reason) = if ok {
        ("Complete", "Completed")
    } else {
        ("Failed", "BackoffLimitExceeded")
    };
    kube::Api::<k8s_openapi::api::batch::v1::Job>::namespaced(client.clone(), NS)
        .patch_status(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"status": {"conditions": [
                {"type": kind, "status": "True", "reason": reason, "message": message}]}})),
        )
        .await
        .unwrap();
}

/// Status and reason of a (Cluster)Backup's condition of `phase`; panics without one.
pub fn backup_condition(
    status: Option<&tvk_api::backup::BackupStatus>,
    phase: tvk_api::backup::BackupPhase,
) -> (Option<tvk_api::backup::BackupPhaseStatus>, String) {
    let c = status
        .unwrap()
        .condition
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.phase == Some(phase))
        .unwrap_or_else(|| panic!("no {phase:?} condition"))
        .clone();
    (c.status, c.reason.unwrap_or_default())
}

/// The restore tests' world on tvk-test-apiserver: our CRDs, the install namespace and
/// `dest`, an Available S3 Target `s3` and an Available BackupPlan per name in `plans`
/// using it (all in the install namespace).
pub async fn restore_server(plans: &[&str]) -> tvk_test_apiserver::ApiServer {
    use serde_json::json;
    const V1: &str = "triliovault.trilio.io/v1";
    tvk_control_plane::install_tls_provider();
    let server = tvk_test_apiserver::ApiServer::start().await.unwrap();
    for crd in tvk_api::crd::all() {
        server.create(serde_json::to_value(crd).unwrap()).unwrap();
    }
    for ns in [NS, "dest"] {
        server
            .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .unwrap();
    }
    server.create(json!({"apiVersion": V1, "kind": "Target", "metadata": {"name": "s3", "namespace": NS},
        "spec": {"type": "ObjectStore", "vendor": "AWS", "objectStoreCredentials": {"bucketName": "bucket", "region": "eu-west-1", "credentialSecret": {"name": "s3-creds"}}},
        "status": {"status": "Available"}})).unwrap();
    for plan in plans {
        server.create(json!({"apiVersion": V1, "kind": "BackupPlan", "metadata": {"name": plan, "namespace": NS},
            "spec": {"backupConfig": {"target": {"name": "s3"}}}, "status": {"status": "Available"}})).unwrap();
    }
    server
}

/// A context on `server` with the `Cluster` configuration, polling every 100 ms.
pub fn restore_context(
    server: &tvk_test_apiserver::ApiServer,
    recorder: Option<kube::runtime::events::Recorder>,
) -> Context {
    let mut ctx = Context::new(server.client(), config("Cluster"), recorder);
    ctx.backup_poll = std::time::Duration::from_millis(100);
    ctx
}
