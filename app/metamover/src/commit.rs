//! `tvk-metamover commit`: the last write of a backup.
//!
//! Checks that the metadata is indexed (`index.json` of this backup, every document present
//! with the size and BLAKE3 the index records) and that every data
//! snapshot in `status.snapshot` has its volume committed by the datamover (the
//! `manifest.json` under its `location`), then writes `commit.json` — the Backup object with
//! its status, metadata cleaned — create-only. A rerun after a crash finds the same commit and
//! succeeds; a different backup's commit at that place is an error.

use std::collections::HashSet;

use bytes::Bytes;
use kube::Client;
use serde_json::{Value, json};
use tvk_api::snapshot::Snapshot;
use tvk_datamover::target::Target;

use crate::{
    clean,
    error::{Error, Result},
    layout::{self, BackupLocation, Commit, FORMAT_VERSION, Index},
    snapshot::{BackupRef, ProgressFn, blocking, load, read_json},
};

/// What `commit` did.
#[derive(Debug)]
pub struct CommitOutcome {
    /// The commit object's key.
    pub key: String,
    /// Volumes checked on the target.
    pub volumes: usize,
    /// It had been written by an earlier run.
    pub already_committed: bool,
}

/// The location of a backup: the Backup's `status.location` when the control plane set it
/// (checked: two safe segments, the second the backup's UID), else `<plan uid>/<backup uid>`.
pub(crate) fn location_of(
    object: &Value,
    plan_uid: &str,
    backup_uid: &str,
) -> Result<BackupLocation> {
    match object.pointer("/status/location").and_then(Value::as_str) {
        Some(loc) if !loc.is_empty() => {
            let (plan, backup) = loc.split_once('/').ok_or_else(|| Error::Layout {
                key: loc.to_owned(),
                reason: "status.location is not <plan uid>/<backup uid>".into(),
            })?;
            if backup != backup_uid {
                return Err(Error::Layout {
                    key: loc.to_owned(),
                    reason: format!(
                        "status.location names backup {backup}, but this backup's UID is {backup_uid}"
                    ),
                });
            }
            BackupLocation::new(plan, backup)
        }
        _ => BackupLocation::new(plan_uid, backup_uid),
    }
}

/// The Backup object as committed: metadata cleaned, spec and status kept.
pub fn committed_object(object: &Value) -> Value {
    let mut o = object.clone();
    let status = o.get("status").cloned();
    clean::clean(&mut o, &HashSet::new());
    if let (Some(m), Some(s)) = (o.as_object_mut(), status) {
        m.insert("status".into(), s);
    }
    o
}

/// Checks that each `(key, size, blake3)` document is on the target with that content.
pub(crate) fn verify_documents(target: &Target, docs: &[(String, u64, String)]) -> Result<()> {
    for (key, size, digest) in docs {
        let data = match target.read_all(key, *size) {
            Ok(d) => d,
            Err(tvk_datamover::Error::MissingObject { .. }) => {
                return Err(Error::Layout {
                    key: key.clone(),
                    reason: "the index lists it but it is missing; run the snapshot again".into(),
                });
            }
            Err(tvk_datamover::Error::Usage(m)) => {
                return Err(Error::Layout {
                    key: key.clone(),
                    reason: format!(
                        "its size differs from the index ({m}); run the snapshot again"
                    ),
                });
            }
            Err(e) => return Err(e.into()),
        };
        if data.len() as u64 != *size || layout::digest(&data) != *digest {
            return Err(Error::Layout {
                key: key.clone(),
                reason: "its content does not match the BLAKE3 digest in the index (damaged on the target); run the snapshot again".into(),
            });
        }
    }
    Ok(())
}

/// Runs `commit` for one backup.
pub async fn run(
    client: Client,
    target: Target,
    r: &BackupRef,
    progress: ProgressFn<'_>,
    seal: Option<&crate::seal::MetadataKey>,
) -> Result<CommitOutcome> {
    let loaded = load(&client, r, false).await?;
    let id = loaded.identity;
    let loc = location_of(&loaded.object, &id.plan_uid, &id.uid)?;
    let index_key = loc.index_key();
    let t = target.clone();
    let k = index_key.clone();
    let index_bytes = match blocking(move || Ok(t.read_all(&k, layout::MAX_SMALL_OBJECT)?)).await {
        Ok(b) => b,
        Err(Error::Target(tvk_datamover::Error::MissingObject { .. })) => {
            return Err(Error::Layout {
                key: index_key,
                reason:
                    "the metadata snapshot has not been written; run `tvk-metamover snapshot` first"
                        .into(),
            });
        }
        Err(e) => return Err(e),
    };
    let plain_index = crate::seal::open(seal, &index_key, index_bytes.clone().into())?;
    let index: Index = serde_json::from_slice(&plain_index).map_err(|e| Error::Layout {
        key: index_key.clone(),
        reason: format!("not a metadata index: {e}"),
    })?;
    if index.backup.uid != id.uid {
        return Err(Error::Layout {
            key: index_key,
            reason: format!("it belongs to backup {}, not {}", index.backup.uid, id.uid),
        });
    }
    // Every metadata document must be there, byte for byte as indexed.
    let docs: Vec<_> = index
        .documents
        .iter()
        .chain(index.helm.iter().map(|h| &h.document))
        .map(|d| (loc.key(&d.key), d.bytes, d.blake3.clone()))
        .collect();
    let t = target.clone();
    blocking(move || verify_documents(&t, &docs)).await?;
    // Data first: every volume must be committed by the datamover.
    let snapshot = Snapshot::from_status_value(loaded.status_snapshot.as_ref())
        .map_err(|e| Error::json("read status.snapshot", e))?
        .unwrap_or_default();
    let mut volumes = 0;
    for ds in snapshot.data_snapshots() {
        let Some(location) = ds.location.clone() else {
            return Err(Error::DataMissing {
                pvc: ds.persistent_volume_claim_name.clone(),
                key: "<no location in status.snapshot>".into(),
            });
        };
        let key = BackupLocation::volume_manifest_key(&location);
        let t = target.clone();
        let k = key.clone();
        match blocking(move || Ok(t.open_read(&k).map(|_| ())?)).await {
            Ok(()) => volumes += 1,
            Err(Error::Target(tvk_datamover::Error::MissingObject { .. })) => {
                return Err(Error::DataMissing {
                    pvc: ds.persistent_volume_claim_name.clone(),
                    key,
                });
            }
            Err(e) => return Err(e),
        }
    }
    let commit = Commit {
        format_version: FORMAT_VERSION,
        backup: id.clone(),
        index_blake3: layout::digest(&index_bytes),
        object: committed_object(&loaded.object),
    };
    let key = loc.commit_key();
    let bytes = crate::seal::seal(
        seal,
        &key,
        Bytes::from(
            serde_json::to_vec_pretty(&commit).map_err(|e| Error::json("encode the commit", e))?,
        ),
    )?;
    let t = target.clone();
    let k = key.clone();
    let written = blocking(move || Ok(t.put_create_only(&k, bytes)?)).await;
    let already_committed = match written {
        Ok(()) => false,
        Err(Error::Target(tvk_datamover::Error::AlreadyExists { .. })) => {
            let existing: Commit =
                read_json(&target, key.clone(), seal)
                    .await?
                    .ok_or_else(|| Error::Layout {
                        key: key.clone(),
                        reason: "it exists but cannot be read back".into(),
                    })?;
            if existing.backup.uid != id.uid || existing.index_blake3 != commit.index_blake3 {
                return Err(Error::Layout {
                    key,
                    reason: "a different commit is already there; a committed backup is never overwritten".into(),
                });
            }
            true
        }
        Err(e) => return Err(e),
    };
    progress(json!({"event": "committed", "key": key, "volumes": volumes,
        "alreadyCommitted": already_committed}));
    Ok(CommitOutcome {
        key,
        volumes,
        already_committed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_prefers_status_and_checks_it() {
        let o = json!({"status": {"location": "p1/b1"}});
        assert_eq!(location_of(&o, "x", "b1").unwrap().location, "p1/b1");
        assert!(location_of(&o, "x", "other").is_err());
        assert!(location_of(&json!({"status": {"location": "../b1"}}), "x", "b1").is_err());
        assert_eq!(location_of(&json!({}), "p", "b").unwrap().location, "p/b");
    }

    #[test]
    fn committed_object_keeps_status() {
        let o = json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Backup",
            "metadata": {"name": "b", "uid": "u", "resourceVersion": "3", "managedFields": []},
            "spec": {"type": "Full"}, "status": {"status": "InProgress"}});
        let c = committed_object(&o);
        assert_eq!(c["status"]["status"], "InProgress");
        assert!(c.pointer("/metadata/managedFields").is_none());
        assert!(c.pointer("/metadata/resourceVersion").is_none());
    }
}
