#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! End-to-end packaging test (issue #4, item 7), part of the normal test command: builds every
//! image with `cargo xtask images` into a private docker-registry, generates the bundles, the
//! catalog and the plain install with those real digests (into a temporary directory, never
//! the repository), builds and pushes the bundle and catalog images, then checks with `skopeo`
//! that every digest those files reference exists in the registry, that each image is what
//! OpenShift certification expects (labels, non-root user, /licenses) and that every binary in
//! an image is statically linked. Then (issue #5) the `kubectl-tvk` binary taken out of its own
//! image mirrors the pushed catalog — catalog, both bundles, every related image — into a second
//! registry directly and through an OCI layout on disk, and a re-run copies nothing.
//!
//! `hack/test.sh` builds the static binaries before the test run (`cargo xtask images
//! --build-only`), so here the build step is a no-op check; alone, this test builds them.

use std::{
    collections::BTreeSet,
    io::Read,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tvk_testkit::{TempDir, private_registry, require_tool};

const IMAGES: &[&str] = &[
    "tvk-manager",
    "tvk-control-plane",
    "tvk-webhook",
    "tvk-datamover",
    "tvk-metamover",
    "kubectl-tvk",
];

fn skopeo(args: &[&str]) -> Result<Vec<u8>, String> {
    let output = Command::new("skopeo")
        .args(args)
        .output()
        .map_err(|e| format!("failed to run skopeo: {e}"))?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(format!(
            "skopeo {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn shipped_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            shipped_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn images_bundles_and_catalog_are_pushed_and_every_shipped_digest_resolves() {
    for (tool, package) in [
        ("buildah", "buildah"),
        ("skopeo", "skopeo"),
        ("docker-registry", "docker-registry"),
        ("file", "file"),
    ] {
        require_tool(tool, &format!("apt-get install {package}")).unwrap();
    }
    let registry = private_registry().unwrap();
    let namespace = format!("{}/tvk-e2e", registry.addr());
    let work = TempDir::new("images-e2e").unwrap();
    let out = work.path().join("repo");
    let lock_path = work.path().join("images.lock.json");
    let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["images", "--registry", &namespace, "--lock"])
        .arg(&lock_path)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "cargo xtask images failed: {status}");
    let lock: Value = serde_json::from_str(&std::fs::read_to_string(&lock_path).unwrap()).unwrap();
    assert_eq!(lock["registry"], namespace.as_str());

    // Every digest reference in what ships; none by tag.
    let reference = regex::Regex::new(r"[A-Za-z0-9.:/_-]+@sha256:[0-9a-f]{64}").unwrap();
    let image_line =
        regex::Regex::new(r#"(?m)^\s*-?\s*"?(image|value|containerImage)"?:\s*"?([^"\s]+)"#)
            .unwrap();
    let mut files = Vec::new();
    for dir in ["bundle", "bundle-application", "catalog", "deploy"] {
        shipped_files(&out.join(dir), &mut files);
    }
    let mut references = BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for m in reference.find_iter(&text) {
            references.insert(m.as_str().to_string());
        }
        for captures in image_line.captures_iter(&text) {
            let value = &captures[2];
            if value.starts_with(&namespace) {
                assert!(
                    value.contains("@sha256:"),
                    "{} references {value} by tag",
                    file.display()
                );
            }
        }
    }
    for name in IMAGES.iter().filter(|n| **n != "kubectl-tvk") {
        assert!(
            references
                .iter()
                .any(|r| r.starts_with(&format!("{namespace}/{name}@"))),
            "{name} is referenced nowhere in the shipped files"
        );
    }
    for bundle in ["tvk-operator-bundle", "tvk-application-bundle"] {
        assert!(
            references
                .iter()
                .any(|r| r.starts_with(&format!("{namespace}/{bundle}@"))),
            "the catalog does not reference {bundle}"
        );
    }
    // Each reference exists in the registry, and its manifest hashes to the digest.
    for r in &references {
        assert!(r.starts_with(&namespace), "{r} is not in the test registry");
        let raw = skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{r}"),
        ])
        .unwrap_or_else(|e| panic!("{r} does not exist in the registry: {e}"));
        let digest = format!("sha256:{:x}", Sha256::digest(&raw));
        assert!(
            r.ends_with(&digest),
            "{r}: the registry serves a manifest with digest {digest}"
        );
    }
    let catalog = format!(
        "{namespace}/tvk-catalog@{}",
        lock["catalog"]["tvk-catalog"].as_str().unwrap()
    );
    let config: Value = serde_json::from_slice(
        &skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--config",
            &format!("docker://{catalog}"),
        ])
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        config["config"]["Labels"]["operators.operatorframework.io.index.configs.v1"],
        "/configs"
    );

    // The compressed operator and application bundles stay under 1 MiB.
    for bundle in ["tvk-operator-bundle", "tvk-application-bundle"] {
        let r = format!(
            "{namespace}/{bundle}@{}",
            lock["bundles"][bundle].as_str().unwrap()
        );
        let inspect: Value = serde_json::from_slice(
            &skopeo(&["inspect", "--tls-verify=false", &format!("docker://{r}")]).unwrap(),
        )
        .unwrap();
        let manifest: Value = serde_json::from_slice(
            &skopeo(&[
                "inspect",
                "--tls-verify=false",
                "--raw",
                &format!("docker://{r}"),
            ])
            .unwrap(),
        )
        .unwrap();
        let size: u64 = manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["size"].as_u64().unwrap())
            .sum();
        assert!(size > 0, "{bundle}: no layers");
        assert!(
            size < 1 << 20,
            "{bundle} is {size} bytes compressed (limit 1 MiB)"
        );
        assert_eq!(
            inspect["Labels"]["operators.operatorframework.io.bundle.mediatype.v1"],
            "registry+v1"
        );
    }

    // Every image: certification labels, numeric non-root user, /licenses, a static binary.
    for name in IMAGES {
        let r = format!(
            "{namespace}/{name}@{}",
            lock["images"][name].as_str().unwrap()
        );
        let config: Value = serde_json::from_slice(
            &skopeo(&[
                "inspect",
                "--tls-verify=false",
                "--config",
                &format!("docker://{r}"),
            ])
            .unwrap(),
        )
        .unwrap();
        let labels = &config["config"]["Labels"];
        for label in [
            "name",
            "vendor",
            "version",
            "release",
            "summary",
            "description",
        ] {
            assert!(
                labels[label].as_str().is_some_and(|v| !v.is_empty()),
                "{name}: label {label} missing"
            );
        }
        assert_eq!(labels["name"], *name);
        assert_eq!(config["config"]["User"], "65532:65532", "{name}");
        let layout = work.path().join(format!("oci-{name}"));
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{r}"),
            &format!("dir:{}", layout.display()),
        ])
        .unwrap();
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(layout.join("manifest.json")).unwrap()).unwrap();
        let mut found = BTreeSet::new();
        for layer in manifest["layers"].as_array().unwrap() {
            let digest = layer["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:");
            let blob = std::fs::File::open(layout.join(digest)).unwrap();
            let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(blob));
            for entry in archive.entries().unwrap() {
                let mut entry = entry.unwrap();
                let path = entry
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .trim_start_matches("./")
                    .to_string();
                if path == format!("usr/local/bin/{name}") {
                    let binary = work.path().join(format!("bin-{name}"));
                    let mut bytes = Vec::new();
                    entry.read_to_end(&mut bytes).unwrap();
                    std::fs::write(&binary, bytes).unwrap();
                    let description = Command::new("file")
                        .arg("-b")
                        .arg(&binary)
                        .output()
                        .unwrap();
                    let description = String::from_utf8_lossy(&description.stdout).to_string();
                    assert!(
                        description.contains("statically linked")
                            || description.contains("static-pie linked"),
                        "{name}: the image's binary is not static: {description}"
                    );
                }
                found.insert(path);
            }
        }
        for path in ["licenses/LICENSE", "etc/ssl/certs/ca-certificates.crt"] {
            assert!(
                found.contains(path),
                "{name}: no {path} in the image ({found:?})"
            );
        }
        assert!(
            found.contains(&format!("usr/local/bin/{name}")),
            "{name}: no binary"
        );
        assert!(
            !found.iter().any(|p| p == "bin/sh"),
            "{name}: a shell in the image"
        );
    }

    // Issue #5 on this project's own images: the shipped kubectl-tvk (the binary out of its
    // image) mirrors the catalog just pushed — catalog, both bundles, every related image —
    // into a second registry directly and through an OCI layout on disk.
    let kubectl_tvk = work.path().join("bin-kubectl-tvk");
    std::fs::set_permissions(&kubectl_tvk, std::fs::Permissions::from_mode(0o755)).unwrap();
    mirror_the_project(&kubectl_tvk, &namespace, &lock, work.path());
}

/// Runs the shipped `kubectl-tvk mirror`; returns its stdout, failing the test on an error.
fn kubectl_tvk_mirror(binary: &Path, args: &[String]) -> String {
    let output = Command::new(binary)
        .arg("mirror")
        .args(args)
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kubectl-tvk mirror {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// Every image the catalog names, by `name@digest` relative to the source namespace: the
/// catalog, both bundles and the images of their `relatedImages` (kubectl-tvk is not one).
fn expected_mirror_set(lock: &Value) -> Vec<(String, String)> {
    let mut set = vec![(
        "tvk-catalog".to_string(),
        lock["catalog"]["tvk-catalog"].as_str().unwrap().to_string(),
    )];
    for bundle in ["tvk-operator-bundle", "tvk-application-bundle"] {
        set.push((
            bundle.into(),
            lock["bundles"][bundle].as_str().unwrap().into(),
        ));
    }
    for name in IMAGES.iter().filter(|n| **n != "kubectl-tvk") {
        set.push((
            name.to_string(),
            lock["images"][name].as_str().unwrap().into(),
        ));
    }
    set
}

/// Every expected image is in `dest` (`host:port/namespace`) under its source path, and the
/// manifest skopeo reads there hashes to the digest.
fn assert_mirrored(dest: &str, source_namespace: &str, set: &[(String, String)]) {
    let path = source_namespace.split_once('/').unwrap().1;
    for (name, digest) in set {
        let r = format!("{dest}/{path}/{name}@{digest}");
        let raw = skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{r}"),
        ])
        .unwrap_or_else(|e| panic!("{r} was not mirrored: {e}"));
        assert_eq!(
            format!("sha256:{:x}", Sha256::digest(&raw)),
            *digest,
            "{r}: wrong manifest"
        );
    }
}

fn mirror_the_project(kubectl_tvk: &Path, namespace: &str, lock: &Value, work: &Path) {
    let destination = private_registry().unwrap();
    let b = destination.addr().to_string();
    let set = expected_mirror_set(lock);
    let catalog = format!(
        "docker://{namespace}/tvk-catalog@{}",
        lock["catalog"]["tvk-catalog"].as_str().unwrap()
    );
    let out = work.join("mirror-resources");
    let args = |dest: String, out: &Path| {
        vec![
            "--catalog".to_string(),
            catalog.clone(),
            "--src-tls-verify=false".into(),
            "--dest-tls-verify=false".into(),
            "--output-dir".into(),
            out.display().to_string(),
            dest,
        ]
    };

    // Registry A -> registry B.
    let stdout = kubectl_tvk_mirror(kubectl_tvk, &args(format!("docker://{b}/mirror"), &out));
    assert!(
        stdout.starts_with(&format!("{} images (0 already present)", set.len())),
        "{stdout}"
    );
    assert_mirrored(&format!("{b}/mirror"), namespace, &set);

    // What the cluster needs: one mirror per source repository, the catalog by digest, and
    // one mapping line per image.
    let path = namespace.split_once('/').unwrap().1;
    let read = |file: &str| {
        tvk_api::yaml::parse_single(
            &std::fs::read_to_string(out.join(file)).unwrap(),
            &Default::default(),
        )
        .unwrap()
    };
    let idms = read("imageDigestMirrorSet.yaml");
    let icsp = read("imageContentSourcePolicy.yaml");
    for (mirrors, kind) in [
        (&idms["spec"]["imageDigestMirrors"], "ImageDigestMirrorSet"),
        (
            &icsp["spec"]["repositoryDigestMirrors"],
            "ImageContentSourcePolicy",
        ),
    ] {
        let mirrors = mirrors
            .as_array()
            .unwrap_or_else(|| panic!("{kind}: no mirrors"));
        assert_eq!(mirrors.len(), set.len(), "{kind}: {mirrors:?}");
        for (name, _) in &set {
            let source = format!("{namespace}/{name}");
            let entry = mirrors
                .iter()
                .find(|m| m["source"] == source.as_str())
                .unwrap_or_else(|| panic!("{kind} has no mirror for {source}"));
            assert_eq!(
                entry["mirrors"],
                serde_json::json!([format!("{b}/mirror/{path}/{name}")]),
                "{kind}: {source}"
            );
        }
    }
    let catalog_source = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("catalogSource-")
        })
        .map(|e| e.file_name().to_string_lossy().to_string())
        .expect("no CatalogSource written");
    let catalog_source = read(&catalog_source);
    assert_eq!(
        catalog_source["spec"]["image"],
        format!(
            "{b}/mirror/{path}/tvk-catalog@{}",
            lock["catalog"]["tvk-catalog"].as_str().unwrap()
        )
        .as_str()
    );
    let mapping = std::fs::read_to_string(out.join("mapping.txt")).unwrap();
    assert_eq!(mapping.lines().count(), set.len(), "{mapping}");
    for (name, digest) in &set {
        let line = format!("{namespace}/{name}@{digest}={b}/mirror/{path}/{name}@{digest}");
        assert!(
            mapping.lines().any(|l| l == line),
            "no {line} in\n{mapping}"
        );
    }

    // A second run copies nothing: one HEAD per image, no blob touched.
    let stdout = kubectl_tvk_mirror(kubectl_tvk, &args(format!("docker://{b}/mirror"), &out));
    assert!(
        stdout.starts_with(&format!(
            "{n} images ({n} already present); blobs: 0 copied, 0 skipped, 0 mounted; 0 bytes copied",
            n = set.len()
        )),
        "{stdout}"
    );

    // Registry A -> dir (the disk carried across the air gap) -> registry B.
    let disk = work.join("airgap-disk");
    kubectl_tvk_mirror(
        kubectl_tvk,
        &args(
            format!("dir:{}", disk.display()),
            &work.join("mirror-disk-resources"),
        ),
    );
    let out = work.join("mirror-airgap-resources");
    kubectl_tvk_mirror(
        kubectl_tvk,
        &[
            "--from".to_string(),
            format!("dir:{}", disk.display()),
            "--dest-tls-verify=false".into(),
            "--output-dir".into(),
            out.display().to_string(),
            format!("docker://{b}/airgap"),
        ],
    );
    assert_mirrored(&format!("{b}/airgap"), namespace, &set);
    let mapping = std::fs::read_to_string(out.join("mapping.txt")).unwrap();
    assert_eq!(mapping.lines().count(), set.len(), "{mapping}");
}
