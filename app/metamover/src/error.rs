//! The metamover's error type. Each variant says what was wrong and what to do;
//! [`Error::is_retryable`] decides the exit code (75 = the control plane retries the Job later).

/// Result with the metamover's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the metamover.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("failed to {action}: {}", describe_kube(source))]
    Kube {
        /// What we were doing.
        action: String,
        /// The client's error (boxed: it is large and errors are rare).
        #[source]
        source: Box<kube::Error>,
    },
    /// A namespace being backed up is gone or being deleted.
    #[error(
        "namespace {namespace} {state} during the backup; nothing of it can be captured consistently — recreate the namespace or remove it from the plan, then back up again"
    )]
    NamespaceVanished {
        /// The namespace.
        namespace: String,
        /// `was deleted` or `is being deleted`.
        state: &'static str,
    },
    /// The Backup, its plan or another object it names does not exist.
    #[error("{what} was not found; {hint}")]
    NotFound {
        /// The missing object.
        what: String,
        /// What the user can do.
        hint: &'static str,
    },
    /// The plan cannot be turned into a selection (bad selector, missing field).
    #[error("invalid backup plan {plan}: {reason}")]
    Plan {
        /// The plan.
        plan: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A Helm release's storage could not be decoded.
    #[error("failed to read Helm release storage {storage}: {reason}")]
    HelmRelease {
        /// Storage object name.
        storage: String,
        /// What was wrong.
        reason: String,
    },
    /// Reading or writing the target failed.
    #[error(transparent)]
    Target(#[from] tvk_datamover::Error),
    /// What is on the target does not fit this backup (a different backup's metadata, a
    /// damaged index).
    #[error("metadata on the target at {key} is unusable: {reason}")]
    Layout {
        /// The object.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// The volume data the commit must follow is not on the target.
    #[error(
        "volume data of PVC {pvc} is not committed on the target (no {key}); the commit object is written only after every volume is uploaded — run the data upload first"
    )]
    DataMissing {
        /// PVC name.
        pvc: String,
        /// The manifest looked for.
        key: String,
    },
    /// Encoding or decoding JSON failed.
    #[error("failed to {action}: {source}")]
    Json {
        /// What we were doing.
        action: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// The Restore cannot be carried out as it stands (no plan yet, a blocked plan, a source
    /// that does not match).
    #[error("{restore}: {reason}")]
    Restore {
        /// `Restore ns/name` or `ClusterRestore name`.
        restore: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// An object could not be restored.
    #[error("failed to restore {object}: {reason}")]
    ObjectFailed {
        /// The object (kind, namespace, name).
        object: String,
        /// Why.
        reason: String,
    },
    /// Bad command-line or environment input.
    #[error("{0}")]
    Usage(String),
    /// A container image could not be backed up or restored (`tvk-metamover images`).
    #[error("{message}")]
    Image {
        /// What failed, naming the image (and workload or registry).
        message: String,
        /// A registry or target fault that may pass (429, 5xx, timeouts).
        retryable: bool,
        /// Short category (`ImageNotFound`, `RegistryAuth`, …).
        category: &'static str,
    },
}

fn describe_kube(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => other.to_string(),
    }
}

impl Error {
    /// A Kubernetes API failure while doing `action`.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            action: action.into(),
            source: Box::new(source),
        }
    }

    /// A JSON failure while doing `action`.
    pub fn json(action: impl Into<String>, source: serde_json::Error) -> Self {
        Self::Json {
            action: action.into(),
            source,
        }
    }

    /// Whether running the Job again later may succeed (API 5xx, 429, timeouts, connection
    /// failures, target unavailability).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Kube { source, .. } => kube_retryable(source),
            Self::Target(e) => e.is_retryable(),
            Self::Image { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// Short category for the result line (metrics, Event reasons).
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "KubernetesAPI",
            Self::NamespaceVanished { .. } => "NamespaceVanished",
            Self::NotFound { .. } => "NotFound",
            Self::Plan { .. } => "InvalidPlan",
            Self::HelmRelease { .. } => "HelmRelease",
            Self::Target(_) => "Target",
            Self::Layout { .. } => "Layout",
            Self::DataMissing { .. } => "DataMissing",
            Self::Json { .. } => "Encoding",
            Self::Restore { .. } => "Restore",
            Self::ObjectFailed { .. } => "ObjectFailed",
            Self::Usage(_) => "Usage",
            Self::Image { category, .. } => category,
        }
    }
}

/// API errors worth a retry: server-side failures, throttling, timeouts and transport errors.
pub fn kube_retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429 || s.code == 408,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// The API answered with this HTTP status.
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("boom", "Reason")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn server_side_failures_are_retryable_and_client_side_ones_are_not() {
        for code in [500, 503, 504, 429, 408] {
            let e = Error::kube("list pods", api(code));
            assert!(e.is_retryable(), "{code}");
            assert!(e.to_string().contains("failed to list pods"), "{e}");
        }
        for code in [400, 403, 404, 422] {
            assert!(!Error::kube("x", api(code)).is_retryable(), "{code}");
        }
        assert!(
            !Error::NamespaceVanished {
                namespace: "a".into(),
                state: "was deleted"
            }
            .is_retryable()
        );
        let unavailable = Error::Target(tvk_datamover::Error::TargetUnavailable {
            action: "write",
            object: "k".into(),
            message: "503".into(),
        });
        assert!(unavailable.is_retryable());
        assert!(is_status(&api(403), 403));
    }
}
