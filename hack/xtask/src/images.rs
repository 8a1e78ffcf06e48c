//! Container images: the one table of images this project builds, their generated
//! Containerfiles, and the digest record (`images/images.lock.json`) every shipped manifest is
//! generated from.
//!
//! Digests enter the committed files only through the lock: `cargo xtask images` builds the
//! images (static binaries, `FROM scratch`, `buildah --storage-driver vfs`), pushes them,
//! records their digests in the lock, then generates the bundles from it, builds and pushes the
//! bundle images, records their digests, and generates and builds the catalog. Every other
//! generator only *reads* the lock, so `cargo xtask check-generated` is a pure function of
//! committed files and never depends on a build.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use serde::{Deserialize, Serialize};

use crate::Files;

/// Who ships the images (the `vendor` label, the CSV provider).
pub const VENDOR: &str = "TVK-RS project";
/// Where released images are published unless `--publish-registry` says otherwise.
pub const DEFAULT_REGISTRY: &str = "ghcr.io/tvk-rs";
/// The committed digest record.
pub const LOCK_PATH: &str = "images/images.lock.json";
/// Numeric non-root user of every image (no /etc/passwd in a scratch image; OpenShift's
/// restricted-v2 SCC replaces it with a namespace UID anyway).
pub const IMAGE_USER: &str = "65532:65532";
/// Target triple of the static binaries (explicit, so proc-macros and build scripts are built
/// for the host without `+crt-static`).
pub const TARGET: &str = "x86_64-unknown-linux-gnu";
/// Cargo profile of the image binaries (root Cargo.toml: release without LTO).
pub const PROFILE: &str = "image";

/// One image this project builds: one binary, one Containerfile.
#[derive(Debug, Clone, Copy)]
pub struct ImageSpec {
    /// Image repository name and binary name.
    pub name: &'static str,
    /// Cargo package that builds the binary.
    pub package: &'static str,
    /// The manager's `RELATED_IMAGE_*` variable that points at it (`None`: not deployed by
    /// the manager).
    pub related_env: Option<&'static str>,
    /// One-line `summary` label.
    pub summary: &'static str,
    /// `description` label.
    pub description: &'static str,
}

/// Every image this project builds. The Containerfiles, `cargo xtask images`, the bundles'
/// `relatedImages` and the `RELATED_IMAGE_*` variables are all driven from this table.
pub const IMAGES: &[ImageSpec] = &[
    ImageSpec {
        name: "tvk-manager",
        package: "tvk-manager",
        related_env: None,
        summary: "TVK-RS operator: installs, upgrades and heals the backup application",
        description: "Reconciles TrilioVaultManager resources: renders the application from its templates, applies it server-side, prunes, upgrades by semver and self-heals.",
    },
    ImageSpec {
        name: "tvk-control-plane",
        package: "tvk-control-plane",
        related_env: Some("RELATED_IMAGE_CONTROL_PLANE"),
        summary: "TVK-RS control plane: backup and restore controllers",
        description: "Controllers of Target, Policy, Hook, BackupPlan, Backup and Restore resources; spawns the execution-layer Jobs.",
    },
    ImageSpec {
        name: "tvk-webhook",
        package: "tvk-webhook",
        related_env: Some("RELATED_IMAGE_WEBHOOK"),
        summary: "TVK-RS admission webhook for the backup resources",
        description: "Validating and mutating admission webhook (AdmissionReview v1) for the triliovault.trilio.io resources.",
    },
    ImageSpec {
        name: "tvk-datamover",
        package: "tvk-datamover",
        related_env: Some("RELATED_IMAGE_DATAMOVER"),
        summary: "TVK-RS datamover: QCOW2 volume backups to NFS and S3",
        description: "Writes full and incremental volume backups as QCOW2 v3 chains to NFS or S3 targets, restores, verifies and coalesces them.",
    },
    ImageSpec {
        name: "tvk-metamover",
        package: "tvk-metamover",
        related_env: Some("RELATED_IMAGE_METAMOVER"),
        summary: "TVK-RS metamover: application metadata backup and restore",
        description: "Discovers applications and backs up and restores their Kubernetes metadata.",
    },
    ImageSpec {
        name: "kubectl-tvk",
        package: "kubectl-tvk",
        related_env: None,
        summary: "TVK-RS command line: validate manifests, mirror the catalog",
        description: "kubectl plugin: offline validation of the backup resources and mirroring of the catalog and images for air-gapped clusters.",
    },
];

/// The images the application bundle and the manager deploy (those with a `RELATED_IMAGE_*`).
pub fn app_images() -> impl Iterator<Item = &'static ImageSpec> {
    IMAGES.iter().filter(|i| i.related_env.is_some())
}

/// The image of the manager.
pub fn manager_image() -> &'static ImageSpec {
    &IMAGES[0]
}

/// `images/<name>.Containerfile` for every image in [`IMAGES`].
pub fn containerfiles() -> Files {
    let version = env!("CARGO_PKG_VERSION");
    IMAGES
        .iter()
        .map(|image| {
            let text = format!(
                r#"# generated by cargo xtask generate from hack/xtask/src/images.rs (IMAGES) — do not edit
# Built by `cargo xtask images`: the build context holds the static binary, LICENSE and the
# CA bundle; no shell, no package manager, numeric non-root user.
FROM scratch
COPY LICENSE /licenses/LICENSE
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY {name} /usr/local/bin/{name}
USER {user}
ENTRYPOINT ["/usr/local/bin/{name}"]
LABEL name="{name}" \
      vendor="{vendor}" \
      maintainer="{vendor}" \
      version="{version}" \
      release="1" \
      summary="{summary}" \
      description="{description}" \
      io.k8s.display-name="{name}" \
      io.k8s.description="{description}" \
      org.opencontainers.image.title="{name}" \
      org.opencontainers.image.version="{version}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="{repo}"
"#,
                name = image.name,
                user = IMAGE_USER,
                vendor = VENDOR,
                summary = image.summary,
                description = image.description,
                repo = crate::REPOSITORY,
            );
            (
                PathBuf::from(format!("images/{}.Containerfile", image.name)),
                text,
            )
        })
        .collect()
}

/// The digest record: which registry the shipped manifests name, and the digest of every image
/// this project built for this version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImageLock {
    /// What this file is.
    #[serde(rename = "_comment")]
    pub comment: String,
    /// Version the images were built from.
    pub version: String,
    /// When `cargo xtask images` built them (RFC 3339, UTC): the CSV's `createdAt`.
    pub created: String,
    /// `host[:port]/namespace` the generated manifests reference.
    pub registry: String,
    /// Image name → manifest digest (`sha256:…`), for every entry of [`IMAGES`].
    pub images: BTreeMap<String, String>,
    /// Bundle image name → digest (the catalog's `olm.bundle` images).
    #[serde(default)]
    pub bundles: BTreeMap<String, String>,
    /// Catalog image name → digest.
    #[serde(default)]
    pub catalog: BTreeMap<String, String>,
}

const LOCK_COMMENT: &str = "written by `cargo xtask images` (do not edit): digests of the images this project built and pushed; the bundles, the catalog and deploy/ are generated from it";

impl ImageLock {
    /// Reads a lock file.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "failed to read the image digest record {}: {e}; run `cargo xtask images` to build the images and write it",
                path.display()
            )
        })?;
        let lock: Self = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a valid image digest record: {e}", path.display()))?;
        lock.check(path)?;
        Ok(lock)
    }

    /// The lock as committed text.
    pub fn to_text(&self) -> Result<String, String> {
        serde_json::to_string_pretty(self)
            .map(|s| s + "\n")
            .map_err(|e| format!("failed to serialise the image digest record: {e}"))
    }

    fn write(&self, path: &Path) -> Result<(), String> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("failed to create {}: {e}", parent.display()))?;
        }
        std::fs::write(path, self.to_text()?)
            .map_err(|e| format!("failed to write {}: {e}", path.display()))
    }

    /// Refuses a lock that does not name a digest for every image of the table.
    fn check(&self, path: &Path) -> Result<(), String> {
        for image in IMAGES {
            match self.images.get(image.name) {
                Some(digest) if is_digest(digest) => {}
                Some(digest) => {
                    return Err(format!(
                        "{}: image {} has {digest:?}, not a sha256 digest (rule: images by digest); rebuild with `cargo xtask images`",
                        path.display(),
                        image.name
                    ));
                }
                None => {
                    return Err(format!(
                        "{}: no digest for image {} (rule: every image in hack/xtask IMAGES is built); rebuild with `cargo xtask images`",
                        path.display(),
                        image.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// `registry/name@digest` of a built image.
    pub fn reference(&self, name: &str) -> Result<String, String> {
        self.images
            .get(name)
            .or_else(|| self.bundles.get(name))
            .or_else(|| self.catalog.get(name))
            .map(|digest| format!("{}/{name}@{digest}", self.registry))
            .ok_or_else(|| {
                format!(
                    "{LOCK_PATH} has no digest for {name}; run `cargo xtask images` to build and record it"
                )
            })
    }
}

/// The manager's defaults file: its `images.*` references are generated from the lock.
pub const VALUES_PATH: &str = "templates/values.yaml";

/// `templates/values.yaml` with each `images.<key>` of the manager's `RELATED_IMAGE_*` table
/// set to the image's reference by digest from `lock`. The rest of the file is hand-edited and
/// kept as it is, so the manager's compiled-in defaults, the bundles and the plain install all
/// name the same digests, and `check-generated` fails when the file and the lock disagree.
pub fn values_defaults(root: &Path, lock: &ImageLock) -> Result<Files, String> {
    let path = root.join(VALUES_PATH);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("failed to read {}: {e}", path.display()))?;
    let mut wanted = BTreeMap::new();
    for (env, key) in tvk_manager::values::RELATED_IMAGES {
        let image = app_images()
            .find(|i| i.related_env == Some(*env))
            .ok_or_else(|| {
                format!(
                    "the manager reads {env} but no image in hack/xtask IMAGES has related_env {env}; add it to the table"
                )
            })?;
        wanted.insert(*key, lock.reference(image.name)?);
    }
    let mut out = String::with_capacity(text.len());
    let mut in_images = false;
    let mut seen = BTreeMap::new();
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches('\n');
        if !bare.starts_with(' ') && !bare.starts_with('#') && !bare.is_empty() {
            in_images = bare.trim_end() == "images:";
        }
        let replaced = in_images
            .then(|| bare.strip_prefix("  "))
            .flatten()
            .and_then(|rest| rest.split_once(':'))
            .and_then(|(key, _)| wanted.get_key_value(key));
        match replaced {
            Some((key, reference)) => {
                out.push_str(&format!("  {key}: {reference}\n"));
                seen.insert(*key, ());
            }
            None => out.push_str(line),
        }
    }
    if let Some(key) = wanted.keys().find(|k| !seen.contains_key(*k)) {
        return Err(format!(
            "{VALUES_PATH}: no `images.{key}:` line (two-space indent under a top-level `images:`) to write the digest reference into; add `  {key}: x` under `images:`"
        ));
    }
    Ok(Files::from([(PathBuf::from(VALUES_PATH), out)]))
}

/// Refuses a lock built for another version than the workspace's: bumping the version
/// without rebuilding the images would ship the old version's images under the new one.
pub fn check_lock_version(lock: &ImageLock) -> Result<(), String> {
    let version = env!("CARGO_PKG_VERSION");
    if lock.version == version {
        Ok(())
    } else {
        Err(format!(
            "{LOCK_PATH} records images built for version {}, but the workspace is version {version}; run `cargo xtask images` to build and record this version's images",
            lock.version
        ))
    }
}

/// `sha256:` followed by 64 lower-case hex digits.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Options of `cargo xtask images`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImagesArgs {
    /// Push to this registry (`host[:port]/namespace`). Without it a private docker-registry is
    /// started on 127.0.0.1 for the run and stopped afterwards (the digests stay valid: they
    /// are content addresses, the same in the registry you publish to with `skopeo copy`).
    #[arg(long)]
    pub registry: Option<String>,
    /// Registry the generated manifests name (default: --registry if given, else the lock's,
    /// else ghcr.io/tvk-rs).
    #[arg(long)]
    pub publish_registry: Option<String>,
    /// Write the digest record here instead of images/images.lock.json.
    #[arg(long)]
    pub lock: Option<PathBuf>,
    /// Write the generated bundles, catalog and deploy/ under this directory instead of the
    /// repository (the e2e test uses a temporary one).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Cargo target directory of the static release binaries.
    #[arg(long, env = "TVK_IMAGE_TARGET_DIR")]
    pub target_dir: Option<PathBuf>,
    /// Use the binaries already built in the target directory (no cargo build).
    #[arg(long, conflicts_with = "build_only")]
    pub no_build: bool,
    /// Only build the static binaries and check that they are static (CI warms this up
    /// before the tests).
    #[arg(long)]
    pub build_only: bool,
}

/// Runs `cargo xtask images`.
pub fn run(root: &Path, args: &ImagesArgs) -> Result<(), String> {
    require("file", "file")?;
    let target_dir = args
        .target_dir
        .clone()
        .unwrap_or_else(|| root.join("target/image-build"));
    let bin_dir = target_dir.join(TARGET).join(PROFILE);
    if args.build_only {
        build_binaries(root, &target_dir, IMAGES)?;
        for image in IMAGES {
            check_static(&bin_dir.join(image.name))?;
        }
        println!("{} static binaries in {}", IMAGES.len(), bin_dir.display());
        return Ok(());
    }
    require("buildah", "buildah")?;
    let lock_path = args.lock.clone().unwrap_or_else(|| root.join(LOCK_PATH));
    let out = args.out.clone().unwrap_or_else(|| root.to_path_buf());
    let publish = args
        .publish_registry
        .clone()
        .or_else(|| args.registry.clone())
        .or_else(|| {
            std::fs::read_to_string(&lock_path)
                .ok()
                .and_then(|t| serde_json::from_str::<ImageLock>(&t).ok())
                .map(|l| l.registry)
        })
        .unwrap_or_else(|| DEFAULT_REGISTRY.to_string());
    validate_registry(&publish)?;

    // A private registry for the run unless one is given; stopped when `_server` drops.
    let (_server, push_registry) = match &args.registry {
        Some(registry) => {
            validate_registry(registry)?;
            (None, registry.clone())
        }
        None => {
            let server = tvk_testkit::private_registry()?;
            let registry = format!("{}/tvk-rs", server.addr());
            println!("started a private docker-registry at {}", server.addr());
            (Some(server), registry)
        }
    };

    if !args.no_build {
        build_binaries(root, &target_dir, IMAGES)?;
    }
    let work = tvk_testkit::TempDir::new("xtask-images")?;
    let buildah = Buildah::new(work.path(), &push_registry);

    let created = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map_err(|e| format!("failed to read the clock: {e}"))?
        .to_string();
    let mut lock = ImageLock {
        comment: LOCK_COMMENT.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        created,
        registry: publish,
        images: BTreeMap::new(),
        bundles: BTreeMap::new(),
        catalog: BTreeMap::new(),
    };
    let containerfiles = containerfiles();
    // The manager compiles in templates/values.yaml, whose image references are the other
    // images' digests: build its image last, after writing those digests (and rebuilding it
    // when they changed), so the manager's own defaults name the images built with it.
    let manager = manager_image();
    let ordered = IMAGES
        .iter()
        .filter(|i| i.name != manager.name)
        .chain(std::iter::once(manager));
    for image in ordered {
        if image.name == manager.name {
            refresh_manager_defaults(root, &out, &lock, &target_dir, args.no_build)?;
        }
        let binary = bin_dir.join(image.name);
        check_static(&binary)?;
        let context = work.path().join("context").join(image.name);
        std::fs::create_dir_all(&context)
            .map_err(|e| format!("failed to create {}: {e}", context.display()))?;
        copy(&binary, &context.join(image.name))?;
        copy(&root.join("LICENSE"), &context.join("LICENSE"))?;
        copy(
            Path::new("/etc/ssl/certs/ca-certificates.crt"),
            &context.join("ca-certificates.crt"),
        )
        .map_err(|e| format!("{e}; install the CA bundle: apt-get install ca-certificates"))?;
        let file = context.join("Containerfile");
        let text = containerfiles
            .get(&PathBuf::from(format!(
                "images/{}.Containerfile",
                image.name
            )))
            .ok_or_else(|| format!("no Containerfile generated for {}", image.name))?;
        std::fs::write(&file, text)
            .map_err(|e| format!("failed to write {}: {e}", file.display()))?;
        let digest = buildah.build_and_push(&file, &context, image.name)?;
        println!("{}  {}/{}@{digest}", image.name, push_registry, image.name);
        lock.images.insert(image.name.to_string(), digest);
    }
    lock.write(&lock_path)?;

    // Bundles from the lock, then their images, then the catalog that names them.
    let bundle_files = crate::generators::packaging_without_catalog(root, &lock)?;
    crate::write_into(&out, &bundle_files)?;
    crate::validate::bundles(&out)?;
    for bundle in crate::bundle::BUNDLES {
        let dir = out.join(bundle.dir);
        let digest = buildah.build_and_push(&dir.join("bundle.Dockerfile"), &dir, bundle.image)?;
        println!(
            "{}  {}/{}@{digest}",
            bundle.image, push_registry, bundle.image
        );
        lock.bundles.insert(bundle.image.to_string(), digest);
    }
    lock.write(&lock_path)?;
    let catalog_files = crate::catalog::generate(root, &lock)?;
    crate::write_into(&out, &catalog_files)?;
    crate::validate::catalog(&out)?;
    let catalog_dir = out.join("catalog");
    let digest = buildah.build_and_push(
        &catalog_dir.join("catalog.Dockerfile"),
        &catalog_dir,
        crate::catalog::CATALOG_IMAGE,
    )?;
    println!(
        "{}  {}/{}@{digest}",
        crate::catalog::CATALOG_IMAGE,
        push_registry,
        crate::catalog::CATALOG_IMAGE
    );
    lock.catalog
        .insert(crate::catalog::CATALOG_IMAGE.to_string(), digest);
    lock.write(&lock_path)?;
    println!("wrote {}", lock_path.display());
    Ok(())
}

/// Writes the digests of the images built so far into `templates/values.yaml` when the
/// generated files go into the repository itself, and rebuilds the manager binary when that
/// changed the file. With `--out` elsewhere (the e2e test) the repository is left alone: the
/// manager keeps the committed defaults, and everything shipped sets `RELATED_IMAGE_*`.
fn refresh_manager_defaults(
    root: &Path,
    out: &Path,
    lock: &ImageLock,
    target_dir: &Path,
    no_build: bool,
) -> Result<(), String> {
    let same = |a: &Path, b: &Path| {
        a.canonicalize()
            .ok()
            .is_some_and(|a| b.canonicalize().ok() == Some(a))
    };
    if !same(root, out) {
        return Ok(());
    }
    let files = values_defaults(root, lock)?;
    let path = root.join(VALUES_PATH);
    let before = std::fs::read_to_string(&path).unwrap_or_default();
    if files.get(Path::new(VALUES_PATH)) == Some(&before) {
        return Ok(());
    }
    crate::write_into(root, &files)?;
    if no_build {
        return Err(format!(
            "{VALUES_PATH} now names the new image digests, but --no-build keeps a manager binary compiled with the old ones; rerun without --no-build"
        ));
    }
    build_binaries(root, target_dir, &[*manager_image()])
}

/// `host[:port]/namespace`: no scheme, no tag, no trailing slash.
fn validate_registry(registry: &str) -> Result<(), String> {
    let ok = !registry.is_empty()
        && !registry.contains("://")
        && !registry.ends_with('/')
        && !registry.contains('@')
        && registry.contains('/')
        && registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "registry {registry:?} is not host[:port]/namespace (e.g. 127.0.0.1:5000/tvk-rs or ghcr.io/tvk-rs)"
        ))
    }
}

/// Fails with what to install when a tool is missing.
pub fn require(tool: &str, package: &str) -> Result<(), String> {
    tvk_testkit::require_tool(tool, &format!("apt-get install {package}"))
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("failed to copy {} to {}: {e}", from.display(), to.display()))
}

/// Builds the binaries of `images` statically (glibc, `+crt-static`) with the image profile.
fn build_binaries(root: &Path, target_dir: &Path, images: &[ImageSpec]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .args([
            "build",
            "--locked",
            "--profile",
            PROFILE,
            "--target",
            TARGET,
            "--bins",
        ])
        .arg("--target-dir")
        .arg(target_dir)
        // With an explicit --target, RUSTFLAGS reach only target code, not proc-macros.
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    for image in images {
        command.args(["-p", image.package]);
    }
    println!(
        "building {} static binaries (profile {PROFILE}, {TARGET})",
        images.len()
    );
    run_status(&mut command, "cargo build of the image binaries")
}

/// Fails unless `binary` is a statically linked executable (a FROM-scratch image has no
/// dynamic loader).
pub fn check_static(binary: &Path) -> Result<(), String> {
    let output = Command::new("file")
        .arg("-b")
        .arg(binary)
        .output()
        .map_err(|e| format!("failed to run file: {e}; install it: apt-get install file"))?;
    let description = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || description.contains("cannot open") {
        return Err(format!(
            "{} is missing: build it with `cargo xtask images` (without --no-build)",
            binary.display()
        ));
    }
    if description.contains("statically linked") || description.contains("static-pie linked") {
        Ok(())
    } else {
        Err(format!(
            "{} is not statically linked ({}); a FROM-scratch image cannot run it. Build with RUSTFLAGS='-C target-feature=+crt-static' --target {TARGET}",
            binary.display(),
            description.trim()
        ))
    }
}

fn run_status(command: &mut Command, what: &str) -> Result<(), String> {
    let status = command
        .status()
        .map_err(|e| format!("failed to start {what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// buildah with vfs storage in a private root (no daemon, no shared state between runs).
struct Buildah {
    root: PathBuf,
    runroot: PathBuf,
    registry: String,
    tls_verify: bool,
}

impl Buildah {
    fn new(work: &Path, registry: &str) -> Self {
        let host = registry.split('/').next().unwrap_or_default();
        let local = host.starts_with("127.0.0.1") || host.starts_with("localhost");
        Self {
            root: work.join("storage"),
            runroot: work.join("run"),
            registry: registry.to_string(),
            tls_verify: !local,
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new("buildah");
        command
            .arg("--storage-driver")
            .arg("vfs")
            .arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .env("STORAGE_DRIVER", "vfs")
            .env("BUILDAH_ISOLATION", "chroot");
        command
    }

    /// Builds `containerfile` in `context`, pushes it as `<registry>/<name>:<version>` and
    /// returns the pushed manifest's digest.
    fn build_and_push(
        &self,
        containerfile: &Path,
        context: &Path,
        name: &str,
    ) -> Result<String, String> {
        let local = format!("localhost/{name}:build");
        // --timestamp 0: identical inputs give identical image digests.
        run_status(
            self.command()
                .args([
                    "bud",
                    "--quiet",
                    "--format",
                    "oci",
                    "--timestamp",
                    "0",
                    "-f",
                ])
                .arg(containerfile)
                .args(["-t", &local])
                .arg(context)
                // --quiet still prints the image id; the digest is what we report.
                .stdout(std::process::Stdio::null()),
            &format!("buildah bud of {name}"),
        )?;
        let digest_file = self.root.with_file_name(format!("{name}.digest"));
        let destination = format!(
            "docker://{}/{name}:{}",
            self.registry,
            env!("CARGO_PKG_VERSION")
        );
        run_status(
            self.command()
                .args(["push", "--quiet"])
                .arg(format!("--tls-verify={}", self.tls_verify))
                .arg("--digestfile")
                .arg(&digest_file)
                .arg(&local)
                .arg(&destination),
            &format!("buildah push of {name} to {destination}"),
        )?;
        let digest = std::fs::read_to_string(&digest_file)
            .map_err(|e| format!("buildah wrote no digest for {name}: {e}"))?
            .trim()
            .to_string();
        if is_digest(&digest) {
            Ok(digest)
        } else {
            Err(format!(
                "buildah reported {digest:?} as the digest of {name}"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::bundle::tests::fake_lock;

    fn root_with_values(text: &str) -> tvk_testkit::TempDir {
        let root = tvk_testkit::TempDir::new("xtask-values").unwrap();
        std::fs::create_dir_all(root.path().join("templates")).unwrap();
        std::fs::write(root.path().join(VALUES_PATH), text).unwrap();
        root
    }

    #[test]
    fn values_defaults_name_each_image_by_digest_and_keep_the_rest() {
        let lock = fake_lock();
        let root = root_with_values(
            "# head\nimages:\n  controlPlane: a:1\n  webhook: b:1\n  datamover: c:1\n  metamover: d:1\n  pullPolicy: IfNotPresent\nother:\n  webhook: keep\n",
        );
        let files = values_defaults(root.path(), &lock).unwrap();
        let text = &files[Path::new(VALUES_PATH)];
        for (key, name) in [
            ("controlPlane", "tvk-control-plane"),
            ("webhook", "tvk-webhook"),
            ("datamover", "tvk-datamover"),
            ("metamover", "tvk-metamover"),
        ] {
            let line = format!("  {key}: {}\n", lock.reference(name).unwrap());
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
        assert!(text.starts_with("# head\nimages:\n"));
        assert!(text.ends_with("  pullPolicy: IfNotPresent\nother:\n  webhook: keep\n"));
        assert!(!text.contains(":1\n"), "a tag left: {text}");
    }

    #[test]
    fn a_missing_image_key_is_refused_naming_it() {
        let root = root_with_values("images:\n  controlPlane: a\n  webhook: b\n  datamover: c\n");
        let err = values_defaults(root.path(), &fake_lock()).unwrap_err();
        assert!(err.contains("images.metamover"), "{err}");
    }

    #[test]
    fn a_lock_of_another_version_is_refused() {
        let mut lock = fake_lock();
        check_lock_version(&lock).unwrap();
        lock.version = "0.0.1".into();
        let err = check_lock_version(&lock).unwrap_err();
        assert!(err.contains("cargo xtask images"), "{err}");
    }
}
