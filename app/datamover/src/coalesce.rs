//! Retention: remove expired backups of a plan's volume while every remaining backup keeps
//! restoring bit-exact.
//!
//! Committed objects are never modified (RELIABILITY rule 2). For every remaining backup
//! whose chain still uses an image owned by an expired backup, the oldest surviving backup S
//! of that chain is flattened into a NEW base image `data.g<N>.qcow2` (verified cluster by
//! cluster against S's index), S gets manifest generation N, and every later backup gets a new
//! generation whose chain starts at that base. Only after all new manifests are committed are
//! the expired backups' manifests, superseded manifest generations and unreferenced images
//! deleted. A kill at any point leaves every backup resolving to a complete chain (old or new
//! generation); a rerun with the same expiry list finishes the job idempotently.
//!
//! Backing-file names: overlays keep the relative backing name they were written with, which
//! after coalescing points at an image that no longer exists (the successor's old overlay or
//! the expired base). Restore never follows backing names — it uses the manifest's chain — so
//! correctness is unaffected, but browsing a coalesced chain with plain `qemu-img` needs
//! `qemu-img rebase -u -b <new base>` on a local copy (the manifest names the right base).
//! Rewriting every later overlay instead would copy their data on every retention run.

use bytes::Bytes;

use crate::{
    crypt::EncryptionKey,
    error::{Error, Result},
    flatten::flatten_chain,
    manifest::{ChainMember, Manifest, ObjectRef, manifest_generation, manifest_key},
    object_io::ObjectSink,
    progress::Progress,
    repository::{VolumeBackupId, list_backups, load_manifest, open_chain, open_index},
    target::Target,
};

/// States reported while coalescing, in API.md's `coalesceInfo.state` terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CoalesceState {
    /// New base images and manifests are being written.
    CommitStarted,
    /// All new manifests are committed.
    CommitCompleted,
    /// Writing or committing failed (nothing was deleted).
    CommitFailed,
    /// Expired backups and superseded objects are being deleted.
    Qcow2MovementStarted,
    /// Deletion finished.
    Qcow2MovementCompleted,
    /// Deletion failed part way (every remaining backup is still restorable; rerun).
    Qcow2MovementFailed,
}

/// Result of a coalesce run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CoalesceReport {
    /// Backups whose current chain was rewritten.
    pub rewritten: Vec<String>,
    /// Backups that were flattened into a new base image.
    pub flattened: Vec<String>,
    /// Objects deleted.
    pub deleted_objects: Vec<String>,
    /// Objects the target refused to delete (S3 Object Lock, WORM share): recorded under
    /// [`pending_deletions_prefix`] and retried by every later coalesce of this volume.
    pub deferred_objects: Vec<String>,
}

/// Where deferred deletions of a plan's volume are recorded: one create-only JSON object per
/// coalesce run that deferred anything (`{"keys": [...]}`), so the record itself never needs
/// overwriting — on an object-locked target it could not be.
pub fn pending_deletions_prefix(plan: &str, volume: &str) -> String {
    format!("{plan}/.pending-deletions/{volume}")
}

/// Largest pending-deletions record read back.
const MAX_PENDING_RECORD_BYTES: u64 = 16 << 20;

#[derive(serde::Serialize, serde::Deserialize)]
struct PendingDeletions {
    keys: Vec<String>,
}

/// Deletes `key`, or records it as deferred when the target refuses (object lock).
fn delete_or_defer(target: &Target, key: &str, report: &mut CoalesceReport) -> Result<()> {
    match target.delete(key) {
        Ok(()) => {
            report.deleted_objects.push(key.to_string());
            Ok(())
        }
        Err(Error::ObjectLocked { .. }) => {
            if !report.deferred_objects.iter().any(|k| k == key) {
                report.deferred_objects.push(key.to_string());
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Retries the deletions earlier runs deferred. A recorded image or index is deleted only if
/// no committed backup references it now (a rerun may have written an object of that name
/// again); recorded manifests are expired or superseded generations, never current again.
/// Records are deleted once read and replaced by [`record_deferred`] at the end of the run.
/// Returns the records read and the backup directories they named (scanned again for
/// unreferenced objects once a deferred manifest is gone).
fn retry_pending(
    target: &Target,
    plan: &str,
    volume: &str,
    report: &mut CoalesceReport,
) -> Result<(Vec<String>, Vec<String>)> {
    let records = target.list(&pending_deletions_prefix(plan, volume))?;
    if records.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let referenced = referenced_objects(&list_backups(target, plan, volume)?);
    let mut keys: Vec<String> = Vec::new();
    for r in &records {
        let raw = target.read_all(r, MAX_PENDING_RECORD_BYTES)?;
        let rec: PendingDeletions =
            serde_json::from_slice(&raw).map_err(|e| Error::InvalidManifest {
                name: r.clone(),
                reason: format!(
                    "pending-deletions record is not {{\"keys\": [...]}} ({e}); remove it and rerun"
                ),
            })?;
        let dir = format!("{plan}/");
        for k in rec.keys {
            // Only objects of this plan's volume, never a record or a path outside the plan.
            let segs: Vec<&str> = k.split('/').collect();
            let inside = k.starts_with(&dir)
                && segs.len() == 4
                && segs[2] == volume
                && segs[1] != ".pending-deletions"
                && segs
                    .iter()
                    .all(|s| !s.is_empty() && *s != "." && *s != "..");
            if !inside {
                return Err(Error::InvalidManifest {
                    name: r.clone(),
                    reason: format!(
                        "pending-deletions record names {k:?}, which is not an object of {plan}/*/{volume}; remove the record"
                    ),
                });
            }
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    let mut dirs: Vec<String> = Vec::new();
    for k in &keys {
        if let Some((dir, _)) = k.rsplit_once('/')
            && !dirs.iter().any(|d| d == dir)
        {
            dirs.push(dir.to_string());
        }
        if referenced.contains(k) {
            continue;
        }
        delete_or_defer(target, k, report)?;
    }
    Ok((records, dirs))
}

/// Writes one record of everything deferred in this run, then drops the records read at the
/// start (those that are themselves locked stay and are read again next time: harmless).
fn record_deferred(
    target: &Target,
    plan: &str,
    volume: &str,
    old_records: &[String],
    report: &mut CoalesceReport,
) -> Result<()> {
    if !report.deferred_objects.is_empty() {
        let rec = PendingDeletions {
            keys: report.deferred_objects.clone(),
        };
        let body = serde_json::to_vec(&rec).map_err(|e| Error::Usage(e.to_string()))?;
        let now = jiff::Timestamp::now();
        let key = format!(
            "{}/{}-{:09}.json",
            pending_deletions_prefix(plan, volume),
            now.as_second(),
            now.subsec_nanosecond()
        );
        target.put_create_only(&key, Bytes::from(body))?;
    }
    for r in old_records {
        match target.delete(r) {
            Ok(()) | Err(Error::ObjectLocked { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn referenced_objects(backups: &[Manifest]) -> Vec<String> {
    let mut referenced: Vec<String> = Vec::new();
    for m in backups {
        referenced.extend(m.chain.iter().map(|c| c.image.name.clone()));
        referenced.push(m.index.name.clone());
    }
    referenced
}

/// Removes the `expire`d backups of `plan`/`volume`. `on_state` receives each state change.
pub fn coalesce(
    target: &Target,
    plan: &str,
    volume: &str,
    expire: &[String],
    progress: &dyn Progress,
    on_state: &dyn Fn(CoalesceState),
) -> Result<CoalesceReport> {
    coalesce_with_key(target, plan, volume, expire, progress, on_state, None)
}

/// [`coalesce`] of a volume whose backups may be encrypted: chains are decrypted with `key`
/// and flattened bases re-encrypted with it (same key, new master key per image).
pub fn coalesce_with_key(
    target: &Target,
    plan: &str,
    volume: &str,
    expire: &[String],
    progress: &dyn Progress,
    on_state: &dyn Fn(CoalesceState),
    key: Option<&EncryptionKey>,
) -> Result<CoalesceReport> {
    let mut report = CoalesceReport::default();
    on_state(CoalesceState::CommitStarted);
    match commit_phase(target, plan, volume, expire, progress, &mut report, key) {
        Ok(()) => on_state(CoalesceState::CommitCompleted),
        Err(e) => {
            on_state(CoalesceState::CommitFailed);
            return Err(e);
        }
    }
    on_state(CoalesceState::Qcow2MovementStarted);
    match delete_phase(target, plan, volume, expire, &mut report) {
        Ok(()) => on_state(CoalesceState::Qcow2MovementCompleted),
        Err(e) => {
            on_state(CoalesceState::Qcow2MovementFailed);
            return Err(e);
        }
    }
    Ok(report)
}

fn commit_phase(
    target: &Target,
    plan: &str,
    volume: &str,
    expire: &[String],
    progress: &dyn Progress,
    report: &mut CoalesceReport,
    key: Option<&EncryptionKey>,
) -> Result<()> {
    let backups = list_backups(target, plan, volume)?;
    let expired = |b: &str| expire.iter().any(|e| e == b);
    for b in &backups {
        if expired(&b.backup_id) {
            continue;
        }
        // Reload: an earlier iteration may have rewritten it (as some chain's survivor).
        let id = VolumeBackupId::new(plan, &b.backup_id, volume)?;
        let Some(current) = load_manifest(target, &id)? else {
            continue;
        };
        if !current.chain.iter().any(|m| expired(&m.backup_id)) {
            continue;
        }
        let Some(survivor_pos) = current.chain.iter().position(|m| !expired(&m.backup_id)) else {
            return Err(Error::Usage(format!(
                "backup {} has no surviving image in its chain",
                current.backup_id
            )));
        };
        let survivor = current.chain[survivor_pos].backup_id.clone();
        let base = ensure_flat_base(target, plan, volume, &survivor, progress, report, key)?;
        if survivor == current.backup_id {
            continue;
        }
        let mut chain = vec![base];
        chain.extend(current.chain[survivor_pos + 1..].iter().cloned());
        commit_generation(target, &current, chain)?;
        report.rewritten.push(current.backup_id.clone());
    }
    Ok(())
}

/// Makes sure `backup`'s current chain is one image it owns; flattens it if not.
fn ensure_flat_base(
    target: &Target,
    plan: &str,
    volume: &str,
    backup: &str,
    progress: &dyn Progress,
    report: &mut CoalesceReport,
    enc_key: Option<&EncryptionKey>,
) -> Result<ChainMember> {
    let id = VolumeBackupId::new(plan, backup, volume)?;
    let m = load_manifest(target, &id)?
        .ok_or_else(|| Error::Usage(format!("surviving backup {backup} is not committed")))?;
    if let [only] = m.chain.as_slice()
        && only.backup_id == backup
    {
        return Ok(only.clone());
    }
    let generation = m.generation + 1;
    let key = format!("{plan}/{backup}/{volume}/data.g{generation}.qcow2");
    let chain = open_chain(target, &m, enc_key)?;
    let index = open_index(target, &m, &chain)?;
    let slot: std::sync::Arc<std::sync::Mutex<Option<(String, String)>>> = Default::default();
    let sink = HeadBodyDigest {
        inner: target.create_sink(&key, chain.cluster_size() as usize)?,
        body: blake3::Hasher::new(),
        slot: slot.clone(),
    };
    let summary = flatten_chain(&chain, Some(index), backup, Box::new(sink), progress)?;
    let (body, head) = slot
        .lock()
        .ok()
        .and_then(|g| g.clone())
        .ok_or_else(|| Error::Usage("internal error: digest missing".into()))?;
    let member = ChainMember {
        backup_id: backup.to_string(),
        image: ObjectRef {
            name: key,
            size: summary.image_len,
            blake3: body,
            head_blake3: Some(head),
        },
    };
    commit_generation(target, &m, vec![member.clone()])?;
    report.flattened.push(backup.to_string());
    Ok(member)
}

fn commit_generation(target: &Target, m: &Manifest, chain: Vec<ChainMember>) -> Result<()> {
    let mut next = m.clone();
    next.generation = m.generation + 1;
    next.chain = chain;
    next.created_at = jiff::Timestamp::now().to_string();
    next.validate()?;
    let key = manifest_key(&m.backup_plan, &m.backup_id, &m.volume_id, next.generation);
    match target.put_create_only(&key, Bytes::from(next.to_bytes()?)) {
        Ok(()) => Ok(()),
        // A concurrent or earlier run committed this generation first: it is the truth, if
        // it really is a readable manifest of that generation.
        Err(Error::AlreadyExists { .. }) => {
            let id = VolumeBackupId::new(&m.backup_plan, &m.backup_id, &m.volume_id)?;
            match load_manifest(target, &id)? {
                Some(cur) if cur.generation >= next.generation => Ok(()),
                _ => Err(Error::InvalidManifest {
                    name: key,
                    reason: "exists but is not a readable manifest; remove it and rerun".into(),
                }),
            }
        }
        Err(e) => Err(e),
    }
}

fn delete_phase(
    target: &Target,
    plan: &str,
    volume: &str,
    expire: &[String],
    report: &mut CoalesceReport,
) -> Result<()> {
    // 0. Never delete anything while a remaining backup still needs an expired one.
    for m in list_backups(target, plan, volume)? {
        if !expire.contains(&m.backup_id)
            && let Some(c) = m.chain.iter().find(|c| expire.contains(&c.backup_id))
        {
            return Err(Error::Usage(format!(
                "backup {} still uses {} of expired backup {}; rerun the coalesce",
                m.backup_id, c.image.name, c.backup_id
            )));
        }
    }
    let (old_records, pending_dirs) = retry_pending(target, plan, volume, report)?;
    // 1. Expired backups' manifests, oldest generation first, so whatever is still visible
    //    after a crash references objects that still exist.
    for b in expire {
        crate::manifest::validate_segment("backup id", b)?;
        let prefix = format!("{plan}/{b}/{volume}");
        let mut manifests: Vec<(u32, String)> = target
            .list(&prefix)?
            .into_iter()
            .filter_map(|k| {
                let f = k.rsplit('/').next()?.to_string();
                manifest_generation(&f).map(|g| (g, k))
            })
            .collect();
        manifests.sort();
        for (_, k) in manifests {
            delete_or_defer(target, &k, report)?;
        }
    }
    // 2. Superseded manifest generations of remaining backups.
    let remaining = list_backups(target, plan, volume)?;
    for m in &remaining {
        for g in 1..m.generation {
            let k = manifest_key(plan, &m.backup_id, volume, g);
            let dir = format!("{plan}/{}/{volume}", m.backup_id);
            if target.list(&dir)?.contains(&k) {
                delete_or_defer(target, &k, report)?;
            }
        }
    }
    // 3. Images and indexes nothing references: in expired backups' directories, and
    //    superseded images in remaining backups' directories. Directories of backups with no
    //    manifest that are not being expired (in-flight backups) are never touched.
    // `remaining` still lists an expired backup whose manifest deletion was deferred: its
    // chain stays referenced, so nothing it needs is deleted while it is visible.
    let referenced = referenced_objects(&remaining);
    let mut dirs: Vec<String> = expire
        .iter()
        .map(|b| format!("{plan}/{b}/{volume}"))
        .collect();
    dirs.extend(
        remaining
            .iter()
            .map(|m| format!("{plan}/{}/{volume}", m.backup_id)),
    );
    dirs.extend(pending_dirs);
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        for k in target.list(&dir)? {
            let file = k.rsplit('/').next().unwrap_or("");
            let is_data = file == "index"
                || (file.starts_with("data") && file.ends_with(".qcow2"))
                || file.ends_with(".partial");
            if is_data && !referenced.contains(&k) {
                delete_or_defer(target, &k, report)?;
            }
        }
    }
    record_deferred(target, plan, volume, &old_records, report)
}

/// Sink wrapper recording (body, head) BLAKE3 digests.
struct HeadBodyDigest {
    inner: Box<dyn ObjectSink>,
    body: blake3::Hasher,
    slot: std::sync::Arc<std::sync::Mutex<Option<(String, String)>>>,
}

impl ObjectSink for HeadBodyDigest {
    fn append(&mut self, data: Bytes) -> Result<()> {
        self.body.update(&data);
        self.inner.append(data)
    }
    fn finish(self: Box<Self>, head: Bytes) -> Result<u64> {
        let h = blake3::hash(&head).to_hex().to_string();
        let b = self.body.finalize().to_hex().to_string();
        let n = self.inner.finish(head)?;
        if let Ok(mut s) = self.slot.lock() {
            *s = Some((b, h));
        }
        Ok(n)
    }
    fn abort(self: Box<Self>) {
        self.inner.abort();
    }
}
