//! The resource registry: which resources the server serves (a built-in table of the common
//! Kubernetes APIs plus whatever CustomResourceDefinitions register at runtime), and the
//! discovery documents (`/api`, `/apis`, `/apis/{group}/{version}`, aggregated v2) built from it.

use serde_json::{Value, json};

/// The verbs of an ordinary resource, as a real apiserver lists them.
const STANDARD_VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// One served resource (one plural in one group), possibly at several versions.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceDef {
    /// API group, `""` for the core group.
    pub group: String,
    /// Served versions, the storage (preferred) version first.
    pub versions: Vec<String>,
    /// Plural name, as in the URL.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Kind of the objects.
    pub kind: String,
    /// Kind of the list (`{Kind}List` unless a CRD says otherwise).
    pub list_kind: String,
    /// Namespaced (true) or cluster-scoped.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: Vec<String>,
    /// Categories (`all`, …).
    pub categories: Vec<String>,
    /// Subresources served (`status`, `scale`, `log`, `exec`).
    pub subresources: Vec<String>,
    /// Set when a CustomResourceDefinition registered this resource (its name).
    pub crd: Option<String>,
}

impl ResourceDef {
    /// `group/version` (or `version` for the core group) for the given served version.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    /// The storage version's `apiVersion`.
    pub fn storage_api_version(&self) -> String {
        self.api_version(self.versions.first().map_or("v1", String::as_str))
    }

    /// Whether writes to the main resource ignore `status` (it has a status subresource).
    pub fn has_status(&self) -> bool {
        self.subresources.iter().any(|s| s == "status")
    }

    /// The storage key: objects of one resource share one map, whatever version they were
    /// written at.
    pub fn key(&self) -> ResourceKey {
        ResourceKey {
            group: self.group.clone(),
            plural: self.plural.clone(),
        }
    }

    fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    fn resource_list_entries(&self) -> Vec<Value> {
        let mut out = vec![json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": STANDARD_VERBS,
            "shortNames": self.short_names,
            "categories": self.categories,
        })];
        for sub in &self.subresources {
            let (kind, verbs): (&str, &[&str]) = match sub.as_str() {
                "scale" => ("Scale", &["get", "patch", "update"]),
                "exec" => ("PodExecOptions", &["create", "get"]),
                "log" => ("Pod", &["get"]),
                _ => (self.kind.as_str(), &["get", "patch", "update"]),
            };
            let mut entry = json!({
                "name": format!("{}/{}", self.plural, sub),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if sub == "scale" {
                entry["group"] = json!("autoscaling");
                entry["version"] = json!("v1");
            }
            out.push(entry);
        }
        out
    }

    fn aggregated_entry(&self, version: &str) -> Value {
        let subresources: Vec<Value> = self
            .subresources
            .iter()
            .map(|sub| {
                let (group, version, kind, verbs): (&str, &str, &str, &[&str]) = match sub.as_str()
                {
                    "scale" => ("autoscaling", "v1", "Scale", &["get", "patch", "update"]),
                    "exec" => ("", "v1", "PodExecOptions", &["create", "get"]),
                    "log" => ("", "v1", "Pod", &["get"]),
                    _ => (
                        self.group.as_str(),
                        version,
                        self.kind.as_str(),
                        &["get", "patch", "update"],
                    ),
                };
                json!({
                    "subresource": sub,
                    "responseKind": {"group": group, "version": version, "kind": kind},
                    "verbs": verbs,
                })
            })
            .collect();
        json!({
            "resource": self.plural,
            "responseKind": {"group": self.group, "version": version, "kind": self.kind},
            "scope": if self.namespaced { "Namespaced" } else { "Cluster" },
            "singularResource": self.singular,
            "verbs": STANDARD_VERBS,
            "shortNames": self.short_names,
            "categories": self.categories,
            "subresources": subresources,
        })
    }
}

/// Where a resource's objects are stored: group and plural.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    /// API group.
    pub group: String,
    /// Plural name.
    pub plural: String,
}

/// The table of served resources.
#[derive(Debug, Clone)]
pub struct Registry {
    resources: Vec<ResourceDef>,
}

/// (group, version, kind, plural, namespaced, short names, subresources, categories)
type Builtin = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    &'static [&'static str],
);

const BUILTINS: &[Builtin] = &[
    (
        "",
        "v1",
        "Pod",
        "pods",
        true,
        &["po"],
        &["status", "exec", "log"],
    ),
    ("", "v1", "Service", "services", true, &["svc"], &["status"]),
    ("", "v1", "Endpoints", "endpoints", true, &["ep"], &[]),
    ("", "v1", "ConfigMap", "configmaps", true, &["cm"], &[]),
    ("", "v1", "Secret", "secrets", true, &[], &[]),
    (
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        true,
        &["sa"],
        &[],
    ),
    (
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
        &["pvc"],
        &["status"],
    ),
    (
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        false,
        &["pv"],
        &["status"],
    ),
    (
        "",
        "v1",
        "Namespace",
        "namespaces",
        false,
        &["ns"],
        &["status"],
    ),
    ("", "v1", "Node", "nodes", false, &["no"], &["status"]),
    ("", "v1", "Event", "events", true, &["ev"], &[]),
    (
        "",
        "v1",
        "LimitRange",
        "limitranges",
        true,
        &["limits"],
        &[],
    ),
    (
        "",
        "v1",
        "ResourceQuota",
        "resourcequotas",
        true,
        &["quota"],
        &["status"],
    ),
    (
        "",
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        true,
        &["rc"],
        &["status", "scale"],
    ),
    ("", "v1", "PodTemplate", "podtemplates", true, &[], &[]),
    (
        "apps",
        "v1",
        "Deployment",
        "deployments",
        true,
        &["deploy"],
        &["status", "scale"],
    ),
    (
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        true,
        &["sts"],
        &["status", "scale"],
    ),
    (
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        true,
        &["ds"],
        &["status"],
    ),
    (
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        true,
        &["rs"],
        &["status", "scale"],
    ),
    (
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        true,
        &[],
        &[],
    ),
    ("batch", "v1", "Job", "jobs", true, &[], &["status"]),
    (
        "batch",
        "v1",
        "CronJob",
        "cronjobs",
        true,
        &["cj"],
        &["status"],
    ),
    (
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
        &["hpa"],
        &["status"],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        true,
        &[],
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
        &[],
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
        &[],
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
        &[],
        &[],
    ),
    (
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        true,
        &["ing"],
        &["status"],
    ),
    (
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
        &["netpol"],
        &[],
    ),
    (
        "networking.k8s.io",
        "v1",
        "IngressClass",
        "ingressclasses",
        false,
        &[],
        &[],
    ),
    (
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        true,
        &[],
        &[],
    ),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
        &["pdb"],
        &["status"],
    ),
    (
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        false,
        &["sc"],
        &[],
    ),
    (
        "storage.k8s.io",
        "v1",
        "CSIDriver",
        "csidrivers",
        false,
        &[],
        &[],
    ),
    (
        "storage.k8s.io",
        "v1",
        "CSINode",
        "csinodes",
        false,
        &[],
        &[],
    ),
    (
        "storage.k8s.io",
        "v1",
        "VolumeAttachment",
        "volumeattachments",
        false,
        &[],
        &["status"],
    ),
    (
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshot",
        "volumesnapshots",
        true,
        &["vs"],
        &["status"],
    ),
    (
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotContent",
        "volumesnapshotcontents",
        false,
        &["vsc", "vscs"],
        &["status"],
    ),
    (
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotClass",
        "volumesnapshotclasses",
        false,
        &["vsclass", "vsclasses"],
        &[],
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        false,
        &[],
        &[],
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        false,
        &[],
        &[],
    ),
    (
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        true,
        &[],
        &[],
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        &["crd", "crds"],
        &["status"],
    ),
    ("events.k8s.io", "v1", "Event", "events", true, &["ev"], &[]),
];

/// Kinds kubectl lists under `all`.
const CATEGORY_ALL: &[&str] = &[
    "pods",
    "services",
    "replicationcontrollers",
    "deployments",
    "statefulsets",
    "daemonsets",
    "replicasets",
    "jobs",
    "cronjobs",
    "horizontalpodautoscalers",
];

impl Default for Registry {
    fn default() -> Self {
        let resources = BUILTINS
            .iter()
            .map(
                |&(group, version, kind, plural, namespaced, short, subs)| ResourceDef {
                    group: group.to_string(),
                    versions: vec![version.to_string()],
                    plural: plural.to_string(),
                    singular: kind.to_ascii_lowercase(),
                    kind: kind.to_string(),
                    list_kind: format!("{kind}List"),
                    namespaced,
                    short_names: short.iter().map(ToString::to_string).collect(),
                    categories: if CATEGORY_ALL.contains(&plural) {
                        vec!["all".to_string()]
                    } else {
                        Vec::new()
                    },
                    subresources: subs.iter().map(ToString::to_string).collect(),
                    crd: None,
                },
            )
            .collect();
        Self { resources }
    }
}

impl Registry {
    /// The resource served at `group`/`version` under `plural`.
    pub fn by_plural(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceDef> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.plural == plural && r.serves(version))
    }

    /// The resource of an `apiVersion` and `kind` (as written in an object).
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceDef> {
        let (group, version) = split_api_version(api_version);
        self.resources
            .iter()
            .find(|r| r.group == group && r.kind == kind && r.serves(version))
    }

    /// Every resource with its storage key.
    pub fn all(&self) -> &[ResourceDef] {
        &self.resources
    }

    /// Registers (or re-registers) the resources a CRD defines. Returns what it replaced.
    pub fn register_crd(&mut self, def: ResourceDef) -> Option<ResourceDef> {
        let old = self.unregister_crd(def.crd.as_deref().unwrap_or_default());
        self.resources.push(def);
        old
    }

    /// Removes the resource registered by the named CRD.
    pub fn unregister_crd(&mut self, crd_name: &str) -> Option<ResourceDef> {
        let pos = self
            .resources
            .iter()
            .position(|r| r.crd.as_deref() == Some(crd_name))?;
        Some(self.resources.remove(pos))
    }

    /// A group's served versions, preferred first (the order of first appearance).
    fn group_versions(&self, group: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in self.resources.iter().filter(|r| r.group == group) {
            for v in &r.versions {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
        }
        out
    }

    fn groups(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.resources {
            if !r.group.is_empty() && !out.contains(&r.group) {
                out.push(r.group.clone());
            }
        }
        out
    }

    /// `/apis/{group}` (APIGroup).
    pub fn api_group(&self, group: &str) -> Option<Value> {
        let versions = self.group_versions(group);
        let preferred = versions.first()?.clone();
        Some(json!({
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect::<Vec<_>>(),
            "preferredVersion": {"groupVersion": format!("{group}/{preferred}"), "version": preferred},
        }))
    }

    /// `/apis` (APIGroupList).
    pub fn api_group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .iter()
            .filter_map(|g| {
                let mut v = self.api_group(g)?;
                if let Some(obj) = v.as_object_mut() {
                    obj.remove("kind");
                    obj.remove("apiVersion");
                }
                Some(v)
            })
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `/api/v1` or `/apis/{group}/{version}` (APIResourceList), None when not served.
    pub fn api_resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let entries: Vec<Value> = self
            .resources
            .iter()
            .filter(|r| r.group == group && r.serves(version))
            .flat_map(ResourceDef::resource_list_entries)
            .collect();
        if entries.is_empty() {
            return None;
        }
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": entries,
        }))
    }

    /// Aggregated discovery (apidiscovery.k8s.io/v2 APIGroupDiscoveryList) of the core group
    /// (`core == true`, served at `/api`) or of every named group (`/apis`).
    pub fn aggregated(&self, core: bool) -> Value {
        let groups = if core {
            vec![String::new()]
        } else {
            self.groups()
        };
        let items: Vec<Value> = groups
            .iter()
            .map(|g| {
                let versions: Vec<Value> = self
                    .group_versions(g)
                    .iter()
                    .map(|v| {
                        let resources: Vec<Value> = self
                            .resources
                            .iter()
                            .filter(|r| &r.group == g && r.serves(v))
                            .map(|r| r.aggregated_entry(v))
                            .collect();
                        json!({"version": v, "resources": resources, "freshness": "Current"})
                    })
                    .collect();
                json!({"metadata": {"name": g}, "versions": versions})
            })
            .collect();
        json!({
            "kind": "APIGroupDiscoveryList",
            "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {},
            "items": items,
        })
    }
}

/// Splits `group/version` (or a bare core `version`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.rsplit_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// The resource a CustomResourceDefinition defines, or a message saying what is wrong with it.
pub fn crd_resource(crd: &Value) -> Result<ResourceDef, String> {
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .ok_or("metadata.name: Required value")?;
    let spec = crd.get("spec").ok_or("spec: Required value")?;
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let group = text(spec.get("group")).ok_or("spec.group: Required value")?;
    let names = spec.get("names").ok_or("spec.names: Required value")?;
    let plural = text(names.get("plural")).ok_or("spec.names.plural: Required value")?;
    let kind = text(names.get("kind")).ok_or("spec.names.kind: Required value")?;
    if name != format!("{plural}.{group}") {
        return Err(format!(
            "metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
        ));
    }
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let versions_spec = spec
        .get("versions")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
        .ok_or("spec.versions: Required value: must have at least one version")?;
    let mut versions = Vec::new();
    let mut subresources: Vec<String> = Vec::new();
    let mut storage = None;
    for v in versions_spec {
        let vname = text(v.get("name")).ok_or("spec.versions[].name: Required value")?;
        if v.get("storage").and_then(Value::as_bool) == Some(true) {
            storage = Some(vname.clone());
        }
        if v.get("served").and_then(Value::as_bool) != Some(false) {
            versions.push(vname);
        }
        if let Some(subs) = v.get("subresources").and_then(Value::as_object) {
            for s in subs.keys() {
                if !subresources.contains(s) {
                    subresources.push(s.clone());
                }
            }
        }
    }
    // The storage version first: kube's Discovery prefers the first listed version.
    if let Some(s) = storage
        && let Some(pos) = versions.iter().position(|v| *v == s)
    {
        let v = versions.remove(pos);
        versions.insert(0, v);
    }
    if versions.is_empty() {
        return Err("spec.versions: Invalid value: no version is served".to_string());
    }
    Ok(ResourceDef {
        group,
        versions,
        singular: text(names.get("singular")).unwrap_or_else(|| kind.to_ascii_lowercase()),
        list_kind: text(names.get("listKind")).unwrap_or_else(|| format!("{kind}List")),
        plural,
        kind,
        namespaced: spec.get("scope").and_then(Value::as_str) != Some("Cluster"),
        short_names: strings(names.get("shortNames")),
        categories: strings(names.get("categories")),
        subresources,
        crd: Some(name.to_string()),
    })
}
