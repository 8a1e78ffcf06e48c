//! The apply engine: server-side apply of a rendered [`Manifest`] in its order, with one field
//! manager, skipping objects that are already as rendered, waiting for CRDs to be `Established`
//! before anything that may use them; and [`InventoryPruner`], which deletes objects of an
//! earlier revision that are no longer rendered.
//!
//! "Already as rendered" means: the live object carries the same rendered-hash annotation AND
//! every field we set is present with the same value (so an out-of-band edit of a managed field
//! is set back even though the annotation still matches). An object the apiserver normalises
//! (quantities, defaults) is then re-applied; server-side apply of an unchanged object is a no-op
//! that does not bump its resourceVersion.

use std::{collections::BTreeSet, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{
    Client, ResourceExt,
    api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::render::{
    ANNOTATION_HASH, ANNOTATION_OWNER_NAMESPACE, APPLY_ORDER, KnownKind, LABEL_INSTANCE,
    LABEL_MANAGED_BY, MANAGER_NAME, Manifest, known_kind,
};

/// The one field manager of every write the manager makes.
pub const FIELD_MANAGER: &str = "tvk-manager";

/// Why applying or pruning failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The apiserver refused a request.
    #[error("failed to {action} {kind} {name}: {source}")]
    Api {
        /// What was attempted (`apply`, `read`, `delete`).
        action: &'static str,
        /// Kind.
        kind: String,
        /// namespace/name.
        name: String,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
    /// A CRD did not become Established in time.
    #[error(
        "CustomResourceDefinition {0} did not become Established within {1:?}; check its schema with kubectl describe crd {0}"
    )]
    CrdNotEstablished(String, Duration),
    /// A rendered object has a kind outside the allow-list.
    #[error("{0} is not a kind the manager applies")]
    UnknownKind(String),
}

impl ApplyError {
    /// Whether retrying later may succeed (network, conflicts, throttling, server errors).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Api { source, .. } => match source.as_ref() {
                kube::Error::Api(status) => {
                    status.code == 409 || status.code == 429 || status.code >= 500
                }
                _ => true,
            },
            Self::CrdNotEstablished(..) => true,
            Self::UnknownKind(_) => false,
        }
    }
}

/// Identity of one applied object, as recorded in the inventory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectRef {
    /// `group/version` or `v1`.
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Namespace (empty for cluster-scoped).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectRef {
    /// The reference of a rendered object.
    pub fn of(object: &DynamicObject) -> Self {
        let types = object.types.clone().unwrap_or_default();
        Self {
            api_version: types.api_version,
            kind: types.kind,
            namespace: object.metadata.namespace.clone().unwrap_or_default(),
            name: object.name_any(),
        }
    }

    fn display(&self) -> String {
        if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Objects written (created or changed).
    pub applied: Vec<ObjectRef>,
    /// Objects already as rendered (no write).
    pub unchanged: Vec<ObjectRef>,
}

/// The TVM objects are owned by: namespaced objects get an owner reference, cluster-scoped ones
/// carry the instance label and owner-namespace annotation (a namespaced owner cannot own them).
#[derive(Debug, Clone)]
pub struct Owner {
    /// Owner reference to the TVM.
    pub reference: OwnerReference,
    /// The TVM's namespace.
    pub namespace: String,
}

/// Server-side applies manifests.
#[derive(Clone)]
pub struct Applier {
    client: Client,
    /// How long to wait for each CRD to become Established.
    pub crd_timeout: Duration,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("crd_timeout", &self.crd_timeout)
            .finish()
    }
}

/// The API of a known kind, for the object's namespace.
fn api_for(client: &Client, known: &KnownKind, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(known.group, known.version, known.kind),
        known.plural,
    );
    if known.namespaced {
        Api::namespaced_with(client.clone(), namespace, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    }
}

/// Whether every field of `desired` is present in `live` with the same value (lists compared
/// whole). Server-added fields in `live` are ignored.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d
            .iter()
            .all(|(key, value)| l.get(key).is_some_and(|lv| is_subset(value, lv))),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| is_subset(dv, lv))
        }
        (d, l) => d == l,
    }
}

impl Applier {
    /// An applier using `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            crd_timeout: Duration::from_secs(60),
        }
    }

    /// Applies every object of `manifest` in order, with `owner` set where the scope allows.
    pub async fn apply(
        &self,
        manifest: &Manifest,
        owner: &Owner,
    ) -> Result<ApplyReport, ApplyError> {
        let mut report = ApplyReport::default();
        let mut pending_crds: Vec<String> = Vec::new();
        for object in &manifest.objects {
            let reference = ObjectRef::of(object);
            let (_, known) = known_kind(&reference.api_version, &reference.kind)
                .ok_or_else(|| ApplyError::UnknownKind(reference.kind.clone()))?;
            // Everything after the CRDs may be a custom resource or refer to one.
            if known.kind != "CustomResourceDefinition" && !pending_crds.is_empty() {
                for name in std::mem::take(&mut pending_crds) {
                    self.wait_established(&name).await?;
                }
            }
            let mut desired = object.clone();
            if known.namespaced && reference.namespace == owner.namespace {
                desired.metadata.owner_references = Some(vec![owner.reference.clone()]);
            }
            let api = api_for(&self.client, known, &reference.namespace);
            let live = api
                .get_opt(&reference.name)
                .await
                .map_err(|source| ApplyError::Api {
                    action: "read",
                    kind: reference.kind.clone(),
                    name: reference.display(),
                    source: Box::new(source),
                })?;
            let desired_value = serde_json::to_value(&desired).unwrap_or(Value::Null);
            let unchanged = live.as_ref().is_some_and(|live| {
                live.annotations().get(ANNOTATION_HASH)
                    == desired.annotations().get(ANNOTATION_HASH)
                    && is_subset(
                        &desired_value,
                        &serde_json::to_value(live).unwrap_or(Value::Null),
                    )
            });
            if unchanged {
                report.unchanged.push(reference);
            } else {
                let params = PatchParams::apply(FIELD_MANAGER).force();
                api.patch(&reference.name, &params, &Patch::Apply(&desired))
                    .await
                    .map_err(|source| ApplyError::Api {
                        action: "apply",
                        kind: reference.kind.clone(),
                        name: reference.display(),
                        source: Box::new(source),
                    })?;
                report.applied.push(reference.clone());
            }
            if known.kind == "CustomResourceDefinition" {
                pending_crds.push(object.name_any());
            }
        }
        for name in pending_crds {
            self.wait_established(&name).await?;
        }
        Ok(report)
    }

    async fn wait_established(&self, name: &str) -> Result<(), ApplyError> {
        let known = &APPLY_ORDER[0];
        let api = api_for(&self.client, known, "");
        let deadline = tokio::time::Instant::now() + self.crd_timeout;
        loop {
            let crd = api.get_opt(name).await.map_err(|source| ApplyError::Api {
                action: "read",
                kind: known.kind.into(),
                name: name.into(),
                source: Box::new(source),
            })?;
            let established = crd.as_ref().is_some_and(|crd| {
                crd.data
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|conditions| {
                        conditions
                            .iter()
                            .any(|c| c["type"] == "Established" && c["status"] == "True")
                    })
            });
            if established {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApplyError::CrdNotEstablished(name.into(), self.crd_timeout));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Deletes objects of a previous inventory that are no longer rendered — only when label, owner
/// and an allow-listed kind all match.
#[derive(Clone)]
pub struct InventoryPruner {
    client: Client,
}

impl std::fmt::Debug for InventoryPruner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InventoryPruner").finish()
    }
}

/// Whether `live` is ours: our labels for this instance, and our owner (reference for
/// namespaced objects, owner-namespace annotation for cluster-scoped ones).
pub fn is_ours(live: &DynamicObject, owner: &Owner, instance: &str) -> bool {
    let labels = live.labels();
    if labels.get(LABEL_MANAGED_BY).map(String::as_str) != Some(MANAGER_NAME)
        || labels.get(LABEL_INSTANCE).map(String::as_str) != Some(instance)
    {
        return false;
    }
    if live.metadata.namespace.is_some() {
        live.owner_references()
            .iter()
            .any(|r| r.uid == owner.reference.uid)
    } else {
        live.annotations().get(ANNOTATION_OWNER_NAMESPACE) == Some(&owner.namespace)
    }
}

impl InventoryPruner {
    /// A pruner using `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Deletes every object of `previous` that `keep` does not list, in reverse apply order,
    /// skipping CRDs unless `delete_crds`. Returns what was deleted.
    pub async fn prune(
        &self,
        previous: &[ObjectRef],
        keep: &BTreeSet<ObjectRef>,
        owner: &Owner,
        instance: &str,
        delete_crds: bool,
    ) -> Result<Vec<ObjectRef>, ApplyError> {
        let mut candidates: Vec<(usize, &ObjectRef, &'static KnownKind)> = previous
            .iter()
            .filter(|r| !keep.contains(*r))
            .filter_map(|r| known_kind(&r.api_version, &r.kind).map(|(rank, k)| (rank, r, k)))
            .filter(|(_, _, k)| delete_crds || k.kind != "CustomResourceDefinition")
            .collect();
        candidates.sort_by_key(|(rank, _, _)| std::cmp::Reverse(*rank));
        let mut deleted = Vec::new();
        for (_, reference, known) in candidates {
            let api = api_for(&self.client, known, &reference.namespace);
            let live = match api.get_opt(&reference.name).await {
                Ok(Some(live)) => live,
                Ok(None) => continue,
                // Forbidden on a read: not ours to touch.
                Err(kube::Error::Api(status)) if status.code == 403 => continue,
                Err(source) => {
                    return Err(ApplyError::Api {
                        action: "read",
                        kind: reference.kind.clone(),
                        name: reference.display(),
                        source: Box::new(source),
                    });
                }
            };
            if !is_ours(&live, owner, instance) {
                continue;
            }
            match api
                .delete(&reference.name, &DeleteParams::background())
                .await
            {
                Ok(_) => deleted.push(reference.clone()),
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => {
                    return Err(ApplyError::Api {
                        action: "delete",
                        kind: reference.kind.clone(),
                        name: reference.display(),
                        source: Box::new(source),
                    });
                }
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn subset_ignores_server_fields_but_not_edits() {
        let desired = json!({"spec": {"replicas": 2, "template": {"containers": [{"name": "a"}]}}});
        let live = json!({"spec": {"replicas": 2, "template": {"containers": [{"name": "a", "imagePullPolicy": "Always"}]}, "progressDeadlineSeconds": 600}, "status": {}});
        assert!(is_subset(&desired, &live));
        let edited = json!({"spec": {"replicas": 3, "template": {"containers": [{"name": "a"}]}}});
        assert!(!is_subset(&desired, &edited));
        let extra_item = json!({"spec": {"replicas": 2, "template": {"containers": [{"name": "a"}, {"name": "b"}]}}});
        assert!(!is_subset(&desired, &extra_item));
    }
}
