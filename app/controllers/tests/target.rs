#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Target controller against real servers: the in-process S3 probe against moto (success,
//! missing bucket, refused credentials, TLS failure, DNS failure) and reconciles against
//! kube-fake-client (status Available / Unavailable, no write when nothing changed).

mod common;

use std::time::Duration;

use kube::Api;
use serde_json::json;
use tvk_api::target::{Target, TargetPhaseStatus, TargetState};
use tvk_control_plane::target_controller::{self, ProbeResult, S3Probe};
use tvk_datamover::target::S3Config;
use tvk_testkit::{
    S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY,
    fault_proxy::{FaultPlan, FaultProxy},
    moto, unique_name,
};

fn probe_config(endpoint: &str, bucket: &str) -> S3Probe {
    S3Probe {
        config: S3Config {
            bucket: bucket.into(),
            endpoint: Some(endpoint.into()),
            region: S3_REGION.into(),
            access_key_id: S3_ACCESS_KEY.into(),
            secret_access_key: S3_SECRET_KEY.into(),
            retry_timeout: Duration::from_secs(5),
            max_retries: 1,
            ..S3Config::default()
        },
        ca_pem: None,
        key: format!(
            "{}/{}",
            target_controller::PROBE_PREFIX,
            unique_name("probe")
        ),
        expect_object_lock: false,
    }
}

/// Creates a bucket with S3 Object Lock enabled (moto honours the creation header).
fn create_locked_bucket(addr: std::net::SocketAddr, bucket: &str) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nx-amz-bucket-object-lock-enabled: true\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

/// `objectLockingEnabled: true`: the probe verifies the bucket's Object Lock configuration
/// with a signed GetObjectLockConfiguration — a locked bucket passes, a plain one is named
/// `ObjectLockNotEnabled` (and without the expectation the plain bucket passes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_lock_is_verified_when_the_target_expects_it() {
    let moto = moto().unwrap();
    let locked = unique_name("tgt-locked");
    create_locked_bucket(moto.addr(), &locked);
    let plain = unique_name("tgt-plain");
    tvk_testkit::create_bucket(moto.addr(), &plain).unwrap();
    let expecting = |bucket: &str| S3Probe {
        expect_object_lock: true,
        ..probe_config(&moto.url(), bucket)
    };
    run_probe(expecting(&locked)).await.unwrap();
    let failure = run_probe(expecting(&plain)).await.unwrap_err();
    assert_eq!(failure.reason, "ObjectLockNotEnabled", "{failure:?}");
    assert!(failure.message.contains("Object Lock"), "{failure:?}");
    run_probe(probe_config(&moto.url(), &plain)).await.unwrap();
}

async fn run_probe(probe: S3Probe) -> ProbeResult {
    target_controller::probe_target(probe).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_writes_reads_lists_and_deletes_on_moto() {
    let moto = moto().unwrap();
    let bucket = unique_name("tgt-ok");
    tvk_testkit::create_bucket(moto.addr(), &bucket).unwrap();
    let probe = probe_config(&moto.url(), &bucket);
    run_probe(probe.clone()).await.unwrap();
    let listing = common::list_bucket(moto.addr(), &bucket);
    assert!(
        !listing.contains(&probe.key) && listing.contains("<KeyCount>0</KeyCount>"),
        "the probe object must be deleted: {listing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_is_named_as_such() {
    let moto = moto().unwrap();
    let failure = run_probe(probe_config(&moto.url(), &unique_name("absent")))
        .await
        .unwrap_err();
    assert_eq!(failure.reason, "BucketNotFound", "{failure:?}");
    assert!(failure.message.contains("create it"), "{failure:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_an_authentication_failure_without_the_secret() {
    let moto = moto().unwrap();
    let bucket = unique_name("tgt-auth");
    tvk_testkit::create_bucket(moto.addr(), &bucket).unwrap();
    // moto accepts any key; the proxy answers as AWS does for an unknown access key.
    let proxy = FaultProxy::start_plan(
        moto.addr(),
        FaultPlan {
            percent: 100,
            methods: Vec::new(),
            request_contains: None,
            status: 403,
            code: "InvalidAccessKeyId",
        },
        7,
    )
    .unwrap();
    let failure = run_probe(probe_config(&proxy.url(), &bucket))
        .await
        .unwrap_err();
    assert_eq!(failure.reason, "AuthenticationFailed", "{failure:?}");
    assert!(!failure.message.contains(S3_SECRET_KEY), "{failure:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_failure_is_named_as_such() {
    let moto = moto().unwrap();
    // moto speaks plain HTTP: a TLS handshake with it fails.
    let endpoint = format!("https://{}", moto.addr());
    let failure = run_probe(probe_config(&endpoint, "any")).await.unwrap_err();
    assert_eq!(failure.reason, "TLSFailed", "{failure:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_endpoint_is_a_dns_failure() {
    let failure = run_probe(probe_config("http://tvk-no-such-host.invalid:9000", "any"))
        .await
        .unwrap_err();
    assert_eq!(failure.reason, "DNSResolutionFailed", "{failure:?}");
}

fn target_object(endpoint: &str, bucket: &str) -> serde_json::Value {
    json!({
        "apiVersion": "triliovault.trilio.io/v1", "kind": "Target",
        "metadata": {"name": "s3", "namespace": common::NS, "uid": "t-uid-1", "generation": 1},
        "spec": {"type": "ObjectStore", "vendor": "MinIO", "thresholdCapacity": "100Gi",
            "objectStoreCredentials": {"bucketName": bucket, "url": endpoint, "region": S3_REGION,
                "credentialSecret": {"name": "s3-creds"}}}
    })
}

fn secret() -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s3-creds", "namespace": common::NS},
        "stringData": {},
        "data": {"accessKey": b64(S3_ACCESS_KEY), "secretKey": b64(S3_SECRET_KEY)}
    })
}

fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_marks_a_reachable_target_available_and_is_then_quiet() {
    let moto = moto().unwrap();
    let bucket = unique_name("tgt-rec");
    tvk_testkit::create_bucket(moto.addr(), &bucket).unwrap();
    let (client, writes) = common::fake(vec![target_object(&moto.url(), &bucket), secret()]).await;
    let ctx = common::context(client.clone(), "Cluster");
    let api: Api<Target> = Api::namespaced(client, common::NS);
    let target = api.get("s3").await.unwrap();
    target_controller::reconcile(target.into(), ctx.clone())
        .await
        .unwrap();
    let target = api.get("s3").await.unwrap();
    let status = target.status.clone().unwrap();
    assert_eq!(status.status, Some(TargetState::Available), "{status:?}");
    let condition = &status.condition.as_ref().unwrap()[0];
    assert_eq!(condition.status, Some(TargetPhaseStatus::Completed));
    assert!(
        condition
            .reason
            .as_deref()
            .unwrap()
            .starts_with("ProbeSucceeded")
    );
    assert_eq!(status.stats.unwrap().total_backup_plans, Some(0));
    assert_eq!(writes.take(), ["patch_status s3"]);
    // Nothing changed: the next reconcile probes again but writes nothing.
    target_controller::reconcile(target.into(), ctx)
        .await
        .unwrap();
    assert!(
        writes.take().is_empty(),
        "no status write when nothing changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_without_the_secret_says_which_secret_is_missing() {
    let moto = moto().unwrap();
    let (client, _) = common::fake(vec![target_object(&moto.url(), "whatever")]).await;
    let ctx = common::context(client.clone(), "Cluster");
    let api: Api<Target> = Api::namespaced(client, common::NS);
    let target = api.get("s3").await.unwrap();
    let action = target_controller::reconcile(target.into(), ctx)
        .await
        .unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(60))
    );
    let target = api.get("s3").await.unwrap();
    let status = target.status.unwrap();
    assert_eq!(status.status, Some(TargetState::Unavailable));
    let reason = status.condition.unwrap()[0].reason.clone().unwrap();
    assert!(
        reason.starts_with("CredentialsMissing") && reason.contains("trilio-system/s3-creds"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_stays_unreachable_is_not_rewritten_on_every_probe() {
    let moto = moto().unwrap();
    let bucket = unique_name("tgt-denied");
    tvk_testkit::create_bucket(moto.addr(), &bucket).unwrap();
    // Refused credentials: the error text names the (unique) probe object and a timing.
    let proxy = FaultProxy::start_plan(
        moto.addr(),
        FaultPlan {
            percent: 100,
            methods: Vec::new(),
            request_contains: None,
            status: 403,
            code: "InvalidAccessKeyId",
        },
        3,
    )
    .unwrap();
    let (client, writes) = common::fake(vec![target_object(&proxy.url(), &bucket), secret()]).await;
    let ctx = common::context(client.clone(), "Cluster");
    let api: Api<Target> = Api::namespaced(client, common::NS);
    let target = api.get("s3").await.unwrap();
    target_controller::reconcile(target.into(), ctx.clone())
        .await
        .unwrap();
    let target = api.get("s3").await.unwrap();
    assert_eq!(
        target.status.as_ref().unwrap().status,
        Some(TargetState::Unavailable)
    );
    assert_eq!(writes.take(), ["patch_status s3"]);
    target_controller::reconcile(target.into(), ctx)
        .await
        .unwrap();
    assert!(
        writes.take().is_empty(),
        "same failure, same status: no write"
    );
}

#[test]
fn stable_messages_drop_probe_names_and_timings() {
    let a = target_controller::stable_message(
        "failed to commit .tvk-probe/t-1-123: PUT http://x/b/.tvk-probe/t-1-123 in 103.7ms, after 1 retries",
    );
    let b = target_controller::stable_message(
        "failed to commit .tvk-probe/t-1-456: PUT http://x/b/.tvk-probe/t-1-456 in 99ms, after 1 retries",
    );
    assert_eq!(a, b);
    assert!(!a.contains("103") && a.contains("the probe object"), "{a}");
}

#[test]
fn one_classifier_reads_typed_errors_and_error_chains() {
    use target_controller::classify_failure;
    let reason = |typed: Option<&tvk_datamover::Error>, text: &str| {
        classify_failure(typed, text).map(|(r, _)| r)
    };
    let tls = tvk_datamover::Error::TlsUntrusted {
        action: "write",
        object: "x".into(),
        message: "opaque".into(),
    };
    assert_eq!(
        reason(Some(&tls), "opaque"),
        Some("TLSFailed"),
        "typed, whatever the text"
    );
    let skew = tvk_datamover::Error::ClockSkew {
        action: "write",
        object: "x".into(),
    };
    assert_eq!(reason(Some(&skew), ""), Some("ClockSkew"));
    let unavailable = tvk_datamover::Error::TargetUnavailable {
        action: "write",
        object: "x".into(),
        message: "503".into(),
    };
    assert_eq!(
        reason(Some(&unavailable), "503"),
        Some("EndpointUnreachable")
    );
    // The kind decides, not the text.
    let throttled = tvk_datamover::Error::Target {
        kind: tvk_datamover::error::ErrorKind::Throttled,
        action: "write",
        object: "x".into(),
        message: "AccessDenied certificate".into(),
    };
    assert_eq!(
        reason(Some(&throttled), "AccessDenied certificate"),
        Some("Throttled")
    );
    let no_bucket = tvk_datamover::Error::Target {
        kind: tvk_datamover::error::ErrorKind::BucketMissing,
        action: "write",
        object: "x".into(),
        message: "opaque".into(),
    };
    assert_eq!(reason(Some(&no_bucket), "opaque"), Some("BucketNotFound"));
    for (text, expected) in [
        (
            "error sending request: client error (Connect): dns error: failed to lookup address information",
            Some("DNSResolutionFailed"),
        ),
        ("invalid peer certificate: UnknownIssuer", Some("TLSFailed")),
        (
            "InvalidAccessKeyId: the key does not exist",
            Some("AuthenticationFailed"),
        ),
        ("NoSuchBucket", Some("BucketNotFound")),
        ("AccessDenied", Some("PermissionDenied")),
        (
            "tcp connect error: Connection refused (os error 111)",
            Some("EndpointUnreachable"),
        ),
        ("something else entirely", None),
    ] {
        assert_eq!(reason(None, text), expected, "{text}");
    }
}

#[test]
fn secret_and_config_map_changes_map_to_the_targets_naming_them() {
    use std::sync::Arc;
    use target_controller::{TargetInput, targets_using};
    let target = |name: &str, secret: &str, ns: Option<&str>| -> Arc<Target> {
        Arc::new(
            serde_json::from_value(
                json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Target",
                "metadata": {"name": name, "namespace": "apps"},
                "spec": {"type": "ObjectStore", "vendor": "AWS", "objectStoreCredentials": {
                    "bucketName": "b", "credentialSecret": {"name": secret, "namespace": ns},
                    "sslCertConfig": {"certConfigMap": {"name": "ca"}}}}}),
            )
            .unwrap(),
        )
    };
    let targets = vec![
        target("a", "creds", None),
        target("b", "creds", Some("other")),
        target("c", "other-creds", None),
    ];
    let meta = |name: &str, ns: &str| k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let names = |refs: Vec<kube::runtime::reflector::ObjectRef<Target>>| {
        refs.into_iter().map(|r| r.name).collect::<Vec<_>>()
    };
    assert_eq!(
        names(targets_using(
            &targets,
            TargetInput::Secret,
            &meta("creds", "apps")
        )),
        ["a"]
    );
    assert_eq!(
        names(targets_using(
            &targets,
            TargetInput::Secret,
            &meta("creds", "other")
        )),
        ["b"]
    );
    assert!(targets_using(&targets, TargetInput::Secret, &meta("ca", "apps")).is_empty());
    assert_eq!(
        names(targets_using(
            &targets,
            TargetInput::CaConfigMap,
            &meta("ca", "apps")
        )),
        ["a", "b", "c"]
    );
}

/// Under real watches (tvk-test-apiserver): a Target whose Secret lacks a key is Unavailable;
/// fixing the Secret makes it Available at once, long before the periodic re-validation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_secret_revalidates_its_target() {
    use futures::FutureExt;
    tvk_control_plane::install_tls_provider();
    let moto = moto().unwrap();
    let bucket = tvk_testkit::unique_name("secret-watch");
    tvk_testkit::create_bucket(moto.addr(), &bucket).unwrap();
    let server = tvk_test_apiserver::ApiServer::start().await.unwrap();
    for crd in tvk_api::crd::all() {
        server.create(serde_json::to_value(crd).unwrap()).unwrap();
    }
    let ns = common::NS;
    server
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
        .unwrap();
    server
        .create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds", "namespace": ns},
            "stringData": {"accessKey": S3_ACCESS_KEY}}))
        .unwrap();
    server
        .create(json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Target", "metadata": {"name": "s3", "namespace": ns},
            "spec": {"type": "ObjectStore", "vendor": "MinIO", "objectStoreCredentials": {
                "bucketName": bucket, "url": moto.url(), "region": S3_REGION, "credentialSecret": {"name": "s3-creds"}}}}))
        .unwrap();
    let mut ctx =
        tvk_control_plane::Context::new(server.client(), common::config("Namespaced"), None);
    ctx.target_revalidation = Duration::from_secs(3600);
    let ctx = std::sync::Arc::new(ctx);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controllers = tokio::spawn(tvk_control_plane::runner::run_controllers(
        ctx,
        stop_rx.map(|_| ()).boxed(),
    ));
    let status = |want: &str| {
        server
            .get("triliovault.trilio.io/v1", "Target", Some(ns), "s3")
            .filter(|t| t["status"]["status"] == want)
    };
    let mut seen = None;
    for _ in 0..150 {
        seen = status("Unavailable");
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let unavailable = seen.expect("the Target to be Unavailable");
    assert!(
        unavailable["status"]["condition"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("CredentialsMissing"),
        "{unavailable}"
    );
    server
        .apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds", "namespace": ns},
            "stringData": {"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}}))
        .unwrap();
    // The Unavailable requeue is 60 s: becoming Available within 15 s proves the watch.
    let mut available = None;
    for _ in 0..150 {
        available = status("Available");
        if available.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        available.is_some(),
        "the fixed Secret re-validated the Target"
    );
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), controllers)
        .await
        .unwrap()
        .unwrap();
}
