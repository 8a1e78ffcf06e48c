//! Job specs of the execution layer (pure builders, golden-tested).
//!
//! Every Job: a deterministic name (`tvk-<phase>-<hash>`, [`crate::naming::object_name`]), the
//! labels `triliovault.trilio.io/backup` and `app.kubernetes.io/managed-by: tvk-control-plane`,
//! an owner reference to the Backup when both live in one namespace, the configured
//! `activeDeadlineSeconds`, resources and worker scheduling, the restricted Pod Security
//! profile, `backoffLimit: 0` (the controller decides about retries; exit 75 = retryable) and
//! the target flags, env and volumes of [`crate::target_access`]. Containers end with
//! `terminationMessagePolicy: FallbackToLogsOnError`, so a failed pod's termination message is
//! the tail of its JSON lines and [`pod_outcome`] can name the tool's own error instead of the
//! Job controller's "reached the specified backoff limit".

use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{Pod, ResourceRequirements},
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{Api, api::ListParams};
use serde_json::{Value, json};

use tvk_datamover::error::ErrorKind;

use crate::{
    config::Config,
    context::CONTROLLER_NAME,
    error::{Error, Result},
    target_access::TargetAccess,
};

/// Label naming the backup a Job works for (`<namespace>.<name>`, or the name for a
/// ClusterBackup).
pub const LABEL_BACKUP: &str = "triliovault.trilio.io/backup";
/// Annotation naming the backup as `<namespace>/<name>` (`/<name>` for a ClusterBackup): how a
/// Job event finds its backup (names may contain dots, so a label cannot carry both).
pub const ANNOTATION_BACKUP_REF: &str = "triliovault.trilio.io/backup-ref";
/// Label of the backup's UID.
pub const LABEL_BACKUP_UID: &str = "triliovault.trilio.io/backup-uid";

/// One execution-layer Job.
#[derive(Debug, Clone)]
pub struct JobRequest<'a> {
    /// Job name.
    pub name: String,
    /// Namespace the Job runs in.
    pub namespace: &'a str,
    /// Value of [`LABEL_BACKUP`].
    pub backup_label: String,
    /// The backup's UID.
    pub backup_uid: &'a str,
    /// Value of [`ANNOTATION_BACKUP_REF`].
    pub backup_ref: String,
    /// Owner (the Backup), when in the same namespace.
    pub owner: Option<OwnerReference>,
    /// `metadata` or `data`: which resources and phase label.
    pub phase: &'a str,
    /// Container image.
    pub image: String,
    /// Service account.
    pub service_account: Option<String>,
    /// Arguments before the target flags.
    pub args: Vec<String>,
    /// How the Job reaches the target.
    pub access: TargetAccess,
    /// Resources.
    pub resources: Option<ResourceRequirements>,
}

/// Builds the Job (pure).
pub fn build_job(request: &JobRequest<'_>, config: &Config) -> Result<Job> {
    let mut args = request.args.clone();
    args.extend(request.access.args.iter().cloned());
    let to_value = |what: &'static str, v: &dyn erased::Ser| -> Result<Value> {
        v.to_json().map_err(|source| Error::Serde { what, source })
    };
    let pull_secrets: Vec<Value> = config
        .images
        .pull_secret_names()
        .into_iter()
        .map(|n| json!({"name": n}))
        .collect();
    let sched = &config.worker_jobs_scheduling;
    let labels = json!({
        LABEL_BACKUP: request.backup_label,
        LABEL_BACKUP_UID: request.backup_uid,
        "app.kubernetes.io/managed-by": CONTROLLER_NAME,
        "app.kubernetes.io/component": request.phase,
    });
    let mut pod_spec = json!({
        "restartPolicy": "Never",
        "automountServiceAccountToken": request.service_account.is_some(),
        "imagePullSecrets": pull_secrets,
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": request.phase,
            "image": request.image,
            "imagePullPolicy": config.images.pull_policy.clone().unwrap_or_else(|| "IfNotPresent".into()),
            "args": args,
            "env": to_value("Job env", &request.access.env)?,
            "volumeMounts": to_value("Job volume mounts", &request.access.volume_mounts)?,
            "resources": to_value("Job resources", &request.resources.clone().unwrap_or_default())?,
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "runAsNonRoot": true,
                "capabilities": {"drop": ["ALL"]},
            },
        }],
        "volumes": to_value("Job volumes", &request.access.volumes)?,
    });
    // The cluster's egress proxy reaches every Job (S3 endpoints, registries); the Kubernetes
    // API is reached in-cluster, which kube never sends through a proxy.
    if let Some(env) = pod_spec
        .pointer_mut("/containers/0/env")
        .and_then(Value::as_array_mut)
    {
        for (name, value) in config.proxy.env() {
            env.push(json!({"name": name, "value": value}));
        }
    }
    if let Some(obj) = pod_spec.as_object_mut() {
        if let Some(sa) = &request.service_account {
            obj.insert("serviceAccountName".into(), json!(sa));
        }
        if let Some(a) = &sched.affinity {
            obj.insert("affinity".into(), to_value("affinity", a)?);
        }
        if let Some(n) = &sched.node_selector {
            obj.insert("nodeSelector".into(), json!(n));
        }
        if let Some(t) = &sched.tolerations {
            obj.insert("tolerations".into(), to_value("tolerations", t)?);
        }
    }
    let owners: Vec<Value> = match &request.owner {
        Some(o) => vec![to_value("owner reference", o)?],
        None => Vec::new(),
    };
    let value = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": request.name,
            "namespace": request.namespace,
            "labels": labels,
            "annotations": {ANNOTATION_BACKUP_REF: request.backup_ref},
            "ownerReferences": owners,
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": config.job_spec.active_deadline_seconds,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": labels, "annotations": config.pod_annotations},
                "spec": pod_spec,
            },
        },
    });
    serde_json::from_value(value).map_err(|source| Error::Serde {
        what: "a Job",
        source,
    })
}

/// What a Job's status says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Not created yet.
    Missing,
    /// Created, not finished.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Failed; the message of the Job's Failed condition.
    Failed(String),
}

/// What the pods of a finished Job left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodOutcome {
    /// Exit code of the last terminated container.
    pub exit_code: Option<i32>,
    /// The `error` of the tool's final `{"event":"result","ok":false,…}` line, from the
    /// termination message.
    pub tool_error: Option<String>,
    /// The `kind` of that line (the datamover's [`ErrorKind`]), when it names a known one.
    pub tool_kind: Option<ErrorKind>,
    /// The `retryable` verdict of that line.
    pub tool_retryable: Option<bool>,
}

impl PodOutcome {
    /// Whether running the Job again may succeed: the tool's own verdict (from its error kind)
    /// when its result line says, else its exit code ([`EXIT_RETRYABLE`]: the datamover's
    /// and metamover's code for a transient failure).
    pub fn retryable(&self) -> bool {
        self.tool_retryable
            .unwrap_or(self.exit_code == Some(EXIT_RETRYABLE))
    }
}

/// Exit code of a retryable failure of the execution layer's tools (sysexits EX_TEMPFAIL).
pub const EXIT_RETRYABLE: i32 = 75;

/// A tool's failure, from its final `{"event":"result","ok":false,…}` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolFailure {
    /// `error`: the tool's message.
    pub message: String,
    /// `kind`, when it names a known [`ErrorKind`].
    pub kind: Option<ErrorKind>,
    /// `retryable`, when present.
    pub retryable: Option<bool>,
}

/// Every [`ErrorKind`], to read the `kind` of a result line by its name.
const KINDS: [ErrorKind; 20] = [
    ErrorKind::Dns,
    ErrorKind::Connect,
    ErrorKind::Timeout,
    ErrorKind::Tls,
    ErrorKind::Auth,
    ErrorKind::Permission,
    ErrorKind::BucketMissing,
    ErrorKind::NotFound,
    ErrorKind::AlreadyExists,
    ErrorKind::Throttled,
    ErrorKind::Server,
    ErrorKind::ObjectLock,
    ErrorKind::ClockSkew,
    ErrorKind::NoSpace,
    ErrorKind::LocalIo,
    ErrorKind::Interrupted,
    ErrorKind::Corrupt,
    ErrorKind::InvalidInput,
    ErrorKind::TargetRefused,
    ErrorKind::TargetUnavailable,
];

/// The [`ErrorKind`] named `name` (as [`ErrorKind::as_str`] writes it).
pub fn error_kind(name: &str) -> Option<ErrorKind> {
    KINDS.into_iter().find(|k| k.as_str() == name)
}

/// The last failed `{"event":"result"…}` JSON line in `text` (pure).
pub fn result_failure(text: &str) -> Option<ToolFailure> {
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line.trim()).ok())
        .filter(|v| v.get("event") == Some(&json!("result")) && v.get("ok") == Some(&json!(false)))
        .filter_map(|v| {
            Some(ToolFailure {
                message: v.get("error")?.as_str()?.to_owned(),
                kind: v.get("kind").and_then(Value::as_str).and_then(error_kind),
                retryable: v.get("retryable").and_then(Value::as_bool),
            })
        })
        .next_back()
}

/// Reads the exit code and the tool's own error from the pods of Job `job` (label `job-name`,
/// set by every Kubernetes version's Job controller).
pub async fn pod_outcome(client: &kube::Client, namespace: &str, job: &str) -> Result<PodOutcome> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .map_err(|e| Error::kube(format!("list the pods of Job {namespace}/{job}"), e))?;
    let mut outcome = PodOutcome::default();
    for terminated in list
        .items
        .iter()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter_map(|c| c.state.as_ref().and_then(|s| s.terminated.as_ref()))
    {
        outcome.exit_code = Some(terminated.exit_code);
        if let Some(failure) = terminated.message.as_deref().and_then(result_failure) {
            outcome.tool_error = Some(failure.message);
            outcome.tool_kind = failure.kind;
            outcome.tool_retryable = failure.retryable;
        }
    }
    Ok(outcome)
}

/// The `error` of the last failed `{"event":"result"…}` JSON line in `text` (pure).
pub fn result_error(text: &str) -> Option<String> {
    result_failure(text).map(|f| f.message)
}

/// A failed Job's message for a condition: the tool's own error when its pod left one, else
/// the Job controller's message.
pub async fn failure_message(
    client: &kube::Client,
    namespace: &str,
    job: &str,
    job_message: &str,
) -> Result<String> {
    Ok(pod_outcome(client, namespace, job)
        .await?
        .tool_error
        .unwrap_or_else(|| job_message.to_string()))
}

/// Reads a Job's state (pure).
pub fn job_state(job: Option<&Job>) -> JobState {
    let Some(job) = job else {
        return JobState::Missing;
    };
    let status = job.status.clone().unwrap_or_default();
    for c in status.conditions.unwrap_or_default() {
        if c.status != "True" {
            continue;
        }
        match c.type_.as_str() {
            "Complete" | "SuccessCriteriaMet" => return JobState::Succeeded,
            "Failed" | "FailureTarget" => {
                return JobState::Failed(format!(
                    "{}: {}",
                    c.reason.unwrap_or_else(|| "Failed".into()),
                    c.message.unwrap_or_default()
                ));
            }
            _ => {}
        }
    }
    if status.succeeded.unwrap_or(0) > 0 {
        JobState::Succeeded
    } else if status.failed.unwrap_or(0) > 0 {
        JobState::Failed("the Job's pod failed".into())
    } else {
        JobState::Running
    }
}

/// Serialization of the k8s types through one object-safe shim.
mod erased {
    pub trait Ser {
        fn to_json(&self) -> Result<serde_json::Value, serde_json::Error>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
            serde_json::to_value(self)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::target_access::TargetAccess;

    fn request(namespace: &str) -> JobRequest<'_> {
        JobRequest {
            name: "tvk-job".into(),
            namespace,
            backup_label: "ns.b".into(),
            backup_uid: "uid",
            backup_ref: "ns/b".into(),
            owner: None,
            phase: "data",
            image: "img".into(),
            service_account: None,
            args: vec!["backup".into()],
            access: TargetAccess::default(),
            resources: None,
        }
    }

    fn env_of(job: &Job) -> Vec<(String, String)> {
        job.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect()
    }

    #[test]
    fn the_tools_own_error_is_read_from_the_last_failed_result_line() {
        let tail = "{\"event\":\"progress\",\"percent\":40}\nnot json\n{\"event\":\"result\",\"ok\":false,\"error\":\"digest mismatch at 65536\",\"retryable\":false}\n";
        assert_eq!(
            result_error(tail).as_deref(),
            Some("digest mismatch at 65536")
        );
        assert_eq!(result_error("{\"event\":\"result\",\"ok\":true}"), None);
        let typed = "{\"event\":\"result\",\"ok\":false,\"error\":\"refused\",\"kind\":\"Auth\",\"retryable\":false}";
        assert_eq!(
            result_failure(typed),
            Some(ToolFailure {
                message: "refused".into(),
                kind: Some(ErrorKind::Auth),
                retryable: Some(false),
            })
        );
        assert_eq!(
            result_failure(&typed.replace("Auth", "Martian"))
                .unwrap()
                .kind,
            None
        );
        for k in KINDS {
            assert_eq!(error_kind(k.as_str()), Some(k));
        }
        assert_eq!(result_error("panicked at src/main.rs"), None);
        let job = build_job(
            &request("ns"),
            &Config::parse(crate::config::tests::SAMPLE, "config.yaml").unwrap(),
        )
        .unwrap();
        assert_eq!(
            job.spec.unwrap().template.spec.unwrap().containers[0]
                .termination_message_policy
                .as_deref(),
            Some("FallbackToLogsOnError")
        );
    }

    #[test]
    fn a_jobs_retry_is_decided_by_the_tools_verdict_else_by_exit_75() {
        let outcome = |exit: i32, retryable: Option<bool>| PodOutcome {
            exit_code: Some(exit),
            tool_retryable: retryable,
            ..PodOutcome::default()
        };
        assert!(outcome(75, None).retryable());
        assert!(!outcome(1, None).retryable());
        assert!(!outcome(75, Some(false)).retryable());
        assert!(outcome(1, Some(true)).retryable());
        assert!(!PodOutcome::default().retryable());
    }

    #[test]
    fn the_clusters_proxy_reaches_every_job_and_nothing_is_set_without_one() {
        let yaml = format!(
            "{}proxy:\n  httpsProxy: http://proxy.corp:3128\n  noProxy: .svc,10.0.0.0/8\n",
            crate::config::tests::SAMPLE
        );
        let config = Config::parse(&yaml, "config.yaml").unwrap();
        let job = build_job(&request("trilio-system"), &config).unwrap();
        assert_eq!(
            env_of(&job),
            vec![
                ("HTTPS_PROXY".into(), "http://proxy.corp:3128".into()),
                ("NO_PROXY".into(), ".svc,10.0.0.0/8".into()),
            ]
        );
        let plain = Config::parse(crate::config::tests::SAMPLE, "config.yaml").unwrap();
        assert!(env_of(&build_job(&request("trilio-system"), &plain).unwrap()).is_empty());
    }
}
