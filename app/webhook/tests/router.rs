#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The real admission router, driven over HTTP with AdmissionReview fixtures.

mod common;

use base64::Engine as _;

use common::{RouterHarness, fixture, widget_gvk, widget_registry};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use tvk_webhook::{DEFAULT_MAX_BODY_BYTES, mutate_path, validate_path};

fn answer(review: &Value) -> &Value {
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1", "{review}");
    assert_eq!(review["kind"], "AdmissionReview", "{review}");
    &review["response"]
}

async fn harness() -> RouterHarness {
    RouterHarness::start(widget_registry(), DEFAULT_MAX_BODY_BYTES).await
}

#[tokio::test]
async fn valid_create_is_allowed_with_its_uid() {
    let harness = harness().await;
    let (status, review) = harness
        .post(
            &validate_path(&widget_gvk()),
            fixture("widget-create-valid.json"),
        )
        .await;
    assert_eq!(status, 200);
    let response = answer(&review);
    assert_eq!(response["uid"], "6f0b5c1e-0001-4c1a-9d55-000000000001");
    assert_eq!(response["allowed"], true);
    assert!(response.get("warnings").is_none(), "{response}");
    assert!(response.get("patch").is_none(), "{response}");
}

#[tokio::test]
async fn warnings_are_passed_through() {
    let harness = harness().await;
    let (_, review) = harness
        .post(
            &validate_path(&widget_gvk()),
            fixture("widget-create-warning.json"),
        )
        .await;
    let response = answer(&review);
    assert_eq!(response["allowed"], true);
    assert_eq!(
        response["warnings"],
        json!(["spec.legacy is deprecated and ignored"])
    );
}

#[tokio::test]
async fn invalid_create_is_denied_with_every_field_error() {
    let harness = harness().await;
    let (status, review) = harness
        .post(
            &validate_path(&widget_gvk()),
            fixture("widget-create-invalid.json"),
        )
        .await;
    assert_eq!(status, 200);
    let response = answer(&review);
    assert_eq!(response["uid"], "6f0b5c1e-0003-4c1a-9d55-000000000003");
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 422);
    assert_eq!(response["status"]["reason"], "Invalid");
    assert_eq!(
        response["status"]["message"],
        "spec.size: must be an integer from 1 to 10; spec.mode: must be one of Fast, Safe"
    );
    assert_eq!(
        response["status"]["details"]["causes"],
        json!([
            {"reason": "FieldValueInvalid", "field": "spec.size", "message": "must be an integer from 1 to 10"},
            {"reason": "FieldValueInvalid", "field": "spec.mode", "message": "must be one of Fast, Safe"},
        ])
    );
}

#[tokio::test]
async fn update_is_judged_against_the_old_object() {
    let harness = harness().await;
    let path = validate_path(&widget_gvk());
    let (_, review) = harness
        .post(&path, fixture("widget-update-immutable.json"))
        .await;
    let response = answer(&review);
    assert_eq!(response["allowed"], false);
    assert_eq!(
        response["status"]["message"],
        "spec.mode: is immutable once the widget exists"
    );

    let (_, review) = harness
        .post(&path, fixture("widget-update-allowed.json"))
        .await;
    assert_eq!(response_allowed(&review), true);
}

fn response_allowed(review: &Value) -> bool {
    answer(review)["allowed"].as_bool().unwrap()
}

#[tokio::test]
async fn update_that_keeps_the_admitted_spec_is_not_judged_again() {
    let harness = harness().await;
    let path = validate_path(&widget_gvk());
    // The stored spec breaks today's rules (they tightened after it was admitted): a label edit
    // must still go through.
    let (_, review) = harness
        .post(&path, fixture("widget-update-labels-only.json"))
        .await;
    assert!(response_allowed(&review), "{review}");
    // An object being deleted must be able to lose its finalizers.
    let (_, review) = harness
        .post(&path, fixture("widget-update-being-deleted.json"))
        .await;
    assert!(response_allowed(&review), "{review}");
    // The same invalid spec as a change is still denied.
    let mut changed: Value =
        serde_json::from_slice(&fixture("widget-update-labels-only.json")).unwrap();
    changed["request"]["oldObject"]["spec"] = json!({"size": 3, "mode": "Turbo"});
    let (_, review) = harness
        .post(&path, serde_json::to_vec(&changed).unwrap())
        .await;
    assert!(!response_allowed(&review), "{review}");
}

#[tokio::test]
async fn delete_is_allowed_without_validation() {
    let harness = harness().await;
    let (_, review) = harness
        .post(&validate_path(&widget_gvk()), fixture("widget-delete.json"))
        .await;
    assert!(response_allowed(&review), "{review}");
}

#[tokio::test]
async fn mutate_returns_the_defaults_as_a_json_patch() {
    let harness = harness().await;
    let (status, review) = harness
        .post(
            &mutate_path(&widget_gvk()),
            fixture("widget-mutate-defaults.json"),
        )
        .await;
    assert_eq!(status, 200);
    let response = answer(&review);
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    // A Go []byte: base64 in JSON, as the API server decodes it.
    let patch = base64::engine::general_purpose::STANDARD
        .decode(
            response["patch"]
                .as_str()
                .expect("patch is a base64 string"),
        )
        .unwrap();
    let patch: Value = serde_json::from_slice(&patch).unwrap();
    assert_eq!(
        patch,
        json!([{"op": "add", "path": "/spec/mode", "value": "Safe"}])
    );
}

#[tokio::test]
async fn mutate_without_anything_to_default_sends_no_patch() {
    let harness = harness().await;
    let (_, review) = harness
        .post(
            &mutate_path(&widget_gvk()),
            fixture("widget-create-valid.json"),
        )
        .await;
    let response = answer(&review);
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response}");
    assert!(response.get("patchType").is_none(), "{response}");
}

#[tokio::test]
async fn mutate_denies_when_defaulting_finds_errors() {
    let harness = harness().await;
    let (_, review) = harness
        .post(
            &mutate_path(&widget_gvk()),
            fixture("widget-mutate-no-spec.json"),
        )
        .await;
    let response = answer(&review);
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 422);
    assert_eq!(response["status"]["message"], "spec: is required");
}

#[tokio::test]
async fn unknown_kind_is_denied_naming_it() {
    let harness = harness().await;
    let (status, review) = harness
        .post(&validate_path(&widget_gvk()), fixture("unknown-kind.json"))
        .await;
    assert_eq!(status, 200);
    let response = answer(&review);
    assert_eq!(response["uid"], "6f0b5c1e-0009-4c1a-9d55-000000000009");
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("kind ConfigMap (v1)"), "{message}");
    assert!(
        message.contains("Widget (example.tvk.test/v1)"),
        "{message}"
    );
}

#[tokio::test]
async fn unserved_version_is_denied_naming_it() {
    let harness = harness().await;
    let (_, review) = harness
        .post(
            &validate_path(&widget_gvk()),
            fixture("widget-wrong-version.json"),
        )
        .await;
    let response = answer(&review);
    assert_eq!(response["allowed"], false);
    assert_eq!(
        response["status"]["message"],
        "Widget example.tvk.test/v2 is not served by this webhook; it serves example.tvk.test/v1"
    );
}

#[tokio::test]
async fn garbage_body_is_denied_not_crashed() {
    let harness = harness().await;
    for body in [
        fixture("garbage.json"),
        b"".to_vec(),
        b"\xff\xfe not utf-8".to_vec(),
        b"[1, 2, 3]".to_vec(),
        b"{\"apiVersion\": \"admission.k8s.io/v1\", \"kind\": \"AdmissionReview\"}".to_vec(),
    ] {
        let (status, review) = harness
            .post(&validate_path(&widget_gvk()), body.clone())
            .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let response = answer(&review);
        assert_eq!(response["allowed"], false, "{review}");
        assert_eq!(response["status"]["code"], 400, "{review}");
        assert!(
            !response["status"]["message"].as_str().unwrap().is_empty(),
            "{review}"
        );
    }
    // The server is still there.
    let (_, review) = harness
        .post(
            &validate_path(&widget_gvk()),
            fixture("widget-create-valid.json"),
        )
        .await;
    assert!(response_allowed(&review));
}

#[tokio::test]
async fn unusable_review_is_denied_with_its_uid() {
    let harness = harness().await;
    let (_, review) = harness
        .post(
            &validate_path(&widget_gvk()),
            fixture("review-v1beta1.json"),
        )
        .await;
    let response = answer(&review);
    assert_eq!(response["uid"], "6f0b5c1e-0011-4c1a-9d55-000000000011");
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("admission.k8s.io/v1beta1"), "{message}");
    assert!(message.contains("admissionReviewVersions"), "{message}");

    let (_, review) = harness
        .post(
            &validate_path(&widget_gvk()),
            fixture("review-missing-operation.json"),
        )
        .await;
    let response = answer(&review);
    assert_eq!(response["uid"], "6f0b5c1e-0012-4c1a-9d55-000000000012");
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("operation"), "{message}");
}

#[tokio::test]
async fn deeply_nested_object_is_denied_not_overflowed() {
    let harness = harness().await;
    let mut review: Value = serde_json::from_slice(&fixture("widget-create-valid.json")).unwrap();
    review["request"]["object"]["spec"]["deep"] = Value::Null;
    let text = serde_json::to_string(&review).unwrap().replace(
        "\"deep\":null",
        &format!("\"deep\":{}", "[".repeat(10_000) + &"]".repeat(10_000)),
    );
    let (status, review) = harness
        .post(&validate_path(&widget_gvk()), text.into_bytes())
        .await;
    assert_eq!(status, 200);
    let response = answer(&review);
    assert_eq!(response["allowed"], false);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("recursion limit"),
        "{review}"
    );
}

#[tokio::test]
async fn oversized_body_gets_413_with_a_clear_message() {
    let harness = RouterHarness::start(widget_registry(), 64 * 1024).await;
    let mut review: Value = serde_json::from_slice(&fixture("widget-create-valid.json")).unwrap();
    review["request"]["object"]["spec"]["padding"] = json!("x".repeat(100 * 1024));
    let (status, body) = harness
        .post(
            &validate_path(&widget_gvk()),
            serde_json::to_vec(&review).unwrap(),
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(
        body,
        json!(
            "the admission request body is larger than 65536 bytes, the limit of this webhook (--max-body-bytes)"
        )
    );
    assert!(
        harness.metrics.encode().contains("result=\"too_large\"} 1"),
        "{}",
        harness.metrics.encode()
    );
}

#[tokio::test]
async fn body_under_the_default_cap_is_reviewed() {
    // 3 MiB: over axum's own 2 MiB default, under the webhook's 4 MiB cap.
    let harness = harness().await;
    let mut review: Value = serde_json::from_slice(&fixture("widget-create-valid.json")).unwrap();
    review["request"]["object"]["metadata"]["annotations"] =
        json!({"example.tvk.test/blob": "x".repeat(3 * 1024 * 1024)});
    let (status, review) = harness
        .post(
            &validate_path(&widget_gvk()),
            serde_json::to_vec(&review).unwrap(),
        )
        .await;
    assert_eq!(status, 200);
    assert!(response_allowed(&review), "{}", answer(&review)["status"]);
}

#[tokio::test]
async fn unknown_path_is_404_listing_the_served_paths() {
    let harness = harness().await;
    let (status, body) = harness
        .post("/validate-example-tvk-test-v1-gadget", b"{}".to_vec())
        .await;
    assert_eq!(status, 404);
    let body = body.as_str().unwrap();
    assert!(
        body.contains("/validate-example-tvk-test-v1-widget"),
        "{body}"
    );
    assert!(
        body.contains("/mutate-example-tvk-test-v1-widget"),
        "{body}"
    );
}

#[tokio::test]
async fn requests_are_counted_by_kind_operation_and_result() {
    let harness = harness().await;
    let path = validate_path(&widget_gvk());
    harness
        .post(&path, fixture("widget-create-valid.json"))
        .await;
    harness
        .post(&path, fixture("widget-create-invalid.json"))
        .await;
    harness
        .post(&path, fixture("widget-create-invalid.json"))
        .await;
    harness.post(&path, fixture("unknown-kind.json")).await;
    let text = harness.metrics.encode();
    for line in [
        r#"tvk_webhook_admission_requests_total{webhook="validate",kind="Widget",operation="CREATE",result="allowed"} 1"#,
        r#"tvk_webhook_admission_requests_total{webhook="validate",kind="Widget",operation="CREATE",result="denied"} 2"#,
        // A kind this registry does not serve is never a label value of its own.
        r#"tvk_webhook_admission_requests_total{webhook="validate",kind="unknown",operation="CREATE",result="denied"} 1"#,
        r#"tvk_webhook_admission_duration_seconds_count{webhook="validate"} 4"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
}
