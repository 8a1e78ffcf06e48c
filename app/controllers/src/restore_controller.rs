//! The Restore and ClusterRestore controllers: the restore phase machine (contracts8.md).
//!
//! Validation (spec checks, one restore at a time per destination namespace, Restores and
//! ClusterRestores alike — others wait `Pending`, [`ordering`] —, the
//! source resolved here, the restore plan computed by the metaprocessor Job
//! `tvk-metamover restore-plan`; with `cleanupConfig`, then the existing objects the restore
//! recreates deleted and waited for, [`in_place`]) → DataRestore (first, when the plan creates
//! StorageClasses for `restoreStorageClass`, the metaprocessor Job
//! `tvk-metamover restore-storage-classes`; then PVCs hydrated by datamover Jobs, bounded
//! parallelism, retried on exit 75, [`data`]) → ImageRestore (with `actionFlags.imageRestore`:
//! metaprocessor Job `tvk-metamover images restore`, contracts9.md) → MetadataRestore
//! (metaprocessor Job `tvk-metamover restore`) → HookTargetIdentification and Unquiesce (the
//! post-restore hooks, [`post_hooks`]) → AddProtection (with `actionFlags.protectRestoredApp`,
//! [`protect`]) → RestoreCleanup → `Completed`, or `Failed` with the
//! failing phase and its reason. Phases that do not apply are recorded `Skipped` with why.
//!
//! One machine serves both kinds through [`RestoreKind`]: a Restore restores into its own
//! namespace; a ClusterRestore is cluster-scoped and maps namespaces (the metaprocessor does the
//! mapping). Every Job runs in the install namespace, where the tvk-metamover / tvk-datamover
//! service accounts and the Target's credential Secret live.
//!
//! Robustness: Jobs, temporary claims and volumes have deterministic names
//! ([`crate::naming::object_name`]), so a restarted controller adopts what exists; every step is
//! derived from observed objects, never from memory. Terminal states (`Completed`, `Failed`)
//! never change. A failure deletes the restore's Jobs and temporary objects and, with
//! `actionFlags.cleanupOnFailure`, exactly the objects the metaprocessor recorded in
//! `created[]` that still carry this restore's label, plus the claims and volumes the
//! DataRestore phase made ([`cleanup`]).

mod cleanup;
mod data;
pub mod in_place;
pub mod latest;
pub mod ordering;
pub mod post_hooks;
pub mod protect;

use std::{fmt::Debug, sync::Arc, time::Duration};

use k8s_openapi::{
    api::{batch::v1::Job, core::v1::EnvVar},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    runtime::controller::Action,
};
use serde::{Serialize, de::DeserializeOwned};
use tvk_api::{
    backup::{Backup, BackupState, ClusterBackup},
    backup_plan::{BackupPlan, ClusterBackupPlan},
    restore::{
        ClusterRestore, ClusterRestoreSourceType, ImageRegistry, Restore, RestorePhase,
        RestorePhaseStatus, RestoreSourceType, RestoreState, RestoreStatus,
    },
    restore_plan::{ObjectResult, PlanAction, RestorePlan},
    target::Target,
};

use crate::{
    backup_controller::go_duration,
    context::Context,
    error::{Error, Result, is_conflict},
    hooks,
    jobs::{
        ANNOTATION_BACKUP_REF, JobRequest, JobState, LABEL_BACKUP, LABEL_BACKUP_UID, build_job,
        job_state,
    },
    naming::{object_name, quantity_bytes},
    status_patch::{apply_status, now_rfc3339, set_condition},
    target_access::{TargetAccess, job_access, ref_namespace},
    target_controller,
};

/// Field manager of the restore controllers.
pub const FIELD_MANAGER: &str = "tvk-control-plane-restore";
/// Label naming the restore a Job or object belongs to (its name).
pub const LABEL_RESTORE: &str = "triliovault.trilio.io/restore";
/// Label of the restore's UID, on Jobs and on every object the restore creates.
pub const LABEL_RESTORE_UID: &str = "triliovault.trilio.io/restore-uid";
/// Annotation naming the restore: `<namespace>/<name>` for a Restore, `<name>` for a
/// ClusterRestore (how a Job event finds its restore).
pub const ANNOTATION_RESTORE_REF: &str = "triliovault.trilio.io/restore-ref";

/// What the controller needs to know about a Restore or a ClusterRestore.
pub trait RestoreKind:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug + Send + Sync + 'static
{
    /// `Restore` or `ClusterRestore` (the metaprocessor's `--kind`).
    const KIND: &'static str;
    /// The observed status.
    fn restore_status(&self) -> Option<&RestoreStatus>;
    /// The API of this object (its namespace, or cluster-scoped).
    fn api_for(&self, client: Client) -> Api<Self>;
    /// The source, as far as it can be read from the spec.
    fn source_ref(&self, install_namespace: &str) -> SourceRef;
    /// `actionFlags.cleanupOnFailure`.
    fn cleanup_on_failure(&self) -> bool;
    /// `restoreFlags.onlyMetadata`.
    fn only_metadata(&self) -> bool;
    /// The post-restore hooks: per destination namespace, its `hookConfig` (with at least one
    /// hook) and how messages name it.
    fn hook_configs(&self) -> Vec<post_hooks::HookSite>;
    /// `actionFlags.imageRestore`.
    fn image_restore(&self) -> bool;
    /// `actionFlags.protectRestoredApp`.
    fn protect_restored_app(&self) -> bool;
    /// `spec.imageRegistry`.
    fn image_registry(&self) -> Option<&ImageRegistry>;
    /// `--namespace` of the metaprocessor (a Restore's namespace; none for a ClusterRestore).
    fn metamover_namespace(&self) -> Option<String>;
    /// `spec.env`: extra environment of the restore's Jobs.
    fn job_env(&self) -> Vec<EnvVar>;
    /// Where `cleanupConfig` applies ([`in_place`]).
    fn cleanup_scope(&self) -> in_place::CleanupScope;
    /// `spec.encryption.encryptionSecret`: the key of an encrypted backup.
    fn encryption_secret(&self) -> Option<&tvk_api::common::ObjectReference>;
}

/// A restore's source as written in its spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceRef {
    /// A namespaced Backup.
    Backup {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A ClusterBackup.
    ClusterBackup {
        /// Name.
        name: String,
    },
    /// The latest Available Backup of a BackupPlan (before the restore plan pins one).
    BackupPlan {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The latest Available ClusterBackup of a ClusterBackupPlan (before the plan pins one).
    ClusterBackupPlan {
        /// Name.
        name: String,
    },
    /// A backup location on a Target (cross-cluster restore, no Backup object).
    Location {
        /// Namespace of the Target.
        target_namespace: String,
        /// Name of the Target.
        target_name: String,
        /// `<plan uid>/<backup uid>`.
        location: String,
    },
    /// The spec cannot be used; the message says what to change.
    Invalid(String),
}

fn ref_name(r: Option<&tvk_api::common::ObjectReference>) -> Option<String> {
    r.and_then(|r| r.name.clone()).filter(|n| !n.is_empty())
}

fn location_source(
    target: Option<&tvk_api::common::ObjectReference>,
    location: Option<&String>,
    default_ns: &str,
    field: &str,
) -> SourceRef {
    let Some(target_ref) = target else {
        return SourceRef::Invalid(format!(
            "{field}.type is Location but {field}.target is not set; name the Target holding the backup"
        ));
    };
    let Some(target_name) = ref_name(Some(target_ref)) else {
        return SourceRef::Invalid(format!("{field}.target has no name; name the Target"));
    };
    let Some(location) = location.filter(|l| !l.is_empty()) else {
        return SourceRef::Invalid(format!(
            "{field}.type is Location but {field}.location is not set; give the backup's path on the target (<plan uid>/<backup uid>, the Backup's status.location)"
        ));
    };
    SourceRef::Location {
        target_namespace: ref_namespace(target_ref, default_ns).to_string(),
        target_name,
        location: location.clone(),
    }
}

impl RestoreKind for Restore {
    const KIND: &'static str = "Restore";
    fn restore_status(&self) -> Option<&RestoreStatus> {
        self.status.as_ref()
    }
    fn api_for(&self, client: Client) -> Api<Self> {
        Api::namespaced(client, &self.namespace().unwrap_or_default())
    }
    fn source_ref(&self, _install_namespace: &str) -> SourceRef {
        let ns = self.namespace().unwrap_or_default();
        let s = &self.spec.source;
        match s.type_ {
            RestoreSourceType::Backup => match ref_name(s.backup.as_ref()) {
                Some(name) => SourceRef::Backup {
                    namespace: s
                        .backup
                        .as_ref()
                        .map_or(ns.as_str(), |b| ref_namespace(b, &ns))
                        .to_string(),
                    name,
                },
                None => SourceRef::Invalid(
                    "spec.source.type is Backup but spec.source.backup has no name; name the Backup to restore".into(),
                ),
            },
            RestoreSourceType::Location => location_source(
                s.target.as_ref(),
                s.location.as_ref(),
                &ns,
                "spec.source",
            ),
            RestoreSourceType::BackupPlan => match (
                ref_name(s.backup_plan.as_ref()),
                latest::pinned(self.status.as_ref()),
            ) {
                (None, _) => SourceRef::Invalid(
                    "spec.source.type is BackupPlan but spec.source.backupPlan has no name; name the BackupPlan whose latest backup to restore".into(),
                ),
                (Some(_), Some((pinned_ns, name))) => SourceRef::Backup {
                    namespace: pinned_ns.unwrap_or_else(|| ns.clone()),
                    name,
                },
                (Some(name), None) => SourceRef::BackupPlan {
                    namespace: s
                        .backup_plan
                        .as_ref()
                        .map_or(ns.as_str(), |b| ref_namespace(b, &ns))
                        .to_string(),
                    name,
                },
            },
            other => SourceRef::Invalid(format!(
                "source type {other:?} is not supported by this version (it has no {other:?} resources); restore a Backup, the latest backup of a BackupPlan, or a Location"
            )),
        }
    }
    fn cleanup_on_failure(&self) -> bool {
        self.spec
            .action_flags
            .as_ref()
            .and_then(|f| f.cleanup_on_failure)
            == Some(true)
    }
    fn only_metadata(&self) -> bool {
        self.spec
            .restore_flags
            .as_ref()
            .and_then(|f| f.only_metadata)
            == Some(true)
    }
    fn hook_configs(&self) -> Vec<post_hooks::HookSite> {
        let ns = self.namespace().unwrap_or_default();
        self.spec
            .hook_config
            .iter()
            .filter(|c| !c.hooks.is_empty())
            .map(|c| post_hooks::HookSite {
                namespace: ns.clone(),
                hooks_namespace: ns.clone(),
                config: c.clone(),
                owner: format!("Restore {ns}/{}", self.name_any()),
            })
            .collect()
    }
    fn image_restore(&self) -> bool {
        self.spec
            .action_flags
            .as_ref()
            .and_then(|f| f.image_restore)
            == Some(true)
    }
    fn protect_restored_app(&self) -> bool {
        self.spec
            .action_flags
            .as_ref()
            .and_then(|f| f.protect_restored_app)
            == Some(true)
    }
    fn image_registry(&self) -> Option<&ImageRegistry> {
        self.spec.image_registry.as_ref()
    }
    fn metamover_namespace(&self) -> Option<String> {
        self.namespace()
    }
    fn job_env(&self) -> Vec<EnvVar> {
        self.spec.env.clone().unwrap_or_default()
    }
    fn cleanup_scope(&self) -> in_place::CleanupScope {
        in_place::CleanupScope::of_restore(&self.spec)
    }
    fn encryption_secret(&self) -> Option<&tvk_api::common::ObjectReference> {
        self.spec.encryption.as_ref().map(|e| &e.encryption_secret)
    }
}

impl RestoreKind for ClusterRestore {
    const KIND: &'static str = "ClusterRestore";
    fn restore_status(&self) -> Option<&RestoreStatus> {
        self.status.as_ref()
    }
    fn api_for(&self, client: Client) -> Api<Self> {
        Api::all(client)
    }
    fn source_ref(&self, install_namespace: &str) -> SourceRef {
        let s = &self.spec.source;
        match s.type_ {
            ClusterRestoreSourceType::ClusterBackup => match ref_name(s.cluster_backup.as_ref()) {
                Some(name) => SourceRef::ClusterBackup { name },
                None => SourceRef::Invalid(
                    "spec.source.type is ClusterBackup but spec.source.clusterBackup has no name; name the ClusterBackup to restore".into(),
                ),
            },
            ClusterRestoreSourceType::Location => location_source(
                s.target.as_ref(),
                s.location.as_ref(),
                install_namespace,
                "spec.source",
            ),
            ClusterRestoreSourceType::ClusterBackupPlan => match (
                ref_name(s.cluster_backup_plan.as_ref()),
                latest::pinned(self.status.as_ref()),
            ) {
                (None, _) => SourceRef::Invalid(
                    "spec.source.type is ClusterBackupPlan but spec.source.clusterBackupPlan has no name; name the ClusterBackupPlan whose latest backup to restore".into(),
                ),
                (Some(_), Some((_, name))) => SourceRef::ClusterBackup { name },
                (Some(name), None) => SourceRef::ClusterBackupPlan { name },
            },
            other => SourceRef::Invalid(format!(
                "source type {other:?} is not supported by this version (it has no {other:?} resources); restore a ClusterBackup, the latest backup of a ClusterBackupPlan, or a Location"
            )),
        }
    }
    fn cleanup_on_failure(&self) -> bool {
        self.spec
            .action_flags
            .as_ref()
            .and_then(|f| f.cleanup_on_failure)
            == Some(true)
    }
    fn only_metadata(&self) -> bool {
        false
    }
    fn hook_configs(&self) -> Vec<post_hooks::HookSite> {
        let excluded = self.spec.exclude_components.clone().unwrap_or_default();
        self.spec
            .components
            .iter()
            .flatten()
            .enumerate()
            .filter(|(_, c)| !excluded.contains(&c.backup_namespace))
            .filter_map(|(i, c)| {
                let config = c.hook_config.clone().filter(|h| !h.hooks.is_empty())?;
                let ns = c
                    .restore_namespace
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| c.backup_namespace.clone());
                Some(post_hooks::HookSite {
                    hooks_namespace: ns.clone(),
                    namespace: ns,
                    config,
                    owner: format!("ClusterRestore {} components[{i}]", self.name_any()),
                })
            })
            .collect()
    }
    fn image_restore(&self) -> bool {
        self.spec
            .action_flags
            .as_ref()
            .and_then(|f| f.image_restore)
            == Some(true)
    }
    fn protect_restored_app(&self) -> bool {
        self.spec
            .action_flags
            .as_ref()
            .and_then(|f| f.protect_restored_app)
            == Some(true)
    }
    fn image_registry(&self) -> Option<&ImageRegistry> {
        self.spec.image_registry.as_ref()
    }
    fn metamover_namespace(&self) -> Option<String> {
        None
    }
    fn job_env(&self) -> Vec<EnvVar> {
        Vec::new()
    }
    fn cleanup_scope(&self) -> in_place::CleanupScope {
        in_place::CleanupScope::of_cluster_restore(&self.spec)
    }
    fn encryption_secret(&self) -> Option<&tvk_api::common::ObjectReference> {
        self.spec.encryption.as_ref().map(|e| &e.encryption_secret)
    }
}

/// The Secret (in the Jobs' namespace) holding the key of the restored backup: the restore's
/// own `spec.encryption`, else the backup plan's for an encrypted Backup source; `Ok(None)`
/// for an unencrypted backup; inner `Err` when an encrypted backup has no usable key. (A
/// Location source without `spec.encryption` is judged by the metaprocessor, which names the
/// field when the metadata turns out to be encrypted.) With `copy`, the Secret is read and
/// copied into the Jobs' namespace ([`crate::encryption::job_secret`]); otherwise only the
/// copy's name is computed (no API call on every poll of a running restore).
async fn restore_key<K: RestoreKind>(
    ctx: &Context,
    restore: &K,
    ids: &Ids,
    source: &ResolvedSource,
    copy: bool,
) -> Result<std::result::Result<Option<String>, String>> {
    let own = restore
        .encryption_secret()
        .map(|secret| crate::encryption::KeyRef {
            secret: secret.clone(),
            default_ns: ids.ns.clone().unwrap_or_else(|| ids.job_ns.clone()),
            field: format!(
                "spec.encryption.encryptionSecret of {} {}",
                K::KIND,
                ids.reference
            ),
        });
    match own.or_else(|| source.plan_key.clone()) {
        Some(key) if copy => Ok(key.job_secret(ctx, &ids.job_ns).await?.map(Some)),
        Some(key) => Ok(Ok(Some(key.job_secret_name(&ids.job_ns)))),
        None if source.encrypted => Ok(Err(format!(
            "the backup at {} is encrypted and neither this {} nor the backup's plan names its key; set spec.encryption.encryptionSecret to a Secret holding it under `{}`",
            source.location,
            K::KIND,
            crate::encryption::SECRET_KEY
        ))),
        None => Ok(Ok(None)),
    }
}

/// `<plan uid>/<backup uid>`: two path segments of UID-like characters (pure). Anything else —
/// `..`, absolute paths, extra segments — is refused before it reaches a Job.
pub fn check_location(location: &str) -> std::result::Result<(), String> {
    let parts: Vec<&str> = location.split('/').collect();
    let ok = parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 128
                && p != &"."
                && p != &".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "location {location:?} is not a backup location; give <plan uid>/<backup uid> as in the Backup's status.location"
        ))
    }
}

/// A resolved source: where the backup is and how Jobs reach it.
#[derive(Debug, Clone)]
pub struct ResolvedSource {
    /// The Target.
    pub target: Target,
    /// `<plan uid>/<backup uid>`.
    pub location: String,
    /// The backup was taken encrypted (`status.encryptionEnabled`); unknown for a Location.
    pub encrypted: bool,
    /// The encryption key of the backup's plan, when it is encrypted and its plan names one
    /// (used when the restore names no key itself).
    pub plan_key: Option<crate::encryption::KeyRef>,
}

fn require_available(target: Option<Target>, what: &str) -> std::result::Result<Target, String> {
    match target {
        None => Err(format!(
            "{what} does not exist; create it or correct the reference"
        )),
        Some(t) if !target_controller::is_available(&t) => Err(format!(
            "Target {}/{} is not Available: {}",
            t.namespace().unwrap_or_default(),
            t.name_any(),
            target_controller::unavailable_reason(&t)
        )),
        Some(t) => Ok(t),
    }
}

async fn get_target(ctx: &Context, ns: &str, name: &str) -> Result<Option<Target>> {
    Api::<Target>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("read Target {ns}/{name}"), e))
}

fn backup_usable(
    status: Option<&tvk_api::backup::BackupStatus>,
    what: &str,
) -> std::result::Result<String, String> {
    let state = status.and_then(|s| s.status);
    if state != Some(BackupState::Available) {
        return Err(format!(
            "{what} is not Available (status {}); only an Available backup can be restored",
            state.map_or_else(|| "not set yet".to_string(), |s| format!("{s:?}"))
        ));
    }
    let location = status
        .and_then(|s| s.location.clone())
        .filter(|l| !l.is_empty())
        .ok_or_else(|| format!("{what} is Available but has no status.location"))?;
    check_location(&location)?;
    Ok(location)
}

/// Resolves the source: the backup must be Available and its Target Available; a Location
/// needs an Available Target. `Ok(Err(reason))` is a spec the user must fix.
pub async fn resolve_source(
    ctx: &Context,
    source: &SourceRef,
) -> Result<std::result::Result<ResolvedSource, String>> {
    let install_ns = ctx.config.install_namespace.clone();
    Ok(match source {
        SourceRef::Invalid(reason) => Err(reason.clone()),
        SourceRef::BackupPlan { namespace, name } => {
            match latest::latest_backup::<Backup>(ctx, namespace, name, "spec.source.backupPlan")
                .await?
            {
                Ok(backup) => {
                    let pinned = SourceRef::Backup {
                        namespace: namespace.clone(),
                        name: backup,
                    };
                    return Box::pin(resolve_source(ctx, &pinned)).await;
                }
                Err(reason) => Err(reason),
            }
        }
        SourceRef::ClusterBackupPlan { name } => {
            match latest::latest_backup::<ClusterBackup>(
                ctx,
                "",
                name,
                "spec.source.clusterBackupPlan",
            )
            .await?
            {
                Ok(backup) => {
                    let pinned = SourceRef::ClusterBackup { name: backup };
                    return Box::pin(resolve_source(ctx, &pinned)).await;
                }
                Err(reason) => Err(reason),
            }
        }
        SourceRef::Backup { namespace, name } => {
            let what = format!("Backup {namespace}/{name}");
            let Some(backup) = Api::<Backup>::namespaced(ctx.client.clone(), namespace)
                .get_opt(name)
                .await
                .map_err(|e| Error::kube(format!("read {what}"), e))?
            else {
                return Ok(Err(format!(
                    "{what} does not exist; correct spec.source.backup"
                )));
            };
            let location = match backup_usable(backup.status.as_ref(), &what) {
                Ok(l) => l,
                Err(e) => return Ok(Err(e)),
            };
            let plan_ref = &backup.spec.backup_plan;
            let plan_ns = ref_namespace(plan_ref, namespace).to_string();
            let plan_name = plan_ref.name.clone().unwrap_or_default();
            let plan = Api::<BackupPlan>::namespaced(ctx.client.clone(), &plan_ns)
                .get_opt(&plan_name)
                .await
                .map_err(|e| Error::kube(format!("read BackupPlan {plan_ns}/{plan_name}"), e))?;
            let Some(plan) = plan else {
                return Ok(Err(format!(
                    "the plan {plan_ns}/{plan_name} of {what} no longer exists, so its Target is unknown; restore with spec.source.type Location, the Target and location {location}"
                )));
            };
            let t = &plan.spec.backup_config.target;
            let tns = ref_namespace(t, &plan_ns).to_string();
            let tname = t.name.clone().unwrap_or_default();
            let target = get_target(ctx, &tns, &tname).await?;
            let encrypted = crate::kinds::BackupKind::encrypted(&backup);
            let plan_key = encrypted
                .then(|| {
                    crate::encryption::KeyRef::of_plan(
                        &plan,
                        &format!("{plan_ns}/{plan_name}"),
                        &install_ns,
                    )
                })
                .flatten();
            require_available(
                target,
                &format!("Target {tns}/{tname} of the backup's plan"),
            )
            .map(|target| ResolvedSource {
                target,
                location,
                encrypted,
                plan_key,
            })
        }
        SourceRef::ClusterBackup { name } => {
            let what = format!("ClusterBackup {name}");
            let Some(backup) = Api::<ClusterBackup>::all(ctx.client.clone())
                .get_opt(name)
                .await
                .map_err(|e| Error::kube(format!("read {what}"), e))?
            else {
                return Ok(Err(format!(
                    "{what} does not exist; correct spec.source.clusterBackup"
                )));
            };
            let location = match backup_usable(backup.status.as_ref(), &what) {
                Ok(l) => l,
                Err(e) => return Ok(Err(e)),
            };
            let plan_name = backup
                .spec
                .cluster_backup_plan
                .name
                .clone()
                .unwrap_or_default();
            let plan = Api::<ClusterBackupPlan>::all(ctx.client.clone())
                .get_opt(&plan_name)
                .await
                .map_err(|e| Error::kube(format!("read ClusterBackupPlan {plan_name}"), e))?;
            let Some(plan) = plan else {
                return Ok(Err(format!(
                    "the plan {plan_name} of {what} no longer exists, so its Target is unknown; restore with spec.source.type Location, the Target and location {location}"
                )));
            };
            let t = &plan.spec.backup_config.target;
            let tns = ref_namespace(t, &install_ns).to_string();
            let tname = t.name.clone().unwrap_or_default();
            let target = get_target(ctx, &tns, &tname).await?;
            let encrypted = crate::kinds::BackupKind::encrypted(&backup);
            let plan_key = encrypted
                .then(|| crate::encryption::KeyRef::of_plan(&plan, &plan_name, &install_ns))
                .flatten();
            require_available(
                target,
                &format!("Target {tns}/{tname} of the backup's plan"),
            )
            .map(|target| ResolvedSource {
                target,
                location,
                encrypted,
                plan_key,
            })
        }
        SourceRef::Location {
            target_namespace,
            target_name,
            location,
        } => {
            if let Err(e) = check_location(location) {
                return Ok(Err(e));
            }
            let target = get_target(ctx, target_namespace, target_name).await?;
            require_available(target, &format!("Target {target_namespace}/{target_name}")).map(
                |target| ResolvedSource {
                    target,
                    location: location.clone(),
                    encrypted: false,
                    plan_key: None,
                },
            )
        }
    })
}

/// Whether an S3 target holds the commit object of `location` (`<location>/_metadata/commit.json`,
/// written last by the metamover). `Ok(None)`: not known here (an NFS target, or the target
/// could not be reached in-process) — the metaprocessor's `restore-plan` checks it again.
pub async fn committed_on_target(
    ctx: &Context,
    target: &Target,
    location: &str,
) -> Result<Option<bool>> {
    if target.spec.type_ != tvk_api::target::TargetType::ObjectStore {
        return Ok(None);
    }
    let probe = match target_controller::s3_probe_inputs(target, ctx).await? {
        Ok(p) => p,
        Err(_) => return Ok(None),
    };
    let handle = tokio::runtime::Handle::current();
    let dir = format!("{location}/_metadata");
    let key = format!("{dir}/commit.json");
    // `list` takes a directory-like prefix.
    let found = tokio::task::spawn_blocking(move || {
        target_controller::with_store(&probe, handle, |store| {
            store.list(&dir).map(|keys| keys.contains(&key))
        })
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?;
    Ok(match found {
        Ok(Ok(found)) => Some(found),
        _ => None,
    })
}

/// A restore's status being advanced, with the Events to publish.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The status.
    pub status: RestoreStatus,
    /// (warning, reason, message) of each change.
    pub events: Vec<(bool, String, String)>,
    /// Existing objects cleanupConfig deleted in this reconcile (recorded on the restore in
    /// [`in_place::ANNOTATION_DELETED`]).
    pub cleanup_deleted: Vec<in_place::Doomed>,
    now: String,
}

impl Progress {
    /// Starts from the observed status.
    pub fn new(status: RestoreStatus, now: &str) -> Self {
        Self {
            status,
            events: Vec::new(),
            cleanup_deleted: Vec::new(),
            now: now.to_string(),
        }
    }

    fn record(&mut self, phase: RestorePhase, state: RestorePhaseStatus, reason: &str) {
        let mut conditions = self.status.condition.take().unwrap_or_default();
        if set_condition(&mut conditions, phase, state, reason, &self.now) {
            self.events.push((
                matches!(
                    state,
                    RestorePhaseStatus::Failed | RestorePhaseStatus::Error
                ),
                format!("{phase:?}{state:?}"),
                reason.to_string(),
            ));
        }
        self.status.condition = Some(conditions);
    }

    fn set(&mut self, phase: RestorePhase, state: RestorePhaseStatus, reason: &str) {
        self.record(phase, state, reason);
        self.status.phase = Some(phase);
        self.status.phase_status = Some(state);
    }

    /// Enters `phase`.
    pub fn begin(&mut self, phase: RestorePhase, reason: &str) {
        self.set(phase, RestorePhaseStatus::InProgress, reason);
    }

    /// Completes `phase`.
    pub fn complete(&mut self, phase: RestorePhase, reason: &str) {
        self.set(phase, RestorePhaseStatus::Completed, reason);
    }

    /// Records `phase` as skipped, with why (the current phase does not move).
    pub fn skip(&mut self, phase: RestorePhase, reason: &str) {
        self.record(phase, RestorePhaseStatus::Skipped, reason);
    }

    /// Ends the restore `Failed` in `phase`.
    pub fn fail(&mut self, phase: RestorePhase, reason: &str) {
        self.set(phase, RestorePhaseStatus::Failed, reason);
        self.status.status = Some(RestoreState::Failed);
        self.finish();
    }

    /// The phase the restore failed in, if it failed.
    pub fn failed_phase(&self) -> Option<RestorePhase> {
        (self.status.status == Some(RestoreState::Failed))
            .then_some(self.status.phase)
            .flatten()
    }

    /// Ends the restore `Completed`.
    pub fn succeed(&mut self) {
        self.status.status = Some(RestoreState::Completed);
        self.status.percentage_completion = Some(100);
        self.events.push((
            false,
            "RestoreCompleted".into(),
            "the application's data and objects are restored".into(),
        ));
        self.finish();
    }

    fn finish(&mut self) {
        self.status.completion_timestamp = Some(self.now.clone());
        if let Some(start) = &self.status.start_timestamp
            && let (Ok(a), Ok(b)) = (
                start.parse::<jiff::Timestamp>(),
                self.now.parse::<jiff::Timestamp>(),
            )
        {
            self.status.duration = Some(go_duration(b.duration_since(a)));
        }
    }
}

/// Names and places of one restore.
#[derive(Debug, Clone)]
pub struct Ids {
    /// `Restore` or `ClusterRestore`.
    pub kind: &'static str,
    /// Namespace (a Restore's; None for a ClusterRestore).
    pub ns: Option<String>,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// Where the Jobs and temporary claims live (the install namespace).
    pub job_ns: String,
    /// `ns/name` or `name`.
    pub reference: String,
    /// Owner reference for the Jobs.
    pub owner: Option<OwnerReference>,
    /// `spec.env` of a Restore, added to every Job's container.
    pub env: Vec<EnvVar>,
}

/// Reads the plan the metaprocessor wrote (pure).
pub fn read_plan(status: &RestoreStatus) -> std::result::Result<RestorePlan, String> {
    match RestorePlan::from_status_value(status.restore_application.as_ref()) {
        Err(e) => Err(format!(
            "status.restoreApplication written by the metaprocessor is not readable: {e}"
        )),
        Ok(None) => Err("the metaprocessor Job succeeded but wrote no status.restoreApplication (the restore plan)".into()),
        Ok(Some(plan)) => Ok(plan),
    }
}

/// Why a finished Validation forbids the restore (pure): every blocking problem, in one reason.
pub fn blocking_reason(plan: &RestorePlan) -> Option<String> {
    (!plan.blocking.is_empty()).then(|| {
        format!(
            "the restore is blocked ({} problem(s)): {}",
            plan.blocking.len(),
            plan.blocking.join("; ")
        )
    })
}

/// The objects the metadata restore reported as failed (pure), for the failure reason.
pub fn failed_objects(plan: &RestorePlan) -> Vec<String> {
    plan.objects
        .iter()
        .filter(|o| o.result == Some(ObjectResult::Failed))
        .map(|o| {
            let name = match &o.namespace {
                Some(ns) => format!("{ns}/{}", o.name),
                None => o.name.clone(),
            };
            format!(
                "{} {name}: {}",
                o.kind,
                o.error.clone().unwrap_or_else(|| "no reason given".into())
            )
        })
        .collect()
}

/// Why a restore asking for `actionFlags.imageRestore` cannot restore images (pure): the
/// registry the images are pushed to must be named in full. `None` when images are not asked
/// for or the registry is complete.
pub fn image_registry_problem(
    image_restore: bool,
    registry: Option<&ImageRegistry>,
) -> Option<String> {
    if !image_restore {
        return None;
    }
    let Some(r) = registry else {
        return Some(
            "actionFlags.imageRestore is set but spec.imageRegistry is not: set spec.imageRegistry (registry, repository, registryAuthSecret) to the registry the images are restored into, or unset actionFlags.imageRestore".into(),
        );
    };
    let mut missing = Vec::new();
    if r.registry.trim().is_empty() {
        missing.push("spec.imageRegistry.registry");
    }
    if r.repository.trim().is_empty() {
        missing.push("spec.imageRegistry.repository");
    }
    if ref_name(Some(&r.registry_auth_secret)).is_none() {
        missing.push("spec.imageRegistry.registryAuthSecret.name");
    }
    (!missing.is_empty()).then(|| {
        format!(
            "actionFlags.imageRestore is set but {} {} empty: name the registry, the repository in it and the kubernetes.io/dockerconfigjson Secret that may push there",
            missing.join(" and "),
            if missing.len() == 1 { "is" } else { "are" }
        )
    })
}

/// Whether the plan creates StorageClasses (restoreFlags.restoreStorageClass) (pure).
fn creates_storage_classes(plan: &RestorePlan) -> bool {
    plan.objects.iter().any(|o| {
        o.kind == "StorageClass"
            && o.api_version.starts_with("storage.k8s.io/")
            && o.action == PlanAction::Create
    })
}

/// After DataRestore (done or skipped): ImageRestore when `actionFlags.imageRestore` is set,
/// else it is skipped and MetadataRestore begins.
fn after_data<K: RestoreKind>(restore: &K, progress: &mut Progress) {
    match restore.image_registry().filter(|_| restore.image_restore()) {
        Some(registry) => progress.begin(
            RestorePhase::ImageRestore,
            &format!(
                "restoring the container images that are no longer reachable into {}/{} (metaprocessor Job)",
                registry.registry, registry.repository
            ),
        ),
        None => {
            progress.skip(
                RestorePhase::ImageRestore,
                "actionFlags.imageRestore is not set",
            );
            begin_metadata(progress);
        }
    }
}

fn begin_metadata(progress: &mut Progress) {
    progress.begin(
        RestorePhase::MetadataRestore,
        "recreating the application's objects (metaprocessor Job)",
    );
}

/// The ImageRestore condition's reason from the metaprocessor's `status.images[]` (pure):
/// how many images were still reachable and how many were pushed (under which result).
pub fn images_summary(status: &RestoreStatus) -> String {
    let images = status.images.as_deref().unwrap_or_default();
    if images.is_empty() {
        return "the backup names no container image".into();
    }
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for image in images {
        *counts.entry(format!("{:?}", image.result)).or_default() += 1;
    }
    let restored: Vec<String> = images
        .iter()
        .filter_map(|i| {
            i.restored_image
                .as_ref()
                .map(|to| format!("{} -> {to}", i.image))
        })
        .collect();
    format!(
        "{} image(s): {}{}",
        images.len(),
        counts
            .iter()
            .map(|(result, n)| format!("{n} {result}"))
            .collect::<Vec<_>>()
            .join(", "),
        if restored.is_empty() {
            String::new()
        } else {
            format!("; workloads will use {}", restored.join(", "))
        }
    )
}

/// Bytes of all planned volumes (pure).
pub fn total_volume_bytes(plan: &RestorePlan) -> u64 {
    plan.volumes
        .iter()
        .filter_map(|v| v.size.as_ref().and_then(quantity_bytes))
        .sum()
}

/// Reconciles one Restore.
pub async fn reconcile_restore(restore: Arc<Restore>, ctx: Arc<Context>) -> Result<Action> {
    // Boxed: the phase machine's future is large.
    let result = Box::pin(reconcile(&*restore, &ctx)).await;
    ctx.metrics
        .observe("restore", result.as_ref().err().map(Error::category));
    result
}

/// Reconciles one ClusterRestore.
pub async fn reconcile_cluster_restore(
    restore: Arc<ClusterRestore>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let result = Box::pin(reconcile(&*restore, &ctx)).await;
    ctx.metrics
        .observe("clusterrestore", result.as_ref().err().map(Error::category));
    result
}

/// Whether a restore's state is final (Completed or Failed: it never changes again).
fn is_terminal(state: Option<RestoreState>) -> bool {
    matches!(state, Some(RestoreState::Completed | RestoreState::Failed))
}

/// The phase machine of either kind.
pub async fn reconcile<K: RestoreKind>(cached: &K, ctx: &Context) -> Result<Action> {
    // Act on the stored object: the watch cache can lag behind this controller's own last
    // status write, and a stale phase would re-run a finished step (as for backups).
    let Some(fresh) = cached
        .api_for(ctx.client.clone())
        .get_opt(&cached.name_any())
        .await
        .map_err(|e| Error::kube(format!("read {} {}", K::KIND, cached.name_any()), e))?
    else {
        // Deleted: its data Jobs' logs are never read again.
        if let Some(uid) = cached.uid() {
            ctx.log_looks.forget(&uid);
        }
        return Ok(Action::await_change());
    };
    let restore = &fresh;
    let observed = restore.restore_status().cloned().unwrap_or_default();
    // Terminal states never change again.
    if is_terminal(observed.status) {
        if let Some(uid) = restore.uid() {
            ctx.log_looks.forget(&uid);
        }
        return Ok(Action::await_change());
    }
    let name = restore.name_any();
    let ns = restore.meta().namespace.clone();
    let uid = restore.uid().ok_or(Error::Incomplete {
        kind: K::KIND,
        field: "uid",
    })?;
    let job_ns = ctx.config.install_namespace.clone();
    let same_ns = ns.as_deref().is_none_or(|n| n == job_ns);
    let ids = Ids {
        kind: K::KIND,
        reference: match &ns {
            Some(ns) => format!("{ns}/{name}"),
            None => name.clone(),
        },
        owner: same_ns.then(|| restore.controller_owner_ref(&())).flatten(),
        ns,
        name,
        uid,
        job_ns,
        env: restore.job_env(),
    };
    let mut progress = Progress::new(observed.clone(), &now_rfc3339());
    let action = step(restore, ctx, &ids, &mut progress).await?;
    // What cleanupConfig deleted is recorded on the restore before anything else can fail.
    let deletions = in_place::recorded_deletions(restore.annotations(), &progress.cleanup_deleted);
    if !progress.cleanup_deleted.is_empty() {
        let value = serde_json::to_string(&deletions).map_err(|source| Error::Serde {
            what: "the objects cleanupConfig deleted",
            source,
        })?;
        restore
            .api_for(ctx.client.clone())
            .patch(
                &ids.name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"annotations": {
                    in_place::ANNOTATION_DELETED: value}}})),
            )
            .await
            .map_err(|e| {
                Error::kube(
                    format!(
                        "record what cleanupConfig deleted on {} {}",
                        K::KIND,
                        ids.reference
                    ),
                    e,
                )
            })?;
    }
    if let Some(failed) = progress.failed_phase() {
        // Cleanup before the terminal status is written: an error here is retried, and a
        // failed restore is never left with its Jobs or partial objects behind.
        let plan = RestorePlan::from_status_value(progress.status.restore_application.as_ref())
            .ok()
            .flatten();
        let summary =
            cleanup::run(ctx, &ids, plan.as_ref(), restore.cleanup_on_failure(), true).await?;
        progress.record(
            RestorePhase::RestoreCleanup,
            RestorePhaseStatus::Completed,
            &summary,
        );
        // cleanupConfig's deletions are not undone (as in T4K): say which objects are gone.
        let lost = in_place::not_restored(ctx, &deletions).await?;
        if !lost.is_empty() {
            let note = in_place::not_restored_note(&lost);
            let reason = progress
                .status
                .condition
                .iter()
                .flatten()
                .find(|c| c.phase == Some(failed))
                .and_then(|c| c.reason.clone())
                .unwrap_or_default();
            progress.record(
                failed,
                RestorePhaseStatus::Failed,
                &format!("{reason}; {note}"),
            );
            progress
                .events
                .push((true, "CleanupObjectsNotRestored".into(), note));
        }
        progress.status.phase = Some(failed);
        progress.status.phase_status = Some(RestorePhaseStatus::Failed);
    }
    if is_terminal(progress.status.status) {
        ctx.log_looks.forget(&ids.uid);
    }
    let mut to_write = progress.status.clone();
    // status.restoreApplication, createdNamespaces and images belong to the metaprocessor.
    to_write.restore_application = None;
    to_write.created_namespaces = None;
    to_write.images = None;
    let mut observed_cmp = observed;
    observed_cmp.restore_application = None;
    observed_cmp.created_namespaces = None;
    observed_cmp.images = None;
    if to_write != observed_cmp {
        apply_status(
            &restore.api_for(ctx.client.clone()),
            restore,
            FIELD_MANAGER,
            &to_write,
        )
        .await?;
        for (warning, reason, note) in &progress.events {
            ctx.event(restore, *warning, reason, note.clone()).await;
        }
    }
    Ok(action)
}

async fn step<K: RestoreKind>(
    restore: &K,
    ctx: &Context,
    ids: &Ids,
    progress: &mut Progress,
) -> Result<Action> {
    let poll = Action::requeue(ctx.backup_poll);
    let phase = progress.status.phase;
    // Every phase needs the source (the Target's flags); a source that vanished mid-restore
    // fails the phase it is in.
    let source = resolve_source(ctx, &restore.source_ref(&ids.job_ns)).await?;
    let current = phase.unwrap_or(RestorePhase::Validation);
    let source = match source {
        Ok(s) => s,
        Err(reason) => {
            progress.fail(current, &reason);
            return Ok(Action::await_change());
        }
    };
    let mut access = match job_access(&source.target, &ids.job_ns) {
        Ok(a) => a,
        Err(e) => {
            progress.fail(current, &e.to_string());
            return Ok(Action::await_change());
        }
    };
    // Every Job of a restore reads the backup: the key reaches all of them.
    // The key Secret is copied for the Jobs once, at Validation; later phases mount the copy.
    let copy_key = matches!(phase, None | Some(RestorePhase::Validation));
    match restore_key(ctx, restore, ids, &source, copy_key).await? {
        Ok(Some(secret)) => crate::encryption::mount(&mut access, &secret),
        Ok(None) => {}
        Err(reason) => {
            progress.fail(current, &reason);
            return Ok(Action::await_change());
        }
    }
    match phase {
        None | Some(RestorePhase::Validation) => {
            if matches!(progress.status.status, None | Some(RestoreState::Pending))
                || phase.is_none()
            {
                if let Some(reason) =
                    image_registry_problem(restore.image_restore(), restore.image_registry())
                        .or_else(|| env_problem(&ids.env, ids.ns.as_deref(), &ids.job_ns))
                        .or_else(|| {
                            protect::protection_problem(
                                K::KIND,
                                restore.protect_restored_app(),
                                &latest::as_backup(restore.source_ref(&ids.job_ns)),
                            )
                        })
                {
                    progress.fail(RestorePhase::Validation, &reason);
                    return Ok(Action::await_change());
                }
                // One restore at a time into a namespace (Restores and ClusterRestores alike):
                // the others wait, Pending.
                let mine = ordering::destinations(ctx, restore).await?;
                if let Some(b) = ordering::blocker(ctx, restore.meta(), &mine).await? {
                    progress.status.status = Some(RestoreState::Pending);
                    progress.begin(
                        RestorePhase::Validation,
                        &format!(
                            "waiting: {} is restoring into namespace {}; this restore starts when it has finished",
                            b.who, b.namespace
                        ),
                    );
                    return Ok(poll);
                }
                // A cross-cluster restore names a location: it must be a committed backup.
                if matches!(restore.source_ref(&ids.job_ns), SourceRef::Location { .. })
                    && committed_on_target(ctx, &source.target, &source.location).await?
                        == Some(false)
                {
                    progress.fail(
                        RestorePhase::Validation,
                        &format!(
                            "{} on Target {}/{} is not a committed backup: {}/_metadata/commit.json does not exist (the backup never finished, or the location is wrong)",
                            source.location,
                            source.target.namespace().unwrap_or_default(),
                            source.target.name_any(),
                            source.location
                        ),
                    );
                    return Ok(Action::await_change());
                }
                let s = &mut progress.status;
                s.status = Some(RestoreState::InProgress);
                s.start_timestamp.get_or_insert_with(now_rfc3339);
                s.percentage_completion = Some(0);
                s.restore_scope = Some(if K::KIND == "Restore" {
                    "App".into()
                } else {
                    "Namespace".into()
                });
                progress.begin(
                    RestorePhase::Validation,
                    &format!(
                        "computing the restore plan of {} (metaprocessor Job)",
                        source.location
                    ),
                );
            }
            let state = metamover_job(
                restore,
                ctx,
                ids,
                &access,
                &source,
                RestorePhase::Validation,
                &["restore-plan"],
                progress,
            )
            .await?;
            match state {
                JobState::Missing | JobState::Running => Ok(poll),
                JobState::Failed(_) => Ok(Action::await_change()),
                JobState::Succeeded => {
                    let plan = match read_plan(&progress.status) {
                        Ok(p) => p,
                        Err(reason) => {
                            progress.fail(RestorePhase::Validation, &reason);
                            return Ok(Action::await_change());
                        }
                    };
                    if let Some(reason) = blocking_reason(&plan) {
                        progress.fail(RestorePhase::Validation, &reason);
                        return Ok(Action::await_change());
                    }
                    let scope = restore.cleanup_scope();
                    let mut cleaned = None;
                    if scope.any() {
                        match in_place::step(ctx, ids, &plan, &scope, progress).await? {
                            in_place::Step::Waiting => return Ok(poll),
                            in_place::Step::Failed(reason) => {
                                progress.fail(RestorePhase::Validation, &reason);
                                return Ok(Action::await_change());
                            }
                            in_place::Step::Done(summary) => cleaned = Some(summary),
                        }
                    }
                    let total = total_volume_bytes(&plan);
                    progress.status.size = Some(IntOrString::String(total.to_string()));
                    let c = &plan.counts;
                    let mut summary = format!(
                        "restore plan: {} object(s) to create, {} to patch, {} to skip, {} excluded, {} volume(s){}",
                        c.create,
                        c.patch,
                        c.skip,
                        c.exclude,
                        plan.volumes.len(),
                        if plan.warnings.is_empty() {
                            String::new()
                        } else {
                            format!("; warnings: {}", plan.warnings.join("; "))
                        }
                    );
                    if let Some(c) = cleaned {
                        summary.push_str(&format!("; {c}"));
                    }
                    progress.complete(RestorePhase::Validation, &summary);
                    if restore.only_metadata() || plan.volumes.is_empty() {
                        progress.skip(
                            RestorePhase::DataRestore,
                            if restore.only_metadata() {
                                "restoreFlags.onlyMetadata is set"
                            } else {
                                "the backup has no volumes to restore"
                            },
                        );
                        progress.status.percentage_completion = Some(80);
                        after_data(restore, progress);
                    } else {
                        progress.begin(
                            RestorePhase::DataRestore,
                            &format!(
                                "restoring {} volume(s), {total} bytes (datamover Jobs)",
                                plan.volumes.len()
                            ),
                        );
                    }
                    Ok(Action::requeue(Duration::from_secs(1)))
                }
            }
        }
        Some(RestorePhase::DataRestore) => {
            let plan = match read_plan(&progress.status) {
                Ok(p) => p,
                Err(reason) => {
                    progress.fail(RestorePhase::DataRestore, &reason);
                    return Ok(Action::await_change());
                }
            };
            // restoreFlags.restoreStorageClass: the classes the plan creates must exist before
            // the volumes' claims are provisioned (the metaprocessor creates them, create-only).
            if creates_storage_classes(&plan) {
                let state = metamover_job(
                    restore,
                    ctx,
                    ids,
                    &access,
                    &source,
                    RestorePhase::DataRestore,
                    &["restore-storage-classes"],
                    progress,
                )
                .await?;
                match state {
                    JobState::Missing | JobState::Running => return Ok(poll),
                    JobState::Failed(_) => return Ok(Action::await_change()),
                    JobState::Succeeded => {}
                }
            }
            let outcome = data::step(ctx, ids, &plan, &access).await?;
            let total = total_volume_bytes(&plan).max(1);
            // 0..80: finished volumes whole, running ones as their Jobs last reported.
            let done = outcome
                .done_bytes
                .saturating_add(outcome.in_flight_bytes.unwrap_or(0));
            progress.status.percentage_completion = Some(crate::progress::advance(
                progress.status.percentage_completion,
                crate::progress::phase_percent(0, 80, done, total),
            ));
            match outcome.state {
                data::DataState::Failed(reason) => {
                    ctx.metrics.job_failed("DataRestore");
                    progress.fail(RestorePhase::DataRestore, &reason);
                    Ok(Action::await_change())
                }
                data::DataState::Working => {
                    if !outcome.retries.is_empty() {
                        progress.begin(
                            RestorePhase::DataRestore,
                            &format!(
                                "restoring {} volume(s), {total} bytes (datamover Jobs); retrying: {}",
                                plan.volumes.len(),
                                outcome.retries.join("; ")
                            ),
                        );
                    }
                    Ok(poll)
                }
                data::DataState::Done => {
                    progress.status.percentage_completion = Some(80);
                    progress.complete(
                        RestorePhase::DataRestore,
                        &format!(
                            "{} volume(s) restored and bound to their claims",
                            plan.volumes.len()
                        ),
                    );
                    after_data(restore, progress);
                    Ok(Action::requeue(Duration::from_secs(1)))
                }
            }
        }
        Some(RestorePhase::ImageRestore) => {
            let state = metamover_job(
                restore,
                ctx,
                ids,
                &access,
                &source,
                RestorePhase::ImageRestore,
                &["images", "restore"],
                progress,
            )
            .await?;
            match state {
                JobState::Missing | JobState::Running => Ok(poll),
                JobState::Failed(_) => Ok(Action::await_change()),
                JobState::Succeeded => {
                    progress.complete(
                        RestorePhase::ImageRestore,
                        &images_summary(&progress.status),
                    );
                    begin_metadata(progress);
                    Ok(Action::requeue(Duration::from_secs(1)))
                }
            }
        }
        Some(RestorePhase::MetadataRestore) => {
            let state = metamover_job(
                restore,
                ctx,
                ids,
                &access,
                &source,
                RestorePhase::MetadataRestore,
                &["restore"],
                progress,
            )
            .await?;
            match state {
                JobState::Missing | JobState::Running => Ok(poll),
                JobState::Failed(_) => Ok(Action::await_change()),
                JobState::Succeeded => {
                    let created = RestorePlan::from_status_value(
                        progress.status.restore_application.as_ref(),
                    )
                    .ok()
                    .flatten()
                    .map_or(0, |p| p.created.len());
                    progress.complete(
                        RestorePhase::MetadataRestore,
                        &format!("the application's objects are restored ({created} created)"),
                    );
                    let sites = restore.hook_configs();
                    if sites.is_empty() {
                        progress.skip(
                            RestorePhase::HookTargetIdentification,
                            "no hooks configured",
                        );
                        progress.skip(RestorePhase::Unquiesce, "no hooks configured");
                        return after_hooks(restore, ctx, ids, progress).await;
                    }
                    progress.begin(
                        RestorePhase::HookTargetIdentification,
                        &post_hooks::waiting_reason(&sites),
                    );
                    Ok(Action::requeue(Duration::from_secs(1)))
                }
            }
        }
        Some(RestorePhase::HookTargetIdentification) => {
            let sites = restore.hook_configs();
            match post_hooks::identify(ctx, &sites, progress).await? {
                post_hooks::Identified::Failed(reason) => {
                    progress.fail(RestorePhase::HookTargetIdentification, &reason);
                    Ok(Action::await_change())
                }
                post_hooks::Identified::Waiting => Ok(Action::requeue(Duration::from_secs(2))),
                post_hooks::Identified::Ready(targets) => {
                    let warnings: Vec<String> = targets
                        .iter()
                        .flat_map(hooks::HookTargets::warnings)
                        .collect();
                    for w in &warnings {
                        progress
                            .events
                            .push((true, "HookTargetWarning".into(), w.clone()));
                    }
                    progress.complete(
                        RestorePhase::HookTargetIdentification,
                        &post_hooks::identified_summary(&targets, warnings.len()),
                    );
                    progress.begin(RestorePhase::Unquiesce, "running the post-restore hooks");
                    Ok(Action::requeue(Duration::from_secs(1)))
                }
            }
        }
        Some(RestorePhase::Unquiesce) => {
            let sites = restore.hook_configs();
            match post_hooks::run(ctx, &sites).await? {
                Err(reason) => {
                    progress.fail(RestorePhase::Unquiesce, &reason);
                    Ok(Action::await_change())
                }
                Ok(report) => {
                    for w in report.warnings() {
                        progress.events.push((true, "HookFailureIgnored".into(), w));
                    }
                    progress.complete(
                        RestorePhase::Unquiesce,
                        &format!(
                            "the post-restore hooks ran ({} step(s))",
                            report.executions.len()
                        ),
                    );
                    after_hooks(restore, ctx, ids, progress).await
                }
            }
        }
        Some(RestorePhase::AddProtection) => {
            match protect::add_protection(ctx, ids, &restore.source_ref(&ids.job_ns)).await? {
                Ok(reason) => {
                    progress.complete(RestorePhase::AddProtection, &reason);
                    finish(ctx, ids, progress).await?;
                    Ok(Action::await_change())
                }
                Err(reason) => {
                    progress.fail(RestorePhase::AddProtection, &reason);
                    Ok(Action::await_change())
                }
            }
        }
        Some(other) => {
            progress.fail(
                other,
                &format!("phase {other:?} is not run by this control plane version (found after a restart or upgrade); the restore cannot be resumed"),
            );
            Ok(Action::await_change())
        }
    }
}

/// After the post-restore hooks (run or skipped): AddProtection with
/// `actionFlags.protectRestoredApp`, else RestoreCleanup and `Completed`.
async fn after_hooks<K: RestoreKind>(
    restore: &K,
    ctx: &Context,
    ids: &Ids,
    progress: &mut Progress,
) -> Result<Action> {
    if restore.protect_restored_app() {
        progress.begin(
            RestorePhase::AddProtection,
            "creating a BackupPlan for the restored application from the source plan",
        );
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    progress.skip(
        RestorePhase::AddProtection,
        "actionFlags.protectRestoredApp is not set",
    );
    finish(ctx, ids, progress).await?;
    Ok(Action::await_change())
}

/// RestoreCleanup of a successful restore, then `Completed`.
async fn finish(ctx: &Context, ids: &Ids, progress: &mut Progress) -> Result<()> {
    let summary = cleanup::run(ctx, ids, None, false, false).await?;
    progress.complete(RestorePhase::RestoreCleanup, &summary);
    progress.succeed();
    Ok(())
}

/// Makes a Job built by [`build_job`] the restore's: labels [`LABEL_RESTORE`] /
/// [`LABEL_RESTORE_UID`] and annotation [`ANNOTATION_RESTORE_REF`] instead of the backup's, on
/// the Job and its pod template, and the Restore's `spec.env` added to every container (a
/// variable the control plane sets itself — target credentials, proxy — keeps its value).
pub fn adapt_for_restore(job: &mut Job, ids: &Ids) {
    let fix = |meta: &mut ObjectMeta| {
        let labels = meta.labels.get_or_insert_with(Default::default);
        labels.remove(LABEL_BACKUP);
        labels.remove(LABEL_BACKUP_UID);
        labels.insert(
            LABEL_RESTORE.into(),
            ids.name.chars().take(63).collect::<String>(),
        );
        labels.insert(LABEL_RESTORE_UID.into(), ids.uid.clone());
        if let Some(annotations) = meta.annotations.as_mut() {
            annotations.remove(ANNOTATION_BACKUP_REF);
        }
    };
    fix(&mut job.metadata);
    job.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(ANNOTATION_RESTORE_REF.into(), ids.reference.clone());
    if let Some(spec) = job.spec.as_mut() {
        fix(spec.template.metadata.get_or_insert_with(Default::default));
        for c in spec
            .template
            .spec
            .iter_mut()
            .flat_map(|p| p.containers.iter_mut())
        {
            let env = c.env.get_or_insert_with(Vec::new);
            for var in &ids.env {
                if !env.iter().any(|e| e.name == var.name) {
                    env.push(var.clone());
                }
            }
        }
    }
}

/// Why `spec.env` cannot reach the restore's Jobs (pure): a variable read from a Secret or
/// ConfigMap of the Restore's namespace, when the Jobs run in another namespace (a pod can only
/// read its own namespace's), or a variable without a name.
pub fn env_problem(env: &[EnvVar], restore_ns: Option<&str>, job_ns: &str) -> Option<String> {
    let mut problems = Vec::new();
    for (i, var) in env.iter().enumerate() {
        if var.name.trim().is_empty() {
            problems.push(format!("spec.env[{i}] has no name"));
            continue;
        }
        let from = var.value_from.as_ref();
        let source = from
            .and_then(|f| f.secret_key_ref.as_ref())
            .map(|r| format!("Secret {}", r.name))
            .or_else(|| {
                from.and_then(|f| f.config_map_key_ref.as_ref())
                    .map(|r| format!("ConfigMap {}", r.name))
            });
        if let Some(source) = source
            && restore_ns.is_some_and(|ns| ns != job_ns)
        {
            problems.push(format!(
                "spec.env[{i}] {} reads {source}, but the restore's Jobs run in namespace {job_ns} and cannot read the Restore's namespace {}; create it in {job_ns} and restore from there, or give the value inline",
                var.name,
                restore_ns.unwrap_or_default()
            ));
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// Creates (or adopts) a Job and reads its state; 409 on create adopts the existing Job.
async fn ensure_job(ctx: &Context, ids: &Ids, job: &Job) -> Result<()> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ids.job_ns);
    match api.create(&PostParams::default(), job).await {
        Ok(_) => Ok(()),
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(Error::kube(
            format!("create Job {}/{}", ids.job_ns, job.name_any()),
            e,
        )),
    }
}

async fn read_job(ctx: &Context, ids: &Ids, name: &str) -> Result<JobState> {
    let existing = Api::<Job>::namespaced(ctx.client.clone(), &ids.job_ns)
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("read Job {}/{name}", ids.job_ns), e))?;
    Ok(job_state(existing.as_ref()))
}

/// The metaprocessor Job of `phase` (`restore-plan`, `images restore` or `restore`): created or adopted, its
/// state read; a failed Job fails the restore with the Job's message and the failed objects.
#[allow(clippy::too_many_arguments)]
async fn metamover_job<K: RestoreKind>(
    restore: &K,
    ctx: &Context,
    ids: &Ids,
    access: &TargetAccess,
    source: &ResolvedSource,
    phase: RestorePhase,
    command: &[&str],
    progress: &mut Progress,
) -> Result<JobState> {
    let name = object_name(&format!("{phase:?}"), &ids.uid, &command.join(" "));
    let state = read_job(ctx, ids, &name).await?;
    match &state {
        JobState::Missing => {
            let mut args: Vec<String> = command.iter().map(|c| (*c).to_string()).collect();
            args.extend(["--kind".into(), K::KIND.into()]);
            if let Some(ns) = restore.metamover_namespace() {
                args.extend(["--namespace".into(), ns]);
            }
            args.extend([
                "--name".into(),
                ids.name.clone(),
                "--location".into(),
                source.location.clone(),
            ]);
            // An encrypted backup's key is mounted (`access`, [`restore_key`]); its metadata
            // must then all be sealed.
            if source.encrypted {
                args.push(crate::encryption::REQUIRE_SEALED.into());
            }
            let request = JobRequest {
                name: name.clone(),
                namespace: &ids.job_ns,
                backup_label: ids.name.chars().take(63).collect(),
                backup_uid: &ids.uid,
                backup_ref: ids.reference.clone(),
                owner: ids.owner.clone(),
                phase: "metadata",
                image: ctx.config.images.metamover.clone(),
                service_account: Some(ctx.config.service_accounts.metamover.clone()),
                args,
                access: access.clone(),
                resources: ctx.config.job_resources.metadata.clone(),
            };
            let mut job = build_job(&request, &ctx.config)?;
            adapt_for_restore(&mut job, ids);
            ensure_job(ctx, ids, &job).await?;
        }
        JobState::Failed(job_message) => {
            ctx.metrics.job_failed(&format!("{phase:?}"));
            let message =
                crate::jobs::failure_message(&ctx.client, &ids.job_ns, &name, job_message).await?;
            let mut reason = format!("Job {}/{name} failed: {message}", ids.job_ns);
            if let Ok(Some(plan)) =
                RestorePlan::from_status_value(progress.status.restore_application.as_ref())
            {
                let failed = failed_objects(&plan);
                if !failed.is_empty() {
                    reason = format!("{}; {reason}", failed.join("; "));
                }
            }
            progress.fail(phase, &reason);
        }
        JobState::Running | JobState::Succeeded => {}
    }
    Ok(state)
}

/// Requeue policy on errors.
pub fn error_policy<K: RestoreKind>(_restore: Arc<K>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, kind = K::KIND, "restore reconcile failed");
    if error.is_user_error() {
        Action::requeue(Duration::from_secs(300))
    } else {
        Action::requeue(Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use serde_json::json;

    use super::*;

    #[test]
    fn locations_must_be_two_uid_segments() {
        assert!(check_location("plan-uid/bkp-uid").is_ok());
        for bad in [
            "",
            "plan",
            "/plan/bkp",
            "plan/../x",
            "../bkp",
            "plan/bkp/extra",
            "plan/b kp",
            "plan/",
        ] {
            let err = check_location(bad).unwrap_err();
            assert!(err.contains("<plan uid>/<backup uid>"), "{bad}: {err}");
        }
    }

    #[test]
    fn unsupported_source_types_are_refused_by_name() {
        let r: Restore = serde_json::from_value(json!({
            "apiVersion": "triliovault.trilio.io/v1", "kind": "Restore",
            "metadata": {"name": "r", "namespace": "app"},
            "spec": {"source": {"type": "Snapshot", "snapshot": {"name": "s"}}}
        }))
        .unwrap();
        assert_eq!(
            r.source_ref("trilio-system"),
            SourceRef::Invalid(
                "source type Snapshot is not supported by this version (it has no Snapshot resources); restore a Backup, the latest backup of a BackupPlan, or a Location"
                    .into()
            )
        );
        let c: ClusterRestore = serde_json::from_value(json!({
            "apiVersion": "triliovault.trilio.io/v1", "kind": "ClusterRestore",
            "metadata": {"name": "r"},
            "spec": {"source": {"type": "Location", "target": {"name": "t"}, "location": "p/b"}}
        }))
        .unwrap();
        assert_eq!(
            c.source_ref("trilio-system"),
            SourceRef::Location {
                target_namespace: "trilio-system".into(),
                target_name: "t".into(),
                location: "p/b".into()
            }
        );
    }

    #[test]
    fn blocking_problems_are_all_in_the_reason_and_failed_objects_are_named() {
        let plan: RestorePlan = serde_json::from_value(json!({
            "objects": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "dest", "name": "web",
                 "action": "Create", "result": "Failed", "error": "image field invalid"},
                {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "dest", "name": "c",
                 "action": "Create", "result": "Created"}
            ],
            "blocking": ["ConfigMap dest/settings already exists; set restoreFlags.skipIfAlreadyExists", "StorageClass fast does not exist"]
        }))
        .unwrap();
        let reason = blocking_reason(&plan).unwrap();
        assert!(
            reason.contains("2 problem(s)")
                && reason.contains("settings")
                && reason.contains("StorageClass fast"),
            "{reason}"
        );
        assert_eq!(
            failed_objects(&plan),
            vec!["Deployment dest/web: image field invalid".to_string()]
        );
        assert_eq!(blocking_reason(&RestorePlan::default()), None);
    }
}
