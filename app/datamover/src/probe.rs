//! `tvk-datamover probe`: proves a target can hold backups before anything relies on it.
//!
//! The Target controller runs it (e.g. in an NFS validation Job) to check, with the
//! datamover's own I/O paths and errors, every operation a backup, restore and retention
//! needs: a create-only write (the commit primitive), a read back compared byte for byte, a
//! listing that shows the object, a second create-only write that must be refused, and a
//! delete. It works under `.tvk-probe/<unique>` so it
//! never touches a backup, and it removes its object even when a later step fails.

use bytes::Bytes;
use serde::Serialize;

use crate::{
    error::{Error, ErrorKind, Result},
    target::Target,
};

/// Folder of probe objects on a target.
pub const PROBE_PREFIX: &str = ".tvk-probe";

/// What a successful probe did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeReport {
    /// The object written, read, listed and deleted.
    pub object: String,
    /// Bytes written and read back.
    pub bytes: u64,
    /// Whether the bucket's Object Lock configuration was verified (asked for and enabled).
    pub object_lock_verified: bool,
}

/// A name no other probe uses: time in nanoseconds, process id and a BLAKE3 of both with the
/// address of a stack value (probes of several Jobs may run at once against one target).
fn unique_name() -> String {
    let nanos = jiff::Timestamp::now().as_nanosecond();
    let pid = std::process::id();
    let local = 0u8;
    let mut h = blake3::Hasher::new();
    h.update(&nanos.to_le_bytes());
    h.update(&pid.to_le_bytes());
    h.update(&(std::ptr::addr_of!(local) as usize).to_le_bytes());
    let tag = h.finalize().to_hex();
    format!("{PROBE_PREFIX}/{nanos}-{pid}-{}", &tag.as_str()[..16])
}

/// Writes, reads back, lists and deletes `.tvk-probe/<unique>` on `target`; with
/// `expect_object_lock`, then verifies the bucket's Object Lock configuration
/// ([`Target::verify_object_lock`]).
///
/// Errors are the target's own (exit codes follow [`Error::is_retryable`]); a probe object
/// that reads back differently is reported as a target error naming the object.
pub fn probe_target(target: &Target, expect_object_lock: bool) -> Result<ProbeReport> {
    let key = unique_name();
    // Content that a short, truncated or stale read cannot reproduce.
    let mut payload = Vec::with_capacity(4096 + 64);
    payload.extend_from_slice(format!("tvk-datamover probe {key}\n").as_bytes());
    let mut seed = blake3::Hasher::new();
    seed.update(key.as_bytes());
    let mut reader = seed.finalize_xof();
    let mut noise = [0u8; 4096];
    reader.fill(&mut noise);
    payload.extend_from_slice(&noise);
    let payload = Bytes::from(payload);
    target.put_create_only(&key, payload.clone())?;
    let checked = check_written(target, &key, &payload);
    // Commits rely on create-only writes: a second one must be refused, not overwrite.
    let checked = checked.and_then(|()| match target.put_create_only(&key, Bytes::from_static(b"overwrite")) {
        Err(Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
        Ok(()) => Err(Error::Target {
            kind: ErrorKind::TargetRefused,
            action: "write create-only",
            object: key.clone(),
            message: "a create-only write replaced an existing object (S3: If-None-Match: * ignored); backups cannot be committed safely on this target".into(),
        }),
    });
    // Remove the object whatever the checks said; a failed delete is itself a finding.
    let deleted = target.delete(&key);
    checked?;
    deleted?;
    if expect_object_lock {
        target.verify_object_lock()?;
    }
    Ok(ProbeReport {
        object: key,
        bytes: payload.len() as u64,
        object_lock_verified: expect_object_lock,
    })
}

fn check_written(target: &Target, key: &str, payload: &Bytes) -> Result<()> {
    let back = target.read_all(key, payload.len() as u64 * 2)?;
    if back != payload.as_ref() {
        return Err(Error::Target {
            kind: ErrorKind::TargetRefused,
            action: "read back",
            object: key.to_string(),
            message: format!(
                "the target returned {} bytes that differ from the {} just written; it does not store data faithfully",
                back.len(),
                payload.len()
            ),
        });
    }
    let listed = target.list(PROBE_PREFIX)?;
    if !listed.iter().any(|k| k == key) {
        return Err(Error::Target {
            kind: ErrorKind::TargetRefused,
            action: "list",
            object: key.to_string(),
            message: format!(
                "the object just written is missing from the listing of {PROBE_PREFIX}/ ({} entries); the target's listing is not consistent with its writes",
                listed.len()
            ),
        });
    }
    Ok(())
}
