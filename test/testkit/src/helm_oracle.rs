//! Go's real `text/template` + Sprig as a test oracle for `tvk-chart-render`: builds
//! `test/helm-oracle` (a small Go program) once per test process and runs it.
//!
//! Needs Go with Sprig and yaml.v2 from Debian (`golang-go golang-github-masterminds-sprig-dev
//! golang-gopkg-yaml.v2-dev`, which hack/test.sh installs), built in GOPATH mode so no module
//! download is involved. Without `go`, [`helm_oracle`] returns `Ok(None)` after printing
//! `SKIPPED` — except under CI, where it is an error that fails the test.

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
    sync::OnceLock,
};

/// The built oracle binary.
#[derive(Debug, Clone)]
pub struct HelmOracle {
    path: PathBuf,
}

impl HelmOracle {
    /// Renders: `input` is `{"chart": <release.chart JSON>, "request": {...}}` (see
    /// test/helm-oracle/main.go); returns the oracle's JSON output (`{"templates": {...}}` or
    /// `{"error": "..."}`).
    pub fn run(&self, input: &str) -> Result<String, String> {
        let mut child = Command::new(&self.path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("failed to run {}: {e}", self.path.display()))?;
        child
            .stdin
            .take()
            .ok_or("helm-oracle: no stdin")?
            .write_all(input.as_bytes())
            .map_err(|e| format!("failed to write to helm-oracle: {e}"))?;
        let out = child
            .wait_with_output()
            .map_err(|e| format!("helm-oracle failed: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "helm-oracle exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8(out.stdout).map_err(|e| format!("helm-oracle output is not UTF-8: {e}"))
    }
}

/// The oracle, built on first use in this process into `$CARGO_TARGET_DIR/helm-oracle`.
/// `Ok(None)`: `go` is not installed and this is not CI (the caller skips, loudly).
pub fn helm_oracle() -> Result<Option<HelmOracle>, String> {
    static BUILT: OnceLock<Result<Option<HelmOracle>, String>> = OnceLock::new();
    BUILT.get_or_init(build).clone()
}

fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    // <target>/debug/deps/<test binary>
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

fn build() -> Result<Option<HelmOracle>, String> {
    if crate::require_tool(
        "go",
        "apt-get install golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v2-dev",
    )
    .is_err()
    {
        crate::skip_unless_ci(
            "helm oracle",
            "`go` is not installed (apt-get install golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v2-dev)",
        )?;
        return Ok(None);
    }
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../helm-oracle/main.go");
    let target = target_dir();
    std::fs::create_dir_all(&target)
        .map_err(|e| format!("failed to create {}: {e}", target.display()))?;
    let path = target.join("helm-oracle");
    // Several test processes may build at once: each builds its own file, then renames it
    // into place (atomic), so none runs a half-written binary.
    let tmp = target.join(format!("helm-oracle.{}.tmp", std::process::id()));
    let gopath = std::env::var("TVK_TEST_GOPATH").unwrap_or_else(|_| "/usr/share/gocode".into());
    let out = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&tmp)
        .arg(&source)
        .env("GO111MODULE", "off")
        .env("GOPATH", gopath)
        .env("GOCACHE", target.join("helm-oracle-cache"))
        .env("GOFLAGS", "")
        .output()
        .map_err(|e| format!("failed to run go build: {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!(
            "go build of {} failed (are golang-github-masterminds-sprig-dev and golang-gopkg-yaml.v2-dev installed?): {}",
            source.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::rename(&tmp, &path)
        .map_err(|e| format!("failed to move the oracle to {}: {e}", path.display()))?;
    Ok(Some(HelmOracle { path }))
}
