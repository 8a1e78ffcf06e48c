//! Volume backups on a target: backup (data first, manifest last, create-only), restore,
//! verify, info — the operations behind the `tvk-datamover` subcommands.

use std::{path::Path, sync::Arc};

use bytes::Bytes;

use crate::{
    backup::{BackupJob, ParentIndex, run_backup},
    crypt::EncryptionKey,
    error::{Error, Result},
    index::{ClusterState, IndexReader},
    manifest::{
        ChainMember, ENCRYPTION_FORMAT, FORMAT_VERSION, MAX_MANIFEST_BYTES, Manifest, ObjectRef,
        manifest_generation, manifest_key, relative_backing_name, validate_segment, volume_dir,
    },
    object_io::{ObjectSink, RandomRead},
    progress::Progress,
    qcow2::{DEFAULT_CLUSTER_BITS, reader::Qcow2Image},
    restore::{Chain, Destination, RestoreJob, RestoreSummary, run_restore},
    target::Target,
    volume::ByteRange,
};

/// Identifies one volume backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeBackupId {
    /// Backup plan.
    pub plan: String,
    /// Backup.
    pub backup: String,
    /// Volume.
    pub volume: String,
}

impl VolumeBackupId {
    /// Validated ids.
    pub fn new(plan: &str, backup: &str, volume: &str) -> Result<Self> {
        validate_segment("backup plan", plan)?;
        validate_segment("backup id", backup)?;
        validate_segment("volume id", volume)?;
        Ok(Self {
            plan: plan.into(),
            backup: backup.into(),
            volume: volume.into(),
        })
    }

    fn dir(&self) -> String {
        volume_dir(&self.plan, &self.backup, &self.volume)
    }

    /// Key of the image written at backup time.
    pub fn image_key(&self) -> String {
        format!("{}/data.qcow2", self.dir())
    }

    /// Key of the index.
    pub fn index_key(&self) -> String {
        format!("{}/index", self.dir())
    }
}

/// Hashes what passes through to a sink: the head and the body separately (the head is
/// supplied last, so one digest in object order cannot be computed while streaming).
struct DigestingSink {
    inner: Box<dyn ObjectSink>,
    body: blake3::Hasher,
    result: DigestSlot,
}

impl ObjectSink for DigestingSink {
    fn append(&mut self, data: Bytes) -> Result<()> {
        self.body.update(&data);
        self.inner.append(data)
    }
    fn finish(self: Box<Self>, head: Bytes) -> Result<u64> {
        let head_digest = (!head.is_empty()).then(|| blake3::hash(&head).to_hex().to_string());
        let body = self.body.finalize().to_hex().to_string();
        let n = self.inner.finish(head)?;
        if let Ok(mut r) = self.result.lock() {
            *r = Some((body, head_digest));
        }
        Ok(n)
    }
    fn abort(self: Box<Self>) {
        self.inner.abort();
    }
}

type DigestSlot = Arc<std::sync::Mutex<Option<(String, Option<String>)>>>;

fn digesting(inner: Box<dyn ObjectSink>) -> (Box<dyn ObjectSink>, DigestSlot) {
    let slot: DigestSlot = Arc::default();
    (
        Box::new(DigestingSink {
            inner,
            body: blake3::Hasher::new(),
            result: slot.clone(),
        }),
        slot,
    )
}

/// The current (highest-generation) manifest of a volume backup, or `None` if uncommitted.
pub fn load_manifest(target: &Target, id: &VolumeBackupId) -> Result<Option<Manifest>> {
    let keys = target.list(&id.dir())?;
    let mut best: Option<(u32, String)> = None;
    for k in keys {
        let Some(file) = k.rsplit('/').next() else {
            continue;
        };
        if k != format!("{}/{file}", id.dir()) {
            continue;
        }
        if let Some(g) = manifest_generation(file)
            && best.as_ref().is_none_or(|(bg, _)| g > *bg)
        {
            best = Some((g, k.clone()));
        }
    }
    let Some((generation, key)) = best else {
        return Ok(None);
    };
    let bytes = target.read_all(&key, MAX_MANIFEST_BYTES)?;
    let m = Manifest::parse(&key, &bytes, Some((&id.plan, &id.backup, &id.volume)))?;
    if m.generation != generation {
        return Err(Error::InvalidManifest {
            name: key,
            reason: format!(
                "records generation {} in the file of generation {generation}",
                m.generation
            ),
        });
    }
    Ok(Some(m))
}

/// Options of [`backup_volume`].
pub struct VolumeBackupRequest<'a> {
    /// Which backup.
    pub id: VolumeBackupId,
    /// Parent backup id (same plan and volume) for an incremental.
    pub parent: Option<String>,
    /// Source volume.
    pub source: &'a Path,
    /// Changed-block list for an incremental.
    pub changed_blocks: Option<Vec<ByteRange>>,
    /// Progress.
    pub progress: &'a dyn Progress,
}

/// Outcome of a backup.
#[derive(Debug, Clone)]
pub struct VolumeBackupOutcome {
    /// The committed manifest.
    pub manifest: Manifest,
    /// True when the backup had already been committed by an earlier run (nothing written).
    pub already_committed: bool,
    /// Bytes read from the source.
    pub bytes_read: u64,
}

/// Backs up a volume: image and index first, then the manifest, create-only. A rerun after a
/// crash rewrites the uncommitted objects and commits once; a rerun after the commit returns
/// the committed manifest.
pub fn backup_volume(target: &Target, req: VolumeBackupRequest<'_>) -> Result<VolumeBackupOutcome> {
    backup_volume_with_key(target, req, None)
}

/// [`backup_volume`], encrypted with `key` when given ([`crate::crypt`]): LUKS images, keyed
/// digest index, `encrypted` in the manifest. An incremental keeps its parent's choice: a
/// parent of the other kind is refused (take a full backup).
pub fn backup_volume_with_key(
    target: &Target,
    req: VolumeBackupRequest<'_>,
    key: Option<&EncryptionKey>,
) -> Result<VolumeBackupOutcome> {
    let id = &req.id;
    if let Some(m) = load_manifest(target, id)? {
        if m.encrypted != key.is_some() {
            return Err(Error::Usage(format!(
                "backup {} of volume {} is already committed {} encryption; rerun it the same way",
                id.backup,
                id.volume,
                if m.encrypted { "with" } else { "without" }
            )));
        }
        return Ok(VolumeBackupOutcome {
            manifest: m,
            already_committed: true,
            bytes_read: 0,
        });
    }
    let image_key = id.image_key();
    let index_key = id.index_key();
    let (parent, mut chain) = match &req.parent {
        None => (None, Vec::new()),
        Some(p) => {
            let pid = VolumeBackupId::new(&id.plan, p, &id.volume)?;
            let pm = load_manifest(target, &pid)?.ok_or_else(|| {
                Error::Usage(format!(
                    "parent backup {p} of volume {} is not committed on the target; take a full backup",
                    id.volume
                ))
            })?;
            if pm.encrypted != key.is_some() {
                return Err(Error::Usage(format!(
                    "parent backup {p} of volume {} is {}encrypted and this backup is {}: an incremental cannot change encryption; take a full backup",
                    id.volume,
                    if pm.encrypted { "" } else { "not " },
                    if key.is_some() {
                        "encrypted"
                    } else {
                        "not (no encryption key given)"
                    }
                )));
            }
            let top = pm
                .chain
                .last()
                .ok_or_else(|| Error::Usage("parent manifest has an empty chain".into()))?;
            // The overlay's backing chain must open with the same key: a changed key would
            // commit a backup that no single key restores.
            if let Some(k) = key {
                let obj = open_member(target, &pm.backup_id, &top.image)?;
                Qcow2Image::open_with_key(obj, Some(k)).map_err(|e| match e {
                    Error::Usage(_) => Error::Usage(format!(
                        "the encryption key does not open parent backup {p} of volume {} (the plan's key changed?): an incremental must use its chain's key; take a full backup",
                        id.volume
                    )),
                    e => e,
                })?;
            }
            let backing_name = relative_backing_name(&image_key, &top.image.name)?;
            let reader = target.open_stream(&pm.index.name)?;
            (
                Some(ParentIndex {
                    name: pm.index.name.clone(),
                    reader,
                    backing_name,
                }),
                pm.chain.clone(),
            )
        }
    };
    let cluster_bits = DEFAULT_CLUSTER_BITS;
    let (image_sink, image_digest) = digesting(target.create_sink(&image_key, 1 << cluster_bits)?);
    let index_sink = target.create_sink(&index_key, 0)?;
    let summary = run_backup(BackupJob {
        source: req.source,
        parent,
        changed_blocks: req.changed_blocks,
        image_sink,
        index_sink,
        cluster_bits,
        progress: req.progress,
        encryption: key.cloned(),
    })?;
    let (body, head) = image_digest
        .lock()
        .ok()
        .and_then(|g| g.clone())
        .ok_or_else(|| Error::Usage("internal error: image digest missing".into()))?;
    chain.push(ChainMember {
        backup_id: id.backup.clone(),
        image: ObjectRef {
            name: image_key,
            size: summary.image.image_len,
            blake3: body,
            head_blake3: head,
        },
    });
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        generation: 1,
        backup_plan: id.plan.clone(),
        backup_id: id.backup.clone(),
        volume_id: id.volume.clone(),
        parent_backup: req.parent.clone(),
        chain,
        virtual_size: summary.virtual_size,
        cluster_size: 1 << cluster_bits,
        index: ObjectRef {
            name: index_key,
            size: summary.index.len,
            blake3: summary.index.blake3.clone(),
            head_blake3: None,
        },
        created_at: jiff::Timestamp::now().to_string(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        encrypted: key.is_some(),
        encryption_format: key.map(|_| ENCRYPTION_FORMAT.to_string()),
    };
    manifest.validate()?;
    target.put_create_only(
        &manifest_key(&id.plan, &id.backup, &id.volume, 1),
        Bytes::from(manifest.to_bytes()?),
    )?;
    Ok(VolumeBackupOutcome {
        manifest,
        already_committed: false,
        bytes_read: summary.bytes_read,
    })
}

/// Opens the chain a manifest names (sizes checked against the manifest; a missing object
/// is reported as such with the backup named). An encrypted backup needs `key`.
pub fn open_chain(target: &Target, m: &Manifest, key: Option<&EncryptionKey>) -> Result<Chain> {
    if m.encrypted && key.is_none() {
        return Err(Error::Usage(format!(
            "backup {} of volume {} is encrypted: give the key of the backup plan's encryption Secret (--encryption-key-file; a Restore names it in spec.encryption.encryptionSecret)",
            m.backup_id, m.volume_id
        )));
    }
    let mut layers = Vec::with_capacity(m.chain.len());
    for member in &m.chain {
        let obj = open_member(target, &m.backup_id, &member.image)?;
        let image = Qcow2Image::open_with_key(obj, key)?;
        if image.is_encrypted() != m.encrypted {
            return Err(Error::InvalidManifest {
                name: manifest_key(&m.backup_plan, &m.backup_id, &m.volume_id, m.generation),
                reason: format!(
                    "image {} is {}encrypted but the manifest says the opposite",
                    member.image.name,
                    if image.is_encrypted() { "" } else { "not " }
                ),
            });
        }
        layers.push(image);
    }
    let chain = Chain::new(layers)?;
    if chain.cluster_size() != m.cluster_size
        || chain.virtual_size() != m.virtual_size.next_multiple_of(512)
    {
        return Err(Error::InvalidManifest {
            name: manifest_key(&m.backup_plan, &m.backup_id, &m.volume_id, m.generation),
            reason: "chain geometry does not match the manifest".into(),
        });
    }
    Ok(chain)
}

/// The backup's index, its presence and size checked before it is streamed, and the kind of
/// its digests checked against the chain (keyed for an encrypted chain).
pub fn open_index(
    target: &Target,
    m: &Manifest,
    chain: &Chain,
) -> Result<IndexReader<Box<dyn std::io::Read + Send>>> {
    open_member(target, &m.backup_id, &m.index)?;
    let index = IndexReader::new(&m.index.name, target.open_stream(&m.index.name)?)?;
    index
        .header()
        .check_digest_kind(&m.index.name, chain.is_encrypted())?;
    Ok(index)
}

fn open_member(target: &Target, backup: &str, r: &ObjectRef) -> Result<Arc<dyn RandomRead>> {
    let obj = target.open_read(&r.name).map_err(|e| match e {
        Error::MissingObject { object, .. } => Error::MissingObject {
            backup: backup.to_string(),
            object,
        },
        e => e,
    })?;
    if obj.len() != r.size {
        return Err(Error::DigestMismatch {
            backup: backup.to_string(),
            image: r.name.clone(),
            offset: obj.len().min(r.size),
            detail: format!(
                "object is {} bytes, the manifest records {}",
                obj.len(),
                r.size
            ),
        });
    }
    Ok(obj)
}

/// Restores a committed volume backup into `dest` (file or block device), verifying every
/// cluster against the backup's index.
pub fn restore_volume(
    target: &Target,
    id: &VolumeBackupId,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<RestoreSummary> {
    restore_volume_to_with_key(target, id, Destination::open(dest)?, progress, None)
}

/// [`restore_volume`] into an already opened destination (e.g.
/// [`Destination::open_in_place`]).
pub fn restore_volume_to(
    target: &Target,
    id: &VolumeBackupId,
    out: Destination,
    progress: &dyn Progress,
) -> Result<RestoreSummary> {
    restore_volume_to_with_key(target, id, out, progress, None)
}

/// [`restore_volume_to`] of a backup that may be encrypted (then `key` is needed).
pub fn restore_volume_to_with_key(
    target: &Target,
    id: &VolumeBackupId,
    out: Destination,
    progress: &dyn Progress,
    key: Option<&EncryptionKey>,
) -> Result<RestoreSummary> {
    let m = load_manifest(target, id)?.ok_or_else(|| {
        Error::Usage(format!(
            "backup {} of volume {} in plan {} is not committed on the target",
            id.backup, id.volume, id.plan
        ))
    })?;
    let chain = open_chain(target, &m, key)?;
    let index = open_index(target, &m, &chain)?;
    run_restore(
        RestoreJob {
            chain: &chain,
            index: Some(index),
            backup_id: &m.backup_id,
            progress,
            durable: true,
        },
        &out,
    )
}

/// What [`verify_volume`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// Backup id.
    pub backup_id: String,
    /// Chain length.
    pub chain_length: usize,
    /// Data clusters the index records.
    pub data_clusters: u64,
    /// Data clusters read and checked.
    pub clusters_checked: u64,
    /// Objects whose whole-object digest was checked.
    pub objects_checked: u64,
}

/// Verifies a committed backup: manifest, every chain member's header and tables, index
/// checksum and digest, that the chain maps data exactly where the index records data; with
/// `read_data_percent` > 0, reads that share of data clusters (evenly spread; 100 = all, and
/// then every object's BLAKE3 too) and checks their digests.
pub fn verify_volume(
    target: &Target,
    id: &VolumeBackupId,
    read_data_percent: u8,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    verify_volume_with_key(target, id, read_data_percent, progress, None)
}

/// [`verify_volume`] of a backup that may be encrypted (then `key` is needed).
pub fn verify_volume_with_key(
    target: &Target,
    id: &VolumeBackupId,
    read_data_percent: u8,
    progress: &dyn Progress,
    key: Option<&EncryptionKey>,
) -> Result<VerifyReport> {
    let m = load_manifest(target, id)?.ok_or_else(|| {
        Error::Usage(format!(
            "backup {} is not committed on the target",
            id.backup
        ))
    })?;
    let chain = open_chain(target, &m, key)?;
    let mut index = open_index(target, &m, &chain)?;
    let cs = chain.cluster_size();
    let size = m.virtual_size;
    let mut data_clusters = 0u64;
    let mut checked = 0u64;
    let mismatch = |offset: u64, image: &str, detail: String| Error::DigestMismatch {
        backup: m.backup_id.clone(),
        image: image.to_string(),
        offset,
        detail,
    };
    let pct = u64::from(read_data_percent.min(100));
    for k in 0..chain.ranges() {
        let resolved = chain.resolve_range(k)?;
        let first = k * chain.range_clusters();
        for (i, r) in resolved.iter().enumerate() {
            let g = first + i as u64;
            let state = index
                .next_cluster()?
                .ok_or_else(|| mismatch(g * cs, &m.index.name, "index ends early".into()))?;
            match (state, *r) {
                (ClusterState::Data(h), crate::restore::Resolved::Data { layer, host, valid }) => {
                    data_clusters += 1;
                    // Evenly spread sample: cluster n is read when n*pct crosses a multiple of 100.
                    let n = data_clusters;
                    let sample =
                        pct >= 100 || (pct > 0 && (n * pct) / 100 != ((n - 1) * pct) / 100);
                    if sample {
                        let img = &chain.layers()[layer];
                        let mut buf = vec![0u8; cs as usize];
                        img.read_host(host, &mut buf)?;
                        if valid < cs {
                            buf[valid as usize..].fill(0);
                        }
                        if chain.digest(&buf) != h {
                            return Err(mismatch(
                                g * cs,
                                img.name(),
                                format!(
                                    "cluster at host offset {host:#x} does not match its recorded digest"
                                ),
                            ));
                        }
                        checked += 1;
                    }
                }
                (ClusterState::Data(_), crate::restore::Resolved::Zero) => {
                    return Err(mismatch(
                        g * cs,
                        chain.layers().last().map_or("", |l| l.name()),
                        "the index records data but the chain maps none".into(),
                    ));
                }
                _ => {}
            }
        }
        progress.update(((first + resolved.len() as u64) * cs).min(size), size);
    }
    let digest = index.finish()?;
    if digest != m.index.blake3 {
        return Err(mismatch(
            0,
            &m.index.name,
            "index BLAKE3 differs from the manifest".into(),
        ));
    }
    let mut objects = 1u64;
    if pct >= 100 {
        for (member, layer) in m.chain.iter().zip(chain.layers()) {
            let (head, body) = object_digests(layer.source().as_ref(), cs)?;
            if Some(head) != member.image.head_blake3 || body != member.image.blake3 {
                return Err(Error::DigestMismatch {
                    backup: m.backup_id.clone(),
                    image: member.image.name.clone(),
                    offset: 0,
                    detail: "object BLAKE3 differs from the manifest".into(),
                });
            }
            objects += 1;
        }
    }
    Ok(VerifyReport {
        backup_id: m.backup_id.clone(),
        chain_length: m.chain.len(),
        data_clusters,
        clusters_checked: checked,
        objects_checked: objects,
    })
}

/// (head, body) BLAKE3 of an image object, streamed.
fn object_digests(obj: &dyn RandomRead, cs: u64) -> Result<(String, String)> {
    let mut head = vec![0u8; cs.min(obj.len()) as usize];
    obj.read_exact_at(0, &mut head)?;
    let mut h = blake3::Hasher::new();
    let mut off = cs;
    let mut buf = vec![0u8; 8 << 20];
    while off < obj.len() {
        let n = (obj.len() - off).min(buf.len() as u64) as usize;
        obj.read_exact_at(off, &mut buf[..n])?;
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok((
        blake3::hash(&head).to_hex().to_string(),
        h.finalize().to_hex().to_string(),
    ))
}

/// Committed backups of a plan's volume: (backup id, current manifest), oldest chain first
/// (sorted by creation of generation 1, i.e. parent before child).
pub fn list_backups(target: &Target, plan: &str, volume: &str) -> Result<Vec<Manifest>> {
    validate_segment("backup plan", plan)?;
    validate_segment("volume id", volume)?;
    let keys = target.list(plan)?;
    let mut backups: Vec<String> = keys
        .iter()
        .filter_map(|k| {
            let s: Vec<&str> = k.split('/').collect();
            (s.len() == 4 && s[2] == volume && manifest_generation(s[3]).is_some())
                .then(|| s[1].to_string())
        })
        .collect();
    backups.sort();
    backups.dedup();
    let mut out = Vec::new();
    for b in backups {
        let id = VolumeBackupId::new(plan, &b, volume)?;
        if let Some(m) = load_manifest(target, &id)? {
            out.push(m);
        }
    }
    // Parents before children (a backup's parent is always older).
    let mut ordered: Vec<Manifest> = Vec::with_capacity(out.len());
    while !out.is_empty() {
        let pos = out
            .iter()
            .position(|m| {
                m.parent_backup
                    .as_ref()
                    .is_none_or(|p| !out.iter().any(|o| &o.backup_id == p))
            })
            .unwrap_or(0);
        ordered.push(out.remove(pos));
    }
    Ok(ordered)
}
