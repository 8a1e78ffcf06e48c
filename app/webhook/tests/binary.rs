#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The `tvk-webhook` binary: flags and environment, JSON logs, serving, and a clean exit on
//! SIGTERM.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use common::{SERVICE_DNS, TestCa, certificate_files, fixture, https_url, tls_client};
use serde_json::Value;
use tvk_api::admission::GroupVersionKind;
use tvk_testkit::TempDir;
use tvk_webhook::validate_path;

const BINARY: &str = env!("CARGO_BIN_EXE_tvk-webhook");

#[test]
fn help_documents_every_flag_and_its_environment_variable() {
    let output = Command::new(BINARY).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for (flag, env) in [
        ("--listen", "TVK_WEBHOOK_LISTEN"),
        ("--metrics-listen", "TVK_WEBHOOK_METRICS_LISTEN"),
        ("--cert-file", "TVK_WEBHOOK_CERT_FILE"),
        ("--key-file", "TVK_WEBHOOK_KEY_FILE"),
        ("--log-format", "TVK_WEBHOOK_LOG_FORMAT"),
        ("--log-level", "TVK_WEBHOOK_LOG_LEVEL"),
        ("--max-body-bytes", "TVK_WEBHOOK_MAX_BODY_BYTES"),
    ] {
        assert!(help.contains(flag), "{flag} missing from\n{help}");
        assert!(help.contains(env), "{env} missing from\n{help}");
    }
    assert!(
        help.contains("/tmp/k8s-webhook-server/serving-certs/tls.crt"),
        "{help}"
    );
}

#[tokio::test]
async fn serves_the_app_kinds_and_exits_cleanly_on_sigterm() {
    let dir = TempDir::new("webhook-bin").unwrap();
    let files = certificate_files(dir.path());
    let ca = TestCa::new("tvk test CA");
    ca.serving_cert(SERVICE_DNS).write(&files);

    let mut child = Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .env("TVK_WEBHOOK_METRICS_LISTEN", "127.0.0.1:0")
        .env("TVK_WEBHOOK_CERT_FILE", &files.cert_file)
        .env("TVK_WEBHOOK_KEY_FILE", &files.key_file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // The log says where it listens (the ports were chosen by the OS).
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let value: Value = serde_json::from_str(&line)
                .unwrap_or_else(|err| panic!("log line is not JSON ({err}): {line}"));
            if lines_tx.send(value).is_err() {
                break;
            }
        }
    });
    let serving = loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the webhook logs that it is serving within 30 s");
        if line["message"] == "webhook serving" {
            break line;
        }
    };
    let admission: SocketAddr = serving["admission_addr"].as_str().unwrap().parse().unwrap();
    let metrics: SocketAddr = serving["metrics_addr"].as_str().unwrap().parse().unwrap();

    let ready = reqwest::get(format!("http://{metrics}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);

    // A real kind, through the real binary: a Target of the wrong shape is denied.
    let target = GroupVersionKind {
        group: "triliovault.trilio.io".into(),
        version: "v1".into(),
        kind: "Target".into(),
    };
    let response = tls_client(&ca, admission)
        .post(https_url(admission, &validate_path(&target)))
        .body(fixture("target-nfs-missing-credentials.json"))
        .send()
        .await
        .unwrap();
    let review: Value = response.json().await.unwrap();
    assert_eq!(review["response"]["allowed"], false, "{review}");

    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("tvk-webhook did not exit within 15 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    assert!(tokio::net::TcpStream::connect(admission).await.is_err());
}
