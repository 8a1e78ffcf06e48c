//! The registry side of the client: the OCI distribution spec v2 over `reqwest` (rustls).
//!
//! One [`RegistryClient`] per registry host decides the scheme once (`https`, falling back to
//! plain `http` only for loopback hosts or when TLS verification is off, as skopeo does),
//! learns the auth challenge from `GET /v2/`, keeps bearer tokens per scope, and retries
//! transient failures under a [`RetryPolicy`]. Bodies are streamed; nothing here holds a blob
//! in memory.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::StreamExt;
use reqwest::{
    Method, RequestBuilder, Response, StatusCode,
    header::{
        ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER,
        WWW_AUTHENTICATE,
    },
};
use url::Url;

use crate::{
    auth::{Challenge, CredentialStore, Secret, TokenResponse},
    error::OciError,
    manifest::{Descriptor, MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, Manifest},
    reference::{DOCKER_HUB, Digest},
    retry::{RetryPolicy, parse_retry_after},
};

/// Connection settings for one side (source or destination) of a copy.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Verify TLS certificates (off also allows plain HTTP, as `--tls-verify=false` does).
    pub tls_verify: bool,
    /// Extra CA certificates (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    /// Where credentials come from.
    pub credentials: Arc<CredentialStore>,
    /// Retry budget for transient failures.
    pub retry: RetryPolicy,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            tls_verify: true,
            ca_file: None,
            credentials: Arc::new(CredentialStore::anonymous()),
            retry: RetryPolicy::default(),
        }
    }
}

/// The registry clients of one side, one per host, sharing a connection pool.
#[derive(Debug)]
pub struct RegistryPool {
    config: RegistryConfig,
    http: reqwest::Client,
    clients: Mutex<HashMap<String, Arc<RegistryClient>>>,
}

impl RegistryPool {
    /// Builds the HTTP client (TLS settings, timeouts) for one side.
    pub fn new(config: RegistryConfig) -> Result<Self, OciError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("tvk-oci/", env!("CARGO_PKG_VERSION")))
            // No client-wide read timeout: reqwest applies it to the whole wait for response
            // headers, which for an upload includes sending the body. Per-request bounds below.
            .connect_timeout(Duration::from_secs(15))
            .danger_accept_invalid_certs(!config.tls_verify);
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| OciError::io("read CA file", path, e))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                OciError::Tls(format!(
                    "{} is not a PEM certificate bundle: {e}",
                    path.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(OciError::Tls(format!(
                    "{} holds no PEM certificate",
                    path.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| OciError::Tls(format!("failed to build the HTTP client: {e}")))?;
        Ok(Self {
            config,
            http,
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// The client for `registry` (`host[:port]`), created on first use.
    pub fn client(&self, registry: &str) -> Arc<RegistryClient> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(registry.to_owned())
            .or_insert_with(|| {
                Arc::new(RegistryClient::new(
                    registry,
                    self.http.clone(),
                    self.config.clone(),
                ))
            })
            .clone()
    }
}

/// The repositories and actions a request needs (the bearer-token scope).
#[derive(Debug, Clone)]
pub(crate) struct Access(Vec<String>);

impl Access {
    pub(crate) fn pull(repository: &str) -> Self {
        Self(vec![format!("repository:{repository}:pull")])
    }
    pub(crate) fn push(repository: &str) -> Self {
        Self(vec![format!("repository:{repository}:pull,push")])
    }
    pub(crate) fn mount(repository: &str, from: &str) -> Self {
        Self(vec![
            format!("repository:{repository}:pull,push"),
            format!("repository:{from}:pull"),
        ])
    }
    fn key(&self) -> String {
        self.0.join(" ")
    }
    fn first_repository(&self) -> &str {
        self.0
            .first()
            .and_then(|s| s.split(':').nth(1))
            .unwrap_or_default()
    }
}

/// Whether a blob mount was done by the registry or fell back to a normal upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountOutcome {
    /// The registry linked the blob from the other repository: nothing to transfer.
    Mounted,
    /// The registry does not offer the mount (or lacks the blob there).
    NotMounted,
}

/// A client for one registry host.
#[derive(Debug)]
pub struct RegistryClient {
    registry: String,
    api_host: String,
    http: reqwest::Client,
    config: RegistryConfig,
    base: tokio::sync::OnceCell<Url>,
    challenge: Mutex<Option<Challenge>>,
    tokens: Mutex<HashMap<String, (Secret, Instant)>>,
    token_fetch: tokio::sync::Mutex<()>,
}

type BodyResult = Result<Response, OciError>;

/// Bound on a request whose body is small (manifests, HEADs, upload sessions, tokens).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Longest a streamed blob body may go without delivering a byte before it counts as stalled.
pub const BLOB_STALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Bound on one blob upload: generous (5 min plus 256 KiB/s), since it only has to catch a
/// destination that stopped reading; a stalled *source* is caught by [`BLOB_STALL_TIMEOUT`].
fn upload_timeout(size: u64) -> Duration {
    Duration::from_secs(300 + size / (256 * 1024))
}

impl RegistryClient {
    fn new(registry: &str, http: reqwest::Client, config: RegistryConfig) -> Self {
        let api_host = if registry == DOCKER_HUB {
            "registry-1.docker.io".to_owned()
        } else {
            registry.to_owned()
        };
        Self {
            registry: registry.to_owned(),
            api_host,
            http,
            config,
            base: tokio::sync::OnceCell::new(),
            challenge: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
            token_fetch: tokio::sync::Mutex::new(()),
        }
    }

    /// The registry host as references name it.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    fn allows_plain_http(&self) -> bool {
        let host = self
            .api_host
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(self.api_host.as_str(), |(host, _)| host);
        !self.config.tls_verify || matches!(host, "localhost" | "127.0.0.1" | "[::1]")
    }

    /// `GET /v2/` once: picks the scheme and records the auth challenge.
    async fn base(&self) -> Result<&Url, OciError> {
        self.base
            .get_or_try_init(|| async {
                let https = self.ping("https").await;
                let (url, response) = match https {
                    Ok(ok) => ok,
                    Err(https_error) if self.allows_plain_http() => {
                        tracing::debug!(registry = %self.registry, error = %https_error, "https failed, trying plain http");
                        // When plain http fails too, the https error (a certificate problem,
                        // say) is the one that tells the user what to fix.
                        match self.ping("http").await {
                            // Only a registry's own answer counts: an HTTPS server's "400 plain
                            // HTTP request sent to HTTPS port" must not pick plain http.
                            Ok((url, r)) if r.status().is_success() || r.status() == StatusCode::UNAUTHORIZED => (url, r),
                            _ => return Err(https_error),
                        }
                    }
                    Err(e) => return Err(e),
                };
                if response.status() == StatusCode::UNAUTHORIZED {
                    self.record_challenge(&response);
                }
                Ok(url)
            })
            .await
    }

    async fn ping(&self, scheme: &str) -> Result<(Url, Response), OciError> {
        let url = Url::parse(&format!("{scheme}://{}/", self.api_host)).map_err(|e| {
            OciError::InvalidReference {
                reference: self.registry.clone(),
                reason: e.to_string(),
            }
        })?;
        let v2 = url.join("v2/").map_err(|e| OciError::InvalidReference {
            reference: self.registry.clone(),
            reason: e.to_string(),
        })?;
        let mut attempt = 0;
        loop {
            match self
                .http
                .get(v2.clone())
                .timeout(REQUEST_TIMEOUT)
                .send()
                .await
            {
                Ok(r)
                    if (r.status().is_server_error()
                        || r.status() == StatusCode::TOO_MANY_REQUESTS)
                        && attempt + 1 < self.config.retry.max_attempts =>
                {
                    tokio::time::sleep(
                        self.config
                            .retry
                            .delay(attempt, parse_retry_after(r.headers().get(RETRY_AFTER))),
                    )
                    .await;
                }
                Ok(r) => return Ok((url, r)),
                Err(e) if e.is_timeout() && attempt + 1 < self.config.retry.max_attempts => {
                    tokio::time::sleep(self.config.retry.delay(attempt, None)).await;
                }
                Err(e) => {
                    return Err(OciError::Transport {
                        registry: self.registry.clone(),
                        what: format!("{scheme}://{}/v2/", self.api_host),
                        source: e.without_url(),
                    });
                }
            }
            attempt += 1;
        }
    }

    fn record_challenge(&self, response: &Response) {
        let challenge = response
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(Challenge::parse)
            // Prefer Bearer when a registry offers both.
            .max_by_key(|c| matches!(c, Challenge::Bearer { .. }));
        if let Some(challenge) = challenge {
            *self.challenge.lock().unwrap_or_else(|p| p.into_inner()) = Some(challenge);
        }
    }

    /// The Authorization header for `access`, fetching a bearer token when needed.
    async fn authorization(&self, access: &Access) -> Result<Option<String>, OciError> {
        let challenge = self
            .challenge
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let credentials = self
            .config
            .credentials
            .lookup(&self.registry, access.first_repository());
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(credentials.map(|c| c.basic_header())),
            Some(Challenge::Bearer { realm, service }) => {
                let key = access.key();
                let cached = || {
                    self.tokens
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&key)
                        .filter(|(_, expiry)| *expiry > Instant::now())
                        .map(|(token, _)| format!("Bearer {}", token.expose()))
                };
                if let Some(header) = cached() {
                    return Ok(Some(header));
                }
                // One token request at a time per registry: parallel first requests for the
                // same scope wait for it instead of each asking the auth server.
                let _fetching = self.token_fetch.lock().await;
                if let Some(header) = cached() {
                    return Ok(Some(header));
                }
                let token = self
                    .fetch_token(
                        &realm,
                        service.as_deref(),
                        access,
                        credentials.map(|c| c.basic_header()),
                    )
                    .await?;
                let header = format!("Bearer {}", token.0.expose());
                self.tokens
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, token);
                Ok(Some(header))
            }
        }
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        access: &Access,
        basic: Option<String>,
    ) -> Result<(Secret, Instant), OciError> {
        let token_error = |reason: String| OciError::Token {
            registry: self.registry.clone(),
            reason,
        };
        let mut url =
            Url::parse(realm).map_err(|e| token_error(format!("the realm is not a URL: {e}")))?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            for scope in &access.0 {
                query.append_pair("scope", scope);
            }
        }
        let mut request = self.http.get(url);
        if let Some(basic) = basic {
            request = request.header(AUTHORIZATION, basic);
        }
        let response = request.timeout(REQUEST_TIMEOUT).send().await.map_err(|e| {
            token_error(format!(
                "the token server is unreachable: {}",
                e.without_url()
            ))
        })?;
        match response.status() {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(OciError::Unauthorized {
                    registry: self.registry.clone(),
                    what: format!("token for {}", access.key()),
                });
            }
            s => {
                return Err(token_error(format!(
                    "the token server answered HTTP {}",
                    s.as_u16()
                )));
            }
        }
        let body: TokenResponse = response.json().await.map_err(|e| {
            token_error(format!("the token answer is not JSON: {}", e.without_url()))
        })?;
        let token = body
            .token
            .or(body.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| token_error("the token answer holds no token".into()))?;
        // Renew a little early; tokens without a lifetime are good for 60 s per the spec.
        let lifetime = Duration::from_secs(body.expires_in.unwrap_or(60).max(20) - 10);
        Ok((Secret::new(token), Instant::now() + lifetime))
    }

    /// Sends a request built by `build` with auth, re-authenticating once on 401 and retrying
    /// transient failures up to `max_attempts` (use 1 for bodies that cannot be replayed).
    async fn send(
        &self,
        access: &Access,
        what: &str,
        max_attempts: u32,
        timeout: Option<Duration>,
        mut build: impl FnMut(&reqwest::Client, &Url) -> Result<RequestBuilder, OciError>,
    ) -> BodyResult {
        let base = self.base().await?.clone();
        let mut attempt = 0;
        let mut reauthenticated = false;
        loop {
            let mut request = build(&self.http, &base)?;
            if let Some(timeout) = timeout {
                request = request.timeout(timeout);
            }
            if let Some(header) = self.authorization(access).await? {
                request = request.header(AUTHORIZATION, header);
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    if status == StatusCode::UNAUTHORIZED && !reauthenticated && max_attempts > 1 {
                        reauthenticated = true;
                        self.record_challenge(&response);
                        self.tokens
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&access.key());
                        continue;
                    }
                    let transient =
                        status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                    if transient && attempt + 1 < max_attempts {
                        let delay = self.config.retry.delay(
                            attempt,
                            parse_retry_after(response.headers().get(RETRY_AFTER)),
                        );
                        tracing::debug!(registry = %self.registry, %what, status = status.as_u16(), ?delay, "retrying");
                        tokio::time::sleep(delay).await;
                        attempt += 1;
                        continue;
                    }
                    return Ok(response);
                }
                Err(e)
                    if (e.is_timeout() || e.is_connect() || e.is_request())
                        && attempt + 1 < max_attempts =>
                {
                    let delay = self.config.retry.delay(attempt, None);
                    tracing::debug!(registry = %self.registry, %what, error = %e.without_url(), ?delay, "retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => {
                    return Err(OciError::Transport {
                        registry: self.registry.clone(),
                        what: what.to_owned(),
                        source: e.without_url(),
                    });
                }
            }
        }
    }

    /// Turns an unexpected answer into an error naming `what`.
    async fn status_error(&self, response: Response, what: &str) -> OciError {
        let status = response.status();
        match status {
            StatusCode::UNAUTHORIZED => OciError::Unauthorized {
                registry: self.registry.clone(),
                what: what.to_owned(),
            },
            StatusCode::FORBIDDEN => OciError::Forbidden {
                registry: self.registry.clone(),
                what: what.to_owned(),
            },
            StatusCode::NOT_FOUND => OciError::NotFound {
                what: what.to_owned(),
            },
            _ => {
                let body = read_capped(response, 4096).await.unwrap_or_default();
                let message = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_owned))
                    .map(|m| format!(": {}", m.chars().take(200).collect::<String>()))
                    .unwrap_or_default();
                OciError::Status {
                    registry: self.registry.clone(),
                    status: status.as_u16(),
                    what: what.to_owned(),
                    detail: message,
                }
            }
        }
    }

    fn url(base: &Url, path: &str) -> Result<Url, OciError> {
        base.join(path).map_err(|e| OciError::InvalidReference {
            reference: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Whether the repository has the blob (`HEAD`).
    pub async fn has_blob(&self, repository: &str, digest: &Digest) -> Result<bool, OciError> {
        let what = format!("blob {digest} in {}/{repository}", self.registry);
        let path = format!("v2/{repository}/blobs/{digest}");
        let response = self
            .send(
                &Access::pull(repository),
                &what,
                self.config.retry.max_attempts,
                Some(REQUEST_TIMEOUT),
                |http, base| Ok(http.head(Self::url(base, &path)?)),
            )
            .await?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.status_error(response, &what).await),
        }
    }

    /// Starts a blob download; the caller streams and verifies the body.
    pub async fn get_blob(&self, repository: &str, digest: &Digest) -> Result<Response, OciError> {
        let what = format!("blob {digest} of {}/{repository}", self.registry);
        let path = format!("v2/{repository}/blobs/{digest}");
        let response = self
            .send(
                &Access::pull(repository),
                &what,
                self.config.retry.max_attempts,
                // A blob body may take long; a stalled one is caught chunk by chunk instead.
                None,
                |http, base| Ok(http.get(Self::url(base, &path)?)),
            )
            .await?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(self.status_error(response, &what).await)
        }
    }

    /// Fetches a manifest by tag or digest, enforcing the size cap and verifying it against
    /// `expected` (the digest it was asked by, when asked by digest).
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<Manifest, OciError> {
        let what = format!("{}/{repository}@{reference}", self.registry);
        let path = format!("v2/{repository}/manifests/{reference}");
        let response = self
            .send(
                &Access::pull(repository),
                &what,
                self.config.retry.max_attempts,
                Some(REQUEST_TIMEOUT),
                |http, base| {
                    Ok(http
                        .get(Self::url(base, &path)?)
                        .header(ACCEPT, MANIFEST_ACCEPT))
                },
            )
            .await?;
        if !response.status().is_success() {
            return Err(self.status_error(response, &format!("image {what}")).await);
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let expected = match expected {
            Some(d) => Some(d.clone()),
            None => Digest::parse(reference).ok(),
        };
        let bytes = read_capped(response, MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| match e {
                CappedReadError::TooLarge => OciError::ManifestTooLarge {
                    what: what.clone(),
                    limit: MAX_MANIFEST_BYTES,
                },
                CappedReadError::Transport(source) => OciError::Transport {
                    registry: self.registry.clone(),
                    what: what.clone(),
                    source,
                },
            })?;
        Manifest::parse(bytes, content_type.as_deref(), expected.as_ref(), &what)
    }

    /// The digest a tag or digest resolves to, or `None` when the registry does not have it.
    pub async fn resolve_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<Digest>, OciError> {
        Ok(self
            .head_manifest(repository, reference)
            .await?
            .map(|d| d.digest))
    }

    /// The descriptor (digest, media type, size) of a tag or digest from a `HEAD`, or `None`
    /// when the registry does not have it. Falls back to a `GET` when the registry leaves out
    /// the headers (the manifest's own hash is authoritative).
    pub async fn head_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<Descriptor>, OciError> {
        let what = format!("image {}/{repository}:{reference}", self.registry);
        let path = format!("v2/{repository}/manifests/{reference}");
        let response = self
            .send(
                &Access::pull(repository),
                &what,
                self.config.retry.max_attempts,
                Some(REQUEST_TIMEOUT),
                |http, base| {
                    Ok(http
                        .head(Self::url(base, &path)?)
                        .header(ACCEPT, MANIFEST_ACCEPT))
                },
            )
            .await?;
        match response.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(self.status_error(response, &what).await),
        }
        let headers = response.headers();
        let digest = headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok());
        let media_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
            .filter(|m| crate::manifest::is_manifest_media_type(m));
        let size = response.content_length().filter(|s| *s > 0);
        match (digest, media_type, size) {
            (Some(digest), Some(media_type), Some(size)) => Ok(Some(Descriptor {
                media_type,
                digest,
                size,
                platform: None,
                annotations: None,
                urls: None,
            })),
            _ => Ok(Some(
                self.get_manifest(repository, reference, None)
                    .await?
                    .descriptor(),
            )),
        }
    }

    /// Uploads a manifest under `reference` (its digest, or a tag).
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        manifest: &Manifest,
    ) -> Result<(), OciError> {
        let what = format!("manifest {}/{repository}@{reference}", self.registry);
        let path = format!("v2/{repository}/manifests/{reference}");
        let response = self
            .send(
                &Access::push(repository),
                &what,
                self.config.retry.max_attempts,
                Some(REQUEST_TIMEOUT),
                |http, base| {
                    Ok(http
                        .put(Self::url(base, &path)?)
                        .header(CONTENT_TYPE, manifest.media_type.as_str())
                        .body(manifest.bytes.clone()))
                },
            )
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(self.status_error(response, &what).await)
        }
    }

    /// Asks the registry to link `digest` from repository `from` into `repository`.
    pub async fn mount_blob(
        &self,
        repository: &str,
        digest: &Digest,
        from: &str,
    ) -> Result<MountOutcome, OciError> {
        let what = format!(
            "mount of blob {digest} from {from} into {}/{repository}",
            self.registry
        );
        let path = format!("v2/{repository}/blobs/uploads/");
        let response = self
            .send(
                &Access::mount(repository, from),
                &what,
                self.config.retry.max_attempts,
                Some(REQUEST_TIMEOUT),
                |http, base| {
                    let mut url = Self::url(base, &path)?;
                    url.query_pairs_mut()
                        .append_pair("mount", &digest.to_string())
                        .append_pair("from", from);
                    Ok(http.post(url).header(CONTENT_LENGTH, 0))
                },
            )
            .await?;
        match response.status() {
            StatusCode::CREATED => Ok(MountOutcome::Mounted),
            StatusCode::ACCEPTED => {
                // The registry opened an ordinary upload instead; close it, we upload separately.
                if let Ok(location) = self.location(&response) {
                    self.cancel_upload(repository, location).await;
                }
                Ok(MountOutcome::NotMounted)
            }
            _ => Err(self.status_error(response, &what).await),
        }
    }

    fn location(&self, response: &Response) -> Result<Url, OciError> {
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| OciError::Status {
                registry: self.registry.clone(),
                status: response.status().as_u16(),
                what: "blob upload".into(),
                detail: ": no Location header in the answer".into(),
            })?;
        let base = self.base.get().cloned().ok_or_else(|| OciError::Aborted {
            what: format!("blob upload to {}", self.registry),
            reason: "the registry was not contacted before the upload".into(),
        })?;
        Self::url(&base, location)
    }

    async fn cancel_upload(&self, repository: &str, location: Url) {
        let result = self
            .send(
                &Access::push(repository),
                "cancel upload",
                1,
                Some(REQUEST_TIMEOUT),
                |http, _| Ok(http.request(Method::DELETE, location.clone())),
            )
            .await;
        if let Err(e) = result {
            tracing::debug!(registry = %self.registry, error = %e, "failed to cancel an upload session");
        }
    }

    /// Uploads a blob: `POST` opens a session, one streamed `PUT …?digest=` sends the body and
    /// commits it. The registry checks the digest before committing; a body stream that fails
    /// (e.g. our own verification of the source) aborts the request, so nothing is committed.
    /// A failed session is cancelled.
    pub async fn upload_blob(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        body: reqwest::Body,
    ) -> Result<(), OciError> {
        let what = format!("upload of blob {digest} to {}/{repository}", self.registry);
        let access = Access::push(repository);
        let path = format!("v2/{repository}/blobs/uploads/");
        let response = self
            .send(
                &access,
                &what,
                self.config.retry.max_attempts,
                Some(REQUEST_TIMEOUT),
                |http, base| Ok(http.post(Self::url(base, &path)?).header(CONTENT_LENGTH, 0)),
            )
            .await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(self.status_error(response, &what).await);
        }
        let location = self.location(&response)?;
        let mut put_url = location.clone();
        put_url
            .query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let mut body = Some(body);
        let result = self
            .send(&access, &what, 1, Some(upload_timeout(size)), |http, _| {
                let body = body.take().ok_or_else(|| OciError::Aborted {
                    what: what.clone(),
                    reason: "the streamed upload body cannot be sent twice".into(),
                })?;
                Ok(http
                    .put(put_url.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, size)
                    .body(body))
            })
            .await;
        match result {
            Ok(response) if response.status() == StatusCode::CREATED => Ok(()),
            Ok(response) => {
                let error = self.status_error(response, &what).await;
                self.cancel_upload(repository, location).await;
                Err(error)
            }
            Err(error) => {
                self.cancel_upload(repository, location).await;
                Err(error)
            }
        }
    }

    /// Uploads a small blob held in memory (configs, test fixtures) and returns its digest.
    pub async fn put_blob_bytes(&self, repository: &str, bytes: Bytes) -> Result<Digest, OciError> {
        let digest = Digest::of(&bytes);
        let size = bytes.len() as u64;
        self.upload_blob(repository, &digest, size, reqwest::Body::from(bytes))
            .await?;
        Ok(digest)
    }
}

/// The body of a blob response as a stream of chunks, with transport errors named and a
/// stall (no byte for [`BLOB_STALL_TIMEOUT`]) turned into a transient error.
pub fn blob_body(
    response: Response,
    registry: &str,
    what: &str,
) -> impl futures::Stream<Item = Result<Bytes, OciError>> + Send + 'static {
    let registry = registry.to_owned();
    let what = what.to_owned();
    futures::stream::unfold(
        (Box::pin(response.bytes_stream()), false),
        move |(mut inner, finished)| {
            let registry = registry.clone();
            let what = what.clone();
            async move {
                if finished {
                    return None;
                }
                match tokio::time::timeout(BLOB_STALL_TIMEOUT, inner.next()).await {
                    Ok(Some(Ok(chunk))) => Some((Ok(chunk), (inner, false))),
                    Ok(Some(Err(e))) => Some((
                        Err(OciError::Transport {
                            registry,
                            what,
                            source: e.without_url(),
                        }),
                        (inner, true),
                    )),
                    Ok(None) => None,
                    Err(_) => Some((
                        Err(OciError::Stalled {
                            registry,
                            what,
                            seconds: BLOB_STALL_TIMEOUT.as_secs(),
                        }),
                        (inner, true),
                    )),
                }
            }
        },
    )
}

enum CappedReadError {
    TooLarge,
    Transport(reqwest::Error),
}

/// Reads a body, refusing to buffer more than `cap` bytes (checked before and while reading).
async fn read_capped(response: Response, cap: usize) -> Result<Bytes, CappedReadError> {
    if response
        .content_length()
        .is_some_and(|len| len > cap as u64)
    {
        return Err(CappedReadError::TooLarge);
    }
    let mut out = bytes::BytesMut::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| CappedReadError::Transport(e.without_url()))?;
        if out.len() + chunk.len() > cap {
            return Err(CappedReadError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}
