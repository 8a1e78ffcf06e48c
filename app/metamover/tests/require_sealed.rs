#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `--require-sealed` through the binary: a backup whose metadata is plain (as a target writer
//! could swap in for an encrypted one) is refused by `restore-plan` and `restore` given a key
//! and the flag, with an error naming the object; given the key alone it is read as today.

mod common;

use common::{OneBackup, Run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_metadata_is_refused_when_the_backup_must_be_sealed() {
    // A plain backup (no key): what a writer to the target could put in an encrypted one's place.
    let w = OneBackup::new("meta-require-sealed", "x", false).await;
    let commit_json = w.target.join(&w.location).join("_metadata/commit.json");
    assert!(
        !std::fs::read(&commit_json)
            .unwrap()
            .starts_with(b"TVKSEAL1")
    );
    let keyf = w.key.to_str().unwrap();
    let with_key = ["--encryption-key-file", keyf];
    let sealed = ["--encryption-key-file", keyf, "--require-sealed"];
    let commit_key = format!("{}/_metadata/commit.json", w.location);
    let refused = |run: &Run, cmd: &str| {
        assert_eq!(run.code, 1, "{cmd}: {}", run.result());
        let error = run.error();
        assert!(error.contains(&commit_key), "{cmd}: {error}");
        assert!(error.contains("not encrypted"), "{cmd}: {error}");
    };
    refused(
        &w.restore_run("restore-plan", &sealed).await,
        "restore-plan",
    );
    // The flag needs a key (it says the backup is encrypted).
    let no_key = w.restore_run("restore-plan", &["--require-sealed"]).await;
    assert_eq!(no_key.code, 2, "{}", no_key.stderr);
    assert!(
        no_key.stderr.contains("--encryption-key-file"),
        "{}",
        no_key.stderr
    );
    // Without the flag, a key given for a plain backup reads it as before.
    let plan = w.restore_run("restore-plan", &with_key).await;
    assert_eq!(plan.code, 0, "{}\n{}", plan.result(), plan.stderr);
    // `restore` reads the backup again: refused with the flag, nothing restored.
    refused(&w.restore_run("restore", &sealed).await, "restore");
    assert!(
        w.server
            .get("v1", "ConfigMap", Some("copy"), "settings")
            .is_none()
    );
    let restored = w.restore_run("restore", &with_key).await;
    assert_eq!(
        restored.code,
        0,
        "{}\n{}",
        restored.result(),
        restored.stderr
    );
    assert_eq!(
        w.server
            .get("v1", "ConfigMap", Some("copy"), "settings")
            .unwrap()["data"]["token"],
        "x"
    );
}
