//! The ignore list: which objects are never backed up (the cluster makes them again) and which
//! fields are removed from the objects that are (they belong to one cluster's life of the
//! object, and restoring them would fail or do harm). Pure; README.md lists the same rules.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::object::{Gvk, gvk_of, name, owner_refs, str_at};

/// Annotations that describe a PVC's binding in this cluster; removed from the stored PVC (the
/// original values are kept in the index's PVC list).
pub const PVC_BIND_ANNOTATIONS: &[&str] = &[
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/selected-node",
];

/// Annotation kubectl writes on `apply`; it holds a stale copy of the whole object.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// ConfigMaps the cluster creates in every namespace.
pub const GENERATED_CONFIG_MAPS: &[&str] = &["kube-root-ca.crt", "openshift-service-ca.crt"];

/// Resource types never backed up: the cluster regenerates them, they are views, or they are
/// this product's own records. `(group, kind)`; `*` = every kind of the group.
pub const IGNORED_TYPES: &[(&str, &str)] = &[
    ("", "Event"),
    ("events.k8s.io", "*"),
    ("", "Endpoints"),
    ("discovery.k8s.io", "EndpointSlice"),
    ("apps", "ControllerRevision"),
    ("coordination.k8s.io", "Lease"),
    ("", "ComponentStatus"),
    ("", "Binding"),
    ("metrics.k8s.io", "*"),
    ("authorization.k8s.io", "*"),
    ("authentication.k8s.io", "*"),
    ("triliovault.trilio.io", "*"),
    ("snapshot.storage.k8s.io", "VolumeSnapshot"),
    ("snapshot.storage.k8s.io", "VolumeSnapshotContent"),
    ("operators.coreos.com", "InstallPlan"),
];

/// Whether a whole resource type is on the ignore list.
pub fn is_ignored_type(group: &str, kind: &str) -> bool {
    IGNORED_TYPES
        .iter()
        .any(|(g, k)| *g == group && (*k == "*" || *k == kind))
}

/// Kinds that a controller creates from a template: skipped when a controller owns them (the
/// owner is backed up and recreates them).
const CONTROLLED_KINDS: &[(&str, &str)] = &[("", "Pod"), ("apps", "ReplicaSet"), ("batch", "Job")];

/// Why an object is not backed up although its type is, or `None` when it is.
pub fn skip_reason(obj: &Value) -> Option<&'static str> {
    let gvk = gvk_of(obj)?;
    if is_ignored_type(&gvk.group, &gvk.kind) {
        return Some("resource type on the ignore list");
    }
    if gvk.group.is_empty()
        && gvk.kind == "Secret"
        && str_at(obj, "/type") == Some("kubernetes.io/service-account-token")
    {
        return Some("service account token Secret (the cluster issues a new one)");
    }
    if gvk.group.is_empty()
        && gvk.kind == "ConfigMap"
        && name(obj).is_some_and(|n| GENERATED_CONFIG_MAPS.contains(&n))
    {
        return Some("cluster-generated ConfigMap");
    }
    if CONTROLLED_KINDS
        .iter()
        .any(|(g, k)| *g == gvk.group && *k == gvk.kind)
        && owner_refs(obj).iter().any(|o| o.controller)
    {
        return Some("owned by a controller that is backed up and recreates it");
    }
    None
}

/// Removes everything cluster-specific from an object that is backed up. `kept_uids` are the
/// UIDs of all objects in the backup: owner references to anything else are dropped (restore
/// re-links the rest by name).
pub fn clean(obj: &mut Value, kept_uids: &HashSet<String>) {
    let gvk = gvk_of(obj);
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    root.remove("status");
    if let Some(meta) = root.get_mut("metadata").and_then(Value::as_object_mut) {
        clean_metadata(meta, kept_uids);
    }
    let Some(gvk) = gvk else { return };
    match (gvk.group.as_str(), gvk.kind.as_str()) {
        ("", "Service") => clean_service(root),
        ("", "PersistentVolumeClaim") => clean_pvc(root),
        ("", "Pod") => {
            if let Some(spec) = root.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("nodeName");
            }
        }
        _ => {}
    }
}

fn clean_metadata(meta: &mut Map<String, Value>, kept_uids: &HashSet<String>) {
    for field in [
        "managedFields",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "selfLink",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        meta.remove(field);
    }
    remove_annotations(meta, &[LAST_APPLIED]);
    if let Some(refs) = meta
        .get_mut("ownerReferences")
        .and_then(Value::as_array_mut)
    {
        refs.retain(|r| {
            r.get("uid")
                .and_then(Value::as_str)
                .is_some_and(|u| kept_uids.contains(u))
        });
        if refs.is_empty() {
            meta.remove("ownerReferences");
        }
    }
}

fn remove_annotations(meta: &mut Map<String, Value>, keys: &[&str]) {
    if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        for k in keys {
            ann.remove(*k);
        }
        if ann.is_empty() {
            meta.remove("annotations");
        }
    }
}

/// Service IPs are allocated per cluster; a headless Service (`None`) keeps its marker.
fn clean_service(root: &mut Map<String, Value>) {
    let Some(spec) = root.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    if !headless {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    spec.remove("healthCheckNodePort");
}

/// A restored PVC must bind to a new volume: no volume name, no binding annotations.
fn clean_pvc(root: &mut Map<String, Value>) {
    if let Some(spec) = root.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("volumeName");
    }
    if let Some(meta) = root.get_mut("metadata").and_then(Value::as_object_mut) {
        remove_annotations(meta, PVC_BIND_ANNOTATIONS);
    }
}

/// Gvk of the CustomResourceDefinition type.
pub fn crd_gvk() -> Gvk {
    Gvk::new("apiextensions.k8s.io", "v1", "CustomResourceDefinition")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kept(uids: &[&str]) -> HashSet<String> {
        uids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn metadata_and_status_are_cleaned() {
        let mut obj = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "app", "uid": "u1", "resourceVersion": "9",
                "generation": 3, "creationTimestamp": "2024-01-01T00:00:00Z", "selfLink": "/x",
                "managedFields": [{"manager": "kubectl"}],
                "labels": {"app": "web"},
                "annotations": {LAST_APPLIED: "{}", "keep": "me"},
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Thing", "name": "a", "uid": "kept-owner"},
                    {"apiVersion": "v1", "kind": "Thing", "name": "b", "uid": "gone-owner"}]},
            "spec": {"replicas": 2},
            "status": {"readyReplicas": 2}
        });
        clean(&mut obj, &kept(&["kept-owner"]));
        assert_eq!(
            obj,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "app", "labels": {"app": "web"},
                    "annotations": {"keep": "me"},
                    "ownerReferences": [
                        {"apiVersion": "v1", "kind": "Thing", "name": "a", "uid": "kept-owner"}]},
                "spec": {"replicas": 2}
            })
        );
    }

    #[test]
    fn owner_references_to_objects_not_backed_up_disappear() {
        let mut obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "ownerReferences": [{"kind": "X", "name": "x", "uid": "u"}],
                "annotations": {LAST_APPLIED: "{}"}}});
        clean(&mut obj, &kept(&[]));
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
        );
    }

    #[test]
    fn service_ips_are_dropped_except_headless() {
        let mut svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ports": [{"port": 80}]}});
        clean(&mut svc, &kept(&[]));
        assert_eq!(svc["spec"], json!({"ports": [{"port": 80}]}));
        let mut headless = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "h"},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"]}});
        clean(&mut headless, &kept(&[]));
        assert_eq!(headless["spec"]["clusterIP"], "None");
    }

    #[test]
    fn pvc_binding_is_dropped() {
        let mut pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "annotations": {
                "pv.kubernetes.io/bind-completed": "yes",
                "volume.kubernetes.io/selected-node": "n1", "team": "db"}},
            "spec": {"volumeName": "pvc-123", "storageClassName": "fast",
                "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Bound"}});
        clean(&mut pvc, &kept(&[]));
        assert_eq!(
            pvc,
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data", "annotations": {"team": "db"}},
                "spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "1Gi"}}}})
        );
    }

    #[test]
    fn cluster_generated_objects_are_skipped() {
        let token = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t"},
            "type": "kubernetes.io/service-account-token"});
        assert!(skip_reason(&token).is_some());
        let opaque = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t"},
            "type": "Opaque"});
        assert_eq!(skip_reason(&opaque), None);
        let ca = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kube-root-ca.crt"}});
        assert!(skip_reason(&ca).is_some());
        let owned_pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p",
            "ownerReferences": [{"kind": "ReplicaSet", "name": "r", "uid": "u", "controller": true}]}});
        assert!(skip_reason(&owned_pod).is_some());
        let bare_pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
        assert_eq!(skip_reason(&bare_pod), None);
        for (api, kind) in [
            ("v1", "Event"),
            ("events.k8s.io/v1", "Event"),
            ("v1", "Endpoints"),
            ("discovery.k8s.io/v1", "EndpointSlice"),
            ("apps/v1", "ControllerRevision"),
            ("coordination.k8s.io/v1", "Lease"),
        ] {
            let o = json!({"apiVersion": api, "kind": kind, "metadata": {"name": "x"}});
            assert!(skip_reason(&o).is_some(), "{api} {kind}");
        }
        let cm = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x",
            "ownerReferences": [{"kind": "Foo", "name": "f", "uid": "u", "controller": true}]}});
        assert_eq!(skip_reason(&cm), None, "a controlled Deployment is kept");
    }
}
