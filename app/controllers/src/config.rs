//! The application's configuration, `/etc/tvk/config.yaml`, written by the manager from
//! `templates/configmap.yaml.hbs`. Parsed with [`tvk_api::yaml`] (the workspace's one bounded
//! YAML reader); fields the control plane does not use yet are accepted and ignored.

use std::{collections::BTreeMap, path::Path};

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use serde::Deserialize;
use serde_json::Value;

/// How widely the control plane watches.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplicationScope {
    /// Every namespace.
    Cluster,
    /// Only the install namespace.
    Namespaced,
}

/// The whole configuration file.
#[derive(Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// Cluster or Namespaced.
    pub application_scope: ApplicationScope,
    /// Namespace the application is installed in (Lease, Jobs of cluster-scoped backups).
    pub install_namespace: String,
    /// Display name of the installation.
    #[serde(default)]
    pub instance_name: String,
    /// Application version.
    #[serde(default)]
    pub version: String,
    /// IANA time zone of schedule policies (CronJob `timeZone`).
    #[serde(default = "default_timezone")]
    pub schedule_policy_timezone: String,
    /// Pauses every schedule (the TVM's `pauseSchedule`).
    #[serde(default)]
    pub pause_schedule: bool,
    /// Job settings.
    #[serde(default)]
    pub job_spec: JobSpecConfig,
    /// Resources of the metadata and data Jobs.
    #[serde(default)]
    pub job_resources: JobResources,
    /// Scheduling of worker Jobs.
    #[serde(default)]
    pub worker_jobs_scheduling: WorkerScheduling,
    /// Annotations on every pod.
    #[serde(default, deserialize_with = "null_as_default")]
    pub pod_annotations: BTreeMap<String, String>,
    /// CSI drivers without snapshot support.
    #[serde(default)]
    pub csi_config: CsiConfig,
    /// Service accounts of the Jobs.
    pub service_accounts: ServiceAccounts,
    /// Images of the Jobs.
    pub images: Images,
    /// The cluster's egress proxy (the manager's own HTTP_PROXY/HTTPS_PROXY/NO_PROXY, which
    /// OLM injects), passed on to every Job.
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// Everything else (logConfig, masterEncryptionKeyConfig, …), kept for later use.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// Proxy settings of tvk-config (`proxy:`), all optional.
#[derive(Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProxyConfig {
    /// `HTTP_PROXY`.
    #[serde(default)]
    pub http_proxy: Option<String>,
    /// `HTTPS_PROXY`.
    #[serde(default)]
    pub https_proxy: Option<String>,
    /// `NO_PROXY`.
    #[serde(default)]
    pub no_proxy: Option<String>,
}

impl ProxyConfig {
    /// The environment variables to set, in a fixed order; empty values are left out.
    pub fn env(&self) -> Vec<(&'static str, &str)> {
        [
            ("HTTP_PROXY", &self.http_proxy),
            ("HTTPS_PROXY", &self.https_proxy),
            ("NO_PROXY", &self.no_proxy),
        ]
        .into_iter()
        .filter_map(|(name, value)| {
            value
                .as_deref()
                .filter(|v| !v.is_empty())
                .map(|v| (name, v))
        })
        .collect()
    }
}

fn default_timezone() -> String {
    "Etc/UTC".into()
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `jobSpec`.
#[derive(Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct JobSpecConfig {
    /// Deadline of every Job.
    #[serde(default = "default_deadline")]
    pub active_deadline_seconds: i64,
    /// How many datamover Jobs of one backup or restore run at the same time
    /// (`jobSpec.maxParallelDataJobs`, default 4).
    #[serde(default = "default_max_parallel_data_jobs")]
    pub max_parallel_data_jobs: u32,
}

impl Default for JobSpecConfig {
    fn default() -> Self {
        Self {
            active_deadline_seconds: default_deadline(),
            max_parallel_data_jobs: default_max_parallel_data_jobs(),
        }
    }
}

fn default_deadline() -> i64 {
    43200
}

fn default_max_parallel_data_jobs() -> u32 {
    4
}

/// `jobResources`.
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct JobResources {
    /// Metamover and hook Jobs.
    #[serde(default)]
    pub metadata: Option<ResourceRequirements>,
    /// Datamover Jobs.
    #[serde(default)]
    pub data: Option<ResourceRequirements>,
}

/// `workerJobsScheduling`.
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkerScheduling {
    /// Affinity.
    #[serde(default)]
    pub affinity: Option<Affinity>,
    /// Node selector.
    #[serde(default)]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations.
    #[serde(default)]
    pub tolerations: Option<Vec<Toleration>>,
}

/// `csiConfig`.
#[derive(Deserialize, Clone, Debug, Default)]
pub struct CsiConfig {
    /// Drivers forced to be treated as snapshot-capable.
    #[serde(default, deserialize_with = "null_as_default")]
    pub include: Vec<String>,
    /// Drivers without snapshot support: their PVCs are skipped with a warning.
    #[serde(default, deserialize_with = "null_as_default")]
    pub exclude: Vec<String>,
}

/// `serviceAccounts`.
#[derive(Deserialize, Clone, Debug)]
pub struct ServiceAccounts {
    /// Of the metamover Jobs.
    pub metamover: String,
    /// Of the datamover Jobs.
    pub datamover: String,
}

/// `images`.
#[derive(Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Images {
    /// The datamover image.
    pub datamover: String,
    /// The metamover image.
    pub metamover: String,
    /// The control plane's own image (runs `create-backup` in CronJobs); defaults to the
    /// datamover image's repository with `tvk-control-plane` as name when absent.
    #[serde(default)]
    pub control_plane: Option<String>,
    /// Pull policy.
    #[serde(default)]
    pub pull_policy: Option<String>,
    /// Pull secrets (names or `{name: …}` objects).
    #[serde(default, deserialize_with = "null_as_default")]
    pub pull_secrets: Vec<Value>,
}

impl Images {
    /// The image CronJobs run `tvk-control-plane create-backup` from.
    pub fn control_plane(&self) -> String {
        if let Some(image) = &self.control_plane {
            return image.clone();
        }
        match self.datamover.rsplit_once("tvk-datamover") {
            Some((repo, tag)) => format!("{repo}tvk-control-plane{tag}"),
            None => self.datamover.clone(),
        }
    }

    /// Pull secret names.
    pub fn pull_secret_names(&self) -> Vec<String> {
        self.pull_secrets
            .iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("name").and_then(Value::as_str).map(str::to_owned),
                _ => None,
            })
            .collect()
    }
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("failed to read the configuration {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// It is not YAML.
    #[error("failed to parse the configuration {path}: {source}")]
    Yaml {
        /// The file.
        path: String,
        /// The parse error.
        #[source]
        source: tvk_api::yaml::YamlError,
    },
    /// It does not have the expected shape.
    #[error(
        "the configuration {path} is not valid ({source}); it is written by the manager from templates/configmap.yaml.hbs — check the TrilioVaultManager's helmValues"
    )]
    Shape {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
    /// A value is out of range.
    #[error("the configuration {path} is not valid: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses the text of the file (`name` is used in messages).
    pub fn parse(text: &str, name: &str) -> Result<Self, ConfigError> {
        let value = tvk_api::yaml::parse_single(text, &tvk_api::yaml::Limits::default()).map_err(
            |source| ConfigError::Yaml {
                path: name.to_string(),
                source,
            },
        )?;
        let config: Config =
            serde_json::from_value(value).map_err(|source| ConfigError::Shape {
                path: name.to_string(),
                source,
            })?;
        if config.install_namespace.is_empty() {
            return Err(ConfigError::Invalid {
                path: name.to_string(),
                message: "installNamespace is empty".into(),
            });
        }
        // The zone is evaluated by the CronJob controller (kube-controller-manager's tzdata);
        // this image has no zoneinfo, so only the form of an IANA name is checked here.
        let tz = &config.schedule_policy_timezone;
        let iana_form = !tz.is_empty()
            && tz.len() <= 64
            && tz
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'))
            && !tz.starts_with('/')
            && !tz.contains("..");
        if !iana_form {
            return Err(ConfigError::Invalid {
                path: name.to_string(),
                message: format!(
                    "schedulePolicyTimezone {tz:?} is not an IANA time zone name (e.g. Etc/UTC, Europe/Berlin)"
                ),
            });
        }
        if config.job_spec.max_parallel_data_jobs == 0 {
            return Err(ConfigError::Invalid {
                path: name.to_string(),
                message: "jobSpec.maxParallelDataJobs is 0; set it to at least 1 (default 4)"
                    .into(),
            });
        }
        Ok(config)
    }

    /// The namespace the controllers watch: `None` = all (Cluster scope).
    pub fn watch_namespace(&self) -> Option<&str> {
        match self.application_scope {
            ApplicationScope::Cluster => None,
            ApplicationScope::Namespaced => Some(&self.install_namespace),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// What templates/configmap.yaml.hbs renders with templates/values.yaml defaults.
    pub(crate) const SAMPLE: &str = r#"
applicationScope: Cluster
installNamespace: trilio-system
instanceName: "tvk-instance"
version: "0.1.0"
logConfig:
  logLevel: Info
schedulePolicyTimezone: "Europe/Berlin"
pauseSchedule: false
jobSpec:
  activeDeadlineSeconds: 43200
jobResources:
  metadata:
    requests: {cpu: 10m, memory: 10Mi}
  data:
    requests: {cpu: 100m, memory: 800Mi}
    limits: {cpu: 1500m, memory: 5Gi}
workerJobsScheduling: {}
podAnnotations: {}
csiConfig:
  include: []
  exclude: [example.nfs.csi.k8s.io]
serviceAccounts:
  metamover: tvk-metamover
  datamover: tvk-datamover
images:
  datamover: "ghcr.io/tvk-rs/tvk-datamover:0.1.0"
  metamover: "ghcr.io/tvk-rs/tvk-metamover:0.1.0"
  pullPolicy: "IfNotPresent"
  pullSecrets: []
"#;

    #[test]
    fn parses_the_rendered_configmap() {
        let c = Config::parse(SAMPLE, "config.yaml").unwrap();
        assert_eq!(c.application_scope, ApplicationScope::Cluster);
        assert_eq!(c.watch_namespace(), None);
        assert_eq!(c.install_namespace, "trilio-system");
        assert_eq!(c.schedule_policy_timezone, "Europe/Berlin");
        assert_eq!(c.csi_config.exclude, vec!["example.nfs.csi.k8s.io"]);
        assert_eq!(c.service_accounts.datamover, "tvk-datamover");
        assert_eq!(
            c.images.control_plane(),
            "ghcr.io/tvk-rs/tvk-control-plane:0.1.0"
        );
        assert!(c.job_resources.data.unwrap().limits.is_some());
        assert_eq!(c.job_spec.max_parallel_data_jobs, 4);
    }

    #[test]
    fn max_parallel_data_jobs_is_read_and_checked() {
        let text = SAMPLE.replace(
            "activeDeadlineSeconds: 43200",
            "activeDeadlineSeconds: 43200\n  maxParallelDataJobs: 2",
        );
        let c = Config::parse(&text, "config.yaml").unwrap();
        assert_eq!(c.job_spec.max_parallel_data_jobs, 2);
        let err = Config::parse(
            &text.replace("maxParallelDataJobs: 2", "maxParallelDataJobs: 0"),
            "config.yaml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("maxParallelDataJobs"), "{err}");
    }

    #[test]
    fn namespaced_scope_watches_the_install_namespace() {
        let text = SAMPLE.replace("applicationScope: Cluster", "applicationScope: Namespaced");
        let c = Config::parse(&text, "config.yaml").unwrap();
        assert_eq!(c.watch_namespace(), Some("trilio-system"));
    }

    #[test]
    fn bad_input_is_named() {
        let err = Config::parse(
            &SAMPLE.replace("Europe/Berlin", "Mars Olympus"),
            "config.yaml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("Mars Olympus"), "{err}");
        let err = Config::parse("applicationScope: Galaxy\n", "c.yaml").unwrap_err();
        assert!(err.to_string().contains("c.yaml"), "{err}");
        assert!(err.to_string().contains("Galaxy"), "{err}");
    }
}
