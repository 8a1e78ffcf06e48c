//! The DataRestore phase: one claim per planned volume, hydrated by a datamover Job, then bound
//! to the final claim in the destination namespace.
//!
//! A pod can only mount a claim of its own namespace and read Secrets of its own namespace, and
//! the Jobs run in the install namespace (service account tvk-datamover, the Target's
//! credential Secret). So every volume takes one path, Block and Filesystem alike:
//!
//! 1. a staging claim `tvk-rst-<hash>` in the install namespace, `volumeMode: Block`, the
//!    planned size, access modes and (mapped) storage class;
//! 2. the Job `tvk-datarestore-<hash>` writes the backup's chain onto it
//!    (`tvk-datamover restore … --dest /dev/tvk-volume`, the claim as `volumeDevices`); at most
//!    `jobSpec.maxParallelDataJobs` of the restore's data Jobs run at once; a Job whose pod
//!    exited 75 (retryable) is followed by a new Job (`…#<attempt>`) on the same claim, up to
//!    [`MAX_RETRIES`] times (the chain's writes are deterministic, so a rerun over a partly
//!    written claim gives the same content);
//! 3. re-bind: the staging claim's volume is labelled and set to `Retain` (its original policy
//!    kept in an annotation), the staging claim deleted, a new volume `tvk-rst-pv-<hash>` made
//!    from the same source (CSI `volumeHandle`, driver, attributes…) with the planned
//!    `volumeMode` and the original reclaim policy, pre-bound (`claimRef`) to the final claim,
//!    the staging volume deleted (Retain: the storage stays), and the final claim created from
//!    the plan's `pvcMetadata` with `volumeName` set.
//!
//! Filesystem-mode volumes were backed up as the raw content of the block device (contracts8),
//! so writing that content through a Block claim and re-binding it as Filesystem restores the
//! filesystem. Every step is observed from objects with deterministic names, so a restarted
//! controller continues where the last one stopped.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{
            Namespace, ObjectReference as CoreObjectReference, PersistentVolume,
            PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Volume, VolumeDevice,
        },
    },
    apimachinery::pkg::api::resource::Quantity,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;
use tvk_api::restore_plan::{PlannedVolume, RestorePlan};

use super::{Ids, LABEL_RESTORE, LABEL_RESTORE_UID, adapt_for_restore, read_job};
use crate::{
    context::Context,
    error::{Error, Result, is_conflict, is_not_found},
    jobs::{JobRequest, JobState, build_job},
    naming::{object_name, quantity_bytes, short_hash},
    target_access::TargetAccess,
    volumes::MAX_RETRIES,
};

/// Label tying a restore's claims and volumes to one planned volume.
pub const LABEL_RESTORE_VOLUME: &str = "triliovault.trilio.io/restore-volume";
/// Label saying what a claim or volume is for: `staging` or `final`.
pub const LABEL_RESTORE_ROLE: &str = "triliovault.trilio.io/restore-role";
/// Annotation on a staging volume keeping its reclaim policy from before it was set to Retain.
pub const ANNOTATION_ORIGINAL_RECLAIM: &str = "triliovault.trilio.io/original-reclaim-policy";
/// Where the staging claim appears in the datamover's container.
pub const DEVICE_PATH: &str = "/dev/tvk-volume";
/// Role of the staging claim and of the volume it was provisioned with.
pub const ROLE_STAGING: &str = "staging";
/// Role of the final claim and its volume.
pub const ROLE_FINAL: &str = "final";

/// Where the phase stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataState {
    /// Jobs running or waiting for a slot.
    Working,
    /// Every volume is hydrated and bound to its final claim.
    Done,
    /// A volume failed; the reason names it.
    Failed(String),
}

/// The phase's state and the bytes of finished volumes.
#[derive(Debug, Clone)]
pub struct DataOutcome {
    /// State.
    pub state: DataState,
    /// Sum of the sizes of finished volumes.
    pub done_bytes: u64,
    /// Bytes the running Jobs reported done (weighted by their volumes' sizes), when their
    /// logs were read this time ([`crate::progress::in_flight_bytes`]).
    pub in_flight_bytes: Option<u64>,
    /// Volumes whose datamover Job exited 75 (retryable) and runs again, with the attempt and
    /// the failed attempt's error (for the DataRestore condition).
    pub retries: Vec<String>,
}

/// Names of one volume's objects (deterministic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeNames {
    /// Value of [`LABEL_RESTORE_VOLUME`].
    pub key: String,
    /// Staging claim in the install namespace.
    pub staging_claim: String,
    /// Datamover Job of the first attempt (see [`VolumeNames::job_of`]).
    pub job: String,
    /// Final PersistentVolume.
    pub final_volume: String,
}

impl VolumeNames {
    /// The datamover Job of attempt `attempt` (0 = first; a retry after exit 75 runs under a
    /// new name, so the failed Job and its pod stay readable until cleanup).
    pub fn job_of(&self, uid: &str, volume: &PlannedVolume, attempt: u32) -> String {
        if attempt == 0 {
            self.job.clone()
        } else {
            object_name(
                "DataRestore",
                uid,
                &format!("{}#{attempt}", volume.location),
            )
        }
    }
}

/// Names of `volume`'s objects for restore `uid` (pure).
pub fn volume_names(uid: &str, volume: &PlannedVolume) -> VolumeNames {
    VolumeNames {
        key: short_hash(&[uid, &volume.location]),
        staging_claim: object_name("rst", uid, &volume.location),
        job: object_name("DataRestore", uid, &volume.location),
        final_volume: object_name("rst-pv", uid, &volume.location),
    }
}

/// Splits `<plan uid>/<backup uid>/<pvc uid>` into the datamover's `--plan/--backup/--volume`
/// (pure); anything else is refused.
pub fn split_volume_location(location: &str) -> std::result::Result<[String; 3], String> {
    let parts: Vec<&str> = location.split('/').collect();
    let safe = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.len() <= 128
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match parts.as_slice() {
        [p, b, v] if safe(p) && safe(b) && safe(v) => {
            Ok([p.to_string(), b.to_string(), v.to_string()])
        }
        _ => Err(format!(
            "volume location {location:?} is not <plan uid>/<backup uid>/<pvc uid>"
        )),
    }
}

fn labels(ids: &Ids, names: &VolumeNames, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            LABEL_RESTORE.to_string(),
            ids.name.chars().take(63).collect(),
        ),
        (LABEL_RESTORE_UID.to_string(), ids.uid.clone()),
        (LABEL_RESTORE_VOLUME.to_string(), names.key.clone()),
        (LABEL_RESTORE_ROLE.to_string(), role.to_string()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            crate::context::CONTROLLER_NAME.to_string(),
        ),
    ])
}

/// The claim the plan asks for (`pvcMetadata`), with the plan's fields applied.
fn planned_claim(volume: &PlannedVolume) -> std::result::Result<PersistentVolumeClaim, String> {
    let mut pvc: PersistentVolumeClaim =
        serde_json::from_str(&volume.pvc_metadata).map_err(|e| {
            format!(
                "the plan's pvcMetadata of {}/{} is not a PersistentVolumeClaim: {e}",
                volume.namespace, volume.pvc_name
            )
        })?;
    let spec = pvc.spec.get_or_insert_with(Default::default);
    if !volume.access_modes.is_empty() {
        spec.access_modes = Some(volume.access_modes.clone());
    }
    if spec.access_modes.as_ref().is_none_or(Vec::is_empty) {
        spec.access_modes = Some(vec!["ReadWriteOnce".into()]);
    }
    if let Some(class) = &volume.storage_class_name {
        spec.storage_class_name = Some(class.clone());
    }
    if let Some(mode) = &volume.volume_mode {
        spec.volume_mode = Some(mode.clone());
    }
    if let Some(size) = volume.size.as_ref().and_then(quantity_bytes) {
        spec.resources
            .get_or_insert_with(Default::default)
            .requests
            .get_or_insert_with(Default::default)
            .insert("storage".into(), Quantity(size.to_string()));
    }
    let has_request = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .is_some_and(|r| r.contains_key("storage"));
    if !has_request {
        return Err(format!(
            "the plan gives no size for volume {}/{}",
            volume.namespace, volume.pvc_name
        ));
    }
    spec.data_source = None;
    spec.data_source_ref = None;
    spec.volume_name = None;
    pvc.status = None;
    Ok(pvc)
}

/// The staging claim: Block mode, in the Jobs' namespace, same size/class/access modes (pure).
pub fn staging_claim(
    ids: &Ids,
    volume: &PlannedVolume,
) -> std::result::Result<PersistentVolumeClaim, String> {
    let names = volume_names(&ids.uid, volume);
    let planned = planned_claim(volume)?;
    let mut spec = planned.spec.unwrap_or_default();
    spec.volume_mode = Some("Block".into());
    spec.selector = None;
    Ok(PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(names.staging_claim.clone()),
            namespace: Some(ids.job_ns.clone()),
            labels: Some(labels(ids, &names, ROLE_STAGING)),
            owner_references: ids.owner.clone().map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// The final claim in the destination namespace, bound to `volume_name` (pure).
pub fn final_claim(
    ids: &Ids,
    volume: &PlannedVolume,
    volume_name: &str,
) -> std::result::Result<PersistentVolumeClaim, String> {
    let names = volume_names(&ids.uid, volume);
    let mut pvc = planned_claim(volume)?;
    let meta = &mut pvc.metadata;
    meta.name = Some(volume.pvc_name.clone());
    meta.namespace = Some(volume.namespace.clone());
    meta.uid = None;
    meta.resource_version = None;
    meta.creation_timestamp = None;
    meta.managed_fields = None;
    meta.owner_references = None;
    meta.finalizers = None;
    meta.labels
        .get_or_insert_with(Default::default)
        .extend(labels(ids, &names, ROLE_FINAL));
    if let Some(a) = meta.annotations.as_mut() {
        // Binding annotations of the source cluster would confuse the binder.
        a.retain(|k, _| {
            !k.starts_with("pv.kubernetes.io/")
                && !k.starts_with("volume.kubernetes.io/selected-node")
        });
    }
    let spec = pvc.spec.get_or_insert_with(Default::default);
    spec.volume_name = Some(volume_name.to_string());
    if spec.volume_mode.is_none() {
        spec.volume_mode = Some("Filesystem".into());
    }
    Ok(pvc)
}

/// The final volume: the staging volume's storage (same source), the planned mode, the original
/// reclaim policy, pre-bound to the final claim (pure).
pub fn final_volume(
    ids: &Ids,
    volume: &PlannedVolume,
    staging: &PersistentVolume,
) -> PersistentVolume {
    let names = volume_names(&ids.uid, volume);
    let mut spec = staging.spec.clone().unwrap_or_default();
    spec.claim_ref = Some(CoreObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: Some(volume.namespace.clone()),
        name: Some(volume.pvc_name.clone()),
        ..CoreObjectReference::default()
    });
    spec.volume_mode = Some(
        volume
            .volume_mode
            .clone()
            .unwrap_or_else(|| "Filesystem".into()),
    );
    spec.persistent_volume_reclaim_policy = Some(
        staging
            .annotations()
            .get(ANNOTATION_ORIGINAL_RECLAIM)
            .cloned()
            .unwrap_or_else(|| "Delete".into()),
    );
    // Keep what the provisioner needs to delete the storage later, nothing else.
    let annotations: BTreeMap<String, String> = staging
        .annotations()
        .iter()
        .filter(|(k, _)| {
            k.as_str() == "pv.kubernetes.io/provisioned-by"
                || k.starts_with("volume.kubernetes.io/provisioner-deletion-secret")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(names.final_volume.clone()),
            labels: Some(labels(ids, &names, ROLE_FINAL)),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The datamover Job `job_name` hydrating the staging claim (pure).
pub fn datamover_job(
    ctx: &Context,
    ids: &Ids,
    volume: &PlannedVolume,
    access: &TargetAccess,
    job_name: &str,
) -> Result<Job> {
    let names = volume_names(&ids.uid, volume);
    let [plan, backup, vol] =
        split_volume_location(&volume.location).map_err(Error::InvalidSpec)?;
    let request = JobRequest {
        name: job_name.to_string(),
        namespace: &ids.job_ns,
        backup_label: ids.name.chars().take(63).collect(),
        backup_uid: &ids.uid,
        backup_ref: ids.reference.clone(),
        owner: ids.owner.clone(),
        phase: "data",
        image: ctx.config.images.datamover.clone(),
        service_account: Some(ctx.config.service_accounts.datamover.clone()),
        args: vec![
            "restore".into(),
            "--plan".into(),
            plan,
            "--backup".into(),
            backup,
            "--volume".into(),
            vol,
            "--dest".into(),
            DEVICE_PATH.into(),
        ],
        access: access.clone(),
        resources: ctx.config.job_resources.data.clone(),
    };
    let mut job = build_job(&request, &ctx.config)?;
    adapt_for_restore(&mut job, ids);
    if let Some(pod) = job.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        pod.volumes.get_or_insert_with(Vec::new).push(Volume {
            name: "tvk-volume".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: names.staging_claim.clone(),
                read_only: Some(false),
            }),
            ..Volume::default()
        });
        for c in &mut pod.containers {
            c.volume_devices
                .get_or_insert_with(Vec::new)
                .push(VolumeDevice {
                    name: "tvk-volume".into(),
                    device_path: DEVICE_PATH.into(),
                });
        }
    }
    Ok(job)
}

enum VolumeState {
    Done,
    /// Waiting; `Some` names a retry in progress.
    Working(Option<String>),
    /// Its datamover Job runs; `retry` names a retry in progress.
    Running {
        job: String,
        retry: Option<String>,
    },
    Failed(String),
}

fn is_ours(labels: &BTreeMap<String, String>, uid: &str) -> bool {
    labels.get(LABEL_RESTORE_UID).map(String::as_str) == Some(uid)
}

async fn create_adopt<K>(api: &Api<K>, obj: &K, what: String) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(Error::kube(format!("create {what}"), e)),
    }
}

async fn delete_opt<K>(api: &Api<K>, name: &str, what: String) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(Error::kube(format!("delete {what}"), e)),
    }
}

/// Advances every volume; creates data Jobs while fewer than `maxParallelDataJobs` run.
pub async fn step(
    ctx: &Context,
    ids: &Ids,
    plan: &RestorePlan,
    access: &TargetAccess,
) -> Result<DataOutcome> {
    if ctx.config.watch_namespace().is_some() {
        return Ok(DataOutcome {
            state: DataState::Failed(
                "restoring volumes re-binds PersistentVolumes, which are cluster-scoped and out of reach of a Namespaced install; install with applicationScope: Cluster, or restore with restoreFlags.onlyMetadata".into(),
            ),
            done_bytes: 0,
            in_flight_bytes: None,
            retries: Vec::new(),
        });
    }
    // A ClusterRestore into namespaces that do not exist yet: the final claims need them now,
    // before the metaprocessor runs (it adopts these, labelled by this restore, as its own).
    if let Err(reason) = ensure_namespaces(ctx, ids, plan).await? {
        return Ok(DataOutcome {
            state: DataState::Failed(reason),
            done_bytes: 0,
            in_flight_bytes: None,
            retries: Vec::new(),
        });
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ids.job_ns);
    let running = jobs
        .list(&ListParams::default().labels(&format!(
            "{LABEL_RESTORE_UID}={},app.kubernetes.io/component=data",
            ids.uid
        )))
        .await
        .map_err(|e| Error::kube("list the restore's data Jobs", e))?
        .items
        .iter()
        .filter(|j| crate::jobs::job_state(Some(j)) == JobState::Running)
        .count();
    let max = usize::try_from(ctx.config.job_spec.max_parallel_data_jobs.max(1)).unwrap_or(1);
    let mut slots = max.saturating_sub(running);
    let mut done_bytes = 0u64;
    let mut all_done = true;
    let mut failures = Vec::new();
    let mut retries = Vec::new();
    // (Job, volume size) of the restores running now, for the progress of the phase.
    let mut in_flight: Vec<(String, u64)> = Vec::new();
    for volume in &plan.volumes {
        let size = volume.size.as_ref().and_then(quantity_bytes).unwrap_or(0);
        match volume_step(ctx, ids, volume, access, &mut slots).await? {
            VolumeState::Done => {
                done_bytes += size;
            }
            VolumeState::Working(retry) => {
                all_done = false;
                retries.extend(retry);
            }
            VolumeState::Running { job, retry } => {
                all_done = false;
                retries.extend(retry);
                in_flight.push((job, size));
            }
            VolumeState::Failed(reason) => failures.push(reason),
        }
    }
    let state = if !failures.is_empty() {
        DataState::Failed(failures.join("; "))
    } else if all_done {
        DataState::Done
    } else {
        DataState::Working
    };
    let in_flight_bytes =
        crate::progress::in_flight_bytes(ctx, &ids.job_ns, &ids.uid, &in_flight).await;
    Ok(DataOutcome {
        state,
        done_bytes,
        in_flight_bytes,
        retries,
    })
}

/// Creates the plan's missing destination namespaces, labelled with this restore's UID; a
/// namespace that is being deleted is a failure naming it.
pub async fn ensure_namespaces(
    ctx: &Context,
    ids: &Ids,
    plan: &RestorePlan,
) -> Result<std::result::Result<(), String>> {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let needed = plan
        .namespaces
        .iter()
        .filter(|n| !n.exists)
        .map(|n| n.name.as_str())
        .chain(plan.volumes.iter().map(|v| v.namespace.as_str()));
    let mut seen = std::collections::BTreeSet::new();
    for name in needed.filter(|n| seen.insert(*n)) {
        match api
            .get_opt(name)
            .await
            .map_err(|e| Error::kube(format!("read Namespace {name}"), e))?
        {
            Some(ns) if ns.metadata.deletion_timestamp.is_some() => {
                return Ok(Err(format!(
                    "destination namespace {name} is being deleted; wait until it is gone, or restore into another namespace"
                )));
            }
            Some(_) => {}
            None => {
                let ns = Namespace {
                    metadata: ObjectMeta {
                        name: Some(name.to_string()),
                        labels: Some(BTreeMap::from([
                            (LABEL_RESTORE_UID.to_string(), ids.uid.clone()),
                            (
                                "app.kubernetes.io/managed-by".to_string(),
                                "tvk-control-plane".to_string(),
                            ),
                        ])),
                        ..ObjectMeta::default()
                    },
                    ..Namespace::default()
                };
                match api.create(&PostParams::default(), &ns).await {
                    Ok(_) => {}
                    Err(e) if is_conflict(&e) => {}
                    Err(e) => return Err(Error::kube(format!("create Namespace {name}"), e)),
                }
            }
        }
    }
    Ok(Ok(()))
}

async fn volume_step(
    ctx: &Context,
    ids: &Ids,
    volume: &PlannedVolume,
    access: &TargetAccess,
    slots: &mut usize,
) -> Result<VolumeState> {
    let names = volume_names(&ids.uid, volume);
    let what = format!("volume {}/{}", volume.namespace, volume.pvc_name);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &volume.namespace);
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    // 1. The final claim exists: done (ours), or a conflict Validation could not see.
    if let Some(pvc) = claims
        .get_opt(&volume.pvc_name)
        .await
        .map_err(|e| Error::kube(format!("read the claim of {what}"), e))?
    {
        if is_ours(pvc.labels(), &ids.uid) {
            return Ok(VolumeState::Done);
        }
        return Ok(VolumeState::Failed(format!(
            "PersistentVolumeClaim {}/{} already exists and was not created by this restore; delete it or restore into another namespace",
            volume.namespace, volume.pvc_name
        )));
    }
    // 2. The final volume exists: the staging volume goes, the final claim is made.
    if pvs
        .get_opt(&names.final_volume)
        .await
        .map_err(|e| Error::kube(format!("read PersistentVolume {}", names.final_volume), e))?
        .is_some()
    {
        return finish_rebind(ctx, ids, volume, &names).await;
    }
    // 3. A staging volume already taken over (its claim deleted): re-bind it.
    if let Some(staging) = staging_volume(ctx, ids, &names).await? {
        return rebind(ctx, ids, volume, &names, &staging).await;
    }
    // The Job of the current attempt: a Job that exited 75 is followed by the next attempt.
    let mut attempt = 0u32;
    let mut retry_note: Option<String> = None;
    let (job_name, state) = loop {
        let job_name = names.job_of(&ids.uid, volume, attempt);
        let job_message = match read_job(ctx, ids, &job_name).await? {
            JobState::Failed(m) => m,
            other => break (job_name, other),
        };
        let pods = crate::jobs::pod_outcome(&ctx.client, &ids.job_ns, &job_name).await?;
        let message = pods.tool_error.clone().unwrap_or(job_message);
        if pods.retryable() && attempt < MAX_RETRIES {
            attempt += 1;
            retry_note = Some(format!(
                "{what}: attempt {} of {} (Job {job_name} failed with a retryable error: {message})",
                attempt + 1,
                MAX_RETRIES + 1
            ));
            continue;
        }
        let retried = match attempt {
            0 => String::new(),
            1 => " after 1 retry".to_string(),
            n => format!(" after {n} retries"),
        };
        return Ok(VolumeState::Failed(format!(
            "{what} ({}): Job {}/{job_name} failed{retried}: {message}",
            volume.location, ids.job_ns
        )));
    };
    match state {
        JobState::Running => Ok(VolumeState::Running {
            job: job_name,
            retry: retry_note,
        }),
        JobState::Failed(_) => Ok(VolumeState::Working(retry_note)),
        JobState::Missing => {
            if *slots == 0 {
                return Ok(VolumeState::Working(retry_note));
            }
            let claim = match staging_claim(ids, volume) {
                Ok(c) => c,
                Err(reason) => return Ok(VolumeState::Failed(reason)),
            };
            if let Err(reason) = split_volume_location(&volume.location) {
                return Ok(VolumeState::Failed(format!("{what}: {reason}")));
            }
            let staging_api: Api<PersistentVolumeClaim> =
                Api::namespaced(ctx.client.clone(), &ids.job_ns);
            create_adopt(
                &staging_api,
                &claim,
                format!("staging claim {}/{}", ids.job_ns, names.staging_claim),
            )
            .await?;
            let job = datamover_job(ctx, ids, volume, access, &job_name)?;
            create_adopt(
                &Api::<Job>::namespaced(ctx.client.clone(), &ids.job_ns),
                &job,
                format!("Job {}/{job_name}", ids.job_ns),
            )
            .await?;
            *slots -= 1;
            Ok(VolumeState::Working(retry_note))
        }
        JobState::Succeeded => {
            let staging_api: Api<PersistentVolumeClaim> =
                Api::namespaced(ctx.client.clone(), &ids.job_ns);
            let Some(claim) = staging_api
                .get_opt(&names.staging_claim)
                .await
                .map_err(|e| {
                    Error::kube(format!("read staging claim {}", names.staging_claim), e)
                })?
            else {
                return Ok(VolumeState::Failed(format!(
                    "{what}: the staging claim {}/{} hydrated by Job {job_name} is gone (deleted outside the restore); delete the Restore and restore again",
                    ids.job_ns, names.staging_claim
                )));
            };
            let Some(pv_name) = claim.spec.as_ref().and_then(|s| s.volume_name.clone()) else {
                return Ok(VolumeState::Failed(format!(
                    "{what}: the staging claim {}/{} is not bound to a volume although Job {job_name} succeeded",
                    ids.job_ns, names.staging_claim
                )));
            };
            let Some(pv) = pvs
                .get_opt(&pv_name)
                .await
                .map_err(|e| Error::kube(format!("read PersistentVolume {pv_name}"), e))?
            else {
                return Ok(VolumeState::Failed(format!(
                    "{what}: PersistentVolume {pv_name} of the staging claim does not exist"
                )));
            };
            // Keep the storage when the staging claim goes: Retain, the old policy remembered.
            let original = pv
                .annotations()
                .get(super::data::ANNOTATION_ORIGINAL_RECLAIM)
                .cloned()
                .or_else(|| {
                    pv.spec
                        .as_ref()
                        .and_then(|s| s.persistent_volume_reclaim_policy.clone())
                })
                .unwrap_or_else(|| "Delete".into());
            let patch = json!({
                "metadata": {
                    "labels": labels(ids, &names, ROLE_STAGING),
                    "annotations": {ANNOTATION_ORIGINAL_RECLAIM: original},
                },
                "spec": {"persistentVolumeReclaimPolicy": "Retain"},
            });
            let staging = pvs
                .patch(&pv_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| Error::kube(format!("set PersistentVolume {pv_name} to Retain"), e))?;
            delete_opt(
                &staging_api,
                &names.staging_claim,
                format!("staging claim {}", names.staging_claim),
            )
            .await?;
            rebind(ctx, ids, volume, &names, &staging).await
        }
    }
}

async fn staging_volume(
    ctx: &Context,
    ids: &Ids,
    names: &VolumeNames,
) -> Result<Option<PersistentVolume>> {
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let list = pvs
        .list(&ListParams::default().labels(&format!(
            "{LABEL_RESTORE_UID}={},{LABEL_RESTORE_VOLUME}={},{LABEL_RESTORE_ROLE}={ROLE_STAGING}",
            ids.uid, names.key
        )))
        .await
        .map_err(|e| Error::kube("list the restore's staging volumes", e))?;
    Ok(list.items.into_iter().next())
}

async fn rebind(
    ctx: &Context,
    ids: &Ids,
    volume: &PlannedVolume,
    names: &VolumeNames,
    staging: &PersistentVolume,
) -> Result<VolumeState> {
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let pv = final_volume(ids, volume, staging);
    create_adopt(
        &pvs,
        &pv,
        format!("PersistentVolume {}", names.final_volume),
    )
    .await?;
    finish_rebind(ctx, ids, volume, names).await
}

async fn finish_rebind(
    ctx: &Context,
    ids: &Ids,
    volume: &PlannedVolume,
    names: &VolumeNames,
) -> Result<VolumeState> {
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    // The staging volume is Retain: deleting it leaves the storage to the final volume.
    if let Some(staging) = staging_volume(ctx, ids, names).await? {
        delete_opt(
            &pvs,
            &staging.name_any(),
            format!("staging PersistentVolume {}", staging.name_any()),
        )
        .await?;
    }
    let claim = match final_claim(ids, volume, &names.final_volume) {
        Ok(c) => c,
        Err(reason) => return Ok(VolumeState::Failed(reason)),
    };
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &volume.namespace);
    create_adopt(
        &claims,
        &claim,
        format!(
            "PersistentVolumeClaim {}/{}",
            volume.namespace, volume.pvc_name
        ),
    )
    .await?;
    Ok(VolumeState::Done)
}
