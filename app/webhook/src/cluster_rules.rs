//! Admission rules that depend on the cluster's state, not only on the object: "at most one of
//! these per namespace", "this name is already taken". They run after a kind's pure rules allowed
//! the request, only on the validating endpoint, and only for a CREATE or an UPDATE that changes
//! the spec (the same ratchet as the pure rules: an object admitted before can always have its
//! labels edited or its finalizer removed). The application's webhook has none; the manager
//! plugs in its TrilioVaultManager rules, which list TVMs through its client.

use std::{fmt, future::Future, pin::Pin, sync::Arc};

use tvk_api::admission::{FieldError, GroupVersionKind, Request};

/// Why a cluster-state rule did not admit a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterDenial {
    /// The request conflicts with what exists; each error names the field and what to do.
    Conflict(Vec<FieldError>),
    /// The state could not be read (API server unreachable, no permission): the request is
    /// denied, since the webhook fails closed, and the message says why.
    Unavailable(String),
}

/// The future a [`ClusterRules::check`] returns.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ClusterDenial>> + Send + 'a>>;

/// The cluster-state rules of one kind.
pub trait ClusterRules: Send + Sync {
    /// The kind judged.
    fn gvk(&self) -> GroupVersionKind;
    /// Judges a CREATE or UPDATE that the kind's pure rules allowed.
    fn check<'a>(&'a self, request: Request<'a>) -> CheckFuture<'a>;
}

/// The cluster-state rules of every kind that has some, looked up by group and kind.
#[derive(Clone, Default)]
pub struct ClusterRuleSet {
    rules: Vec<Arc<dyn ClusterRules>>,
}

impl fmt::Debug for ClusterRuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.rules.iter().map(|r| r.gvk()))
            .finish()
    }
}

impl ClusterRuleSet {
    /// No rules: every request the pure rules allow is allowed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a kind's rules (builder style).
    pub fn with(mut self, rules: Arc<dyn ClusterRules>) -> Self {
        self.rules.push(rules);
        self
    }

    /// The rules of this group and kind, if any.
    pub fn find(&self, group: &str, kind: &str) -> Option<&dyn ClusterRules> {
        self.rules
            .iter()
            .find(|r| {
                let gvk = r.gvk();
                gvk.group == group && gvk.kind == kind
            })
            .map(|r| r.as_ref())
    }
}
