//! Types shared by several kinds: object references, resource selectors, hook configuration,
//! encryption, JSON patches and the per-phase conditions T4K statuses carry.
//!
//! Shapes follow the original product's CRDs field for field (T4K references are Kubernetes
//! `ObjectReference`s, selectors are lists of `LabelSelector`s and GVK/object-name lists), so its
//! manifests deserialize and serialize back unchanged.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The API group of every kind in this crate.
pub const GROUP: &str = "triliovault.trilio.io";
/// The one served and stored version.
pub const VERSION: &str = "v1";
/// `apiVersion` of every kind in this crate.
pub const API_VERSION: &str = "triliovault.trilio.io/v1";

/// Fields this version does not model, kept verbatim so objects written by other versions of
/// the product round-trip (the CRD marks the enclosing object `x-kubernetes-preserve-unknown-fields`).
pub type UnknownFields = BTreeMap<String, Value>;

/// A reference to another object, as T4K writes it (Kubernetes `ObjectReference`): usually just
/// `name` and `namespace`; controllers also record `kind`, `apiVersion`, `uid` and
/// `resourceVersion`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    /// API version of the referent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// A field of the referent (rarely used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_path: Option<String>,
    /// Kind of the referent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the referent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace of the referent; empty means the referring object's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Resource version the reference was made at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// UID of the referent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl ObjectReference {
    /// A reference by name and namespace.
    pub fn new(name: impl Into<String>, namespace: Option<&str>) -> Self {
        Self {
            name: Some(name.into()),
            namespace: namespace.map(str::to_owned),
            ..Self::default()
        }
    }
}

/// Group, version and kind of a resource type (any field may be empty: core group, any version).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct GroupVersionKind {
    /// API group; empty for the core group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// The named objects of one resource type (all objects of the type when `objects` is empty).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    /// The resource type.
    pub group_version_kind: GroupVersionKind,
    /// Object names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<Vec<String>>,
}

/// Resources selected by type and name and/or by labels (T4K `ResourceSelector`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSelector {
    /// Resources by type and object names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub gvk_selector: Option<Vec<Resource>>,
    /// Resources by labels; the selectors are ORed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub label_selector: Option<Vec<LabelSelector>>,
}

/// How the hooks of a hook configuration run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum HookMode {
    /// One after another, in the listed order (post hooks in reverse).
    Sequential,
    /// All at once.
    Parallel,
}

/// Pods a hook runs in: by label selectors or by a regex on pod names.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PodSelector {
    /// Label selectors, ORed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub labels: Option<Vec<LabelSelector>>,
    /// Regular expression on pod names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// One hook bound to the pods (and containers) it runs in.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookTarget {
    /// The Hook to run.
    pub hook: ObjectReference,
    /// The pods to run it in.
    pub pod_selector: PodSelector,
    /// Regular expression on container names; all containers when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_regex: Option<String>,
}

/// Hooks of a plan (quiesce/unquiesce around a backup) or of a restore (post-restore hooks).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookConfig {
    /// Sequential or Parallel; defaulted to Sequential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<HookMode>,
    /// How long to wait for a not-yet-running pod before running its hooks; defaulted to 120.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600))]
    pub pod_ready_wait_seconds: Option<i64>,
    /// The hooks.
    #[schemars(length(min = 1))]
    pub hooks: Vec<HookTarget>,
}

/// Encryption of backup data with a key held in a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    /// The Secret holding the encryption key.
    pub encryption_secret: ObjectReference,
}

/// RFC 6902 operation names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PatchOp {
    /// `test`
    Test,
    /// `add`
    Add,
    /// `remove`
    Remove,
    /// `replace`
    Replace,
    /// `copy`
    Copy,
    /// `move`
    Move,
}

/// One RFC 6902 JSON patch operation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct JsonPatchOperation {
    /// The operation.
    pub op: PatchOp,
    /// JSON pointer of the target location.
    pub path: String,
    /// JSON pointer of the source (copy, move).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The value (add, replace, test); any JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json_value")]
    pub value: Option<Value>,
}

/// Status of one step of a T4K workflow, as recorded in `status.condition[]`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct PhaseCondition<P, S> {
    /// The phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<P>,
    /// Its status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<S>,
    /// Why, in a few words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time")]
    pub timestamp: Option<String>,
}

/// Schema of a free-form object whose content the API server must keep (values, custom
/// resources, …).
pub fn preserve_unknown_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Schema of a field that may hold any JSON value (a JSON patch `value`: string, number, object,
/// …). Kubernetes accepts `x-kubernetes-preserve-unknown-fields` without a `type` for exactly
/// this; forcing `type: object` would reject `value: "nginx:1.25"`.
pub fn any_json_value(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Schema of an RFC 3339 timestamp kept as text (round-trips byte for byte).
pub fn date_time(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "format": "date-time",
    })
}

/// Schema of a free-form list of objects.
pub fn preserve_unknown_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
    })
}

/// Schema of an int-or-string quantity (`10Gi`, `1000`). Kubernetes' structural rules accept
/// `x-kubernetes-int-or-string` in place of a `type`.
pub fn quantity(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
    })
}
