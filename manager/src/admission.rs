//! Admission of the TrilioVaultManager kind: pure validation and defaulting behind
//! [`tvk_api::admission::KindAdmission`] (used by `kubectl-tvk validate`, the webhook server and
//! the reconciler), plus the cluster-state rules that need a client ([`check_cluster_state`]).
//!
//! Checks run on the raw JSON, since the webhook and the CLI see raw JSON: a wrong type is a
//! [`FieldError`], never a deserialization failure. Choices:
//! - `spec.applicationScope` is required, `Cluster` or `Namespaced`, and immutable on UPDATE
//!   (switching scope would orphan every RBAC object and widen or narrow access silently).
//! - Deprecated fields are accepted and kept, each with a warning naming its replacement.
//! - Defaulting moves the deprecated top-level `logLevel` / `datamoverLogLevel` into `logConfig`
//!   when `logConfig` does not set them; nothing else is defaulted on the object (defaults live in
//!   `templates/values.yaml`, so an upgrade can change them).

use json_patch::{AddOperation, Patch, PatchOperation, jsonptr::PointerBuf};
use serde_json::{Map, Value};
use tvk_api::admission::{FieldError, GroupVersionKind, KindAdmission, Operation, Request};

use crate::tvm::{GROUP, KIND, LogLevel, PLURAL, VERSION};

/// Keys T4K accepts in `spec.componentConfiguration`.
pub const COMPONENT_KEYS: &[&str] = &[
    "control-plane",
    "event-target",
    "exporter",
    "ingress-controller",
    "web",
    "web-backend",
    "webhook",
];

/// Components this application renders; the others are accepted for compatibility and ignored.
pub const RENDERED_COMPONENTS: &[&str] = &["control-plane", "exporter", "webhook"];

/// Deprecated spec fields and what replaces each.
const DEPRECATED: &[(&str, &str)] = &[
    ("logLevel", "use spec.logConfig.logLevel"),
    ("datamoverLogLevel", "use spec.logConfig.datamoverLogLevel"),
    ("restoreNamespaces", "it is ignored"),
    (
        "trilioVaultAppVersion",
        "the installed version is the one the manager ships; it is ignored",
    ),
    ("helmVersion", "Helm is not used; it is ignored"),
    (
        "resources",
        "use spec.componentConfiguration.<component>.resources",
    ),
    ("dataJobLimits", "use spec.dataJobResources"),
    ("metadataJobLimits", "use spec.metadataJobResources"),
    (
        "deploymentLimits",
        "use spec.componentConfiguration.<component>.resources",
    ),
];

/// The TrilioVaultManager admission, for registries of `tvk_api::admission`.
pub fn tvm_admission() -> Box<dyn KindAdmission> {
    Box::new(TvmAdmission)
}

/// Pure admission logic of TrilioVaultManager.
#[derive(Debug, Clone, Copy, Default)]
pub struct TvmAdmission;

impl KindAdmission for TvmAdmission {
    fn gvk(&self) -> GroupVersionKind {
        GroupVersionKind {
            group: GROUP.to_string(),
            version: VERSION.to_string(),
            kind: KIND.to_string(),
        }
    }

    fn plural(&self) -> &'static str {
        PLURAL
    }

    fn namespaced(&self) -> bool {
        true
    }

    fn validate(&self, request: &Request<'_>) -> Result<Vec<String>, Vec<FieldError>> {
        if request.operation == Operation::Delete {
            return Ok(Vec::new());
        }
        let mut check = Check::default();
        check.spec(request.object);
        if let (Operation::Update, Some(old)) = (request.operation, request.old_object) {
            let new_scope = request.object.pointer("/spec/applicationScope");
            let old_scope = old.pointer("/spec/applicationScope");
            if old_scope.is_some() && new_scope != old_scope {
                check.error(
                    "spec.applicationScope",
                    format!(
                        "is immutable (was {}); delete and recreate the TrilioVaultManager to change scope",
                        old_scope.map(Value::to_string).unwrap_or_default()
                    ),
                );
            }
        }
        if check.errors.is_empty() {
            Ok(check.warnings)
        } else {
            Err(check.errors)
        }
    }

    fn default_patch(&self, object: &Value) -> Result<Patch, Vec<FieldError>> {
        let Some(spec) = object.get("spec").and_then(Value::as_object) else {
            return Ok(Patch(Vec::new()));
        };
        let log_config = spec.get("logConfig");
        if log_config.is_some_and(|c| !c.is_object()) {
            return Ok(Patch(Vec::new()));
        }
        let mut ops = Vec::new();
        let mut new_log_config = Map::new();
        for key in ["logLevel", "datamoverLogLevel"] {
            let Some(level) = spec.get(key) else { continue };
            let already = log_config.and_then(|c| c.get(key)).is_some();
            if !already {
                new_log_config.insert(key.to_string(), level.clone());
            }
        }
        if new_log_config.is_empty() {
            return Ok(Patch(Vec::new()));
        }
        if log_config.is_none() {
            ops.push(PatchOperation::Add(AddOperation {
                path: PointerBuf::from_tokens(["spec", "logConfig"]),
                value: Value::Object(new_log_config),
            }));
        } else {
            for (key, value) in new_log_config {
                ops.push(PatchOperation::Add(AddOperation {
                    path: PointerBuf::from_tokens(["spec", "logConfig", key.as_str()]),
                    value,
                }));
            }
        }
        Ok(Patch(ops))
    }
}

/// What `tvm` may not do while `other` exists: share its namespace, be a second `Cluster`-scoped
/// installation, or reuse its `tvkInstanceName`. Each error names the field to change.
pub fn conflicts_between(
    tvm: &crate::tvm::TrilioVaultManager,
    other: &crate::tvm::TrilioVaultManager,
) -> Vec<FieldError> {
    use kube::ResourceExt as _;

    use crate::tvm::ApplicationScope;
    let namespace = tvm.namespace().unwrap_or_default();
    let other_namespace = other.namespace().unwrap_or_default();
    let other_id = format!("{other_namespace}/{}", other.name_any());
    let deleting = if other.metadata.deletion_timestamp.is_some() {
        " (it is being deleted: wait until it is gone)"
    } else {
        ""
    };
    let mut errors = Vec::new();
    if other_namespace == namespace {
        errors.push(FieldError::new(
            "metadata.namespace",
            format!("TrilioVaultManager {other_id} already manages namespace {namespace}{deleting}; only one per namespace is allowed: delete this one or use another namespace"),
        ));
    }
    if other.spec.application_scope == ApplicationScope::Cluster
        && tvm.spec.application_scope == ApplicationScope::Cluster
    {
        errors.push(FieldError::new(
            "spec.applicationScope",
            format!("TrilioVaultManager {other_id} is already Cluster-scoped{deleting}; only one Cluster-scoped installation per cluster is allowed: use Namespaced"),
        ));
    }
    if let (Some(a), Some(b)) = (&other.spec.tvk_instance_name, &tvm.spec.tvk_instance_name)
        && a == b
    {
        errors.push(FieldError::new(
            "spec.tvkInstanceName",
            format!(
                "{a:?} is already used by TrilioVaultManager {other_id}{deleting}; choose another"
            ),
        ));
    }
    errors
}

/// The cluster-state rules at admission: a new or changed `candidate` conflicts with every other
/// existing TVM (`existing` may contain the candidate's own stored version, which is skipped).
pub fn admission_conflicts(
    candidate: &crate::tvm::TrilioVaultManager,
    existing: &[crate::tvm::TrilioVaultManager],
) -> Vec<FieldError> {
    use kube::ResourceExt as _;
    existing
        .iter()
        .filter(|other| {
            other.namespace() != candidate.namespace() || other.name_any() != candidate.name_any()
        })
        .flat_map(|other| conflicts_between(candidate, other))
        .collect()
}

/// The cluster-state rules that need a client (one TVM per namespace, one `Cluster`-scoped TVM
/// per cluster, unique `tvkInstanceName`), for the reconciler: lists every TVM and returns what
/// conflicts with `tvm` (empty when it may proceed). The oldest TVM keeps its place (one may have
/// been created while the webhook was down); see [`crate::reconcile::cluster_conflicts`].
pub async fn check_cluster_state(
    client: kube::Client,
    tvm: &crate::tvm::TrilioVaultManager,
) -> Result<Vec<String>, kube::Error> {
    let all = kube::Api::<crate::tvm::TrilioVaultManager>::all(client)
        .list(&Default::default())
        .await?;
    Ok(crate::reconcile::cluster_conflicts(tvm, &all.items))
}

#[derive(Default)]
struct Check {
    errors: Vec<FieldError>,
    warnings: Vec<String>,
}

impl Check {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(path, message));
    }

    fn spec(&mut self, object: &Value) {
        let Some(spec) = object.get("spec") else {
            self.error("spec", "is required (it needs at least applicationScope)");
            return;
        };
        let Some(spec) = spec.as_object() else {
            self.error("spec", "must be an object");
            return;
        };
        match spec.get("applicationScope") {
            None => self.error(
                "spec.applicationScope",
                "is required: Cluster or Namespaced",
            ),
            Some(Value::String(s)) if s == "Cluster" || s == "Namespaced" => {}
            Some(other) => self.error(
                "spec.applicationScope",
                format!("must be Cluster or Namespaced, not {other}"),
            ),
        }
        self.optional_string(spec, "spec", "tvkInstanceName");
        if let Some(Value::String(name)) = spec.get("tvkInstanceName")
            && (name.is_empty() || name.len() > 253)
        {
            self.error("spec.tvkInstanceName", "must be 1 to 253 characters long");
        }
        for key in [
            "helmValues",
            "ingressConfig",
            "logConfig",
            "metadataJobResources",
            "dataJobResources",
            "targetBrowserResources",
            "workerJobsSchedulingConfig",
            "affinity",
            "nodeSelector",
            "csiConfig",
            "helmVersion",
            "resources",
            "dataJobLimits",
            "metadataJobLimits",
            "deploymentLimits",
        ] {
            if let Some(value) = spec.get(key)
                && !value.is_object()
            {
                self.error(&format!("spec.{key}"), "must be an object");
            }
        }
        if let Some(value) = spec.get("pauseSchedule")
            && !value.is_boolean()
        {
            self.error("spec.pauseSchedule", "must be true or false");
        }
        if let Some(value) = spec.get("tolerations")
            && !value.is_array()
        {
            self.error("spec.tolerations", "must be a list");
        }
        self.component_configuration(spec.get("componentConfiguration"));
        self.log_config(spec);
        self.ingress(spec.get("ingressConfig"));
        self.csi(spec.get("csiConfig"));
        if let Some(helm) = spec.get("helmVersion").and_then(Value::as_object) {
            match helm.get("version") {
                Some(Value::String(v)) if v == "v3" => {}
                None => self.error("spec.helmVersion.version", "is required (v3)"),
                Some(other) => self.error(
                    "spec.helmVersion.version",
                    format!("must be v3, not {other}"),
                ),
            }
        }
        for (key, replacement) in DEPRECATED {
            if spec.contains_key(*key) {
                self.warnings
                    .push(format!("spec.{key} is deprecated: {replacement}"));
            }
        }
    }

    fn optional_string(&mut self, map: &Map<String, Value>, at: &str, key: &str) {
        if let Some(value) = map.get(key)
            && !value.is_string()
        {
            self.error(&format!("{at}.{key}"), "must be a string");
        }
    }

    fn component_configuration(&mut self, value: Option<&Value>) {
        let Some(value) = value else { return };
        let Some(map) = value.as_object() else {
            self.error("spec.componentConfiguration", "must be an object");
            return;
        };
        for (key, component) in map {
            let path = format!("spec.componentConfiguration.{key}");
            if !COMPONENT_KEYS.contains(&key.as_str()) {
                self.error(
                    &path,
                    format!(
                        "is not a known component; use one of {}",
                        COMPONENT_KEYS.join(", ")
                    ),
                );
                continue;
            }
            let Some(component) = component.as_object() else {
                self.error(&path, "must be an object");
                continue;
            };
            if let Some(enabled) = component.get("enabled")
                && !enabled.is_boolean()
            {
                self.error(&format!("{path}.enabled"), "must be true or false");
            }
            if let Some(replicas) = component.get("replicas")
                && !replicas.as_i64().is_some_and(|r| (0..=10).contains(&r))
            {
                self.error(
                    &format!("{path}.replicas"),
                    "must be an integer from 0 to 10",
                );
            }
            if !RENDERED_COMPONENTS.contains(&key.as_str()) {
                self.warnings.push(format!(
                    "{path} is accepted for compatibility but this application has no {key} component; it is ignored"
                ));
            }
        }
        if map
            .get("webhook")
            .and_then(|w| w.get("enabled"))
            .is_some_and(|e| e == &Value::Bool(false))
        {
            self.error(
                "spec.componentConfiguration.webhook.enabled",
                "cannot be false: the admission webhook guards every backup object",
            );
        }
    }

    fn log_config(&mut self, spec: &Map<String, Value>) {
        for (path, value) in [
            ("spec.logLevel", spec.get("logLevel")),
            ("spec.datamoverLogLevel", spec.get("datamoverLogLevel")),
            (
                "spec.logConfig.logLevel",
                spec.get("logConfig").and_then(|c| c.get("logLevel")),
            ),
            (
                "spec.logConfig.datamoverLogLevel",
                spec.get("logConfig")
                    .and_then(|c| c.get("datamoverLogLevel")),
            ),
        ] {
            let Some(value) = value else { continue };
            if !value.as_str().is_some_and(|s| LogLevel::ALL.contains(&s)) {
                self.error(
                    path,
                    format!("must be one of {}, not {value}", LogLevel::ALL.join(", ")),
                );
            }
        }
        let Some(config) = spec.get("logConfig").and_then(Value::as_object) else {
            return;
        };
        for key in [
            "bufferSize",
            "flushDurationMilliSeconds",
            "maxLogFileSizeMB",
            "maxLogFiles",
        ] {
            if let Some(value) = config.get(key)
                && value.as_i64().is_none_or(|n| n < 0)
            {
                self.error(
                    &format!("spec.logConfig.{key}"),
                    "must be a non-negative integer",
                );
            }
        }
        if let Some(value) = config.get("enableDualOutputLog")
            && !value.is_boolean()
        {
            self.error(
                "spec.logConfig.enableDualOutputLog",
                "must be true or false",
            );
        }
    }

    fn ingress(&mut self, value: Option<&Value>) {
        let Some(ingress) = value.and_then(Value::as_object) else {
            return;
        };
        for key in ["host", "ingressClass", "tlsSecretName"] {
            self.optional_string(ingress, "spec.ingressConfig", key);
        }
        if let Some(Value::String(host)) = ingress.get("host")
            && !is_dns_host(host)
        {
            self.error(
                "spec.ingressConfig.host",
                format!("must be a DNS host name (lower-case letters, digits, '-', '.', optional leading '*.'), not {host:?}"),
            );
        }
        if ingress.contains_key("tlsSecretName") && !ingress.contains_key("host") {
            self.warnings.push(
                "spec.ingressConfig.tlsSecretName is set without host: no Ingress is created"
                    .to_string(),
            );
        }
        if let Some(annotations) = ingress.get("annotations")
            && !annotations
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string))
        {
            self.error(
                "spec.ingressConfig.annotations",
                "must be a map of strings to strings",
            );
        }
    }

    fn csi(&mut self, value: Option<&Value>) {
        let Some(csi) = value.and_then(Value::as_object) else {
            return;
        };
        let mut lists = Vec::new();
        for key in ["include", "exclude"] {
            let Some(list) = csi.get(key) else { continue };
            match list.as_array() {
                Some(items) if items.iter().all(Value::is_string) => lists.push(items),
                _ => self.error(
                    &format!("spec.csiConfig.{key}"),
                    "must be a list of strings",
                ),
            }
        }
        if let [include, exclude] = lists.as_slice() {
            for driver in include.iter().filter(|d| exclude.contains(d)) {
                self.error(
                    "spec.csiConfig",
                    format!("driver {driver} is in both include and exclude; keep it in one"),
                );
            }
        }
    }
}

fn is_dns_host(host: &str) -> bool {
    let host = host.strip_prefix("*.").unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;

    fn validate(object: &Value) -> Result<Vec<String>, Vec<FieldError>> {
        TvmAdmission.validate(&Request {
            operation: Operation::Create,
            object,
            old_object: None,
        })
    }

    fn tvm(spec: Value) -> Value {
        json!({
            "apiVersion": "triliovault.trilio.io/v1",
            "kind": "TrilioVaultManager",
            "metadata": {"name": "tvm", "namespace": "trilio-system"},
            "spec": spec
        })
    }

    fn paths(result: Result<Vec<String>, Vec<FieldError>>) -> Vec<String> {
        result.unwrap_err().into_iter().map(|e| e.path).collect()
    }

    #[test]
    fn api_md_example_is_valid_without_warnings() {
        let object = tvm(json!({
            "applicationScope": "Cluster",
            "tvkInstanceName": "tvk-instance",
            "logConfig": {"logLevel": "Info"},
            "componentConfiguration": {"control-plane": {"enabled": true}},
            "dataJobResources": {"requests": {"memory": "2Gi", "cpu": "1"}}
        }));
        assert_eq!(validate(&object).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn application_scope_is_required_and_an_enum() {
        assert_eq!(paths(validate(&tvm(json!({})))), ["spec.applicationScope"]);
        let err = validate(&tvm(json!({"applicationScope": "Global"}))).unwrap_err();
        assert!(err[0].message.contains("Cluster or Namespaced"), "{err:?}");
        assert_eq!(
            paths(validate(&json!({"kind": "TrilioVaultManager"}))),
            ["spec"]
        );
    }

    #[test]
    fn application_scope_is_immutable() {
        let old = tvm(json!({"applicationScope": "Cluster"}));
        let new = tvm(json!({"applicationScope": "Namespaced"}));
        let err = TvmAdmission
            .validate(&Request {
                operation: Operation::Update,
                object: &new,
                old_object: Some(&old),
            })
            .unwrap_err();
        assert_eq!(err[0].path, "spec.applicationScope");
        assert!(err[0].message.contains("immutable"));
        let same = TvmAdmission.validate(&Request {
            operation: Operation::Update,
            object: &old,
            old_object: Some(&old),
        });
        assert!(same.is_ok());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let object = tvm(json!({
            "applicationScope": "Cluster",
            "logConfig": {"logLevel": "Verbose", "maxLogFiles": -1},
            "datamoverLogLevel": "info",
            "pauseSchedule": "yes",
            "componentConfiguration": {"controlplane": {}, "exporter": {"enabled": "no"}},
            "ingressConfig": {"host": "Bad_Host"},
            "csiConfig": {"include": ["a"], "exclude": ["a"]},
            "helmVersion": {"tillerNamespace": "x"}
        }));
        let mut got = paths(validate(&object));
        got.sort();
        assert_eq!(
            got,
            [
                "spec.componentConfiguration.controlplane",
                "spec.componentConfiguration.exporter.enabled",
                "spec.csiConfig",
                "spec.datamoverLogLevel",
                "spec.helmVersion.version",
                "spec.ingressConfig.host",
                "spec.logConfig.logLevel",
                "spec.logConfig.maxLogFiles",
                "spec.pauseSchedule",
            ]
        );
    }

    #[test]
    fn deprecated_fields_are_accepted_with_warnings() {
        let object = tvm(json!({
            "applicationScope": "Namespaced",
            "logLevel": "Debug",
            "helmVersion": {"version": "v3"},
            "dataJobLimits": {"cpu": "1"},
            "componentConfiguration": {"web": {"enabled": false}}
        }));
        let warnings = validate(&object).unwrap();
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(warnings[0].contains("componentConfiguration.web"));
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("spec.logLevel is deprecated: use spec.logConfig.logLevel"))
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("spec.dataJobLimits is deprecated"))
        );
    }

    #[test]
    fn disabling_the_webhook_is_refused() {
        let object = tvm(json!({
            "applicationScope": "Cluster",
            "componentConfiguration": {"webhook": {"enabled": false}}
        }));
        assert_eq!(
            paths(validate(&object)),
            ["spec.componentConfiguration.webhook.enabled"]
        );
    }

    #[test]
    fn defaulting_moves_deprecated_levels_and_is_idempotent() {
        let mut object = tvm(json!({"applicationScope": "Cluster", "logLevel": "Debug"}));
        let patch = TvmAdmission.default_patch(&object).unwrap();
        json_patch::patch(&mut object, &patch).unwrap();
        assert_eq!(object["spec"]["logConfig"], json!({"logLevel": "Debug"}));
        assert!(TvmAdmission.default_patch(&object).unwrap().0.is_empty());

        let mut object = tvm(json!({
            "applicationScope": "Cluster",
            "logLevel": "Debug",
            "datamoverLogLevel": "Trace",
            "logConfig": {"logLevel": "Warn"}
        }));
        let patch = TvmAdmission.default_patch(&object).unwrap();
        json_patch::patch(&mut object, &patch).unwrap();
        assert_eq!(
            object["spec"]["logConfig"],
            json!({"logLevel": "Warn", "datamoverLogLevel": "Trace"})
        );
        assert!(TvmAdmission.default_patch(&object).unwrap().0.is_empty());
    }

    #[test]
    fn dns_hosts() {
        assert!(is_dns_host("tvk.example.com"));
        assert!(is_dns_host("*.apps.example.com"));
        assert!(!is_dns_host("Tvk.example.com"));
        assert!(!is_dns_host("a..b"));
        assert!(!is_dns_host("-a.b"));
    }
}
