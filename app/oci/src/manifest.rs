//! Manifest media types, descriptors and the validated parse of image manifests and indexes.
//!
//! Four manifest kinds are copied: OCI image manifest and index, Docker v2 schema 2 manifest and
//! manifest list. Anything else (schema 1, unknown artifact envelopes) is refused by name rather
//! than copied blindly: a mirror that copies what it cannot walk would silently miss blobs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{error::OciError, reference::Digest};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema 2 image manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker v2 schema 2 manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip-compressed layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The `Accept` header for manifest requests: every kind we can copy.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Largest manifest accepted (the limit docker distribution enforces on push).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// Most entries accepted in one manifest's layer or platform list (bounds work on hostile input).
const MAX_DESCRIPTORS: usize = 10_000;

/// Annotation holding an image's name in an OCI layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A content descriptor: what a manifest points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Platform of an index entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Where a non-distributable (foreign) layer is downloaded from instead of the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

impl Descriptor {
    /// A non-distributable ("foreign", e.g. Windows base) layer: registries do not hold it and
    /// accept manifests referencing it without the blob, so a mirror copies the reference only
    /// (as skopeo does by default).
    pub fn is_foreign_layer(&self) -> bool {
        self.urls.as_ref().is_some_and(|u| !u.is_empty())
            && (self.media_type.contains(".foreign.")
                || self.media_type.contains(".nondistributable."))
    }
}

/// The platform of an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture (`amd64`, `arm64` …).
    pub architecture: String,
    /// Operating system (`linux` …).
    pub os: String,
    /// CPU variant (`v8` …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// What a manifest references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestContent {
    /// A single-platform image: a config blob and layer blobs.
    Image {
        /// The config blob.
        config: Descriptor,
        /// The layer blobs, in order.
        layers: Vec<Descriptor>,
    },
    /// An index / manifest list: child manifests (every platform is copied).
    Index {
        /// The child manifests.
        manifests: Vec<Descriptor>,
    },
}

/// A manifest checked against its digest and parsed.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Its media type.
    pub media_type: String,
    /// Its exact bytes (never re-serialised: that would change the digest).
    pub bytes: bytes::Bytes,
    /// Its digest.
    pub digest: Digest,
    /// What it references.
    pub content: ManifestContent,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<u32>,
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
}

impl Manifest {
    /// Verifies `bytes` against `expected` (when given) and parses them. `declared` is the media
    /// type the registry's `Content-Type` or the parent descriptor gave; `what` names the image
    /// in errors.
    pub fn parse(
        bytes: bytes::Bytes,
        declared: Option<&str>,
        expected: Option<&Digest>,
        what: &str,
    ) -> Result<Self, OciError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(OciError::ManifestTooLarge {
                what: what.to_owned(),
                limit: MAX_MANIFEST_BYTES,
            });
        }
        let digest = Digest::of(&bytes);
        if let Some(expected) = expected
            && *expected != digest
        {
            return Err(OciError::DigestMismatch {
                what: format!("manifest of {what}"),
                expected: expected.to_string(),
                actual: digest.to_string(),
            });
        }
        let malformed = |reason: String| OciError::MalformedManifest {
            what: what.to_owned(),
            reason,
        };
        let raw: RawManifest = serde_json::from_slice(&bytes)
            .map_err(|e| malformed(format!("not valid JSON: {e}")))?;
        if raw.schema_version != Some(2) {
            return Err(match raw.schema_version {
                Some(1) => OciError::UnsupportedMediaType {
                    what: what.to_owned(),
                    media_type: "application/vnd.docker.distribution.manifest.v1+json".into(),
                },
                other => malformed(format!("schemaVersion is {other:?}, expected 2")),
            });
        }
        let declared = declared
            .map(|d| d.split(';').next().unwrap_or(d).trim())
            .filter(|d| !d.is_empty() && *d != "application/json" && *d != "text/plain");
        let media_type = match (raw.media_type.as_deref(), declared) {
            (Some(inner), _) => inner.to_owned(),
            (None, Some(declared)) => declared.to_owned(),
            // OCI allows omitting mediaType; the shape tells which of the two it is.
            (None, None) if raw.manifests.is_some() => OCI_INDEX.to_owned(),
            (None, None) => OCI_MANIFEST.to_owned(),
        };
        let content = match media_type.as_str() {
            OCI_MANIFEST | DOCKER_MANIFEST => {
                let config = raw
                    .config
                    .ok_or_else(|| malformed("an image manifest without a config".into()))?;
                let layers = raw.layers.unwrap_or_default();
                if layers.len() > MAX_DESCRIPTORS {
                    return Err(malformed(format!("more than {MAX_DESCRIPTORS} layers")));
                }
                ManifestContent::Image { config, layers }
            }
            OCI_INDEX | DOCKER_MANIFEST_LIST => {
                let manifests = raw
                    .manifests
                    .ok_or_else(|| malformed("an index without a manifests list".into()))?;
                if manifests.len() > MAX_DESCRIPTORS {
                    return Err(malformed(format!("more than {MAX_DESCRIPTORS} manifests")));
                }
                for child in &manifests {
                    if child.size > MAX_MANIFEST_BYTES as u64 {
                        return Err(OciError::ManifestTooLarge {
                            what: format!("{what} (child {})", child.digest),
                            limit: MAX_MANIFEST_BYTES,
                        });
                    }
                }
                ManifestContent::Index { manifests }
            }
            other => {
                return Err(OciError::UnsupportedMediaType {
                    what: what.to_owned(),
                    media_type: other.to_owned(),
                });
            }
        };
        Ok(Self {
            media_type,
            bytes,
            digest,
            content,
        })
    }

    /// The descriptor of this manifest (for an index or a layout's `index.json`).
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.bytes.len() as u64,
            platform: None,
            annotations: None,
            urls: None,
        }
    }
}

/// Whether `media_type` is one of the manifest kinds (as opposed to a blob).
pub fn is_manifest_media_type(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_MANIFEST | OCI_INDEX | DOCKER_MANIFEST | DOCKER_MANIFEST_LIST
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_manifest() -> bytes::Bytes {
        let d = Digest::of(b"x");
        bytes::Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{d}","size":1}},"layers":[{{"mediaType":"{OCI_LAYER_GZIP}","digest":"{d}","size":1}}]}}"#
        ))
    }

    #[test]
    fn parses_and_verifies_an_image_manifest() {
        let bytes = image_manifest();
        let digest = Digest::of(&bytes);
        let m = Manifest::parse(bytes, None, Some(&digest), "img").unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST);
        assert!(
            matches!(m.content, ManifestContent::Image { ref layers, .. } if layers.len() == 1)
        );
    }

    #[test]
    fn refuses_wrong_digest_unknown_type_schema1_and_garbage() {
        let bytes = image_manifest();
        let err =
            Manifest::parse(bytes.clone(), None, Some(&Digest::of(b"other")), "img").unwrap_err();
        assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");

        let odd = bytes::Bytes::from(r#"{"schemaVersion":2,"mediaType":"application/x-odd"}"#);
        let err = Manifest::parse(odd, None, None, "img").unwrap_err();
        assert!(err.to_string().contains("application/x-odd"), "{err}");

        let v1 = bytes::Bytes::from(r#"{"schemaVersion":1,"name":"x"}"#);
        assert!(matches!(
            Manifest::parse(v1, None, None, "img").unwrap_err(),
            OciError::UnsupportedMediaType { .. }
        ));

        let err =
            Manifest::parse(bytes::Bytes::from_static(b"{nope"), None, None, "img").unwrap_err();
        assert!(matches!(err, OciError::MalformedManifest { .. }));

        let bad_digest = bytes::Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"x","digest":"sha256:../../etc","size":1}}}}"#
        ));
        assert!(Manifest::parse(bad_digest, None, None, "img").is_err());
    }

    #[test]
    fn foreign_layers_are_recognised() {
        let d: Descriptor = serde_json::from_str(&format!(
            r#"{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{}","size":5,"urls":["https://mcr.microsoft.com/l"]}}"#,
            Digest::of(b"x")
        ))
        .unwrap();
        assert!(d.is_foreign_layer());
        let plain = Descriptor {
            urls: None,
            ..d.clone()
        };
        assert!(!plain.is_foreign_layer());
        let ordinary = Descriptor {
            media_type: OCI_LAYER_GZIP.into(),
            ..d
        };
        assert!(!ordinary.is_foreign_layer());
    }

    #[test]
    fn oversized_manifest_is_refused_before_parsing() {
        let big = bytes::Bytes::from(vec![b' '; MAX_MANIFEST_BYTES + 1]);
        assert!(matches!(
            Manifest::parse(big, None, None, "img").unwrap_err(),
            OciError::ManifestTooLarge { .. }
        ));
    }
}
