//! Plays the kubelet's and a CSI driver's part for end-to-end tests against tvk-test-apiserver.
//!
//! tvk-test-apiserver stores Jobs, PVCs and VolumeSnapshots but runs nothing. [`Kubelet`] watches
//! them in every namespace and does what the cluster would: each new Job's container runs as a
//! local process (its image mapped to a binary on this machine, its environment resolved from
//! Secrets, ConfigMaps and the downward API, its volumes mapped to host directories and files,
//! every argument naming a mount or device path rewritten to the host path), its output is kept
//! (for tests, and as a Pod named after the Job) and the Job's status is written as the Job
//! controller writes it. As the CSI external-provisioner and snapshotter of one driver it binds
//! PVCs of its StorageClasses to PersistentVolumes backed by host files (sparse, or copied from
//! a snapshot) and makes VolumeSnapshots ready by copying the source volume's file.
//!
//! Layout of the work directory (see the README): `volumes/<key>.img` (a volume's "block
//! device"), `volumes/<key>.d/` (the same volume mounted as a filesystem — a separate view),
//! `snapshots/<content>.img`, `pods/<namespace>/<job>/` (ConfigMap/Secret/emptyDir volumes and
//! the working directory).
#![forbid(unsafe_code)]

mod binaries;
mod jobs;
mod logs;
mod storage;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::Client;
use tokio::{sync::Notify, task::JoinHandle};
use tokio_util::sync::CancellationToken;

pub use binaries::{BinaryError, workspace_binary};

/// Field manager of every write the harness makes.
pub const FIELD_MANAGER: &str = "tvk-test-kubelet";
/// Default CSI driver / provisioner name the harness plays.
pub const DEFAULT_DRIVER: &str = "hostpath.csi.test";
/// Annotation of the Pod holding the tail of the process's stdout.
pub const ANNOTATION_STDOUT: &str = "tvk-test-kubelet/stdout";
/// Annotation of the Pod holding the tail of the process's stderr.
pub const ANNOTATION_STDERR: &str = "tvk-test-kubelet/stderr";

/// What the harness needs to know.
#[derive(Debug, Clone)]
pub struct Options {
    /// Container image → local program run for it (the image's entrypoint).
    pub images: BTreeMap<String, PathBuf>,
    /// Kubeconfig handed to every process as `KUBECONFIG` (the test API server's).
    pub kubeconfig: PathBuf,
    /// How many Job processes run at once (default 4).
    pub max_parallel: usize,
    /// CSI driver name: StorageClasses with this provisioner and VolumeSnapshotClasses with
    /// this driver are served (default [`DEFAULT_DRIVER`]).
    pub driver: String,
    /// Environment added to every process before the container's own (e.g. `RUST_LOG`).
    pub env: Vec<(String, String)>,
    /// Work directory; a temporary one (removed on drop, kept with `TVK_TEST_KEEP`) when `None`.
    pub work_dir: Option<PathBuf>,
    /// How long a Job waits for its claims to be bound, a PVC for its snapshot or a snapshot
    /// for its source volume before the harness gives up on it (default 60 s).
    pub wait_limit: Duration,
}

impl Options {
    /// Options with no images mapped, for the given kubeconfig.
    pub fn new(kubeconfig: impl Into<PathBuf>) -> Self {
        Self {
            images: BTreeMap::new(),
            kubeconfig: kubeconfig.into(),
            max_parallel: 4,
            driver: DEFAULT_DRIVER.into(),
            env: Vec::new(),
            work_dir: None,
            wait_limit: Duration::from_secs(60),
        }
    }

    /// Maps `image` to the local `program`.
    pub fn image(mut self, image: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        self.images.insert(image.into(), program.into());
        self
    }
}

/// One finished Job process (or a Job the harness refused to start).
#[derive(Debug, Clone)]
pub struct JobRun {
    /// Namespace of the Job.
    pub namespace: String,
    /// Name of the Job.
    pub name: String,
    /// The program run (host path) and its arguments after rewriting; empty when not started.
    pub command: Vec<String>,
    /// Exit code; `None` when the process was not started, was killed or died of a signal.
    pub exit_code: Option<i32>,
    /// Whether the Job was marked Complete.
    pub succeeded: bool,
    /// Reason of the Job's condition (`Completed`, `BackoffLimitExceeded`,
    /// `DeadlineExceeded`, `ImageNotMapped`, `CreateContainerConfigError`, `FailedMount`, …).
    pub reason: String,
    /// Message of the Job's condition.
    pub message: String,
    /// Everything the process wrote on stdout.
    pub stdout: String,
    /// Everything the process wrote on stderr.
    pub stderr: String,
}

/// Errors of the harness itself (Job failures are [`JobRun`]s, not errors).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The work directory could not be made.
    #[error("failed to prepare the kubelet work directory: {0}")]
    WorkDir(String),
    /// The API server does not serve what the harness needs.
    #[error(
        "the API server does not serve {what}: {source}; tvk-test-apiserver serves it built in — is this another server?"
    )]
    Discovery {
        /// What is missing.
        what: &'static str,
        /// Why.
        source: kube::Error,
    },
    /// Waiting for something timed out.
    #[error("timed out after {seconds} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        seconds: u64,
    },
    /// An API call failed.
    #[error("failed to {what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// Why.
        source: kube::Error,
    },
}

/// State shared by the watch loops and the tasks they start.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) opts: Options,
    pub(crate) root: PathBuf,
    pub(crate) runs: Mutex<Vec<JobRun>>,
    pub(crate) runs_changed: Notify,
    /// UIDs of Jobs already taken (never run twice).
    pub(crate) jobs_seen: Mutex<HashSet<String>>,
    /// Cancellation of running Jobs by UID (a deleted Job's process is killed).
    pub(crate) jobs_running: Mutex<HashMap<String, CancellationToken>>,
    /// UIDs of PVCs / VolumeSnapshots with a task working on them.
    pub(crate) busy: Mutex<HashSet<String>>,
    pub(crate) semaphore: tokio::sync::Semaphore,
    pub(crate) stop: CancellationToken,
}

impl Shared {
    pub(crate) fn record(&self, run: JobRun) {
        if let Ok(mut runs) = self.runs.lock() {
            runs.push(run);
        }
        self.runs_changed.notify_waiters();
    }

    /// Marks `uid` busy; false when a task already works on it.
    pub(crate) fn take(&self, uid: &str) -> bool {
        self.busy
            .lock()
            .map(|mut b| b.insert(uid.to_string()))
            .unwrap_or(false)
    }

    pub(crate) fn release(&self, uid: &str) {
        if let Ok(mut b) = self.busy.lock() {
            b.remove(uid);
        }
    }
}

/// The running harness. Dropping it stops the watches and kills running processes.
pub struct Kubelet {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    _temp: Option<tvk_testkit::TempDir>,
}

impl std::fmt::Debug for Kubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelet")
            .field("root", &self.shared.root)
            .finish()
    }
}

impl Kubelet {
    /// Starts watching Jobs, PVCs and VolumeSnapshots in all namespaces.
    pub async fn start(client: Client, opts: Options) -> Result<Self, Error> {
        let (root, temp) = match &opts.work_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let t = tvk_testkit::TempDir::new("kubelet").map_err(Error::WorkDir)?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        for sub in ["volumes", "snapshots", "pods"] {
            std::fs::create_dir_all(root.join(sub))
                .map_err(|e| Error::WorkDir(format!("{}: {e}", root.join(sub).display())))?;
        }
        client
            .list_api_group_resources("snapshot.storage.k8s.io/v1")
            .await
            .map_err(|source| Error::Discovery {
                what: "snapshot.storage.k8s.io/v1 (VolumeSnapshot, VolumeSnapshotContent, VolumeSnapshotClass)",
                source,
            })?;
        let shared = Arc::new(Shared {
            client,
            semaphore: tokio::sync::Semaphore::new(opts.max_parallel.max(1)),
            opts,
            root,
            runs: Mutex::new(Vec::new()),
            runs_changed: Notify::new(),
            jobs_seen: Mutex::new(HashSet::new()),
            jobs_running: Mutex::new(HashMap::new()),
            busy: Mutex::new(HashSet::new()),
            stop: CancellationToken::new(),
        });
        let tasks = vec![
            tokio::spawn(jobs::watch(shared.clone())),
            tokio::spawn(storage::watch_claims(shared.clone())),
            tokio::spawn(storage::watch_snapshots(shared.clone())),
        ];
        Ok(Self {
            shared,
            tasks,
            _temp: temp,
        })
    }

    /// The work directory (volume files, snapshot files, per-Job directories).
    pub fn work_dir(&self) -> &Path {
        &self.shared.root
    }

    /// Every Job run so far, in the order they finished.
    pub fn runs(&self) -> Vec<JobRun> {
        self.shared
            .runs
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Waits until the Job `namespace/name` has finished and returns its run.
    pub async fn wait_for_run(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<JobRun, Error> {
        let find = || {
            self.runs()
                .into_iter()
                .rev()
                .find(|r| r.namespace == namespace && r.name == name)
        };
        let wait = async {
            loop {
                let notified = self.shared.runs_changed.notified();
                if let Some(run) = find() {
                    return run;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| Error::Timeout {
                what: format!("Job {namespace}/{name} to finish"),
                seconds: timeout.as_secs(),
            })
    }

    /// The host file standing in for the block device of the PVC `namespace/name`, once the
    /// claim is bound (waits up to `timeout`). Tests write "application data" into it.
    pub async fn volume_file(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<PathBuf, Error> {
        storage::wait_volume(&self.shared, namespace, name, timeout)
            .await
            .map(|key| storage::block_file(&self.shared.root, &key))
    }

    /// The host directory of the PVC `namespace/name` mounted as a filesystem, once bound.
    pub async fn volume_dir(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<PathBuf, Error> {
        storage::wait_volume(&self.shared, namespace, name, timeout)
            .await
            .map(|key| storage::fs_dir(&self.shared.root, &key))
    }

    /// Stops the watches and kills running processes.
    pub async fn shutdown(mut self) {
        self.shared.stop.cancel();
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.shared.stop.cancel();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Now as a Kubernetes `Time` (RFC 3339, seconds).
pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Bytes of a Kubernetes quantity (`16Mi`, `1G`, `1073741824`, `1.5Gi`); `None` if invalid
/// (the workspace's one parser).
pub use tvk_api::quantity::bytes as quantity_bytes;
