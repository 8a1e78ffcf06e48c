//! Restore planning, pure: which backed-up object goes where, in which order, with which action,
//! rewritten how — decided without a client from the backup's objects, the Restore's spec and a
//! [`Live`] view of the destination that the async edge ([`crate::restore`]) gathered.
//!
//! - [`NamespaceMap`]: a Restore restores into its own namespace; a ClusterRestore maps
//!   `components[].backupNamespace` → `restoreNamespace` (same name when absent or not listed)
//!   and drops `excludeComponents`.
//! - [`Settings`]: the restore settings of one backed-up namespace (a Restore's spec; for a
//!   ClusterRestore `globalConfig` overridden field by field by the component's
//!   `restoreConfig`).
//! - [`prepare`]: per object, the destination identity, the rank in restore order, the action
//!   before looking at the destination (Create, or Exclude/Skip with the reason) and the
//!   rewritten object with transforms applied.
//! - [`judge`]: the action once the destination is known (conflicts against
//!   `cleanupConfig`, `skipIfAlreadyExists` / `patchIfAlreadyExists` / `patchCRD`), blocking
//!   problems.
//! - [`volumes`]: the PVCs the DataRestore phase creates and hydrates.
//! - [`render`]: Helm releases re-rendered for `transformComponents.helm` and renamed when the
//!   destination already has a release of their name.

pub mod render;

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
};

use serde::Deserialize;
use serde_json::{Map, Value, json};
use tvk_api::{
    common::{Resource, ResourceSelector},
    restore::{RestoreCleanupConfig, RestoreFlags, TransformComponents},
    restore_plan::{PlanAction, PlannedObject, PlannedVolume},
    snapshot::Snapshot,
};

use crate::{
    clean,
    error::Error,
    helm,
    object::{Gvk, ObjectKey, gvk_of, labels, name, namespace, owner_refs, str_at},
    selection::{CompiledSelector, gvk_entry_matches},
};

/// Label on every object a restore creates: the Restore's UID.
pub const RESTORE_UID_LABEL: &str = "triliovault.trilio.io/restore-uid";

/// Reason of an existing object the restore replaces: `cleanupConfig` deletes it before the
/// restore writes anything (the control plane deletes exactly the planned objects and volume
/// claims that exist without this restore's label).
pub const CLEANUP_REPLACES: &str =
    "exists in the destination: deleted before the restore (cleanupConfig), then restored";

/// Default of `resourcesReadyWaitSeconds`.
pub const DEFAULT_READY_WAIT_SECONDS: i64 = 600;

/// The restore settings that can be given per namespace (a Restore's spec fields; a
/// ClusterRestore's `globalConfig` and `components[].restoreConfig`).
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct RestoreConfig {
    /// Flags.
    #[serde(default)]
    pub restore_flags: Option<RestoreFlags>,
    /// Transforms.
    #[serde(default)]
    pub transform_components: Option<TransformComponents>,
    /// Only these resources.
    #[serde(default)]
    pub resource_selector: Option<ResourceSelector>,
    /// Not these.
    #[serde(default)]
    pub exclude_resource_selector: Option<ResourceSelector>,
    /// Not these (older form).
    #[serde(default)]
    pub exclude_resources: Option<Vec<Resource>>,
    /// Wait for workloads.
    #[serde(default)]
    pub resources_ready_wait_seconds: Option<i64>,
    /// Delete the existing application first.
    #[serde(default)]
    pub cleanup_config: Option<RestoreCleanupConfig>,
}

impl RestoreConfig {
    /// Reads a free-form config (`globalConfig`, `restoreConfig`); `what` names it in errors.
    pub fn from_value(v: Option<&Value>, what: &str) -> std::result::Result<Self, String> {
        match v {
            None | Some(Value::Null) => Ok(Self::default()),
            Some(v) => Self::deserialize(v)
                .map_err(|e| format!("{what} is not a valid restore configuration: {e}")),
        }
    }

    /// `self` with every field `over` sets taken from `over`.
    pub fn overridden_by(&self, over: &Self) -> Self {
        Self {
            restore_flags: over
                .restore_flags
                .clone()
                .or_else(|| self.restore_flags.clone()),
            transform_components: over
                .transform_components
                .clone()
                .or_else(|| self.transform_components.clone()),
            resource_selector: over
                .resource_selector
                .clone()
                .or_else(|| self.resource_selector.clone()),
            exclude_resource_selector: over
                .exclude_resource_selector
                .clone()
                .or_else(|| self.exclude_resource_selector.clone()),
            exclude_resources: over
                .exclude_resources
                .clone()
                .or_else(|| self.exclude_resources.clone()),
            resources_ready_wait_seconds: over
                .resources_ready_wait_seconds
                .or(self.resources_ready_wait_seconds),
            cleanup_config: over
                .cleanup_config
                .clone()
                .or_else(|| self.cleanup_config.clone()),
        }
    }
}

/// One namespace's settings, compiled.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Flags (absent = all false).
    pub flags: RestoreFlags,
    /// `resourceSelector` (empty = everything).
    pub include: CompiledSelector,
    /// `excludeResourceSelector`.
    pub exclude: CompiledSelector,
    /// `excludeResources` (GVK + names).
    pub exclude_resources: Vec<Resource>,
    /// Transforms.
    pub transforms: TransformComponents,
    /// Seconds to wait for workloads.
    pub ready_wait_seconds: i64,
    /// `cleanupConfig.enabled`: existing objects the restore creates are deleted first.
    pub cleanup: bool,
    /// Whether `cleanup` covers cluster-scoped objects: a ClusterRestore's (cluster-wide by
    /// nature), never a Restore's — a namespaced Restore deletes nothing outside its namespace.
    pub cleanup_cluster_scoped: bool,
}

impl Settings {
    /// Compiles a config; an invalid label selector is a message for `blocking`.
    pub fn compile(c: &RestoreConfig) -> std::result::Result<Self, String> {
        let sel = |s: Option<&ResourceSelector>, what: &str| {
            CompiledSelector::new(s, "restore", what).map_err(|e| match e {
                Error::Plan { reason, .. } => reason.replace("fix the plan", "fix the Restore"),
                other => other.to_string(),
            })
        };
        Ok(Self {
            flags: c.restore_flags.clone().unwrap_or_default(),
            include: sel(c.resource_selector.as_ref(), "resourceSelector")?,
            exclude: sel(
                c.exclude_resource_selector.as_ref(),
                "excludeResourceSelector",
            )?,
            exclude_resources: c.exclude_resources.clone().unwrap_or_default(),
            transforms: c.transform_components.clone().unwrap_or_default(),
            ready_wait_seconds: c
                .resources_ready_wait_seconds
                .unwrap_or(DEFAULT_READY_WAIT_SECONDS),
            cleanup: c.cleanup_config.as_ref().is_some_and(|c| c.enabled),
            cleanup_cluster_scoped: c.cleanup_config.as_ref().is_some_and(|c| c.enabled),
        })
    }

    /// A flag's value (absent = false).
    pub fn flag_value(f: Option<bool>) -> bool {
        f == Some(true)
    }

    /// `restoreFlags.storageClassMapping` {backed-up class: destination class} (T4K field kept
    /// among the flags' unknown fields).
    pub fn storage_class_mapping(&self) -> BTreeMap<String, String> {
        self.flags
            .unknown
            .get("storageClassMapping")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Where each backed-up namespace goes, and with which settings.
#[derive(Clone, Debug, Default)]
pub struct NamespaceMap {
    /// A Restore: everything goes into this namespace.
    pub single: Option<String>,
    /// ClusterRestore components: backup namespace → restore namespace.
    pub components: BTreeMap<String, String>,
    /// ClusterRestore `excludeComponents`.
    pub excluded: BTreeSet<String>,
    /// Settings of cluster-scoped objects (and namespaces without their own).
    pub global: Settings,
    /// Per backed-up namespace settings (ClusterRestore components with a `restoreConfig`).
    pub per_namespace: BTreeMap<String, Settings>,
    /// The namespaces the backup holds (binding subjects in other namespaces are not mapped).
    pub backed_up: BTreeSet<String>,
}

impl NamespaceMap {
    /// A Restore into `namespace`.
    pub fn restore(namespace: &str, settings: Settings) -> Self {
        Self {
            single: Some(namespace.to_owned()),
            global: Settings {
                cleanup_cluster_scoped: false,
                ..settings
            },
            ..Self::default()
        }
    }

    /// Destination of a backed-up namespace; `None` when it is not restored.
    pub fn map(&self, source: &str) -> Option<String> {
        if let Some(ns) = &self.single {
            return Some(ns.clone());
        }
        if self.excluded.contains(source) {
            return None;
        }
        Some(
            self.components
                .get(source)
                .cloned()
                .unwrap_or_else(|| source.to_owned()),
        )
    }

    /// Settings of the objects of a backed-up namespace (`None`: cluster-scoped).
    pub fn settings(&self, source: Option<&str>) -> &Settings {
        source
            .and_then(|s| self.per_namespace.get(s))
            .unwrap_or(&self.global)
    }
}

/// One backed-up object.
#[derive(Clone, Debug)]
pub struct BackupObject {
    /// The object as stored (cleaned at backup time).
    pub obj: Value,
    /// It is a Helm release storage object (restored last, so `helm list` shows the release
    /// once its objects exist).
    pub helm_storage: bool,
}

/// Identity of an object in the destination.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestKey {
    /// `apiVersion`.
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Namespace.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl DestKey {
    /// Group of `apiVersion`.
    pub fn group(&self) -> &str {
        self.api_version
            .split_once('/')
            .map(|(g, _)| g)
            .unwrap_or("")
    }

    /// The object key (group, kind, namespace, name).
    pub fn object_key(&self) -> ObjectKey {
        ObjectKey::new(
            self.group(),
            &self.kind,
            self.namespace.as_deref(),
            &self.name,
        )
    }
}

impl std::fmt::Display for DestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.object_key().fmt(f)
    }
}

/// One object, prepared for the destination.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// Where it was.
    pub source: ObjectKey,
    /// Where it goes.
    pub dest: DestKey,
    /// Position class in restore order ([`rank`]).
    pub rank: u8,
    /// Action before looking at the destination: Create, Skip or Exclude.
    pub action: PlanAction,
    /// Why Skip/Exclude.
    pub reason: Option<String>,
    /// The object to write (rewritten, transformed); `Err` when a transform failed.
    pub object: std::result::Result<Value, String>,
    /// Helm release storage.
    pub helm_storage: bool,
}

impl Prepared {
    /// The plan entry of this object.
    pub fn planned(&self, action: PlanAction, reason: Option<String>) -> PlannedObject {
        PlannedObject {
            api_version: self.dest.api_version.clone(),
            kind: self.dest.kind.clone(),
            namespace: self.dest.namespace.clone(),
            name: self.dest.name.clone(),
            source_namespace: self
                .source
                .namespace
                .clone()
                .filter(|s| Some(s) != self.dest.namespace.as_ref()),
            action,
            reason,
            ..PlannedObject::default()
        }
    }
}

/// Restore order: CRDs, Namespaces, ClusterRoles, ClusterRoleBindings and StorageClasses,
/// ServiceAccounts, Roles,
/// RoleBindings, ConfigMaps, Secrets, PVCs, Services, workloads (Deployments, StatefulSets,
/// DaemonSets, Jobs, CronJobs), other built-in types, custom resources, Helm release storage.
pub fn rank(group: &str, kind: &str, custom: bool, helm_storage: bool) -> u8 {
    if helm_storage {
        return 18;
    }
    match (group, kind) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") => 0,
        ("", "Namespace") => 1,
        ("rbac.authorization.k8s.io", "ClusterRole") => 2,
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => 3,
        // Backed-up StorageClass objects (a chart's) before the claims that use them.
        ("storage.k8s.io", "StorageClass") => 3,
        ("", "ServiceAccount") => 4,
        ("rbac.authorization.k8s.io", "Role") => 5,
        ("rbac.authorization.k8s.io", "RoleBinding") => 6,
        ("", "ConfigMap") => 7,
        ("", "Secret") => 8,
        ("", "PersistentVolumeClaim") => 9,
        ("", "Service") => 10,
        ("apps", "Deployment") => 11,
        ("apps", "StatefulSet") => 12,
        ("apps", "DaemonSet") => 13,
        ("batch", "Job") => 14,
        ("batch", "CronJob") => 15,
        _ if custom => 17,
        _ => 16,
    }
}

/// Whether a group is one of Kubernetes' own (core, no dot, or `*.k8s.io`).
pub fn is_builtin_group(group: &str) -> bool {
    group.is_empty() || !group.contains('.') || group.ends_with(".k8s.io")
}

/// `(group, kind)` of the custom resources the backup's CRDs define.
pub fn crd_kinds(objects: &[BackupObject]) -> HashSet<(String, String)> {
    objects
        .iter()
        .filter(|o| {
            gvk_of(&o.obj).is_some_and(|g| {
                g.group == "apiextensions.k8s.io" && g.kind == "CustomResourceDefinition"
            })
        })
        .filter_map(|o| {
            Some((
                str_at(&o.obj, "/spec/group")?.to_owned(),
                str_at(&o.obj, "/spec/names/kind")?.to_owned(),
            ))
        })
        .collect()
}

/// What the backup says about its objects, for [`prepare`].
#[derive(Clone, Debug, Default)]
pub struct BackupFacts {
    /// `(namespace, name)` of the PVCs the DataRestore phase restores (with their data).
    pub volume_pvcs: HashSet<(String, String)>,
    /// Objects of operators (`snapshot.operators[].operatorResources`), for
    /// `skipOperatorResources`: `(group, kind, name)`.
    pub operator_resources: Vec<Resource>,
    /// Helm releases and the namespace their storage is in.
    pub helm_releases: BTreeSet<(String, String)>,
}

impl BackupFacts {
    /// From the committed `status.snapshot`. `default_ns` is the Backup's namespace.
    pub fn new(snapshot: &Snapshot, default_ns: Option<&str>, only_metadata: bool) -> Self {
        let volume_pvcs = if only_metadata {
            HashSet::new()
        } else {
            snapshot
                .data_snapshots()
                .filter_map(|d| {
                    let ns = d.namespace.as_deref().or(default_ns)?;
                    Some((ns.to_owned(), d.persistent_volume_claim_name.clone()))
                })
                .collect()
        };
        Self {
            volume_pvcs,
            operator_resources: snapshot
                .operators
                .iter()
                .flat_map(|o| o.operator_resources.iter().cloned())
                .collect(),
            helm_releases: BTreeSet::new(),
        }
    }
}

/// Prepares every object: destination, order, action before the destination is looked at,
/// rewritten object. `helm` (from [`render::plan_releases`]) patches, renames, adds and
/// excludes the objects of re-rendered Helm releases. The result is sorted in restore order.
pub fn prepare(
    objects: &[BackupObject],
    map: &NamespaceMap,
    facts: &BackupFacts,
    helm: &render::HelmPlan,
    restore_uid: &str,
) -> Vec<Prepared> {
    let custom_kinds = crd_kinds(objects);
    let mut out: Vec<Prepared> = objects
        .iter()
        .chain(&helm.added)
        .filter_map(|o| prepare_one(o, map, facts, helm, &custom_kinds, restore_uid))
        .collect();
    // CRDs of excluded custom resources stay; a CRD is excluded only by name.
    out.sort_by(|a, b| {
        (a.rank, &a.dest.namespace, &a.dest.kind, &a.dest.name).cmp(&(
            b.rank,
            &b.dest.namespace,
            &b.dest.kind,
            &b.dest.name,
        ))
    });
    out
}

fn prepare_one(
    o: &BackupObject,
    map: &NamespaceMap,
    facts: &BackupFacts,
    helm: &render::HelmPlan,
    custom_kinds: &HashSet<(String, String)>,
    restore_uid: &str,
) -> Option<Prepared> {
    let gvk = gvk_of(&o.obj)?;
    let src_name = name(&o.obj)?.to_owned();
    let src_ns = namespace(&o.obj).map(str::to_owned);
    let source = ObjectKey::new(&gvk.group, &gvk.kind, src_ns.as_deref(), &src_name);
    // A re-rendered or renamed Helm release's object: patched / renamed, or not restored.
    let (stored, helm_excluded) = match helm.edited(o, &source) {
        Ok(c) => (c, None),
        Err(why) => (Cow::Borrowed(&o.obj), Some(why)),
    };
    let stored_name = name(&stored).unwrap_or(&src_name).to_owned();
    let is_namespace = gvk.group.is_empty() && gvk.kind == "Namespace";
    let custom = custom_kinds.contains(&(gvk.group.clone(), gvk.kind.clone()))
        || !is_builtin_group(&gvk.group);
    let r = rank(&gvk.group, &gvk.kind, custom, o.helm_storage);
    // Destination namespace (and name, for Namespace objects).
    let (dest_ns, dest_name, mapped) = if is_namespace {
        match map.map(&src_name) {
            Some(d) => (None, d, true),
            None => (None, src_name.clone(), false),
        }
    } else {
        match &src_ns {
            Some(ns) => match map.map(ns) {
                Some(d) => (Some(d), src_name.clone(), true),
                None => (Some(ns.clone()), src_name.clone(), false),
            },
            None => (None, src_name.clone(), true),
        }
    };
    let dest_name = if is_namespace { dest_name } else { stored_name };
    let settings = map.settings(if is_namespace {
        Some(src_name.as_str())
    } else {
        src_ns.as_deref()
    });
    let dest = DestKey {
        api_version: gvk.api_version(),
        kind: gvk.kind.clone(),
        namespace: dest_ns.clone(),
        name: dest_name.clone(),
    };
    let mut prepared = Prepared {
        source: source.clone(),
        dest,
        rank: r,
        action: PlanAction::Create,
        reason: helm.note(o, &source),
        object: Ok(Value::Null),
        helm_storage: o.helm_storage,
    };
    let exclude = |p: &mut Prepared, why: String| {
        p.action = PlanAction::Exclude;
        p.reason = Some(why);
    };
    if !mapped {
        exclude(
            &mut prepared,
            "its namespace is in excludeComponents".to_owned(),
        );
        return Some(prepared);
    }
    if let Some(why) = helm_excluded {
        exclude(&mut prepared, why);
        return Some(prepared);
    }
    if is_namespace {
        if map.single.is_some() {
            prepared.action = PlanAction::Skip;
            prepared.reason = Some("a Restore restores into its own namespace".into());
            return Some(prepared);
        }
        // Namespaces are infrastructure: not subject to selectors or onlyData.
        prepared.object = Ok(rewrite(
            &o.obj,
            &gvk,
            None,
            Some(dest_name.as_str()),
            map,
            settings,
            restore_uid,
        ));
        return Some(prepared);
    }
    if let Some(why) = clean::skip_reason(&o.obj) {
        exclude(&mut prepared, why.to_owned());
        return Some(prepared);
    }
    let flags = &settings.flags;
    if Settings::flag_value(flags.only_data) {
        exclude(
            &mut prepared,
            "restoreFlags.onlyData: only volumes are restored".into(),
        );
        return Some(prepared);
    }
    let lbls = labels(&o.obj);
    let is_crd = gvk.group == "apiextensions.k8s.io" && gvk.kind == "CustomResourceDefinition";
    if !o.helm_storage
        && !is_crd
        && !settings.include.is_empty()
        && !settings.include.matches(&source, &lbls)
    {
        exclude(&mut prepared, "not matched by resourceSelector".into());
        return Some(prepared);
    }
    if settings.exclude.matches(&source, &lbls) {
        exclude(&mut prepared, "matched by excludeResourceSelector".into());
        return Some(prepared);
    }
    if settings
        .exclude_resources
        .iter()
        .any(|r| gvk_entry_matches(r, &source))
    {
        exclude(&mut prepared, "listed in excludeResources".into());
        return Some(prepared);
    }
    if Settings::flag_value(flags.skip_operator_resources)
        && facts
            .operator_resources
            .iter()
            .any(|r| gvk_entry_matches(r, &source))
    {
        exclude(
            &mut prepared,
            "restoreFlags.skipOperatorResources: operator resource".into(),
        );
        return Some(prepared);
    }
    if gvk.group.is_empty()
        && gvk.kind == "PersistentVolumeClaim"
        && let Some(ns) = &src_ns
        && facts.volume_pvcs.contains(&(ns.clone(), src_name.clone()))
    {
        prepared.action = PlanAction::Skip;
        prepared.reason = Some("created with its data by the DataRestore phase".into());
        return Some(prepared);
    }
    let mut obj = rewrite(
        &stored,
        &gvk,
        dest_ns.as_deref(),
        None,
        map,
        settings,
        restore_uid,
    );
    if o.helm_storage
        && let Err(e) = helm_storage_rewrite(&mut obj, dest_ns.as_deref(), helm.release_of(&o.obj))
    {
        prepared.object = Err(e);
        return Some(prepared);
    }
    prepared.object = apply_custom_transforms(obj, &source, &prepared.dest, settings);
    Some(prepared)
}

/// Rewrites a backed-up object for the destination: namespace (or, for a Namespace, its name),
/// anything cluster-specific left (status, uid, …, Service IPs, a bare Pod's node, a PVC's
/// volume and data source), binding subjects' namespaces, `omitMetadata`, the restore label.
/// Owner references are kept as stored: they are re-linked by name at creation time.
pub fn rewrite(
    stored: &Value,
    gvk: &Gvk,
    dest_ns: Option<&str>,
    namespace_name: Option<&str>,
    map: &NamespaceMap,
    settings: &Settings,
    restore_uid: &str,
) -> Value {
    let mut obj = stored.clone();
    let owner_uids: HashSet<String> = owner_refs(&obj).into_iter().map(|r| r.uid).collect();
    clean::clean(&mut obj, &owner_uids);
    let Some(root) = obj.as_object_mut() else {
        return obj;
    };
    if gvk.group.is_empty()
        && gvk.kind == "PersistentVolumeClaim"
        && let Some(spec) = root.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.remove("dataSource");
        spec.remove("dataSourceRef");
        let mapped = spec
            .get("storageClassName")
            .and_then(Value::as_str)
            .and_then(|sc| settings.storage_class_mapping().get(sc).cloned());
        if let Some(to) = mapped {
            spec.insert("storageClassName".into(), Value::String(to));
        }
    }
    if gvk.group == "rbac.authorization.k8s.io"
        && (gvk.kind == "RoleBinding" || gvk.kind == "ClusterRoleBinding")
        && let Some(subjects) = root.get_mut("subjects").and_then(Value::as_array_mut)
    {
        for s in subjects {
            let to = s
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|ns| map.backed_up.contains(*ns))
                .and_then(|ns| map.map(ns));
            if let Some(to) = to {
                s["namespace"] = Value::String(to);
            }
        }
    }
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(meta) = meta.as_object_mut() {
        if let Some(ns) = dest_ns {
            meta.insert("namespace".into(), Value::String(ns.to_owned()));
        }
        if let Some(n) = namespace_name {
            meta.insert("name".into(), Value::String(n.to_owned()));
        }
        // Helm storage keeps its labels: Helm finds releases by them.
        let helm_storage = helm::release_of_storage(stored).is_some();
        if Settings::flag_value(settings.flags.omit_metadata) && !helm_storage {
            meta.remove("labels");
            meta.remove("annotations");
        }
        label_restored(meta, restore_uid);
    }
    obj
}

/// A Helm release storage object for the destination: the release's `namespace` set to the
/// destination; with a [`render::ReleaseEdit`], the release's `name` (renamed) and, on the
/// deployed revision, the re-rendered `config` and `manifest` — so `helm get values` and
/// `helm get manifest` show what was restored.
pub fn helm_storage_rewrite(
    obj: &mut Value,
    dest_ns: Option<&str>,
    edit: Option<&render::ReleaseEdit>,
) -> std::result::Result<(), String> {
    let what = name(obj).unwrap_or("<unnamed>").to_owned();
    if helm::release_of_storage(obj).is_none() {
        return Ok(());
    }
    let payload = helm::storage_payload(obj).map_err(|e| e.to_string())?;
    let mut release = helm::decode_release_value(&payload, &what).map_err(|e| e.to_string())?;
    let Some(m) = release.as_object_mut() else {
        return Ok(());
    };
    if let Some(ns) = dest_ns {
        m.insert("namespace".into(), Value::String(ns.to_owned()));
    }
    if let Some(edit) = edit {
        if edit.renamed {
            m.insert("name".into(), Value::String(edit.name.clone()));
        }
        let deployed = labels(obj).get("status").map(String::as_str) == Some("deployed");
        let revision = m.get("version").and_then(Value::as_i64);
        if let Some((config, manifest)) = &edit.rendered
            && deployed
            && revision == Some(edit.revision)
        {
            m.insert("config".into(), config.clone());
            m.insert("manifest".into(), Value::String(manifest.clone()));
        }
    }
    let encoded = helm::encode_release_value(&release).map_err(|e| e.to_string())?;
    helm::set_storage_payload(obj, &encoded);
    Ok(())
}

/// What the plan says about `transformComponents.helm` (pure): a transform naming a release the
/// restored namespaces of its settings do not hold is blocking (it would apply to nothing);
/// one that applies gets a note that the release is re-rendered with the transformed values
/// ([`render`]). Returns (blocking, warnings).
pub fn helm_transform_notes(
    objects: &[BackupObject],
    map: &NamespaceMap,
) -> (Vec<String>, Vec<String>) {
    // Backed-up namespace → its releases.
    let mut releases: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for o in objects.iter().filter(|o| o.helm_storage) {
        if let (Some(ns), Some(rel)) = (namespace(&o.obj), helm::release_of_storage(&o.obj)) {
            releases.entry(ns.to_owned()).or_default().insert(rel);
        }
    }
    let restored: Vec<&String> = releases
        .keys()
        .chain(map.backed_up.iter())
        .filter(|ns| map.map(ns).is_some())
        .collect();
    // (transform name, release) → found in a namespace its settings apply to.
    let mut seen: BTreeMap<(String, String), bool> = BTreeMap::new();
    for ns in restored {
        let found_here = |r: &str| releases.get(ns).is_some_and(|rs| rs.contains(r));
        for t in map.settings(Some(ns)).transforms.helm.iter().flatten() {
            let hit = seen
                .entry((t.transform_name.clone(), t.release.clone()))
                .or_insert(false);
            *hit |= found_here(&t.release);
        }
    }
    for t in map.global.transforms.helm.iter().flatten() {
        seen.entry((t.transform_name.clone(), t.release.clone()))
            .or_insert(false);
    }
    let all: BTreeSet<&String> = releases
        .iter()
        .filter(|(ns, _)| map.map(ns).is_some())
        .flat_map(|(_, rs)| rs)
        .collect();
    let mut blocking = Vec::new();
    let mut warnings = Vec::new();
    for ((name, release), found) in seen {
        if found {
            warnings.push(format!(
                "transformComponents.helm {name} (release {release}): the release's chart is re-rendered with the transformed values; each restored object of the release gets the difference between the old and the new rendering (fields the chart does not set are kept as backed up), objects the new values add are created, objects they drop are not restored, and the release record gets the new values and manifest (helm get values / helm get manifest); hooks are not run"
            ));
        } else {
            blocking.push(format!(
                "transformComponents.helm {name} names release {release}, which the restored namespaces of the backup do not hold (releases: {}); correct the release name or remove the transform",
                if all.is_empty() {
                    "none".to_string()
                } else {
                    all.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
                }
            ));
        }
    }
    (blocking, warnings)
}

/// Applies every `transformComponents.custom` entry whose resources match the object.
pub fn apply_custom_transforms(
    mut obj: Value,
    source: &ObjectKey,
    dest: &DestKey,
    settings: &Settings,
) -> std::result::Result<Value, String> {
    for t in settings.transforms.custom.iter().flatten() {
        if !gvk_entry_matches(&t.resources, source) {
            continue;
        }
        let ops = serde_json::to_value(&t.json_patches)
            .and_then(serde_json::from_value::<json_patch::Patch>)
            .map_err(|e| {
                format!(
                    "transform {} has an invalid JSON patch: {e}; fix spec.transformComponents",
                    t.transform_name
                )
            })?;
        json_patch::patch(&mut obj, &ops).map_err(|e| {
            format!(
                "transform {} does not apply to {dest}: {e}; fix the patch or its resources",
                t.transform_name
            )
        })?;
    }
    Ok(obj)
}

/// What the destination looks like.
#[derive(Clone, Debug, Default)]
pub struct Live {
    /// Existing objects at the destination keys looked up (absent = does not exist).
    pub objects: HashMap<DestKey, Value>,
    /// `(group, kind)` served by the destination.
    pub served: HashSet<(String, String)>,
    /// Storage classes (`None`: could not be listed).
    pub storage_classes: Option<BTreeSet<String>>,
}

/// The restore UID label of a live object.
pub fn restore_uid_of(obj: &Value) -> Option<String> {
    labels(obj).get(RESTORE_UID_LABEL).cloned()
}

/// The action for one prepared object against the destination, with a blocking message when the
/// restore cannot go on as configured.
pub fn judge(
    p: &Prepared,
    live: &Live,
    settings: &Settings,
    crd_kinds: &HashSet<(String, String)>,
    restore_uid: &str,
) -> (PlannedObject, Option<String>) {
    if p.action != PlanAction::Create {
        return (p.planned(p.action, p.reason.clone()), None);
    }
    let obj = match &p.object {
        Ok(o) => o,
        Err(e) => {
            return (
                p.planned(PlanAction::Create, Some(e.clone())),
                Some(e.clone()),
            );
        }
    };
    let group = p.dest.group().to_owned();
    if !live.served.contains(&(group.clone(), p.dest.kind.clone()))
        && !crd_kinds.contains(&(group.clone(), p.dest.kind.clone()))
    {
        let msg = format!(
            "{} cannot be restored: the destination cluster does not serve {} and the backup has no CRD for it; install its CRD (or operator) first, or exclude it with excludeResourceSelector",
            p.dest,
            Gvk::from_api_version(&p.dest.api_version, &p.dest.kind)
        );
        return (p.planned(PlanAction::Create, Some(msg.clone())), Some(msg));
    }
    let Some(existing) = live.objects.get(&p.dest) else {
        return (p.planned(PlanAction::Create, p.reason.clone()), None);
    };
    if restore_uid_of(existing).as_deref() == Some(restore_uid) {
        return (
            p.planned(
                PlanAction::Skip,
                Some("created by an earlier attempt of this restore".into()),
            ),
            None,
        );
    }
    let flags = &settings.flags;
    if group.is_empty() && p.dest.kind == "Namespace" {
        return (
            p.planned(PlanAction::Skip, Some("the namespace exists".into())),
            None,
        );
    }
    if group == "apiextensions.k8s.io" && p.dest.kind == "CustomResourceDefinition" {
        if existing.get("spec") == obj.get("spec") {
            return (
                p.planned(PlanAction::Skip, Some("an identical CRD exists".into())),
                None,
            );
        }
        if Settings::flag_value(flags.patch_crd) {
            return (
                p.planned(
                    PlanAction::Patch,
                    Some("a different CRD exists; restoreFlags.patchCRD".into()),
                ),
                None,
            );
        }
        let msg = format!(
            "{} already exists with a different spec; set restoreFlags.patchCRD to patch it with the backed-up one, or exclude it",
            p.dest
        );
        return (p.planned(PlanAction::Create, Some(msg.clone())), Some(msg));
    }
    if settings.cleanup && (p.dest.namespace.is_some() || settings.cleanup_cluster_scoped) {
        return (
            p.planned(PlanAction::Create, Some(CLEANUP_REPLACES.into())),
            None,
        );
    }
    if Settings::flag_value(flags.skip_if_already_exists) {
        return (
            p.planned(
                PlanAction::Skip,
                Some("already exists; restoreFlags.skipIfAlreadyExists".into()),
            ),
            None,
        );
    }
    if Settings::flag_value(flags.patch_if_already_exists) {
        return (
            p.planned(
                PlanAction::Patch,
                Some("already exists; restoreFlags.patchIfAlreadyExists".into()),
            ),
            None,
        );
    }
    let msg = format!(
        "{} already exists; set restoreFlags.skipIfAlreadyExists or patchIfAlreadyExists, enable cleanupConfig to replace it, or delete it",
        p.dest
    );
    (p.planned(PlanAction::Create, Some(msg.clone())), Some(msg))
}

/// The volumes of the restore: one per data snapshot of a restored namespace, with the PVC to
/// create. Returns the volumes, blocking problems and warnings.
pub fn volumes(
    snapshot: &Snapshot,
    location: &str,
    default_ns: Option<&str>,
    map: &NamespaceMap,
    live: &Live,
    backup_classes: &BTreeSet<String>,
    restore_uid: &str,
) -> VolumePlan {
    let (mut out, mut blocking, mut warnings) = (Vec::new(), Vec::new(), Vec::new());
    let mut create_classes = BTreeSet::new();
    for ds in snapshot.data_snapshots() {
        let pvc_name = &ds.persistent_volume_claim_name;
        let Some(src_ns) = ds.namespace.as_deref().or(default_ns) else {
            blocking.push(format!(
                "data snapshot of PVC {pvc_name} names no namespace; the backup's status is damaged"
            ));
            continue;
        };
        let Some(dest_ns) = map.map(src_ns) else {
            continue;
        };
        let settings = map.settings(Some(src_ns));
        if Settings::flag_value(settings.flags.only_metadata) {
            continue;
        }
        let what = format!("PVC {src_ns}/{pvc_name}");
        let Some(vol_loc) = ds.location.as_deref() else {
            blocking.push(format!(
                "{what} has no volume location in the backup (its data was never uploaded); restore with restoreFlags.onlyMetadata or choose another backup"
            ));
            continue;
        };
        let ok_loc = vol_loc
            .strip_prefix(location)
            .and_then(|r| r.strip_prefix('/'))
            .is_some_and(|uid| crate::layout::segment("PVC UID", uid).is_ok());
        if !ok_loc {
            blocking.push(format!(
                "{what} has volume location {vol_loc:?}, not under this backup's location {location}; the backup's status is damaged"
            ));
            continue;
        }
        let Some(mut pvc) = ds
            .persistent_volume_claim_metadata
            .as_deref()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .filter(Value::is_object)
        else {
            blocking.push(format!(
                "{what} has no readable persistentVolumeClaimMetadata in the backup; the backup's status is damaged"
            ));
            continue;
        };
        let source = ObjectKey::new("", "PersistentVolumeClaim", Some(src_ns), pvc_name);
        let lbls = labels(&pvc);
        if (!settings.include.is_empty() && !settings.include.matches(&source, &lbls))
            || settings.exclude.matches(&source, &lbls)
            || settings
                .exclude_resources
                .iter()
                .any(|r| gvk_entry_matches(r, &source))
        {
            continue;
        }
        let gvk = Gvk::new("", "v1", "PersistentVolumeClaim");
        pvc["apiVersion"] = json!("v1");
        pvc["kind"] = json!("PersistentVolumeClaim");
        let mut pvc = rewrite(&pvc, &gvk, Some(&dest_ns), None, map, settings, restore_uid);
        if let Some(spec) = pvc.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("volumeName");
        }
        let dest = DestKey {
            api_version: "v1".into(),
            kind: "PersistentVolumeClaim".into(),
            namespace: Some(dest_ns.clone()),
            name: pvc_name.clone(),
        };
        if let Some(existing) = live.objects.get(&dest)
            && restore_uid_of(existing).as_deref() != Some(restore_uid)
        {
            if settings.cleanup {
                warnings.push(format!(
                    "{dest} exists: deleted before the restore (cleanupConfig) and replaced by the backed-up claim and its data"
                ));
            } else {
                if Settings::flag_value(settings.flags.skip_if_already_exists) {
                    warnings.push(format!(
                        "{dest} already exists and is left alone (restoreFlags.skipIfAlreadyExists): its data is not restored"
                    ));
                    continue;
                }
                blocking.push(format!(
                    "{dest} already exists; volume data cannot be restored into an existing PVC — delete it, restore into another namespace, set restoreFlags.skipIfAlreadyExists to leave it, or enable cleanupConfig to replace it"
                ));
                continue;
            }
        }
        let class = str_at(&pvc, "/spec/storageClassName").map(str::to_owned);
        match (&class, &live.storage_classes) {
            (Some(c), Some(classes)) if !classes.contains(c) => {
                match missing_class(c, settings, backup_classes) {
                    Ok(()) => {
                        create_classes.insert(c.clone());
                    }
                    Err(hint) => blocking.push(format!(
                        "storage class {c} of {dest} does not exist in the destination cluster; create it or map it with restoreFlags.storageClassMapping{hint}"
                    )),
                }
            }
            (Some(_), None) => warnings.push(format!(
                "storage classes could not be listed; {dest} may not be provisioned"
            )),
            _ => {}
        }
        let access_modes = pvc
            .pointer("/spec/accessModes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let volume_mode = ds
            .volume_mode
            .clone()
            .or_else(|| str_at(&pvc, "/spec/volumeMode").map(str::to_owned))
            .or_else(|| Some("Filesystem".into()));
        out.push(PlannedVolume {
            namespace: dest_ns.clone(),
            pvc_name: pvc_name.clone(),
            source_namespace: src_ns.to_owned(),
            source_pvc_name: pvc_name.clone(),
            location: vol_loc.to_owned(),
            size: ds.size.clone(),
            volume_mode,
            access_modes,
            storage_class_name: class,
            pvc_metadata: pvc.to_string(),
            ..PlannedVolume::default()
        });
    }
    VolumePlan {
        volumes: out,
        blocking,
        warnings,
        create_classes,
    }
}

/// What [`volumes`] decided.
#[derive(Debug, Default)]
pub struct VolumePlan {
    /// The PVCs DataRestore creates and hydrates.
    pub volumes: Vec<PlannedVolume>,
    /// Problems that stop the restore.
    pub blocking: Vec<String>,
    /// Caveats.
    pub warnings: Vec<String>,
    /// Storage classes the volumes need that the destination lacks and
    /// `restoreFlags.restoreStorageClass` creates from the backup.
    pub create_classes: BTreeSet<String>,
}

/// A storage class (after `storageClassMapping`) missing in the destination: `Ok` when
/// `restoreFlags.restoreStorageClass` creates it from the backup, else the hint to add to the
/// blocking message.
fn missing_class(
    class: &str,
    settings: &Settings,
    backup_classes: &BTreeSet<String>,
) -> std::result::Result<(), &'static str> {
    match (
        backup_classes.contains(class),
        Settings::flag_value(settings.flags.restore_storage_class),
    ) {
        (true, true) => Ok(()),
        (true, false) => {
            Err(", or set restoreFlags.restoreStorageClass to create it from the backup")
        }
        (false, true) => {
            Err(" (restoreFlags.restoreStorageClass cannot create it: the backup does not hold it)")
        }
        (false, false) => Err(""),
    }
}

/// Storage classes that claims restored as objects (planned `Create`, no data snapshot) need,
/// that the destination lacks, that the backup holds and that their settings'
/// `restoreFlags.restoreStorageClass` creates (pure). Without the flag nothing changes for them
/// (the claim is created and waits for its class, as before).
pub fn object_claim_classes(
    prepared: &[Prepared],
    actions: &[PlanAction],
    map: &NamespaceMap,
    live: &Live,
    backup_classes: &BTreeSet<String>,
) -> BTreeSet<String> {
    let Some(existing) = &live.storage_classes else {
        return BTreeSet::new();
    };
    prepared
        .iter()
        .zip(actions)
        .filter(|(p, a)| {
            **a == PlanAction::Create
                && p.dest.kind == "PersistentVolumeClaim"
                && p.dest.group().is_empty()
        })
        .filter_map(|(p, _)| {
            let class = p
                .object
                .as_ref()
                .ok()
                .and_then(|o| str_at(o, "/spec/storageClassName"))?;
            let settings = map.settings(p.source.namespace.as_deref());
            (!existing.contains(class) && missing_class(class, settings, backup_classes).is_ok())
                .then(|| class.to_owned())
        })
        .collect()
}

/// Reason of a StorageClass planned by `restoreFlags.restoreStorageClass`.
pub const STORAGE_CLASS_REASON: &str = "restoreFlags.restoreStorageClass: missing in the destination, created from the backup before the claims (an existing class is never replaced or patched)";

/// Labels an object's `metadata` as made by restore `restore_uid` ([`RESTORE_UID_LABEL`]).
fn label_restored(meta: &mut Map<String, Value>, restore_uid: &str) {
    let labels = meta
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(l) = labels.as_object_mut() {
        l.insert(
            RESTORE_UID_LABEL.into(),
            Value::String(restore_uid.to_owned()),
        );
    }
}

/// The StorageClass objects `restoreFlags.restoreStorageClass` creates (pure), in name order:
/// each named class the backup holds, as backed up (cleaned), without the default-class
/// annotations (the destination keeps its own default) and with the restore label.
pub fn storage_class_objects(
    names: &BTreeSet<String>,
    backup_classes: &[Value],
    restore_uid: &str,
) -> Vec<(PlannedObject, Value)> {
    names
        .iter()
        .filter_map(|n| backup_classes.iter().find(|o| name(o) == Some(n.as_str())))
        .map(|o| {
            let mut obj = o.clone();
            clean::clean(&mut obj, &HashSet::new());
            if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
                    a.remove("storageclass.kubernetes.io/is-default-class");
                    a.remove("storageclass.beta.kubernetes.io/is-default-class");
                }
                label_restored(meta, restore_uid);
            }
            let planned = PlannedObject {
                api_version: str_at(&obj, "/apiVersion")
                    .unwrap_or("storage.k8s.io/v1")
                    .to_owned(),
                kind: "StorageClass".into(),
                name: name(&obj).unwrap_or_default().to_owned(),
                action: PlanAction::Create,
                reason: Some(STORAGE_CLASS_REASON.into()),
                ..PlannedObject::default()
            };
            (planned, obj)
        })
        .collect()
}

#[cfg(test)]
mod tests;
