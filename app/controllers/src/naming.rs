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

/// Bytes of a Kubernetes quantity string.
pub fn parse_quantity(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().ok()?;
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "Pi" => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = value * mult;
    if bytes.is_finite() && (0.0..1.8e19).contains(&bytes) {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(bytes.round() as u64)
    } else {
        None
    }
}

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
    fn quantities() {
        assert_eq!(parse_quantity("10Gi"), Some(10 << 30));
        assert_eq!(parse_quantity("1500M"), Some(1_500_000_000));
        assert_eq!(parse_quantity("123"), Some(123));
        assert_eq!(parse_quantity("1.5Ki"), Some(1536));
        assert_eq!(parse_quantity("x"), None);
        assert_eq!(parse_quantity("5Qi"), None);
    }
}
