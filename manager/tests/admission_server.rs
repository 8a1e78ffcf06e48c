#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The manager's TrilioVaultManager admission webhook, end to end over real TLS: the self-signed
//! certificate is created in its Secret, written to the certificate directory and injected into
//! both webhook configurations; the running server then answers AdmissionReview JSON, with the
//! cluster-state rules reading TVMs from kube-fake-client (a second TVM in a namespace, a second
//! Cluster TVM, a scope change, a duplicate instance name: denied; a good one allowed; defaults
//! patched); and a rotation is served without a restart.

use std::{net::SocketAddr, time::Duration};

use base64::Engine as _;
use k8s_openapi::api::{
    admissionregistration::v1::{
        MutatingWebhook, MutatingWebhookConfiguration, ServiceReference, ValidatingWebhook,
        ValidatingWebhookConfiguration, WebhookClientConfig,
    },
    core::v1::Secret,
};
use kube::{Api, Client, api::ObjectMeta};
use kube_fake_client::ClientBuilder;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use tvk_manager::{
    admission_server::{
        self, AdmissionSettings, CERT_SECRET, MUTATING_CONFIGURATION, SERVICE,
        SelfSignedCertificates, VALIDATING_CONFIGURATION,
    },
    tvm::{ApplicationScope, TrilioVaultManager, TrilioVaultManagerSpec},
};
use tvk_testkit::TempDir;

const NS: &str = "trilio-system";

fn host() -> String {
    format!("{SERVICE}.{NS}.svc")
}

fn client_config(path: String) -> WebhookClientConfig {
    WebhookClientConfig {
        service: Some(ServiceReference {
            name: SERVICE.into(),
            namespace: NS.into(),
            path: Some(path),
            port: Some(443),
        }),
        ..Default::default()
    }
}

fn configurations() -> (ValidatingWebhookConfiguration, MutatingWebhookConfiguration) {
    let validating = ValidatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(VALIDATING_CONFIGURATION.into()),
            ..Default::default()
        },
        webhooks: Some(vec![ValidatingWebhook {
            name: "vtriliovaultmanager.trilio.io".into(),
            client_config: client_config(admission_server::validate_path()),
            admission_review_versions: vec!["v1".into()],
            side_effects: "None".into(),
            ..Default::default()
        }]),
    };
    let mutating = MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(MUTATING_CONFIGURATION.into()),
            ..Default::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: "mtriliovaultmanager.trilio.io".into(),
            client_config: client_config(admission_server::mutate_path()),
            admission_review_versions: vec!["v1".into()],
            side_effects: "None".into(),
            ..Default::default()
        }]),
    };
    (validating, mutating)
}

fn existing_tvm(
    namespace: &str,
    name: &str,
    scope: ApplicationScope,
    instance: &str,
) -> TrilioVaultManager {
    let mut tvm = TrilioVaultManager::new(
        name,
        TrilioVaultManagerSpec {
            application_scope: scope,
            tvk_instance_name: Some(instance.into()),
            ..Default::default()
        },
    );
    tvm.metadata.namespace = Some(namespace.into());
    tvm
}

fn tvm_json(namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "triliovault.trilio.io/v1",
        "kind": "TrilioVaultManager",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

fn review(uid: &str, operation: &str, object: &Value, old: Option<&Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "triliovault.trilio.io", "version": "v1", "kind": "TrilioVaultManager"},
            "resource": {"group": "triliovault.trilio.io", "version": "v1", "resource": "triliovaultmanagers"},
            "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"],
            "operation": operation,
            "userInfo": {"username": "admin"},
            "object": object,
            "oldObject": old,
            "dryRun": false
        }
    }))
    .unwrap()
}

fn https(ca_pem: &str, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .resolve(&host(), addr)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn post(client: &reqwest::Client, addr: SocketAddr, path: &str, body: Vec<u8>) -> Value {
    let response = client
        .post(format!("https://{}:{}{path}", host(), addr.port()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let review: Value = response.json().await.unwrap();
    review["response"].clone()
}

async fn secret_ca(client: &Client) -> String {
    let secret = Api::<Secret>::namespaced(client.clone(), NS)
        .get(CERT_SECRET)
        .await
        .unwrap();
    String::from_utf8(secret.data.unwrap()["ca.crt"].0.clone()).unwrap()
}

async fn injected_bundles(client: &Client) -> (String, String) {
    let validating = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get(VALIDATING_CONFIGURATION)
        .await
        .unwrap();
    let mutating = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get(MUTATING_CONFIGURATION)
        .await
        .unwrap();
    let bundle = |b: Option<&k8s_openapi::ByteString>| {
        String::from_utf8(b.map(|b| b.0.clone()).unwrap_or_default()).unwrap()
    };
    (
        bundle(
            validating.webhooks.unwrap()[0]
                .client_config
                .ca_bundle
                .as_ref(),
        ),
        bundle(
            mutating.webhooks.unwrap()[0]
                .client_config
                .ca_bundle
                .as_ref(),
        ),
    )
}

#[tokio::test]
async fn self_signed_webhook_serves_tvm_admission_with_cluster_rules_over_tls() {
    let (validating, mutating) = configurations();
    let client = ClientBuilder::new()
        .with_resource::<TrilioVaultManager>()
        .with_object(existing_tvm(
            "team-a",
            "tvm",
            ApplicationScope::Cluster,
            "shared",
        ))
        .with_object(validating)
        .with_object(mutating)
        .build()
        .await
        .unwrap();
    let dir = TempDir::new("manager-webhook").unwrap();

    // The certificate: Secret, files, CA bundles; a second pass changes nothing.
    // Issued 340 days ago: valid now, and inside the rotation window (30 days before expiry).
    let certificates = SelfSignedCertificates::new(client.clone(), NS, dir.path());
    let now = jiff::Timestamp::now();
    let issued = now
        .checked_sub(jiff::SignedDuration::from_hours(24 * 340))
        .unwrap();
    let sync = certificates.sync(issued).await.unwrap();
    assert!(sync.generated && sync.files_written, "{sync:?}");
    assert_eq!(
        sync.injected,
        [VALIDATING_CONFIGURATION, MUTATING_CONFIGURATION]
    );
    assert!(sync.missing.is_empty());
    let ca = secret_ca(&client).await;
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(injected_bundles(&client).await, (ca.clone(), ca.clone()));
    let again = certificates.sync(issued).await.unwrap();
    assert_eq!(again, Default::default(), "nothing to do the second time");

    // The server, on the files just written.
    let mut settings = AdmissionSettings::new("127.0.0.1:0".parse().unwrap(), dir.path().into());
    settings.reload_interval = Duration::from_millis(100);
    let metrics = std::sync::Arc::new(tvk_webhook::metrics::WebhookMetrics::new());
    let server = admission_server::start(&settings, client.clone(), metrics.clone())
        .await
        .unwrap();
    assert!(server.certificate().is_loaded());
    let addr = server.addr();
    let tls = https(&ca, addr);
    let validate = admission_server::validate_path();
    assert_eq!(
        validate,
        "/validate-triliovault-trilio-io-v1-triliovaultmanager"
    );

    // A second TVM in team-a: one per namespace.
    let second = tvm_json("team-a", "other", json!({"applicationScope": "Namespaced"}));
    let answer = post(&tls, addr, &validate, review("u1", "CREATE", &second, None)).await;
    assert_eq!(answer["allowed"], false, "{answer}");
    assert_eq!(answer["status"]["code"], 409);
    assert_eq!(
        answer["status"]["details"]["causes"][0]["field"], "metadata.namespace",
        "{answer}"
    );
    assert!(
        answer["status"]["message"]
            .as_str()
            .unwrap()
            .contains("TrilioVaultManager team-a/tvm already manages namespace team-a"),
        "{answer}"
    );

    // A second Cluster-scoped TVM elsewhere.
    let cluster = tvm_json("team-b", "tvm", json!({"applicationScope": "Cluster"}));
    let answer = post(
        &tls,
        addr,
        &validate,
        review("u2", "CREATE", &cluster, None),
    )
    .await;
    assert_eq!(answer["allowed"], false, "{answer}");
    assert_eq!(
        answer["status"]["details"]["causes"][0]["field"],
        "spec.applicationScope"
    );

    // A duplicate instance name.
    let duplicate = tvm_json(
        "team-b",
        "tvm",
        json!({"applicationScope": "Namespaced", "tvkInstanceName": "shared"}),
    );
    let answer = post(
        &tls,
        addr,
        &validate,
        review("u3", "CREATE", &duplicate, None),
    )
    .await;
    assert_eq!(answer["allowed"], false, "{answer}");
    assert_eq!(
        answer["status"]["details"]["causes"][0]["field"],
        "spec.tvkInstanceName"
    );
    assert!(
        answer["status"]["message"]
            .as_str()
            .unwrap()
            .contains("\"shared\" is already used"),
        "{answer}"
    );

    // A scope change of the existing TVM.
    let old = tvm_json(
        "team-a",
        "tvm",
        json!({"applicationScope": "Cluster", "tvkInstanceName": "shared"}),
    );
    let new = tvm_json(
        "team-a",
        "tvm",
        json!({"applicationScope": "Namespaced", "tvkInstanceName": "shared"}),
    );
    let answer = post(
        &tls,
        addr,
        &validate,
        review("u4", "UPDATE", &new, Some(&old)),
    )
    .await;
    assert_eq!(answer["allowed"], false, "{answer}");
    assert_eq!(
        answer["status"]["details"]["causes"][0]["field"],
        "spec.applicationScope"
    );
    assert!(
        answer["status"]["message"]
            .as_str()
            .unwrap()
            .contains("immutable"),
        "{answer}"
    );
    // Its own stored version is not a conflict: an UPDATE of another field is allowed.
    let renamed = tvm_json(
        "team-a",
        "tvm",
        json!({"applicationScope": "Cluster", "tvkInstanceName": "renamed"}),
    );
    let answer = post(
        &tls,
        addr,
        &validate,
        review("u5", "UPDATE", &renamed, Some(&old)),
    )
    .await;
    assert_eq!(answer["allowed"], true, "{answer}");

    // A TVM that conflicts with nothing.
    let fine = tvm_json(
        "team-c",
        "tvm",
        json!({"applicationScope": "Namespaced", "tvkInstanceName": "team-c"}),
    );
    let answer = post(&tls, addr, &validate, review("u6", "CREATE", &fine, None)).await;
    assert_eq!(answer["allowed"], true, "{answer}");
    assert_eq!(answer["uid"], "u6");

    // Defaults: the deprecated level moves into logConfig.
    let deprecated = tvm_json(
        "team-c",
        "tvm",
        json!({"applicationScope": "Namespaced", "logLevel": "Debug"}),
    );
    let answer = post(
        &tls,
        addr,
        &admission_server::mutate_path(),
        review("u7", "CREATE", &deprecated, None),
    )
    .await;
    assert_eq!(answer["allowed"], true, "{answer}");
    assert_eq!(answer["patchType"], "JSONPatch");
    let patch: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(answer["patch"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        patch,
        json!([{"op": "add", "path": "/spec/logConfig", "value": {"logLevel": "Debug"}}])
    );
    let text = metrics.encode();
    assert!(
        text.contains("kind=\"TrilioVaultManager\",operation=\"CREATE\",result=\"denied\"} 3"),
        "{text}"
    );

    // Now, inside the renewal window: a new CA and certificate, injected and served without a
    // restart.
    let rotated = certificates.sync(now).await.unwrap();
    assert!(rotated.generated && rotated.files_written, "{rotated:?}");
    assert_eq!(rotated.injected.len(), 2);
    let new_ca = secret_ca(&client).await;
    assert_ne!(new_ca, ca);
    assert_eq!(
        injected_bundles(&client).await,
        (new_ca.clone(), new_ca.clone())
    );
    let fresh = https(&new_ca, addr);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let served = fresh
            .post(format!("https://{}:{}{validate}", host(), addr.port()))
            .header("content-type", "application/json")
            .body(review("u8", "CREATE", &fine, None))
            .send()
            .await;
        if served.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotated certificate was not served within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        https(&ca, addr)
            .post(format!("https://{}:{}{validate}", host(), addr.port()))
            .body(review("u9", "CREATE", &fine, None))
            .send()
            .await
            .is_err(),
        "the old CA no longer verifies the served certificate"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn missing_configurations_are_reported_and_an_unreachable_api_denies() {
    // Lists fail (an apiserver that lost its storage); gets and creates work.
    let client = ClientBuilder::new()
        .with_resource::<TrilioVaultManager>()
        .with_interceptor_funcs(kube_fake_client::interceptor::Funcs::new().list(|_| {
            Err(kube_fake_client::Error::Internal(
                "etcd is unavailable".into(),
            ))
        }))
        .build()
        .await
        .unwrap();
    let dir = TempDir::new("manager-webhook-missing").unwrap();
    let certificates = SelfSignedCertificates::new(client.clone(), NS, dir.path());
    let sync = certificates.sync(jiff::Timestamp::now()).await.unwrap();
    assert!(sync.generated);
    assert!(sync.injected.is_empty());
    assert_eq!(
        sync.missing,
        [VALIDATING_CONFIGURATION, MUTATING_CONFIGURATION]
    );

    // The rules cannot list TVMs: fail closed, say why.
    let settings = AdmissionSettings::new("127.0.0.1:0".parse().unwrap(), dir.path().into());
    let server = admission_server::start(
        &settings,
        client.clone(),
        std::sync::Arc::new(tvk_webhook::metrics::WebhookMetrics::new()),
    )
    .await
    .unwrap();
    let ca = secret_ca(&client).await;
    let fine = tvm_json("team-c", "tvm", json!({"applicationScope": "Namespaced"}));
    let answer = post(
        &https(&ca, server.addr()),
        server.addr(),
        &admission_server::validate_path(),
        review("u1", "CREATE", &fine, None),
    )
    .await;
    assert_eq!(answer["allowed"], false, "{answer}");
    assert_eq!(answer["status"]["code"], 503);
    assert!(
        answer["status"]["message"]
            .as_str()
            .unwrap()
            .contains("failed to list TrilioVaultManagers"),
        "{answer}"
    );
    assert!(
        answer["status"]["message"]
            .as_str()
            .unwrap()
            .contains("etcd is unavailable"),
        "{answer}"
    );
    server.shutdown().await.unwrap();
}
