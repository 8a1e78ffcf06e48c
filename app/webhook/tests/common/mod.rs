//! Shared test support: a small test kind (so the server's behaviour is tested independently of
//! the real kinds' rules), real certificates from rcgen, and a plain-HTTP harness around the real
//! admission router.

#![allow(dead_code)]

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{Value, json};
use tvk_api::admission::{
    AdmissionRegistry, FieldError, GroupVersionKind, KindAdmission, Operation, Request,
};
use tvk_webhook::{CertificateFiles, WebhookConfig, WebhookServer, metrics::WebhookMetrics};

/// `example.tvk.test/v1` `Widget`: spec.size 1..=10 required, spec.mode Fast|Safe (default Safe,
/// immutable), spec.legacy deprecated (a warning).
pub struct WidgetAdmission;

pub fn widget_gvk() -> GroupVersionKind {
    GroupVersionKind {
        group: "example.tvk.test".into(),
        version: "v1".into(),
        kind: "Widget".into(),
    }
}

impl KindAdmission for WidgetAdmission {
    fn gvk(&self) -> GroupVersionKind {
        widget_gvk()
    }

    fn plural(&self) -> &'static str {
        "widgets"
    }

    fn namespaced(&self) -> bool {
        true
    }

    fn validate(&self, request: &Request<'_>) -> Result<Vec<String>, Vec<FieldError>> {
        let spec = &request.object["spec"];
        let mut errors = Vec::new();
        match spec["size"].as_i64() {
            Some(1..=10) => {}
            _ => errors.push(FieldError::new(
                "spec.size",
                "must be an integer from 1 to 10",
            )),
        }
        match spec.get("mode").map(|mode| mode.as_str()) {
            None | Some(Some("Fast" | "Safe")) => {}
            _ => errors.push(FieldError::new("spec.mode", "must be one of Fast, Safe")),
        }
        if request.operation == Operation::Update {
            let old = request.old_object.map(|old| &old["spec"]["mode"]);
            if old.is_some_and(|old| *old != spec["mode"]) {
                errors.push(FieldError::new(
                    "spec.mode",
                    "is immutable once the widget exists",
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut warnings = Vec::new();
        if spec.get("legacy").is_some() {
            warnings.push("spec.legacy is deprecated and ignored".to_owned());
        }
        Ok(warnings)
    }

    fn default_patch(&self, object: &Value) -> Result<json_patch::Patch, Vec<FieldError>> {
        if !object["spec"].is_object() {
            return Err(vec![FieldError::new("spec", "is required")]);
        }
        if object["spec"].get("mode").is_some() {
            return Ok(json_patch::Patch(vec![]));
        }
        Ok(
            serde_json::from_value(json!([{"op": "add", "path": "/spec/mode", "value": "Safe"}]))
                .unwrap(),
        )
    }
}

pub fn widget_registry() -> Arc<AdmissionRegistry> {
    Arc::new(AdmissionRegistry::new().with(Box::new(WidgetAdmission)))
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

/// The real admission router of `registry`, served over plain HTTP on 127.0.0.1.
pub struct RouterHarness {
    pub addr: SocketAddr,
    pub metrics: Arc<WebhookMetrics>,
    client: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl RouterHarness {
    pub async fn start(registry: Arc<AdmissionRegistry>, max_body_bytes: usize) -> Self {
        Self::start_with_rules(registry, tvk_webhook::ClusterRuleSet::new(), max_body_bytes).await
    }

    /// The router of `registry` with the cluster-state `rules`.
    pub async fn start_with_rules(
        registry: Arc<AdmissionRegistry>,
        rules: tvk_webhook::ClusterRuleSet,
        max_body_bytes: usize,
    ) -> Self {
        let metrics = Arc::new(WebhookMetrics::new());
        let router = tvk_webhook::admission_router_with_rules(
            registry,
            rules,
            Arc::clone(&metrics),
            max_body_bytes,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            addr,
            metrics,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            task,
        }
    }

    /// POSTs `body` to `path`; returns the status and the body (JSON if it parses, else a string).
    pub async fn post(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let response = self
            .client
            .post(format!("http://{}{path}", self.addr))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }
}

impl Drop for RouterHarness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A certificate authority made for one test.
pub struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    pub cert_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            params,
            key,
            cert_pem: cert.pem(),
        }
    }

    /// A serving certificate for `dns_name`, signed by this CA.
    pub fn serving_cert(&self, dns_name: &str) -> ServingPair {
        let mut params = CertificateParams::new(vec![dns_name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, dns_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        ServingPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
        }
    }

    pub fn reqwest_certificate(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).unwrap()
    }
}

/// A leaf certificate and its key.
pub struct ServingPair {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
}

impl ServingPair {
    /// Writes the pair the way a rotation does: key first, then certificate, each atomically.
    pub fn write(&self, files: &CertificateFiles) {
        write_atomically(&files.key_file, self.key_pem.as_bytes());
        write_atomically(&files.cert_file, self.cert_pem.as_bytes());
    }
}

pub fn write_atomically(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub const SERVICE_DNS: &str = "tvk-webhook.tvk-system.svc";

pub fn certificate_files(dir: &Path) -> CertificateFiles {
    CertificateFiles {
        cert_file: dir.join("tls.crt"),
        key_file: dir.join("tls.key"),
    }
}

pub fn test_config(files: CertificateFiles) -> WebhookConfig {
    WebhookConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        certificate: files,
        reload_interval: Duration::from_millis(100),
        max_body_bytes: tvk_webhook::DEFAULT_MAX_BODY_BYTES,
        shutdown_timeout: Duration::from_secs(5),
    }
}

pub async fn start_server(files: CertificateFiles) -> WebhookServer {
    WebhookServer::start(test_config(files), widget_registry())
        .await
        .unwrap()
}

/// An HTTPS client that trusts only `ca` and reaches [`SERVICE_DNS`] at `addr`, on a fresh
/// connection for every request (so every request is a new handshake).
pub fn tls_client(ca: &TestCa, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca.reqwest_certificate())
        .resolve(SERVICE_DNS, addr)
        .pool_max_idle_per_host(0)
        .tls_info(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

pub fn https_url(addr: SocketAddr, path: &str) -> String {
    format!("https://{SERVICE_DNS}:{}{path}", addr.port())
}

/// The DER of the certificate the server presented on `response`'s connection.
pub fn peer_certificate(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("the response carries TLS info with a peer certificate")
        .to_vec()
}

/// Polls `condition` every 50 ms until it holds, at most `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
