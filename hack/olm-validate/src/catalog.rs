//! File-based catalogs: what `opm validate` checks. The files are read as opm reads them (every
//! YAML or JSON file at any depth, `.indexignore` files honoured with gitignore rules), then the
//! declarative config is checked as operator-registry's `ConvertToModel` and `Model.Validate`
//! do (packages, default channels, channel heads, replaces cycles, stranded bundles, skip
//! ranges, the `olm.package` property), plus the project's rule that bundle and related images
//! are pinned by digest.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use serde_json::Value;

use crate::{
    image::check_pinned,
    json::{FILE_LIMITS, array_at, nonempty_at, read_bounded, read_yaml_documents, str_at},
    operatorhub::{ICON_MEDIATYPES, check_icon_data},
    report::Report,
    semver_range::SemverRange,
};

/// The name of the ignore files opm honours in a catalog directory.
pub const INDEX_IGNORE: &str = ".indexignore";

/// Deepest directory nesting read (a defence against pathological trees).
const MAX_DEPTH: usize = 32;

#[derive(Debug)]
struct Blob {
    path: PathBuf,
    value: Value,
}

impl Blob {
    fn str(&self, pointer: &str) -> &str {
        str_at(&self.value, pointer).unwrap_or_default()
    }
}

/// Validates a file-based catalog directory with every catalog rule of README.md.
pub fn validate_catalog(dir: &Path) -> Report {
    let mut report = Report::default();
    let blobs = read_blobs(dir, &mut report);
    let mut packages: BTreeMap<String, Vec<&Blob>> = BTreeMap::new();
    let mut channels: BTreeMap<(String, String), Vec<&Blob>> = BTreeMap::new();
    let mut bundles: BTreeMap<(String, String), Vec<&Blob>> = BTreeMap::new();
    for blob in &blobs {
        match blob.str("/schema") {
            "olm.package" => packages
                .entry(blob.str("/name").to_owned())
                .or_default()
                .push(blob),
            "olm.channel" => channels
                .entry((
                    blob.str("/package").to_owned(),
                    blob.str("/name").to_owned(),
                ))
                .or_default()
                .push(blob),
            "olm.bundle" => bundles
                .entry((
                    blob.str("/package").to_owned(),
                    blob.str("/name").to_owned(),
                ))
                .or_default()
                .push(blob),
            _ => {}
        }
    }
    if packages.is_empty() && channels.is_empty() && bundles.is_empty() {
        report.error(
            dir,
            "catalog.empty",
            "no olm.package, olm.channel or olm.bundle blob found; is this the catalog directory?",
        );
    }
    check_packages(&packages, &channels, &mut report);
    check_channels(&packages, &channels, &bundles, &mut report);
    check_bundles(&packages, &channels, &bundles, &mut report);
    report
}

fn read_blobs(dir: &Path, report: &mut Report) -> Vec<Blob> {
    let mut blobs = Vec::new();
    if !dir.is_dir() {
        report.error(
            dir,
            "catalog.read",
            "not a directory; give the catalog's directory",
        );
        return blobs;
    }
    let walk = ignore::WalkBuilder::new(dir)
        .standard_filters(false)
        .add_custom_ignore_filename(INDEX_IGNORE)
        .follow_links(false)
        .max_depth(Some(MAX_DEPTH))
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();
    for entry in walk {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                report.error(dir, "catalog.read", format!("cannot walk the catalog: {e}"));
                continue;
            }
        };
        let path = entry.path();
        let Some(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() || entry.file_name() == INDEX_IGNORE {
            continue;
        }
        if kind.is_symlink() {
            report.warn(
                path,
                "catalog.file",
                "symbolic link not followed; put the file itself in the catalog",
            );
            continue;
        }
        // opm decodes every file that .indexignore does not exclude, whatever its name: a
        // Dockerfile or a README in the catalog directory breaks `opm validate` too.
        let documents = if entry.file_name().to_string_lossy().ends_with(".json") {
            read_json_stream(path)
        } else {
            read_yaml_documents(path)
        };
        let documents = match documents {
            Ok(documents) => documents,
            Err(e) => {
                report.error(
                    path,
                    "catalog.parse",
                    format!("not valid catalog content ({e}); opm reads every file here, so fix it or list it in {INDEX_IGNORE}"),
                );
                continue;
            }
        };
        for value in documents {
            if !value.is_object() {
                report.error(
                    path,
                    "catalog.parse",
                    format!(
                        "holds {}, not a catalog object; opm reads every file here, so list files that are not catalog content in {INDEX_IGNORE}",
                        short(&value)
                    ),
                );
                continue;
            }
            if str_at(&value, "/schema").is_none_or(str::is_empty) {
                report.error(
                    path,
                    "catalog.blob.schema",
                    "a catalog object without a schema field; every blob needs one (olm.package, olm.channel, olm.bundle, …)",
                );
                continue;
            }
            blobs.push(Blob {
                path: path.to_path_buf(),
                value,
            });
        }
    }
    blobs
}

/// The start of a value, for messages.
fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// A stream of JSON objects, as `opm render` writes them.
fn read_json_stream(path: &Path) -> Result<Vec<Value>, String> {
    let text = read_bounded(path)?;
    let mut out = Vec::new();
    for value in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
        out.push(value.map_err(|e| e.to_string())?);
        if out.len() > FILE_LIMITS.max_total_bytes / 2 {
            return Err("too many objects".into());
        }
    }
    Ok(out)
}

type Keyed<'a> = BTreeMap<(String, String), Vec<&'a Blob>>;

fn check_packages(
    packages: &BTreeMap<String, Vec<&Blob>>,
    channels: &Keyed<'_>,
    report: &mut Report,
) {
    for (name, blobs) in packages {
        let package = blobs[0];
        for extra in &blobs[1..] {
            report.error(
                &extra.path,
                "catalog.package.duplicate",
                format!(
                    "a second olm.package {name:?} (the first is in {}); keep exactly one",
                    package.path.display()
                ),
            );
        }
        if name.is_empty() {
            report.error(
                &package.path,
                "catalog.package.name",
                "an olm.package without a name",
            );
            continue;
        }
        let own: BTreeSet<&str> = channels
            .keys()
            .filter(|(p, _)| p == name)
            .map(|(_, c)| c.as_str())
            .collect();
        if own.is_empty() {
            report.error(
                &package.path,
                "catalog.package.channels",
                format!(
                    "package {name:?} has no olm.channel; it must contain at least one channel"
                ),
            );
        }
        match nonempty_at(&package.value, "/defaultChannel") {
            None => report.error(
                &package.path,
                "catalog.package.default-channel",
                format!("package {name:?} has no defaultChannel; set it to one of {own:?}"),
            ),
            Some(default) if !own.contains(default) => report.error(
                &package.path,
                "catalog.package.default-channel",
                format!("default channel {default:?} of package {name:?} is not among its channels {own:?}"),
            ),
            Some(_) => {}
        }
        if let Some(icon) = package.value.get("icon") {
            let data = nonempty_at(icon, "/base64data");
            match nonempty_at(icon, "/mediatype") {
                Some(m) if ICON_MEDIATYPES.contains(&m) => match data {
                    None => report.error(
                        &package.path,
                        "catalog.package.icon",
                        "icon has a mediatype but no base64data",
                    ),
                    Some(data) => {
                        if let Err(e) = check_icon_data(data, m) {
                            report.warn(
                                &package.path,
                                "catalog.package.icon",
                                format!("icon: {e}"),
                            );
                        }
                    }
                },
                other => report.error(
                    &package.path,
                    "catalog.package.icon",
                    format!("icon mediatype {other:?} is not one of {ICON_MEDIATYPES:?}"),
                ),
            }
        }
    }
}

fn check_channels(
    packages: &BTreeMap<String, Vec<&Blob>>,
    channels: &Keyed<'_>,
    bundles: &Keyed<'_>,
    report: &mut Report,
) {
    for ((package, name), blobs) in channels {
        let channel = blobs[0];
        let path = &channel.path;
        let at = format!("channel {name:?} of package {package:?}");
        for extra in &blobs[1..] {
            report.error(
                &extra.path,
                "catalog.channel.duplicate",
                format!("{at} is defined twice (also in {})", path.display()),
            );
        }
        if name.is_empty() {
            report.error(
                path,
                "catalog.channel.name",
                format!("an olm.channel of package {package:?} without a name"),
            );
        }
        if !packages.contains_key(package) {
            report.error(
                path,
                "catalog.channel.package",
                format!("{at}: package {package:?} has no olm.package blob"),
            );
        }
        let entries = array_at(&channel.value, "/entries");
        if entries.is_empty() {
            report.error(
                path,
                "catalog.channel.empty",
                format!("{at} has no entries; it must contain at least one bundle"),
            );
            continue;
        }
        let mut graph: BTreeMap<&str, (&str, Vec<&str>)> = BTreeMap::new();
        for entry in entries {
            let entry_name = str_at(entry, "/name").unwrap_or_default();
            if entry_name.is_empty() {
                report.error(
                    path,
                    "catalog.channel.entry",
                    format!("{at}: an entry without a name"),
                );
                continue;
            }
            let replaces = str_at(entry, "/replaces").unwrap_or_default();
            let mut skips = Vec::new();
            for (i, skip) in array_at(entry, "/skips").iter().enumerate() {
                match skip.as_str() {
                    Some(s) if !s.is_empty() => skips.push(s),
                    _ => report.error(
                        path,
                        "catalog.channel.entry",
                        format!("{at}: entry {entry_name}: skips[{i}] is empty"),
                    ),
                }
            }
            if let Some(range) = str_at(entry, "/skipRange")
                && let Err(e) = SemverRange::parse(range)
            {
                report.error(
                    path,
                    "catalog.channel.skip-range",
                    format!("{at}: entry {entry_name}: {e}"),
                );
            }
            if graph.insert(entry_name, (replaces, skips)).is_some() {
                report.error(
                    path,
                    "catalog.channel.entry",
                    format!("{at}: entry {entry_name:?} is listed twice"),
                );
            }
            if !bundles.contains_key(&(package.clone(), entry_name.to_owned())) {
                report.error(
                    path,
                    "catalog.channel.entry-bundle",
                    format!("{at}: entry {entry_name:?} has no olm.bundle in package {package:?}"),
                );
            }
        }
        if let Err((rule, message)) = check_replaces_chain(&graph) {
            report.error(path, rule, format!("{at}: {message}"));
        }
    }
}

/// operator-registry `validateReplacesChain`: exactly one head; from the head, following
/// `replaces` reaches every entry not skipped by another; no cycle.
fn check_replaces_chain(
    graph: &BTreeMap<&str, (&str, Vec<&str>)>,
) -> Result<(), (&'static str, String)> {
    let incoming: BTreeSet<&str> = graph
        .values()
        .flat_map(|(replaces, skips)| std::iter::once(*replaces).chain(skips.iter().copied()))
        .filter(|n| !n.is_empty())
        .collect();
    let heads: Vec<&str> = graph
        .keys()
        .copied()
        .filter(|n| !incoming.contains(n))
        .collect();
    let head = match heads.as_slice() {
        [head] => *head,
        [] => {
            return Err((
                "catalog.channel.head",
                "no channel head found in graph (every entry is replaced or skipped by another: a cycle?)".into(),
            ));
        }
        many => {
            return Err((
                "catalog.channel.head",
                format!(
                    "multiple channel heads found in graph: {}; exactly one entry may be replaced by none",
                    many.join(", ")
                ),
            ));
        }
    };
    let skipped: BTreeSet<&str> = graph
        .values()
        .flat_map(|(_, skips)| skips.iter().copied())
        .collect();
    let mut chain = vec![head];
    let mut reached: BTreeSet<&str> = BTreeSet::from([head]);
    let mut current = head;
    while let Some((replaces, _)) = graph.get(current) {
        if replaces.is_empty() || skipped.contains(replaces) {
            break;
        }
        chain.push(replaces);
        if !reached.insert(replaces) {
            return Err((
                "catalog.channel.cycle",
                format!(
                    "detected cycle in replaces chain of upgrade graph: {}",
                    chain.join(" -> ")
                ),
            ));
        }
        current = replaces;
    }
    let stranded: Vec<&str> = graph
        .keys()
        .copied()
        .filter(|n| !reached.contains(n) && !skipped.contains(n))
        .collect();
    if !stranded.is_empty() {
        return Err((
            "catalog.channel.stranded",
            format!(
                "channel contains one or more stranded bundles: {}; link them into the replaces chain or skip them",
                stranded.join(", ")
            ),
        ));
    }
    Ok(())
}

fn check_bundles(
    packages: &BTreeMap<String, Vec<&Blob>>,
    channels: &Keyed<'_>,
    bundles: &Keyed<'_>,
    report: &mut Report,
) {
    let in_channels: BTreeSet<(&str, &str)> = channels
        .iter()
        .flat_map(|((package, _), blobs)| {
            array_at(&blobs[0].value, "/entries")
                .iter()
                .filter_map(|e| str_at(e, "/name"))
                .map(move |n| (package.as_str(), n))
        })
        .collect();
    let mut versions: BTreeMap<(&str, String), Vec<&str>> = BTreeMap::new();
    for ((package, name), blobs) in bundles {
        let bundle = blobs[0];
        let path = &bundle.path;
        let at = format!("bundle {name:?} of package {package:?}");
        for extra in &blobs[1..] {
            report.error(
                &extra.path,
                "catalog.bundle.duplicate",
                format!(
                    "{at} is defined twice (also in {}); bundle names are unique in a package",
                    path.display()
                ),
            );
        }
        if name.is_empty() {
            report.error(
                path,
                "catalog.bundle.name",
                format!("an olm.bundle of package {package:?} without a name"),
            );
        }
        if !packages.contains_key(package) {
            report.error(
                path,
                "catalog.bundle.package",
                format!("{at}: package {package:?} has no olm.package blob"),
            );
        }
        if !in_channels.contains(&(package.as_str(), name.as_str())) {
            report.error(
                path,
                "catalog.bundle.not-in-channel",
                format!("{at} is not found in any channel entries; add it to a channel or drop it"),
            );
        }
        match nonempty_at(&bundle.value, "/image") {
            None => report.error(
                path,
                "catalog.bundle.image",
                format!("{at}: bundle image must be set"),
            ),
            Some(image) => {
                if let Err(e) = check_pinned(image) {
                    report.error(path, "catalog.bundle.image-digest", format!("{at}: {e}"));
                }
            }
        }
        for (i, related) in array_at(&bundle.value, "/relatedImages").iter().enumerate() {
            match nonempty_at(related, "/image") {
                None => report.error(
                    path,
                    "catalog.bundle.related-images",
                    format!("{at}: relatedImages[{i}] has no image"),
                ),
                Some(image) => {
                    if let Err(e) = check_pinned(image) {
                        report.error(
                            path,
                            "catalog.bundle.image-digest",
                            format!("{at}: relatedImages[{i}]: {e}"),
                        );
                    }
                }
            }
        }
        let package_properties: Vec<&Value> = array_at(&bundle.value, "/properties")
            .iter()
            .filter(|p| str_at(p, "/type") == Some("olm.package"))
            .collect();
        match package_properties.as_slice() {
            [property] => {
                let property_package = str_at(property, "/value/packageName").unwrap_or_default();
                if property_package != package {
                    report.error(
                        path,
                        "catalog.bundle.package-property",
                        format!("{at}: its olm.package property names package {property_package:?}; it must be {package:?}"),
                    );
                }
                let version = str_at(property, "/value/version").unwrap_or_default();
                match semver::Version::parse(version) {
                    Ok(v) => versions
                        .entry((package.as_str(), v.to_string()))
                        .or_default()
                        .push(name.as_str()),
                    Err(e) => report.error(
                        path,
                        "catalog.bundle.package-property",
                        format!("{at}: olm.package version {version:?} is not semver: {e}"),
                    ),
                }
            }
            many => report.error(
                path,
                "catalog.bundle.package-property",
                format!(
                    "{at} has {} properties of type olm.package; it must have exactly one",
                    many.len()
                ),
            ),
        }
    }
    for ((package, version), names) in versions {
        if names.len() > 1 {
            let file = bundles
                .get(&(package.to_owned(), names[1].to_owned()))
                .map_or_else(PathBuf::new, |b| b[0].path.clone());
            report.error(
                &file,
                "catalog.bundle.version-duplicate",
                format!("package {package:?}: bundles {names:?} have the same version {version}"),
            );
        }
    }
}
