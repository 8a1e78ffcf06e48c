//! `kubectl-tvk mirror`: mirrors this operator's catalog, bundles and every image they run into
//! a registry or an OCI layout on disk, and writes the cluster resources that make OLM install
//! from the mirror. A thin layer over `tvk_oci::mirror`: flags, a progress display, the summary.

use std::{
    io::IsTerminal,
    process::ExitCode,
    sync::{Arc, Mutex},
};

use indicatif::{ProgressBar, ProgressStyle};
use tvk_oci::{
    copy::BlobOutcome,
    mirror::{LineProgress, MirrorArgs, MirrorOptions, Progress, ProgressEvent, run},
};

/// Exit status when some images could not be mirrored (a re-run resumes).
const EXIT_FAILED: u8 = 1;
/// Exit status for bad flags or configuration.
const EXIT_USAGE: u8 = 2;

/// Runs `mirror` with parsed flags.
pub fn mirror(args: MirrorArgs) -> ExitCode {
    let options = match MirrorOptions::try_from(args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("kubectl-tvk mirror: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kubectl-tvk mirror: failed to start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let progress: Arc<dyn Progress> = if std::io::stderr().is_terminal() {
        Arc::new(BarProgress::new())
    } else {
        Arc::new(LineProgress::new(std::io::stderr()))
    };
    let result = runtime.block_on(run(options, progress.clone()));
    drop(progress);
    match result {
        Ok(summary) => {
            println!("{summary}");
            for path in &summary.resources {
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kubectl-tvk mirror: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// A terminal progress bar over images, with the bytes copied so far in its message.
struct BarProgress {
    bar: ProgressBar,
    bytes: Mutex<u64>,
}

impl BarProgress {
    fn new() -> Self {
        let bar = ProgressBar::new(0);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} images  {msg}",
        ) {
            bar.set_style(style);
        }
        Self {
            bar,
            bytes: Mutex::new(0),
        }
    }
}

impl Progress for BarProgress {
    fn event(&self, event: ProgressEvent<'_>) {
        match event {
            ProgressEvent::Planned { images } => self.bar.set_length(images as u64),
            ProgressEvent::Blob {
                size,
                outcome: BlobOutcome::Copied,
                ..
            } => {
                let mut bytes = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
                *bytes += size;
                self.bar
                    .set_message(format!("{:.1} MiB copied", *bytes as f64 / 1048576.0));
            }
            ProgressEvent::Blob { .. } => {}
            ProgressEvent::ImageDone { .. } => self.bar.inc(1),
            ProgressEvent::ImageFailed { source, error } => {
                self.bar.println(format!("FAILED {source}: {error}"));
                self.bar.inc(1);
            }
        }
    }
}

impl Drop for BarProgress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
