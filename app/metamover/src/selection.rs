//! What a plan selects, decided per object without any client: the plan is compiled into one
//! [`NamespaceScope`] per namespace, each object of the namespace is classified into a
//! [`Component`] (or left out), and [`close`] adds the dependencies of what was selected
//! (ServiceAccounts, ConfigMaps, Secrets and PVCs referenced by pod templates, RoleBindings
//! naming selected ServiceAccounts and their Roles).

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};
use serde_json::Value;
use tvk_api::{
    backup_plan::{BackupPlanSpec, ClusterBackupPlanSpec, OperatorSelector},
    common::{Resource, ResourceSelector},
};

use crate::{
    error::{Error, Result},
    object::{ObjectKey, labels, name, owner_refs, str_at},
};

/// The part of a snapshot an object belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// A Helm release (by name).
    Helm(String),
    /// An operator (by the plan's `operatorId`).
    Operator(String),
    /// Label/GVK selection or a whole namespace.
    Custom,
}

/// A `ResourceSelector` with its label selectors parsed.
#[derive(Clone, Debug, Default)]
pub struct CompiledSelector {
    gvks: Vec<Resource>,
    labels: Vec<Selector>,
}

impl CompiledSelector {
    /// Parses the label selectors; `what` names the field in errors.
    pub fn new(sel: Option<&ResourceSelector>, plan: &str, what: &str) -> Result<Self> {
        let Some(sel) = sel else {
            return Ok(Self::default());
        };
        let labels = sel
            .label_selector
            .iter()
            .flatten()
            .map(|ls| compile_label_selector(ls, plan, what))
            .collect::<Result<_>>()?;
        Ok(Self {
            gvks: sel.gvk_selector.clone().unwrap_or_default(),
            labels,
        })
    }

    /// Nothing is selected by this selector.
    pub fn is_empty(&self) -> bool {
        self.gvks.is_empty() && self.labels.is_empty()
    }

    /// The GVK entries (`groupVersionKind` + `objects`).
    pub fn gvks(&self) -> &[Resource] {
        &self.gvks
    }

    /// Whether the object matches any GVK entry (by group and kind, and by name when `objects`
    /// is given) or any label selector.
    pub fn matches(&self, key: &ObjectKey, obj_labels: &BTreeMap<String, String>) -> bool {
        self.gvks.iter().any(|r| gvk_entry_matches(r, key))
            || self.labels.iter().any(|s| s.matches(obj_labels))
    }
}

/// A `groupVersionKind` + `objects` entry matches by group and kind (the version is not part of
/// an object's identity: every served version shows the same objects), and by name when names
/// are listed.
pub fn gvk_entry_matches(r: &Resource, key: &ObjectKey) -> bool {
    let g = &r.group_version_kind;
    let group_ok = g.group.as_deref().unwrap_or("") == key.group;
    let kind_ok = g
        .kind
        .as_deref()
        .is_none_or(|k| k.eq_ignore_ascii_case(&key.kind));
    let name_ok = match r.objects.as_deref() {
        None | Some([]) => true,
        Some(names) => names.contains(&key.name),
    };
    group_ok && kind_ok && name_ok
}

fn compile_label_selector(ls: &LabelSelector, plan: &str, what: &str) -> Result<Selector> {
    Selector::try_from(ls.clone()).map_err(|e| Error::Plan {
        plan: plan.to_owned(),
        reason: format!("{what}.labelSelector is not a valid label selector ({e}); fix the plan"),
    })
}

/// An operator of the plan, resolved through OLM (or only through its selectors when it has no
/// Subscription).
#[derive(Clone, Debug, Default)]
pub struct OperatorScope {
    /// The plan's `operatorId`.
    pub id: String,
    /// Subscription name.
    pub subscription: Option<String>,
    /// The installed ClusterServiceVersion.
    pub csv: Option<String>,
    /// `(group, kind)` of the CRDs the CSV owns, and their CRD names.
    pub owned: Vec<OwnedCrd>,
    /// Deployments of the CSV's install strategy.
    pub deployments: Vec<String>,
    /// ServiceAccounts of the CSV's permissions.
    pub service_accounts: Vec<String>,
    /// The plan's `customResources` (all objects of the owned kinds when empty).
    pub custom_resources: Vec<Resource>,
    /// Helm release of a Helm-installed operator.
    pub helm_release: Option<String>,
    /// The plan's `operatorResources`.
    pub operator_resources: CompiledSelector,
    /// The plan's `applicationResources`.
    pub application_resources: CompiledSelector,
    /// The plan's `excludeResources`.
    pub exclude: CompiledSelector,
}

/// One CRD owned by an operator's CSV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedCrd {
    /// CRD name (`plural.group`).
    pub name: String,
    /// Group of the custom resources.
    pub group: String,
    /// Kind of the custom resources.
    pub kind: String,
}

impl OperatorScope {
    /// The scope of a plan's operator entry, before OLM lookups.
    pub fn new(sel: &OperatorSelector, index: usize, plan: &str) -> Result<Self> {
        let id = sel
            .operator_id
            .clone()
            .unwrap_or_else(|| format!("operator-{index}"));
        let field = format!("backupPlanComponents.operators[{index}]");
        Ok(Self {
            subscription: sel.subscription.as_ref().and_then(|s| s.name.clone()),
            custom_resources: sel.custom_resources.clone().unwrap_or_default(),
            helm_release: sel.helm_release.clone(),
            operator_resources: CompiledSelector::new(
                sel.operator_resources.as_ref(),
                plan,
                &format!("{field}.operatorResources"),
            )?,
            application_resources: CompiledSelector::new(
                sel.application_resources.as_ref(),
                plan,
                &format!("{field}.applicationResources"),
            )?,
            exclude: CompiledSelector::new(
                sel.exclude_resources.as_ref(),
                plan,
                &format!("{field}.excludeResources"),
            )?,
            id,
            ..Self::default()
        })
    }

    /// Fills what OLM says about the operator: the Subscription's installed CSV, and from the
    /// CSV its owned CRDs, install Deployments and ServiceAccounts.
    pub fn resolve_olm(&mut self, subscription: &Value, csv: &Value) {
        self.csv = name(csv).map(str::to_owned).or_else(|| {
            str_at(subscription, "/status/installedCSV")
                .or_else(|| str_at(subscription, "/status/currentCSV"))
                .map(str::to_owned)
        });
        self.owned = csv
            .pointer("/spec/customresourcedefinitions/owned")
            .and_then(Value::as_array)
            .map(|owned| {
                owned
                    .iter()
                    .filter_map(|o| {
                        let name = o.get("name")?.as_str()?;
                        let kind = o.get("kind")?.as_str()?;
                        let group = name.split_once('.')?.1;
                        Some(OwnedCrd {
                            name: name.to_owned(),
                            group: group.to_owned(),
                            kind: kind.to_owned(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let strategy = csv.pointer("/spec/install/spec");
        self.deployments = names_at(strategy, "deployments", "name");
        let mut sas = names_at(strategy, "permissions", "serviceAccountName");
        sas.extend(names_at(
            strategy,
            "clusterPermissions",
            "serviceAccountName",
        ));
        sas.sort();
        sas.dedup();
        self.service_accounts = sas;
    }

    /// Whether the object is one of the operator's own objects.
    fn is_operator_object(&self, key: &ObjectKey, obj: &Value) -> bool {
        let olm = key.group == "operators.coreos.com";
        if olm && key.kind == "Subscription" && self.subscription.as_deref() == Some(&key.name) {
            return true;
        }
        if let Some(csv) = self.csv.as_deref() {
            if olm && key.kind == "ClusterServiceVersion" && key.name == csv {
                return true;
            }
            if labels(obj).get("olm.owner").map(String::as_str) == Some(csv)
                || owner_refs(obj)
                    .iter()
                    .any(|o| o.kind == "ClusterServiceVersion" && o.name == csv)
            {
                return true;
            }
        }
        if self.subscription.is_some() && olm && key.kind == "OperatorGroup" {
            return true;
        }
        (key.group == "apps" && key.kind == "Deployment" && self.deployments.contains(&key.name))
            || (key.group.is_empty()
                && key.kind == "ServiceAccount"
                && self.service_accounts.contains(&key.name))
    }

    /// Whether the object is one of the operator application's custom resources.
    fn is_custom_resource(&self, key: &ObjectKey) -> bool {
        if !self.custom_resources.is_empty() {
            return self
                .custom_resources
                .iter()
                .any(|r| gvk_entry_matches(r, key));
        }
        self.owned
            .iter()
            .any(|o| o.group == key.group && o.kind == key.kind)
    }

    fn selects(&self, key: &ObjectKey, obj: &Value, obj_labels: &BTreeMap<String, String>) -> bool {
        if self.exclude.matches(key, obj_labels) {
            return false;
        }
        self.is_operator_object(key, obj)
            || self.is_custom_resource(key)
            || self.operator_resources.matches(key, obj_labels)
            || self.application_resources.matches(key, obj_labels)
    }
}

fn names_at(parent: Option<&Value>, list: &str, field: &str) -> Vec<String> {
    parent
        .and_then(|p| p.get(list))
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get(field)?.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// What to back up in one namespace.
#[derive(Clone, Debug, Default)]
pub struct NamespaceScope {
    /// The namespace.
    pub namespace: String,
    /// Every object of the namespace (a namespace-scoped plan, or a cluster plan's namespace).
    pub whole_namespace: bool,
    /// Added selections (`includeResources`, `customSelector.selectResources`).
    pub include: Vec<CompiledSelector>,
    /// Left-out selections (`excludeResources`, `customSelector.excludeResources`).
    pub exclude: Vec<CompiledSelector>,
    /// Helm release names.
    pub helm_releases: Vec<String>,
    /// Objects of each selected Helm release (filled from the release manifests), with the
    /// component they belong to (the release, or the operator it installs).
    pub helm_objects: HashMap<ObjectKey, Component>,
    /// Operators.
    pub operators: Vec<OperatorScope>,
}

impl NamespaceScope {
    /// The scope of a namespaced BackupPlan. A plan without `backupPlanComponents` backs up its
    /// whole namespace (T4K's Namespace scope); with components, only them plus
    /// `includeResources`.
    pub fn for_backup_plan(spec: &BackupPlanSpec, namespace: &str, plan: &str) -> Result<Self> {
        let components = spec.backup_plan_components.as_ref();
        let custom = components.and_then(|c| c.custom_selector.as_ref());
        let helm_releases = components
            .and_then(|c| c.helm_releases.clone())
            .unwrap_or_default();
        let operators = components
            .and_then(|c| c.operators.as_ref())
            .map(|ops| {
                ops.iter()
                    .enumerate()
                    .map(|(i, o)| OperatorScope::new(o, i, plan))
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?
            .unwrap_or_default();
        let has_components = !helm_releases.is_empty() || !operators.is_empty() || custom.is_some();
        let mut include = vec![CompiledSelector::new(
            spec.include_resources.as_ref(),
            plan,
            "includeResources",
        )?];
        include.push(CompiledSelector::new(
            custom.and_then(|c| c.select_resources.as_ref()),
            plan,
            "backupPlanComponents.customSelector.selectResources",
        )?);
        let exclude = vec![
            CompiledSelector::new(spec.exclude_resources.as_ref(), plan, "excludeResources")?,
            CompiledSelector::new(
                custom.and_then(|c| c.exclude_resources.as_ref()),
                plan,
                "backupPlanComponents.customSelector.excludeResources",
            )?,
        ];
        Ok(Self {
            namespace: namespace.to_owned(),
            whole_namespace: !has_components,
            include,
            exclude,
            helm_releases,
            helm_objects: HashMap::new(),
            operators,
        })
    }

    /// The namespaces of a ClusterBackupPlan ([`ClusterBackupPlanSpec::coverage`], the one
    /// resolution the plan controller reports too; `all_namespaces`: name and labels), whole
    /// namespaces: plan-wide include/exclude apply to all, a `backupComponents[]` entry's own
    /// to its namespace. A plan that cannot run as written (a component namespace that does
    /// not exist, an invalid label selector) is refused with every reason.
    pub fn for_cluster_plan(
        spec: &ClusterBackupPlanSpec,
        all_namespaces: &[(String, BTreeMap<String, String>)],
        plan: &str,
    ) -> Result<Vec<Self>> {
        let coverage = spec.coverage(all_namespaces);
        if !coverage.problems.is_empty() {
            return Err(Error::Plan {
                plan: plan.to_owned(),
                reason: coverage.problems.join("; "),
            });
        }
        let plan_include =
            CompiledSelector::new(spec.include_resources.as_ref(), plan, "includeResources")?;
        let plan_exclude =
            CompiledSelector::new(spec.exclude_resources.as_ref(), plan, "excludeResources")?;
        let components = spec.backup_components.as_deref().unwrap_or_default();
        let mut out = Vec::with_capacity(coverage.namespaces.len());
        for covered in coverage.namespaces {
            let mut scope = Self {
                namespace: covered.namespace,
                whole_namespace: true,
                include: vec![plan_include.clone()],
                exclude: vec![plan_exclude.clone()],
                ..Self::default()
            };
            for i in covered.components {
                let Some(c) = components.get(i) else { continue };
                let field = format!("backupComponents[{i}]");
                scope.include.push(CompiledSelector::new(
                    c.include_resources.as_ref(),
                    plan,
                    &format!("{field}.includeResources"),
                )?);
                scope.exclude.push(CompiledSelector::new(
                    c.exclude_resources.as_ref(),
                    plan,
                    &format!("{field}.excludeResources"),
                )?);
            }
            out.push(scope);
        }
        Ok(out)
    }

    /// Whether the plan leaves this object out explicitly.
    pub fn excludes(&self, key: &ObjectKey, obj_labels: &BTreeMap<String, String>) -> bool {
        self.exclude.iter().any(|e| e.matches(key, obj_labels))
    }

    /// The component an object of this namespace belongs to, or `None` when the plan does not
    /// select it (dependencies are added later by [`close`]).
    pub fn classify(&self, key: &ObjectKey, obj: &Value) -> Option<Component> {
        let obj_labels = labels(obj);
        if self.excludes(key, &obj_labels) {
            return None;
        }
        if let Some(component) = self.helm_objects.get(key) {
            return Some(component.clone());
        }
        if let Some(op) = self
            .operators
            .iter()
            .find(|o| o.selects(key, obj, &obj_labels))
        {
            return Some(Component::Operator(op.id.clone()));
        }
        if self.whole_namespace || self.include.iter().any(|s| s.matches(key, &obj_labels)) {
            return Some(Component::Custom);
        }
        None
    }

    /// Adds the objects of a decoded Helm release to the scope, as part of `component` (the
    /// release itself, or the operator a Helm-installed operator's release belongs to).
    pub fn add_helm_objects(&mut self, component: &Component, keys: Vec<ObjectKey>) {
        for k in keys {
            self.helm_objects
                .entry(k)
                .or_insert_with(|| component.clone());
        }
    }
}

/// What an object needs to work once restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    /// A named object (same namespace).
    Object(ObjectKey),
    /// PVCs named `<prefix><ordinal>` (StatefulSet volume claim templates).
    PvcPrefix {
        /// Namespace.
        namespace: String,
        /// `<template>-<statefulset>-`.
        prefix: String,
    },
}

/// Where a workload object keeps its pod spec (a JSON pointer), wherever its kind keeps it.
pub fn pod_spec_pointer(obj: &Value) -> Option<&'static str> {
    [
        "/spec/template/spec",
        "/spec/jobTemplate/spec/template/spec",
    ]
    .into_iter()
    .find(|p| obj.pointer(p).is_some())
    .or_else(|| {
        (str_at(obj, "/kind") == Some("Pod") && obj.get("spec").is_some()).then_some("/spec")
    })
}

/// The pod spec inside a workload object, wherever its kind keeps it.
pub fn pod_spec(obj: &Value) -> Option<&Value> {
    obj.pointer(pod_spec_pointer(obj)?)
}

/// ServiceAccounts, ConfigMaps, Secrets and PVCs a workload's pod template refers to, and the
/// PVCs of a StatefulSet's claim templates.
pub fn references(obj: &Value, namespace: &str) -> Vec<Reference> {
    let mut out = Vec::new();
    let core =
        |kind: &str, name: &str| Reference::Object(ObjectKey::new("", kind, Some(namespace), name));
    if let Some(spec) = pod_spec(obj) {
        if let Some(sa) =
            str_at(spec, "/serviceAccountName").or_else(|| str_at(spec, "/serviceAccount"))
        {
            out.push(core("ServiceAccount", sa));
        }
        for s in spec
            .get("imagePullSecrets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = str_at(s, "/name") {
                out.push(core("Secret", n));
            }
        }
        for v in spec
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = str_at(v, "/configMap/name") {
                out.push(core("ConfigMap", n));
            }
            if let Some(n) = str_at(v, "/secret/secretName") {
                out.push(core("Secret", n));
            }
            if let Some(n) = str_at(v, "/persistentVolumeClaim/claimName") {
                out.push(core("PersistentVolumeClaim", n));
            }
            for src in v
                .pointer("/projected/sources")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(n) = str_at(src, "/configMap/name") {
                    out.push(core("ConfigMap", n));
                }
                if let Some(n) = str_at(src, "/secret/name") {
                    out.push(core("Secret", n));
                }
            }
        }
        for list in ["containers", "initContainers", "ephemeralContainers"] {
            for c in spec
                .get(list)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for ef in c
                    .get("envFrom")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(n) = str_at(ef, "/configMapRef/name") {
                        out.push(core("ConfigMap", n));
                    }
                    if let Some(n) = str_at(ef, "/secretRef/name") {
                        out.push(core("Secret", n));
                    }
                }
                for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(n) = str_at(e, "/valueFrom/configMapKeyRef/name") {
                        out.push(core("ConfigMap", n));
                    }
                    if let Some(n) = str_at(e, "/valueFrom/secretKeyRef/name") {
                        out.push(core("Secret", n));
                    }
                }
            }
        }
    }
    if str_at(obj, "/kind") == Some("StatefulSet")
        && let Some(sts) = name(obj)
    {
        for t in obj
            .pointer("/spec/volumeClaimTemplates")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = str_at(t, "/metadata/name") {
                out.push(Reference::PvcPrefix {
                    namespace: namespace.to_owned(),
                    prefix: format!("{t}-{sts}-"),
                });
            }
        }
    }
    out.dedup();
    out
}

/// The ServiceAccounts a RoleBinding names, and the Role it grants (ClusterRoles are
/// cluster-wide and not pulled in).
pub fn role_binding_links(obj: &Value, namespace: &str) -> (Vec<ObjectKey>, Option<ObjectKey>) {
    let sas = obj
        .get("subjects")
        .and_then(Value::as_array)
        .map(|subjects| {
            subjects
                .iter()
                .filter(|s| str_at(s, "/kind") == Some("ServiceAccount"))
                .filter_map(|s| {
                    let ns = str_at(s, "/namespace").unwrap_or(namespace);
                    Some(ObjectKey::new(
                        "",
                        "ServiceAccount",
                        Some(ns),
                        str_at(s, "/name")?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let role = (str_at(obj, "/roleRef/kind") == Some("Role"))
        .then(|| str_at(obj, "/roleRef/name"))
        .flatten()
        .map(|n| ObjectKey::new("rbac.authorization.k8s.io", "Role", Some(namespace), n));
    (sas, role)
}

/// One object of the inventory: identity, decision and links.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Identity.
    pub key: ObjectKey,
    /// UID.
    pub uid: String,
    /// Selected, and for which component.
    pub component: Option<Component>,
    /// Left out explicitly by the plan (never pulled in as a dependency).
    pub excluded: bool,
    /// What it needs.
    pub references: Vec<Reference>,
    /// For RoleBindings: the ServiceAccounts named and the Role granted.
    pub binds: (Vec<ObjectKey>, Option<ObjectKey>),
}

impl Entry {
    /// The inventory entry of an object of `scope`.
    pub fn new(scope: &NamespaceScope, key: ObjectKey, obj: &Value) -> Self {
        let component = scope.classify(&key, obj);
        let excluded = scope.excludes(&key, &labels(obj));
        let ns = key.namespace.clone().unwrap_or_default();
        let references = references(obj, &ns);
        let binds = if key.group == "rbac.authorization.k8s.io" && key.kind == "RoleBinding" {
            role_binding_links(obj, &ns)
        } else {
            (Vec::new(), None)
        };
        Self {
            uid: crate::object::uid(obj).unwrap_or_default().to_owned(),
            key,
            component,
            excluded,
            references,
            binds,
        }
    }
}

/// Adds dependencies to the selection until nothing changes: what selected pod templates refer
/// to, RoleBindings naming selected ServiceAccounts and the Roles they grant. A dependency
/// belongs to the component of the first object that needed it. Returns the references that
/// name no object (reported as warnings).
pub fn close(entries: &mut [Entry]) -> Vec<String> {
    let index: HashMap<ObjectKey, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.key.clone(), i))
        .collect();
    let mut missing = HashSet::new();
    loop {
        let mut adds: Vec<(usize, Component)> = Vec::new();
        for e in entries.iter() {
            let Some(c) = &e.component else {
                // A RoleBinding is pulled in by the ServiceAccounts it names.
                if !e.excluded
                    && let Some(c) =
                        e.binds.0.iter().find_map(|sa| {
                            index.get(sa).and_then(|&i| entries[i].component.clone())
                        })
                {
                    adds.push((index[&e.key], c));
                }
                continue;
            };
            for r in &e.references {
                match r {
                    Reference::Object(k) => match index.get(k) {
                        Some(&i) => adds.push((i, c.clone())),
                        None => {
                            missing.insert(format!("{} needs {k}, which does not exist", e.key));
                        }
                    },
                    Reference::PvcPrefix { namespace, prefix } => {
                        for (i, other) in entries.iter().enumerate() {
                            if other.key.kind == "PersistentVolumeClaim"
                                && other.key.group.is_empty()
                                && other.key.namespace.as_deref() == Some(namespace)
                                && other.key.name.strip_prefix(prefix.as_str()).is_some_and(
                                    |rest| {
                                        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
                                    },
                                )
                            {
                                adds.push((i, c.clone()));
                            }
                        }
                    }
                }
            }
            if let Some(role) = &e.binds.1
                && let Some(&i) = index.get(role)
            {
                adds.push((i, c.clone()));
            }
        }
        let mut changed = false;
        for (i, c) in adds {
            let target = &mut entries[i];
            if target.component.is_none() && !target.excluded {
                target.component = Some(c);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut missing: Vec<String> = missing.into_iter().collect();
    missing.sort();
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tvk_api::BackupPlanSpec;

    fn plan(spec: Value) -> BackupPlanSpec {
        let mut base = json!({"backupConfig": {"target": {"name": "t"}}});
        if let (Some(b), Some(s)) = (base.as_object_mut(), spec.as_object()) {
            b.extend(s.clone());
        }
        serde_json::from_value(base).unwrap()
    }

    fn obj(api: &str, kind: &str, ns: &str, name: &str, labels: Value) -> Value {
        json!({"apiVersion": api, "kind": kind,
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{kind}-{name}"), "labels": labels}})
    }

    fn key_of(o: &Value) -> ObjectKey {
        ObjectKey::of(o, None).unwrap()
    }

    #[test]
    fn namespace_plan_takes_everything_but_excludes() {
        let spec = plan(json!({"excludeResources": {
            "gvkSelector": [{"groupVersionKind": {"group": "", "version": "v1", "kind": "Secret"}, "objects": ["skip-me"]}],
            "labelSelector": [{"matchLabels": {"backup": "no"}}]}}));
        let scope = NamespaceScope::for_backup_plan(&spec, "app", "p").unwrap();
        assert!(scope.whole_namespace);
        let cm = obj("v1", "ConfigMap", "app", "c", json!({}));
        assert_eq!(scope.classify(&key_of(&cm), &cm), Some(Component::Custom));
        let s1 = obj("v1", "Secret", "app", "skip-me", json!({}));
        assert_eq!(scope.classify(&key_of(&s1), &s1), None);
        let s2 = obj("v1", "Secret", "app", "other", json!({}));
        assert_eq!(scope.classify(&key_of(&s2), &s2), Some(Component::Custom));
        let labelled = obj("apps/v1", "Deployment", "app", "d", json!({"backup": "no"}));
        assert_eq!(scope.classify(&key_of(&labelled), &labelled), None);
    }

    #[test]
    fn custom_selector_selects_by_labels_and_gvk_names() {
        let spec = plan(json!({"backupPlanComponents": {"customSelector": {
            "selectResources": {
                "labelSelector": [{"matchExpressions": [{"key": "tier", "operator": "In", "values": ["db", "cache"]}]}],
                "gvkSelector": [{"groupVersionKind": {"group": "apps", "version": "v1", "kind": "Deployment"}, "objects": ["web"]}]},
            "excludeResources": {"labelSelector": [{"matchLabels": {"tier": "cache"}}]}}}}));
        let scope = NamespaceScope::for_backup_plan(&spec, "app", "p").unwrap();
        assert!(!scope.whole_namespace);
        let db = obj("apps/v1", "StatefulSet", "app", "db", json!({"tier": "db"}));
        let cache = obj(
            "apps/v1",
            "StatefulSet",
            "app",
            "cache",
            json!({"tier": "cache"}),
        );
        let web = obj("apps/v1", "Deployment", "app", "web", json!({}));
        let api = obj("apps/v1", "Deployment", "app", "api", json!({}));
        assert_eq!(scope.classify(&key_of(&db), &db), Some(Component::Custom));
        assert_eq!(scope.classify(&key_of(&cache), &cache), None);
        assert_eq!(scope.classify(&key_of(&web), &web), Some(Component::Custom));
        assert_eq!(scope.classify(&key_of(&api), &api), None);
    }

    #[test]
    fn invalid_label_selector_is_a_plan_error() {
        let spec = plan(json!({"includeResources": {"labelSelector": [
            {"matchExpressions": [{"key": "a", "operator": "Bogus", "values": ["x"]}]}]}}));
        let err = NamespaceScope::for_backup_plan(&spec, "app", "p")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("includeResources.labelSelector") && err.contains("p"),
            "{err}"
        );
    }

    #[test]
    fn helm_objects_belong_to_their_release() {
        let spec = plan(json!({"backupPlanComponents": {"helmReleases": ["web"]}}));
        let mut scope = NamespaceScope::for_backup_plan(&spec, "shop", "p").unwrap();
        scope.add_helm_objects(
            &Component::Helm("web".into()),
            vec![ObjectKey::new("apps", "Deployment", Some("shop"), "web")],
        );
        let d = obj("apps/v2", "Deployment", "shop", "web", json!({}));
        assert_eq!(
            scope.classify(&key_of(&d), &d),
            Some(Component::Helm("web".into()))
        );
        let other = obj("apps/v1", "Deployment", "shop", "other", json!({}));
        assert_eq!(scope.classify(&key_of(&other), &other), None);
    }

    #[test]
    fn olm_operator_objects_and_custom_resources_are_found() {
        let spec = plan(json!({"backupPlanComponents": {"operators": [
            {"operatorId": "etcd", "subscription": {"name": "etcd-sub"}}]}}));
        let mut scope = NamespaceScope::for_backup_plan(&spec, "ops", "p").unwrap();
        let sub = json!({"apiVersion": "operators.coreos.com/v1alpha1", "kind": "Subscription",
            "metadata": {"name": "etcd-sub", "namespace": "ops"},
            "status": {"installedCSV": "etcdoperator.v0.9.4"}});
        let csv = json!({"apiVersion": "operators.coreos.com/v1alpha1", "kind": "ClusterServiceVersion",
            "metadata": {"name": "etcdoperator.v0.9.4", "namespace": "ops"},
            "spec": {"customresourcedefinitions": {"owned": [
                {"name": "etcdclusters.etcd.database.coreos.com", "kind": "EtcdCluster", "version": "v1beta2"}]},
                "install": {"strategy": "deployment", "spec": {
                    "deployments": [{"name": "etcd-operator"}],
                    "permissions": [{"serviceAccountName": "etcd-operator"}]}}}});
        scope.operators[0].resolve_olm(&sub, &csv);
        assert_eq!(
            scope.operators[0].csv.as_deref(),
            Some("etcdoperator.v0.9.4")
        );
        assert_eq!(
            scope.operators[0].owned[0].group,
            "etcd.database.coreos.com"
        );
        let op = Some(Component::Operator("etcd".into()));
        for o in [
            sub.clone(),
            csv.clone(),
            obj(
                "operators.coreos.com/v1",
                "OperatorGroup",
                "ops",
                "og",
                json!({}),
            ),
            obj("apps/v1", "Deployment", "ops", "etcd-operator", json!({})),
            obj("v1", "ServiceAccount", "ops", "etcd-operator", json!({})),
            obj(
                "rbac.authorization.k8s.io/v1",
                "Role",
                "ops",
                "etcdoperator.v0.9.4-abc",
                json!({"olm.owner": "etcdoperator.v0.9.4"}),
            ),
            obj(
                "etcd.database.coreos.com/v1beta2",
                "EtcdCluster",
                "ops",
                "example",
                json!({}),
            ),
        ] {
            assert_eq!(scope.classify(&key_of(&o), &o), op, "{}", key_of(&o));
        }
        let unrelated = obj("apps/v1", "Deployment", "ops", "web", json!({}));
        assert_eq!(scope.classify(&key_of(&unrelated), &unrelated), None);
    }

    #[test]
    fn operator_custom_resources_can_be_narrowed_by_name() {
        let spec = plan(json!({"backupPlanComponents": {"operators": [
            {"operatorId": "mysql", "customResources": [{"groupVersionKind":
                {"group": "mysql.presslabs.org", "version": "v1alpha1", "kind": "MysqlCluster"},
                "objects": ["one"]}]}]}}));
        let scope = NamespaceScope::for_backup_plan(&spec, "db", "p").unwrap();
        let one = obj(
            "mysql.presslabs.org/v1alpha1",
            "MysqlCluster",
            "db",
            "one",
            json!({}),
        );
        let two = obj(
            "mysql.presslabs.org/v1alpha1",
            "MysqlCluster",
            "db",
            "two",
            json!({}),
        );
        assert!(scope.classify(&key_of(&one), &one).is_some());
        assert_eq!(scope.classify(&key_of(&two), &two), None);
    }

    #[test]
    fn cluster_plan_namespaces_from_components_and_selectors() {
        let spec: ClusterBackupPlanSpec = serde_json::from_value(json!({
            "backupConfig": {"target": {"name": "t"}},
            "backupComponents": [{"namespace": "a"}],
            "namespaceSelector": [{"name": "prod", "labelSelector": [{"matchLabels": {"env": "prod"}}]}]}))
        .unwrap();
        let nss = vec![
            ("a".to_owned(), BTreeMap::new()),
            (
                "b".to_owned(),
                BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
            ),
            (
                "c".to_owned(),
                BTreeMap::from([("env".to_owned(), "dev".to_owned())]),
            ),
        ];
        let scopes = NamespaceScope::for_cluster_plan(&spec, &nss, "cp").unwrap();
        let names: Vec<_> = scopes.iter().map(|s| s.namespace.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(scopes.iter().all(|s| s.whole_namespace));
        // A component namespace that does not exist: refused with the plan controller's reason.
        let err = NamespaceScope::for_cluster_plan(&spec, &nss[1..], "cp").unwrap_err();
        assert!(
            err.to_string()
                .contains("backupComponents[0]: namespace a does not exist"),
            "{err}"
        );
    }

    #[test]
    fn dependencies_of_selected_workloads_are_pulled_in() {
        let spec = plan(
            json!({"backupPlanComponents": {"customSelector": {"selectResources": {
            "labelSelector": [{"matchLabels": {"app": "db"}}]}}}}),
        );
        let scope = NamespaceScope::for_backup_plan(&spec, "app", "p").unwrap();
        let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "app", "uid": "s", "labels": {"app": "db"}},
            "spec": {"template": {"spec": {"serviceAccountName": "db-sa",
                "volumes": [{"name": "cfg", "configMap": {"name": "db-config"}},
                            {"name": "extra", "persistentVolumeClaim": {"claimName": "shared"}}],
                "containers": [{"name": "db", "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db-pass", "key": "p"}}}]}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}}]}});
        let others = [
            obj("v1", "ServiceAccount", "app", "db-sa", json!({})),
            obj("v1", "ConfigMap", "app", "db-config", json!({})),
            obj("v1", "Secret", "app", "db-pass", json!({})),
            obj("v1", "PersistentVolumeClaim", "app", "shared", json!({})),
            obj("v1", "PersistentVolumeClaim", "app", "data-db-0", json!({})),
            obj("v1", "PersistentVolumeClaim", "app", "data-db-1", json!({})),
            obj(
                "v1",
                "PersistentVolumeClaim",
                "app",
                "data-dbx-0",
                json!({}),
            ),
            obj("v1", "ConfigMap", "app", "unrelated", json!({})),
            obj(
                "rbac.authorization.k8s.io/v1",
                "Role",
                "app",
                "db-role",
                json!({}),
            ),
            obj(
                "rbac.authorization.k8s.io/v1",
                "Role",
                "app",
                "other-role",
                json!({}),
            ),
        ];
        let rb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "db-rb", "namespace": "app", "uid": "rb"},
            "subjects": [{"kind": "ServiceAccount", "name": "db-sa"}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "db-role"}});
        let mut entries: Vec<Entry> = std::iter::once(&sts)
            .chain(others.iter())
            .chain(std::iter::once(&rb))
            .map(|o| Entry::new(&scope, key_of(o), o))
            .collect();
        let missing = close(&mut entries);
        assert!(missing.is_empty(), "{missing:?}");
        let selected: Vec<String> = entries
            .iter()
            .filter(|e| e.component.is_some())
            .map(|e| format!("{}/{}", e.key.kind, e.key.name))
            .collect();
        assert_eq!(
            selected,
            [
                "StatefulSet/db",
                "ServiceAccount/db-sa",
                "ConfigMap/db-config",
                "Secret/db-pass",
                "PersistentVolumeClaim/shared",
                "PersistentVolumeClaim/data-db-0",
                "PersistentVolumeClaim/data-db-1",
                "Role/db-role",
                "RoleBinding/db-rb",
            ]
        );
    }

    #[test]
    fn missing_references_are_reported_and_excluded_ones_stay_out() {
        let spec = plan(json!({"excludeResources": {"gvkSelector": [
            {"groupVersionKind": {"group": "", "version": "v1", "kind": "Secret"}}]}}));
        let scope = NamespaceScope::for_backup_plan(&spec, "app", "p").unwrap();
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "app", "uid": "d"},
            "spec": {"template": {"spec": {"serviceAccountName": "ghost",
                "imagePullSecrets": [{"name": "pull"}], "containers": []}}}});
        let secret = obj("v1", "Secret", "app", "pull", json!({}));
        let mut entries = vec![
            Entry::new(&scope, key_of(&d), &d),
            Entry::new(&scope, key_of(&secret), &secret),
        ];
        let missing = close(&mut entries);
        assert_eq!(missing.len(), 1);
        assert!(
            missing[0].contains("ServiceAccount app/ghost"),
            "{missing:?}"
        );
        assert_eq!(entries[1].component, None);
    }
}
