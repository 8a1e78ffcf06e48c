//! Shared fixtures of the tvk-oci integration tests: synthetic images pushed with our own
//! client, an FBC catalog that references them, `skopeo` checks, and an in-test HTTP proxy in
//! front of a real docker-registry that can demand bearer tokens or flip a byte in blobs.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    io::Write as _,
    net::SocketAddr,
    path::Path,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::Response,
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use bytes::Bytes;
use tvk_oci::{
    Digest,
    manifest::{self, Manifest},
    mirror::{Progress, ProgressEvent},
    registry::{RegistryClient, RegistryConfig, RegistryPool},
};

/// A registry client for test setup (plain HTTP on 127.0.0.1, anonymous).
pub fn client(addr: &str) -> Arc<RegistryClient> {
    let pool = RegistryPool::new(RegistryConfig {
        tls_verify: false,
        ..RegistryConfig::default()
    })
    .unwrap();
    pool.client(addr)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn random_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|_| fastrand::u8(..)).collect()
}

/// What a pushed test image consists of.
#[derive(Debug, Clone)]
pub struct TestImage {
    /// `addr/repo@digest` of the top-level manifest.
    pub reference: String,
    /// Repository path.
    pub repository: String,
    /// Top-level digest.
    pub digest: Digest,
    /// Every manifest digest (top-level included).
    pub manifests: Vec<Digest>,
    /// Every blob digest (configs and layers).
    pub blobs: Vec<Digest>,
}

async fn push_single(
    client: &RegistryClient,
    repo: &str,
    media_type: &str,
    arch: &str,
    layer_sizes: &[usize],
    extra_layers: &[Vec<u8>],
    labels: BTreeMap<String, String>,
) -> (Manifest, Vec<Digest>) {
    let docker = media_type == manifest::DOCKER_MANIFEST;
    let (config_type, layer_type) = if docker {
        (
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        )
    } else {
        (manifest::OCI_CONFIG, manifest::OCI_LAYER_GZIP)
    };
    let mut layers = Vec::new();
    let mut blobs = Vec::new();
    let mut diff_ids = Vec::new();
    let contents: Vec<Vec<u8>> = layer_sizes
        .iter()
        .map(|&n| random_bytes(n))
        .chain(extra_layers.iter().cloned())
        .collect();
    for raw in contents {
        let compressed = gzip(&raw);
        diff_ids.push(Digest::of(&raw).to_string());
        let size = compressed.len();
        let digest = client
            .put_blob_bytes(repo, Bytes::from(compressed))
            .await
            .unwrap();
        layers.push(serde_json::json!({"mediaType": layer_type, "digest": digest.to_string(), "size": size}));
        blobs.push(digest);
    }
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_size = config_bytes.len();
    let config_digest = client
        .put_blob_bytes(repo, Bytes::from(config_bytes))
        .await
        .unwrap();
    blobs.push(config_digest.clone());
    let manifest_json = serde_json::json!({
        "schemaVersion": 2, "mediaType": media_type,
        "config": {"mediaType": config_type, "digest": config_digest.to_string(), "size": config_size},
        "layers": layers,
    });
    let bytes = Bytes::from(serde_json::to_vec(&manifest_json).unwrap());
    let manifest = Manifest::parse(bytes, None, None, repo).unwrap();
    client
        .put_manifest(repo, &manifest.digest.to_string(), &manifest)
        .await
        .unwrap();
    (manifest, blobs)
}

/// Pushes a two-platform OCI index (amd64, arm64), each with two random gzip layers.
pub async fn push_index_image(addr: &str, repo: &str, tag: Option<&str>) -> TestImage {
    push_multi_platform(addr, repo, tag, manifest::OCI_INDEX, manifest::OCI_MANIFEST).await
}

/// Pushes a two-platform Docker v2 schema 2 manifest list.
pub async fn push_docker_list_image(addr: &str, repo: &str) -> TestImage {
    push_multi_platform(
        addr,
        repo,
        None,
        manifest::DOCKER_MANIFEST_LIST,
        manifest::DOCKER_MANIFEST,
    )
    .await
}

async fn push_multi_platform(
    addr: &str,
    repo: &str,
    tag: Option<&str>,
    index_type: &str,
    manifest_type: &str,
) -> TestImage {
    let client = client(addr);
    let mut children = Vec::new();
    let mut manifests = Vec::new();
    let mut blobs = Vec::new();
    for arch in ["amd64", "arm64"] {
        let (m, b) = push_single(
            &client,
            repo,
            manifest_type,
            arch,
            &[50_000, 3_000],
            &[],
            BTreeMap::new(),
        )
        .await;
        children.push(serde_json::json!({
            "mediaType": manifest_type, "digest": m.digest.to_string(), "size": m.bytes.len(),
            "platform": {"architecture": arch, "os": "linux"},
        }));
        manifests.push(m.digest.clone());
        blobs.extend(b);
    }
    let index =
        serde_json::json!({"schemaVersion": 2, "mediaType": index_type, "manifests": children});
    let index = Manifest::parse(
        Bytes::from(serde_json::to_vec(&index).unwrap()),
        None,
        None,
        repo,
    )
    .unwrap();
    client
        .put_manifest(repo, &index.digest.to_string(), &index)
        .await
        .unwrap();
    if let Some(tag) = tag {
        client.put_manifest(repo, tag, &index).await.unwrap();
    }
    manifests.insert(0, index.digest.clone());
    TestImage {
        reference: format!("{addr}/{repo}@{}", index.digest),
        repository: repo.to_owned(),
        digest: index.digest,
        manifests,
        blobs,
    }
}

/// Pushes a single-platform Docker v2 schema 2 image.
pub async fn push_docker_image(addr: &str, repo: &str) -> TestImage {
    let client = client(addr);
    let (m, blobs) = push_single(
        &client,
        repo,
        manifest::DOCKER_MANIFEST,
        "amd64",
        &[20_000],
        &[],
        BTreeMap::new(),
    )
    .await;
    TestImage {
        reference: format!("{addr}/{repo}@{}", m.digest),
        repository: repo.to_owned(),
        digest: m.digest.clone(),
        manifests: vec![m.digest],
        blobs,
    }
}

/// Pushes a catalog image whose single layer holds `files` under `/configs/`.
pub async fn push_catalog_image(
    addr: &str,
    repo: &str,
    tag: &str,
    files: &[(&str, &str)],
) -> TestImage {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, format!("configs/{path}"), content.as_bytes())
            .unwrap();
    }
    let layer = tar.into_inner().unwrap();
    let client = client(addr);
    let labels = BTreeMap::from([(
        "operators.operatorframework.io.index.configs.v1".to_owned(),
        "/configs".to_owned(),
    )]);
    let (m, blobs) = push_single(
        &client,
        repo,
        manifest::OCI_MANIFEST,
        "amd64",
        &[],
        &[layer],
        labels,
    )
    .await;
    client.put_manifest(repo, tag, &m).await.unwrap();
    TestImage {
        reference: format!("{addr}/{repo}:{tag}"),
        repository: repo.to_owned(),
        digest: m.digest.clone(),
        manifests: vec![m.digest],
        blobs,
    }
}

/// An FBC (YAML) with package `tvk`: channel `stable` (1.0.0 → 1.1.0) and channel `fast`
/// (1.1.0 → 2.0.0). Each bundle has its bundle image and one related image.
pub struct FbcImages<'a> {
    pub bundle_100: &'a TestImage,
    pub bundle_110: &'a TestImage,
    pub bundle_200: &'a TestImage,
    pub related_100: &'a TestImage,
    pub related_110: &'a TestImage,
    pub related_200: &'a TestImage,
}

pub fn fbc_yaml(i: &FbcImages<'_>) -> String {
    let bundle = |name: &str, version: &str, image: &TestImage, related: &TestImage| {
        format!(
            "---\nschema: olm.bundle\nname: {name}\npackage: tvk\nimage: {}\nrelatedImages:\n- {{name: bundle, image: {}}}\n- {{name: manager, image: {}}}\nproperties:\n- {{type: olm.package, value: {{packageName: tvk, version: {version}}}}}\n",
            image.reference, image.reference, related.reference
        )
    };
    let mut out = String::from(
        "schema: olm.package\nname: tvk\ndefaultChannel: stable\n---\nschema: olm.channel\nname: stable\npackage: tvk\nentries:\n- name: tvk.v1.0.0\n- name: tvk.v1.1.0\n  replaces: tvk.v1.0.0\n---\nschema: olm.channel\nname: fast\npackage: tvk\nentries:\n- name: tvk.v1.1.0\n- name: tvk.v2.0.0\n  replaces: tvk.v1.1.0\n",
    );
    out.push_str(&bundle("tvk.v1.0.0", "1.0.0", i.bundle_100, i.related_100));
    out.push_str(&bundle("tvk.v1.1.0", "1.1.0", i.bundle_110, i.related_110));
    out.push_str(&bundle("tvk.v2.0.0", "2.0.0", i.bundle_200, i.related_200));
    out
}

/// `skopeo inspect --raw` of `docker://addr/repo@digest`; asserts the bytes hash to `digest`.
pub fn assert_manifest_via_skopeo(addr: &str, repo: &str, digest: &Digest) {
    tvk_testkit::require_tool("skopeo", "apt-get install skopeo").unwrap();
    let reference = format!("docker://{addr}/{repo}@{digest}");
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &reference])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {reference} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        &Digest::of(&out.stdout),
        digest,
        "skopeo returned other bytes for {reference}"
    );
}

/// Whether `skopeo inspect --raw` finds the manifest.
pub fn skopeo_has_manifest(addr: &str, repo: &str, digest: &Digest) -> bool {
    tvk_testkit::require_tool("skopeo", "apt-get install skopeo").unwrap();
    Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{addr}/{repo}@{digest}"),
        ])
        .output()
        .unwrap()
        .status
        .success()
}

/// Asserts every manifest and blob of `image` is at `addr/dest_repo` (skopeo + HEAD).
pub async fn assert_image_at(addr: &str, dest_repo: &str, image: &TestImage) {
    for m in &image.manifests {
        assert_manifest_via_skopeo(addr, dest_repo, m);
    }
    let c = client(addr);
    for b in &image.blobs {
        assert!(
            c.has_blob(dest_repo, b).await.unwrap(),
            "blob {b} missing in {addr}/{dest_repo}"
        );
    }
}

/// Asserts every manifest and blob of `image` is in the layout at `root`, byte-exact.
pub fn assert_image_in_layout(root: &Path, image: &TestImage) {
    for d in image.manifests.iter().chain(image.blobs.iter()) {
        let bytes = std::fs::read(root.join("blobs/sha256").join(d.hex()))
            .unwrap_or_else(|e| panic!("{d} missing from layout: {e}"));
        assert_eq!(&Digest::of(&bytes), d);
    }
}

/// Counts progress events.
#[derive(Default)]
pub struct CountingProgress {
    pub blobs: AtomicU64,
    pub images_done: AtomicU64,
    pub failed: Mutex<Vec<String>>,
    pub notify: tokio::sync::Notify,
}

impl Progress for CountingProgress {
    fn event(&self, event: ProgressEvent<'_>) {
        match event {
            ProgressEvent::Blob { .. } => {
                self.blobs.fetch_add(1, Ordering::SeqCst);
                self.notify.notify_waiters();
            }
            ProgressEvent::ImageDone { .. } => {
                self.images_done.fetch_add(1, Ordering::SeqCst);
            }
            ProgressEvent::ImageFailed { source, error } => {
                self.failed
                    .lock()
                    .unwrap()
                    .push(format!("{source}: {error}"));
            }
            ProgressEvent::Planned { .. } => {}
        }
    }
}

/// What the proxy does besides forwarding.
#[derive(Clone, Debug)]
pub enum ProxyMode {
    /// Flip one byte in every blob body it serves (a lying server).
    FlipBlobBytes,
    /// Demand bearer tokens issued by its `/token` endpoint for `user`/`password`.
    BearerToken { user: String, password: String },
    /// Answer every `every`-th request with 503 or 429 (`Retry-After: 0`) instead of
    /// forwarding it; `every == 1` fails every request.
    Flaky { every: u64 },
    /// Serve only the first half of every blob body (a truncated transfer).
    TruncateBlobs,
    /// Demand HTTP Basic auth (`WWW-Authenticate: Basic`) for `user`/`password`.
    Basic { user: String, password: String },
}

struct ProxyState {
    upstream: String,
    own: String,
    mode: ProxyMode,
    http: reqwest::Client,
    tokens_issued: AtomicU64,
    requests: AtomicU64,
    injected_failures: AtomicU64,
    /// Scopes of every token request, for assertions.
    scopes: Mutex<Vec<String>>,
}

/// A running proxy; stops with the test's runtime.
pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
}

impl Proxy {
    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }
    pub fn tokens_issued(&self) -> u64 {
        self.state.tokens_issued.load(Ordering::SeqCst)
    }
    pub fn injected_failures(&self) -> u64 {
        self.state.injected_failures.load(Ordering::SeqCst)
    }
    pub fn scopes(&self) -> Vec<String> {
        self.state.scopes.lock().unwrap().clone()
    }
}

pub async fn start_proxy(upstream: SocketAddr, mode: ProxyMode) -> Proxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(ProxyState {
        upstream: upstream.to_string(),
        own: addr.to_string(),
        mode,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        tokens_issued: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        injected_failures: AtomicU64::new(0),
        scopes: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .fallback(proxy_handler)
        .with_state(state.clone());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Proxy { addr, state }
}

fn unauthorized(state: &ProxyState) -> Response {
    let mut r = Response::new(Body::from(
        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
    ));
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    r.headers_mut().insert(
        "www-authenticate",
        HeaderValue::from_str(&format!(
            r#"Bearer realm="http://{}/token",service="test-registry""#,
            state.own
        ))
        .unwrap(),
    );
    r
}

async fn proxy_handler(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    if let ProxyMode::BearerToken { user, password } = &state.mode {
        if parts.uri.path() == "/token" {
            let expected = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
            let given = parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            if given != Some(expected.as_str()) {
                let mut r = Response::new(Body::from("bad credentials"));
                *r.status_mut() = StatusCode::UNAUTHORIZED;
                return r;
            }
            state
                .scopes
                .lock()
                .unwrap()
                .push(parts.uri.query().unwrap_or_default().to_owned());
            let n = state.tokens_issued.fetch_add(1, Ordering::SeqCst);
            return Response::new(Body::from(format!(
                r#"{{"token":"test-token-{n}","expires_in":300}}"#
            )));
        }
        let authorized = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer test-token-"));
        if !authorized {
            return unauthorized(&state);
        }
    }
    if let ProxyMode::Basic { user, password } = &state.mode {
        let expected = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        let given = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            let mut r = Response::new(Body::from("authentication required"));
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            r.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static(r#"Basic realm="test""#),
            );
            return r;
        }
    }
    if let ProxyMode::Flaky { every } = &state.mode {
        let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
        if n % every == 0 {
            let failures = state.injected_failures.fetch_add(1, Ordering::SeqCst);
            let mut r = Response::new(Body::from("try again"));
            if failures % 2 == 0 {
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            } else {
                *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                r.headers_mut()
                    .insert("retry-after", HeaderValue::from_static("0"));
            }
            return r;
        }
    }
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let url = format!("http://{}{}", state.upstream, path_and_query);
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if name != "host" && name != "authorization" {
            headers.insert(name.clone(), value.clone());
        }
    }
    let upstream = state
        .http
        .request(parts.method.clone(), &url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = upstream.status();
    let mut out_headers = upstream.headers().clone();
    if let Some(location) = out_headers.get("location").and_then(|v| v.to_str().ok()) {
        let rewritten = location.replace(&state.upstream, &state.own);
        out_headers.insert("location", HeaderValue::from_str(&rewritten).unwrap());
    }
    let mut bytes = upstream.bytes().await.unwrap().to_vec();
    let is_blob_get =
        parts.method == axum::http::Method::GET && parts.uri.path().contains("/blobs/sha256:");
    if matches!(state.mode, ProxyMode::TruncateBlobs) && is_blob_get && status.is_success() {
        bytes.truncate(bytes.len() / 2);
    }
    if matches!(state.mode, ProxyMode::FlipBlobBytes)
        && is_blob_get
        && status.is_success()
        && !bytes.is_empty()
    {
        let i = bytes.len() / 2;
        bytes[i] ^= 0x01;
    }
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    for (name, value) in &out_headers {
        if name != "transfer-encoding" && name != "content-length" {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
    response
}

/// `skopeo inspect --raw oci:LAYOUT:NAME` (skopeo reads our layout by its ref name); asserts
/// the bytes hash to `digest`.
pub fn assert_layout_manifest_via_skopeo(layout: &Path, name: &str, digest: &Digest) {
    tvk_testkit::require_tool("skopeo", "apt-get install skopeo").unwrap();
    let reference = format!("oci:{}:{name}", layout.display());
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", &reference])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {reference} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        &Digest::of(&out.stdout),
        digest,
        "skopeo returned other bytes for {reference}"
    );
}
