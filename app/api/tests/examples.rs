#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Every file in `examples/` parses, and every document of ours in it validates, defaults
//! idempotently and round-trips through the Rust types. Other kinds (the Secrets and ConfigMaps
//! the examples create alongside) are skipped by name, explicitly.

use std::path::PathBuf;

use serde_json::Value;
use tvk_api::{
    admission::{Operation, Request, app_admission, identify},
    yaml::{Limits, parse_documents},
};

/// Kinds that appear in examples next to ours and are not validated here.
const OTHER_KINDS: &[(&str, &str)] = &[("v1", "Secret"), ("v1", "ConfigMap")];

fn examples() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

fn roundtrip<K: serde::de::DeserializeOwned + serde::Serialize>(value: &Value) -> Value {
    let typed: K = serde_json::from_value(value.clone()).unwrap();
    serde_json::to_value(&typed).unwrap()
}

fn roundtrip_as_kind(kind: &str, value: &Value) -> Value {
    match kind {
        "Target" => roundtrip::<tvk_api::Target>(value),
        "Policy" => roundtrip::<tvk_api::Policy>(value),
        "Hook" => roundtrip::<tvk_api::Hook>(value),
        "BackupPlan" => roundtrip::<tvk_api::BackupPlan>(value),
        "ClusterBackupPlan" => roundtrip::<tvk_api::ClusterBackupPlan>(value),
        "Backup" => roundtrip::<tvk_api::Backup>(value),
        "ClusterBackup" => roundtrip::<tvk_api::ClusterBackup>(value),
        "Restore" => roundtrip::<tvk_api::Restore>(value),
        "ClusterRestore" => roundtrip::<tvk_api::ClusterRestore>(value),
        other => panic!("no Rust type for {other}"),
    }
}

#[test]
fn every_example_validates_defaults_idempotently_and_round_trips() {
    let registry = app_admission();
    let files = examples();
    assert!(
        files.len() >= 20,
        "expected the example set, found {files:?}"
    );
    let mut kinds_seen = std::collections::BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let documents = parse_documents(&text, &Limits::default())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(!documents.is_empty(), "{} has no documents", file.display());
        for document in documents {
            let at = format!("{} document {}", file.display(), document.index + 1);
            let (gvk, name, _) = identify(&document.value).unwrap_or_else(|e| panic!("{at}: {e}"));
            if OTHER_KINDS.contains(&(gvk.api_version().as_str(), gvk.kind.as_str())) {
                continue;
            }
            let admission = registry
                .find(&gvk.group, &gvk.kind)
                .unwrap_or_else(|| panic!("{at}: unexpected kind {}", gvk.kind));
            kinds_seen.insert(gvk.kind.clone());
            let request = Request {
                operation: Operation::Create,
                object: &document.value,
                old_object: None,
            };
            let warnings = admission
                .validate(&request)
                .unwrap_or_else(|errors| panic!("{at} ({name}) is invalid: {errors:?}"));
            assert!(
                warnings.iter().all(|w| !w.contains("unknown field")),
                "{at}: {warnings:?}"
            );
            // Defaulting: the patched object still validates and a second pass adds nothing.
            let patch = admission.default_patch(&document.value).unwrap();
            let mut defaulted = document.value.clone();
            json_patch::patch(&mut defaulted, &patch).unwrap();
            let again = admission.default_patch(&defaulted).unwrap();
            assert!(
                again.0.is_empty(),
                "{at}: defaulting is not idempotent: {again:?}"
            );
            admission
                .validate(&Request {
                    operation: Operation::Create,
                    object: &defaulted,
                    old_object: None,
                })
                .unwrap_or_else(|errors| panic!("{at}: defaulted object invalid: {errors:?}"));
            assert_eq!(
                roundtrip_as_kind(&gvk.kind, &document.value),
                document.value,
                "{at}: a field was lost in the round trip"
            );
        }
    }
    assert_eq!(kinds_seen.len(), 9, "examples cover only {kinds_seen:?}");
}

fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let escaped = key.replace('~', "~0").replace('/', "~1");
                let path = format!("{at}/{escaped}");
                out.push(path.clone());
                pointers(child, path, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let path = format!("{at}/{i}");
                out.push(path.clone());
                pointers(child, path, out);
            }
        }
        _ => {}
    }
}

/// Every field of every example replaced by values of every wrong type: validation and
/// defaulting answer (errors or not) and never panic; a removed required field is an error.
#[test]
fn any_field_of_any_type_never_panics() {
    let registry = app_admission();
    let garbage = [
        Value::Null,
        serde_json::json!(0),
        serde_json::json!(-1),
        serde_json::json!(1e300),
        serde_json::json!(""),
        serde_json::json!("../../x"),
        serde_json::json!(true),
        serde_json::json!([]),
        serde_json::json!([{}]),
        serde_json::json!({}),
    ];
    let mut validations = 0usize;
    for file in examples() {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in parse_documents(&text, &Limits::default()).unwrap() {
            let Ok((gvk, _, _)) = identify(&document.value) else {
                continue;
            };
            let Some(admission) = registry.find(&gvk.group, &gvk.kind) else {
                continue;
            };
            let mut paths = Vec::new();
            pointers(&document.value, String::new(), &mut paths);
            for path in &paths {
                for value in &garbage {
                    let mut mutated = document.value.clone();
                    *mutated.pointer_mut(path).unwrap() = value.clone();
                    let request = Request {
                        operation: Operation::Update,
                        object: &mutated,
                        old_object: Some(&document.value),
                    };
                    let _ = admission.validate(&request);
                    let _ = admission.default_patch(&mutated);
                    validations += 1;
                }
            }
        }
    }
    assert!(validations > 5_000, "only {validations} mutations tried");
}
