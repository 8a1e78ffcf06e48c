//! oc-mirror's `ImageSetConfiguration` (`mirror.openshift.io/v2alpha1`): the `mirror.operators`
//! section (and `mirror.additionalImages`), turned into per-catalog selections.
//!
//! Selection follows oc-mirror v2: a channel listed without versions means its head; a channel
//! with `minVersion`/`maxVersion` means that range within it; a package without channels means
//! its default channel (head, or the package-level range); a catalog without packages means the
//! heads of every channel of every package, or everything with `full: true`.

use std::path::{Path, PathBuf};

use semver::Version;
use serde::Deserialize;

use crate::{
    catalog::{Bundle, Catalog, CatalogError, VersionFilter},
    yaml,
};

/// Why an ImageSetConfiguration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageSetError {
    /// The file could not be read.
    #[error("failed to read ImageSetConfiguration {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid ImageSetConfiguration.
    #[error("invalid ImageSetConfiguration {}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The parsed configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageSetConfiguration {
    /// `mirror.openshift.io/v2alpha1` (or the older `v1alpha2`, same operators shape).
    pub api_version: String,
    /// `ImageSetConfiguration`.
    pub kind: String,
    /// What to mirror.
    #[serde(default)]
    pub mirror: MirrorSection,
}

/// `mirror:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MirrorSection {
    /// Operator catalogs.
    #[serde(default)]
    pub operators: Vec<OperatorCatalog>,
    /// Extra images mirrored as they are.
    #[serde(default)]
    pub additional_images: Vec<AdditionalImage>,
}

/// `mirror.operators[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorCatalog {
    /// The catalog image reference (or a local FBC directory).
    pub catalog: String,
    /// Everything in the catalog instead of channel heads (only without `packages`).
    #[serde(default)]
    pub full: bool,
    /// Packages to mirror; empty means every package.
    #[serde(default)]
    pub packages: Vec<PackageSpec>,
}

/// `packages[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageSpec {
    /// Package name.
    pub name: String,
    /// Channels; empty means the default channel.
    #[serde(default)]
    pub channels: Vec<ChannelSpec>,
    /// Lowest version (package level).
    pub min_version: Option<String>,
    /// Highest version (package level).
    pub max_version: Option<String>,
}

/// `channels[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelSpec {
    /// Channel name.
    pub name: String,
    /// Lowest version.
    pub min_version: Option<String>,
    /// Highest version.
    pub max_version: Option<String>,
}

/// `additionalImages[]`.
#[derive(Debug, Clone, Deserialize)]
pub struct AdditionalImage {
    /// The image reference.
    pub name: String,
}

impl ImageSetConfiguration {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<Self, ImageSetError> {
        let text = std::fs::read_to_string(path).map_err(|source| ImageSetError::Read {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |reason: String| ImageSetError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let config: Self = yaml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if !matches!(
            config.api_version.as_str(),
            "mirror.openshift.io/v2alpha1" | "mirror.openshift.io/v1alpha2"
        ) {
            return Err(invalid(format!(
                "apiVersion is {:?}, expected mirror.openshift.io/v2alpha1",
                config.api_version
            )));
        }
        if config.kind != "ImageSetConfiguration" {
            return Err(invalid(format!(
                "kind is {:?}, expected ImageSetConfiguration",
                config.kind
            )));
        }
        for operator in &config.mirror.operators {
            for package in &operator.packages {
                parse_version(&package.min_version).map_err(&invalid)?;
                parse_version(&package.max_version).map_err(&invalid)?;
                for channel in &package.channels {
                    parse_version(&channel.min_version).map_err(&invalid)?;
                    parse_version(&channel.max_version).map_err(&invalid)?;
                }
            }
        }
        Ok(config)
    }
}

fn parse_version(v: &Option<String>) -> Result<Option<Version>, String> {
    v.as_deref()
        .map(|s| {
            Version::parse(s.trim_start_matches('v'))
                .map_err(|e| format!("{s:?} is not a semver version: {e}"))
        })
        .transpose()
}

fn filter(min: &Option<String>, max: &Option<String>) -> VersionFilter {
    let min = parse_version(min).ok().flatten();
    let max = parse_version(max).ok().flatten();
    VersionFilter {
        heads_only: min.is_none() && max.is_none(),
        min,
        max,
    }
}

impl OperatorCatalog {
    /// The bundles this entry selects from `catalog` (de-duplicated, in catalog order).
    pub fn select<'a>(&self, catalog: &'a Catalog) -> Result<Vec<&'a Bundle>, CatalogError> {
        let mut out: Vec<&Bundle> = Vec::new();
        let mut push = |bundles: Vec<&'a Bundle>| {
            for b in bundles {
                if !out
                    .iter()
                    .any(|o| o.name == b.name && o.package == b.package)
                {
                    out.push(b);
                }
            }
        };
        if self.packages.is_empty() {
            let every = VersionFilter {
                heads_only: !self.full,
                ..VersionFilter::default()
            };
            for package in catalog.packages.values() {
                for channel in package.channels.values() {
                    push(package.select(channel, &every)?);
                }
            }
        }
        for spec in &self.packages {
            let package = catalog.package(&spec.name)?;
            if spec.channels.is_empty() {
                let channel = package.default_channel()?;
                push(package.select(channel, &filter(&spec.min_version, &spec.max_version))?);
            }
            for channel_spec in &spec.channels {
                let channel = package.channel(&channel_spec.name)?;
                push(package.select(
                    channel,
                    &filter(&channel_spec.min_version, &channel_spec.max_version),
                )?);
            }
        }
        if out.is_empty() {
            return Err(CatalogError::EmptySelection);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FBC: &str = "
schema: olm.package
name: a
defaultChannel: stable
---
schema: olm.channel
name: stable
package: a
entries: [{name: a.v1}, {name: a.v2, replaces: a.v1}]
---
schema: olm.channel
name: fast
package: a
entries: [{name: a.v3}]
---
{schema: olm.bundle, name: a.v1, package: a, image: x.io/a/b:1, properties: [{type: olm.package, value: {packageName: a, version: 1.0.0}}]}
---
{schema: olm.bundle, name: a.v2, package: a, image: x.io/a/b:2, properties: [{type: olm.package, value: {packageName: a, version: 2.0.0}}]}
---
{schema: olm.bundle, name: a.v3, package: a, image: x.io/a/b:3, properties: [{type: olm.package, value: {packageName: a, version: 3.0.0}}]}
";

    fn names(bundles: Vec<&Bundle>) -> Vec<&str> {
        bundles.iter().map(|b| b.name.as_str()).collect()
    }

    fn operator(yaml: &str) -> OperatorCatalog {
        crate::yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn selection_follows_oc_mirror_rules() {
        let mut catalog = Catalog::default();
        catalog.add_file("c.yaml", FBC.as_bytes()).unwrap();
        // No packages: heads of every channel; full: everything.
        assert_eq!(
            names(operator("catalog: x").select(&catalog).unwrap()),
            ["a.v3", "a.v2"]
        );
        assert_eq!(
            names(
                operator("{catalog: x, full: true}")
                    .select(&catalog)
                    .unwrap()
            ),
            ["a.v3", "a.v1", "a.v2"]
        );
        // A package without channels: the default channel's head, or the package-level range.
        assert_eq!(
            names(
                operator("{catalog: x, packages: [{name: a}]}")
                    .select(&catalog)
                    .unwrap()
            ),
            ["a.v2"]
        );
        assert_eq!(
            names(
                operator("{catalog: x, packages: [{name: a, minVersion: 1.0.0}]}")
                    .select(&catalog)
                    .unwrap()
            ),
            ["a.v1", "a.v2"]
        );
        // A channel with a range.
        let o = operator(
            "{catalog: x, packages: [{name: a, channels: [{name: stable, maxVersion: 1.5.0}, {name: fast}]}]}",
        );
        assert_eq!(names(o.select(&catalog).unwrap()), ["a.v1", "a.v3"]);
        let o = operator("{catalog: x, packages: [{name: a, channels: [{name: beta}]}]}");
        assert!(matches!(
            o.select(&catalog),
            Err(CatalogError::UnknownChannel { .. })
        ));
        let o = operator("{catalog: x, packages: [{name: a, minVersion: 9.0.0}]}");
        assert!(matches!(
            o.select(&catalog),
            Err(CatalogError::EmptySelection)
        ));
    }
}
