//! The values model: what the templates are rendered from.
//!
//! Precedence, lowest first (each layer deep-merged over the previous one):
//! 1. `templates/values.yaml` (the defaults shipped with this version),
//! 2. the manager's `RELATED_IMAGE_*` environment (image references, set by OLM or the Deployment)
//!    and its `HTTP_PROXY` / `HTTPS_PROXY` / `NO_PROXY` (OLM injects the cluster-wide proxy),
//! 3. `spec.helmValues`,
//! 4. `spec.componentConfiguration` (each key lands in `components.<key>`),
//! 5. the typed TVM fields (`logConfig`, `dataJobResources`, `ingressConfig`, `csiConfig`, ...;
//!    the deprecated `logLevel` / `datamoverLogLevel` only where `logConfig` leaves them unset),
//! 6. `--set path=value` overrides of the offline `render` command (development only).
//!
//! Deep merge: objects merge key by key, any other value replaces, and `null` deletes the key
//! (as in Helm). The merged tree is then read into the typed [`Values`]: a wrong type is an error
//! naming the field. Unknown top-level keys are kept for templates (T4K's `helmValues` are
//! free-form), except a key that differs from a typed key only by case, `-` or `_`: such a typo
//! would silently shadow the typed field, so it is refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::tvm::TrilioVaultManagerSpec;

/// Values that cannot be merged or typed.
#[derive(Debug, thiserror::Error)]
pub enum ValuesError {
    /// The merged values do not fit the typed model.
    #[error(
        "failed to read the merged values: {0}; fix the field in helmValues, componentConfiguration or the TVM"
    )]
    Typed(#[source] serde_json::Error),
    /// A free-form key would shadow a typed one.
    #[error("helmValues key {key:?} shadows the typed value {typed:?}; spell it exactly {typed:?}")]
    Shadowing {
        /// The key as written.
        key: String,
        /// The typed key it resembles.
        typed: String,
    },
    /// `--set` override not of the form `path=value`.
    #[error(
        "failed to read --set {0:?}: expected path=value with a dotted path, e.g. components.control-plane.replicas=2"
    )]
    BadOverride(String),
    /// A value is out of its allowed range.
    #[error("value {path} is {value}; {allowed}")]
    OutOfRange {
        /// Dotted values path.
        path: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        allowed: &'static str,
    },
    /// A section of the TVM spec could not be converted.
    #[error("failed to convert spec.{field} to values: {source}")]
    Spec {
        /// The spec field.
        field: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// Image references of every component and job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Images {
    /// Control plane (controllers).
    pub control_plane: String,
    /// Admission webhook.
    pub webhook: String,
    /// Datamover jobs.
    pub datamover: String,
    /// Metamover jobs.
    pub metamover: String,
    /// Pull policy of every container.
    pub pull_policy: String,
    /// Pull Secrets of every pod.
    #[serde(default)]
    pub pull_secrets: Vec<String>,
}

/// The cluster's egress proxy, handed to every workload the manager renders and, through
/// `tvk-config`, to every Job the control plane starts (`HTTP_PROXY`, `HTTPS_PROXY`,
/// `NO_PROXY`). Unset fields render nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyValues {
    /// Proxy for plain-HTTP requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_proxy: Option<String>,
    /// Proxy for HTTPS requests (S3 targets, registries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_proxy: Option<String>,
    /// Hosts, domains and CIDRs reached directly (the API server, cluster services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_proxy: Option<String>,
}

impl ProxyValues {
    /// No proxy variable set: nothing to render.
    pub fn is_empty(&self) -> bool {
        self.http_proxy.is_none() && self.https_proxy.is_none() && self.no_proxy.is_none()
    }
}

/// Log configuration handed to the application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogValues {
    /// Level of the components.
    pub log_level: String,
    /// Level of datamover jobs.
    pub datamover_log_level: String,
    /// Buffer size.
    pub buffer_size: i64,
    /// Log to stdout and file.
    pub enable_dual_output_log: bool,
    /// Flush interval.
    pub flush_duration_milli_seconds: i64,
    /// Max file size.
    #[serde(rename = "maxLogFileSizeMB")]
    pub max_log_file_size_mb: i64,
    /// Files kept.
    pub max_log_files: i64,
}

/// One long-running or optional component (`components.<key>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentValues {
    /// Whether it is installed.
    pub enabled: bool,
    /// Replicas of its Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Container resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Value>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,
    /// Service settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Value>,
    /// Other settings (free-form, kept for templates).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Webhook wiring: where the serving certificate is and the CA that signed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookValues {
    /// PEM CA bundle injected into the webhook configurations (base64 by the template).
    pub ca_bundle: String,
    /// Secret (type kubernetes.io/tls) holding `tls.crt` / `tls.key`.
    pub certificate_secret_name: String,
    /// Admission timeout, 1..=10 seconds.
    pub timeout_seconds: i32,
}

/// The application's own pods' scheduling.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SchedulingValues {
    /// Affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Value>,
    /// Node selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Value>>,
    /// Topology spread constraints (worker jobs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<Value>>,
}

/// Ingress of the management endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressValues {
    /// Host; no Ingress without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// IngressClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// TLS Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
}

/// Job settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpecValues {
    /// Deadline of every worker Job.
    pub active_deadline_seconds: i64,
    /// Other settings.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Resources of worker jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobResources {
    /// Metamover jobs.
    pub metadata: Value,
    /// Datamover jobs.
    pub data: Value,
    /// Target browser.
    pub target_browser: Value,
}

/// CSI driver overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CsiValues {
    /// Drivers without snapshot support.
    #[serde(default)]
    pub include: Vec<String>,
    /// Drivers with snapshot support.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// Monitoring integration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MonitoringValues {
    /// Render a ServiceMonitor when the monitoring.coreos.com/v1 API exists.
    pub service_monitor: bool,
    /// Scrape interval.
    pub interval: String,
}

/// Everything the templates are rendered from (see the module docs for precedence).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Values {
    /// `Cluster` or `Namespaced` (always the TVM's).
    pub application_scope: String,
    /// Display name of the installation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tvk_instance_name: Option<String>,
    /// Images.
    pub images: Images,
    /// Logging.
    pub log_config: LogValues,
    /// Time zone of schedules.
    pub schedule_policy_timezone: String,
    /// Worker job settings.
    pub job_spec: JobSpecValues,
    /// Annotations of every pod (T4K spelling).
    #[serde(rename = "PodAnnotations", default)]
    pub pod_annotations: BTreeMap<String, String>,
    /// Master encryption key settings, passed through to the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_encryption_key_config: Option<Value>,
    /// Worker job resources.
    pub job_resources: JobResources,
    /// Worker job scheduling.
    #[serde(default)]
    pub worker_jobs_scheduling: SchedulingValues,
    /// The application's own pods' scheduling.
    #[serde(default)]
    pub scheduling: SchedulingValues,
    /// CSI overrides.
    #[serde(default)]
    pub csi_config: CsiValues,
    /// Pause every schedule.
    pub pause_schedule: bool,
    /// Ingress.
    #[serde(default)]
    pub ingress: IngressValues,
    /// Components keyed as in `componentConfiguration`.
    pub components: BTreeMap<String, ComponentValues>,
    /// Webhook wiring.
    pub webhook: WebhookValues,
    /// Monitoring.
    pub monitoring: MonitoringValues,
    /// Egress proxy of every workload and Job (absent when none is set).
    #[serde(default, skip_serializing_if = "ProxyValues::is_empty")]
    pub proxy: ProxyValues,
    /// Free-form keys from `helmValues` that no typed field reads (kept for templates).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Environment variables of the manager naming images, and the values path each sets.
pub const RELATED_IMAGES: &[(&str, &str)] = &[
    ("RELATED_IMAGE_CONTROL_PLANE", "controlPlane"),
    ("RELATED_IMAGE_WEBHOOK", "webhook"),
    ("RELATED_IMAGE_DATAMOVER", "datamover"),
    ("RELATED_IMAGE_METAMOVER", "metamover"),
];

/// Proxy variables of the manager's environment and the `proxy.*` value each sets. OLM
/// injects them into the manager's Deployment from the cluster-wide proxy configuration; the
/// manager passes them on to everything it renders (upper case only, as OLM sets them).
pub const PROXY_ENV: &[(&str, &str)] = &[
    ("HTTP_PROXY", "httpProxy"),
    ("HTTPS_PROXY", "httpsProxy"),
    ("NO_PROXY", "noProxy"),
];

/// Typed top-level keys, for the shadowing check.
const TYPED_KEYS: &[&str] = &[
    "applicationScope",
    "tvkInstanceName",
    "images",
    "logConfig",
    "schedulePolicyTimezone",
    "jobSpec",
    "PodAnnotations",
    "masterEncryptionKeyConfig",
    "jobResources",
    "workerJobsScheduling",
    "scheduling",
    "csiConfig",
    "pauseSchedule",
    "ingress",
    "components",
    "webhook",
    "monitoring",
    "proxy",
];

/// Deep-merges `overlay` into `base`: objects key by key, `null` deletes, anything else replaces.
pub fn deep_merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                if value.is_null() {
                    base.remove(key);
                } else if let Some(existing) = base.get_mut(key) {
                    deep_merge(existing, value);
                } else {
                    // Merging into an empty object drops the nulls nested in `value`.
                    let mut fresh = if value.is_object() {
                        Value::Object(Map::new())
                    } else {
                        Value::Null
                    };
                    deep_merge(&mut fresh, value);
                    base.insert(key.clone(), fresh);
                }
            }
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

/// Sets `value` at a dotted `path` (creating objects on the way).
pub fn set_path(root: &mut Value, path: &str, value: Value) {
    let mut current = root;
    let mut segments = path.split('.').peekable();
    while let Some(segment) = segments.next() {
        if !current.is_object() {
            *current = Value::Object(Map::new());
        }
        let Value::Object(map) = current else { return };
        if segments.peek().is_none() {
            map.insert(segment.to_string(), value);
            return;
        }
        current = map
            .entry(segment.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

/// A `--set path=value` override; the value is read as a YAML scalar (`2`, `true`, `text`).
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// Dotted path.
    pub path: String,
    /// Value.
    pub value: Value,
}

impl std::str::FromStr for Override {
    type Err = ValuesError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let Some((path, raw)) = text.split_once('=') else {
            return Err(ValuesError::BadOverride(text.to_string()));
        };
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(ValuesError::BadOverride(text.to_string()));
        }
        let value = if raw.trim() == "null" {
            Value::Null
        } else {
            tvk_api::yaml::parse_single(raw, &tvk_api::yaml::Limits::default())
                .ok()
                .filter(|v| !v.is_object() && !v.is_array())
                .unwrap_or_else(|| Value::String(raw.to_string()))
        };
        Ok(Self {
            path: path.to_string(),
            value,
        })
    }
}

fn normalize(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

fn to_value<T: Serialize>(field: &'static str, value: &T) -> Result<Value, ValuesError> {
    serde_json::to_value(value).map_err(|source| ValuesError::Spec { field, source })
}

/// The typed TVM fields as a values overlay (layer 5).
fn typed_overlay(spec: &TrilioVaultManagerSpec) -> Result<Value, ValuesError> {
    let mut overlay = Value::Object(Map::new());
    set_path(
        &mut overlay,
        "applicationScope",
        Value::String(spec.application_scope.as_str().to_string()),
    );
    if let Some(name) = &spec.tvk_instance_name {
        set_path(&mut overlay, "tvkInstanceName", Value::String(name.clone()));
    }
    for (deprecated, key) in [
        (spec.log_level, "logLevel"),
        (spec.datamover_log_level, "datamoverLogLevel"),
    ] {
        if let Some(level) = deprecated {
            set_path(
                &mut overlay,
                &format!("logConfig.{key}"),
                to_value("logLevel", &level)?,
            );
        }
    }
    if let Some(log) = &spec.log_config {
        let mut log_overlay = Value::Object(Map::new());
        set_path(&mut log_overlay, "logConfig", to_value("logConfig", log)?);
        deep_merge(&mut overlay, &log_overlay);
    }
    for (field, path, resources) in [
        (
            "metadataJobResources",
            "jobResources.metadata",
            &spec.metadata_job_resources,
        ),
        (
            "dataJobResources",
            "jobResources.data",
            &spec.data_job_resources,
        ),
        (
            "targetBrowserResources",
            "jobResources.targetBrowser",
            &spec.target_browser_resources,
        ),
    ] {
        if let Some(resources) = resources {
            set_path(&mut overlay, path, to_value(field, resources)?);
        }
    }
    if let Some(scheduling) = &spec.worker_jobs_scheduling_config {
        set_path(
            &mut overlay,
            "workerJobsScheduling",
            to_value("workerJobsSchedulingConfig", scheduling)?,
        );
    }
    if let Some(affinity) = &spec.affinity {
        set_path(
            &mut overlay,
            "scheduling.affinity",
            to_value("affinity", affinity)?,
        );
    }
    if let Some(selector) = &spec.node_selector {
        set_path(
            &mut overlay,
            "scheduling.nodeSelector",
            to_value("nodeSelector", selector)?,
        );
    }
    if let Some(tolerations) = &spec.tolerations {
        set_path(
            &mut overlay,
            "scheduling.tolerations",
            to_value("tolerations", tolerations)?,
        );
    }
    if let Some(csi) = &spec.csi_config {
        set_path(&mut overlay, "csiConfig", to_value("csiConfig", csi)?);
    }
    if let Some(pause) = spec.pause_schedule {
        set_path(&mut overlay, "pauseSchedule", Value::Bool(pause));
    }
    if let Some(ingress) = &spec.ingress_config {
        let mut values = Map::new();
        if let Some(host) = &ingress.host {
            values.insert("host".into(), Value::String(host.clone()));
        }
        if let Some(class) = &ingress.ingress_class {
            values.insert("className".into(), Value::String(class.clone()));
        }
        if let Some(secret) = &ingress.tls_secret_name {
            values.insert("tlsSecretName".into(), Value::String(secret.clone()));
        }
        if let Some(annotations) = &ingress.annotations {
            values.insert(
                "annotations".into(),
                to_value("ingressConfig", annotations)?,
            );
        }
        set_path(&mut overlay, "ingress", Value::Object(values));
    }
    Ok(overlay)
}

/// Merges the layers of the module docs into typed values.
///
/// `defaults` is the parsed `templates/values.yaml`; `related_images` the manager's
/// `RELATED_IMAGE_*` and [`PROXY_ENV`] variables that are set (name, value).
pub fn merge(
    defaults: &Value,
    related_images: &[(String, String)],
    spec: &TrilioVaultManagerSpec,
    overrides: &[Override],
) -> Result<Values, ValuesError> {
    let mut merged = defaults.clone();
    for (name, image) in related_images {
        if let Some((_, key)) = RELATED_IMAGES.iter().find(|(env, _)| env == name) {
            set_path(
                &mut merged,
                &format!("images.{key}"),
                Value::String(image.clone()),
            );
        } else if let Some((_, key)) = PROXY_ENV.iter().find(|(env, _)| env == name) {
            set_path(
                &mut merged,
                &format!("proxy.{key}"),
                Value::String(image.clone()),
            );
        }
    }
    if let Some(helm_values) = &spec.helm_values {
        if let Some(map) = helm_values.as_object() {
            for key in map.keys() {
                let normalized = normalize(key);
                if let Some(typed) = TYPED_KEYS
                    .iter()
                    .find(|typed| **typed != key && normalize(typed) == normalized)
                {
                    return Err(ValuesError::Shadowing {
                        key: key.clone(),
                        typed: (*typed).to_string(),
                    });
                }
            }
        }
        deep_merge(&mut merged, helm_values);
    }
    if let Some(components) = &spec.component_configuration {
        let mut overlay = Value::Object(Map::new());
        set_path(&mut overlay, "components", components.clone());
        deep_merge(&mut merged, &overlay);
    }
    deep_merge(&mut merged, &typed_overlay(spec)?);
    for Override { path, value } in overrides {
        set_path(&mut merged, path, value.clone());
    }
    let values: Values = serde_json::from_value(merged).map_err(ValuesError::Typed)?;
    values.check()?;
    Ok(values)
}

impl Values {
    /// Range rules the types cannot express.
    pub fn check(&self) -> Result<(), ValuesError> {
        if !(1..=10).contains(&self.webhook.timeout_seconds) {
            return Err(ValuesError::OutOfRange {
                path: "webhook.timeoutSeconds",
                value: self.webhook.timeout_seconds.to_string(),
                allowed: "admission webhooks must answer within 1 to 10 seconds",
            });
        }
        for (key, component) in &self.components {
            if component.replicas.is_some_and(|r| !(0..=10).contains(&r)) {
                return Err(ValuesError::OutOfRange {
                    path: "components.<component>.replicas",
                    value: format!("{} for {key}", component.replicas.unwrap_or_default()),
                    allowed: "use 0 to 10 replicas",
                });
            }
        }
        if self.job_spec.active_deadline_seconds <= 0 {
            return Err(ValuesError::OutOfRange {
                path: "jobSpec.activeDeadlineSeconds",
                value: self.job_spec.active_deadline_seconds.to_string(),
                allowed: "use a positive number of seconds",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;

    #[test]
    fn deep_merge_merges_objects_replaces_scalars_and_lists_and_null_deletes() {
        let mut base = json!({"a": {"b": 1, "c": [1, 2], "d": "x"}, "e": true});
        deep_merge(
            &mut base,
            &json!({"a": {"b": 2, "c": [3], "d": null, "n": {"m": 1}}, "e": null}),
        );
        assert_eq!(base, json!({"a": {"b": 2, "c": [3], "n": {"m": 1}}}));
    }

    #[test]
    fn set_path_creates_objects() {
        let mut root = json!({"a": 1});
        set_path(&mut root, "b.c.d", json!(2));
        set_path(&mut root, "a.x", json!(3));
        assert_eq!(root, json!({"a": {"x": 3}, "b": {"c": {"d": 2}}}));
    }

    #[test]
    fn overrides_parse_scalars() {
        let o: Override = "components.control-plane.replicas=2".parse().unwrap();
        assert_eq!(o.value, json!(2));
        let o: Override = "a=true".parse().unwrap();
        assert_eq!(o.value, json!(true));
        let o: Override = "a=hello world".parse().unwrap();
        assert_eq!(o.value, json!("hello world"));
        assert!("novalue".parse::<Override>().is_err());
        assert!("a..b=1".parse::<Override>().is_err());
    }

    #[test]
    fn proxy_variables_become_proxy_values_and_helm_values_win() {
        let defaults = crate::render::TemplateSource::embedded();
        let renderer = crate::render::Renderer::new(&defaults).unwrap();
        let spec: TrilioVaultManagerSpec = serde_json::from_value(json!({
            "applicationScope": "Cluster",
            "helmValues": {"proxy": {"noProxy": ".svc,10.0.0.0/16"}}
        }))
        .unwrap();
        let env = vec![
            (
                "HTTPS_PROXY".to_string(),
                "http://proxy.corp:3128".to_string(),
            ),
            ("NO_PROXY".to_string(), "ignored-by-helm-values".to_string()),
        ];
        let values = merge(renderer.defaults(), &env, &spec, &[]).unwrap();
        assert_eq!(
            values.proxy,
            ProxyValues {
                http_proxy: None,
                https_proxy: Some("http://proxy.corp:3128".into()),
                no_proxy: Some(".svc,10.0.0.0/16".into()),
            }
        );
        let none = merge(renderer.defaults(), &[], &spec, &[]).unwrap();
        assert_eq!(none.proxy.https_proxy, None);
    }

    #[test]
    fn normalization_catches_case_and_separator_typos() {
        assert_eq!(
            normalize("schedule_policy-TimeZone"),
            normalize("schedulePolicyTimezone")
        );
    }
}
