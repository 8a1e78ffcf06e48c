//! The `TrilioVaultManager` kind (API.md): the one object a cluster administrator creates to
//! install the application. Field names, enums and the status shape follow T4K and
//! operator-sdk's helm-operator exactly, deprecated fields included, so existing manifests apply
//! unchanged. Free-form sections (`helmValues`, `componentConfiguration`, the deprecated limit
//! objects) are preserve-unknown-fields objects: they are kept verbatim and interpreted by the
//! values model ([`crate::values`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// API group of every kind of the project.
pub const GROUP: &str = "triliovault.trilio.io";
/// API version of every kind of the project.
pub const VERSION: &str = "v1";
/// Kind name.
pub const KIND: &str = "TrilioVaultManager";
/// Plural resource name.
pub const PLURAL: &str = "triliovaultmanagers";

/// Schema of a free-form object whose unknown fields the apiserver must keep.
fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Desired state of an installation of the application.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "triliovault.trilio.io",
    version = "v1",
    kind = "TrilioVaultManager",
    plural = "triliovaultmanagers",
    namespaced,
    shortname = "tvm",
    status = "TrilioVaultManagerStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "TrilioVaultManager installs, upgrades and self-heals one installation of the backup application.",
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.releaseVersion"}"#,
    printcolumn = r#"{"name":"Scope","type":"string","jsonPath":".spec.applicationScope"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TrilioVaultManagerSpec {
    /// `Cluster` (ClusterRoles, every namespace) or `Namespaced` (Roles, install namespace only).
    /// Immutable once set.
    pub application_scope: ApplicationScope,
    /// Display name of the installation; unique across TrilioVaultManagers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tvk_instance_name: Option<String>,
    /// Free-form values passed to the templates (see `templates/values.yaml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub helm_values: Option<Value>,
    /// Per-component settings keyed by component (`control-plane`, `exporter`, `web`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub component_configuration: Option<Value>,
    /// Ingress of the management UI; an Ingress is rendered when `host` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_config: Option<IngressConfig>,
    /// Logging of the application and its jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_config: Option<LogConfig>,
    /// Resources of the metadata (metamover) jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_job_resources: Option<ResourceRequirements>,
    /// Resources of the data (datamover) jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_job_resources: Option<ResourceRequirements>,
    /// Resources of target-browser pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_browser_resources: Option<ResourceRequirements>,
    /// Scheduling of the worker jobs (datamover, metamover, hooks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_jobs_scheduling_config: Option<SchedulingConfig>,
    /// Affinity of the application's own pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Node selector of the application's own pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations of the application's own pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// CSI drivers to treat as without (include) or with (exclude) snapshot support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csi_config: Option<CsiConfig>,
    /// Pauses every BackupPlan / ClusterBackupPlan schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_schedule: Option<bool>,

    /// Deprecated: use `logConfig.logLevel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<LogLevel>,
    /// Deprecated: use `logConfig.datamoverLogLevel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datamover_log_level: Option<LogLevel>,
    /// Deprecated: namespaces restores may target; ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_namespaces: Option<Vec<String>>,
    /// Deprecated: the application version is the one the manager ships.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trilio_vault_app_version: Option<String>,
    /// Deprecated: Helm is not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm_version: Option<HelmVersion>,
    /// Deprecated: use `componentConfiguration.<component>.resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub resources: Option<Value>,
    /// Deprecated: use `dataJobResources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub data_job_limits: Option<Value>,
    /// Deprecated: use `metadataJobResources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub metadata_job_limits: Option<Value>,
    /// Deprecated: use `componentConfiguration.<component>.resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub deployment_limits: Option<Value>,
}

/// Installation scope.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ApplicationScope {
    /// ClusterRoles; the application watches every namespace.
    #[default]
    Cluster,
    /// Roles; the application watches only the install namespace.
    Namespaced,
}

impl ApplicationScope {
    /// The spelling used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cluster => "Cluster",
            Self::Namespaced => "Namespaced",
        }
    }
}

/// Log levels accepted by T4K.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum LogLevel {
    /// Panic.
    Panic,
    /// Fatal.
    Fatal,
    /// Error.
    Error,
    /// Warn.
    Warn,
    /// Info.
    Info,
    /// Debug.
    Debug,
    /// Trace.
    Trace,
}

impl LogLevel {
    /// Every level, in manifest spelling.
    pub const ALL: [&'static str; 7] =
        ["Panic", "Fatal", "Error", "Warn", "Info", "Debug", "Trace"];
}

/// Ingress of the management UI.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressConfig {
    /// Annotations added to the Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Host name; the Ingress is rendered only when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// IngressClass name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class: Option<String>,
    /// TLS Secret of the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
}

/// Logging settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogConfig {
    /// Level of the application's components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<LogLevel>,
    /// Level of the datamover jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datamover_log_level: Option<LogLevel>,
    /// Log buffer size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_size: Option<i64>,
    /// Log to stdout and to a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_dual_output_log: Option<bool>,
    /// Flush interval of the log buffer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_duration_milli_seconds: Option<i64>,
    /// Size of one log file before rotation.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "maxLogFileSizeMB"
    )]
    pub max_log_file_size_mb: Option<i64>,
    /// Rotated log files kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_log_files: Option<i64>,
}

/// Scheduling of worker jobs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingConfig {
    /// Affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Node selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Topology spread constraints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
}

/// CSI drivers list overrides.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CsiConfig {
    /// Drivers to treat as without snapshot support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    /// Drivers to treat as with snapshot support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<String>>,
}

/// Deprecated Helm settings (Helm is not used).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HelmVersion {
    /// Helm major version, `v3`.
    pub version: String,
    /// Tiller namespace (Helm 2 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiller_namespace: Option<String>,
}

/// Observed state, in operator-sdk helm-operator's shape plus T4K's fields.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrilioVaultManagerStatus {
    /// Overall state: `Deployed`, `Failed`, `Updating`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Installed application version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_version: Option<String>,
    /// URL of the management UI, when an Ingress is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<String>,
    /// Revision of the applied manifest; moves only when what is applied changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm_revision: Option<i64>,
    /// The applied release (a summary: the full manifest would strain etcd's size limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_release: Option<DeployedRelease>,
    /// helm-operator conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ReleaseCondition>,
    /// Generation of the spec the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The applied release.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeployedRelease {
    /// Release name (the TVM's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Summary of the applied manifest: digest and object list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
}

/// One helm-operator condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseCondition {
    /// Condition type.
    #[serde(rename = "type")]
    pub type_: ConditionType,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// Why, CamelCase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ConditionReason>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When `status` last flipped (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// helm-operator condition types.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionType {
    /// The manager has seen the object.
    Initialized,
    /// The release is applied.
    Deployed,
    /// An update was applied.
    Updated,
    /// The last install/update/uninstall failed.
    ReleaseFailed,
    /// The object cannot be reconciled until the user changes it.
    Irreconcilable,
}

/// Condition status.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    /// True.
    True,
    /// False.
    False,
    /// Unknown.
    Unknown,
}

/// helm-operator condition reasons.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionReason {
    /// First install succeeded.
    InstallSuccessful,
    /// Upgrade succeeded.
    UpdateSuccessful,
    /// Uninstall succeeded.
    UninstallSuccessful,
    /// Install failed.
    InstallError,
    /// Update failed.
    UpdateError,
    /// Reconcile failed (bad spec, refused upgrade, ...).
    ReconcileError,
    /// Uninstall failed.
    UninstallError,
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn api_md_example_roundtrips_without_losing_fields() {
        let manifest = serde_json::json!({
            "apiVersion": "triliovault.trilio.io/v1",
            "kind": "TrilioVaultManager",
            "metadata": {"name": "triliovault-manager", "namespace": "trilio-system"},
            "spec": {
                "applicationScope": "Cluster",
                "tvkInstanceName": "tvk-instance",
                "logConfig": {"logLevel": "Info", "maxLogFileSizeMB": 10},
                "componentConfiguration": {"ingress-controller": {"enabled": false}},
                "helmValues": {"PodAnnotations": {"a": "b"}, "jobSpec": {"activeDeadlineSeconds": 100}},
                "dataJobResources": {"requests": {"memory": "2Gi", "cpu": "1"}},
                "helmVersion": {"version": "v3", "tillerNamespace": "kube-system"},
                "dataJobLimits": {"cpu": "2"},
                "restoreNamespaces": ["a"],
                "pauseSchedule": true
            }
        });
        let tvm: TrilioVaultManager = serde_json::from_value(manifest.clone()).unwrap();
        assert_eq!(tvm.spec.application_scope, ApplicationScope::Cluster);
        assert_eq!(
            tvm.spec.log_config.as_ref().unwrap().max_log_file_size_mb,
            Some(10)
        );
        assert_eq!(serde_json::to_value(&tvm).unwrap(), manifest);
    }

    #[test]
    fn crd_has_short_name_status_and_printer_columns() {
        let crd = TrilioVaultManager::crd();
        assert_eq!(crd.spec.names.short_names, Some(vec!["tvm".to_string()]));
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<_> = version
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.json_path.as_str())
            .collect();
        assert_eq!(
            columns,
            [
                ".status.releaseVersion",
                ".spec.applicationScope",
                ".status.status",
                ".metadata.creationTimestamp"
            ]
        );
    }
}
