#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The metadata layout written to real targets: a filesystem path and S3 (moto). Create-only
//! puts (an identical rewrite by a retried Job is accepted, a different one refused), parts read
//! back byte for byte, digests as recorded.

mod common;

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tvk_datamover::target::{S3Config, Target};
use tvk_metamover::layout::{
    BackupLocation, DocumentWriter, digest, objects_rel_key, put, read_document,
};
use tvk_metamover::object::Gvk;
use tvk_testkit::{S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, TempDir, unique_name};

fn objects(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{i}"), "namespace": "shop"},
                "data": {"v": digest(&i.to_le_bytes())}})
        })
        .collect()
}

/// Writes the objects as one document (parts) and returns the keys and the parts' bytes.
fn write_document(target: &Target, loc: &BackupLocation, objs: &[Value]) -> Vec<(String, Bytes)> {
    let gvk = Gvk::new("", "v1", "ConfigMap");
    let mut w = DocumentWriter::with_limit(8 << 10);
    let mut parts = Vec::new();
    for o in objs {
        if let Some(p) = w.push(o).unwrap() {
            parts.push(p);
        }
    }
    parts.extend(w.finish().unwrap());
    parts
        .into_iter()
        .map(|p| {
            let key = loc.key(&objects_rel_key(Some("shop"), &gvk, p.part).unwrap());
            put(target, &key, p.data.clone()).unwrap();
            (key, p.data)
        })
        .collect()
}

fn exercise(target: &Target) {
    let loc = BackupLocation::new(&unique_name("plan"), &unique_name("backup")).unwrap();
    let objs = objects(2000);
    let written = write_document(target, &loc, &objs);
    assert!(written.len() > 1, "several parts");
    // Read back through the target: same bytes, same objects, same digests.
    let mut back = Vec::new();
    for (key, data) in &written {
        let stored = target.read_all(key, 1 << 30).unwrap();
        assert_eq!(digest(&stored), digest(data), "{key}");
        back.extend(read_document(&stored, 1 << 30).unwrap());
    }
    assert_eq!(back, objs);
    // A retried Job rewriting identical bytes is fine; different bytes are refused, and the
    // stored object is unchanged.
    let (key, data) = &written[0];
    put(target, key, data.clone()).unwrap();
    let err = put(target, key, Bytes::from_static(b"other")).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(target.read_all(key, 1 << 30).unwrap(), data.as_ref());
    let listed = target.list(&loc.key("objects")).unwrap();
    assert_eq!(listed.len(), written.len());
}

#[test]
fn layout_on_a_filesystem_target() {
    let dir = TempDir::new("mm-fs").unwrap();
    let target = Target::filesystem(dir.path()).unwrap();
    exercise(&target);
}

#[test]
fn layout_on_s3() {
    let moto = tvk_testkit::moto().unwrap();
    let bucket = unique_name("mm-s3");
    tvk_testkit::create_bucket(moto.addr(), &bucket).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cfg = S3Config {
        bucket,
        prefix: "metadata-tests".into(),
        endpoint: Some(moto.url()),
        region: S3_REGION.into(),
        access_key_id: S3_ACCESS_KEY.into(),
        secret_access_key: S3_SECRET_KEY.into(),
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let target = Target::s3(&cfg, rt.handle().clone()).unwrap();
    exercise(&target);
}
