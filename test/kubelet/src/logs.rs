//! A running container's log as the kubelet keeps it: CRI-format lines (`<RFC 3339 time>
//! <stdout|stderr> F <text>`) in `<pod dir>/logs/<container>.log`, which tvk-test-apiserver
//! serves as `pods/{name}/log` (the Pod's [`tvk_test_apiserver::ANNOTATION_LOG_DIR`]).
//!
//! Bounded: only the last [`LOG_TAIL`] bytes of lines are kept, and the file is rewritten (write
//! then rename, so a reader never sees half a file) at most every [`FLUSH_EVERY`] while the
//! process writes, and once when it ends.

use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes of log lines kept (the tail).
pub(crate) const LOG_TAIL: usize = 64 * 1024;
/// Longest time between a line written by the process and the log file showing it.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(200);

#[derive(Default)]
struct Tail {
    lines: VecDeque<String>,
    bytes: usize,
    dirty: bool,
}

/// The log of one container.
#[derive(Clone)]
pub(crate) struct ContainerLog {
    path: PathBuf,
    tail: Arc<Mutex<Tail>>,
}

impl ContainerLog {
    /// A log written to `path` (its directory must exist).
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            tail: Arc::default(),
        }
    }

    fn push(&self, stream: &str, text: &str) {
        let time = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%fZ");
        let line = format!("{time} {stream} F {text}\n");
        let Ok(mut tail) = self.tail.lock() else {
            return;
        };
        tail.bytes += line.len();
        tail.lines.push_back(line);
        while tail.bytes > LOG_TAIL && tail.lines.len() > 1 {
            if let Some(old) = tail.lines.pop_front() {
                tail.bytes -= old.len();
            }
        }
        tail.dirty = true;
    }

    /// Writes the file if lines came since the last write.
    pub(crate) fn flush(&self) {
        let text = {
            let Ok(mut tail) = self.tail.lock() else {
                return;
            };
            if !tail.dirty {
                return;
            }
            tail.dirty = false;
            tail.lines.iter().map(String::as_str).collect::<String>()
        };
        let tmp = self.path.with_extension("log.tmp");
        let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::warn!("kubelet: cannot write {}: {e}", self.path.display());
        }
    }

    /// Flushes every [`FLUSH_EVERY`] until cancelled (then once more).
    pub(crate) async fn flush_until(&self, done: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = done.cancelled() => break,
                _ = tokio::time::sleep(FLUSH_EVERY) => self.flush(),
            }
        }
        self.flush();
    }

    /// Reads `from` to its end: everything is returned (lossy UTF-8), and every line goes
    /// into the log as it arrives (`stream`: `stdout` or `stderr`).
    pub(crate) async fn read_stream(
        &self,
        from: Option<impl AsyncRead + Unpin>,
        stream: &'static str,
    ) -> String {
        let Some(mut from) = from else {
            return String::new();
        };
        let mut all = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        let mut line_start = 0;
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            all.extend_from_slice(&buf[..n]);
            while let Some(pos) = all[line_start..].iter().position(|b| *b == b'\n') {
                let end = line_start + pos;
                self.push(stream, &String::from_utf8_lossy(&all[line_start..end]));
                line_start = end + 1;
            }
        }
        if line_start < all.len() {
            self.push(stream, &String::from_utf8_lossy(&all[line_start..]));
        }
        String::from_utf8_lossy(&all).into_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[tokio::test]
    async fn lines_are_kept_bounded_in_cri_format() {
        let dir = tvk_testkit::TempDir::new("kubelet-log").unwrap();
        let log = ContainerLog::new(dir.path().join("c.log"));
        let big = format!("{}\n", "x".repeat(1000)).repeat(100);
        let input = format!("first\n{big}last, no newline");
        let out = log.read_stream(Some(input.as_bytes()), "stdout").await;
        assert_eq!(out, input);
        log.flush();
        let text = std::fs::read_to_string(dir.path().join("c.log")).unwrap();
        assert!(text.len() <= LOG_TAIL, "{} bytes kept", text.len());
        assert!(!text.contains(" F first\n"), "the head was dropped");
        let last = text.lines().last().unwrap();
        let mut parts = last.splitn(4, ' ');
        assert!(parts.next().unwrap().parse::<jiff::Timestamp>().is_ok());
        assert_eq!(
            parts.collect::<Vec<_>>(),
            ["stdout", "F", "last, no newline"]
        );
    }
}
