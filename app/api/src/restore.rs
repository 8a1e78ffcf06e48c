//! `Restore` (namespaced, restores into its own namespace) and `ClusterRestore`
//! (cluster-scoped, several namespaces).

use k8s_openapi::{api::core::v1::EnvVar, apimachinery::pkg::util::intstr::IntOrString};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{
    Encryption, HookConfig, JsonPatchOperation, ObjectReference, PhaseCondition, Resource,
    ResourceSelector, UnknownFields, date_time, preserve_unknown_object, quantity,
};

/// Restore of a backup into this Restore's namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "triliovault.trilio.io",
    version = "v1",
    kind = "Restore",
    namespaced,
    status = "RestoreStatus",
    shortname = "rst",
    printcolumn(
        name = "Backup",
        type_ = "string",
        json_path = ".spec.source.backup.name"
    ),
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
        name = "Restore Scope",
        type_ = "string",
        json_path = ".status.restoreScope"
    ),
    printcolumn(name = "Duration", type_ = "string", json_path = ".status.duration")
)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// What to restore from.
    pub source: RestoreSource,
    /// Conflict handling and what to restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_flags: Option<RestoreFlags>,
    /// Actions around the restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_flags: Option<ActionFlags>,
    /// Changes applied to restored objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform_components: Option<TransformComponents>,
    /// Only these resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_selector: Option<ResourceSelector>,
    /// Not these resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_resource_selector: Option<ResourceSelector>,
    /// Deprecated form of `excludeResourceSelector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub exclude_resources: Option<Vec<Resource>>,
    /// Post-restore hooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_config: Option<HookConfig>,
    /// Key to decrypt an encrypted backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Environment of the restore jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    /// Wait for restored pods to become ready; defaulted to 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1200))]
    pub resources_ready_wait_seconds: Option<i64>,
    /// Delete the existing application before restoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_config: Option<RestoreCleanupConfig>,
    /// Where restored images go (with `actionFlags.imageRestore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_registry: Option<ImageRegistry>,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// Kind of restore source.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum RestoreSourceType {
    Backup,
    Snapshot,
    Location,
    BackupPlan,
    ConsistentSet,
    ContinuousRestorePlan,
}

/// What a Restore restores from; `type` says which reference is used.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSource {
    /// Which field below is the source.
    #[serde(rename = "type")]
    pub type_: RestoreSourceType,
    /// A Backup (type Backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<ObjectReference>,
    /// A Snapshot (type Snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<ObjectReference>,
    /// The latest good backup of a plan (type BackupPlan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_plan: Option<ObjectReference>,
    /// A ConsistentSet (type ConsistentSet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_set: Option<ObjectReference>,
    /// A ContinuousRestorePlan (type ContinuousRestorePlan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuous_restore_plan: Option<ObjectReference>,
    /// The Target holding `location` (type Location).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ObjectReference>,
    /// Path of a backup on the target, relative to its root (type Location).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// How namespace labels and annotations are restored.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum LabelsAnnotationsStrategy {
    Override,
    Append,
    Replace,
}

/// Restore flags.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreFlags {
    /// Leave existing objects alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_if_already_exists: Option<bool>,
    /// Patch existing objects with the backed-up spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_if_already_exists: Option<bool>,
    /// Patch existing CRDs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "patchCRD")]
    pub patch_crd: Option<bool>,
    /// Drop labels and annotations of restored objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omit_metadata: Option<bool>,
    /// Restore volumes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_data: Option<bool>,
    /// Restore objects only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_metadata: Option<bool>,
    /// Overwrite a different image of the same name in the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_image_if_exist: Option<bool>,
    /// Restore the StorageClass too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_storage_class: Option<bool>,
    /// Keep a restored Helm release's name when the destination namespace already has a
    /// release of that name (storage that exists and cleanupConfig will not replace): the
    /// release and its objects are then judged like any existing object (skipIfAlreadyExists,
    /// patchIfAlreadyExists, else a conflict). When false (default) and neither of those flags
    /// is set, the release is restored as `<name>-<first 5 characters of the restore UID>`, its
    /// chart re-rendered with the new name; the plan is blocked when it cannot be renamed
    /// (subchart templates, a chart-owned PVC or StatefulSet volumeClaimTemplates whose data is
    /// restored). A release whose name is free keeps it either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_helm_release_name: Option<bool>,
    /// Skip operator resources (the operator is already installed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_operator_resources: Option<bool>,
    /// Do not skip the default list of ignored resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_ignore_resources: Option<bool>,
    /// Namespace labels/annotations strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_namespace_labels_annotations: Option<LabelsAnnotationsStrategy>,
    /// Give restored VMs their backed-up MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "restoreVMMACAddress")]
    pub restore_vm_mac_address: Option<bool>,
    /// Use the OpenShift namespace UID range for restored data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "useOCPNamespaceUIDRange")]
    pub use_ocp_namespace_uid_range: Option<bool>,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: std::collections::BTreeMap<String, Value>,
}

/// Actions around a restore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionFlags {
    /// Remove what was restored when the restore fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_on_failure: Option<bool>,
    /// Restore container images (needs `imageRegistry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_restore: Option<bool>,
    /// Create a BackupPlan protecting the restored application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protect_restored_app: Option<bool>,
}

/// Changes applied to restored objects.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct TransformComponents {
    /// Helm value overrides per release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub helm: Option<Vec<HelmTransform>>,
    /// JSON patches per resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub custom: Option<Vec<CustomTransform>>,
}

/// Helm value overrides of one release.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HelmTransform {
    /// Name of the transform.
    pub transform_name: String,
    /// Helm release.
    pub release: String,
    /// `--set` pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Vec<KeyValue>>,
    /// `--set-string` pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_string: Option<Vec<KeyValue>>,
}

/// A Helm value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct KeyValue {
    /// Dotted key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// JSON patches applied to some resources.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomTransform {
    /// Name of the transform.
    pub transform_name: String,
    /// The resources patched.
    pub resources: Resource,
    /// RFC 6902 operations.
    #[schemars(length(min = 1))]
    pub json_patches: Vec<JsonPatchOperation>,
}

/// Cleanup of the existing application before a restore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreCleanupConfig {
    /// Whether to clean up first.
    pub enabled: bool,
    /// Grace period for deletions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60, max = 1800))]
    pub graceful_deletion_timeout_seconds: Option<i64>,
}

/// Registry receiving restored images.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageRegistry {
    /// Registry host (`registry.example.com:5000`).
    pub registry: String,
    /// Repository inside it.
    pub repository: String,
    /// Secret with credentials to push.
    pub registry_auth_secret: ObjectReference,
    /// Skip TLS verification of the registry.
    #[serde(
        default,
        rename = "skipTLSVerify",
        skip_serializing_if = "Option::is_none"
    )]
    pub skip_tls_verify: Option<bool>,
}

/// Lifecycle state of a restore.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum RestoreState {
    InProgress,
    Pending,
    Error,
    Completed,
    Failed,
}

/// Steps of a restore.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum RestorePhase {
    TargetValidation,
    Validation,
    DataRestore,
    MetadataRestore,
    PrimitiveMetadataRestore,
    Unquiesce,
    RestoreCleanup,
    AddProtection,
    ImageRestore,
    HookTargetIdentification,
    DataOwnerUpdate,
}

/// Status of a restore step.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum RestorePhaseStatus {
    InProgress,
    Error,
    Completed,
    Failed,
    Skipped,
}

/// Observed state of a restore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// Lifecycle state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RestoreState>,
    /// Current step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RestorePhase>,
    /// Status of the current step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_status: Option<RestorePhaseStatus>,
    /// Per-step history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Vec<PhaseCondition<RestorePhase, RestorePhaseStatus>>>,
    /// Progress, 0..100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percentage_completion: Option<i64>,
    /// Data restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity")]
    pub size: Option<IntOrString>,
    /// Start time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time")]
    pub start_timestamp: Option<String>,
    /// Completion time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time")]
    pub completion_timestamp: Option<String>,
    /// How long it took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// App or Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_scope: Option<String>,
    /// What was restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub restore_application: Option<Value>,
    /// Source backup, target and counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub stats: Option<Value>,
    /// Namespaces a ClusterRestore created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_namespaces: Option<Vec<String>>,
    /// Container images of the backup and where they were restored (ImageRestore, written by
    /// `tvk-metamover images restore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<RestoredImage>>,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// What ImageRestore did with one backed-up image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ImageRestoreResult {
    /// The original reference was still pullable: nothing copied, workloads unchanged.
    Reachable,
    /// Pushed to the restore registry under the original tag.
    Pushed,
    /// The original tag named a different image in the restore registry: pushed under a newly
    /// generated tag.
    PushedNewTag,
    /// The original tag named a different image and `overrideImageIfExist` was set: replaced.
    Overwritten,
}

/// One backed-up image in a restore's status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoredImage {
    /// The original reference, exactly as the backed-up workloads name it.
    pub image: String,
    /// Digest of the manifest or index (`sha256:…`).
    pub digest: String,
    /// The reference restored workloads use instead; absent when the original was reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_image: Option<String>,
    /// What was done.
    pub result: ImageRestoreResult,
}

/// Restore of a ClusterBackup into several namespaces.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "triliovault.trilio.io",
    version = "v1",
    kind = "ClusterRestore",
    status = "RestoreStatus",
    shortname = "crst",
    printcolumn(
        name = "ClusterBackup",
        type_ = "string",
        json_path = ".spec.source.clusterBackup.name"
    ),
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
pub struct ClusterRestoreSpec {
    /// What to restore from.
    pub source: ClusterRestoreSource,
    /// Per-namespace mapping and settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<RestoreComponent>>,
    /// Settings applied to every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub global_config: Option<Value>,
    /// Backed-up namespaces not restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_components: Option<Vec<String>>,
    /// Actions around the restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_flags: Option<ActionFlags>,
    /// Key to decrypt an encrypted backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Where restored images go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_registry: Option<ImageRegistry>,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// Kind of cluster restore source.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum ClusterRestoreSourceType {
    ClusterBackup,
    ClusterSnapshot,
    Location,
    ClusterBackupPlan,
}

/// What a ClusterRestore restores from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRestoreSource {
    /// Which field below is the source.
    #[serde(rename = "type")]
    pub type_: ClusterRestoreSourceType,
    /// A ClusterBackup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_backup: Option<ObjectReference>,
    /// A ClusterSnapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_snapshot: Option<ObjectReference>,
    /// The latest good backup of a cluster plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_backup_plan: Option<ObjectReference>,
    /// The Target holding `location`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ObjectReference>,
    /// Path of a cluster backup on the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// Restore of one backed-up namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreComponent {
    /// Namespace in the backup.
    pub backup_namespace: String,
    /// Namespace restored into; the same name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_namespace: Option<String>,
    /// Post-restore hooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_config: Option<HookConfig>,
    /// Restore settings of this namespace (flags, transforms, selectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub restore_config: Option<Value>,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}
