#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Encrypted metadata end to end through the binary, as the Jobs run it: `snapshot` and
//! `commit` with `--encryption-key-file` write only sealed objects under `_metadata/`;
//! `restore-plan` without the key or with a wrong one fails naming what is needed; with the key
//! the plan and the restore go through and the restored ConfigMap holds the backed-up data.

mod common;

use std::path::{Path, PathBuf};

use common::OneBackup;

const MARKER: &str = "tvk-plaintext-marker-7f3a";

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        if p.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_sealed_and_restores_only_with_the_key() {
    let w = OneBackup::new("meta-enc", MARKER, true).await;
    let wrong = w.dir.path().join("wrong");
    std::fs::write(&wrong, "another key").unwrap();
    let location = &w.location;

    // Every stored metadata object is sealed; none holds the marker or the ConfigMap's name.
    let meta = w.target.join(location).join("_metadata");
    let files = files_under(&meta);
    assert!(files.len() >= 4, "{files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            bytes.starts_with(b"TVKSEAL1"),
            "{} is not sealed",
            f.display()
        );
        for needle in [MARKER.as_bytes(), b"settings"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds plaintext",
                f.display()
            );
        }
    }

    let keyf = w.key.to_str().unwrap();
    let wrongf = wrong.to_str().unwrap();
    let no_key = w.restore_run("restore-plan", &[]).await;
    assert_eq!(no_key.code, 1, "{}", no_key.result());
    assert!(
        no_key.error().contains("spec.encryption.encryptionSecret"),
        "{}",
        no_key.result()
    );
    let bad = w
        .restore_run("restore-plan", &["--encryption-key-file", wrongf])
        .await;
    assert_eq!(bad.code, 1, "{}", bad.result());
    assert!(bad.error().contains("does not open"), "{}", bad.result());
    let plan = w
        .restore_run("restore-plan", &["--encryption-key-file", keyf])
        .await;
    assert_eq!(plan.code, 0, "{}\n{}", plan.result(), plan.stderr);
    let restored = w
        .restore_run("restore", &["--encryption-key-file", keyf])
        .await;
    assert_eq!(
        restored.code,
        0,
        "{}\n{}",
        restored.result(),
        restored.stderr
    );
    let cm = w
        .server
        .get("v1", "ConfigMap", Some("copy"), "settings")
        .unwrap();
    assert_eq!(cm["data"]["token"], MARKER);
}
