#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `kubectl-tvk validate`, run as the built binary on fixture files.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use pretty_assertions::assert_eq;
use serde_json::Value;
use tvk_testkit::TempDir;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

fn kubectl_tvk(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubectl-tvk"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        pipe.write_all(input).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn valid_manifests_exit_0() {
    let output = kubectl_tvk(&["validate", "-f", &fixture("valid.yaml")], None);
    assert_eq!(text(&output.stderr), "");
    assert_eq!(
        text(&output.stdout),
        "4 documents in 1 file: 3 valid, 0 invalid, 1 skipped (not TrilioVault kinds)\n"
    );
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn invalid_manifests_print_every_problem_and_exit_1() {
    let file = fixture("invalid.yaml");
    let output = kubectl_tvk(&["validate", "-f", &file], None);
    assert_eq!(
        text(&output.stderr),
        format!(
            "{file}: document 1: Target/nfs-target: spec.nfsCredentials: required when type is NFS: nfsExport (server:/path)\n\
             {file}: document 2: Policy/retention-without-config: spec.retentionConfig: required when type is Retention\n"
        )
    );
    assert_eq!(
        text(&output.stdout),
        "2 documents in 1 file: 0 valid, 2 invalid\n"
    );
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn stdin_is_read_for_dash() {
    let input = std::fs::read(fixtures().join("invalid.yaml")).unwrap();
    let output = kubectl_tvk(&["validate", "-f", "-"], Some(&input));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with("<stdin>: document 1: Target/nfs-target: spec.nfsCredentials: "),
        "{stderr}"
    );
    assert_eq!(output.status.code(), Some(1));

    let input = std::fs::read(fixtures().join("valid.yaml")).unwrap();
    let output = kubectl_tvk(&["validate", "-f", "-"], Some(&input));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
}

#[test]
fn malformed_yaml_names_the_document_and_line() {
    let file = fixture("malformed.yaml");
    let output = kubectl_tvk(&["validate", "-f", &file], None);
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(&format!(
            "{file}: document 2: failed to parse YAML document 2 at line 13"
        )),
        "{stderr}"
    );
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn unknown_kind_is_an_error_for_that_document() {
    let file = fixture("unknown-kind.yaml");
    let output = kubectl_tvk(&["validate", "-f", &file], None);
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(&format!(
            "{file}: document 1: BackupSchedule/nightly: kind: unknown kind \"BackupSchedule\""
        )),
        "{stderr}"
    );
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn wrong_types_are_field_errors() {
    let file = fixture("wrong-types.json");
    let output = kubectl_tvk(&["validate", "-f", &file], None);
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(&format!(
            "{file}: document 1: Policy/typed-wrong: spec.retentionConfig.latest: "
        )),
        "{stderr}"
    );
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn directories_expand_to_their_manifests_and_json_output_lists_every_document() {
    let dir = TempDir::new("cli-dir").unwrap();
    for name in ["valid.yaml", "invalid.yaml"] {
        std::fs::copy(fixtures().join(name), dir.path().join(name)).unwrap();
    }
    std::fs::write(dir.path().join("README.md"), "not a manifest").unwrap();
    let nested = dir.path().join("nested");
    std::fs::create_dir(&nested).unwrap();
    std::fs::copy(
        fixtures().join("wrong-types.json"),
        nested.join("policy.JSON"),
    )
    .unwrap();

    let dir_arg = dir.path().display().to_string();
    let output = kubectl_tvk(&["validate", "-f", &dir_arg, "-o", "json"], None);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(text(&output.stderr), "");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["summary"],
        serde_json::json!({"files": 2, "documents": 6, "valid": 3, "invalid": 2, "skipped": 1, "unreadable": 0})
    );
    let results: Vec<(String, String)> = report["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_owned(),
                d["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            ("nfs-target", "invalid"),
            ("retention-without-config", "invalid"),
            ("s3-credentials", "skipped"),
            ("s3-target", "valid"),
            ("keep-a-week", "valid"),
            ("mysql-quiesce", "valid"),
        ]
        .map(|(n, r)| (n.to_owned(), r.to_owned()))
    );
    assert_eq!(
        report["documents"][0]["errors"][0]["path"],
        "spec.nfsCredentials"
    );

    // -R also reads subdirectories (the extension match ignores case).
    let output = kubectl_tvk(&["validate", "-R", "-f", &dir_arg], None);
    assert_eq!(
        text(&output.stdout),
        "7 documents in 3 files: 3 valid, 3 invalid, 1 skipped (not TrilioVault kinds)\n"
    );
}

#[test]
fn unreadable_file_exits_2_and_still_checks_the_others() {
    let output = kubectl_tvk(
        &[
            "validate",
            "-f",
            "/nonexistent/target.yaml",
            "-f",
            &fixture("invalid.yaml"),
        ],
        None,
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with("/nonexistent/target.yaml: failed to read the file: "),
        "{stderr}"
    );
    assert!(stderr.contains("spec.nfsCredentials"), "{stderr}");
    assert_eq!(
        text(&output.stdout),
        "2 documents in 2 files: 0 valid, 2 invalid, 1 file unreadable\n"
    );
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn usage_errors_exit_2() {
    let output = kubectl_tvk(&["validate"], None);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("--filename"),
        "{}",
        text(&output.stderr)
    );
    let output = kubectl_tvk(&["validate", "-f", "x.yaml", "-o", "xml"], None);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn huge_and_deeply_nested_inputs_are_refused_cleanly() {
    let dir = TempDir::new("cli-hostile").unwrap();
    let huge = dir.path().join("huge.yaml");
    let mut text_out =
        String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata:\n  blob: \"");
    text_out.push_str(&"x".repeat(9 * 1024 * 1024));
    text_out.push_str("\"\n");
    std::fs::write(&huge, text_out).unwrap();
    let output = kubectl_tvk(&["validate", "-f", &huge.display().to_string()], None);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("larger than 8388608 bytes"), "{stderr}");
    assert_eq!(output.status.code(), Some(1));

    let deep = dir.path().join("deep.yaml");
    std::fs::write(
        &deep,
        format!(
            "apiVersion: triliovault.trilio.io/v1\nkind: Hook\nmetadata: {{name: deep}}\nspec: {}{}\n",
            "[".repeat(20_000),
            "]".repeat(20_000)
        ),
    )
    .unwrap();
    let output = kubectl_tvk(&["validate", "-f", &deep.display().to_string()], None);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("nesting is deeper than"), "{stderr}");
    assert_eq!(output.status.code(), Some(1));

    // Not UTF-8.
    let binary = dir.path().join("binary.yaml");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x41]).unwrap();
    let output = kubectl_tvk(&["validate", "-f", &binary.display().to_string()], None);
    assert!(
        text(&output.stderr).contains("not UTF-8"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(1));
}

/// Every manifest in the repository's `examples/` validates through the CLI.
#[test]
fn every_example_validates() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let output = kubectl_tvk(
        &[
            "validate",
            "-R",
            "-f",
            &examples.display().to_string(),
            "-o",
            "json",
        ],
        None,
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{report:#}");
    assert_eq!(report["summary"]["invalid"], 0);
    assert!(
        report["summary"]["valid"].as_u64().unwrap() >= 20,
        "{report:#}"
    );
}
