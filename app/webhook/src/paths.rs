//! The URL paths of the admission endpoints, shared with the manager's webhook configurations.
//!
//! kubebuilder's convention: `/validate-<group with dots as dashes>-<version>-<kind lowercase>`
//! and `/mutate-…`. The manager renders the `ValidatingWebhookConfiguration` and
//! `MutatingWebhookConfiguration` from [`validate_path`] / [`mutate_path`] so both sides can never
//! disagree on a path.

use tvk_api::admission::GroupVersionKind;

/// Which of the two admission webhooks an endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookKind {
    /// Validating admission: allow or deny, with field errors and warnings.
    Validate,
    /// Mutating admission: the kind's defaults as a JSON patch.
    Mutate,
}

impl WebhookKind {
    /// `validate` or `mutate`: the path prefix and the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validate => "validate",
            Self::Mutate => "mutate",
        }
    }
}

/// The path of `kind`'s endpoint for `gvk`, e.g. `/validate-triliovault-trilio-io-v1-target`.
pub fn webhook_path(kind: WebhookKind, gvk: &GroupVersionKind) -> String {
    let group = gvk.group.replace('.', "-");
    let kind_lower = gvk.kind.to_ascii_lowercase();
    if group.is_empty() {
        // Core kinds have no group; kubebuilder writes `/validate--v1-pod`.
        format!("/{}--{}-{}", kind.as_str(), gvk.version, kind_lower)
    } else {
        format!(
            "/{}-{}-{}-{}",
            kind.as_str(),
            group,
            gvk.version,
            kind_lower
        )
    }
}

/// The validating endpoint's path for `gvk`.
pub fn validate_path(gvk: &GroupVersionKind) -> String {
    webhook_path(WebhookKind::Validate, gvk)
}

/// The mutating endpoint's path for `gvk`.
pub fn mutate_path(gvk: &GroupVersionKind) -> String {
    webhook_path(WebhookKind::Mutate, gvk)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gvk(group: &str, version: &str, kind: &str) -> GroupVersionKind {
        GroupVersionKind {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
        }
    }

    #[test]
    fn paths_follow_the_kubebuilder_convention() {
        let target = gvk("triliovault.trilio.io", "v1", "Target");
        assert_eq!(
            validate_path(&target),
            "/validate-triliovault-trilio-io-v1-target"
        );
        assert_eq!(
            mutate_path(&target),
            "/mutate-triliovault-trilio-io-v1-target"
        );
        let plan = gvk("triliovault.trilio.io", "v1", "ClusterBackupPlan");
        assert_eq!(
            validate_path(&plan),
            "/validate-triliovault-trilio-io-v1-clusterbackupplan"
        );
        assert_eq!(mutate_path(&gvk("", "v1", "Pod")), "/mutate--v1-pod");
    }
}
