#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Objects as the original product writes them (status included) deserialize into our types
//! and serialize back without losing or adding a field.

use pretty_assertions::assert_eq;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use tvk_api::yaml::{Limits, parse_single};

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/t4k/{name}", env!("CARGO_MANIFEST_DIR"));
    parse_single(&std::fs::read_to_string(path).unwrap(), &Limits::default()).unwrap()
}

fn assert_roundtrip<K: DeserializeOwned + Serialize>(value: &Value) -> K {
    let typed: K = serde_json::from_value(value.clone()).unwrap();
    assert_eq!(&serde_json::to_value(&typed).unwrap(), value);
    typed
}

#[test]
fn backup_with_full_status_round_trips() {
    let backup: tvk_api::Backup = assert_roundtrip(&fixture("backup-with-status.yaml"));
    let status = backup.status.unwrap();
    assert_eq!(status.status, Some(tvk_api::backup::BackupState::Available));
    assert_eq!(status.condition.unwrap().len(), 3);
    assert_eq!(backup.spec.type_, tvk_api::backup::BackupType::Incremental);
    assert_eq!(
        backup.spec.backup_plan.uid.as_deref(),
        Some("fda30d0c-b700-43bd-aaf9-4a3cd5e0091b")
    );
}

#[test]
fn target_with_status_and_newer_fields_round_trips() {
    let target: tvk_api::Target = assert_roundtrip(&fixture("target-with-status.yaml"));
    assert_eq!(target.spec.vendor, tvk_api::target::Vendor::Wassabi);
    // A status field this version does not model is kept verbatim.
    assert!(
        target
            .status
            .unwrap()
            .unknown
            .contains_key("availableContinuousRestoreInstances")
    );
}

#[test]
fn backup_plan_with_status_round_trips() {
    let plan: tvk_api::BackupPlan = assert_roundtrip(&fixture("backupplan-with-status.yaml"));
    assert_eq!(
        plan.spec.backup_config.target.name.as_deref(),
        Some("sample-target")
    );
}

#[test]
fn restore_with_env_patches_and_status_round_trips() {
    let restore: tvk_api::Restore = assert_roundtrip(&fixture("restore-with-status.yaml"));
    let custom = restore.spec.transform_components.unwrap().custom.unwrap();
    assert_eq!(
        custom[0].json_patches[0].value,
        Some(json!({"restored": "true"}))
    );
}

#[test]
fn minimal_manifests_stay_minimal() {
    // Absent stays absent: no defaults or empty objects appear on serialization.
    for value in [
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Hook",
               "metadata": {"name": "h"}, "spec": {"post": {}}}),
        json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Policy",
               "metadata": {"name": "p"}, "spec": {"type": "Timeout"}}),
    ] {
        match value["kind"].as_str().unwrap() {
            "Hook" => {
                assert_roundtrip::<tvk_api::Hook>(&value);
            }
            _ => {
                assert_roundtrip::<tvk_api::Policy>(&value);
            }
        }
    }
    let cluster_restore = json!({
        "apiVersion": "triliovault.trilio.io/v1", "kind": "ClusterRestore",
        "metadata": {"name": "r"},
        "spec": {"source": {"type": "ClusterBackup", "clusterBackup": {"name": "cb"}},
                 "components": [{"backupNamespace": "a", "restoreConfig": {"restoreFlags": {"onlyData": true}}}],
                 "futureField": {"x": 1}}
    });
    assert_roundtrip::<tvk_api::ClusterRestore>(&cluster_restore);
    let cluster_plan = json!({
        "apiVersion": "triliovault.trilio.io/v1", "kind": "ClusterBackupPlan",
        "metadata": {"name": "c"},
        "spec": {"backupConfig": {"target": {"name": "t", "namespace": "n"}},
                 "namespaceSelector": [{"name": "gold", "labelSelector": [{"matchLabels": {"a": "b"}}],
                                        "hookConfig": {"hooks": []}}]}
    });
    assert_roundtrip::<tvk_api::ClusterBackupPlan>(&cluster_plan);
}
