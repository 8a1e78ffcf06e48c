//! A stand-alone `mirror` command over the library, used by `hack/bench-mirror.sh` and for
//! trying the engine before `kubectl-tvk mirror` wires the same [`MirrorArgs`] into the CLI:
//!
//! `cargo run --release -p tvk-oci --example mirror -- --catalog DIR docker://HOST/NS`

use std::{process::ExitCode, sync::Arc};

use clap::Parser;
use tvk_oci::mirror::{LineProgress, MirrorArgs, MirrorOptions, run};

/// Mirror an operator catalog and its images (see `tvk_oci::mirror`).
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: MirrorArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = match MirrorOptions::try_from(cli.args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match run(options, Arc::new(LineProgress::new(std::io::stderr()))).await {
        Ok(summary) => {
            println!("{summary}");
            for path in &summary.resources {
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
