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
            encryption: None,
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
    expect_err(v, "legacy AES-CBC encryption");
    // LUKS without the encryption header extension.
    let mut v = valid_image(None);
    put32(&mut v, 32, 2);
    expect_err(v, "no encryption header extension");
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

mod untrusted {
    use tvk_datamover::untrusted_input::{parse_manifest, read_index, walk_image};

    fn mutate(base: &[u8], seed: u64, rounds: usize, f: impl Fn(&[u8])) {
        let mut state = seed;
        for _ in 0..rounds {
            let mut v = base.to_vec();
            for _ in 0..3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if v.is_empty() {
                    break;
                }
                let pos = (state as usize >> 8) % v.len();
                v[pos] = (state >> 40) as u8;
            }
            if state.is_multiple_of(7) {
                v.truncate((state as usize >> 20) % (v.len() + 1));
            }
            f(&v);
        }
    }

    fn sample_index() -> Vec<u8> {
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = tvk_datamover::object_io::MemorySink {
            reserved: 0,
            chunks: vec![],
            out: out.clone(),
        };
        let mut w = tvk_datamover::index::IndexWriter::new(Box::new(sink), 16, 40 * 65536 + 5);
        use tvk_datamover::index::ClusterState::*;
        w.push_many(Unallocated, 10).unwrap();
        w.push(Data([7; 32])).unwrap();
        w.push(Data([8; 32])).unwrap();
        w.push_many(Zero, 20).unwrap();
        w.push_many(Unallocated, 9).unwrap();
        w.finish().unwrap();
        out.lock().unwrap().clone()
    }

    #[test]
    fn index_reader_refuses_damage() {
        let good = sample_index();
        assert_eq!(read_index(&good).unwrap(), 41);
        let mut flipped = good.clone();
        flipped[40] ^= 1;
        assert!(
            read_index(&flipped).is_err(),
            "any flipped byte fails the checksum or the structure"
        );
        assert!(read_index(&good[..good.len() - 1]).is_err());
        let mut extra = good.clone();
        extra.push(0);
        assert!(read_index(&extra).is_err());
        mutate(&good, 77, 3000, |v| {
            let _ = read_index(v);
        });
    }

    const MANIFEST: &str = r#"{"formatVersion":1,"generation":1,"backupPlan":"p","backupId":"b2","volumeId":"v",
        "parentBackup":"b1","chain":[{"backupId":"b1","image":{"name":"p/b1/v/data.qcow2","size":1,"blake3":"x"}},
        {"backupId":"b2","image":{"name":"p/b2/v/data.qcow2","size":1,"blake3":"x"}}],
        "virtualSize":1048576,"clusterSize":65536,"index":{"name":"p/b2/v/index","size":1,"blake3":"x"},
        "createdAt":"2026-01-01T00:00:00Z","toolVersion":"0"}"#;

    #[test]
    fn manifest_names_are_confined_to_the_plan_and_volume() {
        parse_manifest(MANIFEST.as_bytes()).unwrap();
        for (from, to) in [
            ("p/b1/v/data.qcow2", "../../etc/shadow/x"),
            ("p/b1/v/data.qcow2", "/etc/shadow"),
            ("p/b1/v/data.qcow2", "p/b1/v/../../../x"),
            ("p/b1/v/data.qcow2", "p//v/data.qcow2"),
            ("p/b1/v/data.qcow2", "q/b1/v/data.qcow2"),
            ("p/b1/v/data.qcow2", "p/b1/other/data.qcow2"),
            ("p/b1/v/data.qcow2", "p/b2/v/data.qcow2"),
            ("p/b1/v/data.qcow2", "p/b1/v/secret.txt"),
            ("\"backupPlan\":\"p\"", "\"backupPlan\":\"..\""),
            ("\"formatVersion\":1", "\"formatVersion\":9"),
        ] {
            let bad = MANIFEST.replace(from, to);
            let err = parse_manifest(bad.as_bytes()).expect_err(&bad);
            assert!(err.to_string().contains("input/manifest.json"), "{err}");
        }
        mutate(MANIFEST.as_bytes(), 99, 3000, |v| {
            let _ = parse_manifest(v);
        });
    }

    #[test]
    fn image_walk_survives_mutation() {
        let img = super::valid_image(Some("../../b1/v/data.qcow2"));
        assert_eq!(walk_image(&img).unwrap(), 2);
        mutate(&img[..4 * 65536], 5, 2000, |v| {
            let _ = walk_image(v);
        });
    }
}
