//! Validates bundle and catalog directories from the command line, for a quick look while
//! editing generators (`cargo xtask validate` is the real entry point):
//!
//! ```sh
//! cargo run -p tvk-olm-validate --example validate -- bundle catalog
//! ```
//!
//! A directory with a `manifests/` folder is validated as a bundle, anything else as a
//! file-based catalog. Exit status 1 when any error was found, 2 on usage errors.

use std::{path::Path, process::ExitCode};

use tvk_olm_validate::{validate_bundle, validate_catalog};

fn main() -> ExitCode {
    let dirs: Vec<String> = std::env::args().skip(1).collect();
    if dirs.is_empty() {
        eprintln!("usage: validate DIR… (bundle directories and catalog directories)");
        return ExitCode::from(2);
    }
    let mut ok = true;
    for dir in dirs {
        let path = Path::new(&dir);
        let (what, report) = if path.join("manifests").is_dir() {
            ("bundle", validate_bundle(path))
        } else {
            ("catalog", validate_catalog(path))
        };
        print!("{report}");
        println!(
            "{what} {dir}: {} error(s), {} warning(s)",
            report.errors().count(),
            report.warnings().count()
        );
        ok &= report.is_ok();
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
