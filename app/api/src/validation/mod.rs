//! Validation and defaulting of the app kinds, as pure functions over raw JSON (what the
//! webhook and `kubectl-tvk validate` see): a wrong type is a [`FieldError`], never a
//! deserialisation failure. Every message names the field path and what is allowed.
//!
//! Decisions, beyond the schema (required fields, enums, ranges, types):
//! - **Target**: `ObjectStore` needs `objectStoreCredentials` with `bucketName` and
//!   `credentialSecret`, and no `nfsCredentials`; `NFS` needs `nfsCredentials.nfsExport` of the
//!   form `server:/path` (`[v6addr]:/path` for IPv6), and no object-store credentials. The
//!   object-store `url` must be an absolute `http(s)` URL without user info, and must not point
//!   at link-local or cloud metadata endpoints (169.254.0.0/16, fe80::/10, fd00:ec2::254,
//!   100.100.100.200, metadata.google.internal, …). Plain `http://` is **allowed with a warning**:
//!   in-cluster MinIO/Ceph gateways often run without TLS, but request signatures and data then
//!   travel in clear text.
//! - **Policy**: `type` must match the config: Retention needs `retentionConfig` (with at least
//!   one count), Schedule needs `scheduleConfig.schedule` (standard 5-field cron expressions;
//!   `1/3`-style steps accepted as the original product did), Cleanup needs `cleanupConfig`,
//!   ContinuousRestore needs `continuousRestoreConfig`; a config of another type is an error.
//! - **Hook**: `post` required, each step needs `execAction.command`; ranges as in the API.
//! - **Plans**: `backupConfig.target` required; hook pod selectors need `labels` or `regex`,
//!   regular expressions must compile; a ClusterBackupPlan needs `backupComponents` or
//!   `namespaceSelector`.
//! - **Restore**: `source` must match its `type` (Backup needs `backup`, Location needs
//!   `location` *and* `target`, …) and carry no other source; `location` is relative to the
//!   target root with no `..`; JSON patches are RFC 6902; `actionFlags.imageRestore` needs a
//!   complete `imageRegistry`; contradictory flags (`onlyData` with `onlyMetadata`,
//!   `skipIfAlreadyExists` with `patchIfAlreadyExists`) are errors.
//! - **Immutable on UPDATE**: a Target's `type` and `vendor` (its data layout depends on them);
//!   a plan's `backupConfig.target` (its backups live there; a plan cannot see whether backups
//!   exist without a client, so the target is fixed from creation — make a new plan to move);
//!   the whole `spec` of Backup, ClusterBackup, Restore and ClusterRestore (they are runs, not
//!   desired state).
//! - Unknown fields are kept (newer product versions add some) but reported as warnings.
//!
//! Defaults (RFC 6902 `add` operations, only where the field is absent, so applying the patch
//! and asking again yields an empty patch):
//! - Target `enableBrowsing: false`.
//! - Hook steps `maxRetryCount: 0`, `timeoutSeconds: 30`, `ignoreFailure: false`.
//! - every `hookConfig`: `mode: Sequential`, `podReadyWaitSeconds: 120` (the original
//!   product's webhook default).
//! - Restore `resourcesReadyWaitSeconds: 600` (pods get ten minutes to become ready).

mod check;
mod kinds;

use serde_json::Value;

pub use kinds::{
    BackupAdmission, BackupPlanAdmission, ClusterBackupAdmission, ClusterBackupPlanAdmission,
    ClusterRestoreAdmission, HookAdmission, PolicyAdmission, RestoreAdmission, TargetAdmission,
};

use crate::admission::{FieldError, GroupVersionKind};

/// The nine kinds of this API: kind name, plural, namespaced.
pub const KINDS: &[(&str, &str, bool)] = &[
    ("Target", "targets", true),
    ("Policy", "policies", true),
    ("Hook", "hooks", true),
    ("BackupPlan", "backupplans", true),
    ("ClusterBackupPlan", "clusterbackupplans", false),
    ("Backup", "backups", true),
    ("ClusterBackup", "clusterbackups", false),
    ("Restore", "restores", true),
    ("ClusterRestore", "clusterrestores", false),
];

/// What a raw document is: its group/version/kind, name (`metadata.name`, else
/// `metadata.generateName`) and namespace. Works for any Kubernetes object, so callers can skip
/// kinds that are not ours; for our group it also rejects other versions and unknown kinds.
pub fn identify(value: &Value) -> Result<(GroupVersionKind, String, Option<String>), FieldError> {
    let Some(object) = value.as_object() else {
        return Err(FieldError::new(
            "",
            "a Kubernetes object must be a mapping with apiVersion, kind and metadata",
        ));
    };
    let api_version = match object.get("apiVersion") {
        Some(Value::String(s)) if !s.is_empty() => s.as_str(),
        Some(_) => {
            return Err(FieldError::new(
                "apiVersion",
                "must be a string such as triliovault.trilio.io/v1",
            ));
        }
        None => return Err(FieldError::new("apiVersion", "required")),
    };
    let kind = match object.get("kind") {
        Some(Value::String(s)) if !s.is_empty() => s.as_str(),
        Some(_) => return Err(FieldError::new("kind", "must be a non-empty string")),
        None => return Err(FieldError::new("kind", "required")),
    };
    let (group, version) = match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    };
    if group == crate::common::GROUP {
        if version != crate::common::VERSION {
            return Err(FieldError::new(
                "apiVersion",
                format!(
                    "{api_version:?} is not served: use {}",
                    crate::common::API_VERSION
                ),
            ));
        }
        if !KINDS.iter().any(|(k, _, _)| *k == kind) {
            let known: Vec<&str> = KINDS.iter().map(|(k, _, _)| *k).collect();
            return Err(FieldError::new(
                "kind",
                format!(
                    "unknown kind {kind:?} in {}: must be one of {}",
                    crate::common::GROUP,
                    known.join(", ")
                ),
            ));
        }
    }
    let metadata = object.get("metadata").and_then(Value::as_object);
    let text = |key: &str| {
        metadata
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let name = text("name")
        .or_else(|| text("generateName"))
        .ok_or_else(|| FieldError::new("metadata.name", "required: the object's name"))?;
    Ok((
        GroupVersionKind {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
        },
        name,
        text("namespace"),
    ))
}
