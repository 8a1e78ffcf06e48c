//! The metadata layout on a target, under `<plan uid>/<backup uid>/_metadata/` (see README.md):
//!
//! ```text
//! objects/<namespace|_cluster>/<group|core>/<version>/<Kind>.<part>.jsonl.gz   cleaned objects
//! helm/<namespace>/<release>.jsonl.gz       the release's Helm storage objects (all revisions)
//! snapshot.json                             status.snapshot as computed
//! index.json                                written last by `snapshot`: every document with its
//!                                           count, size and BLAKE3, PVCs, warnings
//! commit.json                               written last of all by `commit`
//! ```
//!
//! Documents are gzip'd JSON Lines, one object per line, split into parts of at most
//! [`PART_BYTES`] compressed bytes so memory stays bounded whatever the namespace holds. Every
//! object is written create-only; nothing is committed until `index.json` (metadata) and then
//! `commit.json` (the backup) exist. `_cluster` and `core` cannot clash with a namespace or an
//! API group (namespaces are DNS labels, groups contain a dot or are empty).

use std::io::Write;

use bytes::Bytes;
use flate2::{Compression, write::GzEncoder};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tvk_datamover::target::Target;

use crate::{
    error::{Error, Result},
    object::Gvk,
};

/// Directory of the metadata inside a backup's location.
pub const METADATA_DIR: &str = "_metadata";
/// Version of this layout, recorded in the index and the commit object.
pub const FORMAT_VERSION: u32 = 1;
/// Largest compressed part of one document.
pub const PART_BYTES: usize = 32 << 20;
/// Largest index, snapshot or commit object read back.
pub const MAX_SMALL_OBJECT: u64 = 64 << 20;
/// Directory name of cluster-scoped objects.
pub const CLUSTER_DIR: &str = "_cluster";

/// Checks that a name is one safe path segment (no separator, no `.`/`..`, printable).
pub fn segment<'a>(what: &str, s: &'a str) -> Result<&'a str> {
    let ok = !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if ok {
        Ok(s)
    } else {
        Err(Error::Layout {
            key: s.to_owned(),
            reason: format!("{what} {s:?} cannot be used as a path segment on the target"),
        })
    }
}

/// Where one backup's metadata lives on the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupLocation {
    /// `<plan uid>/<backup uid>` (the Backup's `status.location`).
    pub location: String,
}

impl BackupLocation {
    /// The location of a backup of a plan (both UIDs checked as path segments).
    pub fn new(plan_uid: &str, backup_uid: &str) -> Result<Self> {
        Ok(Self {
            location: format!(
                "{}/{}",
                segment("plan UID", plan_uid)?,
                segment("backup UID", backup_uid)?
            ),
        })
    }

    /// `<location>/_metadata/<rel>`.
    pub fn key(&self, rel: &str) -> String {
        format!("{}/{METADATA_DIR}/{rel}", self.location)
    }

    /// The index, written last by `snapshot`.
    pub fn index_key(&self) -> String {
        self.key("index.json")
    }

    /// The computed `status.snapshot`.
    pub fn snapshot_key(&self) -> String {
        self.key("snapshot.json")
    }

    /// The commit object, written last of all.
    pub fn commit_key(&self) -> String {
        self.key("commit.json")
    }

    /// The datamover's manifest of a volume (`<location>` as the control plane sets it in a
    /// data snapshot: `<plan uid>/<backup uid>/<pvc uid>`).
    pub fn volume_manifest_key(volume_location: &str) -> String {
        format!("{}/manifest.json", volume_location.trim_end_matches('/'))
    }
}

/// Relative key (under `_metadata/`) of part `part` of the objects of one type in one namespace.
pub fn objects_rel_key(namespace: Option<&str>, gvk: &Gvk, part: u32) -> Result<String> {
    let ns = match namespace {
        Some(ns) => segment("namespace", ns)?,
        None => CLUSTER_DIR,
    };
    let group = if gvk.group.is_empty() {
        "core"
    } else {
        segment("API group", &gvk.group)?
    };
    Ok(format!(
        "objects/{ns}/{group}/{}/{}.{part:04}.jsonl.gz",
        segment("API version", &gvk.version)?,
        segment("kind", &gvk.kind)?
    ))
}

/// Relative key of a Helm release's storage objects.
pub fn helm_rel_key(namespace: &str, release: &str) -> Result<String> {
    Ok(format!(
        "helm/{}/{}.jsonl.gz",
        segment("namespace", namespace)?,
        segment("Helm release", release)?
    ))
}

/// One stored document (a part of one type's objects in one namespace, or a Helm release's
/// storage) as the index records it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DocumentEntry {
    /// Key relative to `_metadata/`.
    pub key: String,
    /// Namespace; absent for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// API group (empty = core).
    pub group: String,
    /// Version the objects were read at.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural resource name.
    pub plural: String,
    /// Objects in the document.
    pub count: u64,
    /// Stored (compressed) size.
    pub bytes: u64,
    /// BLAKE3 of the stored bytes, hex.
    pub blake3: String,
}

/// A Helm release in the index.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HelmEntry {
    /// Namespace of the release.
    pub namespace: String,
    /// Release name.
    pub release: String,
    /// Revision restored (the latest deployed).
    pub revision: i64,
    /// `Secret` or `ConfigMap`.
    pub storage_backend: String,
    /// The storage document.
    pub document: DocumentEntry,
}

/// A PVC of the backup, with what cleaning removed from it (for restore's information).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PvcEntry {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID in the backed-up cluster (the volume's directory on the target).
    pub uid: String,
    /// Bound to a volume (only bound PVCs have data to protect).
    pub bound: bool,
    /// The PV it was bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_name: Option<String>,
    /// Storage class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Capacity (else request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// The binding annotations removed from the stored object.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub bind_annotations: std::collections::BTreeMap<String, String>,
}

/// Identity of the Backup and plan in the index and commit object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupIdentity {
    /// `Backup` or `ClusterBackup`.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace (Backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// UID.
    pub uid: String,
    /// Plan kind.
    pub plan_kind: String,
    /// Plan name.
    pub plan_name: String,
    /// Plan UID.
    pub plan_uid: String,
}

/// `index.json`: the metadata of one backup, written last by `snapshot`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Whose metadata this is.
    pub backup: BackupIdentity,
    /// Namespaces captured.
    pub namespaces: Vec<String>,
    /// Object documents, in the order they were written.
    pub documents: Vec<DocumentEntry>,
    /// Helm releases.
    #[serde(default)]
    pub helm: Vec<HelmEntry>,
    /// PVCs.
    #[serde(default)]
    pub pvcs: Vec<PvcEntry>,
    /// Things skipped or missing, for the user.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The StorageClass objects the backed-up PVCs and StatefulSet `volumeClaimTemplates`
    /// use, cleaned (`restoreFlags.restoreStorageClass` creates them when the destination
    /// lacks them). Absent in backups made before they were kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage_classes: Vec<Value>,
    /// BLAKE3 of `snapshot.json`.
    pub snapshot_blake3: String,
}

/// `commit.json`: the backup as committed, written last of all.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Commit {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Whose commit this is.
    pub backup: BackupIdentity,
    /// BLAKE3 of `index.json`.
    pub index_blake3: String,
    /// The Backup object (metadata cleaned, spec and status as they were).
    pub object: Value,
}

/// Writes gzip'd JSON Lines in parts of at most [`PART_BYTES`] compressed bytes.
pub struct DocumentWriter {
    gz: GzEncoder<Vec<u8>>,
    count: u64,
    part: u32,
    limit: usize,
}

impl std::fmt::Debug for DocumentWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DocumentWriter(part {}, {} objects)",
            self.part, self.count
        )
    }
}

/// A finished part: number, bytes, object count.
#[derive(Debug)]
pub struct Part {
    /// Part number (0-based).
    pub part: u32,
    /// Compressed bytes.
    pub data: Bytes,
    /// Objects in it.
    pub count: u64,
}

impl Default for DocumentWriter {
    fn default() -> Self {
        Self::with_limit(PART_BYTES)
    }
}

impl DocumentWriter {
    /// A writer whose parts close after `limit` compressed bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            gz: GzEncoder::new(Vec::new(), Compression::default()),
            count: 0,
            part: 0,
            limit,
        }
    }

    /// Adds one object; returns a full part when one is ready to store.
    pub fn push(&mut self, obj: &Value) -> Result<Option<Part>> {
        let mut line = serde_json::to_vec(obj).map_err(|e| Error::json("encode an object", e))?;
        line.push(b'\n');
        self.gz
            .write_all(&line)
            .map_err(|e| Error::Usage(format!("failed to compress metadata: {e}")))?;
        self.count += 1;
        if self.gz.get_ref().len() >= self.limit {
            return self.take().map(Some);
        }
        Ok(None)
    }

    fn take(&mut self) -> Result<Part> {
        let gz = std::mem::replace(
            &mut self.gz,
            GzEncoder::new(Vec::new(), Compression::default()),
        );
        let data = gz
            .finish()
            .map_err(|e| Error::Usage(format!("failed to compress metadata: {e}")))?;
        let part = Part {
            part: self.part,
            data: Bytes::from(data),
            count: self.count,
        };
        self.part += 1;
        self.count = 0;
        Ok(part)
    }

    /// The last part, if it holds any object.
    pub fn finish(mut self) -> Result<Option<Part>> {
        if self.count == 0 {
            return Ok(None);
        }
        self.take().map(Some)
    }
}

/// Reads a document back (restore, tests): one JSON value per line. `limit` caps the
/// decompressed size.
pub fn read_document(data: &[u8], limit: u64) -> Result<Vec<Value>> {
    use std::io::{BufRead, Read};
    let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(data).take(limit));
    let mut out = Vec::new();
    for line in reader.lines() {
        let line =
            line.map_err(|e| Error::Usage(format!("failed to decompress a document: {e}")))?;
        if line.is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line).map_err(|e| Error::json("decode a stored object", e))?,
        );
    }
    Ok(out)
}

/// BLAKE3 of bytes, hex.
pub fn digest(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// Writes `data` create-only at `key` (blocking: call from a blocking thread). An object left
/// by an earlier, uncommitted attempt with the same content is accepted.
pub fn put(target: &Target, key: &str, data: Bytes) -> Result<()> {
    match target.put_create_only(key, data.clone()) {
        Ok(()) => Ok(()),
        Err(tvk_datamover::Error::AlreadyExists { .. }) => {
            let same_len = target.open_read(key)?.len() == data.len() as u64;
            if same_len && target.read_all(key, data.len() as u64)? == data {
                Ok(())
            } else {
                Err(Error::Target(tvk_datamover::Error::AlreadyExists {
                    object: key.to_owned(),
                }))
            }
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_index_without_storage_classes_still_reads() {
        let old = json!({"formatVersion": 1,
            "backup": {"kind": "Backup", "name": "b", "namespace": "app", "uid": "u",
                "planKind": "BackupPlan", "planName": "p", "planUid": "pu"},
            "namespaces": ["app"], "documents": [], "snapshotBlake3": "00"});
        let index: Index = serde_json::from_value(old.clone()).unwrap();
        assert!(index.storage_classes.is_empty());
        assert_eq!(
            serde_json::to_value(&index).unwrap().get("storageClasses"),
            None,
            "an index without classes is written as before"
        );
        let mut with = old;
        with["storageClasses"] = json!([{"apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass", "metadata": {"name": "fast"}, "provisioner": "x"}]);
        let index: Index = serde_json::from_value(with).unwrap();
        assert_eq!(index.storage_classes[0]["metadata"]["name"], "fast");
    }

    #[test]
    fn keys_are_safe_paths() {
        let loc = BackupLocation::new("plan-uid", "backup-uid").unwrap();
        assert_eq!(loc.index_key(), "plan-uid/backup-uid/_metadata/index.json");
        let gvk = Gvk::new("apps", "v1", "Deployment");
        assert_eq!(
            objects_rel_key(Some("shop"), &gvk, 2).unwrap(),
            "objects/shop/apps/v1/Deployment.0002.jsonl.gz"
        );
        let core = Gvk::new("", "v1", "Namespace");
        assert_eq!(
            objects_rel_key(None, &core, 0).unwrap(),
            "objects/_cluster/core/v1/Namespace.0000.jsonl.gz"
        );
        for bad in ["..", "a/b", "", "x\u{0}"] {
            assert!(BackupLocation::new(bad, "b").is_err(), "{bad:?}");
            assert!(helm_rel_key("ns", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn documents_split_into_parts_and_read_back() {
        let mut w = DocumentWriter::with_limit(4096);
        let mut parts = Vec::new();
        let objects: Vec<Value> = (0..3000u32)
            .map(|i| {
                json!({"kind": "ConfigMap", "metadata": {"name": format!("cm-{i}")},
                "data": {"k": blake3::hash(&i.to_le_bytes()).to_hex().to_string()}})
            })
            .collect();
        for o in &objects {
            if let Some(p) = w.push(o).unwrap() {
                parts.push(p);
            }
        }
        if let Some(p) = w.finish().unwrap() {
            parts.push(p);
        }
        assert!(parts.len() > 1, "the small limit splits the document");
        assert_eq!(parts.iter().map(|p| p.count).sum::<u64>(), 3000);
        assert!(
            parts.iter().all(|p| p.data.len() < 4096 * 40),
            "parts stay near the limit"
        );
        let back: Vec<Value> = parts
            .iter()
            .flat_map(|p| read_document(&p.data, 1 << 20).unwrap())
            .collect();
        assert_eq!(back, objects);
        assert!(DocumentWriter::default().finish().unwrap().is_none());
    }
}
