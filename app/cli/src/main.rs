//! `kubectl-tvk`: the user CLI of the TrilioVault application, in kubectl-plugin form
//! (`kubectl tvk …` runs it when it is on the PATH).
//!
//! Subcommands so far: `validate` (offline validation of manifests with the admission webhook's
//! own rules) and `mirror` (the catalog, bundles and images into a registry or an OCI layout for
//! air-gapped installs, over `tvk_oci::mirror`).

#![forbid(unsafe_code)]

mod mirror;
mod validate;

use std::{io, process::ExitCode};

use clap::{Parser, Subcommand};

/// TrilioVault for Kubernetes, from the command line.
#[derive(Debug, Parser)]
#[command(name = "kubectl-tvk", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate manifests offline with the admission webhook's rules.
    Validate(validate::ValidateArgs),
    /// Mirror the operator catalog, its bundles and every image they run into a registry or an
    /// OCI layout (dir:PATH), and write the resources that make OLM install from the mirror.
    Mirror(Box<tvk_oci::mirror::MirrorArgs>),
}

fn main() -> ExitCode {
    // clap exits with status 2 on a usage error, as `validate` documents.
    let cli = Cli::parse();
    match cli.command {
        Command::Validate(args) => {
            let registry = validate::admission_registry();
            let report = validate::validate(&args, &registry, &mut io::stdin().lock());
            let printed = validate::print_report(
                &report,
                args.output,
                &mut io::stdout().lock(),
                &mut io::stderr().lock(),
            );
            if let Err(err) = printed {
                // A closed pipe (`| head`) is not worth a second error message.
                if err.kind() != io::ErrorKind::BrokenPipe {
                    eprintln!("kubectl-tvk: failed to write the results: {err}");
                }
                return ExitCode::from(validate::EXIT_USAGE);
            }
            ExitCode::from(report.summary.exit_status())
        }
        Command::Mirror(args) => mirror::mirror(*args),
    }
}
