//! `tvk-metamover snapshot`: capture a backup's metadata.
//!
//! Stages: load the Backup and its plan → discover the resource types → compile the plan per
//! namespace (Helm releases decoded, OLM operators resolved) → inventory every object of the
//! namespaces (identity and links only, lists paginated) → add dependencies ([`close`]) and the
//! cluster-scoped objects needed (Namespaces, CRDs, cluster objects of Helm releases or named by
//! `includeResources`) → list again, type by type, and write the selected objects cleaned
//! ([`crate::layout`]) → `snapshot.json`, `index.json` last → patch `status.snapshot`.
//!
//! Two listing passes keep memory bounded by one page plus a few strings per object, and let
//! cleaning know the full set of backed-up UIDs (owner references to anything else are dropped).
//! A rerun after a crash: if `index.json` exists the metadata is committed and only the status
//! patch is redone; otherwise what an earlier attempt left (never referenced by an index) is
//! deleted and the snapshot starts over.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use bytes::Bytes;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{DynamicObject, ListParams, Patch, PatchParams},
    core::ApiResource,
};
use serde_json::{Value, json};
use tvk_api::{
    Backup, BackupPlan, ClusterBackup, ClusterBackupPlan,
    common::Resource,
    snapshot::{CustomSnapshot, DataSnapshot, HelmChart, OperatorSnapshot, Snapshot},
};
use tvk_datamover::target::Target;

use crate::{
    clean::{self, PVC_BIND_ANNOTATIONS},
    discovery::{Catalogue, ResourceType},
    error::{Error, Result, is_status},
    helm,
    layout::{
        self, BackupIdentity, BackupLocation, DocumentEntry, DocumentWriter, FORMAT_VERSION,
        HelmEntry, Index, MAX_SMALL_OBJECT, PvcEntry,
    },
    object::{Gvk, ObjectKey, annotations, gvk_of, name, namespace, str_at, uid},
    selection::{Component, Entry, NamespaceScope, close},
};

/// Field manager of every write the metamover makes.
pub const FIELD_MANAGER: &str = "tvk-metamover";
/// Objects per list page, by default.
pub const PAGE_SIZE: u32 = 250;

/// Tuning of `snapshot`.
#[derive(Clone, Debug)]
pub struct Options {
    /// Objects per list page (`limit`); memory holds one page at a time.
    pub page_size: u32,
    /// Encrypt what is written under `_metadata/` ([`crate::seal`]).
    pub encryption: Option<crate::seal::MetadataKey>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            page_size: PAGE_SIZE,
            encryption: None,
        }
    }
}

/// Which kind of backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackupKind {
    /// A namespaced Backup of a BackupPlan.
    #[value(name = "Backup")]
    Backup,
    /// A ClusterBackup of a ClusterBackupPlan.
    #[value(name = "ClusterBackup")]
    ClusterBackup,
}

/// The backup to work on.
#[derive(Clone, Debug)]
pub struct BackupRef {
    /// Kind.
    pub kind: BackupKind,
    /// Namespace (Backups only).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl BackupRef {
    fn display(&self) -> String {
        match (&self.kind, &self.namespace) {
            (BackupKind::Backup, Some(ns)) => format!("Backup {ns}/{}", self.name),
            (BackupKind::Backup, None) => format!("Backup {}", self.name),
            (BackupKind::ClusterBackup, _) => format!("ClusterBackup {}", self.name),
        }
    }
}

/// Receives progress events (one JSON object each).
pub type ProgressFn<'a> = &'a (dyn Fn(Value) + Sync);

/// What `snapshot` produced.
#[derive(Debug)]
pub struct Outcome {
    /// The computed `status.snapshot`.
    pub snapshot: Snapshot,
    /// The index written.
    pub index: Index,
    /// The metadata was already committed by an earlier run.
    pub reused: bool,
}

/// The plan of a backup, loaded.
pub(crate) enum LoadedPlan {
    Namespaced(Box<BackupPlan>),
    Cluster(Box<ClusterBackupPlan>),
}

/// A Backup or ClusterBackup with its plan.
pub(crate) struct Loaded {
    pub identity: BackupIdentity,
    /// Loaded when asked for, or when the Backup does not record its plan's UID.
    pub plan: Option<LoadedPlan>,
    pub object: Value,
    pub status_snapshot: Option<Value>,
}

fn not_found_or(action: String, what: String, e: kube::Error) -> Error {
    if is_status(&e, 404) {
        Error::NotFound {
            what,
            hint: "it may have been deleted; recreate it or delete the Backup",
        }
    } else {
        Error::kube(action, e)
    }
}

/// Loads the Backup (or ClusterBackup) and its plan.
pub(crate) async fn load(client: &Client, r: &BackupRef, need_plan: bool) -> Result<Loaded> {
    match r.kind {
        BackupKind::Backup => {
            let ns = r
                .namespace
                .clone()
                .ok_or_else(|| Error::Usage("--namespace is required with --kind Backup".into()))?;
            let backup = Api::<Backup>::namespaced(client.clone(), &ns)
                .get(&r.name)
                .await
                .map_err(|e| not_found_or(format!("read {}", r.display()), r.display(), e))?;
            let plan_name = backup.spec.backup_plan.name.clone().ok_or_else(|| {
                Error::Usage(format!("{} has no spec.backupPlan.name", r.display()))
            })?;
            let plan_ns = backup
                .spec
                .backup_plan
                .namespace
                .clone()
                .unwrap_or_else(|| ns.clone());
            let plan_what = format!("BackupPlan {plan_ns}/{plan_name}");
            let plan = if need_plan || backup.spec.backup_plan.uid.is_none() {
                Some(
                    Api::<BackupPlan>::namespaced(client.clone(), &plan_ns)
                        .get(&plan_name)
                        .await
                        .map_err(|e| not_found_or(format!("read {plan_what}"), plan_what, e))?,
                )
            } else {
                None
            };
            let plan_uid = plan
                .as_ref()
                .and_then(|p| p.metadata.uid.clone())
                .or_else(|| backup.spec.backup_plan.uid.clone())
                .unwrap_or_default();
            let identity = BackupIdentity {
                kind: "Backup".into(),
                name: r.name.clone(),
                namespace: Some(ns),
                uid: backup.metadata.uid.clone().unwrap_or_default(),
                plan_kind: "BackupPlan".into(),
                plan_name,
                plan_uid,
            };
            let status_snapshot = backup.status.as_ref().and_then(|s| s.snapshot.clone());
            let object =
                serde_json::to_value(&backup).map_err(|e| Error::json("encode the Backup", e))?;
            Ok(Loaded {
                identity,
                plan: plan.map(|p| LoadedPlan::Namespaced(Box::new(p))),
                object,
                status_snapshot,
            })
        }
        BackupKind::ClusterBackup => {
            let backup = Api::<ClusterBackup>::all(client.clone())
                .get(&r.name)
                .await
                .map_err(|e| not_found_or(format!("read {}", r.display()), r.display(), e))?;
            let plan_name = backup
                .spec
                .cluster_backup_plan
                .name
                .clone()
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "{} has no spec.clusterBackupPlan.name",
                        r.display()
                    ))
                })?;
            let plan_what = format!("ClusterBackupPlan {plan_name}");
            let plan = Api::<ClusterBackupPlan>::all(client.clone())
                .get(&plan_name)
                .await
                .map_err(|e| not_found_or(format!("read {plan_what}"), plan_what, e))?;
            let identity = BackupIdentity {
                kind: "ClusterBackup".into(),
                name: r.name.clone(),
                namespace: None,
                uid: backup.metadata.uid.clone().unwrap_or_default(),
                plan_kind: "ClusterBackupPlan".into(),
                plan_name,
                plan_uid: plan.metadata.uid.clone().unwrap_or_default(),
            };
            let status_snapshot = backup.status.as_ref().and_then(|s| s.snapshot.clone());
            let object = serde_json::to_value(&backup)
                .map_err(|e| Error::json("encode the ClusterBackup", e))?;
            Ok(Loaded {
                identity,
                plan: Some(LoadedPlan::Cluster(Box::new(plan))),
                object,
                status_snapshot,
            })
        }
    }
}

/// Runs a blocking target operation off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Usage(format!("a target operation panicked or was cancelled: {e}")))?
}

/// Reads a small JSON object from the target; `Ok(None)` when absent.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned + Send + 'static>(
    target: &Target,
    key: String,
    seal: Option<&crate::seal::MetadataKey>,
) -> Result<Option<T>> {
    let t = target.clone();
    let k = key.clone();
    let bytes = match blocking(move || Ok(t.read_all(&k, MAX_SMALL_OBJECT)?)).await {
        Ok(b) => b,
        Err(Error::Target(tvk_datamover::Error::MissingObject { .. })) => return Ok(None),
        Err(e) => return Err(e),
    };
    let bytes = crate::seal::open(seal, &key, bytes.into())?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Layout {
            key,
            reason: format!("not valid JSON of the expected shape: {e}"),
        })
}

async fn put(target: &Target, key: String, data: Bytes) -> Result<()> {
    let t = target.clone();
    blocking(move || layout::put(&t, &key, data)).await
}

/// Converts a listed object to JSON with its `apiVersion` and `kind` (list items often omit
/// them).
fn to_value(obj: DynamicObject, api: &ApiResource) -> Result<Value> {
    let mut v = serde_json::to_value(obj).map_err(|e| Error::json("encode an object", e))?;
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(api.api_version.clone()));
        m.insert("kind".into(), Value::String(api.kind.clone()));
    }
    Ok(v)
}

/// Lists one type (in one namespace, or cluster-wide) page by page.
struct Pager {
    api: Api<DynamicObject>,
    resource: ApiResource,
    labels: Option<String>,
    token: Option<String>,
    done: bool,
    page_size: u32,
}

impl Pager {
    fn new(
        client: &Client,
        t: &ApiResource,
        namespace: Option<&str>,
        labels: Option<&str>,
        page_size: u32,
    ) -> Self {
        let api = match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, t),
            None => Api::all_with(client.clone(), t),
        };
        Self {
            api,
            resource: t.clone(),
            labels: labels.map(str::to_owned),
            token: None,
            done: false,
            page_size: page_size.max(1),
        }
    }

    async fn next(&mut self) -> std::result::Result<Option<Vec<Value>>, kube::Error> {
        if self.done {
            return Ok(None);
        }
        let mut lp = ListParams::default().limit(self.page_size);
        if let Some(l) = &self.labels {
            lp = lp.labels(l);
        }
        if let Some(t) = &self.token {
            lp = lp.continue_token(t);
        }
        let list = self.api.list(&lp).await?;
        self.token = list.metadata.continue_.filter(|t| !t.is_empty());
        self.done = self.token.is_none();
        let items = list
            .items
            .into_iter()
            .filter_map(|o| to_value(o, &self.resource).ok())
            .collect();
        Ok(Some(items))
    }
}

/// Why listing a type was skipped, when the error is one that skips (Forbidden, gone).
fn skippable(e: &kube::Error) -> Option<&'static str> {
    if is_status(e, 403) {
        Some("forbidden for the metamover's service account")
    } else if is_status(e, 404) || is_status(e, 405) {
        Some("no longer served by the API server")
    } else {
        None
    }
}

/// Fails when a namespace being backed up is gone or terminating.
async fn check_namespace(client: &Client, ns: &str) -> Result<()> {
    match Api::<Namespace>::all(client.clone()).get_opt(ns).await {
        Ok(Some(n)) if n.metadata.deletion_timestamp.is_some() => Err(Error::NamespaceVanished {
            namespace: ns.to_owned(),
            state: "is being deleted",
        }),
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Error::NamespaceVanished {
            namespace: ns.to_owned(),
            state: "was deleted",
        }),
        // A Namespaced install may not read Namespace objects: the check is then impossible,
        // not failed (a vanished namespace still shows as empty lists).
        Err(e) if is_status(&e, 403) => Ok(()),
        Err(e) => Err(Error::kube(format!("read namespace {ns}"), e)),
    }
}

/// A cluster-scoped object to back up: its type, the object, its component.
type ClusterObject = (ResourceType, Value, Component);

/// A selected Helm release and its storage.
struct HelmCapture {
    namespace: String,
    release: helm::Release,
    component: Component,
    backend: String,
    storage: Vec<Value>,
}

/// The data-snapshot entry of a PVC (cleaned copy inside), or why it has none.
pub fn data_snapshot_of(
    pvc: &Value,
    cleaned: &Value,
    with_namespace: bool,
) -> std::result::Result<DataSnapshot, String> {
    let ns = namespace(pvc).unwrap_or_default();
    let pvc_name = name(pvc).unwrap_or_default();
    let phase = str_at(pvc, "/status/phase").unwrap_or("Unknown");
    if phase != "Bound" {
        return Err(format!(
            "PVC {ns}/{pvc_name} is not bound (phase {phase}); it has no data to protect and only its definition is backed up"
        ));
    }
    let size = str_at(pvc, "/status/capacity/storage")
        .or_else(|| str_at(pvc, "/spec/resources/requests/storage"))
        .map(|s| k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s.to_owned()));
    Ok(DataSnapshot {
        persistent_volume_claim_name: pvc_name.to_owned(),
        namespace: with_namespace.then(|| ns.to_owned()),
        persistent_volume_claim_metadata: Some(cleaned.to_string()),
        size,
        volume_mode: Some(
            str_at(pvc, "/spec/volumeMode")
                .unwrap_or("Filesystem")
                .to_owned(),
        ),
        ..DataSnapshot::default()
    })
}

/// The index's record of a PVC (what cleaning removed, kept for restore's information).
pub fn pvc_entry(pvc: &Value) -> PvcEntry {
    let ann = annotations(pvc);
    PvcEntry {
        namespace: namespace(pvc).unwrap_or_default().to_owned(),
        name: name(pvc).unwrap_or_default().to_owned(),
        uid: uid(pvc).unwrap_or_default().to_owned(),
        bound: str_at(pvc, "/status/phase") == Some("Bound"),
        volume_name: str_at(pvc, "/spec/volumeName").map(str::to_owned),
        storage_class_name: str_at(pvc, "/spec/storageClassName").map(str::to_owned),
        size: str_at(pvc, "/status/capacity/storage")
            .or_else(|| str_at(pvc, "/spec/resources/requests/storage"))
            .map(str::to_owned),
        bind_annotations: ann
            .into_iter()
            .filter(|(k, _)| PVC_BIND_ANNOTATIONS.contains(&k.as_str()))
            .collect(),
    }
}

/// The storage classes an object asks for (pure): a PVC's `spec.storageClassName`, a
/// StatefulSet's `volumeClaimTemplates[].spec.storageClassName`. Empty names (no class) are
/// not classes.
pub fn storage_classes_of(obj: &Value) -> Vec<String> {
    let Some(gvk) = gvk_of(obj) else {
        return Vec::new();
    };
    let class_of = |o: &Value| {
        str_at(o, "/spec/storageClassName")
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
    };
    match (gvk.group.as_str(), gvk.kind.as_str()) {
        ("", "PersistentVolumeClaim") => class_of(obj).into_iter().collect(),
        ("apps", "StatefulSet") => obj
            .pointer("/spec/volumeClaimTemplates")
            .and_then(Value::as_array)
            .map(|t| t.iter().filter_map(class_of).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Reads the StorageClass objects `names` (cleaned). One that cannot be read — gone, Forbidden,
/// or the type not served — is a warning, never a failure; other API errors fail (retryable
/// when the API server is).
async fn read_storage_classes(
    client: &Client,
    catalogue: &Catalogue,
    names: &BTreeSet<String>,
    kept: &HashSet<String>,
    warnings: &mut Vec<String>,
) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    if names.is_empty() {
        return Ok(out);
    }
    let Some(t) = catalogue.find("storage.k8s.io", "StorageClass") else {
        warnings.push(format!(
            "storage classes {} were not backed up: the API server does not serve StorageClass",
            names.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
        return Ok(out);
    };
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &t.api);
    for class in names {
        match api.get_opt(class).await {
            Ok(Some(o)) => {
                let mut v = to_value(o, &t.api)?;
                clean::clean(&mut v, kept);
                out.push(v);
            }
            Ok(None) => warnings.push(format!(
                "StorageClass {class} used by backed-up claims does not exist; it is not in the backup"
            )),
            Err(e) if skippable(&e).is_some() => warnings.push(format!(
                "StorageClass {class} was not backed up: reading it is {}",
                skippable(&e).unwrap_or_default()
            )),
            Err(e) => return Err(Error::kube(format!("read StorageClass {class}"), e)),
        }
    }
    Ok(out)
}

/// Builds `status.snapshot` from what was written.
#[derive(Default)]
struct SnapshotBuilder {
    resources: BTreeMap<Component, BTreeMap<Gvk, BTreeSet<String>>>,
    data: BTreeMap<Component, Vec<DataSnapshot>>,
    warnings: Vec<String>,
    helm: Vec<HelmChart>,
    operators: Vec<OperatorSnapshot>,
    /// Storage classes of the backed-up PVCs and StatefulSet claim templates.
    storage_classes: BTreeSet<String>,
}

impl SnapshotBuilder {
    fn add(&mut self, component: &Component, gvk: &Gvk, object: &str) {
        self.resources
            .entry(component.clone())
            .or_default()
            .entry(gvk.clone())
            .or_default()
            .insert(object.to_owned());
    }

    fn resources_of(&mut self, component: &Component) -> Vec<Resource> {
        self.resources
            .remove(component)
            .unwrap_or_default()
            .into_iter()
            .map(|(gvk, names)| Resource {
                group_version_kind: gvk.to_api(),
                objects: Some(names.into_iter().collect()),
            })
            .collect()
    }

    fn build(mut self) -> Snapshot {
        let mut helm_charts = std::mem::take(&mut self.helm);
        for h in &mut helm_charts {
            let c = Component::Helm(h.release.clone());
            h.resources = self.resources_of(&c);
            h.data_snapshots = self.data.remove(&c).unwrap_or_default();
        }
        let mut operators = std::mem::take(&mut self.operators);
        for o in &mut operators {
            let c = Component::Operator(o.operator_id.clone());
            let all = self.resources_of(&c);
            // Custom resources of the operator's owned kinds are reported apart from its own
            // objects; the split is kept by `custom_kinds` set when the snapshot was planned.
            let (custom, own): (Vec<_>, Vec<_>) = all.into_iter().partition(|r| {
                o.custom_resources.iter().any(|c| {
                    c.group_version_kind.group == r.group_version_kind.group
                        && c.group_version_kind.kind == r.group_version_kind.kind
                })
            });
            o.custom_resources = custom;
            o.operator_resources = own;
            o.data_snapshots = self.data.remove(&c).unwrap_or_default();
        }
        let resources = self.resources_of(&Component::Custom);
        let data_snapshots = self.data.remove(&Component::Custom).unwrap_or_default();
        let custom =
            (!resources.is_empty() || !data_snapshots.is_empty() || !self.warnings.is_empty())
                .then(|| CustomSnapshot {
                    resources,
                    data_snapshots,
                    warnings: self.warnings,
                    ..CustomSnapshot::default()
                });
        Snapshot {
            helm_charts,
            operators,
            custom,
            ..Snapshot::default()
        }
    }
}

/// Runs `snapshot` for one backup.
pub async fn run(
    client: Client,
    target: Target,
    r: &BackupRef,
    opts: &Options,
    progress: ProgressFn<'_>,
) -> Result<Outcome> {
    let loaded = load(&client, r, true).await?;
    let id = loaded.identity.clone();
    if id.uid.is_empty() || id.plan_uid.is_empty() {
        return Err(Error::Usage(format!(
            "{} or its plan has no metadata.uid; is this a real API server object?",
            r.display()
        )));
    }
    let loc = BackupLocation::new(&id.plan_uid, &id.uid)?;
    progress(json!({"event": "start", "backup": r.display(), "location": loc.location}));
    let seal = opts.encryption.as_ref();

    // A committed index means an earlier run finished writing: redo only the status patch.
    if let Some(index) = read_json::<Index>(&target, loc.index_key(), seal).await? {
        if index.backup.uid != id.uid {
            return Err(Error::Layout {
                key: loc.index_key(),
                reason: format!(
                    "it belongs to backup {} ({}), not {}",
                    index.backup.name, index.backup.uid, id.uid
                ),
            });
        }
        let snapshot: Snapshot = read_json(&target, loc.snapshot_key(), seal)
            .await?
            .ok_or_else(|| Error::Layout {
                key: loc.snapshot_key(),
                reason: "index.json exists but snapshot.json does not".into(),
            })?;
        patch_status(&client, r, &snapshot).await?;
        progress(json!({"event": "reused", "documents": index.documents.len()}));
        return Ok(Outcome {
            snapshot,
            index,
            reused: true,
        });
    }
    // Leftovers of an attempt that never wrote its index are not referenced by anything.
    let prefix = loc.key("");
    let t = target.clone();
    let leftovers = blocking(move || Ok(t.list(prefix.trim_end_matches('/'))?)).await?;
    if !leftovers.is_empty() {
        progress(json!({"event": "cleanup", "leftoverObjects": leftovers.len()}));
        let t = target.clone();
        blocking(move || {
            for k in leftovers {
                t.delete(&k)?;
            }
            Ok(())
        })
        .await?;
    }

    let catalogue = Catalogue::discover(client.clone()).await?;
    progress(json!({"event": "discovered", "resourceTypes": catalogue.types().len()}));

    let cluster = matches!(r.kind, BackupKind::ClusterBackup);
    let mut scopes = match &loaded.plan {
        None => return Err(Error::Usage("the plan was not loaded".into())),
        Some(LoadedPlan::Namespaced(p)) => {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            vec![NamespaceScope::for_backup_plan(
                &p.spec,
                &ns,
                &id.plan_name,
            )?]
        }
        Some(LoadedPlan::Cluster(p)) => {
            let nss = Api::<Namespace>::all(client.clone())
                .list(&ListParams::default())
                .await
                .map_err(|e| Error::kube("list namespaces", e))?
                .items
                .into_iter()
                .filter_map(|n| Some((n.metadata.name?, n.metadata.labels.unwrap_or_default())))
                .collect::<Vec<_>>();
            NamespaceScope::for_cluster_plan(&p.spec, &nss, &id.plan_name)?
        }
    };
    let mut builder = SnapshotBuilder::default();
    let mut helm_captures: Vec<HelmCapture> = Vec::new();
    for scope in &mut scopes {
        check_namespace(&client, &scope.namespace).await?;
        prepare_helm(
            &client,
            &catalogue,
            scope,
            opts,
            &mut helm_captures,
            &mut builder.warnings,
        )
        .await?;
        prepare_operators(&client, &catalogue, scope).await?;
        for op in &scope.operators {
            builder.operators.push(OperatorSnapshot {
                operator_id: op.id.clone(),
                subscription: op.subscription.as_ref().map(|s| {
                    tvk_api::common::ObjectReference::new(s.clone(), Some(&scope.namespace))
                }),
                custom_resources: op
                    .owned
                    .iter()
                    .map(|o| Resource {
                        group_version_kind: tvk_api::common::GroupVersionKind {
                            group: Some(o.group.clone()),
                            version: None,
                            kind: Some(o.kind.clone()),
                        },
                        objects: None,
                    })
                    .chain(op.custom_resources.iter().cloned())
                    .collect(),
                ..OperatorSnapshot::default()
            });
        }
    }
    for h in &helm_captures {
        if let Component::Helm(_) = h.component {
            builder.helm.push(HelmChart {
                release: h.release.name.clone(),
                revision: Some(h.release.version),
                version: Some("v3".into()),
                storage_backend: Some(h.backend.clone()),
                chart_name: h.release.chart.as_ref().map(|c| c.metadata.name.clone()),
                chart_version: h.release.chart.as_ref().map(|c| c.metadata.version.clone()),
                namespace: cluster.then(|| h.namespace.clone()),
                ..HelmChart::default()
            });
        }
    }
    let helm_storage_uids: HashSet<String> = helm_captures
        .iter()
        .flat_map(|h| h.storage.iter().filter_map(|o| uid(o).map(str::to_owned)))
        .collect();

    // Pass 1: inventory.
    let mut entries: Vec<Entry> = Vec::new();
    for scope in &scopes {
        let before = entries.len();
        let mut skipped = 0u64;
        for t in catalogue.namespaced() {
            let mut pager = Pager::new(
                &client,
                &t.api,
                Some(&scope.namespace),
                None,
                opts.page_size,
            );
            loop {
                let page = match pager.next().await {
                    Ok(Some(p)) => p,
                    Ok(None) => break,
                    Err(e) => {
                        if let Some(why) = skippable(&e) {
                            builder.warnings.push(format!(
                                "{} in namespace {} were not backed up: listing them is {why}",
                                t.api.plural, scope.namespace
                            ));
                            break;
                        }
                        return Err(Error::kube(
                            format!("list {} in namespace {}", t.api.plural, scope.namespace),
                            e,
                        ));
                    }
                };
                for obj in page {
                    if clean::skip_reason(&obj).is_some()
                        || uid(&obj).is_some_and(|u| helm_storage_uids.contains(u))
                    {
                        skipped += 1;
                        continue;
                    }
                    let Some(key) = ObjectKey::of(&obj, Some(&scope.namespace)) else {
                        continue;
                    };
                    entries.push(Entry::new(scope, key, &obj));
                }
            }
        }
        progress(json!({"event": "inventory", "namespace": scope.namespace,
            "objects": entries.len() - before, "skipped": skipped}));
    }
    builder.warnings.extend(close(&mut entries));

    // Cluster-scoped objects the namespaces need.
    let mut cluster_objects: Vec<ClusterObject> = Vec::new();
    let mut wanted: BTreeMap<(String, String, String), Component> = BTreeMap::new();
    for scope in &scopes {
        wanted
            .entry((String::new(), "Namespace".into(), scope.namespace.clone()))
            .or_insert(Component::Custom);
        for (k, c) in &scope.helm_objects {
            if k.namespace.is_none() {
                wanted
                    .entry((k.group.clone(), k.kind.clone(), k.name.clone()))
                    .or_insert_with(|| c.clone());
            }
        }
        for sel in &scope.include {
            for r in sel.gvks() {
                let g = r.group_version_kind.group.clone().unwrap_or_default();
                let Some(kind) = r.group_version_kind.kind.clone() else {
                    continue;
                };
                if catalogue.is_namespaced(&g, &kind) == Some(false) {
                    for n in r.objects.iter().flatten() {
                        wanted
                            .entry((g.clone(), kind.clone(), n.clone()))
                            .or_insert(Component::Custom);
                    }
                }
            }
        }
    }
    cluster_role_bindings(
        &client,
        &catalogue,
        &entries,
        opts,
        &mut wanted,
        &mut builder.warnings,
    )
    .await?;
    let mut crd_types: BTreeMap<String, Component> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.component.is_some()) {
        if e.key.group.contains('.')
            && !e.key.group.ends_with("k8s.io")
            && let Some(t) = catalogue.find(&e.key.group, &e.key.kind)
            && let Some(c) = &e.component
        {
            crd_types
                .entry(format!("{}.{}", t.api.plural, t.api.group))
                .or_insert_with(|| c.clone());
        }
    }
    for (crd, c) in crd_types {
        wanted
            .entry((
                "apiextensions.k8s.io".into(),
                "CustomResourceDefinition".into(),
                crd,
            ))
            .or_insert(c);
    }
    for ((group, kind, obj_name), component) in wanted {
        let Some(t) = catalogue.find(&group, &kind) else {
            builder.warnings.push(format!(
                "{kind} {obj_name} ({group}) is needed but the API server does not serve that type"
            ));
            continue;
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &t.api);
        match api.get_opt(&obj_name).await {
            Ok(Some(o)) => cluster_objects.push((t.clone(), to_value(o, &t.api)?, component)),
            Ok(None) if kind == "CustomResourceDefinition" => {}
            Ok(None) => builder.warnings.push(format!(
                "{kind} {obj_name} is needed but does not exist; it is not in the backup"
            )),
            Err(e) if skippable(&e).is_some() => builder.warnings.push(format!(
                "{kind} {obj_name} was not backed up: reading it is {}",
                skippable(&e).unwrap_or_default()
            )),
            Err(e) => return Err(Error::kube(format!("read {kind} {obj_name}"), e)),
        }
    }

    for scope in &scopes {
        check_namespace(&client, &scope.namespace).await?;
    }

    // Every UID in the backup: owner references to anything else are dropped.
    let mut kept: HashSet<String> = entries
        .iter()
        .filter(|e| e.component.is_some())
        .map(|e| e.uid.clone())
        .collect();
    kept.extend(
        cluster_objects
            .iter()
            .filter_map(|(_, o, _)| uid(o).map(str::to_owned)),
    );
    kept.extend(helm_storage_uids.iter().cloned());

    // Pass 2: write, type by type.
    let mut groups: BTreeMap<(String, String, String), HashMap<String, Component>> =
        BTreeMap::new();
    for e in entries.into_iter() {
        if let Some(c) = e.component {
            groups
                .entry((e.key.namespace.unwrap_or_default(), e.key.group, e.key.kind))
                .or_default()
                .insert(e.uid, c);
        }
    }
    let mut documents: Vec<DocumentEntry> = Vec::new();
    let mut pvcs: Vec<PvcEntry> = Vec::new();
    let mut total = 0u64;
    for ((ns, group, kind), members) in &groups {
        let Some(t) = catalogue.find(group, kind) else {
            continue;
        };
        let mut writer = DocumentWriter::default();
        let mut pager = Pager::new(&client, &t.api, Some(ns), None, opts.page_size);
        let mut written = 0u64;
        loop {
            let page = match pager.next().await {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    return Err(Error::kube(
                        format!("list {} in namespace {ns}", t.api.plural),
                        e,
                    ));
                }
            };
            for obj in page {
                let Some(component) = uid(&obj).and_then(|u| members.get(u)).cloned() else {
                    continue;
                };
                let cleaned = capture_one(
                    &obj,
                    &component,
                    &t.gvk(),
                    &kept,
                    cluster,
                    &mut builder,
                    &mut pvcs,
                );
                written += 1;
                if let Some(part) = writer.push(&cleaned)? {
                    documents.push(store_part(&target, &loc, Some(ns), t, part, seal).await?);
                }
            }
        }
        if let Some(part) = writer.finish()? {
            documents.push(store_part(&target, &loc, Some(ns), t, part, seal).await?);
        }
        total += written;
        progress(
            json!({"event": "written", "namespace": ns, "kind": kind, "group": group,
            "objects": written}),
        );
    }
    // Cluster-scoped objects, grouped by type.
    let mut by_type: BTreeMap<(String, String), Vec<ClusterObject>> = BTreeMap::new();
    for (t, o, c) in cluster_objects {
        by_type
            .entry((t.api.group.clone(), t.api.kind.clone()))
            .or_default()
            .push((t, o, c));
    }
    for (_, objs) in by_type {
        let Some(t) = objs.first().map(|(t, _, _)| t.clone()) else {
            continue;
        };
        let mut writer = DocumentWriter::default();
        for (_, obj, component) in &objs {
            let cleaned = capture_one(
                obj,
                component,
                &t.gvk(),
                &kept,
                cluster,
                &mut builder,
                &mut pvcs,
            );
            total += 1;
            if let Some(part) = writer.push(&cleaned)? {
                documents.push(store_part(&target, &loc, None, &t, part, seal).await?);
            }
        }
        if let Some(part) = writer.finish()? {
            documents.push(store_part(&target, &loc, None, &t, part, seal).await?);
        }
    }
    // Helm storage, one document per release.
    let mut helm_entries = Vec::new();
    for h in &helm_captures {
        let mut writer = DocumentWriter::with_limit(usize::MAX);
        for obj in &h.storage {
            let mut o = obj.clone();
            clean::clean(&mut o, &kept);
            writer.push(&o)?;
        }
        if let Some(part) = writer.finish()? {
            let rel = layout::helm_rel_key(&h.namespace, &h.release.name)?;
            let data = crate::seal::seal(seal, &loc.key(&rel), part.data)?;
            let doc = DocumentEntry {
                key: rel.clone(),
                namespace: Some(h.namespace.clone()),
                group: String::new(),
                version: "v1".into(),
                kind: h.backend.clone(),
                plural: if h.backend == "Secret" {
                    "secrets"
                } else {
                    "configmaps"
                }
                .into(),
                count: part.count,
                bytes: data.len() as u64,
                blake3: layout::digest(&data),
            };
            put(&target, loc.key(&rel), data).await?;
            helm_entries.push(HelmEntry {
                namespace: h.namespace.clone(),
                release: h.release.name.clone(),
                revision: h.release.version,
                storage_backend: h.backend.clone(),
                document: doc,
            });
        }
    }

    let class_names = std::mem::take(&mut builder.storage_classes);
    let storage_classes = read_storage_classes(
        &client,
        &catalogue,
        &class_names,
        &kept,
        &mut builder.warnings,
    )
    .await?;

    for scope in &scopes {
        check_namespace(&client, &scope.namespace).await?;
    }
    let snapshot = builder.build();
    let warnings = snapshot
        .custom
        .as_ref()
        .map(|c| c.warnings.clone())
        .unwrap_or_default();
    let snapshot_bytes = crate::seal::seal(
        seal,
        &loc.snapshot_key(),
        Bytes::from(
            serde_json::to_vec_pretty(&snapshot)
                .map_err(|e| Error::json("encode the snapshot", e))?,
        ),
    )?;
    let index = Index {
        format_version: FORMAT_VERSION,
        backup: id.clone(),
        namespaces: scopes.iter().map(|s| s.namespace.clone()).collect(),
        documents,
        helm: helm_entries,
        pvcs,
        warnings,
        storage_classes,
        snapshot_blake3: layout::digest(&snapshot_bytes),
    };
    put(&target, loc.snapshot_key(), snapshot_bytes).await?;
    let index_bytes = crate::seal::seal(
        seal,
        &loc.index_key(),
        Bytes::from(
            serde_json::to_vec_pretty(&index).map_err(|e| Error::json("encode the index", e))?,
        ),
    )?;
    put(&target, loc.index_key(), index_bytes).await?;
    progress(json!({"event": "indexed", "objects": total, "documents": index.documents.len()}));
    patch_status(&client, r, &snapshot).await?;
    Ok(Outcome {
        snapshot,
        index,
        reused: false,
    })
}

/// Cleans one object, records it in the snapshot summary and, for a PVC, its data snapshot.
fn capture_one(
    obj: &Value,
    component: &Component,
    gvk: &Gvk,
    kept: &HashSet<String>,
    cluster: bool,
    builder: &mut SnapshotBuilder,
    pvcs: &mut Vec<PvcEntry>,
) -> Value {
    let mut cleaned = obj.clone();
    clean::clean(&mut cleaned, kept);
    builder.add(component, gvk, name(obj).unwrap_or_default());
    builder.storage_classes.extend(storage_classes_of(obj));
    if gvk_of(obj).is_some_and(|g| g.group.is_empty() && g.kind == "PersistentVolumeClaim") {
        pvcs.push(pvc_entry(obj));
        match data_snapshot_of(obj, &cleaned, cluster) {
            Ok(ds) => builder.data.entry(component.clone()).or_default().push(ds),
            Err(w) => builder.warnings.push(w),
        }
    }
    cleaned
}

async fn store_part(
    target: &Target,
    loc: &BackupLocation,
    ns: Option<&str>,
    t: &ResourceType,
    part: layout::Part,
    seal: Option<&crate::seal::MetadataKey>,
) -> Result<DocumentEntry> {
    let gvk = t.gvk();
    let rel = layout::objects_rel_key(ns, &gvk, part.part)?;
    let data = crate::seal::seal(seal, &loc.key(&rel), part.data)?;
    let entry = DocumentEntry {
        key: rel.clone(),
        namespace: ns.map(str::to_owned),
        group: gvk.group,
        version: gvk.version,
        kind: gvk.kind,
        plural: t.api.plural.clone(),
        count: part.count,
        bytes: data.len() as u64,
        blake3: layout::digest(&data),
    };
    put(target, loc.key(&rel), data).await?;
    Ok(entry)
}

/// ClusterRoleBindings naming a backed-up ServiceAccount, and the ClusterRoles they grant, are
/// added to `wanted` (group, kind, name) under the ServiceAccount's component.
async fn cluster_role_bindings(
    client: &Client,
    catalogue: &Catalogue,
    entries: &[Entry],
    opts: &Options,
    wanted: &mut BTreeMap<(String, String, String), Component>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let rbac = "rbac.authorization.k8s.io";
    let sas: HashMap<&ObjectKey, &Component> = entries
        .iter()
        .filter(|e| e.key.group.is_empty() && e.key.kind == "ServiceAccount")
        .filter_map(|e| Some((&e.key, e.component.as_ref()?)))
        .collect();
    let Some(t) = catalogue.find(rbac, "ClusterRoleBinding") else {
        return Ok(());
    };
    if sas.is_empty() {
        return Ok(());
    }
    let mut pager = Pager::new(client, &t.api, None, None, opts.page_size);
    loop {
        let page = match pager.next().await {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) if skippable(&e).is_some() => {
                warnings.push(format!(
                    "ClusterRoleBindings of backed-up ServiceAccounts were not looked for: listing them is {}",
                    skippable(&e).unwrap_or_default()
                ));
                break;
            }
            Err(e) => return Err(Error::kube("list ClusterRoleBindings", e)),
        };
        for crb in page {
            let (subjects, _) = crate::selection::role_binding_links(&crb, "");
            let Some(component) = subjects.iter().find_map(|k| sas.get(k)) else {
                continue;
            };
            if let Some(n) = name(&crb) {
                wanted
                    .entry((rbac.into(), "ClusterRoleBinding".into(), n.to_owned()))
                    .or_insert_with(|| (*component).clone());
            }
            if str_at(&crb, "/roleRef/kind") == Some("ClusterRole")
                && let Some(role) = str_at(&crb, "/roleRef/name")
            {
                wanted
                    .entry((rbac.into(), "ClusterRole".into(), role.to_owned()))
                    .or_insert_with(|| (*component).clone());
            }
        }
    }
    Ok(())
}

/// Finds the Helm releases of a namespace: the plan's (an error when one is missing), every
/// release of a whole-namespace scope, and the releases of Helm-installed operators.
async fn prepare_helm(
    client: &Client,
    catalogue: &Catalogue,
    scope: &mut NamespaceScope,
    opts: &Options,
    captures: &mut Vec<HelmCapture>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let mut wanted: Vec<(String, Component)> = scope
        .helm_releases
        .iter()
        .map(|r| (r.clone(), Component::Helm(r.clone())))
        .collect();
    for op in &scope.operators {
        if let Some(r) = &op.helm_release {
            wanted.push((r.clone(), Component::Operator(op.id.clone())));
        }
    }
    if wanted.is_empty() && !scope.whole_namespace {
        return Ok(());
    }
    let mut storage: BTreeMap<String, (String, Vec<Value>)> = BTreeMap::new();
    for kind in ["Secret", "ConfigMap"] {
        let Some(t) = catalogue.find("", kind) else {
            continue;
        };
        let mut pager = Pager::new(
            client,
            &t.api,
            Some(&scope.namespace),
            Some(helm::STORAGE_LABEL_SELECTOR),
            opts.page_size,
        );
        loop {
            match pager.next().await {
                Ok(Some(page)) => {
                    for o in page {
                        if let Some(release) = helm::release_of_storage(&o) {
                            storage
                                .entry(release)
                                .or_insert_with(|| (kind.to_owned(), Vec::new()))
                                .1
                                .push(o);
                        }
                    }
                }
                Ok(None) => break,
                Err(e) if skippable(&e).is_some() => {
                    warnings.push(format!(
                        "Helm releases stored in {kind}s of namespace {} could not be read ({})",
                        scope.namespace,
                        skippable(&e).unwrap_or_default()
                    ));
                    break;
                }
                Err(e) => {
                    return Err(Error::kube(
                        format!("list Helm release storage in namespace {}", scope.namespace),
                        e,
                    ));
                }
            }
        }
    }
    if scope.whole_namespace {
        for r in storage.keys() {
            if !wanted.iter().any(|(w, _)| w == r) {
                wanted.push((r.clone(), Component::Helm(r.clone())));
            }
        }
    }
    for (release_name, component) in wanted {
        let Some((backend, objs)) = storage.remove(&release_name) else {
            return Err(Error::NotFound {
                what: format!(
                    "Helm release {release_name} in namespace {}",
                    scope.namespace
                ),
                hint: "check the plan's helmReleases / helmRelease names (`helm list -n <namespace>`)",
            });
        };
        let Some(release) = helm::latest_deployed(&objs)? else {
            warnings.push(format!(
                "Helm release {release_name} in namespace {} has no deployed revision; its objects are backed up only if the plan selects them otherwise",
                scope.namespace
            ));
            continue;
        };
        let keys = helm::manifest_objects(&release, |g, k| catalogue.is_namespaced(g, k))?;
        scope.add_helm_objects(&component, keys);
        if !scope.helm_releases.contains(&release_name) && matches!(component, Component::Helm(_)) {
            scope.helm_releases.push(release_name.clone());
        }
        captures.push(HelmCapture {
            namespace: scope.namespace.clone(),
            release,
            component,
            backend,
            storage: objs,
        });
    }
    Ok(())
}

/// Resolves each operator with a Subscription through OLM: Subscription → installed CSV.
async fn prepare_operators(
    client: &Client,
    catalogue: &Catalogue,
    scope: &mut NamespaceScope,
) -> Result<()> {
    let ns = scope.namespace.clone();
    for op in &mut scope.operators {
        let Some(sub_name) = op.subscription.clone() else {
            continue;
        };
        let (Some(sub_t), Some(csv_t)) = (
            catalogue.find("operators.coreos.com", "Subscription"),
            catalogue.find("operators.coreos.com", "ClusterServiceVersion"),
        ) else {
            return Err(Error::Plan {
                plan: op.id.clone(),
                reason: format!(
                    "operator {} names Subscription {sub_name}, but OLM (operators.coreos.com) is not installed in this cluster",
                    op.id
                ),
            });
        };
        let sub = get_namespaced(client, sub_t, &ns, &sub_name).await?;
        let csv_name = str_at(&sub, "/status/installedCSV")
            .or_else(|| str_at(&sub, "/status/currentCSV"))
            .map(str::to_owned)
            .ok_or_else(|| Error::Plan {
                plan: op.id.clone(),
                reason: format!(
                    "Subscription {ns}/{sub_name} has not installed a ClusterServiceVersion yet; wait for OLM to install the operator"
                ),
            })?;
        let csv = get_namespaced(client, csv_t, &ns, &csv_name).await?;
        op.resolve_olm(&sub, &csv);
    }
    Ok(())
}

async fn get_namespaced(client: &Client, t: &ResourceType, ns: &str, obj: &str) -> Result<Value> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &t.api);
    let what = format!("{} {ns}/{obj}", t.api.kind);
    let o = api
        .get(obj)
        .await
        .map_err(|e| not_found_or(format!("read {what}"), what, e))?;
    to_value(o, &t.api)
}

/// Writes `status.snapshot` (merge patch on `/status`, field manager `tvk-metamover`); no
/// other status field is touched.
pub async fn patch_status(client: &Client, r: &BackupRef, snapshot: &Snapshot) -> Result<()> {
    let value = snapshot
        .to_value()
        .map_err(|e| Error::json("encode the snapshot", e))?;
    let patch = Patch::Merge(json!({"status": {"snapshot": value}}));
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let res = match r.kind {
        BackupKind::Backup => {
            let ns = r.namespace.as_deref().unwrap_or_default();
            Api::<Backup>::namespaced(client.clone(), ns)
                .patch_status(&r.name, &pp, &patch)
                .await
                .map(|_| ())
        }
        BackupKind::ClusterBackup => Api::<ClusterBackup>::all(client.clone())
            .patch_status(&r.name, &pp, &patch)
            .await
            .map(|_| ()),
    };
    res.map_err(|e| {
        not_found_or(
            format!("patch the status of {}", r.display()),
            r.display(),
            e,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("no", "Forbidden")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn forbidden_or_gone_types_are_skipped_other_errors_are_not() {
        assert!(skippable(&api(403)).unwrap().contains("forbidden"));
        assert!(skippable(&api(404)).is_some());
        assert!(skippable(&api(500)).is_none());
        assert!(skippable(&api(401)).is_none());
    }

    #[test]
    fn storage_classes_of_claims_and_claim_templates() {
        let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "d"}, "spec": {"storageClassName": "fast"}});
        assert_eq!(storage_classes_of(&pvc), vec!["fast".to_owned()]);
        let no_class = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "d"}, "spec": {"storageClassName": ""}});
        assert!(storage_classes_of(&no_class).is_empty());
        let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db"}, "spec": {"volumeClaimTemplates": [
                {"metadata": {"name": "a"}, "spec": {"storageClassName": "slow"}},
                {"metadata": {"name": "b"}, "spec": {}}]}});
        assert_eq!(storage_classes_of(&sts), vec!["slow".to_owned()]);
        let lookalike = json!({"apiVersion": "example.com/v1", "kind": "StatefulSet",
            "metadata": {"name": "db"}, "spec": {"volumeClaimTemplates": [
                {"spec": {"storageClassName": "slow"}}]}});
        assert!(storage_classes_of(&lookalike).is_empty());
    }

    #[test]
    fn bound_pvc_becomes_a_data_snapshot_and_unbound_a_warning() {
        let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "db", "uid": "pvc-uid",
                "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
            "spec": {"volumeName": "pv-1", "storageClassName": "fast", "volumeMode": "Block",
                "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Bound", "capacity": {"storage": "2Gi"}}});
        let mut cleaned = pvc.clone();
        clean::clean(&mut cleaned, &HashSet::new());
        let ds = data_snapshot_of(&pvc, &cleaned, true).unwrap();
        assert_eq!(ds.persistent_volume_claim_name, "data");
        assert_eq!(ds.namespace.as_deref(), Some("db"));
        assert_eq!(
            ds.size,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("2Gi".into()))
        );
        assert_eq!(ds.volume_mode.as_deref(), Some("Block"));
        let stored: Value =
            serde_json::from_str(ds.persistent_volume_claim_metadata.as_deref().unwrap()).unwrap();
        assert_eq!(stored, cleaned);
        assert!(stored.pointer("/spec/volumeName").is_none());
        let e = pvc_entry(&pvc);
        assert_eq!(e.uid, "pvc-uid");
        assert_eq!(e.volume_name.as_deref(), Some("pv-1"));
        assert!(e.bound);
        assert_eq!(e.bind_annotations.len(), 1);

        let mut pending = pvc.clone();
        pending["status"] = json!({"phase": "Pending"});
        let w = data_snapshot_of(&pending, &cleaned, false).unwrap_err();
        assert!(w.contains("db/data") && w.contains("Pending"), "{w}");
    }

    #[test]
    fn snapshot_builder_places_resources_and_volumes_per_component() {
        let mut b = SnapshotBuilder::default();
        b.helm.push(HelmChart {
            release: "web".into(),
            ..HelmChart::default()
        });
        b.operators.push(OperatorSnapshot {
            operator_id: "etcd".into(),
            custom_resources: vec![Resource {
                group_version_kind: tvk_api::common::GroupVersionKind {
                    group: Some("etcd.database.coreos.com".into()),
                    version: None,
                    kind: Some("EtcdCluster".into()),
                },
                objects: None,
            }],
            ..OperatorSnapshot::default()
        });
        let helm = Component::Helm("web".into());
        let op = Component::Operator("etcd".into());
        b.add(&helm, &Gvk::new("apps", "v1", "Deployment"), "web");
        b.add(
            &op,
            &Gvk::new("etcd.database.coreos.com", "v1beta2", "EtcdCluster"),
            "c1",
        );
        b.add(&op, &Gvk::new("apps", "v1", "Deployment"), "etcd-operator");
        b.add(&Component::Custom, &Gvk::new("", "v1", "ConfigMap"), "b");
        b.add(&Component::Custom, &Gvk::new("", "v1", "ConfigMap"), "a");
        b.data.entry(helm.clone()).or_default().push(DataSnapshot {
            persistent_volume_claim_name: "web-data".into(),
            ..DataSnapshot::default()
        });
        b.warnings.push("w".into());
        let s = b.build();
        assert_eq!(s.helm_charts[0].resources.len(), 1);
        assert_eq!(
            s.helm_charts[0].data_snapshots[0].persistent_volume_claim_name,
            "web-data"
        );
        assert_eq!(s.operators[0].custom_resources.len(), 1);
        assert_eq!(
            s.operators[0].custom_resources[0].objects.as_deref(),
            Some(&["c1".to_owned()][..])
        );
        assert_eq!(s.operators[0].operator_resources.len(), 1);
        let custom = s.custom.unwrap();
        assert_eq!(
            custom.resources[0].objects.as_deref(),
            Some(&["a".to_owned(), "b".to_owned()][..])
        );
        assert_eq!(custom.warnings, ["w"]);
    }
}
