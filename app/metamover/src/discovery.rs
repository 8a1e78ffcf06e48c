//! The resource types a backup looks at: every kind the API server serves, at its group's
//! preferred version (or, for kinds that version does not serve, their most stable one), that
//! can be listed and read (subresources are not types), minus the ignore list
//! ([`crate::clean::IGNORED_TYPES`]).

use kube::{
    Client,
    core::ApiResource,
    discovery::{ApiCapabilities, Discovery, Scope, verbs},
};

use crate::{
    clean::{IGNORED_TYPES, is_ignored_type},
    error::{Error, Result},
    object::Gvk,
};

/// One listable resource type.
#[derive(Clone, Debug)]
pub struct ResourceType {
    /// Group, version, kind, plural.
    pub api: ApiResource,
    /// Namespaced (else cluster-scoped).
    pub namespaced: bool,
}

impl ResourceType {
    /// Its GVK.
    pub fn gvk(&self) -> Gvk {
        Gvk::new(&self.api.group, &self.api.version, &self.api.kind)
    }
}

/// The resource types of the cluster.
#[derive(Clone, Debug, Default)]
pub struct Catalogue {
    types: Vec<ResourceType>,
}

impl Catalogue {
    /// A catalogue from known types (tests, or a cached discovery).
    pub fn from_types(types: Vec<ResourceType>) -> Self {
        let mut types: Vec<ResourceType> = types
            .into_iter()
            .filter(|t| !is_ignored_type(&t.api.group, &t.api.kind))
            .collect();
        types.sort_by(|a, b| (&a.api.group, &a.api.kind).cmp(&(&b.api.group, &b.api.kind)));
        Self { types }
    }

    /// Asks the API server (`/api`, `/apis`). Groups wholly on the ignore list are not queried,
    /// so an unavailable aggregated API there (metrics) does not fail the backup.
    pub async fn discover(client: Client) -> Result<Self> {
        let ignored_groups: Vec<&str> = IGNORED_TYPES
            .iter()
            .filter(|(_, k)| *k == "*")
            .map(|(g, _)| *g)
            .collect();
        let discovery = Discovery::new(client)
            .exclude(&ignored_groups)
            .run()
            .await
            .map_err(|e| Error::kube("discover the API resource types", e))?;
        let mut types = Vec::new();
        for group in discovery.groups() {
            // The preferred version first; kinds not served there (OLM's Subscription lives in
            // v1alpha1 while the group prefers v1) at their most stable version.
            let preferred = group.recommended_resources();
            let extra: Vec<_> = group
                .resources_by_stability()
                .into_iter()
                .filter(|(a, _)| !preferred.iter().any(|(p, _)| p.kind == a.kind))
                .collect();
            for (api, caps) in preferred.into_iter().chain(extra) {
                if let Some(t) = Self::usable(api, &caps) {
                    types.push(t);
                }
            }
        }
        Ok(Self::from_types(types))
    }

    fn usable(api: ApiResource, caps: &ApiCapabilities) -> Option<ResourceType> {
        if api.plural.contains('/')
            || !caps.supports_operation(verbs::LIST)
            || !caps.supports_operation(verbs::GET)
        {
            return None;
        }
        Some(ResourceType {
            namespaced: matches!(caps.scope, Scope::Namespaced),
            api,
        })
    }

    /// Every type.
    pub fn types(&self) -> &[ResourceType] {
        &self.types
    }

    /// Namespaced types, in a stable order.
    pub fn namespaced(&self) -> impl Iterator<Item = &ResourceType> {
        self.types.iter().filter(|t| t.namespaced)
    }

    /// The type of a group and kind (any version).
    pub fn find(&self, group: &str, kind: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.api.group == group && t.api.kind == kind)
    }

    /// Whether a group and kind is namespaced; `None` when the cluster does not serve it.
    pub fn is_namespaced(&self, group: &str, kind: &str) -> Option<bool> {
        self.find(group, kind).map(|t| t.namespaced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(scope: Scope, ops: &[&str]) -> ApiCapabilities {
        ApiCapabilities {
            scope,
            subresources: Vec::new(),
            operations: ops.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn ar(group: &str, kind: &str, plural: &str) -> ApiResource {
        ApiResource {
            group: group.into(),
            version: "v1".into(),
            api_version: if group.is_empty() {
                "v1".into()
            } else {
                format!("{group}/v1")
            },
            kind: kind.into(),
            plural: plural.into(),
        }
    }

    #[test]
    fn only_listable_readable_non_ignored_types_are_kept() {
        let rw = [verbs::LIST, verbs::GET, verbs::CREATE];
        let candidates = vec![
            (
                ar("", "ConfigMap", "configmaps"),
                caps(Scope::Namespaced, &rw),
            ),
            (ar("", "Event", "events"), caps(Scope::Namespaced, &rw)),
            (
                ar(
                    "authorization.k8s.io",
                    "SelfSubjectReview",
                    "selfsubjectreviews",
                ),
                caps(Scope::Cluster, &[verbs::CREATE]),
            ),
            (
                ar("", "Pod", "pods/log"),
                caps(Scope::Namespaced, &[verbs::GET]),
            ),
            (
                ar("rbac.authorization.k8s.io", "ClusterRole", "clusterroles"),
                caps(Scope::Cluster, &rw),
            ),
        ];
        let types = candidates
            .into_iter()
            .filter_map(|(a, c)| Catalogue::usable(a, &c))
            .collect();
        let cat = Catalogue::from_types(types);
        let kinds: Vec<_> = cat.types().iter().map(|t| t.api.kind.as_str()).collect();
        assert_eq!(kinds, ["ConfigMap", "ClusterRole"]);
        assert_eq!(cat.is_namespaced("", "ConfigMap"), Some(true));
        assert_eq!(
            cat.is_namespaced("rbac.authorization.k8s.io", "ClusterRole"),
            Some(false)
        );
        assert_eq!(cat.is_namespaced("x", "Y"), None);
        assert_eq!(cat.namespaced().count(), 1);
    }
}
