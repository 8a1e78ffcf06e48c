#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Encrypted backups (LUKS in qcow2, keyed digest index): interop with qemu-img in both
//! directions, wrong and missing keys, malformed LUKS headers, and the target-level commands
//! (backup, restore, verify, coalesce) with a key.

mod common;

use std::{
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
};

use common::*;
use tvk_datamover::{
    Error,
    backup::{BackupJob, ParentIndex, run_backup},
    coalesce::coalesce_with_key,
    crypt::EncryptionKey,
    index::IndexReader,
    object_io::{LocalFileSink, LocalObject, RandomRead},
    progress::NoProgress,
    qcow2::reader::Qcow2Image,
    repository::{
        VolumeBackupId, VolumeBackupRequest, backup_volume, backup_volume_with_key, load_manifest,
        restore_volume, restore_volume_to_with_key, verify_volume_with_key,
    },
    restore::{Chain, Destination, RestoreJob, run_restore},
    target::Target,
};
use tvk_testkit::TempDir;

const PASS: &str = "correct horse battery staple";

fn key() -> EncryptionKey {
    EncryptionKey::from_bytes(PASS.as_bytes().to_vec()).unwrap()
}

fn key_file(d: &Path, pass: &str) -> PathBuf {
    let p = d.join(format!("key-{}", pass.len()));
    std::fs::write(&p, pass).unwrap();
    p
}

/// Encrypted full (parent None) or incremental backup through the library.
fn enc_backup(src: &Path, out: &Path, index: &Path, parent: Option<(&Path, &str)>) {
    let parent = parent.map(|(ix, backing)| ParentIndex {
        name: ix.display().to_string(),
        reader: Box::new(std::fs::File::open(ix).unwrap()),
        backing_name: backing.to_string(),
    });
    run_backup(BackupJob {
        source: src,
        parent,
        changed_blocks: None,
        image_sink: Box::new(LocalFileSink::create(out, CS as usize, false).unwrap()),
        index_sink: Box::new(LocalFileSink::create(index, 0, false).unwrap()),
        cluster_bits: 16,
        progress: &NoProgress,
        encryption: Some(key()),
    })
    .unwrap();
}

fn open_keyed(p: &Path, key: Option<&EncryptionKey>) -> tvk_datamover::Result<Qcow2Image> {
    let obj: Arc<dyn RandomRead> = Arc::new(LocalObject::open(p).unwrap());
    Qcow2Image::open_with_key(obj, key)
}

fn restore_keyed(
    layers: &[PathBuf],
    index: Option<&Path>,
    out: &Path,
) -> tvk_datamover::Result<()> {
    let k = key();
    let chain = Chain::new(
        layers
            .iter()
            .map(|p| open_keyed(p, Some(&k)))
            .collect::<tvk_datamover::Result<Vec<_>>>()?,
    )?;
    let index = index.map(|p| IndexReader::new("index", std::fs::File::open(p).unwrap()).unwrap());
    run_restore(
        RestoreJob {
            chain: &chain,
            index,
            backup_id: "test",
            progress: &NoProgress,
            durable: false,
        },
        &Destination::open(out)?,
    )?;
    Ok(())
}

/// `--object secret,… --image-opts driver=qcow2,file.filename=IMG,encrypt.key-secret=s`.
fn qemu_keyed(sub: &str, img: &Path, keyfile: &Path, tail: &[&str]) -> std::process::Output {
    let mut c = Command::new("qemu-img");
    c.arg(sub)
        .arg("--object")
        .arg(format!("secret,id=s,file={}", keyfile.display()))
        .arg("--image-opts")
        .arg(format!(
            "driver=qcow2,file.filename={},encrypt.key-secret=s{}",
            img.display(),
            // An overlay's backing image needs the key too.
            if has_backing(img) {
                ",backing.encrypt.key-secret=s"
            } else {
                ""
            }
        ));
    c.args(tail);
    c.output().unwrap()
}

fn has_backing(img: &Path) -> bool {
    let head = std::fs::read(img).unwrap();
    head.len() >= 16 && head[8..16] != [0; 8]
}

fn convert_to_raw(img: &Path, keyfile: &Path, out: &Path) -> std::process::Output {
    qemu_keyed(
        "convert",
        img,
        keyfile,
        &["-O", "raw", out.to_str().unwrap()],
    )
}

fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "qemu-img failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn encrypted_full_and_incremental_read_back_by_qemu_img_byte_identical() {
    qemu_img();
    let dir = TempDir::new("enc-interop").unwrap();
    let d = dir.path();
    let kf = key_file(d, PASS);
    // An odd size, data over more than one cluster run, a hole in between.
    let size = (9 << 20) + 4096;
    let vol = Volume::create(&d.join("vol.raw"), size);
    let mut rng = Rng(7);
    vol.write_random(&mut rng, 0, 3 << 20);
    vol.write_random(&mut rng, 6 << 20, (3 << 20) + 4096);
    let snap1 = d.join("s1.raw");
    std::fs::copy(&vol.path, &snap1).unwrap();
    let base = d.join("base.qcow2");
    let ix = d.join("index");
    enc_backup(&vol.path, &base, &ix, None);
    // Incremental: changed data, a zeroed range (zero flag clusters) and new data.
    vol.write_random(&mut rng, 1 << 20, 3 * CS);
    vol.write_zeros(6 << 20, 2 * CS);
    vol.write_random(&mut rng, 4 << 20, CS);
    let ix2 = d.join("index2");
    std::fs::copy(&ix, &ix2).unwrap();
    let top = d.join("top.qcow2");
    enc_backup(&vol.path, &top, &ix2, Some((&ix, "base.qcow2")));

    // qemu-img sees encrypted LUKS images, checks them clean with the key, and reads both
    // layers byte-identical to the snapshots.
    let info = qemu(&["info", top.to_str().unwrap()]);
    assert!(info.contains("encrypted: yes"), "{info}");
    assert!(info.contains("format: luks"), "{info}");
    for img in [&base, &top] {
        let out = ok(&qemu_keyed("check", img, &kf, &["--output=json"]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        for k in ["corruptions", "leaks", "check-errors"] {
            assert_eq!(
                v.get(k).and_then(|x| x.as_u64()).unwrap_or(0),
                0,
                "{k}: {out}"
            );
        }
    }
    let raw1 = d.join("q1.raw");
    ok(&convert_to_raw(&base, &kf, &raw1));
    let mut raw1_bytes = std::fs::read(&raw1).unwrap();
    raw1_bytes.truncate(size as usize);
    assert!(raw1_bytes == std::fs::read(&snap1).unwrap(), "base differs");
    let raw2 = d.join("q2.raw");
    ok(&convert_to_raw(&top, &kf, &raw2));
    let mut raw2_bytes = std::fs::read(&raw2).unwrap();
    raw2_bytes.truncate(size as usize);
    assert!(
        raw2_bytes == std::fs::read(&vol.path).unwrap(),
        "chain differs"
    );

    // No plaintext on disk: a cluster of the source does not appear in the image.
    let img = std::fs::read(&base).unwrap();
    let src = std::fs::read(&snap1).unwrap();
    let probe = &src[(1 << 20)..(1 << 20) + 64];
    assert!(
        !img.windows(64).any(|w| w == probe),
        "plaintext found in the image"
    );

    // We read our own chain back, verified against the keyed index.
    let out = d.join("restored.raw");
    restore_keyed(&[base.clone(), top.clone()], Some(&ix2), &out).unwrap();
    assert_files_equal(&vol.path, &out);

    // The index holds keyed digests: not the plain BLAKE3 of the data.
    let mut r = IndexReader::new("index", std::fs::File::open(&ix).unwrap()).unwrap();
    assert!(r.header().keyed);
    let first = r.next_cluster().unwrap().unwrap();
    let plain = *blake3::hash(&src[..CS as usize]).as_bytes();
    match first {
        tvk_datamover::index::ClusterState::Data(h) => {
            assert_ne!(h, plain, "index digest is plain BLAKE3");
            assert_eq!(
                h,
                *blake3::keyed_hash(&key().index_key(), &src[..CS as usize]).as_bytes()
            );
        }
        other => panic!("first cluster should be data: {other:?}"),
    }
}

#[test]
fn images_qemu_img_encrypted_are_read_by_us() {
    qemu_img();
    let dir = TempDir::new("enc-qemu").unwrap();
    let d = dir.path();
    let kf = key_file(d, PASS);
    let secret = format!("secret,id=s,file={}", kf.display());
    // Written by qemu-io into a qemu-img created image.
    let img = d.join("q.qcow2");
    qemu(&[
        "create",
        "-f",
        "qcow2",
        "--object",
        &secret,
        "-o",
        "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10",
        img.to_str().unwrap(),
        "5M",
    ]);
    let opts = format!(
        "driver=qcow2,file.filename={},encrypt.key-secret=s",
        img.display()
    );
    let io = Command::new("qemu-io")
        .args(["--object", &secret, "--image-opts", &opts])
        .args([
            "-c",
            "write -P 0xab 64k 200k",
            "-c",
            "write -P 0x11 4M 100k",
            "-c",
            "write -z 128k 64k",
        ])
        .output()
        .unwrap();
    assert!(
        io.status.success(),
        "{}",
        String::from_utf8_lossy(&io.stderr)
    );
    let expected = d.join("q.raw");
    ok(&convert_to_raw(&img, &kf, &expected));
    let out = d.join("ours.raw");
    restore_keyed(std::slice::from_ref(&img), None, &out).unwrap();
    assert_files_equal(&expected, &out);

    // Converted by qemu-img from a raw file (many data clusters).
    let vol = Volume::create(&d.join("v.raw"), 3 << 20);
    vol.write_random(&mut Rng(3), 0, 3 << 20);
    let conv = d.join("c.qcow2");
    qemu(&[
        "convert",
        "--object",
        &secret,
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10",
        vol.path.to_str().unwrap(),
        conv.to_str().unwrap(),
    ]);
    let out2 = d.join("ours2.raw");
    restore_keyed(&[conv], None, &out2).unwrap();
    assert_files_equal(&vol.path, &out2);
}

#[test]
fn a_wrong_or_missing_key_is_refused_never_garbage() {
    let dir = TempDir::new("enc-wrong").unwrap();
    let d = dir.path();
    let vol = Volume::create(&d.join("vol.raw"), 2 << 20);
    vol.write_random(&mut Rng(5), 0, 1 << 20);
    let img = d.join("a.qcow2");
    enc_backup(&vol.path, &img, &d.join("index"), None);
    let wrong = EncryptionKey::from_bytes(b"not the key".to_vec()).unwrap();
    let e = open_keyed(&img, Some(&wrong)).unwrap_err();
    assert!(
        e.to_string()
            .contains("the encryption key does not open image"),
        "{e}"
    );
    let e = open_keyed(&img, None).unwrap_err();
    assert!(e.to_string().contains("is encrypted (LUKS)"), "{e}");
    assert!(e.to_string().contains("--encryption-key-file"), "{e}");
    // Keys LUKS cannot hold are refused up front.
    assert!(EncryptionKey::from_bytes(Vec::new()).is_err());
    assert!(EncryptionKey::from_bytes(b"a\0b".to_vec()).is_err());
    // An unencrypted image opens with or without a key.
    let plain = d.join("p.qcow2");
    backup(&vol.path, &plain, &d.join("pindex"), None, None);
    assert!(!open_keyed(&plain, Some(&key())).unwrap().is_encrypted());
}

/// Offset of the LUKS area of one of our images (cluster 1).
const LUKS_AT: u64 = CS;

fn mutate(src: &Path, dst: &Path, at: u64, bytes: &[u8]) {
    std::fs::copy(src, dst).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(dst).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

#[test]
fn malformed_luks_headers_are_refused_by_name() {
    let dir = TempDir::new("enc-hostile").unwrap();
    let d = dir.path();
    let vol = Volume::create(&d.join("vol.raw"), 1 << 20);
    vol.write_random(&mut Rng(9), 0, 1 << 20);
    let img = d.join("a.qcow2");
    enc_backup(&vol.path, &img, &d.join("index"), None);
    let k = key();
    // Find the crypto header extension (type 0x0537be77) in the header cluster.
    let head = std::fs::read(&img).unwrap()[..4096].to_vec();
    let ext = head
        .windows(4)
        .position(|w| w == [0x05, 0x37, 0xbe, 0x77])
        .unwrap() as u64;
    let cases: Vec<(&str, u64, Vec<u8>, &str)> = vec![
        ("magic", LUKS_AT, b"LUKX".to_vec(), "bad magic"),
        (
            "version",
            LUKS_AT + 6,
            vec![0, 2],
            "unsupported LUKS version 2",
        ),
        (
            "cipher",
            LUKS_AT + 8,
            b"twofish\0".to_vec(),
            "unsupported cipher twofish",
        ),
        (
            "hash",
            LUKS_AT + 72,
            b"sha1\0\0\0".to_vec(),
            "unsupported hash sha1",
        ),
        (
            "key bytes",
            LUKS_AT + 108,
            32u32.to_be_bytes().to_vec(),
            "unsupported key size of 32",
        ),
        (
            "digest iterations",
            LUKS_AT + 164,
            u32::MAX.to_be_bytes().to_vec(),
            "invalid master key digest iteration count",
        ),
        (
            "slot state",
            LUKS_AT + 208,
            0x1234u32.to_be_bytes().to_vec(),
            "key slot 0 has an invalid state",
        ),
        (
            "slot iterations",
            LUKS_AT + 212,
            u32::MAX.to_be_bytes().to_vec(),
            "key slot 0 has an invalid iteration count",
        ),
        (
            "stripes",
            LUKS_AT + 208 + 44,
            7u32.to_be_bytes().to_vec(),
            "key slot 0 has 7 stripes",
        ),
        (
            "slot overlap",
            LUKS_AT + 208 + 48 + 40,
            8u32.to_be_bytes().to_vec(),
            "overlaps another slot",
        ),
        (
            "slot offset",
            LUKS_AT + 208 + 40,
            4000u32.to_be_bytes().to_vec(),
            "overlaps the header or the payload",
        ),
        (
            "payload",
            LUKS_AT + 104,
            100u32.to_be_bytes().to_vec(),
            "overlaps the header or the payload",
        ),
        (
            "area length",
            ext + 8 + 8,
            (1u64 << 40).to_be_bytes().to_vec(),
            "invalid LUKS header length",
        ),
        (
            "area offset",
            ext + 8,
            (CS + 512).to_be_bytes().to_vec(),
            "invalid LUKS header offset",
        ),
        (
            "crypt method 1",
            32,
            1u32.to_be_bytes().to_vec(),
            "legacy AES-CBC",
        ),
        (
            "crypt method 0",
            32,
            0u32.to_be_bytes().to_vec(),
            "crypt_method 0",
        ),
        (
            "crypt method 9",
            32,
            9u32.to_be_bytes().to_vec(),
            "unknown encryption method",
        ),
    ];
    for (name, at, bytes, want) in cases {
        let bad = d.join(format!("bad-{}.qcow2", name.replace(' ', "-")));
        mutate(&img, &bad, at, &bytes);
        let e = open_keyed(&bad, Some(&k)).unwrap_err();
        assert!(
            matches!(e, Error::InvalidImage { .. }) && e.to_string().contains(want),
            "{name}: expected {want:?}, got {e}"
        );
    }
    // Damaged key material: the key no longer opens the slot (never garbage data).
    let bad = d.join("bad-material.qcow2");
    mutate(&img, &bad, LUKS_AT + 4096 + 100, &[0xff; 64]);
    let e = open_keyed(&bad, Some(&k)).unwrap_err();
    assert!(e.to_string().contains("does not open image"), "{e}");
    // A truncated image whose LUKS area runs past the end.
    let short = d.join("short.qcow2");
    std::fs::copy(&img, &short).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&short)
        .unwrap()
        .set_len(CS + 4096)
        .unwrap();
    assert!(open_keyed(&short, Some(&k)).is_err());
}

#[test]
fn an_incremental_refuses_a_parent_index_of_the_other_kind() {
    let dir = TempDir::new("enc-kind").unwrap();
    let d = dir.path();
    let vol = Volume::create(&d.join("vol.raw"), 2 << 20);
    vol.write_random(&mut Rng(1), 0, 1 << 20);
    // Plain parent, encrypted child.
    let ix = d.join("pindex");
    backup(&vol.path, &d.join("p.qcow2"), &ix, None, None);
    let r = run_backup(BackupJob {
        source: &vol.path,
        parent: Some(ParentIndex {
            name: "pindex".into(),
            reader: Box::new(std::fs::File::open(&ix).unwrap()),
            backing_name: "p.qcow2".into(),
        }),
        changed_blocks: None,
        image_sink: Box::new(
            LocalFileSink::create(&d.join("c.qcow2"), CS as usize, false).unwrap(),
        ),
        index_sink: Box::new(LocalFileSink::create(&d.join("cindex"), 0, false).unwrap()),
        cluster_bits: 16,
        progress: &NoProgress,
        encryption: Some(key()),
    });
    let e = r.unwrap_err();
    assert!(e.to_string().contains("take a full backup"), "{e}");
    // A plain chain restored against a keyed index (or the reverse) is refused.
    let eix = d.join("eindex");
    let eimg = d.join("e.qcow2");
    enc_backup(&vol.path, &eimg, &eix, None);
    let e = restore(&[d.join("p.qcow2")], Some(&eix), &d.join("x.raw")).unwrap_err();
    assert!(e.to_string().contains("keyed digests"), "{e}");
}

fn id(b: &str) -> VolumeBackupId {
    VolumeBackupId::new("plan-enc", b, "pvc-1").unwrap()
}

#[test]
fn target_backups_with_a_key_restore_verify_and_coalesce() {
    let dir = TempDir::new("enc-target").unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("target")).unwrap();
    let target = Target::filesystem(&d.join("target")).unwrap();
    let k = key();
    let marker = b"TVK-PLAINTEXT-MARKER-0123456789";
    let vol = Volume::create(&d.join("vol.raw"), 4 << 20);
    vol.write_random(&mut Rng(21), 0, 2 << 20);
    for i in 0..16u64 {
        vol.file.write_all_at(marker, i * 70_000 + 11).unwrap();
    }
    let req = |b: &str, parent: Option<&str>| VolumeBackupRequest {
        id: id(b),
        parent: parent.map(str::to_string),
        source: &vol.path,
        changed_blocks: None,
        progress: &NoProgress,
    };
    let m1 = backup_volume_with_key(&target, req("b1", None), Some(&k)).unwrap();
    assert!(m1.manifest.encrypted);
    let s1 = d.join("s1.raw");
    std::fs::copy(&vol.path, &s1).unwrap();
    vol.write_random(&mut Rng(22), 3 << 20, 2 * CS);
    vol.file.write_all_at(marker, (3 << 20) + 5).unwrap();
    backup_volume_with_key(&target, req("b2", Some("b1")), Some(&k)).unwrap();
    let s2 = d.join("s2.raw");
    std::fs::copy(&vol.path, &s2).unwrap();
    vol.write_random(&mut Rng(23), 1 << 20, CS);
    backup_volume_with_key(&target, req("b3", Some("b2")), Some(&k)).unwrap();

    // An incremental without the key on an encrypted parent is refused.
    let e = backup_volume(&target, req("b4", Some("b3"))).unwrap_err();
    assert!(e.to_string().contains("take a full backup"), "{e}");
    // So is one with another key (its chain would need two keys).
    let other = EncryptionKey::from_bytes(b"rotated key".to_vec()).unwrap();
    let e = backup_volume_with_key(&target, req("b4", Some("b3")), Some(&other)).unwrap_err();
    assert!(
        e.to_string().contains("does not open parent backup b3"),
        "{e}"
    );
    assert!(load_manifest(&target, &id("b4")).unwrap().is_none());
    // Restore without a key says what is needed.
    let e = restore_volume(&target, &id("b2"), &d.join("nokey.raw"), &NoProgress).unwrap_err();
    assert!(e.to_string().contains("is encrypted"), "{e}");
    assert!(e.to_string().contains("--encryption-key-file"), "{e}");

    // No object on the target holds the marker.
    let mut files = vec![d.join("target")];
    let mut seen = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker),
                "plaintext marker in {}",
                p.display()
            );
            seen += 1;
        }
    }
    assert!(seen >= 9, "{seen} objects");

    let restore_ok = |b: &str, expected: &Path| {
        let out = d.join(format!("r-{b}.raw"));
        restore_volume_to_with_key(
            &target,
            &id(b),
            Destination::open(&out).unwrap(),
            &NoProgress,
            Some(&k),
        )
        .unwrap();
        assert_files_equal(expected, &out);
    };
    restore_ok("b1", &s1);
    restore_ok("b2", &s2);
    let r = verify_volume_with_key(&target, &id("b3"), 100, &NoProgress, Some(&k)).unwrap();
    assert!(r.clusters_checked > 0);

    // Coalesce b1: b2 becomes a flattened base, re-encrypted with the key.
    coalesce_with_key(
        &target,
        "plan-enc",
        "pvc-1",
        &["b1".into()],
        &NoProgress,
        &|_| {},
        Some(&k),
    )
    .unwrap();
    assert!(load_manifest(&target, &id("b1")).unwrap().is_none());
    let m2 = load_manifest(&target, &id("b2")).unwrap().unwrap();
    assert!(m2.generation >= 2 && m2.encrypted);
    let base = d.join("target").join(&m2.chain[0].image.name);
    let img = open_keyed(&base, Some(&k)).unwrap();
    assert!(img.is_encrypted());
    restore_ok("b2", &s2);
    restore_ok("b3", &vol.path);
    verify_volume_with_key(&target, &id("b3"), 100, &NoProgress, Some(&k)).unwrap();
}

fn cli(args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tvk-datamover"))
        .args(["--progress", "none"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let result = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rev()
        .find(|l| l["event"] == "result")
        .unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), result, stdout + &stderr)
}

#[test]
fn cli_backup_restore_verify_info_with_a_key_file_never_print_the_key() {
    let dir = TempDir::new("enc-cli").unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("target")).unwrap();
    let kf = key_file(d, PASS);
    let vol = Volume::create(&d.join("vol.raw"), 3 << 20);
    vol.write_random(&mut Rng(31), 0, 2 << 20);
    let t = d.join("target");
    let t = t.to_str().unwrap();
    let k = kf.to_str().unwrap();
    let ids = ["--plan", "p", "--backup", "b1", "--volume", "v"];
    let with = |cmd: &str, extra: &[&str]| {
        let mut a = vec![cmd, "--target", t];
        a.extend_from_slice(&ids);
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| cli(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let (code, r, all) = run(with(
        "backup",
        &[
            "--source",
            vol.path.to_str().unwrap(),
            "--encryption-key-file",
            k,
        ],
    ));
    assert_eq!(code, 0, "{all}");
    assert_eq!(r["result"]["manifest"]["encrypted"], true, "{r}");
    assert_eq!(
        r["result"]["manifest"]["encryptionFormat"],
        tvk_datamover::manifest::ENCRYPTION_FORMAT
    );
    assert!(!all.contains(PASS), "the key was printed: {all}");
    // Restore without the key: exit 1, the flag named.
    let out = d.join("r.raw");
    let (code, r, all) = run(with("restore", &["--dest", out.to_str().unwrap()]));
    assert_eq!(code, 1, "{all}");
    assert_eq!(r["kind"], "InvalidInput", "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("--encryption-key-file"),
        "{r}"
    );
    // With a wrong key: exit 1, says the key does not open the image.
    let wrong = key_file(d, "x");
    let (code, r, _) = run(with(
        "verify",
        &[
            "--read-data",
            "--encryption-key-file",
            wrong.to_str().unwrap(),
        ],
    ));
    assert_eq!(code, 1);
    assert!(
        r["error"].as_str().unwrap().contains("does not open"),
        "{r}"
    );
    // With the key: restore bit-exact, verify reads every cluster, info confirms the key.
    let (code, _, all) = run(with(
        "restore",
        &["--dest", out.to_str().unwrap(), "--encryption-key-file", k],
    ));
    assert_eq!(code, 0, "{all}");
    assert_files_equal(&vol.path, &out);
    let (code, r, all) = run(with("verify", &["--read-data", "--encryption-key-file", k]));
    assert_eq!(code, 0, "{all}");
    assert!(r["result"]["clustersChecked"].as_u64().unwrap() > 0, "{r}");
    let (code, r, all) = run(with("info", &["--encryption-key-file", k]));
    assert_eq!(code, 0, "{all}");
    assert_eq!(r["result"]["keyOpensChain"], true, "{r}");
    assert!(!all.contains(PASS));
    // A key file that does not exist is named.
    let (code, r, _) = run(with("info", &["--encryption-key-file", "/nonexistent/key"]));
    assert_eq!(code, 1);
    assert!(
        r["error"].as_str().unwrap().contains("/nonexistent/key"),
        "{r}"
    );
}

#[test]
fn random_corruption_of_the_luks_area_never_panics() {
    let dir = TempDir::new("enc-fuzz").unwrap();
    let d = dir.path();
    let vol = Volume::create(&d.join("vol.raw"), 1 << 20);
    vol.write_random(&mut Rng(41), 0, 1 << 20);
    let img = d.join("a.qcow2");
    enc_backup(&vol.path, &img, &d.join("index"), None);
    let orig = std::fs::read(&img).unwrap();
    let k = key();
    let mut rng = Rng(42);
    // Header fields and slot descriptors (first 592 bytes of the LUKS area) and the header
    // extension area of the qcow2 header: every mutation either opens with the right master
    // key (a mutated unused field) or fails cleanly.
    // Iteration counts are left alone: valid huge counts only cost time (capped at
    // crypt::MAX_ITERATIONS) and would make this test slow, not exercise parsing.
    let iteration_field = |at: usize| {
        let rel = at.wrapping_sub(CS as usize);
        (164..168).contains(&rel) || (208..592).contains(&rel) && (rel - 208) % 48 / 4 == 1
    };
    for i in 0..16 {
        let mut bytes = orig.clone();
        for _ in 0..1 + rng.next() % 4 {
            let at = if rng.next().is_multiple_of(3) {
                (rng.next() % 256) as usize + 112
            } else {
                CS as usize + (rng.next() % 592) as usize
            };
            if !iteration_field(at) {
                bytes[at] = rng.next() as u8;
            }
        }
        let p = d.join(format!("m{i}.qcow2"));
        std::fs::write(&p, &bytes).unwrap();
        if let Ok(image) = open_keyed(&p, Some(&k)) {
            // Opened: reading must give the original data or a digest error, never a panic.
            let _ = image.is_encrypted();
        }
    }
}

#[test]
fn s3_encrypted_multipart_chain_restores_and_verifies_and_qemu_reads_it() {
    use std::io::{Read, Write};
    qemu_img();
    let moto = tvk_testkit::moto().unwrap();
    let bucket = tvk_testkit::unique_name("dm-enc");
    let mut s = std::net::TcpStream::connect(moto.addr()).unwrap();
    write!(
        s,
        "PUT /{bucket} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        moto.addr()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cfg = tvk_datamover::target::S3Config {
        bucket: bucket.clone(),
        prefix: "enc".into(),
        endpoint: Some(moto.url()),
        region: tvk_testkit::S3_REGION.into(),
        access_key_id: tvk_testkit::S3_ACCESS_KEY.into(),
        secret_access_key: tvk_testkit::S3_SECRET_KEY.into(),
        ..Default::default()
    };
    let target = Target::s3(&cfg, rt.handle().clone()).unwrap();
    let dir = TempDir::new("enc-s3").unwrap();
    let d = dir.path();
    let k = key();
    // 20 MiB of data: the image spans two 16 MiB multipart parts.
    let vol = Volume::create(&d.join("vol.raw"), 32 << 20);
    vol.write_random(&mut Rng(51), 0, 20 << 20);
    let s1 = d.join("s1.raw");
    std::fs::copy(&vol.path, &s1).unwrap();
    let req = |b: &str, parent: Option<&str>| VolumeBackupRequest {
        id: id(b),
        parent: parent.map(str::to_string),
        source: &vol.path,
        changed_blocks: None,
        progress: &NoProgress,
    };
    backup_volume_with_key(&target, req("b1", None), Some(&k)).unwrap();
    vol.write_random(&mut Rng(52), 25 << 20, 3 * CS);
    backup_volume_with_key(&target, req("b2", Some("b1")), Some(&k)).unwrap();
    for (b, expected) in [("b1", &s1), ("b2", &vol.path)] {
        let out = d.join(format!("r-{b}.raw"));
        restore_volume_to_with_key(
            &target,
            &id(b),
            Destination::open(&out).unwrap(),
            &NoProgress,
            Some(&k),
        )
        .unwrap();
        assert_files_equal(expected, &out);
    }
    let r = verify_volume_with_key(&target, &id("b2"), 100, &NoProgress, Some(&k)).unwrap();
    assert_eq!(r.clusters_checked, r.data_clusters);
    assert_eq!(r.objects_checked, 3);
    // Fetched from the bucket, the chain reads byte-identical with qemu-img and the key.
    let local = d.join("mirror");
    for key in target.list("plan-enc").unwrap() {
        let p = local.join(&key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, target.read_all(&key, 1 << 30).unwrap()).unwrap();
    }
    let kf = key_file(d, PASS);
    let raw = d.join("q.raw");
    ok(&convert_to_raw(
        &local.join("plan-enc/b2/pvc-1/data.qcow2"),
        &kf,
        &raw,
    ));
    assert_files_equal(&vol.path, &raw);
}
