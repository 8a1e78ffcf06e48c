#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `tvk-datamover probe` on a filesystem target and on S3 (moto), and S3 requests through an
//! HTTP proxy named by `HTTP_PROXY` (bypassed for hosts in `NO_PROXY`).

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
};

use tvk_testkit::{
    S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, TempDir, fault_proxy::FaultProxy, unique_name,
};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tvk-datamover"));
    // The proxy variables of the test environment must not leak into these runs.
    for v in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        c.env_remove(v);
    }
    c.env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY);
    c
}

/// Runs the binary; returns the exit code and the final JSON result line.
fn run(c: &mut Command) -> (i32, serde_json::Value, String) {
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("null");
    let result: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last stdout line is not JSON ({e}): {stdout}"));
    (
        out.status.code().unwrap_or(-1),
        result,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Objects under `.tvk-probe/` in `bucket` (moto's ListObjectsV2, path style).
fn probe_objects(addr: std::net::SocketAddr, bucket: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /{bucket}?list-type=2&prefix=p%2F.tvk-probe HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "listing failed: {resp}");
    resp
}

fn probe_args<'a>(c: &'a mut Command, target: &str, endpoint: &str) -> &'a mut Command {
    c.args(["--progress", "none", "probe", "--target", target])
        .args(["--s3-endpoint", endpoint, "--s3-region", S3_REGION])
        .args(["--s3-max-retries", "1", "--s3-retry-timeout-secs", "2"])
}

#[test]
fn probe_on_a_filesystem_target_writes_reads_lists_and_deletes() {
    let dir = TempDir::new("probe-fs").unwrap();
    let t = dir.path().join("target");
    std::fs::create_dir(&t).unwrap();
    let (code, result, err) = run(bin().args([
        "--progress",
        "none",
        "probe",
        "--target",
        t.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(result["ok"], true, "{result}");
    let object = result["result"]["object"].as_str().unwrap();
    assert!(object.starts_with(".tvk-probe/"), "{object}");
    assert!(result["result"]["bytes"].as_u64().unwrap() > 4096);
    // Nothing is left behind: no probe object, no partial file.
    let left: Vec<_> = std::fs::read_dir(t.join(".tvk-probe"))
        .map(|rd| rd.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");

    // A target path that is no directory (it runs through a regular file, which even root
    // cannot write under): fatal (1), saying so.
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let bad = file.join("target");
    let (code, result, _) = run(bin().args([
        "--progress",
        "none",
        "probe",
        "--target",
        bad.to_str().unwrap(),
    ]));
    assert_eq!(code, 1, "{result}");
    assert_eq!(result["ok"], false);
    let error = result["error"].as_str().unwrap();
    assert!(error.contains("is not a directory"), "{error}");
}

#[test]
fn probe_on_s3_leaves_nothing_and_reports_a_missing_bucket_and_an_unreachable_endpoint() {
    let moto = tvk_testkit::moto().unwrap();
    let bucket = unique_name("probe");
    tvk_testkit::create_bucket(moto.addr(), &bucket).unwrap();
    let endpoint = moto.url();

    let (code, result, err) = run(probe_args(
        &mut bin(),
        &format!("s3://{bucket}/p"),
        &endpoint,
    ));
    assert_eq!(code, 0, "{err}");
    let object = result["result"]["object"].as_str().unwrap();
    assert!(object.starts_with(".tvk-probe/"), "{object}");
    let listing = probe_objects(moto.addr(), &bucket);
    assert!(listing.contains("<KeyCount>0</KeyCount>"), "{listing}");

    // A bucket that does not exist: fatal, not retried forever.
    let (code, result, _) = run(probe_args(
        &mut bin(),
        &format!("s3://{}/p", unique_name("no-such-bucket")),
        &endpoint,
    ));
    assert_eq!(code, 1, "{result}");
    assert_eq!(result["ok"], false);
    assert_eq!(result["kind"], "BucketMissing", "{result}");

    // Nothing listening: retry later (75).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, result, _) = run(probe_args(
        &mut bin(),
        &format!("s3://{bucket}/p"),
        &format!("http://127.0.0.1:{port}"),
    ));
    assert_eq!(code, 75, "{result}");
    assert_eq!(result["retryable"], true);
    assert_eq!(result["kind"], "Connect", "{result}");
}

/// `probe --expect-object-lock` asks the bucket for its Object Lock configuration (a signed
/// GetObjectLockConfiguration): a bucket created with Object Lock passes and says so, a plain
/// bucket fails with kind ObjectLock (fatal: 1), and so does a filesystem target (no such
/// setting to verify there).
#[test]
fn probe_verifies_object_lock_when_asked() {
    let moto = tvk_testkit::moto().unwrap();
    let locked = unique_name("locked");
    let mut s = TcpStream::connect(moto.addr()).unwrap();
    write!(
        s,
        "PUT /{locked} HTTP/1.1\r\nHost: {}\r\nx-amz-bucket-object-lock-enabled: true\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        moto.addr()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let plain = unique_name("unlocked");
    tvk_testkit::create_bucket(moto.addr(), &plain).unwrap();

    let (code, result, err) = run(
        probe_args(&mut bin(), &format!("s3://{locked}/p"), &moto.url())
            .arg("--expect-object-lock"),
    );
    assert_eq!(code, 0, "{result} {err}");
    assert_eq!(result["result"]["objectLockVerified"], true, "{result}");

    let (code, result, _) = run(
        probe_args(&mut bin(), &format!("s3://{plain}/p"), &moto.url()).arg("--expect-object-lock"),
    );
    assert_eq!(code, 1, "{result}");
    assert_eq!(result["kind"], "ObjectLock", "{result}");
    assert!(
        result["error"]
            .as_str()
            .unwrap()
            .contains("no Object Lock configuration"),
        "{result}"
    );
    // Without the flag the plain bucket is fine.
    let (code, result, _) = run(probe_args(
        &mut bin(),
        &format!("s3://{plain}/p"),
        &moto.url(),
    ));
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["result"]["objectLockVerified"], false, "{result}");

    let dir = TempDir::new("probe-lock-fs").unwrap();
    let (code, result, _) = run(bin()
        .args([
            "--progress",
            "none",
            "probe",
            "--expect-object-lock",
            "--target",
        ])
        .arg(dir.path()));
    assert_eq!(code, 1, "{result}");
    assert_eq!(result["kind"], "InvalidInput", "{result}");
}

/// Every failure names its cause in the result line's `"kind"`, classified from the typed
/// source chain (S3 error code, HTTP status, rustls error), and the exit code follows it:
/// refused credentials and TLS spoken to a plain-HTTP port are fatal (1), SlowDown retryable (75).
#[test]
fn probe_failures_carry_their_kind_and_exit_code() {
    let moto = tvk_testkit::moto().unwrap();
    let bucket = unique_name("kinds");
    tvk_testkit::create_bucket(moto.addr(), &bucket).unwrap();
    let target = format!("s3://{bucket}/p");
    // moto accepts any key; the proxy answers as AWS does for an unknown access key.
    let fault = |status: u16, code: &'static str| {
        FaultProxy::start_plan(
            moto.addr(),
            tvk_testkit::fault_proxy::FaultPlan {
                percent: 100,
                methods: Vec::new(),
                request_contains: None,
                status,
                code,
            },
            3,
        )
        .unwrap()
    };
    for (status, code, kind, exit) in [
        (403, "InvalidAccessKeyId", "Auth", 1),
        (403, "SignatureDoesNotMatch", "Auth", 1),
        (403, "AccessDenied", "Permission", 1),
        (503, "SlowDown", "Throttled", 75),
        (500, "InternalError", "Server", 75),
    ] {
        let proxy = fault(status, code);
        let (got, result, _) = run(probe_args(&mut bin(), &target, &proxy.url()));
        assert_eq!(result["kind"], kind, "{code}: {result}");
        assert_eq!(got, exit, "{code}: {result}");
        let error = result["error"].as_str().unwrap();
        assert!(!error.contains(S3_SECRET_KEY), "{error}");
    }
    // TLS to moto's plain-HTTP port: the handshake fails, which retrying does not fix.
    let (got, result, _) = run(probe_args(
        &mut bin(),
        &target,
        &format!("https://{}", moto.addr()),
    ));
    assert_eq!(result["kind"], "Tls", "{result}");
    assert_eq!(got, 1, "{result}");
}

/// The endpoint's host name does not resolve, so S3 is reachable only through the proxy
/// (which forwards every request to moto): the probe succeeds with `HTTP_PROXY` set, and
/// fails (retryably) when `NO_PROXY` names the host — the proxy then sees no request.
#[test]
fn s3_requests_honour_http_proxy_and_no_proxy() {
    let moto = tvk_testkit::moto().unwrap();
    let bucket = unique_name("proxied");
    tvk_testkit::create_bucket(moto.addr(), &bucket).unwrap();
    let proxy = FaultProxy::start(moto.addr(), 0, 1).unwrap();
    // One label: moto reads the first label of a dotted host as a virtual-hosted bucket.
    let host = "tvk-reachable-only-through-the-proxy";
    let endpoint = format!("http://{host}:{}", moto.addr().port());
    let target = format!("s3://{bucket}/p");

    let (code, result, err) =
        run(probe_args(&mut bin(), &target, &endpoint).env("HTTP_PROXY", proxy.url()));
    assert_eq!(code, 0, "{result} {err}");
    let through = proxy.forwarded.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        through >= 5,
        "only {through} requests went through the proxy"
    );

    let (code, result, _) = run(probe_args(&mut bin(), &target, &endpoint)
        .env("http_proxy", proxy.url())
        .env("NO_PROXY", format!("localhost,{host}")));
    assert_eq!(code, 75, "{result}");
    assert_eq!(
        proxy.forwarded.load(std::sync::atomic::Ordering::Relaxed),
        through,
        "a host in NO_PROXY was sent through the proxy"
    );
}
