//! The serving certificate: loaded from PEM files and swapped in place when they change.
//!
//! The rustls configuration is built once around a [`ServingCertificate`] resolver; rotation only
//! replaces the certified key behind it, so established connections keep going and new
//! handshakes get the new certificate without a restart. [`CertificateWatcher`] re-reads the
//! files every few seconds and compares *contents*, not modification times: Kubernetes updates a
//! mounted Secret by swapping a symlink, which leaves the files' own mtimes meaningless. A new
//! pair that does not parse, or whose key does not match the certificate (cert-manager writes the
//! two files one after the other), is logged and the previous pair stays in service.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use rustls::{
    crypto::{CryptoProvider, ring},
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tracing::{error, info, warn};

use crate::{error::Error, metrics::WebhookMetrics};

/// The certificate the admission listener presents, replaceable while serving.
#[derive(Debug, Default)]
pub struct ServingCertificate {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl ServingCertificate {
    /// A resolver with no certificate yet: handshakes fail until [`Self::replace`] is called.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a certificate has been loaded (the readiness condition).
    pub fn is_loaded(&self) -> bool {
        self.current().is_some()
    }

    /// The certificate currently served.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            // Only whole values are ever stored, so a poisoned lock still holds a valid one.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Serves `key` from the next handshake on.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        match self.current.write() {
            Ok(mut guard) => *guard = Some(key),
            Err(poisoned) => *poisoned.into_inner() = Some(key),
        }
    }
}

impl ResolvesServerCert for ServingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// Parses a PEM certificate chain and private key and checks that they belong together.
pub fn load_certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, Error> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| Error::Certificate(format!("failed to parse the certificate PEM: {err}")))?;
    if chain.is_empty() {
        return Err(Error::Certificate(
            "the certificate file holds no CERTIFICATE block".to_owned(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| {
        Error::Certificate(format!(
            "failed to parse the private key PEM (PKCS#8, PKCS#1 or SEC1 expected): {err}"
        ))
    })?;
    CertifiedKey::from_der(chain, key, &crypto_provider()).map_err(|err| {
        Error::Certificate(format!(
            "the private key does not fit the certificate or is unsupported: {err}"
        ))
    })
}

/// The rustls server configuration presenting whatever `certificate` currently holds.
pub fn server_config(certificate: Arc<ServingCertificate>) -> Result<rustls::ServerConfig, Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| Error::Certificate(format!("failed to configure TLS versions: {err}")))?
        .with_no_client_auth()
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // No session resumption: a resumed session skips the Certificate message, so after a
    // rotation a client could go on trusting the replaced certificate. The API server keeps its
    // connections open, so full handshakes cost next to nothing here.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(config)
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub struct CertificateFiles {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// Keeps a [`ServingCertificate`] in step with its files.
#[derive(Debug)]
pub struct CertificateWatcher {
    files: CertificateFiles,
    certificate: Arc<ServingCertificate>,
    metrics: Arc<WebhookMetrics>,
    /// The file contents last tried, loaded or not: a bad pair is reported once, not every poll.
    last_attempt: Option<(Vec<u8>, Vec<u8>)>,
    /// The last read failure reported, so a missing file is logged once.
    last_read_error: Option<String>,
}

/// What one poll did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollOutcome {
    /// The files are what was last tried.
    Unchanged,
    /// A new pair is now served.
    Loaded,
    /// A new pair was rejected; the previous one (if any) is still served.
    Rejected(String),
    /// The files could not be read.
    Unreadable(String),
}

impl CertificateWatcher {
    /// A watcher that has loaded nothing yet.
    pub fn new(
        files: CertificateFiles,
        certificate: Arc<ServingCertificate>,
        metrics: Arc<WebhookMetrics>,
    ) -> Self {
        Self {
            files,
            certificate,
            metrics,
            last_attempt: None,
            last_read_error: None,
        }
    }

    /// Reads both files and serves them if they changed and form a valid pair.
    pub async fn poll(&mut self) -> PollOutcome {
        let (cert_pem, key_pem) = match read_pair(&self.files).await {
            Ok(pair) => pair,
            Err(message) => {
                if self.last_read_error.as_deref() != Some(message.as_str()) {
                    if self.certificate.is_loaded() {
                        warn!(error = %message, "failed to re-read the serving certificate; keeping the loaded one");
                    } else {
                        warn!(error = %message, "no serving certificate yet; the admission listener refuses handshakes until it is readable");
                    }
                    self.last_read_error = Some(message.clone());
                }
                return PollOutcome::Unreadable(message);
            }
        };
        self.last_read_error = None;
        if self
            .last_attempt
            .as_ref()
            .is_some_and(|(cert, key)| *cert == cert_pem && *key == key_pem)
        {
            return PollOutcome::Unchanged;
        }
        let outcome = match load_certified_key(&cert_pem, &key_pem) {
            Ok(key) => {
                let first = !self.certificate.is_loaded();
                self.certificate.replace(Arc::new(key));
                self.metrics.observe_certificate_reload(true);
                info!(
                    cert_file = %self.files.cert_file.display(),
                    "{}",
                    if first { "serving certificate loaded" } else { "serving certificate reloaded" }
                );
                PollOutcome::Loaded
            }
            Err(err) => {
                self.metrics.observe_certificate_reload(false);
                let message = err.to_string();
                if self.certificate.is_loaded() {
                    error!(error = %message, cert_file = %self.files.cert_file.display(), "rejected the new serving certificate; keeping the previous one");
                } else {
                    error!(error = %message, cert_file = %self.files.cert_file.display(), "rejected the serving certificate; not ready until a valid pair is written");
                }
                PollOutcome::Rejected(message)
            }
        };
        self.last_attempt = Some((cert_pem, key_pem));
        outcome
    }

    /// Polls every `interval` until the task is dropped or aborted.
    pub async fn run(mut self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.poll().await;
        }
    }
}

/// Certificate files are a few KiB; anything much larger is not a certificate.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

async fn read_pair(files: &CertificateFiles) -> Result<(Vec<u8>, Vec<u8>), String> {
    let cert = read_pem(&files.cert_file, "certificate").await?;
    let key = read_pem(&files.key_file, "private key").await?;
    Ok((cert, key))
}

async fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let describe = |err: std::io::Error| {
        format!(
            "failed to read the {what} file {}: {err} (set --cert-file/--key-file or mount the \
             serving Secret there)",
            path.display()
        )
    };
    let metadata = tokio::fs::metadata(path).await.map_err(describe)?;
    if metadata.len() > MAX_PEM_BYTES {
        return Err(format!(
            "the {what} file {} is {} bytes, more than the {MAX_PEM_BYTES} a PEM file may have",
            path.display(),
            metadata.len()
        ));
    }
    tokio::fs::read(path).await.map_err(describe)
}
