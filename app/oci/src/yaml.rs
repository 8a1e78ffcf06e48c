//! This crate's YAML, delegated to the workspace's one YAML module (`tvk_api::yaml`), so
//! catalogs and ImageSetConfigurations from outside get the same size and nesting caps as
//! every other document the project reads.

use serde::{Serialize, de::DeserializeOwned};
use tvk_api::yaml::{Limits, parse_documents, parse_single};

/// Caps for file-based catalogs: a package's catalog file can be several MiB of bundle
/// properties, far more than a Kubernetes manifest, but is still bounded.
const CATALOG_LIMITS: Limits = Limits {
    max_total_bytes: 64 * 1024 * 1024,
    max_document_bytes: 16 * 1024 * 1024,
    max_depth: 64,
};

/// Why a YAML document could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// Not YAML, or over the caps.
    #[error(transparent)]
    Yaml(#[from] tvk_api::yaml::YamlError),
    /// YAML, but not of the expected shape.
    #[error("document {document}: {source}")]
    Shape {
        /// One-based document number.
        document: usize,
        /// What did not match.
        #[source]
        source: serde_json::Error,
    },
}

/// Parses every document of a (possibly multi-document, `---`-separated) YAML text.
pub fn from_str_multi<T: DeserializeOwned>(text: &str) -> Result<Vec<T>, YamlError> {
    parse_documents(text, &CATALOG_LIMITS)?
        .into_iter()
        .map(|document| {
            serde_json::from_value(document.value).map_err(|source| YamlError::Shape {
                document: document.index + 1,
                source,
            })
        })
        .collect()
}

/// Parses a single YAML document.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    serde_json::from_value(parse_single(text, &CATALOG_LIMITS)?).map_err(|source| {
        YamlError::Shape {
            document: 1,
            source,
        }
    })
}

/// Writes a value as one YAML document.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, YamlError> {
    Ok(tvk_api::yaml::to_string(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_catalog_yaml_is_refused_by_the_shared_caps() {
        let deep = format!(
            "schema: olm.package\nname: {}{}\n",
            "[".repeat(100),
            "]".repeat(100)
        );
        let err = from_str_multi::<serde_json::Value>(&deep).unwrap_err();
        assert!(
            matches!(
                err,
                YamlError::Yaml(tvk_api::yaml::YamlError::TooDeep { .. })
            ),
            "{err:?}"
        );
        let wrong_shape = from_str::<Vec<String>>("a: 1\n").unwrap_err();
        assert!(
            matches!(wrong_shape, YamlError::Shape { document: 1, .. }),
            "{wrong_shape:?}"
        );
    }
}
