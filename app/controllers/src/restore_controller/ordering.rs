//! One restore at a time into a namespace, Restores and ClusterRestores alike: before its
//! Validation starts, a restore waits `Pending` while another one that writes into any of its
//! destination namespaces goes before it ([`goes_before`]: a running one always, of those not
//! started the older one).
//!
//! Destination namespaces: a Restore's own namespace; a ClusterRestore's are exact once its
//! Validation Job wrote the restore plan (`status.restoreApplication.namespaces`), and before
//! that every `components[]` destination plus every namespace its source ClusterBackup's
//! `status.snapshot` names (volumes, Helm releases) that `components[]` does not map, minus
//! `excludeComponents` ([`cluster_restore_destinations`]). A backed-up namespace with neither
//! a volume nor a Helm release that `components[]` does not name is only known from the plan.

use std::collections::{BTreeMap, BTreeSet};

use kube::{
    Api, ResourceExt,
    api::{ListParams, ObjectMeta},
};
use serde_json::Value;
use tvk_api::{
    backup::ClusterBackup,
    restore::{ClusterRestore, ClusterRestoreSpec, Restore, RestoreState, RestoreStatus},
};

use super::RestoreKind;
use crate::{
    context::Context,
    error::{Error, Result},
};

/// Whether a restore (`other`, with its state) goes before the restore `me` into a namespace
/// they share (pure): one that is running (`InProgress`) always does; of those not started yet
/// (no status or `Pending`), the older one (creation time, then name) does; finished ones
/// never do, nor does `me` itself.
pub fn goes_before(me: &ObjectMeta, other: &ObjectMeta, other_state: Option<RestoreState>) -> bool {
    if other.uid == me.uid {
        return false;
    }
    match other_state {
        Some(RestoreState::InProgress) => true,
        None | Some(RestoreState::Pending) => {
            let key = |m: &ObjectMeta| {
                (
                    m.creation_timestamp.as_ref().map(|t| t.0),
                    m.name.clone().unwrap_or_default(),
                )
            };
            key(other) < key(me)
        }
        Some(RestoreState::Completed | RestoreState::Failed | RestoreState::Error) => false,
    }
}

/// The namespaces a ClusterBackup's `status.snapshot` names: those of its volumes and of its
/// Helm releases (pure).
pub fn backed_up_namespaces(snapshot: Option<&Value>) -> BTreeSet<String> {
    let Some(s) = snapshot
        .and_then(|v| serde_json::from_value::<tvk_api::snapshot::Snapshot>(v.clone()).ok())
    else {
        return BTreeSet::new();
    };
    let volumes = s
        .custom
        .iter()
        .flat_map(|c| c.data_snapshots.iter())
        .chain(s.helm_charts.iter().flat_map(|h| h.data_snapshots.iter()))
        .filter_map(|d| d.namespace.clone());
    let releases = s.helm_charts.iter().filter_map(|h| h.namespace.clone());
    volumes.chain(releases).collect()
}

/// The namespaces a ClusterRestore writes into, as far as they are known now (pure; see the
/// module documentation): the restore plan's when there is one, else `components[]`'s
/// destinations and the unmapped namespaces of `backed_up`, without `excludeComponents`.
pub fn cluster_restore_destinations(
    spec: &ClusterRestoreSpec,
    status: Option<&RestoreStatus>,
    backed_up: &BTreeSet<String>,
) -> BTreeSet<String> {
    let planned: Option<BTreeSet<String>> = status
        .and_then(|s| s.restore_application.as_ref())
        .and_then(|p| p.get("namespaces"))
        .and_then(Value::as_array)
        .map(|nss| {
            nss.iter()
                .filter_map(|n| n.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect()
        });
    if let Some(planned) = planned {
        return planned;
    }
    let excluded: BTreeSet<&str> = spec
        .exclude_components
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let mapped: BTreeMap<&str, String> = spec
        .components
        .iter()
        .flatten()
        .map(|c| {
            let to = c
                .restore_namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| c.backup_namespace.clone());
            (c.backup_namespace.as_str(), to)
        })
        .collect();
    let mut out: BTreeSet<String> = mapped
        .iter()
        .filter(|(from, _)| !excluded.contains(*from))
        .map(|(_, to)| to.clone())
        .collect();
    out.extend(
        backed_up
            .iter()
            .filter(|ns| !excluded.contains(ns.as_str()) && !mapped.contains_key(ns.as_str()))
            .cloned(),
    );
    out
}

/// A restore this one waits for: how messages name it, and the namespace they share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    /// `Restore ns/name` or `ClusterRestore name`.
    pub who: String,
    /// A destination namespace both write into.
    pub namespace: String,
}

/// The restore that goes before the restore `me` (destination namespaces `mine`), if any: of
/// the Restores of those namespaces and of every ClusterRestore, the first by name among those
/// that share a namespace with it and [`goes_before`] it. A Forbidden or missing
/// ClusterRestore kind (a `Namespaced` install) counts as no ClusterRestore.
pub async fn blocker(
    ctx: &Context,
    me: &ObjectMeta,
    mine: &BTreeSet<String>,
) -> Result<Option<Blocker>> {
    let mut found: Vec<Blocker> = Vec::new();
    for ns in mine {
        let restores = Api::<Restore>::namespaced(ctx.client.clone(), ns)
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::kube(format!("list the Restores of namespace {ns}"), e))?;
        for r in &restores.items {
            if goes_before(me, &r.metadata, r.status.as_ref().and_then(|s| s.status)) {
                found.push(Blocker {
                    who: format!("Restore {ns}/{}", r.name_any()),
                    namespace: ns.clone(),
                });
            }
        }
    }
    let cluster = match Api::<ClusterRestore>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(kube::Error::Api(e)) if e.code == 403 || e.code == 404 => Vec::new(),
        Err(e) => return Err(Error::kube("list the ClusterRestores", e)),
    };
    let mut snapshots: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for cr in &cluster {
        if !goes_before(me, &cr.metadata, cr.status.as_ref().and_then(|s| s.status)) {
            continue;
        }
        let backed_up = match cr.spec.source.cluster_backup.as_ref() {
            Some(b) => {
                let name = b.name.clone().unwrap_or_default();
                match snapshots.get(&name) {
                    Some(s) => s.clone(),
                    None => {
                        let s = cluster_backup_namespaces(ctx, &name).await?;
                        snapshots.insert(name, s.clone());
                        s
                    }
                }
            }
            None => BTreeSet::new(),
        };
        let theirs = cluster_restore_destinations(&cr.spec, cr.status.as_ref(), &backed_up);
        if let Some(ns) = theirs.intersection(mine).next() {
            found.push(Blocker {
                who: format!("ClusterRestore {}", cr.name_any()),
                namespace: ns.clone(),
            });
        }
    }
    Ok(found.into_iter().min_by(|a, b| a.who.cmp(&b.who)))
}

/// The namespaces `restore` writes into: a Restore's own; a ClusterRestore's
/// ([`cluster_restore_destinations`]) from its plan, else from its spec and its source
/// ClusterBackup.
pub async fn destinations<K: RestoreKind>(ctx: &Context, restore: &K) -> Result<BTreeSet<String>> {
    if let Some(ns) = restore.metamover_namespace() {
        return Ok([ns].into());
    }
    // A ClusterRestore (the only kind without a namespace): its own type, for its spec.
    let cr: ClusterRestore = serde_json::to_value(restore)
        .and_then(serde_json::from_value)
        .map_err(|source| Error::Serde {
            what: "a cluster-scoped restore into a ClusterRestore",
            source,
        })?;
    let backed_up = match cr
        .spec
        .source
        .cluster_backup
        .as_ref()
        .and_then(|b| b.name.as_deref())
    {
        Some(name) => cluster_backup_namespaces(ctx, name).await?,
        None => BTreeSet::new(),
    };
    Ok(cluster_restore_destinations(
        &cr.spec,
        cr.status.as_ref(),
        &backed_up,
    ))
}

/// [`backed_up_namespaces`] of ClusterBackup `name` (empty when it does not exist).
pub async fn cluster_backup_namespaces(ctx: &Context, name: &str) -> Result<BTreeSet<String>> {
    let backup = Api::<ClusterBackup>::all(ctx.client.clone())
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("read ClusterBackup {name}"), e))?;
    Ok(backed_up_namespaces(
        backup
            .as_ref()
            .and_then(|b| b.status.as_ref())
            .and_then(|s| s.snapshot.as_ref()),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> ClusterRestoreSpec {
        serde_json::from_value(v).unwrap()
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn backed_up_namespaces_come_from_volumes_and_releases() {
        let snapshot = json!({"custom": {"dataSnapshots": [
                {"persistentVolumeClaimName": "d", "namespace": "shop"}]},
            "helmCharts": [{"release": "db", "namespace": "db-ns", "dataSnapshots": [
                {"persistentVolumeClaimName": "x", "namespace": "db-ns"}]}]});
        assert_eq!(
            backed_up_namespaces(Some(&snapshot)),
            set(&["db-ns", "shop"])
        );
        assert!(backed_up_namespaces(None).is_empty());
    }

    #[test]
    fn destinations_before_the_plan_map_components_and_drop_exclusions() {
        let s = spec(
            json!({"source": {"type": "ClusterBackup", "clusterBackup": {"name": "b"}},
            "components": [{"backupNamespace": "shop", "restoreNamespace": "shop-r"},
                {"backupNamespace": "logs"}, {"backupNamespace": "web", "restoreNamespace": "web-r"}],
            "excludeComponents": ["web", "tmp"]}),
        );
        let got = cluster_restore_destinations(&s, None, &set(&["shop", "tmp", "db", "web"]));
        // shop → shop-r, logs → logs, web excluded, db unmapped → db, tmp excluded.
        assert_eq!(got, set(&["db", "logs", "shop-r"]));
    }

    #[test]
    fn the_restore_plan_is_exact_once_written() {
        let s = spec(
            json!({"source": {"type": "ClusterBackup", "clusterBackup": {"name": "b"}},
            "components": [{"backupNamespace": "shop", "restoreNamespace": "shop-r"}]}),
        );
        let status: RestoreStatus = serde_json::from_value(json!({"restoreApplication":
            {"namespaces": [{"name": "shop-r", "exists": false}, {"name": "extra", "exists": true}]}}))
        .unwrap();
        assert_eq!(
            cluster_restore_destinations(&s, Some(&status), &set(&["db"])),
            set(&["extra", "shop-r"])
        );
    }

    #[test]
    fn running_restores_go_first_then_the_older_waiting_one() {
        let meta = |name: &str, uid: &str, secs: i64| ObjectMeta {
            name: Some(name.into()),
            uid: Some(uid.into()),
            creation_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(secs).unwrap(),
            )),
            ..ObjectMeta::default()
        };
        let me = meta("b", "2", 100);
        assert!(goes_before(
            &me,
            &meta("z", "3", 200),
            Some(RestoreState::InProgress)
        ));
        assert!(goes_before(
            &me,
            &meta("a", "1", 50),
            Some(RestoreState::Pending)
        ));
        assert!(goes_before(&me, &meta("a", "1", 100), None));
        assert!(!goes_before(&me, &meta("c", "3", 100), None));
        assert!(!goes_before(
            &me,
            &meta("a", "1", 50),
            Some(RestoreState::Completed)
        ));
        assert!(!goes_before(
            &me,
            &meta("b", "2", 100),
            Some(RestoreState::InProgress)
        ));
    }
}
