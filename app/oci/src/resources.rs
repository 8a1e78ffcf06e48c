//! What the cluster needs after a mirror, written to `--output-dir`:
//! `imageDigestMirrorSet.yaml` (config.openshift.io/v1), the older
//! `imageContentSourcePolicy.yaml` (operator.openshift.io/v1alpha1), one
//! `catalogSource-<name>.yaml` (operators.coreos.com/v1alpha1, by digest, with
//! `grpcPodConfig.extractContent` so OLM serves the catalog with its own opm) per mirrored catalog,
//! and `mapping.txt` (`source=destination`, one image per line).
//!
//! Mapping rule: `SRC_REGISTRY/ns/name@sha256:X` is mirrored to `DEST/ns/name@sha256:X`, where
//! `DEST` is the destination `HOST[:PORT]/NAMESPACE`: the source repository path is kept under
//! the destination namespace, so each source repository maps to exactly one mirror repository.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::{reference::ImageReference, yaml};

/// What role an image plays in the mirrored set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ImageRole {
    /// The catalog (index) image.
    Catalog,
    /// An operator bundle image.
    Bundle,
    /// An image a bundle runs (`relatedImages`) or an additional image.
    Related,
}

impl ImageRole {
    /// The name recorded in layouts (`io.tvk.mirror.role`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Catalog => "catalog",
            Self::Bundle => "bundle",
            Self::Related => "related",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(s: &str) -> Self {
        match s {
            "catalog" => Self::Catalog,
            "bundle" => Self::Bundle,
            _ => Self::Related,
        }
    }
}

/// One mirrored image: where it came from and where it now is, both by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirroredImage {
    /// The original reference (by digest).
    pub source: ImageReference,
    /// The mirror reference (by digest).
    pub destination: ImageReference,
    /// Its role.
    pub role: ImageRole,
}

/// Why the resources could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ResourcesError {
    /// A file could not be written.
    #[error("failed to write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A resource could not be serialised.
    #[error("failed to serialise {what}: {source}")]
    Serialize {
        /// The resource.
        what: String,
        /// The YAML error.
        #[source]
        source: yaml::YamlError,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Resource<S> {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata,
    spec: S,
}

#[derive(Serialize)]
struct Metadata {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    labels: BTreeMap<String, String>,
}

/// One source repository and its mirrors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RepositoryMirror {
    /// `registry/ns/name` as workloads reference it.
    pub source: String,
    /// Where it is mirrored.
    pub mirrors: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IdmsSpec {
    image_digest_mirrors: Vec<RepositoryMirror>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IcspSpec {
    repository_digest_mirrors: Vec<RepositoryMirror>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CatalogSourceSpec {
    source_type: &'static str,
    image: String,
    display_name: String,
    publisher: String,
    grpc_pod_config: GrpcPodConfig,
}

/// `spec.grpcPodConfig` of a CatalogSource: OLM v0 extracts the file-based catalog from the
/// image and serves it with its own `opm`, so a catalog image without a server (this
/// project's is `FROM scratch`) starts as well as an index image with `opm` inside.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GrpcPodConfig {
    extract_content: ExtractContent,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExtractContent {
    catalog_dir: &'static str,
    cache_dir: &'static str,
}

/// Where catalog images keep their configs (`opm`'s default, and this project's catalog's
/// `operators.operatorframework.io.index.configs.v1` label).
pub const CATALOG_CONFIGS_DIR: &str = "/configs";

/// Name of the ImageDigestMirrorSet and ImageContentSourcePolicy written.
pub const MIRROR_SET_NAME: &str = "tvk-mirror";
/// Namespace of the CatalogSource (where OperatorHub looks for cluster-wide catalogs).
pub const CATALOG_SOURCE_NAMESPACE: &str = "openshift-marketplace";

/// Every distinct source repository and its mirror repository, sorted.
pub fn repository_mirrors(images: &[MirroredImage]) -> Vec<RepositoryMirror> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for image in images {
        let mirrors = map.entry(image.source.repository_name()).or_default();
        let mirror = image.destination.repository_name();
        if !mirrors.contains(&mirror) {
            mirrors.push(mirror);
        }
    }
    map.into_iter()
        .map(|(source, mirrors)| RepositoryMirror { source, mirrors })
        .collect()
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([(
        "app.kubernetes.io/managed-by".to_owned(),
        "kubectl-tvk-mirror".to_owned(),
    )])
}

/// A DNS-1123 name for the CatalogSource of `catalog` (its last repository component).
pub fn catalog_source_name(catalog: &ImageReference) -> String {
    let last = catalog.repository.rsplit('/').next().unwrap_or("catalog");
    let mut name: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    name = name.trim_matches('-').to_owned();
    name.truncate(53);
    let name = name.trim_end_matches('-');
    if name.is_empty() {
        "tvk-catalog-mirror".to_owned()
    } else {
        format!("{name}-mirror")
    }
}

/// Writes the resources for `images` into `dir` and returns the paths written.
pub fn write(dir: &Path, images: &[MirroredImage]) -> Result<Vec<PathBuf>, ResourcesError> {
    std::fs::create_dir_all(dir).map_err(|source| ResourcesError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let mut written = Vec::new();
    let mirrors = repository_mirrors(images);
    let idms = Resource {
        api_version: "config.openshift.io/v1",
        kind: "ImageDigestMirrorSet",
        metadata: Metadata {
            name: MIRROR_SET_NAME.into(),
            namespace: None,
            labels: labels(),
        },
        spec: IdmsSpec {
            image_digest_mirrors: mirrors.clone(),
        },
    };
    written.push(write_yaml(
        dir,
        "imageDigestMirrorSet.yaml",
        "ImageDigestMirrorSet",
        &idms,
    )?);
    let icsp = Resource {
        api_version: "operator.openshift.io/v1alpha1",
        kind: "ImageContentSourcePolicy",
        metadata: Metadata {
            name: MIRROR_SET_NAME.into(),
            namespace: None,
            labels: labels(),
        },
        spec: IcspSpec {
            repository_digest_mirrors: mirrors,
        },
    };
    written.push(write_yaml(
        dir,
        "imageContentSourcePolicy.yaml",
        "ImageContentSourcePolicy",
        &icsp,
    )?);
    for catalog in images.iter().filter(|i| i.role == ImageRole::Catalog) {
        let name = catalog_source_name(&catalog.source);
        let resource = Resource {
            api_version: "operators.coreos.com/v1alpha1",
            kind: "CatalogSource",
            metadata: Metadata {
                name: name.clone(),
                namespace: Some(CATALOG_SOURCE_NAMESPACE.into()),
                labels: labels(),
            },
            spec: CatalogSourceSpec {
                source_type: "grpc",
                image: catalog.destination.to_string(),
                display_name: format!("{} (mirror)", catalog.source.repository),
                publisher: "kubectl-tvk mirror".into(),
                grpc_pod_config: GrpcPodConfig {
                    extract_content: ExtractContent {
                        catalog_dir: CATALOG_CONFIGS_DIR,
                        cache_dir: "/tmp/cache",
                    },
                },
            },
        };
        written.push(write_yaml(
            dir,
            &format!("catalogSource-{name}.yaml"),
            "CatalogSource",
            &resource,
        )?);
    }
    let mut lines: Vec<String> = images
        .iter()
        .map(|i| format!("{}={}\n", i.source, i.destination))
        .collect();
    lines.sort();
    lines.dedup();
    let path = dir.join("mapping.txt");
    std::fs::write(&path, lines.concat()).map_err(|source| ResourcesError::Write {
        path: path.clone(),
        source,
    })?;
    written.push(path);
    Ok(written)
}

fn write_yaml<T: Serialize>(
    dir: &Path,
    file: &str,
    what: &str,
    value: &T,
) -> Result<PathBuf, ResourcesError> {
    let text = yaml::to_string(value).map_err(|source| ResourcesError::Serialize {
        what: what.to_owned(),
        source,
    })?;
    let path = dir.join(file);
    std::fs::write(&path, text).map_err(|source| ResourcesError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// For a registry → dir run, the cluster's mirror is not known yet: only `mapping.txt` is
/// written, each line `source=oci:LAYOUT:source` (the name skopeo and a later
/// `--from dir:LAYOUT` run find the image by).
pub fn write_layout_listing(
    dir: &Path,
    layout: &Path,
    images: &[MirroredImage],
) -> Result<Vec<PathBuf>, ResourcesError> {
    std::fs::create_dir_all(dir).map_err(|source| ResourcesError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let mut lines: Vec<String> = images
        .iter()
        .map(|i| format!("{}=oci:{}:{}\n", i.source, layout.display(), i.destination))
        .collect();
    lines.sort();
    lines.dedup();
    let path = dir.join("mapping.txt");
    std::fs::write(&path, lines.concat()).map_err(|source| ResourcesError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(vec![path])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_source_names_are_dns_safe() {
        let r =
            ImageReference::parse("quay.io/trilio/TVK_catalog".to_lowercase().as_str()).unwrap();
        assert_eq!(catalog_source_name(&r), "tvk-catalog-mirror");
    }

    #[test]
    fn one_mirror_per_source_repository() {
        let d1 = "sha256:0000000000000000000000000000000000000000000000000000000000000001";
        let d2 = "sha256:0000000000000000000000000000000000000000000000000000000000000002";
        let img = |src: &str, dst: &str| MirroredImage {
            source: ImageReference::parse(src).unwrap(),
            destination: ImageReference::parse(dst).unwrap(),
            role: ImageRole::Related,
        };
        let images = [
            img(&format!("quay.io/a/b@{d1}"), &format!("m.local/x/a/b@{d1}")),
            img(&format!("quay.io/a/b@{d2}"), &format!("m.local/x/a/b@{d2}")),
            img(&format!("ghcr.io/c@{d1}"), &format!("m.local/x/c@{d1}")),
        ];
        let mirrors = repository_mirrors(&images);
        assert_eq!(mirrors.len(), 2);
        assert_eq!(mirrors[1].source, "quay.io/a/b");
        assert_eq!(mirrors[1].mirrors, ["m.local/x/a/b"]);
    }
}
