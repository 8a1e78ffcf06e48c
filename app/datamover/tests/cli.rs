#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The `tvk-datamover` binary: JSON progress and result lines, exit codes (0 / 1 / 75), and
//! RELIABILITY.md 1: a backup killed at any moment leaves nothing committed that is not
//! complete, and the next backup succeeds with the last committed backup as parent.

mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::*;
use tvk_testkit::TempDir;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tvk-datamover"))
}

fn run(args: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
    let out = bin().args(args).output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
        })
        .collect();
    (
        out.status.code().unwrap_or(-1),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn target_args<'a>(t: &'a str, b: &'a str) -> Vec<&'a str> {
    vec![
        "--target", t, "--plan", "plan-a", "--backup", b, "--volume", "pvc-1",
    ]
}

#[test]
fn json_progress_result_line_and_exit_codes() {
    let dir = TempDir::new("cli").unwrap();
    let d = dir.path();
    let t = d.join("target");
    std::fs::create_dir(&t).unwrap();
    let t = t.to_str().unwrap();
    let vol = Volume::create(&d.join("vol.raw"), 6 << 20);
    vol.write_random(&mut Rng(1), 0, 3 << 20);
    let src = vol.path.to_str().unwrap();

    let mut args = vec!["--progress", "json", "backup"];
    args.extend(target_args(t, "b1"));
    args.extend(["--source", src]);
    let (code, lines, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let progress: Vec<_> = lines.iter().filter(|l| l["event"] == "progress").collect();
    assert!(!progress.is_empty());
    let last = progress.last().unwrap();
    assert_eq!(last["bytesDone"], last["bytesTotal"]);
    assert_eq!(last["percent"], 100.0);
    let result = lines.last().unwrap();
    assert_eq!(result["event"], "result");
    assert_eq!(result["ok"], true);
    assert_eq!(result["result"]["manifest"]["backupId"], "b1");

    // Bad input (parent not committed) → 1, with the error in the result line.
    let mut args = vec!["--progress", "none", "backup"];
    args.extend(target_args(t, "b2"));
    args.extend(["--source", src, "--parent", "nope"]);
    let (code, lines, _) = run(&args);
    assert_eq!(code, 1);
    assert_eq!(lines.last().unwrap()["ok"], false);
    assert!(
        lines.last().unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("not committed")
    );

    // Hostile ids → 1.
    let (code, _, _) = run(&[
        "--progress",
        "none",
        "restore",
        "--target",
        t,
        "--plan",
        "..",
        "--backup",
        "b1",
        "--volume",
        "pvc-1",
        "--dest",
        "/tmp/x",
    ]);
    assert_eq!(code, 1);

    // Target unreachable → 75 (retry later), credentials never printed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let out = bin()
        .args([
            "--progress",
            "none",
            "backup",
            "--target",
            "s3://bucket/prefix",
            "--s3-endpoint",
            &endpoint,
        ])
        .args(["--s3-max-retries", "1", "--s3-retry-timeout-secs", "2"])
        .args([
            "--plan", "plan-a", "--backup", "b9", "--volume", "pvc-1", "--source", src,
        ])
        .env("AWS_ACCESS_KEY_ID", "AKIDSECRETVALUE123")
        .env("AWS_SECRET_ACCESS_KEY", "verysecretkeyvalue456")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !all.contains("verysecretkeyvalue456") && !all.contains("AKIDSECRETVALUE123"),
        "{all}"
    );

    // Verify and info of the committed backup.
    let mut args = vec!["--progress", "none", "verify"];
    args.extend(target_args(t, "b1"));
    args.push("--read-data");
    let (code, lines, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(lines.last().unwrap()["result"]["clustersChecked"], 48);
}

fn committed(t: &Path, b: &str) -> bool {
    t.join(format!("plan-a/{b}/pvc-1/manifest.json")).exists()
}

#[test]
fn killed_backup_commits_nothing_and_the_next_backup_succeeds() {
    let dir = TempDir::new("kill").unwrap();
    let d = dir.path();
    let tdir = d.join("target");
    std::fs::create_dir(&tdir).unwrap();
    let t = tdir.to_str().unwrap();
    let vol = Volume::create(&d.join("vol.raw"), 512 << 20);
    vol.write_random(&mut Rng(3), 0, 192 << 20);
    let src = vol.path.to_str().unwrap();
    // A committed full backup to build on.
    let mut args = vec!["--progress", "none", "backup"];
    args.extend(target_args(t, "base"));
    args.extend(["--source", src]);
    assert_eq!(run(&args).0, 0);
    vol.write_random(&mut Rng(4), 200 << 20, 8 << 20);

    let mut interrupted = 0;
    for (n, delay_ms) in [0u64, 15, 40, 80, 150].into_iter().enumerate() {
        let b = format!("k{n}");
        let mut child = bin()
            .args([
                "--progress",
                "none",
                "backup",
                "--target",
                t,
                "--plan",
                "plan-a",
                "--backup",
                &b,
            ])
            .args(["--volume", "pvc-1", "--source", src, "--parent", "base"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        let restored = d.join("restored.raw");
        if committed(&tdir, &b) {
            // Finished before the kill: must be complete and restorable.
            let mut args = vec!["--progress", "none", "restore"];
            args.extend(target_args(t, &b));
            args.extend(["--dest", restored.to_str().unwrap()]);
            assert_eq!(run(&args).0, 0, "committed backup {b} restores");
            assert_files_equal(&vol.path, &restored);
        } else {
            assert!(!status.success());
            interrupted += 1;
            let mut args = vec!["--progress", "none", "restore"];
            args.extend(target_args(t, &b));
            args.extend(["--dest", restored.to_str().unwrap()]);
            let (code, lines, _) = run(&args);
            assert_eq!(code, 1);
            assert!(
                lines.last().unwrap()["error"]
                    .as_str()
                    .unwrap()
                    .contains("not committed")
            );
            // An incremental on the killed backup is refused: its parent must be committed.
            let mut args = vec!["--progress", "none", "backup"];
            args.extend(target_args(t, "next"));
            args.extend(["--source", src, "--parent", &b]);
            assert_eq!(run(&args).0, 1);
        }
    }
    assert!(interrupted > 0, "at least one kill landed mid-backup");
    // The retry of a killed backup commits once and restores bit-exact.
    let mut args = vec!["--progress", "none", "backup"];
    args.extend(target_args(t, "k0"));
    args.extend(["--source", src, "--parent", "base"]);
    let (code, _, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let restored = d.join("restored.raw");
    let mut args = vec!["--progress", "none", "restore"];
    args.extend(target_args(t, "k0"));
    args.extend(["--dest", restored.to_str().unwrap()]);
    assert_eq!(run(&args).0, 0);
    assert_files_equal(&vol.path, &restored);
}

#[test]
fn coalesce_killed_at_any_moment_leaves_every_backup_restorable() {
    let dir = TempDir::new("killcoalesce").unwrap();
    let d = dir.path();
    let tdir = d.join("target");
    std::fs::create_dir(&tdir).unwrap();
    let t = tdir.to_str().unwrap();
    let vol = Volume::create(&d.join("vol.raw"), 96 << 20);
    let mut rng = Rng(21);
    vol.write_random(&mut rng, 0, 64 << 20);
    let src = vol.path.to_str().unwrap();
    let mut snaps = Vec::new();
    for n in 1..=4 {
        if n > 1 {
            vol.write_random(&mut rng, (70 + n) << 20, 1 << 20);
        }
        let b = format!("b{n}");
        let mut args = vec!["--progress", "none", "backup"];
        args.extend(target_args(t, &b));
        args.extend(["--source", src]);
        let parent = format!("b{}", n - 1);
        if n > 1 {
            args.extend(["--parent", parent.as_str()]);
        }
        assert_eq!(run(&args).0, 0);
        let snap = d.join(format!("s{n}.raw"));
        std::fs::copy(&vol.path, &snap).unwrap();
        snaps.push(snap);
    }
    let has_manifest = |b: &str| {
        std::fs::read_dir(tdir.join(format!("plan-a/{b}/pvc-1")))
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("manifest"))
            })
            .unwrap_or(false)
    };
    let restore_all = || {
        for n in 1..=4 {
            let b = format!("b{n}");
            if n <= 2 && !has_manifest(&b) {
                continue; // an expired backup already removed: invisible, never half-visible
            }
            let out = d.join("r.raw");
            let mut args = vec!["--progress", "none", "restore"];
            args.extend(target_args(t, &b));
            args.extend(["--dest", out.to_str().unwrap()]);
            let (code, _, err) = run(&args);
            assert_eq!(code, 0, "{b} restores: {err}");
            assert_files_equal(&snaps[n - 1], &out);
        }
    };
    let coalesce = || {
        bin()
            .args([
                "--progress",
                "none",
                "coalesce",
                "--target",
                t,
                "--plan",
                "plan-a",
                "--volume",
                "pvc-1",
            ])
            .args(["--expire", "b1", "--expire", "b2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    for delay_ms in [5u64, 30, 80, 150] {
        let mut child = coalesce();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // Every backup still visible restores bit-exact (old or new generation).
        assert!(has_manifest("b3") && has_manifest("b4"));
        restore_all();
    }
    let status = coalesce().wait().unwrap();
    assert!(status.success(), "a rerun finishes the job");
    assert!(!has_manifest("b1") && !has_manifest("b2"));
    restore_all();
}

/// Direct I/O (`TVK_DATAMOVER_IO=direct`, the default for fsynced local images and restored
/// files) and the page cache (`TVK_DATAMOVER_IO=buffered`, the default with `--no-sync`) write byte-identical images, and each restores the volume
/// exactly — with an odd size, so the last partial cluster takes the unaligned path.
#[test]
fn direct_and_buffered_writes_give_identical_images_and_restores() {
    let dir = TempDir::new("cli-direct").unwrap();
    let d = dir.path();
    let size = (5 << 20) + 12345;
    let vol = Volume::create(&d.join("vol.raw"), size);
    let mut rng = Rng(7);
    vol.write_random(&mut rng, 0, 2 << 20);
    vol.write_zeros(3 << 20, 1 << 20);
    vol.write_random(&mut rng, (5 << 20) - 4096, 4096 + 12345);
    let src = vol.path.to_str().unwrap();
    let mut images = Vec::new();
    for mode in ["direct", "buffered"] {
        let img = d.join(format!("{mode}.qcow2"));
        let index = d.join(format!("{mode}.index"));
        let out = d.join(format!("{mode}.raw"));
        let mut c = bin();
        c.env("TVK_DATAMOVER_IO", mode);
        let st = c
            .args(["--progress", "none", "image", "full", src])
            .arg(&img)
            .arg("--index")
            .arg(&index)
            .status()
            .unwrap();
        assert!(st.success());
        let mut c = bin();
        c.env("TVK_DATAMOVER_IO", mode);
        let st = c
            .args(["--progress", "none", "image", "restore"])
            .arg(&img)
            .arg(&out)
            .arg("--index")
            .arg(&index)
            .status()
            .unwrap();
        assert!(st.success());
        assert_files_equal(&vol.path, &out);
        assert_check_clean(&img);
        images.push(img);
    }
    assert_files_equal(&images[0], &images[1]);
}
