#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The progress chain end to end, with real components: the REAL `tvk-datamover` backs up a
//! volume to moto S3 in a Job run by tvk-test-kubelet, which keeps the process's output as the
//! pod's log; tvk-test-apiserver serves it as `pods/log`; the control plane's reader
//! (`progress::running_job_progress`, what DataUpload and DataRestore use) sees the upload
//! part-way while the Job runs.

mod common;

use std::time::Duration;

use serde_json::json;
use tvk_control_plane::progress::{JobProgress, running_job_progress};
use tvk_test_apiserver::ApiServer;
use tvk_test_kubelet::{Kubelet, Options, workspace_binary};
use tvk_testkit::{S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, TempDir, moto, unique_name};

const NS: &str = "trilio-system";
const IMAGE: &str = "ghcr.io/tvk-rs/tvk-datamover:0.1.0";

/// Incompressible bytes (xorshift), 8 at a time.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_datamover_jobs_progress_is_read_through_pods_log() {
    let moto = moto().unwrap();
    let bucket = unique_name("progress-e2e");
    tvk_testkit::create_bucket(moto.addr(), &bucket).unwrap();
    let server = ApiServer::start().await.unwrap();
    server
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .unwrap();
    // Uploads through a proxy answering 503 SlowDown to 40 % of the writes (a fixed sequence):
    // the datamover's retries with backoff keep the Job running with part of the volume read,
    // whatever the speed of the box (straight to moto, 48 MiB can finish between two log
    // rewrites of the kubelet, leaving only the final line to read).
    let proxy = tvk_testkit::fault_proxy::FaultProxy::start(moto.addr(), 40, 7).unwrap();
    let datamover = workspace_binary("tvk-datamover", "tvk-datamover").unwrap();
    let mut opts = Options::new(server.kubeconfig_path()).image(IMAGE, datamover);
    // Lines often enough to be seen mid-upload (the Jobs' default is every 2 s).
    opts.env
        .push(("TVK_DATAMOVER_PROGRESS_INTERVAL".into(), "0.01".into()));
    let kubelet = Kubelet::start(server.client(), opts).await.unwrap();

    let dir = TempDir::new("progress-e2e").unwrap();
    let source = dir.path().join("volume.img");
    const SIZE: usize = 48 << 20;
    std::fs::write(&source, random_bytes(SIZE, 42)).unwrap();
    server
        .create(json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "tvk-dataupload-progress", "namespace": NS},
            "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "data", "image": IMAGE,
                    "args": ["backup", "--target", format!("s3://{bucket}"),
                        "--s3-endpoint", proxy.url(), "--s3-region", S3_REGION,
                        "--plan", "plan-1", "--backup", "backup-1", "--volume", "pvc-1",
                        "--source", source.display().to_string()],
                    "env": [{"name": "AWS_ACCESS_KEY_ID", "value": S3_ACCESS_KEY},
                        {"name": "AWS_SECRET_ACCESS_KEY", "value": S3_SECRET_KEY}]}]}}}}))
        .unwrap();

    // Read as the controllers read, until the Job is over.
    let client = server.client();
    let mut seen: Vec<JobProgress> = Vec::new();
    let finished = loop {
        if let Some(p) = running_job_progress(&client, NS, "tvk-dataupload-progress").await
            && seen.last() != Some(&p)
        {
            seen.push(p);
        }
        if let Some(run) = kubelet
            .runs()
            .into_iter()
            .find(|r| r.name == "tvk-dataupload-progress")
        {
            break run;
        }
        assert!(seen.len() < 100_000);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(finished.succeeded, "{finished:?}");
    assert!(
        seen.iter()
            .any(|p| p.total == SIZE as u64 && p.done > 0 && p.done < p.total),
        "a part-way report while the Job ran: {seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0].done <= w[1].done),
        "reports only grow: {seen:?}"
    );
    // A finished Job's pod is not running: nothing is read any more.
    assert_eq!(
        running_job_progress(&client, NS, "tvk-dataupload-progress").await,
        None
    );
    kubelet.shutdown().await;
}
