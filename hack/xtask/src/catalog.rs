//! The file-based catalog: `catalog/template.yaml` (hand-edited: packages and their releases)
//! → `catalog/<package>/catalog.yaml` (`olm.package`, `olm.channel`, `olm.bundle`) and
//! `catalog/catalog.Dockerfile`.
//!
//! Channels: one per minor version (`stable-X.Y`) plus `stable` (the default), every release in
//! each channel it belongs to. Upgrade edges: a release `replaces` the one before it in the
//! template (or what it names) and skips everything from the previous minor (`olm.skipRange`
//! `>=X.(Y-1).0 <X.Y.Z`), matching the manager's upgrade policy (one minor at a time).
//! The release this tree builds gets its `olm.bundle` from the generated bundle and the bundle
//! image digest in `images/images.lock.json`; earlier releases keep the `olm.bundle` they
//! were published with, verbatim, in the template.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Files, bundle, images::ImageLock};

/// The hand-edited source of the catalog.
pub const TEMPLATE_PATH: &str = "catalog/template.yaml";
/// Directory of the catalog (the catalog image's build context).
pub const CATALOG_DIR: &str = "catalog";
/// Catalog image name.
pub const CATALOG_IMAGE: &str = "tvk-catalog";
/// Default channel of every package.
pub const DEFAULT_CHANNEL: &str = "stable";

/// `catalog/template.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogTemplate {
    /// `tvk.catalog.template/v1`.
    pub schema: String,
    /// One entry per package.
    pub packages: Vec<PackageTemplate>,
}

/// One package of the template.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PackageTemplate {
    /// Package name (`tvk-operator`, `tvk-application`).
    pub name: String,
    /// Releases, oldest first.
    pub releases: Vec<Release>,
}

/// One released (or to-be-released) version.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Release {
    /// Semver version.
    pub version: String,
    /// CSV this one replaces (default: the previous release's).
    pub replaces: Option<String>,
    /// Override of the computed `olm.skipRange`.
    pub skip_range: Option<String>,
    /// The published `olm.bundle` of an earlier release (absent for the one this tree builds).
    pub bundle: Option<Value>,
}

impl Release {
    /// `olm.skipRange`: `>=X.(Y-1).0 <X.Y.Z` (`>=X.0.0 <X.0.Z` for minor 0).
    pub fn skip_range(&self) -> String {
        if let Some(range) = &self.skip_range {
            return range.clone();
        }
        let v = semver::Version::parse(&self.version).ok();
        let (major, minor) = v.map(|v| (v.major, v.minor)).unwrap_or_default();
        format!(">={major}.{}.0 <{}", minor.saturating_sub(1), self.version)
    }
}

impl CatalogTemplate {
    /// Reads and checks `catalog/template.yaml`.
    pub fn read(root: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(root.join(TEMPLATE_PATH))
            .map_err(|e| format!("failed to read {TEMPLATE_PATH}: {e}"))?;
        let value = tvk_api::yaml::parse_single(&text, &tvk_api::yaml::Limits::default())
            .map_err(|e| format!("{TEMPLATE_PATH}: {e}"))?;
        let template: Self = serde_json::from_value(value)
            .map_err(|e| format!("{TEMPLATE_PATH}: not a catalog template: {e}"))?;
        if template.schema != "tvk.catalog.template/v1" {
            return Err(format!(
                "{TEMPLATE_PATH}: schema is {:?}, expected tvk.catalog.template/v1",
                template.schema
            ));
        }
        for package in &template.packages {
            let mut previous: Option<semver::Version> = None;
            for release in &package.releases {
                let version = semver::Version::parse(&release.version).map_err(|e| {
                    format!(
                        "{TEMPLATE_PATH}: package {} release {:?} is not a semver version: {e}",
                        package.name, release.version
                    )
                })?;
                if previous.as_ref().is_some_and(|p| *p >= version) {
                    return Err(format!(
                        "{TEMPLATE_PATH}: package {} lists {} after a newer or equal version (rule: releases oldest first, each once)",
                        package.name, release.version
                    ));
                }
                semver::VersionReq::parse(&release.skip_range().replace(' ', ", ")).map_err(
                    |e| {
                        format!(
                            "{TEMPLATE_PATH}: package {} release {}: skipRange {:?} is not a valid range: {e}",
                            package.name,
                            release.version,
                            release.skip_range()
                        )
                    },
                )?;
                previous = Some(version);
            }
        }
        Ok(template)
    }

    /// The releases of `package`, oldest first.
    pub fn releases(&self, package: &str) -> Result<&[Release], String> {
        self.packages
            .iter()
            .find(|p| p.name == package)
            .map(|p| p.releases.as_slice())
            .ok_or_else(|| format!("{TEMPLATE_PATH}: no package {package}; add it"))
    }
}

/// Channels a version is published in: the default channel and `stable-X.Y` (one per minor;
/// named with the `stable` prefix OLM's channel-naming good practice asks for).
pub fn channels_of(version: &str) -> Result<Vec<String>, String> {
    let v = semver::Version::parse(version)
        .map_err(|e| format!("version {version} is not semver: {e}"))?;
    Ok(vec![
        DEFAULT_CHANNEL.to_string(),
        format!("{DEFAULT_CHANNEL}-{}.{}", v.major, v.minor),
    ])
}

/// Generates `catalog/<package>/catalog.yaml` for every package and `catalog/catalog.Dockerfile`.
pub fn generate(root: &Path, lock: &ImageLock) -> Result<Files, String> {
    let template = CatalogTemplate::read(root)?;
    let bundles = crate::generators::packaging_without_catalog(root, lock)?;
    let mut files = Files::new();
    let mut dockerfile = String::from(
        "# generated by cargo xtask generate (hack/xtask/src/catalog.rs) — do not edit\n# A file-based catalog: OLM v1 ClusterCatalog serves it as is; OLM v0 needs a\n# CatalogSource with spec.grpcPodConfig.extractContent (catalogDir: /configs).\nFROM scratch\n",
    );
    for spec in bundle::BUNDLES {
        let package = template
            .packages
            .iter()
            .find(|p| p.name == spec.package)
            .ok_or_else(|| format!("{TEMPLATE_PATH}: no package {}; add it", spec.package))?;
        let csv_path = PathBuf::from(format!(
            "{}/manifests/{}.clusterserviceversion.yaml",
            spec.dir, spec.package
        ));
        let csv_text = bundles
            .get(&csv_path)
            .ok_or_else(|| format!("no CSV generated at {}", csv_path.display()))?;
        let csv = tvk_api::yaml::parse_single(csv_text, &tvk_api::yaml::Limits::default())
            .map_err(|e| format!("{}: {e}", csv_path.display()))?;
        let documents = package_documents(root, package, spec, &csv, lock)?;
        let body = tvk_api::yaml::to_multi_document(&documents)
            .map_err(|e| format!("failed to write the catalog of {}: {e}", spec.package))?;
        files.insert(
            PathBuf::from(format!("catalog/{}/catalog.yaml", spec.package)),
            format!(
                "# generated by cargo xtask generate from {TEMPLATE_PATH}, the bundles and images/images.lock.json — do not edit\n{body}"
            ),
        );
        dockerfile.push_str(&format!("ADD {0} /configs/{0}\n", spec.package));
    }
    dockerfile.push_str(&format!(
        "LABEL operators.operatorframework.io.index.configs.v1=/configs\nLABEL name=\"{CATALOG_IMAGE}\" vendor=\"{}\" version=\"{}\" release=\"1\" summary=\"TVK-RS file-based catalog\" description=\"File-based OLM catalog of the tvk-operator and tvk-application packages\"\n",
        crate::images::VENDOR,
        env!("CARGO_PKG_VERSION")
    ));
    files.insert(PathBuf::from("catalog/catalog.Dockerfile"), dockerfile);
    files.insert(
        PathBuf::from("catalog/.indexignore"),
        "# generated by cargo xtask generate (hack/xtask/src/catalog.rs) — do not edit\n# Not catalog content: opm and tvk-olm-validate skip these (gitignore syntax).\ntemplate.yaml\nREADME.md\ncatalog.Dockerfile\n.indexignore\n".to_string(),
    );
    Ok(files)
}

fn package_documents(
    root: &Path,
    package: &PackageTemplate,
    spec: &bundle::BundleSpec,
    csv: &Value,
    lock: &ImageLock,
) -> Result<Vec<Value>, String> {
    let file = format!("catalog/{}/catalog.yaml", spec.package);
    let current = env!("CARGO_PKG_VERSION");
    let mut documents = vec![json!({
        "schema": "olm.package",
        "name": spec.package,
        "defaultChannel": DEFAULT_CHANNEL,
        "description": csv["spec"]["description"],
        "icon": bundle::icon(root)?
    })];
    // Channel entries.
    let mut channels: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut bundles = Vec::new();
    for (i, release) in package.releases.iter().enumerate() {
        let name = format!("{}.v{}", spec.package, release.version);
        let replaces = release.replaces.clone().or_else(|| {
            i.checked_sub(1)
                .map(|p| format!("{}.v{}", spec.package, package.releases[p].version))
        });
        for channel in channels_of(&release.version)? {
            let mut entry = json!({"name": name, "skipRange": release.skip_range()});
            if let Some(r) = &replaces {
                // Only an edge to a bundle that is in this channel.
                let in_channel = channels
                    .get(&channel)
                    .is_some_and(|entries| entries.iter().any(|e| e["name"] == r.as_str()));
                if in_channel {
                    entry["replaces"] = json!(r);
                }
            }
            channels.entry(channel).or_default().push(entry);
        }
        let bundle = if release.version == current {
            current_bundle(spec, csv, lock)?
        } else {
            release.bundle.clone().ok_or_else(|| {
                format!(
                    "{TEMPLATE_PATH}: package {} release {} has no bundle (rule: earlier releases keep their published olm.bundle)",
                    spec.package, release.version
                )
            })?
        };
        check_bundle(&file, &bundle, spec.package)?;
        bundles.push(bundle);
    }
    if !channels.contains_key(DEFAULT_CHANNEL) {
        return Err(format!(
            "{file}: default channel {DEFAULT_CHANNEL} has no entries (rule: the default channel exists)"
        ));
    }
    for (channel, entries) in &channels {
        check_one_head(&file, channel, entries)?;
        documents.push(json!({
            "schema": "olm.channel",
            "package": spec.package,
            "name": channel,
            "entries": entries
        }));
    }
    documents.extend(bundles);
    Ok(documents)
}

/// The `olm.bundle` of the version this tree builds.
fn current_bundle(
    spec: &bundle::BundleSpec,
    csv: &Value,
    lock: &ImageLock,
) -> Result<Value, String> {
    let image = lock.reference(spec.image).map_err(|_| {
        format!(
            "{}: no digest of the bundle image {} (run `cargo xtask images` to build the bundle images)",
            crate::images::LOCK_PATH,
            spec.image
        )
    })?;
    let mut properties = vec![json!({
        "type": "olm.package",
        "value": {"packageName": spec.package, "version": env!("CARGO_PKG_VERSION")}
    })];
    for owned in csv["spec"]["customresourcedefinitions"]["owned"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let group = owned["name"]
            .as_str()
            .and_then(|n| n.split_once('.'))
            .map(|(_, g)| g)
            .unwrap_or_default();
        properties.push(json!({
            "type": "olm.gvk",
            "value": {"group": group, "kind": owned["kind"], "version": owned["version"]}
        }));
    }
    let mut metadata = csv["spec"].clone();
    if let Some(m) = metadata.as_object_mut() {
        for key in [
            "install",
            "relatedImages",
            "replaces",
            "version",
            "webhookdefinitions",
        ] {
            m.remove(key);
        }
        m.insert("annotations".into(), csv["metadata"]["annotations"].clone());
        m.insert("labels".into(), csv["metadata"]["labels"].clone());
    }
    properties.push(json!({"type": "olm.csv.metadata", "value": metadata}));
    let mut related = vec![json!({"name": "", "image": image})];
    related.extend(
        csv["spec"]["relatedImages"]
            .as_array()
            .into_iter()
            .flatten()
            .cloned(),
    );
    Ok(json!({
        "schema": "olm.bundle",
        "name": csv["metadata"]["name"],
        "package": spec.package,
        "image": image,
        "properties": properties,
        "relatedImages": related
    }))
}

/// A bundle names its image by digest, has exactly one `olm.package` property naming this
/// package, and every related image by digest.
fn check_bundle(file: &str, bundle: &Value, package: &str) -> Result<(), String> {
    let name = bundle["name"].as_str().unwrap_or("<unnamed>");
    let image = bundle["image"].as_str().ok_or_else(|| {
        format!("{file}: olm.bundle {name} has no image (rule: bundle images set)")
    })?;
    bundle::check_digest_reference(file, image)?;
    for related in bundle["relatedImages"].as_array().into_iter().flatten() {
        bundle::check_digest_reference(file, related["image"].as_str().unwrap_or_default())?;
    }
    let packages: Vec<&Value> = bundle["properties"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["type"] == "olm.package")
        .collect();
    if packages.len() != 1 || packages[0]["value"]["packageName"] != package {
        return Err(format!(
            "{file}: olm.bundle {name} has {} olm.package properties (rule: exactly one olm.package property naming {package})",
            packages.len()
        ));
    }
    Ok(())
}

/// Exactly one entry that nothing replaces or skips.
pub fn check_one_head(file: &str, channel: &str, entries: &[Value]) -> Result<(), String> {
    let names: Vec<&str> = entries.iter().filter_map(|e| e["name"].as_str()).collect();
    let mut superseded = BTreeSet::new();
    for entry in entries {
        if let Some(r) = entry["replaces"].as_str() {
            superseded.insert(r.to_string());
        }
        for s in entry["skips"].as_array().into_iter().flatten() {
            if let Some(s) = s.as_str() {
                superseded.insert(s.to_string());
            }
        }
        if let Some(range) = entry["skipRange"].as_str()
            && let Ok(req) = semver::VersionReq::parse(&range.replace(' ', ", "))
        {
            for other in &names {
                if let Some((_, v)) = other.split_once(".v")
                    && let Ok(v) = semver::Version::parse(v)
                    && req.matches(&v)
                {
                    superseded.insert(other.to_string());
                }
            }
        }
    }
    let heads: Vec<&&str> = names.iter().filter(|n| !superseded.contains(**n)).collect();
    if heads.len() == 1 {
        Ok(())
    } else {
        Err(format!(
            "{file}: channel {channel} has {} heads {heads:?} (rule: exactly one channel head)",
            heads.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template_root(template: &str) -> tvk_testkit::TempDir {
        let dir = tvk_testkit::TempDir::new("xtask-catalog").unwrap();
        std::fs::create_dir_all(dir.path().join("catalog")).unwrap();
        std::fs::write(dir.path().join(TEMPLATE_PATH), template).unwrap();
        dir
    }

    #[test]
    fn generated_catalog_has_one_head_per_channel_and_bundles_by_digest() {
        let root = crate::repo_root();
        let lock = crate::bundle::tests::fake_lock();
        let files = generate(&root, &lock).unwrap();
        for spec in bundle::BUNDLES {
            let text = &files[Path::new(&format!("catalog/{}/catalog.yaml", spec.package))];
            let docs: Vec<Value> =
                tvk_api::yaml::parse_documents(text, &tvk_api::yaml::Limits::default())
                    .unwrap()
                    .into_iter()
                    .map(|d| d.value)
                    .collect();
            let package: Vec<&Value> = docs
                .iter()
                .filter(|d| d["schema"] == "olm.package")
                .collect();
            assert_eq!(package.len(), 1);
            assert_eq!(package[0]["defaultChannel"], DEFAULT_CHANNEL);
            assert!(package[0]["icon"]["base64data"].is_string());
            let channels: Vec<&Value> = docs
                .iter()
                .filter(|d| d["schema"] == "olm.channel")
                .collect();
            let names: Vec<&str> = channels
                .iter()
                .map(|c| c["name"].as_str().unwrap())
                .collect();
            assert_eq!(names, ["stable", "stable-0.1"]);
            let bundle = docs.iter().find(|d| d["schema"] == "olm.bundle").unwrap();
            assert_eq!(
                bundle["image"],
                lock.reference(spec.image).unwrap().as_str()
            );
            assert_eq!(bundle["relatedImages"][0]["image"], bundle["image"]);
            let types: Vec<&str> = bundle["properties"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["type"].as_str().unwrap())
                .collect();
            assert_eq!(types.iter().filter(|t| **t == "olm.package").count(), 1);
            assert!(types.contains(&"olm.gvk") && types.contains(&"olm.csv.metadata"));
        }
        let dockerfile = &files[Path::new("catalog/catalog.Dockerfile")];
        assert!(dockerfile.contains("operators.operatorframework.io.index.configs.v1=/configs"));
        assert!(dockerfile.contains("ADD tvk-operator /configs/tvk-operator"));
    }

    #[test]
    fn channel_with_two_heads_is_refused() {
        let entries = vec![json!({"name": "p.v0.1.0"}), json!({"name": "p.v0.1.1"})];
        let err = check_one_head("catalog/p/catalog.yaml", "stable", &entries).unwrap_err();
        assert!(
            err.contains("catalog/p/catalog.yaml") && err.contains("exactly one channel head"),
            "{err}"
        );
        let chained = vec![
            json!({"name": "p.v0.1.0"}),
            json!({"name": "p.v0.1.1", "replaces": "p.v0.1.0"}),
        ];
        assert!(check_one_head("f", "stable", &chained).is_ok());
        let skipped = vec![
            json!({"name": "p.v0.1.0"}),
            json!({"name": "p.v0.2.0", "skipRange": ">=0.1.0 <0.2.0"}),
        ];
        assert!(check_one_head("f", "stable", &skipped).is_ok());
    }

    #[test]
    fn later_releases_chain_and_an_explicit_replaces_can_strand_a_head() {
        let old_bundle = |v: &str| {
            format!(
                "        bundle:\n          schema: olm.bundle\n          name: tvk-operator.v{v}\n          package: tvk-operator\n          image: r/b@sha256:{}\n          properties:\n            - type: olm.package\n              value: {{packageName: tvk-operator, version: {v}}}\n",
                "c".repeat(64)
            )
        };
        let template = |replaces: &str| {
            format!(
                "schema: tvk.catalog.template/v1\npackages:\n  - name: tvk-operator\n    releases:\n      - version: 0.0.1\n{}      - version: 0.0.2\n{}      - version: 0.1.0\n{replaces}  - name: tvk-application\n    releases:\n      - version: 0.1.0\n",
                old_bundle("0.0.1"),
                old_bundle("0.0.2")
            )
        };
        let lock = crate::bundle::tests::fake_lock();
        // Copy what generation reads besides the template.
        let with = |text: &str| {
            let dir = template_root(text);
            for file in ["bundle/icon.svg", crate::bundle::TVM_EXAMPLE] {
                let to = dir.path().join(file);
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(crate::repo_root().join(file), to).unwrap();
            }
            let examples = crate::repo_root().join("examples");
            std::fs::create_dir_all(dir.path().join("examples")).unwrap();
            for entry in std::fs::read_dir(&examples).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    std::fs::copy(
                        &path,
                        dir.path().join("examples").join(path.file_name().unwrap()),
                    )
                    .unwrap();
                }
            }
            let result = generate(dir.path(), &lock);
            (dir, result)
        };
        let (_dir, ok) = with(&template(""));
        let files = ok.unwrap();
        let text = &files[Path::new("catalog/tvk-operator/catalog.yaml")];
        assert!(text.contains("replaces: tvk-operator.v0.0.2"), "{text}");
        assert!(text.contains("name: stable-0.0"), "{text}");
        // 0.1.0 replacing 0.0.1 leaves 0.0.2 as a second head in `stable`: refused.
        let (_dir, err) = with(&template(
            "        replaces: tvk-operator.v0.0.1\n        skipRange: \">=0.1.0 <0.1.0\"\n",
        ));
        let err = err.unwrap_err();
        assert!(err.contains("heads") && err.contains("stable"), "{err}");
    }

    #[test]
    fn bad_templates_and_bundles_are_refused() {
        let dir = template_root(
            "schema: tvk.catalog.template/v1\npackages:\n  - name: p\n    releases:\n      - version: 0.2.0\n      - version: 0.1.0\n",
        );
        let err = CatalogTemplate::read(dir.path()).unwrap_err();
        assert!(
            err.contains(TEMPLATE_PATH) && err.contains("oldest first"),
            "{err}"
        );
        let dir = template_root(
            "schema: tvk.catalog.template/v1\npackages:\n  - name: p\n    releases:\n      - version: one\n",
        );
        assert!(
            CatalogTemplate::read(dir.path())
                .unwrap_err()
                .contains("not a semver")
        );
        let dir = template_root(
            "schema: tvk.catalog.template/v1\npackages:\n  - name: p\n    releases:\n      - version: 0.1.0\n        skipRange: \"~>< 1\"\n",
        );
        assert!(
            CatalogTemplate::read(dir.path())
                .unwrap_err()
                .contains("not a valid range")
        );
        let digest = format!("r/b@sha256:{}", "d".repeat(64));
        let package =
            json!({"type": "olm.package", "value": {"packageName": "p", "version": "0.1.0"}});
        let ok = json!({"name": "p.v0.1.0", "image": digest, "properties": [package], "relatedImages": [{"image": digest}]});
        assert!(check_bundle("f", &ok, "p").is_ok());
        let mut tagged = ok.clone();
        tagged["image"] = json!("r/b:0.1.0");
        assert!(check_bundle("f", &tagged, "p").unwrap_err().contains("tag"));
        let mut no_image = ok.clone();
        no_image.as_object_mut().unwrap().remove("image");
        assert!(
            check_bundle("f", &no_image, "p")
                .unwrap_err()
                .contains("images set")
        );
        let mut two = ok.clone();
        two["properties"] = json!([package, package]);
        assert!(
            check_bundle("f", &two, "p")
                .unwrap_err()
                .contains("exactly one olm.package")
        );
        assert!(check_bundle("f", &ok, "q").is_err());
    }
}
