#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The harness against tvk-test-apiserver: Jobs run as local processes (`/bin/sh` standing in
//! for an image), their status written as the Job controller does; PVCs provisioned and
//! snapshotted as a CSI driver would.

use std::time::Duration;

use serde_json::{Value, json};
use tvk_test_apiserver::ApiServer;
use tvk_test_kubelet::{ANNOTATION_STDOUT, Kubelet, Options};

const NS: &str = "work";
const T: Duration = Duration::from_secs(30);

async fn setup() -> (ApiServer, Kubelet) {
    let server = ApiServer::start().await.unwrap();
    server
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .unwrap();
    server
        .create(json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "hostpath"}, "provisioner": "hostpath.csi.test", "reclaimPolicy": "Delete"}))
        .unwrap();
    server
        .create(json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
            "metadata": {"name": "hostpath-snap"}, "driver": "hostpath.csi.test", "deletionPolicy": "Delete"}))
        .unwrap();
    let opts = Options::new(server.kubeconfig_path()).image("shell:1", "/bin/sh");
    let kubelet = Kubelet::start(server.client(), opts).await.unwrap();
    (server, kubelet)
}

fn job(name: &str, script: &str, extra: Value) -> Value {
    let mut j = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NS},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "shell:1", "command": ["/bin/sh", "-c", script]}]}}}});
    merge(&mut j, extra);
    j
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn claim(name: &str, extra: Value) -> Value {
    let mut c = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": NS},
        "spec": {"storageClassName": "hostpath", "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Mi"}}}});
    merge(&mut c, extra);
    c
}

async fn wait(
    server: &ApiServer,
    what: &str,
    mut f: impl FnMut(&ApiServer) -> Option<Value>,
) -> Value {
    for _ in 0..300 {
        if let Some(v) = f(server) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn condition(job: &Value, t: &str) -> Option<Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t && c["status"] == "True")
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_job_writes_into_its_claim_and_completes() {
    let (server, kubelet) = setup().await;
    server.create(claim("data", json!({}))).unwrap();
    // The path reaches the script as an argument, which the harness rewrites to the host
    // directory of the claim (text inside the script is not rewritten).
    server
        .create(job(
            "writer",
            "",
            json!({"spec": {"template": {"spec": {
                "containers": [{"name": "main", "image": "shell:1", "command": ["/bin/sh", "-c",
                    "mkdir -p \"$1/sub\" && echo hello > \"$1/sub/out.txt\" && echo \"wrote $HOSTNAME\"", "sh", "/data"],
                    "volumeMounts": [{"name": "d", "mountPath": "/data"}]}],
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}}}}),
        ))
        .unwrap();
    let run = kubelet.wait_for_run(NS, "writer", T).await.unwrap();
    assert!(run.succeeded, "{run:?}");
    assert_eq!(run.exit_code, Some(0));
    assert_eq!(run.stdout.trim(), "wrote writer");
    let dir = kubelet.volume_dir(NS, "data", T).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("sub/out.txt")).unwrap(),
        "hello\n"
    );
    let j = server.get("batch/v1", "Job", Some(NS), "writer").unwrap();
    assert!(condition(&j, "Complete").is_some(), "{j}");
    assert_eq!(j["status"]["succeeded"], 1);
    assert!(j["status"]["startTime"].is_string());
    assert!(j["status"]["completionTime"].is_string());
    let pod = server.get("v1", "Pod", Some(NS), "writer").unwrap();
    assert_eq!(pod["status"]["phase"], "Succeeded");
    assert_eq!(
        pod["metadata"]["annotations"][ANNOTATION_STDOUT],
        "wrote writer\n"
    );
    assert_eq!(
        pod["metadata"]["labels"]["batch.kubernetes.io/job-name"],
        "writer"
    );
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Job");
    // A finished Job is never run again, even when its status is written again.
    server
        .apply(json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "writer", "namespace": NS,
            "annotations": {"touched": "yes"}}}))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(kubelet.runs().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_job_is_marked_failed_with_the_result_error_or_stderr() {
    let (server, kubelet) = setup().await;
    server
        .create(job(
            "result",
            "echo '{\"event\":\"start\"}'; echo '{\"event\":\"result\",\"ok\":false,\"error\":\"bucket b does not exist\"}'; echo oops >&2; exit 3",
            json!({}),
        ))
        .unwrap();
    server
        .create(job(
            "stderr",
            "echo first >&2; echo 'the disk is on fire' >&2; exit 1",
            json!({}),
        ))
        .unwrap();
    let run = kubelet.wait_for_run(NS, "result", T).await.unwrap();
    assert!(!run.succeeded);
    assert_eq!(run.exit_code, Some(3));
    let j = server.get("batch/v1", "Job", Some(NS), "result").unwrap();
    let failed = condition(&j, "Failed").unwrap();
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    assert_eq!(failed["message"], "exit code 3: bucket b does not exist");
    assert_eq!(j["status"]["failed"], 1);
    assert!(j["status"]["succeeded"].is_null());
    let pod = server.get("v1", "Pod", Some(NS), "result").unwrap();
    assert_eq!(pod["status"]["phase"], "Failed");
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        3
    );

    kubelet.wait_for_run(NS, "stderr", T).await.unwrap();
    let j = server.get("batch/v1", "Job", Some(NS), "stderr").unwrap();
    assert_eq!(
        condition(&j, "Failed").unwrap()["message"],
        "exit code 1: first\nthe disk is on fire"
    );

    // An image with no local program: the Job fails saying so.
    server
        .create(json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "noimage", "namespace": NS},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "main", "image": "nowhere:1"}]}}}}))
        .unwrap();
    let run = kubelet.wait_for_run(NS, "noimage", T).await.unwrap();
    assert_eq!(run.reason, "ImageNotMapped");
    assert!(run.message.contains("nowhere:1"), "{}", run.message);
    let j = server.get("batch/v1", "Job", Some(NS), "noimage").unwrap();
    assert_eq!(condition(&j, "Failed").unwrap()["reason"], "ImageNotMapped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_deadline_kills_the_process() {
    let (server, kubelet) = setup().await;
    let started = std::time::Instant::now();
    server
        .create(job(
            "slow",
            "echo begun; sleep 30; echo never",
            json!({"spec": {"activeDeadlineSeconds": 1}}),
        ))
        .unwrap();
    let run = kubelet.wait_for_run(NS, "slow", T).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(run.reason, "DeadlineExceeded");
    assert_eq!(run.stdout, "begun\n");
    let j = server.get("batch/v1", "Job", Some(NS), "slow").unwrap();
    assert_eq!(
        condition(&j, "Failed").unwrap()["reason"],
        "DeadlineExceeded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_job_is_killed_and_not_marked() {
    let (server, kubelet) = setup().await;
    server.create(job("doomed", "sleep 30", json!({}))).unwrap();
    wait(&server, "the Job to start", |s| {
        s.get("batch/v1", "Job", Some(NS), "doomed")
            .filter(|j| j["status"]["active"] == 1)
    })
    .await;
    server
        .delete("batch/v1", "Job", Some(NS), "doomed")
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(kubelet.runs().is_empty());
    // No process is left: the shell's sleep was killed with it.
    let out = std::process::Command::new("pgrep")
        .args(["-f", "^/bin/sh -c sleep 30$"])
        .output();
    if let Ok(out) = out {
        assert!(out.stdout.is_empty(), "a process survived: {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_from_secrets_config_maps_and_the_downward_api() {
    let (server, kubelet) = setup().await;
    server
        .create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": NS},
            "stringData": {"accessKey": "AK", "secretKey": "SK"}}))
        .unwrap();
    server
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": NS},
            "data": {"region": "eu-1", "ca.pem": "PEM"}}))
        .unwrap();
    let container = json!({"name": "main", "image": "shell:1",
        "command": ["/bin/sh", "-c", "echo \"$A $S $R $N $P $L\"; cat \"$1\"", "sh", "/etc/ca/ca.pem"],
        "env": [
            {"name": "A", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "accessKey"}}},
            {"name": "S", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "secretKey"}}},
            {"name": "R", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "region"}}},
            {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "P", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "L", "value": "literal"}],
        "volumeMounts": [{"name": "ca", "mountPath": "/etc/ca"}]});
    server
        .create(job(
            "env",
            "",
            json!({"spec": {"template": {"spec": {"containers": [container],
                "volumes": [{"name": "ca", "configMap": {"name": "cfg"}}]}}}}),
        ))
        .unwrap();
    let run = kubelet.wait_for_run(NS, "env", T).await.unwrap();
    assert!(run.succeeded, "{run:?}");
    assert_eq!(run.stdout, "AK SK eu-1 work env literal\nPEM");
    // The argument naming a file in the mounted ConfigMap was rewritten to the host copy.
    assert!(
        run.command.last().unwrap().ends_with("/volumes/ca/ca.pem"),
        "{:?}",
        run.command
    );
    // The test's own environment does not leak into the process.
    assert!(
        !run.stdout
            .contains(&std::env::var("USER").unwrap_or_else(|_| "\u{0}".into()))
    );

    let missing = json!({"name": "main", "image": "shell:1", "command": ["/bin/sh", "-c", "true"],
        "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope"}}}]});
    server
        .create(job(
            "missing",
            "",
            json!({"spec": {"template": {"spec": {"containers": [missing]}}}}),
        ))
        .unwrap();
    let run = kubelet.wait_for_run(NS, "missing", T).await.unwrap();
    assert_eq!(run.reason, "CreateContainerConfigError");
    assert_eq!(run.message, "couldn't find key nope in Secret work/creds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_copies_the_volume_and_a_claim_from_it_gets_the_copy() {
    let (server, kubelet) = setup().await;
    server.create(claim("app", json!({}))).unwrap();
    let file = kubelet.volume_file(NS, "app", T).await.unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 1 << 20);
    let pvc = server
        .get("v1", "PersistentVolumeClaim", Some(NS), "app")
        .unwrap();
    assert_eq!(pvc["status"]["phase"], "Bound");
    assert_eq!(pvc["status"]["capacity"]["storage"], "1Mi");
    let pv = server
        .get(
            "v1",
            "PersistentVolume",
            None,
            pvc["spec"]["volumeName"].as_str().unwrap(),
        )
        .unwrap();
    assert_eq!(pv["spec"]["csi"]["driver"], "hostpath.csi.test");
    assert_eq!(pv["status"]["phase"], "Bound");
    assert_eq!(pv["spec"]["claimRef"]["uid"], pvc["metadata"]["uid"]);

    // Application data: a pattern at 64 KiB, the rest a hole.
    let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.write_all_at(&data, 65536).unwrap();
    }
    let before = std::fs::read(&file).unwrap();
    server
        .create(json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "snap", "namespace": NS},
            "spec": {"volumeSnapshotClassName": "hostpath-snap", "source": {"persistentVolumeClaimName": "app"}}}))
        .unwrap();
    let vs = wait(&server, "the snapshot to be ready", |s| {
        s.get(
            "snapshot.storage.k8s.io/v1",
            "VolumeSnapshot",
            Some(NS),
            "snap",
        )
        .filter(|v| v["status"]["readyToUse"] == true)
    })
    .await;
    assert_eq!(vs["status"]["restoreSize"], "1048576");
    assert!(vs["status"]["creationTime"].is_string());
    let content_name = vs["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .unwrap();
    let content = server
        .get(
            "snapshot.storage.k8s.io/v1",
            "VolumeSnapshotContent",
            None,
            content_name,
        )
        .unwrap();
    assert_eq!(
        content["spec"]["volumeSnapshotRef"]["uid"],
        vs["metadata"]["uid"]
    );
    assert_eq!(content["spec"]["sourceVolumeMode"], "Filesystem");
    assert_eq!(content["status"]["readyToUse"], true);

    // The application changes after the snapshot; the snapshot keeps the old bytes.
    std::fs::write(&file, vec![0xAB; 1 << 20]).unwrap();

    // A Block claim from the Filesystem snapshot needs the content's mode-change annotation.
    server
        .create(claim(
            "copy",
            json!({"spec": {"volumeMode": "Block", "dataSource": {"apiGroup": "snapshot.storage.k8s.io",
                "kind": "VolumeSnapshot", "name": "snap"}}}),
        ))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let copy = server
        .get("v1", "PersistentVolumeClaim", Some(NS), "copy")
        .unwrap();
    assert_ne!(copy["status"]["phase"], "Bound", "{copy}");
    server
        .apply(
            json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
            "metadata": {"name": content_name, "annotations": {
                "snapshot.storage.kubernetes.io/allow-volume-mode-change": "true"}}}),
        )
        .unwrap();
    let copy_file = kubelet.volume_file(NS, "copy", T).await.unwrap();
    assert_eq!(std::fs::read(&copy_file).unwrap(), before);

    // A Job sees the claim as a block device: its device path argument is the host file.
    let container = json!({"name": "main", "image": "shell:1",
        "command": ["/bin/sh", "-c", "od -An -tu1 -j 65537 -N 3 \"$1\"", "sh", "/dev/xvda"],
        "volumeDevices": [{"name": "v", "devicePath": "/dev/xvda"}]});
    server
        .create(job(
            "reader",
            "",
            json!({"spec": {"template": {"spec": {"containers": [container],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "copy"}}]}}}}),
        ))
        .unwrap();
    let run = kubelet.wait_for_run(NS, "reader", T).await.unwrap();
    assert!(run.succeeded, "{run:?}");
    let bytes: Vec<u32> = run
        .stdout
        .split_whitespace()
        .map(|b| b.parse().unwrap())
        .collect();
    assert_eq!(bytes, vec![1, 2, 3]);

    // A pre-provisioned snapshot in another namespace naming the same snapshot handle (how
    // the control plane stages a snapshot where its Jobs run) and a claim from it.
    server
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}))
        .unwrap();
    let handle = content["status"]["snapshotHandle"].as_str().unwrap();
    server
        .create(json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
            "metadata": {"name": "clone-content"},
            "spec": {"deletionPolicy": "Retain", "driver": "hostpath.csi.test",
                "source": {"snapshotHandle": handle},
                "volumeSnapshotRef": {"kind": "VolumeSnapshot", "namespace": "other", "name": "clone"}}}))
        .unwrap();
    server
        .create(
            json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "clone", "namespace": "other"},
            "spec": {"source": {"volumeSnapshotContentName": "clone-content"}}}),
        )
        .unwrap();
    let clone = wait(&server, "the pre-provisioned snapshot to be ready", |s| {
        s.get(
            "snapshot.storage.k8s.io/v1",
            "VolumeSnapshot",
            Some("other"),
            "clone",
        )
        .filter(|v| v["status"]["readyToUse"] == true)
    })
    .await;
    assert_eq!(
        clone["status"]["boundVolumeSnapshotContentName"],
        "clone-content"
    );
    assert_eq!(clone["status"]["restoreSize"], "1048576");
    let mut staged = claim(
        "staged",
        json!({"spec": {"volumeMode": "Block", "dataSource": {"apiGroup": "snapshot.storage.k8s.io",
            "kind": "VolumeSnapshot", "name": "clone"}}}),
    );
    staged["metadata"]["namespace"] = json!("other");
    server.create(staged).unwrap();
    let staged_file = kubelet.volume_file("other", "staged", T).await.unwrap();
    assert_eq!(std::fs::read(&staged_file).unwrap(), before);

    // Deleting the claim (reclaim policy Delete) deletes the volume and its file.
    server
        .delete("v1", "PersistentVolumeClaim", Some(NS), "copy")
        .unwrap();
    wait(&server, "the copy's volume to be deleted", |_| {
        (!copy_file.exists()).then_some(Value::Null)
    })
    .await;
    // Deleting the snapshot deletes its content.
    server
        .delete(
            "snapshot.storage.k8s.io/v1",
            "VolumeSnapshot",
            Some(NS),
            "snap",
        )
        .unwrap();
    wait(&server, "the content to be deleted", |s| {
        s.get(
            "snapshot.storage.k8s.io/v1",
            "VolumeSnapshotContent",
            None,
            content_name,
        )
        .is_none()
        .then_some(Value::Null)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_of_a_volume_of_another_driver_reports_an_error() {
    let server = ApiServer::start().await.unwrap();
    server
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .unwrap();
    server
        .create(
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "hostpath"}, "provisioner": "hostpath.csi.test"}),
        )
        .unwrap();
    let mut opts = Options::new(server.kubeconfig_path());
    opts.wait_limit = Duration::from_secs(2);
    let kubelet = Kubelet::start(server.client(), opts).await.unwrap();
    server.create(claim("app", json!({}))).unwrap();
    kubelet.volume_file(NS, "app", T).await.unwrap();
    // No VolumeSnapshotClass exists.
    server
        .create(json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "snap", "namespace": NS},
            "spec": {"volumeSnapshotClassName": "missing", "source": {"persistentVolumeClaimName": "app"}}}))
        .unwrap();
    let vs = wait(&server, "the snapshot error", |s| {
        s.get(
            "snapshot.storage.k8s.io/v1",
            "VolumeSnapshot",
            Some(NS),
            "snap",
        )
        .filter(|v| v["status"]["error"]["message"].is_string())
    })
    .await;
    assert_eq!(vs["status"]["readyToUse"], false);
    assert!(
        vs["status"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing"),
        "{vs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_jobs_output_is_served_as_pods_log_while_it_runs() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, LogParams};
    let (server, kubelet) = setup().await;
    let marker = server.temp_dir().join("go-on");
    server
        .create(job(
            "talker",
            "",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "shell:1",
                "command": ["/bin/sh", "-c",
                    "echo '{\"event\":\"progress\",\"bytesDone\":1}'; echo warn >&2; \
                     while [ ! -e \"$1\" ]; do sleep 0.05; done; echo done", "sh", marker.to_str().unwrap()]}]}}}}),
        ))
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(server.client(), NS);
    // While the process runs (it waits for the marker), its lines are served.
    let mut seen = String::new();
    for _ in 0..100 {
        if let Ok(text) = pods.logs("talker", &LogParams::default()).await {
            seen = text;
            if seen.contains("warn") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // stdout and stderr are read by separate readers: their lines arrive in either order (as
    // from a real kubelet), each line whole.
    let mut lines: Vec<&str> = seen.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        ["warn", "{\"event\":\"progress\",\"bytesDone\":1}"],
        "{seen:?}"
    );
    assert!(seen.ends_with('\n'), "{seen:?}");
    let j = server.get("batch/v1", "Job", Some(NS), "talker").unwrap();
    assert!(condition(&j, "Complete").is_none(), "still running: {j}");
    let tail = LogParams {
        tail_lines: Some(1),
        container: Some("main".into()),
        ..Default::default()
    };
    let last = format!("{}\n", seen.lines().last().unwrap());
    assert_eq!(pods.logs("talker", &tail).await.unwrap(), last);
    std::fs::write(&marker, "").unwrap();
    let run = kubelet.wait_for_run(NS, "talker", T).await.unwrap();
    assert!(run.succeeded, "{run:?}");
    assert_eq!(pods.logs("talker", &tail).await.unwrap(), "done\n");
    let limited = LogParams {
        limit_bytes: Some(5),
        ..Default::default()
    };
    let full = pods.logs("talker", &LogParams::default()).await.unwrap();
    assert_eq!(full, format!("{seen}done\n"));
    assert_eq!(pods.logs("talker", &limited).await.unwrap(), &full[..5]);
    let wrong = LogParams {
        container: Some("other".into()),
        ..Default::default()
    };
    match pods.logs("talker", &wrong).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 400, "{e:?}"),
        other => panic!("an unknown container must be refused: {other:?}"),
    }
    match pods.logs("no-such-pod", &LogParams::default()).await {
        Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (404, "NotFound")),
        other => panic!("an unknown pod must be 404: {other:?}"),
    }
}
