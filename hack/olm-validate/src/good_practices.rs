//! Good practices: operator-framework/api's `GoodPracticesValidator` (resource requests, CRD
//! descriptions, channel naming) and `AlphaDeprecatedAPIsValidator` (APIs removed from
//! Kubernetes), plus the project's image rules: every image that ships is pinned by digest and
//! every image the deployments run is listed in `spec.relatedImages` (so a mirrored, air-gapped
//! install has it).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::{
    bundle::{BundleContents, Manifest},
    image::{check_pinned, identity},
    json::{array_at, nonempty_at, parse_tolerant, str_at},
    report::{Report, Severity},
};

/// API versions removed from Kubernetes: (group/version, kind or `*`, removed in 1.minor).
const REMOVED_APIS: &[(&str, &str, u64)] = &[
    ("apiextensions.k8s.io/v1beta1", "*", 22),
    ("admissionregistration.k8s.io/v1beta1", "*", 22),
    ("apiregistration.k8s.io/v1beta1", "*", 22),
    ("authentication.k8s.io/v1beta1", "*", 22),
    ("authorization.k8s.io/v1beta1", "*", 22),
    ("certificates.k8s.io/v1beta1", "*", 22),
    ("coordination.k8s.io/v1beta1", "*", 22),
    ("extensions/v1beta1", "*", 22),
    ("networking.k8s.io/v1beta1", "*", 22),
    ("rbac.authorization.k8s.io/v1beta1", "*", 22),
    ("rbac.authorization.k8s.io/v1alpha1", "*", 22),
    ("scheduling.k8s.io/v1beta1", "*", 22),
    ("storage.k8s.io/v1beta1", "CSIDriver", 22),
    ("storage.k8s.io/v1beta1", "CSINode", 22),
    ("storage.k8s.io/v1beta1", "StorageClass", 22),
    ("storage.k8s.io/v1beta1", "VolumeAttachment", 22),
    ("batch/v1beta1", "*", 25),
    ("discovery.k8s.io/v1beta1", "*", 25),
    ("events.k8s.io/v1beta1", "*", 25),
    ("autoscaling/v2beta1", "*", 25),
    ("node.k8s.io/v1beta1", "*", 25),
    ("policy/v1beta1", "*", 25),
    ("autoscaling/v2beta2", "*", 26),
    ("flowcontrol.apiserver.k8s.io/v1beta1", "*", 26),
    ("storage.k8s.io/v1beta1", "CSIStorageCapacity", 27),
    ("flowcontrol.apiserver.k8s.io/v1beta2", "*", 29),
    ("flowcontrol.apiserver.k8s.io/v1beta3", "*", 32),
];

pub(crate) fn validate(bundle: &BundleContents, csv: &Manifest, report: &mut Report) {
    check_resource_requests(csv, report);
    check_crd_descriptions(csv, report);
    check_channel_names(bundle, csv, report);
    check_removed_apis(bundle, csv, report);
    check_images(csv, report);
}

fn deployments(csv: &Manifest) -> &[Value] {
    array_at(&csv.value, "/spec/install/spec/deployments")
}

fn check_resource_requests(csv: &Manifest, report: &mut Report) {
    for deployment in deployments(csv) {
        let name = str_at(deployment, "/name").unwrap_or_default();
        for list in ["containers", "initContainers"] {
            for container in array_at(deployment, &format!("/spec/template/spec/{list}")) {
                let has = |r: &str| {
                    container
                        .pointer(&format!("/resources/requests/{r}"))
                        .is_some()
                };
                if !has("cpu") || !has("memory") {
                    report.warn(
                        &csv.path,
                        "good-practices.resource-requests",
                        format!(
                            "container {} of deployment {name} has no CPU and memory requests; quotas may refuse its pods",
                            str_at(container, "/name").unwrap_or_default()
                        ),
                    );
                }
            }
        }
    }
}

fn check_crd_descriptions(csv: &Manifest, report: &mut Report) {
    for relation in ["owned", "required"] {
        for crd in array_at(
            &csv.value,
            &format!("/spec/customresourcedefinitions/{relation}"),
        ) {
            if nonempty_at(crd, "/description").is_none() {
                report.warn(
                    &csv.path,
                    "good-practices.crd-description",
                    format!(
                        "{relation} CRD {:?} has an empty description",
                        str_at(crd, "/name").unwrap_or_default()
                    ),
                );
            }
        }
    }
}

fn check_channel_names(bundle: &BundleContents, csv: &Manifest, report: &mut Report) {
    let names: BTreeSet<&str> = bundle
        .channels
        .iter()
        .chain(bundle.default_channel.iter())
        .map(String::as_str)
        .filter(|c| !c.is_empty())
        .collect();
    let odd: Vec<&str> = names
        .into_iter()
        .filter(|c| {
            !["candidate", "stable", "fast"]
                .iter()
                .any(|p| c.starts_with(p))
        })
        .collect();
    if !odd.is_empty() {
        report.warn(
            &csv.path,
            "good-practices.channel-naming",
            format!(
                "channel(s) {odd:?} do not follow the recommended naming convention (candidate*, fast*, stable*): https://olm.operatorframework.io/docs/best-practices/channel-naming"
            ),
        );
    }
}

/// An error when the CSV's `minKubeVersion` is at or past the removal (the bundle cannot work
/// anywhere it may be installed), otherwise a warning, as upstream.
fn check_removed_apis(bundle: &BundleContents, csv: &Manifest, report: &mut Report) {
    let min_minor = nonempty_at(&csv.value, "/spec/minKubeVersion")
        .and_then(parse_tolerant)
        .filter(|v| v.major == 1)
        .map(|v| v.minor);
    for object in &bundle.objects {
        let removed = REMOVED_APIS.iter().find(|(gv, kind, _)| {
            *gv == object.api_version() && (*kind == "*" || *kind == object.kind())
        });
        if let Some((gv, _, minor)) = removed {
            let severity = if min_minor.is_some_and(|m| m >= *minor) {
                Severity::Error
            } else {
                Severity::Warning
            };
            report.push(
                severity,
                &object.path,
                "deprecated-api.removed",
                format!(
                    "{} {} uses {gv}, which Kubernetes 1.{minor} removed; migrate to the current API version",
                    object.kind(),
                    object.name()
                ),
            );
        }
    }
}

fn check_images(csv: &Manifest, report: &mut Report) {
    let path = &csv.path;
    let mut related = BTreeSet::new();
    for entry in array_at(&csv.value, "/spec/relatedImages") {
        if let Some(image) = nonempty_at(entry, "/image") {
            if let Err(e) = check_pinned(image) {
                report.error(
                    path,
                    "good-practices.image-digest",
                    format!("spec.relatedImages: {e}"),
                );
            }
            related.insert(identity(image));
        }
    }
    if let Some(image) = str_at(&csv.value, "/metadata/annotations/containerImage")
        && let Err(e) = check_pinned(image)
    {
        report.error(
            path,
            "good-practices.image-digest",
            format!("annotation containerImage: {e}"),
        );
    }
    for deployment in deployments(csv) {
        let name = str_at(deployment, "/name").unwrap_or_default();
        for list in ["containers", "initContainers"] {
            for container in array_at(deployment, &format!("/spec/template/spec/{list}")) {
                let container_name = str_at(container, "/name").unwrap_or_default();
                let mut used = Vec::new();
                if let Some(image) = str_at(container, "/image") {
                    used.push(("image".to_owned(), image));
                }
                for env in array_at(container, "/env") {
                    let var = str_at(env, "/name").unwrap_or_default();
                    if var.starts_with("RELATED_IMAGE_")
                        && let Some(image) = str_at(env, "/value")
                    {
                        used.push((format!("env {var}"), image));
                    }
                }
                for (what, image) in used {
                    let at = format!("deployment {name}, container {container_name}, {what}");
                    if let Err(e) = check_pinned(image) {
                        report.error(path, "good-practices.image-digest", format!("{at}: {e}"));
                    }
                    if !related.contains(&identity(image)) {
                        report.error(
                            path,
                            "good-practices.related-images",
                            format!("{at}: image {image:?} is not in spec.relatedImages; list it there so mirroring copies it"),
                        );
                    }
                }
            }
        }
    }
}
