//! An in-memory Kubernetes API server over real HTTP, for tests.
//!
//! `kube-fake-client` answers in-process and has no watch and no discovery, so
//! `kube::runtime` controllers (watchers, reflectors, `Controller`) cannot run against it, and
//! child processes cannot reach it. This crate serves the Kubernetes REST API on
//! `127.0.0.1:<free port>`: discovery (`/api`, `/apis`, `/apis/{group}/{version}`, aggregated
//! v2), a built-in table of the common resources plus CustomResourceDefinitions registered at
//! runtime, CRUD with resourceVersion conflicts, status subresources, generation, finalizers,
//! owner-reference garbage collection, merge / JSON / strategic (approximated) patches,
//! server-side apply with managed fields, dry runs, and watches (list-then-watch and
//! streaming lists, bookmarks, 410 Gone). It writes a kubeconfig so a child process
//! (`kubectl`, a Job's command run locally) reaches the same "cluster".
//!
//! Tests get the exact calls a controller made from [`ApiServer::requests`] and count writes
//! with [`ApiServer::writes_since`]. README.md lists what is faithful and what is approximated.
#![forbid(unsafe_code)]

mod error;
mod exec;
mod fieldset;
mod http;
mod logs;
mod registry;
mod selector;
mod store;

pub use error::{ApiError, StartError};
pub use exec::{ExecOutcome, ExecRecord, ExecRequest, ExecResult};
pub use k8s_openapi::apimachinery::pkg::version::Info as VersionInfo;
pub use logs::ANNOTATION_LOG_DIR;
pub use registry::ResourceDef;
pub use store::{CONTROLLER_MANAGER, RecordedRequest};

use serde_json::{Value, json};
use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};
use store::{State, WriteOpts};
use tokio::{
    sync::{Notify, broadcast, watch},
    task::JoinHandle,
};

/// Field manager of [`ApiServer::apply`] (seeding from tests).
pub const SEED_MANAGER: &str = "tvk-test-apiserver";

/// Options of [`ApiServer::start_with`].
#[derive(Debug, Clone)]
pub struct Options {
    /// How many change events are kept for watches that resume from a resourceVersion; a
    /// watch from an older resourceVersion gets 410 Gone (kube's watcher then re-lists).
    pub history: usize,
    /// What `GET /version` answers (kube's `Client::apiserver_version`, `kubectl version`,
    /// Helm's `.Capabilities.KubeVersion`). Default: [`version_info`]`("v1.32.0")`.
    pub version: VersionInfo,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            history: 10_000,
            version: version_info("v1.32.0"),
        }
    }
}

/// The `/version` answer of an API server built as release `git_version` (`"v1.31.4"`,
/// `"v1.30.2-eks-1"`): `major` and `minor` are its first two numbers (as a real server's,
/// without a leading `v` or what follows the digits), the build fields are those of a clean
/// `gc` build for linux/amd64. A `git_version` that is not `vMAJOR.MINOR…` leaves `major` and
/// `minor` empty.
pub fn version_info(git_version: &str) -> VersionInfo {
    let mut numbers = git_version.trim_start_matches('v').split('.').map(|part| {
        part.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
    });
    VersionInfo {
        major: numbers.next().unwrap_or_default(),
        minor: numbers.next().unwrap_or_default(),
        git_version: git_version.to_owned(),
        git_commit: "0000000000000000000000000000000000000000".to_owned(),
        git_tree_state: "clean".to_owned(),
        build_date: "2026-01-01T00:00:00Z".to_owned(),
        go_version: "go1.23.4".to_owned(),
        compiler: "gc".to_owned(),
        platform: "linux/amd64".to_owned(),
    }
}

/// A running test API server. Dropping it stops it.
pub struct ApiServer {
    shared: Arc<http::Shared>,
    url: String,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    client: kube::Client,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    gc: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("url", &self.url)
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// Starts a server with default options on 127.0.0.1 and a free port.
    pub async fn start() -> Result<Self, StartError> {
        Self::start_with(Options::default()).await
    }

    /// Starts a server with the given options.
    pub async fn start_with(options: Options) -> Result<Self, StartError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(StartError::Bind)?;
        let addr = listener.local_addr().map_err(StartError::Bind)?;
        let url = format!("http://{addr}");
        let (events, _) = broadcast::channel(options.history.max(1024));
        let gc_notify = Arc::new(Notify::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Arc::new(http::Shared {
            state: Mutex::new(State::new(options.history, events, gc_notify.clone())),
            stop: stop_rx.clone(),
            exec: Arc::default(),
            version: serde_json::to_value(&options.version).map_err(StartError::Version)?,
        });

        let dir = tempfile::Builder::new()
            .prefix("tvk-test-apiserver-")
            .tempdir()
            .map_err(StartError::Kubeconfig)?;
        let kubeconfig = dir.path().join("kubeconfig");
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "tvk-test", "cluster": {"server": url}}],
            "users": [{"name": "tvk-test", "user": {}}],
            "contexts": [{"name": "tvk-test", "context": {"cluster": "tvk-test", "user": "tvk-test", "namespace": "default"}}],
            "current-context": "tvk-test",
        });
        // JSON is YAML: kubectl and kube read this file as a kubeconfig.
        std::fs::write(&kubeconfig, config.to_string()).map_err(StartError::Kubeconfig)?;

        let app = http::router(shared.clone());
        let mut stop_serve = stop_rx.clone();
        let server = tokio::spawn(async move {
            let shutdown = async move {
                while !*stop_serve.borrow() {
                    if stop_serve.changed().await.is_err() {
                        break;
                    }
                }
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!("tvk-test-apiserver: server stopped with an error: {e}");
            }
        });
        let gc_shared = shared.clone();
        let gc = tokio::spawn(async move {
            loop {
                gc_notify.notified().await;
                gc_shared.lock().collect_garbage();
            }
        });

        // The workspace links two rustls providers (ring through kube, aws-lc-rs through
        // object_store's reqwest), and rustls then refuses to pick one: name ring, as the
        // binaries do, or building the client panics in any test binary that links both.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig)
            .map_err(|e| StartError::Config(e.to_string()))?;
        let client_config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| StartError::Config(e.to_string()))?;
        let client = kube::Client::try_from(client_config).map_err(StartError::Client)?;
        Ok(Self {
            shared,
            url,
            dir,
            kubeconfig,
            client,
            stop: stop_tx,
            server: Some(server),
            gc: Some(gc),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kubeconfig file (current context `tvk-test`, namespace `default`) pointing at this
    /// server, for child processes (`KUBECONFIG=…`). Removed when the server is dropped.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// A temporary directory that lives as long as the server (for tests' scratch files).
    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A kube client for this server (default namespace `default`).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Stops the server: open watches end, new connections are refused.
    pub async fn shutdown(mut self) {
        self.stop_now();
        if let Some(server) = self.server.take() {
            // A join error means the task was aborted or panicked; either way it is stopped.
            let _ = server.await;
        }
    }

    fn stop_now(&mut self) {
        // No receiver left means everything already stopped.
        let _ = self.stop.send(true);
        if let Some(gc) = self.gc.take() {
            gc.abort();
        }
    }

    fn resource(&self, api_version: &str, kind: &str) -> Result<ResourceDef, ApiError> {
        self.shared
            .lock()
            .registry
            .by_kind(api_version, kind)
            .cloned()
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "no resource of kind {kind} in {api_version} is served (create its CustomResourceDefinition first)"
                ))
            })
    }

    fn target(&self, obj: &Value) -> Result<(ResourceDef, Option<String>), ApiError> {
        let text = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or_default();
        let res = self.resource(text("/apiVersion"), text("/kind"))?;
        let ns = res.namespaced.then(|| {
            let ns = text("/metadata/namespace");
            if ns.is_empty() { "default" } else { ns }.to_string()
        });
        Ok((res, ns))
    }

    /// Seeds an object as a POST would (namespace `default` when a namespaced object names
    /// none). Unlike a client's create, `status` is kept, so tests can seed observed state.
    pub fn create(&self, obj: Value) -> Result<Value, ApiError> {
        let (res, ns) = self.target(&obj)?;
        let opts = WriteOpts {
            field_manager: Some(SEED_MANAGER.to_string()),
            keep_status: true,
            ..WriteOpts::default()
        };
        self.shared.lock().create(&res, ns.as_deref(), obj, &opts)
    }

    /// Seeds an object by server-side apply, field manager [`SEED_MANAGER`], forced.
    pub fn apply(&self, obj: Value) -> Result<Value, ApiError> {
        let (res, ns) = self.target(&obj)?;
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let opts = WriteOpts {
            field_manager: Some(SEED_MANAGER.to_string()),
            force: true,
            ..WriteOpts::default()
        };
        self.shared
            .lock()
            .apply(&res, ns.as_deref(), &name, obj, &opts)
    }

    /// Deletes an object as a DELETE without options would (finalizers respected).
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let res = self.resource(api_version, kind)?;
        self.shared
            .lock()
            .delete(&res, namespace, name, None, None, false)
    }

    /// One stored object, or None.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let res = self.resource(api_version, kind).ok()?;
        self.shared.lock().get(&res, namespace, name).ok()
    }

    /// Stored objects of a kind, in one namespace or all (None), in namespace/name order.
    pub fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        match self.resource(api_version, kind) {
            Ok(res) => self.shared.lock().list(&res, namespace),
            Err(_) => Vec::new(),
        }
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// A mark for [`Self::writes_since`] and [`Self::requests_since`]: the number of requests
    /// answered so far.
    pub fn mark(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// Requests answered after `mark`.
    pub fn requests_since(&self, mark: usize) -> Vec<RecordedRequest> {
        self.shared
            .lock()
            .requests
            .iter()
            .skip(mark)
            .cloned()
            .collect()
    }

    /// Write requests (POST, PUT, PATCH, DELETE, dry runs included) answered after `mark`.
    pub fn writes_since(&self, mark: usize) -> usize {
        self.requests_since(mark)
            .iter()
            .filter(|r| r.is_write())
            .count()
    }

    /// Serves `pods/{name}/exec` with `handler` instead of running the command as a local
    /// process. The handler runs on a blocking thread (it may sleep to play a slow command);
    /// its output is sent when it returns. When the client goes away first the exec is recorded
    /// as [`ExecOutcome::Cancelled`] (the handler's thread still finishes; its result is
    /// dropped).
    pub fn on_exec<F>(&self, handler: F)
    where
        F: Fn(&ExecRequest) -> ExecResult + Send + Sync + 'static,
    {
        self.shared.exec.set_handler(Some(Arc::new(handler)));
    }

    /// Back to the default: an exec runs its command as a local process (argv as given, no
    /// shell unless the command names one; stdin is /dev/null; environment of the test plus
    /// `HOSTNAME`, `TVK_EXEC_NAMESPACE`, `TVK_EXEC_POD`, `TVK_EXEC_CONTAINER`). A client that
    /// goes away kills the command's whole process group.
    pub fn exec_locally(&self) {
        self.shared.exec.set_handler(None);
    }

    /// Every exec served so far, in the order they ended.
    pub fn execs(&self) -> Vec<ExecRecord> {
        self.shared.exec.records()
    }

    /// The latest resourceVersion (one counter for every resource, as etcd's revision).
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().resource_version()
    }

    /// Runs the garbage collector and namespace controller now (they also run in the
    /// background after every deletion); returns how many actions they took.
    pub fn collect_garbage(&self) -> usize {
        self.shared.lock().collect_garbage()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop_now();
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}
