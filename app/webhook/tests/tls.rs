#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The whole server over real TLS: handshakes against a CA made in the test, certificate
//! rotation without a restart, a bad new pair kept out, readiness, and graceful shutdown.

mod common;

use std::time::Duration;

use common::{
    SERVICE_DNS, TestCa, certificate_files, eventually, fixture, https_url, peer_certificate,
    start_server, tls_client, widget_gvk, write_atomically,
};
use pretty_assertions::assert_eq;
use serde_json::Value;
use tvk_testkit::TempDir;
use tvk_webhook::validate_path;

async fn validate_valid_widget(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(https_url(addr, &validate_path(&widget_gvk())))
        .header("content-type", "application/json")
        .body(fixture("widget-create-valid.json"))
        .send()
        .await
}

async fn get(url: String) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn admission_over_a_real_tls_handshake() {
    let dir = TempDir::new("webhook-tls").unwrap();
    let files = certificate_files(dir.path());
    let ca = TestCa::new("tvk test CA");
    let pair = ca.serving_cert(SERVICE_DNS);
    pair.write(&files);
    let server = start_server(files).await;
    let addr = server.admission_addr();

    let response = validate_valid_widget(&tls_client(&ca, addr), addr)
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(peer_certificate(&response), pair.cert_der);
    let review: Value = response.json().await.unwrap();
    assert_eq!(review["response"]["allowed"], true, "{review}");

    // A client that does not trust the CA is refused: the TLS is real, not decorative.
    let stranger = TestCa::new("some other CA");
    let refused = validate_valid_widget(&tls_client(&stranger, addr), addr).await;
    assert!(refused.is_err(), "{refused:?}");
    // And plain HTTP on the TLS port gets no admission answer.
    let plain = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}{}",
            addr.port(),
            validate_path(&widget_gvk())
        ))
        .body(fixture("widget-create-valid.json"))
        .send()
        .await;
    assert!(plain.map(|r| r.status().as_u16() != 200).unwrap_or(true));

    let metrics = server.metrics_addr();
    assert_eq!(
        get(format!("http://{metrics}/healthz")).await,
        (200, "ok\n".into())
    );
    assert_eq!(
        get(format!("http://{metrics}/readyz")).await,
        (200, "ok\n".into())
    );
    let (status, text) = get(format!("http://{metrics}/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        text.contains(r#"tvk_webhook_admission_requests_total{webhook="validate",kind="Widget",operation="CREATE",result="allowed"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tvk_webhook_certificate_reloads_total{result="success"} 1"#),
        "{text}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn rotated_certificate_is_served_without_restart() {
    let dir = TempDir::new("webhook-rotate").unwrap();
    let files = certificate_files(dir.path());
    let old_ca = TestCa::new("old CA");
    let old_pair = old_ca.serving_cert(SERVICE_DNS);
    old_pair.write(&files);
    let server = start_server(files.clone()).await;
    let addr = server.admission_addr();
    let response = validate_valid_widget(&tls_client(&old_ca, addr), addr)
        .await
        .unwrap();
    assert_eq!(peer_certificate(&response), old_pair.cert_der);

    let new_ca = TestCa::new("new CA");
    let new_pair = new_ca.serving_cert(SERVICE_DNS);
    new_pair.write(&files);
    let new_client = tls_client(&new_ca, addr);
    let rotated = eventually(Duration::from_secs(10), || async {
        match validate_valid_widget(&new_client, addr).await {
            Ok(response) => peer_certificate(&response) == new_pair.cert_der,
            Err(_) => false,
        }
    })
    .await;
    assert!(rotated, "the new certificate was not served within 10 s");
    // Old-CA clients now fail: the old certificate is gone, not served beside the new one.
    assert!(
        validate_valid_widget(&tls_client(&old_ca, addr), addr)
            .await
            .is_err()
    );
    let text = get(format!("http://{}/metrics", server.metrics_addr()))
        .await
        .1;
    assert!(
        text.contains(r#"tvk_webhook_certificate_reloads_total{result="success"} 2"#),
        "{text}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_new_pair_is_rejected_and_the_old_one_kept() {
    let dir = TempDir::new("webhook-badpair").unwrap();
    let files = certificate_files(dir.path());
    let ca = TestCa::new("tvk test CA");
    let good = ca.serving_cert(SERVICE_DNS);
    good.write(&files);
    let server = start_server(files.clone()).await;
    let addr = server.admission_addr();
    let metrics_url = format!("http://{}/metrics", server.metrics_addr());

    // A new certificate whose key has not been written yet: the pair does not match.
    let next = ca.serving_cert(SERVICE_DNS);
    write_atomically(&files.cert_file, next.cert_pem.as_bytes());
    let rejected = eventually(Duration::from_secs(10), || async {
        get(metrics_url.clone())
            .await
            .1
            .contains(r#"tvk_webhook_certificate_reloads_total{result="failure"} 1"#)
    })
    .await;
    assert!(rejected, "the mismatched pair was not noticed within 10 s");
    let response = validate_valid_widget(&tls_client(&ca, addr), addr)
        .await
        .unwrap();
    assert_eq!(peer_certificate(&response), good.cert_der);

    // Garbage in the key file: still rejected, still the old pair.
    write_atomically(
        &files.key_file,
        b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n",
    );
    let rejected = eventually(Duration::from_secs(10), || async {
        get(metrics_url.clone())
            .await
            .1
            .contains(r#"tvk_webhook_certificate_reloads_total{result="failure"} 2"#)
    })
    .await;
    assert!(rejected, "the garbage key was not noticed within 10 s");
    let response = validate_valid_widget(&tls_client(&ca, addr), addr)
        .await
        .unwrap();
    assert_eq!(peer_certificate(&response), good.cert_der);

    // The matching key arrives: the new pair is served.
    write_atomically(&files.key_file, next.key_pem.as_bytes());
    let client = tls_client(&ca, addr);
    let rotated = eventually(Duration::from_secs(10), || async {
        match validate_valid_widget(&client, addr).await {
            Ok(response) => peer_certificate(&response) == next.cert_der,
            Err(_) => false,
        }
    })
    .await;
    assert!(rotated);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn not_ready_until_a_certificate_appears() {
    let dir = TempDir::new("webhook-notready").unwrap();
    let files = certificate_files(dir.path());
    let server = start_server(files.clone()).await;
    let addr = server.admission_addr();
    let metrics = server.metrics_addr();
    let (status, text) = get(format!("http://{metrics}/readyz")).await;
    assert_eq!(status, 503);
    assert!(text.contains("no serving certificate"), "{text}");
    assert_eq!(get(format!("http://{metrics}/healthz")).await.0, 200);
    let ca = TestCa::new("late CA");
    assert!(
        validate_valid_widget(&tls_client(&ca, addr), addr)
            .await
            .is_err(),
        "a handshake without a certificate must fail"
    );

    ca.serving_cert(SERVICE_DNS).write(&files);
    let ready = eventually(Duration::from_secs(10), || async {
        get(format!("http://{metrics}/readyz")).await.0 == 200
    })
    .await;
    assert!(ready);
    let response = validate_valid_widget(&tls_client(&ca, addr), addr)
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_both_listeners() {
    let dir = TempDir::new("webhook-shutdown").unwrap();
    let files = certificate_files(dir.path());
    let ca = TestCa::new("tvk test CA");
    ca.serving_cert(SERVICE_DNS).write(&files);
    let server = start_server(files).await;
    let addr = server.admission_addr();
    let metrics = server.metrics_addr();
    assert!(
        validate_valid_widget(&tls_client(&ca, addr), addr)
            .await
            .is_ok()
    );
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown finishes within 10 s")
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    assert!(tokio::net::TcpStream::connect(metrics).await.is_err());
}
