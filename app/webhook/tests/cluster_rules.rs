#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Cluster-state rules behind the real router: a Widget whose size another widget already has
//! is denied with 409 and the rule's field error; an unreadable state denies (fail closed) with
//! 503; the pure rules run first; an UPDATE that keeps the spec and every mutate request never
//! reach the rule.

mod common;

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use common::{RouterHarness, fixture, widget_gvk, widget_registry};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use tvk_api::admission::{FieldError, GroupVersionKind, Request};
use tvk_webhook::{
    ClusterDenial, ClusterRuleSet, ClusterRules, DEFAULT_MAX_BODY_BYTES,
    cluster_rules::CheckFuture, mutate_path, validate_path,
};

/// "No two widgets of one size": the taken sizes stand for the cluster's state.
struct UniqueSize {
    taken: Mutex<Option<Vec<i64>>>,
    calls: AtomicUsize,
}

impl ClusterRules for UniqueSize {
    fn gvk(&self) -> GroupVersionKind {
        widget_gvk()
    }

    fn check<'a>(&'a self, request: Request<'a>) -> CheckFuture<'a> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let size = request.object["spec"]["size"].as_i64().unwrap();
            match &*self.taken.lock().unwrap() {
                None => Err(ClusterDenial::Unavailable(
                    "the widget list is unreachable".into(),
                )),
                Some(taken) if taken.contains(&size) => {
                    Err(ClusterDenial::Conflict(vec![FieldError::new(
                        "spec.size",
                        format!("{size} is taken; choose another"),
                    )]))
                }
                Some(_) => Ok(()),
            }
        })
    }
}

async fn harness(taken: Option<Vec<i64>>) -> (RouterHarness, Arc<UniqueSize>) {
    let rule = Arc::new(UniqueSize {
        taken: Mutex::new(taken),
        calls: AtomicUsize::new(0),
    });
    let rules = ClusterRuleSet::new().with(rule.clone());
    let harness =
        RouterHarness::start_with_rules(widget_registry(), rules, DEFAULT_MAX_BODY_BYTES).await;
    (harness, rule)
}

fn response(review: &Value) -> &Value {
    &review["response"]
}

#[tokio::test]
async fn a_conflict_with_the_cluster_state_is_denied_with_409_and_the_field() {
    let (harness, rule) = harness(Some(vec![3])).await;
    let (status, review) = harness
        .post(
            &validate_path(&widget_gvk()),
            fixture("widget-create-valid.json"),
        )
        .await;
    assert_eq!(status, 200);
    let response = response(&review);
    assert_eq!(response["uid"], "6f0b5c1e-0001-4c1a-9d55-000000000001");
    assert_eq!(response["allowed"], false, "{review}");
    assert_eq!(response["status"]["code"], 409);
    assert_eq!(response["status"]["reason"], "Conflict");
    assert_eq!(
        response["status"]["message"],
        "spec.size: 3 is taken; choose another"
    );
    assert_eq!(
        response["status"]["details"]["causes"],
        json!([{"reason": "FieldValueInvalid", "field": "spec.size", "message": "3 is taken; choose another"}])
    );
    assert_eq!(rule.calls.load(Ordering::SeqCst), 1);

    *rule.taken.lock().unwrap() = Some(vec![4]);
    let (_, review) = harness
        .post(
            &validate_path(&widget_gvk()),
            fixture("widget-create-valid.json"),
        )
        .await;
    assert_eq!(response_allowed(&review), true, "{review}");
}

fn response_allowed(review: &Value) -> bool {
    review["response"]["allowed"].as_bool().unwrap()
}

#[tokio::test]
async fn an_unreadable_state_denies_with_503_and_says_to_retry() {
    let (harness, _) = harness(None).await;
    let (_, review) = harness
        .post(
            &validate_path(&widget_gvk()),
            fixture("widget-create-valid.json"),
        )
        .await;
    let response = response(&review);
    assert_eq!(response["allowed"], false, "{review}");
    assert_eq!(response["status"]["code"], 503);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("the widget list is unreachable"),
        "{message}"
    );
    assert!(message.contains("retry"), "{message}");
}

#[tokio::test]
async fn pure_rules_first_and_unchanged_specs_and_mutation_skip_the_state() {
    let (harness, rule) = harness(None).await;
    // Invalid by the pure rules: the pure denial, the state never read.
    let (_, review) = harness
        .post(
            &validate_path(&widget_gvk()),
            fixture("widget-create-invalid.json"),
        )
        .await;
    assert_eq!(review["response"]["status"]["code"], 422, "{review}");
    // An UPDATE that keeps the admitted spec (labels only) is let through.
    let (_, review) = harness
        .post(
            &validate_path(&widget_gvk()),
            fixture("widget-update-labels-only.json"),
        )
        .await;
    assert!(response_allowed(&review), "{review}");
    // Defaulting never consults the state.
    let (_, review) = harness
        .post(
            &mutate_path(&widget_gvk()),
            fixture("widget-mutate-defaults.json"),
        )
        .await;
    assert!(response_allowed(&review), "{review}");
    assert_eq!(rule.calls.load(Ordering::SeqCst), 0);
}
