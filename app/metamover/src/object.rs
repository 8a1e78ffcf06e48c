//! Read access to the parts of a Kubernetes object (as JSON) that discovery, selection and
//! cleaning look at, and the identity of an object across them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Group, version and kind of a resource type (`group` empty for the core group).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gvk {
    /// API group, empty for core.
    pub group: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
}

impl Gvk {
    /// A GVK from its parts.
    pub fn new(group: &str, version: &str, kind: &str) -> Self {
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
        }
    }

    /// From an `apiVersion` (`apps/v1`, `v1`) and a kind.
    pub fn from_api_version(api_version: &str, kind: &str) -> Self {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        Self::new(group, version, kind)
    }

    /// `apiVersion` text.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The same type in T4K's status shape.
    pub fn to_api(&self) -> tvk_api::common::GroupVersionKind {
        tvk_api::common::GroupVersionKind {
            group: Some(self.group.clone()),
            version: Some(self.version.clone()),
            kind: Some(self.kind.clone()),
        }
    }
}

impl std::fmt::Display for Gvk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, Kind={}", self.api_version(), self.kind)
    }
}

/// Identity of one object: its type (group and kind; versions differ between a Helm manifest and
/// the served preferred version, so they are not part of the identity), namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// API group, empty for core.
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace; `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// The key of a JSON object, when it has `apiVersion`, `kind` and a name. `default_namespace`
    /// fills a missing namespace (Helm manifests leave it out) when `namespaced`.
    pub fn of(obj: &Value, default_namespace: Option<&str>) -> Option<Self> {
        let gvk = gvk_of(obj)?;
        let name = name(obj)?;
        let namespace = namespace(obj)
            .map(str::to_owned)
            .or_else(|| default_namespace.map(str::to_owned));
        Some(Self {
            group: gvk.group,
            kind: gvk.kind,
            namespace,
            name: name.to_owned(),
        })
    }

    /// A key from parts.
    pub fn new(group: &str, kind: &str, namespace: Option<&str>, name: &str) -> Self {
        Self {
            group: group.to_owned(),
            kind: kind.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            String::new()
        } else {
            format!(".{}", self.group)
        };
        match &self.namespace {
            Some(ns) => write!(f, "{}{group} {ns}/{}", self.kind, self.name),
            None => write!(f, "{}{group} {}", self.kind, self.name),
        }
    }
}

/// `apiVersion` + `kind` of an object.
pub fn gvk_of(obj: &Value) -> Option<Gvk> {
    let api_version = obj.get("apiVersion")?.as_str()?;
    let kind = obj.get("kind")?.as_str()?;
    Some(Gvk::from_api_version(api_version, kind))
}

/// `metadata.name`.
pub fn name(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/name")?.as_str()
}

/// `metadata.namespace`.
pub fn namespace(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/namespace")?
        .as_str()
        .filter(|s| !s.is_empty())
}

/// `metadata.uid`.
pub fn uid(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/uid")?.as_str()
}

/// `metadata.labels` as a map (non-string values ignored).
pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    string_map(obj.pointer("/metadata/labels"))
}

/// `metadata.annotations` as a map.
pub fn annotations(obj: &Value) -> BTreeMap<String, String> {
    string_map(obj.pointer("/metadata/annotations"))
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// One `metadata.ownerReferences[]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerRef {
    /// Owner kind.
    pub kind: String,
    /// Owner name.
    pub name: String,
    /// Owner UID.
    pub uid: String,
    /// The owner is the managing controller.
    pub controller: bool,
}

/// `metadata.ownerReferences`.
pub fn owner_refs(obj: &Value) -> Vec<OwnerRef> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| {
                    Some(OwnerRef {
                        kind: r.get("kind")?.as_str()?.to_owned(),
                        name: r.get("name")?.as_str()?.to_owned(),
                        uid: r.get("uid")?.as_str()?.to_owned(),
                        controller: r.get("controller").and_then(Value::as_bool) == Some(true),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The string at a JSON pointer.
pub fn str_at<'a>(obj: &'a Value, pointer: &str) -> Option<&'a str> {
    obj.pointer(pointer)?.as_str()
}
