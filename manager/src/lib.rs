//! The manager (operator) of the backup application: a Helm-style reconciler of
//! `TrilioVaultManager` without Helm. It owns the TVM type and its admission ([`tvm`],
//! [`admission`]), the values model ([`values`]) that merges `templates/values.yaml` with a
//! TVM, the strict handlebars renderer ([`render`]) that turns templates compiled into the binary
//! into Kubernetes objects in apply order, and the reconciler that server-side applies them,
//! prunes what is no longer rendered and reports helm-operator status. The `tvk-manager` binary
//! exposes `render` (offline, like `helm template`) and `run` (the controller).
#![forbid(unsafe_code)]

pub mod admission;
pub mod admission_server;
pub mod apply;
pub mod crd;
pub use tvk_lease as leader;
pub mod operations;
pub mod reconcile;
pub mod render;
pub mod tvm;
pub mod upgrade;
pub mod values;
pub mod webhook_cert;
