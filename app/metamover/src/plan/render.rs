//! Helm releases re-rendered at restore (pure): `transformComponents.helm` `set` / `setString`
//! and renaming a release whose name the destination already uses (`retainHelmReleaseName`).
//!
//! For each release that needs it (a Helm transform names it, or it is renamed), the deployed
//! revision's record is decoded and its chart (`release.chart`, as Helm stores it — without
//! subcharts) rendered by [`tvk_chart_render`] twice:
//!
//! - **old**: the recorded values, the recorded namespace and name — what Helm rendered when it
//!   wrote the record. **Self-check**: its objects (per `# Source:` path and kind/name, compared
//!   as JSON values) must equal the recorded manifest's; otherwise the plan is blocked naming
//!   the template and the first differing field (and saying when the template called a
//!   nondeterministic function).
//! - **new**: the transformed values, the destination namespace and the (new) release name.
//!
//! Then Helm's three-way idea, with the backed-up (live) object as the third side: an object in
//! both renders gets the JSON merge patch diff(old, new) applied to its backed-up self (live
//! fields the chart never set are kept); an object only in the new render is restored as
//! rendered; one only in the old render is not restored (Exclude). Hooks are neither rendered
//! into objects nor run. The record's deployed revision gets the new `config` and `manifest`.
//! Objects of subchart templates (`<chart>/charts/…`) cannot be rendered: they are left out of
//! the self-check and restored as backed up; a `set` key addressing a subchart blocks.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet, HashMap},
};

use serde_json::{Value, json};
use tvk_api::{restore::HelmTransform, restore_plan::PlannedObject};
use tvk_chart_render::{Capabilities, Chart, ManifestDoc, RenderRequest};

use super::{BackupFacts, BackupObject, NamespaceMap, RESTORE_UID_LABEL, Settings};
use crate::{
    helm,
    object::{ObjectKey, gvk_of, labels, name, namespace, str_at},
};

/// Annotation Helm puts on every object of a release: the release's name.
pub const RELEASE_NAME_ANNOTATION: &str = "meta.helm.sh/release-name";
/// Annotation Helm puts on every object of a release: the release's namespace.
pub const RELEASE_NAMESPACE_ANNOTATION: &str = "meta.helm.sh/release-namespace";
/// Longest release name Helm accepts.
pub const MAX_RELEASE_NAME: usize = 53;

/// A release in the backup: (backed-up namespace, release name).
pub type ReleaseId = (String, String);

/// What the edge learned about the destination and the backup, for [`plan_releases`].
pub struct HelmInputs<'a> {
    /// `.Capabilities` of the destination cluster.
    pub capabilities: &'a Capabilities,
    /// Whether a (group, kind) is namespaced in the destination (`None`: not served).
    pub scope: &'a dyn Fn(&str, &str) -> Option<bool>,
    /// Releases restored under a new name ([`decide_renames`] / [`renames_from_plan`]).
    pub renames: &'a BTreeMap<ReleaseId, String>,
    /// The PVCs the DataRestore phase restores (renaming must not orphan their data).
    pub facts: &'a BackupFacts,
}

/// How one backed-up object of a release changes.
#[derive(Clone, Debug, PartialEq)]
pub enum ObjectEdit {
    /// Apply the chart's change ([`three_way`]) and set Helm's ownership annotations.
    Patch {
        /// (old render, new render) of the object; `None`: no change but ownership.
        change: Option<Box<(Value, Value)>>,
        /// The release's name in the destination.
        release_name: String,
        /// The release's namespace in the destination.
        release_namespace: String,
        /// Shown as the plan entry's reason (a rename).
        note: Option<String>,
    },
    /// Not restored, with the reason.
    Exclude(String),
}

/// How a release's storage objects change.
#[derive(Clone, Debug, PartialEq)]
pub struct ReleaseEdit {
    /// The release's name in the destination.
    pub name: String,
    /// Renamed (storage objects get `sh.helm.release.v1.<name>.v<N>`).
    pub renamed: bool,
    /// The deployed revision.
    pub revision: i64,
    /// New `config` and `manifest` of the deployed revision (re-rendered).
    pub rendered: Option<(Value, String)>,
    /// Shown as the storage plan entries' reason.
    pub note: Option<String>,
}

/// Everything the Helm part of a restore changes.
#[derive(Clone, Debug, Default)]
pub struct HelmPlan {
    /// Blocking problems.
    pub blocking: Vec<String>,
    /// Warnings.
    pub warnings: Vec<String>,
    /// Per backed-up object (its source key).
    pub edits: HashMap<ObjectKey, ObjectEdit>,
    /// Objects only the new render has, in their backed-up namespace (restored as rendered).
    pub added: Vec<BackupObject>,
    /// Per release.
    pub releases: BTreeMap<ReleaseId, ReleaseEdit>,
}

impl HelmPlan {
    /// The object `prepare` restores in place of a backed-up one: patched, renamed, annotated
    /// (`Ok`), or `Err(reason)` when it is not restored. Objects the plan does not touch are
    /// borrowed as they are.
    pub fn edited<'a>(
        &self,
        o: &'a BackupObject,
        source: &ObjectKey,
    ) -> std::result::Result<Cow<'a, Value>, String> {
        if o.helm_storage {
            let id = namespace(&o.obj)
                .zip(helm::release_of_storage(&o.obj))
                .map(|(ns, r)| (ns.to_owned(), r));
            let Some(edit) = id
                .and_then(|id| self.releases.get(&id))
                .filter(|e| e.renamed)
            else {
                return Ok(Cow::Borrowed(&o.obj));
            };
            let mut obj = o.obj.clone();
            let rev = labels(&obj)
                .get("version")
                .cloned()
                .or_else(|| {
                    name(&obj)
                        .and_then(|n| n.rsplit_once(".v"))
                        .map(|(_, v)| v.to_owned())
                })
                .unwrap_or_default();
            obj["metadata"]["name"] = json!(format!("sh.helm.release.v1.{}.v{rev}", edit.name));
            if let Some(l) = obj
                .pointer_mut("/metadata/labels")
                .and_then(Value::as_object_mut)
            {
                l.insert("name".into(), json!(edit.name));
            }
            return Ok(Cow::Owned(obj));
        }
        match self.edits.get(source) {
            None => Ok(Cow::Borrowed(&o.obj)),
            Some(ObjectEdit::Exclude(why)) => Err(why.clone()),
            Some(ObjectEdit::Patch {
                change,
                release_name,
                release_namespace,
                ..
            }) => {
                let mut obj = o.obj.clone();
                if let Some(change) = change {
                    three_way(&mut obj, &change.0, &change.1);
                }
                set_ownership(&mut obj, release_name, release_namespace, false);
                Ok(Cow::Owned(obj))
            }
        }
    }

    /// The plan entry's reason for an object this plan renames (`None`: nothing to say).
    pub fn note(&self, o: &BackupObject, source: &ObjectKey) -> Option<String> {
        if o.helm_storage {
            let id = (
                namespace(&o.obj)?.to_owned(),
                helm::release_of_storage(&o.obj)?,
            );
            return self.releases.get(&id)?.note.clone();
        }
        match self.edits.get(source)? {
            ObjectEdit::Patch { note, .. } => note.clone(),
            ObjectEdit::Exclude(_) => None,
        }
    }

    /// The release edit of a storage object.
    pub fn release_of(&self, storage: &Value) -> Option<&ReleaseEdit> {
        let id = (
            namespace(storage)?.to_owned(),
            helm::release_of_storage(storage)?,
        );
        self.releases.get(&id)
    }
}

/// Sets Helm's ownership annotations on a release's object: always when `add`, else only those
/// the object carries (Helm writes them at install; a backed-up object without them stays so).
fn set_ownership(obj: &mut Value, release: &str, ns: &str, add: bool) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if add && !meta.get("annotations").is_some_and(Value::is_object) {
        meta.insert("annotations".into(), json!({}));
    }
    let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) else {
        return;
    };
    for (k, v) in [
        (RELEASE_NAME_ANNOTATION, release),
        (RELEASE_NAMESPACE_ANNOTATION, ns),
    ] {
        if add || a.contains_key(k) {
            a.insert(k.into(), json!(v));
        }
    }
}

/// The name a release gets when the destination already has one of its name:
/// `<name>-<first 5 characters of the restore UID>`, the name shortened to keep Helm's 53.
pub fn renamed_release(release: &str, restore_uid: &str) -> String {
    let suffix: String = restore_uid.chars().take(5).collect();
    let keep = MAX_RELEASE_NAME.saturating_sub(suffix.len() + 1);
    let base: String = release.chars().take(keep).collect();
    format!("{}-{suffix}", base.trim_end_matches(['-', '.']))
}

/// The latest deployed revision's storage object of every release in the backup.
pub fn deployed_releases(objects: &[BackupObject]) -> BTreeMap<ReleaseId, &Value> {
    let mut out: BTreeMap<ReleaseId, (i64, &Value)> = BTreeMap::new();
    for o in objects.iter().filter(|o| o.helm_storage) {
        let l = labels(&o.obj);
        if l.get("status").map(String::as_str) != Some("deployed") {
            continue;
        }
        let (Some(ns), Some(rel)) = (namespace(&o.obj), helm::release_of_storage(&o.obj)) else {
            continue;
        };
        let rev = l.get("version").and_then(|v| v.parse().ok()).unwrap_or(-1);
        let e = out.entry((ns.to_owned(), rel)).or_insert((rev, &o.obj));
        if rev > e.0 {
            *e = (rev, &o.obj);
        }
    }
    out.into_iter().map(|(k, (_, v))| (k, v)).collect()
}

fn transforms_of<'a>(settings: &'a Settings, release: &str) -> Vec<&'a HelmTransform> {
    settings
        .transforms
        .helm
        .iter()
        .flatten()
        .filter(|t| t.release == release)
        .collect()
}

/// The releases restored under a new name, decided at Validation: a release whose destination
/// namespace holds storage objects of a release of the same name (`existing`: every Helm
/// storage object of each destination namespace) that this restore did not create and
/// `cleanupConfig` will not replace, unless `restoreFlags.retainHelmReleaseName`.
pub fn decide_renames(
    objects: &[BackupObject],
    map: &NamespaceMap,
    existing: &BTreeMap<String, Vec<Value>>,
    restore_uid: &str,
) -> BTreeMap<ReleaseId, String> {
    let backed_up_storage: BTreeSet<(String, String)> = objects
        .iter()
        .filter(|o| o.helm_storage)
        .filter_map(|o| Some((namespace(&o.obj)?.to_owned(), name(&o.obj)?.to_owned())))
        .collect();
    let mut out = BTreeMap::new();
    for (src_ns, rel) in deployed_releases(objects).into_keys() {
        let Some(dest_ns) = map.map(&src_ns) else {
            continue;
        };
        let settings = map.settings(Some(&src_ns));
        // Kept when asked to, and when the flags say how to treat what exists: the user wants
        // the existing release skipped or patched, not a second copy beside it.
        let flags = &settings.flags;
        if Settings::flag_value(flags.retain_helm_release_name)
            || Settings::flag_value(flags.skip_if_already_exists)
            || Settings::flag_value(flags.patch_if_already_exists)
        {
            continue;
        }
        let taken = existing.get(&dest_ns).into_iter().flatten().any(|o| {
            helm::release_of_storage(o).as_deref() == Some(rel.as_str())
                && labels(o).get(RESTORE_UID_LABEL).map(String::as_str) != Some(restore_uid)
                && !(settings.cleanup
                    && name(o).is_some_and(|n| {
                        backed_up_storage.contains(&(src_ns.clone(), n.to_owned()))
                    }))
        });
        if taken {
            let new = renamed_release(&rel, restore_uid);
            out.insert((src_ns, rel), new);
        }
    }
    out
}

/// The renames a plan made (the restore phase follows the plan, not the destination as it is
/// now): a release is renamed when the plan holds its deployed storage object under the new
/// name.
pub fn renames_from_plan(
    objects: &[BackupObject],
    map: &NamespaceMap,
    planned: &[PlannedObject],
    restore_uid: &str,
) -> BTreeMap<ReleaseId, String> {
    let mut out = BTreeMap::new();
    for ((src_ns, rel), storage) in deployed_releases(objects) {
        let Some(dest_ns) = map.map(&src_ns) else {
            continue;
        };
        let new = renamed_release(&rel, restore_uid);
        let Some(rev) = labels(storage).get("version").cloned() else {
            continue;
        };
        let want = format!("sh.helm.release.v1.{new}.v{rev}");
        if planned.iter().any(|p| {
            p.name == want
                && p.namespace.as_deref() == Some(dest_ns.as_str())
                && (p.kind == "Secret" || p.kind == "ConfigMap")
        }) {
            out.insert((src_ns, rel), new);
        }
    }
    out
}

/// Whether any release of the backup has to be rendered (a Helm transform names it or it is
/// renamed): only then are the destination's capabilities needed.
pub fn needs_render(
    objects: &[BackupObject],
    map: &NamespaceMap,
    renames: &BTreeMap<ReleaseId, String>,
) -> bool {
    deployed_releases(objects).into_keys().any(|(ns, rel)| {
        map.map(&ns).is_some()
            && (renames.contains_key(&(ns.clone(), rel.clone()))
                || !transforms_of(map.settings(Some(&ns)), &rel).is_empty())
    })
}

/// Whether a manifest source path is a subchart's template (`<chart>/charts/<sub>/…`).
pub fn is_subchart_source(source: &str) -> bool {
    source
        .split_once('/')
        .is_some_and(|(_, rest)| rest.starts_with("charts/"))
}

/// The chart's change applied to the backed-up (live) object: what differs between the old
/// render and the new one is written into `live`; what the chart did not change — including
/// fields only the live object has — stays as backed up (a field the new render sets to null or
/// drops is removed). Lists whose items all carry a distinct `name` (containers, env, volumes,
/// volumeMounts, named ports) are merged item by item by name, as Kubernetes' strategic merge
/// does for them, so an item only the live object has (an injected sidecar, an env var added
/// by hand) survives; other lists are replaced when the chart changed them.
pub fn three_way(live: &mut Value, old: &Value, new: &Value) {
    if old == new {
        return;
    }
    match (live, old, new) {
        (Value::Object(l), Value::Object(o), Value::Object(n)) => {
            for k in o.keys() {
                if !n.contains_key(k) {
                    l.remove(k);
                }
            }
            for (k, nv) in n {
                if nv.is_null() {
                    l.remove(k);
                    continue;
                }
                match (l.get_mut(k), o.get(k)) {
                    (Some(lv), Some(ov)) => three_way(lv, ov, nv),
                    // Unchanged by the chart and gone from the live object: stays gone.
                    (None, Some(ov)) if ov == nv => {}
                    _ => {
                        l.insert(k.clone(), nv.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(o), Value::Array(n))
            if named_items(l) && named_items(o) && named_items(n) =>
        {
            let find =
                |items: &[Value], k: &str| items.iter().find(|x| item_name(x) == Some(k)).cloned();
            let mut out = Vec::with_capacity(n.len());
            for nv in n {
                let k = item_name(nv).unwrap_or_default();
                match (find(l, k), find(o, k)) {
                    (Some(mut lv), Some(ov)) => {
                        three_way(&mut lv, &ov, nv);
                        out.push(lv);
                    }
                    (None, Some(ov)) if ov == *nv => {}
                    _ => out.push(nv.clone()),
                }
            }
            for lv in l.iter() {
                let k = item_name(lv).unwrap_or_default();
                if find(o, k).is_none() && find(n, k).is_none() {
                    out.push(lv.clone());
                }
            }
            *l = out;
        }
        (live, _, new) => *live = new.clone(),
    }
}

fn item_name(v: &Value) -> Option<&str> {
    v.get("name").and_then(Value::as_str)
}

/// Every item is an object with a `name`, and no name repeats.
fn named_items(items: &[Value]) -> bool {
    let mut seen = BTreeSet::new();
    items
        .iter()
        .all(|v| item_name(v).is_some_and(|n| seen.insert(n)))
}

/// The first field where two values differ: (JSON pointer, left, right).
fn first_difference<'a>(
    a: &'a Value,
    b: &'a Value,
    path: &str,
) -> Option<(String, Option<&'a Value>, Option<&'a Value>)> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let p = format!("{path}/{}", k.replace('~', "~0").replace('/', "~1"));
                match (x.get(k), y.get(k)) {
                    (Some(l), Some(r)) => first_difference(l, r, &p),
                    (l, r) => Some((p, l, r)),
                }
            })
        }
        (Value::Array(x), Value::Array(y)) => (0..x.len().max(y.len())).find_map(|i| {
            let p = format!("{path}/{i}");
            match (x.get(i), y.get(i)) {
                (Some(l), Some(r)) => first_difference(l, r, &p),
                (l, r) => Some((p, l, r)),
            }
        }),
        _ if a == b => None,
        _ => Some((
            if path.is_empty() {
                "/".into()
            } else {
                path.into()
            },
            Some(a),
            Some(b),
        )),
    }
}

fn show(v: Option<&Value>) -> String {
    let s = v.map_or_else(|| "(absent)".to_owned(), Value::to_string);
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

/// `Kind/name` of a manifest object.
fn kind_name(obj: &Value) -> String {
    format!(
        "{}/{}",
        str_at(obj, "/kind").unwrap_or("?"),
        name(obj).unwrap_or("?")
    )
}

/// Identity of a rendered object within a release: group, kind, namespace when it names one
/// other than the release's, name.
fn doc_key(obj: &Value, release_ns: &str) -> (String, String, String, String) {
    let g = gvk_of(obj).map(|g| g.group).unwrap_or_default();
    let ns = namespace(obj).filter(|n| *n != release_ns).unwrap_or("");
    (
        g,
        str_at(obj, "/kind").unwrap_or("").to_owned(),
        ns.to_owned(),
        name(obj).unwrap_or("").to_owned(),
    )
}

/// The backed-up key of a manifest object rendered for a release in `release_ns`.
fn backed_up_key(
    obj: &Value,
    release_ns: &str,
    scope: &dyn Fn(&str, &str) -> Option<bool>,
    backed: &HashMap<ObjectKey, &Value>,
) -> Option<ObjectKey> {
    let g = gvk_of(obj)?;
    let n = name(obj)?;
    let ns = namespace(obj).unwrap_or(release_ns);
    let namespaced = ObjectKey::new(&g.group, &g.kind, Some(ns), n);
    let cluster = ObjectKey::new(&g.group, &g.kind, None, n);
    match scope(&g.group, &g.kind) {
        Some(true) => Some(namespaced),
        Some(false) => Some(cluster),
        None if backed.contains_key(&cluster) => Some(cluster),
        None => Some(namespaced),
    }
}

/// A chart rendered into objects: (objects, hooks, templates that called a nondeterministic
/// function).
type RenderedDocs = (Vec<ManifestDoc>, Vec<ManifestDoc>, Vec<String>);

/// Renders a release's chart; `Err` is the renderer's message.
fn render_docs(chart: &Chart, req: &RenderRequest) -> std::result::Result<RenderedDocs, String> {
    let rendered = tvk_chart_render::render(chart, req).map_err(|e| e.to_string())?;
    let (docs, hooks) = tvk_chart_render::manifest_docs(&rendered).map_err(|e| e.to_string())?;
    Ok((docs, hooks, rendered.nondeterministic.clone()))
}

/// A release manifest in Helm's recorded format: `---\n# Source: <path>\n<yaml>` per object.
pub fn manifest_text(docs: &[(&str, &Value)]) -> std::result::Result<String, String> {
    let mut out = String::new();
    for (source, obj) in docs {
        let yaml = tvk_api::yaml::to_string(obj).map_err(|e| e.to_string())?;
        out.push_str(&format!("---\n# Source: {source}\n{}\n", yaml.trim_end()));
    }
    Ok(out)
}

/// The release's user values with the transforms' `set` / `setString` applied (Helm's key
/// syntax, [`helm::set_value`]).
pub fn transformed_values(
    config: &Value,
    transforms: &[&HelmTransform],
    release: &str,
) -> std::result::Result<Value, String> {
    let mut values = if config.is_object() {
        config.clone()
    } else {
        json!({})
    };
    for t in transforms {
        for kv in t.set.iter().flatten() {
            helm::set_value(&mut values, &kv.key, helm::parse_set_value(&kv.value)).map_err(
                |e| {
                    format!(
                        "Helm transform {} (set {}) does not apply to release {release}: {e}",
                        t.transform_name, kv.key
                    )
                },
            )?;
        }
        for kv in t.set_string.iter().flatten() {
            helm::set_value(&mut values, &kv.key, Value::String(kv.value.clone())).map_err(
                |e| {
                    format!(
                        "Helm transform {} (setString {}) does not apply to release {release}: {e}",
                        t.transform_name, kv.key
                    )
                },
            )?;
        }
    }
    Ok(values)
}

/// Plans every release of the backup (pure): edits of its objects and storage, objects to add,
/// blocking problems and warnings. Releases without a Helm transform and not renamed only get
/// their ownership annotations' namespace updated.
pub fn plan_releases(
    objects: &[BackupObject],
    map: &NamespaceMap,
    inputs: &HelmInputs,
) -> HelmPlan {
    let mut plan = HelmPlan::default();
    let mut backed: HashMap<ObjectKey, &Value> = HashMap::new();
    for o in objects.iter().filter(|o| !o.helm_storage) {
        if let (Some(g), Some(n)) = (gvk_of(&o.obj), name(&o.obj)) {
            backed.insert(
                ObjectKey::new(&g.group, &g.kind, namespace(&o.obj), n),
                &o.obj,
            );
        }
    }
    let untouched = HelmPlan::default();
    for (id, storage) in deployed_releases(objects) {
        // A release whose record is not restored (excludeResources, onlyData, …) is not
        // re-rendered or renamed either.
        let record = BackupObject {
            obj: storage.clone(),
            helm_storage: true,
        };
        let restored = super::prepare_one(
            &record,
            map,
            inputs.facts,
            &untouched,
            &Default::default(),
            "",
        )
        .is_some_and(|p| p.action == super::PlanAction::Create);
        if !restored {
            continue;
        }
        if let Err(msg) = plan_release(&id, storage, map, inputs, &backed, &mut plan) {
            plan.blocking.push(msg);
        }
    }
    plan
}

fn plan_release(
    id: &ReleaseId,
    storage: &Value,
    map: &NamespaceMap,
    inputs: &HelmInputs,
    backed: &HashMap<ObjectKey, &Value>,
    plan: &mut HelmPlan,
) -> std::result::Result<(), String> {
    let (src_ns, rel) = id;
    let Some(dest_ns) = map.map(src_ns) else {
        return Ok(());
    };
    let settings = map.settings(Some(src_ns));
    let transforms = transforms_of(settings, rel);
    let new_name = inputs.renames.get(id);
    let what = format!("Helm release {rel} (namespace {src_ns})");
    let storage_name = name(storage).unwrap_or("<unnamed>").to_owned();
    let record = helm::storage_payload(storage)
        .and_then(|p| helm::decode_release_value(&p, &storage_name))
        .map_err(|e| format!("{what} cannot be read from the backup: {e}"))?;
    let revision = record.get("version").and_then(Value::as_i64).unwrap_or(1);
    let recorded_ns = str_at(&record, "/namespace")
        .filter(|s| !s.is_empty())
        .unwrap_or(src_ns)
        .to_owned();
    let recorded = tvk_chart_render::split_manifest(str_at(&record, "/manifest").unwrap_or(""))
        .map_err(|e| format!("{what}: its recorded manifest cannot be read: {e}"))?;
    let dest_name = new_name.cloned().unwrap_or_else(|| rel.clone());
    let rename_note = new_name.map(|n| {
        format!(
            "Helm release {rel} is restored as {n}: the destination namespace {dest_ns} already has a release {rel} (restoreFlags.retainHelmReleaseName is not set)"
        )
    });
    // Every object of the release: ownership annotations follow the destination.
    for d in &recorded {
        if let Some(key) = backed_up_key(&d.object, &recorded_ns, inputs.scope, backed)
            && backed.contains_key(&key)
        {
            plan.edits.insert(
                key,
                ObjectEdit::Patch {
                    change: None,
                    release_name: dest_name.clone(),
                    release_namespace: dest_ns.clone(),
                    note: None,
                },
            );
        }
    }
    if transforms.is_empty() && new_name.is_none() {
        return Ok(());
    }
    let remedy = if new_name.is_some() {
        format!(
            "set restoreFlags.retainHelmReleaseName (with skipIfAlreadyExists or patchIfAlreadyExists) to restore it under its own name, restore into a namespace without a release {rel}, or uninstall that release"
        )
    } else {
        "change the restored objects with transformComponents.custom (RFC 6902 patches) instead of transformComponents.helm".to_owned()
    };
    let old_values = record.get("config").cloned().unwrap_or_else(|| json!({}));
    let new_values = transformed_values(&old_values, &transforms, rel)?;
    // A set key addressing a subchart.
    let deps: BTreeSet<String> = record
        .pointer("/chart/metadata/dependencies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|d| {
            [str_at(d, "/name"), str_at(d, "/alias")]
                .into_iter()
                .flatten()
                .map(str::to_owned)
        })
        .collect();
    for t in &transforms {
        for kv in t.set.iter().flatten().chain(t.set_string.iter().flatten()) {
            if let Some(head) = helm::set_key_head(&kv.key)?
                && deps.contains(&head)
            {
                return Err(format!(
                    "transformComponents.helm {} sets {} of {what}, which addresses its subchart {head}: Helm does not keep a chart's subcharts in the release record, so the subchart cannot be re-rendered; change its objects with transformComponents.custom instead",
                    t.transform_name, kv.key
                ));
            }
        }
    }
    let subchart: Vec<&ManifestDoc> = recorded
        .iter()
        .filter(|d| is_subchart_source(&d.source))
        .collect();
    if let Some(new) = new_name {
        rename_blockers(rel, new, src_ns, &recorded, inputs.facts)?;
    }
    let chart = Chart::from_release_json(record.get("chart").unwrap_or(&Value::Null))
        .map_err(|e| format!("{what}: its chart cannot be read from the release record: {e}"))?;
    let caps = inputs.capabilities;
    let old_req = RenderRequest {
        release_name: rel,
        namespace: &recorded_ns,
        revision,
        is_install: revision <= 1,
        is_upgrade: revision > 1,
        user_values: &old_values,
        capabilities: caps,
    };
    let (old, old_hooks, nondet) = render_docs(&chart, &old_req).map_err(|e| {
        format!("{what} cannot be re-rendered: rendering its chart with the recorded values fails: {e}; {remedy}")
    })?;
    self_check(&what, &recorded, &old, &nondet, &remedy)?;
    let new_req = RenderRequest {
        release_name: &dest_name,
        namespace: &dest_ns,
        user_values: &new_values,
        ..old_req
    };
    let (new, new_hooks, _) = render_docs(&chart, &new_req).map_err(|e| {
        format!("{what}: rendering its chart with the transformed values fails: {e}; correct the transform's values")
    })?;
    if !old_hooks.is_empty() || !new_hooks.is_empty() {
        plan.warnings.push(format!(
            "{what}: its hooks are not run and not re-rendered (hook objects in the backup are restored as backed up)"
        ));
    }
    if !subchart.is_empty() {
        plan.warnings.push(format!(
            "{what}: the objects of its subcharts ({}) are restored as backed up — Helm does not keep subcharts in the release record, so they are not re-rendered",
            subchart
                .iter()
                .map(|d| d.source.as_str())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // Pair old and new objects: by identity, or — renamed, every name may change — by
    // template and position within it.
    let by_position = new_name.is_some();
    let old_map = keyed_docs(&old, &recorded_ns, by_position);
    let new_map = keyed_docs(&new, &dest_ns, by_position);
    for (k, o) in &old_map {
        let Some(key) = backed_up_key(&o.object, &recorded_ns, inputs.scope, backed) else {
            continue;
        };
        if !backed.contains_key(&key) {
            plan.warnings.push(format!(
                "{what}: {} is in its manifest but not in the backup; it is not restored",
                kind_name(&o.object)
            ));
            continue;
        }
        match new_map.get(k) {
            Some(n) => {
                let renamed = name(&o.object) != name(&n.object);
                plan.edits.insert(
                    key,
                    ObjectEdit::Patch {
                        change: (o.object != n.object)
                            .then(|| Box::new((o.object.clone(), n.object.clone()))),
                        release_name: dest_name.clone(),
                        release_namespace: dest_ns.clone(),
                        note: rename_note.as_ref().filter(|_| renamed).map(|note| {
                            format!("{note}; renamed from {}", name(&o.object).unwrap_or("?"))
                        }),
                    },
                );
            }
            None => {
                plan.edits.insert(
                    key,
                    ObjectEdit::Exclude(format!(
                        "release {rel} no longer renders it with the transformed values"
                    )),
                );
            }
        }
    }
    for (k, n) in &new_map {
        if old_map.contains_key(k) {
            continue;
        }
        let mut obj = n.object.clone();
        let (group, kind) = gvk_of(&obj).map(|g| (g.group, g.kind)).unwrap_or_default();
        if (inputs.scope)(&group, &kind) != Some(false)
            && namespace(&obj).is_none_or(|ns| ns == dest_ns)
            && let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut)
        {
            m.insert("namespace".into(), json!(src_ns));
        }
        set_ownership(&mut obj, &dest_name, &dest_ns, true);
        if let Some(key) = backed_up_key(&obj, src_ns, inputs.scope, backed)
            && backed.contains_key(&key)
            && !plan.edits.contains_key(&key)
        {
            return Err(format!(
                "{what} with the transformed values renders {}, which the backup holds outside the release; exclude it with excludeResources or {remedy}",
                kind_name(&obj)
            ));
        }
        plan.added.push(BackupObject {
            obj,
            helm_storage: false,
        });
    }
    let mut manifest_docs: Vec<(&str, &Value)> =
        new.iter().map(|d| (d.source.as_str(), &d.object)).collect();
    manifest_docs.extend(subchart.iter().map(|d| (d.source.as_str(), &d.object)));
    let manifest =
        manifest_text(&manifest_docs).map_err(|e| format!("{what}: its new manifest: {e}"))?;
    plan.releases.insert(
        id.clone(),
        ReleaseEdit {
            name: dest_name,
            renamed: new_name.is_some(),
            revision,
            rendered: Some((new_values, manifest)),
            note: rename_note,
        },
    );
    Ok(())
}

/// Rendered objects by identity (group, kind, namespace other than the release's, name), or by
/// template, kind and position within the template.
fn keyed_docs<'a>(
    docs: &'a [ManifestDoc],
    release_ns: &str,
    by_position: bool,
) -> BTreeMap<(String, String, String, String), &'a ManifestDoc> {
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    docs.iter()
        .map(|d| {
            let kind = str_at(&d.object, "/kind").unwrap_or("").to_owned();
            let i = seen.entry((d.source.clone(), kind.clone())).or_insert(0);
            *i += 1;
            let key = if by_position {
                (d.source.clone(), kind, String::new(), i.to_string())
            } else {
                doc_key(&d.object, release_ns)
            };
            (key, d)
        })
        .collect()
}

/// The old render must reproduce the recorded manifest (subchart templates left out).
fn self_check(
    what: &str,
    recorded: &[ManifestDoc],
    old: &[ManifestDoc],
    nondeterministic: &[String],
    remedy: &str,
) -> std::result::Result<(), String> {
    let keyed = |docs: &[ManifestDoc]| -> BTreeMap<(String, String, String), Value> {
        docs.iter()
            .filter(|d| !is_subchart_source(&d.source))
            .map(|d| {
                (
                    (
                        d.source.clone(),
                        str_at(&d.object, "/kind").unwrap_or("").to_owned(),
                        name(&d.object).unwrap_or("").to_owned(),
                    ),
                    d.object.clone(),
                )
            })
            .collect()
    };
    let rec = keyed(recorded);
    let ren = keyed(old);
    let random = |t: &str| {
        if nondeterministic.iter().any(|n| n == t) {
            " (the template calls a nondeterministic function such as randAlphaNum, uuidv4 or genCA, so it renders differently every time)"
        } else {
            ""
        }
    };
    let fail = |template: &str, detail: String| {
        Err(format!(
            "{what} cannot be re-rendered: rendering its chart with the recorded values does not reproduce its recorded manifest — template {template}: {detail}{}; {remedy}",
            random(template)
        ))
    };
    let keys: BTreeSet<&(String, String, String)> = rec.keys().chain(ren.keys()).collect();
    for k in keys {
        let (template, kind, n) = k;
        match (rec.get(k), ren.get(k)) {
            (Some(a), Some(b)) => {
                if let Some((field, l, r)) = first_difference(a, b, "") {
                    return fail(
                        template,
                        format!(
                            "{kind}/{n} field {field}: recorded {}, rendered {}",
                            show(l),
                            show(r)
                        ),
                    );
                }
            }
            (Some(_), None) => {
                return fail(template, format!("the recorded {kind}/{n} is not rendered"));
            }
            (None, Some(_)) => {
                return fail(
                    template,
                    format!("{kind}/{n} is rendered but not in the recorded manifest"),
                );
            }
            (None, None) => {}
        }
    }
    Ok(())
}

/// Renaming a release renames its objects: refused when the DataRestore phase restores data
/// under the old names (a chart-owned PVC, a StatefulSet's volumeClaimTemplates) or when
/// subchart templates (not in the record) made some of them.
fn rename_blockers(
    rel: &str,
    new: &str,
    src_ns: &str,
    recorded: &[ManifestDoc],
    facts: &BackupFacts,
) -> std::result::Result<(), String> {
    let head = format!(
        "Helm release {rel} (namespace {src_ns}) would be restored as {new} because the destination already has a release {rel}, but it cannot be renamed:"
    );
    let tail = format!(
        "set restoreFlags.retainHelmReleaseName (with skipIfAlreadyExists or patchIfAlreadyExists), restore into a namespace without a release {rel}, or uninstall that release first"
    );
    let subcharts: BTreeSet<&str> = recorded
        .iter()
        .filter(|d| is_subchart_source(&d.source))
        .map(|d| d.source.as_str())
        .collect();
    if !subcharts.is_empty() {
        return Err(format!(
            "{head} its manifest holds objects of subchart templates ({}), and Helm does not keep subcharts in the release record, so they cannot be re-rendered under the new name; {tail}",
            subcharts.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    let has_data = |pvc: &str| {
        facts
            .volume_pvcs
            .contains(&(src_ns.to_owned(), pvc.to_owned()))
    };
    for d in recorded {
        let kind = str_at(&d.object, "/kind").unwrap_or("");
        let n = name(&d.object).unwrap_or("");
        if kind == "PersistentVolumeClaim" && has_data(n) {
            return Err(format!(
                "{head} its chart owns PersistentVolumeClaim {n}, whose data the DataRestore phase restores under that name; {tail}"
            ));
        }
        if kind == "StatefulSet" {
            for t in d
                .object
                .pointer("/spec/volumeClaimTemplates")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let prefix = format!("{}-{n}-", name(t).unwrap_or(""));
                if let Some((_, pvc)) = facts
                    .volume_pvcs
                    .iter()
                    .find(|(ns, p)| ns == src_ns && p.starts_with(&prefix))
                {
                    return Err(format!(
                        "{head} its StatefulSet {n} has volumeClaimTemplates whose claims (e.g. {pvc}) the DataRestore phase restores under their current names, which a renamed StatefulSet would not use; {tail}"
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
