//! Test support shared by every crate's tests: the real local servers the suite runs against.
//!
//! `hack/test.sh` starts one moto S3 server and two docker-registry instances for the whole run
//! and exports their addresses (`TVK_TEST_S3_ENDPOINT`, `TVK_TEST_REGISTRY_A`,
//! `TVK_TEST_REGISTRY_B`). When a test runs outside that harness (plain `cargo test`), the
//! helpers here start a private server on a free 127.0.0.1 port and stop it when dropped.
//! A missing server binary is a test *failure* with a message saying what to install, never a
//! silent skip.

pub mod fault_proxy;
pub mod helm_oracle;

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// Sends one HTTP/1.1 request without a body to `addr` (`host:port`); `Err` names the request
/// and the answer when its status is not `expect` (moto's bucket creation, a registry's
/// manifest DELETE: requests no client library of the tests makes unsigned).
pub fn http_without_body(addr: &str, method: &str, path: &str, expect: u16) -> Result<(), String> {
    use std::io::{Read, Write};
    let fail = |e: std::io::Error| format!("{method} {path} on {addr}: {e}");
    let mut s = TcpStream::connect(addr).map_err(fail)?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(fail)?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(fail)?;
    if resp.starts_with(&format!("HTTP/1.1 {expect}")) {
        Ok(())
    } else {
        Err(format!("{method} {path} on {addr} answered: {resp}"))
    }
}

/// Creates `bucket` on the moto server at `addr` (unsigned: moto does not check signatures).
pub fn create_bucket(addr: SocketAddr, bucket: &str) -> Result<(), String> {
    http_without_body(&addr.to_string(), "PUT", &format!("/{bucket}"), 200)
}

/// A server process (or an address given by the harness) that tests talk to.
#[derive(Debug)]
pub struct LocalServer {
    addr: SocketAddr,
    child: Option<Child>,
    _dir: Option<TempDir>,
}

impl LocalServer {
    /// `host:port` of the server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A moto S3 server: the harness's one if `TVK_TEST_S3_ENDPOINT` is set, else a private one.
///
/// moto accepts any access key; use [`S3_ACCESS_KEY`] / [`S3_SECRET_KEY`] and region
/// [`S3_REGION`]. Create a bucket per test (see [`unique_name`]) so tests never share state.
pub fn moto() -> Result<LocalServer, String> {
    if let Some(addr) = env_addr("TVK_TEST_S3_ENDPOINT")? {
        return Ok(LocalServer {
            addr,
            child: None,
            _dir: None,
        });
    }
    let port = free_port()?;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let child = Command::new(&python)
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("failed to start moto ({python} -m moto.server): {e}; install it with: pip install 'moto[server]' (or run hack/test.sh)"))?;
    start(child, port, None, "moto (pip install 'moto[server]')")
}

/// A docker-registry (distribution v2) instance. `which` picks the harness's registry
/// `"A"` or `"B"` (`TVK_TEST_REGISTRY_A` / `_B`); without the harness a private one is started.
pub fn registry(which: &str) -> Result<LocalServer, String> {
    if let Some(addr) = env_addr(&format!("TVK_TEST_REGISTRY_{which}"))? {
        return Ok(LocalServer {
            addr,
            child: None,
            _dir: None,
        });
    }
    private_registry()
}

/// A fresh, empty docker-registry on its own port and storage, always private to the caller
/// (use this when a test deletes or corrupts registry content).
pub fn private_registry() -> Result<LocalServer, String> {
    start_registry(None)
}

/// Like [`private_registry`], but serving HTTPS with the given PEM certificate and key (the
/// test makes them, e.g. with rcgen, and trusts its own CA).
pub fn private_tls_registry(
    cert_pem: &std::path::Path,
    key_pem: &std::path::Path,
) -> Result<LocalServer, String> {
    start_registry(Some((cert_pem, key_pem)))
}

fn start_registry(
    tls: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<LocalServer, String> {
    let port = free_port()?;
    let dir = TempDir::new("registry")?;
    let config = dir.path.join("config.yml");
    let storage = dir.path.join("storage");
    let tls = tls
        .map(|(cert, key)| {
            format!(
                "  tls: {{certificate: {}, key: {}}}\n",
                cert.display(),
                key.display()
            )
        })
        .unwrap_or_default();
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp:\n  addr: 127.0.0.1:{port}\n{tls}",
            storage.display()
        ),
    )
    .map_err(|e| format!("failed to write registry config: {e}"))?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("failed to start docker-registry: {e}; install it with: apt-get install docker-registry (or run hack/test.sh)"))?;
    start(
        child,
        port,
        Some(dir),
        "docker-registry (apt-get install docker-registry)",
    )
}

/// Access key moto accepts.
pub const S3_ACCESS_KEY: &str = "testing-access-key";
/// Secret key moto accepts.
pub const S3_SECRET_KEY: &str = "testing-secret-key";
/// Region used with moto.
pub const S3_REGION: &str = "us-east-1";

/// A name unique within this test process and across processes of one run: `prefix-<pid>-<n>`,
/// lower-case and DNS-safe (usable as a bucket, namespace or repository name).
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether a tool is on PATH; tests that need it fail with `require_tool`'s message otherwise.
pub fn require_tool(tool: &str, install_hint: &str) -> Result<(), String> {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(format!(
            "`{tool}` is not installed; install it with: {install_hint} (or run hack/test.sh)"
        ))
    }
}

/// What a test does when its environment lacks something it needs (a tool, a loop device):
/// under CI (`CI` set) the environment is the project's to provide, so this is an `Err` that
/// fails the test; elsewhere it prints `SKIPPED <test>: <reason>` on stderr and returns
/// `Ok(false)`, so the caller returns early. Never a silent pass on CI.
pub fn skip_unless_ci(test: &str, reason: &str) -> Result<bool, String> {
    if std::env::var_os("CI").is_some() {
        Err(format!(
            "{test}: {reason} (CI must provide it: see hack/test.sh)"
        ))
    } else {
        eprintln!("SKIPPED {test}: {reason}");
        Ok(false)
    }
}

/// A directory removed when dropped (kept if `TVK_TEST_KEEP` is set, for debugging).
#[derive(Debug)]
pub struct TempDir {
    /// The directory.
    pub path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/tvk-<prefix>-<unique>`.
    pub fn new(prefix: &str) -> Result<Self, String> {
        let path = std::env::temp_dir().join(unique_name(&format!("tvk-{prefix}")));
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("failed to create {}: {e}", path.display()))?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("TVK_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn env_addr(var: &str) -> Result<Option<SocketAddr>, String> {
    let Ok(value) = std::env::var(var) else {
        return Ok(None);
    };
    let hostport = value
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    hostport
        .parse::<SocketAddr>()
        .map(Some)
        .map_err(|e| format!("{var}={value} is not host:port: {e}"))
}

fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("failed to find a free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("failed to find a free port: {e}"))
}

fn start(
    mut child: Child,
    port: u16,
    dir: Option<TempDir>,
    what: &str,
) -> Result<LocalServer, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited before it was ready: {status}"));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(LocalServer {
                addr,
                child: Some(child),
                _dir: dir,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    Err(format!(
        "{what} did not accept connections on {addr} within 30 s"
    ))
}
