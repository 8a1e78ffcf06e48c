//! Garbage collection of the encryption key copies ([`crate::encryption::job_secret`]) in the
//! install namespace: a `tvk-encryption-<hash>` Secret is deleted when nothing can need it.
//!
//! A copy is deleted when all of these hold (read in this order, so a copy refreshed after the
//! first read is never deleted):
//!
//! 1. it is ours (label `app.kubernetes.io/managed-by: tvk-control-plane`, the source
//!    annotation, the `tvk-encryption-` name) and was created or last refreshed (annotation
//!    [`crate::encryption::ANNOTATION_REFRESHED`], written on every apply before a Job) longer
//!    than the grace period ago;
//! 2. no Job of the install namespace mounts it (finished Jobs included, until their TTL);
//! 3. no Backup/ClusterBackup that is not terminal, is `Coalescing`, carries `coalesceInfo`
//!    (a retention coalesce in flight) or is being deleted (its finalizer's coalesce Jobs) has a
//!    plan whose key it copies; no Restore/ClusterRestore that is not terminal names it
//!    (`spec.encryption`) or restores from a backup or plan whose key it copies.
//!
//! The delete carries the `resourceVersion` read in step 1 as a precondition: a controller that
//! refreshed the copy for a Job meanwhile changed it, the delete fails with a conflict and the
//! copy stays. Any list that fails deletes nothing (the next sweep tries again). Every Job
//! creation re-applies its copy first, as before, so a deleted copy is re-created when a later
//! backup or restore needs it.
//!
//! Where: one loop in the controllers' runtime ([`crate::runner::run_controllers`], so only the
//! Lease holder sweeps), every [`SWEEP_INTERVAL`]. The copies belong to the install namespace,
//! not to a Target: a sweep in the Target reconcile would run once per Target (and never with
//! none), for a question no Target answers.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use k8s_openapi::api::{batch::v1::Job, core::v1::Secret};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Preconditions},
};
use tvk_api::{
    backup::{Backup, BackupState, ClusterBackup},
    backup_plan::{BackupPlan, ClusterBackupPlan},
    restore::{ClusterRestore, Restore, RestoreState},
};

use crate::{
    context::{CONTROLLER_NAME, Context},
    encryption::{ANNOTATION_REFRESHED, ANNOTATION_SOURCE, KeyRef},
    error::{Error, Result, is_conflict, is_not_found},
    kinds::{BackupKind, PlanKind},
    restore_controller::{RestoreKind, SourceRef},
    runner::scoped,
};

/// How long an unused copy is kept after it was created or last refreshed for a Job.
pub const GRACE: Duration = Duration::from_secs(600);
/// How often the sweep runs.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(300);
/// Name prefix of the copies ([`crate::encryption::copy_name`]).
const PREFIX: &str = "tvk-encryption-";

/// Names of the Secrets in `job_ns` a Job's pod template mounts (pure).
fn mounted_secrets(jobs: &[Job]) -> BTreeSet<String> {
    jobs.iter()
        .filter_map(|j| j.spec.as_ref()?.template.spec.as_ref()?.volumes.as_ref())
        .flatten()
        .filter_map(|v| v.secret.as_ref()?.secret_name.clone())
        .collect()
}

/// When `copy` was created or last refreshed, whichever is later (pure); `None` when neither
/// can be read (such a copy is kept).
fn last_applied(copy: &Secret) -> Option<jiff::Timestamp> {
    let created = copy
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| t.0.to_string().parse::<jiff::Timestamp>().ok());
    let refreshed = copy
        .annotations()
        .get(ANNOTATION_REFRESHED)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    created.max(refreshed)
}

/// The copies to delete, as `(name, resourceVersion)` (pure): ours, applied longer than
/// `grace` before `now`, mounted by none of `jobs` and not in `in_use`.
pub fn unused_copies(
    copies: &[Secret],
    jobs: &[Job],
    in_use: &BTreeSet<String>,
    now: jiff::Timestamp,
    grace: Duration,
) -> Vec<(String, String)> {
    let mounted = mounted_secrets(jobs);
    let grace = jiff::SignedDuration::try_from(grace).unwrap_or(jiff::SignedDuration::MAX);
    copies
        .iter()
        .filter(|s| {
            s.labels()
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str)
                == Some(CONTROLLER_NAME)
                && s.annotations().contains_key(ANNOTATION_SOURCE)
                && s.name_any().starts_with(PREFIX)
                && s.metadata.deletion_timestamp.is_none()
        })
        .filter(|s| !mounted.contains(&s.name_any()) && !in_use.contains(&s.name_any()))
        .filter(|s| last_applied(s).is_some_and(|t| now.duration_since(t) >= grace))
        .filter_map(|s| Some((s.name_any(), s.resource_version()?)))
        .collect()
}

/// A backup whose plan's key may still be needed: running, folded by retention or being
/// deleted (pure).
fn backup_needs_key<K: BackupKind>(backup: &K) -> bool {
    let status = backup.backup_status();
    let state = status.and_then(|s| s.status);
    backup.meta().deletion_timestamp.is_some()
        || !state.is_some_and(BackupState::is_terminal)
        || state == Some(BackupState::Coalescing)
        || status.is_some_and(|s| s.coalesce_info.is_some())
}

/// Lists `api`; Forbidden (a kind this install may not list, e.g. cluster-scoped kinds in a
/// Namespaced install) is an empty list, any other error an error.
async fn list_all<K>(api: Api<K>, what: &str) -> Result<Vec<K>>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.list(&ListParams::default()).await {
        Ok(l) => Ok(l.items),
        Err(kube::Error::Api(e)) if e.code == 403 => Ok(Vec::new()),
        Err(e) => Err(Error::kube(format!("list {what} (key copy sweep)"), e)),
    }
}

/// Name of the Secret Jobs mount for the key of each plan that names one, by plan key
/// (`ns/name`, or `name` for a ClusterBackupPlan).
fn plan_keys<P: PlanKind>(plans: &[P], job_ns: &str) -> BTreeMap<String, String> {
    plans
        .iter()
        .filter_map(|p| {
            let key = p.key();
            let secret = KeyRef::of_plan(p, &key, job_ns)?.job_secret_name(job_ns);
            Some((key, secret))
        })
        .collect()
}

/// `ns/name` of a namespaced object, `name` of a cluster-scoped one.
fn key_of(ns: &str, name: &str) -> String {
    if ns.is_empty() {
        name.to_string()
    } else {
        format!("{ns}/{name}")
    }
}

/// The plan key (as [`plan_keys`]) of `backup`.
fn plan_of<K: BackupKind>(backup: &K) -> String {
    let (ns, name) = backup.plan_key();
    key_of(&ns, &name)
}

/// The key Secrets (in `job_ns`) of the restores that may still run a Job: their own
/// `spec.encryption`, else the key of the plan of the backup they restore.
fn restore_keys<R: RestoreKind>(
    restores: &[R],
    job_ns: &str,
    backup_plans: &BTreeMap<String, String>,
    plan_secrets: &BTreeMap<String, String>,
    used: &mut BTreeSet<String>,
) {
    for r in restores.iter().filter(|r| {
        !matches!(
            r.restore_status().and_then(|s| s.status),
            Some(RestoreState::Completed | RestoreState::Failed)
        )
    }) {
        if let Some(secret) = r.encryption_secret() {
            let key = KeyRef {
                secret: secret.clone(),
                default_ns: r.namespace().unwrap_or_else(|| job_ns.to_string()),
                field: String::new(),
            };
            used.insert(key.job_secret_name(job_ns));
        }
        let plan = match r.source_ref(job_ns) {
            SourceRef::Backup { namespace, name } => backup_plans.get(&key_of(&namespace, &name)),
            SourceRef::ClusterBackup { name } => backup_plans.get(&name),
            SourceRef::BackupPlan { namespace, name } => {
                plan_secrets.get(&key_of(&namespace, &name))
            }
            SourceRef::ClusterBackupPlan { name } => plan_secrets.get(&name),
            _ => None,
        };
        if let Some(p) = plan {
            used.insert(p.clone());
        }
    }
}

/// Every key Secret name (in the install namespace) a backup, restore or retention in flight
/// may still mount.
async fn keys_in_use(ctx: &Context) -> Result<BTreeSet<String>> {
    let job_ns = ctx.config.install_namespace.as_str();
    let cluster = ctx.config.watch_namespace().is_none();
    let plans = list_all(scoped::<BackupPlan>(ctx), "BackupPlans").await?;
    let cluster_plans = if cluster {
        list_all(
            Api::<ClusterBackupPlan>::all(ctx.client.clone()),
            "ClusterBackupPlans",
        )
        .await?
    } else {
        Vec::new()
    };
    let mut plan_secrets = plan_keys(&plans, job_ns);
    plan_secrets.extend(plan_keys(&cluster_plans, job_ns));
    let backups = list_all(scoped::<Backup>(ctx), "Backups").await?;
    let cluster_backups = if cluster {
        list_all(
            Api::<ClusterBackup>::all(ctx.client.clone()),
            "ClusterBackups",
        )
        .await?
    } else {
        Vec::new()
    };
    // Backup (`ns/name`, or `name` for a ClusterBackup) → the key Secret of its plan.
    let mut backup_plans = BTreeMap::new();
    let mut used = BTreeSet::new();
    for (key, plan, needs) in backups
        .iter()
        .map(|b| (b.key(), plan_of(b), backup_needs_key(b)))
        .chain(
            cluster_backups
                .iter()
                .map(|b| (b.name_any(), plan_of(b), backup_needs_key(b))),
        )
    {
        if let Some(secret) = plan_secrets.get(&plan) {
            if needs {
                used.insert(secret.clone());
            }
            backup_plans.insert(key, secret.clone());
        }
    }
    let restores = list_all(scoped::<Restore>(ctx), "Restores").await?;
    restore_keys(&restores, job_ns, &backup_plans, &plan_secrets, &mut used);
    if cluster {
        let restores = list_all(
            Api::<ClusterRestore>::all(ctx.client.clone()),
            "ClusterRestores",
        )
        .await?;
        restore_keys(&restores, job_ns, &backup_plans, &plan_secrets, &mut used);
    }
    Ok(used)
}

/// One sweep: deletes the key copies of the install namespace nothing needs any more (see the
/// module docs) and returns their names.
pub async fn sweep(ctx: &Context, grace: Duration) -> Result<Vec<String>> {
    let job_ns = ctx.config.install_namespace.as_str();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), job_ns);
    let copies = secrets
        .list(
            &ListParams::default()
                .labels(&format!("app.kubernetes.io/managed-by={CONTROLLER_NAME}")),
        )
        .await
        .map_err(|e| Error::kube("list the encryption key copies", e))?
        .items;
    let now = jiff::Timestamp::now();
    // Nothing old enough: no further reads.
    if unused_copies(&copies, &[], &BTreeSet::new(), now, grace).is_empty() {
        return Ok(Vec::new());
    }
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), job_ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("list the Jobs of the install namespace", e))?
        .items;
    let in_use = keys_in_use(ctx).await?;
    let mut deleted = Vec::new();
    for (name, resource_version) in unused_copies(&copies, &jobs, &in_use, now, grace) {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(resource_version),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match secrets.delete(&name, &params).await {
            Ok(_) => deleted.push(name),
            // Refreshed for a Job since it was read, or gone: kept (or nothing to do).
            Err(e) if is_conflict(&e) || is_not_found(&e) => {}
            Err(e) => {
                let hint = if matches!(&e, kube::Error::Api(a) if a.code == 403) {
                    " (grant the control plane's key-copy Role in this namespace the verbs list and delete on secrets)"
                } else {
                    ""
                };
                return Err(Error::kube(
                    format!("delete the unused encryption key copy {job_ns}/{name}{hint}"),
                    e,
                ));
            }
        }
    }
    Ok(deleted)
}

/// Sweeps every [`SWEEP_INTERVAL`] until `stop` resolves; failures are logged and retried at
/// the next tick.
pub async fn run(ctx: std::sync::Arc<Context>, stop: impl std::future::Future<Output = ()>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => {}
        }
        match sweep(&ctx, GRACE).await {
            Ok(deleted) => {
                for name in deleted {
                    tracing::info!(secret = %name, "deleted an unused encryption key copy");
                }
            }
            Err(error) => tracing::warn!(%error, "encryption key copy sweep failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn copy(name: &str, created: &str, refreshed: Option<&str>) -> Secret {
        let mut annotations = serde_json::json!({ANNOTATION_SOURCE: "app/k"});
        if let Some(r) = refreshed {
            annotations[ANNOTATION_REFRESHED] = r.into();
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": "7",
                "creationTimestamp": created, "annotations": annotations,
                "labels": {"app.kubernetes.io/managed-by": CONTROLLER_NAME}}}))
        .unwrap()
    }

    #[test]
    fn a_copy_goes_a_grace_period_after_its_last_refresh_never_while_mounted_or_used() {
        let now: jiff::Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        let grace = Duration::from_secs(600);
        let old = "2026-11-22T11:00:00Z";
        let copies = [
            copy("tvk-encryption-old", old, None),
            copy(
                "tvk-encryption-refreshed",
                old,
                Some("2026-11-22T11:55:00Z"),
            ),
            copy(
                "tvk-encryption-refreshed-long-ago",
                old,
                Some("2026-11-22T11:40:00Z"),
            ),
            copy("tvk-encryption-young", "2026-11-22T11:59:00Z", None),
            copy("tvk-encryption-mounted", old, None),
            copy("tvk-encryption-used", old, None),
            copy("other-name", old, None),
        ];
        let job: Job = serde_json::from_value(serde_json::json!({
            "spec": {"template": {"spec": {"containers": [],
                "volumes": [{"name": "k", "secret": {"secretName": "tvk-encryption-mounted"}}]}}}}))
        .unwrap();
        let in_use = BTreeSet::from(["tvk-encryption-used".to_string()]);
        let gone = unused_copies(&copies, &[job], &in_use, now, grace);
        assert_eq!(
            gone,
            vec![
                ("tvk-encryption-old".to_string(), "7".to_string()),
                (
                    "tvk-encryption-refreshed-long-ago".to_string(),
                    "7".to_string()
                ),
            ]
        );
        // Not labelled as ours: never.
        let mut foreign = copy("tvk-encryption-x", old, None);
        foreign.metadata.labels = None;
        assert!(unused_copies(&[foreign], &[], &BTreeSet::new(), now, grace).is_empty());
    }
}
