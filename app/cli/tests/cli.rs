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

#[test]
fn mirror_help_lists_its_sources_and_destination() {
    let output = kubectl_tvk(&["mirror", "--help"], None);
    assert_eq!(output.status.code(), Some(0));
    let help = text(&output.stdout);
    for flag in [
        "--catalog",
        "--config",
        "--from",
        "--output-dir",
        "DESTINATION",
    ] {
        assert!(help.contains(flag), "{flag} missing from\n{help}");
    }
}

#[test]
fn mirror_without_a_source_is_a_usage_error() {
    let dir = TempDir::new("cli-mirror-usage").unwrap();
    let destination = format!("dir:{}", dir.path().join("layout").display());
    let output = kubectl_tvk(&["mirror", &destination], None);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("exactly one of --catalog, --config or --from"),
        "{stderr}"
    );
}

/// A catalog whose bundle image is not in the (real, empty) source registry: the run fails
/// with exit 1, names the image, and writes no cluster resources.
#[test]
fn mirror_of_a_missing_image_fails_naming_it() {
    let registry = tvk_testkit::private_registry().unwrap();
    let image = format!("{}/tvk/bundle@sha256:{}", registry.addr(), "ab".repeat(32));
    let catalog = TempDir::new("cli-mirror-fbc").unwrap();
    std::fs::create_dir(catalog.path().join("tvk")).unwrap();
    std::fs::write(
        catalog.path().join("tvk/catalog.yaml"),
        format!(
            "schema: olm.package\nname: tvk\ndefaultChannel: stable\n---\nschema: olm.channel\n\
             name: stable\npackage: tvk\nentries:\n- name: tvk.v1.0.0\n---\nschema: olm.bundle\n\
             name: tvk.v1.0.0\npackage: tvk\nimage: {image}\nrelatedImages:\n- {{name: bundle, \
             image: {image}}}\nproperties:\n- {{type: olm.package, value: {{packageName: tvk, \
             version: 1.0.0}}}}\n"
        ),
    )
    .unwrap();
    let out = TempDir::new("cli-mirror-out").unwrap();
    let layout = out.path().join("layout");
    let resources = out.path().join("resources");
    let output = kubectl_tvk(
        &[
            "mirror",
            "--catalog",
            &catalog.path().display().to_string(),
            "--src-tls-verify=false",
            "--retry-times",
            "1",
            "--output-dir",
            &resources.display().to_string(),
            &format!("dir:{}", layout.display()),
        ],
        None,
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("tvk/bundle@sha256:abab"), "{stderr}");
    assert!(
        stderr.contains("failed to mirror 1 of 1 images"),
        "{stderr}"
    );
    assert!(
        !resources.exists() || std::fs::read_dir(&resources).unwrap().next().is_none(),
        "no cluster resources may be written after a failed run"
    );
}

fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(bytes);
    format!(
        "sha256:{}",
        hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Pushes a one-layer OCI image to `registry` over the distribution API; returns its manifest
/// digest.
async fn push_test_image(registry: &str, repository: &str) -> String {
    let client = reqwest::Client::new();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let layer = format!("layer of {repository} {}", tvk_testkit::unique_name("x")).into_bytes();
    for blob in [&config, &layer] {
        let started = client
            .post(format!("http://{registry}/v2/{repository}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(started.status().as_u16(), 202);
        let location = started.headers()["location"].to_str().unwrap().to_owned();
        let url = if location.starts_with("http") {
            location
        } else {
            format!("http://{registry}{location}")
        };
        let separator = if url.contains('?') { '&' } else { '?' };
        let put = client
            .put(format!("{url}{separator}digest={}", sha256_digest(blob)))
            .header("content-type", "application/octet-stream")
            .body(blob.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status().as_u16(), 201);
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256_digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256_digest(&layer), "size": layer.len()}],
    }))
    .unwrap();
    let digest = sha256_digest(&manifest);
    let put = client
        .put(format!(
            "http://{registry}/v2/{repository}/manifests/{digest}"
        ))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 201);
    digest
}

/// The subcommand end to end: a catalog whose bundle is in a real registry is mirrored into an
/// OCI layout, the cluster resources are written, and a re-run finds everything present.
#[test]
fn mirror_copies_a_catalog_image_into_a_layout() {
    let registry = tvk_testkit::private_registry().unwrap();
    let addr = registry.addr().to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let digest = runtime.block_on(push_test_image(&addr, "tvk/bundle"));
    let image = format!("{addr}/tvk/bundle@{digest}");
    let catalog = TempDir::new("cli-mirror-ok-fbc").unwrap();
    std::fs::create_dir(catalog.path().join("tvk")).unwrap();
    std::fs::write(
        catalog.path().join("tvk/catalog.yaml"),
        format!(
            "schema: olm.package\nname: tvk\ndefaultChannel: stable\n---\nschema: olm.channel\n\
             name: stable\npackage: tvk\nentries:\n- name: tvk.v1.0.0\n---\nschema: olm.bundle\n\
             name: tvk.v1.0.0\npackage: tvk\nimage: {image}\nrelatedImages:\n- {{name: bundle, \
             image: {image}}}\nproperties:\n- {{type: olm.package, value: {{packageName: tvk, \
             version: 1.0.0}}}}\n"
        ),
    )
    .unwrap();
    let out = TempDir::new("cli-mirror-ok-out").unwrap();
    let layout = out.path().join("layout");
    let resources = out.path().join("resources");
    let args = [
        "mirror".to_owned(),
        "--catalog".to_owned(),
        catalog.path().display().to_string(),
        "--src-tls-verify=false".to_owned(),
        "--output-dir".to_owned(),
        resources.display().to_string(),
        format!("dir:{}", layout.display()),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = kubectl_tvk(&args, None);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(
        stdout.starts_with("1 images (0 already present); blobs: 2 copied"),
        "{stdout}"
    );
    let (_, hex) = digest.split_once(':').unwrap();
    assert!(layout.join("blobs/sha256").join(hex).is_file());
    assert!(std::fs::read_dir(&resources).unwrap().next().is_some());

    // A re-run copies nothing: every blob is already in the layout.
    let output = kubectl_tvk(&args, None);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("blobs: 0 copied, 2 skipped"), "{stdout}");
}

#[test]
fn list_documents_are_checked_item_by_item() {
    let file = fixture("list.yaml");
    let output = kubectl_tvk(&["validate", "-f", &file], None);
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(&format!(
            "{file}: document 1: items[1]: Policy/bad-schedule: spec.scheduleConfig.schedule[0]: "
        )),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(
        text(&output.stdout),
        "2 documents in 1 file: 1 valid, 1 invalid\n"
    );
    assert_eq!(output.status.code(), Some(1));
}

/// The manager's TrilioVaultManager is validated with the same rules as its own webhook:
/// a valid one passes, one without the required `applicationScope` is refused by field path.
#[test]
fn trilio_vault_manager_is_validated() {
    let valid = b"apiVersion: triliovault.trilio.io/v1\nkind: TrilioVaultManager\nmetadata: {name: tvm, namespace: trilio-system}\nspec: {applicationScope: Namespaced, tvkInstanceName: one}\n";
    let output = kubectl_tvk(&["validate", "-f", "-"], Some(valid));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("1 valid"),
        "{}",
        text(&output.stdout)
    );

    let invalid = b"apiVersion: triliovault.trilio.io/v1\nkind: TrilioVaultManager\nmetadata: {name: tvm, namespace: trilio-system}\nspec: {tvkInstanceName: one}\n";
    let output = kubectl_tvk(&["validate", "-f", "-"], Some(invalid));
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("TrilioVaultManager/tvm") && stderr.contains("spec.applicationScope"),
        "{stderr}"
    );
}

/// A minimal HTTP forward proxy (absolute-form requests and CONNECT tunnels) that records the
/// target of every request it relays, to prove a client went through it.
struct ForwardProxy {
    addr: std::net::SocketAddr,
    targets: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn start_forward_proxy() -> ForwardProxy {
    use std::{
        io::{BufRead, BufReader},
        net::{TcpListener, TcpStream},
        sync::{Arc, Mutex},
    };
    fn pipe(mut from: TcpStream, mut to: TcpStream) {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    }
    fn relay(client: TcpStream, targets: Arc<Mutex<Vec<String>>>) {
        let mut reader = BufReader::new(client.try_clone().unwrap());
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            head.extend_from_slice(line.as_bytes());
            if line == "\r\n" {
                break;
            }
        }
        let head_text = String::from_utf8_lossy(&head).to_string();
        let mut words = head_text.split_whitespace();
        let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        targets.lock().unwrap().push(format!("{method} {target}"));
        let mut client_w = client.try_clone().unwrap();
        let upstream = if method == "CONNECT" {
            let upstream = TcpStream::connect(target).unwrap();
            client_w
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .unwrap();
            upstream
        } else {
            let authority = target
                .strip_prefix("http://")
                .and_then(|rest| rest.split('/').next())
                .unwrap_or_else(|| panic!("not an absolute-form request: {head_text}"));
            let mut upstream = TcpStream::connect(authority).unwrap();
            upstream.write_all(&head).unwrap();
            upstream
        };
        // Bytes the reader buffered past the head belong to the body.
        let buffered = reader.buffer().to_vec();
        let mut upstream_w = upstream.try_clone().unwrap();
        upstream_w.write_all(&buffered).unwrap();
        let back = std::thread::spawn(move || pipe(upstream, client_w));
        pipe(reader.into_inner(), upstream_w);
        let _ = back.join();
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let targets = Arc::new(Mutex::new(Vec::new()));
    let shared = targets.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let targets = shared.clone();
            std::thread::spawn(move || relay(stream, targets));
        }
    });
    ForwardProxy { addr, targets }
}

/// Proxy-aware (OLM injects HTTP_PROXY / HTTPS_PROXY / NO_PROXY): `kubectl-tvk mirror` sends
/// every registry request through the proxy named in its environment — and fails when that
/// proxy is unreachable, so the requests cannot have gone around it.
#[test]
fn mirror_goes_through_the_proxy_named_in_its_environment() {
    let registry = tvk_testkit::private_registry().unwrap();
    let addr = registry.addr().to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let digest = runtime.block_on(push_test_image(&addr, "tvk/proxied"));
    let image = format!("{addr}/tvk/proxied@{digest}");
    let catalog = TempDir::new("cli-mirror-proxy-fbc").unwrap();
    std::fs::create_dir(catalog.path().join("tvk")).unwrap();
    std::fs::write(
        catalog.path().join("tvk/catalog.yaml"),
        format!(
            "schema: olm.package\nname: tvk\ndefaultChannel: stable\n---\nschema: olm.channel\n\
             name: stable\npackage: tvk\nentries:\n- name: tvk.v1.0.0\n---\nschema: olm.bundle\n\
             name: tvk.v1.0.0\npackage: tvk\nimage: {image}\nrelatedImages: []\n\
             properties:\n- {{type: olm.package, value: {{packageName: tvk, version: 1.0.0}}}}\n"
        ),
    )
    .unwrap();
    let out = TempDir::new("cli-mirror-proxy-out").unwrap();
    let run = |proxy: &str, layout: &str| {
        Command::new(env!("CARGO_BIN_EXE_kubectl-tvk"))
            .args(["mirror", "--catalog"])
            .arg(catalog.path())
            .args(["--src-tls-verify=false", "--output-dir"])
            .arg(out.path().join("resources"))
            .arg(format!("dir:{}", out.path().join(layout).display()))
            .env("HTTP_PROXY", proxy)
            .env("HTTPS_PROXY", proxy)
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .output()
            .unwrap()
    };

    let proxy = start_forward_proxy();
    let output = run(&format!("http://{}", proxy.addr), "layout");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    // The proxy records the first request of each connection (later ones on a kept-alive
    // connection are relayed without parsing): the registry was reached through it.
    let targets = proxy.targets.lock().unwrap().clone();
    assert!(
        targets
            .iter()
            .any(|t| t.starts_with(&format!("GET http://{addr}/v2/"))),
        "no registry request went through the proxy: {targets:?}"
    );
    assert!(
        targets.iter().all(|t| t.contains(&addr)),
        "the proxy relayed something else: {targets:?}"
    );
    let (_, hex) = digest.split_once(':').unwrap();
    assert!(out.path().join("layout/blobs/sha256").join(hex).is_file());

    // A proxy that is not there: the mirror fails instead of going around it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let output = run(&dead, "layout-2");
    assert_ne!(output.status.code(), Some(0), "{}", text(&output.stdout));
}
