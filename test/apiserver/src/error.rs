//! Errors: API errors answered as `Status` objects (the shape kube's `Error::Api` parses), and
//! the errors of starting the server.

use crate::registry::ResourceDef;
use serde_json::{Value, json};

/// An API error, answered as a `meta/v1 Status` with the matching HTTP code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason} ({code}): {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason` (NotFound, AlreadyExists, Conflict, Invalid, …).
    pub reason: String,
    /// Human message, worded as a real apiserver words it.
    pub message: String,
    /// `Status.details`.
    pub details: Value,
}

fn qualified(res: &ResourceDef) -> String {
    if res.group.is_empty() {
        res.plural.clone()
    } else {
        format!("{}.{}", res.plural, res.group)
    }
}

impl ApiError {
    fn new(code: u16, reason: &str, message: String, details: Value) -> Self {
        Self {
            code,
            reason: reason.to_string(),
            message,
            details,
        }
    }

    fn details(res: &ResourceDef, name: &str) -> Value {
        json!({"name": name, "group": res.group, "kind": res.plural})
    }

    /// 404 NotFound for an object.
    pub fn not_found(res: &ResourceDef, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(res)),
            Self::details(res, name),
        )
    }

    /// 404 NotFound for a path the server does not serve.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource".to_string(),
            json!({}),
        )
    }

    /// 409 AlreadyExists.
    pub fn already_exists(res: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(res)),
            Self::details(res, name),
        )
    }

    /// 409 Conflict on a stale resourceVersion or a failed precondition.
    pub fn conflict(res: &ResourceDef, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(res)
            ),
            Self::details(res, name),
        )
    }

    /// 409 Conflict of server-side apply: fields owned by other managers.
    pub fn apply_conflict(res: &ResourceDef, name: &str, conflicts: &[(String, String)]) -> Self {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(manager, field)| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{manager}\""), "field": field})
            })
            .collect();
        let list: Vec<String> = conflicts
            .iter()
            .map(|(m, f)| format!("conflict with \"{m}\": {f}"))
            .collect();
        let mut details = Self::details(res, name);
        details["causes"] = Value::Array(causes);
        Self::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {} conflict{}: {}",
                conflicts.len(),
                if conflicts.len() == 1 { "" } else { "s" },
                list.join(", ")
            ),
            details,
        )
    }

    /// 422 Invalid, with one cause per `(field, message)`.
    pub fn invalid(res: &ResourceDef, name: &str, causes: &[(&str, String)]) -> Self {
        let list: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let mut details = json!({"name": name, "group": res.group, "kind": res.kind});
        details["causes"] = causes
            .iter()
            .map(|(f, m)| json!({"reason": "FieldValueInvalid", "message": m, "field": f}))
            .collect();
        Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {}", res.kind, list.join(", ")),
            details,
        )
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into(), json!({}))
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message.into(), json!({}))
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {method}"),
            json!({}),
        )
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?})"
            ),
            json!({}),
        )
    }

    /// 410 Expired: a watch asked for a resourceVersion older than the kept history.
    pub fn expired(asked: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {asked} ({oldest})"),
            json!({}),
        )
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        })
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No port on 127.0.0.1 could be bound.
    #[error("failed to bind 127.0.0.1:0 for the test apiserver: {0}")]
    Bind(#[source] std::io::Error),
    /// The kubeconfig file could not be written.
    #[error("failed to write the test apiserver's kubeconfig: {0}")]
    Kubeconfig(#[source] std::io::Error),
    /// kube could not build a client from that kubeconfig.
    #[error("failed to build a kube client for the test apiserver: {0}")]
    Client(#[source] kube::Error),
    /// kube could not read that kubeconfig.
    #[error("failed to read back the test apiserver's kubeconfig: {0}")]
    Config(String),
    /// `Options::version` could not be serialized as the `/version` answer.
    #[error("failed to serialize Options::version as the test apiserver's /version answer: {0}")]
    Version(#[source] serde_json::Error),
}
