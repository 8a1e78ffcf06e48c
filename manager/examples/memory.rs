//! Resident memory of the running manager: the release `tvk-manager run` binary, as a child
//! process, manages one TrilioVaultManager against tvk-test-apiserver (in this process, over
//! HTTP) with a realistic cluster around it: the whole application installed (CRDs included), a
//! few hundred unrelated objects in other namespaces that the label-filtered watches must not
//! cache, the admission webhook on with a self-signed certificate, leader election, a 5 s resync,
//! and heals every few seconds (a Deployment deleted, a ConfigMap edited, unrelated objects
//! churned). It samples `/proc/<pid>/status` every second and prints VmHWM (peak) and VmRSS.
//! Target (DESIGN.md): under 30 MiB. Exit status 1 when the target is missed or the run fails.
//!
//! ```sh
//! cargo build --release -p tvk-manager --bin tvk-manager --example memory
//! target/release/examples/memory            # TVK_MEMORY_SECONDS=90 for a longer run
//! ```
//! `TVK_MANAGER_BIN` points at another binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{path::PathBuf, process::Stdio, time::Duration};

use k8s_openapi::api::{
    apps::v1::Deployment,
    coordination::v1::Lease,
    core::v1::{ConfigMap, Namespace},
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use tvk_manager::tvm::{ApplicationScope, TrilioVaultManager, TrilioVaultManagerSpec};
use tvk_test_apiserver::ApiServer;

const NS: &str = "trilio-system";
const TARGET_KIB: u64 = 30 * 1024;

/// `VmHWM`, `VmRSS` (KiB) and `Threads` of a process.
fn proc_status(pid: u32) -> Option<(u64, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?, field("Threads:")?))
}

fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("TVK_MANAGER_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/examples/memory → target/<profile>/tvk-manager
    exe.parent()
        .and_then(|examples| examples.parent())
        .map(|profile| profile.join("tvk-manager"))
        .unwrap()
}

/// A few hundred objects the manager has no business with: ConfigMaps with 2 KiB of data,
/// Secrets, Deployments and Services in eight team namespaces, plus unlabelled ClusterRoles.
fn seed_unrelated(server: &ApiServer) -> usize {
    let mut count = 0;
    let filler = "x".repeat(2048);
    for team in 0..8 {
        let ns = format!("team-{team}");
        server
            .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .unwrap();
        for i in 0..25 {
            server
                .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("settings-{i}"), "namespace": ns, "labels": {"app": "shop"}},
                    "data": {"payload": filler}}))
                .unwrap();
            count += 1;
        }
        for i in 0..10 {
            server
                .create(json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": format!("secret-{i}"), "namespace": ns},
                    "data": {"password": "bm90LW91cnM="}}))
                .unwrap();
            count += 1;
        }
        for i in 0..5 {
            server
                .create(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": format!("app-{i}"), "namespace": ns, "labels": {"app": format!("app-{i}")}},
                    "spec": {"selector": {"matchLabels": {"app": format!("app-{i}")}},
                        "template": {"metadata": {"labels": {"app": format!("app-{i}")}},
                            "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]}}}}))
                .unwrap();
            server
                .create(json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": format!("app-{i}"), "namespace": ns},
                    "spec": {"selector": {"app": format!("app-{i}")}, "ports": [{"port": 80}]}}))
                .unwrap();
            count += 2;
        }
    }
    for i in 0..40 {
        server
            .create(
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": format!("unrelated-{i}")},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
            )
            .unwrap();
        count += 1;
    }
    count
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let seconds: u64 = std::env::var("TVK_MEMORY_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let binary = binary();
    if !binary.exists() {
        eprintln!(
            "error: {} does not exist; build it first: cargo build --release -p tvk-manager --bin tvk-manager",
            binary.display()
        );
        return std::process::ExitCode::from(2);
    }
    let server = ApiServer::start().await.unwrap();
    let client = server.client();
    server
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .unwrap();
    server
        .apply(serde_json::to_value(tvk_manager::crd::tvm_crd()).unwrap())
        .unwrap();
    let unrelated = seed_unrelated(&server);
    let tvms = Api::<TrilioVaultManager>::namespaced(client.clone(), NS);
    let mut tvm = TrilioVaultManager::new(
        "triliovault-manager",
        TrilioVaultManagerSpec {
            application_scope: ApplicationScope::Cluster,
            ..Default::default()
        },
    );
    tvm.metadata.namespace = Some(NS.into());
    // See tests/controller.rs: tvk-test-apiserver refuses kube's add-the-first-finalizer patch.
    tvm.metadata.finalizers = Some(vec!["example.com/audit".into()]);
    tvms.create(&PostParams::default(), &tvm).await.unwrap();

    let log_path = server.temp_dir().join("manager.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = tokio::process::Command::new(&binary)
        .args([
            "run",
            "--health-listen",
            "127.0.0.1:0",
            "--webhook-listen",
            "127.0.0.1:0",
            "--webhook-self-signed",
            "--webhook-cert-dir",
        ])
        .arg(server.temp_dir().join("certs"))
        .env("KUBECONFIG", server.kubeconfig_path())
        .env("POD_NAMESPACE", NS)
        .env("POD_NAME", "manager-0")
        .env("TVK_RESYNC_SECONDS", "5")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();

    let mut peak_rss = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let deployed = tvms
            .get("triliovault-manager")
            .await
            .ok()
            .and_then(|t| t.status)
            .and_then(|s| s.status)
            .is_some_and(|s| s == "Deployed");
        if deployed {
            break;
        }
        if tokio::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            eprintln!(
                "error: the TVM was not Deployed within 120 s; manager log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            return std::process::ExitCode::FAILURE;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let installed = server.list("apps/v1", "Deployment", Some(NS)).len();

    // Churn: heals of our objects, edits of unrelated ones.
    let deployments = Api::<Deployment>::namespaced(client.clone(), NS);
    let configmaps = Api::<ConfigMap>::namespaced(client.clone(), NS);
    let started = tokio::time::Instant::now();
    let mut tick = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        if tick.is_multiple_of(3) {
            let _ = deployments
                .delete("tvk-webhook", &DeleteParams::default())
                .await;
            let _ = configmaps
                .patch(
                    "tvk-config",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"data": {"config.yaml": format!("edit {tick}")}})),
                )
                .await;
        }
        let team = Api::<ConfigMap>::namespaced(client.clone(), &format!("team-{}", tick % 8));
        let _ = team
            .patch(
                &format!("settings-{}", tick % 25),
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"tick": tick.to_string()}})),
            )
            .await;
        if let Some((_, rss, _)) = proc_status(pid) {
            peak_rss = peak_rss.max(rss);
        }
        tick += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let Some((hwm, rss, threads)) = proc_status(pid) else {
        eprintln!("error: the manager exited during the run");
        return std::process::ExitCode::FAILURE;
    };
    let healed = deployments.get_opt("tvk-webhook").await.unwrap().is_some();

    // Graceful stop (SIGTERM): the lease is released.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    let released = Api::<Lease>::namespaced(client.clone(), NS)
        .get_opt("tvk-manager-leader")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .is_some_and(|s| s.holder_identity.is_none());
    let namespaces = Api::<Namespace>::all(client)
        .list(&Default::default())
        .await;

    println!("tvk-manager resident memory, one TVM, {seconds} s of heals and churn");
    println!(
        "  cluster: {installed} Deployments of ours, {unrelated} unrelated objects, {} namespaces",
        namespaces.map(|l| l.items.len()).unwrap_or(0)
    );
    println!("  VmHWM (peak)        {:>8.1} MiB", hwm as f64 / 1024.0);
    println!("  VmRSS (end)         {:>8.1} MiB", rss as f64 / 1024.0);
    println!(
        "  VmRSS (max sampled) {:>8.1} MiB",
        peak_rss.max(rss) as f64 / 1024.0
    );
    println!("  threads             {threads:>8}");
    println!("  healed at the end   {healed:>8}");
    println!(
        "  stopped on SIGTERM  {:>8}  (lease released: {released})",
        matches!(&exit, Ok(Ok(status)) if status.success())
    );
    if hwm > TARGET_KIB || !healed || !released {
        println!(
            "  target < 30 MiB: NOT MET (or the run failed); log: {}",
            log_path.display()
        );
        std::process::ExitCode::FAILURE
    } else {
        println!("  target < 30 MiB: met");
        std::process::ExitCode::SUCCESS
    }
}
