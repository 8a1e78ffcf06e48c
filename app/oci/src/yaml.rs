//! The one place this crate reads and writes YAML (serde_norway behind it), so the library can
//! be swapped — for `tvk_api::yaml` once this crate may depend on it — without touching callers.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Why a YAML document could not be read or written.
pub type YamlError = serde_norway::Error;

/// Parses every document of a (possibly multi-document, `---`-separated) YAML text.
pub fn from_str_multi<T: DeserializeOwned>(text: &str) -> Result<Vec<T>, YamlError> {
    let mut out = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        out.push(<T as Deserialize>::deserialize(document)?);
    }
    Ok(out)
}

/// Parses a single YAML document.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    serde_norway::from_str(text)
}

/// Writes a value as one YAML document.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, YamlError> {
    serde_norway::to_string(value)
}
