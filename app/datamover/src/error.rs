//! The datamover's error type. Every variant says what was wrong and, where the user can act,
//! what to do; [`Error::is_retryable`] decides the process exit code (75 = retry later).

use std::io;

/// The cause of a failure, for programs: exit codes, the `"kind"` of the JSON result line and
/// the Target controller's condition reasons all come from it. Derived from typed sources
/// (`io::ErrorKind`, object_store's HTTP status and error kind, the S3 error `<Code>`, rustls
/// and I/O errors found by walking the `source()` chain) — see `target::s3_error_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The endpoint's host name does not resolve.
    Dns,
    /// The connection was refused, reset or could not be opened.
    Connect,
    /// A request or connection timed out.
    Timeout,
    /// TLS failed (untrusted certificate, or TLS spoken to a plain-HTTP port).
    Tls,
    /// The credentials were refused (InvalidAccessKeyId, SignatureDoesNotMatch, 401).
    Auth,
    /// The credentials may not do this (AccessDenied, 403, EACCES).
    Permission,
    /// The bucket does not exist (NoSuchBucket).
    BucketMissing,
    /// An object or file is missing.
    NotFound,
    /// A create-only write found the object present.
    AlreadyExists,
    /// The target asked us to slow down (SlowDown, 429, 503).
    Throttled,
    /// The target failed (5xx other than 503).
    Server,
    /// A deletion was refused by object lock / WORM retention.
    ObjectLock,
    /// The node's clock is off (RequestTimeTooSkewed).
    ClockSkew,
    /// No space left (ENOSPC, EDQUOT).
    NoSpace,
    /// Another local I/O failure.
    LocalIo,
    /// A system call was interrupted.
    Interrupted,
    /// Stored data is damaged or malformed (image, index, manifest, digest mismatch).
    Corrupt,
    /// Bad command-line or API input.
    InvalidInput,
    /// The target refused an operation for another reason retrying does not fix.
    TargetRefused,
    /// The target failed for a cause not identified above; retried.
    TargetUnavailable,
}

impl ErrorKind {
    /// The name used in the JSON result line and in condition reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dns => "Dns",
            Self::Connect => "Connect",
            Self::Timeout => "Timeout",
            Self::Tls => "Tls",
            Self::Auth => "Auth",
            Self::Permission => "Permission",
            Self::BucketMissing => "BucketMissing",
            Self::NotFound => "NotFound",
            Self::AlreadyExists => "AlreadyExists",
            Self::Throttled => "Throttled",
            Self::Server => "Server",
            Self::ObjectLock => "ObjectLock",
            Self::ClockSkew => "ClockSkew",
            Self::NoSpace => "NoSpace",
            Self::LocalIo => "LocalIo",
            Self::Interrupted => "Interrupted",
            Self::Corrupt => "Corrupt",
            Self::InvalidInput => "InvalidInput",
            Self::TargetRefused => "TargetRefused",
            Self::TargetUnavailable => "TargetUnavailable",
        }
    }

    /// Whether the cause may go away by itself, so that retrying later may succeed (exit 75).
    /// A host name that does not resolve counts: DNS outages and records not yet propagated
    /// are common, and a misconfigured name is reported by kind either way.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::Dns
                | Self::Connect
                | Self::Timeout
                | Self::Throttled
                | Self::Server
                | Self::Interrupted
                | Self::TargetUnavailable
        )
    }

    /// How [`Error::Target`] words a failure of this kind.
    fn target_verb(self) -> &'static str {
        if self.is_transient() {
            "failed to"
        } else {
            "refused to"
        }
    }

    /// What [`Error::Target`] adds for a transient kind.
    fn retry_hint(self) -> &'static str {
        if self.is_transient() {
            "; retry later"
        } else {
            ""
        }
    }

    /// The kind of a local I/O error.
    pub fn from_io(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Self::NoSpace,
            io::ErrorKind::TimedOut => Self::Timeout,
            io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable => Self::Connect,
            io::ErrorKind::Interrupted => Self::Interrupted,
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => Self::Permission,
            io::ErrorKind::NotFound => Self::NotFound,
            _ => Self::LocalIo,
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors of the datamover.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A local read or write failed.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// What we were doing ("read", "write", "open", …).
        action: &'static str,
        /// The file or object concerned.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A QCOW2 image failed validation (hostile or corrupt input).
    #[error("invalid qcow2 image {image}: {reason}")]
    InvalidImage {
        /// The image name (object or file).
        image: String,
        /// The specific check that failed, e.g. "invalid L1 table offset".
        reason: String,
    },
    /// A digest index failed validation.
    #[error("invalid digest index {index}: {reason}")]
    InvalidIndex {
        /// The index name.
        index: String,
        /// What was wrong.
        reason: String,
    },
    /// Stored data does not match the digest recorded at backup time.
    #[error(
        "digest mismatch in backup {backup}, image {image}, at guest offset {offset}: {detail}; the stored backup is damaged, restore from another backup"
    )]
    DigestMismatch {
        /// Backup id.
        backup: String,
        /// The image object holding the bad cluster (or the index, when it is the index that
        /// disagrees with the chain).
        image: String,
        /// Guest (virtual disk) byte offset of the cluster.
        offset: u64,
        /// What disagreed.
        detail: String,
    },
    /// A manifest was malformed, named a forbidden path or was inconsistent.
    #[error("invalid manifest {name}: {reason}")]
    InvalidManifest {
        /// Object name of the manifest.
        name: String,
        /// What was wrong.
        reason: String,
    },
    /// An object a committed backup needs is missing from the target.
    #[error(
        "object {object} needed by backup {backup} is missing from the target; this backup and every later one in its chain cannot be restored"
    )]
    MissingObject {
        /// The backup that needs it.
        backup: String,
        /// The object name.
        object: String,
    },
    /// The target (S3 or filesystem) failed in a way worth retrying later.
    #[error("target unavailable while trying to {action} {object}: {message}; retry later")]
    TargetUnavailable {
        /// What we were doing.
        action: &'static str,
        /// The object concerned.
        object: String,
        /// The (credential-redacted) error.
        message: String,
    },
    /// The target failed for an identified cause ([`ErrorKind`]): retrying later helps when
    /// the kind is transient (throttled, 5xx, unreachable), not otherwise (credentials,
    /// permissions, missing bucket, TLS).
    #[error("target {} {action} {object} ({kind}): {message}{}", .kind.target_verb(), .kind.retry_hint())]
    Target {
        /// Why.
        kind: ErrorKind,
        /// What we were doing.
        action: &'static str,
        /// The object concerned.
        object: String,
        /// The (credential-redacted) error.
        message: String,
    },
    /// The S3 endpoint refused requests because this node's clock is off
    /// (`RequestTimeTooSkewed`). Not retried blindly: time synchronisation must be fixed.
    #[error(
        "the clock of this node differs too much from the S3 endpoint's (RequestTimeTooSkewed) while trying to {action} {object}; fix time synchronisation (NTP) and retry"
    )]
    ClockSkew {
        /// What we were doing.
        action: &'static str,
        /// The object concerned.
        object: String,
    },
    /// A create-only write found the object already present.
    /// The S3 endpoint's TLS certificate was not accepted: a configuration problem that
    /// retrying does not fix.
    #[error(
        "the S3 endpoint's TLS certificate is not trusted while trying to {action} {object} ({message}); pass --s3-ca-file with the CA that signed it (or --s3-skip-tls-verify for a test endpoint)"
    )]
    TlsUntrusted {
        action: &'static str,
        object: String,
        message: String,
    },
    /// The target refused to delete an object that retention wants gone: S3 Object Lock
    /// (retention or legal hold → `AccessDenied`), a bucket policy, or a WORM / immutable file
    /// on a filesystem target. Retention defers such deletions instead of failing.
    #[error(
        "target refused to delete {object} ({message}); it is probably under S3 Object Lock retention or legal hold, or on a WORM share: the deletion is deferred and retried by the next coalesce"
    )]
    ObjectLocked { object: String, message: String },
    #[error("{object} already exists on the target; a committed object is never overwritten")]
    AlreadyExists {
        /// The object name.
        object: String,
    },
    /// Bad command-line or API input.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// Whether retrying the whole operation later may succeed (network, target unavailable).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::TargetUnavailable { .. } => true,
            _ => self.kind().is_transient(),
        }
    }

    /// The cause, by kind (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { source, .. } => ErrorKind::from_io(source),
            Error::InvalidImage { .. }
            | Error::InvalidIndex { .. }
            | Error::DigestMismatch { .. }
            | Error::InvalidManifest { .. } => ErrorKind::Corrupt,
            Error::MissingObject { .. } => ErrorKind::NotFound,
            Error::TargetUnavailable { .. } => ErrorKind::TargetUnavailable,
            Error::Target { kind, .. } => *kind,
            Error::ClockSkew { .. } => ErrorKind::ClockSkew,
            Error::TlsUntrusted { .. } => ErrorKind::Tls,
            Error::ObjectLocked { .. } => ErrorKind::ObjectLock,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::Usage(_) => ErrorKind::InvalidInput,
        }
    }

    /// A short category name for metrics, Events and the JSON result line.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Io { .. } => "Io",
            Error::InvalidImage { .. } => "InvalidImage",
            Error::InvalidIndex { .. } => "InvalidIndex",
            Error::DigestMismatch { .. } => "DigestMismatch",
            Error::InvalidManifest { .. } => "InvalidManifest",
            Error::MissingObject { .. } => "MissingObject",
            Error::TargetUnavailable { .. } => "TargetUnavailable",
            Error::Target { .. } => "Target",
            Error::ClockSkew { .. } => "ClockSkew",
            Error::ObjectLocked { .. } => "ObjectLocked",
            Error::TlsUntrusted { .. } => "TlsUntrusted",
            Error::AlreadyExists { .. } => "AlreadyExists",
            Error::Usage(_) => "Usage",
        }
    }

    /// An I/O error on `path` while doing `action`.
    pub fn io(action: &'static str, path: impl std::fmt::Display, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.to_string(),
            source,
        }
    }

    /// An image validation error.
    pub fn image(image: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        Error::InvalidImage {
            image: image.to_string(),
            reason: reason.into(),
        }
    }

    /// An index validation error.
    pub fn index(index: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        Error::InvalidIndex {
            index: index.to_string(),
            reason: reason.into(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
