#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Outputs that are not a plain new file. Restore onto a block device (a loop device over a
//! file full of old data) and in place onto an existing file, and restore and backup onto a
//! nearly full filesystem (a small tmpfs). Onto a device or an existing file: every cluster the chain reads as zero must read as zero afterwards,
//! zeroed by the device/filesystem (`fallocate` ZERO_RANGE = the kernel's BLKZEROOUT on a
//! block device, PUNCH_HOLE on a file) or, where that is unsupported, by writing zeros.

mod common;

use std::{path::Path, process::Command};

use common::*;
use tvk_datamover::{
    index::IndexReader,
    progress::NoProgress,
    restore::{Chain, Destination, RestoreJob, RestoreSummary, run_restore},
};
use tvk_testkit::TempDir;

/// A 6 MiB volume: data, a written-zero run and holes, backed up as one full image.
fn backed_up_volume(d: &Path) -> (Volume, std::path::PathBuf, std::path::PathBuf) {
    let vol = Volume::create(&d.join("vol.raw"), 6 << 20);
    let mut rng = Rng(7);
    vol.write_random(&mut rng, 0, 2 << 20);
    vol.write_zeros(2 << 20, 1 << 20);
    vol.write_random(&mut rng, (5 << 20) + CS, CS);
    let img = d.join("full.qcow2");
    let idx = d.join("full.index");
    backup(&vol.path, &img, &idx, None, None);
    (vol, img, idx)
}

fn restore_into(img: &Path, idx: &Path, dest: &Destination) -> RestoreSummary {
    try_restore_into(img, idx, dest).unwrap()
}

fn try_restore_into(
    img: &Path,
    idx: &Path,
    dest: &Destination,
) -> tvk_datamover::Result<RestoreSummary> {
    let chain = Chain::new(vec![open_image(img)]).unwrap();
    let index = IndexReader::new("index", std::fs::File::open(idx).unwrap()).unwrap();
    run_restore(
        RestoreJob {
            chain: &chain,
            index: Some(index),
            backup_id: "b1",
            progress: &NoProgress,
            durable: true,
        },
        dest,
    )
}

/// `len` bytes of `p` from the start.
fn head(p: &Path, len: usize) -> Vec<u8> {
    let mut v = std::fs::read(p).unwrap();
    v.truncate(len);
    v
}

/// A file of `size` bytes of random garbage (a used disk).
fn garbage_file(p: &Path, size: u64) {
    let f = Volume::create(p, size);
    f.write_random(&mut Rng(99), 0, size);
}

/// A loop device over `backing`, detached on drop.
struct LoopDevice(String);

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// `None` where no loop device can be created: skipped loudly locally, a failure under CI
/// (`tvk_testkit::skip_unless_ci`).
fn loop_device(backing: &Path, test: &str) -> Option<LoopDevice> {
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(backing)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(LoopDevice(
            String::from_utf8(o.stdout).unwrap().trim().to_string(),
        )),
        other => {
            let reason = format!(
                "cannot create a loop device here ({other:?}); needs root and /dev/loop-control"
            );
            tvk_testkit::skip_unless_ci(test, &reason).unwrap();
            None
        }
    }
}

#[test]
fn restore_onto_a_loop_device_zeroes_old_data_through_the_device() {
    let dir = TempDir::new("blockdev").unwrap();
    let d = dir.path();
    let (vol, img, idx) = backed_up_volume(d);
    // The device is larger than the volume: bytes past the volume are left alone.
    let backing = d.join("device.img");
    garbage_file(&backing, 8 << 20);
    let before = std::fs::read(&backing).unwrap();
    let Some(dev) = loop_device(&backing, "restore_onto_a_loop_device") else {
        return;
    };
    let loopdev = dev.0.clone();
    let dest = Destination::open(Path::new(&loopdev)).unwrap();
    let s = restore_into(&img, &idx, &dest);
    drop(dest);
    let expected = std::fs::read(&vol.path).unwrap();
    let got = head(Path::new(&loopdev), 8 << 20);
    assert!(
        got[..6 << 20] == expected[..],
        "restored device differs from the volume"
    );
    assert!(
        got[6 << 20..] == before[6 << 20..],
        "bytes past the volume were touched"
    );
    // Zeros came from the device (ZERO_RANGE), not from 3+ MiB of written zeros.
    assert!(s.bytes_zeroed_offloaded >= 3 << 20, "{s:?}");
    assert_eq!(s.bytes_zeros_written, 0, "{s:?}");
}

#[test]
fn restore_in_place_onto_a_used_file_punches_holes_where_zeros_belong() {
    let dir = TempDir::new("inplace").unwrap();
    let d = dir.path();
    let (vol, img, idx) = backed_up_volume(d);
    let dev = d.join("used.img");
    garbage_file(&dev, 6 << 20);
    let dest = Destination::open_in_place(&dev).unwrap();
    let s = restore_into(&img, &idx, &dest);
    assert_files_equal(&vol.path, &dev);
    assert!(s.bytes_zeroed_offloaded >= 3 << 20, "{s:?}");
    assert_eq!(s.bytes_zeros_written, 0, "{s:?}");
    // Punched, not written: the file now occupies less than its size.
    assert!(allocated(&dev) < 6 << 20);
}

#[test]
fn restore_to_a_new_file_allocates_the_data_and_leaves_holes() {
    // The restore allocates each range's data ahead of writing it: only the data, never
    // the holes or the zero run between.
    let dir = TempDir::new("sparse-out").unwrap();
    let d = dir.path();
    let (vol, img, idx) = backed_up_volume(d);
    let out = d.join("out.raw");
    let s = restore_into(&img, &idx, &Destination::open(&out).unwrap());
    assert_files_equal(&vol.path, &out);
    assert_eq!(s.bytes_written, (2 << 20) + CS, "{s:?}");
    let got = allocated(&out);
    assert!(
        ((2 << 20) + CS..=(2 << 20) + 2 * CS).contains(&got),
        "{got} bytes allocated for {} bytes of data in a 6 MiB volume",
        (2 << 20) + CS
    );
}

/// A small tmpfs, unmounted on drop.
struct SmallFs(std::path::PathBuf);

impl SmallFs {
    /// Mounts a tmpfs of `size` (mount's syntax, "1m") on `dir`; `None` where that is not
    /// possible: skipped loudly locally, a failure under CI.
    fn mount(dir: &Path, size: &str, test: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tvk-test-small",
            ])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self(dir.to_path_buf())),
            other => {
                let reason = format!("cannot mount a {size} tmpfs here ({other:?}); needs root");
                tvk_testkit::skip_unless_ci(test, &reason).unwrap();
                None
            }
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn assert_no_space(err: &tvk_datamover::Error, file: &str) {
    assert_eq!(
        err.kind(),
        tvk_datamover::error::ErrorKind::NoSpace,
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains(file) && msg.contains("no room for"), "{msg}");
}

#[test]
fn restore_onto_a_full_filesystem_fails_before_writing_naming_the_space() {
    let dir = TempDir::new("nospace").unwrap();
    let d = dir.path();
    let (_vol, img, idx) = backed_up_volume(d);
    let mnt = d.join("small");
    let Some(_fs) = SmallFs::mount(&mnt, "1m", "restore_onto_a_full_filesystem") else {
        return;
    };
    let out = mnt.join("out.raw");
    let err = try_restore_into(&img, &idx, &Destination::open(&out).unwrap()).unwrap_err();
    assert_no_space(&err, "out.raw");
    // Refused when the range was allocated, before its data was written.
    assert_eq!(allocated(&out), 0, "{err}");
}

#[test]
fn backup_near_a_full_filesystem_allocates_only_what_it_writes() {
    // The image sink allocates ahead of its writes (up to 64 MiB); with 4 MiB free that
    // cannot be done, and the backup still fits by allocating what each piece needs. With
    // more data than room it fails with NoSpace naming the image.
    let dir = TempDir::new("backup-nospace").unwrap();
    let d = dir.path();
    let (vol, _img, _idx) = backed_up_volume(d);
    let mnt = d.join("small");
    let Some(_fs) = SmallFs::mount(&mnt, "4m", "backup_near_a_full_filesystem") else {
        return;
    };
    let img = mnt.join("full.qcow2");
    backup(&vol.path, &img, &mnt.join("full.index"), None, None);
    assert_check_clean(&img);
    assert_same(&vol.path, &img);
    let big = Volume::create(&d.join("big.raw"), 8 << 20);
    big.write_random(&mut Rng(3), 0, 6 << 20);
    let err = try_backup(
        &big.path,
        &mnt.join("big.qcow2"),
        &mnt.join("big.index"),
        None,
        None,
    )
    .unwrap_err();
    assert_no_space(&err, "big.qcow2");
    for left in ["big.qcow2", "big.qcow2.partial"] {
        assert!(!mnt.join(left).exists(), "a failed backup left {left}");
    }
}

#[test]
fn where_zeroing_is_not_offloaded_zeros_are_written() {
    let dir = TempDir::new("zerofallback").unwrap();
    let d = dir.path();
    let (vol, img, idx) = backed_up_volume(d);
    let dev = d.join("used.img");
    garbage_file(&dev, 6 << 20);
    let dest = Destination::open_in_place(&dev)
        .unwrap()
        .without_offloaded_zeroing();
    let s = restore_into(&img, &idx, &dest);
    assert_files_equal(&vol.path, &dev);
    assert_eq!(s.bytes_zeroed_offloaded, 0, "{s:?}");
    assert!(s.bytes_zeros_written >= 3 << 20, "{s:?}");
}

#[test]
fn cli_restore_onto_a_loop_device_reports_how_zeros_were_made() {
    let dir = TempDir::new("blockcli").unwrap();
    let d = dir.path();
    let vol = Volume::create(&d.join("vol.raw"), 4 << 20);
    vol.write_random(&mut Rng(3), CS, 1 << 20);
    let t = d.join("target");
    std::fs::create_dir(&t).unwrap();
    let backing = d.join("device.img");
    garbage_file(&backing, 4 << 20);
    let Some(dev) = loop_device(&backing, "cli_restore_onto_a_loop_device") else {
        return;
    };
    let ids = [
        "--target",
        t.to_str().unwrap(),
        "--plan",
        "p",
        "--backup",
        "b1",
        "--volume",
        "v",
    ];
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tvk-datamover"))
            .args(["--progress", "none"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let last = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap()
            .to_string();
        serde_json::from_str::<serde_json::Value>(&last).unwrap()
    };
    let mut args = vec!["backup"];
    args.extend(ids);
    args.extend(["--source", vol.path.to_str().unwrap()]);
    run(&args);
    let mut args = vec!["restore"];
    args.extend(ids);
    args.extend(["--dest", &dev.0]);
    let result = run(&args);
    let r = &result["result"];
    assert_eq!(r["bytesWritten"], 1 << 20, "{result}");
    assert_eq!(r["bytesZeroedOffloaded"], 3 << 20, "{result}");
    assert_eq!(r["bytesZerosWritten"], 0, "{result}");
    assert!(head(Path::new(&dev.0), 4 << 20) == std::fs::read(&vol.path).unwrap());
}
