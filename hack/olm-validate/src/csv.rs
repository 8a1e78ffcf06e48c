//! ClusterServiceVersion rules: operator-framework/api `CSVValidator` (name format, replaces,
//! examples, install modes, mandatory fields), OLM's CSV schema for the install strategy,
//! webhook definitions and related images, and the `olm.skipRange` annotation as OLM parses it.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::{
    bundle::{BundleContents, Manifest},
    json::{array_at, is_dns1123_subdomain, nonempty_at, parse_tolerant, str_at},
    report::Report,
    semver_range::SemverRange,
};

const INSTALL_MODES: [&str; 4] = [
    "OwnNamespace",
    "SingleNamespace",
    "MultiNamespace",
    "AllNamespaces",
];

/// `<operator name>.v?<semver>` as operator-framework/api's `parseCSVNameFormat` reads it.
pub(crate) fn parse_csv_name(name: &str) -> Result<(&str, semver::Version), String> {
    if !is_dns1123_subdomain(name) {
        return Err(format!(
            "{name:?} is not a DNS-1123 subdomain (lower-case letters, digits, '-' and '.')"
        ));
    }
    let (operator, version) = name
        .split_once('.')
        .ok_or_else(|| format!("{name:?} must have the form <operator name>.v<X.Y.Z>"))?;
    let version = semver::Version::parse(version.trim_start_matches('v'))
        .map_err(|e| format!("{name:?} contains an invalid semver {version:?}: {e}"))?;
    Ok((operator, version))
}

pub(crate) fn validate(bundle: &BundleContents, csv: &Manifest, report: &mut Report) {
    let path = &csv.path;
    let v = &csv.value;
    if csv.api_version() != "operators.coreos.com/v1alpha1" {
        report.error(
            path,
            "csv.api-version",
            format!(
                "apiVersion {:?} must be operators.coreos.com/v1alpha1",
                csv.api_version()
            ),
        );
    }
    let version = match nonempty_at(v, "/spec/version") {
        Some(text) => match semver::Version::parse(text) {
            Ok(version) => Some(version),
            Err(e) => {
                report.error(
                    path,
                    "csv.version",
                    format!("spec.version {text:?} is not semver: {e}"),
                );
                None
            }
        },
        None => {
            report.error(path, "csv.version", "spec.version must be set (X.Y.Z)");
            None
        }
    };
    match parse_csv_name(csv.name()) {
        Err(e) => report.error(path, "csv.name", format!("metadata.name {e}")),
        Ok((operator, name_version)) => {
            if let Some(package) = &bundle.package
                && operator != package
            {
                report.error(
                    path,
                    "csv.name",
                    format!(
                        "metadata.name {:?} must start with the package name {package:?} (<package>.v<version>)",
                        csv.name()
                    ),
                );
            }
            if let Some(version) = &version
                && &name_version != version
            {
                report.error(
                    path,
                    "csv.name",
                    format!(
                        "metadata.name {:?} says version {name_version} but spec.version is {version}; they must agree",
                        csv.name()
                    ),
                );
            }
        }
    }
    if nonempty_at(v, "/spec/displayName").is_none() {
        report.error(path, "csv.display-name", "spec.displayName must be set");
    }
    if let Some(replaces) = str_at(v, "/spec/replaces")
        && let Err(e) = parse_csv_name(replaces)
    {
        report.error(path, "csv.replaces", format!("spec.replaces {e}"));
    }
    for skip in array_at(v, "/spec/skips") {
        match skip.as_str() {
            Some(name) => {
                if let Err(e) = parse_csv_name(name) {
                    report.error(path, "csv.skips", format!("spec.skips entry {e}"));
                }
            }
            None => report.error(
                path,
                "csv.skips",
                format!("spec.skips entry {skip} is not a string"),
            ),
        }
    }
    if let Some(range) = str_at(v, "/metadata/annotations/olm.skipRange")
        && let Err(e) = SemverRange::parse(range)
    {
        report.error(
            path,
            "csv.skip-range",
            format!("annotation olm.skipRange: {e}; OLM expects e.g. \">=1.0.0 <1.2.0\""),
        );
    }
    if let Some(min) = nonempty_at(v, "/spec/minKubeVersion")
        && parse_tolerant(min).is_none()
    {
        report.error(
            path,
            "csv.min-kube-version",
            format!("spec.minKubeVersion {min:?} is not a version such as 1.25.0"),
        );
    }
    check_arch_labels(csv, report);
    let deployments = check_install_strategy(csv, report);
    let install_modes = check_install_modes(csv, report);
    let owned = check_owned(csv, report);
    check_examples(csv, &owned, report);
    check_webhooks(csv, &deployments, &install_modes, &owned, report);
    for (i, image) in array_at(v, "/spec/relatedImages").iter().enumerate() {
        if nonempty_at(image, "/name").is_none() || nonempty_at(image, "/image").is_none() {
            report.error(
                path,
                "csv.related-images",
                format!("spec.relatedImages[{i}] needs both name and image"),
            );
        }
    }
}

/// operator-framework/api `multiarch`: `operatorframework.io/arch.<arch>` and `os.<os>` labels
/// say which platforms the operator supports; their value must be `supported`.
fn check_arch_labels(csv: &Manifest, report: &mut Report) {
    const ARCHES: [&str; 6] = ["amd64", "arm64", "ppc64le", "s390x", "386", "arm"];
    let rule = "csv.arch-labels";
    let mut arches = 0;
    if let Some(Value::Object(labels)) = csv.value.pointer("/metadata/labels") {
        for (key, value) in labels {
            let (known, kind) = if let Some(arch) = key.strip_prefix("operatorframework.io/arch.") {
                arches += 1;
                (ARCHES.contains(&arch), "architecture")
            } else if let Some(os) = key.strip_prefix("operatorframework.io/os.") {
                (os == "linux", "operating system")
            } else {
                continue;
            };
            if !known {
                report.error(
                    &csv.path,
                    rule,
                    format!(
                        "label {key}: not a known {kind} (architectures: {ARCHES:?}; OS: linux)"
                    ),
                );
            }
            if value.as_str() != Some("supported") {
                report.error(
                    &csv.path,
                    rule,
                    format!("label {key} is {value}; its value must be \"supported\""),
                );
            }
        }
    }
    if arches == 0 {
        report.warn(
            &csv.path,
            rule,
            "no operatorframework.io/arch.* label; OLM then assumes amd64 only",
        );
    }
}

/// Checks `spec.install`; returns the deployment names.
fn check_install_strategy(csv: &Manifest, report: &mut Report) -> BTreeSet<String> {
    let (path, v) = (&csv.path, &csv.value);
    let rule = "csv.install-strategy";
    let mut names = BTreeSet::new();
    match str_at(v, "/spec/install/strategy") {
        Some("deployment") => {}
        other => report.error(
            path,
            rule,
            format!("spec.install.strategy is {other:?}; OLM installs only \"deployment\""),
        ),
    }
    let deployments = array_at(v, "/spec/install/spec/deployments");
    if deployments.is_empty() {
        report.error(
            path,
            rule,
            "spec.install.spec.deployments is empty; list the operator's Deployment",
        );
    }
    for (i, deployment) in deployments.iter().enumerate() {
        let name = str_at(deployment, "/name").unwrap_or_default();
        if !is_dns1123_subdomain(name) {
            report.error(
                path,
                rule,
                format!("deployments[{i}].name {name:?} must be a DNS-1123 subdomain"),
            );
        }
        if !names.insert(name.to_owned()) {
            report.error(path, rule, format!("deployment {name:?} is listed twice"));
        }
        let containers = array_at(deployment, "/spec/template/spec/containers");
        if containers.is_empty() {
            report.error(path, rule, format!("deployment {name:?} has no containers"));
        }
        for container in containers {
            if nonempty_at(container, "/name").is_none()
                || nonempty_at(container, "/image").is_none()
            {
                report.error(
                    path,
                    rule,
                    format!("a container of deployment {name:?} lacks name or image"),
                );
            }
        }
        // Kubernetes refuses a Deployment whose selector does not select its own pods.
        let labels = deployment.pointer("/spec/template/metadata/labels");
        match deployment
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
        {
            Some(selector) if !selector.is_empty() => {
                for (key, value) in selector {
                    if labels.and_then(|l| l.get(key)) != Some(value) {
                        report.error(
                            path,
                            rule,
                            format!("deployment {name:?}: selector {key}={value} does not match the pod template's labels"),
                        );
                    }
                }
            }
            _ => {
                if array_at(deployment, "/spec/selector/matchExpressions").is_empty() {
                    report.error(
                        path,
                        rule,
                        format!("deployment {name:?} has no spec.selector; Kubernetes requires one matching the pod template's labels"),
                    );
                }
            }
        }
    }
    for key in ["permissions", "clusterPermissions"] {
        for (i, permission) in array_at(v, &format!("/spec/install/spec/{key}"))
            .iter()
            .enumerate()
        {
            if nonempty_at(permission, "/serviceAccountName").is_none() {
                report.error(
                    path,
                    rule,
                    format!("spec.install.spec.{key}[{i}] has no serviceAccountName"),
                );
            }
        }
    }
    names
}

/// Checks `spec.installModes`; returns the supported ones.
fn check_install_modes(csv: &Manifest, report: &mut Report) -> BTreeSet<String> {
    let (path, v) = (&csv.path, &csv.value);
    let rule = "csv.install-modes";
    let modes = array_at(v, "/spec/installModes");
    let mut supported = BTreeSet::new();
    if modes.is_empty() {
        report.error(
            path,
            rule,
            "spec.installModes not found; list the four install modes with supported true/false",
        );
        return supported;
    }
    let mut seen = BTreeSet::new();
    for mode in modes {
        let kind = str_at(mode, "/type").unwrap_or_default();
        if !INSTALL_MODES.contains(&kind) {
            report.error(
                path,
                rule,
                format!("install mode type {kind:?} is not one of {INSTALL_MODES:?}"),
            );
        }
        if !seen.insert(kind) {
            report.error(path, rule, format!("install mode {kind} is listed twice"));
        }
        match mode.get("supported").and_then(Value::as_bool) {
            Some(true) => {
                supported.insert(kind.to_owned());
            }
            Some(false) => {}
            None => report.error(
                path,
                rule,
                format!("install mode {kind} needs supported: true or false"),
            ),
        }
    }
    if supported.is_empty() {
        report.error(path, rule, "none of the install modes is supported");
    }
    supported
}

/// (group, version, kind) of every owned CRD; checks each entry's fields.
fn check_owned(csv: &Manifest, report: &mut Report) -> BTreeMap<(String, String, String), String> {
    let mut owned = BTreeMap::new();
    for (i, entry) in array_at(&csv.value, "/spec/customresourcedefinitions/owned")
        .iter()
        .enumerate()
    {
        let name = str_at(entry, "/name").unwrap_or_default();
        let version = nonempty_at(entry, "/version");
        let kind = nonempty_at(entry, "/kind");
        let group = name.split_once('.').map(|(_, g)| g);
        match (group, version, kind) {
            (Some(group), Some(version), Some(kind)) => {
                owned.insert(
                    (group.to_owned(), version.to_owned(), kind.to_owned()),
                    name.to_owned(),
                );
            }
            _ => report.error(
                &csv.path,
                "csv.owned-crd",
                format!(
                    "spec.customresourcedefinitions.owned[{i}] needs name (<plural>.<group>), version and kind"
                ),
            ),
        }
        if nonempty_at(entry, "/displayName").is_none() {
            report.warn(
                &csv.path,
                "csv.owned-crd",
                format!("owned CRD {name:?} has no displayName; the console shows it"),
            );
        }
    }
    owned
}

/// operator-framework/api `validateExamplesAnnotations`: `alm-examples` is a JSON list whose
/// kinds are all owned, and every owned kind has an example.
fn check_examples(
    csv: &Manifest,
    owned: &BTreeMap<(String, String, String), String>,
    report: &mut Report,
) {
    let path = &csv.path;
    let Some(text) = str_at(&csv.value, "/metadata/annotations/alm-examples") else {
        if !owned.is_empty() {
            report.warn(
                path,
                "csv.alm-examples.missing",
                "no alm-examples annotation; give one example per owned CRD",
            );
        }
        return;
    };
    let examples: Vec<Value> = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => items,
        Ok(other) => {
            report.error(
                path,
                "csv.alm-examples.json",
                format!(
                    "annotation alm-examples must be a JSON list of objects, not {}",
                    json_type(&other)
                ),
            );
            return;
        }
        Err(e) => {
            report.error(
                path,
                "csv.alm-examples.json",
                format!("annotation alm-examples is not valid JSON: {e}"),
            );
            return;
        }
    };
    let mut seen = BTreeSet::new();
    for (i, example) in examples.iter().enumerate() {
        let api_version = str_at(example, "/apiVersion").unwrap_or_default();
        let kind = str_at(example, "/kind").unwrap_or_default();
        let Some((group, version)) = api_version.split_once('/') else {
            report.error(
                path,
                "csv.alm-examples.json",
                format!("alm-examples[{i}] needs apiVersion <group>/<version> and kind"),
            );
            continue;
        };
        let key = (group.to_owned(), version.to_owned(), kind.to_owned());
        if !owned.contains_key(&key) {
            report.error(
                path,
                "csv.alm-examples.owned",
                format!("alm-examples[{i}] is a {kind} of {api_version}, which the CSV does not own; examples must be of owned APIs"),
            );
        }
        seen.insert(key);
    }
    for ((group, version, kind), name) in owned {
        if !seen.contains(&(group.clone(), version.clone(), kind.clone())) {
            report.warn(
                path,
                "csv.alm-examples.missing",
                format!(
                    "owned CRD {name} ({group}/{version} {kind}) has no example in alm-examples"
                ),
            );
        }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// OLM's `WebhookDescription` schema and what OLM and Kubernetes require of the webhook
/// configurations OLM creates from it.
fn check_webhooks(
    csv: &Manifest,
    deployments: &BTreeSet<String>,
    install_modes: &BTreeSet<String>,
    owned: &BTreeMap<(String, String, String), String>,
    report: &mut Report,
) {
    let path = &csv.path;
    let owned_names: BTreeSet<&str> = owned.values().map(String::as_str).collect();
    for (i, hook) in array_at(&csv.value, "/spec/webhookdefinitions")
        .iter()
        .enumerate()
    {
        let name = str_at(hook, "/generateName").unwrap_or_default();
        let at = format!("webhookdefinitions[{i}] ({name})");
        let kind = str_at(hook, "/type").unwrap_or_default();
        let admission = matches!(
            kind,
            "ValidatingAdmissionWebhook" | "MutatingAdmissionWebhook"
        );
        if !admission && kind != "ConversionWebhook" {
            report.error(
                path,
                "csv.webhook.type",
                format!("{at}: type {kind:?} must be ValidatingAdmissionWebhook, MutatingAdmissionWebhook or ConversionWebhook"),
            );
        }
        match str_at(hook, "/deploymentName") {
            Some(d) if deployments.contains(d) => {}
            other => report.error(
                path,
                "csv.webhook.deployment",
                format!("{at}: deploymentName {other:?} is not a deployment of the install strategy ({deployments:?})"),
            ),
        }
        if let Some(port) = hook.get("containerPort") {
            match port.as_u64() {
                Some(1..=65535) => {}
                _ => report.error(
                    path,
                    "csv.webhook.container-port",
                    format!("{at}: containerPort {port} must be 1-65535"),
                ),
            }
        }
        if let Some(port) = hook.get("targetPort")
            && port.as_u64().is_some_and(|p| p == 0 || p > 65535)
        {
            report.error(
                path,
                "csv.webhook.container-port",
                format!("{at}: targetPort {port} must be 1-65535"),
            );
        }
        // Kubernetes: a webhook name is a fully qualified domain with at least three segments.
        if !is_dns1123_subdomain(name) || (admission && name.split('.').count() < 3) {
            report.error(
                path,
                "csv.webhook.generate-name",
                format!("{at}: generateName {name:?} must be a DNS subdomain with at least three segments, e.g. vtvm.kb.io"),
            );
        }
        let versions: Vec<&str> = array_at(hook, "/admissionReviewVersions")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if !versions.iter().any(|v| matches!(*v, "v1" | "v1beta1")) {
            report.error(
                path,
                "csv.webhook.admission-review-versions",
                format!("{at}: admissionReviewVersions {versions:?} must include v1 (or v1beta1)"),
            );
        }
        if admission {
            match str_at(hook, "/sideEffects") {
                Some("None" | "NoneOnDryRun") => {}
                other => report.error(
                    path,
                    "csv.webhook.side-effects",
                    format!("{at}: sideEffects {other:?} must be None or NoneOnDryRun"),
                ),
            }
        }
        if let Some(policy) = str_at(hook, "/failurePolicy")
            && !matches!(policy, "Fail" | "Ignore")
        {
            report.error(
                path,
                "csv.webhook.failure-policy",
                format!("{at}: failurePolicy {policy:?} must be Fail or Ignore"),
            );
        }
        if let Some(seconds) = hook.get("timeoutSeconds")
            && !seconds.as_u64().is_some_and(|s| (1..=30).contains(&s))
        {
            report.error(
                path,
                "csv.webhook.timeout",
                format!("{at}: timeoutSeconds {seconds} must be 1-30"),
            );
        }
        if let Some(webhook_path) = str_at(hook, "/webhookPath")
            && !webhook_path.starts_with('/')
        {
            report.error(
                path,
                "csv.webhook.path",
                format!("{at}: webhookPath {webhook_path:?} must start with '/'"),
            );
        }
        if kind == "ConversionWebhook" {
            let crds = array_at(hook, "/conversionCRDs");
            if crds.is_empty() {
                report.error(
                    path,
                    "csv.webhook.conversion-crds",
                    format!("{at}: a conversion webhook needs conversionCRDs"),
                );
            }
            for crd in crds.iter().filter_map(Value::as_str) {
                if !owned_names.contains(crd) {
                    report.error(
                        path,
                        "csv.webhook.conversion-crds",
                        format!("{at}: conversion CRD {crd:?} is not an owned CRD of the CSV"),
                    );
                }
            }
            let others: Vec<&String> = install_modes
                .iter()
                .filter(|m| m.as_str() != "AllNamespaces")
                .collect();
            if !others.is_empty() || !install_modes.contains("AllNamespaces") {
                report.error(
                    path,
                    "csv.webhook.conversion-install-modes",
                    format!("{at}: OLM requires a CSV with conversion webhooks to support only AllNamespaces, but it supports {install_modes:?}"),
                );
            }
        }
    }
}
