//! Source type `BackupPlan` (Restore) and `ClusterBackupPlan` (ClusterRestore): the plan's latest
//! Available backup (latest by completion time, else creation time).
//!
//! The choice is made once: until the Validation Job has written the restore plan, every
//! reconcile resolves the latest backup again (the Job it started keeps the location it was
//! given — its name does not depend on the location); once `status.restoreApplication` exists,
//! its `source` (the committed backup the plan was computed from) names the backup, and every
//! later phase restores that one even if a newer backup completes meanwhile.

use kube::{Api, ResourceExt, api::ListParams};
use tvk_api::{backup::BackupState, restore::RestoreStatus, restore_plan::RestorePlan};

use super::SourceRef;
use crate::{
    context::Context,
    error::{Error, Result},
    kinds::{BackupKind, PlanKind},
};

/// The backup the restore plan was computed from: (namespace, name) — namespace `None` for a
/// ClusterBackup. `None` while no plan exists.
pub fn pinned(status: Option<&RestoreStatus>) -> Option<(Option<String>, String)> {
    let plan = RestorePlan::from_status_value(status?.restore_application.as_ref())
        .ok()
        .flatten()?;
    let name = plan.source.backup_name.filter(|n| !n.is_empty())?;
    Some((plan.source.backup_namespace.filter(|n| !n.is_empty()), name))
}

/// A plan source seen as the Backup it becomes once Validation pins one (pure): what the
/// checks that only ask "is the source a Backup?" (protectRestoredApp) must see, since
/// AddProtection runs after the pin and copies that Backup's plan.
pub fn as_backup(source: SourceRef) -> SourceRef {
    match source {
        SourceRef::BackupPlan { namespace, name } => SourceRef::Backup { namespace, name },
        other => other,
    }
}

/// The latest Available backup of plan `(plan_ns, plan_name)` among `backups` (pure; `plan_ns`
/// empty for a ClusterBackupPlan). Ties go to the greater name, so the choice is stable.
pub fn pick_latest<'a, K: BackupKind>(
    backups: &'a [K],
    plan_ns: &str,
    plan_name: &str,
) -> Option<&'a K> {
    backups
        .iter()
        .filter(|b| b.plan_key() == (plan_ns.to_string(), plan_name.to_string()))
        .filter(|b| b.backup_status().and_then(|s| s.status) == Some(BackupState::Available))
        .max_by(|a, b| {
            crate::retention::taken_at(*a)
                .cmp(&crate::retention::taken_at(*b))
                .then_with(|| a.name_any().cmp(&b.name_any()))
        })
}

/// The name of the latest Available backup of the plan, or why there is none (a message for
/// the user). `plan_ns` is empty for a ClusterBackupPlan.
pub async fn latest_backup<K: BackupKind>(
    ctx: &Context,
    plan_ns: &str,
    plan_name: &str,
    field: &str,
) -> Result<std::result::Result<String, String>> {
    let what = if plan_ns.is_empty() {
        format!("ClusterBackupPlan {plan_name}")
    } else {
        format!("BackupPlan {plan_ns}/{plan_name}")
    };
    if !plan_exists::<K>(ctx, plan_ns, plan_name).await? {
        return Ok(Err(format!("{what} does not exist; correct {field}")));
    }
    let list = K::api(ctx.client.clone(), plan_ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube(format!("list the backups of {what}"), e))?;
    Ok(match pick_latest(&list.items, plan_ns, plan_name) {
        Some(b) => Ok(b.name_any()),
        None => Err(format!(
            "{what} has no Available {}; wait for one to complete, or restore a specific backup (source type {} or Location)",
            K::KIND,
            K::KIND
        )),
    })
}

async fn plan_exists<K: BackupKind>(ctx: &Context, plan_ns: &str, plan_name: &str) -> Result<bool> {
    let api: Api<K::Plan> = K::Plan::api(ctx.client.clone(), plan_ns);
    Ok(api
        .get_opt(plan_name)
        .await
        .map_err(|e| Error::kube(format!("read plan {plan_name}"), e))?
        .is_some())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use serde_json::json;
    use tvk_api::backup::Backup;

    use super::*;

    fn backup(name: &str, plan: &str, status: &str, done: Option<&str>, created: &str) -> Backup {
        serde_json::from_value(json!({
            "apiVersion": "triliovault.trilio.io/v1", "kind": "Backup",
            "metadata": {"name": name, "namespace": "app", "creationTimestamp": created},
            "spec": {"type": "Full", "backupPlan": {"name": plan}},
            "status": {"status": status, "completionTimestamp": done}
        }))
        .unwrap()
    }

    #[test]
    fn the_latest_available_backup_of_the_plan_is_chosen() {
        let backups = [
            backup(
                "old",
                "p",
                "Available",
                Some("2026-01-01T00:00:00Z"),
                "2026-01-01T00:00:00Z",
            ),
            // Created earlier but completed later.
            backup(
                "slow",
                "p",
                "Available",
                Some("2026-01-03T00:00:00Z"),
                "2025-12-31T00:00:00Z",
            ),
            backup(
                "failed",
                "p",
                "Failed",
                Some("2026-01-04T00:00:00Z"),
                "2026-01-04T00:00:00Z",
            ),
            backup("running", "p", "InProgress", None, "2026-01-05T00:00:00Z"),
            backup(
                "other-plan",
                "q",
                "Available",
                Some("2026-01-06T00:00:00Z"),
                "2026-01-06T00:00:00Z",
            ),
        ];
        assert_eq!(
            pick_latest(&backups, "app", "p").map(ResourceExt::name_any),
            Some("slow".to_string())
        );
        assert!(
            pick_latest(&backups, "other", "p").is_none(),
            "plan namespace counts"
        );
        assert!(pick_latest(&backups[2..4], "app", "p").is_none());
    }

    #[test]
    fn the_plan_pins_the_backup() {
        let status: RestoreStatus = serde_json::from_value(json!({"restoreApplication": {
            "source": {"location": "p/b", "backupName": "bkp", "backupNamespace": "app", "kind": "Backup"},
            "objects": [], "counts": {"create": 0, "skip": 0, "patch": 0, "exclude": 0}}}))
        .unwrap();
        assert_eq!(
            pinned(Some(&status)),
            Some((Some("app".into()), "bkp".into()))
        );
        assert_eq!(pinned(Some(&RestoreStatus::default())), None);
        assert_eq!(pinned(None), None);
    }
}
