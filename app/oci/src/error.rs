//! The errors of the OCI client: one enum, each variant naming what was wrong and what to do.

use std::path::PathBuf;

/// Why an OCI operation (registry request, layout access, manifest check) failed.
///
/// Messages name the image, repository or blob involved and never contain credentials, tokens
/// or upload URLs (their query strings carry registry state).
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// An image reference that does not follow the distribution reference grammar.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A digest that is not `sha256:` followed by 64 lower-case hex digits.
    #[error("invalid digest {0:?}: expected sha256:<64 lower-case hex digits>")]
    InvalidDigest(String),
    /// The registry or layout does not have the manifest or blob.
    #[error("{what} was not found (HTTP 404): check that the image exists and the name is right")]
    NotFound {
        /// The image, manifest or blob that is missing.
        what: String,
    },
    /// Authentication failed or is required and no usable credentials were found.
    #[error(
        "failed to authenticate to {registry} for {what} (HTTP 401): add credentials for it to \
         the auth file (--authfile, $XDG_RUNTIME_DIR/containers/auth.json or ~/.docker/config.json)"
    )]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// What was being accessed.
        what: String,
    },
    /// The credentials were accepted but lack the permission.
    #[error(
        "access to {what} on {registry} was denied (HTTP 403): the credentials lack permission"
    )]
    Forbidden {
        /// The registry host.
        registry: String,
        /// What was being accessed.
        what: String,
    },
    /// Content whose SHA-256 differs from the digest it was requested by.
    #[error(
        "digest mismatch for {what}: expected {expected}, got {actual}; the content is corrupted \
         or was altered in transit, so it was refused"
    )]
    DigestMismatch {
        /// The blob or manifest.
        what: String,
        /// The digest asked for.
        expected: String,
        /// The digest of what was received.
        actual: String,
    },
    /// Content shorter or longer than its descriptor says.
    #[error("truncated or oversized {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob or manifest.
        what: String,
        /// Size from the descriptor.
        expected: u64,
        /// Bytes received.
        actual: u64,
    },
    /// A manifest that is not valid JSON of the shape its media type requires.
    #[error("malformed manifest {what}: {reason}")]
    MalformedManifest {
        /// The image whose manifest it is.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A manifest media type this client does not copy (refused rather than copied blindly).
    #[error(
        "unsupported media type {media_type:?} for {what}: only OCI image manifests and indexes \
         and Docker v2 schema 2 manifests and manifest lists are supported"
    )]
    UnsupportedMediaType {
        /// The image.
        what: String,
        /// The media type found.
        media_type: String,
    },
    /// A manifest above the size cap (a defence against hostile registries).
    #[error("manifest {what} is larger than the {limit}-byte cap and was refused")]
    ManifestTooLarge {
        /// The image.
        what: String,
        /// The cap in bytes.
        limit: usize,
    },
    /// The registry answered with an unexpected status (after retries for transient ones).
    #[error("registry {registry} answered HTTP {status} for {what}{detail}")]
    Status {
        /// The registry host.
        registry: String,
        /// HTTP status code.
        status: u16,
        /// What was being accessed.
        what: String,
        /// The registry's error message, prefixed with ": ", or empty.
        detail: String,
    },
    /// The registry could not be reached (after retries).
    #[error("failed to reach registry {registry} for {what}: {source}")]
    Transport {
        /// The registry host.
        registry: String,
        /// What was being accessed.
        what: String,
        /// The transport error (its URL removed).
        #[source]
        source: reqwest::Error,
    },
    /// A blob download delivered no byte for too long.
    #[error("blob download of {what} from {registry} stalled: no data for {seconds} s")]
    Stalled {
        /// The registry host.
        registry: String,
        /// The blob.
        what: String,
        /// The idle time allowed.
        seconds: u64,
    },
    /// A file-system operation on an OCI layout or auth file failed.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        /// What was being done ("read", "write", "rename" …).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A directory that is not a usable OCI image layout.
    #[error("invalid OCI layout at {}: {reason}", path.display())]
    InvalidLayout {
        /// The layout root.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An auth file that cannot be parsed.
    #[error("failed to read credentials from {}: {reason}", path.display())]
    AuthFile {
        /// The auth file.
        path: PathBuf,
        /// What is wrong (never the credential itself).
        reason: String,
    },
    /// The bearer-token flow failed.
    #[error("failed to get a token for {registry} from its auth server: {reason}")]
    Token {
        /// The registry host.
        registry: String,
        /// What went wrong (never the credential or token).
        reason: String,
    },
    /// A transfer was stopped on purpose (its content failed verification, or the run ended).
    #[error("transfer of {what} was aborted: {reason}")]
    Aborted {
        /// The blob or image.
        what: String,
        /// Why.
        reason: String,
    },
    /// The TLS settings (CA file) are unusable.
    #[error("invalid TLS configuration: {0}")]
    Tls(String),
    /// An operation on the image store of a backup target (S3 or NFS) failed (after the
    /// object store's own retries).
    #[error("failed to {action} {key} on the backup target: {source}")]
    Store {
        /// What was being done ("read", "write", "list" …).
        action: &'static str,
        /// The object's key (relative to the target).
        key: String,
        /// The object store's error (boxed: it is large and errors are rare).
        #[source]
        source: Box<object_store::Error>,
    },
}

impl OciError {
    /// Whether retrying the same operation may succeed (rate limits, 5xx, timeouts, resets).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::Stalled { .. } => true,
            Self::Store { source, .. } => matches!(
                **source,
                object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
            ),
            Self::Transport { source, .. } => {
                source.is_timeout()
                    || source.is_connect()
                    || source.is_request()
                    || source.is_body()
            }
            _ => false,
        }
    }

    /// A short category name for metrics, Events and summaries.
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidReference { .. } | Self::InvalidDigest(_) => "InvalidReference",
            Self::NotFound { .. } => "NotFound",
            Self::Unauthorized { .. } | Self::Token { .. } => "Unauthorized",
            Self::Forbidden { .. } => "Forbidden",
            Self::DigestMismatch { .. } => "DigestMismatch",
            Self::SizeMismatch { .. } => "TruncatedBlob",
            Self::MalformedManifest { .. } | Self::ManifestTooLarge { .. } => "MalformedManifest",
            Self::UnsupportedMediaType { .. } => "UnsupportedMediaType",
            Self::Status { .. } => "RegistryError",
            Self::Transport { .. } | Self::Stalled { .. } => "RegistryUnreachable",
            Self::Io { .. } | Self::InvalidLayout { .. } => "LayoutError",
            Self::AuthFile { .. } | Self::Tls(_) => "Configuration",
            Self::Aborted { .. } => "Aborted",
            Self::Store { .. } => "TargetError",
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
