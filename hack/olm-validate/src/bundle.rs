//! Bundle directories: reading `manifests/`, `metadata/annotations.yaml` and `bundle.Dockerfile`,
//! the bundle-level rules (operator-registry's bundle format checks, operator-framework/api's
//! `BundleValidator`, the compressed size limit), then the CSV, CRD, OperatorHub and good
//! practice rules on what was read.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::{Path, PathBuf},
};

use serde_json::Value;

use crate::{
    crd, csv, good_practices,
    json::{read_bounded, read_yaml_documents, str_at},
    operatorhub,
    report::Report,
};

/// The largest accepted bundle, compressed as `tar.gz` (issue #4: "the compressed bundle under
/// 1 MiB"). OLM stores an unpacked bundle in a ConfigMap, which etcd caps at about 1.5 MiB.
pub const MAX_COMPRESSED_BUNDLE_BYTES: u64 = 1024 * 1024;

/// Above this share of the limit the size is reported as a warning (as operator-framework/api
/// does at 85 %).
const SIZE_WARN_PERCENT: u64 = 85;

pub(crate) const MEDIATYPE: &str = "operators.operatorframework.io.bundle.mediatype.v1";
pub(crate) const MANIFESTS: &str = "operators.operatorframework.io.bundle.manifests.v1";
pub(crate) const METADATA: &str = "operators.operatorframework.io.bundle.metadata.v1";
pub(crate) const PACKAGE: &str = "operators.operatorframework.io.bundle.package.v1";
pub(crate) const CHANNELS: &str = "operators.operatorframework.io.bundle.channels.v1";
pub(crate) const DEFAULT_CHANNEL: &str = "operators.operatorframework.io.bundle.channel.default.v1";
const OPENSHIFT_VERSIONS: &str = "com.redhat.openshift.versions";

/// Kinds OLM installs from a registry+v1 bundle (operator-registry's supported resources).
const SUPPORTED_KINDS: &[&str] = &[
    "ClusterServiceVersion",
    "CustomResourceDefinition",
    "Secret",
    "ClusterRole",
    "ClusterRoleBinding",
    "ConfigMap",
    "ServiceAccount",
    "Service",
    "Role",
    "RoleBinding",
    "PrometheusRule",
    "ServiceMonitor",
    "PodDisruptionBudget",
    "PriorityClass",
    "VerticalPodAutoscaler",
    "ConsoleYAMLSample",
    "ConsoleQuickStart",
    "ConsoleCLIDownload",
    "ConsoleLink",
    "NetworkPolicy",
];

/// One object of `manifests/`.
#[derive(Debug, Clone)]
pub(crate) struct Manifest {
    pub(crate) path: PathBuf,
    pub(crate) value: Value,
}

impl Manifest {
    pub(crate) fn kind(&self) -> &str {
        str_at(&self.value, "/kind").unwrap_or_default()
    }

    pub(crate) fn api_version(&self) -> &str {
        str_at(&self.value, "/apiVersion").unwrap_or_default()
    }

    pub(crate) fn name(&self) -> &str {
        str_at(&self.value, "/metadata/name").unwrap_or_default()
    }
}

/// What a bundle directory holds, as far as it could be read.
#[derive(Debug, Default)]
pub(crate) struct BundleContents {
    pub(crate) dir: PathBuf,
    pub(crate) csv: Option<Manifest>,
    pub(crate) crds: Vec<Manifest>,
    /// Every object of `manifests/`, the CSV and CRDs included.
    pub(crate) objects: Vec<Manifest>,
    pub(crate) package: Option<String>,
    pub(crate) channels: Vec<String>,
    pub(crate) default_channel: Option<String>,
}

/// Validates a bundle directory (`manifests/`, `metadata/annotations.yaml`, optional
/// `bundle.Dockerfile`) with every rule of README.md that applies to bundles.
pub fn validate_bundle(dir: &Path) -> Report {
    let mut report = Report::default();
    let mut bundle = BundleContents {
        dir: dir.to_path_buf(),
        ..BundleContents::default()
    };
    read_manifests(&mut bundle, &mut report);
    let annotations = read_annotations(&mut bundle, &mut report);
    if let Some(annotations) = &annotations {
        check_dockerfile(dir, annotations, &mut report);
    }
    check_size(dir, &mut report);
    for crd in &bundle.crds {
        crd::validate(crd, &mut report);
    }
    if let Some(csv) = &bundle.csv {
        csv::validate(&bundle, csv, &mut report);
        check_owned_crds(&bundle, csv, &mut report);
        check_service_accounts(&bundle, csv, &mut report);
        operatorhub::validate(&bundle, csv, &mut report);
        good_practices::validate(&bundle, csv, &mut report);
    }
    report
}

fn read_manifests(bundle: &mut BundleContents, report: &mut Report) {
    let dir = bundle.dir.join("manifests");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => {
            report.error(
                &dir,
                "bundle.layout",
                format!("cannot read the manifests directory ({e}); a bundle needs manifests/ with the CSV and CRDs"),
            );
            return;
        }
    };
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_file() => files.push(path),
            Ok(t) if t.is_dir() => report.error(
                &path,
                "bundle.layout",
                "manifests/ must be flat: OLM does not read subdirectories; move these files up",
            ),
            _ => report.error(
                &path,
                "bundle.layout",
                "only regular files belong in manifests/ (no symbolic links); replace it with the file itself",
            ),
        }
    }
    files.sort();
    for path in files {
        let documents = match read_yaml_documents(&path) {
            Ok(documents) => documents,
            Err(e) => {
                report.error(
                    &path,
                    "bundle.manifest.parse",
                    format!("not a valid manifest: {e}"),
                );
                continue;
            }
        };
        if documents.len() > 1 {
            report.error(
                &path,
                "bundle.manifest.one-object",
                format!(
                    "holds {} objects, but OLM reads one object per bundle file; put each object in its own file",
                    documents.len()
                ),
            );
        }
        for value in documents {
            let manifest = Manifest {
                path: path.clone(),
                value,
            };
            if manifest.api_version().is_empty() || manifest.kind().is_empty() {
                report.error(
                    &path,
                    "bundle.manifest.parse",
                    "an object without apiVersion and kind; every manifest must be a Kubernetes object",
                );
                continue;
            }
            if !SUPPORTED_KINDS.contains(&manifest.kind()) {
                report.error(
                    &path,
                    "bundle.manifest.kind",
                    format!(
                        "kind {} is not one OLM installs from a bundle (supported: {}); ship it another way",
                        manifest.kind(),
                        SUPPORTED_KINDS.join(", ")
                    ),
                );
            }
            match manifest.kind() {
                "ClusterServiceVersion" => {
                    if let Some(first) = &bundle.csv {
                        report.error(
                            &path,
                            "bundle.csv.count",
                            format!(
                                "a second ClusterServiceVersion (the first is in {}); a bundle has exactly one",
                                first.path.display()
                            ),
                        );
                    } else {
                        bundle.csv = Some(manifest.clone());
                    }
                }
                "CustomResourceDefinition" => bundle.crds.push(manifest.clone()),
                _ => {}
            }
            bundle.objects.push(manifest);
        }
    }
    if bundle.csv.is_none() {
        report.error(
            &dir,
            "bundle.csv.count",
            "no ClusterServiceVersion in manifests/; a bundle has exactly one",
        );
    }
}

/// Reads `metadata/annotations.yaml` and checks its keys; returns the annotations when the
/// file could be read.
fn read_annotations(
    bundle: &mut BundleContents,
    report: &mut Report,
) -> Option<BTreeMap<String, String>> {
    let path = bundle.dir.join("metadata").join("annotations.yaml");
    let rule = "bundle.annotations";
    let value = match read_yaml_documents(&path) {
        Ok(mut docs) if docs.len() == 1 => docs.remove(0),
        Ok(docs) => {
            report.error(
                &path,
                rule,
                format!(
                    "holds {} documents; it must be one `annotations:` mapping",
                    docs.len()
                ),
            );
            return None;
        }
        Err(e) => {
            report.error(
                &path,
                rule,
                format!(
                    "bundle metadata missing or unreadable: {e}; write metadata/annotations.yaml"
                ),
            );
            return None;
        }
    };
    let Some(map) = value.get("annotations").and_then(Value::as_object) else {
        report.error(&path, rule, "has no `annotations:` mapping at the top");
        return None;
    };
    let mut annotations = BTreeMap::new();
    for (key, value) in map {
        match value.as_str() {
            Some(s) => {
                annotations.insert(key.clone(), s.to_owned());
            }
            None => report.error(
                &path,
                rule,
                format!("annotation {key} is {value}, not a string; quote it"),
            ),
        }
    }
    let get = |key: &str| {
        annotations
            .get(key)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    };
    let expect = |report: &mut Report, key: &str, rule: &'static str, want: &str| match get(key) {
        Some(v) if v == want => {}
        Some(v) => report.error(&path, rule, format!("{key} is {v:?}; it must be {want:?}")),
        None => report.error(&path, rule, format!("{key} is missing; set it to {want:?}")),
    };
    expect(
        report,
        MEDIATYPE,
        "bundle.annotations.mediatype",
        "registry+v1",
    );
    expect(
        report,
        MANIFESTS,
        "bundle.annotations.manifests",
        "manifests/",
    );
    expect(report, METADATA, "bundle.annotations.metadata", "metadata/");
    match get(PACKAGE) {
        Some(package) if crate::json::is_dns1123_label(package) => {
            bundle.package = Some(package.to_owned());
        }
        Some(package) => report.error(
            &path,
            "bundle.annotations.package",
            format!("{PACKAGE} {package:?} is not a valid package name (a DNS-1123 label)"),
        ),
        None => report.error(
            &path,
            "bundle.annotations.package",
            format!("{PACKAGE} is missing; set it to the package name"),
        ),
    }
    match get(CHANNELS) {
        Some(channels) => {
            bundle.channels = channels.split(',').map(|c| c.trim().to_owned()).collect();
            if bundle.channels.iter().any(String::is_empty) {
                report.error(
                    &path,
                    "bundle.annotations.channels",
                    format!("{CHANNELS} {channels:?} has an empty channel name"),
                );
            }
        }
        None => report.error(
            &path,
            "bundle.annotations.channels",
            format!("{CHANNELS} is missing; list the channels this bundle is in, comma-separated"),
        ),
    }
    if let Some(default) = get(DEFAULT_CHANNEL) {
        if !bundle.channels.iter().any(|c| c == default) {
            report.error(
                &path,
                "bundle.annotations.default-channel",
                format!(
                    "default channel {default:?} is not one of the bundle's channels {:?}; add it to {CHANNELS} or change it",
                    bundle.channels
                ),
            );
        }
        bundle.default_channel = Some(default.to_owned());
    }
    if let Some(versions) = get(OPENSHIFT_VERSIONS)
        && !valid_openshift_versions(versions)
    {
        report.error(
            &path,
            "bundle.annotations.openshift-versions",
            format!(
                "{OPENSHIFT_VERSIONS} {versions:?} is not an OpenShift version range: write v4.14 (that and later), =v4.14 (only it) or v4.14-v4.16"
            ),
        );
    }
    Some(annotations)
}

/// `v4.12`, `=v4.12` or `v4.12-v4.15`, as Red Hat's certification pipeline accepts them.
fn valid_openshift_versions(text: &str) -> bool {
    let version = |v: &str| {
        v.strip_prefix('v').is_some_and(|rest| {
            let parts: Vec<&str> = rest.split('.').collect();
            parts.len() == 2
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    let text = text.trim();
    if let Some(single) = text.strip_prefix('=') {
        return version(single);
    }
    match text.split_once('-') {
        Some((low, high)) => version(low) && version(high),
        None => version(text),
    }
}

/// The `LABEL`s of a Dockerfile (continuation lines joined, quotes removed).
fn dockerfile_labels(text: &str) -> (BTreeMap<String, String>, Vec<(String, String)>) {
    let mut labels = BTreeMap::new();
    let mut copies = Vec::new();
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.starts_with('#') || trimmed.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            logical.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        logical.push(current);
    }
    for instruction in logical {
        let (word, rest) = instruction
            .split_once(char::is_whitespace)
            .unwrap_or((instruction.as_str(), ""));
        if word.eq_ignore_ascii_case("LABEL") {
            for token in shell_words(rest) {
                if let Some((k, v)) = token.split_once('=') {
                    labels.insert(k.to_owned(), v.to_owned());
                }
            }
        } else if word.eq_ignore_ascii_case("COPY") {
            let words: Vec<String> = shell_words(rest)
                .into_iter()
                .filter(|w| !w.starts_with("--"))
                .collect();
            if let [sources @ .., dest] = words.as_slice() {
                for source in sources {
                    copies.push((source.clone(), dest.clone()));
                }
            }
        }
    }
    (labels, copies)
}

/// Splits on unquoted whitespace, removing double and single quotes.
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quote = None;
    let mut started = false;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => current.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                started = true;
            }
            (None, c) if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut current));
                    started = false;
                }
            }
            (None, c) => {
                current.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(current);
    }
    words
}

fn check_dockerfile(dir: &Path, annotations: &BTreeMap<String, String>, report: &mut Report) {
    let path = dir.join("bundle.Dockerfile");
    if !path.exists() {
        return;
    }
    let text = match read_bounded(&path) {
        Ok(text) => text,
        Err(e) => {
            report.error(
                &path,
                "bundle.dockerfile.labels",
                format!("unreadable: {e}"),
            );
            return;
        }
    };
    let (labels, copies) = dockerfile_labels(&text);
    for (key, value) in annotations {
        match labels.get(key) {
            Some(label) if label == value => {}
            Some(label) => report.error(
                &path,
                "bundle.dockerfile.labels",
                format!(
                    "LABEL {key}={label:?} differs from metadata/annotations.yaml ({value:?}); the image labels and the annotations must agree"
                ),
            ),
            None => report.error(
                &path,
                "bundle.dockerfile.labels",
                format!("no LABEL {key}; metadata/annotations.yaml has it as {value:?}, and the image must carry it too"),
            ),
        }
    }
    for key in labels.keys() {
        if key.starts_with("operators.operatorframework.io.bundle.")
            && !annotations.contains_key(key)
        {
            report.error(
                &path,
                "bundle.dockerfile.labels",
                format!("LABEL {key} is not in metadata/annotations.yaml; add it there or drop the label"),
            );
        }
    }
    for (source, target) in [("manifests", "/manifests/"), ("metadata", "/metadata/")] {
        let copied = copies.iter().any(|(from, to)| {
            from.trim_end_matches('/').rsplit('/').next() == Some(source)
                && to.trim_end_matches('/') == target.trim_end_matches('/')
        });
        if !copied {
            report.error(
                &path,
                "bundle.dockerfile.copy",
                format!("no COPY of {source}/ to {target}; OLM reads the bundle image's {target}"),
            );
        }
    }
}

/// Counts what is written to it.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The size of the bundle directory as a gzip-compressed tar, without writing it anywhere.
pub(crate) fn compressed_size(dir: &Path) -> std::io::Result<u64> {
    let gzip = flate2::write::GzEncoder::new(Counter(0), flate2::Compression::default());
    let mut tar = tar::Builder::new(gzip);
    tar.follow_symlinks(false);
    for sub in ["manifests", "metadata"] {
        let path = dir.join(sub);
        if path.is_dir() {
            tar.append_dir_all(sub, &path)?;
        }
    }
    let gzip = tar.into_inner()?;
    Ok(gzip.finish()?.0)
}

fn check_size(dir: &Path, report: &mut Report) {
    let size = match compressed_size(dir) {
        Ok(size) => size,
        Err(e) => {
            report.error(
                dir,
                "bundle.size",
                format!("cannot measure the bundle's compressed size: {e}"),
            );
            return;
        }
    };
    if size > MAX_COMPRESSED_BUNDLE_BYTES {
        report.error(
            dir,
            "bundle.size",
            format!(
                "the bundle is {size} bytes compressed, over the limit of {MAX_COMPRESSED_BUNDLE_BYTES}; shrink the CRD schemas (descriptions) or the icon"
            ),
        );
    } else if size * 100 > MAX_COMPRESSED_BUNDLE_BYTES * SIZE_WARN_PERCENT {
        report.warn(
            dir,
            "bundle.size",
            format!("the bundle is {size} bytes compressed, close to the limit of {MAX_COMPRESSED_BUNDLE_BYTES}"),
        );
    }
}

/// (group, version, kind) of every version of every CRD in the bundle.
fn bundle_crd_keys(bundle: &BundleContents) -> Vec<(String, String, String, PathBuf)> {
    let mut keys = Vec::new();
    for crd in &bundle.crds {
        let group = str_at(&crd.value, "/spec/group").unwrap_or_default();
        let kind = str_at(&crd.value, "/spec/names/kind").unwrap_or_default();
        for version in crate::json::array_at(&crd.value, "/spec/versions") {
            let name = str_at(version, "/name").unwrap_or_default();
            keys.push((group.into(), name.into(), kind.into(), crd.path.clone()));
        }
    }
    keys
}

/// operator-framework/api `validateOwnedCRDs`: owned CRDs are in the bundle, no duplicates,
/// and a CRD shipped but not owned is worth a warning.
fn check_owned_crds(bundle: &BundleContents, csv: &Manifest, report: &mut Report) {
    let mut present: BTreeMap<(String, String, String), PathBuf> = BTreeMap::new();
    for (group, version, kind, path) in bundle_crd_keys(bundle) {
        let key = (group, version, kind);
        if present.contains_key(&key) {
            report.error(
                &path,
                "bundle.crd.duplicate",
                format!(
                    "CRD {}/{} {} is in the bundle twice; keep one",
                    key.0, key.1, key.2
                ),
            );
        }
        present.insert(key, path);
    }
    let mut owned_group_kinds = BTreeSet::new();
    for owned in crate::json::array_at(&csv.value, "/spec/customresourcedefinitions/owned") {
        let name = str_at(owned, "/name").unwrap_or_default();
        let group = name.split_once('.').map_or(name, |(_, g)| g).to_owned();
        let version = str_at(owned, "/version").unwrap_or_default().to_owned();
        let kind = str_at(owned, "/kind").unwrap_or_default().to_owned();
        let key = (group.clone(), version, kind.clone());
        if present.contains_key(&key) {
            owned_group_kinds.insert((group, kind));
        } else {
            report.error(
                &csv.path,
                "bundle.crd.owned-missing",
                format!(
                    "owned CRD {name} (version {}, kind {}) is not in the bundle with that group, version and kind; add the CRD to manifests/ or fix the owned entry",
                    key.1, key.2
                ),
            );
        }
    }
    let mut warned = BTreeSet::new();
    for ((group, _, kind), path) in &present {
        if !owned_group_kinds.contains(&(group.clone(), kind.clone()))
            && warned.insert((group.clone(), kind.clone()))
        {
            report.warn(
                path,
                "bundle.crd.not-owned",
                format!("CRD {kind}.{group} is in the bundle but not among the CSV's owned CRDs"),
            );
        }
    }
}

/// operator-framework/api `validateServiceAccounts`: OLM creates the deployments' service
/// accounts itself, so a ServiceAccount object of the same name in the bundle conflicts.
fn check_service_accounts(bundle: &BundleContents, csv: &Manifest, report: &mut Report) {
    let used: BTreeSet<&str> = crate::json::array_at(&csv.value, "/spec/install/spec/deployments")
        .iter()
        .filter_map(|d| str_at(d, "/spec/template/spec/serviceAccountName"))
        .collect();
    for object in &bundle.objects {
        if object.kind() == "ServiceAccount" && used.contains(object.name()) {
            report.error(
                &object.path,
                "bundle.service-account",
                format!(
                    "ServiceAccount {} is also a deployment's serviceAccountName in the CSV; OLM creates that one from the CSV's permissions, so remove this file",
                    object.name()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerfile_labels_and_copies_parse() {
        let text = "FROM scratch\n# comment\nLABEL a=b \\\n  \"c\"=\"d e\"\nlabel f='g'\nCOPY --chown=1 manifests /manifests/\nCOPY bundle/metadata /metadata/\n";
        let (labels, copies) = dockerfile_labels(text);
        assert_eq!(labels.get("a").map(String::as_str), Some("b"));
        assert_eq!(labels.get("c").map(String::as_str), Some("d e"));
        assert_eq!(labels.get("f").map(String::as_str), Some("g"));
        assert_eq!(copies.len(), 2);
        assert_eq!(copies[1], ("bundle/metadata".into(), "/metadata/".into()));
    }

    #[test]
    fn openshift_version_ranges() {
        for ok in ["v4.14", "=v4.14", "v4.12-v4.16"] {
            assert!(valid_openshift_versions(ok), "{ok}");
        }
        for bad in ["4.14", "v4", "v4.14-", ">=v4.14", "v4.x"] {
            assert!(!valid_openshift_versions(bad), "{bad}");
        }
    }
}
