//! Deterministic names and small conversions shared by the controllers.
//!
//! Job and object names are `tvk-<phase>-<short hash of backup uid + item>` (contracts7.md):
//! the same backup and item always give the same name, so a restarted controller adopts the
//! existing object (create answers 409 AlreadyExists) instead of duplicating it.

use k8s_openapi::apimachinery::pkg::{api::resource::Quantity, util::intstr::IntOrString};

/// First 10 hex digits of the BLAKE3 hash of the parts (joined by NUL).
pub fn short_hash(parts: &[&str]) -> String {
    let mut hasher = blake3::Hasher::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update(&[0]);
        }
        hasher.update(part.as_bytes());
    }
    hasher.finalize().to_hex()[..10].to_string()
}

/// `tvk-<phase>-<hash(uid, item)>`, at most 63 characters.
pub fn object_name(phase: &str, uid: &str, item: &str) -> String {
    let phase: String = phase
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    format!("tvk-{phase}-{}", short_hash(&[uid, item]))
}

/// Bytes of a quantity (`10Gi`, `1500M`, `123`); `None` when it cannot be read.
pub fn quantity_bytes(q: &IntOrString) -> Option<u64> {
    match q {
        IntOrString::Int(i) => u64::try_from(*i).ok(),
        IntOrString::String(s) => parse_quantity(s),
    }
}

/// Bytes of a Kubernetes quantity string (the workspace's one parser).
pub use tvk_api::quantity::bytes as parse_quantity;

/// Bytes of a `Quantity`.
pub fn quantity_of(q: &Quantity) -> Option<u64> {
    parse_quantity(&q.0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn names_are_deterministic_short_and_distinct() {
        let a = object_name("DataUpload", "uid-1", "pvc-a");
        assert_eq!(a, object_name("DataUpload", "uid-1", "pvc-a"));
        assert_ne!(a, object_name("DataUpload", "uid-1", "pvc-b"));
        assert_ne!(a, object_name("DataUpload", "uid-2", "pvc-a"));
        assert!(a.starts_with("tvk-dataupload-") && a.len() <= 63, "{a}");
    }

    #[test]
    fn quantities_of_both_shapes() {
        assert_eq!(quantity_bytes(&IntOrString::Int(4096)), Some(4096));
        assert_eq!(quantity_bytes(&IntOrString::Int(-1)), None);
        assert_eq!(
            quantity_bytes(&IntOrString::String("1.5Ki".into())),
            Some(1536)
        );
        assert_eq!(quantity_of(&Quantity("10Gi".into())), Some(10 << 30));
        assert_eq!(quantity_of(&Quantity("x".into())), None);
    }
}
