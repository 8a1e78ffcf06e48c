#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! RELIABILITY.md 12–17: malformed and hostile QCOW2 input gets a specific, clear error —
//! no panic, no unbounded allocation, no backing file followed.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tvk_datamover::{
    Error,
    object_io::{MemoryObject, MemorySink, RandomRead},
    qcow2::{
        reader::Qcow2Image,
        writer::{ImageOptions, Qcow2Writer},
    },
};

const CS: usize = 65536;

/// A valid 8 MiB image with two data clusters (guest clusters 0 and 5).
fn valid_image(backing: Option<&str>) -> Vec<u8> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = MemorySink {
        reserved: CS,
        chunks: vec![],
        out: out.clone(),
    };
    let mut w = Qcow2Writer::new(
        Box::new(sink),
        ImageOptions {
            virtual_size: 8 << 20,
            cluster_bits: 16,
            backing_file: backing.map(str::to_string),
        },
    )
    .unwrap();
    w.put_data(0, Bytes::from(vec![1u8; CS])).unwrap();
    w.put_data(5, Bytes::from(vec![2u8; CS])).unwrap();
    w.finish().unwrap();
    out.lock().unwrap().clone()
}

fn open(data: Vec<u8>) -> Result<Qcow2Image, Error> {
    let obj: Arc<dyn RandomRead> = Arc::new(MemoryObject {
        data: Bytes::from(data),
        name: "hostile.qcow2".into(),
    });
    let img = Qcow2Image::open(obj)?;
    img.l2_mappings(0)?;
    Ok(img)
}

fn put32(v: &mut [u8], at: usize, x: u32) {
    v[at..at + 4].copy_from_slice(&x.to_be_bytes());
}
fn put64(v: &mut [u8], at: usize, x: u64) {
    v[at..at + 8].copy_from_slice(&x.to_be_bytes());
}
fn get64(v: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(v[at..at + 8].try_into().unwrap())
}

fn expect_err(data: Vec<u8>, needle: &str) {
    let err = open(data).expect_err("hostile image must be refused");
    let msg = err.to_string();
    assert!(msg.contains(needle), "expected {needle:?} in: {msg}");
    assert!(
        msg.contains("hostile.qcow2"),
        "error names the image: {msg}"
    );
}

#[test]
fn valid_image_opens() {
    let img = open(valid_image(None)).unwrap();
    assert_eq!(img.header().size, 8 << 20);
}

#[test]
fn l1_offset_beyond_eof_or_misaligned() {
    let mut v = valid_image(None);
    let len = v.len() as u64;
    put64(&mut v, 40, len + (1 << 20));
    expect_err(v, "invalid L1 table offset");
    let mut v = valid_image(None);
    let off = get64(&v, 40);
    put64(&mut v, 40, off + 8);
    expect_err(v, "invalid L1 table offset");
}

#[test]
fn huge_sizes_are_refused_before_allocation() {
    let mut v = valid_image(None);
    put32(&mut v, 36, u32::MAX);
    expect_err(v, "L1 table too large");
    let mut v = valid_image(None);
    put32(&mut v, 56, u32::MAX);
    expect_err(v, "refcount table too large");
    let mut v = valid_image(None);
    put32(&mut v, 60, u32::MAX);
    expect_err(v, "too many snapshots");
    let mut v = valid_image(None);
    put32(&mut v, 100, u32::MAX);
    expect_err(v, "invalid header_length");
    let mut v = valid_image(None);
    put64(&mut v, 24, u64::MAX);
    expect_err(v, "virtual size");
    let mut v = valid_image(None);
    put32(&mut v, 36, 0);
    expect_err(v, "L1 table too small");
}

#[test]
fn l2_entries_beyond_eof_into_metadata_or_compressed() {
    let base = valid_image(None);
    let l1_off = get64(&base, 40) as usize;
    let l2_off = (get64(&base, l1_off) & 0x00ff_ffff_ffff_fe00) as usize;
    let mut v = base.clone();
    let len = v.len() as u64;
    put64(&mut v, l2_off, (1u64 << 63) | (len + (1 << 30)));
    expect_err(v, "beyond the end of the file");
    let mut v = base.clone();
    put64(&mut v, l2_off, (1u64 << 63) | l1_off as u64);
    expect_err(v, "points into metadata");
    let mut v = base.clone();
    put64(&mut v, l2_off + 16, (1u64 << 63) | 512); // misaligned
    expect_err(v, "misaligned");
    let mut v = base.clone();
    put64(&mut v, l2_off, (1u64 << 62) | 0x1_0000);
    expect_err(v, "compressed clusters are not supported");
    let mut v = base;
    let len = v.len() as u64;
    put64(&mut v, l1_off, (1u64 << 63) | (len + (1 << 20)));
    expect_err(v, "beyond the end of the file");
}

#[test]
fn feature_bits() {
    let mut v = valid_image(None);
    put64(&mut v, 72, 1 << 40);
    expect_err(v, "unknown incompatible feature bits");
    let mut v = valid_image(None);
    put64(&mut v, 72, 2);
    expect_err(v, "marked corrupt");
    let mut v = valid_image(None);
    put64(&mut v, 72, 1);
    expect_err(v, "dirty bit");
    let mut v = valid_image(None);
    put64(&mut v, 72, 4);
    expect_err(v, "external data file");
    let mut v = valid_image(None);
    put32(&mut v, 32, 1);
    expect_err(v, "encrypted");
}

#[test]
fn truncated_and_empty_objects() {
    expect_err(Vec::new(), "truncated");
    let v = valid_image(None);
    expect_err(v[..100].to_vec(), "invalid");
    let v = valid_image(None);
    let l1 = get64(&v, 40) as usize;
    expect_err(v[..l1].to_vec(), "invalid L1 table offset");
    expect_err(
        b"not a qcow2 image at all, just text...................................................."
            .to_vec(),
        "bad magic",
    );
}

#[test]
fn hostile_backing_names_are_stored_not_followed() {
    // The reader reports the name; only the manifest decides chain members (see the manifest
    // tests for rejection). Opening never touches the filesystem.
    let img = open(valid_image(Some("/etc/shadow"))).unwrap();
    assert_eq!(img.header().backing_file.as_deref(), Some("/etc/shadow"));
    let mut v = valid_image(Some("../../x"));
    put32(&mut v, 16, 5000);
    expect_err(v, "invalid backing file name length");
    let mut v = valid_image(Some("../../x"));
    put64(&mut v, 8, CS as u64 - 2);
    expect_err(v, "invalid backing file offset");
}

#[test]
fn random_corruption_never_panics() {
    let base = valid_image(Some("parent.qcow2"));
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..3000 {
        let mut v = base.clone();
        for _ in 0..4 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let pos = (state % 512) as usize;
            let pos = if state & 1 == 0 {
                pos
            } else {
                (state as usize >> 9) % v.len()
            };
            v[pos] = (state >> 32) as u8;
        }
        let _ = open(v);
    }
}
