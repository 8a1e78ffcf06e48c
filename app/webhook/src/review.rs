//! From an AdmissionReview body to an AdmissionReview answer: the pure core of the webhook.
//!
//! No I/O here, so every decision (allowed, denied with field errors, patched, malformed input)
//! is tested without a server. The HTTP layer ([`crate::router`]) only adds the body-size cap,
//! metrics and logs. Whatever the body holds, the answer is an AdmissionReview: the API server
//! shows its message to the user, and a webhook that fails closed must say *why*.

use base64::Engine as _;
use kube::core::{
    DynamicObject,
    admission::{
        AdmissionRequest, AdmissionResponse, AdmissionReview, Operation as ReviewOperation,
    },
    response::{StatusCause, StatusDetails, StatusSummary},
};
use serde_json::Value;
use tvk_api::admission::{
    AdmissionRegistry, FieldError, GroupVersionKind, KindAdmission, Operation, Request,
};

use crate::{
    cluster_rules::{ClusterDenial, ClusterRuleSet},
    paths::WebhookKind,
};

/// The `apiVersion` of the only AdmissionReview version served.
pub const ADMISSION_REVIEW_API_VERSION: &str = "admission.k8s.io/v1";

/// How a review ended, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed without changes.
    Allowed,
    /// Allowed with a JSON patch of defaults.
    Patched,
    /// Denied: the object breaks a rule of its kind, or the kind is not served here.
    Denied,
    /// Denied because the body is not a usable AdmissionReview.
    Malformed,
}

impl Verdict {
    /// Metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Patched => "patched",
            Self::Denied => "denied",
            Self::Malformed => "malformed",
        }
    }
}

/// The answer to one AdmissionReview, with what the logs and metrics need to know about it.
#[derive(Debug)]
pub struct ReviewOutcome {
    /// The AdmissionReview to send back (always HTTP 200: the API server reads `allowed`).
    pub review: AdmissionReview<DynamicObject>,
    /// The verdict.
    pub verdict: Verdict,
    /// The kind of the reviewed object, when it is one this registry serves (bounded metric label).
    pub kind: Option<String>,
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`, when the request could be read.
    pub operation: Option<&'static str>,
    /// The request uid, when one could be read.
    pub uid: Option<String>,
    /// `namespace/name` of the object, when known.
    pub object: Option<String>,
    /// Why the request was denied (the message sent back), empty when allowed.
    pub message: String,
}

impl ReviewOutcome {
    fn malformed(uid: Option<String>, message: String) -> Self {
        let mut response = AdmissionResponse::invalid(&message);
        response.uid = uid.clone().unwrap_or_default();
        response.result = response.result.with_code(400);
        Self {
            review: response.into_review(),
            verdict: Verdict::Malformed,
            kind: None,
            operation: None,
            uid,
            object: None,
            message,
        }
    }
}

/// An AdmissionReview read from a request body: the request, and its objects kept as raw JSON
/// (validators see exactly what the user sent; the defaulting patch is computed against that
/// same document).
#[derive(Debug)]
pub struct ParsedReview {
    /// The request, with `object` and `oldObject` taken out.
    pub request: AdmissionRequest<DynamicObject>,
    /// `request.object`, when present and not null.
    pub object: Option<Value>,
    /// `request.oldObject`, when present and not null.
    pub old_object: Option<Value>,
}

/// Reads an `admission.k8s.io/v1` AdmissionReview from `body`; a body that is not one gets the
/// malformed-request answer to send back.
pub fn parse_review(body: &[u8]) -> Result<ParsedReview, Box<ReviewOutcome>> {
    // serde_json bounds nesting (128 levels), so hostile depth is an error, never a stack overflow.
    let mut value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(err) => {
            return Err(Box::new(ReviewOutcome::malformed(
                None,
                format!(
                    "failed to parse the request body as JSON ({err}); expected an \
                     {ADMISSION_REVIEW_API_VERSION} AdmissionReview"
                ),
            )));
        }
    };
    let uid = value
        .pointer("/request/uid")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let review_kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version != ADMISSION_REVIEW_API_VERSION || review_kind != "AdmissionReview" {
        return Err(Box::new(ReviewOutcome::malformed(
            uid,
            format!(
                "expected an {ADMISSION_REVIEW_API_VERSION} AdmissionReview, got apiVersion \
                 {api_version:?} kind {review_kind:?}; set admissionReviewVersions: [v1] in the \
                 webhook configuration"
            ),
        )));
    }
    let object = take_object(&mut value, "/request/object");
    let old_object = take_object(&mut value, "/request/oldObject");
    match serde_json::from_value::<AdmissionReview<DynamicObject>>(value)
        .map_err(|err| err.to_string())
        .and_then(|review| {
            review
                .try_into()
                .map_err(|_| "it has no request".to_owned())
        }) {
        Ok(request) => Ok(ParsedReview {
            request,
            object,
            old_object,
        }),
        Err(err) => Err(Box::new(ReviewOutcome::malformed(
            uid,
            format!("failed to read the AdmissionReview: {err}"),
        ))),
    }
}

/// Reviews one AdmissionReview `body` sent to the `webhook` endpoint of `served`.
///
/// `served` is the kind the endpoint's path was built for; a request for another kind is denied
/// (the webhook configuration points the wrong rule at this path).
pub fn review(
    registry: &AdmissionRegistry,
    webhook: WebhookKind,
    served: &GroupVersionKind,
    body: &[u8],
) -> ReviewOutcome {
    match parse_review(body) {
        Ok(parsed) => decide(
            registry,
            webhook,
            served,
            &parsed.request,
            parsed.object.as_ref(),
            parsed.old_object.as_ref(),
        ),
        Err(outcome) => *outcome,
    }
}

/// [`review`], then, for a CREATE or an UPDATE that changes the spec and that the pure rules
/// allowed, the cluster-state rules of the kind (`rules`), which may consult the API server.
/// A cluster-state conflict is denied with 409 Conflict and the rule's field errors; when the
/// state cannot be read the request is denied (fail closed) with 503 and a message to retry.
pub async fn review_with_rules(
    registry: &AdmissionRegistry,
    rules: &ClusterRuleSet,
    webhook: WebhookKind,
    served: &GroupVersionKind,
    body: &[u8],
) -> ReviewOutcome {
    let parsed = match parse_review(body) {
        Ok(parsed) => parsed,
        Err(outcome) => return *outcome,
    };
    let object = parsed.object.as_ref();
    let old_object = parsed.old_object.as_ref();
    let mut outcome = decide(
        registry,
        webhook,
        served,
        &parsed.request,
        object,
        old_object,
    );
    if outcome.verdict != Verdict::Allowed || webhook != WebhookKind::Validate {
        return outcome;
    }
    let operation = match parsed.request.operation {
        ReviewOperation::Create => Operation::Create,
        ReviewOperation::Update => Operation::Update,
        ReviewOperation::Delete | ReviewOperation::Connect => return outcome,
    };
    let Some(object) = object else {
        return outcome;
    };
    if let Some(old) = old_object
        && operation == Operation::Update
        && update_keeps_admitted_spec(object, old)
    {
        return outcome;
    }
    let kind = &parsed.request.kind;
    let Some(rule) = rules.find(&kind.group, &kind.kind) else {
        return outcome;
    };
    let request = Request {
        operation,
        object,
        old_object,
    };
    let Some(response) = outcome.review.response.take() else {
        return outcome;
    };
    match rule.check(request).await {
        Ok(()) => {
            outcome.review = response.into_review();
            outcome
        }
        Err(ClusterDenial::Conflict(errors)) => {
            let message = field_errors_message(&errors);
            let response = deny(response, 409, "Conflict", &message, &errors);
            finish(outcome, response, Verdict::Denied, message)
        }
        Err(ClusterDenial::Unavailable(reason)) => {
            let message = format!(
                "failed to check the cluster-state rules of {} ({reason}); nothing was changed, \
                 retry in a moment",
                kind.kind
            );
            let response = deny(response, 503, "ServiceUnavailable", &message, &[]);
            finish(outcome, response, Verdict::Denied, message)
        }
    }
}

fn take_object(value: &mut Value, pointer: &str) -> Option<Value> {
    value
        .pointer_mut(pointer)
        .map(Value::take)
        .filter(|object| !object.is_null())
}

fn decide(
    registry: &AdmissionRegistry,
    webhook: WebhookKind,
    served: &GroupVersionKind,
    request: &AdmissionRequest<DynamicObject>,
    object: Option<&Value>,
    old_object: Option<&Value>,
) -> ReviewOutcome {
    let operation = match request.operation {
        ReviewOperation::Create => "CREATE",
        ReviewOperation::Update => "UPDATE",
        ReviewOperation::Delete => "DELETE",
        ReviewOperation::Connect => "CONNECT",
    };
    let requested = &request.kind;
    let requested_api_version = if requested.group.is_empty() {
        requested.version.clone()
    } else {
        format!("{}/{}", requested.group, requested.version)
    };
    let mut outcome = ReviewOutcome {
        review: AdmissionResponse::from(request).into_review(),
        verdict: Verdict::Allowed,
        kind: None,
        operation: Some(operation),
        uid: Some(request.uid.clone()),
        object: Some(match &request.namespace {
            Some(namespace) => format!("{namespace}/{}", request.name),
            None => request.name.clone(),
        }),
        message: String::new(),
    };
    let response = AdmissionResponse::from(request);

    let Some(admission) = registry.find(&requested.group, &requested.kind) else {
        let served_kinds: Vec<String> = registry
            .iter()
            .map(|kind| {
                let gvk = kind.gvk();
                format!("{} ({})", gvk.kind, gvk.api_version())
            })
            .collect();
        let message = format!(
            "this webhook has no admission rules for kind {} ({requested_api_version}); it \
             serves {}",
            requested.kind,
            if served_kinds.is_empty() {
                "no kinds".to_owned()
            } else {
                served_kinds.join(", ")
            }
        );
        return finish(
            outcome,
            deny(response, 400, "BadRequest", &message, &[]),
            Verdict::Denied,
            message,
        );
    };
    let gvk = admission.gvk();
    outcome.kind = Some(gvk.kind.clone());
    if gvk.group != served.group || gvk.kind != served.kind {
        let message = format!(
            "a {} request was sent to the {} endpoint of {}; the webhook configuration must send \
             each kind to its own path",
            requested.kind,
            webhook.as_str(),
            served.kind
        );
        return finish(
            outcome,
            deny(response, 400, "BadRequest", &message, &[]),
            Verdict::Denied,
            message,
        );
    }
    if gvk.version != requested.version {
        let message = format!(
            "{} {requested_api_version} is not served by this webhook; it serves {}",
            requested.kind,
            gvk.api_version()
        );
        return finish(
            outcome,
            deny(response, 400, "BadRequest", &message, &[]),
            Verdict::Denied,
            message,
        );
    }

    let operation = match request.operation {
        ReviewOperation::Create => Operation::Create,
        ReviewOperation::Update => Operation::Update,
        // Deleting is always allowed (cleanup is the controllers' job), and CONNECT does not
        // apply to our kinds.
        ReviewOperation::Delete | ReviewOperation::Connect => {
            return finish(outcome, response, Verdict::Allowed, String::new());
        }
    };
    let Some(object) = object else {
        let message = format!(
            "the {} request for {} carries no object",
            outcome.operation.unwrap_or(""),
            gvk.kind
        );
        return finish(
            outcome,
            deny(response, 400, "BadRequest", &message, &[]),
            Verdict::Denied,
            message,
        );
    };
    if operation == Operation::Update && old_object.is_none() {
        let message = format!("the UPDATE request for {} carries no oldObject", gvk.kind);
        return finish(
            outcome,
            deny(response, 400, "BadRequest", &message, &[]),
            Verdict::Denied,
            message,
        );
    }

    if webhook == WebhookKind::Validate
        && operation == Operation::Update
        && let Some(old_object) = old_object
        && update_keeps_admitted_spec(object, old_object)
    {
        return finish(outcome, response, Verdict::Allowed, String::new());
    }
    match webhook {
        WebhookKind::Validate => {
            validate(outcome, response, admission, operation, object, old_object)
        }
        WebhookKind::Mutate => mutate(outcome, response, admission, object),
    }
}

/// Whether an UPDATE leaves alone the spec that was admitted before, so the rules are not
/// applied again (Kubernetes calls this ratcheting): when the rules tighten in a new release,
/// label edits and finalizer removal on objects admitted under the old rules must still work —
/// otherwise their deletion could hang forever. An object being deleted is let through for the
/// same reason.
fn update_keeps_admitted_spec(object: &Value, old_object: &Value) -> bool {
    let being_deleted = object
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|timestamp| !timestamp.is_null());
    being_deleted || object.get("spec") == old_object.get("spec")
}

fn validate(
    outcome: ReviewOutcome,
    response: AdmissionResponse,
    admission: &dyn KindAdmission,
    operation: Operation,
    object: &Value,
    old_object: Option<&Value>,
) -> ReviewOutcome {
    let request = Request {
        operation,
        object,
        old_object,
    };
    match admission.validate(&request) {
        Ok(warnings) => {
            let mut response = response;
            if !warnings.is_empty() {
                response.warnings = Some(warnings);
            }
            finish(outcome, response, Verdict::Allowed, String::new())
        }
        Err(errors) => {
            let message = field_errors_message(&errors);
            let response = deny(response, 422, "Invalid", &message, &errors);
            finish(outcome, response, Verdict::Denied, message)
        }
    }
}

fn mutate(
    outcome: ReviewOutcome,
    response: AdmissionResponse,
    admission: &dyn KindAdmission,
    object: &Value,
) -> ReviewOutcome {
    let patch = match admission.default_patch(object) {
        Ok(patch) => patch,
        Err(errors) => {
            let message = field_errors_message(&errors);
            let response = deny(response, 422, "Invalid", &message, &errors);
            return finish(outcome, response, Verdict::Denied, message);
        }
    };
    if patch.0.is_empty() {
        return finish(outcome, response, Verdict::Allowed, String::new());
    }
    // A patch that does not apply would be rejected by the API server with an opaque error;
    // checking it here names the kind and the failing operation instead.
    let mut patched = object.clone();
    if let Err(err) = json_patch::patch(&mut patched, &patch) {
        let message = format!(
            "failed to apply the defaults of {} to the object ({err}); this is a defect of the \
             webhook, please report it",
            admission.gvk().kind
        );
        let response = deny(response, 500, "InternalError", &message, &[]);
        return finish(outcome, response, Verdict::Denied, message);
    }
    match response.clone().with_patch(patch) {
        Ok(response) => finish(outcome, response, Verdict::Patched, String::new()),
        Err(err) => {
            let message = format!("failed to serialize the defaulting patch: {err}");
            let response = deny(response, 500, "InternalError", &message, &[]);
            finish(outcome, response, Verdict::Denied, message)
        }
    }
}

/// The AdmissionReview as JSON on the wire, with `response.patch` base64-encoded.
///
/// The API server's `patch` is a Go `[]byte`, which the AdmissionReview JSON format carries as a
/// base64 string; kube's `AdmissionResponse` serializes its `Vec<u8>` as an array of numbers
/// (kube-rs/kube#1781), which only happens to decode. The documented form is sent instead.
pub fn wire_review(review: &AdmissionReview<DynamicObject>) -> Value {
    let mut value = match serde_json::to_value(review) {
        Ok(value) => value,
        // Only a map with non-string keys fails to serialize, and a review has none.
        Err(err) => {
            let mut response = AdmissionResponse::invalid(format!(
                "failed to serialize the admission response: {err}"
            ));
            response.uid = review
                .response
                .as_ref()
                .map(|response| response.uid.clone())
                .unwrap_or_default();
            return serde_json::to_value(response.into_review()).unwrap_or(Value::Null);
        }
    };
    if let Some(response) = review.response.as_ref()
        && let Some(patch) = response.patch.as_ref()
        && let Some(slot) = value.pointer_mut("/response/patch")
    {
        *slot = Value::String(base64::engine::general_purpose::STANDARD.encode(patch));
    }
    value
}

/// `spec.x: …; spec.y: …` — every problem, in the validator's order.
pub fn field_errors_message(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn deny(
    response: AdmissionResponse,
    code: u16,
    reason: &str,
    message: &str,
    errors: &[FieldError],
) -> AdmissionResponse {
    let mut response = response.deny(message);
    response.result.status = Some(StatusSummary::Failure);
    response.result.code = code;
    response.result.reason = reason.to_owned();
    if !errors.is_empty() {
        // Causes let clients (kubectl, UIs) point at each field, as the API server's own
        // validation does.
        response.result.details = Some(StatusDetails {
            name: String::new(),
            group: String::new(),
            kind: String::new(),
            uid: String::new(),
            causes: errors
                .iter()
                .map(|error| StatusCause {
                    reason: "FieldValueInvalid".to_owned(),
                    message: error.message.clone(),
                    field: error.path.clone(),
                })
                .collect(),
            retry_after_seconds: 0,
        });
    }
    response
}

fn finish(
    mut outcome: ReviewOutcome,
    response: AdmissionResponse,
    verdict: Verdict,
    message: String,
) -> ReviewOutcome {
    outcome.review = response.into_review();
    outcome.verdict = verdict;
    outcome.message = message;
    outcome
}
