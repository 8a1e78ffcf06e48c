//! A small fault-injecting HTTP/1.1 proxy for S3 tests (RELIABILITY.md items 4–6).
//!
//! It sits on 127.0.0.1 in front of a real server (moto) and, for a chosen share of matching
//! requests, answers an S3 error itself instead of forwarding: `503 SlowDown` on writes (the
//! way S3 throttles) by default, or any status and error code (`403 RequestTimeTooSkewed`
//! for clock skew) on requests whose request line contains a given text (e.g. one multipart
//! part number). Everything else is forwarded unchanged. One request per connection
//! (`Connection: close`), which every HTTP client handles; the proxy stops when dropped.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

/// Which requests fail, and how.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// Share of matching requests that fail, in percent.
    pub percent: u32,
    /// Only these methods match (empty = all).
    pub methods: Vec<&'static str>,
    /// Only request lines containing this text match.
    pub request_contains: Option<String>,
    /// HTTP status of the injected answer.
    pub status: u16,
    /// S3 error code in the injected body.
    pub code: &'static str,
}

impl FaultPlan {
    /// `503 SlowDown` on `percent`% of PUT/POST requests.
    pub fn slowdown(percent: u32) -> Self {
        Self {
            percent,
            methods: vec!["PUT", "POST"],
            request_contains: None,
            status: 503,
            code: "SlowDown",
        }
    }

    /// `403 RequestTimeTooSkewed` on every request (this node's clock is off).
    pub fn clock_skew() -> Self {
        Self {
            percent: 100,
            methods: Vec::new(),
            request_contains: None,
            status: 403,
            code: "RequestTimeTooSkewed",
        }
    }
}

/// A running proxy.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Requests answered with 503.
    pub injected: Arc<AtomicU64>,
    /// Requests forwarded.
    pub forwarded: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` failing `fail_percent`% of PUT/POST requests
    /// (deterministic sequence from `seed`).
    pub fn start(upstream: SocketAddr, fail_percent: u32, seed: u64) -> Result<Self, String> {
        Self::start_plan(upstream, FaultPlan::slowdown(fail_percent), seed)
    }

    /// Starts a proxy to `upstream` injecting faults per `plan`.
    pub fn start_plan(upstream: SocketAddr, plan: FaultPlan, seed: u64) -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| format!("failed to bind the fault proxy: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("failed to read the fault proxy address: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("failed to configure the fault proxy: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let injected = Arc::new(AtomicU64::new(0));
        let forwarded = Arc::new(AtomicU64::new(0));
        let (s, i, f) = (stop.clone(), injected.clone(), forwarded.clone());
        let rng = Arc::new(AtomicU64::new(seed | 1));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (i, f, rng, plan) = (i.clone(), f.clone(), rng.clone(), plan.clone());
                        std::thread::spawn(move || {
                            let _ = handle(conn, upstream, &plan, &rng, &i, &f);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self {
            addr,
            stop,
            injected,
            forwarded,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn next_percent(rng: &AtomicU64) -> u32 {
    // xorshift64 on a shared state; races only reorder draws.
    let mut x = rng.load(Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng.store(x, Ordering::Relaxed);
    (x % 100) as u32
}

fn handle(
    conn: TcpStream,
    upstream: SocketAddr,
    plan: &FaultPlan,
    rng: &AtomicU64,
    injected: &AtomicU64,
    forwarded: &AtomicU64,
) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut head = Vec::new();
    let mut content_length = 0usize;
    let mut chunked = false;
    let mut method = String::new();
    let mut request_line = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if method.is_empty() {
            method = line.split(' ').next().unwrap_or("").to_string();
            request_line = line.clone();
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
        if lower.starts_with("connection:") {
            continue;
        }
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        head.extend_from_slice(line.as_bytes());
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line)?;
            body.extend_from_slice(size_line.as_bytes());
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            if size == 0 {
                break;
            }
        }
    } else {
        body.resize(content_length, 0);
        reader.read_exact(&mut body)?;
    }
    let mut client = conn;
    let matches = (plan.methods.is_empty() || plan.methods.contains(&method.as_str()))
        && plan
            .request_contains
            .as_deref()
            .is_none_or(|t| request_line.contains(t));
    if matches && next_percent(rng) < plan.percent {
        injected.fetch_add(1, Ordering::Relaxed);
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{}</Code><Message>injected by the test fault proxy</Message></Error>",
            plan.code
        );
        write!(
            client,
            "HTTP/1.1 {} {}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
            plan.status,
            plan.code,
            xml.len()
        )?;
        client.flush()?;
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    forwarded.fetch_add(1, Ordering::Relaxed);
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(&head)?;
    up.write_all(&body)?;
    up.flush()?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    client.write_all(&response)?;
    client.flush()?;
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}
