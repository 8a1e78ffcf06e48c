//! `tvk-control-plane create-backup`: what a plan's CronJob runs. It creates one Backup of the
//! BackupPlan (or one ClusterBackup of the ClusterBackupPlan), of the scheduled type — except that an incremental becomes a full when the plan has
//! no Available backup to build on, or when `maxIncrBackupsPerFullBackup` incrementals already
//! follow the last full ([`decide_type`]).
//!
//! The Backup's name is derived from the plan and the scheduled minute, so a retried CronJob
//! pod finds its Backup already created (409) and succeeds without a second one.

use kube::{
    Client, Resource, ResourceExt,
    api::{ListParams, PostParams},
};
use tvk_api::{
    backup::{BackupState, BackupType},
    backup_plan::{BackupPlan, PlanState},
};

use crate::{
    error::{Error, Result, is_conflict},
    kinds::{BackupKind, PlanKind},
};

/// Label on every Backup created by a schedule: the plan's name.
pub const LABEL_PLAN: &str = "triliovault.trilio.io/backupplan";

/// The type the Backup gets (pure). `history` is the plan's Backups in any order.
pub fn decide_type<K: BackupKind>(
    requested: BackupType,
    history: &[K],
    max_incr: Option<i64>,
) -> BackupType {
    if requested != BackupType::Incremental {
        return requested;
    }
    let mut sorted: Vec<&K> = history.iter().collect();
    sorted.sort_by_key(|b| b.meta().creation_timestamp.as_ref().map(|t| t.0));
    let state = |b: &K| b.backup_status().and_then(|s| s.status);
    let taken = |b: &K| {
        b.backup_status()
            .and_then(|s| s.type_)
            .unwrap_or(b.backup_type())
    };
    // Only Available backups form the chain.
    let chain: Vec<&K> = sorted
        .into_iter()
        .filter(|b| state(b) == Some(BackupState::Available))
        .collect();
    let Some(last_full) = chain.iter().rposition(|b| taken(b) == BackupType::Full) else {
        return BackupType::Full;
    };
    let since_full = chain.len() - last_full - 1;
    match max_incr {
        Some(max) if i64::try_from(since_full).unwrap_or(i64::MAX) >= max => BackupType::Full,
        _ => BackupType::Incremental,
    }
}

/// The Backup's name: `<plan>-<full|incr>-<YYYYMMDDhhmm>` (≤ 63 characters).
pub fn backup_name(plan: &str, type_: BackupType, now: jiff::Timestamp) -> String {
    let kind = match type_ {
        BackupType::Full => "full",
        _ => "incr",
    };
    let stamp = now.strftime("%Y%m%d%H%M").to_string();
    let max_plan = 63 - kind.len() - stamp.len() - 2;
    let plan: String = plan.chars().take(max_plan).collect();
    format!("{}-{kind}-{stamp}", plan.trim_end_matches('-'))
}

/// Creates the Backup of a BackupPlan; returns its name.
pub async fn create_backup(
    client: Client,
    namespace: &str,
    plan_name: &str,
    requested: BackupType,
    now: jiff::Timestamp,
) -> Result<String> {
    create_backup_of::<BackupPlan>(client, namespace, plan_name, requested, now).await
}

/// Creates the Backup (BackupPlan) or ClusterBackup (ClusterBackupPlan; `namespace` unused);
/// returns its name.
pub async fn create_backup_of<P: PlanKind>(
    client: Client,
    namespace: &str,
    plan_name: &str,
    requested: BackupType,
    now: jiff::Timestamp,
) -> Result<String> {
    let what = if namespace.is_empty() || P::KIND != "BackupPlan" {
        format!("{} {plan_name}", P::KIND)
    } else {
        format!("{} {namespace}/{plan_name}", P::KIND)
    };
    let plan = P::api(client.clone(), namespace)
        .get_opt(plan_name)
        .await
        .map_err(|e| Error::kube(format!("read {what}"), e))?
        .ok_or_else(|| {
            Error::InvalidSpec(format!(
                "{what} does not exist; its CronJob is left over and is removed by the control plane"
            ))
        })?;
    if plan.plan_status().and_then(|s| s.status) != Some(PlanState::Available) {
        return Err(Error::InvalidSpec(format!(
            "{what} is not Available; see its status.condition for why (nothing created)"
        )));
    }
    let kind = <P::Backup as BackupKind>::KIND;
    let backups = <P::Backup as BackupKind>::api(client, namespace);
    let key = (plan.namespace().unwrap_or_default(), plan.name_any());
    let history: Vec<P::Backup> = backups
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube(format!("list the {kind}s of {what}"), e))?
        .items
        .into_iter()
        .filter(|b| b.plan_key() == key)
        .collect();
    let type_ = decide_type(
        requested,
        &history,
        plan.backup_config().max_incr_backups_per_full_backup,
    );
    let name = backup_name(plan_name, type_, now);
    let mut backup = <P::Backup as BackupKind>::new_for(&plan, &name, type_);
    backup
        .meta_mut()
        .labels
        .get_or_insert_with(Default::default)
        .insert(LABEL_PLAN.to_string(), plan.name_any());
    match backups.create(&PostParams::default(), &backup).await {
        Ok(_) => Ok(name),
        // A retried pod of the same schedule run: the backup exists already.
        Err(e) if is_conflict(&e) => Ok(name),
        Err(e) => Err(Error::kube(format!("create {kind} {name}"), e)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;
    use tvk_api::backup::Backup;

    fn backup(name: &str, at: &str, taken: &str, state: &str) -> Backup {
        serde_json::from_value(json!({
            "apiVersion": "triliovault.trilio.io/v1", "kind": "Backup",
            "metadata": {"name": name, "namespace": "app", "creationTimestamp": at},
            "spec": {"type": taken, "backupPlan": {"name": "plan"}},
            "status": {"status": state, "type": taken},
        }))
        .unwrap()
    }

    #[test]
    fn incremental_becomes_full_without_a_base_or_after_max_incrementals() {
        use BackupType::{Full, Incremental};
        assert_eq!(
            decide_type::<Backup>(Incremental, &[], Some(3)),
            Full,
            "no chain yet"
        );
        let failed_full = [backup("a", "2026-01-01T00:00:00Z", "Full", "Failed")];
        assert_eq!(
            decide_type(Incremental, &failed_full, None),
            Full,
            "a failed full is no base"
        );
        let mut h = vec![backup("a", "2026-01-01T00:00:00Z", "Full", "Available")];
        assert_eq!(decide_type(Incremental, &h, Some(2)), Incremental);
        h.push(backup(
            "b",
            "2026-01-02T00:00:00Z",
            "Incremental",
            "Available",
        ));
        h.push(backup("x", "2026-01-02T12:00:00Z", "Incremental", "Failed"));
        assert_eq!(
            decide_type(Incremental, &h, Some(2)),
            Incremental,
            "failed ones do not count"
        );
        h.push(backup(
            "c",
            "2026-01-03T00:00:00Z",
            "Incremental",
            "Available",
        ));
        assert_eq!(
            decide_type(Incremental, &h, Some(2)),
            Full,
            "two incrementals follow the full"
        );
        assert_eq!(
            decide_type(Incremental, &h, None),
            Incremental,
            "no maximum"
        );
        assert_eq!(decide_type(Full, &h, Some(2)), Full);
    }

    #[test]
    fn names_are_per_minute_and_bounded() {
        let t: jiff::Timestamp = "2026-03-04T05:06:59Z".parse().unwrap();
        assert_eq!(
            backup_name("plan", BackupType::Full, t),
            "plan-full-202603040506"
        );
        let long = "p".repeat(80);
        let name = backup_name(&long, BackupType::Incremental, t);
        assert!(
            name.len() <= 63 && name.ends_with("-incr-202603040506"),
            "{name}"
        );
    }
}
