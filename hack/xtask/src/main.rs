//! `cargo xtask`: the one command that regenerates every generated file in the repository, and
//! the drift check CI runs. Each generator is a function returning the files it owns (path
//! relative to the repository root, and content); `generate` writes them, removes stale files in
//! the folders generators own, and `check-generated` fails naming every file that differs.
//!
//! Packaging (issue #4): `images` builds the six static binaries and their `FROM scratch`
//! images with buildah, pushes them (to a private docker-registry it starts when no
//! `--registry` is given), records their digests in `images/images.lock.json`, then generates
//! the bundles, builds and pushes the bundle images, and generates and builds the catalog.
//! `bundle`, `catalog` and `deploy` regenerate their files from the committed digest record;
//! `generate` does all of it (never a build), so the drift check is independent of any build.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser, Subcommand};

mod bundle;
mod catalog;
mod generators;
mod images;
mod validate;

/// Source repository (labels, CSV links).
pub const REPOSITORY: &str = "https://github.com/tvk-rs/tvk";

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Generators and dev tooling for this repository"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Regenerate every generated file (CRDs, bundle, catalog, ...).
    Generate,
    /// Fail if any committed generated file differs from a fresh generation (CI runs this).
    CheckGenerated,
    /// Regenerate only the application CRDs in templates/crds/.
    Crds,
    /// Build the static binaries and every image with buildah, push them, record their
    /// digests in images/images.lock.json, then generate the bundles and the catalog from
    /// those digests and build and push the bundle and catalog images.
    Images(images::ImagesArgs),
    /// Regenerate both OLM bundles (bundle/, bundle-application/) from images/images.lock.json.
    Bundle,
    /// Regenerate the file-based catalog (catalog/) from catalog/template.yaml and the bundles.
    Catalog,
    /// Regenerate the plain-Kubernetes install (deploy/tvk-operator.yaml).
    Deploy,
    /// Run the OLM checks (tvk-olm-validate: CSV, CRD, bundle, OperatorHub, good practices,
    /// file-based catalog model) on both bundles and the catalog; fails on any error.
    Validate {
        /// Validate bundle/, bundle-application/ and catalog/ under this directory instead of
        /// the repository.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Generated files keyed by path relative to the repository root.
pub type Files = BTreeMap<PathBuf, String>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = repo_root();
    let result = match cli.command {
        Command::Generate => generators::all().and_then(|files| write(&root, &files)),
        Command::Crds => generators::crds().and_then(|files| write(&root, &files)),
        Command::CheckGenerated => generators::all().and_then(|files| check(&root, &files)),
        Command::Images(args) => images::run(&root, &args),
        Command::Bundle => generators::bundles(&root)
            .and_then(|files| write_into(&root, &files))
            .and_then(|()| validate::bundles(&root)),
        Command::Catalog => generators::catalog(&root)
            .and_then(|files| write_into(&root, &files))
            .and_then(|()| validate::catalog(&root)),
        Command::Validate { dir } => {
            let dir = dir.unwrap_or_else(|| root.clone());
            validate::bundles(&dir).and_then(|()| validate::catalog(&dir))
        }
        Command::Deploy => generators::deploy(&root).and_then(|files| write_into(&root, &files)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    // hack/xtask/Cargo.toml -> repository root
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .components()
        .collect()
}

fn write(root: &Path, files: &Files) -> Result<(), String> {
    for dir in generators::OWNED_DIRS {
        remove_stale(root, Path::new(dir), files)?;
    }
    write_into(root, files)
}

/// Writes `files` under `root` (only those whose content changed), removing nothing.
pub fn write_into(root: &Path, files: &Files) -> Result<(), String> {
    for (path, content) in files {
        let full = root.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("failed to create {}: {e}", parent.display()))?;
        }
        if std::fs::read_to_string(&full).ok().as_deref() != Some(content.as_str()) {
            std::fs::write(&full, content)
                .map_err(|e| format!("failed to write {}: {e}", full.display()))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// Deletes files in a generator-owned folder that no generator produces any more
/// (files whose name starts with `README` are hand-written and kept).
fn remove_stale(root: &Path, dir: &Path, files: &Files) -> Result<(), String> {
    for path in list(root, dir)? {
        if !files.contains_key(&path) {
            std::fs::remove_file(root.join(&path))
                .map_err(|e| format!("failed to remove {}: {e}", path.display()))?;
            println!("removed {}", path.display());
        }
    }
    Ok(())
}

fn list(root: &Path, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
        return Ok(out);
    };
    for entry in entries {
        let entry = entry.map_err(|e| format!("failed to list {}: {e}", dir.display()))?;
        let rel = dir.join(entry.file_name());
        if entry.path().is_dir() {
            out.extend(list(root, &rel)?);
        } else if !entry.file_name().to_string_lossy().starts_with("README") {
            out.push(rel);
        }
    }
    Ok(out)
}

fn check(root: &Path, files: &Files) -> Result<(), String> {
    let mut drift = Vec::new();
    for (path, content) in files {
        match std::fs::read_to_string(root.join(path)) {
            Ok(existing) if existing == *content => {}
            Ok(_) => drift.push(format!(
                "{} differs from a fresh generation",
                path.display()
            )),
            Err(_) => drift.push(format!("{} is missing", path.display())),
        }
    }
    for dir in generators::OWNED_DIRS {
        for path in list(root, Path::new(dir))? {
            if !files.contains_key(&path) {
                drift.push(format!(
                    "{} is not produced by any generator (stale)",
                    path.display()
                ));
            }
        }
    }
    if drift.is_empty() {
        println!("all {} generated files are up to date", files.len());
        Ok(())
    } else {
        Err(format!(
            "generated files drifted; run `cargo xtask generate` and commit:\n  {}",
            drift.join("\n  ")
        ))
    }
}
