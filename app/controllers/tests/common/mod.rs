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

/// Creates a bucket on moto (unsigned; moto does not check signatures).
pub fn create_bucket(addr: std::net::SocketAddr, bucket: &str) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "bucket creation failed: {resp}"
    );
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
