//! The list of generators. Each returns the files it owns; `all` is their union.

use crate::Files;

/// Folders whose every file (except `README*`) is generated: stale files there are removed.
pub const OWNED_DIRS: &[&str] = &["templates/crds"];

/// Every generated file in the repository.
pub fn all() -> Result<Files, String> {
    let mut files = Files::new();
    files.extend(crds()?);
    Ok(files)
}

/// The application CRDs, `templates/crds/<plural>.<group>.yaml`.
pub fn crds() -> Result<Files, String> {
    Ok(Files::new())
}
