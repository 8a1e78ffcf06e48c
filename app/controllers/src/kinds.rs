//! The two plan kinds (BackupPlan, ClusterBackupPlan) and the two backup kinds (Backup,
//! ClusterBackup) behind one interface each, so the plan controller, the backup phase machine,
//! retention and `create-backup` are written once (as the restore controller's `RestoreKind`).
//!
//! Namespaces: a BackupPlan's references default to its own namespace and its hooks run in its
//! namespace; a ClusterBackupPlan's references (Target, Policies, encryption Secret) default to
//! the install namespace (as the restore side reads them), and each `backupComponents[]` entry's
//! hooks run in, and default their Hook references to, that component's namespace.

use std::fmt::Debug;

use kube::{Api, Client, Resource, ResourceExt};
use serde::{Serialize, de::DeserializeOwned};
use tvk_api::{
    backup::{Backup, BackupStatus, BackupType, ClusterBackup},
    backup_plan::{
        BackupConfig, BackupPlan, BackupPlanFlags, BackupPlanStatus, ClusterBackupPlan,
        ClusterBackupPlanSpec,
    },
    common::{HookConfig, ObjectReference},
};

use crate::target_access::ref_namespace;

/// One `hookConfig` of a plan and where it applies.
#[derive(Debug, Clone)]
pub struct HookScope {
    /// Namespace of the pods (and default namespace of its Hook references).
    pub namespace: String,
    /// The configuration.
    pub config: HookConfig,
    /// What it belongs to, for messages (`BackupPlan ns/name`, `ClusterBackupPlan x
    /// backupComponents[1]`).
    pub owner: String,
}

/// What the controllers need from a BackupPlan or a ClusterBackupPlan.
pub trait PlanKind:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug + Send + Sync + 'static
{
    /// `BackupPlan` or `ClusterBackupPlan`.
    const KIND: &'static str;
    /// The field holding the plan's flags (for messages).
    const FLAGS_FIELD: &'static str;
    /// The backups it makes.
    type Backup: BackupKind<Plan = Self>;
    /// A ClusterBackupPlan's spec (its components and namespace selectors).
    fn cluster_spec(&self) -> Option<&ClusterBackupPlanSpec> {
        None
    }
    /// `spec.backupConfig`.
    fn backup_config(&self) -> &BackupConfig;
    /// The observed status.
    fn plan_status(&self) -> Option<&BackupPlanStatus>;
    /// `backupPlanFlags` / `clusterBackupPlanFlags`.
    fn flags(&self) -> Option<&BackupPlanFlags>;
    /// `encryption.encryptionSecret`.
    fn encryption_secret(&self) -> Option<&ObjectReference>;
    /// Default namespace of the plan's references.
    fn refs_namespace(&self, install_ns: &str) -> String;
    /// Every hook configuration of the plan.
    fn hook_scopes(&self, install_ns: &str) -> Vec<HookScope>;
    /// The API of this kind: namespaced in `ns`, or cluster-wide.
    fn api(client: Client, ns: &str) -> Api<Self>;
    /// `ns/name` or `name`, for messages.
    fn key(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{ns}/{}", self.name_any()),
            None => self.name_any(),
        }
    }
    /// The plan's flag `pauseSchedule` is set.
    fn paused(&self) -> bool {
        self.flags().and_then(|f| f.pause_schedule) == Some(true)
    }
    /// The plan's flag `skipImageBackup` is set.
    fn skip_image_backup(&self) -> bool {
        self.flags().and_then(|f| f.skip_image_backup) == Some(true)
    }
    /// Some hook is configured.
    fn hooks_configured(&self, install_ns: &str) -> bool {
        self.hook_scopes(install_ns)
            .iter()
            .any(|s| !s.config.hooks.is_empty())
    }
}

impl PlanKind for BackupPlan {
    const KIND: &'static str = "BackupPlan";
    const FLAGS_FIELD: &'static str = "backupPlanFlags";
    type Backup = Backup;
    fn backup_config(&self) -> &BackupConfig {
        &self.spec.backup_config
    }
    fn plan_status(&self) -> Option<&BackupPlanStatus> {
        self.status.as_ref()
    }
    fn flags(&self) -> Option<&BackupPlanFlags> {
        self.spec.backup_plan_flags.as_ref()
    }
    fn encryption_secret(&self) -> Option<&ObjectReference> {
        self.spec.encryption.as_ref().map(|e| &e.encryption_secret)
    }
    fn refs_namespace(&self, install_ns: &str) -> String {
        self.namespace().unwrap_or_else(|| install_ns.to_string())
    }
    fn hook_scopes(&self, install_ns: &str) -> Vec<HookScope> {
        let ns = self.refs_namespace(install_ns);
        self.spec
            .hook_config
            .iter()
            .map(|c| HookScope {
                namespace: ns.clone(),
                config: c.clone(),
                owner: format!("BackupPlan {ns}/{}", self.name_any()),
            })
            .collect()
    }
    fn api(client: Client, ns: &str) -> Api<Self> {
        Api::namespaced(client, ns)
    }
}

impl PlanKind for ClusterBackupPlan {
    const KIND: &'static str = "ClusterBackupPlan";
    const FLAGS_FIELD: &'static str = "clusterBackupPlanFlags";
    type Backup = ClusterBackup;
    fn cluster_spec(&self) -> Option<&ClusterBackupPlanSpec> {
        Some(&self.spec)
    }
    fn backup_config(&self) -> &BackupConfig {
        &self.spec.backup_config
    }
    fn plan_status(&self) -> Option<&BackupPlanStatus> {
        self.status.as_ref()
    }
    fn flags(&self) -> Option<&BackupPlanFlags> {
        self.spec.cluster_backup_plan_flags.as_ref()
    }
    fn encryption_secret(&self) -> Option<&ObjectReference> {
        self.spec.encryption.as_ref().map(|e| &e.encryption_secret)
    }
    fn refs_namespace(&self, install_ns: &str) -> String {
        install_ns.to_string()
    }
    fn hook_scopes(&self, _install_ns: &str) -> Vec<HookScope> {
        self.spec
            .backup_components
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, c)| {
                c.hook_config.as_ref().map(|config| HookScope {
                    namespace: c.namespace.clone(),
                    config: config.clone(),
                    owner: format!(
                        "ClusterBackupPlan {} backupComponents[{i}]",
                        self.name_any()
                    ),
                })
            })
            .collect()
    }
    fn api(client: Client, _ns: &str) -> Api<Self> {
        Api::all(client)
    }
}

/// What the controllers need from a Backup or a ClusterBackup.
pub trait BackupKind:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug + Send + Sync + 'static
{
    /// `Backup` or `ClusterBackup` (the metamover's `--kind`).
    const KIND: &'static str;
    /// Its plan's kind.
    type Plan: PlanKind;
    /// The observed status.
    fn backup_status(&self) -> Option<&BackupStatus>;
    /// `spec.type`.
    fn backup_type(&self) -> BackupType;
    /// `spec.backupPlan` / `spec.clusterBackupPlan`.
    fn plan_ref(&self) -> &ObjectReference;
    /// The API of this kind: namespaced in `ns`, or cluster-wide.
    fn api(client: Client, ns: &str) -> Api<Self>;
    /// Builds a backup of `plan` named `name` (what a schedule creates).
    fn new_for(plan: &Self::Plan, name: &str, type_: BackupType) -> Self;
    /// Whether PreBackupValidation marked the backup encrypted (`status.encryptionEnabled`).
    fn encrypted(&self) -> bool {
        self.backup_status()
            .and_then(|s| s.encryption_enabled)
            .unwrap_or(false)
    }
    /// (namespace, name) of the plan (namespace empty for a ClusterBackupPlan).
    fn plan_key(&self) -> (String, String) {
        let r = self.plan_ref();
        let name = r.name.clone().unwrap_or_default();
        match self.namespace() {
            Some(ns) => (ref_namespace(r, &ns).to_string(), name),
            None => (String::new(), name),
        }
    }
    /// The backup belongs to `plan`.
    fn belongs_to(&self, plan: &Self::Plan) -> bool {
        self.plan_key() == (plan.namespace().unwrap_or_default(), plan.name_any())
    }
    /// `ns/name` (`/name` for a ClusterBackup): the Jobs' backup-ref annotation.
    fn backup_ref(&self) -> String {
        format!(
            "{}/{}",
            self.namespace().unwrap_or_default(),
            self.name_any()
        )
    }
    /// `ns/name` or `name`, for messages.
    fn key(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{ns}/{}", self.name_any()),
            None => self.name_any(),
        }
    }
}

impl BackupKind for Backup {
    const KIND: &'static str = "Backup";
    type Plan = BackupPlan;
    fn backup_status(&self) -> Option<&BackupStatus> {
        self.status.as_ref()
    }
    fn backup_type(&self) -> BackupType {
        self.spec.type_
    }
    fn plan_ref(&self) -> &ObjectReference {
        &self.spec.backup_plan
    }
    fn api(client: Client, ns: &str) -> Api<Self> {
        Api::namespaced(client, ns)
    }
    fn new_for(plan: &BackupPlan, name: &str, type_: BackupType) -> Self {
        let ns = plan.namespace().unwrap_or_default();
        let mut backup = Backup::new(
            name,
            tvk_api::backup::BackupSpec {
                type_,
                backup_plan: ObjectReference {
                    name: Some(plan.name_any()),
                    namespace: Some(ns.clone()),
                    ..ObjectReference::default()
                },
                unknown: Default::default(),
            },
        );
        backup.metadata.namespace = Some(ns);
        backup
    }
}

impl BackupKind for ClusterBackup {
    const KIND: &'static str = "ClusterBackup";
    type Plan = ClusterBackupPlan;
    fn backup_status(&self) -> Option<&BackupStatus> {
        self.status.as_ref()
    }
    fn backup_type(&self) -> BackupType {
        self.spec.type_
    }
    fn plan_ref(&self) -> &ObjectReference {
        &self.spec.cluster_backup_plan
    }
    fn api(client: Client, _ns: &str) -> Api<Self> {
        Api::all(client)
    }
    fn new_for(plan: &ClusterBackupPlan, name: &str, type_: BackupType) -> Self {
        ClusterBackup::new(
            name,
            tvk_api::backup::ClusterBackupSpec {
                type_,
                cluster_backup_plan: ObjectReference {
                    name: Some(plan.name_any()),
                    ..ObjectReference::default()
                },
                unknown: Default::default(),
            },
        )
    }
}
