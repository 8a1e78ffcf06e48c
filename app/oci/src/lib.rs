//! `tvk-oci`: the project's OCI distribution client and its mirroring engine.
//!
//! It sits below the user CLI (`kubectl-tvk mirror`, a thin layer over [`mirror::run`]) and,
//! below image backup and restore (issue 9), which reuse the same client and copy engine with a
//! backup target's content-addressed [`store`] as one more [`copy::Endpoint`] kind. Layers, bottom up:
//! [`reference`](mod@reference) and [`manifest`] (validated names, digests and manifests), [`auth`] and
//! [`registry`] (distribution spec v2 over reqwest/rustls with token auth and retries),
//! [`layout`] (OCI image layouts on disk), [`copy`] (streaming, verifying, resumable copies of
//! whole images), and on top [`catalog`] / [`image_set`] (what to mirror), [`resources`] (what
//! the cluster needs afterwards) and [`mirror`] (the whole run).
//!
//! The CLI flattens [`mirror::MirrorArgs`] into its `mirror` subcommand, converts them with
//! `MirrorOptions::try_from`, calls [`mirror::run`] with a [`mirror::Progress`] of its own (or
//! [`mirror::LineProgress`]) and prints the [`mirror::MirrorSummary`]; `examples/mirror.rs` is
//! exactly that layer. Image backup and restore (`tvk-metamover images`) use
//! [`copy::CopyEngine::copy_image`] directly between [`registry::RegistryClient`]s and a
//! target's [`store::ImageStore`] (`Endpoint::Store`), which also records each backup's images
//! and collects the blobs no backup uses any more.

#![forbid(unsafe_code)]

pub mod auth;
pub mod catalog;
pub mod catalog_image;
pub mod copy;
pub mod error;
pub mod image_set;
pub mod layout;
pub mod manifest;
pub mod mirror;
pub mod reference;
pub mod registry;
pub mod resources;
pub mod retry;
pub mod store;
mod yaml;

pub use error::OciError;
pub use reference::{Digest, ImageReference};
