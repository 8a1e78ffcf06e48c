//! CustomResourceDefinitions in a bundle: the structural part of Kubernetes' own CRD
//! validation that operator-framework/api's `CRDValidator` runs (apiextensions
//! `ValidateCustomResourceDefinition`), as far as it decides whether the API server accepts it.

use std::collections::BTreeSet;

use crate::{
    bundle::Manifest,
    json::{array_at, is_dns1123_label, is_dns1123_subdomain, nonempty_at, str_at},
    report::Report,
};

pub(crate) fn validate(crd: &Manifest, report: &mut Report) {
    let path = &crd.path;
    let v = &crd.value;
    match crd.api_version() {
        "apiextensions.k8s.io/v1" => {}
        "apiextensions.k8s.io/v1beta1" => {
            report.error(
                path,
                "crd.api-version",
                "apiextensions.k8s.io/v1beta1 CRDs were removed in Kubernetes 1.22; write apiextensions.k8s.io/v1",
            );
            return;
        }
        other => {
            report.error(
                path,
                "crd.api-version",
                format!("apiVersion {other:?} is not apiextensions.k8s.io/v1"),
            );
            return;
        }
    }
    let group = nonempty_at(v, "/spec/group");
    let plural = nonempty_at(v, "/spec/names/plural");
    let kind = nonempty_at(v, "/spec/names/kind");
    match (group, plural) {
        (Some(group), Some(plural)) => {
            if !is_dns1123_subdomain(group) || !group.contains('.') {
                report.error(
                    path,
                    "crd.names",
                    format!("spec.group {group:?} must be a DNS subdomain with at least one dot"),
                );
            }
            if !is_dns1123_label(plural) {
                report.error(
                    path,
                    "crd.names",
                    format!("spec.names.plural {plural:?} must be a lower-case DNS label"),
                );
            }
            let want = format!("{plural}.{group}");
            if crd.name() != want {
                report.error(
                    path,
                    "crd.names",
                    format!(
                        "metadata.name {:?} must be <plural>.<group>, {want:?}",
                        crd.name()
                    ),
                );
            }
        }
        _ => report.error(
            path,
            "crd.names",
            "spec.group and spec.names.plural must be set",
        ),
    }
    if kind.is_none() {
        report.error(path, "crd.names", "spec.names.kind must be set");
    }
    match str_at(v, "/spec/scope") {
        Some("Namespaced" | "Cluster") => {}
        other => report.error(
            path,
            "crd.scope",
            format!("spec.scope is {other:?}; it must be Namespaced or Cluster"),
        ),
    }
    let versions = array_at(v, "/spec/versions");
    if versions.is_empty() {
        report.error(
            path,
            "crd.versions",
            "spec.versions is empty; list at least one version",
        );
        return;
    }
    let mut names = BTreeSet::new();
    let (mut storage, mut served) = (0, 0);
    for version in versions {
        let name = str_at(version, "/name").unwrap_or_default();
        if !is_dns1123_label(name) {
            report.error(
                path,
                "crd.versions",
                format!("version name {name:?} must be a DNS label such as v1 or v1alpha1"),
            );
        }
        if !names.insert(name) {
            report.error(
                path,
                "crd.versions",
                format!("version {name:?} is listed twice"),
            );
        }
        if version.get("storage").and_then(|s| s.as_bool()) == Some(true) {
            storage += 1;
        }
        if version.get("served").and_then(|s| s.as_bool()) == Some(true) {
            served += 1;
        }
        if version.pointer("/schema/openAPIV3Schema").is_none() {
            report.error(
                path,
                "crd.versions",
                format!("version {name:?} has no schema.openAPIV3Schema; apiextensions.k8s.io/v1 requires one"),
            );
        }
    }
    if storage != 1 {
        report.error(
            path,
            "crd.versions",
            format!("{storage} versions are marked storage: true; exactly one must be"),
        );
    }
    if served == 0 {
        report.error(
            path,
            "crd.versions",
            "no version is served; serve at least one",
        );
    }
    if str_at(v, "/spec/conversion/strategy") == Some("Webhook")
        && array_at(v, "/spec/conversion/webhook/conversionReviewVersions").is_empty()
    {
        report.error(
            path,
            "crd.conversion",
            "conversion strategy Webhook needs spec.conversion.webhook.conversionReviewVersions (e.g. [v1])",
        );
    }
}
