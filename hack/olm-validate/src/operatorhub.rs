//! OperatorHub rules: operator-framework/api's `OperatorHubValidator` and
//! `StandardCategoriesValidator` (the `suite=operatorframework` optional validators), plus the
//! annotations Red Hat's certification expects of an OpenShift operator (`containerImage`,
//! `createdAt`, `operators.openshift.io/valid-subscription`, `features.operators.openshift.io/*`).

use base64::Engine as _;
use serde_json::Value;

use crate::{
    bundle::{BundleContents, Manifest},
    json::{array_at, nonempty_at, str_at},
    report::Report,
};

/// operator-framework/api `validCapabilities`.
pub(crate) const CAPABILITIES: [&str; 5] = [
    "Basic Install",
    "Seamless Upgrades",
    "Full Lifecycle",
    "Deep Insights",
    "Auto Pilot",
];

/// operator-framework/api `validCategories` (standardcategories.go).
pub(crate) const CATEGORIES: [&str; 16] = [
    "AI/Machine Learning",
    "Application Runtime",
    "Big Data",
    "Cloud Provider",
    "Developer Tools",
    "Database",
    "Integration & Delivery",
    "Logging & Tracing",
    "Monitoring",
    "Modernization & Migration",
    "Networking",
    "OpenShift Optional",
    "Security",
    "Storage",
    "Streaming & Messaging",
    "Observability",
];

/// operator-framework/api `validMediatypes`.
pub(crate) const ICON_MEDIATYPES: [&str; 4] =
    ["image/gif", "image/jpeg", "image/png", "image/svg+xml"];

/// The infrastructure-feature annotations OpenShift's console filters on; certification expects
/// every one of them, each "true" or "false".
pub(crate) const OPENSHIFT_FEATURES: [&str; 10] = [
    "disconnected",
    "fips-compliant",
    "proxy-aware",
    "tls-profiles",
    "token-auth-aws",
    "token-auth-azure",
    "token-auth-gcp",
    "cnf",
    "cni",
    "csi",
];

pub(crate) fn validate(_bundle: &BundleContents, csv: &Manifest, report: &mut Report) {
    let (path, v) = (&csv.path, &csv.value);
    if nonempty_at(v, "/spec/provider/name").is_none() {
        report.error(
            path,
            "operatorhub.provider",
            "spec.provider.name not specified",
        );
    }
    let maintainers = array_at(v, "/spec/maintainers");
    if maintainers.is_empty() {
        report.error(
            path,
            "operatorhub.maintainers",
            "spec.maintainers is empty; name at least one maintainer with an email",
        );
    }
    for m in maintainers {
        let (name, email) = (nonempty_at(m, "/name"), nonempty_at(m, "/email"));
        if name.is_none() || email.is_none() {
            report.error(
                path,
                "operatorhub.maintainers",
                "spec.maintainers elements should contain both name and email",
            );
        }
        if let Some(email) = email
            && !valid_email(email)
        {
            report.error(
                path,
                "operatorhub.maintainers",
                format!("spec.maintainers email {email:?} is not a valid address"),
            );
        }
    }
    let links = array_at(v, "/spec/links");
    if links.is_empty() {
        report.warn(
            path,
            "operatorhub.links",
            "spec.links is empty; link the documentation and source",
        );
    }
    for link in links {
        let (name, target) = (nonempty_at(link, "/name"), nonempty_at(link, "/url"));
        if name.is_none() || target.is_none() {
            report.error(
                path,
                "operatorhub.links",
                "spec.links elements should contain both name and url",
            );
        }
        if let Some(target) = target
            && url::Url::parse(target).is_err()
        {
            report.error(
                path,
                "operatorhub.links",
                format!("spec.links url {target:?} is not an absolute URL"),
            );
        }
    }
    let annotation = |key: &str| {
        str_at(
            v,
            &format!(
                "/metadata/annotations/{}",
                key.replace('~', "~0").replace('/', "~1")
            ),
        )
    };
    match annotation("capabilities") {
        Some(c) if CAPABILITIES.contains(&c) => {}
        Some(c) => report.error(
            path,
            "operatorhub.capabilities",
            format!(
                "annotation capabilities {c:?} is not a valid capability level ({CAPABILITIES:?})"
            ),
        ),
        None => report.error(
            path,
            "operatorhub.capabilities",
            format!("annotation capabilities is missing; set one of {CAPABILITIES:?}"),
        ),
    }
    match annotation("categories") {
        Some(categories) => {
            for category in categories.split(',').map(str::trim) {
                if !CATEGORIES.contains(&category) {
                    report.error(
                        path,
                        "operatorhub.categories",
                        format!("annotation categories value {category:?} is not in the set of standard categories ({CATEGORIES:?})"),
                    );
                }
            }
        }
        None => report.warn(
            path,
            "operatorhub.categories",
            "annotation categories is missing",
        ),
    }
    if nonempty_at(v, "/spec/version").is_some_and(|s| s == "0.0.0") {
        report.error(
            path,
            "operatorhub.version",
            "spec.version must be set (it is 0.0.0)",
        );
    }
    check_icon(csv, report);
    if nonempty_at(v, "/spec/minKubeVersion").is_none() {
        report.warn(
            path,
            "operatorhub.min-kube-version",
            "spec.minKubeVersion is not set; without it the operator is offered on every cluster version",
        );
    }
    if nonempty_at(v, "/spec/description").is_none() {
        report.error(
            path,
            "operatorhub.description",
            "spec.description is empty; OperatorHub shows it",
        );
    }
    if annotation("description").is_none_or(|d| d.trim().is_empty()) {
        report.warn(
            path,
            "operatorhub.description",
            "annotation description (the one-line summary on the OperatorHub tile) is missing",
        );
    }
    if array_at(v, "/spec/keywords")
        .iter()
        .all(|k| k.as_str().is_none_or(|k| k.trim().is_empty()))
    {
        report.error(
            path,
            "operatorhub.keywords",
            "spec.keywords is empty; OperatorHub search uses them",
        );
    }
    if annotation("containerImage").is_none_or(|i| i.trim().is_empty()) {
        report.error(
            path,
            "operatorhub.container-image",
            "annotation containerImage is missing; set it to the operator image",
        );
    }
    match annotation("createdAt") {
        Some(at) if valid_created_at(at) => {}
        Some(at) => report.error(
            path,
            "operatorhub.created-at",
            format!("annotation createdAt {at:?} is neither RFC 3339 (2024-05-01T12:00:00Z) nor \"2024-05-01 12:00:00\""),
        ),
        None => report.error(path, "operatorhub.created-at", "annotation createdAt is missing"),
    }
    match annotation("operators.openshift.io/valid-subscription") {
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(items))
                if !items.is_empty()
                    && items.iter().all(|i| i.as_str().is_some_and(|s| !s.trim().is_empty())) => {}
            _ => report.error(
                path,
                "openshift.valid-subscription",
                format!("annotation operators.openshift.io/valid-subscription {text:?} must be a JSON list of subscription names, e.g. [\"OpenShift Container Platform\"]"),
            ),
        },
        None => report.error(
            path,
            "openshift.valid-subscription",
            "annotation operators.openshift.io/valid-subscription is missing",
        ),
    }
    match annotation("operatorframework.io/suggested-namespace") {
        Some(ns) if crate::json::is_dns1123_label(ns) => {}
        Some(ns) => report.error(
            path,
            "openshift.suggested-namespace",
            format!("annotation operatorframework.io/suggested-namespace {ns:?} is not a valid namespace name (a DNS-1123 label)"),
        ),
        None => report.warn(
            path,
            "openshift.suggested-namespace",
            "annotation operatorframework.io/suggested-namespace is missing; the console then proposes openshift-operators",
        ),
    }
    for feature in OPENSHIFT_FEATURES {
        let key = format!("features.operators.openshift.io/{feature}");
        match annotation(&key) {
            Some("true" | "false") => {}
            Some(other) => report.error(
                path,
                "openshift.features",
                format!("annotation {key} is {other:?}; it must be \"true\" or \"false\""),
            ),
            None => report.error(
                path,
                "openshift.features",
                format!("annotation {key} is missing; set it to \"true\" or \"false\""),
            ),
        }
    }
    if let Some(Value::Object(annotations)) = v.pointer("/metadata/annotations") {
        for key in annotations.keys() {
            if let Some(feature) = key.strip_prefix("features.operators.openshift.io/")
                && !OPENSHIFT_FEATURES.contains(&feature)
            {
                report.warn(
                    path,
                    "openshift.features",
                    format!("annotation {key} is not an OpenShift infrastructure feature ({OPENSHIFT_FEATURES:?})"),
                );
            }
        }
    }
}

fn check_icon(csv: &Manifest, report: &mut Report) {
    let path = &csv.path;
    let icons = array_at(&csv.value, "/spec/icon");
    let [icon] = icons else {
        report.error(
            path,
            "operatorhub.icon",
            if icons.is_empty() {
                "spec.icon not specified; add one icon with base64data and mediatype".to_owned()
            } else {
                format!(
                    "spec.icon has {} elements; it should have exactly one",
                    icons.len()
                )
            },
        );
        return;
    };
    let data = nonempty_at(icon, "/base64data");
    let mediatype = nonempty_at(icon, "/mediatype");
    let (Some(data), Some(mediatype)) = (data, mediatype) else {
        report.error(
            path,
            "operatorhub.icon",
            "spec.icon elements should contain both base64data and mediatype",
        );
        return;
    };
    if !ICON_MEDIATYPES.contains(&mediatype) {
        report.error(
            path,
            "operatorhub.icon",
            format!("spec.icon mediatype {mediatype:?} is not one of {ICON_MEDIATYPES:?}"),
        );
        return;
    }
    if let Err(e) = check_icon_data(data, mediatype) {
        report.error(path, "operatorhub.icon", format!("spec.icon: {e}"));
    }
}

/// Decodes the icon and checks that its bytes are the declared image type.
pub(crate) fn check_icon_data(data: &str, mediatype: &str) -> Result<(), String> {
    let compact: String = data.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| format!("base64data is not base64: {e}"))?;
    let is = match mediatype {
        "image/png" => bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "image/jpeg" => bytes.starts_with(&[0xff, 0xd8, 0xff]),
        "image/gif" => bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a"),
        "image/svg+xml" => {
            let head = &bytes[..bytes.len().min(4096)];
            String::from_utf8_lossy(head).contains("<svg")
        }
        _ => false,
    };
    if is {
        Ok(())
    } else {
        Err(format!("base64data does not hold a {mediatype} image"))
    }
}

/// An email address as Go's `net/mail.ParseAddress` accepts it in the common forms:
/// `local@domain` or `Name <local@domain>`.
pub(crate) fn valid_email(text: &str) -> bool {
    let text = text.trim();
    let address = match (text.rfind('<'), text.strip_suffix('>')) {
        (Some(open), Some(inner)) => &inner[open + 1..],
        (None, None) => text,
        _ => return false,
    };
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-".contains(c);
    let dot_atoms = |s: &str, ok: &dyn Fn(char) -> bool| {
        !s.is_empty()
            && s.split('.')
                .all(|part| !part.is_empty() && part.chars().all(ok))
    };
    dot_atoms(local, &atext) && dot_atoms(domain, &|c: char| c.is_ascii_alphanumeric() || c == '-')
}

/// RFC 3339, or the `YYYY-MM-DD HH:MM:SS` form operator-sdk writes.
pub(crate) fn valid_created_at(text: &str) -> bool {
    text.parse::<jiff::Timestamp>().is_ok()
        || jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", text).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_dates_icons() {
        assert!(valid_email("ops@trilio.io"));
        assert!(valid_email("Ops Team <ops@trilio.io>"));
        for bad in [
            "",
            "ops",
            "@trilio.io",
            "ops@",
            "ops@@x",
            "a b@c.d",
            "ops@trilio..io",
            "<ops@x",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
        assert!(valid_created_at("2024-05-01T12:00:00Z"));
        assert!(valid_created_at("2024-05-01 12:00:00"));
        assert!(!valid_created_at("yesterday"));
        assert!(!valid_created_at("2024-13-01 12:00:00"));
        let svg = base64::engine::general_purpose::STANDARD.encode("<?xml version=\"1.0\"?><svg/>");
        assert!(check_icon_data(&svg, "image/svg+xml").is_ok());
        assert!(check_icon_data(&svg, "image/png").is_err());
        assert!(
            check_icon_data("!!!", "image/png")
                .unwrap_err()
                .contains("base64")
        );
    }
}
