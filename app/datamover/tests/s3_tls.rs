#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The S3 target over TLS: moto served with a certificate from a test CA (rcgen). The CA file
//! (`--s3-ca-file`) makes it trusted, `--s3-skip-tls-verify` accepts it without the CA, and
//! with neither the connection is refused as a certificate problem, not retried as an outage.

mod common;

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use tvk_datamover::{
    progress::NoProgress,
    repository::{VolumeBackupId, VolumeBackupRequest, backup_volume, restore_volume},
    target::{S3Config, Target},
};
use tvk_testkit::{S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, TempDir, unique_name};

/// moto on 127.0.0.1 serving HTTPS with `cert`/`key`; killed on drop.
struct TlsMoto {
    addr: SocketAddr,
    child: Child,
}

impl Drop for TlsMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_tls_moto(cert: &Path, key: &Path) -> TlsMoto {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let child = Command::new(python)
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .arg("-c")
        .arg(cert)
        .arg("-k")
        .arg(key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto (pip install 'moto[server]')");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let moto = TlsMoto { addr, child };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "moto did not start on {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
    moto
}

/// (CA file, server cert, server key) for 127.0.0.1.
fn test_pki(d: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tvk-datamover test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let (ca, cert, key) = (d.join("ca.pem"), d.join("cert.pem"), d.join("key.pem"));
    std::fs::write(&ca, ca_cert.pem()).unwrap();
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    (ca, cert, key)
}

/// Bucket creation is not part of the datamover (object_store cannot create buckets): curl
/// does it, trusting only the test CA.
fn create_bucket_over_tls(moto: &TlsMoto, bucket: &str, ca: &Path) {
    tvk_testkit::require_tool("curl", "apt-get install curl").unwrap();
    let out = Command::new("curl")
        .args(["-sS", "-f", "-X", "PUT", "--cacert"])
        .arg(ca)
        .arg(format!("https://{}/{bucket}", moto.addr))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bucket creation over TLS failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn config(moto: &TlsMoto, bucket: &str) -> S3Config {
    S3Config {
        bucket: bucket.into(),
        prefix: "tls".into(),
        endpoint: Some(format!("https://{}", moto.addr)),
        region: S3_REGION.into(),
        access_key_id: S3_ACCESS_KEY.into(),
        secret_access_key: S3_SECRET_KEY.into(),
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

fn roundtrip(target: &Target, d: &Path, backup: &str) {
    let vol = Volume::create(&d.join(format!("{backup}.raw")), 3 << 20);
    vol.write_random(&mut Rng(5), CS, 2 << 20);
    let id = VolumeBackupId::new("plan-tls", backup, "pvc-1").unwrap();
    backup_volume(
        target,
        VolumeBackupRequest {
            id: id.clone(),
            parent: None,
            source: &vol.path,
            changed_blocks: None,
            progress: &NoProgress,
        },
    )
    .unwrap();
    let out = d.join(format!("{backup}.restored"));
    restore_volume(target, &id, &out, &NoProgress).unwrap();
    assert_files_equal(&vol.path, &out);
}

#[test]
fn s3_over_tls_with_ca_file_skip_verify_and_an_untrusted_certificate() {
    let dir = TempDir::new("s3tls").unwrap();
    let d = dir.path();
    let (ca, cert, key) = test_pki(d);
    let moto = start_tls_moto(&cert, &key);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let bucket = unique_name("dm-tls");

    // Trusted through the CA file: the bucket is created and a backup round-trips.
    let mut cfg = config(&moto, &bucket);
    cfg.ca_file = Some(ca.clone());
    let trusted = Target::s3(&cfg, rt.handle().clone()).unwrap();
    create_bucket_over_tls(&moto, &bucket, &ca);
    roundtrip(&trusted, d, "b-ca");

    // Verification off: accepted without the CA.
    let mut cfg = config(&moto, &bucket);
    cfg.skip_tls_verify = true;
    let skipping = Target::s3(&cfg, rt.handle().clone()).unwrap();
    roundtrip(&skipping, d, "b-skip");

    // Neither: refused, named as a certificate problem, and not a retryable outage.
    let cfg = config(&moto, &bucket);
    let strict = Target::s3(&cfg, rt.handle().clone()).unwrap();
    let err = strict.list("plan-tls").unwrap_err();
    assert!(
        matches!(err, tvk_datamover::Error::TlsUntrusted { .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable(), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("--s3-ca-file"), "{msg}");
    assert!(
        msg.to_lowercase().contains("issuer"),
        "the cause is named: {msg}"
    );
}
