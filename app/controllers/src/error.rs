//! The control plane's error type. Each variant is a category ([`Error::category`]) for metrics
//! and Event reasons, and decides the requeue ([`Error::is_user_error`]): a spec the user must
//! fix waits for a change; everything else is retried with backoff.

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An apiserver call failed.
    #[error("failed to {action}: {source}")]
    Kube {
        /// What was attempted, e.g. "create Job tvk-meta-…".
        action: String,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The object cannot be acted on as written; the message says what to change.
    #[error("{0}")]
    InvalidSpec(String),
    /// An object lacks a field the apiserver always sets (name, namespace, uid).
    #[error("the {kind} has no {field}")]
    Incomplete {
        /// The kind.
        kind: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// A value could not be (de)serialized.
    #[error("failed to convert {what}: {source}")]
    Serde {
        /// What was converted.
        what: &'static str,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
    /// The finalizer machinery failed.
    #[error("failed to run the finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// The target could not be reached to delete a backup's data (retried; the finalizer
    /// stays until it succeeds).
    #[error("failed to delete backup data on the target: {0}")]
    TargetData(String),
    /// A blocking task was cancelled.
    #[error("an internal task failed: {0}")]
    Task(String),
}

impl Error {
    /// A short category for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "KubeError",
            Self::InvalidSpec(_) => "InvalidSpec",
            Self::Incomplete { .. } => "InvalidObject",
            Self::Serde { .. } => "SerializationError",
            Self::Finalizer(_) => "FinalizerError",
            Self::TargetData(_) => "TargetError",
            Self::Task(_) => "InternalError",
        }
    }

    /// Whether only a change of the object can fix it (no retry with backoff).
    pub fn is_user_error(&self) -> bool {
        matches!(self, Self::InvalidSpec(_) | Self::Incomplete { .. })
    }

    /// Wraps a client error with what was attempted.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            action: action.into(),
            source: Box::new(source),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `true` when the error is the apiserver's 404.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// `true` when the error is the apiserver's 409.
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}
