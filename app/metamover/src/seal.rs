//! Encryption of the metadata a backup stores under `_metadata/` (objects, Helm release
//! storage, `snapshot.json`, `index.json`, `commit.json`) when its plan has an encryption
//! Secret.
//!
//! Each object is sealed with AES-256-GCM (RustCrypto `aes-gcm`) under a key derived from the
//! user's key (`blake3::derive_key` with [`KEY_CONTEXT`]; the volume images use the same user
//! key as their LUKS passphrase), a random 96-bit nonce per object, and the object's key on the
//! target as associated data — so a sealed object moved to another name does not open:
//!
//! ```text
//! "TVKSEAL1" | nonce (12 bytes) | ciphertext + tag (16 bytes)
//! ```
//!
//! Sizes and BLAKE3 digests in `index.json` and `commit.json` are those of the stored (sealed)
//! bytes, so `commit` checks documents without the key's help changing anything. Readers open
//! an object that starts with the magic with the key (none given: an error naming the Secret;
//! a wrong key: an error saying it does not open the object, never garbage) and take any other
//! object as plain (backups taken without encryption) — unless the key was made
//! [`MetadataKey::require_sealed`] (`--require-sealed`, given by the control plane for every Job
//! of a backup whose `status.encryptionEnabled` is true): then a plain object is refused, so
//! whoever can write to the target cannot swap plain metadata into an encrypted backup.

use std::{path::Path, sync::Arc};

use aes_gcm::{
    Aes256Gcm, Nonce,
    aead::{Aead, KeyInit, Payload},
};
use bytes::Bytes;
use tvk_datamover::crypt::EncryptionKey;

use crate::error::{Error, Result};

/// Magic of a sealed object.
pub const MAGIC: &[u8; 8] = b"TVKSEAL1";
/// Context of the key derivation (never change: sealed objects must stay readable).
pub const KEY_CONTEXT: &str = "tvk-metamover 2026-11 metadata sealing AES-256-GCM v1";
const NONCE: usize = 12;
const TAG: usize = 16;

/// The metadata key of a backup plan's encryption Secret. Cheap to clone; never printed.
#[derive(Clone)]
pub struct MetadataKey {
    cipher: Arc<Aes256Gcm>,
    /// Plain (unsealed) objects are refused by [`open`].
    require_sealed: bool,
}

impl std::fmt::Debug for MetadataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetadataKey(<redacted>)")
    }
}

impl MetadataKey {
    /// The metadata key derived from the user's key.
    pub fn new(key: &EncryptionKey) -> Self {
        let k = key.derive(KEY_CONTEXT);
        Self {
            cipher: Arc::new(Aes256Gcm::new(&k.into())),
            require_sealed: false,
        }
    }

    /// This key, refusing in [`open`] any object that is not sealed: the backup is known to be
    /// encrypted, so a plain object in it was not written by its backup.
    #[must_use]
    pub fn require_sealed(mut self) -> Self {
        self.require_sealed = true;
        self
    }

    /// Reads the user's key from a file (the encryption Secret mounted into the Job).
    pub fn from_file(path: &Path) -> Result<Self> {
        Ok(Self::new(&EncryptionKey::from_file(path)?))
    }

    /// Seals `data` to be stored at `object_key`.
    pub fn seal(&self, object_key: &str, data: &[u8]) -> Result<Bytes> {
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce).map_err(|e| {
            Error::Usage(format!(
                "could not read random bytes from the operating system: {e}"
            ))
        })?;
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: data,
                    aad: object_key.as_bytes(),
                },
            )
            .map_err(|_| Error::Usage(format!("failed to encrypt {object_key}")))?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(Bytes::from(out))
    }
}

/// Whether stored bytes are a sealed object.
pub fn is_sealed(data: &[u8]) -> bool {
    data.starts_with(MAGIC)
}

/// Seals `data` for `object_key` when a key is given, else returns it as is.
pub fn seal(key: Option<&MetadataKey>, object_key: &str, data: Bytes) -> Result<Bytes> {
    match key {
        Some(k) => k.seal(object_key, &data),
        None => Ok(data),
    }
}

/// The plain bytes of an object read from `object_key`: sealed objects are opened with `key`,
/// others returned as they are (refused when `key` is [`MetadataKey::require_sealed`]).
pub fn open(key: Option<&MetadataKey>, object_key: &str, data: Bytes) -> Result<Bytes> {
    if !is_sealed(&data) {
        if key.is_some_and(|k| k.require_sealed) {
            return Err(Error::Layout {
                key: object_key.to_owned(),
                reason: "it is not encrypted, but the backup was taken with encryption (--require-sealed), so this object was not written by the backup: the target was tampered with or the location is wrong; check who can write to the target and restore from another backup".into(),
            });
        }
        return Ok(data);
    }
    let Some(key) = key else {
        return Err(Error::Usage(format!(
            "the backup's metadata is encrypted ({object_key}): give the key of the backup plan's encryption Secret (--encryption-key-file; a Restore names it in spec.encryption.encryptionSecret)"
        )));
    };
    if data.len() < MAGIC.len() + NONCE + TAG {
        return Err(Error::Layout {
            key: object_key.to_owned(),
            reason: format!(
                "a sealed object of {} bytes is shorter than its header and tag",
                data.len()
            ),
        });
    }
    let nonce = &data[MAGIC.len()..MAGIC.len() + NONCE];
    key.cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: &data[MAGIC.len() + NONCE..],
                aad: object_key.as_bytes(),
            },
        )
        .map(Bytes::from)
        .map_err(|_| {
            Error::Usage(format!(
                "the encryption key does not open the backup's metadata ({object_key}): give the key of the encryption Secret the backup was taken with (or the object was damaged or moved)"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> MetadataKey {
        MetadataKey::new(&EncryptionKey::from_bytes(s.as_bytes().to_vec()).unwrap())
    }

    #[test]
    fn sealed_objects_open_only_with_the_key_at_their_own_name() {
        let k = key("secret one");
        let plain =
            Bytes::from_static(b"{\"kind\":\"ConfigMap\",\"data\":{\"password\":\"MARKER\"}}");
        let sealed = k.seal("p/b/_metadata/index.json", &plain).unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.windows(6).any(|w| w == b"MARKER"));
        assert_eq!(
            open(Some(&k), "p/b/_metadata/index.json", sealed.clone()).unwrap(),
            plain
        );
        // Wrong key, no key, another name, a flipped byte, a truncated object.
        let e = open(
            Some(&key("secret two")),
            "p/b/_metadata/index.json",
            sealed.clone(),
        );
        assert!(e.unwrap_err().to_string().contains("does not open"));
        let e = open(None, "p/b/_metadata/index.json", sealed.clone());
        assert!(e.unwrap_err().to_string().contains("encryptionSecret"));
        let e = open(Some(&k), "p/b/_metadata/commit.json", sealed.clone());
        assert!(e.is_err());
        let mut flipped = sealed.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(open(Some(&k), "p/b/_metadata/index.json", flipped.into()).is_err());
        assert!(open(Some(&k), "x", Bytes::from_static(b"TVKSEAL1abc")).is_err());
        // Plain objects pass through, with or without a key.
        assert_eq!(open(Some(&k), "x", plain.clone()).unwrap(), plain);
        assert_eq!(open(None, "x", plain.clone()).unwrap(), plain);
        // A key requiring sealed objects refuses a plain one, naming it, and still opens sealed.
        let strict = k.clone().require_sealed();
        let e = open(Some(&strict), "p/b/_metadata/commit.json", plain.clone()).unwrap_err();
        assert!(e.to_string().contains("p/b/_metadata/commit.json"), "{e}");
        assert!(e.to_string().contains("not encrypted"), "{e}");
        assert_eq!(
            open(Some(&strict), "p/b/_metadata/index.json", sealed.clone()).unwrap(),
            plain
        );
        // Two seals of the same bytes differ (random nonce).
        assert_ne!(k.seal("x", &plain).unwrap(), k.seal("x", &plain).unwrap());
    }
}
