//! The Backup and ClusterBackup controller: one backup phase machine for both kinds
//! ([`BackupKind`]).
//!
//! PreBackupValidation → MetaSnapshot (metamover Job) → HookTargetIdentification → Quiesce →
//! ImageBackup → DataSnapshot → Unquiesce → DataUpload → MetadataUpload (metamover commit Job)
//! → Retention → Cleanup → `Available`. Each phase is a `status.condition[]` entry with status
//! and timestamp; `phase` / `phaseStatus` name the current one; an Event marks every change.
//!
//! What this version runs: validation, the metamover snapshot Job, the volume data of every PVC
//! the metamover listed ([`crate::volumes`]: CSI VolumeSnapshots, temporary block claims,
//! datamover Jobs), the metamover commit Job and cleanup. Hooks, image backup (issue #9) and
//! retention are recorded as `Skipped` with the reason.
//!
//! A ClusterBackup runs the same phases over every namespace its ClusterBackupPlan covers: the
//! metamover (`--kind ClusterBackup`) discovers them and writes `namespace` per data snapshot;
//! the hooks of every component run in its namespace; volumes are snapshotted in their
//! namespaces; the Jobs carry an owner reference to the ClusterBackup (a cluster-scoped owner
//! is valid for namespaced Jobs) and the annotation `backup-ref: /<name>`.
//!
//! Robustness: Jobs have deterministic names ([`crate::naming::object_name`]); a create that
//! answers 409 adopts the existing Job, so a restarted controller never duplicates one. Phases
//! are read back from the status (observed, not assumed). Terminal states (`Available`,
//! `Failed`, …) are never changed again. A failure anywhere deletes the backup's running Jobs
//! and ends `Failed` with the failing phase and the reason.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::batch::v1::Job;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{
        controller::Action,
        finalizer::{Event as FinalizerEvent, finalizer},
    },
};
use tvk_api::{
    backup::{BackupPhase, BackupPhaseStatus, BackupState, BackupStatus},
    backup_plan::PlanState,
    snapshot::Snapshot,
    target::Target,
};

use crate::{
    context::Context,
    encryption,
    error::{Error, Result, is_conflict},
    hooks,
    jobs::{JobRequest, JobState, LABEL_BACKUP_UID, build_job, job_state},
    kinds::{BackupKind, PlanKind},
    naming::object_name,
    retention,
    status_patch::{apply_status, now_rfc3339, set_condition},
    target_access::{job_access, ref_namespace},
    target_controller, volumes,
};

/// Field manager of the Backup controller.
pub const FIELD_MANAGER: &str = "tvk-control-plane-backup";

/// A backup's status being advanced, with the Events to publish.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The status.
    pub status: BackupStatus,
    /// (warning, reason, message) of each change.
    pub events: Vec<(bool, String, String)>,
    now: String,
}

impl Progress {
    /// Starts from the observed status.
    pub fn new(status: BackupStatus, now: &str) -> Self {
        Self {
            status,
            events: Vec::new(),
            now: now.to_string(),
        }
    }

    fn set(&mut self, phase: BackupPhase, state: BackupPhaseStatus, reason: &str) {
        let mut conditions = self.status.condition.take().unwrap_or_default();
        if set_condition(&mut conditions, phase, state, reason, &self.now) {
            self.events.push((
                matches!(state, BackupPhaseStatus::Failed | BackupPhaseStatus::Error),
                format!("{phase:?}{state:?}"),
                reason.to_string(),
            ));
        }
        self.status.condition = Some(conditions);
        self.status.phase = Some(phase);
        self.status.phase_status = Some(state);
    }

    /// Enters `phase`.
    pub fn begin(&mut self, phase: BackupPhase, reason: &str) {
        self.set(phase, BackupPhaseStatus::InProgress, reason);
    }

    /// Completes `phase`.
    pub fn complete(&mut self, phase: BackupPhase, reason: &str) {
        self.set(phase, BackupPhaseStatus::Completed, reason);
    }

    /// Records `phase` as skipped, with why.
    pub fn skip(&mut self, phase: BackupPhase, reason: &str) {
        self.set(phase, BackupPhaseStatus::Skipped, reason);
    }

    /// Ends the backup `Failed` in `phase`.
    pub fn fail(&mut self, phase: BackupPhase, reason: &str) {
        self.set(phase, BackupPhaseStatus::Failed, reason);
        self.status.status = Some(BackupState::Failed);
        self.finish();
    }

    /// Ends the backup `Available`.
    pub fn succeed(&mut self) {
        self.status.status = Some(BackupState::Available);
        self.status.percentage_completion = Some(100);
        self.events.push((
            false,
            "BackupAvailable".into(),
            "data and metadata are committed on the target".into(),
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

/// `1h2m3s` (Go's duration format, as T4K prints it).
pub fn go_duration(d: jiff::SignedDuration) -> String {
    let total = d.as_secs().max(0);
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// Why a backup's plan or target cannot be used now (pure).
pub fn validate_refs<P: PlanKind>(
    plan: Option<&P>,
    plan_name: &str,
    target: Option<&Target>,
) -> std::result::Result<(), String> {
    let Some(plan) = plan else {
        let field = if P::KIND == "BackupPlan" {
            "spec.backupPlan"
        } else {
            "spec.clusterBackupPlan"
        };
        return Err(format!(
            "{} {plan_name} does not exist; create it or correct {field}",
            P::KIND
        ));
    };
    if plan.plan_status().and_then(|s| s.status) != Some(PlanState::Available) {
        let why = plan
            .plan_status()
            .and_then(|s| s.condition.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.reason.clone())
            .unwrap_or_else(|| "not validated yet".into());
        return Err(format!("{} {plan_name} is not Available: {why}", P::KIND));
    }
    match target {
        None => Err("the plan's Target does not exist".into()),
        Some(t) if !target_controller::is_available(t) => Err(format!(
            "Target {} is not Available: {}",
            t.name_any(),
            target_controller::unavailable_reason(t)
        )),
        Some(_) => Ok(()),
    }
}

/// What the metamover found, as the control plane needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotFinding {
    /// `status.snapshot` is absent or unreadable.
    Missing(String),
    /// PVCs to protect (namespace/name).
    Volumes(Vec<String>),
}

/// Reads the metamover's `status.snapshot` (pure).
pub fn snapshot_finding(status: &BackupStatus) -> SnapshotFinding {
    match Snapshot::from_status_value(status.snapshot.as_ref()) {
        Err(e) => SnapshotFinding::Missing(format!(
            "status.snapshot written by the metamover is not readable: {e}"
        )),
        Ok(None) => SnapshotFinding::Missing(
            "the metamover Job succeeded but wrote no status.snapshot".into(),
        ),
        Ok(Some(s)) => SnapshotFinding::Volumes(
            s.data_snapshots()
                .map(|d| match &d.namespace {
                    Some(ns) => format!("{ns}/{}", d.persistent_volume_claim_name),
                    None => d.persistent_volume_claim_name.clone(),
                })
                .collect(),
        ),
    }
}

/// Another backup of the same plan that is past validation and not terminal (pure): this one
/// waits for it, so backups of a plan never overlap and an incremental's parent is committed.
pub fn running_sibling<K: BackupKind>(backup: &K, all: &[K]) -> Option<String> {
    let plan = backup.plan_key();
    all.iter()
        .filter(|b| b.uid() != backup.uid())
        .filter(|b| b.plan_key() == plan)
        .find(|b| {
            b.backup_status().is_some_and(|s| {
                s.status == Some(BackupState::InProgress)
                    && s.phase
                        .is_some_and(|p| p != BackupPhase::PreBackupValidation)
            })
        })
        .map(ResourceExt::name_any)
}

struct Ids {
    ns: String,
    name: String,
    uid: String,
    job_ns: String,
    /// The plan's encryption key, once PreBackupValidation marked the backup encrypted.
    key: Option<encryption::KeyRef>,
}

/// Finalizer deleting a backup's data from the target when the Backup is deleted.
pub const FINALIZER: &str = "triliovault.trilio.io/backup-data";

/// Reconciles one Backup or ClusterBackup (finalizer-wrapped: deletion removes its data from
/// the target).
pub async fn reconcile<K: BackupKind>(backup: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    let ns = backup.namespace().unwrap_or_default();
    let api = K::api(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, backup, |event| async {
        match event {
            FinalizerEvent::Apply(backup) => reconcile_inner(backup.as_ref(), &ctx).await,
            FinalizerEvent::Cleanup(backup) => delete_data(backup.as_ref(), &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(Box::new(other)),
    });
    ctx.metrics.observe(
        &K::KIND.to_ascii_lowercase(),
        result.as_ref().err().map(Error::category),
    );
    result
}

/// The plan of `backup` and its Target, as stored now (`None` = missing).
async fn plan_and_target<K: BackupKind>(
    ctx: &Context,
    backup: &K,
) -> Result<(String, Option<K::Plan>, Option<Target>)> {
    let (plan_ns, plan_name) = backup.plan_key();
    let plan_key = if plan_ns.is_empty() {
        plan_name.clone()
    } else {
        format!("{plan_ns}/{plan_name}")
    };
    let plan = <K::Plan as PlanKind>::api(ctx.client.clone(), &plan_ns)
        .get_opt(&plan_name)
        .await
        .map_err(|e| {
            Error::kube(
                format!("read {} {plan_key}", <K::Plan as PlanKind>::KIND),
                e,
            )
        })?;
    let target = match &plan {
        Some(p) => {
            let t = &p.backup_config().target;
            let tns =
                ref_namespace(t, &p.refs_namespace(&ctx.config.install_namespace)).to_string();
            Api::<Target>::namespaced(ctx.client.clone(), &tns)
                .get_opt(&t.name.clone().unwrap_or_default())
                .await
                .map_err(|e| Error::kube(format!("read Target of plan {plan_key}"), e))?
        }
        None => None,
    };
    Ok((plan_key, plan, target))
}

async fn reconcile_inner<K: BackupKind>(cached: &K, ctx: &Arc<Context>) -> Result<Action> {
    // The watch cache can lag behind this controller's own last status write; acting on a
    // stale phase would re-run a finished step (re-create a Job that cleanup already deleted).
    // Read the stored object.
    let Some(fresh) = K::api(ctx.client.clone(), &cached.namespace().unwrap_or_default())
        .get_opt(&cached.name_any())
        .await
        .map_err(|e| Error::kube(format!("read {} {}", K::KIND, cached.key()), e))?
    else {
        if let Some(uid) = cached.uid() {
            ctx.log_looks.forget(&uid);
        }
        return Ok(Action::await_change());
    };
    let backup = &fresh;
    let observed = backup.backup_status().cloned().unwrap_or_default();
    // Terminal states never change again.
    // An expired backup that retention is folding (`Coalescing`) belongs to retention.
    if observed
        .status
        .is_some_and(|s| s.is_terminal() || s == BackupState::Coalescing)
    {
        // Its data Jobs' logs are never read again.
        if let Some(uid) = backup.uid() {
            ctx.log_looks.forget(&uid);
        }
        return Ok(Action::await_change());
    }
    let mut progress = Progress::new(observed.clone(), &now_rfc3339());
    let (plan_key, plan, target) = plan_and_target(ctx, backup).await?;
    let job_ns = ctx.config.install_namespace.clone();
    // An encrypted backup's Jobs get the plan's key; without it they would write this backup's
    // remaining parts in plaintext, so a plan that lost its Secret mid-backup fails it.
    let (key, key_lost) = match plan.as_ref() {
        Some(p) if observed.encryption_enabled == Some(true) => {
            match encryption::KeyRef::of_plan(p, &plan_key, &job_ns) {
                Some(k) => (Some(k), false),
                None => (None, true),
            }
        }
        _ => (None, false),
    };
    let ids = Ids {
        ns: backup.namespace().unwrap_or_default(),
        name: backup.name_any(),
        uid: backup.uid().ok_or(Error::Incomplete {
            kind: K::KIND,
            field: "uid",
        })?,
        job_ns,
        key,
    };
    let action = if key_lost {
        progress.fail(
            observed.phase.unwrap_or(BackupPhase::PreBackupValidation),
            &format!(
                "the backup is encrypted but {plan_key} no longer names an encryption Secret (spec.encryption was removed mid-backup); take a new backup"
            ),
        );
        Action::await_change()
    } else {
        step(
            backup,
            ctx,
            &ids,
            plan.as_ref(),
            &plan_key,
            target.as_ref(),
            &mut progress,
        )
        .await?
    };
    if progress.status.status == Some(BackupState::Failed) {
        delete_jobs(ctx, &ids).await?;
        if let Ok(Some(snap)) = Snapshot::from_status_value(progress.status.snapshot.as_ref()) {
            let vids = volume_ids(backup, &ids, plan.as_ref());
            volumes::cleanup(ctx, &vids, &snap).await?;
        }
    }
    // The control plane's fields of status.snapshot (location, uploaded, volumeSnapshot,
    // snapshotType, conditions): a merge patch of the whole snapshot read back from the
    // metamover's write, so its fields are kept; written before the phase moves on.
    if progress.status.snapshot != observed.snapshot
        && let Some(snapshot) = &progress.status.snapshot
    {
        let api = K::api(ctx.client.clone(), &ids.ns);
        api.patch_status(
            &ids.name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"snapshot": snapshot}})),
        )
        .await
        .map_err(|e| {
            Error::kube(
                format!("write status.snapshot of {} {}", K::KIND, backup.key()),
                e,
            )
        })?;
    }
    if progress.status.status.is_some_and(|s| s.is_terminal()) {
        ctx.log_looks.forget(&ids.uid);
    }
    let mut to_write = progress.status.clone();
    // status.snapshot belongs to the metamover (its own merge patches).
    to_write.snapshot = None;
    let mut observed_cmp = observed.clone();
    observed_cmp.snapshot = None;
    if to_write != observed_cmp {
        let api = K::api(ctx.client.clone(), &ids.ns);
        apply_status(&api, backup, FIELD_MANAGER, &to_write).await?;
        for (warning, reason, note) in &progress.events {
            ctx.event(backup, *warning, reason, note.clone()).await;
        }
        if let Some(state) = to_write.status.filter(|s| s.is_terminal()) {
            let duration = match (&to_write.start_timestamp, &to_write.completion_timestamp) {
                (Some(a), Some(b)) => {
                    match (a.parse::<jiff::Timestamp>(), b.parse::<jiff::Timestamp>()) {
                        (Ok(a), Ok(b)) => b.duration_since(a).unsigned_abs().into(),
                        _ => None,
                    }
                }
                _ => None,
            };
            let bytes = match &to_write.size {
                Some(q) if state == BackupState::Available => {
                    crate::naming::quantity_bytes(q).unwrap_or(0)
                }
                _ => 0,
            };
            ctx.metrics
                .backup_finished(&format!("{state:?}"), duration, bytes);
        }
    }
    Ok(action)
}

async fn step<K: BackupKind>(
    backup: &K,
    ctx: &Arc<Context>,
    ids: &Ids,
    plan: Option<&K::Plan>,
    plan_key: &str,
    target: Option<&Target>,
    progress: &mut Progress,
) -> Result<Action> {
    let poll = Action::requeue(ctx.backup_poll);
    let phase = progress.status.phase;
    match phase {
        None | Some(BackupPhase::PreBackupValidation) => {
            if let Err(reason) = validate_refs(plan, plan_key, target) {
                progress.fail(BackupPhase::PreBackupValidation, &reason);
                return Ok(Action::await_change());
            }
            let (Some(plan), Some(target)) = (plan, target) else {
                return Ok(Action::await_change());
            };
            if let Err(e) = job_access(target, &ids.job_ns) {
                progress.fail(BackupPhase::PreBackupValidation, &e.to_string());
                return Ok(Action::await_change());
            }
            // The key must be usable before anything is written (copied for the Jobs here).
            let key = encryption::KeyRef::of_plan(plan, plan_key, &ids.job_ns);
            if let Some(key) = &key
                && let Err(reason) = key.job_secret(ctx, &ids.job_ns).await?
            {
                progress.fail(BackupPhase::PreBackupValidation, &reason);
                return Ok(Action::await_change());
            }
            // One backup of a plan at a time: an incremental's parent must be committed first.
            let siblings = K::api(ctx.client.clone(), &ids.ns)
                .list(&ListParams::default())
                .await
                .map_err(|e| Error::kube(format!("list the {}s of {plan_key}", K::KIND), e))?;
            if let Some(running) = running_sibling(backup, &siblings.items) {
                progress.status.status = Some(BackupState::Pending);
                progress.begin(
                    BackupPhase::PreBackupValidation,
                    &format!("waiting for backup {running} of the same plan to finish"),
                );
                return Ok(Action::requeue(Duration::from_secs(30)));
            }
            let s = &mut progress.status;
            s.status = Some(BackupState::InProgress);
            s.start_timestamp.get_or_insert_with(now_rfc3339);
            s.type_ = Some(backup.backup_type());
            s.percentage_completion = Some(0);
            s.encryption_enabled = Some(key.is_some());
            s.location = Some(format!("{}/{}", plan.uid().unwrap_or_default(), ids.uid));
            // T4K's stats.target; the parent of an incremental volume image must be on it.
            let mut stats = s
                .stats
                .take()
                .filter(serde_json::Value::is_object)
                .unwrap_or_else(|| serde_json::json!({}));
            stats["target"] = serde_json::json!({
                "apiVersion": "triliovault.trilio.io/v1",
                "kind": "Target",
                "name": target.name_any(),
                "namespace": target.namespace(),
                "uid": target.uid(),
            });
            s.stats = Some(stats);
            progress.complete(
                BackupPhase::PreBackupValidation,
                "the plan and its Target are Available",
            );
            progress.begin(
                BackupPhase::MetaSnapshot,
                "discovering the application's objects (metamover Job)",
            );
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Some(BackupPhase::MetaSnapshot) => {
            let Some(target) = target else {
                progress.fail(
                    BackupPhase::MetaSnapshot,
                    "the plan's Target vanished mid-backup",
                );
                return Ok(Action::await_change());
            };
            match run_job(
                ctx,
                backup,
                ids,
                target,
                BackupPhase::MetaSnapshot,
                "snapshot",
                progress,
            )
            .await?
            {
                JobState::Missing | JobState::Running => Ok(poll),
                JobState::Failed(_) => Ok(Action::await_change()),
                JobState::Succeeded => {
                    progress.complete(
                        BackupPhase::MetaSnapshot,
                        "the application's metadata is on the target",
                    );
                    match snapshot_finding(&progress.status) {
                        SnapshotFinding::Missing(reason) => {
                            progress.fail(BackupPhase::MetaSnapshot, &reason);
                            return Ok(Action::await_change());
                        }
                        SnapshotFinding::Volumes(pvcs) if !pvcs.is_empty() => {
                            progress.status.percentage_completion = Some(20);
                            if hooks_configured(ctx, plan) {
                                progress.begin(
                                    BackupPhase::HookTargetIdentification,
                                    "finding the pods and containers of the plan's hooks",
                                );
                            } else {
                                progress.skip(
                                    BackupPhase::HookTargetIdentification,
                                    "no hooks configured",
                                );
                                progress.skip(BackupPhase::Quiesce, "no hooks configured");
                                start_data_snapshot(
                                    ctx,
                                    backup,
                                    ids,
                                    plan,
                                    Some(target),
                                    progress,
                                    pvcs.len(),
                                )
                                .await?;
                            }
                            return Ok(Action::requeue(Duration::from_secs(1)));
                        }
                        SnapshotFinding::Volumes(_) => {}
                    }
                    let hook_reason = if hooks_configured(ctx, plan) {
                        "not run: the application has no volumes to quiesce for"
                    } else {
                        "no hooks configured"
                    };
                    progress.skip(BackupPhase::HookTargetIdentification, hook_reason);
                    progress.skip(BackupPhase::Quiesce, hook_reason);
                    start_images(ctx, backup, ids, plan, Some(target), progress).await?;
                    if progress.status.status == Some(BackupState::Failed) {
                        return Ok(Action::await_change());
                    }
                    progress.skip(
                        BackupPhase::DataSnapshot,
                        "no PersistentVolumeClaims to protect",
                    );
                    progress.skip(BackupPhase::Unquiesce, hook_reason);
                    progress.skip(
                        BackupPhase::DataUpload,
                        "no PersistentVolumeClaims to protect",
                    );
                    progress.status.percentage_completion = Some(80);
                    progress.begin(
                        BackupPhase::MetadataUpload,
                        "committing the backup on the target (metamover commit Job)",
                    );
                    Ok(Action::requeue(Duration::from_secs(1)))
                }
            }
        }
        Some(BackupPhase::HookTargetIdentification) => {
            let Some(plan) = plan else {
                progress.fail(
                    BackupPhase::HookTargetIdentification,
                    &format!("the {} vanished mid-backup", <K::Plan as PlanKind>::KIND),
                );
                return Ok(Action::await_change());
            };
            match identify_all(ctx, plan).await? {
                Err(reason) => {
                    progress.fail(BackupPhase::HookTargetIdentification, &reason);
                    Ok(Action::await_change())
                }
                Ok(all) => {
                    let pods: std::collections::BTreeSet<(&str, &str)> = all
                        .iter()
                        .flat_map(|t| {
                            t.hooks.iter().flat_map(move |h| {
                                h.pods
                                    .iter()
                                    .map(move |p| (t.namespace.as_str(), p.name.as_str()))
                            })
                        })
                        .collect();
                    progress.complete(
                        BackupPhase::HookTargetIdentification,
                        &format!(
                            "{} hook(s) apply to {} pod(s); {} pod(s) or container(s) skipped (not running)",
                            all.iter().map(|t| t.hooks.len()).sum::<usize>(),
                            pods.len(),
                            all.iter().map(|t| t.skipped.len()).sum::<usize>()
                        ),
                    );
                    progress.begin(BackupPhase::Quiesce, "running the pre (quiesce) hooks");
                    Ok(Action::requeue(Duration::from_secs(1)))
                }
            }
        }
        Some(BackupPhase::Quiesce) => {
            let Some(plan) = plan else {
                progress.fail(
                    BackupPhase::Quiesce,
                    &format!("the {} vanished mid-backup", <K::Plan as PlanKind>::KIND),
                );
                return Ok(Action::await_change());
            };
            let targets = match identify_all(ctx, plan).await? {
                Ok(t) => t,
                Err(reason) => {
                    progress.fail(BackupPhase::Quiesce, &reason);
                    return Ok(Action::await_change());
                }
            };
            match hooks_off_thread(ctx, &targets, true).await? {
                Ok(reports) => {
                    for w in reports.iter().flat_map(hooks::HookReport::warnings) {
                        progress.events.push((true, "HookFailureIgnored".into(), w));
                    }
                    progress.complete(
                        BackupPhase::Quiesce,
                        &format!(
                            "the pre hooks ran ({} step(s))",
                            reports.iter().map(|r| r.executions.len()).sum::<usize>()
                        ),
                    );
                    let count = read_snapshot(progress)
                        .map(|s| s.data_snapshots().count())
                        .unwrap_or(0);
                    start_data_snapshot(ctx, backup, ids, Some(plan), target, progress, count)
                        .await?;
                    Ok(Action::requeue(Duration::from_secs(1)))
                }
                Err(reason) => {
                    // An application is never left quiesced.
                    let post = match hooks_off_thread(ctx, &targets, false).await? {
                        Ok(_) => "the post hooks ran".to_string(),
                        Err(r) => format!("the post hooks failed too: {r}"),
                    };
                    progress.fail(BackupPhase::Quiesce, &format!("{reason}; {post}"));
                    Ok(Action::await_change())
                }
            }
        }
        Some(BackupPhase::DataSnapshot) => {
            // A failed image backup Job fails the backup now, after the post hooks ran.
            if let Some(failure) = failed_images_job(ctx, ids, progress).await? {
                let reason = if quiesced(progress) {
                    match run_unquiesce(ctx, plan).await? {
                        Ok(done) => format!("{failure}; {done}"),
                        Err(post) => format!("{failure}; {post}"),
                    }
                } else {
                    failure
                };
                progress.fail(BackupPhase::ImageBackup, &reason);
                return Ok(Action::await_change());
            }
            let mut snap = match read_snapshot(progress) {
                Ok(s) => s,
                Err(reason) => {
                    progress.fail(BackupPhase::DataSnapshot, &reason);
                    return Ok(Action::await_change());
                }
            };
            let vids = volume_ids(backup, ids, plan);
            let mut warnings = Vec::new();
            let outcome = volumes::snapshot_volumes(ctx, &vids, &mut snap, &mut warnings).await?;
            for w in warnings {
                progress.events.push((true, "VolumeSkipped".into(), w));
            }
            store_snapshot(progress, &snap)?;
            match outcome {
                volumes::Step::Failed(reason) => {
                    let reason = if quiesced(progress) {
                        match run_unquiesce(ctx, plan).await? {
                            Ok(done) => format!("{reason}; {done}"),
                            Err(post) => format!("{reason}; {post}"),
                        }
                    } else {
                        reason
                    };
                    progress.fail(BackupPhase::DataSnapshot, &reason);
                    Ok(Action::await_change())
                }
                volumes::Step::Waiting(reason) => {
                    progress.begin(BackupPhase::DataSnapshot, &reason);
                    Ok(Action::requeue(Duration::from_secs(5)))
                }
                volumes::Step::Done(reason) => {
                    progress.complete(BackupPhase::DataSnapshot, &reason);
                    if quiesced(progress) {
                        match run_unquiesce(ctx, plan).await? {
                            Ok(done) => progress.complete(BackupPhase::Unquiesce, &done),
                            Err(post) => {
                                progress.fail(
                                    BackupPhase::Unquiesce,
                                    &format!("{post}; check that the application is running normally, then run the backup again"),
                                );
                                return Ok(Action::await_change());
                            }
                        }
                    } else {
                        progress.skip(BackupPhase::Unquiesce, "no hooks configured");
                    }
                    let total = volumes::total_bytes(&snap);
                    progress.status.size = Some(size_of(total));
                    if snap.data_snapshots().all(volumes::is_skipped) {
                        progress.skip(
                            BackupPhase::DataUpload,
                            "every volume was skipped (csiConfig.exclude)",
                        );
                        progress.status.percentage_completion = Some(80);
                        progress.begin(
                            BackupPhase::MetadataUpload,
                            "committing the backup on the target (metamover commit Job)",
                        );
                    } else {
                        progress.begin(
                            BackupPhase::DataUpload,
                            "uploading the volumes (datamover Jobs)",
                        );
                    }
                    Ok(Action::requeue(Duration::from_secs(1)))
                }
            }
        }
        Some(BackupPhase::DataUpload) => {
            // A failed image backup Job fails the backup now (the data Jobs, snapshots and
            // temporary claims are removed by the failure path).
            if let Some(failure) = failed_images_job(ctx, ids, progress).await? {
                progress.fail(BackupPhase::ImageBackup, &failure);
                return Ok(Action::await_change());
            }
            let Some(target) = target else {
                progress.fail(
                    BackupPhase::DataUpload,
                    "the plan's Target vanished mid-backup",
                );
                return Ok(Action::await_change());
            };
            let mut snap = match read_snapshot(progress) {
                Ok(s) => s,
                Err(reason) => {
                    progress.fail(BackupPhase::DataUpload, &reason);
                    return Ok(Action::await_change());
                }
            };
            let vids = volume_ids(backup, ids, plan);
            let candidates = parent_candidates(ctx, backup, target).await?;
            let inputs = volumes::UploadInputs {
                ids: &vids,
                backup_type: backup.backup_type(),
                candidates: &candidates,
                target,
            };
            let outcome = volumes::upload_volumes(ctx, &inputs, &mut snap).await?;
            store_snapshot(progress, &snap)?;
            progress.status.size = Some(size_of(outcome.total_bytes));
            // 20..80: finished volumes whole, running ones as their Jobs last reported.
            let done = outcome
                .done_bytes
                .saturating_add(outcome.in_flight_bytes.unwrap_or(0));
            progress.status.percentage_completion = Some(crate::progress::advance(
                progress.status.percentage_completion,
                crate::progress::phase_percent(20, 80, done, outcome.total_bytes),
            ));
            match outcome.step {
                volumes::Step::Failed(reason) => {
                    progress.fail(BackupPhase::DataUpload, &reason);
                    Ok(Action::await_change())
                }
                volumes::Step::Waiting(reason) => {
                    progress.begin(BackupPhase::DataUpload, &reason);
                    Ok(poll)
                }
                volumes::Step::Done(reason) => {
                    let cleaned = volumes::cleanup(ctx, &vids, &snap).await?;
                    progress.complete(
                        BackupPhase::DataUpload,
                        &format!(
                            "{reason}; the snapshots and temporary claims of {cleaned} volume(s) are deleted"
                        ),
                    );
                    progress.status.percentage_completion = Some(80);
                    progress.begin(
                        BackupPhase::MetadataUpload,
                        "committing the backup on the target (metamover commit Job)",
                    );
                    Ok(Action::requeue(Duration::from_secs(1)))
                }
            }
        }
        Some(BackupPhase::MetadataUpload) => {
            let Some(target) = target else {
                progress.fail(
                    BackupPhase::MetadataUpload,
                    "the plan's Target vanished mid-backup",
                );
                return Ok(Action::await_change());
            };
            // The image backup Job runs alongside the data phases; the commit waits for it.
            if !await_images(ctx, backup, ids, target, progress).await? {
                if progress.status.status != Some(BackupState::Failed) {
                    progress.begin(
                        BackupPhase::MetadataUpload,
                        "waiting for the image backup Job before committing",
                    );
                }
                return Ok(poll);
            }
            progress.begin(
                BackupPhase::MetadataUpload,
                "committing the backup on the target (metamover commit Job)",
            );
            match run_job(
                ctx,
                backup,
                ids,
                target,
                BackupPhase::MetadataUpload,
                "commit",
                progress,
            )
            .await?
            {
                JobState::Missing | JobState::Running => Ok(poll),
                JobState::Failed(_) => Ok(Action::await_change()),
                JobState::Succeeded => {
                    progress.complete(
                        BackupPhase::MetadataUpload,
                        "the backup is committed on the target",
                    );
                    let retention = plan
                        .and_then(|p| p.backup_config().retention_policy.as_ref())
                        .is_some();
                    if retention {
                        progress.begin(BackupPhase::Retention, "applying the retention policy");
                        return Ok(Action::requeue(Duration::from_secs(1)));
                    }
                    progress.skip(BackupPhase::Retention, "no retention policy");
                    finish(ctx, ids, progress).await?;
                    Ok(Action::await_change())
                }
            }
        }
        Some(BackupPhase::Retention) => {
            let (Some(plan), Some(target)) = (plan, target) else {
                progress.skip(
                    BackupPhase::Retention,
                    "not applied: the plan or its Target vanished; the backup is committed",
                );
                finish(ctx, ids, progress).await?;
                return Ok(Action::await_change());
            };
            match retention::apply(ctx, plan, target, backup).await? {
                retention::RetentionStep::Running(reason) => {
                    progress.begin(BackupPhase::Retention, &reason);
                    Ok(poll)
                }
                retention::RetentionStep::Done(report) => {
                    match collect_images(ctx, backup, ids, plan, target, &report, progress).await? {
                        GcStep::Running => Ok(poll),
                        GcStep::Done(summary) => {
                            progress.complete(BackupPhase::Retention, &summary);
                            finish(ctx, ids, progress).await?;
                            Ok(Action::await_change())
                        }
                        GcStep::Failed(message) => {
                            progress.set(
                                BackupPhase::Retention,
                                BackupPhaseStatus::Error,
                                &message,
                            );
                            finish(ctx, ids, progress).await?;
                            Ok(Action::await_change())
                        }
                    }
                }
                // A retention failure never fails a good backup: the condition says Error.
                retention::RetentionStep::Failed(message) => {
                    progress.set(BackupPhase::Retention, BackupPhaseStatus::Error, &message);
                    finish(ctx, ids, progress).await?;
                    Ok(Action::await_change())
                }
            }
        }
        Some(other) => {
            progress.fail(
                other,
                &format!("phase {other:?} is not run by this control plane version (found after a restart or upgrade); the backup cannot be resumed"),
            );
            Ok(Action::await_change())
        }
    }
}

/// Where the image garbage collection after retention stands.
enum GcStep {
    /// The gc Job runs (the Retention condition says so).
    Running,
    /// Done; the Retention condition's reason (the expiry summary, and the gc's).
    Done(String),
    /// The gc Job failed: the Retention condition's `Error` reason.
    Failed(String),
}

/// Item of the image gc Job's name.
const IMAGES_GC_ITEM: &str = "images-gc";
/// What the Retention reason says while the gc Job runs (the summary is kept before it).
const GC_RUNNING: &str = "; collecting the image blobs no backup references any more";

/// After retention expired backups (of a plan that backs up images), one Job runs
/// `tvk-metamover images gc <target flags>` for the target. The Retention condition keeps the
/// expiry summary while it runs (a later pass of `retention::apply` finds nothing left to
/// expire); a gc failure is a Retention `Error`, never a failed backup (the next run collects).
async fn collect_images<K: BackupKind>(
    ctx: &Context,
    backup: &K,
    ids: &Ids,
    plan: &K::Plan,
    target: &Target,
    report: &retention::RetentionReport,
    progress: &mut Progress,
) -> Result<GcStep> {
    let plain = if report.summary.is_empty() {
        "no backup expired".to_string()
    } else {
        report.summary.clone()
    };
    if plan.skip_image_backup() {
        return Ok(GcStep::Done(plain));
    }
    let name = object_name(
        &format!("{:?}", BackupPhase::Retention),
        &ids.uid,
        IMAGES_GC_ITEM,
    );
    let exists = Api::<Job>::namespaced(ctx.client.clone(), &ids.job_ns)
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("read Job {}/{name}", ids.job_ns), e))?
        .is_some();
    if report.expired.is_empty() && !exists {
        return Ok(GcStep::Done(plain));
    }
    // The summary of the pass that expired backups, kept in the condition while gc runs.
    let earlier = progress
        .status
        .condition
        .iter()
        .flatten()
        .find(|c| c.phase == Some(BackupPhase::Retention))
        .and_then(|c| c.reason.as_deref())
        .and_then(|r| r.split_once(GC_RUNNING))
        .map(|(summary, _)| summary.to_string());
    let summary = match earlier {
        Some(s) if report.expired.is_empty() => s,
        _ => plain,
    };
    Ok(
        match images_gc_job(ctx, backup, ids, target, IMAGES_GC_ITEM).await? {
            GcJob::NoAccess(no_access) => GcStep::Failed(format!(
                "{summary}; the image blobs were not collected: {no_access}"
            )),
            GcJob::Running(name) => {
                progress.begin(
                    BackupPhase::Retention,
                    &format!("{summary}{GC_RUNNING} (Job {}/{name})", ids.job_ns),
                );
                GcStep::Running
            }
            GcJob::Succeeded(name) => GcStep::Done(format!(
                "{summary}; image blobs no backup references were collected (Job {}/{name})",
                ids.job_ns
            )),
            GcJob::Failed(name, message) => GcStep::Failed(format!(
                "{summary}; collecting unreferenced image blobs failed (Job {}/{name}): {message}; the next retention run collects them",
                ids.job_ns
            )),
        },
    )
}

/// Where one `tvk-metamover images gc` Job of a backup stands.
enum GcJob {
    /// The Job cannot reach the Target (why).
    NoAccess(String),
    /// Started or running (its name).
    Running(String),
    /// Succeeded (its name).
    Succeeded(String),
    /// Failed (its name, the tool's error).
    Failed(String, String),
}

/// Starts (or finds) the backup's Job `tvk-metamover images gc <target flags>` named by
/// `item` (after retention, after the backup's deletion) and says where it stands.
async fn images_gc_job<K: BackupKind>(
    ctx: &Context,
    backup: &K,
    ids: &Ids,
    target: &Target,
    item: &str,
) -> Result<GcJob> {
    let command = MetamoverCommand::images_gc();
    let (name, state) = match ensure_job(
        ctx,
        backup,
        ids,
        target,
        BackupPhase::Retention,
        item,
        command,
    )
    .await?
    {
        Ok(found) => found,
        Err(no_access) => return Ok(GcJob::NoAccess(no_access)),
    };
    Ok(match state {
        JobState::Missing | JobState::Running => GcJob::Running(name),
        JobState::Succeeded => GcJob::Succeeded(name),
        JobState::Failed(job_message) => {
            ctx.metrics.job_failed("ImageGc");
            let message =
                crate::jobs::failure_message(&ctx.client, &ids.job_ns, &name, &job_message).await?;
            GcJob::Failed(name, message)
        }
    })
}

/// Every hook configuration of the plan identified (one [`hooks::HookTargets`] per
/// namespace: a BackupPlan has one, a ClusterBackupPlan one per component with hooks).
async fn identify_all<P: PlanKind>(
    ctx: &Context,
    plan: &P,
) -> Result<std::result::Result<Vec<hooks::HookTargets>, String>> {
    let mut all = Vec::new();
    for scope in plan.hook_scopes(&ctx.config.install_namespace) {
        match hooks::identify_config(
            ctx,
            &scope.namespace,
            &scope.namespace,
            Some(&scope.config),
            &scope.owner,
        )
        .await?
        {
            Ok(t) => all.push(t),
            Err(reason) => return Ok(Err(reason)),
        }
    }
    Ok(Ok(all))
}

/// Runs the pre (`quiesce`) or post hooks of every namespace on a blocking thread of the
/// runtime: their futures (a stream of exec futures over borrowed units) are not provably
/// `Send` for the controller's generic bound, so they are driven there with
/// `Handle::block_on`. Pre hooks stop at the first namespace that fails; post hooks run in
/// every namespace (reverse order) and report every failure.
async fn hooks_off_thread(
    ctx: &Arc<Context>,
    targets: &[hooks::HookTargets],
    quiesce: bool,
) -> Result<std::result::Result<Vec<hooks::HookReport>, String>> {
    let targets = targets.to_vec();
    hooks::off_thread(ctx, move |ctx| async move {
        let mut reports = Vec::new();
        if quiesce {
            for t in &targets {
                match hooks::quiesce(&ctx, t).await? {
                    Ok(r) => reports.push(r),
                    Err(reason) => return Ok(Err(reason)),
                }
            }
            return Ok(Ok(reports));
        }
        let mut failures = Vec::new();
        for t in targets.iter().rev() {
            match hooks::unquiesce(&ctx, t).await? {
                Ok(r) => reports.push(r),
                Err(reason) => failures.push(reason),
            }
        }
        Ok(if failures.is_empty() {
            Ok(reports)
        } else {
            Err(failures.join("; "))
        })
    })
    .await
}

/// Cleanup and `Available`.
async fn finish(ctx: &Context, ids: &Ids, progress: &mut Progress) -> Result<()> {
    delete_jobs(ctx, ids).await?;
    progress.complete(BackupPhase::Cleanup, "the backup's Jobs are deleted");
    progress.succeed();
    Ok(())
}

/// The plan has hooks to run.
fn hooks_configured<P: PlanKind>(ctx: &Context, plan: Option<&P>) -> bool {
    plan.is_some_and(|p| p.hooks_configured(&ctx.config.install_namespace))
}

/// Quiesce ran (so every later failure, and the end of DataSnapshot, runs the post hooks).
fn quiesced(progress: &Progress) -> bool {
    progress.status.condition.iter().flatten().any(|c| {
        c.phase == Some(BackupPhase::Quiesce) && c.status == Some(BackupPhaseStatus::Completed)
    })
}

/// Runs the post hooks in every pod the plan's hooks identify now (a superset of where the pre
/// hooks ran; see `hooks::unquiesce`). `Err` says what failed and that the application may
/// still be quiesced.
async fn run_unquiesce<P: PlanKind>(
    ctx: &Arc<Context>,
    plan: Option<&P>,
) -> Result<std::result::Result<String, String>> {
    let Some(plan) = plan else {
        return Ok(Err(format!(
            "the {} vanished, so the post hooks could not be run: the application may still be quiesced",
            P::KIND
        )));
    };
    let targets = match identify_all(ctx, plan).await? {
        Ok(t) => t,
        Err(reason) => {
            return Ok(Err(format!(
                "the post hooks could not be run ({reason}): the application may still be quiesced"
            )));
        }
    };
    Ok(match hooks_off_thread(ctx, &targets, false).await? {
        Ok(reports) => Ok(format!(
            "the post hooks ran ({} step(s))",
            reports.iter().map(|r| r.executions.len()).sum::<usize>()
        )),
        Err(reason) => Err(format!("{reason}: the application may still be quiesced")),
    })
}

/// ImageBackup starts (or is skipped), DataSnapshot begins.
async fn start_data_snapshot<K: BackupKind>(
    ctx: &Context,
    backup: &K,
    ids: &Ids,
    plan: Option<&K::Plan>,
    target: Option<&Target>,
    progress: &mut Progress,
    volumes: usize,
) -> Result<()> {
    start_images(ctx, backup, ids, plan, target, progress).await?;
    if progress.status.status == Some(BackupState::Failed) {
        return Ok(());
    }
    progress.begin(
        BackupPhase::DataSnapshot,
        &format!("taking CSI snapshots of {volumes} PersistentVolumeClaim(s)"),
    );
    Ok(())
}

/// Item of the image backup Job's name.
const IMAGES_ITEM: &str = "images-backup";

/// ImageBackup: `Skipped` with the plan's flag, else the images Job
/// (`tvk-metamover images backup`) is started and the condition stays `InProgress` while the
/// backup goes on: copying images can take minutes and the application must not stay
/// quiesced meanwhile. [`await_images`] waits for it before MetadataUpload.
async fn start_images<K: BackupKind>(
    ctx: &Context,
    backup: &K,
    ids: &Ids,
    plan: Option<&K::Plan>,
    target: Option<&Target>,
    progress: &mut Progress,
) -> Result<()> {
    if plan.is_some_and(PlanKind::skip_image_backup) {
        progress.skip(
            BackupPhase::ImageBackup,
            &format!(
                "{}.skipImageBackup is set",
                <K::Plan as PlanKind>::FLAGS_FIELD
            ),
        );
        return Ok(());
    }
    let Some(target) = target else {
        progress.fail(
            BackupPhase::ImageBackup,
            "the plan's Target vanished mid-backup",
        );
        return Ok(());
    };
    let args = MetamoverCommand::of_backup(&["images", "backup"], K::KIND, &ids.ns, &ids.name);
    let state = run_metamover(
        ctx,
        backup,
        ids,
        target,
        BackupPhase::ImageBackup,
        IMAGES_ITEM,
        args,
        progress,
    )
    .await?;
    if !matches!(state, JobState::Failed(_)) {
        progress.begin(
            BackupPhase::ImageBackup,
            "copying the workloads' container images to the target (metamover Job); the backup goes on meanwhile",
        );
    }
    Ok(())
}

/// Waits for the image backup Job started by [`start_images`] (when ImageBackup is
/// `InProgress`): `Ok(true)` once it is done (ImageBackup `Completed` with the number of
/// images), `Ok(false)` while it runs or after it failed the backup.
async fn await_images<K: BackupKind>(
    ctx: &Context,
    backup: &K,
    ids: &Ids,
    target: &Target,
    progress: &mut Progress,
) -> Result<bool> {
    let running = progress.status.condition.iter().flatten().any(|c| {
        c.phase == Some(BackupPhase::ImageBackup) && c.status == Some(BackupPhaseStatus::InProgress)
    });
    if !running {
        return Ok(true);
    }
    let args = MetamoverCommand::of_backup(&["images", "backup"], K::KIND, &ids.ns, &ids.name);
    match run_metamover(
        ctx,
        backup,
        ids,
        target,
        BackupPhase::ImageBackup,
        IMAGES_ITEM,
        args,
        progress,
    )
    .await?
    {
        JobState::Succeeded => {
            let images = Snapshot::from_status_value(progress.status.snapshot.as_ref())
                .ok()
                .flatten()
                .map_or(0, |s| s.images.len());
            progress.complete(
                BackupPhase::ImageBackup,
                &format!("{images} image(s) stored on the target"),
            );
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// The failure of the image backup Job while the data phases run (ImageBackup still
/// `InProgress`): `Job <ns>/<name> failed: <the tool's error>`; `None` while it runs, after it
/// succeeded, or when it was not started.
async fn failed_images_job(
    ctx: &Context,
    ids: &Ids,
    progress: &Progress,
) -> Result<Option<String>> {
    let running = progress.status.condition.iter().flatten().any(|c| {
        c.phase == Some(BackupPhase::ImageBackup) && c.status == Some(BackupPhaseStatus::InProgress)
    });
    if !running {
        return Ok(None);
    }
    let name = object_name(
        &format!("{:?}", BackupPhase::ImageBackup),
        &ids.uid,
        IMAGES_ITEM,
    );
    let job = Api::<Job>::namespaced(ctx.client.clone(), &ids.job_ns)
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("read Job {}/{name}", ids.job_ns), e))?;
    let JobState::Failed(job_message) = job_state(job.as_ref()) else {
        return Ok(None);
    };
    ctx.metrics.job_failed("ImageBackup");
    let message =
        crate::jobs::failure_message(&ctx.client, &ids.job_ns, &name, &job_message).await?;
    Ok(Some(format!("Job {}/{name} failed: {message}", ids.job_ns)))
}

/// `status.snapshot` as the typed model (the metamover wrote it; a missing one is a failure).
fn read_snapshot(progress: &Progress) -> std::result::Result<Snapshot, String> {
    match Snapshot::from_status_value(progress.status.snapshot.as_ref()) {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err("status.snapshot vanished mid-backup; run the backup again".into()),
        Err(e) => Err(format!(
            "status.snapshot is not readable: {e}; run the backup again"
        )),
    }
}

fn store_snapshot(progress: &mut Progress, snap: &Snapshot) -> Result<()> {
    progress.status.snapshot = Some(snap.to_value().map_err(|source| Error::Serde {
        what: "status.snapshot",
        source,
    })?);
    Ok(())
}

fn size_of(bytes: u64) -> k8s_openapi::apimachinery::pkg::util::intstr::IntOrString {
    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(bytes.to_string())
}

fn volume_ids<K: BackupKind>(backup: &K, ids: &Ids, plan: Option<&K::Plan>) -> volumes::BackupIds {
    volumes::BackupIds {
        ns: ids.ns.clone(),
        name: ids.name.clone(),
        uid: ids.uid.clone(),
        job_ns: ids.job_ns.clone(),
        plan_uid: plan
            .and_then(ResourceExt::uid)
            .or_else(|| {
                backup
                    .backup_status()
                    .and_then(|s| s.location.as_deref())
                    .and_then(|l| l.split('/').next())
                    .map(str::to_string)
            })
            .unwrap_or_default(),
        owner: backup.controller_owner_ref(&()),
        key: ids.key.clone(),
    }
}

/// The plan's other backups taken to `target` (parents of incremental images).
async fn parent_candidates<K: BackupKind>(
    ctx: &Context,
    backup: &K,
    target: &Target,
) -> Result<Vec<K>> {
    let ns = backup.namespace().unwrap_or_default();
    let plan = backup.plan_key();
    let all = K::api(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube(format!("list the {}s of the plan", K::KIND), e))?;
    let target_uid = target.uid();
    Ok(all
        .items
        .into_iter()
        .filter(|b| b.uid() != backup.uid())
        .filter(|b| b.plan_key() == plan)
        .filter(|b| target_uid.is_some() && volumes::backup_target_uid(b) == target_uid)
        // An encrypted image never builds on a plaintext one, nor the other way round.
        .filter(|b| b.encrypted() == backup.encrypted())
        .collect())
}

/// The owner reference of the backup's Jobs: a Backup in the Jobs' namespace, or a
/// ClusterBackup (cluster-scoped owners are valid for namespaced objects).
fn job_owner<K: BackupKind>(
    backup: &K,
    job_ns: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    match backup.namespace() {
        Some(ns) if ns != job_ns => None,
        _ => backup.controller_owner_ref(&()),
    }
}

/// Creates (or adopts) the metamover Job of `phase` and reads its state; a failed Job fails the
/// backup.
async fn run_job<K: BackupKind>(
    ctx: &Context,
    backup: &K,
    ids: &Ids,
    target: &Target,
    phase: BackupPhase,
    action: &str,
    progress: &mut Progress,
) -> Result<JobState> {
    let args = MetamoverCommand::of_backup(&[action], K::KIND, &ids.ns, &ids.name);
    run_metamover(ctx, backup, ids, target, phase, action, args, progress).await
}

/// [`run_job`] with the metamover arguments given (`images backup …`).
#[allow(clippy::too_many_arguments)]
async fn run_metamover<K: BackupKind>(
    ctx: &Context,
    backup: &K,
    ids: &Ids,
    target: &Target,
    phase: BackupPhase,
    item: &str,
    args: MetamoverCommand,
    progress: &mut Progress,
) -> Result<JobState> {
    let (name, state) = match ensure_job(ctx, backup, ids, target, phase, item, args).await? {
        Ok(found) => found,
        Err(no_access) => {
            progress.fail(phase, &no_access);
            return Ok(JobState::Failed(no_access));
        }
    };
    if let JobState::Failed(job_message) = &state {
        ctx.metrics.job_failed(&format!("{phase:?}"));
        let message =
            crate::jobs::failure_message(&ctx.client, &ids.job_ns, &name, job_message).await?;
        progress.fail(
            phase,
            &format!("Job {}/{name} failed: {message}", ids.job_ns),
        );
    }
    Ok(state)
}

/// Creates (or adopts) the metamover Job `tvk-<phase>-<hash(backup uid, item)>` running
/// `command` and returns its name and state; inner `Err` when the Target cannot be reached from
/// Jobs.
async fn ensure_job<K: BackupKind>(
    ctx: &Context,
    backup: &K,
    ids: &Ids,
    target: &Target,
    phase: BackupPhase,
    item: &str,
    command: MetamoverCommand,
) -> Result<std::result::Result<(String, JobState), String>> {
    let name = object_name(&format!("{phase:?}"), &ids.uid, item);
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ids.job_ns);
    let existing = api
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("read Job {}/{name}", ids.job_ns), e))?;
    let state = job_state(existing.as_ref());
    if state == JobState::Missing {
        let mut access = match job_access(target, &ids.job_ns) {
            Ok(a) => a,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let mut args = command.args;
        // An encrypted backup's metadata is read and written with its key, and anything plain
        // in it refused (`--require-sealed`: it was not written by this backup).
        if let Some(key) = ids.key.as_ref().filter(|_| command.reads_metadata) {
            match key.job_secret(ctx, &ids.job_ns).await? {
                Ok(secret) => encryption::mount(&mut access, &secret),
                Err(reason) => return Ok(Err(reason)),
            }
            args.push(encryption::REQUIRE_SEALED.into());
        }
        let request = JobRequest {
            name: name.clone(),
            namespace: &ids.job_ns,
            backup_label: ids.name.chars().take(63).collect(),
            backup_uid: &ids.uid,
            backup_ref: backup.backup_ref(),
            owner: job_owner(backup, &ids.job_ns),
            phase: "metadata",
            image: ctx.config.images.metamover.clone(),
            service_account: Some(ctx.config.service_accounts.metamover.clone()),
            args,
            access,
            resources: ctx.config.job_resources.metadata.clone(),
        };
        let job = build_job(&request, &ctx.config)?;
        match api.create(&PostParams::default(), &job).await {
            Ok(_) => {}
            // Created by an earlier reconcile (or leader): adopt it.
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Err(Error::kube(format!("create Job {}/{name}", ids.job_ns), e)),
        }
    }
    Ok(Ok((name, state)))
}

/// Deletes the backup's Jobs (their pods with them).
async fn delete_jobs(ctx: &Context, ids: &Ids) -> Result<()> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ids.job_ns);
    let jobs = api
        .list(&ListParams::default().labels(&format!("{LABEL_BACKUP_UID}={}", ids.uid)))
        .await
        .map_err(|e| Error::kube("list the backup's Jobs", e))?;
    for job in jobs.items {
        let name = job.name_any();
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if crate::error::is_not_found(&e) => {}
            Err(e) => return Err(Error::kube(format!("delete Job {name}"), e)),
        }
    }
    Ok(())
}

/// The arguments of a backup's metamover Job, and whether the command reads or writes the
/// backup's metadata (so an encrypted backup's key is mounted for it).
#[derive(Debug, Clone, PartialEq)]
struct MetamoverCommand {
    args: Vec<String>,
    reads_metadata: bool,
}

impl MetamoverCommand {
    /// `<action…> --kind K [--namespace NS] --name NAME` (no namespace for a ClusterBackup): a
    /// command on the backup's own metadata.
    fn of_backup(action: &[&str], kind: &str, ns: &str, name: &str) -> Self {
        let mut args: Vec<String> = action.iter().map(ToString::to_string).collect();
        args.extend(["--kind".into(), kind.to_string()]);
        if !ns.is_empty() {
            args.extend(["--namespace".into(), ns.to_string()]);
        }
        args.extend(["--name".into(), name.to_string()]);
        Self {
            args,
            reads_metadata: true,
        }
    }

    /// `images gc`: it reads only the plan-independent, plain `images.json` records of the
    /// target, never a backup's metadata, so no key.
    fn images_gc() -> Self {
        Self {
            args: vec!["images".into(), "gc".into()],
            reads_metadata: false,
        }
    }
}

/// Deletes the backup's data on its target through [`retention::delete_backup_data`] (the one
/// copy of that logic: metadata first, volume data only by coalescing, never what another
/// backup's chain needs). The finalizer stays while it is running or failed (an `Err` keeps it
/// and retries); a vanished plan or Target releases it with a warning Event naming the location
/// left on the target.
async fn delete_data<K: BackupKind>(backup: &K, ctx: &Context) -> Result<Action> {
    if let Some(uid) = backup.uid() {
        ctx.log_looks.forget(&uid);
    }
    let Some(location) = backup.backup_status().and_then(|s| s.location.clone()) else {
        return Ok(Action::await_change());
    };
    let (_, plan, target) = plan_and_target(ctx, backup).await?;
    let Some(target) = target else {
        ctx.event(
            backup,
            true,
            "BackupDataKept",
            format!(
                "the data at {location} is left on the target: its plan or Target no longer exists"
            ),
        )
        .await;
        return Ok(Action::await_change());
    };
    match retention::delete_backup_data(ctx, backup, &target).await? {
        retention::RetentionStep::Done(report) => {
            let deleted = if report.summary.is_empty() {
                format!("the data under {location} is deleted")
            } else {
                report.summary
            };
            match collect_images_after_deletion(ctx, backup, plan.as_ref(), &target).await? {
                None => {
                    ctx.event(backup, false, "BackupDataDeleted", deleted).await;
                }
                // The finalizer stays (an error requeues) until the gc Job has finished: its
                // owner is this backup.
                Some(GcStep::Running) => {
                    return Err(Error::TargetData(format!(
                        "{deleted}; collecting the image blobs only this backup referenced (its images gc Job is running)"
                    )));
                }
                Some(GcStep::Done(gc)) => {
                    ctx.event(
                        backup,
                        false,
                        "BackupDataDeleted",
                        format!("{deleted}; {gc}"),
                    )
                    .await;
                }
                Some(GcStep::Failed(gc)) => {
                    ctx.event(
                        backup,
                        true,
                        "BackupImagesNotCollected",
                        format!("{deleted}; {gc}"),
                    )
                    .await;
                }
            }
            Ok(Action::await_change())
        }
        // The finalizer stays: an error requeues the deletion.
        retention::RetentionStep::Running(reason) => Err(Error::TargetData(format!(
            "deleting the data under {location}: {reason}"
        ))),
        retention::RetentionStep::Failed(message) => {
            ctx.event(backup, true, "BackupDataDeletionFailed", message.clone())
                .await;
            Err(Error::TargetData(message))
        }
    }
}

/// Item of the image gc Job run when a backup is deleted.
const IMAGES_GC_DELETION_ITEM: &str = "images-gc-deletion";

/// After a deleted backup's data is gone (its `_metadata/`, so its `images.json`, first): when
/// it stored images and its plan backs images up, one Job `tvk-metamover images gc <target
/// flags>` (the retention one, [`collect_images`]; blobs younger than the tool's grace period
/// are never collected) so the blobs only this backup reached go now rather than at some
/// plan's next retention. `None`: nothing to collect. Done or failed, the backup's Jobs are
/// deleted; a failure leaves the blobs to the next gc (a warning Event says so), it never
/// keeps the backup.
async fn collect_images_after_deletion<K: BackupKind>(
    ctx: &Context,
    backup: &K,
    plan: Option<&K::Plan>,
    target: &Target,
) -> Result<Option<GcStep>> {
    let stored_images = backup
        .backup_status()
        .and_then(|s| s.snapshot.as_ref())
        .and_then(|s| s.get("images"))
        .and_then(serde_json::Value::as_array)
        .is_some_and(|images| !images.is_empty());
    if !stored_images || plan.is_none_or(PlanKind::skip_image_backup) {
        return Ok(None);
    }
    let ids = Ids {
        ns: backup.namespace().unwrap_or_default(),
        name: backup.name_any(),
        uid: backup.uid().ok_or(Error::Incomplete {
            kind: K::KIND,
            field: "uid",
        })?,
        job_ns: ctx.config.install_namespace.clone(),
        // `images gc` reads only the unencrypted images.json records: no key.
        key: None,
    };
    let step = match images_gc_job(ctx, backup, &ids, target, IMAGES_GC_DELETION_ITEM).await? {
        GcJob::NoAccess(no_access) => {
            return Ok(Some(GcStep::Failed(format!(
                "its image blobs were not collected: {no_access}; the next image gc collects them"
            ))));
        }
        GcJob::Running(_) => return Ok(Some(GcStep::Running)),
        GcJob::Succeeded(name) => GcStep::Done(format!(
            "image blobs no backup references any more were collected (Job {}/{name})",
            ids.job_ns
        )),
        GcJob::Failed(name, message) => GcStep::Failed(format!(
            "collecting its image blobs failed (Job {}/{name}): {message}; the next image gc (after a retention run) collects them",
            ids.job_ns
        )),
    };
    delete_jobs(ctx, &ids).await?;
    Ok(Some(step))
}

/// Requeue policy on errors.
pub fn error_policy<K: BackupKind>(_backup: Arc<K>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, kind = K::KIND, "backup reconcile failed");
    if error.is_user_error() {
        Action::requeue(Duration::from_secs(300))
    } else {
        Action::requeue(Duration::from_secs(10))
    }
}
