//! The manager's own admission webhook for TrilioVaultManager, served inside `tvk-manager run`.
//!
//! It is the application webhook's server (`tvk_webhook::AdmissionServer`: HTTPS with rustls,
//! AdmissionReview v1, certificate hot reload, graceful shutdown) with one kind: the pure
//! validation and defaulting of [`crate::admission`] (the same code `kubectl-tvk validate` runs),
//! plus the cluster-state rules, which list TVMs through the manager's client
//! ([`TvmClusterRules`]): at most one TVM per namespace, one `Cluster`-scoped TVM per cluster, a
//! unique `tvkInstanceName`. `applicationScope` immutability is a pure UPDATE rule.
//!
//! Certificates: OLM mounts its webhookdefinition certificate as `tls.crt`/`tls.key` in
//! [`DEFAULT_CERT_DIR`]; plain installs pass `--webhook-self-signed`, and
//! [`SelfSignedCertificates`] then keeps a CA and serving certificate in the Secret
//! [`CERT_SECRET`] (shared by every replica, rotated before expiry), writes them to the
//! certificate directory (the server reloads them) and injects the CA bundle into
//! [`VALIDATING_CONFIGURATION`] and [`MUTATING_CONFIGURATION`].

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use jiff::Timestamp;
use k8s_openapi::{
    ByteString,
    api::{
        admissionregistration::v1::{
            MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
        },
        core::v1::Secret,
    },
};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use tvk_api::admission::{AdmissionRegistry, FieldError, GroupVersionKind, KindAdmission, Request};
use tvk_webhook::{
    AdmissionConfig, AdmissionServer, CertificateFiles, ClusterDenial, ClusterRuleSet,
    ClusterRules, cluster_rules::CheckFuture, metrics::WebhookMetrics,
};

use crate::{
    admission::{TvmAdmission, admission_conflicts},
    render::{LABEL_MANAGED_BY, MANAGER_NAME},
    tvm::TrilioVaultManager,
    webhook_cert::{self, CertError, ServingCertificate},
};

/// The Service in front of the manager's webhook (port 443 → 9443), in the manager's namespace.
pub const SERVICE: &str = "tvk-manager-webhook";
/// The Secret holding the self-signed CA and serving certificate.
pub const CERT_SECRET: &str = "tvk-manager-webhook-cert";
/// The ValidatingWebhookConfiguration whose `caBundle` the manager injects.
pub const VALIDATING_CONFIGURATION: &str = "tvk-manager-validating";
/// The MutatingWebhookConfiguration whose `caBundle` the manager injects.
pub const MUTATING_CONFIGURATION: &str = "tvk-manager-mutating";
/// Where OLM mounts a webhookdefinition's certificate (and where the self-signed one is written).
pub const DEFAULT_CERT_DIR: &str = "/tmp/k8s-webhook-server/serving-certs";
/// The default admission listener.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9443";

/// The validating path of TrilioVaultManager (`/validate-triliovault-trilio-io-v1-triliovaultmanager`).
pub fn validate_path() -> String {
    tvk_webhook::validate_path(&TvmAdmission.gvk())
}

/// The mutating path of TrilioVaultManager (`/mutate-triliovault-trilio-io-v1-triliovaultmanager`).
pub fn mutate_path() -> String {
    tvk_webhook::mutate_path(&TvmAdmission.gvk())
}

/// Why the webhook could not start or keep its certificate.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The admission server failed to start.
    #[error(transparent)]
    Server(#[from] tvk_webhook::Error),
    /// An apiserver call failed.
    #[error("failed to {action}: {source}")]
    Kube {
        /// What was attempted.
        action: String,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
    /// Certificate generation failed.
    #[error(transparent)]
    Certificate(#[from] CertError),
    /// Every write of the certificate Secret lost a race with another writer.
    #[error(
        "failed to write the Secret {CERT_SECRET}: it changed under each of three attempts; retrying later"
    )]
    Contended,
    /// The certificate directory could not be written.
    #[error(
        "failed to write {path}: {source}; --webhook-cert-dir (TVK_WEBHOOK_CERT_DIR) must be a writable directory with --webhook-self-signed"
    )]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The cluster-state rules of TrilioVaultManager, judged against every TVM the client lists.
pub struct TvmClusterRules {
    client: Client,
}

impl TvmClusterRules {
    /// Rules that list TVMs through `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl ClusterRules for TvmClusterRules {
    fn gvk(&self) -> GroupVersionKind {
        TvmAdmission.gvk()
    }

    fn check<'a>(&'a self, request: Request<'a>) -> CheckFuture<'a> {
        Box::pin(async move {
            let candidate: TrilioVaultManager = serde_json::from_value(request.object.clone())
                .map_err(|error| {
                    ClusterDenial::Conflict(vec![FieldError::new(
                        "spec",
                        format!("is not a TrilioVaultManager spec: {error}"),
                    )])
                })?;
            let existing = Api::<TrilioVaultManager>::all(self.client.clone())
                .list(&ListParams::default())
                .await
                .map_err(|error| {
                    ClusterDenial::Unavailable(format!(
                        "failed to list TrilioVaultManagers: {error}"
                    ))
                })?;
            let conflicts = admission_conflicts(&candidate, &existing.items);
            if conflicts.is_empty() {
                Ok(())
            } else {
                Err(ClusterDenial::Conflict(conflicts))
            }
        })
    }
}

/// The kinds the manager's webhook serves: TrilioVaultManager only.
pub fn registry() -> AdmissionRegistry {
    AdmissionRegistry::new().with(crate::admission::tvm_admission())
}

/// The cluster-state rules of the manager's webhook.
pub fn rules(client: Client) -> ClusterRuleSet {
    ClusterRuleSet::new().with(Arc::new(TvmClusterRules::new(client)))
}

/// Where and how the manager's webhook serves.
#[derive(Debug, Clone)]
pub struct AdmissionSettings {
    /// The HTTPS listener.
    pub listen: SocketAddr,
    /// The directory holding `tls.crt` and `tls.key`.
    pub cert_dir: PathBuf,
    /// How often the certificate files are re-read.
    pub reload_interval: Duration,
    /// How long in-flight requests may take after shutdown begins.
    pub shutdown_timeout: Duration,
}

impl AdmissionSettings {
    /// Settings with the default reload interval (5 s) and shutdown timeout (10 s).
    pub fn new(listen: SocketAddr, cert_dir: PathBuf) -> Self {
        Self {
            listen,
            cert_dir,
            reload_interval: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
        }
    }

    fn files(&self) -> CertificateFiles {
        CertificateFiles {
            cert_file: self.cert_dir.join("tls.crt"),
            key_file: self.cert_dir.join("tls.key"),
        }
    }
}

/// Starts the manager's admission server: TrilioVaultManager validation (pure + cluster state
/// through `client`) and defaulting, over HTTPS with the certificate in `settings.cert_dir`.
pub async fn start(
    settings: &AdmissionSettings,
    client: Client,
    metrics: Arc<WebhookMetrics>,
) -> Result<AdmissionServer, WebhookError> {
    let config = AdmissionConfig {
        listen: settings.listen,
        certificate: settings.files(),
        reload_interval: settings.reload_interval,
        max_body_bytes: tvk_webhook::DEFAULT_MAX_BODY_BYTES,
        shutdown_timeout: settings.shutdown_timeout,
    };
    let server =
        AdmissionServer::start(config, Arc::new(registry()), rules(client), metrics).await?;
    tracing::info!(addr = %server.addr(), validate = %validate_path(), mutate = %mutate_path(), "TrilioVaultManager webhook serving");
    Ok(server)
}

/// The self-signed certificate of the manager's webhook (plain installs, no OLM).
#[derive(Clone)]
pub struct SelfSignedCertificates {
    client: Client,
    namespace: String,
    cert_dir: PathBuf,
    /// How often the Secret, the files and the CA bundles are checked (rotation, a replica's
    /// rotation, a configuration re-applied without its CA bundle).
    pub check_interval: Duration,
}

impl std::fmt::Debug for SelfSignedCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfSignedCertificates")
            .field("namespace", &self.namespace)
            .field("cert_dir", &self.cert_dir)
            .finish()
    }
}

/// What one [`SelfSignedCertificates::sync`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateSync {
    /// A new certificate was generated into the Secret.
    pub generated: bool,
    /// The files in the certificate directory were (re)written.
    pub files_written: bool,
    /// The webhook configurations whose CA bundle was set.
    pub injected: Vec<&'static str>,
    /// The webhook configurations that do not exist (yet).
    pub missing: Vec<&'static str>,
}

fn kube_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> WebhookError {
    let action = action.into();
    move |source| WebhookError::Kube {
        action,
        source: Box::new(source),
    }
}

impl SelfSignedCertificates {
    /// Certificates for Service [`SERVICE`] in `namespace` (the manager's), written to `cert_dir`.
    pub fn new(client: Client, namespace: &str, cert_dir: &Path) -> Self {
        Self {
            client,
            namespace: namespace.to_string(),
            cert_dir: cert_dir.to_path_buf(),
            check_interval: Duration::from_secs(60),
        }
    }

    /// The certificate in the Secret, generated (create) or rotated (replace at the read
    /// resourceVersion) when needed. When another replica wins the race (409), its certificate
    /// is read back and used, so all replicas serve the same one.
    pub async fn ensure_secret(
        &self,
        now: Timestamp,
    ) -> Result<(ServingCertificate, bool), WebhookError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        for _ in 0..3 {
            let live = api
                .get_opt(CERT_SECRET)
                .await
                .map_err(kube_error(format!("read the Secret {CERT_SECRET}")))?;
            if !webhook_cert::needs_rotation(live.as_ref(), now)
                && let Some(certificate) = live.as_ref().and_then(webhook_cert::from_secret)
            {
                return Ok((certificate, false));
            }
            let certificate = webhook_cert::generate(SERVICE, &self.namespace, now)?;
            let labels = [(LABEL_MANAGED_BY.to_string(), MANAGER_NAME.to_string())].into();
            let mut secret =
                webhook_cert::secret(CERT_SECRET, &self.namespace, &certificate, labels);
            let result = match live {
                None => api.create(&PostParams::default(), &secret).await,
                Some(live) => {
                    secret.metadata.resource_version = live.metadata.resource_version;
                    api.replace(CERT_SECRET, &PostParams::default(), &secret)
                        .await
                }
            };
            match result {
                Ok(_) => {
                    tracing::info!(secret = CERT_SECRET, not_after = %certificate.not_after, "generated the TrilioVaultManager webhook certificate");
                    return Ok((certificate, true));
                }
                // Another replica wrote it first: read theirs.
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(error) => {
                    return Err(kube_error(format!("write the Secret {CERT_SECRET}"))(error));
                }
            }
        }
        Err(WebhookError::Contended)
    }

    /// Writes `tls.key` then `tls.crt` (each atomically) when they differ from `certificate`.
    pub async fn write_files(
        &self,
        certificate: &ServingCertificate,
    ) -> Result<bool, WebhookError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WebhookError::Io { path, source }
        };
        let cert_path = self.cert_dir.join("tls.crt");
        let key_path = self.cert_dir.join("tls.key");
        let same = tokio::fs::read(&cert_path)
            .await
            .is_ok_and(|c| c == certificate.cert_pem.as_bytes())
            && tokio::fs::read(&key_path)
                .await
                .is_ok_and(|k| k == certificate.key_pem.as_bytes());
        if same {
            return Ok(false);
        }
        tokio::fs::create_dir_all(&self.cert_dir)
            .await
            .map_err(io(&self.cert_dir))?;
        for (path, contents) in [
            (&key_path, &certificate.key_pem),
            (&cert_path, &certificate.cert_pem),
        ] {
            let tmp = path.with_extension("tmp");
            tokio::fs::write(&tmp, contents).await.map_err(io(&tmp))?;
            tokio::fs::rename(&tmp, path).await.map_err(io(path))?;
        }
        Ok(true)
    }

    /// Sets `caBundle` of every webhook in the two configurations to `ca_pem`; returns which
    /// configurations changed and which do not exist yet.
    pub async fn inject_ca_bundle(
        &self,
        ca_pem: &str,
    ) -> Result<(Vec<&'static str>, Vec<&'static str>), WebhookError> {
        let bundle = ByteString(ca_pem.as_bytes().to_vec());
        let set = |config: &mut WebhookClientConfig| {
            let changed = config.ca_bundle.as_ref() != Some(&bundle);
            config.ca_bundle = Some(bundle.clone());
            changed
        };
        let mut injected = Vec::new();
        let mut missing = Vec::new();
        let validating: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        match validating
            .get_opt(VALIDATING_CONFIGURATION)
            .await
            .map_err(kube_error(format!("read {VALIDATING_CONFIGURATION}")))?
        {
            None => missing.push(VALIDATING_CONFIGURATION),
            Some(mut config) => {
                let mut changed = false;
                for webhook in config.webhooks.iter_mut().flatten() {
                    changed |= set(&mut webhook.client_config);
                }
                if changed {
                    validating
                        .replace(VALIDATING_CONFIGURATION, &PostParams::default(), &config)
                        .await
                        .map_err(kube_error(format!(
                            "inject the CA bundle into {VALIDATING_CONFIGURATION}"
                        )))?;
                    injected.push(VALIDATING_CONFIGURATION);
                }
            }
        }
        let mutating: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        match mutating
            .get_opt(MUTATING_CONFIGURATION)
            .await
            .map_err(kube_error(format!("read {MUTATING_CONFIGURATION}")))?
        {
            None => missing.push(MUTATING_CONFIGURATION),
            Some(mut config) => {
                let mut changed = false;
                for webhook in config.webhooks.iter_mut().flatten() {
                    changed |= set(&mut webhook.client_config);
                }
                if changed {
                    mutating
                        .replace(MUTATING_CONFIGURATION, &PostParams::default(), &config)
                        .await
                        .map_err(kube_error(format!(
                            "inject the CA bundle into {MUTATING_CONFIGURATION}"
                        )))?;
                    injected.push(MUTATING_CONFIGURATION);
                }
            }
        }
        Ok((injected, missing))
    }

    /// One pass: the Secret (generate or rotate), the files, the CA bundles.
    pub async fn sync(&self, now: Timestamp) -> Result<CertificateSync, WebhookError> {
        let (certificate, generated) = self.ensure_secret(now).await?;
        let files_written = self.write_files(&certificate).await?;
        let (injected, missing) = self.inject_ca_bundle(&certificate.ca_pem).await?;
        Ok(CertificateSync {
            generated,
            files_written,
            injected,
            missing,
        })
    }

    /// [`Self::sync`] every [`Self::check_interval`], logging what changed and what failed, until
    /// the task is dropped.
    pub async fn run(self) {
        let mut ticker = tokio::time::interval(self.check_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported_missing = Vec::new();
        loop {
            ticker.tick().await;
            match self.sync(Timestamp::now()).await {
                Ok(sync) => {
                    if !sync.injected.is_empty() {
                        tracing::info!(configurations = ?sync.injected, "injected the webhook CA bundle");
                    }
                    if sync.missing != reported_missing {
                        if !sync.missing.is_empty() {
                            tracing::warn!(configurations = ?sync.missing, "webhook configurations not found; the CA bundle is injected once they exist");
                        }
                        reported_missing = sync.missing;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "failed to keep the TrilioVaultManager webhook certificate")
                }
            }
        }
    }
}
