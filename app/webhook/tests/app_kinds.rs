#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The router with the real registry of the application's kinds (`tvk_api::admission::app_admission`),
//! driven with AdmissionReview fixtures and with every example manifest of the repository.

mod common;

use base64::Engine as _;

use std::{path::Path, sync::Arc};

use common::{RouterHarness, fixture};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use tvk_api::{
    admission::{GroupVersionKind, app_admission},
    yaml::{Limits, parse_documents},
};
use tvk_webhook::{DEFAULT_MAX_BODY_BYTES, mutate_path, validate_path};

fn gvk(kind: &str) -> GroupVersionKind {
    GroupVersionKind {
        group: "triliovault.trilio.io".into(),
        version: "v1".into(),
        kind: kind.into(),
    }
}

async fn harness() -> RouterHarness {
    RouterHarness::start(Arc::new(app_admission()), DEFAULT_MAX_BODY_BYTES).await
}

fn decoded_patch(response: &Value) -> json_patch::Patch {
    // A Go []byte: base64 in JSON, as the API server decodes it.
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(
            response["patch"]
                .as_str()
                .expect("patch is a base64 string"),
        )
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn every_app_kind_has_both_endpoints() {
    let harness = harness().await;
    for kind in [
        "Target",
        "Policy",
        "Hook",
        "BackupPlan",
        "ClusterBackupPlan",
        "Backup",
        "ClusterBackup",
        "Restore",
        "ClusterRestore",
    ] {
        for path in [validate_path(&gvk(kind)), mutate_path(&gvk(kind))] {
            // An empty body reaches the handler (a denial), not the 404 fallback.
            let (status, review) = harness.post(&path, b"{}".to_vec()).await;
            assert_eq!(status, 200, "{path}: {review}");
            assert_eq!(review["response"]["allowed"], false, "{path}");
        }
    }
}

#[tokio::test]
async fn target_without_nfs_credentials_is_denied_with_the_field_path() {
    let harness = harness().await;
    let (status, review) = harness
        .post(
            &validate_path(&gvk("Target")),
            fixture("target-nfs-missing-credentials.json"),
        )
        .await;
    assert_eq!(status, 200);
    let response = &review["response"];
    assert_eq!(response["uid"], "b1e0c2a4-0001-4f6e-8a3b-7c9d00000001");
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 422);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.starts_with("spec.nfsCredentials: "), "{message}");
    assert!(message.contains("NFS"), "{message}");
    assert_eq!(
        response["status"]["details"]["causes"][0]["field"],
        "spec.nfsCredentials"
    );
}

#[tokio::test]
async fn target_type_change_on_update_is_denied() {
    let harness = harness().await;
    let (_, review) = harness
        .post(
            &validate_path(&gvk("Target")),
            fixture("target-update-type-change.json"),
        )
        .await;
    let response = &review["response"];
    assert_eq!(response["allowed"], false, "{review}");
    let fields: Vec<&str> = response["status"]["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cause| cause["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"spec.type"), "{review}");

    // The same object as a CREATE is fine: only the change is refused.
    let mut create: Value =
        serde_json::from_slice(&fixture("target-update-type-change.json")).unwrap();
    create["request"]["operation"] = json!("CREATE");
    create["request"]["oldObject"] = Value::Null;
    let (_, review) = harness
        .post(
            &validate_path(&gvk("Target")),
            serde_json::to_vec(&create).unwrap(),
        )
        .await;
    assert_eq!(review["response"]["allowed"], true, "{review}");
}

#[tokio::test]
async fn valid_policy_is_allowed() {
    let harness = harness().await;
    let (_, review) = harness
        .post(
            &validate_path(&gvk("Policy")),
            fixture("policy-retention-valid.json"),
        )
        .await;
    assert_eq!(review["response"]["allowed"], true, "{review}");
    assert_eq!(
        review["response"]["uid"],
        "b1e0c2a4-0003-4f6e-8a3b-7c9d00000003"
    );
}

#[tokio::test]
async fn hook_mutate_adds_defaults_once() {
    let harness = harness().await;
    let body = fixture("hook-mutate-defaults.json");
    let (_, review) = harness.post(&mutate_path(&gvk("Hook")), body.clone()).await;
    let response = &review["response"];
    assert_eq!(response["allowed"], true, "{review}");
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = decoded_patch(response);

    let mut request: Value = serde_json::from_slice(&body).unwrap();
    let mut object = request["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).unwrap();
    for step in ["pre", "post"] {
        for field in ["maxRetryCount", "timeoutSeconds", "ignoreFailure"] {
            assert!(
                object["spec"][step].get(field).is_some(),
                "spec.{step}.{field} not defaulted: {object}"
            );
        }
    }

    // The defaulted object is valid, and defaulting it again changes nothing.
    request["request"]["object"] = object;
    let defaulted = serde_json::to_vec(&request).unwrap();
    let (_, review) = harness
        .post(&validate_path(&gvk("Hook")), defaulted.clone())
        .await;
    assert_eq!(review["response"]["allowed"], true, "{review}");
    let (_, review) = harness.post(&mutate_path(&gvk("Hook")), defaulted).await;
    assert!(review["response"].get("patch").is_none(), "{review}");
}

/// Every example manifest of ours, sent as the API server would send it, is defaulted and
/// admitted: what users copy from `examples/` is accepted by the cluster.
#[tokio::test]
async fn every_example_is_admitted() {
    let harness = harness().await;
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut entries: Vec<_> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    entries.sort();
    let mut admitted = 0;
    for path in entries {
        let text = std::fs::read_to_string(&path).unwrap();
        for document in parse_documents(&text, &Limits::default()).unwrap() {
            let object = document.value;
            if object["apiVersion"] != "triliovault.trilio.io/v1" {
                continue;
            }
            let kind = object["kind"].as_str().unwrap().to_owned();
            let plural = app_admission()
                .find("triliovault.trilio.io", &kind)
                .unwrap()
                .plural();
            let review = json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": format!("example-{admitted}"),
                    "kind": {"group": "triliovault.trilio.io", "version": "v1", "kind": kind},
                    "resource": {"group": "triliovault.trilio.io", "version": "v1", "resource": plural},
                    "name": object["metadata"]["name"],
                    "namespace": object["metadata"]["namespace"],
                    "operation": "CREATE",
                    "userInfo": {"username": "alice"},
                    "object": object,
                    "dryRun": false,
                }
            });
            let (_, mutated) = harness
                .post(
                    &mutate_path(&gvk(&kind)),
                    serde_json::to_vec(&review).unwrap(),
                )
                .await;
            assert_eq!(
                mutated["response"]["allowed"],
                true,
                "{}: {kind}: {mutated}",
                path.display()
            );
            let mut review = review;
            if mutated["response"].get("patch").is_some() {
                let patch = decoded_patch(&mutated["response"]);
                json_patch::patch(&mut review["request"]["object"], &patch).unwrap();
            }
            let (_, validated) = harness
                .post(
                    &validate_path(&gvk(&kind)),
                    serde_json::to_vec(&review).unwrap(),
                )
                .await;
            assert_eq!(
                validated["response"]["allowed"],
                true,
                "{}: {kind}: {validated}",
                path.display()
            );
            admitted += 1;
        }
    }
    assert!(admitted >= 20, "only {admitted} example documents found");
}
