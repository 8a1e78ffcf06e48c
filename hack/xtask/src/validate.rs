//! `cargo xtask validate`: the OLM checks of `tvk-olm-validate` on the generated bundles and
//! catalog. Warnings are printed; any error fails the command (and `cargo xtask images`
//! before it builds a bundle or catalog image).

use std::path::Path;

use crate::{bundle::BUNDLES, catalog::CATALOG_DIR};

/// Validates every bundle directory under `root`.
pub fn bundles(root: &Path) -> Result<(), String> {
    for bundle in BUNDLES {
        let dir = root.join(bundle.dir);
        outcome(&dir, tvk_olm_validate::validate_bundle(&dir))?;
    }
    Ok(())
}

/// Validates the file-based catalog under `root`.
pub fn catalog(root: &Path) -> Result<(), String> {
    let dir = root.join(CATALOG_DIR);
    outcome(&dir, tvk_olm_validate::validate_catalog(&dir))
}

fn outcome(dir: &Path, report: tvk_olm_validate::Report) -> Result<(), String> {
    for warning in report.warnings() {
        eprintln!("{warning}");
    }
    let errors: Vec<String> = report.errors().map(ToString::to_string).collect();
    if errors.is_empty() {
        println!(
            "{}: valid ({} warnings)",
            dir.display(),
            report.warnings().count()
        );
        Ok(())
    } else {
        Err(format!(
            "{} fails OLM validation:\n  {}",
            dir.display(),
            errors.join("\n  ")
        ))
    }
}

#[cfg(test)]
mod tests {
    /// The committed bundles and catalog pass every OLM check (CI also runs
    /// `cargo xtask check-generated`, so these are what a fresh generation gives).
    #[test]
    fn committed_bundles_and_catalog_pass_olm_validation() {
        let root = crate::repo_root();
        super::bundles(&root).unwrap();
        super::catalog(&root).unwrap();
    }
}
