//! The per-volume backup manifest: the commit record of a backup and the ONLY source of chain
//! membership (backing-file names stored in images are never followed).
//!
//! Object layout under a target: `<backupplan>/<backup>/<volume>/` holds `data.qcow2` (the
//! image as written at backup time), `index`, and the manifests. Generation 1 is
//! `manifest.json`; coalescing writes generation N ≥ 2 as `manifest.g<N>.json` (plus new images
//! `data.g<N>.qcow2`) — committed objects are never modified. The highest generation present
//! is the backup's current state; a backup with no manifest is not committed and invisible.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Manifest format version.
pub const FORMAT_VERSION: u32 = 1;
/// Largest manifest we read.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Longest chain a manifest may list.
pub const MAX_CHAIN: usize = 4096;

/// An object of a backup, with integrity data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectRef {
    /// Object key relative to the target root (`plan/backup/volume/file`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the whole object (indexes), or of the bytes after the first cluster (images;
    /// the header cluster, written last, has its own digest in `headBlake3`).
    pub blake3: String,
    /// Images only: BLAKE3 of the header cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_blake3: Option<String>,
}

/// One image of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChainMember {
    /// The backup that owns the image.
    pub backup_id: String,
    /// The image object.
    pub image: ObjectRef,
}

/// A committed volume backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// 1 at backup; higher after coalescing.
    pub generation: u32,
    /// Backup plan.
    pub backup_plan: String,
    /// Backup id.
    pub backup_id: String,
    /// Volume id.
    pub volume_id: String,
    /// Parent backup at backup time (`None` for a full backup).
    pub parent_backup: Option<String>,
    /// Images, base first; the last is the newest layer.
    pub chain: Vec<ChainMember>,
    /// Exact volume size in bytes.
    pub virtual_size: u64,
    /// Cluster size in bytes.
    pub cluster_size: u64,
    /// The digest index of this backup.
    pub index: ObjectRef,
    /// RFC 3339 creation time of this generation.
    pub created_at: String,
    /// Version of the tool that wrote it.
    pub tool_version: String,
    /// The images are encrypted (restore and verify need the key) and the index holds keyed
    /// digests. Absent in manifests of unencrypted backups.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    /// How: [`ENCRYPTION_FORMAT`] (qcow2 with LUKS1, as qemu's `encrypt.format=luks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_format: Option<String>,
}

/// The encryption format of encrypted backups: qcow2 `crypt_method` 2 (LUKS1,
/// AES-256-XTS-plain64, PBKDF2-SHA256) with a keyed BLAKE3 digest index.
pub const ENCRYPTION_FORMAT: &str = "qcow2-luks1-aes-256-xts-plain64";

/// Checks one path segment / id: non-empty, not `.`/`..`, `[A-Za-z0-9._-]`, ≤ 253 bytes.
pub fn validate_segment(what: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "{what} {s:?} is not a valid name (letters, digits, '.', '-', '_'; not '.' or '..')"
        )))
    }
}

/// `<plan>/<backup>/<volume>`.
pub fn volume_dir(plan: &str, backup: &str, volume: &str) -> String {
    format!("{plan}/{backup}/{volume}")
}

/// Key of generation `generation`'s manifest.
pub fn manifest_key(plan: &str, backup: &str, volume: &str, generation: u32) -> String {
    if generation <= 1 {
        format!("{}/manifest.json", volume_dir(plan, backup, volume))
    } else {
        format!(
            "{}/manifest.g{generation}.json",
            volume_dir(plan, backup, volume)
        )
    }
}

/// The generation a manifest file name denotes, if it is one.
pub fn manifest_generation(file_name: &str) -> Option<u32> {
    if file_name == "manifest.json" {
        return Some(1);
    }
    let n = file_name
        .strip_prefix("manifest.g")?
        .strip_suffix(".json")?;
    n.parse().ok().filter(|g: &u32| *g >= 2)
}

/// The backing-file name an overlay at `from` (a key) stores for the image at `to`:
/// relative, `../../<backup>/<volume>/<file>`, as qemu resolves it against the overlay's
/// directory.
pub fn relative_backing_name(from: &str, to: &str) -> Result<String> {
    let f: Vec<&str> = from.split('/').collect();
    let t: Vec<&str> = to.split('/').collect();
    if f.len() != 4 || t.len() != 4 || f[0] != t[0] {
        return Err(Error::Usage(format!(
            "{from} and {to} are not images of the same backup plan"
        )));
    }
    Ok(format!("../../{}/{}/{}", t[1], t[2], t[3]))
}

impl Manifest {
    /// Serialises (pretty, for people browsing the target).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Usage(format!("failed to serialise manifest: {e}")))
    }

    /// Parses and validates a manifest read from `name`; `expect` = (plan, backup, volume)
    /// it must describe.
    pub fn parse(name: &str, bytes: &[u8], expect: Option<(&str, &str, &str)>) -> Result<Self> {
        let bad = |reason: String| Error::InvalidManifest {
            name: name.to_string(),
            reason,
        };
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(bad(format!("{} bytes is larger than allowed", bytes.len())));
        }
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not a manifest: {e}")))?;
        m.validate().map_err(|e| bad(e.to_string()))?;
        if let Some((plan, backup, volume)) = expect
            && (m.backup_plan != plan || m.backup_id != backup || m.volume_id != volume)
        {
            return Err(bad(format!(
                "describes {}/{}/{}, expected {plan}/{backup}/{volume}",
                m.backup_plan, m.backup_id, m.volume_id
            )));
        }
        Ok(m)
    }

    /// Structural checks: names confined to this plan and volume, sane sizes.
    pub fn validate(&self) -> Result<()> {
        if self.format_version != FORMAT_VERSION {
            return Err(Error::Usage(format!(
                "unsupported manifest format version {}",
                self.format_version
            )));
        }
        if self.generation == 0 {
            return Err(Error::Usage("generation 0".into()));
        }
        validate_segment("backup plan", &self.backup_plan)?;
        validate_segment("backup id", &self.backup_id)?;
        validate_segment("volume id", &self.volume_id)?;
        if let Some(p) = &self.parent_backup {
            validate_segment("parent backup", p)?;
        }
        if !self.cluster_size.is_power_of_two()
            || !(1u64 << crate::qcow2::MIN_CLUSTER_BITS..=1u64 << crate::qcow2::MAX_CLUSTER_BITS)
                .contains(&self.cluster_size)
        {
            return Err(Error::Usage(format!(
                "invalid cluster size {}",
                self.cluster_size
            )));
        }
        if self.virtual_size > crate::qcow2::MAX_VIRTUAL_SIZE {
            return Err(Error::Usage("virtual size too large".into()));
        }
        match (&self.encryption_format, self.encrypted) {
            (None, false) => {}
            (Some(f), true) if f == ENCRYPTION_FORMAT => {}
            (Some(f), true) => {
                return Err(Error::Usage(format!(
                    "unsupported encryption format {f:?} (this tool reads {ENCRYPTION_FORMAT:?})"
                )));
            }
            _ => {
                return Err(Error::Usage(
                    "encrypted and encryptionFormat must be given together".into(),
                ));
            }
        }
        if self.chain.is_empty() || self.chain.len() > MAX_CHAIN {
            return Err(Error::Usage(format!(
                "chain of {} members (allowed 1..={MAX_CHAIN})",
                self.chain.len()
            )));
        }
        for m in &self.chain {
            validate_segment("chain member backup id", &m.backup_id)?;
            self.validate_object(&m.image.name, Some(&m.backup_id), true)?;
        }
        if self.chain.last().map(|m| m.backup_id.as_str()) != Some(self.backup_id.as_str()) {
            return Err(Error::Usage(
                "the newest chain member is not this backup's own image".into(),
            ));
        }
        self.validate_object(&self.index.name, Some(&self.backup_id), false)?;
        Ok(())
    }

    fn validate_object(&self, key: &str, owner: Option<&str>, image: bool) -> Result<()> {
        let segs: Vec<&str> = key.split('/').collect();
        if key.starts_with('/') || segs.len() != 4 {
            return Err(Error::Usage(format!(
                "object name {key:?} is not <plan>/<backup>/<volume>/<file>"
            )));
        }
        for s in &segs {
            validate_segment("object name segment", s)?;
        }
        if segs[0] != self.backup_plan || segs[2] != self.volume_id {
            return Err(Error::Usage(format!(
                "object {key:?} lies outside this backup plan and volume"
            )));
        }
        if let Some(o) = owner
            && segs[1] != o
        {
            return Err(Error::Usage(format!(
                "object {key:?} is not in the directory of backup {o}"
            )));
        }
        let file_ok = if image {
            segs[3] == "data.qcow2"
                || segs[3]
                    .strip_prefix("data.g")
                    .and_then(|r| r.strip_suffix(".qcow2"))
                    .is_some_and(|n| n.parse::<u32>().is_ok())
        } else {
            segs[3] == "index"
        };
        if !file_ok {
            return Err(Error::Usage(format!(
                "unexpected object file name in {key:?}"
            )));
        }
        Ok(())
    }
}
