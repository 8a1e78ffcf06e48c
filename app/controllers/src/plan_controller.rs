//! The BackupPlan and ClusterBackupPlan controller: one pipeline for both kinds
//! ([`PlanKind`]).
//!
//! fetch (Target, retention and schedule Policies, Hooks, encryption Secret) → validate (pure:
//! [`validate`]) → build the CronJobs of the schedule policies (pure: [`cron_jobs`]) → apply
//! them, delete the plan's CronJobs no longer built → status (`Available` / `Unavailable` with
//! every reason, `fullBackupCrons`, `incrementalCrons`, `pauseSchedule`, `stats.backupSummary`),
//! written only when it changed.
//!
//! CronJobs run `tvk-control-plane create-backup` (the control plane's image, its service
//! account) in the install namespace, where that service account lives; they carry the plan's
//! UID label and are deleted by the plan's finalizer (an owner reference cannot cross
//! namespaces). They are suspended while the plan's or the TVM's `pauseSchedule` is set, use
//! the TVM's `schedulePolicyTimezone` as CronJob `timeZone`, and never overlap
//! (`concurrencyPolicy: Forbid`). `maxIncrBackupsPerFullBackup` is applied when the backup is
//! created ([`crate::create_backup`]).
//!
//! A ClusterBackupPlan's references default to the install namespace; every component's Hooks
//! are checked (default namespace: the component's); every `backupComponents[]` namespace must
//! exist; `status.backupPlans` lists the namespaces the plan covers now
//! ([`cluster_coverage`]: components and `namespaceSelector[]` matches), one entry per
//! namespace `{namespace, selectedBy[], hooks}`.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use k8s_openapi::api::{
    batch::v1::CronJob,
    core::v1::{Namespace, Secret},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    runtime::{
        controller::Action,
        finalizer::{Event as FinalizerEvent, finalizer},
    },
};
use serde_json::{Value, json};
use tvk_api::{
    backup::BackupState,
    backup_plan::{BackupPlanStatus, ClusterBackupPlanSpec, PlanState},
    common::ObjectReference,
    hook::Hook,
    policy::{Policy, PolicyType},
    target::Target,
};

use crate::{
    context::{CONTROLLER_NAME, Context},
    error::{Error, Result},
    kinds::{BackupKind, PlanKind},
    naming::object_name,
    status_patch::{apply_status, now_rfc3339},
    target_access::ref_namespace,
    target_controller,
};

/// Field manager of the plan controller.
pub const FIELD_MANAGER: &str = "tvk-control-plane-backupplan";
/// Finalizer removing a plan's CronJobs.
pub const FINALIZER: &str = "triliovault.trilio.io/backupplan-schedules";
/// Label of every object made for a plan: its UID.
pub const LABEL_PLAN_UID: &str = "triliovault.trilio.io/backupplan-uid";
/// Label: managed by the control plane.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// Everything the plan refers to, as found in the cluster (`None` = missing).
#[derive(Debug, Clone, Default)]
pub struct PlanRefs {
    /// The backup Target.
    pub target: Option<Target>,
    /// The retention Policy, when referenced.
    pub retention: Option<Option<Policy>>,
    /// The full-backup schedule Policy, when referenced.
    pub full_schedule: Option<Option<Policy>>,
    /// The incremental schedule Policy, when referenced.
    pub incremental_schedule: Option<Option<Policy>>,
    /// Each hook of hookConfig: (namespace/name, found).
    pub hooks: Vec<(String, bool)>,
    /// The encryption Secret, when referenced: (namespace/name, found).
    pub encryption_secret: Option<(String, bool)>,
}

/// Reasons the plan cannot run; empty = valid. Pure.
pub fn validate(
    plan_ns: &str,
    plan: &tvk_api::backup_plan::BackupConfig,
    refs: &PlanRefs,
) -> Vec<String> {
    let mut reasons = Vec::new();
    let target_name = plan.target.name.clone().unwrap_or_default();
    let target_ns = ref_namespace(&plan.target, plan_ns);
    match &refs.target {
        None => reasons.push(format!(
            "Target {target_ns}/{target_name} does not exist; create it or correct backupConfig.target"
        )),
        Some(t) if !target_controller::is_available(t) => reasons.push(format!(
            "Target {target_ns}/{target_name} is not Available ({})",
            target_controller::unavailable_reason(t)
        )),
        Some(_) => {}
    }
    let policy_checks = [
        (
            "retentionPolicy",
            &plan.retention_policy,
            &refs.retention,
            PolicyType::Retention,
        ),
        (
            "schedulePolicy.fullBackupPolicy",
            &plan
                .schedule_policy
                .as_ref()
                .and_then(|s| s.full_backup_policy.clone()),
            &refs.full_schedule,
            PolicyType::Schedule,
        ),
        (
            "schedulePolicy.incrementalBackupPolicy",
            &plan
                .schedule_policy
                .as_ref()
                .and_then(|s| s.incremental_backup_policy.clone()),
            &refs.incremental_schedule,
            PolicyType::Schedule,
        ),
    ];
    for (field, reference, found, expected) in policy_checks {
        let Some(reference) = reference else { continue };
        let name = format!(
            "{}/{}",
            ref_namespace(reference, plan_ns),
            reference.name.clone().unwrap_or_default()
        );
        match found {
            Some(Some(policy)) if policy.spec.type_ != expected => reasons.push(format!(
                "backupConfig.{field} Policy {name} is of type {}, not {}",
                policy.spec.type_.as_str(),
                expected.as_str()
            )),
            Some(Some(_)) => {}
            _ => reasons.push(format!("backupConfig.{field} Policy {name} does not exist")),
        }
    }
    for (hook, found) in &refs.hooks {
        if !found {
            reasons.push(format!(
                "hookConfig names Hook {hook}, which does not exist"
            ));
        }
    }
    if let Some((secret, false)) = &refs.encryption_secret {
        reasons.push(format!(
            "encryption.encryptionSecret {secret} does not exist; create it or remove encryption"
        ));
    }
    reasons
}

/// Kind of backup a CronJob creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleKind {
    /// From `fullBackupPolicy`.
    Full,
    /// From `incrementalBackupPolicy`.
    Incremental,
}

impl ScheduleKind {
    /// `Full` / `Incremental` (the Backup `spec.type`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "Full",
            Self::Incremental => "Incremental",
        }
    }
}

/// What the plan's CronJobs are made from.
#[derive(Debug, Clone)]
pub struct CronInputs<'a> {
    /// `BackupPlan` or `ClusterBackupPlan`.
    pub kind: &'a str,
    /// Plan namespace (empty for a ClusterBackupPlan).
    pub namespace: &'a str,
    /// Plan name.
    pub name: &'a str,
    /// Plan UID.
    pub uid: &'a str,
    /// Suspend every CronJob (a pause flag is set).
    pub suspend: bool,
    /// (kind, cron expressions).
    pub schedules: Vec<(ScheduleKind, Vec<String>)>,
}

/// The plan's CronJobs (pure): one per cron expression, in the install namespace.
pub fn cron_jobs(inputs: &CronInputs<'_>, config: &crate::config::Config) -> Result<Vec<CronJob>> {
    let mut out = Vec::new();
    for (kind, crons) in &inputs.schedules {
        for (i, cron) in crons.iter().enumerate() {
            let name = object_name(
                &format!("{}-cron", kind.as_str()),
                inputs.uid,
                &format!("{i}/{cron}"),
            );
            let mut args = vec![
                "create-backup".to_string(),
                "--kind".into(),
                inputs.kind.to_string(),
                "--name".into(),
                inputs.name.to_string(),
                "--type".into(),
                kind.as_str().to_string(),
            ];
            if !inputs.namespace.is_empty() {
                args.extend(["--namespace".into(), inputs.namespace.to_string()]);
            }
            let pull_secrets: Vec<Value> = config
                .images
                .pull_secret_names()
                .into_iter()
                .map(|n| json!({"name": n}))
                .collect();
            let value = json!({
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": {
                    "name": name,
                    "namespace": config.install_namespace,
                    "labels": {
                        LABEL_MANAGED_BY: CONTROLLER_NAME,
                        LABEL_PLAN_UID: inputs.uid,
                        "triliovault.trilio.io/backup-type": kind.as_str(),
                    },
                    "annotations": {
                        "triliovault.trilio.io/backupplan": format!("{}/{}", inputs.namespace, inputs.name),
                    },
                },
                "spec": {
                    "schedule": cron,
                    "timeZone": config.schedule_policy_timezone,
                    "suspend": inputs.suspend,
                    "concurrencyPolicy": "Forbid",
                    "startingDeadlineSeconds": 300,
                    "successfulJobsHistoryLimit": 1,
                    "failedJobsHistoryLimit": 3,
                    "jobTemplate": {"spec": {
                        "backoffLimit": 3,
                        "ttlSecondsAfterFinished": 3600,
                        "template": {
                            "metadata": {"labels": {LABEL_MANAGED_BY: CONTROLLER_NAME, LABEL_PLAN_UID: inputs.uid}},
                            "spec": {
                                "serviceAccountName": CONTROLLER_NAME,
                                "restartPolicy": "OnFailure",
                                "imagePullSecrets": pull_secrets,
                                "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                                "containers": [{
                                    "name": "create-backup",
                                    "image": config.images.control_plane(),
                                    "imagePullPolicy": config.images.pull_policy.clone().unwrap_or_else(|| "IfNotPresent".into()),
                                    "args": args,
                                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}},
                                    "securityContext": {
                                        "allowPrivilegeEscalation": false,
                                        "readOnlyRootFilesystem": true,
                                        "runAsNonRoot": true,
                                        "capabilities": {"drop": ["ALL"]},
                                    },
                                }],
                            },
                        },
                    }},
                },
            });
            out.push(
                serde_json::from_value(value).map_err(|source| Error::Serde {
                    what: "a CronJob",
                    source,
                })?,
            );
        }
    }
    Ok(out)
}

/// Cron expressions of a schedule Policy, each checked (5 fields, croner's parser).
pub fn policy_crons(policy: &Policy) -> std::result::Result<Vec<String>, String> {
    let crons = policy
        .spec
        .schedule_config
        .as_ref()
        .map(|c| c.schedule.clone())
        .unwrap_or_default();
    if crons.is_empty() {
        return Err(format!(
            "schedule Policy {} has no scheduleConfig.schedule",
            policy.name_any()
        ));
    }
    for cron in &crons {
        if cron.split_whitespace().count() != 5
            || croner::parser::CronParser::builder()
                .build()
                .parse(cron)
                .is_err()
        {
            return Err(format!(
                "schedule Policy {}: {cron:?} is not a 5-field cron expression",
                policy.name_any()
            ));
        }
    }
    Ok(crons)
}

/// `status.stats.backupSummary` from the plan's Backups (pure).
pub fn backup_summary<K: BackupKind>(backups: &[K]) -> Value {
    let mut sorted: Vec<&K> = backups.iter().collect();
    sorted.sort_by_key(|b| b.meta().creation_timestamp.as_ref().map(|t| t.0));
    let state = |b: &K| b.backup_status().and_then(|s| s.status);
    let reference =
        |b: &K| json!({"name": b.name_any(), "namespace": b.namespace(), "uid": b.uid()});
    let latest = sorted.last().map(|b| reference(b));
    let last_ok = sorted
        .iter()
        .rev()
        .find(|b| state(b) == Some(BackupState::Available))
        .map(|b| reference(b));
    let in_progress = sorted
        .iter()
        .rev()
        .find(|b| state(b).is_none_or(|s| !s.is_terminal()))
        .map(|b| reference(b));
    let count = |s: BackupState| sorted.iter().filter(|b| state(b) == Some(s)).count();
    let mut summary = serde_json::Map::new();
    summary.insert(
        "totalAvailableBackups".into(),
        json!(count(BackupState::Available)),
    );
    summary.insert(
        "totalFailedBackups".into(),
        json!(count(BackupState::Failed)),
    );
    for (key, value) in [
        ("latestBackup", latest),
        ("lastSuccessfulBackup", last_ok),
        ("inProgressBackup", in_progress),
    ] {
        if let Some(v) = value {
            summary.insert(key.into(), v);
        }
    }
    json!({"backupSummary": summary})
}

async fn get_opt<K>(api: Api<K>, name: &str, what: &str) -> Result<Option<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("read {what} {name}"), e))
}

/// Fetches everything a plan refers to. `hooks`: each Hook reference with the namespace it
/// defaults to.
pub async fn fetch_refs(
    ctx: &Context,
    plan_ns: &str,
    config: &tvk_api::backup_plan::BackupConfig,
    hooks: &[(ObjectReference, String)],
    encryption: Option<&ObjectReference>,
) -> Result<PlanRefs> {
    let client = &ctx.client;
    let mut refs = PlanRefs::default();
    let tns = ref_namespace(&config.target, plan_ns);
    refs.target = get_opt(
        Api::<Target>::namespaced(client.clone(), tns),
        &config.target.name.clone().unwrap_or_default(),
        "Target",
    )
    .await?;
    let policy = |r: &ObjectReference| {
        let api = Api::<Policy>::namespaced(client.clone(), ref_namespace(r, plan_ns));
        let name = r.name.clone().unwrap_or_default();
        async move { get_opt(api, &name, "Policy").await }
    };
    if let Some(r) = &config.retention_policy {
        refs.retention = Some(policy(r).await?);
    }
    if let Some(s) = &config.schedule_policy {
        if let Some(r) = &s.full_backup_policy {
            refs.full_schedule = Some(policy(r).await?);
        }
        if let Some(r) = &s.incremental_backup_policy {
            refs.incremental_schedule = Some(policy(r).await?);
        }
    }
    for (hook, default_ns) in hooks {
        let ns = ref_namespace(hook, default_ns);
        let name = hook.name.clone().unwrap_or_default();
        let found = get_opt(Api::<Hook>::namespaced(client.clone(), ns), &name, "Hook")
            .await?
            .is_some();
        refs.hooks.push((format!("{ns}/{name}"), found));
    }
    if let Some(secret) = encryption {
        let ns = ref_namespace(secret, plan_ns);
        let name = secret.name.clone().unwrap_or_default();
        let found = get_opt(
            Api::<Secret>::namespaced(client.clone(), ns),
            &name,
            "Secret",
        )
        .await?
        .is_some();
        refs.encryption_secret = Some((format!("{ns}/{name}"), found));
    }
    Ok(refs)
}

/// The `status.backupPlans` entries of a ClusterBackupPlan (pure): its coverage
/// ([`ClusterBackupPlanSpec::coverage`], the resolution the metamover backs up) as
/// `{namespace, selectedBy, hooks}` by namespace, and the reasons the plan cannot run.
pub fn cluster_coverage(
    spec: &ClusterBackupPlanSpec,
    namespaces: &[(String, std::collections::BTreeMap<String, String>)],
) -> (Vec<Value>, Vec<String>) {
    let coverage = spec.coverage(namespaces);
    let components = spec.backup_components.as_deref().unwrap_or_default();
    let entries = coverage
        .namespaces
        .iter()
        .map(|n| {
            let by: Vec<String> = n
                .components
                .iter()
                .map(|i| format!("backupComponents[{i}]"))
                .chain(n.selectors.iter().map(|s| format!("namespaceSelector {s}")))
                .collect();
            let hooks = n.components.iter().any(|i| {
                components
                    .get(*i)
                    .and_then(|c| c.hook_config.as_ref())
                    .is_some_and(|h| !h.hooks.is_empty())
            });
            json!({"namespace": n.namespace, "selectedBy": by, "hooks": hooks})
        })
        .collect();
    (entries, coverage.problems)
}

/// Applies `wanted` CronJobs and deletes the plan's other CronJobs.
pub async fn sync_cron_jobs(ctx: &Context, plan_uid: &str, wanted: &[CronJob]) -> Result<()> {
    let api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ctx.config.install_namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = BTreeSet::new();
    for cj in wanted {
        let name = cj.name_any();
        let existing = api
            .get_opt(&name)
            .await
            .map_err(|e| Error::kube(format!("read CronJob {name}"), e))?;
        // No write when the live object already has what we build (no hot loops).
        let unchanged = existing
            .as_ref()
            .is_some_and(|live| live.spec == cj.spec && live.labels() == cj.labels());
        if !unchanged {
            api.patch(&name, &params, &Patch::Apply(cj))
                .await
                .map_err(|e| Error::kube(format!("apply CronJob {name}"), e))?;
        }
        names.insert(name);
    }
    delete_cron_jobs_except(ctx, plan_uid, &names).await
}

/// Deletes the plan's CronJobs whose names are not in `keep`.
pub async fn delete_cron_jobs_except(
    ctx: &Context,
    plan_uid: &str,
    keep: &BTreeSet<String>,
) -> Result<()> {
    let api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ctx.config.install_namespace);
    let selector = format!("{LABEL_MANAGED_BY}={CONTROLLER_NAME},{LABEL_PLAN_UID}={plan_uid}");
    let existing = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::kube("list the plan's CronJobs", e))?;
    for cj in existing.items {
        let name = cj.name_any();
        if !keep.contains(&name) {
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if crate::error::is_not_found(&e) => {}
                Err(e) => return Err(Error::kube(format!("delete CronJob {name}"), e)),
            }
        }
    }
    Ok(())
}

/// Reconciles one BackupPlan or ClusterBackupPlan (finalizer-wrapped).
pub async fn reconcile<P: PlanKind>(plan: Arc<P>, ctx: Arc<Context>) -> Result<Action> {
    let ns = plan.namespace().unwrap_or_default();
    let api = P::api(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, plan, |event| async {
        match event {
            FinalizerEvent::Apply(plan) => apply(plan.as_ref(), &ctx).await,
            FinalizerEvent::Cleanup(plan) => {
                delete_cron_jobs_except(&ctx, &plan.uid().unwrap_or_default(), &BTreeSet::new())
                    .await?;
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.observe(
        &P::KIND.to_ascii_lowercase(),
        result.as_ref().err().map(Error::category),
    );
    result
}

async fn apply<P: PlanKind>(plan: &P, ctx: &Context) -> Result<Action> {
    let own_ns = plan.namespace().unwrap_or_default();
    let ns = plan.refs_namespace(&ctx.config.install_namespace);
    let uid = plan.uid().ok_or(Error::Incomplete {
        kind: P::KIND,
        field: "uid",
    })?;
    let hooks: Vec<(ObjectReference, String)> = plan
        .hook_scopes(&ctx.config.install_namespace)
        .into_iter()
        .flat_map(|scope| {
            scope
                .config
                .hooks
                .iter()
                .map(|t| (t.hook.clone(), scope.namespace.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let refs = fetch_refs(
        ctx,
        &ns,
        plan.backup_config(),
        &hooks,
        plan.encryption_secret(),
    )
    .await?;
    let mut reasons = validate(&ns, plan.backup_config(), &refs);
    let mut backup_plans = None;
    if let Some(spec) = plan.cluster_spec() {
        let namespaces = Api::<Namespace>::all(ctx.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::kube("list namespaces (ClusterBackupPlan coverage)", e))?
            .items
            .into_iter()
            .map(|n| (n.name_any(), n.labels().clone()))
            .collect::<Vec<_>>();
        let (entries, more) = cluster_coverage(spec, &namespaces);
        if entries.is_empty() && more.is_empty() {
            reasons.push(
                "the plan covers no namespace: no backupComponents[] namespace exists and no namespace matches namespaceSelector[]; create or label a namespace".into(),
            );
        }
        reasons.extend(more);
        backup_plans = Some(entries);
    }
    let mut schedules = Vec::new();
    for (kind, policy) in [
        (ScheduleKind::Full, &refs.full_schedule),
        (ScheduleKind::Incremental, &refs.incremental_schedule),
    ] {
        if let Some(Some(p)) = policy
            && p.spec.type_ == PolicyType::Schedule
        {
            match policy_crons(p) {
                Ok(crons) => schedules.push((kind, crons)),
                Err(reason) => reasons.push(reason),
            }
        }
    }
    let plan_paused = plan.paused();
    let suspend = plan_paused || ctx.config.pause_schedule || !reasons.is_empty();
    let inputs = CronInputs {
        kind: P::KIND,
        namespace: &own_ns,
        name: &plan.name_any(),
        uid: &uid,
        suspend,
        schedules: schedules.clone(),
    };
    let wanted = cron_jobs(&inputs, &ctx.config)?;
    sync_cron_jobs(ctx, &uid, &wanted).await?;
    let key = (own_ns.clone(), plan.name_any());
    let mine: Vec<P::Backup> = <P::Backup as BackupKind>::api(ctx.client.clone(), &own_ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| {
            Error::kube(
                format!(
                    "list the {}s of {}",
                    <P::Backup as BackupKind>::KIND,
                    plan.key()
                ),
                e,
            )
        })?
        .items
        .into_iter()
        .filter(|b| b.plan_key() == key)
        .collect();
    let old = plan.plan_status().cloned().unwrap_or_default();
    let mut status = plan_status(
        &old,
        &reasons,
        &schedules,
        plan_paused || ctx.config.pause_schedule,
        &mine,
    );
    if backup_plans.is_some() {
        status.backup_plans = backup_plans;
    }
    if status != old {
        apply_status(
            &P::api(ctx.client.clone(), &own_ns),
            plan,
            FIELD_MANAGER,
            &status,
        )
        .await?;
        if old.status != status.status {
            let available = status.status == Some(PlanState::Available);
            ctx.event(
                plan,
                !available,
                if available {
                    "PlanAvailable"
                } else {
                    "PlanUnavailable"
                },
                if reasons.is_empty() {
                    "every reference is valid".into()
                } else {
                    reasons.join("; ")
                },
            )
            .await;
        }
    }
    // Targets, policies and namespaces are not watched: look again periodically.
    Ok(Action::requeue(if reasons.is_empty() {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(60)
    }))
}

/// The plan's status (pure).
pub fn plan_status(
    old: &BackupPlanStatus,
    reasons: &[String],
    schedules: &[(ScheduleKind, Vec<String>)],
    paused: bool,
    backups: &[impl BackupKind],
) -> BackupPlanStatus {
    let mut status = old.clone();
    let now = now_rfc3339();
    status.status = Some(if reasons.is_empty() {
        PlanState::Available
    } else {
        PlanState::Unavailable
    });
    let mut conditions = status.condition.take().unwrap_or_default();
    let (phase_status, reason) = if reasons.is_empty() {
        (
            "Completed".to_string(),
            "every reference is valid".to_string(),
        )
    } else {
        ("Failed".to_string(), reasons.join("; "))
    };
    match conditions
        .iter_mut()
        .find(|c| c.phase.as_deref() == Some("Validation"))
    {
        Some(c) => {
            // The timestamp moves only when the outcome changes.
            if c.status.as_deref() != Some(phase_status.as_str())
                || c.reason.as_deref() != Some(reason.as_str())
            {
                c.status = Some(phase_status);
                c.reason = Some(reason);
                c.timestamp = Some(now);
            }
        }
        None => conditions.push(tvk_api::common::PhaseCondition {
            phase: Some("Validation".into()),
            status: Some(phase_status),
            reason: Some(reason),
            timestamp: Some(now),
        }),
    }
    status.condition = Some(conditions);
    let crons = |k: ScheduleKind| {
        schedules
            .iter()
            .filter(|(kind, _)| *kind == k)
            .flat_map(|(_, c)| c.clone())
            .collect::<Vec<_>>()
    };
    let full = crons(ScheduleKind::Full);
    let incr = crons(ScheduleKind::Incremental);
    // Empty lists rather than absent fields: a removed schedule must clear its crons whatever
    // the patch semantics (apply or merge).
    status.full_backup_crons = Some(full);
    status.incremental_crons = Some(incr);
    status.pause_schedule = Some(paused);
    let mut stats = status.stats.take().unwrap_or_else(|| json!({}));
    if let (Some(obj), Value::Object(summary)) = (stats.as_object_mut(), backup_summary(backups)) {
        obj.extend(summary);
    }
    status.stats = Some(stats);
    status
}

/// Requeue policy on errors.
pub fn error_policy<P: PlanKind>(_plan: Arc<P>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, kind = P::KIND, "backup plan reconcile failed");
    if error.is_user_error() {
        Action::requeue(Duration::from_secs(300))
    } else {
        Action::requeue(Duration::from_secs(15))
    }
}
