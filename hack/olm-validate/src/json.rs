//! Small shared helpers: reading bounded YAML/JSON files, walking JSON values, Kubernetes name
//! rules and blang/semver's tolerant version parsing.

use std::path::Path;

use serde_json::Value;
use tvk_api::yaml::{Limits, parse_documents};

/// Caps for the files we read. A bundle manifest stays under etcd's 1.5 MiB object limit; a
/// catalog file may hold many bundles' properties, so it gets more room, but stays bounded.
pub(crate) const FILE_LIMITS: Limits = Limits {
    max_total_bytes: 32 * 1024 * 1024,
    max_document_bytes: 16 * 1024 * 1024,
    max_depth: 64,
};

/// Reads a whole file of at most [`FILE_LIMITS`]`.max_total_bytes`, refusing larger ones before
/// reading them.
pub(crate) fn read_bounded(path: &Path) -> Result<String, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read it: {e}"))?
        .len();
    if size > FILE_LIMITS.max_total_bytes as u64 {
        return Err(format!(
            "it is {size} bytes, more than the {} bytes this validator reads; split it",
            FILE_LIMITS.max_total_bytes
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    String::from_utf8(bytes).map_err(|e| format!("it is not UTF-8 text: {e}"))
}

/// The non-empty documents of a YAML (or JSON, which is YAML) file.
pub(crate) fn read_yaml_documents(path: &Path) -> Result<Vec<Value>, String> {
    let text = read_bounded(path)?;
    parse_documents(&text, &FILE_LIMITS)
        .map(|docs| docs.into_iter().map(|d| d.value).collect())
        .map_err(|e| e.to_string())
}

/// The string at a JSON pointer, if it is one.
pub(crate) fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// The non-empty string at a JSON pointer.
pub(crate) fn nonempty_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    str_at(value, pointer).filter(|s| !s.trim().is_empty())
}

/// The array at a JSON pointer, or an empty slice when absent or not an array.
pub(crate) fn array_at<'a>(value: &'a Value, pointer: &str) -> &'a [Value] {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A DNS-1123 label: at most 63 of `[a-z0-9-]`, starting and ending alphanumeric.
pub(crate) fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// A DNS-1123 subdomain (Kubernetes object names): at most 253 characters, dot-separated labels.
pub(crate) fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// blang/semver's `ParseTolerant`: trims spaces, drops a leading `v`, pads a missing minor or
/// patch with zeros. What OLM uses for `minKubeVersion`.
pub(crate) fn parse_tolerant(s: &str) -> Option<semver::Version> {
    let s = s.trim();
    let s = s.strip_prefix('v').unwrap_or(s);
    let split = s.find(['-', '+']).unwrap_or(s.len());
    let (core, rest) = s.split_at(split);
    let mut parts: Vec<String> = core
        .split('.')
        .map(|p| {
            // blang strips leading zeros in tolerant mode ("1.08" is 1.8).
            let trimmed = p.trim_start_matches('0');
            if trimmed.is_empty() && !p.is_empty() {
                "0".to_owned()
            } else {
                trimmed.to_owned()
            }
        })
        .collect();
    if parts.len() > 3 || parts.iter().any(String::is_empty) {
        return None;
    }
    while parts.len() < 3 {
        parts.push("0".to_owned());
    }
    semver::Version::parse(&format!("{}{rest}", parts.join("."))).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tolerant_versions() {
        assert!(is_dns1123_subdomain("tvk-operator.v1.2.3"));
        assert!(!is_dns1123_subdomain("TVK.v1"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(!is_dns1123_label("-a"));
        assert_eq!(
            parse_tolerant("v1.25"),
            Some(semver::Version::new(1, 25, 0))
        );
        assert_eq!(
            parse_tolerant(" 1.2.3 "),
            Some(semver::Version::new(1, 2, 3))
        );
        assert_eq!(parse_tolerant("1"), Some(semver::Version::new(1, 0, 0)));
        assert_eq!(parse_tolerant("one"), None);
        assert_eq!(parse_tolerant("1.2.3.4"), None);
        assert_eq!(parse_tolerant(""), None);
    }
}
