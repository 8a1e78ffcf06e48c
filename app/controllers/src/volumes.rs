//! Volume data of a backup (issue #7): CSI VolumeSnapshots of the application's PVCs, temporary
//! block-mode claims restored from them, and one datamover Job per volume.
//!
//! Per data snapshot of `status.snapshot` (the metamover lists the PVCs), keyed by
//! `<namespace>/<pvc>`, every object has a deterministic name
//! (`crate::naming::object_name(<role>, <backup uid>, <key>)`), the labels of the backup's Jobs
//! and — when it lives in the Backup's namespace — an owner reference to the Backup, so a
//! restarted controller adopts what exists (create answers 409):
//!
//! 1. **DataSnapshot**: `VolumeSnapshot` `tvk-snap-<hash>` of the PVC, in the PVC's namespace.
//!    Class: the PVC's StorageClass → its provisioner (the CSI driver) → the
//!    `VolumeSnapshotClass` with that `driver` (the one annotated
//!    `snapshot.storage.kubernetes.io/is-default-class: "true"` wins when several match, else the
//!    first by name). A driver listed in `csiConfig.exclude` is skipped (warning Event, the data
//!    snapshot's `DataSnapshot` condition `Skipped`); a driver without a class fails the backup
//!    naming the PVC, the driver and what to create. `readyToUse` is polled by requeue.
//! 2. **Staging** (DataUpload): the Jobs run in the install namespace (the `tvk-datamover`
//!    service account and the Target's credential Secret live there, and a pod can only mount a
//!    claim of its own namespace). A snapshot of a PVC in another namespace is therefore cloned
//!    into the install namespace the way CSI documents pre-provisioned snapshots: a
//!    `VolumeSnapshotContent` `tvk-snapcontent-<hash>` with the same `snapshotHandle` and driver,
//!    `deletionPolicy: Retain` (the original snapshot owns the storage), pre-bound to a
//!    `VolumeSnapshot` `tvk-snapclone-<hash>` in the install namespace. Then a claim
//!    `tvk-volume-<hash>` from that snapshot, `volumeMode: Block` always, the PVC's class and
//!    access modes, the snapshot's `restoreSize` (else the PVC's size). A Filesystem-mode source
//!    needs the snapshot content annotated with
//!    `snapshot.storage.kubernetes.io/allow-volume-mode-change: "true"` (the clone is created
//!    with it; a same-namespace content is patched).
//! 3. **DataUpload**: Job `tvk-dataupload-<hash>` per volume and attempt, at most
//!    `jobSpec.maxParallelDataJobs` running at once: `tvk-datamover backup --plan <plan uid>
//!    --backup <backup uid> --volume <pvc uid> --source /dev/tvk-volume [--parent <uid>]
//!    <target flags>`, the claim as a raw block device. A Job whose pod exited 75 (retryable)
//!    is retried up to [`MAX_RETRIES`] times under a new name; any other failure fails the
//!    backup naming the PVC and the Job's message.
//! 4. **Cleanup**: claims, clones and snapshots deleted after the upload and on every failure.
//!
//! The control plane's fields of each data snapshot (`location`, `uploaded`, `volumeSnapshot`,
//! `snapshotType`, `conditions`) are set in the [`Snapshot`] passed in; the caller writes it back
//! with a merge patch that keeps the metamover's fields.

use std::{borrow::Cow, collections::BTreeMap};

use k8s_openapi::{
    ClusterResourceScope, NamespaceResourceScope,
    api::{
        batch::v1::Job,
        core::v1::{
            PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Volume, VolumeDevice,
        },
        storage::v1::StorageClass,
    },
    apimachinery::pkg::{
        api::resource::Quantity, apis::meta::v1::ObjectMeta, apis::meta::v1::OwnerReference,
        util::intstr::IntOrString,
    },
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::json;
use tvk_api::{
    backup::{BackupPhase, BackupPhaseStatus, BackupState, BackupType},
    common::ObjectReference,
    snapshot::{DataSnapshot, Snapshot, VolumeSnapshotInfo},
    target::Target,
};

use crate::{
    context::{CONTROLLER_NAME, Context},
    error::{Error, Result, is_conflict, is_not_found},
    jobs::{JobRequest, JobState, LABEL_BACKUP, LABEL_BACKUP_UID, build_job, job_state},
    kinds::BackupKind,
    naming::{object_name, parse_quantity, quantity_bytes},
    status_patch::set_condition,
    target_access::TargetAccess,
};

/// Where the temporary claim appears in the datamover container.
pub const DEVICE_PATH: &str = "/dev/tvk-volume";
/// Retries of a datamover Job whose failure is retryable ([`crate::jobs::PodOutcome::retryable`]).
pub const MAX_RETRIES: u32 = 3;
pub use crate::jobs::EXIT_RETRYABLE;
/// Annotation marking the default VolumeSnapshotClass of a driver.
pub const DEFAULT_CLASS_ANNOTATION: &str = "snapshot.storage.kubernetes.io/is-default-class";
/// Annotation allowing a claim of another volume mode than the snapshot's source.
pub const ALLOW_MODE_CHANGE_ANNOTATION: &str =
    "snapshot.storage.kubernetes.io/allow-volume-mode-change";
const SNAPSHOT_GROUP: &str = "snapshot.storage.k8s.io";

macro_rules! snapshot_resource {
    ($t:ident, $kind:literal, $plural:literal, $scope:ty) => {
        impl Resource for $t {
            type DynamicType = ();
            type Scope = $scope;
            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(SNAPSHOT_GROUP)
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed("v1")
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// `snapshot.storage.k8s.io/v1` VolumeSnapshot (k8s-openapi has no snapshot types).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshot {
    /// `snapshot.storage.k8s.io/v1`.
    pub api_version: String,
    /// `VolumeSnapshot`.
    pub kind: String,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: VolumeSnapshotSpec,
    /// Status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<VolumeSnapshotStatus>,
}

/// VolumeSnapshot `spec`.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSpec {
    /// What is snapshotted (a PVC) or bound (a pre-provisioned content).
    pub source: VolumeSnapshotSource,
    /// Class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
}

/// VolumeSnapshot `spec.source`.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSource {
    /// Dynamic snapshot of this claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_name: Option<String>,
    /// Pre-provisioned content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_content_name: Option<String>,
}

/// VolumeSnapshot `status`.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotStatus {
    /// The content it is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_volume_snapshot_content_name: Option<String>,
    /// Usable for restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// Minimum size of a claim restored from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<Quantity>,
    /// Last error of the snapshotter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<SnapshotError>,
}

/// Snapshotter error.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotError {
    /// Message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// `snapshot.storage.k8s.io/v1` VolumeSnapshotContent.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContent {
    /// `snapshot.storage.k8s.io/v1`.
    pub api_version: String,
    /// `VolumeSnapshotContent`.
    pub kind: String,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: VolumeSnapshotContentSpec,
    /// Status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<VolumeSnapshotContentStatus>,
}

/// VolumeSnapshotContent `spec`.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContentSpec {
    /// `Delete` or `Retain`.
    pub deletion_policy: String,
    /// CSI driver.
    pub driver: String,
    /// The snapshot (pre-provisioned) or volume (dynamic).
    pub source: VolumeSnapshotContentSource,
    /// The VolumeSnapshot bound to it.
    pub volume_snapshot_ref: k8s_openapi::api::core::v1::ObjectReference,
    /// Class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
    /// Volume mode of the snapshotted volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_volume_mode: Option<String>,
}

/// VolumeSnapshotContent `spec.source`.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContentSource {
    /// Existing snapshot in the storage system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
    /// Volume to snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_handle: Option<String>,
}

/// VolumeSnapshotContent `status`.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContentStatus {
    /// The snapshot in the storage system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
    /// Usable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<i64>,
}

/// `snapshot.storage.k8s.io/v1` VolumeSnapshotClass.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotClass {
    /// `snapshot.storage.k8s.io/v1`.
    pub api_version: String,
    /// `VolumeSnapshotClass`.
    pub kind: String,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// CSI driver.
    pub driver: String,
    /// `Delete` or `Retain`.
    #[serde(default)]
    pub deletion_policy: String,
    /// Driver parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BTreeMap<String, String>>,
}

snapshot_resource!(
    VolumeSnapshot,
    "VolumeSnapshot",
    "volumesnapshots",
    NamespaceResourceScope
);
snapshot_resource!(
    VolumeSnapshotContent,
    "VolumeSnapshotContent",
    "volumesnapshotcontents",
    ClusterResourceScope
);
snapshot_resource!(
    VolumeSnapshotClass,
    "VolumeSnapshotClass",
    "volumesnapshotclasses",
    ClusterResourceScope
);

/// The backup the volumes belong to.
#[derive(Debug, Clone)]
pub struct BackupIds {
    /// Namespace of the Backup (default namespace of its PVCs).
    pub ns: String,
    /// Name of the Backup.
    pub name: String,
    /// UID of the Backup.
    pub uid: String,
    /// Namespace the Jobs, clones and temporary claims live in (the install namespace).
    pub job_ns: String,
    /// UID of the BackupPlan.
    pub plan_uid: String,
    /// Owner reference to the Backup.
    pub owner: Option<OwnerReference>,
    /// The plan's encryption key of an encrypted backup (its Secret was made readable to the
    /// Jobs at PreBackupValidation and again by every metamover Job created since).
    pub key: Option<crate::encryption::KeyRef>,
}

/// Outcome of a volume phase step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Every volume is through the phase; the reason to record.
    Done(String),
    /// Some volume is still working (requeue); the reason to record.
    Waiting(String),
    /// The backup fails with this reason.
    Failed(String),
}

/// `<namespace>/<pvc>` of a data snapshot.
pub fn volume_key(ds: &DataSnapshot, backup_ns: &str) -> (String, String) {
    (
        ds.namespace
            .clone()
            .unwrap_or_else(|| backup_ns.to_string()),
        ds.persistent_volume_claim_name.clone(),
    )
}

/// Names of a volume's objects (deterministic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeNames {
    /// VolumeSnapshot of the PVC, in the PVC's namespace.
    pub snapshot: String,
    /// Pre-provisioned content of the clone (cross-namespace only).
    pub clone_content: String,
    /// VolumeSnapshot in the Job namespace bound to the clone content.
    pub clone: String,
    /// Temporary block claim in the Job namespace.
    pub claim: String,
}

impl VolumeNames {
    /// Names for the volume `ns/pvc` of backup `uid`.
    pub fn new(uid: &str, ns: &str, pvc: &str) -> Self {
        let key = format!("{ns}/{pvc}");
        Self {
            snapshot: object_name("snap", uid, &key),
            clone_content: object_name("snapcontent", uid, &key),
            clone: object_name("snapclone", uid, &key),
            claim: object_name("volume", uid, &key),
        }
    }

    /// Job of upload attempt `attempt` (0 = first).
    pub fn job(uid: &str, ns: &str, pvc: &str, attempt: u32) -> String {
        object_name("DataUpload", uid, &format!("{ns}/{pvc}#{attempt}"))
    }
}

/// Chooses the VolumeSnapshotClass of `driver` (pure): the one annotated as default wins,
/// otherwise the first by name; `None` when no class has that driver.
pub fn choose_class<'a>(classes: &'a [VolumeSnapshotClass], driver: &str) -> Option<&'a str> {
    let mut matching: Vec<&VolumeSnapshotClass> =
        classes.iter().filter(|c| c.driver == driver).collect();
    matching.sort_by_key(|c| c.metadata.name.clone().unwrap_or_default());
    matching
        .iter()
        .find(|c| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true")
        })
        .or(matching.first())
        .and_then(|c| c.metadata.name.as_deref())
}

fn labels(ids: &BackupIds) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            LABEL_BACKUP.to_string(),
            ids.name.chars().take(63).collect(),
        ),
        (LABEL_BACKUP_UID.to_string(), ids.uid.clone()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            CONTROLLER_NAME.to_string(),
        ),
    ])
}

fn meta(ids: &BackupIds, name: &str, ns: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: ns.map(str::to_string),
        labels: Some(labels(ids)),
        annotations: Some(BTreeMap::from([(
            crate::jobs::ANNOTATION_BACKUP_REF.to_string(),
            format!("{}/{}", ids.ns, ids.name),
        )])),
        owner_references: match (&ids.owner, ns) {
            // A ClusterBackup (cluster-scoped) owns objects in any namespace.
            (Some(o), Some(ns)) if ns == ids.ns || ids.ns.is_empty() => Some(vec![o.clone()]),
            _ => None,
        },
        ..ObjectMeta::default()
    }
}

fn is_forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403)
}

/// A read that a Namespaced install may not be allowed to do: 403 becomes a reason.
async fn get_opt_or_forbidden<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
) -> Result<std::result::Result<Option<K>, String>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(v) => Ok(Ok(v)),
        Err(e) if is_forbidden(&e) => Ok(Err(format!(
            "the control plane may not read {what}: {e}; install with applicationScope: Cluster (the ClusterRole grants it)"
        ))),
        Err(e) => Err(Error::kube(format!("read {what}"), e)),
    }
}

async fn create_adopt<K>(api: &Api<K>, obj: &K, what: String) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(Error::kube(format!("create {what}"), e)),
    }
}

async fn delete_opt<K>(api: &Api<K>, name: &str, what: String) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(Error::kube(format!("delete {what}"), e)),
    }
}

fn condition_status(ds: &DataSnapshot, phase: BackupPhase) -> Option<BackupPhaseStatus> {
    ds.conditions
        .iter()
        .find(|c| c.phase == Some(phase))
        .and_then(|c| c.status)
}

/// The volume was skipped (excluded driver): nothing to upload or clean.
pub fn is_skipped(ds: &DataSnapshot) -> bool {
    condition_status(ds, BackupPhase::DataSnapshot) == Some(BackupPhaseStatus::Skipped)
}

fn set_ds(ds: &mut DataSnapshot, phase: BackupPhase, status: BackupPhaseStatus, reason: &str) {
    let now = crate::status_patch::now_rfc3339();
    set_condition(&mut ds.conditions, phase, status, reason, &now);
}

/// PVC uid recorded in `location` (`<plan>/<backup>/<pvc uid>`).
fn pvc_uid_of(ds: &DataSnapshot) -> Option<String> {
    ds.location
        .as_deref()
        .and_then(|l| l.rsplit('/').next())
        .map(str::to_string)
}

/// DataSnapshot: creates (or adopts) the VolumeSnapshot of every volume and waits for
/// `readyToUse`. Warnings (excluded drivers) are pushed to `warnings`.
pub async fn snapshot_volumes(
    ctx: &Context,
    ids: &BackupIds,
    snap: &mut Snapshot,
    warnings: &mut Vec<String>,
) -> Result<Step> {
    let mut classes: Option<Vec<VolumeSnapshotClass>> = None;
    let (mut ready, mut total) = (0usize, 0usize);
    for ds in snap.data_snapshots_mut() {
        if is_skipped(ds) {
            continue;
        }
        total += 1;
        let (ns, pvc_name) = volume_key(ds, &ids.ns);
        let names = VolumeNames::new(&ids.uid, &ns, &pvc_name);
        if ds
            .volume_snapshot
            .as_ref()
            .is_some_and(|v| v.status == Some(BackupState::Completed))
        {
            ready += 1;
            continue;
        }
        let vs_api: Api<VolumeSnapshot> = Api::namespaced(ctx.client.clone(), &ns);
        let existing = vs_api
            .get_opt(&names.snapshot)
            .await
            .map_err(|e| Error::kube(format!("read VolumeSnapshot {ns}/{}", names.snapshot), e))?;
        let vs = match existing {
            Some(vs) => vs,
            None => {
                let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
                let Some(pvc) = pvcs
                    .get_opt(&pvc_name)
                    .await
                    .map_err(|e| Error::kube(format!("read PVC {ns}/{pvc_name}"), e))?
                else {
                    return Ok(Step::Failed(format!(
                        "PersistentVolumeClaim {ns}/{pvc_name} was deleted after the metadata snapshot; run the backup again"
                    )));
                };
                let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
                if !bound {
                    return Ok(Step::Failed(format!(
                        "PersistentVolumeClaim {ns}/{pvc_name} is not Bound, so it has no volume to snapshot; bind it (or exclude it from the plan) and run the backup again"
                    )));
                }
                let Some(sc_name) = pvc.spec.as_ref().and_then(|s| s.storage_class_name.clone())
                else {
                    return Ok(Step::Failed(format!(
                        "PersistentVolumeClaim {ns}/{pvc_name} has no storageClassName, so its CSI driver (and VolumeSnapshotClass) cannot be chosen; give it a StorageClass of a CSI driver with snapshot support"
                    )));
                };
                let scs: Api<StorageClass> = Api::all(ctx.client.clone());
                let sc = match get_opt_or_forbidden(
                    &scs,
                    &sc_name,
                    &format!("StorageClass {sc_name}"),
                )
                .await?
                {
                    Ok(Some(sc)) => sc,
                    Ok(None) => {
                        return Ok(Step::Failed(format!(
                            "StorageClass {sc_name} of PersistentVolumeClaim {ns}/{pvc_name} does not exist; its CSI driver cannot be determined"
                        )));
                    }
                    Err(reason) => return Ok(Step::Failed(reason)),
                };
                let driver = sc.provisioner.clone();
                if ctx.config.csi_config.exclude.contains(&driver) {
                    let reason = format!(
                        "skipped: CSI driver {driver} of PersistentVolumeClaim {ns}/{pvc_name} is listed in csiConfig.exclude (no snapshot support); its data is NOT in this backup"
                    );
                    set_ds(
                        ds,
                        BackupPhase::DataSnapshot,
                        BackupPhaseStatus::Skipped,
                        &reason,
                    );
                    warnings.push(reason);
                    total -= 1;
                    continue;
                }
                if classes.is_none() {
                    let api: Api<VolumeSnapshotClass> = Api::all(ctx.client.clone());
                    match api.list(&ListParams::default()).await {
                        Ok(list) => classes = Some(list.items),
                        Err(e) if is_forbidden(&e) => {
                            return Ok(Step::Failed(format!(
                                "the control plane may not list VolumeSnapshotClasses: {e}; install with applicationScope: Cluster"
                            )));
                        }
                        Err(e) => return Err(Error::kube("list VolumeSnapshotClasses", e)),
                    }
                }
                let Some(class) = choose_class(classes.as_deref().unwrap_or_default(), &driver)
                else {
                    return Ok(Step::Failed(format!(
                        "no VolumeSnapshotClass for CSI driver {driver} (PersistentVolumeClaim {ns}/{pvc_name}, StorageClass {sc_name}); create one with `driver: {driver}` (annotate it {DEFAULT_CLASS_ANNOTATION}: \"true\" if there are several), or list the driver in the TrilioVaultManager's csiConfig.exclude to back up this PVC's metadata only"
                    )));
                };
                let vs = VolumeSnapshot {
                    api_version: format!("{SNAPSHOT_GROUP}/v1"),
                    kind: "VolumeSnapshot".into(),
                    metadata: meta(ids, &names.snapshot, Some(&ns)),
                    spec: VolumeSnapshotSpec {
                        source: VolumeSnapshotSource {
                            persistent_volume_claim_name: Some(pvc_name.clone()),
                            volume_snapshot_content_name: None,
                        },
                        volume_snapshot_class_name: Some(class.to_string()),
                    },
                    status: None,
                };
                create_adopt(
                    &vs_api,
                    &vs,
                    format!("VolumeSnapshot {ns}/{}", names.snapshot),
                )
                .await?;
                if let Some(pvc_uid) = pvc.uid() {
                    ds.location = Some(format!("{}/{}/{pvc_uid}", ids.plan_uid, ids.uid));
                }
                ds.volume_mode = ds
                    .volume_mode
                    .clone()
                    .or_else(|| pvc.spec.as_ref().and_then(|s| s.volume_mode.clone()));
                set_ds(
                    ds,
                    BackupPhase::DataSnapshot,
                    BackupPhaseStatus::InProgress,
                    &format!(
                        "VolumeSnapshot {ns}/{} (class {class}) created",
                        names.snapshot
                    ),
                );
                ds.volume_snapshot =
                    Some(snapshot_info(&names.snapshot, &ns, BackupState::InProgress));
                vs
            }
        };
        if let Some(message) = vs
            .status
            .as_ref()
            .and_then(|s| s.error.as_ref())
            .and_then(|e| e.message.clone())
        {
            let reason = format!(
                "VolumeSnapshot {ns}/{} of PersistentVolumeClaim {ns}/{pvc_name} failed: {message}",
                names.snapshot
            );
            set_ds(
                ds,
                BackupPhase::DataSnapshot,
                BackupPhaseStatus::Failed,
                &reason,
            );
            ds.volume_snapshot = Some(snapshot_info(&names.snapshot, &ns, BackupState::Failed));
            return Ok(Step::Failed(reason));
        }
        if ds.location.is_none() {
            // Adopted after a restart before the location was recorded.
            let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
            if let Some(uid) = pvcs
                .get_opt(&pvc_name)
                .await
                .map_err(|e| Error::kube(format!("read PVC {ns}/{pvc_name}"), e))?
                .and_then(|p| p.uid())
            {
                ds.location = Some(format!("{}/{}/{uid}", ids.plan_uid, ids.uid));
            }
        }
        if vs.status.as_ref().and_then(|s| s.ready_to_use) == Some(true) {
            ready += 1;
            set_ds(
                ds,
                BackupPhase::DataSnapshot,
                BackupPhaseStatus::Completed,
                &format!("VolumeSnapshot {ns}/{} is ready to use", names.snapshot),
            );
            ds.volume_snapshot = Some(snapshot_info(&names.snapshot, &ns, BackupState::Completed));
        } else {
            ds.volume_snapshot = Some(snapshot_info(&names.snapshot, &ns, BackupState::InProgress));
        }
    }
    if ready == total {
        Ok(Step::Done(format!(
            "{total} VolumeSnapshot(s) ready to use"
        )))
    } else {
        Ok(Step::Waiting(format!(
            "waiting for VolumeSnapshots to be ready to use: {ready} of {total}"
        )))
    }
}

fn snapshot_info(name: &str, ns: &str, status: BackupState) -> VolumeSnapshotInfo {
    VolumeSnapshotInfo {
        volume_snapshot: Some(ObjectReference {
            api_version: Some(format!("{SNAPSHOT_GROUP}/v1")),
            kind: Some("VolumeSnapshot".into()),
            name: Some(name.to_string()),
            namespace: Some(ns.to_string()),
            ..ObjectReference::default()
        }),
        retry_count: Some(0),
        status: Some(status),
        ..VolumeSnapshotInfo::default()
    }
}

/// The parent of an incremental image of the volume whose PVC has `pvc_uid` (pure): the most
/// recently completed `Available` backup among `candidates` (the plan's backups on the same
/// Target, excluding this one) whose snapshot has that volume uploaded. `None` → full image.
pub fn choose_parent<K: BackupKind>(candidates: &[K], pvc_uid: &str) -> Option<String> {
    let mut with_volume: Vec<(&str, String)> = candidates
        .iter()
        .filter(|b| {
            b.backup_status()
                .is_some_and(|s| s.status == Some(BackupState::Available))
        })
        .filter_map(|b| {
            let status = b.backup_status()?;
            let snap = Snapshot::from_status_value(status.snapshot.as_ref()).ok()??;
            let has = snap
                .data_snapshots()
                .any(|d| d.uploaded == Some(true) && pvc_uid_of(d).as_deref() == Some(pvc_uid));
            has.then(|| {
                (
                    status.completion_timestamp.as_deref().unwrap_or_default(),
                    b.uid().unwrap_or_default(),
                )
            })
        })
        .collect();
    // RFC 3339 UTC timestamps of one writer sort as strings.
    with_volume.sort();
    with_volume
        .last()
        .map(|(_, uid)| uid.clone())
        .filter(|u| !u.is_empty())
}

/// The Target a backup was taken to, as recorded in `status.stats.target` (T4K's field).
pub fn backup_target_uid<K: BackupKind>(backup: &K) -> Option<String> {
    backup
        .backup_status()
        .and_then(|s| s.stats.as_ref())
        .and_then(|s| s.get("target"))
        .and_then(|t| t.get("uid"))
        .and_then(|u| u.as_str())
        .map(str::to_string)
}

/// What DataUpload reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadProgress {
    /// The step.
    pub step: Step,
    /// Bytes of the volumes whose upload finished.
    pub done_bytes: u64,
    /// Bytes the running Jobs reported done (weighted by their volumes' sizes), when their
    /// logs were read this time ([`crate::progress::in_flight_bytes`]).
    pub in_flight_bytes: Option<u64>,
    /// Bytes of all volumes.
    pub total_bytes: u64,
}

fn ds_bytes(ds: &DataSnapshot) -> u64 {
    ds.size.as_ref().and_then(quantity_bytes).unwrap_or(0)
}

/// Sum of the sizes of the volumes that are backed up (not skipped).
pub fn total_bytes(snap: &Snapshot) -> u64 {
    snap.data_snapshots()
        .filter(|d| !is_skipped(d))
        .map(ds_bytes)
        .sum()
}

/// Inputs of [`upload_volumes`] besides the snapshot.
pub struct UploadInputs<'a, K: BackupKind> {
    /// The backup.
    pub ids: &'a BackupIds,
    /// Requested type: an Incremental takes a parent per volume when one exists.
    pub backup_type: BackupType,
    /// The plan's other backups on the same Target (parent candidates).
    pub candidates: &'a [K],
    /// The Target's Job flags.
    pub target: &'a Target,
}

/// DataUpload: stages every ready snapshot as a block claim in the Job namespace and runs the
/// datamover Jobs (bounded, retried on exit 75).
pub async fn upload_volumes<K: BackupKind>(
    ctx: &Context,
    inputs: &UploadInputs<'_, K>,
    snap: &mut Snapshot,
) -> Result<UploadProgress> {
    let ids = inputs.ids;
    let total = total_bytes(snap);
    let max_running = usize::try_from(ctx.config.job_spec.max_parallel_data_jobs)
        .unwrap_or(usize::MAX)
        .max(1);
    let job_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ids.job_ns);
    // Count the Jobs already running (any volume), so the bound holds across reconciles.
    let running_jobs = job_api
        .list(&ListParams::default().labels(&format!(
            "{LABEL_BACKUP_UID}={},app.kubernetes.io/component=data",
            ids.uid
        )))
        .await
        .map_err(|e| Error::kube("list the backup's data Jobs", e))?;
    let mut running = running_jobs
        .items
        .iter()
        .filter(|j| job_state(Some(j)) == JobState::Running)
        .count();
    let (mut done_bytes, mut pending) = (0u64, 0usize);
    // (Job, volume size) of the uploads running now, for the progress of the phase.
    let mut in_flight: Vec<(String, u64)> = Vec::new();
    for ds in snap.data_snapshots_mut() {
        if is_skipped(ds) {
            continue;
        }
        if ds.uploaded == Some(true) {
            done_bytes += ds_bytes(ds);
            continue;
        }
        pending += 1;
        let (ns, pvc_name) = volume_key(ds, &ids.ns);
        let names = VolumeNames::new(&ids.uid, &ns, &pvc_name);
        let Some(pvc_uid) = pvc_uid_of(ds) else {
            return Ok(failed(
                format!(
                    "the data snapshot of PersistentVolumeClaim {ns}/{pvc_name} has no location (PVC UID); run the backup again"
                ),
                total,
            ));
        };
        // The Job of the current attempt: the Jobs are read first, so a volume whose upload
        // finished is recognised even after its snapshot and claim were cleaned up.
        let mut attempt = 0u32;
        let outcome = loop {
            let job_name = VolumeNames::job(&ids.uid, &ns, &pvc_name, attempt);
            let job = job_api
                .get_opt(&job_name)
                .await
                .map_err(|e| Error::kube(format!("read Job {}/{job_name}", ids.job_ns), e))?;
            match job_state(job.as_ref()) {
                JobState::Missing => {
                    // The snapshot in the Job namespace, then the temporary block claim.
                    let staged = match stage_snapshot(ctx, ids, ds, &ns, &pvc_name, &names).await? {
                        Ok(Some(s)) => s,
                        Ok(None) => break AttemptOutcome::Staging,
                        Err(reason) => break AttemptOutcome::Failed(reason),
                    };
                    ensure_claim(ctx, ids, ds, &ns, &pvc_name, &names, &staged).await?;
                    if running >= max_running {
                        break AttemptOutcome::Queued;
                    }
                    let parent = match inputs.backup_type {
                        BackupType::Incremental | BackupType::Mixed => {
                            choose_parent(inputs.candidates, &pvc_uid)
                        }
                        BackupType::Full => None,
                    };
                    let job = datamover_job(
                        ctx,
                        ids,
                        &job_name,
                        &names.claim,
                        &pvc_uid,
                        parent.as_deref(),
                        inputs.target,
                    )?;
                    let job = match job {
                        Ok(j) => j,
                        Err(reason) => break AttemptOutcome::Failed(reason),
                    };
                    create_adopt(&job_api, &job, format!("Job {}/{job_name}", ids.job_ns)).await?;
                    running += 1;
                    ds.snapshot_type = Some(if parent.is_some() {
                        BackupType::Incremental
                    } else {
                        BackupType::Full
                    });
                    set_ds(
                        ds,
                        BackupPhase::DataUpload,
                        BackupPhaseStatus::InProgress,
                        &match &parent {
                            Some(p) => format!(
                                "Job {job_name} uploads an incremental image on parent backup {p} (attempt {})",
                                attempt + 1
                            ),
                            None => format!(
                                "Job {job_name} uploads a full image (attempt {})",
                                attempt + 1
                            ),
                        },
                    );
                    break AttemptOutcome::Running;
                }
                JobState::Running => {
                    in_flight.push((job_name, ds_bytes(ds)));
                    break AttemptOutcome::Running;
                }
                JobState::Succeeded => break AttemptOutcome::Succeeded,
                JobState::Failed(job_message) => {
                    let pods =
                        crate::jobs::pod_outcome(&ctx.client, &ids.job_ns, &job_name).await?;
                    let message = pods.tool_error.clone().unwrap_or(job_message);
                    if pods.retryable() && attempt < MAX_RETRIES {
                        attempt += 1;
                        continue;
                    }
                    ctx.metrics.job_failed("DataUpload");
                    let retried = if attempt > 0 {
                        format!(
                            " after {attempt} retr{}",
                            if attempt == 1 { "y" } else { "ies" }
                        )
                    } else {
                        String::new()
                    };
                    break AttemptOutcome::Failed(format!(
                        "uploading PersistentVolumeClaim {ns}/{pvc_name} failed{retried}: Job {}/{job_name}: {message}",
                        ids.job_ns
                    ));
                }
            }
        };
        match outcome {
            AttemptOutcome::Queued => set_ds(
                ds,
                BackupPhase::DataUpload,
                BackupPhaseStatus::InProgress,
                &format!(
                    "waiting for a free data Job slot (jobSpec.maxParallelDataJobs = {max_running})"
                ),
            ),
            AttemptOutcome::Running | AttemptOutcome::Staging => {}
            AttemptOutcome::Succeeded => {
                pending -= 1;
                done_bytes += ds_bytes(ds);
                ds.uploaded = Some(true);
                ds.snapshot_type.get_or_insert(BackupType::Full);
                set_ds(
                    ds,
                    BackupPhase::DataUpload,
                    BackupPhaseStatus::Completed,
                    &format!("uploaded to {}", ds.location.clone().unwrap_or_default()),
                );
            }
            AttemptOutcome::Failed(reason) => {
                set_ds(
                    ds,
                    BackupPhase::DataUpload,
                    BackupPhaseStatus::Failed,
                    &reason,
                );
                return Ok(failed(reason, total));
            }
        }
    }
    let step = if pending == 0 {
        Step::Done("every volume is uploaded to the target".into())
    } else {
        Step::Waiting(format!("uploading volumes: {pending} remaining"))
    };
    let in_flight_bytes =
        crate::progress::in_flight_bytes(ctx, &ids.job_ns, &ids.uid, &in_flight).await;
    Ok(UploadProgress {
        step,
        done_bytes,
        in_flight_bytes,
        total_bytes: total,
    })
}

enum AttemptOutcome {
    Staging,
    Queued,
    Running,
    Succeeded,
    Failed(String),
}

fn failed(reason: String, total: u64) -> UploadProgress {
    UploadProgress {
        step: Step::Failed(reason),
        done_bytes: 0,
        in_flight_bytes: None,
        total_bytes: total,
    }
}

/// What the temporary claim is restored from.
struct Staged {
    /// VolumeSnapshot name in the Job namespace.
    name: String,
    /// Its restore size.
    restore_size: Option<Quantity>,
}

/// The VolumeSnapshot in the Job namespace (the original, or a clone bound to a pre-provisioned
/// content with the same snapshot handle); `Ok(None)` while the clone is not ready.
async fn stage_snapshot(
    ctx: &Context,
    ids: &BackupIds,
    ds: &DataSnapshot,
    ns: &str,
    pvc_name: &str,
    names: &VolumeNames,
) -> Result<std::result::Result<Option<Staged>, String>> {
    let vs_api: Api<VolumeSnapshot> = Api::namespaced(ctx.client.clone(), ns);
    let Some(source) = vs_api
        .get_opt(&names.snapshot)
        .await
        .map_err(|e| Error::kube(format!("read VolumeSnapshot {ns}/{}", names.snapshot), e))?
    else {
        return Ok(Err(format!(
            "VolumeSnapshot {ns}/{} of PersistentVolumeClaim {ns}/{pvc_name} vanished before its upload",
            names.snapshot
        )));
    };
    let source_status = source.status.clone().unwrap_or_default();
    let filesystem = ds.volume_mode.as_deref() != Some("Block");
    let content_api: Api<VolumeSnapshotContent> = Api::all(ctx.client.clone());
    if ns == ids.job_ns {
        if filesystem {
            let Some(content) = source_status.bound_volume_snapshot_content_name.clone() else {
                return Ok(Err(format!(
                    "VolumeSnapshot {ns}/{} is ready but names no VolumeSnapshotContent",
                    names.snapshot
                )));
            };
            let patch =
                json!({"metadata": {"annotations": {ALLOW_MODE_CHANGE_ANNOTATION: "true"}}});
            match content_api
                .patch(&content, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(e) if is_forbidden(&e) => {
                    return Ok(Err(format!(
                        "the control plane may not annotate VolumeSnapshotContent {content} (needed to read a Filesystem-mode volume as a block device): {e}; install with applicationScope: Cluster"
                    )));
                }
                Err(e) => {
                    return Err(Error::kube(
                        format!("annotate VolumeSnapshotContent {content}"),
                        e,
                    ));
                }
            }
        }
        return Ok(Ok(Some(Staged {
            name: names.snapshot.clone(),
            restore_size: source_status.restore_size,
        })));
    }
    let clone_api: Api<VolumeSnapshot> = Api::namespaced(ctx.client.clone(), &ids.job_ns);
    if let Some(clone) = clone_api.get_opt(&names.clone).await.map_err(|e| {
        Error::kube(
            format!("read VolumeSnapshot {}/{}", ids.job_ns, names.clone),
            e,
        )
    })? {
        let status = clone.status.unwrap_or_default();
        if let Some(message) = status.error.and_then(|e| e.message) {
            return Ok(Err(format!(
                "VolumeSnapshot {}/{} (the copy of {ns}/{} in the install namespace) failed: {message}",
                ids.job_ns, names.clone, names.snapshot
            )));
        }
        if status.ready_to_use != Some(true) {
            return Ok(Ok(None));
        }
        return Ok(Ok(Some(Staged {
            name: names.clone.clone(),
            restore_size: status.restore_size.or(source_status.restore_size),
        })));
    }
    let Some(content_name) = source_status.bound_volume_snapshot_content_name.clone() else {
        return Ok(Err(format!(
            "VolumeSnapshot {ns}/{} is ready but names no VolumeSnapshotContent",
            names.snapshot
        )));
    };
    let content = match get_opt_or_forbidden(
        &content_api,
        &content_name,
        &format!("VolumeSnapshotContent {content_name}"),
    )
    .await?
    {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Ok(Err(format!(
                "VolumeSnapshotContent {content_name} of VolumeSnapshot {ns}/{} does not exist",
                names.snapshot
            )));
        }
        Err(reason) => return Ok(Err(reason)),
    };
    let Some(handle) = content
        .status
        .as_ref()
        .and_then(|s| s.snapshot_handle.clone())
        .or_else(|| content.spec.source.snapshot_handle.clone())
    else {
        return Ok(Err(format!(
            "VolumeSnapshotContent {content_name} has no snapshotHandle yet although its VolumeSnapshot is ready"
        )));
    };
    let mut annotations = BTreeMap::new();
    if filesystem {
        annotations.insert(ALLOW_MODE_CHANGE_ANNOTATION.to_string(), "true".to_string());
    }
    let mut content_meta = meta(ids, &names.clone_content, None);
    content_meta
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .extend(annotations);
    let clone_content = VolumeSnapshotContent {
        api_version: format!("{SNAPSHOT_GROUP}/v1"),
        kind: "VolumeSnapshotContent".into(),
        metadata: content_meta,
        spec: VolumeSnapshotContentSpec {
            // The original VolumeSnapshot owns the storage snapshot.
            deletion_policy: "Retain".into(),
            driver: content.spec.driver.clone(),
            source: VolumeSnapshotContentSource {
                snapshot_handle: Some(handle),
                volume_handle: None,
            },
            volume_snapshot_ref: k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some(format!("{SNAPSHOT_GROUP}/v1")),
                kind: Some("VolumeSnapshot".into()),
                name: Some(names.clone.clone()),
                namespace: Some(ids.job_ns.clone()),
                ..Default::default()
            },
            volume_snapshot_class_name: content.spec.volume_snapshot_class_name.clone(),
            source_volume_mode: ds.volume_mode.clone(),
        },
        status: None,
    };
    match content_api
        .create(&PostParams::default(), &clone_content)
        .await
    {
        Ok(_) => {}
        Err(e) if is_conflict(&e) => {}
        Err(e) if is_forbidden(&e) => {
            return Ok(Err(format!(
                "the control plane may not create VolumeSnapshotContent {} (the copy of the snapshot of {ns}/{pvc_name} in the install namespace): {e}; install with applicationScope: Cluster",
                names.clone_content
            )));
        }
        Err(e) => {
            return Err(Error::kube(
                format!("create VolumeSnapshotContent {}", names.clone_content),
                e,
            ));
        }
    }
    let clone = VolumeSnapshot {
        api_version: format!("{SNAPSHOT_GROUP}/v1"),
        kind: "VolumeSnapshot".into(),
        metadata: meta(ids, &names.clone, Some(&ids.job_ns)),
        spec: VolumeSnapshotSpec {
            source: VolumeSnapshotSource {
                persistent_volume_claim_name: None,
                volume_snapshot_content_name: Some(names.clone_content.clone()),
            },
            volume_snapshot_class_name: content.spec.volume_snapshot_class_name.clone(),
        },
        status: None,
    };
    create_adopt(
        &clone_api,
        &clone,
        format!("VolumeSnapshot {}/{}", ids.job_ns, names.clone),
    )
    .await?;
    Ok(Ok(None))
}

/// Creates (or adopts) the temporary block claim restored from `staged`.
async fn ensure_claim(
    ctx: &Context,
    ids: &BackupIds,
    ds: &DataSnapshot,
    ns: &str,
    pvc_name: &str,
    names: &VolumeNames,
    staged: &Staged,
) -> Result<()> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ids.job_ns);
    if api
        .get_opt(&names.claim)
        .await
        .map_err(|e| Error::kube(format!("read PVC {}/{}", ids.job_ns, names.claim), e))?
        .is_some()
    {
        return Ok(());
    }
    // The source claim's class and access modes: live, else as the metamover recorded it.
    let source = match Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns)
        .get_opt(pvc_name)
        .await
        .map_err(|e| Error::kube(format!("read PVC {ns}/{pvc_name}"), e))?
    {
        Some(p) => Some(p),
        None => ds
            .persistent_volume_claim_metadata
            .as_deref()
            .and_then(|m| serde_json::from_str::<PersistentVolumeClaim>(m).ok()),
    };
    let spec = source.and_then(|p| p.spec).unwrap_or_default();
    let size = staged
        .restore_size
        .clone()
        .filter(|q| parse_quantity(&q.0).is_some_and(|b| b > 0))
        .or_else(|| {
            ds.size.as_ref().map(|s| match s {
                IntOrString::Int(i) => Quantity(i.to_string()),
                IntOrString::String(s) => Quantity(s.clone()),
            })
        })
        .unwrap_or_else(|| Quantity("1Gi".into()));
    let claim = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta(ids, &names.claim, Some(&ids.job_ns)),
        "spec": {
            "volumeMode": "Block",
            "accessModes": spec.access_modes.unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            "storageClassName": spec.storage_class_name,
            "resources": {"requests": {"storage": size}},
            "dataSource": {"apiGroup": SNAPSHOT_GROUP, "kind": "VolumeSnapshot", "name": staged.name},
        },
    });
    let claim: PersistentVolumeClaim =
        serde_json::from_value(claim).map_err(|source| Error::Serde {
            what: "a temporary PersistentVolumeClaim",
            source,
        })?;
    create_adopt(&api, &claim, format!("PVC {}/{}", ids.job_ns, names.claim)).await
}

/// The datamover Job of one volume and attempt (pure but for the target flags); `Ok(Err)` when
/// the Target cannot be reached from the Job namespace.
pub fn datamover_job(
    ctx: &Context,
    ids: &BackupIds,
    job_name: &str,
    claim: &str,
    pvc_uid: &str,
    parent: Option<&str>,
    target: &Target,
) -> Result<std::result::Result<Job, String>> {
    let mut access: TargetAccess = match crate::target_access::job_access(target, &ids.job_ns) {
        Ok(a) => a,
        Err(e) => return Ok(Err(e.to_string())),
    };
    if let Some(key) = &ids.key {
        crate::encryption::mount(&mut access, &key.job_secret_name(&ids.job_ns));
    }
    let mut args = vec![
        "backup".to_string(),
        "--plan".into(),
        ids.plan_uid.clone(),
        "--backup".into(),
        ids.uid.clone(),
        "--volume".into(),
        pvc_uid.to_string(),
        "--source".into(),
        DEVICE_PATH.into(),
    ];
    if let Some(parent) = parent {
        args.extend(["--parent".to_string(), parent.to_string()]);
    }
    let request = JobRequest {
        name: job_name.to_string(),
        namespace: &ids.job_ns,
        backup_label: ids.name.chars().take(63).collect(),
        backup_uid: &ids.uid,
        backup_ref: format!("{}/{}", ids.ns, ids.name),
        owner: (ids.ns == ids.job_ns || ids.ns.is_empty())
            .then(|| ids.owner.clone())
            .flatten(),
        phase: "data",
        image: ctx.config.images.datamover.clone(),
        service_account: Some(ctx.config.service_accounts.datamover.clone()),
        args,
        access,
        resources: ctx.config.job_resources.data.clone(),
    };
    let mut job = build_job(&request, &ctx.config)?;
    attach_block_device(&mut job, claim, DEVICE_PATH);
    Ok(Ok(job))
}

/// Adds `claim` to every container of `job` as the raw block device `path`.
pub fn attach_block_device(job: &mut Job, claim: &str, path: &str) {
    let Some(pod) = job.spec.as_mut().and_then(|s| s.template.spec.as_mut()) else {
        return;
    };
    pod.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: "tvk-volume".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.to_string(),
            read_only: Some(false),
        }),
        ..Volume::default()
    });
    for c in &mut pod.containers {
        c.volume_devices
            .get_or_insert_with(Vec::new)
            .push(VolumeDevice {
                name: "tvk-volume".into(),
                device_path: path.to_string(),
            });
    }
}

/// Deletes the volume objects of the backup (temporary claims, clones, snapshots); idempotent.
pub async fn cleanup(ctx: &Context, ids: &BackupIds, snap: &Snapshot) -> Result<usize> {
    let mut count = 0;
    for ds in snap.data_snapshots() {
        if is_skipped(ds) {
            continue;
        }
        let (ns, pvc_name) = volume_key(ds, &ids.ns);
        let names = VolumeNames::new(&ids.uid, &ns, &pvc_name);
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ids.job_ns);
        delete_opt(
            &claims,
            &names.claim,
            format!("PVC {}/{}", ids.job_ns, names.claim),
        )
        .await?;
        if ns != ids.job_ns {
            let clones: Api<VolumeSnapshot> = Api::namespaced(ctx.client.clone(), &ids.job_ns);
            delete_opt(
                &clones,
                &names.clone,
                format!("VolumeSnapshot {}/{}", ids.job_ns, names.clone),
            )
            .await?;
            let contents: Api<VolumeSnapshotContent> = Api::all(ctx.client.clone());
            match contents
                .delete(&names.clone_content, &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) || is_forbidden(&e) => {}
                Err(e) => {
                    return Err(Error::kube(
                        format!("delete VolumeSnapshotContent {}", names.clone_content),
                        e,
                    ));
                }
            }
        }
        let snapshots: Api<VolumeSnapshot> = Api::namespaced(ctx.client.clone(), &ns);
        delete_opt(
            &snapshots,
            &names.snapshot,
            format!("VolumeSnapshot {ns}/{}", names.snapshot),
        )
        .await?;
        count += 1;
    }
    Ok(count)
}
