//! The admission contract: one [`KindAdmission`] per kind, pure (no client, no I/O), shared by
//! the webhook, the CLI and the manager. The webhook turns a `FieldError` list into an
//! AdmissionReview denial and a defaulting patch into a `JSONPatch` response; the CLI prints the
//! errors with file, document, kind and name.

use std::fmt;

use serde_json::Value;

/// Group, version and kind of a custom resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupVersionKind {
    /// API group, e.g. `triliovault.trilio.io`.
    pub group: String,
    /// Version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `Target`.
    pub kind: String,
}

impl GroupVersionKind {
    /// `group/version` as written in `apiVersion`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// One problem with an object: the JSON path of the offending field (`spec.retentionConfig.latest`)
/// and what is wrong and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path from the object root, list indexes in brackets: `spec.hooks[1].podSelector`.
    pub path: String,
    /// What is wrong and what is allowed, lower-case start, no trailing period.
    pub message: String,
}

impl FieldError {
    /// A new field error.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The admission operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A new object.
    Create,
    /// A change to an existing object (`old_object` is set).
    Update,
    /// Deletion (`object` is the old object).
    Delete,
}

/// What a validator is asked to judge.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The operation.
    pub operation: Operation,
    /// The object as the user sent it (after mutation, for validation).
    pub object: &'a Value,
    /// The stored object, on UPDATE.
    pub old_object: Option<&'a Value>,
}

/// The pure admission logic of one kind.
pub trait KindAdmission: Send + Sync {
    /// Group, version and kind handled.
    fn gvk(&self) -> GroupVersionKind;
    /// Plural resource name (`targets`), used for webhook paths and rules.
    fn plural(&self) -> &'static str;
    /// Whether the kind is namespaced.
    fn namespaced(&self) -> bool;
    /// Validates the request. `Ok` carries warnings (deprecated fields, …) to show the user;
    /// `Err` lists every problem found, not just the first.
    fn validate(&self, request: &Request<'_>) -> Result<Vec<String>, Vec<FieldError>>;
    /// The defaults to apply to `object`, as RFC 6902 operations (empty when nothing to default).
    /// Must be idempotent: applied to its own output it returns an empty patch.
    fn default_patch(&self, object: &Value) -> Result<json_patch::Patch, Vec<FieldError>>;
}

/// A set of kinds, looked up by group and kind.
#[derive(Default)]
pub struct AdmissionRegistry {
    kinds: Vec<Box<dyn KindAdmission>>,
}

impl fmt::Debug for AdmissionRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.kinds.iter().map(|k| k.gvk()))
            .finish()
    }
}

impl AdmissionRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a kind (builder style).
    pub fn with(mut self, kind: Box<dyn KindAdmission>) -> Self {
        self.kinds.push(kind);
        self
    }

    /// Adds every kind of `other`.
    pub fn extend(&mut self, other: AdmissionRegistry) {
        self.kinds.extend(other.kinds);
    }

    /// The kind with this group and kind name (any version this registry serves).
    pub fn find(&self, group: &str, kind: &str) -> Option<&dyn KindAdmission> {
        self.kinds
            .iter()
            .find(|k| {
                let gvk = k.gvk();
                gvk.group == group && gvk.kind == kind
            })
            .map(|k| k.as_ref())
    }

    /// Every kind, in registration order.
    pub fn iter(&self) -> impl Iterator<Item = &dyn KindAdmission> {
        self.kinds.iter().map(|k| k.as_ref())
    }
}

/// Every app kind of this API (Target, Policy, Hook, BackupPlan, ClusterBackupPlan, Backup,
/// ClusterBackup, Restore, ClusterRestore) with its validation and defaulting; see
/// `tvk_api::validation` for the rules.
pub fn app_admission() -> AdmissionRegistry {
    use crate::validation::{
        BackupAdmission, BackupPlanAdmission, ClusterBackupAdmission, ClusterBackupPlanAdmission,
        ClusterRestoreAdmission, HookAdmission, PolicyAdmission, RestoreAdmission, TargetAdmission,
    };
    AdmissionRegistry::new()
        .with(Box::new(TargetAdmission))
        .with(Box::new(PolicyAdmission))
        .with(Box::new(HookAdmission))
        .with(Box::new(BackupPlanAdmission))
        .with(Box::new(ClusterBackupPlanAdmission))
        .with(Box::new(BackupAdmission))
        .with(Box::new(ClusterBackupAdmission))
        .with(Box::new(RestoreAdmission))
        .with(Box::new(ClusterRestoreAdmission))
}

pub use crate::validation::identify;
