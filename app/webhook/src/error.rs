//! Errors of the webhook server.

use std::{io, net::SocketAddr};

/// What can stop the webhook server from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound (address in use, no permission for the port, …).
    #[error(
        "failed to bind the {listener} listener on {addr}: {source}; choose another address with --{flag}"
    )]
    Bind {
        /// `admission` or `metrics`.
        listener: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The flag that sets it.
        flag: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A listener stopped with an I/O error.
    #[error("the {listener} listener failed: {source}")]
    Serve {
        /// `admission` or `metrics`.
        listener: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A listener task ended abnormally (it panicked or was cancelled).
    #[error("the {listener} listener task ended abnormally: {source}")]
    Task {
        /// `admission` or `metrics`.
        listener: &'static str,
        /// The join error.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The serving certificate or key could not be used; the message says which and why.
    #[error("serving certificate: {0}")]
    Certificate(String),
    /// Logging could not be set up.
    #[error("failed to set up logging: {0}")]
    Logging(String),
}

impl Error {
    /// A short category, for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Bind { .. } => "Bind",
            Self::Serve { .. } | Self::Task { .. } => "Serve",
            Self::Certificate(_) => "Certificate",
            Self::Logging(_) => "Logging",
        }
    }
}
