//! The RestoreCleanup phase: the restore's Jobs and temporary objects always go; after a failure
//! with `actionFlags.cleanupOnFailure`, also exactly what the restore created — the objects the
//! metaprocessor listed in `created[]` that still carry this restore's UID label (an object of
//! the same name that is not labelled, e.g. one that existed before, is left alone) and the
//! claims and volumes the DataRestore phase labelled.

use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams},
    discovery::{Scope, pinned_kind},
};
use serde_json::json;
use tvk_api::restore_plan::RestorePlan;

use super::{
    Ids, LABEL_RESTORE_UID,
    data::{ANNOTATION_ORIGINAL_RECLAIM, LABEL_RESTORE_ROLE, ROLE_FINAL, ROLE_STAGING},
};
use crate::{
    context::Context,
    error::{Error, Result, is_not_found},
};

pub(super) fn gvk_of(api_version: &str, kind: &str) -> GroupVersionKind {
    match api_version.split_once('/') {
        Some((group, version)) => GroupVersionKind::gvk(group, version, kind),
        None => GroupVersionKind::gvk("", api_version, kind),
    }
}

async fn delete_ignoring_missing<K>(api: &Api<K>, name: &str, what: &str) -> Result<bool>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(Error::kube(format!("delete {what} {name}"), e)),
    }
}

/// Deletes what the restore must not leave behind; returns a summary for the condition.
pub async fn run(
    ctx: &Context,
    ids: &Ids,
    plan: Option<&RestorePlan>,
    cleanup_on_failure: bool,
    failed: bool,
) -> Result<String> {
    let mut notes = Vec::new();
    let ours = format!("{LABEL_RESTORE_UID}={}", ids.uid);
    if failed && cleanup_on_failure {
        let (deleted, kept) = match plan {
            Some(plan) => delete_created(ctx, ids, plan).await?,
            None => (0, Vec::new()),
        };
        // Final claims in the destination namespaces, then their volumes.
        let mut namespaces: Vec<String> = plan
            .map(|p| {
                p.volumes
                    .iter()
                    .map(|v| v.namespace.clone())
                    .chain(p.namespaces.iter().map(|n| n.name.clone()))
                    .collect()
            })
            .unwrap_or_default();
        namespaces.extend(ids.ns.clone());
        namespaces.sort();
        namespaces.dedup();
        let mut claims = 0;
        for ns in &namespaces {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
            let list = api
                .list(
                    &ListParams::default()
                        .labels(&format!("{ours},{LABEL_RESTORE_ROLE}={ROLE_FINAL}")),
                )
                .await
                .map_err(|e| Error::kube(format!("list the restore's claims in {ns}"), e))?;
            for pvc in list.items {
                if delete_ignoring_missing(&api, &pvc.name_any(), "PersistentVolumeClaim").await? {
                    claims += 1;
                }
            }
        }
        let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
        let finals = pvs
            .list(
                &ListParams::default().labels(&format!("{ours},{LABEL_RESTORE_ROLE}={ROLE_FINAL}")),
            )
            .await
            .map_err(|e| Error::kube("list the restore's volumes", e))?;
        for pv in finals.items {
            delete_ignoring_missing(&pvs, &pv.name_any(), "PersistentVolume").await?;
        }
        // Namespaces this restore created (planned as missing and labelled by it), last.
        let mut created_namespaces = 0;
        if let Some(plan) = plan {
            let api: Api<Namespace> = Api::all(ctx.client.clone());
            let labelled = api
                .list(&ListParams::default().labels(&ours))
                .await
                .map_err(|e| Error::kube("list the restore's namespaces", e))?;
            for ns in labelled.items {
                let name = ns.name_any();
                if plan.namespaces.iter().any(|n| !n.exists && n.name == name)
                    && delete_ignoring_missing(&api, &name, "Namespace").await?
                {
                    created_namespaces += 1;
                }
            }
        }
        notes.push(format!(
            "cleanupOnFailure: {deleted} object(s), {claims} claim(s) and {created_namespaces} namespace(s) created by this restore deleted"
        ));
        if !kept.is_empty() {
            notes.push(format!(
                "left alone (not labelled by this restore): {}",
                kept.join(", ")
            ));
        }
    }
    // Staging claims and their volumes: the storage goes back to its original reclaim policy
    // first, so deleting the volume frees it.
    let staging_claims: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &ids.job_ns);
    let list = staging_claims
        .list(&ListParams::default().labels(&format!("{ours},{LABEL_RESTORE_ROLE}={ROLE_STAGING}")))
        .await
        .map_err(|e| Error::kube("list the restore's staging claims", e))?;
    for pvc in list.items {
        delete_ignoring_missing(&staging_claims, &pvc.name_any(), "staging claim").await?;
    }
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let staging = pvs
        .list(&ListParams::default().labels(&format!("{ours},{LABEL_RESTORE_ROLE}={ROLE_STAGING}")))
        .await
        .map_err(|e| Error::kube("list the restore's staging volumes", e))?;
    for pv in staging.items {
        let name = pv.name_any();
        let policy = pv
            .annotations()
            .get(ANNOTATION_ORIGINAL_RECLAIM)
            .cloned()
            .unwrap_or_else(|| "Delete".into());
        match pvs
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"persistentVolumeReclaimPolicy": policy}})),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => continue,
            Err(e) => {
                return Err(Error::kube(
                    format!("restore the reclaim policy of {name}"),
                    e,
                ));
            }
        }
        delete_ignoring_missing(&pvs, &name, "staging PersistentVolume").await?;
    }
    // Jobs last: while one exists, a retried reconcile does not start it again.
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ids.job_ns);
    let list = jobs
        .list(&ListParams::default().labels(&ours))
        .await
        .map_err(|e| Error::kube("list the restore's Jobs", e))?;
    for job in list.items {
        delete_ignoring_missing(&jobs, &job.name_any(), "Job").await?;
    }
    notes.insert(
        0,
        "the restore's Jobs and temporary claims are deleted".into(),
    );
    Ok(notes.join("; "))
}

/// Deletes `created[]` in reverse order (workloads before what they use), only objects that
/// still carry this restore's UID label. Returns (deleted, left alone).
async fn delete_created(
    ctx: &Context,
    ids: &Ids,
    plan: &RestorePlan,
) -> Result<(usize, Vec<String>)> {
    let mut deleted = 0;
    let mut kept = Vec::new();
    for created in plan.created.iter().rev() {
        let gvk = gvk_of(&created.api_version, &created.kind);
        let display = match &created.namespace {
            Some(ns) => format!("{} {ns}/{}", created.kind, created.name),
            None => format!("{} {}", created.kind, created.name),
        };
        let (resource, caps) = match pinned_kind(&ctx.client, &gvk).await {
            Ok(found) => found,
            // The kind is gone (its CRD deleted): so are its objects.
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => return Err(Error::kube(format!("discover the API of {display}"), e)),
        };
        let api: Api<DynamicObject> = match (&caps.scope, &created.namespace) {
            (Scope::Namespaced, Some(ns)) => {
                Api::namespaced_with(ctx.client.clone(), ns, &resource)
            }
            (Scope::Namespaced, None) => {
                kept.push(format!("{display} (namespaced kind without a namespace)"));
                continue;
            }
            (Scope::Cluster, _) => Api::all_with(ctx.client.clone(), &resource),
        };
        let Some(obj) = api
            .get_opt(&created.name)
            .await
            .map_err(|e| Error::kube(format!("read {display}"), e))?
        else {
            continue;
        };
        if obj.labels().get(LABEL_RESTORE_UID) != Some(&ids.uid) {
            kept.push(display);
            continue;
        }
        if delete_ignoring_missing(&api, &created.name, &created.kind).await? {
            deleted += 1;
        }
    }
    Ok((deleted, kept))
}
