//! Progress reporting: a bar on a terminal, periodic JSON lines otherwise (the controllers
//! turn `{"event":"progress",...}` lines into `percentageCompletion`).

use std::{
    io::Write,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Receives progress updates (bytes done of total). Must be cheap: called per chunk.
pub trait Progress: Sync {
    /// Reports that `done` of `total` bytes are processed.
    fn update(&self, done: u64, total: u64);
}

/// Reports nothing.
#[derive(Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn update(&self, _done: u64, _total: u64) {}
}

/// Prints `{"event":"progress","bytesDone":..,"bytesTotal":..,"percent":..}` on stdout at most
/// once per interval (and at 100%).
#[derive(Debug)]
pub struct JsonProgress {
    interval: Duration,
    last: Mutex<Option<Instant>>,
}

impl JsonProgress {
    /// Lines at most every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: Mutex::new(None),
        }
    }
}

impl Progress for JsonProgress {
    fn update(&self, done: u64, total: u64) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        let now = Instant::now();
        let due = last.is_none_or(|t| now.duration_since(t) >= self.interval) || done >= total;
        if !due {
            return;
        }
        *last = Some(now);
        let percent = if total == 0 {
            100.0
        } else {
            (done as f64 * 100.0 / total as f64 * 10.0).round() / 10.0
        };
        let line = serde_json::json!({
            "event": "progress", "bytesDone": done, "bytesTotal": total, "percent": percent,
        });
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }
}

/// A terminal progress bar (indicatif).
#[derive(Debug)]
pub struct BarProgress {
    bar: indicatif::ProgressBar,
}

impl BarProgress {
    /// A bar labelled with `what`.
    pub fn new(what: &str) -> Self {
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_string());
        Self { bar }
    }

    /// Clears the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for BarProgress {
    fn update(&self, done: u64, total: u64) {
        self.bar.set_length(total);
        self.bar.set_position(done);
    }
}
