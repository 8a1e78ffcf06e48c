//! The CSI driver part: external-provisioner (PVC → PV + host file) and external-snapshotter
//! (VolumeSnapshot → VolumeSnapshotContent + copied file) for one driver name.
//!
//! A volume's storage is keyed by its PV's CSI `volumeHandle` (the PV name for non-CSI PVs,
//! e.g. the NFS PV of a Target), so a second PV naming the same handle — the restore side's
//! re-bind of a hydrated volume to a Filesystem-mode claim — sees the same bytes.

use std::{
    collections::BTreeMap,
    fs::File,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::{
    core::v1::{PersistentVolume, PersistentVolumeClaim},
    storage::v1::StorageClass,
};
use kube::{
    Api, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};

use crate::{Error, FIELD_MANAGER, Shared, now, quantity_bytes};

const SNAPSHOT_GROUP: &str = "snapshot.storage.k8s.io";
/// Annotation a VolumeSnapshotContent needs before a claim of another volume mode may be
/// made from it (external-provisioner's rule since snapshotter 6.0).
pub(crate) const ALLOW_MODE_CHANGE: &str =
    "snapshot.storage.kubernetes.io/allow-volume-mode-change";
const DEFAULT_SC: &str = "storageclass.kubernetes.io/is-default-class";
const DEFAULT_VSC: &str = "snapshot.storage.kubernetes.io/is-default-class";
const RETRY: Duration = Duration::from_millis(200);

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(SNAPSHOT_GROUP, "v1", kind), plural)
}

pub(crate) fn snapshots_resource() -> ApiResource {
    resource("VolumeSnapshot", "volumesnapshots")
}
fn contents_resource() -> ApiResource {
    resource("VolumeSnapshotContent", "volumesnapshotcontents")
}
fn classes_resource() -> ApiResource {
    resource("VolumeSnapshotClass", "volumesnapshotclasses")
}

/// The "block device" of a volume.
pub(crate) fn block_file(root: &Path, key: &str) -> PathBuf {
    root.join("volumes").join(format!("{key}.img"))
}

/// The volume mounted as a filesystem (a separate view from the block file).
pub(crate) fn fs_dir(root: &Path, key: &str) -> PathBuf {
    root.join("volumes").join(format!("{key}.d"))
}

/// A snapshot's stored copy, keyed by its snapshot handle (a pre-provisioned content naming
/// the same handle sees the same bytes).
fn snapshot_file(root: &Path, handle: &str) -> PathBuf {
    let safe: String = handle
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    root.join("snapshots").join(format!("{safe}.img"))
}

/// The snapshot handle of a content (status, else the pre-provisioned source).
fn content_handle(c: &DynamicObject) -> Option<String> {
    c.data["status"]["snapshotHandle"]
        .as_str()
        .or(c.data["spec"]["source"]["snapshotHandle"].as_str())
        .map(str::to_string)
}

fn pp() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

fn post() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Storage key of a PV: its CSI volume handle, else its name (made safe for a file name).
fn pv_key(pv: &PersistentVolume) -> String {
    let raw = pv
        .spec
        .as_ref()
        .and_then(|s| s.csi.as_ref())
        .map(|c| c.volume_handle.clone())
        .unwrap_or_else(|| pv.name_any());
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Waits until the claim is bound and returns its volume's storage key.
pub(crate) async fn wait_volume(
    shared: &Shared,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<String, Error> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(shared.client.clone(), ns);
    let pvs: Api<PersistentVolume> = Api::all(shared.client.clone());
    let start = Instant::now();
    loop {
        let pvc = claims.get_opt(name).await.map_err(|source| Error::Api {
            what: format!("read PersistentVolumeClaim {ns}/{name}"),
            source,
        })?;
        let bound = pvc
            .as_ref()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"));
        if let Some(volume) = bound.and_then(|p| p.spec.as_ref()?.volume_name.clone()) {
            let pv = pvs.get_opt(&volume).await.map_err(|source| Error::Api {
                what: format!("read PersistentVolume {volume}"),
                source,
            })?;
            if let Some(pv) = pv {
                return Ok(pv_key(&pv));
            }
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: format!(
                    "PersistentVolumeClaim {ns}/{name} to be bound ({})",
                    match &pvc {
                        None => "it does not exist".to_string(),
                        Some(_) =>
                            "is its StorageClass's provisioner the harness's driver?".to_string(),
                    }
                ),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Copies `from` to `to` keeping holes (SEEK_DATA/SEEK_HOLE), then sizes it to at least `len`.
pub(crate) fn sparse_copy(from: &Path, to: &Path, len: u64) -> std::io::Result<u64> {
    use rustix::fs::{SeekFrom, seek};
    let src = File::open(from)?;
    let size = src.metadata()?.len();
    let tmp = to.with_extension("partial");
    let dst = File::create(&tmp)?;
    dst.set_len(size.max(len))?;
    let mut pos = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    while pos < size {
        let data = match seek(&src, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = seek(&src, SeekFrom::Hole(data))?.min(size);
        let mut off = data;
        while off < hole {
            let n = usize::try_from((hole - off).min(buf.len() as u64)).unwrap_or(buf.len());
            let read = src.read_at(&mut buf[..n], off)?;
            if read == 0 {
                break;
            }
            dst.write_all_at(&buf[..read], off)?;
            off += read as u64;
        }
        pos = hole;
    }
    dst.sync_all()?;
    std::fs::rename(&tmp, to)?;
    Ok(size.max(len))
}

// ---------------------------------------------------------------------------------------------
// Provisioner

pub(crate) async fn watch_claims(shared: Arc<Shared>) {
    let api: Api<PersistentVolumeClaim> = Api::all(shared.client.clone());
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        let event = tokio::select! {
            _ = shared.stop.cancelled() => return,
            e = events.next() => e,
        };
        match event {
            Some(Ok(watcher::Event::Apply(pvc) | watcher::Event::InitApply(pvc))) => {
                let phase = pvc.status.as_ref().and_then(|s| s.phase.clone());
                if phase.as_deref() == Some("Bound") || pvc.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let Some(uid) = pvc.uid() else { continue };
                if !shared.take(&uid) {
                    continue;
                }
                let shared = shared.clone();
                tokio::spawn(async move {
                    bind_until_done(&shared, pvc).await;
                    shared.release(&uid);
                });
            }
            Some(Ok(watcher::Event::Delete(pvc))) => {
                let shared = shared.clone();
                tokio::spawn(async move { reclaim(&shared, pvc).await });
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => tracing::warn!("kubelet: PVC watch error: {e}"),
            None => return,
        }
    }
}

/// What one binding attempt found.
enum Bind {
    Done,
    /// Not ours (another provisioner): leave it alone.
    NotOurs,
    /// Try again later; the reason is reported if it never works.
    Wait(String),
}

async fn bind_until_done(shared: &Shared, pvc: PersistentVolumeClaim) {
    let ns = pvc.namespace().unwrap_or_default();
    let name = pvc.name_any();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(shared.client.clone(), &ns);
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < shared.opts.wait_limit && !shared.stop.is_cancelled() {
        let current = match claims.get_opt(&name).await {
            Ok(Some(p)) if p.uid() == pvc.uid() => p,
            Ok(_) => return,
            Err(e) => {
                last = e.to_string();
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        if current.metadata.deletion_timestamp.is_some()
            || current.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
        {
            return;
        }
        match bind(shared, &current).await {
            Ok(Bind::Done | Bind::NotOurs) => return,
            Ok(Bind::Wait(why)) => last = why,
            Err(e) => last = e,
        }
        tokio::time::sleep(RETRY).await;
    }
    if !shared.stop.is_cancelled() {
        tracing::warn!("kubelet: PersistentVolumeClaim {ns}/{name} left Pending: {last}");
        event(
            shared,
            &ns,
            "PersistentVolumeClaim",
            &name,
            "ProvisioningFailed",
            &last,
        )
        .await;
    }
}

async fn event(shared: &Shared, ns: &str, kind: &str, name: &str, reason: &str, message: &str) {
    let api: Api<DynamicObject> = Api::namespaced_with(
        shared.client.clone(),
        ns,
        &ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Event")),
    );
    let obj: Result<DynamicObject, _> = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{name}."), "namespace": ns},
        "involvedObject": {"kind": kind, "namespace": ns, "name": name},
        "reason": reason, "message": message, "type": "Warning",
        "source": {"component": FIELD_MANAGER}, "firstTimestamp": now(), "lastTimestamp": now(), "count": 1,
    }));
    if let Ok(obj) = obj {
        let _ = api.create(&post(), &obj).await;
    }
}

async fn bind(shared: &Shared, pvc: &PersistentVolumeClaim) -> Result<Bind, String> {
    let ns = pvc.namespace().unwrap_or_default();
    let name = pvc.name_any();
    let uid = pvc.uid().unwrap_or_default();
    let spec = pvc.spec.clone().unwrap_or_default();
    let pvs: Api<PersistentVolume> = Api::all(shared.client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(shared.client.clone(), &ns);
    let api_err = |what: &str, e: kube::Error| format!("failed to {what}: {e}");

    // Static binding: the claim names its volume.
    if let Some(volume) = spec.volume_name.clone().filter(|v| !v.is_empty()) {
        let Some(pv) = pvs
            .get_opt(&volume)
            .await
            .map_err(|e| api_err("read the PersistentVolume", e))?
        else {
            return Ok(Bind::Wait(format!(
                "PersistentVolume {volume} does not exist"
            )));
        };
        let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.clone());
        if let Some(r) = &claim_ref
            && (r.name.as_deref() != Some(&name)
                || r.namespace.as_deref() != Some(&ns)
                || r.uid.as_deref().is_some_and(|u| u != uid))
        {
            return Ok(Bind::Wait(format!(
                "PersistentVolume {volume} is claimed by {}/{}",
                r.namespace.clone().unwrap_or_default(),
                r.name.clone().unwrap_or_default()
            )));
        }
        pvs.patch(
            &volume,
            &pp(),
            &Patch::Merge(
                json!({"spec": {"claimRef": {"kind": "PersistentVolumeClaim",
                "apiVersion": "v1", "namespace": ns, "name": name, "uid": uid}}}),
            ),
        )
        .await
        .map_err(|e| api_err("bind the PersistentVolume", e))?;
        pvs.patch_status(
            &volume,
            &pp(),
            &Patch::Merge(json!({"status": {"phase": "Bound"}})),
        )
        .await
        .map_err(|e| api_err("write the PersistentVolume status", e))?;
        let pv_spec = pv.spec.clone().unwrap_or_default();
        let capacity = pv_spec
            .capacity
            .clone()
            .unwrap_or_default()
            .get("storage")
            .map(|q| q.0.clone());
        mark_bound(
            &claims,
            &name,
            &volume,
            capacity,
            pv_spec.access_modes.clone(),
            None,
        )
        .await?;
        return Ok(Bind::Done);
    }

    // Dynamic provisioning through a StorageClass of our driver.
    let classes: Api<StorageClass> = Api::all(shared.client.clone());
    let class = match spec.storage_class_name.clone() {
        Some(c) if c.is_empty() => return Ok(Bind::NotOurs),
        Some(c) => classes
            .get_opt(&c)
            .await
            .map_err(|e| api_err("read the StorageClass", e))?,
        None => classes
            .list(&Default::default())
            .await
            .map_err(|e| api_err("list StorageClasses", e))?
            .items
            .into_iter()
            .find(|c| c.annotations().get(DEFAULT_SC).map(String::as_str) == Some("true")),
    };
    let Some(class) = class else {
        return Ok(Bind::Wait(format!(
            "StorageClass {:?} not found (and no default class)",
            spec.storage_class_name
        )));
    };
    if class.provisioner != shared.opts.driver {
        return Ok(Bind::NotOurs);
    }
    let requested = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_default();
    let Some(size) = quantity_bytes(&requested) else {
        return Ok(Bind::Wait(format!(
            "cannot parse the requested storage {requested:?}"
        )));
    };
    let volume_mode = spec
        .volume_mode
        .clone()
        .unwrap_or_else(|| "Filesystem".into());
    let pv_name = format!("pvc-{uid}");
    let key = pv_name.clone();
    let file = block_file(&shared.root, &key);
    // The claim's data source: a ready VolumeSnapshot or another claim.
    let source = spec.data_source_ref.as_ref().map(|r| {
        (
            r.api_group.clone().unwrap_or_default(),
            r.kind.clone(),
            r.name.clone(),
        )
    });
    let source = source.or_else(|| {
        spec.data_source.as_ref().map(|r| {
            (
                r.api_group.clone().unwrap_or_default(),
                r.kind.clone(),
                r.name.clone(),
            )
        })
    });
    let mut restore_size = None;
    if pvs
        .get_opt(&pv_name)
        .await
        .map_err(|e| api_err("read the PersistentVolume", e))?
        .is_none()
    {
        match source {
            Some((group, kind, src)) if group == SNAPSHOT_GROUP && kind == "VolumeSnapshot" => {
                let snaps: Api<DynamicObject> =
                    Api::namespaced_with(shared.client.clone(), &ns, &snapshots_resource());
                let Some(vs) = snaps
                    .get_opt(&src)
                    .await
                    .map_err(|e| api_err("read the VolumeSnapshot", e))?
                else {
                    return Ok(Bind::Wait(format!(
                        "VolumeSnapshot {ns}/{src} does not exist"
                    )));
                };
                let st = &vs.data["status"];
                let (Some(true), Some(content)) = (
                    st["readyToUse"].as_bool(),
                    st["boundVolumeSnapshotContentName"].as_str(),
                ) else {
                    return Ok(Bind::Wait(format!(
                        "VolumeSnapshot {ns}/{src} is not ready to use"
                    )));
                };
                let contents: Api<DynamicObject> =
                    Api::all_with(shared.client.clone(), &contents_resource());
                let Some(c) = contents
                    .get_opt(content)
                    .await
                    .map_err(|e| api_err("read the VolumeSnapshotContent", e))?
                else {
                    return Ok(Bind::Wait(format!(
                        "VolumeSnapshotContent {content} does not exist"
                    )));
                };
                // As external-provisioner: only a content that records its source's mode is
                // checked.
                let source_mode = c.data["spec"]["sourceVolumeMode"].as_str();
                if let Some(source_mode) = source_mode
                    && source_mode != volume_mode
                    && c.annotations().get(ALLOW_MODE_CHANGE).map(String::as_str) != Some("true")
                {
                    return Ok(Bind::Wait(format!(
                        "requested volume {ns}/{name} modifies the mode of the source volume ({source_mode} → {volume_mode}) but VolumeSnapshotContent {content} lacks the annotation {ALLOW_MODE_CHANGE}: \"true\""
                    )));
                }
                let Some(handle) = content_handle(&c) else {
                    return Ok(Bind::Wait(format!(
                        "VolumeSnapshotContent {content} has no snapshotHandle"
                    )));
                };
                let from = snapshot_file(&shared.root, &handle);
                sparse_copy(&from, &file, size)
                    .map_err(|e| format!("cannot copy snapshot file {}: {e}", from.display()))?;
                restore_size = c.data["status"]["restoreSize"].as_u64();
            }
            Some((group, kind, src)) if group.is_empty() && kind == "PersistentVolumeClaim" => {
                let key = wait_volume(shared, &ns, &src, Duration::ZERO)
                    .await
                    .map_err(|e| e.to_string())?;
                sparse_copy(&block_file(&shared.root, &key), &file, size)
                    .map_err(|e| format!("cannot clone {ns}/{src}: {e}"))?;
            }
            Some((group, kind, src)) => {
                return Ok(Bind::Wait(format!(
                    "data source {group}/{kind} {src} is not supported by the test driver"
                )));
            }
            None => {
                let f = File::create(&file)
                    .map_err(|e| format!("cannot create {}: {e}", file.display()))?;
                f.set_len(size)
                    .map_err(|e| format!("cannot size {}: {e}", file.display()))?;
            }
        }
        let reclaim = class
            .reclaim_policy
            .clone()
            .unwrap_or_else(|| "Delete".into());
        let capacity = requested.clone();
        let pv: PersistentVolume = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "annotations": {
                "pv.kubernetes.io/provisioned-by": shared.opts.driver,
                "volume.kubernetes.io/provisioner-deletion-secret-name": "",
                "volume.kubernetes.io/provisioner-deletion-secret-namespace": ""}},
            "spec": {
                "capacity": {"storage": capacity},
                "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                "persistentVolumeReclaimPolicy": reclaim,
                "storageClassName": class.name_any(),
                "volumeMode": volume_mode,
                "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                    "namespace": ns, "name": name, "uid": uid},
                "csi": {"driver": shared.opts.driver, "volumeHandle": key,
                    "fsType": if volume_mode == "Filesystem" { json!("ext4") } else { Value::Null },
                    "volumeAttributes": {"storage.kubernetes.io/csiProvisionerIdentity": FIELD_MANAGER}},
            },
        }))
        .map_err(|e| format!("cannot build the PersistentVolume: {e}"))?;
        match pvs.create(&post(), &pv).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(api_err("create the PersistentVolume", e)),
        }
    }
    pvs.patch_status(
        &pv_name,
        &pp(),
        &Patch::Merge(json!({"status": {"phase": "Bound"}})),
    )
    .await
    .map_err(|e| api_err("write the PersistentVolume status", e))?;
    let capacity = match restore_size {
        Some(r) if r > size => r.to_string(),
        _ => requested,
    };
    mark_bound(
        &claims,
        &name,
        &pv_name,
        Some(capacity),
        spec.access_modes.clone(),
        Some(&shared.opts.driver),
    )
    .await?;
    Ok(Bind::Done)
}

async fn mark_bound(
    claims: &Api<PersistentVolumeClaim>,
    name: &str,
    volume: &str,
    capacity: Option<String>,
    access_modes: Option<Vec<String>>,
    provisioner: Option<&str>,
) -> Result<(), String> {
    let mut annotations = json!({"pv.kubernetes.io/bind-completed": "yes"});
    if let Some(p) = provisioner {
        annotations["pv.kubernetes.io/bound-by-controller"] = json!("yes");
        annotations["volume.beta.kubernetes.io/storage-provisioner"] = json!(p);
        annotations["volume.kubernetes.io/storage-provisioner"] = json!(p);
    }
    claims
        .patch(
            name,
            &pp(),
            &Patch::Merge(json!({"metadata": {"annotations": annotations},
                "spec": {"volumeName": volume}})),
        )
        .await
        .map_err(|e| format!("failed to bind claim {name}: {e}"))?;
    let mut status = json!({"phase": "Bound",
        "accessModes": access_modes.unwrap_or_else(|| vec!["ReadWriteOnce".into()])});
    if let Some(c) = capacity {
        status["capacity"] = json!({"storage": c});
    }
    claims
        .patch_status(name, &pp(), &Patch::Merge(json!({"status": status})))
        .await
        .map_err(|e| format!("failed to write the status of claim {name}: {e}"))?;
    Ok(())
}

/// A deleted claim's volume: deleted with its file (`Delete`), or `Released` (`Retain`).
async fn reclaim(shared: &Shared, pvc: PersistentVolumeClaim) {
    let Some(volume) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()) else {
        return;
    };
    let pvs: Api<PersistentVolume> = Api::all(shared.client.clone());
    let Ok(Some(pv)) = pvs.get_opt(&volume).await else {
        return;
    };
    let spec = pv.spec.clone().unwrap_or_default();
    let ours = spec.claim_ref.as_ref().and_then(|r| r.uid.clone()) == pvc.uid();
    if !ours {
        return;
    }
    let provisioned = pv
        .annotations()
        .get("pv.kubernetes.io/provisioned-by")
        .map(String::as_str)
        == Some(shared.opts.driver.as_str());
    if spec.persistent_volume_reclaim_policy.as_deref() == Some("Delete") && provisioned {
        let key = pv_key(&pv);
        let _ = pvs.delete(&volume, &Default::default()).await;
        let _ = std::fs::remove_file(block_file(&shared.root, &key));
        let _ = std::fs::remove_dir_all(fs_dir(&shared.root, &key));
    } else {
        let _ = pvs
            .patch_status(
                &volume,
                &pp(),
                &Patch::Merge(json!({"status": {"phase": "Released"}})),
            )
            .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshotter

pub(crate) async fn watch_snapshots(shared: Arc<Shared>) {
    let api: Api<DynamicObject> = Api::all_with(shared.client.clone(), &snapshots_resource());
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        let event = tokio::select! {
            _ = shared.stop.cancelled() => return,
            e = events.next() => e,
        };
        match event {
            Some(Ok(watcher::Event::Apply(vs) | watcher::Event::InitApply(vs))) => {
                if vs.data["status"]["readyToUse"] == json!(true)
                    || vs.metadata.deletion_timestamp.is_some()
                {
                    continue;
                }
                let Some(uid) = vs.uid() else { continue };
                if !shared.take(&uid) {
                    continue;
                }
                let shared = shared.clone();
                tokio::spawn(async move {
                    snapshot_until_done(&shared, vs).await;
                    shared.release(&uid);
                });
            }
            Some(Ok(watcher::Event::Delete(vs))) => {
                let shared = shared.clone();
                tokio::spawn(async move { delete_content(&shared, vs).await });
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => tracing::warn!("kubelet: VolumeSnapshot watch error: {e}"),
            None => return,
        }
    }
}

async fn snapshot_until_done(shared: &Shared, vs: DynamicObject) {
    let ns = vs.namespace().unwrap_or_default();
    let name = vs.name_any();
    let snaps: Api<DynamicObject> =
        Api::namespaced_with(shared.client.clone(), &ns, &snapshots_resource());
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < shared.opts.wait_limit && !shared.stop.is_cancelled() {
        match snaps.get_opt(&name).await {
            Ok(Some(current)) if current.uid() == vs.uid() => {
                if current.metadata.deletion_timestamp.is_some()
                    || current.data["status"]["readyToUse"] == json!(true)
                {
                    return;
                }
                match take_snapshot(shared, &current).await {
                    Ok(None) => return,
                    Ok(Some(why)) | Err(why) => last = why,
                }
            }
            Ok(_) => return,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(RETRY).await;
    }
    if !shared.stop.is_cancelled() {
        // What the external-snapshotter reports: status.error on the VolumeSnapshot.
        let _ = snaps
            .patch_status(
                &name,
                &pp(),
                &Patch::Merge(json!({"status": {"readyToUse": false,
                    "error": {"message": last, "time": now()}}})),
            )
            .await;
    }
}

/// One attempt: `Ok(None)` when ready, `Ok(Some(why))` to wait.
async fn take_snapshot(shared: &Shared, vs: &DynamicObject) -> Result<Option<String>, String> {
    let ns = vs.namespace().unwrap_or_default();
    let name = vs.name_any();
    let uid = vs.uid().unwrap_or_default();
    let spec = &vs.data["spec"];
    if let Some(content) = spec["source"]["volumeSnapshotContentName"].as_str() {
        return pre_provisioned(shared, vs, content).await;
    }
    let Some(claim) = spec["source"]["persistentVolumeClaimName"].as_str() else {
        return Ok(Some(
            "spec.source names neither persistentVolumeClaimName nor volumeSnapshotContentName"
                .into(),
        ));
    };
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(shared.client.clone(), &ns);
    let Some(pvc) = claims
        .get_opt(claim)
        .await
        .map_err(|e| format!("failed to read PersistentVolumeClaim {ns}/{claim}: {e}"))?
    else {
        return Ok(Some(format!(
            "PersistentVolumeClaim {ns}/{claim} does not exist"
        )));
    };
    let Some(volume) = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|_| pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
    else {
        return Ok(Some(format!(
            "PersistentVolumeClaim {ns}/{claim} is not bound"
        )));
    };
    let pvs: Api<PersistentVolume> = Api::all(shared.client.clone());
    let Some(pv) = pvs
        .get_opt(&volume)
        .await
        .map_err(|e| format!("failed to read PersistentVolume {volume}: {e}"))?
    else {
        return Ok(Some(format!("PersistentVolume {volume} does not exist")));
    };
    let driver = pv
        .spec
        .as_ref()
        .and_then(|s| s.csi.as_ref())
        .map(|c| c.driver.clone())
        .unwrap_or_default();
    if driver != shared.opts.driver {
        return Ok(Some(format!(
            "PersistentVolume {volume} is not a volume of CSI driver {} (driver {driver:?})",
            shared.opts.driver
        )));
    }
    let classes: Api<DynamicObject> = Api::all_with(shared.client.clone(), &classes_resource());
    let class = match spec["volumeSnapshotClassName"].as_str() {
        Some(c) => classes
            .get_opt(c)
            .await
            .map_err(|e| format!("failed to read VolumeSnapshotClass {c}: {e}"))?,
        None => classes
            .list(&Default::default())
            .await
            .map_err(|e| format!("failed to list VolumeSnapshotClasses: {e}"))?
            .items
            .into_iter()
            .find(|c| {
                c.data["driver"] == json!(driver)
                    && c.annotations().get(DEFAULT_VSC).map(String::as_str) == Some("true")
            }),
    };
    let Some(class) = class else {
        return Ok(Some(format!(
            "no VolumeSnapshotClass {:?} (or default class for driver {driver})",
            spec["volumeSnapshotClassName"]
        )));
    };
    if class.data["driver"] != json!(driver) {
        return Ok(Some(format!(
            "VolumeSnapshotClass {} is for driver {}, the volume's driver is {driver}",
            class.name_any(),
            class.data["driver"]
        )));
    }
    let content = format!("snapcontent-{uid}");
    let handle = format!("snap-{uid}");
    let file = snapshot_file(&shared.root, &handle);
    let source = block_file(&shared.root, &pv_key(&pv));
    let contents: Api<DynamicObject> = Api::all_with(shared.client.clone(), &contents_resource());
    let existing = contents
        .get_opt(&content)
        .await
        .map_err(|e| format!("failed to read VolumeSnapshotContent {content}: {e}"))?;
    let size = if existing.is_some() && file.exists() {
        std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0)
    } else {
        sparse_copy(&source, &file, 0)
            .map_err(|e| format!("cannot copy {}: {e}", source.display()))?
    };
    let created = jiff::Timestamp::now();
    if existing.is_none() {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
            "metadata": {"name": content},
            "spec": {
                "deletionPolicy": class.data["deletionPolicy"].as_str().unwrap_or("Delete"),
                "driver": driver,
                "source": {"volumeHandle": pv_key(&pv)},
                "sourceVolumeMode": pv.spec.as_ref().and_then(|s| s.volume_mode.clone()).unwrap_or_else(|| "Filesystem".into()),
                "volumeSnapshotClassName": class.name_any(),
                "volumeSnapshotRef": {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                    "namespace": ns, "name": name, "uid": uid},
            },
        }))
        .map_err(|e| format!("cannot build the VolumeSnapshotContent: {e}"))?;
        match contents.create(&post(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(format!("failed to create VolumeSnapshotContent: {e}")),
        }
    }
    contents
        .patch_status(
            &content,
            &pp(),
            &Patch::Merge(json!({"status": {"readyToUse": true,
                "snapshotHandle": handle, "restoreSize": size,
                "creationTime": created.as_nanosecond()}})),
        )
        .await
        .map_err(|e| format!("failed to write VolumeSnapshotContent status: {e}"))?;
    mark_ready(shared, &ns, &name, &content, size, created).await
}

async fn mark_ready(
    shared: &Shared,
    ns: &str,
    name: &str,
    content: &str,
    size: u64,
    created: jiff::Timestamp,
) -> Result<Option<String>, String> {
    let snaps: Api<DynamicObject> =
        Api::namespaced_with(shared.client.clone(), ns, &snapshots_resource());
    let mut status: BTreeMap<&str, Value> = BTreeMap::new();
    status.insert("boundVolumeSnapshotContentName", json!(content));
    status.insert("readyToUse", json!(true));
    status.insert("restoreSize", json!(size.to_string()));
    status.insert(
        "creationTime",
        json!(created.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
    );
    status.insert("error", Value::Null);
    snaps
        .patch_status(name, &pp(), &Patch::Merge(json!({ "status": status })))
        .await
        .map_err(|e| format!("failed to write VolumeSnapshot status: {e}"))?;
    Ok(None)
}

/// A VolumeSnapshot bound to an existing content (a pre-provisioned snapshot): ready once the
/// content names this snapshot and a snapshot handle the driver has.
async fn pre_provisioned(
    shared: &Shared,
    vs: &DynamicObject,
    content: &str,
) -> Result<Option<String>, String> {
    let ns = vs.namespace().unwrap_or_default();
    let name = vs.name_any();
    let contents: Api<DynamicObject> = Api::all_with(shared.client.clone(), &contents_resource());
    let Some(c) = contents
        .get_opt(content)
        .await
        .map_err(|e| format!("failed to read VolumeSnapshotContent {content}: {e}"))?
    else {
        return Ok(Some(format!(
            "VolumeSnapshotContent {content} does not exist"
        )));
    };
    let r = &c.data["spec"]["volumeSnapshotRef"];
    if r["name"] != json!(name) || r["namespace"] != json!(ns) {
        return Ok(Some(format!(
            "VolumeSnapshotContent {content} is bound to {}/{}, not to {ns}/{name}",
            r["namespace"], r["name"]
        )));
    }
    if c.data["spec"]["driver"] != json!(shared.opts.driver) {
        return Ok(Some(format!(
            "VolumeSnapshotContent {content} is of driver {}, not {}",
            c.data["spec"]["driver"], shared.opts.driver
        )));
    }
    let Some(handle) = content_handle(&c) else {
        return Ok(Some(format!(
            "VolumeSnapshotContent {content} names no snapshotHandle"
        )));
    };
    let file = snapshot_file(&shared.root, &handle);
    let Ok(meta) = std::fs::metadata(&file) else {
        return Ok(Some(format!(
            "the driver has no snapshot with handle {handle} (VolumeSnapshotContent {content})"
        )));
    };
    let created = jiff::Timestamp::now();
    contents
        .patch_status(
            content,
            &pp(),
            &Patch::Merge(
                json!({"status": {"readyToUse": true, "snapshotHandle": handle,
                "restoreSize": meta.len(), "creationTime": created.as_nanosecond()}}),
            ),
        )
        .await
        .map_err(|e| format!("failed to write VolumeSnapshotContent status: {e}"))?;
    mark_ready(shared, &ns, &name, content, meta.len(), created).await
}

/// A deleted VolumeSnapshot's content (deletionPolicy `Delete`) and file go too.
async fn delete_content(shared: &Shared, vs: DynamicObject) {
    let Some(content) = vs.data["status"]["boundVolumeSnapshotContentName"].as_str() else {
        return;
    };
    let contents: Api<DynamicObject> = Api::all_with(shared.client.clone(), &contents_resource());
    let Ok(Some(c)) = contents.get_opt(content).await else {
        return;
    };
    if c.data["spec"]["deletionPolicy"] == json!("Delete") {
        let _ = contents.delete(content, &Default::default()).await;
        if let Some(handle) = content_handle(&c) {
            let _ = std::fs::remove_file(snapshot_file(&shared.root, &handle));
        }
    }
}
