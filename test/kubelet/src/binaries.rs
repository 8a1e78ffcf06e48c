//! Finding the workspace's binaries (`tvk-metamover`, `tvk-datamover`) for the images they
//! stand for.
//!
//! A test executable lives in `<target>/<profile>/deps/`; the binaries of the same build are in
//! `<target>/<profile>/`. `cargo test -p X` builds only X's binaries, so a binary of another
//! package may be missing or stale: [`workspace_binary`] runs `cargo build -p <package> --bin
//! <bin>` once per process with the same target directory and profile (a no-op when it is up
//! to date), and uses the existing file when cargo is not available (a nextest archive).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

/// Why a binary could not be found.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    /// The test executable's location does not look like a cargo target directory.
    #[error(
        "cannot find the cargo target directory from the test executable {exe}: expected <target>/<profile>/deps/<test>"
    )]
    NoTargetDir {
        /// The executable.
        exe: String,
    },
    /// cargo failed to build it.
    #[error("`{command}` failed ({status}): {stderr}")]
    Build {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The tail of its stderr.
        stderr: String,
    },
    /// Neither built nor present.
    #[error(
        "{path} does not exist and cargo could not build it ({why}); build it with `cargo build -p {package} --bin {bin}`"
    )]
    Missing {
        /// Where it was expected.
        path: String,
        /// The package.
        package: String,
        /// The binary.
        bin: String,
        /// Why cargo could not run.
        why: String,
    },
}

static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);

/// The path of binary `bin` of workspace package `package`, built if needed (see the module
/// docs).
pub fn workspace_binary(package: &str, bin: &str) -> Result<PathBuf, BinaryError> {
    let key = format!("{package}/{bin}");
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(path) = built.get_or_insert_with(HashMap::new).get(&key) {
        return Ok(path.clone());
    }
    let exe = std::env::current_exe().map_err(|_| BinaryError::NoTargetDir {
        exe: "<unknown>".into(),
    })?;
    let (target, profile_dir) = target_of(&exe).ok_or_else(|| BinaryError::NoTargetDir {
        exe: exe.display().to_string(),
    })?;
    let path = target.join(&profile_dir).join(bin);
    if is_fresh(&path) {
        built
            .get_or_insert_with(HashMap::new)
            .insert(key, path.clone());
        return Ok(path);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--quiet", "-p", package, "--bin", bin])
        .env("CARGO_TARGET_DIR", &target);
    match profile_dir.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    if let Some(ws) = workspace_root() {
        cmd.current_dir(ws);
    }
    let command = format!("{cargo} build -p {package} --bin {bin}");
    match cmd.output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: String = stderr
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            return Err(BinaryError::Build {
                command,
                status: out.status.to_string(),
                stderr: tail,
            });
        }
        Err(e) if path.exists() => {
            tracing::warn!(
                "cannot run {command} ({e}); using the existing {}",
                path.display()
            );
        }
        Err(e) => {
            return Err(BinaryError::Missing {
                path: path.display().to_string(),
                package: package.into(),
                bin: bin.into(),
                why: e.to_string(),
            });
        }
    }
    if !path.exists() {
        return Err(BinaryError::Missing {
            path: path.display().to_string(),
            package: package.into(),
            bin: bin.into(),
            why: "cargo succeeded but the file is not there".into(),
        });
    }
    built
        .get_or_insert_with(HashMap::new)
        .insert(key, path.clone());
    Ok(path)
}

/// Whether `path` exists and is newer than every source of the workspace's `app/` crates and
/// `Cargo.lock` (then a workspace build made it and cargo need not run: running
/// `cargo build -p` in a workspace test run would build the dependencies again with another
/// feature set).
fn is_fresh(path: &Path) -> bool {
    let Some(built) = std::fs::metadata(path).and_then(|m| m.modified()).ok() else {
        return false;
    };
    let Some(root) = workspace_root() else {
        return false;
    };
    let mut stack = vec![root.join("app")];
    let mut newest = std::fs::metadata(root.join("Cargo.lock"))
        .and_then(|m| m.modified())
        .ok();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            let name = entry.file_name();
            if p.is_dir() {
                if name != "target" && name != "tests" && name != "benches" {
                    stack.push(p);
                }
            } else if let Ok(m) = entry.metadata().and_then(|m| m.modified())
                && newest.is_none_or(|n| m > n)
            {
                newest = Some(m);
            }
        }
    }
    newest.is_some_and(|n| built > n)
}

/// `<target>` and the profile directory name from `<target>/<profile>/deps/<exe>`.
fn target_of(exe: &Path) -> Option<(PathBuf, String)> {
    let deps = exe.parent()?;
    let profile = if deps.file_name()? == "deps" {
        deps.parent()?
    } else {
        deps
    };
    let name = profile.file_name()?.to_str()?.to_string();
    Some((profile.parent()?.to_path_buf(), name))
}

/// The workspace root: this crate's manifest directory is `<root>/test/kubelet`.
fn workspace_root() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = dir.parent()?.parent()?;
    root.join("Cargo.toml").exists().then(|| root.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::target_of;
    use std::path::{Path, PathBuf};

    #[test]
    fn target_dir_of_a_test_executable() {
        assert_eq!(
            target_of(Path::new("/t/debug/deps/backup_e2e-abc")),
            Some((PathBuf::from("/t"), "debug".into()))
        );
        assert_eq!(
            target_of(Path::new("/t/ci/deps/x")),
            Some((PathBuf::from("/t"), "ci".into()))
        );
    }
}
