#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Interop with the reference implementation: every image shape we write passes
//! `qemu-img check` (no errors, no leaks), `qemu-img compare` reads it identically to the
//! source, `qemu-img info --backing-chain` shows chains; and we read images qemu-img wrote.

mod common;

use std::path::PathBuf;

use common::*;
use tvk_datamover::{qcow2::reader::ClusterMapping, volume::ByteRange};
use tvk_testkit::TempDir;

fn full_roundtrip(name: &str, size: u64, fill: impl Fn(&Volume, &mut Rng)) {
    qemu_img();
    let dir = TempDir::new(name).unwrap();
    let d = dir.path();
    let vol = Volume::create(&d.join("vol.raw"), size);
    let mut rng = Rng(0x1234_5678 ^ size);
    fill(&vol, &mut rng);
    let img = d.join("full.qcow2");
    let ix = d.join("full.index");
    let s = backup(&vol.path, &img, &ix, None, None);
    assert_eq!(s.virtual_size, size);
    assert_check_clean(&img);
    assert_same(&vol.path, &img);
    // No larger on disk than qemu-img's image of the same volume (holes and zero tails of
    // metadata clusters are not allocated).
    let theirs = d.join("qemu.qcow2");
    qemu(&[
        "convert",
        "-O",
        "qcow2",
        &vol.path.display().to_string(),
        &theirs.display().to_string(),
    ]);
    assert!(
        allocated(&img) <= allocated(&theirs),
        "our image occupies {} bytes, qemu-img's {}",
        allocated(&img),
        allocated(&theirs)
    );
    let out = d.join("restored.raw");
    restore(std::slice::from_ref(&img), Some(&ix), &out).unwrap();
    assert_files_equal(&vol.path, &out);
    // Only the data clusters are allocated: holes and zero runs stay holes.
    assert!(
        allocated(&out) <= s.image.data_clusters * CS,
        "restored volume occupies {} bytes for {} data clusters",
        allocated(&out),
        s.image.data_clusters
    );
}

#[test]
fn empty_volume() {
    full_roundtrip("empty", 0, |_, _| {});
}

#[test]
fn all_holes() {
    full_roundtrip("holes", 64 << 20, |_, _| {});
}

#[test]
fn all_data() {
    full_roundtrip("alldata", 24 << 20, |v, r| v.write_random(r, 0, 24 << 20));
}

#[test]
fn odd_size_not_a_cluster_multiple() {
    let size = 5 * CS + 12_345;
    full_roundtrip("odd", size, |v, r| {
        v.write_random(r, 0, 1000);
        v.write_random(r, 3 * CS + 17, 20_000);
        v.write_random(r, size - 999, 999);
    });
}

#[test]
fn mixed_data_zeros_and_holes_across_l2_ranges() {
    // > 512 MiB so more than one L2 table is written; mostly sparse.
    let size = (1u64 << 30) + 3 * CS;
    full_roundtrip("mixed", size, |v, r| {
        v.write_random(r, 0, 3 * CS);
        v.write_zeros(10 * CS, 4 * CS);
        v.write_random(r, (512 << 20) - CS, 2 * CS); // straddles the L2 boundary
        v.write_random(r, size - CS, CS);
    });
}

#[test]
fn full_backup_of_written_zeros_stores_no_data() {
    qemu_img();
    let dir = TempDir::new("zeros").unwrap();
    let d = dir.path();
    let vol = Volume::create(&d.join("vol.raw"), 8 << 20);
    vol.write_zeros(0, 8 << 20);
    let s = backup(
        &vol.path,
        &d.join("f.qcow2"),
        &d.join("f.index"),
        None,
        None,
    );
    assert_eq!(s.image.data_clusters, 0);
    assert_check_clean(&d.join("f.qcow2"));
    assert_same(&vol.path, &d.join("f.qcow2"));
}

/// Applies a deterministic mutation: overwrite, new data, discard, zero, partial write.
fn mutate(vol: &Volume, rng: &mut Rng, size: u64) {
    let clusters = size / CS;
    for _ in 0..6 {
        let c = rng.next() % clusters;
        match rng.next() % 5 {
            0 | 1 => vol.write_random(rng, c * CS, CS.min(size - c * CS)),
            2 => vol.punch(c * CS, CS),
            3 => vol.write_zeros(c * CS, CS.min(size - c * CS)),
            _ => vol.write_random(rng, c * CS + 4096, 4096),
        }
    }
}

#[test]
fn chain_of_depth_ten() {
    qemu_img();
    let dir = TempDir::new("chain10").unwrap();
    let d = dir.path();
    let size = 16u64 << 20;
    let vol = Volume::create(&d.join("vol.raw"), size);
    let mut rng = Rng(99);
    for i in 0..40 {
        vol.write_random(&mut rng, (i * 7 % 256) * CS, CS);
    }
    let ix = d.join("index");
    let mut layers: Vec<PathBuf> = vec![d.join("b0.qcow2")];
    backup(&vol.path, &layers[0], &ix, None, None);
    for n in 1..10 {
        mutate(&vol, &mut rng, size);
        let out = d.join(format!("b{n}.qcow2"));
        let prev_name = format!("b{}.qcow2", n - 1);
        let new_ix = d.join(format!("index{n}"));
        backup(&vol.path, &out, &new_ix, Some((&ix, &prev_name)), None);
        std::fs::rename(&new_ix, &ix).unwrap();
        assert_check_clean(&out);
        assert_same(&vol.path, &out);
        layers.push(out);
    }
    let info = qemu(&[
        "info",
        "--backing-chain",
        "--output=json",
        layers[9].to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(
        v.as_array().unwrap().len(),
        10,
        "qemu-img sees the whole chain: {info}"
    );
    assert_eq!(v[0]["backing-filename"], "b8.qcow2");
    assert_eq!(v[0]["backing-filename-format"], "qcow2");
    let out = d.join("restored.raw");
    restore(&layers, Some(&ix), &out).unwrap();
    assert_files_equal(&vol.path, &out);
}

#[test]
fn incremental_uses_zero_flags_for_discarded_and_zeroed_clusters() {
    qemu_img();
    let dir = TempDir::new("zeroflag").unwrap();
    let d = dir.path();
    let size = 4u64 << 20;
    let vol = Volume::create(&d.join("vol.raw"), size);
    let mut rng = Rng(7);
    vol.write_random(&mut rng, 0, size);
    backup(
        &vol.path,
        &d.join("a.qcow2"),
        &d.join("a.index"),
        None,
        None,
    );
    vol.punch(2 * CS, CS);
    vol.write_zeros(5 * CS, CS);
    vol.write_random(&mut rng, 9 * CS + 100, 10);
    let s = backup(
        &vol.path,
        &d.join("b.qcow2"),
        &d.join("b.index"),
        Some((&d.join("a.index"), "a.qcow2")),
        None,
    );
    assert_eq!(
        s.image.data_clusters, 1,
        "only the changed cluster is stored"
    );
    assert_eq!(s.image.zero_clusters, 2);
    let img = open_image(&d.join("b.qcow2"));
    let m = img.l2_mappings(0).unwrap();
    assert_eq!(m[2], ClusterMapping::Zero);
    assert_eq!(m[5], ClusterMapping::Zero);
    assert!(matches!(m[9], ClusterMapping::Data(_)));
    assert_eq!(m[0], ClusterMapping::Unallocated);
    assert_check_clean(&d.join("b.qcow2"));
    assert_same(&vol.path, &d.join("b.qcow2"));
    // Smaller than what qemu-img's rebase diff stores (zeros as data there).
    assert!(std::fs::metadata(d.join("b.qcow2")).unwrap().len() <= 6 * CS);
}

#[test]
fn volume_grown_between_backups() {
    qemu_img();
    let dir = TempDir::new("grow").unwrap();
    let d = dir.path();
    let small = 3 * CS + 1000; // odd size, so the boundary cluster is partial in the base
    let vol = Volume::create(&d.join("vol.raw"), small);
    let mut rng = Rng(5);
    vol.write_random(&mut rng, 0, small);
    backup(
        &vol.path,
        &d.join("a.qcow2"),
        &d.join("a.index"),
        None,
        None,
    );
    let big = 40 * CS + 77;
    vol.set_len(big);
    vol.write_random(&mut rng, 20 * CS, 3 * CS);
    backup(
        &vol.path,
        &d.join("b.qcow2"),
        &d.join("b.index"),
        Some((&d.join("a.index"), "a.qcow2")),
        None,
    );
    assert_check_clean(&d.join("b.qcow2"));
    assert_same(&vol.path, &d.join("b.qcow2"));
    let out = d.join("r.raw");
    restore(
        &[d.join("a.qcow2"), d.join("b.qcow2")],
        Some(&d.join("b.index")),
        &out,
    )
    .unwrap();
    assert_files_equal(&vol.path, &out);
    // Grown again with data right after the old end, inside the old partial cluster.
    vol.write_random(&mut rng, small, 50);
    backup(
        &vol.path,
        &d.join("c.qcow2"),
        &d.join("c.index"),
        Some((&d.join("b.index"), "b.qcow2")),
        None,
    );
    assert_same(&vol.path, &d.join("c.qcow2"));
}

#[test]
fn changed_block_list_reads_only_listed_ranges() {
    qemu_img();
    let dir = TempDir::new("cbt").unwrap();
    let d = dir.path();
    let size = 8u64 << 20;
    let vol = Volume::create(&d.join("vol.raw"), size);
    let mut rng = Rng(11);
    vol.write_random(&mut rng, 0, size);
    backup(
        &vol.path,
        &d.join("a.qcow2"),
        &d.join("a.index"),
        None,
        None,
    );
    vol.write_random(&mut rng, 3 * CS + 10, 100);
    vol.punch(50 * CS, 2 * CS);
    let changed = vec![
        ByteRange {
            offset: 3 * CS,
            length: 4096,
        },
        ByteRange {
            offset: 50 * CS,
            length: 2 * CS,
        },
    ];
    let s = backup(
        &vol.path,
        &d.join("b.qcow2"),
        &d.join("b.index"),
        Some((&d.join("a.index"), "a.qcow2")),
        Some(changed),
    );
    assert!(
        s.bytes_read <= CS,
        "read {} bytes, only the changed cluster is data",
        s.bytes_read
    );
    assert_check_clean(&d.join("b.qcow2"));
    assert_same(&vol.path, &d.join("b.qcow2"));
    // The index written from the list matches one computed by reading everything.
    backup(
        &vol.path,
        &d.join("c.qcow2"),
        &d.join("c.index"),
        Some((&d.join("a.index"), "a.qcow2")),
        None,
    );
    assert_eq!(
        std::fs::read(d.join("b.index")).unwrap(),
        std::fs::read(d.join("c.index")).unwrap()
    );
}

#[test]
fn reads_images_qemu_img_wrote() {
    qemu_img();
    let dir = TempDir::new("qemuread").unwrap();
    let d = dir.path();
    let size = 9 * CS + 4096; // qemu rounds raw sizes to 512 bytes
    let vol = Volume::create(&d.join("vol.raw"), size);
    let mut rng = Rng(3);
    vol.write_random(&mut rng, CS, 2 * CS);
    vol.write_random(&mut rng, size - 100, 100);
    let q = d.join("q.qcow2");
    qemu(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        vol.path.to_str().unwrap(),
        q.to_str().unwrap(),
    ]);
    // An overlay qemu-img made on top, with a change and a zeroed cluster.
    let o = d.join("o.qcow2");
    qemu(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "q.qcow2",
        "-F",
        "qcow2",
        o.to_str().unwrap(),
    ]);
    let out = d.join("r.raw");
    restore(std::slice::from_ref(&q), None, &out).unwrap();
    assert_files_equal(&vol.path, &out);
    // Change the overlay (data + a zeroed cluster) and the raw volume the same way.
    for (fmt, path) in [("qcow2", &o), ("raw", &vol.path)] {
        let st = std::process::Command::new("qemu-io")
            .args([
                "-f",
                fmt,
                "-c",
                "write -P 0xab 4096 8192",
                "-c",
                "write -z 131072 65536",
            ])
            .arg(path)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "qemu-io: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
    assert!(matches!(
        open_image(&o).l2_mappings(0).unwrap()[2],
        ClusterMapping::Zero
    ));
    restore(&[q, o], None, &out).unwrap();
    assert_files_equal(&vol.path, &out);
    // Also with 4 KiB clusters and v2 (compat=0.10).
    let q2 = d.join("q2.qcow2");
    qemu(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=4096,compat=0.10",
        vol.path.to_str().unwrap(),
        q2.to_str().unwrap(),
    ]);
    restore(&[q2], None, &out).unwrap();
    assert_files_equal(&vol.path, &out);
}

#[test]
fn squash_equals_the_chain() {
    qemu_img();
    let dir = TempDir::new("squash").unwrap();
    let d = dir.path();
    let size = 6u64 << 20;
    let vol = Volume::create(&d.join("vol.raw"), size);
    let mut rng = Rng(17);
    vol.write_random(&mut rng, 0, 3 << 20);
    backup(
        &vol.path,
        &d.join("a.qcow2"),
        &d.join("a.index"),
        None,
        None,
    );
    mutate(&vol, &mut rng, size);
    backup(
        &vol.path,
        &d.join("b.qcow2"),
        &d.join("b.index"),
        Some((&d.join("a.index"), "a.qcow2")),
        None,
    );
    let chain = tvk_datamover::restore::Chain::new(vec![
        open_image(&d.join("a.qcow2")),
        open_image(&d.join("b.qcow2")),
    ])
    .unwrap();
    let ix = tvk_datamover::index::IndexReader::new(
        "b.index",
        std::fs::File::open(d.join("b.index")).unwrap(),
    )
    .unwrap();
    let sink =
        tvk_datamover::object_io::LocalFileSink::create(&d.join("flat.qcow2"), CS as usize, false)
            .unwrap();
    tvk_datamover::flatten::flatten_chain(
        &chain,
        Some(ix),
        "b",
        Box::new(sink),
        &tvk_datamover::progress::NoProgress,
    )
    .unwrap();
    assert_check_clean(&d.join("flat.qcow2"));
    assert_same(&vol.path, &d.join("flat.qcow2"));
    assert!(
        open_image(&d.join("flat.qcow2"))
            .header()
            .backing_file
            .is_none()
    );
}
