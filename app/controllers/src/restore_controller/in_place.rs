//! `cleanupConfig` (in-place restore): at the end of Validation, once the plan is made and not
//! blocked, and before DataRestore writes anything, the objects of the application that the
//! restore is about to create and that already exist in the destination are deleted, and the
//! restore waits up to `gracefulDeletionTimeoutSeconds` for them to be gone.
//!
//! What is deleted is exactly: every planned object whose action is `Create` (so after namespace
//! mapping, the restore's selectors, `excludeResources` and the ignore list — the metaprocessor
//! plans an existing object of the backup `Create` instead of blocking when cleanupConfig is on)
//! and every claim DataRestore creates (`volumes[]`), when it exists without this restore's
//! label. Namespaces and CRDs are never deleted (the metaprocessor never plans an existing one
//! `Create`, and they are filtered here as well). Objects are deleted in reverse restore order
//! (workloads before the claims, config and accounts they use) with foreground propagation, so
//! a Deployment is gone only once its pods are. A component of a ClusterRestore can turn it on
//! or off for its namespace (`restoreConfig.cleanupConfig`); cluster-scoped objects follow
//! `globalConfig` — a namespaced Restore never deletes a cluster-scoped object (the
//! metaprocessor judges those by the usual conflict rules). System namespaces and the install
//! namespace are refused.
//!
//! The wait is measured from the Validation condition's timestamp: its reason is set once, when
//! the first objects are deleted, and does not change while waiting. Every pass that deletes
//! something publishes a `CleanupDeleted` Event naming the objects.

use std::collections::BTreeMap;

use kube::{
    Api, ResourceExt,
    api::{DeleteParams, DynamicObject},
    discovery::{Scope, pinned_kind},
};
use serde_json::Value;
use tvk_api::{
    restore::{ClusterRestoreSpec, RestoreCleanupConfig, RestorePhase, RestoreSpec},
    restore_plan::{PlanAction, RestorePlan},
};

use super::{Ids, LABEL_RESTORE_UID, Progress, cleanup::gvk_of};
use crate::{
    context::Context,
    error::{Error, Result, is_not_found},
};

/// `gracefulDeletionTimeoutSeconds` when not given.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 300;

/// Namespaces an in-place restore never cleans (T4K's blocked namespaces; the install namespace
/// is added at run time).
pub const BLOCKED_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// Start of the Validation condition's reason while deleting and waiting.
pub const REASON_PREFIX: &str = "cleanupConfig: deleting the existing application before restoring";

/// Where cleanupConfig applies, with the timeout (seconds): namespaces without their own
/// setting follow `default`, cluster-scoped objects `cluster`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupScope {
    /// A Restore's `cleanupConfig`, a ClusterRestore's `globalConfig.cleanupConfig`.
    pub default: Option<u64>,
    /// A ClusterRestore's `globalConfig.cleanupConfig`; never for a Restore (a namespaced
    /// Restore deletes nothing outside its namespace).
    pub cluster: Option<u64>,
    /// A ClusterRestore's destination namespaces with their own `restoreConfig.cleanupConfig`.
    pub namespaces: BTreeMap<String, Option<u64>>,
}

fn timeout_of(c: Option<&RestoreCleanupConfig>) -> Option<u64> {
    let c = c.filter(|c| c.enabled)?;
    Some(
        c.graceful_deletion_timeout_seconds
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .unwrap_or(DEFAULT_TIMEOUT_SECONDS),
    )
}

fn config_in(v: Option<&Value>) -> Option<Option<RestoreCleanupConfig>> {
    let c = v?.get("cleanupConfig")?;
    Some(serde_json::from_value(c.clone()).ok())
}

impl CleanupScope {
    /// A Restore's: its spec's `cleanupConfig`, for the objects of its namespace only.
    pub fn of_restore(spec: &RestoreSpec) -> Self {
        Self {
            default: timeout_of(spec.cleanup_config.as_ref()),
            cluster: None,
            namespaces: BTreeMap::new(),
        }
    }

    /// A ClusterRestore's: `globalConfig.cleanupConfig`, overridden per destination namespace by
    /// a component's `restoreConfig.cleanupConfig`.
    pub fn of_cluster_restore(spec: &ClusterRestoreSpec) -> Self {
        let default = config_in(spec.global_config.as_ref()).and_then(|c| timeout_of(c.as_ref()));
        let namespaces = spec
            .components
            .iter()
            .flatten()
            .filter_map(|c| {
                let own = config_in(c.restore_config.as_ref())?;
                let dest = c
                    .restore_namespace
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| c.backup_namespace.clone());
                Some((dest, timeout_of(own.as_ref())))
            })
            .collect();
        Self {
            default,
            cluster: default,
            namespaces,
        }
    }

    /// The timeout for objects in `namespace` (None: cluster-scoped), when cleanup applies there.
    pub fn for_namespace(&self, namespace: Option<&str>) -> Option<u64> {
        let Some(ns) = namespace else {
            return self.cluster;
        };
        match self.namespaces.get(ns) {
            Some(own) => *own,
            None => self.default,
        }
    }

    /// Whether cleanup applies anywhere.
    pub fn any(&self) -> bool {
        self.default.is_some()
            || self.cluster.is_some()
            || self.namespaces.values().any(Option::is_some)
    }
}

/// One object to clean up.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Doomed {
    /// apiVersion.
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Namespace (None: cluster-scoped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

/// Annotation of a restore: the existing objects its cleanupConfig deleted (a JSON list of
/// [`Doomed`]), so a failed restore can say which of them it did not bring back.
pub const ANNOTATION_DELETED: &str = "triliovault.trilio.io/cleanup-deleted";

/// The deletions recorded in a restore's `annotations` plus `new` ones, sorted, each once
/// (pure; an unreadable annotation counts as none recorded).
pub fn recorded_deletions(annotations: &BTreeMap<String, String>, new: &[Doomed]) -> Vec<Doomed> {
    let mut all: Vec<Doomed> = annotations
        .get(ANNOTATION_DELETED)
        .and_then(|a| serde_json::from_str(a).ok())
        .unwrap_or_default();
    all.extend(new.iter().cloned());
    all.sort();
    all.dedup();
    all
}

/// Of the objects cleanupConfig deleted, those not in the cluster now (after the failed
/// restore's own cleanup): the existing application's objects the restore did not bring back.
pub async fn not_restored(ctx: &Context, deleted: &[Doomed]) -> Result<Vec<String>> {
    let mut lost = Vec::new();
    for d in deleted {
        let Some(api) = api_of(ctx, d).await? else {
            lost.push(d.to_string());
            continue;
        };
        let found = api
            .get_opt(&d.name)
            .await
            .map_err(|e| Error::kube(format!("read {d}"), e))?;
        if found.is_none_or(|o| o.metadata.deletion_timestamp.is_some()) {
            lost.push(d.to_string());
        }
    }
    Ok(lost)
}

/// The note of a failed restore that leaves objects deleted by cleanupConfig (pure).
pub fn not_restored_note(lost: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut names = lost
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if lost.len() > SHOWN {
        names.push_str(&format!(" and {} more", lost.len() - SHOWN));
    }
    format!(
        "cleanupConfig deleted {} existing object(s) of the application that were not restored ({names}); they stay deleted: restore again from the same backup to bring them back",
        lost.len()
    )
}

impl std::fmt::Display for Doomed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// What cleanupConfig may delete for `plan` (pure): the planned `Create` objects (reverse restore
/// order, Namespaces and CRDs never) then the volume claims, where the scope applies. Err: the
/// plan cannot be cleaned up safely (truncated object list, a blocked namespace).
pub fn candidates(
    plan: &RestorePlan,
    scope: &CleanupScope,
    install_namespace: &str,
) -> std::result::Result<Vec<Doomed>, String> {
    let mut out: Vec<Doomed> = plan
        .objects
        .iter()
        .rev()
        .filter(|o| o.action == PlanAction::Create)
        .filter(|o| {
            let namespace = o.kind == "Namespace" && o.api_version == "v1";
            let crd = o.kind == "CustomResourceDefinition"
                && o.api_version.starts_with("apiextensions.k8s.io/");
            !namespace && !crd
        })
        .filter(|o| scope.for_namespace(o.namespace.as_deref()).is_some())
        .map(|o| Doomed {
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
            namespace: o.namespace.clone(),
            name: o.name.clone(),
        })
        .collect();
    out.extend(
        plan.volumes
            .iter()
            .filter(|v| scope.for_namespace(Some(&v.namespace)).is_some())
            .map(|v| Doomed {
                api_version: "v1".into(),
                kind: "PersistentVolumeClaim".into(),
                namespace: Some(v.namespace.clone()),
                name: v.pvc_name.clone(),
            }),
    );
    // Beyond a truncated list the objects are unknown here: refuse rather than half-clean.
    if plan.objects_truncated {
        return Err(format!(
            "cleanupConfig needs the full list of objects the restore creates, but the plan lists only the first {} (a larger backup); narrow the restore with resourceSelector or restore without cleanupConfig",
            plan.objects.len()
        ));
    }
    let mut namespaces: Vec<&str> = out.iter().filter_map(|d| d.namespace.as_deref()).collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    if let Some(ns) = namespaces
        .into_iter()
        .find(|ns| BLOCKED_NAMESPACES.contains(ns) || *ns == install_namespace)
    {
        return Err(format!(
            "cleanupConfig refuses to delete objects in namespace {ns} (a system namespace or the namespace this control plane runs in); restore into another namespace or without cleanupConfig"
        ));
    }
    Ok(out)
}

/// Result of one cleanup pass.
#[derive(Debug, Default)]
pub struct Pass {
    /// Deleted by this pass.
    pub deleted: Vec<String>,
    /// The same, as objects.
    pub deleted_objects: Vec<Doomed>,
    /// Still present (being deleted: finalizers, dependents).
    pub present: Vec<String>,
}

async fn api_of(ctx: &Context, d: &Doomed) -> Result<Option<Api<DynamicObject>>> {
    let gvk = gvk_of(&d.api_version, &d.kind);
    let (resource, caps) = match pinned_kind(&ctx.client, &gvk).await {
        Ok(found) => found,
        // The type is not served: nothing of it exists.
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
        Err(e) => return Err(Error::kube(format!("discover the API of {d}"), e)),
    };
    Ok(match (&caps.scope, &d.namespace) {
        (Scope::Namespaced, Some(ns)) => {
            Some(Api::namespaced_with(ctx.client.clone(), ns, &resource))
        }
        (Scope::Namespaced, None) => None,
        (Scope::Cluster, _) => Some(Api::all_with(ctx.client.clone(), &resource)),
    })
}

/// Deletes what exists of `doomed` without this restore's label (foreground propagation) and
/// reports what is still there.
pub async fn pass(ctx: &Context, ids: &Ids, doomed: &[Doomed]) -> Result<Pass> {
    let mut out = Pass::default();
    for d in doomed {
        let Some(api) = api_of(ctx, d).await? else {
            continue;
        };
        let Some(obj) = api
            .get_opt(&d.name)
            .await
            .map_err(|e| Error::kube(format!("read {d}"), e))?
        else {
            continue;
        };
        // Made by this restore (a restarted controller): not the existing application.
        if obj.labels().get(LABEL_RESTORE_UID) == Some(&ids.uid) {
            continue;
        }
        if obj.metadata.deletion_timestamp.is_none() {
            match api.delete(&d.name, &DeleteParams::foreground()).await {
                Ok(either) => {
                    out.deleted.push(d.to_string());
                    out.deleted_objects.push(d.clone());
                    if either.is_right() {
                        continue;
                    }
                }
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(Error::kube(format!("delete {d} (cleanupConfig)"), e)),
            }
        }
        out.present.push(d.to_string());
    }
    Ok(out)
}

fn listed(names: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut s = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

/// Outcome of the cleanup step.
#[derive(Debug)]
pub enum Step {
    /// Nothing of the application is left; the summary for the Validation condition.
    Done(String),
    /// Objects are still being deleted.
    Waiting,
    /// The restore fails Validation with this reason.
    Failed(String),
}

/// Runs one pass and judges the wait (the Validation condition carries the start).
pub async fn step(
    ctx: &Context,
    ids: &Ids,
    plan: &RestorePlan,
    scope: &CleanupScope,
    progress: &mut Progress,
) -> Result<Step> {
    let doomed = match candidates(plan, scope, &ids.job_ns) {
        Ok(d) => d,
        Err(reason) => return Ok(Step::Failed(reason)),
    };
    let timeout = doomed
        .iter()
        .filter_map(|d| scope.for_namespace(d.namespace.as_deref()))
        .max()
        .unwrap_or(DEFAULT_TIMEOUT_SECONDS);
    let result = pass(ctx, ids, &doomed).await?;
    progress
        .cleanup_deleted
        .extend(result.deleted_objects.iter().cloned());
    if !result.deleted.is_empty() {
        progress.events.push((
            false,
            "CleanupDeleted".into(),
            format!(
                "cleanupConfig deleted {} existing object(s) of the application: {}",
                result.deleted.len(),
                listed(&result.deleted)
            ),
        ));
    }
    let current = validation_reason(progress);
    let waiting = current.as_deref().filter(|r| r.starts_with(REASON_PREFIX));
    if result.present.is_empty() {
        let what = match waiting {
            Some(r) => r
                .trim_start_matches(REASON_PREFIX)
                .split("; waiting")
                .next()
                .unwrap_or_default()
                .trim_start_matches(": ")
                .to_string(),
            None => listed(&result.deleted),
        };
        return Ok(Step::Done(if what.is_empty() {
            "cleanupConfig: nothing of the application existed in the destination".into()
        } else {
            format!("cleanupConfig deleted the existing application first: {what}")
        }));
    }
    match waiting {
        None => {
            let reason = format!(
                "{REASON_PREFIX}: {}; waiting up to {timeout} s for them to be gone",
                listed(&if result.deleted.is_empty() {
                    result.present.clone()
                } else {
                    result.deleted.clone()
                })
            );
            progress.begin(RestorePhase::Validation, &reason);
            Ok(Step::Waiting)
        }
        Some(_) => {
            let since = validation_since(progress);
            if since.is_some_and(|s| s >= timeout) {
                return Ok(Step::Failed(format!(
                    "cleanupConfig: after {timeout} s these objects are still present: {} (finalizers, or dependents still being deleted); remove what holds them or raise cleanupConfig.gracefulDeletionTimeoutSeconds, then restore again",
                    listed(&result.present)
                )));
            }
            Ok(Step::Waiting)
        }
    }
}

fn validation_condition(
    progress: &Progress,
) -> Option<&tvk_api::common::PhaseCondition<RestorePhase, tvk_api::restore::RestorePhaseStatus>> {
    progress
        .status
        .condition
        .as_ref()?
        .iter()
        .find(|c| c.phase == Some(RestorePhase::Validation))
}

fn validation_reason(progress: &Progress) -> Option<String> {
    validation_condition(progress)?.reason.clone()
}

/// Seconds since the Validation condition last changed.
fn validation_since(progress: &Progress) -> Option<u64> {
    let at: jiff::Timestamp = validation_condition(progress)?
        .timestamp
        .as_deref()?
        .parse()
        .ok()?;
    let now: jiff::Timestamp = progress.now.parse().ok()?;
    u64::try_from(now.duration_since(at).as_secs()).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use serde_json::json;

    use super::*;

    fn plan(v: Value) -> RestorePlan {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn candidates_are_the_planned_creations_and_claims_never_namespaces_or_crds() {
        let p = plan(json!({"source": {"location": "p/b", "kind": "Backup"},
            "objects": [
                {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "name": "w.example.com", "action": "Create"},
                {"apiVersion": "v1", "kind": "Namespace", "name": "dest", "action": "Create"},
                {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "dest", "name": "cfg", "action": "Create"},
                {"apiVersion": "v1", "kind": "Secret", "namespace": "dest", "name": "s", "action": "Skip"},
                {"apiVersion": "v1", "kind": "Secret", "namespace": "dest", "name": "x", "action": "Exclude"},
                {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "dest", "name": "web", "action": "Create"},
                {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "other", "name": "cfg", "action": "Create"}],
            "counts": {"create": 4, "skip": 1, "patch": 0, "exclude": 1},
            "volumes": [{"namespace": "dest", "pvcName": "data", "sourceNamespace": "app", "sourcePvcName": "data",
                "location": "p/b/u", "pvcMetadata": "{}"}]}));
        let scope = CleanupScope {
            default: Some(60),
            cluster: Some(60),
            namespaces: BTreeMap::from([("other".to_owned(), None)]),
        };
        let names: Vec<String> = candidates(&p, &scope, "tvk")
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            names,
            [
                "Deployment dest/web",
                "ConfigMap dest/cfg",
                "PersistentVolumeClaim dest/data"
            ]
        );
        // Disabled: nothing.
        assert!(
            candidates(&p, &CleanupScope::default(), "tvk")
                .unwrap()
                .is_empty()
        );
        // The install namespace and system namespaces are refused.
        let err = candidates(&p, &scope, "dest").unwrap_err();
        assert!(err.contains("namespace dest"), "{err}");
        let mut truncated = p.clone();
        truncated.objects_truncated = true;
        let err = candidates(&truncated, &scope, "tvk").unwrap_err();
        assert!(err.contains("resourceSelector"), "{err}");
    }

    #[test]
    fn scope_follows_global_config_and_component_overrides() {
        let spec: ClusterRestoreSpec = serde_json::from_value(json!({
            "source": {"type": "ClusterBackup", "clusterBackup": {"name": "cb"}},
            "globalConfig": {"cleanupConfig": {"enabled": true, "gracefulDeletionTimeoutSeconds": 120}},
            "components": [
                {"backupNamespace": "a", "restoreNamespace": "a2",
                 "restoreConfig": {"cleanupConfig": {"enabled": false}}},
                {"backupNamespace": "b", "restoreConfig": {"restoreFlags": {"omitMetadata": true}}},
                {"backupNamespace": "c", "restoreConfig": {"cleanupConfig": {"enabled": true}}}]}))
        .unwrap();
        let s = CleanupScope::of_cluster_restore(&spec);
        assert_eq!(s.for_namespace(Some("a2")), None);
        assert_eq!(s.for_namespace(Some("b")), Some(120));
        assert_eq!(s.for_namespace(Some("c")), Some(DEFAULT_TIMEOUT_SECONDS));
        assert_eq!(s.for_namespace(None), Some(120));
        assert!(s.any());
        let spec: RestoreSpec = serde_json::from_value(json!({
            "source": {"type": "Backup", "backup": {"name": "b"}},
            "cleanupConfig": {"enabled": false, "gracefulDeletionTimeoutSeconds": 90}}))
        .unwrap();
        assert!(!CleanupScope::of_restore(&spec).any());
        // A Restore: its namespace only, never cluster-scoped objects.
        let spec: RestoreSpec = serde_json::from_value(json!({
            "source": {"type": "Backup", "backup": {"name": "b"}},
            "cleanupConfig": {"enabled": true, "gracefulDeletionTimeoutSeconds": 90}}))
        .unwrap();
        let s = CleanupScope::of_restore(&spec);
        assert_eq!(s.for_namespace(Some("app")), Some(90));
        assert_eq!(s.for_namespace(None), None);
    }
}
