//! The metaprocessor: `tvk-metamover restore-plan` (phase Validation) and `tvk-metamover
//! restore` (phase MetadataRestore), the async edges around the pure [`crate::plan`].
//!
//! `restore-plan` reads the committed backup at `--location` (refused without `commit.json`),
//! the Restore's spec and the destination (existing objects, served types, storage classes) and
//! writes the plan to `status.restoreApplication`. `restore` reads that plan back, creates the
//! objects in order (re-checking each right before writing it), re-links owner references,
//! points containers at the images ImageRestore pushed (`status.images[]`, through
//! [`crate::images::rewrite_images`]), records results after every batch and waits for
//! workloads.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    time::{Duration, Instant},
};

use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};
use tvk_api::{
    ClusterRestore, Restore,
    restore::{LabelsAnnotationsStrategy, RestoreStatus},
    restore_plan::{
        CreatedObject, ObjectResult, PlanAction, PlanSource, PlannedNamespace, PlannedObject,
        RestorePlan, SourceKind,
    },
    snapshot::Snapshot,
};
use tvk_datamover::target::Target;

use crate::{
    commit::verify_documents,
    discovery::Catalogue,
    error::{Error, Result, is_status},
    layout::{self, BackupLocation, Commit, Index},
    object::{gvk_of, name, namespace, owner_refs},
    plan::{
        self, BackupFacts, BackupObject, DestKey, Live, NamespaceMap, Prepared, RestoreConfig,
        Settings, render,
    },
    snapshot::{FIELD_MANAGER, ProgressFn, blocking, read_json},
};

/// Largest decompressed metadata document read back.
const MAX_DOCUMENT: u64 = 2 << 30;

/// Which kind of restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RestoreKind {
    /// A namespaced Restore.
    #[value(name = "Restore")]
    Restore,
    /// A ClusterRestore.
    #[value(name = "ClusterRestore")]
    ClusterRestore,
}

/// The restore to work on.
#[derive(Clone, Debug)]
pub struct RestoreRef {
    /// Kind.
    pub kind: RestoreKind,
    /// Namespace (Restores).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl RestoreRef {
    /// `Restore ns/name` or `ClusterRestore name`.
    pub fn display(&self) -> String {
        match (self.kind, &self.namespace) {
            (RestoreKind::Restore, Some(ns)) => format!("Restore {ns}/{}", self.name),
            (RestoreKind::Restore, None) => format!("Restore {}", self.name),
            (RestoreKind::ClusterRestore, _) => format!("ClusterRestore {}", self.name),
        }
    }

    fn err(&self, reason: impl Into<String>) -> Error {
        Error::Restore {
            restore: self.display(),
            reason: reason.into(),
        }
    }
}

/// A Restore or ClusterRestore, loaded and compiled.
struct Loaded {
    uid: String,
    map: NamespaceMap,
    /// Problems of the spec itself (bad selectors, configs).
    spec_problems: Vec<String>,
    status_plan: Option<Value>,
    /// Original image reference → restored reference, from `status.images[]` (ImageRestore).
    images: BTreeMap<String, String>,
}

/// The rewrite map of a restore's `status.images[]`: every image ImageRestore pushed
/// (those with a `restoredImage`) maps its original reference to the new one (pure).
pub fn image_map(status: Option<&RestoreStatus>) -> BTreeMap<String, String> {
    status
        .and_then(|s| s.images.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| {
            i.restored_image
                .as_ref()
                .filter(|to| !to.is_empty() && **to != i.image)
                .map(|to| (i.image.clone(), to.clone()))
        })
        .collect()
}

fn not_found_or(r: &RestoreRef, e: kube::Error) -> Error {
    if is_status(&e, 404) {
        Error::NotFound {
            what: r.display(),
            hint: "it may have been deleted; nothing was restored",
        }
    } else {
        Error::kube(format!("read {}", r.display()), e)
    }
}

async fn load(client: &Client, r: &RestoreRef) -> Result<Loaded> {
    let mut spec_problems = Vec::new();
    fn compile(c: &RestoreConfig, problems: &mut Vec<String>) -> Settings {
        Settings::compile(c).unwrap_or_else(|e| {
            problems.push(e);
            Settings::default()
        })
    }
    match r.kind {
        RestoreKind::Restore => {
            let ns = r.namespace.clone().ok_or_else(|| {
                Error::Usage("--namespace is required with --kind Restore".into())
            })?;
            let rst = Api::<Restore>::namespaced(client.clone(), &ns)
                .get(&r.name)
                .await
                .map_err(|e| not_found_or(r, e))?;
            let s = &rst.spec;
            let config = RestoreConfig {
                restore_flags: s.restore_flags.clone(),
                transform_components: s.transform_components.clone(),
                resource_selector: s.resource_selector.clone(),
                exclude_resource_selector: s.exclude_resource_selector.clone(),
                exclude_resources: s.exclude_resources.clone(),
                resources_ready_wait_seconds: s.resources_ready_wait_seconds,
                cleanup_config: s.cleanup_config.clone(),
            };
            let settings = compile(&config, &mut spec_problems);
            Ok(Loaded {
                uid: rst.metadata.uid.clone().unwrap_or_default(),
                map: NamespaceMap::restore(&ns, settings),
                images: image_map(rst.status.as_ref()),
                status_plan: rst.status.and_then(|s| s.restore_application),
                spec_problems,
            })
        }
        RestoreKind::ClusterRestore => {
            let rst = Api::<ClusterRestore>::all(client.clone())
                .get(&r.name)
                .await
                .map_err(|e| not_found_or(r, e))?;
            let s = &rst.spec;
            let global_config =
                match RestoreConfig::from_value(s.global_config.as_ref(), "spec.globalConfig") {
                    Ok(c) => c,
                    Err(e) => {
                        spec_problems.push(e);
                        RestoreConfig::default()
                    }
                };
            let mut map = NamespaceMap {
                global: compile(&global_config, &mut spec_problems),
                excluded: s.exclude_components.iter().flatten().cloned().collect(),
                ..NamespaceMap::default()
            };
            let mut targets: HashMap<String, String> = HashMap::new();
            for c in s.components.iter().flatten() {
                let to = c
                    .restore_namespace
                    .clone()
                    .unwrap_or_else(|| c.backup_namespace.clone());
                if let Some(other) = targets.insert(to.clone(), c.backup_namespace.clone()) {
                    spec_problems.push(format!(
                        "components map both {other} and {} to namespace {to}; give each a different restoreNamespace",
                        c.backup_namespace
                    ));
                }
                if !is_dns_label(&to) {
                    spec_problems.push(format!(
                        "component {}: restoreNamespace {to:?} is not a valid namespace name (lowercase letters, digits and '-', at most 63)",
                        c.backup_namespace
                    ));
                }
                map.components.insert(c.backup_namespace.clone(), to);
                if c.restore_config.is_some() {
                    let what = format!("restoreConfig of component {}", c.backup_namespace);
                    let cfg = match RestoreConfig::from_value(c.restore_config.as_ref(), &what) {
                        Ok(cfg) => global_config.overridden_by(&cfg),
                        Err(e) => {
                            spec_problems.push(e);
                            global_config.clone()
                        }
                    };
                    let settings = compile(&cfg, &mut spec_problems);
                    map.per_namespace
                        .insert(c.backup_namespace.clone(), settings);
                }
            }
            Ok(Loaded {
                uid: rst.metadata.uid.clone().unwrap_or_default(),
                map,
                images: image_map(rst.status.as_ref()),
                status_plan: rst.status.and_then(|s| s.restore_application),
                spec_problems,
            })
        }
    }
}

/// A committed backup read back from the target.
pub struct BackupData {
    /// Where it is.
    pub location: BackupLocation,
    /// `commit.json`.
    pub commit: Commit,
    /// `index.json`.
    pub index: Index,
    /// `status.snapshot` as committed.
    pub snapshot: Snapshot,
    /// Every stored object, Helm storage included.
    pub objects: Vec<BackupObject>,
}

/// A name the API server could accept as one path segment: not empty, at most 253 characters,
/// not `.`/`..`, no `/`, `%`, whitespace or control characters. Stored names are checked before
/// they go into a request path.
pub fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && !s
            .chars()
            .any(|c| c == '/' || c == '%' || c.is_whitespace() || c.is_control())
}

/// An RFC 1123 label (namespace names).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Parses `--location` (`<plan uid>/<backup uid>`, both checked as path segments).
pub fn parse_location(location: &str) -> Result<BackupLocation> {
    let (plan, backup) = location
        .trim_end_matches('/')
        .split_once('/')
        .ok_or_else(|| Error::Layout {
            key: location.to_owned(),
            reason: "--location must be <plan uid>/<backup uid>".into(),
        })?;
    BackupLocation::new(plan, backup)
}

/// Reads the committed metadata at `location`: `commit.json` (required: without it the backup
/// was never committed), `index.json` (its BLAKE3 must be the commit's), every document
/// (size and BLAKE3 as indexed; each object in the namespace and of the kind its document
/// says).
pub async fn read_backup(
    target: &Target,
    location: &str,
    seal: Option<&crate::seal::MetadataKey>,
) -> Result<BackupData> {
    let loc = parse_location(location)?;
    let commit_key = loc.commit_key();
    let commit: Commit = read_json(target, commit_key.clone(), seal)
        .await?
        .ok_or_else(|| Error::Layout {
            key: commit_key.clone(),
            reason: "this location holds no committed backup (no commit.json): the backup never completed or the location is wrong; restore from a backup that is Available".into(),
        })?;
    let expected = format!("{}/{}", commit.backup.plan_uid, commit.backup.uid);
    if expected != loc.location {
        return Err(Error::Layout {
            key: commit_key,
            reason: format!(
                "the commit belongs to {expected}, not to this location; the target was tampered with"
            ),
        });
    }
    let index_key = loc.index_key();
    let t = target.clone();
    let k = index_key.clone();
    let index_bytes = blocking(move || Ok(t.read_all(&k, layout::MAX_SMALL_OBJECT)?)).await?;
    if layout::digest(&index_bytes) != commit.index_blake3 {
        return Err(Error::Layout {
            key: index_key,
            reason: "its BLAKE3 differs from the one in commit.json (damaged or replaced); the backup cannot be restored".into(),
        });
    }
    let index_bytes = crate::seal::open(seal, &index_key, index_bytes.into())?;
    let index: Index = serde_json::from_slice(&index_bytes).map_err(|e| Error::Layout {
        key: index_key,
        reason: format!("not a metadata index: {e}"),
    })?;
    let docs: Vec<_> = index
        .documents
        .iter()
        .map(|d| (d, false))
        .chain(index.helm.iter().map(|h| (&h.document, true)))
        .map(|(d, helm)| (d.clone(), helm))
        .collect();
    let mut objects = Vec::new();
    for (d, helm_storage) in docs {
        let key = loc.key(&d.key);
        let check = vec![(key.clone(), d.bytes, d.blake3.clone())];
        let t = target.clone();
        let k = key.clone();
        let bytes = blocking(move || {
            verify_documents(&t, &check)?;
            Ok(t.read_all(&k, d.bytes)?)
        })
        .await?;
        let bytes = crate::seal::open(seal, &key, bytes.into())?;
        for obj in layout::read_document(&bytes, MAX_DOCUMENT)? {
            let kind_ok = gvk_of(&obj).is_some_and(|g| g.kind == d.kind && g.group == d.group);
            let ns_ok = namespace(&obj) == d.namespace.as_deref()
                && namespace(&obj).is_none_or(is_dns_label);
            if !kind_ok || !ns_ok || !name(&obj).is_some_and(is_safe_name) {
                return Err(Error::Layout {
                    key,
                    reason: format!(
                        "it holds an object that is not a {} in {} with a valid name; the backup was tampered with",
                        d.kind,
                        d.namespace.as_deref().unwrap_or("the cluster scope")
                    ),
                });
            }
            objects.push(BackupObject { obj, helm_storage });
        }
    }
    let snapshot = Snapshot::from_status_value(commit.object.pointer("/status/snapshot"))
        .map_err(|e| Error::json("read the committed status.snapshot", e))?
        .unwrap_or_default();
    Ok(BackupData {
        location: loc,
        commit,
        index,
        snapshot,
        objects,
    })
}

fn source_of(data: &BackupData) -> PlanSource {
    PlanSource {
        location: data.location.location.clone(),
        backup_name: Some(data.commit.backup.name.clone()),
        backup_namespace: data.commit.backup.namespace.clone(),
        kind: if data.commit.backup.kind == "ClusterBackup" {
            SourceKind::ClusterBackup
        } else {
            SourceKind::Backup
        },
        ..PlanSource::default()
    }
}

fn check_source_kind(r: &RestoreRef, data: &BackupData) -> Result<()> {
    let want = match r.kind {
        RestoreKind::Restore => "Backup",
        RestoreKind::ClusterRestore => "ClusterBackup",
    };
    if data.commit.backup.kind != want {
        return Err(r.err(format!(
            "the location holds a {}, which a {:?} cannot restore; use a {}",
            data.commit.backup.kind,
            r.kind,
            if want == "Backup" {
                "ClusterRestore"
            } else {
                "Restore"
            }
        )));
    }
    Ok(())
}

fn api_resource(catalogue: &Catalogue, key: &DestKey) -> Option<(ApiResource, bool)> {
    let t = catalogue.find(key.group(), &key.kind)?;
    let (group, version) = key
        .api_version
        .split_once('/')
        .unwrap_or(("", key.api_version.as_str()));
    let gvk = GroupVersionKind::gvk(group, version, &key.kind);
    Some((
        ApiResource::from_gvk_with_plural(&gvk, &t.api.plural),
        t.namespaced,
    ))
}

fn dynamic_api(
    client: &Client,
    ar: &ApiResource,
    namespaced: bool,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    match (namespaced, ns) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, ar),
        _ => Api::all_with(client.clone(), ar),
    }
}

fn with_type(obj: DynamicObject, ar: &ApiResource) -> Result<Value> {
    let mut v = serde_json::to_value(obj).map_err(|e| Error::json("encode an object", e))?;
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(ar.api_version.clone()));
        m.insert("kind".into(), Value::String(ar.kind.clone()));
    }
    Ok(v)
}

/// Reads one destination object; `None` when absent.
async fn get_live(client: &Client, catalogue: &Catalogue, key: &DestKey) -> Result<Option<Value>> {
    let Some((ar, namespaced)) = api_resource(catalogue, key) else {
        return Ok(None);
    };
    let api = dynamic_api(client, &ar, namespaced, key.namespace.as_deref());
    match api.get_opt(&key.name).await {
        Ok(Some(o)) => with_type(o, &ar).map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(Error::kube(format!("read {key} in the destination"), e)),
    }
}

fn namespace_key(name: &str) -> DestKey {
    DestKey {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        namespace: None,
        name: name.to_owned(),
    }
}

fn pvc_key(ns: &str, name: &str) -> DestKey {
    DestKey {
        api_version: "v1".into(),
        kind: "PersistentVolumeClaim".into(),
        namespace: Some(ns.to_owned()),
        name: name.to_owned(),
    }
}

/// Patches `status.restoreApplication` (merge patch, field manager `tvk-metamover`); top-level
/// fields of an earlier plan that the new one lacks are removed.
async fn patch_plan(
    client: &Client,
    r: &RestoreRef,
    previous: Option<&Value>,
    plan: &RestorePlan,
    extra_status: Option<(&str, Value)>,
) -> Result<Value> {
    let mut value = plan
        .to_value()
        .map_err(|e| Error::json("encode the restore plan", e))?;
    if let (Some(Value::Object(old)), Some(new)) = (previous, value.as_object_mut()) {
        for k in old.keys() {
            if !new.contains_key(k) {
                new.insert(k.clone(), Value::Null);
            }
        }
    }
    let mut status = json!({"restoreApplication": value.clone()});
    if let Some((k, v)) = extra_status {
        status[k] = v;
    }
    let patch = Patch::Merge(json!({ "status": status }));
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let res = match r.kind {
        RestoreKind::Restore => {
            let ns = r.namespace.as_deref().unwrap_or_default();
            Api::<Restore>::namespaced(client.clone(), ns)
                .patch_status(&r.name, &pp, &patch)
                .await
                .map(|_| ())
        }
        RestoreKind::ClusterRestore => Api::<ClusterRestore>::all(client.clone())
            .patch_status(&r.name, &pp, &patch)
            .await
            .map(|_| ()),
    };
    res.map_err(|e| Error::kube(format!("patch the status of {}", r.display()), e))?;
    // What the server now holds (nulls removed), for the next patch.
    if let Some(m) = value.as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
    Ok(value)
}

/// The destination namespaces of the restore.
fn destination_namespaces(map: &NamespaceMap, index: &Index) -> BTreeSet<String> {
    match &map.single {
        Some(ns) => BTreeSet::from([ns.clone()]),
        None => index
            .namespaces
            .iter()
            .filter_map(|ns| map.map(ns))
            .collect(),
    }
}

/// Runs `restore-plan`: computes the plan and writes it to `status.restoreApplication`.
pub async fn run_plan(
    client: Client,
    target: Target,
    r: &RestoreRef,
    location: &str,
    progress: ProgressFn<'_>,
    seal: Option<&crate::seal::MetadataKey>,
) -> Result<RestorePlan> {
    let mut loaded = load(&client, r).await?;
    let data = read_backup(&target, location, seal).await?;
    check_source_kind(r, &data)?;
    loaded.map.backed_up = data.index.namespaces.iter().cloned().collect();
    progress(json!({"event": "read", "location": data.location.location,
        "objects": data.objects.len()}));
    let map = &loaded.map;
    let default_ns = data.commit.backup.namespace.as_deref();
    let only_metadata = Settings::flag_value(map.global.flags.only_metadata);
    let facts = BackupFacts::new(&data.snapshot, default_ns, only_metadata);
    let catalogue = Catalogue::discover(client.clone()).await?;
    let dest_namespaces = destination_namespaces(map, &data.index);
    let existing_helm = helm_storage_in(&client, &catalogue, &dest_namespaces).await?;
    let renames = render::decide_renames(&data.objects, map, &existing_helm, &loaded.uid);
    let helm_plan = helm_plan(&client, &catalogue, &data.objects, map, &facts, &renames).await?;
    let prepared = plan::prepare(&data.objects, map, &facts, &helm_plan, &loaded.uid);
    let mut live = Live {
        served: catalogue
            .types()
            .iter()
            .map(|t| (t.api.group.clone(), t.api.kind.clone()))
            .collect(),
        ..Live::default()
    };
    // Ask only about objects that would be written.
    for p in prepared
        .iter()
        .filter(|p| p.action == PlanAction::Create && p.object.is_ok())
    {
        if let Some(o) = get_live(&client, &catalogue, &p.dest).await? {
            live.objects.insert(p.dest.clone(), o);
        }
    }
    for ns in &dest_namespaces {
        let key = namespace_key(ns);
        if let Some(o) = get_live(&client, &catalogue, &key).await? {
            live.objects.insert(key, o);
        }
    }
    for ds in data.snapshot.data_snapshots() {
        if let Some(dest) = ds
            .namespace
            .as_deref()
            .or(default_ns)
            .and_then(|ns| map.map(ns))
        {
            let key = pvc_key(&dest, &ds.persistent_volume_claim_name);
            if let Some(o) = get_live(&client, &catalogue, &key).await? {
                live.objects.insert(key, o);
            }
        }
    }
    live.storage_classes = storage_classes(&client, &catalogue).await?;

    let mut out = RestorePlan {
        source: source_of(&data),
        ..RestorePlan::default()
    };
    out.blocking.extend(loaded.spec_problems.iter().cloned());
    let (helm_blocking, helm_warnings) = plan::helm_transform_notes(&data.objects, map);
    out.blocking.extend(helm_blocking);
    out.warnings.extend(helm_warnings);
    out.blocking.extend(helm_plan.blocking.iter().cloned());
    out.warnings.extend(helm_plan.warnings.iter().cloned());
    out.warnings
        .extend(helm_plan.releases.values().filter_map(|r| r.note.clone()));
    let crd_kinds = plan::crd_kinds(&data.objects);
    let mut objects = Vec::with_capacity(prepared.len());
    for p in &prepared {
        let settings = map.settings(p.source.namespace.as_deref());
        let (planned, blocking) = plan::judge(p, &live, settings, &crd_kinds, &loaded.uid);
        if let Some(b) = blocking {
            out.blocking.push(b);
        }
        objects.push(planned);
    }
    let backup_classes = backup_class_names(&data.index);
    let vp = plan::volumes(
        &data.snapshot,
        &data.location.location,
        default_ns,
        map,
        &live,
        &backup_classes,
        &loaded.uid,
    );
    // restoreStorageClass: missing classes the backup holds are created first (not those the
    // backup restores as ordinary objects anyway).
    let actions: Vec<PlanAction> = objects.iter().map(|o| o.action).collect();
    let mut create_classes = vp.create_classes;
    create_classes.extend(plan::object_claim_classes(
        &prepared,
        &actions,
        map,
        &live,
        &backup_classes,
    ));
    create_classes.retain(|c| !restored_as_object(&prepared, &actions, c));
    let mut classes: Vec<PlannedObject> =
        plan::storage_class_objects(&create_classes, &data.index.storage_classes, &loaded.uid)
            .into_iter()
            .map(|(o, _)| o)
            .collect();
    classes.extend(objects);
    out.set_objects(classes);
    out.volumes = vp.volumes;
    out.blocking.extend(vp.blocking);
    out.warnings.extend(vp.warnings);
    out.namespaces = dest_namespaces
        .iter()
        .map(|ns| PlannedNamespace {
            name: ns.clone(),
            exists: live.objects.contains_key(&namespace_key(ns)),
        })
        .collect();
    if r.kind == RestoreKind::Restore {
        for n in out.namespaces.iter().filter(|n| !n.exists) {
            out.blocking.push(format!(
                "namespace {} does not exist; a Restore restores into its own namespace",
                n.name
            ));
        }
    }
    patch_plan(&client, r, loaded.status_plan.as_ref(), &out, None).await?;
    progress(json!({"event": "planned", "objects": out.counts.total(),
        "volumes": out.volumes.len(), "blocking": out.blocking.len()}));
    Ok(out)
}

/// Environment variable that sets the Kubernetes version Helm charts see
/// (`.Capabilities.KubeVersion`, e.g. `v1.30.2`) instead of the API server's `/version`: an
/// operator's override, to render the charts as another version would (a destination about to
/// be upgraded, or one whose `/version` reports a vendor build charts misjudge). Unset or
/// blank: the destination's `/version` `gitVersion`.
pub const KUBE_VERSION_ENV: &str = "TVK_METAMOVER_KUBE_VERSION";

/// `.Capabilities` of the destination as Helm computes them: the API server's version and every
/// served `group/version` and `group/version/Kind` (discovery; groups on the ignore list are
/// not asked, like the backup's discovery).
pub async fn destination_capabilities(client: &Client) -> Result<tvk_chart_render::Capabilities> {
    let kube_version = match std::env::var(KUBE_VERSION_ENV) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_owned(),
        _ => {
            client
                .apiserver_version()
                .await
                .map_err(|e| {
                    Error::kube(
                        "read the destination's Kubernetes version (/version) for the Helm charts' .Capabilities",
                        e,
                    )
                })?
                .git_version
        }
    };
    let ignored_groups: Vec<&str> = crate::clean::IGNORED_TYPES
        .iter()
        .filter(|(_, k)| *k == "*")
        .map(|(g, _)| *g)
        .collect();
    let discovery = kube::Discovery::new(client.clone())
        .exclude(&ignored_groups)
        .run()
        .await
        .map_err(|e| {
            Error::kube(
                "discover the API versions for the Helm charts' .Capabilities",
                e,
            )
        })?;
    let mut api_versions = BTreeSet::new();
    for group in discovery.groups() {
        for v in group.versions() {
            let gv = if group.name().is_empty() {
                v.to_owned()
            } else {
                format!("{}/{v}", group.name())
            };
            for (ar, _) in group.versioned_resources(v) {
                if !ar.plural.contains('/') {
                    api_versions.insert(format!("{gv}/{}", ar.kind));
                }
            }
            api_versions.insert(gv);
        }
    }
    Ok(tvk_chart_render::Capabilities {
        kube_version,
        api_versions: api_versions.into_iter().collect(),
    })
}

/// Every Helm storage object (Secrets and ConfigMaps labelled `owner=helm`) of the destination
/// namespaces that exist.
async fn helm_storage_in(
    client: &Client,
    catalogue: &Catalogue,
    namespaces: &BTreeSet<String>,
) -> Result<BTreeMap<String, Vec<Value>>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for ns in namespaces {
        for kind in ["Secret", "ConfigMap"] {
            let Some(t) = catalogue.find("", kind) else {
                continue;
            };
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &t.api);
            let lp = kube::api::ListParams::default().labels(crate::helm::STORAGE_LABEL_SELECTOR);
            match api.list(&lp).await {
                Ok(list) => {
                    for o in list.items {
                        out.entry(ns.clone())
                            .or_default()
                            .push(with_type(o, &t.api)?);
                    }
                }
                Err(e) if is_status(&e, 404) => {}
                Err(e) => {
                    return Err(Error::kube(
                        format!("list the Helm release storage ({kind}s) of namespace {ns}"),
                        e,
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// The Helm part of the restore: capabilities read only when a release is re-rendered.
async fn helm_plan(
    client: &Client,
    catalogue: &Catalogue,
    objects: &[BackupObject],
    map: &NamespaceMap,
    facts: &BackupFacts,
    renames: &BTreeMap<render::ReleaseId, String>,
) -> Result<render::HelmPlan> {
    let capabilities = if render::needs_render(objects, map, renames) {
        destination_capabilities(client).await?
    } else {
        tvk_chart_render::Capabilities {
            kube_version: String::new(),
            api_versions: Vec::new(),
        }
    };
    let scope = |g: &str, k: &str| catalogue.is_namespaced(g, k);
    Ok(render::plan_releases(
        objects,
        map,
        &render::HelmInputs {
            capabilities: &capabilities,
            scope: &scope,
            renames,
            facts,
        },
    ))
}

/// Names of the StorageClass objects the backup holds (`index.json`).
fn backup_class_names(index: &Index) -> BTreeSet<String> {
    index
        .storage_classes
        .iter()
        .filter_map(|o| name(o).map(str::to_owned))
        .collect()
}

/// Whether the backup restores StorageClass `class` as one of its objects (planned `Create`).
fn restored_as_object(prepared: &[Prepared], actions: &[PlanAction], class: &str) -> bool {
    prepared.iter().zip(actions).any(|(p, a)| {
        *a == PlanAction::Create
            && p.dest.kind == "StorageClass"
            && p.dest.group() == "storage.k8s.io"
            && p.dest.name == class
    })
}

/// `restoreFlags.restoreStorageClass`: creates the StorageClasses the plan lists (before any
/// other object), create-only — one that exists (made by someone else since the plan) is left
/// as it is and recorded `Skipped`; one carrying this restore's label was created by an earlier
/// attempt. Returns what this restore created.
async fn restore_storage_classes(
    client: &Client,
    catalogue: &Catalogue,
    plan: &mut RestorePlan,
    backup_classes: &[Value],
    restore_uid: &str,
    outcome: &mut RestoreOutcome,
) -> Result<Vec<CreatedObject>> {
    let names: BTreeSet<String> = plan
        .objects
        .iter()
        .filter(|o| {
            o.kind == "StorageClass"
                && o.api_version.starts_with("storage.k8s.io/")
                && o.action == PlanAction::Create
                && o.reason.as_deref() == Some(plan::STORAGE_CLASS_REASON)
        })
        .map(|o| o.name.clone())
        .collect();
    let mut mine = Vec::new();
    if names.is_empty() {
        return Ok(mine);
    }
    let Some(t) = catalogue.find("storage.k8s.io", "StorageClass") else {
        return Err(Error::Usage(
            "the destination does not serve storage.k8s.io StorageClass; restoreFlags.restoreStorageClass cannot create the planned classes"
                .into(),
        ));
    };
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &t.api);
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    let objects = plan::storage_class_objects(&names, backup_classes, restore_uid);
    if let Some(missing) = names
        .iter()
        .find(|n| !objects.iter().any(|(p, _)| &p.name == *n))
    {
        return Err(Error::Usage(format!(
            "the plan creates StorageClass {missing} but the backup does not hold it; run the Validation phase again"
        )));
    }
    for (planned, obj) in objects {
        let what = format!("StorageClass {}", planned.name);
        let result = async {
            let dynobj: DynamicObject = serde_json::from_value(obj)
                .map_err(|e| Error::json(format!("decode {what}"), e))?;
            match api.create(&pp, &dynobj).await {
                Ok(_) => Ok((ObjectResult::Created, true)),
                Err(e) if is_status(&e, 409) => {
                    let live = api
                        .get_opt(&planned.name)
                        .await
                        .map_err(|e| Error::kube(format!("read {what}"), e))?;
                    let ours = live
                        .and_then(|o| o.metadata.labels)
                        .and_then(|l| l.get(plan::RESTORE_UID_LABEL).cloned())
                        .as_deref()
                        == Some(restore_uid);
                    Ok(if ours {
                        (ObjectResult::Created, true)
                    } else {
                        (ObjectResult::Skipped, false)
                    })
                }
                Err(e) => Err(Error::kube(format!("create {what}"), e)),
            }
        }
        .await;
        let entry = plan
            .objects
            .iter_mut()
            .find(|o| o.kind == "StorageClass" && o.name == planned.name && o.namespace.is_none());
        match result {
            Ok((res, is_mine)) => {
                match res {
                    ObjectResult::Created => outcome.created += 1,
                    _ => outcome.skipped += 1,
                }
                if is_mine {
                    mine.push(CreatedObject {
                        api_version: planned.api_version.clone(),
                        kind: planned.kind.clone(),
                        namespace: None,
                        name: planned.name.clone(),
                    });
                }
                if let Some(e) = entry {
                    e.result = Some(res);
                    e.error = None;
                }
            }
            Err(err) => {
                let msg = err.to_string();
                if let Some(e) = entry {
                    e.result = Some(ObjectResult::Failed);
                    e.error = Some(msg.clone());
                }
                return Err(Error::ObjectFailed {
                    object: what,
                    reason: msg,
                });
            }
        }
    }
    Ok(mine)
}

async fn storage_classes(
    client: &Client,
    catalogue: &Catalogue,
) -> Result<Option<BTreeSet<String>>> {
    let Some(t) = catalogue.find("storage.k8s.io", "StorageClass") else {
        return Ok(None);
    };
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &t.api);
    match api.list(&Default::default()).await {
        Ok(list) => Ok(Some(
            list.items
                .into_iter()
                .filter_map(|o| o.metadata.name)
                .collect(),
        )),
        Err(e) if is_status(&e, 403) => Ok(None),
        Err(e) => Err(Error::kube("list the storage classes", e)),
    }
}

/// What `restore` did.
#[derive(Debug, Default)]
pub struct RestoreOutcome {
    /// Objects created.
    pub created: usize,
    /// Objects patched.
    pub patched: usize,
    /// Objects skipped or excluded.
    pub skipped: usize,
    /// Workloads not ready in time.
    pub not_ready: Vec<String>,
}

/// Identity used to re-link owner references: (group, kind, namespace, name).
type OwnerKey = (String, String, Option<String>, String);

fn owner_key_of(dest: &DestKey) -> OwnerKey {
    (
        dest.group().to_owned(),
        dest.kind.clone(),
        dest.namespace.clone(),
        dest.name.clone(),
    )
}

/// An owner reference that could not be set when its dependent was created (the owner comes
/// later in restore order).
struct Deferred {
    dependent: DestKey,
    owner: OwnerKey,
    reference: Value,
}

/// Splits an object's owner references: re-linked to restored owners' UIDs now, deferred when
/// the owner is restored later, dropped otherwise.
fn relink(
    obj: &mut Value,
    dest: &DestKey,
    uids: &HashMap<OwnerKey, String>,
    pending: &HashSet<OwnerKey>,
    deferred: &mut Vec<Deferred>,
) {
    let Some(refs) = obj
        .pointer_mut("/metadata/ownerReferences")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    let mut kept = Vec::new();
    for mut r in std::mem::take(refs) {
        let group = r
            .get("apiVersion")
            .and_then(Value::as_str)
            .and_then(|a| a.split_once('/').map(|(g, _)| g.to_owned()))
            .unwrap_or_default();
        let (Some(kind), Some(name)) = (
            r.get("kind").and_then(Value::as_str),
            r.get("name").and_then(Value::as_str),
        ) else {
            continue;
        };
        // Owners are in the same namespace (or cluster-scoped).
        let candidates = [
            (
                group.clone(),
                kind.to_owned(),
                dest.namespace.clone(),
                name.to_owned(),
            ),
            (group.clone(), kind.to_owned(), None, name.to_owned()),
        ];
        if let Some(uid) = candidates.iter().find_map(|k| uids.get(k)) {
            r["uid"] = Value::String(uid.clone());
            kept.push(r);
        } else if let Some(k) = candidates.iter().find(|k| pending.contains(*k)) {
            deferred.push(Deferred {
                dependent: dest.clone(),
                owner: k.clone(),
                reference: r,
            });
        }
    }
    if kept.is_empty() {
        if let Some(m) = obj.pointer_mut("/metadata").and_then(Value::as_object_mut) {
            m.remove("ownerReferences");
        }
    } else if let Some(refs) = obj.pointer_mut("/metadata/ownerReferences") {
        *refs = Value::Array(kept);
    }
}

/// The plan the Validation phase wrote (refused when absent or blocked) and the backup it was
/// made for, read and verified again (refused when the location differs).
async fn planned_backup(
    loaded: &Loaded,
    target: &Target,
    r: &RestoreRef,
    location: &str,
    seal: Option<&crate::seal::MetadataKey>,
) -> Result<(RestorePlan, BackupData)> {
    let plan = RestorePlan::from_status_value(loaded.status_plan.as_ref())
        .map_err(|e| r.err(format!("status.restoreApplication is not a restore plan: {e}")))?
        .ok_or_else(|| {
            r.err("it has no plan in status.restoreApplication; the Validation phase (tvk-metamover restore-plan) must run first")
        })?;
    if !plan.blocking.is_empty() {
        return Err(r.err(format!(
            "its plan is blocked and nothing is restored: {}",
            plan.blocking.join("; ")
        )));
    }
    let data = read_backup(target, location, seal).await?;
    check_source_kind(r, &data)?;
    if plan.source.location != data.location.location {
        return Err(r.err(format!(
            "its plan was made for location {}, not {}; run the Validation phase again",
            plan.source.location, data.location.location
        )));
    }
    Ok((plan, data))
}

/// Runs `restore`: creates the planned objects.
pub async fn run_restore(
    client: Client,
    target: Target,
    r: &RestoreRef,
    location: &str,
    progress: ProgressFn<'_>,
    seal: Option<&crate::seal::MetadataKey>,
) -> Result<RestoreOutcome> {
    let mut loaded = load(&client, r).await?;
    let (mut plan, data) = planned_backup(&loaded, &target, r, location, seal).await?;
    loaded.map.backed_up = data.index.namespaces.iter().cloned().collect();
    let map = &loaded.map;
    let default_ns = data.commit.backup.namespace.as_deref();
    let only_metadata = Settings::flag_value(map.global.flags.only_metadata);
    let facts = BackupFacts::new(&data.snapshot, default_ns, only_metadata);
    let mut catalogue = Catalogue::discover(client.clone()).await?;
    // Releases are renamed as the plan decided; a truncated plan may not show the storage
    // objects (restored last), so the destination decides again.
    let renames = if plan.objects_truncated {
        let dest_namespaces = destination_namespaces(map, &data.index);
        let existing_helm = helm_storage_in(&client, &catalogue, &dest_namespaces).await?;
        render::decide_renames(&data.objects, map, &existing_helm, &loaded.uid)
    } else {
        render::renames_from_plan(&data.objects, map, &plan.objects, &loaded.uid)
    };
    let helm_plan = helm_plan(&client, &catalogue, &data.objects, map, &facts, &renames).await?;
    if !helm_plan.blocking.is_empty() {
        return Err(r.err(format!(
            "its Helm releases cannot be restored as planned: {}; run the Validation phase again",
            helm_plan.blocking.join("; ")
        )));
    }
    let prepared = plan::prepare(&data.objects, map, &facts, &helm_plan, &loaded.uid);
    let mut previous = loaded.status_plan.clone();

    // The plan's entries by destination identity.
    let positions: HashMap<(String, String, Option<String>, String), usize> = plan
        .objects
        .iter()
        .enumerate()
        .map(|(i, o)| {
            (
                (
                    o.api_version.clone(),
                    o.kind.clone(),
                    o.namespace.clone(),
                    o.name.clone(),
                ),
                i,
            )
        })
        .collect();
    let pos_of = |p: &Prepared| {
        positions
            .get(&(
                p.dest.api_version.clone(),
                p.dest.kind.clone(),
                p.dest.namespace.clone(),
                p.dest.name.clone(),
            ))
            .copied()
    };
    let action_of = |p: &Prepared| match pos_of(p) {
        Some(i) => plan.objects[i].action,
        // Beyond the stored list (truncated): the plan's rules, judged at write time.
        None => p.action,
    };
    let actions: Vec<PlanAction> = prepared.iter().map(action_of).collect();
    let mut pending: HashSet<OwnerKey> = prepared
        .iter()
        .zip(&actions)
        .filter(|(_, a)| matches!(a, PlanAction::Create | PlanAction::Patch | PlanAction::Skip))
        .map(|(p, _)| owner_key_of(&p.dest))
        .collect();
    let mut uids: HashMap<OwnerKey, String> = HashMap::new();
    let mut deferred = Vec::new();
    let mut created: BTreeSet<CreatedObject> = plan.created.iter().cloned().collect();
    let mut outcome = RestoreOutcome::default();
    let mut workloads = Vec::new();
    let mut failure: Option<Error> = None;

    // restoreStorageClass: the planned classes before anything else (the claims need them).
    if plan
        .objects
        .iter()
        .any(|o| o.reason.as_deref() == Some(plan::STORAGE_CLASS_REASON))
    {
        match restore_storage_classes(
            &client,
            &catalogue,
            &mut plan,
            &data.index.storage_classes,
            &loaded.uid,
            &mut outcome,
        )
        .await
        {
            Ok(made) => created.extend(made),
            Err(e) => failure = Some(e),
        }
        plan.created = created.iter().cloned().collect();
        previous = Some(patch_plan(&client, r, previous.as_ref(), &plan, None).await?);
        progress(json!({"event": "storage-classes", "created": outcome.created}));
    }

    let mut i = 0;
    while i < prepared.len() && failure.is_none() {
        let rank = prepared[i].rank;
        let mut j = i;
        while j < prepared.len() && prepared[j].rank == rank {
            j += 1;
        }
        if i > 0 && prepared[i - 1].rank == 0 {
            // The CRDs were restored by the previous batch: learn their types.
            catalogue = wait_for_types(&client, &prepared[i..], &actions[i..], catalogue).await?;
        }
        for k in i..j {
            let p = &prepared[k];
            let result = restore_one(
                &client,
                &catalogue,
                p,
                actions[k],
                map,
                &loaded.uid,
                &loaded.images,
                &mut uids,
                &pending,
                &mut deferred,
            )
            .await;
            pending.remove(&owner_key_of(&p.dest));
            let (res, err) = match result {
                Ok((res, mine)) => {
                    if mine {
                        created.insert(CreatedObject {
                            api_version: p.dest.api_version.clone(),
                            kind: p.dest.kind.clone(),
                            namespace: p.dest.namespace.clone(),
                            name: p.dest.name.clone(),
                        });
                    }
                    match res {
                        ObjectResult::Created => outcome.created += 1,
                        ObjectResult::Patched => outcome.patched += 1,
                        _ => outcome.skipped += 1,
                    }
                    if matches!(res, ObjectResult::Created | ObjectResult::Patched)
                        && is_workload(&p.dest)
                    {
                        workloads.push(p.dest.clone());
                    }
                    (res, None)
                }
                Err(e) => {
                    let msg = e.to_string();
                    failure = Some(Error::ObjectFailed {
                        object: p.dest.to_string(),
                        reason: msg.clone(),
                    });
                    (ObjectResult::Failed, Some(msg))
                }
            };
            if let Some(n) = pos_of(p) {
                plan.objects[n].result = Some(res);
                plan.objects[n].error = err;
            }
            if failure.is_some() {
                break;
            }
        }
        plan.created = created.iter().cloned().collect();
        previous = Some(patch_plan(&client, r, previous.as_ref(), &plan, None).await?);
        progress(json!({"event": "batch", "rank": rank, "objects": j - i,
            "created": outcome.created}));
        i = j;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    // restoreNamespaceLabelsAnnotations: existing destination namespaces get the backed-up
    // namespace's labels and annotations.
    for (p, action) in prepared.iter().zip(&actions) {
        if p.dest.kind != "Namespace" || !p.dest.group().is_empty() || *action != PlanAction::Skip {
            continue;
        }
        let Some(strategy) = map
            .settings(Some(&p.source.name))
            .flags
            .restore_namespace_labels_annotations
        else {
            continue;
        };
        // A Restore's own namespace is planned without an object: read the backed-up one.
        let Some(backed_up) = data.objects.iter().map(|o| &o.obj).find(|o| {
            o.get("apiVersion").and_then(Value::as_str) == Some("v1")
                && o.get("kind").and_then(Value::as_str) == Some("Namespace")
                && name(o) == Some(p.source.name.as_str())
        }) else {
            continue;
        };
        restore_namespace_meta(&client, &p.dest.name, backed_up, strategy).await?;
        progress(
            json!({"event": "namespace-metadata", "namespace": p.dest.name,
            "strategy": format!("{strategy:?}")}),
        );
    }
    // Owner references whose owner came later.
    for d in &deferred {
        let Some(uid) = uids.get(&d.owner) else {
            continue;
        };
        let mut reference = d.reference.clone();
        reference["uid"] = Value::String(uid.clone());
        if let Err(e) = add_owner_ref(&client, &catalogue, &d.dependent, reference).await {
            return Err(Error::ObjectFailed {
                object: d.dependent.to_string(),
                reason: e.to_string(),
            });
        }
    }
    // Workloads ready.
    let wait = Duration::from_secs(u64::try_from(map.global.ready_wait_seconds).unwrap_or(0));
    outcome.not_ready = wait_ready(&client, &catalogue, &workloads, wait).await?;
    for w in &outcome.not_ready {
        let msg = format!(
            "{w} was not ready after resourcesReadyWaitSeconds ({}s)",
            wait.as_secs()
        );
        if !plan.warnings.contains(&msg) {
            plan.warnings.push(msg);
        }
    }
    let extra = if r.kind == RestoreKind::ClusterRestore {
        let ns: Vec<String> = created
            .iter()
            .filter(|c| c.kind == "Namespace" && c.api_version == "v1")
            .map(|c| c.name.clone())
            .collect();
        Some(("createdNamespaces", json!(ns)))
    } else {
        None
    };
    plan.created = created.iter().cloned().collect();
    patch_plan(&client, r, previous.as_ref(), &plan, extra).await?;
    Ok(outcome)
}

/// `restoreFlags.restoreStorageClass` on its own, for the control plane to run **before
/// DataRestore** (whose staging claims need the classes): reads the plan from
/// `status.restoreApplication` (refused when absent, blocked, or made for another location),
/// reads and verifies the backup, creates the planned StorageClasses create-only
/// ([`restore_storage_classes`]) and records their results and `created[]` in the plan. The
/// later `restore` finds them carrying this restore's label and records them `Created`.
/// Returns the number of classes created.
pub async fn run_storage_classes(
    client: Client,
    target: Target,
    r: &RestoreRef,
    location: &str,
    seal: Option<&crate::seal::MetadataKey>,
) -> Result<usize> {
    let loaded = load(&client, r).await?;
    let (mut plan, data) = planned_backup(&loaded, &target, r, location, seal).await?;
    let catalogue = Catalogue::discover(client.clone()).await?;
    let mut outcome = RestoreOutcome::default();
    let result = restore_storage_classes(
        &client,
        &catalogue,
        &mut plan,
        &data.index.storage_classes,
        &loaded.uid,
        &mut outcome,
    )
    .await;
    if let Ok(made) = &result {
        let mut created: BTreeSet<CreatedObject> = plan.created.iter().cloned().collect();
        created.extend(made.iter().cloned());
        plan.created = created.into_iter().collect();
    }
    patch_plan(&client, r, loaded.status_plan.as_ref(), &plan, None).await?;
    result.map(|_| outcome.created)
}

/// Labels and annotations a destination namespace keeps whatever the strategy: set by the API
/// server itself.
const NAMESPACE_OWN_KEYS: &[&str] = &["kubernetes.io/metadata.name"];

/// The JSON merge patch of one map (labels or annotations) of an existing destination
/// namespace under `restoreNamespaceLabelsAnnotations` (pure): `Append` adds the backed-up keys
/// it lacks, `Override` also overwrites the keys both have, `Replace` makes the map the
/// backed-up one (other keys removed, the API server's own kept). The restore label is never
/// copied: the namespace is not this restore's.
pub fn namespace_meta_patch(
    strategy: LabelsAnnotationsStrategy,
    live: &serde_json::Map<String, Value>,
    backed_up: &serde_json::Map<String, Value>,
) -> serde_json::Map<String, Value> {
    let mut patch = serde_json::Map::new();
    for (k, v) in backed_up {
        if k == plan::RESTORE_UID_LABEL || NAMESPACE_OWN_KEYS.contains(&k.as_str()) {
            continue;
        }
        let set = match strategy {
            LabelsAnnotationsStrategy::Append => !live.contains_key(k),
            LabelsAnnotationsStrategy::Override | LabelsAnnotationsStrategy::Replace => {
                live.get(k) != Some(v)
            }
        };
        if set {
            patch.insert(k.clone(), v.clone());
        }
    }
    if strategy == LabelsAnnotationsStrategy::Replace {
        for k in live.keys() {
            if !backed_up.contains_key(k) && !NAMESPACE_OWN_KEYS.contains(&k.as_str()) {
                patch.insert(k.clone(), Value::Null);
            }
        }
    }
    patch
}

async fn restore_namespace_meta(
    client: &Client,
    name: &str,
    backed_up: &Value,
    strategy: LabelsAnnotationsStrategy,
) -> Result<()> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let Some(live) = api
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("read Namespace {name}"), e))?
    else {
        return Ok(());
    };
    let live = serde_json::to_value(&live).map_err(|e| Error::json("encode a Namespace", e))?;
    let empty = serde_json::Map::new();
    let mut meta = serde_json::Map::new();
    for field in ["labels", "annotations"] {
        let of = |v: &Value| {
            v.pointer(&format!("/metadata/{field}"))
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_else(|| empty.clone())
        };
        let patch = namespace_meta_patch(strategy, &of(&live), &of(backed_up));
        if !patch.is_empty() {
            meta.insert(field.to_string(), Value::Object(patch));
        }
    }
    if meta.is_empty() {
        return Ok(());
    }
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch(name, &pp, &Patch::Merge(json!({"metadata": meta})))
        .await
        .map_err(|e| {
            Error::kube(
                format!("patch the labels and annotations of Namespace {name}"),
                e,
            )
        })?;
    Ok(())
}

fn is_workload(k: &DestKey) -> bool {
    k.group() == "apps" && matches!(k.kind.as_str(), "Deployment" | "StatefulSet" | "DaemonSet")
}

/// Waits (up to 30 s) until the destination serves the types still to be written, after the
/// CRDs were restored.
async fn wait_for_types(
    client: &Client,
    rest: &[Prepared],
    actions: &[PlanAction],
    mut catalogue: Catalogue,
) -> Result<Catalogue> {
    let missing = |c: &Catalogue| {
        rest.iter()
            .zip(actions)
            .filter(|(_, a)| matches!(a, PlanAction::Create | PlanAction::Patch))
            .any(|(p, _)| c.find(p.dest.group(), &p.dest.kind).is_none())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while missing(&catalogue) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        catalogue = Catalogue::discover(client.clone()).await?;
    }
    Ok(catalogue)
}

/// Restores one object; returns the result and whether this restore created it (now or in an
/// earlier attempt: recognised by the restore label).
#[allow(clippy::too_many_arguments)]
async fn restore_one(
    client: &Client,
    catalogue: &Catalogue,
    p: &Prepared,
    action: PlanAction,
    map: &NamespaceMap,
    restore_uid: &str,
    images: &BTreeMap<String, String>,
    uids: &mut HashMap<OwnerKey, String>,
    pending: &HashSet<OwnerKey>,
    deferred: &mut Vec<Deferred>,
) -> Result<(ObjectResult, bool)> {
    let key = owner_key_of(&p.dest);
    if matches!(action, PlanAction::Exclude) {
        return Ok((ObjectResult::Skipped, false));
    }
    let settings = map.settings(p.source.namespace.as_deref());
    let Some((ar, namespaced)) = api_resource(catalogue, &p.dest) else {
        if action == PlanAction::Skip {
            return Ok((ObjectResult::Skipped, false));
        }
        return Err(Error::Usage(format!(
            "the destination does not serve {} {}; install its CRD or exclude it",
            p.dest.api_version, p.dest.kind
        )));
    };
    let api = dynamic_api(client, &ar, namespaced, p.dest.namespace.as_deref());
    let existing = api
        .get_opt(&p.dest.name)
        .await
        .map_err(|e| Error::kube(format!("read {}", p.dest), e))?;
    if action == PlanAction::Skip {
        if let Some(uid) = existing.as_ref().and_then(|o| o.metadata.uid.clone()) {
            uids.insert(key, uid);
        }
        return Ok((ObjectResult::Skipped, false));
    }
    let mut obj = p.object.clone().map_err(Error::Usage)?;
    relink(&mut obj, &p.dest, uids, pending, deferred);
    // Images ImageRestore pushed to the restore registry: workloads point at them.
    crate::images::rewrite_images(&mut obj, images);
    let mut action = action;
    if let Some(live) = &existing {
        let live_v = with_type(live.clone(), &ar)?;
        let uid = live.metadata.uid.clone().unwrap_or_default();
        if plan::restore_uid_of(&live_v).as_deref() == Some(restore_uid) {
            // Created by an earlier attempt of this restore (a crash before its record).
            uids.insert(key, uid);
            return Ok((ObjectResult::Created, true));
        }
        if action == PlanAction::Create {
            // It appeared after the plan was made: judge it by the flags now.
            let crd = p.dest.kind == "CustomResourceDefinition";
            if settings.flags.skip_if_already_exists == Some(true)
                || (p.dest.kind == "Namespace" && p.dest.group().is_empty())
            {
                uids.insert(key, uid);
                return Ok((ObjectResult::Skipped, false));
            }
            let patch_ok = if crd {
                settings.flags.patch_crd == Some(true)
            } else {
                settings.flags.patch_if_already_exists == Some(true)
            };
            if !patch_ok {
                return Err(Error::Usage(format!(
                    "it was created by someone else after the plan was made; set restoreFlags.{} or delete it, then restore again",
                    if crd {
                        "patchCRD"
                    } else {
                        "skipIfAlreadyExists or patchIfAlreadyExists"
                    }
                )));
            }
            action = PlanAction::Patch;
        }
    } else if action == PlanAction::Patch {
        action = PlanAction::Create;
    }
    if action == PlanAction::Patch {
        // A patched object is not this restore's: it does not get the restore label.
        if let Some(l) = obj
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            l.remove(plan::RESTORE_UID_LABEL);
        }
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let o = api
            .patch(&p.dest.name, &pp, &Patch::Merge(&obj))
            .await
            .map_err(|e| Error::kube(format!("patch {}", p.dest), e))?;
        uids.insert(key, o.metadata.uid.unwrap_or_default());
        return Ok((ObjectResult::Patched, false));
    }
    let dynobj: DynamicObject =
        serde_json::from_value(obj).map_err(|e| Error::json(format!("decode {}", p.dest), e))?;
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    let o = api
        .create(&pp, &dynobj)
        .await
        .map_err(|e| Error::kube(format!("create {}", p.dest), e))?;
    uids.insert(key, o.metadata.uid.unwrap_or_default());
    Ok((ObjectResult::Created, true))
}

async fn add_owner_ref(
    client: &Client,
    catalogue: &Catalogue,
    dependent: &DestKey,
    reference: Value,
) -> Result<()> {
    let Some((ar, namespaced)) = api_resource(catalogue, dependent) else {
        return Ok(());
    };
    let api = dynamic_api(client, &ar, namespaced, dependent.namespace.as_deref());
    let Some(live) = api
        .get_opt(&dependent.name)
        .await
        .map_err(|e| Error::kube(format!("read {dependent}"), e))?
    else {
        return Ok(());
    };
    let live = with_type(live, &ar)?;
    let mut refs: Vec<Value> = live
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if owner_refs(&live)
        .iter()
        .any(|o| Some(o.uid.as_str()) == reference.get("uid").and_then(Value::as_str))
    {
        return Ok(());
    }
    refs.push(reference);
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch(
        &dependent.name,
        &pp,
        &Patch::Merge(json!({"metadata": {"ownerReferences": refs}})),
    )
    .await
    .map_err(|e| Error::kube(format!("link the owner of {dependent}"), e))?;
    Ok(())
}

/// Whether a Deployment, StatefulSet or DaemonSet is ready.
pub fn workload_ready(kind: &str, obj: &Value) -> bool {
    let num = |p: &str| obj.pointer(p).and_then(Value::as_i64);
    match kind {
        "DaemonSet" => {
            let desired = num("/status/desiredNumberScheduled");
            desired.is_some() && num("/status/numberReady") >= desired
        }
        _ => {
            let want = num("/spec/replicas").unwrap_or(1);
            num("/status/readyReplicas").unwrap_or(0) >= want
        }
    }
}

async fn wait_ready(
    client: &Client,
    catalogue: &Catalogue,
    workloads: &[DestKey],
    wait: Duration,
) -> Result<Vec<String>> {
    let deadline = Instant::now() + wait;
    let mut left: Vec<&DestKey> = workloads.iter().collect();
    loop {
        let mut still = Vec::new();
        for w in left {
            match get_live(client, catalogue, w).await? {
                Some(o) if workload_ready(&w.kind, &o) => {}
                Some(_) => still.push(w),
                None => {}
            }
        }
        left = still;
        if left.is_empty() || Instant::now() >= deadline {
            return Ok(left.iter().map(|k| k.to_string()).collect());
        }
        tokio::time::sleep(
            Duration::from_secs(2).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_are_ready_when_their_replicas_are() {
        let d = |spec: Value, status: Value| json!({"spec": spec, "status": status});
        assert!(workload_ready(
            "Deployment",
            &d(json!({"replicas": 2}), json!({"readyReplicas": 2}))
        ));
        assert!(!workload_ready(
            "Deployment",
            &d(json!({"replicas": 2}), json!({"readyReplicas": 1}))
        ));
        assert!(!workload_ready("StatefulSet", &d(json!({}), json!({}))));
        assert!(workload_ready(
            "StatefulSet",
            &d(json!({"replicas": 0}), json!({}))
        ));
        assert!(workload_ready(
            "DaemonSet",
            &d(
                json!({}),
                json!({"desiredNumberScheduled": 3, "numberReady": 3})
            )
        ));
        assert!(!workload_ready(
            "DaemonSet",
            &d(
                json!({}),
                json!({"desiredNumberScheduled": 3, "numberReady": 2})
            )
        ));
        assert!(!workload_ready("DaemonSet", &d(json!({}), json!({}))));
    }

    #[test]
    fn namespace_labels_follow_the_strategy() {
        let m = |v: Value| v.as_object().unwrap().clone();
        let live = m(json!({"kubernetes.io/metadata.name": "copy", "team": "red", "mine": "x"}));
        let backed_up = m(
            json!({"kubernetes.io/metadata.name": "shop", "team": "blue",
            "tier": "gold", plan::RESTORE_UID_LABEL: "uid"}),
        );
        assert_eq!(
            Value::Object(namespace_meta_patch(
                LabelsAnnotationsStrategy::Append,
                &live,
                &backed_up
            )),
            json!({"tier": "gold"})
        );
        assert_eq!(
            Value::Object(namespace_meta_patch(
                LabelsAnnotationsStrategy::Override,
                &live,
                &backed_up
            )),
            json!({"team": "blue", "tier": "gold"})
        );
        assert_eq!(
            Value::Object(namespace_meta_patch(
                LabelsAnnotationsStrategy::Replace,
                &live,
                &backed_up
            )),
            json!({"team": "blue", "tier": "gold", "mine": null})
        );
    }

    #[test]
    fn only_pushed_images_are_in_the_rewrite_map() {
        let status: RestoreStatus = serde_json::from_value(serde_json::json!({"images": [
            {"image": "nginx:1", "digest": "sha256:aa", "result": "Reachable"},
            {"image": "gone.example/app/web:v1", "digest": "sha256:bb",
             "restoredImage": "reg.example/restored/web:v1", "result": "Pushed"},
            {"image": "gone.example/app/api:v2", "digest": "sha256:cc",
             "restoredImage": "reg.example/restored/api:v2-tvk-1234abcd", "result": "PushedNewTag"}]}))
        .unwrap();
        let map = image_map(Some(&status));
        assert_eq!(
            map.into_iter().collect::<Vec<_>>(),
            vec![
                (
                    "gone.example/app/api:v2".to_string(),
                    "reg.example/restored/api:v2-tvk-1234abcd".to_string()
                ),
                (
                    "gone.example/app/web:v1".to_string(),
                    "reg.example/restored/web:v1".to_string()
                ),
            ]
        );
        assert!(image_map(None).is_empty());
    }

    #[test]
    fn hostile_names_and_locations_are_refused() {
        for ok in [
            "web",
            "system:controller:x",
            "a.b-c_d",
            "sh.helm.release.v1.web.v1",
        ] {
            assert!(is_safe_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "../x", "a/b", "a%2fb", "a b", "x\u{0}"] {
            assert!(!is_safe_name(bad), "{bad:?}");
        }
        assert!(is_dns_label("shop-2") && !is_dns_label("Shop") && !is_dns_label("-a"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(parse_location("p/b").is_ok());
        for bad in ["p", "../b", "p/..", "p/b/c", "/b"] {
            assert!(parse_location(bad).is_err(), "{bad:?}");
        }
    }
}
