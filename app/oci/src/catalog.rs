//! File-based catalogs (FBC): parsing `olm.package`, `olm.channel` and `olm.bundle` documents
//! and selecting bundles by package, channel, semver range and channel heads.
//!
//! A catalog is read from a directory (YAML files, possibly multi-document, and JSON files,
//! possibly a stream of objects, as `opm` writes them) or from the `configs` directory of a
//! catalog image's layers (see [`crate::mirror`]). Documents of other schemas are ignored.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use semver::Version;
use serde::Deserialize;

use crate::yaml;

/// Largest catalog file read (a defence against hostile catalogs).
pub const MAX_CATALOG_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Why a catalog could not be read or a selection not be made.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A file could not be read.
    #[error("failed to read catalog file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid YAML/JSON or a document lacks required fields.
    #[error("invalid catalog document in {file}: {reason}")]
    Invalid {
        /// The file (or image path) it came from.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The selection names a package the catalog does not have.
    #[error("package {package:?} is not in the catalog; it has: {available}")]
    UnknownPackage {
        /// The package asked for.
        package: String,
        /// The packages present.
        available: String,
    },
    /// The selection names a channel the package does not have.
    #[error("channel {channel:?} is not in package {package:?}; it has: {available}")]
    UnknownChannel {
        /// The package.
        package: String,
        /// The channel asked for.
        channel: String,
        /// The channels present.
        available: String,
    },
    /// A version range was asked for but a bundle has no valid semver version.
    #[error(
        "bundle {bundle:?} has no valid semver version in its olm.package property, so it cannot be compared with --min-version/--max-version"
    )]
    NoVersion {
        /// The bundle.
        bundle: String,
    },
    /// A channel entry names a bundle the catalog does not define.
    #[error(
        "channel {channel:?} of package {package:?} lists bundle {bundle:?}, which the catalog does not define"
    )]
    MissingBundle {
        /// The package.
        package: String,
        /// The channel.
        channel: String,
        /// The bundle name.
        bundle: String,
    },
    /// The selection matched nothing (an empty mirror is almost certainly a mistake).
    #[error("the selection matched no bundle: check --package, --channel and the version range")]
    EmptySelection,
}

/// A related image of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RelatedImage {
    /// Its name in the bundle (may be empty).
    #[serde(default)]
    pub name: String,
    /// The image reference (by digest in well-formed catalogs).
    pub image: String,
}

/// An `olm.bundle`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// Bundle name (`tvk-operator.v1.2.3`).
    pub name: String,
    /// Its package.
    pub package: String,
    /// The bundle image.
    pub image: String,
    /// Images the operator runs.
    pub related_images: Vec<RelatedImage>,
    /// Version from the `olm.package` property.
    pub version: Option<Version>,
}

/// An entry of an `olm.channel`: the upgrade graph edges.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChannelEntry {
    /// The bundle name.
    pub name: String,
    /// The bundle this one replaces.
    #[serde(default)]
    pub replaces: Option<String>,
    /// Bundles this one skips.
    #[serde(default)]
    pub skips: Vec<String>,
}

/// An `olm.channel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// Channel name.
    pub name: String,
    /// Its entries.
    pub entries: Vec<ChannelEntry>,
}

impl Channel {
    /// Entries no other entry of the channel replaces or skips (normally exactly one).
    pub fn heads(&self) -> BTreeSet<&str> {
        let superseded: BTreeSet<&str> = self
            .entries
            .iter()
            .flat_map(|e| e.replaces.iter().chain(e.skips.iter()))
            .map(String::as_str)
            .collect();
        self.entries
            .iter()
            .map(|e| e.name.as_str())
            .filter(|n| !superseded.contains(n))
            .collect()
    }
}

/// An `olm.package` with its channels and bundles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Package {
    /// Package name.
    pub name: String,
    /// Default channel.
    pub default_channel: Option<String>,
    /// Channels by name.
    pub channels: BTreeMap<String, Channel>,
    /// Bundles by name.
    pub bundles: BTreeMap<String, Bundle>,
}

/// A parsed file-based catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Packages by name.
    pub packages: BTreeMap<String, Package>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPackage {
    name: String,
    default_channel: Option<String>,
}

#[derive(Deserialize)]
struct RawChannel {
    name: String,
    package: String,
    #[serde(default)]
    entries: Vec<ChannelEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBundle {
    name: String,
    package: String,
    image: String,
    #[serde(default)]
    related_images: Vec<RelatedImage>,
    #[serde(default)]
    properties: Vec<RawProperty>,
}

#[derive(Deserialize)]
struct RawProperty {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    value: serde_json::Value,
}

/// How bundles are chosen within one package.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionFilter {
    /// Lowest version included.
    pub min: Option<Version>,
    /// Highest version included.
    pub max: Option<Version>,
    /// Only channel heads.
    pub heads_only: bool,
}

impl Catalog {
    /// Reads every `.yaml`, `.yml` and `.json` file under `dir` (recursively).
    pub fn from_dir(dir: &Path) -> Result<Self, CatalogError> {
        let mut files = Vec::new();
        collect_files(dir, &mut files, 0)?;
        files.sort();
        let mut catalog = Self::default();
        for path in files {
            let meta = std::fs::metadata(&path).map_err(|source| CatalogError::Read {
                path: path.clone(),
                source,
            })?;
            if meta.len() > MAX_CATALOG_FILE_BYTES {
                return Err(CatalogError::Invalid {
                    file: path.display().to_string(),
                    reason: format!("larger than {MAX_CATALOG_FILE_BYTES} bytes"),
                });
            }
            let bytes = std::fs::read(&path).map_err(|source| CatalogError::Read {
                path: path.clone(),
                source,
            })?;
            catalog.add_file(&path.display().to_string(), &bytes)?;
        }
        Ok(catalog)
    }

    /// Adds the documents of one file (`name` decides the format by extension).
    pub fn add_file(&mut self, name: &str, bytes: &[u8]) -> Result<(), CatalogError> {
        let invalid = |reason: String| CatalogError::Invalid {
            file: name.to_owned(),
            reason,
        };
        let documents: Vec<serde_json::Value> = if name.ends_with(".json") {
            serde_json::Deserializer::from_slice(bytes)
                .into_iter::<serde_json::Value>()
                .collect::<Result<_, _>>()
                .map_err(|e| invalid(e.to_string()))?
        } else {
            let text = std::str::from_utf8(bytes).map_err(|e| invalid(e.to_string()))?;
            yaml::from_str_multi(text).map_err(|e| invalid(e.to_string()))?
        };
        for document in documents {
            self.add_document(document).map_err(invalid)?;
        }
        Ok(())
    }

    fn add_document(&mut self, document: serde_json::Value) -> Result<(), String> {
        let schema = document
            .get("schema")
            .and_then(|s| s.as_str())
            .unwrap_or_default()
            .to_owned();
        match schema.as_str() {
            "olm.package" => {
                let raw: RawPackage =
                    serde_json::from_value(document).map_err(|e| format!("olm.package: {e}"))?;
                let package = self.package_mut(&raw.name);
                package.default_channel = raw.default_channel;
            }
            "olm.channel" => {
                let raw: RawChannel =
                    serde_json::from_value(document).map_err(|e| format!("olm.channel: {e}"))?;
                self.package_mut(&raw.package).channels.insert(
                    raw.name.clone(),
                    Channel {
                        name: raw.name,
                        entries: raw.entries,
                    },
                );
            }
            "olm.bundle" => {
                let raw: RawBundle =
                    serde_json::from_value(document).map_err(|e| format!("olm.bundle: {e}"))?;
                let version = raw
                    .properties
                    .iter()
                    .filter(|p| p.kind == "olm.package")
                    .find_map(|p| p.value.get("version").and_then(|v| v.as_str()))
                    .and_then(|v| Version::parse(v.trim_start_matches('v')).ok());
                let bundle = Bundle {
                    name: raw.name.clone(),
                    package: raw.package.clone(),
                    image: raw.image,
                    related_images: raw.related_images,
                    version,
                };
                self.package_mut(&raw.package)
                    .bundles
                    .insert(raw.name, bundle);
            }
            _ => {}
        }
        Ok(())
    }

    fn package_mut(&mut self, name: &str) -> &mut Package {
        self.packages
            .entry(name.to_owned())
            .or_insert_with(|| Package {
                name: name.to_owned(),
                ..Package::default()
            })
    }

    /// The package `name`, or an error listing the ones present.
    pub fn package(&self, name: &str) -> Result<&Package, CatalogError> {
        self.packages
            .get(name)
            .ok_or_else(|| CatalogError::UnknownPackage {
                package: name.to_owned(),
                available: self.packages.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }
}

impl Package {
    /// The channel `name`, or an error listing the ones present.
    pub fn channel(&self, name: &str) -> Result<&Channel, CatalogError> {
        self.channels
            .get(name)
            .ok_or_else(|| CatalogError::UnknownChannel {
                package: self.name.clone(),
                channel: name.to_owned(),
                available: self.channels.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// The default channel, or the only channel when none is declared.
    pub fn default_channel(&self) -> Result<&Channel, CatalogError> {
        match &self.default_channel {
            Some(name) => self.channel(name),
            None if self.channels.len() == 1 => {
                self.channel(self.channels.keys().next().map_or("", String::as_str))
            }
            None => Err(CatalogError::UnknownChannel {
                package: self.name.clone(),
                channel: "<defaultChannel>".into(),
                available: self.channels.keys().cloned().collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// The bundles of `channel` that pass `filter`.
    pub fn select(
        &self,
        channel: &Channel,
        filter: &VersionFilter,
    ) -> Result<Vec<&Bundle>, CatalogError> {
        let heads = channel.heads();
        let mut out = Vec::new();
        for entry in &channel.entries {
            let bundle =
                self.bundles
                    .get(&entry.name)
                    .ok_or_else(|| CatalogError::MissingBundle {
                        package: self.name.clone(),
                        channel: channel.name.clone(),
                        bundle: entry.name.clone(),
                    })?;
            if filter.heads_only && !heads.contains(entry.name.as_str()) {
                continue;
            }
            if filter.min.is_some() || filter.max.is_some() {
                let version = bundle
                    .version
                    .as_ref()
                    .ok_or_else(|| CatalogError::NoVersion {
                        bundle: bundle.name.clone(),
                    })?;
                if filter.min.as_ref().is_some_and(|min| version < min)
                    || filter.max.as_ref().is_some_and(|max| version > max)
                {
                    continue;
                }
            }
            out.push(bundle);
        }
        Ok(out)
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<(), CatalogError> {
    if depth > 16 {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|source| CatalogError::Read {
        path: dir.to_owned(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| CatalogError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|source| CatalogError::Read {
            path: path.clone(),
            source,
        })?;
        if kind.is_dir() {
            collect_files(&path, out, depth + 1)?;
        } else if kind.is_file() && is_catalog_file(&path.to_string_lossy()) {
            out.push(path);
        }
    }
    Ok(())
}

/// Whether a file name is one a catalog reader parses.
pub fn is_catalog_file(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    !base.starts_with('.')
        && (base.ends_with(".yaml") || base.ends_with(".yml") || base.ends_with(".json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FBC: &str = r#"
schema: olm.package
name: tvk
defaultChannel: stable
---
schema: olm.channel
name: stable
package: tvk
entries:
- name: tvk.v1.0.0
- name: tvk.v1.1.0
  replaces: tvk.v1.0.0
- name: tvk.v1.2.0
  replaces: tvk.v1.1.0
---
schema: olm.bundle
name: tvk.v1.0.0
package: tvk
image: quay.io/t/b@sha256:0000000000000000000000000000000000000000000000000000000000000001
properties: [{type: olm.package, value: {packageName: tvk, version: 1.0.0}}]
---
schema: olm.bundle
name: tvk.v1.1.0
package: tvk
image: quay.io/t/b@sha256:0000000000000000000000000000000000000000000000000000000000000002
properties: [{type: olm.package, value: {packageName: tvk, version: 1.1.0}}]
---
schema: olm.bundle
name: tvk.v1.2.0
package: tvk
image: quay.io/t/b@sha256:0000000000000000000000000000000000000000000000000000000000000003
relatedImages: [{name: manager, image: quay.io/t/m@sha256:0000000000000000000000000000000000000000000000000000000000000004}]
properties: [{type: olm.package, value: {packageName: tvk, version: 1.2.0}}, {type: olm.gvk, value: {}}]
---
schema: olm.deprecations
package: tvk
"#;

    #[test]
    fn parses_and_selects_by_range_and_heads() {
        let mut catalog = Catalog::default();
        catalog.add_file("index.yaml", FBC.as_bytes()).unwrap();
        let package = catalog.package("tvk").unwrap();
        let stable = package.default_channel().unwrap();
        assert_eq!(stable.heads(), BTreeSet::from(["tvk.v1.2.0"]));
        let names =
            |bundles: Vec<&Bundle>| bundles.iter().map(|b| b.name.clone()).collect::<Vec<_>>();
        let all = package.select(stable, &VersionFilter::default()).unwrap();
        assert_eq!(names(all), ["tvk.v1.0.0", "tvk.v1.1.0", "tvk.v1.2.0"]);
        let range = VersionFilter {
            min: Some(Version::new(1, 1, 0)),
            max: Some(Version::new(1, 1, 9)),
            heads_only: false,
        };
        assert_eq!(
            names(package.select(stable, &range).unwrap()),
            ["tvk.v1.1.0"]
        );
        let heads = VersionFilter {
            heads_only: true,
            ..VersionFilter::default()
        };
        let head = package.select(stable, &heads).unwrap();
        assert_eq!(head[0].related_images[0].name, "manager");
        assert!(matches!(
            catalog.package("nope"),
            Err(CatalogError::UnknownPackage { .. })
        ));
        assert!(
            package
                .channel("fast")
                .unwrap_err()
                .to_string()
                .contains("stable")
        );
    }

    #[test]
    fn json_stream_files_parse() {
        let mut catalog = Catalog::default();
        let json = br#"{"schema":"olm.package","name":"p"}
{"schema":"olm.channel","name":"c","package":"p","entries":[{"name":"b"}]}
{"schema":"olm.bundle","name":"b","package":"p","image":"x.io/b:1","properties":[]}"#;
        catalog.add_file("catalog.json", json).unwrap();
        let p = catalog.package("p").unwrap();
        assert_eq!(p.default_channel().unwrap().name, "c");
        let err = p
            .select(
                p.channel("c").unwrap(),
                &VersionFilter {
                    min: Some(Version::new(1, 0, 0)),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(matches!(err, CatalogError::NoVersion { .. }));
        assert!(
            catalog
                .add_file("bad.yaml", b"schema: olm.bundle\nname: [")
                .is_err()
        );
    }
}
