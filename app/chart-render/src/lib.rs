//! Renders a Helm 3 chart exactly as Helm's engine would, from what a Helm release record holds
//! (`release.chart`, `release.config`), so the metamover can re-render a restored release with
//! new `set`/`setString` values and apply the difference to the restored objects.
//!
//! The engine is Go's `text/template` (`gotmpl`, a fork of `gtmpl-ng`'s engine core fixed
//! where it departed from Go) with Sprig's functions (from `gtmpl-ng`, overridden where they
//! differ from Sprig) and Helm's additions (`include`, `tpl`, `required`, `toYaml`, … see
//! [`funcs`]). The test suite checks it text-for-text against Go's real engine and Sprig
//! (`test/helm-oracle`).
//!
//! Behaviour a caller must know:
//! - `lookup` returns an empty map, as `helm template` and `--dry-run` do (no cluster access).
//! - Random functions (`randAlphaNum`, `uuidv4`, `genCA`, `genPrivateKey`, …) render, but the
//!   templates that called one are listed in [`Rendered::nondeterministic`]: such a chart cannot
//!   reproduce its recorded manifest.
//! - Subcharts are not rendered: Helm does not store them in the release record, and
//!   `.Subcharts` is empty.
//! - Output of every template has each `<no value>` replaced by an empty string, as Helm does.

#![forbid(unsafe_code)]

mod chart;
mod funcs;
mod gotmpl;
mod goyaml;
mod manifest;
mod render;
mod values;

pub use chart::{Chart, ChartFile};
pub use manifest::{ManifestDoc, manifest_docs, split_manifest};
pub use render::{Capabilities, MAX_OUTPUT_BYTES, RenderRequest, Rendered, render};
pub use values::coalesce_values;

/// What went wrong while reading a chart or rendering it. Messages name the template (with
/// line and column when known) and say what to fix.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The release record's `chart` is not a Helm 3 chart as Helm stores it.
    #[error("invalid chart in the release record: {0}")]
    InvalidChart(String),
    /// A template does not parse as a Go template.
    #[error("template {template}: parse error: {message}")]
    Parse {
        /// Template path (`<chart>/templates/<file>`).
        template: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A template failed while executing (a missing function, `required`, `fail`, a type
    /// error, the nesting limit, …).
    #[error("template {template}: {message}")]
    Exec {
        /// Template path (`<chart>/templates/<file>`), with `:line:col` when known.
        template: String,
        /// What went wrong.
        message: String,
    },
    /// Rendered output is not YAML Kubernetes objects (manifest splitting).
    #[error("manifest document from {source_path}: {message}")]
    Manifest {
        /// The `# Source:` path of the document.
        source_path: String,
        /// What went wrong.
        message: String,
    },
}
