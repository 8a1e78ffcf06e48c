//! The Target controller: proves a target is usable and says why when it is not.
//!
//! fetch (credential Secret, CA ConfigMap; for NFS the PersistentVolume and claim of the share)
//! → probe (S3: an in-process create-only write, read-back, list and delete of a probe object
//! with the Target's own credentials, region, endpoint and TLS settings, through the
//! datamover's target code; with `objectLockingEnabled: true` also a signed
//! GetObjectLockConfiguration of the bucket) → classify a failure by the datamover's error
//! kind (DNS, TLS, authentication, missing bucket, permission, unreachable endpoint,
//! throttled, server error, clock skew, object lock not enabled) → stats → status (`Available` /
//! `Unavailable`, one `Validation` condition whose reason says why), written only when it
//! changed.
//!
//! Re-validation: on every spec change (generation), when the credential Secret or the CA
//! ConfigMap it names changes ([`targets_using`] maps the runner's watches of their metadata
//! to Targets), and every [`Context::target_revalidation`] (Available) or minute (Unavailable).
//! Failures are classified by one function, [`classify_failure`].

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::{
    api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Secret},
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::controller::Action,
};
use serde_json::json;
use tvk_api::{
    backup::{Backup, BackupState},
    backup_plan::BackupPlan,
    target::{
        Target, TargetPhase, TargetPhaseStatus, TargetState, TargetStats, TargetStatus, TargetType,
    },
};
use tvk_datamover::{
    error::ErrorKind,
    target::{S3Config, Target as Store},
};

use crate::{
    context::{CONTROLLER_NAME, Context},
    error::{Error, Result, is_conflict, is_not_found},
    jobs::{JobRequest, JobState, LABEL_BACKUP, LABEL_BACKUP_UID, build_job, job_state},
    naming::{object_name, short_hash},
    status_patch::{apply_status, now_rfc3339, set_condition},
    target_access::{ACCESS_KEY, DEFAULT_REGION, SECRET_KEY, job_access, ref_namespace},
};

/// Field manager of the Target controller.
pub const FIELD_MANAGER: &str = "tvk-control-plane-target";
/// Where probe objects are written (a name no backup plan UID can take).
pub const PROBE_PREFIX: &str = ".tvk-probe";

/// Why a target is not usable: a reason for the condition and a message saying what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeFailure {
    /// CamelCase category: DNSResolutionFailed, TLSFailed, AuthenticationFailed,
    /// BucketNotFound, PermissionDenied, EndpointUnreachable, ClockSkew, CredentialsMissing,
    /// ObjectLockNotEnabled, Throttled, EndpointError, ProbeFailed, NoSpace (NFS).
    pub reason: &'static str,
    /// What happened and what to do.
    pub message: String,
}

/// What the probe concluded.
pub type ProbeResult = std::result::Result<(), ProbeFailure>;

/// Everything the in-process S3 probe needs (credentials already read from the Secret).
#[derive(Clone)]
pub struct S3Probe {
    /// How to reach the bucket.
    pub config: S3Config,
    /// The CA bundle (PEM) from the certConfigMap, if any.
    pub ca_pem: Option<String>,
    /// Key of the probe object.
    pub key: String,
    /// `objectLockingEnabled: true`: the bucket's Object Lock configuration must be enabled
    /// (GetObjectLockConfiguration), or the Target is Unavailable (`ObjectLockNotEnabled`).
    pub expect_object_lock: bool,
}

impl std::fmt::Debug for S3Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Probe")
            .field("config", &self.config)
            .field("key", &self.key)
            .finish()
    }
}

/// The one failure classifier of target access: a CamelCase reason and what to do. A typed
/// datamover error is classified by its [`tvk_datamover::error::ErrorKind`] (derived by the
/// datamover from the error's typed source chain: S3 error code, HTTP status, rustls and I/O
/// errors); only text without a typed error (a Job's result line, a plain HTTP client's
/// error) falls back to the message. `None` when nothing is recognised.
pub fn classify_failure(
    typed: Option<&tvk_datamover::Error>,
    text: &str,
) -> Option<(&'static str, &'static str)> {
    match typed {
        Some(e) => reason_for_kind(e.kind()),
        None => classify_text(text).and_then(reason_for_kind),
    }
}

/// Condition reason and advice of a failure kind; `None` for kinds that say nothing about the
/// Target's settings (the caller reports its own message).
pub fn reason_for_kind(kind: ErrorKind) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        ErrorKind::Dns => (
            "DNSResolutionFailed",
            "the endpoint's host name does not resolve: check objectStoreCredentials.url and the cluster's DNS",
        ),
        ErrorKind::Tls => (
            "TLSFailed",
            "the TLS connection failed: give the endpoint's CA in sslCertConfig (certConfigMap, certKey), or use an http:// URL if the endpoint has no TLS",
        ),
        ErrorKind::Connect | ErrorKind::Timeout | ErrorKind::TargetUnavailable => (
            "EndpointUnreachable",
            "the endpoint cannot be reached: check objectStoreCredentials.url, network policies and proxies",
        ),
        ErrorKind::Auth => (
            "AuthenticationFailed",
            "the endpoint refused the credentials: check the accessKey and secretKey in the credential Secret",
        ),
        ErrorKind::BucketMissing => (
            "BucketNotFound",
            "the bucket does not exist: create it or correct objectStoreCredentials.bucketName",
        ),
        ErrorKind::Permission => (
            "PermissionDenied",
            "the credentials may not write, read, list and delete objects in this bucket: grant s3:PutObject, GetObject, ListBucket and DeleteObject",
        ),
        ErrorKind::ClockSkew => ("ClockSkew", "fix time synchronisation (NTP) on the nodes"),
        ErrorKind::Throttled => (
            "Throttled",
            "the endpoint asks clients to slow down (SlowDown, 429, 503); it is re-validated later",
        ),
        ErrorKind::Server => (
            "EndpointError",
            "the endpoint failed with a server error (5xx); it is re-validated later",
        ),
        ErrorKind::ObjectLock => (
            "ObjectLockNotEnabled",
            "objectLockingEnabled is set but the bucket has no Object Lock configuration: create the bucket with Object Lock enabled, or set objectLockingEnabled to false",
        ),
        ErrorKind::NotFound
        | ErrorKind::AlreadyExists
        | ErrorKind::NoSpace
        | ErrorKind::LocalIo
        | ErrorKind::Interrupted
        | ErrorKind::Corrupt
        | ErrorKind::InvalidInput
        | ErrorKind::TargetRefused => return None,
    })
}

/// The kind an error message names, for text that comes without a typed error (a Job's
/// result line, a plain HTTP client's error chain).
fn classify_text(text: &str) -> Option<ErrorKind> {
    let lower = text.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    Some(
        if any(&[
            "dns error",
            "failed to lookup address",
            "name or service not known",
            "no such host",
            "nodename nor servname",
        ]) {
            ErrorKind::Dns
        } else if any(&[
            "certificate",
            "tls",
            "ssl",
            "handshake",
            "unknownissuer",
            "invalid peer",
            "invalidcontenttype",
            "corrupt message",
        ]) {
            ErrorKind::Tls
        } else if any(&[
            "invalidaccesskeyid",
            "signaturedoesnotmatch",
            "unauthenticated",
            "invalidtoken",
        ]) {
            ErrorKind::Auth
        } else if any(&["nosuchbucket", "bucket does not exist"]) {
            ErrorKind::BucketMissing
        } else if any(&["accessdenied", "permission", "forbidden", "403"]) {
            ErrorKind::Permission
        } else if any(&[
            "connection refused",
            "error sending request",
            "timed out",
            "connect",
        ]) {
            ErrorKind::Connect
        } else {
            return None;
        },
    )
}

/// Classifies an error of the datamover's target code (credential-redacted text).
pub fn classify(error: &tvk_datamover::Error) -> ProbeFailure {
    let text = error.to_string();
    let (reason, advice) = classify_failure(Some(error), &text)
        .unwrap_or(("ProbeFailed", "check the Target's settings"));
    ProbeFailure {
        reason,
        message: format!("{advice} ({text})"),
    }
}

/// The S3 probe: create-only write, read back, list, delete. Blocking (call it off the async
/// workers); `handle` runs the S3 calls.
pub fn probe_s3(probe: &S3Probe, handle: tokio::runtime::Handle) -> ProbeResult {
    with_store(probe, handle, |store| {
        run_s3_probe(store, &probe.key, probe.expect_object_lock)
    })?
}

/// Opens the Target's bucket (CA bundle in a temporary file for the duration) and runs `f`.
/// Blocking.
pub fn with_store<R>(
    probe: &S3Probe,
    handle: tokio::runtime::Handle,
    f: impl FnOnce(&Store) -> R,
) -> std::result::Result<R, ProbeFailure> {
    let mut config = probe.config.clone();
    let ca_file = match &probe.ca_pem {
        Some(pem) => {
            let path = std::env::temp_dir().join(format!(
                "tvk-target-ca-{}-{}.pem",
                std::process::id(),
                short_hash(&[&probe.key])
            ));
            std::fs::write(&path, pem).map_err(|e| ProbeFailure {
                reason: "ProbeFailed",
                message: format!("failed to write the CA bundle to {}: {e}", path.display()),
            })?;
            config.ca_file = Some(path.clone());
            Some(path)
        }
        None => None,
    };
    let store = Store::s3(&config, handle).map_err(|e| ProbeFailure {
        reason: "ProbeFailed",
        message: format!("the Target's S3 settings are not usable: {e}"),
    });
    let result = store.map(|store| f(&store));
    if let Some(path) = ca_file {
        let _ = std::fs::remove_file(path);
    }
    result
}

fn run_s3_probe(store: &Store, key: &str, expect_object_lock: bool) -> ProbeResult {
    let payload = format!("tvk probe {key}\n");
    store
        .put_create_only(key, Bytes::from(payload.clone()))
        .map_err(|e| match e {
            // A write into a missing bucket answers 404 without NoSuchBucket on some stores.
            tvk_datamover::Error::MissingObject { .. } => ProbeFailure {
                reason: "BucketNotFound",
                message: "the bucket does not exist (a write answered 404): create it or correct objectStoreCredentials.bucketName".into(),
            },
            e => classify(&e),
        })?;
    let outcome = (|| {
        let back = store.read_all(key, 4096).map_err(|e| classify(&e))?;
        if back != payload.as_bytes() {
            return Err(ProbeFailure {
                reason: "ProbeFailed",
                message: format!(
                    "the probe object {key} read back different bytes than were written; the endpoint does not store objects faithfully"
                ),
            });
        }
        let listed = store.list(PROBE_PREFIX).map_err(|e| classify(&e))?;
        if !listed.iter().any(|k| k == key) {
            return Err(ProbeFailure {
                reason: "ProbeFailed",
                message: format!(
                    "the probe object {key} was written but is missing from a listing of {PROBE_PREFIX}/; the endpoint's listings are not consistent"
                ),
            });
        }
        Ok(())
    })();
    let deleted = store.delete(key).map_err(|e| classify(&e));
    outcome?;
    deleted?;
    if expect_object_lock {
        store.verify_object_lock().map_err(|e| classify(&e))?;
    }
    Ok(())
}

/// Runs the S3 probe off the async workers and, when it could not connect, diagnoses why.
pub async fn probe_target(probe: S3Probe) -> Result<ProbeResult> {
    let handle = tokio::runtime::Handle::current();
    let blocking = probe.clone();
    let outcome = tokio::task::spawn_blocking(move || probe_s3(&blocking, handle))
        .await
        .map_err(|e| Error::Task(e.to_string()))?;
    Ok(match outcome {
        Err(failure) if matches!(failure.reason, "EndpointUnreachable" | "ProbeFailed") => {
            Err(diagnose_connection(&probe, failure).await)
        }
        other => other,
    })
}

/// The datamover's S3 errors keep only the top-level message ("error sending request"); when
/// the probe could not reach the endpoint, one plain HTTPS/HTTP request with the same TLS
/// settings tells DNS, TLS and refused connections apart from the error's source chain.
pub async fn diagnose_connection(probe: &S3Probe, failure: ProbeFailure) -> ProbeFailure {
    let endpoint = probe
        .config
        .endpoint
        .clone()
        .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", probe.config.region));
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(probe.config.skip_tls_verify);
    if let Some(pem) = &probe.ca_pem {
        match reqwest::Certificate::from_pem_bundle(pem.as_bytes()) {
            Ok(certs) => {
                for cert in certs {
                    builder = builder.add_root_certificate(cert);
                }
            }
            Err(e) => {
                return ProbeFailure {
                    reason: "TLSFailed",
                    message: format!("the CA certificate in sslCertConfig is not PEM: {e}"),
                };
            }
        }
    }
    let Ok(client) = builder.build() else {
        return failure;
    };
    let error = match client.head(&endpoint).send().await {
        // The endpoint answers HTTP: the failure was not about connecting.
        Ok(_) => return failure,
        Err(e) => e,
    };
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    let redacted = tvk_datamover::target::redact(
        &chain,
        &[&probe.config.access_key_id, &probe.config.secret_access_key],
    );
    // Only what is about connecting replaces the probe's failure.
    let (reason, advice) = match classify_failure(None, &redacted) {
        Some(found @ ("DNSResolutionFailed" | "TLSFailed" | "EndpointUnreachable", _)) => found,
        _ => return failure,
    };
    ProbeFailure {
        reason,
        message: format!("{advice} ({redacted})"),
    }
}

/// Reads what reaching the Target needs (credential Secret, CA ConfigMap); a missing piece is
/// a [`ProbeFailure`] saying which.
pub async fn s3_probe_inputs(
    target: &Target,
    ctx: &Context,
) -> Result<std::result::Result<S3Probe, ProbeFailure>> {
    let ns = target.namespace().unwrap_or_default();
    let Some(s3) = &target.spec.object_store_credentials else {
        return Ok(Err(ProbeFailure {
            reason: "CredentialsMissing",
            message: "type ObjectStore needs objectStoreCredentials (bucketName, credentialSecret)"
                .into(),
        }));
    };
    let Some(secret_ref) = &s3.credential_secret else {
        return Ok(Err(ProbeFailure {
            reason: "CredentialsMissing",
            message: format!(
                "objectStoreCredentials.credentialSecret is not set; create a Secret with keys {ACCESS_KEY} and {SECRET_KEY} and reference it"
            ),
        }));
    };
    let secret_ns = ref_namespace(secret_ref, &ns).to_string();
    let secret_name = secret_ref.name.clone().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &secret_ns);
    let secret = match secrets.get_opt(&secret_name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Ok(Err(ProbeFailure {
                reason: "CredentialsMissing",
                message: format!(
                    "the credential Secret {secret_ns}/{secret_name} does not exist; create it with keys {ACCESS_KEY} and {SECRET_KEY}"
                ),
            }));
        }
        Err(e) => {
            return Err(Error::kube(
                format!("read Secret {secret_ns}/{secret_name}"),
                e,
            ));
        }
    };
    let field = |key: &str| -> Option<String> {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .cloned()
            })
            .filter(|v| !v.is_empty())
    };
    let (Some(access), Some(secret_key)) = (field(ACCESS_KEY), field(SECRET_KEY)) else {
        return Ok(Err(ProbeFailure {
            reason: "CredentialsMissing",
            message: format!(
                "the credential Secret {secret_ns}/{secret_name} lacks the key {ACCESS_KEY} or {SECRET_KEY} (or it is empty)"
            ),
        }));
    };
    let mut ca_pem = None;
    if let Some(cert) = &s3.ssl_cert_config
        && let Some(map_ref) = &cert.cert_config_map
    {
        let map_ns = ref_namespace(map_ref, &ns).to_string();
        let map_name = map_ref.name.clone().unwrap_or_default();
        let key = cert.cert_key.clone().unwrap_or_else(|| "ca.crt".into());
        let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &map_ns);
        let map = maps
            .get_opt(&map_name)
            .await
            .map_err(|e| Error::kube(format!("read ConfigMap {map_ns}/{map_name}"), e))?;
        match map.and_then(|m| m.data.and_then(|d| d.get(&key).cloned())) {
            Some(pem) => ca_pem = Some(pem),
            None => {
                return Ok(Err(ProbeFailure {
                    reason: "TLSFailed",
                    message: format!(
                        "the certificate ConfigMap {map_ns}/{map_name} or its key {key} does not exist; create it with the endpoint's CA certificate (PEM)"
                    ),
                }));
            }
        }
    }
    let uid = target.uid().unwrap_or_default();
    let config = S3Config {
        bucket: s3.bucket_name.clone(),
        prefix: String::new(),
        endpoint: s3.url.clone().filter(|u| !u.is_empty()),
        region: s3
            .region
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| DEFAULT_REGION.into()),
        skip_tls_verify: s3.skip_cert_verification == Some(true),
        ca_file: None,
        access_key_id: access,
        secret_access_key: secret_key,
        session_token: None,
        retry_timeout: Duration::from_secs(20),
        max_retries: 2,
    };
    let nanos = jiff::Timestamp::now().as_nanosecond();
    Ok(Ok(S3Probe {
        config,
        ca_pem,
        key: format!("{PROBE_PREFIX}/{uid}-{nanos}"),
        expect_object_lock: s3.object_locking_enabled == Some(true),
    }))
}

/// What a Target reads besides itself (what the runner watches to re-validate it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetInput {
    /// `objectStoreCredentials.credentialSecret`.
    Secret,
    /// `objectStoreCredentials.sslCertConfig.certConfigMap`.
    CaConfigMap,
}

/// The Targets whose `input` is the object `changed` (pure): the mapper of the runner's Secret
/// and ConfigMap watches, so a rotated credential or CA re-validates at once.
pub fn targets_using<K: Resource>(
    targets: &[Arc<Target>],
    input: TargetInput,
    changed: &K,
) -> Vec<kube::runtime::reflector::ObjectRef<Target>> {
    let name = changed.meta().name.clone().unwrap_or_default();
    let ns = changed.meta().namespace.clone().unwrap_or_default();
    targets
        .iter()
        .filter(|t| {
            let tns = t.namespace().unwrap_or_default();
            let s3 = t.spec.object_store_credentials.as_ref();
            let reference = match input {
                TargetInput::Secret => s3.and_then(|s| s.credential_secret.as_ref()),
                TargetInput::CaConfigMap => s3
                    .and_then(|s| s.ssl_cert_config.as_ref())
                    .and_then(|c| c.cert_config_map.as_ref()),
            };
            reference.is_some_and(|r| {
                r.name.as_deref() == Some(name.as_str()) && ref_namespace(r, &tns) == ns
            })
        })
        .map(|t| kube::runtime::reflector::ObjectRef::from_obj(t.as_ref()))
        .collect()
}

/// Name of the PersistentVolume (and claim) of an NFS Target.
pub fn nfs_volume_name(target: &Target) -> String {
    format!(
        "tvk-nfs-{}",
        short_hash(&[&target.uid().unwrap_or_default()])
    )
}

/// The PersistentVolume and claim of an NFS Target's share (pure).
pub fn nfs_objects(target: &Target) -> Result<(PersistentVolume, PersistentVolumeClaim)> {
    let ns = target.namespace().unwrap_or_default();
    let Some(nfs) = &target.spec.nfs_credentials else {
        return Err(Error::InvalidSpec(
            "type NFS needs nfsCredentials.nfsExport (server:/path)".into(),
        ));
    };
    let Some((server, path)) = nfs.nfs_export.split_once(':') else {
        return Err(Error::InvalidSpec(format!(
            "nfsExport {:?} is not of the form server:/path",
            nfs.nfs_export
        )));
    };
    let name = nfs_volume_name(target);
    let capacity = match &target.spec.threshold_capacity {
        Some(IntOrString::String(s)) => s.clone(),
        Some(IntOrString::Int(i)) => i.to_string(),
        None => "1Ti".into(),
    };
    let options: Vec<String> = nfs
        .nfs_options
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .collect();
    let labels = json!({
        "app.kubernetes.io/managed-by": CONTROLLER_NAME,
        "triliovault.trilio.io/target": target.name_any(),
    });
    let pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "capacity": {"storage": capacity},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "mountOptions": options,
            "nfs": {"server": server, "path": path},
            "claimRef": {"namespace": ns, "name": name},
        }
    }))
    .map_err(|source| Error::Serde {
        what: "the NFS PersistentVolume",
        source,
    })?;
    let owner = target.controller_owner_ref(&());
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "ownerReferences": owner.into_iter().collect::<Vec<_>>()},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": name,
            "resources": {"requests": {"storage": capacity}},
        }
    }))
    .map_err(|source| Error::Serde { what: "the NFS PersistentVolumeClaim", source })?;
    Ok((pv, pvc))
}

/// Capacity figures: plans using the target and bytes of its Available backups.
async fn stats(target: &Target, ctx: &Context) -> Result<TargetStats> {
    let name = target.name_any();
    let ns = target.namespace().unwrap_or_default();
    let (plans, backups): (Api<BackupPlan>, Api<Backup>) = match ctx.config.watch_namespace() {
        Some(watched) => (
            Api::namespaced(ctx.client.clone(), watched),
            Api::namespaced(ctx.client.clone(), watched),
        ),
        None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
    };
    let plans = plans
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("list BackupPlans", e))?;
    let using: Vec<&BackupPlan> = plans
        .items
        .iter()
        .filter(|p| {
            let t = &p.spec.backup_config.target;
            t.name.as_deref() == Some(name.as_str())
                && ref_namespace(t, &p.namespace().unwrap_or_default()) == ns
        })
        .collect();
    let plan_keys: Vec<(String, String)> = using
        .iter()
        .map(|p| (p.namespace().unwrap_or_default(), p.name_any()))
        .collect();
    let backups = backups
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("list Backups", e))?;
    let mut occupied: u64 = 0;
    for b in &backups.items {
        let bns = b.namespace().unwrap_or_default();
        let plan = (
            ref_namespace(&b.spec.backup_plan, &bns).to_string(),
            b.spec.backup_plan.name.clone().unwrap_or_default(),
        );
        let available = b.status.as_ref().and_then(|s| s.status) == Some(BackupState::Available);
        if available && plan_keys.contains(&plan) {
            occupied += b
                .status
                .as_ref()
                .and_then(|s| s.size.as_ref())
                .and_then(crate::naming::quantity_bytes)
                .unwrap_or(0);
        }
    }
    Ok(TargetStats {
        application_capacity: target.spec.threshold_capacity.clone(),
        application_capacity_consumed: Some(IntOrString::String(occupied.to_string())),
        capacity_occupied: Some(IntOrString::String(occupied.to_string())),
        total_backup_plans: i64::try_from(using.len()).ok(),
    })
}

/// A failure message without what changes between two probes of the same failure: the probe
/// object's unique name and request timings.
pub fn stable_message(message: &str) -> String {
    static PATTERNS: std::sync::OnceLock<Option<(regex::Regex, regex::Regex)>> =
        std::sync::OnceLock::new();
    let Some((probe_key, timing)) = PATTERNS.get_or_init(|| {
        Some((
            regex::Regex::new(r"\.tvk-probe/[A-Za-z0-9._-]+").ok()?,
            regex::Regex::new(r" in [0-9.]+(ns|µs|us|ms|s)\b").ok()?,
        ))
    }) else {
        return message.to_string();
    };
    let message = probe_key.replace_all(message, "the probe object");
    timing.replace_all(&message, "").into_owned()
}

/// Reconciles one Target.
pub async fn reconcile(target: Arc<Target>, ctx: Arc<Context>) -> Result<Action> {
    let result = reconcile_inner(&target, &ctx).await;
    ctx.metrics
        .observe("target", result.as_ref().err().map(Error::category));
    result
}

async fn reconcile_inner(target: &Target, ctx: &Context) -> Result<Action> {
    let ns = target.namespace().ok_or(Error::Incomplete {
        kind: "Target",
        field: "namespace",
    })?;
    let api: Api<Target> = Api::namespaced(ctx.client.clone(), &ns);
    let old = target.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let outcome: Option<ProbeResult> = match target.spec.type_ {
        TargetType::ObjectStore => Some(match s3_probe_inputs(target, ctx).await? {
            Err(failure) => Err(failure),
            Ok(probe) => probe_target(probe).await?,
        }),
        TargetType::Nfs => {
            let (pv, pvc) = nfs_objects(target)?;
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
            let pv_name = pv.name_any();
            pvs.patch(&pv_name, &params, &Patch::Apply(&pv))
                .await
                .map_err(|e| Error::kube(format!("apply PersistentVolume {pv_name} (Cluster scope is needed for NFS targets)"), e))?;
            let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
            let applied = pvcs
                .patch(&pv_name, &params, &Patch::Apply(&pvc))
                .await
                .map_err(|e| {
                    Error::kube(format!("apply PersistentVolumeClaim {ns}/{pv_name}"), e)
                })?;
            status.nfs_persistent_volume =
                Some(tvk_api::common::ObjectReference::new(pv_name.clone(), None));
            status.nfs_persistent_volume_claim = Some(tvk_api::common::ObjectReference::new(
                pv_name.clone(),
                Some(&ns),
            ));
            let bound = applied.status.and_then(|s| s.phase).as_deref() == Some("Bound");
            if bound {
                nfs_probe(target, ctx).await?
            } else {
                Some(Err(ProbeFailure {
                    reason: "ClaimNotBound",
                    message: format!(
                        "the share is being bound as PersistentVolume {pv_name} / claim {ns}/{pv_name}; it is probed once the claim is Bound"
                    ),
                }))
            }
        }
    };
    // The NFS validation Job is still running: nothing to report yet.
    let Some(outcome) = outcome else {
        return Ok(Action::requeue(Duration::from_secs(5)));
    };
    // The same failure must give the same reason, or every re-validation would write status.
    let outcome = outcome.map_err(|f| ProbeFailure {
        reason: f.reason,
        message: stable_message(&f.message),
    });
    let now = now_rfc3339();
    let mut conditions = status.condition.take().unwrap_or_default();
    let (state, phase_status, reason) = match &outcome {
        Ok(()) => (
            TargetState::Available,
            TargetPhaseStatus::Completed,
            format!(
                "ProbeSucceeded: a probe object was written, read back, listed and deleted{}",
                object_lock_note(target)
            ),
        ),
        Err(f) => (
            TargetState::Unavailable,
            TargetPhaseStatus::Failed,
            format!("{}: {}", f.reason, f.message),
        ),
    };
    set_condition(
        &mut conditions,
        TargetPhase::Validation,
        phase_status,
        &reason,
        &now,
    );
    status.condition = Some(conditions);
    status.status = Some(state);
    status.stats = Some(stats(target, ctx).await?);
    if status != old {
        apply_status(&api, target, FIELD_MANAGER, &status).await?;
        if old.status != status.status {
            ctx.event(
                target,
                state != TargetState::Available,
                match state {
                    TargetState::Available => "TargetAvailable",
                    _ => "TargetUnavailable",
                },
                reason.clone(),
            )
            .await;
        }
    }
    Ok(match state {
        TargetState::Available => Action::requeue(ctx.target_revalidation),
        _ => Action::requeue(Duration::from_secs(60)),
    })
}

/// Label naming the Target a validation Job probes.
pub const LABEL_TARGET_UID: &str = "triliovault.trilio.io/target-uid";

/// Proves an NFS share writable from where backups run: a Job in the install namespace with
/// the Target's claim mounted runs `tvk-datamover probe --target /mnt/target` (create-only
/// write, read-back, list, delete). `None` while the Job runs; a finished Job is deleted, so
/// the next re-validation probes anew (one Job per Target generation at a time).
async fn nfs_probe(target: &Target, ctx: &Context) -> Result<Option<ProbeResult>> {
    let job_ns = ctx.config.install_namespace.clone();
    let access = match job_access(target, &job_ns) {
        Ok(a) => a,
        Err(e) => {
            return Ok(Some(Err(ProbeFailure {
                reason: "NotReachableFromJobs",
                message: e.to_string(),
            })));
        }
    };
    let uid = target.uid().ok_or(Error::Incomplete {
        kind: "Target",
        field: "uid",
    })?;
    let generation = target.metadata.generation.unwrap_or(0).to_string();
    let name = object_name("TargetProbe", &uid, &generation);
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &job_ns);
    let existing = api
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("read Job {job_ns}/{name}"), e))?;
    let result = match job_state(existing.as_ref()) {
        JobState::Missing => {
            let request = JobRequest {
                name: name.clone(),
                namespace: &job_ns,
                backup_label: String::new(),
                backup_uid: &uid,
                backup_ref: String::new(),
                owner: (target.namespace().as_deref() == Some(job_ns.as_str()))
                    .then(|| target.controller_owner_ref(&()))
                    .flatten(),
                phase: "metadata",
                image: ctx.config.images.datamover.clone(),
                service_account: Some(ctx.config.service_accounts.datamover.clone()),
                args: vec!["probe".into()],
                access,
                resources: ctx.config.job_resources.metadata.clone(),
            };
            let mut job = build_job(&request, &ctx.config)?;
            // A validation Job belongs to its Target, not to a backup.
            let labels = job.metadata.labels.get_or_insert_with(Default::default);
            labels.remove(LABEL_BACKUP);
            labels.remove(LABEL_BACKUP_UID);
            labels.insert(LABEL_TARGET_UID.into(), uid.clone());
            if let Some(annotations) = job.metadata.annotations.as_mut() {
                annotations.remove(crate::jobs::ANNOTATION_BACKUP_REF);
            }
            match api.create(&PostParams::default(), &job).await {
                Ok(_) => {}
                Err(e) if is_conflict(&e) => {}
                Err(e) => return Err(Error::kube(format!("create Job {job_ns}/{name}"), e)),
            }
            return Ok(None);
        }
        JobState::Running => return Ok(None),
        JobState::Succeeded => Ok(()),
        JobState::Failed(job_message) => {
            let pods = crate::jobs::pod_outcome(&ctx.client, &job_ns, &name).await?;
            let message = pods.tool_error.unwrap_or(job_message);
            Err(nfs_probe_failure(&job_ns, &name, pods.tool_kind, &message))
        }
    };
    match api.delete(&name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(Error::kube(format!("delete Job {job_ns}/{name}"), e)),
    }
    Ok(Some(result))
}

/// The condition of a failed NFS validation Job (pure): the reason by the datamover's error
/// kind (`PermissionDenied`, `NoSpace`, …) when its result line names one the share can
/// cause, else `ProbeFailed`; the message is the tool's own error plus what to check.
pub fn nfs_probe_failure(
    job_ns: &str,
    job: &str,
    kind: Option<ErrorKind>,
    message: &str,
) -> ProbeFailure {
    let (reason, advice) = match kind {
        Some(ErrorKind::Permission) => (
            "PermissionDenied",
            "nfsOptions and the export must allow writing as the Job's non-root user",
        ),
        Some(ErrorKind::NoSpace) => ("NoSpace", "the share is full; free space or grow it"),
        _ => (
            "ProbeFailed",
            "check that nfsExport exists and is exported to the cluster's nodes, that nfsOptions allow writing as the Job's non-root user, and that the share is not full",
        ),
    };
    ProbeFailure {
        reason,
        message: format!(
            "the validation Job {job_ns}/{job} (tvk-datamover probe) failed: {message}; {advice}"
        ),
    }
}

/// With `objectLockingEnabled: true` an S3 Target is Available only after the probe verified the
/// bucket's Object Lock configuration (GetObjectLockConfiguration, [`run_s3_probe`]); the
/// condition says so.
fn object_lock_note(target: &Target) -> &'static str {
    let expected = target
        .spec
        .object_store_credentials
        .as_ref()
        .and_then(|s| s.object_locking_enabled)
        == Some(true);
    if expected {
        "; the bucket's Object Lock configuration is enabled (verified with GetObjectLockConfiguration)"
    } else {
        ""
    }
}

/// Requeue policy on errors: user errors wait (the spec must change), others back off.
pub fn error_policy(_target: Arc<Target>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "target reconcile failed");
    if error.is_user_error() {
        Action::requeue(Duration::from_secs(300))
    } else {
        Action::requeue(Duration::from_secs(15))
    }
}

/// Whether the Target may be used by plans and backups.
pub fn is_available(target: &Target) -> bool {
    target.status.as_ref().and_then(|s| s.status) == Some(TargetState::Available)
}

/// Current reason of the Validation condition (for messages of plans and backups).
pub fn unavailable_reason(target: &Target) -> String {
    target
        .status
        .as_ref()
        .and_then(|s: &TargetStatus| s.condition.as_ref())
        .and_then(|c| c.iter().find(|c| c.phase == Some(TargetPhase::Validation)))
        .and_then(|c| c.reason.clone())
        .unwrap_or_else(|| "not validated yet".into())
}
