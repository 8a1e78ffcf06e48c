//! Template values: a fork of `gtmpl_value` 0.5.1 (MIT, same authors as gtmpl). Changed: a
//! float stays a float (upstream turned every float with no fraction into an integer, and
//! every negative float with a fraction too, so Helm's `float64` values printed as integers:
//! Go prints `1000000.0` as `1e+06`); `Other` errors carry no `anyhow` dependency.

mod from;
mod number;
#[allow(clippy::module_inception)]
mod value;

pub use from::*;
pub use value::*;
