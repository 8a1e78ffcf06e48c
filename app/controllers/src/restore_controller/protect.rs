//! AddProtection (`actionFlags.protectRestoredApp`): once a Restore of a Backup has recreated
//! the application, a BackupPlan in the destination namespace protects it with the source
//! plan's Target, retention and schedule policies (and its component selection, resource
//! selectors, hooks, encryption and flags). The plan keeps the source plan's name; every
//! reference it copies names its namespace explicitly (the source plan's defaults), so it
//! means the same objects from the new namespace. The plan controller then validates it and
//! creates its schedules like any other plan.
//!
//! A plan of that name that already exists in the destination (e.g. a restore into the source
//! namespace) is left as it is and named in the reason. Validation refuses the flag where there
//! is no source plan to copy (a `Location` source) and for a ClusterRestore, before anything is
//! restored.

use std::collections::BTreeMap;

use kube::{
    Api, ResourceExt,
    api::{ObjectMeta, PostParams},
};
use tvk_api::{
    backup::Backup,
    backup_plan::{BackupPlan, BackupPlanSpec},
    common::ObjectReference,
};

use super::{Ids, LABEL_RESTORE, LABEL_RESTORE_UID, SourceRef};
use crate::{
    context::Context,
    error::{Error, Result, is_conflict},
    target_access::ref_namespace,
};

/// Annotation on the protecting plan naming the plan it was copied from (`ns/name`).
pub const ANNOTATION_PROTECTS_FROM: &str = "triliovault.trilio.io/copied-from-backupplan";

/// Why `actionFlags.protectRestoredApp` cannot be honoured (pure), checked at Validation.
pub fn protection_problem(kind: &str, protect: bool, source: &SourceRef) -> Option<String> {
    if !protect {
        return None;
    }
    if kind != "Restore" {
        return Some(
            "actionFlags.protectRestoredApp is not supported for a ClusterRestore by this version; unset it and create a ClusterBackupPlan for the restored namespaces".into(),
        );
    }
    match source {
        SourceRef::Backup { .. } | SourceRef::Invalid(_) => None,
        _ => Some(
            "actionFlags.protectRestoredApp copies the source backup's BackupPlan (its Target and policies), and a Location source names no plan; unset it and create a BackupPlan for the restored application, or restore from a Backup".into(),
        ),
    }
}

fn explicit(r: &ObjectReference, default_ns: &str) -> ObjectReference {
    let mut r = r.clone();
    r.namespace = Some(ref_namespace(&r, default_ns).to_string());
    r.uid = None;
    r.resource_version = None;
    r
}

/// The BackupPlan protecting the restored application in `dest_ns` (pure): the source plan's
/// spec with every reference made explicit, labelled with the restore.
pub fn protection_plan(source: &BackupPlan, dest_ns: &str, ids: &Ids) -> BackupPlan {
    let src_ns = source.namespace().unwrap_or_default();
    let mut spec: BackupPlanSpec = source.spec.clone();
    let c = &mut spec.backup_config;
    c.target = explicit(&c.target, &src_ns);
    c.retention_policy = c.retention_policy.as_ref().map(|r| explicit(r, &src_ns));
    if let Some(s) = c.schedule_policy.as_mut() {
        s.full_backup_policy = s.full_backup_policy.as_ref().map(|r| explicit(r, &src_ns));
        s.incremental_backup_policy = s
            .incremental_backup_policy
            .as_ref()
            .map(|r| explicit(r, &src_ns));
    }
    if let Some(s) = spec.snapshot_config.as_mut() {
        s.target = explicit(&s.target, &src_ns);
        s.retention_policy = s.retention_policy.as_ref().map(|r| explicit(r, &src_ns));
        if let Some(p) = s.schedule_policy.as_mut() {
            p.snapshot_policy = p.snapshot_policy.as_ref().map(|r| explicit(r, &src_ns));
        }
    }
    if let Some(h) = spec.hook_config.as_mut() {
        for hook in &mut h.hooks {
            hook.hook = explicit(&hook.hook, &src_ns);
        }
    }
    if let Some(e) = spec.encryption.as_mut() {
        e.encryption_secret = explicit(&e.encryption_secret, &src_ns);
    }
    BackupPlan {
        metadata: ObjectMeta {
            name: Some(source.name_any()),
            namespace: Some(dest_ns.to_string()),
            labels: Some(BTreeMap::from([
                (
                    LABEL_RESTORE.to_string(),
                    ids.name.chars().take(63).collect(),
                ),
                (LABEL_RESTORE_UID.to_string(), ids.uid.clone()),
            ])),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_PROTECTS_FROM.to_string(),
                format!("{src_ns}/{}", source.name_any()),
            )])),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

/// Creates (or finds) the protecting plan. `Ok(Ok(reason))` for the Completed condition,
/// `Ok(Err(reason))` when it cannot be made (the source plan is gone).
pub async fn add_protection(
    ctx: &Context,
    ids: &Ids,
    source: &SourceRef,
) -> Result<std::result::Result<String, String>> {
    let (SourceRef::Backup { namespace, name }, Some(dest_ns)) = (source, ids.ns.as_deref()) else {
        return Ok(Err(
            "actionFlags.protectRestoredApp needs a Restore of a Backup".into(),
        ));
    };
    let Some(backup) = Api::<Backup>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("read Backup {namespace}/{name}"), e))?
    else {
        return Ok(Err(format!(
            "Backup {namespace}/{name} no longer exists, so its BackupPlan is unknown: the restored application is not protected; create a BackupPlan in {dest_ns}"
        )));
    };
    let plan_ref = &backup.spec.backup_plan;
    let plan_ns = ref_namespace(plan_ref, namespace).to_string();
    let plan_name = plan_ref.name.clone().unwrap_or_default();
    let Some(source_plan) = Api::<BackupPlan>::namespaced(ctx.client.clone(), &plan_ns)
        .get_opt(&plan_name)
        .await
        .map_err(|e| Error::kube(format!("read BackupPlan {plan_ns}/{plan_name}"), e))?
    else {
        return Ok(Err(format!(
            "BackupPlan {plan_ns}/{plan_name} of Backup {namespace}/{name} no longer exists: the restored application is not protected; create a BackupPlan in {dest_ns}"
        )));
    };
    let plan = protection_plan(&source_plan, dest_ns, ids);
    let api: Api<BackupPlan> = Api::namespaced(ctx.client.clone(), dest_ns);
    match api.create(&PostParams::default(), &plan).await {
        Ok(_) => {}
        Err(e) if is_conflict(&e) => {
            let existing = api
                .get_opt(&plan_name)
                .await
                .map_err(|e| Error::kube(format!("read BackupPlan {dest_ns}/{plan_name}"), e))?;
            let ours = existing
                .as_ref()
                .is_some_and(|p| p.labels().get(LABEL_RESTORE_UID) == Some(&ids.uid));
            if !ours {
                return Ok(Ok(format!(
                    "BackupPlan {dest_ns}/{plan_name} already exists (not created by this restore) and is left as it is; check that it protects the restored application"
                )));
            }
        }
        Err(e) => {
            return Err(Error::kube(
                format!("create BackupPlan {dest_ns}/{plan_name}"),
                e,
            ));
        }
    }
    let target = &plan.spec.backup_config.target;
    Ok(Ok(format!(
        "BackupPlan {dest_ns}/{plan_name} (a copy of {plan_ns}/{plan_name}) protects the restored application, on Target {}/{}",
        target.namespace.clone().unwrap_or_default(),
        target.name.clone().unwrap_or_default()
    )))
}
