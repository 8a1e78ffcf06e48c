//! `Backup` (namespaced) and `ClusterBackup` (cluster-scoped): one run of a plan.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{
    ObjectReference, PhaseCondition, UnknownFields, date_time, preserve_unknown_object, quantity,
};

/// One backup of a BackupPlan.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "triliovault.trilio.io",
    version = "v1",
    kind = "Backup",
    namespaced,
    status = "BackupStatus",
    shortname = "bkp",
    printcolumn(
        name = "BackupPlan",
        type_ = "string",
        json_path = ".spec.backupPlan.name"
    ),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.status"),
    printcolumn(name = "Data Size", type_ = "string", json_path = ".status.size"),
    printcolumn(
        name = "Start Time",
        type_ = "string",
        json_path = ".status.startTimestamp"
    ),
    printcolumn(
        name = "End Time",
        type_ = "string",
        json_path = ".status.completionTimestamp"
    ),
    printcolumn(
        name = "Percentage Completed",
        type_ = "number",
        json_path = ".status.percentageCompletion"
    ),
    printcolumn(
        name = "Backup Scope",
        type_ = "string",
        json_path = ".status.backupScope"
    ),
    printcolumn(name = "Duration", type_ = "string", json_path = ".status.duration")
)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// Full, Incremental or Mixed.
    #[serde(rename = "type")]
    pub type_: BackupType,
    /// The plan this backup runs.
    pub backup_plan: ObjectReference,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// Kind of backup.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupType {
    /// Every cluster of every volume.
    Full,
    /// Only what changed since the previous backup of the plan.
    Incremental,
    /// Some components full, some incremental (reported by cluster backups).
    Mixed,
}

/// Lifecycle state of a backup.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum BackupState {
    Queued,
    InProgress,
    Pending,
    Error,
    Completed,
    Failed,
    Available,
    Coalescing,
    Canceling,
    Canceled,
    Degraded,
}

impl BackupState {
    /// Terminal states never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Failed | Self::Available | Self::Canceled | Self::Error
        )
    }
}

/// Steps of a backup.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum BackupPhase {
    PreBackupValidation,
    Unquiesce,
    Quiesce,
    MetaSnapshot,
    DataSnapshot,
    DataUpload,
    Snapshot,
    MetadataUpload,
    Retention,
    Upload,
    ImageBackup,
    HookTargetIdentification,
    Cleanup,
    Cancel,
}

/// Status of a backup step.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum BackupPhaseStatus {
    InProgress,
    Error,
    Completed,
    Failed,
    Skipped,
    Canceled,
}

/// State of merging incrementals (retention).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum CoalesceState {
    CommitStarted,
    CommitCompleted,
    CommitFailed,
    Qcow2MovementStarted,
    Qcow2MovementCompleted,
    Qcow2MovementFailed,
}

/// Progress of a coalesce.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoalesceInfo {
    /// Where the coalesce is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<CoalesceState>,
    /// Attempts so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_count: Option<i64>,
    /// Errors of failed attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_messages: Option<Vec<String>>,
}

/// Observed state of a backup (shared by ClusterBackup).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// Lifecycle state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<BackupState>,
    /// Current step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// Status of the current step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_status: Option<BackupPhaseStatus>,
    /// Per-step history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Vec<PhaseCondition<BackupPhase, BackupPhaseStatus>>>,
    /// Progress, 0..100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percentage_completion: Option<i64>,
    /// Data size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity")]
    pub size: Option<IntOrString>,
    /// Metadata size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity")]
    pub metadata_size: Option<IntOrString>,
    /// Start time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time")]
    pub start_timestamp: Option<String>,
    /// Completion time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time")]
    pub completion_timestamp: Option<String>,
    /// When retention may delete it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time")]
    pub expiration_timestamp: Option<String>,
    /// How long it took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Path of the backup on the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The kind of backup actually taken.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<BackupType>,
    /// App or Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_scope: Option<String>,
    /// Data is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_enabled: Option<bool>,
    /// Coalesce progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesce_info: Option<CoalesceInfo>,
    /// What was captured: Helm charts, operators, custom resources and data snapshots (with the
    /// `location` of each volume's QCOW2 image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub snapshot: Option<Value>,
    /// Target, application type, hook use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub stats: Option<Value>,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// One backup of a ClusterBackupPlan.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "triliovault.trilio.io",
    version = "v1",
    kind = "ClusterBackup",
    status = "BackupStatus",
    shortname = "cbkp",
    printcolumn(
        name = "ClusterBackupPlan",
        type_ = "string",
        json_path = ".spec.clusterBackupPlan.name"
    ),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.status"),
    printcolumn(name = "Data Size", type_ = "string", json_path = ".status.size"),
    printcolumn(
        name = "Start Time",
        type_ = "string",
        json_path = ".status.startTimestamp"
    ),
    printcolumn(
        name = "End Time",
        type_ = "string",
        json_path = ".status.completionTimestamp"
    ),
    printcolumn(
        name = "Percentage Completed",
        type_ = "number",
        json_path = ".status.percentageCompletion"
    ),
    printcolumn(name = "Duration", type_ = "string", json_path = ".status.duration")
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterBackupSpec {
    /// Full, Incremental or Mixed.
    #[serde(rename = "type")]
    pub type_: BackupType,
    /// The cluster plan this backup runs.
    pub cluster_backup_plan: ObjectReference,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}
