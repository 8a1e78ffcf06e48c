//! `tvk-olm-validate`: the checks OLM's own tools make, run on this project's OLM bundles and
//! file-based catalog without those tools.
//!
//! `cargo xtask bundle|catalog|validate` and the test suite call [`validate_bundle`] on each
//! generated bundle directory and [`validate_catalog`] on the catalog directory; a generator
//! refuses to finish while the [`Report`] holds an error. The rules are ported from
//! operator-framework/api (`operator-sdk bundle validate` with the default validators plus
//! `--select-optional suite=operatorframework`: CSV, CRD, bundle, OperatorHub, good practices,
//! removed APIs) and from operator-framework/operator-registry (`opm validate`: the declarative
//! config to model conversion and the model's `Validate`), plus the project's own supply-chain
//! rules (images by digest only, every deployed image in `relatedImages`) and the OpenShift
//! certification annotations. README.md lists every rule id with its upstream source.
//!
//! Every input is read with bounds (files through `tvk_api::yaml` with size and nesting caps);
//! nothing here panics on hostile input, and a problem is always a [`Finding`] naming the file
//! and a stable rule id, never an early exit that hides the other findings.

#![forbid(unsafe_code)]

mod bundle;
mod catalog;
mod crd;
mod csv;
mod good_practices;
mod image;
mod json;
mod operatorhub;
mod report;
mod semver_range;

pub use bundle::{MAX_COMPRESSED_BUNDLE_BYTES, validate_bundle};
pub use catalog::validate_catalog;
pub use report::{Finding, Report, Severity};
pub use semver_range::{SemverRange, SemverRangeError};
