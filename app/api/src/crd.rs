//! The application CRDs, generated from the Rust types, and the check that keeps them
//! *structural* (what a real API server demands of a `v1` CRD).
//!
//! `kube`'s derive already inlines sub-schemas and rewrites schemars' `Option`/enum shapes;
//! [`all`] then normalises what is left:
//! - `nullable` is removed everywhere. The original product's CRDs carry none, and without it the
//!   API server drops an explicit `null` instead of storing it, which is what our `Option` fields
//!   mean anyway. With it goes the `null` schemars adds to the `enum` of optional enums.
//! - `additionalProperties: true` (a struct that is only a flattened map) becomes
//!   `x-kubernetes-preserve-unknown-fields: true`.
//! - the root `title` schemars adds is removed (the API server ignores it; keeps diffs small).
//!
//! [`structural_violations`] walks a schema and lists every rule it breaks; the tests run it on
//! every generated CRD and on a fixture that must fail.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use crate::{
    backup::{Backup, ClusterBackup},
    backup_plan::{BackupPlan, ClusterBackupPlan},
    hook::Hook,
    policy::Policy,
    restore::{ClusterRestore, Restore},
    target::Target,
};

/// Every application CRD, in a fixed order (targets and policies first: the rest refer to them).
pub fn all() -> Vec<CustomResourceDefinition> {
    [
        Target::crd(),
        Policy::crd(),
        Hook::crd(),
        BackupPlan::crd(),
        ClusterBackupPlan::crd(),
        Backup::crd(),
        ClusterBackup::crd(),
        Restore::crd(),
        ClusterRestore::crd(),
    ]
    .into_iter()
    .map(normalise)
    .collect()
}

fn normalise(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        let Some(validation) = version.schema.as_mut() else {
            continue;
        };
        let Some(schema) = validation.open_api_v3_schema.take() else {
            continue;
        };
        let normalised = serde_json::to_value(&schema).ok().and_then(|mut value| {
            strip_nullable(&mut value);
            if let Some(root) = value.as_object_mut() {
                root.remove("title");
            }
            serde_json::from_value(value).ok()
        });
        // Serialising a JSONSchemaProps and reading it back cannot fail; if it ever did, keep
        // the schema as kube produced it (the structural test would flag any problem).
        validation.open_api_v3_schema = Some(normalised.unwrap_or(schema));
    }
    crd
}

fn strip_nullable(schema: &mut Value) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    if object.remove("nullable").is_some()
        && let Some(Value::Array(values)) = object.get_mut("enum")
    {
        values.retain(|v| !v.is_null());
    }
    // A struct made only of a flattened map (a status kept free-form) comes out as
    // `additionalProperties: true`, which a structural schema spells preserve-unknown-fields.
    if object.get("additionalProperties") == Some(&Value::Bool(true)) {
        object.remove("additionalProperties");
        object.insert(
            "x-kubernetes-preserve-unknown-fields".to_string(),
            Value::Bool(true),
        );
    }
    for (key, child) in object.iter_mut() {
        match key.as_str() {
            "properties" | "patternProperties" => {
                if let Some(map) = child.as_object_mut() {
                    map.values_mut().for_each(strip_nullable);
                }
            }
            "items" | "additionalProperties" | "not" => strip_nullable(child),
            "allOf" | "anyOf" | "oneOf" => {
                if let Some(list) = child.as_array_mut() {
                    list.iter_mut().for_each(strip_nullable);
                }
            }
            _ => {}
        }
    }
}

/// Every structural-schema rule `schema` (an `openAPIV3Schema`, as JSON) breaks, each as
/// `path: problem`. Empty means the API server will accept it as structural.
///
/// Checked: a `type` on every node (except `x-kubernetes-int-or-string`, and
/// `x-kubernetes-preserve-unknown-fields` nodes that accept any value), `type: object` at the
/// root and no preserve-unknown-fields there, preserve-unknown-fields only on objects (or
/// untyped any-value nodes), no `nullable` without a `type`, no `$ref`/`definitions`/`$schema`,
/// nothing but value validations inside `allOf`/`anyOf`/`oneOf`/`not`, `properties` and
/// `additionalProperties` not together, arrays with one `items` schema, and `default`s that
/// satisfy their own schema.
pub fn structural_violations(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        out.push("<root>: must have type: object".to_string());
    }
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        out.push("<root>: must not set x-kubernetes-preserve-unknown-fields".to_string());
    }
    check_node(schema, "<root>", &mut out);
    out
}

/// Keywords not allowed inside `allOf`/`anyOf`/`oneOf`/`not` of a structural schema.
const FORBIDDEN_IN_JUNCTORS: &[&str] = &[
    "type",
    "properties",
    "items",
    "additionalProperties",
    "description",
    "default",
    "nullable",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
];

fn check_node(node: &Value, path: &str, out: &mut Vec<String>) {
    let Some(object) = node.as_object() else {
        out.push(format!("{path}: schema must be an object, found {node}"));
        return;
    };
    for forbidden in ["$ref", "definitions", "$defs", "$schema"] {
        if object.contains_key(forbidden) {
            out.push(format!("{path}: `{forbidden}` is not allowed"));
        }
    }
    let flag = |key: &str| object.get(key) == Some(&Value::Bool(true));
    let preserve = flag("x-kubernetes-preserve-unknown-fields");
    let int_or_string = flag("x-kubernetes-int-or-string");
    let type_ = object.get("type").and_then(Value::as_str);
    match type_ {
        None if !(int_or_string || preserve) => {
            out.push(format!("{path}: missing `type`"));
        }
        Some(t)
            if !matches!(
                t,
                "object" | "array" | "string" | "integer" | "number" | "boolean"
            ) =>
        {
            out.push(format!("{path}: unknown type `{t}`"));
        }
        _ => {}
    }
    if let Some(other) = object.get("type")
        && !other.is_string()
    {
        out.push(format!(
            "{path}: `type` must be a single string, found {other}"
        ));
    }
    if preserve && type_.is_some_and(|t| t != "object") {
        out.push(format!(
            "{path}: x-kubernetes-preserve-unknown-fields needs type: object, found {}",
            type_.unwrap_or_default()
        ));
    }
    if object.contains_key("nullable") && type_.is_none() {
        out.push(format!("{path}: `nullable` without `type`"));
    }
    if object.contains_key("properties") && object.contains_key("additionalProperties") {
        out.push(format!(
            "{path}: `properties` and `additionalProperties` are mutually exclusive"
        ));
    }
    if object.get("additionalProperties") == Some(&Value::Bool(true)) {
        out.push(format!(
            "{path}: additionalProperties: true is not allowed; use x-kubernetes-preserve-unknown-fields"
        ));
    }
    if type_ == Some("array") {
        match object.get("items") {
            Some(Value::Object(_)) => {}
            Some(_) => out.push(format!("{path}: `items` must be a single schema")),
            None => out.push(format!("{path}: array without `items`")),
        }
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        if let Some(list) = object.get(junctor) {
            match list.as_array() {
                Some(list) => {
                    for (i, branch) in list.iter().enumerate() {
                        check_junctor_branch(branch, &format!("{path}.{junctor}[{i}]"), out);
                    }
                }
                None => out.push(format!("{path}: `{junctor}` must be a list")),
            }
        }
    }
    if let Some(not) = object.get("not") {
        check_junctor_branch(not, &format!("{path}.not"), out);
    }
    if let Some(default) = object.get("default") {
        for problem in value_violations(default, node) {
            out.push(format!(
                "{path}: default {default} does not satisfy its schema: {problem}"
            ));
        }
    }
    if let Some(properties) = object.get("properties") {
        match properties.as_object() {
            Some(properties) => {
                for (name, child) in properties {
                    check_node(child, &format!("{path}.{name}"), out);
                }
            }
            None => out.push(format!("{path}: `properties` must be an object")),
        }
    }
    if let Some(items) = object.get("items")
        && items.is_object()
    {
        check_node(items, &format!("{path}[]"), out);
    }
    if let Some(additional) = object.get("additionalProperties")
        && additional.is_object()
    {
        check_node(additional, &format!("{path}{{}}"), out);
    }
}

fn check_junctor_branch(branch: &Value, path: &str, out: &mut Vec<String>) {
    let Some(object) = branch.as_object() else {
        out.push(format!("{path}: must be a schema object"));
        return;
    };
    for key in FORBIDDEN_IN_JUNCTORS {
        if object.contains_key(*key) {
            out.push(format!(
                "{path}: `{key}` is not allowed inside allOf/anyOf/oneOf/not"
            ));
        }
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        if let Some(list) = object.get(junctor).and_then(Value::as_array) {
            for (i, nested) in list.iter().enumerate() {
                check_junctor_branch(nested, &format!("{path}.{junctor}[{i}]"), out);
            }
        }
    }
}

/// Where `value` breaks `schema` (type, enum, ranges, lengths, required, nested properties):
/// enough to check that defaults satisfy their schema.
fn value_violations(value: &Value, schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let type_ok = match schema.get("type").and_then(Value::as_str) {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !type_ok {
        out.push(format!(
            "expected {}",
            schema.get("type").and_then(Value::as_str).unwrap_or("?")
        ));
        return out;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        out.push(format!("not one of {}", Value::Array(allowed.clone())));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            out.push(format!("below minimum {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            out.push(format!("above maximum {max}"));
        }
    }
    let length = match value {
        Value::String(s) => Some(s.chars().count()),
        Value::Array(a) => Some(a.len()),
        _ => None,
    };
    if let Some(len) = length {
        for (key, below) in [
            ("minLength", true),
            ("maxLength", false),
            ("minItems", true),
            ("maxItems", false),
        ] {
            if let Some(bound) = schema.get(key).and_then(Value::as_u64) {
                let bound = usize::try_from(bound).unwrap_or(usize::MAX);
                if (below && len < bound) || (!below && len > bound) {
                    out.push(format!("violates {key} {bound}"));
                }
            }
        }
    }
    if let Value::Object(map) = value {
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(name) {
                    out.push(format!("missing required `{name}`"));
                }
            }
        }
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (name, child) in map {
                if let Some(child_schema) = properties.get(name) {
                    out.extend(
                        value_violations(child, child_schema)
                            .into_iter()
                            .map(|p| format!("{name}: {p}")),
                    );
                }
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            out.extend(
                value_violations(item, item_schema)
                    .into_iter()
                    .map(|p| format!("[{i}]: {p}")),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;

    fn schema_of(crd: &CustomResourceDefinition) -> Value {
        let version = &crd.spec.versions[0];
        serde_json::to_value(
            version
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn every_generated_crd_is_structural() {
        for crd in all() {
            let violations = structural_violations(&schema_of(&crd));
            assert!(
                violations.is_empty(),
                "{} is not structural:\n  {}",
                crd.metadata.name.as_deref().unwrap_or("?"),
                violations.join("\n  ")
            );
        }
    }

    #[test]
    fn nine_kinds_with_the_right_scope_status_and_names() {
        let crds = all();
        let summary: BTreeSet<(String, String, String)> = crds
            .iter()
            .map(|c| {
                (
                    c.spec.names.kind.clone(),
                    c.spec.names.plural.clone(),
                    c.spec.scope.clone(),
                )
            })
            .collect();
        let expected: BTreeSet<(String, String, String)> = [
            ("Target", "targets", "Namespaced"),
            ("Policy", "policies", "Namespaced"),
            ("Hook", "hooks", "Namespaced"),
            ("BackupPlan", "backupplans", "Namespaced"),
            ("ClusterBackupPlan", "clusterbackupplans", "Cluster"),
            ("Backup", "backups", "Namespaced"),
            ("ClusterBackup", "clusterbackups", "Cluster"),
            ("Restore", "restores", "Namespaced"),
            ("ClusterRestore", "clusterrestores", "Cluster"),
        ]
        .into_iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
        assert_eq!(summary, expected);
        for crd in &crds {
            assert_eq!(crd.spec.group, "triliovault.trilio.io");
            assert_eq!(crd.spec.versions.len(), 1);
            let v = &crd.spec.versions[0];
            assert_eq!(v.name, "v1");
            assert!(v.served && v.storage);
            assert!(
                v.subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some(),
                "{} lacks the status subresource",
                crd.spec.names.kind
            );
            assert!(
                !crd.spec
                    .names
                    .short_names
                    .clone()
                    .unwrap_or_default()
                    .is_empty(),
                "{} has no short name",
                crd.spec.names.kind
            );
            assert!(
                !v.additional_printer_columns
                    .clone()
                    .unwrap_or_default()
                    .is_empty(),
                "{} has no printer columns",
                crd.spec.names.kind
            );
        }
    }

    #[test]
    fn schema_keeps_api_spellings_ranges_and_required_fields() {
        let crds = all();
        let find = |kind: &str| schema_of(crds.iter().find(|c| c.spec.names.kind == kind).unwrap());
        let target = find("Target");
        let vendors = &target["properties"]["spec"]["properties"]["vendor"]["enum"];
        assert!(vendors.as_array().unwrap().contains(&json!("Wassabi")));
        assert!(
            vendors
                .as_array()
                .unwrap()
                .contains(&json!("IBMCleversafe"))
        );
        assert_eq!(
            target["properties"]["spec"]["required"],
            json!(["type", "vendor"])
        );
        let plan = find("BackupPlan");
        let max_incr = &plan["properties"]["spec"]["properties"]["backupConfig"]["properties"]["maxIncrBackupsPerFullBackup"];
        assert_eq!(max_incr["minimum"].as_f64(), Some(1.0));
        assert_eq!(max_incr["maximum"].as_f64(), Some(15.0));
        let restore = find("Restore");
        let wait = &restore["properties"]["spec"]["properties"]["resourcesReadyWaitSeconds"];
        assert_eq!(
            (wait["minimum"].as_f64(), wait["maximum"].as_f64()),
            (Some(0.0), Some(1200.0))
        );
        let patch_value = &restore["properties"]["spec"]["properties"]["transformComponents"]["properties"]
            ["custom"]["items"]["properties"]["jsonPatches"]["items"]["properties"]["value"];
        assert_eq!(
            patch_value["x-kubernetes-preserve-unknown-fields"],
            json!(true)
        );
        let flags = &restore["properties"]["spec"]["properties"]["restoreFlags"]["properties"];
        for name in ["patchCRD", "useOCPNamespaceUIDRange", "restoreVMMACAddress"] {
            assert!(flags.get(name).is_some(), "restoreFlags.{name} missing");
        }
    }

    #[test]
    fn checker_rejects_non_structural_fixture() {
        let fixture: Value =
            serde_json::from_str(include_str!("../tests/fixtures/non-structural-schema.json"))
                .unwrap();
        let violations = structural_violations(&fixture);
        let expect = [
            "<root>: must not set x-kubernetes-preserve-unknown-fields",
            "<root>.spec.untyped: missing `type`",
            "<root>.spec.nullableOnly: `nullable` without `type`",
            "<root>.spec.preservedString: x-kubernetes-preserve-unknown-fields needs type: object",
            "<root>.spec.referenced: `$ref` is not allowed",
            "<root>.spec.choice.anyOf[0]: `type` is not allowed inside allOf/anyOf/oneOf/not",
            "<root>.spec.badDefault: default 0 does not satisfy its schema: below minimum 1",
            "<root>.spec.badEnumDefault: default \"Weekly\" does not satisfy its schema",
            "<root>.spec.list: array without `items`",
            "<root>.spec.both: `properties` and `additionalProperties` are mutually exclusive",
        ];
        for expected in expect {
            assert!(
                violations.iter().any(|v| v.starts_with(expected)),
                "missing violation {expected:?} in:\n  {}",
                violations.join("\n  ")
            );
        }
    }

    #[test]
    fn checker_accepts_a_minimal_structural_schema() {
        let schema = json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "size": {"x-kubernetes-int-or-string": true},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "mode": {"type": "string", "enum": ["A", "B"], "default": "A"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}}
                    }
                }
            }
        });
        assert_eq!(structural_violations(&schema), Vec::<String>::new());
    }
}
