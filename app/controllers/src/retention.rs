//! Retention and deletion of backups (issue #7): which committed backups a plan's retention
//! policy keeps (GFS), coalesce Jobs that fold the expired ones into their successors, and the
//! deletion of one Backup's data that never breaks another backup's chain.
//!
//! - [`expired`] is pure: T4K's `latest` / `weekly` + `dayOfWeek` / `monthly` + `dateOfMonth` /
//!   `yearly` + `monthOfYear`. Only committed backups count; a backup in any other state, and
//!   the backup that just committed, are never expired.
//! - [`apply`] runs in the just-committed backup's Retention phase. Backups of one plan never
//!   overlap (the backup controller serialises them), so no new incremental can take an
//!   expired backup as its parent while the coalesce runs (RELIABILITY 10). Each expired
//!   backup gets `status.coalesceInfo` and `status: Coalescing` while its coalesce runs (back
//!   to `Available` when it failed: it is still restorable; the backup controller leaves a
//!   `Coalescing` backup alone); one `tvk-datamover coalesce` Job per
//!   volume removes all expired backups of that volume in one call (the datamover rewrites the
//!   survivors' chains first, then deletes what nothing references; object-locked objects are
//!   deferred, never forced); when every Job succeeded the expired Backup objects are deleted,
//!   and their finalizer ([`delete_backup_data`]) removes their metadata only, because
//!   `coalesceInfo.state: Qcow2MovementCompleted` says their volume data is already gone.
//! - [`delete_backup_data`] is what the Backup finalizer runs: `_metadata/commit.json` first
//!   (the backup stops being committed), the rest of `_metadata/`, then a coalesce Job per
//!   volume with `--expire <this backup>` — the datamover deletes the backup's images when no
//!   later backup's chain uses them and flattens them into the successor when one does, so a
//!   delete never breaks a chain.
//!
//! Coalesce Jobs: the same builder, image, service account and target access as every other
//! execution-layer Job ([`crate::jobs::build_job`], [`crate::target_access::job_access`]),
//! plus `backoffLimit: 3` and a `podFailurePolicy` that fails the Job at once on any exit code
//! but 75 (the datamover's retryable EX_TEMPFAIL): Kubernetes retries a temporary failure up to
//! three times, a permanent one is reported with the datamover's own error (the container's
//! termination message, `FallbackToLogsOnError`, carries its final JSON result line).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::{
    batch::v1::{
        Job, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
    },
    core::v1::Pod,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use tvk_api::{
    backup::{BackupState, CoalesceInfo, CoalesceState},
    policy::{DayOfWeek, MonthOfYear, Policy, PolicyType, RetentionConfig},
    snapshot::Snapshot,
    target::{Target, TargetType},
};

use crate::{
    backup_controller,
    context::Context,
    error::{Error, Result, is_conflict, is_not_found},
    jobs::{JobRequest, JobState, build_job, job_state},
    kinds::{BackupKind, PlanKind},
    naming::object_name,
    target_access::{job_access, ref_namespace},
    target_controller,
};

/// Exit code of a retryable datamover failure (EX_TEMPFAIL).
pub const EXIT_RETRYABLE: i32 = 75;
/// How often Kubernetes retries a coalesce pod that exited [`EXIT_RETRYABLE`].
pub const COALESCE_RETRIES: i32 = 3;
/// Container name (and `app.kubernetes.io/component`) of coalesce Jobs.
pub const COALESCE_CONTAINER: &str = "coalesce";
/// Label of a coalesce Job: the plan UID it rewrites.
pub const LABEL_COALESCE_PLAN: &str = "triliovault.trilio.io/coalesce-plan";
/// Label of a coalesce Job: the volume (PVC UID) it rewrites. At most one coalesce Job of a
/// plan's volume runs at a time (two would race on the volume's manifests).
pub const LABEL_COALESCE_VOLUME: &str = "triliovault.trilio.io/coalesce-volume";
/// A backup dated further than this into the future means a skewed clock: retention expires
/// nothing (RELIABILITY rule 4: no deletion is decided by a local clock that may be wrong).
pub const MAX_CLOCK_SKEW_SECONDS: i64 = 300;

/// How a backup takes part in retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// `Available`: counts for the policy and may expire.
    Committed,
    /// The backup whose Retention phase runs: counts, never expires.
    JustCommitted,
    /// Any other state (in progress, failed, coalescing): neither counts nor expires.
    Other,
}

/// One backup of a plan as retention sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RetainedBackup {
    /// The Backup's UID.
    pub uid: String,
    /// When it was taken (completion, else start, else creation time), in the installation's
    /// schedule time zone: `dayOfWeek`, `dateOfMonth` and `monthOfYear` are days of that zone.
    pub taken_at: jiff::Zoned,
    /// Whether it counts and may expire.
    pub standing: Standing,
}

/// Which committed backups of a plan the retention policy does NOT keep (pure, GFS): their
/// UIDs, oldest first.
///
/// Kept: the `latest` newest; for `weekly` N, the newest backup taken on `dayOfWeek` in each of
/// the N most recent weeks (ISO weeks) that have one; for `monthly` N, the newest taken on
/// `dateOfMonth` in each of the N most recent months that have one; for `yearly` N, the newest
/// taken in `monthOfYear` in each of the N most recent years that have one. A count without
/// its day (e.g. `weekly` without `dayOfWeek`) takes the newest backup of any day of the
/// period. A policy with no count keeps everything. When a backup is dated more than
/// [`MAX_CLOCK_SKEW_SECONDS`] after `now`, the clock is not trusted and nothing expires.
pub fn expired(
    policy: &RetentionConfig,
    backups: &[RetainedBackup],
    now: jiff::Timestamp,
) -> Vec<String> {
    let count = |n: Option<i64>| n.and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
    let (latest, weekly, monthly, yearly) = (
        count(policy.latest),
        count(policy.weekly),
        count(policy.monthly),
        count(policy.yearly),
    );
    if latest + weekly + monthly + yearly == 0 {
        return Vec::new();
    }
    let mut counted: Vec<&RetainedBackup> = backups
        .iter()
        .filter(|b| b.standing != Standing::Other)
        .collect();
    if counted
        .iter()
        .any(|b| b.taken_at.timestamp().as_second() > now.as_second() + MAX_CLOCK_SKEW_SECONDS)
    {
        return Vec::new();
    }
    // Newest first; the UID breaks ties so the result never depends on list order.
    counted.sort_by(|a, b| (b.taken_at.timestamp(), &b.uid).cmp(&(a.taken_at.timestamp(), &a.uid)));
    let mut keep: BTreeSet<&str> = counted
        .iter()
        .take(latest)
        .map(|b| b.uid.as_str())
        .collect();
    let day = policy.day_of_week.map(weekday);
    keep_periods(
        &counted,
        weekly,
        |z| day.is_none_or(|d| z.weekday() == d),
        |z| {
            let w = z.date().iso_week_date();
            i64::from(w.year()) * 100 + i64::from(w.week())
        },
        &mut keep,
    );
    let date = policy.date_of_month;
    keep_periods(
        &counted,
        monthly,
        |z| date.is_none_or(|d| i64::from(z.day()) == d),
        |z| i64::from(z.year()) * 100 + i64::from(z.month()),
        &mut keep,
    );
    let month = policy.month_of_year.map(month_number);
    keep_periods(
        &counted,
        yearly,
        |z| month.is_none_or(|m| z.month() == m),
        |z| i64::from(z.year()),
        &mut keep,
    );
    counted
        .iter()
        .rev()
        .filter(|b| b.standing == Standing::Committed && !keep.contains(b.uid.as_str()))
        .map(|b| b.uid.clone())
        .collect()
}

/// Keeps the newest matching backup of each of the `n` most recent periods that have one.
/// `newest_first` is sorted newest first.
fn keep_periods<'a>(
    newest_first: &[&'a RetainedBackup],
    n: usize,
    matches: impl Fn(&jiff::Zoned) -> bool,
    period: impl Fn(&jiff::Zoned) -> i64,
    keep: &mut BTreeSet<&'a str>,
) {
    if n == 0 {
        return;
    }
    let mut seen: BTreeSet<i64> = BTreeSet::new();
    for b in newest_first {
        if !matches(&b.taken_at) {
            continue;
        }
        if seen.insert(period(&b.taken_at)) {
            keep.insert(b.uid.as_str());
            if seen.len() == n {
                return;
            }
        }
    }
}

fn weekday(d: DayOfWeek) -> jiff::civil::Weekday {
    use jiff::civil::Weekday as W;
    match d {
        DayOfWeek::Monday => W::Monday,
        DayOfWeek::Tuesday => W::Tuesday,
        DayOfWeek::Wednesday => W::Wednesday,
        DayOfWeek::Thursday => W::Thursday,
        DayOfWeek::Friday => W::Friday,
        DayOfWeek::Saturday => W::Saturday,
        DayOfWeek::Sunday => W::Sunday,
    }
}

fn month_number(m: MonthOfYear) -> i8 {
    match m {
        MonthOfYear::January => 1,
        MonthOfYear::February => 2,
        MonthOfYear::March => 3,
        MonthOfYear::April => 4,
        MonthOfYear::May => 5,
        MonthOfYear::June => 6,
        MonthOfYear::July => 7,
        MonthOfYear::August => 8,
        MonthOfYear::September => 9,
        MonthOfYear::October => 10,
        MonthOfYear::November => 11,
        MonthOfYear::December => 12,
    }
}

/// What a finished retention run or data deletion did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Backups expired (`namespace/name`), whose Backup objects were deleted.
    pub expired: Vec<String>,
    /// Coalesce Jobs that ran (`namespace/name`).
    pub jobs: Vec<String>,
    /// Metadata objects deleted from the target.
    pub metadata_objects_deleted: usize,
    /// One line for a condition reason or an Event.
    pub summary: String,
}

/// Where retention (or a deletion) stands. The caller polls: `Running` means call again later
/// (coalesce Jobs are running, or the deletion waits for a running backup of the plan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetentionStep {
    /// Finished.
    Done(RetentionReport),
    /// Still running; what it waits for.
    Running(String),
    /// Failed terminally (for this run); the message says what failed and what to do.
    Failed(String),
}

/// Data directories of a backup on a target, parsed from `status.location`
/// (`<plan uid>/<backup uid>`). `None` when the location is not of that form for this backup.
fn location_of<K: BackupKind>(backup: &K) -> Option<(String, String)> {
    let location = backup.backup_status()?.location.clone()?;
    let (plan, uid) = location.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    };
    (ok(plan) && ok(uid) && backup.uid().as_deref() == Some(uid))
        .then(|| (plan.to_string(), uid.to_string()))
}

/// A volume directory name the datamover may be pointed at (a PVC UID).
fn valid_volume(v: &str) -> bool {
    !v.is_empty()
        && !v.starts_with('_')
        && !v.starts_with('.')
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// The volumes (PVC UIDs) a backup wrote, from the `location` of each data snapshot in
/// `status.snapshot` (`<plan uid>/<backup uid>/<pvc uid>`).
pub fn backup_volumes<K: BackupKind>(backup: &K) -> Vec<String> {
    let Some((plan, uid)) = location_of(backup) else {
        return Vec::new();
    };
    let prefix = format!("{plan}/{uid}/");
    let snapshot = backup
        .backup_status()
        .and_then(|s| Snapshot::from_status_value(s.snapshot.as_ref()).ok())
        .flatten();
    let mut volumes: BTreeSet<String> = BTreeSet::new();
    if let Some(s) = snapshot {
        for d in s.data_snapshots() {
            if let Some(v) = d
                .location
                .as_deref()
                .and_then(|l| l.strip_prefix(&prefix))
                .filter(|v| valid_volume(v))
            {
                volumes.insert(v.to_string());
            }
        }
    }
    volumes.into_iter().collect()
}

/// When a backup was taken: completion, else start, else creation time.
/// When a backup was taken: completion, else start, else creation time.
pub(crate) fn taken_at<K: BackupKind>(backup: &K) -> Option<jiff::Timestamp> {
    let status = backup.backup_status();
    status
        .and_then(|s| s.completion_timestamp.as_deref())
        .or_else(|| status.and_then(|s| s.start_timestamp.as_deref()))
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .or_else(|| backup.meta().creation_timestamp.as_ref().map(|t| t.0))
}

fn backup_key<K: BackupKind>(b: &K) -> String {
    b.key()
}

/// The plan's retention policy, or why it cannot be used.
async fn retention_config<P: PlanKind>(
    ctx: &Context,
    plan: &P,
) -> Result<Option<std::result::Result<RetentionConfig, String>>> {
    let Some(reference) = &plan.backup_config().retention_policy else {
        return Ok(None);
    };
    let plan_ns = plan.refs_namespace(&ctx.config.install_namespace);
    let ns = ref_namespace(reference, &plan_ns).to_string();
    let name = reference.name.clone().unwrap_or_default();
    let policy = Api::<Policy>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("read Policy {ns}/{name}"), e))?;
    Ok(Some(match policy {
        None => Err(format!(
            "the retention Policy {ns}/{name} does not exist; create it or correct the plan's backupConfig.retentionPolicy"
        )),
        Some(p) if p.spec.type_ != PolicyType::Retention => Err(format!(
            "Policy {ns}/{name} is of type {}, not Retention; point backupConfig.retentionPolicy at a Retention policy",
            p.spec.type_.as_str()
        )),
        Some(p) => p.spec.retention_config.clone().ok_or_else(|| {
            format!("the retention Policy {ns}/{name} has no retentionConfig; add latest, weekly, monthly or yearly")
        }),
    }))
}

/// The plan's Backups (same plan reference and data under the plan's UID).
async fn plan_backups<K: BackupKind>(ctx: &Context, plan: &K::Plan, ns: &str) -> Result<Vec<K>> {
    let key = (plan.namespace().unwrap_or_default(), plan.name_any());
    let plan_uid = plan.uid().unwrap_or_default();
    let all = K::api(ctx.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube(format!("list the {}s of {}", K::KIND, plan.key()), e))?;
    Ok(all
        .items
        .into_iter()
        .filter(|b| b.plan_key() == key && location_of(b).is_some_and(|(p, _)| p == plan_uid))
        .collect())
}

/// Runs retention for `plan` after `just_committed` committed (its Retention phase). Call it
/// again while it answers [`RetentionStep::Running`]; it observes the Jobs and Backups each
/// time (nothing is assumed across calls).
///
/// How the caller reflects the answer: `Done` → Retention condition `Completed` with
/// `report.summary`; `Running` → stay in Retention (`InProgress`), requeue; `Failed` → the
/// Retention condition `Error` with the message (an Event with it) and carry on to Cleanup and
/// `Available`: a retention failure never fails a good backup. Expired backups whose coalesce
/// failed keep the error in their `coalesceInfo` and are retried by the next
/// retention run of the plan (or when the user deletes them).
pub async fn apply<K: BackupKind>(
    ctx: &Context,
    plan: &K::Plan,
    target: &Target,
    just_committed: &K,
) -> Result<RetentionStep> {
    let policy = match retention_config(ctx, plan).await? {
        None => {
            return Ok(RetentionStep::Done(RetentionReport {
                summary: "no retention policy; every backup is kept".into(),
                ..RetentionReport::default()
            }));
        }
        Some(Err(reason)) => return Ok(RetentionStep::Failed(reason)),
        Some(Ok(p)) => p,
    };
    let ns = just_committed.namespace().unwrap_or_default();
    let just_uid = just_committed.uid().ok_or(Error::Incomplete {
        kind: K::KIND,
        field: "uid",
    })?;
    let plan_uid = plan.uid().ok_or(Error::Incomplete {
        kind: <K::Plan as PlanKind>::KIND,
        field: "uid",
    })?;
    let zone = &ctx.config.schedule_policy_timezone;
    let tz = jiff::tz::TimeZone::get(zone).unwrap_or_else(|error| {
        tracing::warn!(%error, zone, "the schedule time zone cannot be loaded (no time zone database in this image?); retention counts days in UTC");
        jiff::tz::TimeZone::UTC
    });
    let backups: Vec<K> = plan_backups::<K>(ctx, plan, &ns).await?;
    let retained: Vec<RetainedBackup> = backups
        .iter()
        .filter_map(|b| {
            let uid = b.uid()?;
            let standing = if uid == just_uid {
                Standing::JustCommitted
            } else if b.backup_status().and_then(|s| s.status) == Some(BackupState::Available)
                && b.meta().deletion_timestamp.is_none()
            {
                Standing::Committed
            } else {
                Standing::Other
            };
            Some(RetainedBackup {
                uid,
                taken_at: taken_at(b)?.to_zoned(tz.clone()),
                standing,
            })
        })
        .collect();
    let newly: BTreeSet<String> = expired(&policy, &retained, jiff::Timestamp::now())
        .into_iter()
        .collect();
    // Backups marked (coalesceInfo) by this run's earlier calls, or by an earlier run that
    // failed.
    let mut expiring: Vec<&K> = backups
        .iter()
        .filter(|b| {
            let uid = b.uid().unwrap_or_default();
            uid != just_uid
                && (newly.contains(&uid)
                    || b.backup_status().is_some_and(|s| {
                        s.status == Some(BackupState::Coalescing) || s.coalesce_info.is_some()
                    }))
        })
        .collect();
    expiring.sort_by_key(|b| (taken_at(*b), b.uid()));
    if expiring.is_empty() {
        return Ok(RetentionStep::Done(RetentionReport {
            summary: format!(
                "the retention policy keeps all {} committed backup(s)",
                retained
                    .iter()
                    .filter(|b| b.standing != Standing::Other)
                    .count()
            ),
            ..RetentionReport::default()
        }));
    }
    let job_ns = ctx.config.install_namespace.clone();
    let access = match job_access(target, &job_ns) {
        Ok(a) => a,
        Err(e) => return Ok(RetentionStep::Failed(e.to_string())),
    };
    let encrypted = expiring.iter().any(|b| b.encrypted());
    let access = match with_key(ctx, Some(plan), &job_ns, access, encrypted).await? {
        Ok(a) => a,
        Err(reason) => return Ok(RetentionStep::Failed(reason)),
    };
    // Volume → expired backups holding it: one coalesce call per volume.
    let mut by_volume: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for b in &expiring {
        for v in backup_volumes(*b) {
            by_volume
                .entry(v)
                .or_default()
                .push(b.uid().unwrap_or_default());
        }
    }
    let owner = JobOwner::of(just_committed, &job_ns)?;
    let mut outcomes: BTreeMap<String, CoalesceOutcome> = BTreeMap::new();
    for (volume, expire) in &by_volume {
        let name = object_name("Coalesce", &just_uid, volume);
        let call = CoalesceCall {
            plan_uid: &plan_uid,
            volume,
            expire,
        };
        let outcome = run_coalesce(ctx, &owner, &name, &call, &access).await?;
        outcomes.insert(volume.clone(), outcome);
    }
    // Mirror the Jobs into each expired backup's status.
    let mut failures: Vec<String> = Vec::new();
    let mut running: Vec<String> = Vec::new();
    for b in &expiring {
        let volumes = backup_volumes(*b);
        let mine: Vec<&CoalesceOutcome> = volumes.iter().filter_map(|v| outcomes.get(v)).collect();
        let info = coalesce_info(&mine);
        mark_coalescing(ctx, *b, &info).await?;
        match info.state {
            Some(CoalesceState::CommitFailed | CoalesceState::Qcow2MovementFailed) => {
                failures.push(backup_key(*b));
            }
            Some(CoalesceState::Qcow2MovementCompleted) => {}
            _ => running.push(backup_key(*b)),
        }
    }
    let jobs: Vec<String> = outcomes
        .values()
        .map(|o| format!("{job_ns}/{}", o.job))
        .collect();
    if !failures.is_empty() {
        let messages: Vec<String> = outcomes
            .values()
            .filter_map(|o| {
                o.failure
                    .as_ref()
                    .map(|m| format!("Job {job_ns}/{}: {m}", o.job))
            })
            .collect();
        return Ok(RetentionStep::Failed(format!(
            "coalescing expired backup(s) {} failed: {}; they keep the error in coalesceInfo and are retried by the next retention run (or delete them); every other backup is still restorable",
            failures.join(", "),
            messages.join("; ")
        )));
    }
    if !running.is_empty() {
        return Ok(RetentionStep::Running(format!(
            "coalescing {} expired backup(s) ({}) with Job(s) {}{}",
            running.len(),
            running.join(", "),
            jobs.join(", "),
            waiting_note(outcomes.values())
        )));
    }
    let mut expired_keys = Vec::new();
    for b in &expiring {
        let name = b.name_any();
        let api = K::api(ctx.client.clone(), &ns);
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(Error::kube(
                    format!("delete expired {} {}", K::KIND, b.key()),
                    e,
                ));
            }
        }
        expired_keys.push(backup_key(*b));
    }
    Ok(RetentionStep::Done(RetentionReport {
        summary: format!(
            "expired {} backup(s) by the retention policy: {}",
            expired_keys.len(),
            expired_keys.join(", ")
        ),
        expired: expired_keys,
        jobs,
        metadata_objects_deleted: 0,
    }))
}

/// Who a coalesce Job works for (labels, annotation, owner reference).
struct JobOwner {
    name: String,
    namespace: String,
    uid: String,
    owner: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
}

impl JobOwner {
    fn of<K: BackupKind>(backup: &K, job_ns: &str) -> Result<Self> {
        let namespace = backup.namespace();
        Ok(Self {
            name: backup.name_any(),
            uid: backup.uid().ok_or(Error::Incomplete {
                kind: K::KIND,
                field: "uid",
            })?,
            // A ClusterBackup (cluster-scoped) may own namespaced Jobs.
            owner: namespace
                .as_deref()
                .is_none_or(|ns| ns == job_ns)
                .then(|| backup.controller_owner_ref(&()))
                .flatten(),
            namespace: namespace.unwrap_or_default(),
        })
    }
}

/// One `tvk-datamover coalesce` call: a plan's volume and the backups to remove from it.
#[derive(Debug, Clone, Copy)]
pub struct CoalesceCall<'a> {
    /// `--plan`: the BackupPlan's UID.
    pub plan_uid: &'a str,
    /// `--volume`: the PVC UID.
    pub volume: &'a str,
    /// `--expire`: backup UIDs.
    pub expire: &'a [String],
}

/// `access` plus the plan's encryption key when the backups to coalesce are encrypted (the
/// datamover decrypts their chains and re-encrypts flattened bases with it); inner `Err` when
/// the key is not there.
async fn with_key<P: PlanKind>(
    ctx: &Context,
    plan: Option<&P>,
    job_ns: &str,
    mut access: crate::target_access::TargetAccess,
    encrypted: bool,
) -> Result<std::result::Result<crate::target_access::TargetAccess, String>> {
    if !encrypted {
        return Ok(Ok(access));
    }
    let Some(key) = plan.and_then(|p| crate::encryption::KeyRef::of_plan(p, &p.key(), job_ns))
    else {
        return Ok(Err(format!(
            "the backups to coalesce are encrypted but their {} no longer names an encryption Secret (spec.encryption.encryptionSecret); name it again so retention can fold them",
            P::KIND
        )));
    };
    Ok(match key.job_secret(ctx, job_ns).await? {
        Ok(secret) => {
            crate::encryption::mount(&mut access, &secret);
            Ok(access)
        }
        Err(reason) => Err(reason),
    })
}

/// The coalesce Job of one volume (pure): `tvk-datamover coalesce --plan P --volume V
/// --expire B…` plus the target flags, retried by Kubernetes on exit 75 only; it works for
/// (labels, annotation, owner reference) `owner_backup`.
pub fn coalesce_job<K: BackupKind>(
    config: &crate::config::Config,
    name: &str,
    owner_backup: &K,
    call: &CoalesceCall<'_>,
    access: &crate::target_access::TargetAccess,
) -> Result<Job> {
    let owner = JobOwner::of(owner_backup, &config.install_namespace)?;
    coalesce_job_for(config, &owner, name, call, access)
}

fn coalesce_job_for(
    config: &crate::config::Config,
    owner: &JobOwner,
    name: &str,
    call: &CoalesceCall<'_>,
    access: &crate::target_access::TargetAccess,
) -> Result<Job> {
    let job_ns = config.install_namespace.as_str();
    let mut args = vec![
        "coalesce".to_string(),
        "--plan".into(),
        call.plan_uid.to_string(),
        "--volume".into(),
        call.volume.to_string(),
    ];
    for b in call.expire {
        args.extend(["--expire".to_string(), b.clone()]);
    }
    let request = JobRequest {
        name: name.to_string(),
        namespace: job_ns,
        backup_label: owner.name.chars().take(63).collect(),
        backup_uid: &owner.uid,
        backup_ref: format!("{}/{}", owner.namespace, owner.name),
        owner: owner.owner.clone(),
        phase: COALESCE_CONTAINER,
        image: config.images.datamover.clone(),
        service_account: Some(config.service_accounts.datamover.clone()),
        args,
        access: access.clone(),
        resources: config.job_resources.data.clone(),
    };
    let mut job = build_job(&request, config)?;
    let labels = job.metadata.labels.get_or_insert_with(Default::default);
    labels.insert(LABEL_COALESCE_PLAN.into(), call.plan_uid.to_string());
    labels.insert(LABEL_COALESCE_VOLUME.into(), call.volume.to_string());
    if let Some(spec) = job.spec.as_mut() {
        spec.backoff_limit = Some(COALESCE_RETRIES);
        spec.pod_failure_policy = Some(PodFailurePolicy {
            rules: vec![PodFailurePolicyRule {
                action: "FailJob".into(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: Some(COALESCE_CONTAINER.into()),
                    operator: "NotIn".into(),
                    values: vec![EXIT_RETRYABLE],
                }),
                on_pod_conditions: None,
            }],
        });
    }
    Ok(job)
}

/// What one coalesce Job says.
#[derive(Debug, Clone)]
struct CoalesceOutcome {
    job: String,
    state: JobState,
    retries: i64,
    /// The datamover's error (or the Job's failure message) when it failed.
    failure: Option<String>,
    /// The last coalesce state the datamover reported before failing.
    failed_state: Option<CoalesceState>,
    /// Another coalesce Job of the same volume this one waits for.
    waiting: Option<String>,
}

/// "; waiting for …" when Jobs wait for another coalesce of their volume.
fn waiting_note<'a>(outcomes: impl Iterator<Item = &'a CoalesceOutcome>) -> String {
    let waits: Vec<&str> = outcomes.filter_map(|o| o.waiting.as_deref()).collect();
    if waits.is_empty() {
        String::new()
    } else {
        format!(
            "; not started yet: waiting for coalesce Job(s) {} of the same volume to finish",
            waits.join(", ")
        )
    }
}

/// Creates (or adopts) a coalesce Job and reads its state.
async fn run_coalesce(
    ctx: &Context,
    owner: &JobOwner,
    name: &str,
    call: &CoalesceCall<'_>,
    access: &crate::target_access::TargetAccess,
) -> Result<CoalesceOutcome> {
    let job_ns = ctx.config.install_namespace.clone();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &job_ns);
    let existing = api
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("read Job {job_ns}/{name}"), e))?;
    let state = job_state(existing.as_ref());
    let retries = existing
        .as_ref()
        .and_then(|j| j.status.as_ref())
        .and_then(|s| s.failed)
        .map_or(0, i64::from);
    let mut outcome = CoalesceOutcome {
        job: name.to_string(),
        state: state.clone(),
        retries,
        failure: None,
        failed_state: None,
        waiting: None,
    };
    match &state {
        JobState::Missing => {
            // One coalesce of a volume at a time: wait for another one still running (a
            // retention run and a deletion, or two deletions, of the same plan).
            let others = api
                .list(&ListParams::default().labels(&format!(
                    "{LABEL_COALESCE_PLAN}={},{LABEL_COALESCE_VOLUME}={}",
                    call.plan_uid, call.volume
                )))
                .await
                .map_err(|e| Error::kube(format!("list the coalesce Jobs in {job_ns}"), e))?;
            if let Some(other) = others
                .items
                .iter()
                .find(|j| j.name_any() != name && job_state(Some(j)) == JobState::Running)
            {
                outcome.waiting = Some(format!("{job_ns}/{}", other.name_any()));
                return Ok(outcome);
            }
            let job = coalesce_job_for(&ctx.config, owner, name, call, access)?;
            match api.create(&PostParams::default(), &job).await {
                Ok(_) => {}
                Err(e) if is_conflict(&e) => {}
                Err(e) => return Err(Error::kube(format!("create Job {job_ns}/{name}"), e)),
            }
        }
        JobState::Failed(message) => {
            ctx.metrics.job_failed("Coalesce");
            let (error, last_state) = datamover_failure(ctx, &job_ns, name).await?;
            outcome.failure = Some(error.unwrap_or_else(|| message.clone()));
            outcome.failed_state = last_state;
        }
        JobState::Running | JobState::Succeeded => {}
    }
    Ok(outcome)
}

/// The datamover's own error and last coalesce state, from the termination messages of the
/// Job's pods (`FallbackToLogsOnError`: the tail of its JSON lines).
async fn datamover_failure(
    ctx: &Context,
    job_ns: &str,
    job: &str,
) -> Result<(Option<String>, Option<CoalesceState>)> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), job_ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .map_err(|e| Error::kube(format!("list the pods of Job {job_ns}/{job}"), e))?;
    let mut messages: Vec<String> = list
        .items
        .iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone())
        .collect();
    messages.sort();
    let mut error = None;
    let mut state = None;
    for text in &messages {
        let (e, s) = parse_datamover_lines(text);
        error = e.or(error);
        state = s.or(state);
    }
    Ok((error, state))
}

/// The error of the final `{"event":"result","ok":false,"error":…}` line and the last
/// `{"event":"coalesce","coalesceInfo":{"state":…}}` state in the datamover's output (pure).
pub fn parse_datamover_lines(text: &str) -> (Option<String>, Option<CoalesceState>) {
    let state = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line.trim()).ok())
        .filter(|v| v.get("event") == Some(&json!("coalesce")))
        .filter_map(|v| {
            v.pointer("/coalesceInfo/state")
                .and_then(|s| serde_json::from_value::<CoalesceState>(s.clone()).ok())
        })
        .next_back();
    (crate::jobs::result_error(text), state)
}

/// A backup's `coalesceInfo` from the Jobs of its volumes (pure). No Job (no volumes):
/// nothing to coalesce, completed.
fn coalesce_info(jobs: &[&CoalesceOutcome]) -> CoalesceInfo {
    let retries = jobs.iter().map(|o| o.retries).max().unwrap_or(0);
    let failed: Vec<&&CoalesceOutcome> = jobs.iter().filter(|o| o.failure.is_some()).collect();
    if !failed.is_empty() {
        let state = if failed
            .iter()
            .any(|o| o.failed_state == Some(CoalesceState::Qcow2MovementFailed))
        {
            CoalesceState::Qcow2MovementFailed
        } else {
            CoalesceState::CommitFailed
        };
        return CoalesceInfo {
            state: Some(state),
            retry_count: Some(retries),
            error_messages: Some(
                failed
                    .iter()
                    .filter_map(|o| o.failure.clone())
                    .map(|m| crate::context::truncate(&m, 1000))
                    .collect(),
            ),
        };
    }
    let done = jobs.iter().all(|o| o.state == JobState::Succeeded);
    CoalesceInfo {
        state: Some(if done {
            CoalesceState::Qcow2MovementCompleted
        } else {
            CoalesceState::CommitStarted
        }),
        retry_count: Some(retries),
        error_messages: None,
    }
}

/// Sets `coalesceInfo` on an expired backup (merge patch, only when
/// something changed), with an Event on each state change.
async fn mark_coalescing<K: BackupKind>(
    ctx: &Context,
    backup: &K,
    info: &CoalesceInfo,
) -> Result<()> {
    let status = backup.backup_status().cloned().unwrap_or_default();
    // Coalescing while the Jobs fold it; Available again after a failure (still restorable,
    // retried by the next retention run).
    let state = if matches!(
        info.state,
        Some(CoalesceState::CommitFailed | CoalesceState::Qcow2MovementFailed)
    ) {
        BackupState::Available
    } else {
        BackupState::Coalescing
    };
    if status.coalesce_info.as_ref() == Some(info) && status.status == Some(state) {
        return Ok(());
    }
    let ns = backup.namespace().unwrap_or_default();
    let name = backup.name_any();
    let api = K::api(ctx.client.clone(), &ns);
    let patch = json!({"status": {"coalesceInfo": info, "status": state}});
    match api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        // Deleted meanwhile: its finalizer takes over.
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => {
            return Err(Error::kube(
                format!(
                    "record the coalesce of expired {} {}",
                    K::KIND,
                    backup.key()
                ),
                e,
            ));
        }
    }
    if status.coalesce_info.as_ref().and_then(|i| i.state) != info.state {
        let failed = matches!(
            info.state,
            Some(CoalesceState::CommitFailed | CoalesceState::Qcow2MovementFailed)
        );
        ctx.event(
            backup,
            failed,
            if failed {
                "CoalesceFailed"
            } else {
                "Coalescing"
            },
            match &info.error_messages {
                Some(m) if failed => m.join("; "),
                _ => format!(
                    "expired by the retention policy: {:?}",
                    info.state.unwrap_or(CoalesceState::CommitStarted)
                ),
            },
        )
        .await;
    }
    Ok(())
}

/// Deletes a deleted Backup's data on its target (the Backup finalizer). Call it again while it
/// answers [`RetentionStep::Running`]; keep the finalizer on `Failed` (the message says why)
/// and on `Err` (a transient error, retried with backoff).
///
/// Order: wait while another backup of the plan is running (its chain may build on this one);
/// on S3, `_metadata/commit.json` first (the backup stops being committed), the rest of
/// `_metadata/`, and the volume directories found under the location; then one coalesce Job
/// per volume with `--expire <this backup>` — never a plain delete of volume data, since a
/// later backup's chain may use it. Volumes that retention already coalesced away
/// (`coalesceInfo.state: Qcow2MovementCompleted`) get no Job. NFS: the control plane cannot
/// mount the share, so the volumes come from `status.snapshot` and their coalesce Jobs mount
/// it; the metadata under `_metadata/` is left on the share (no Job command deletes it yet),
/// said in a Warning Event.
pub async fn delete_backup_data<K: BackupKind>(
    ctx: &Context,
    backup: &K,
    target: &Target,
) -> Result<RetentionStep> {
    if backup
        .backup_status()
        .and_then(|s| s.location.as_ref())
        .is_none()
    {
        return Ok(RetentionStep::Done(RetentionReport {
            summary: "the backup wrote nothing to the target".into(),
            ..RetentionReport::default()
        }));
    }
    let Some((plan_uid, uid)) = location_of(backup) else {
        return Ok(RetentionStep::Failed(format!(
            "status.location {:?} is not <plan uid>/<backup uid> of this backup; nothing was deleted — remove the finalizer {} by hand if the data should stay",
            backup
                .backup_status()
                .and_then(|s| s.location.clone())
                .unwrap_or_default(),
            backup_controller::FINALIZER
        )));
    };
    let ns = backup.namespace().unwrap_or_default();
    let siblings = K::api(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube(format!("list the {}s of the plan", K::KIND), e))?;
    if let Some(running) = backup_controller::running_sibling(backup, &siblings.items) {
        return Ok(RetentionStep::Running(format!(
            "waiting for backup {running} of the same plan to finish: it may build on this backup's data"
        )));
    }
    let location = format!("{plan_uid}/{uid}");
    let mut report = RetentionReport::default();
    let mut volumes: BTreeSet<String> = BTreeSet::new();
    match target.spec.type_ {
        TargetType::ObjectStore => {
            let (deleted, found) = delete_s3_metadata(ctx, target, &location).await?;
            report.metadata_objects_deleted = deleted;
            volumes.extend(found);
        }
        TargetType::Nfs => {
            volumes.extend(backup_volumes(backup));
        }
    }
    let coalesced = backup
        .backup_status()
        .and_then(|s| s.coalesce_info.as_ref())
        .and_then(|i| i.state)
        == Some(CoalesceState::Qcow2MovementCompleted);
    if coalesced {
        volumes.clear();
    }
    let job_ns = ctx.config.install_namespace.clone();
    let mut outcomes = Vec::new();
    if !volumes.is_empty() {
        let access = match job_access(target, &job_ns) {
            Ok(a) => a,
            Err(e) => return Ok(RetentionStep::Failed(e.to_string())),
        };
        let plan = if backup.encrypted() {
            let (plan_ns, plan_name) = backup.plan_key();
            <K::Plan as PlanKind>::api(ctx.client.clone(), &plan_ns)
                .get_opt(&plan_name)
                .await
                .map_err(|e| Error::kube(format!("read the plan of {}", backup_key(backup)), e))?
        } else {
            None
        };
        let access = match with_key(ctx, plan.as_ref(), &job_ns, access, backup.encrypted()).await?
        {
            Ok(a) => a,
            Err(reason) => return Ok(RetentionStep::Failed(reason)),
        };
        let owner = JobOwner::of(backup, &job_ns)?;
        for volume in &volumes {
            let name = object_name("Coalesce", &uid, volume);
            let call = CoalesceCall {
                plan_uid: &plan_uid,
                volume,
                expire: std::slice::from_ref(&uid),
            };
            outcomes.push(run_coalesce(ctx, &owner, &name, &call, &access).await?);
        }
    }
    report.jobs = outcomes
        .iter()
        .map(|o| format!("{job_ns}/{}", o.job))
        .collect();
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| {
            o.failure
                .as_ref()
                .map(|m| format!("Job {job_ns}/{}: {m}", o.job))
        })
        .collect();
    if !failed.is_empty() {
        // The failed Jobs go, so the next attempt (after the caller's backoff) runs anew.
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &job_ns);
        for o in outcomes.iter().filter(|o| o.failure.is_some()) {
            match jobs.delete(&o.job, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(Error::kube(format!("delete Job {job_ns}/{}", o.job), e)),
            }
        }
        return Ok(RetentionStep::Failed(format!(
            "removing the volume data of {location} failed: {}; the metadata is deleted, the volume data stays until a retry succeeds",
            failed.join("; ")
        )));
    }
    if outcomes.iter().any(|o| o.state != JobState::Succeeded) {
        return Ok(RetentionStep::Running(format!(
            "removing the volume data of {location} with Job(s) {} (coalesced into later backups where their chains need it){}",
            report.jobs.join(", "),
            waiting_note(outcomes.iter())
        )));
    }
    let nfs_note = if target.spec.type_ == TargetType::Nfs {
        let note = format!(
            "the metadata under {location}/_metadata/ on the NFS share is left in place: deleting it needs a Job command that does not exist yet; remove the directory by hand"
        );
        ctx.event(backup, true, "BackupMetadataKept", note.clone())
            .await;
        format!("; {note}")
    } else {
        String::new()
    };
    report.summary = format!(
        "{} metadata object(s) under {location} deleted, {} volume(s) removed{}{nfs_note}",
        report.metadata_objects_deleted,
        volumes.len(),
        if coalesced {
            " (volume data already coalesced away by retention)"
        } else {
            ""
        }
    );
    Ok(RetentionStep::Done(report))
}

/// Deletes `<location>/_metadata/` on an S3 target (`commit.json` first) and returns how many
/// objects were deleted and the volume directories present under the location. A target that
/// cannot be reached is an error (retried).
async fn delete_s3_metadata(
    ctx: &Context,
    target: &Target,
    location: &str,
) -> Result<(usize, Vec<String>)> {
    let probe = match target_controller::s3_probe_inputs(target, ctx).await? {
        Ok(p) => p,
        Err(f) => return Err(Error::TargetData(format!("{}: {}", f.reason, f.message))),
    };
    let handle = tokio::runtime::Handle::current();
    let prefix = format!("{location}/");
    let outcome = tokio::task::spawn_blocking(move || {
        target_controller::with_store(
            &probe,
            handle,
            |store| -> std::result::Result<(usize, Vec<String>), String> {
                let keys = store.list(&prefix).map_err(|e| e.to_string())?;
                let metadata = format!("{prefix}_metadata/");
                let commit = format!("{metadata}commit.json");
                let mut deleted = 0;
                if keys.contains(&commit) {
                    store.delete(&commit).map_err(|e| e.to_string())?;
                    deleted += 1;
                }
                for key in keys
                    .iter()
                    .filter(|k| k.starts_with(&metadata) && **k != commit)
                {
                    store.delete(key).map_err(|e| e.to_string())?;
                    deleted += 1;
                }
                let volumes: BTreeSet<String> = keys
                    .iter()
                    .filter(|k| !k.starts_with(&metadata))
                    .filter_map(|k| k.strip_prefix(&prefix)?.split_once('/'))
                    .map(|(v, _)| v.to_string())
                    .filter(|v| valid_volume(v))
                    .collect();
                Ok((deleted, volumes.into_iter().collect()))
            },
        )
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?;
    match outcome {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(message)) => Err(Error::TargetData(message)),
        Err(f) => Err(Error::TargetData(format!("{}: {}", f.reason, f.message))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// The control plane's image has no /usr/share/zoneinfo: the schedule time zones retention
    /// counts days in must come from the database compiled into the binary.
    #[test]
    fn schedule_time_zones_resolve_from_the_compiled_in_database() {
        let db = jiff::tz::TimeZoneDatabase::bundled();
        for zone in ["America/New_York", "Europe/Berlin", "Asia/Kolkata", "UTC"] {
            assert!(
                db.get(zone).is_ok(),
                "{zone} is not in the bundled database"
            );
        }
    }

    #[test]
    fn datamover_lines_are_parsed() {
        let text = r#"{"event":"coalesce","coalesceInfo":{"state":"CommitStarted"}}
{"event":"coalesce","coalesceInfo":{"state":"CommitCompleted"}}
{"event":"coalesce","coalesceInfo":{"state":"Qcow2MovementStarted"}}
{"event":"coalesce","coalesceInfo":{"state":"Qcow2MovementFailed"}}
{"event":"result","ok":false,"error":"failed to delete x: 500"}"#;
        assert_eq!(
            parse_datamover_lines(text),
            (
                Some("failed to delete x: 500".into()),
                Some(CoalesceState::Qcow2MovementFailed)
            )
        );
        assert_eq!(parse_datamover_lines("not json\n"), (None, None));
    }
}
