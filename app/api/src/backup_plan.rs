//! `BackupPlan` (namespaced) and `ClusterBackupPlan` (cluster-scoped): what to back up, where,
//! on which schedule, with which hooks.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{
    Encryption, HookConfig, ObjectReference, PhaseCondition, Resource, ResourceSelector,
    UnknownFields, preserve_unknown_object,
};

/// Protection of an application in one namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "triliovault.trilio.io",
    version = "v1",
    kind = "BackupPlan",
    namespaced,
    status = "BackupPlanStatus",
    shortname = "bp",
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".spec.backupConfig.target.name"
    ),
    printcolumn(
        name = "Retention Policy",
        type_ = "string",
        json_path = ".spec.backupConfig.retentionPolicy.name"
    ),
    printcolumn(
        name = "Incremental Schedule",
        type_ = "string",
        json_path = ".spec.backupConfig.schedulePolicy.incrementalBackupPolicy.name"
    ),
    printcolumn(
        name = "Full Backup Schedule",
        type_ = "string",
        json_path = ".spec.backupConfig.schedulePolicy.fullBackupPolicy.name"
    ),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.status"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BackupPlanSpec {
    /// Target, policies and incremental chain length.
    pub backup_config: BackupConfig,
    /// Snapshot (no data upload) settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_config: Option<SnapshotConfig>,
    /// Helm releases, operators and custom selections making up the application; the whole
    /// namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_plan_components: Option<BackupPlanComponents>,
    /// Resources added to a namespace backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_resources: Option<ResourceSelector>,
    /// Resources left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_resources: Option<ResourceSelector>,
    /// Quiesce/unquiesce hooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_config: Option<HookConfig>,
    /// Encryption of the backup data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Plan flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_plan_flags: Option<BackupPlanFlags>,
    /// Continuous restore to other sites (kept as written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub continuous_restore_config: Option<Value>,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// Where backups go and when they run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupConfig {
    /// The Target; cannot change once set.
    pub target: ObjectReference,
    /// A Retention policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_policy: Option<ObjectReference>,
    /// Schedule policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_policy: Option<SchedulePolicy>,
    /// Incrementals before a new full backup (immutable targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 15))]
    pub max_incr_backups_per_full_backup: Option<i64>,
}

/// Schedule policies of a plan.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulePolicy {
    /// Schedule of full backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_backup_policy: Option<ObjectReference>,
    /// Schedule of incremental backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental_backup_policy: Option<ObjectReference>,
}

/// Snapshot settings of a plan.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotConfig {
    /// Target holding snapshot metadata.
    pub target: ObjectReference,
    /// A Retention policy for snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_policy: Option<ObjectReference>,
    /// Snapshot schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_policy: Option<SnapshotSchedulePolicy>,
}

/// Snapshot schedule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSchedulePolicy {
    /// A Schedule policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_policy: Option<ObjectReference>,
}

/// Parts of an application-scoped plan.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupPlanComponents {
    /// Helm release names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub helm_releases: Option<Vec<String>>,
    /// Operators and their custom resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub operators: Option<Vec<OperatorSelector>>,
    /// Label or GVK based selection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_selector: Option<CustomSelector>,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// One operator and the resources that make it up.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperatorSelector {
    /// Any unique id of the operator within the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub operator_id: Option<String>,
    /// OLM Subscription of the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<ObjectReference>,
    /// Helm release of a Helm-installed operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm_release: Option<String>,
    /// Custom resources of the operator's application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub custom_resources: Option<Vec<Resource>>,
    /// The operator's own resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_resources: Option<ResourceSelector>,
    /// Resources created by the operator for its instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_resources: Option<ResourceSelector>,
    /// Operator resources left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_resources: Option<ResourceSelector>,
}

/// Label or GVK based selection of resources.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomSelector {
    /// Resources to back up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select_resources: Option<ResourceSelector>,
    /// Resources left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_resources: Option<ResourceSelector>,
}

/// Plan flags.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupPlanFlags {
    /// Pause scheduled backups of this plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_schedule: Option<bool>,
    /// Back up Helm applications the Helm way in a namespace backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_helm_apps: Option<bool>,
    /// Do not back up container images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_image_backup: Option<bool>,
}

/// Readiness of a plan.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum PlanState {
    Available,
    InProgress,
    Unavailable,
}

/// What a plan protects.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum BackupScope {
    App,
    Namespace,
}

/// How the application is defined.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum ApplicationType {
    Helm,
    Operator,
    Custom,
    Namespace,
    MultiNamespace,
}

/// Observed state of a plan.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupPlanStatus {
    /// Available once its target and policies are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PlanState>,
    /// App or Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<BackupScope>,
    /// How the application is defined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_type: Option<ApplicationType>,
    /// Per-phase history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Vec<PhaseCondition<String, String>>>,
    /// Cron schedules of full backups in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_backup_crons: Option<Vec<String>>,
    /// Cron schedules of incremental backups in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental_crons: Option<Vec<String>>,
    /// Cron schedules of snapshots in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_crons: Option<Vec<String>>,
    /// Whether scheduling is paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_schedule: Option<bool>,
    /// Backup and restore summaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub stats: Option<Value>,
    /// Per-namespace plans of a ClusterBackupPlan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::common::preserve_unknown_list")]
    pub backup_plans: Option<Vec<Value>>,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// Protection of several namespaces as one unit.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "triliovault.trilio.io",
    version = "v1",
    kind = "ClusterBackupPlan",
    status = "BackupPlanStatus",
    shortname = "cbp",
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".spec.backupConfig.target.name"
    ),
    printcolumn(
        name = "Retention Policy",
        type_ = "string",
        json_path = ".spec.backupConfig.retentionPolicy.name"
    ),
    printcolumn(
        name = "Full Backup Schedule",
        type_ = "string",
        json_path = ".spec.backupConfig.schedulePolicy.fullBackupPolicy.name"
    ),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.status"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterBackupPlanSpec {
    /// Target, policies and incremental chain length.
    pub backup_config: BackupConfig,
    /// Namespaces listed by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_components: Option<Vec<BackupComponent>>,
    /// Namespaces picked by name or labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<Vec<NamespaceSelector>>,
    /// Resources added to every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_resources: Option<ResourceSelector>,
    /// Resources left out of every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_resources: Option<ResourceSelector>,
    /// Plan flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_backup_plan_flags: Option<BackupPlanFlags>,
    /// Encryption of the backup data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Snapshot settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_config: Option<SnapshotConfig>,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// One namespace of a cluster plan.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupComponent {
    /// The namespace.
    pub namespace: String,
    /// Resources added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_resources: Option<ResourceSelector>,
    /// Resources left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_resources: Option<ResourceSelector>,
    /// Hooks in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_config: Option<HookConfig>,
    /// Back up Helm applications the Helm way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_helm_apps: Option<bool>,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// Namespaces picked by labels.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    /// Name of this selection.
    pub name: String,
    /// Namespace label selectors, ORed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>>,
    /// Fields of other product versions (hooks, resource selections), kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// One namespace a ClusterBackupPlan covers, and why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoveredNamespace {
    /// The namespace.
    pub namespace: String,
    /// Indices of the `backupComponents[]` entries naming it (they carry its include/exclude
    /// selections and hooks).
    pub components: Vec<usize>,
    /// Names of the `namespaceSelector[]` entries whose labels match it.
    pub selectors: Vec<String>,
}

/// What a ClusterBackupPlan covers in a cluster ([`ClusterBackupPlanSpec::coverage`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterCoverage {
    /// Covered namespaces, by name.
    pub namespaces: Vec<CoveredNamespace>,
    /// Why the plan cannot run as written (a component namespace that does not exist, an
    /// invalid label selector), each saying what to fix; empty when it can.
    pub problems: Vec<String>,
}

impl ClusterBackupPlanSpec {
    /// The namespaces this plan covers (pure): every `backupComponents[]` namespace, and every
    /// namespace of `namespaces` (name, labels) matched by any label selector of any
    /// `namespaceSelector[]` entry. The one resolution of the workspace: the plan controller
    /// reports it in `status.backupPlans`, the metamover backs up exactly these namespaces.
    pub fn coverage(
        &self,
        namespaces: &[(String, std::collections::BTreeMap<String, String>)],
    ) -> ClusterCoverage {
        use kube::core::{Selector, SelectorExt};
        let mut covered: std::collections::BTreeMap<String, CoveredNamespace> =
            std::collections::BTreeMap::new();
        let mut problems = Vec::new();
        for (i, c) in self.backup_components.iter().flatten().enumerate() {
            if !namespaces.iter().any(|(n, _)| *n == c.namespace) {
                problems.push(format!(
                    "backupComponents[{i}]: namespace {} does not exist; create it or remove the component",
                    c.namespace
                ));
                continue;
            }
            covered
                .entry(c.namespace.clone())
                .or_insert_with(|| CoveredNamespace {
                    namespace: c.namespace.clone(),
                    ..CoveredNamespace::default()
                })
                .components
                .push(i);
        }
        for (i, sel) in self.namespace_selector.iter().flatten().enumerate() {
            for (j, ls) in sel.label_selector.iter().flatten().enumerate() {
                let selector = match Selector::try_from(ls.clone()) {
                    Ok(s) => s,
                    Err(e) => {
                        problems.push(format!(
                            "namespaceSelector[{i}].labelSelector[{j}] is not a valid label selector ({e}); fix the plan"
                        ));
                        continue;
                    }
                };
                for (ns, labels) in namespaces {
                    if selector.matches(labels) {
                        let entry = covered
                            .entry(ns.clone())
                            .or_insert_with(|| CoveredNamespace {
                                namespace: ns.clone(),
                                ..CoveredNamespace::default()
                            });
                        if !entry.selectors.contains(&sel.name) {
                            entry.selectors.push(sel.name.clone());
                        }
                    }
                }
            }
        }
        ClusterCoverage {
            namespaces: covered.into_values().collect(),
            problems,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::BTreeMap;

    fn nss() -> Vec<(String, BTreeMap<String, String>)> {
        [
            ("a", vec![]),
            ("b", vec![("env", "prod"), ("tier", "gold")]),
            ("c", vec![("env", "dev")]),
            ("d", vec![("tier", "gold")]),
        ]
        .into_iter()
        .map(|(n, l)| {
            (
                n.to_owned(),
                l.into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            )
        })
        .collect()
    }

    fn spec(v: Value) -> ClusterBackupPlanSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn components_and_selectors_union_by_namespace() {
        let s = spec(
            serde_json::json!({"backupConfig": {"target": {"name": "t"}},
            "backupComponents": [{"namespace": "a"}, {"namespace": "b"}, {"namespace": "a"}],
            "namespaceSelector": [
                {"name": "prod", "labelSelector": [{"matchLabels": {"env": "prod"}}]},
                {"name": "gold", "labelSelector": [{"matchLabels": {"tier": "gold"}},
                    {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]}]}]}),
        );
        let c = s.coverage(&nss());
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        let got: Vec<(&str, Vec<usize>, Vec<&str>)> = c
            .namespaces
            .iter()
            .map(|n| {
                (
                    n.namespace.as_str(),
                    n.components.clone(),
                    n.selectors.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a", vec![0, 2], vec![]),
                ("b", vec![1], vec!["prod", "gold"]),
                ("d", vec![], vec!["gold"]),
            ]
        );
    }

    #[test]
    fn a_missing_component_namespace_and_a_bad_selector_are_problems() {
        let s = spec(
            serde_json::json!({"backupConfig": {"target": {"name": "t"}},
            "backupComponents": [{"namespace": "gone"}],
            "namespaceSelector": [{"name": "x", "labelSelector": [
                {"matchExpressions": [{"key": "env", "operator": "Bogus"}]},
                {"matchLabels": {"env": "dev"}}]}]}),
        );
        let c = s.coverage(&nss());
        assert_eq!(c.problems.len(), 2, "{:?}", c.problems);
        assert!(c.problems[0].contains("backupComponents[0]: namespace gone does not exist"));
        assert!(c.problems[1].starts_with("namespaceSelector[0].labelSelector[0] is not a valid"));
        // The valid selector of the same entry still applies.
        let names: Vec<&str> = c.namespaces.iter().map(|n| n.namespace.as_str()).collect();
        assert_eq!(names, ["c"]);
    }

    #[test]
    fn a_plan_without_components_or_selectors_covers_nothing() {
        let s = spec(serde_json::json!({"backupConfig": {"target": {"name": "t"}}}));
        assert_eq!(s.coverage(&nss()), ClusterCoverage::default());
    }
}
