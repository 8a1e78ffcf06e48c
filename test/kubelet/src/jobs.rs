//! The kubelet and Job controller part: each new Job's container runs as a local process.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{ConfigMap, Container, PodSpec, Secret, Volume},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{
    ANNOTATION_STDERR, ANNOTATION_STDOUT, FIELD_MANAGER, JobRun, Shared, logs::ContainerLog, now,
    storage,
};

/// Bytes of stdout/stderr kept in the Pod's annotations (the tail).
const ANNOTATION_TAIL: usize = 32 * 1024;

/// Watches Jobs in all namespaces and starts a task for each new one.
pub(crate) async fn watch(shared: Arc<Shared>) {
    let api: Api<Job> = Api::all(shared.client.clone());
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        let event = tokio::select! {
            _ = shared.stop.cancelled() => return,
            e = events.next() => e,
        };
        match event {
            Some(Ok(watcher::Event::Apply(job) | watcher::Event::InitApply(job))) => {
                on_job(&shared, job);
            }
            Some(Ok(watcher::Event::Delete(job))) => {
                if let Some(token) = shared
                    .jobs_running
                    .lock()
                    .ok()
                    .and_then(|r| r.get(&job.uid().unwrap_or_default()).cloned())
                {
                    token.cancel();
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => tracing::warn!("kubelet: Job watch error: {e}"),
            None => return,
        }
    }
}

fn on_job(shared: &Arc<Shared>, job: Job) {
    let Some(uid) = job.uid() else { return };
    if job.metadata.deletion_timestamp.is_some() {
        if let Some(token) = shared
            .jobs_running
            .lock()
            .ok()
            .and_then(|r| r.get(&uid).cloned())
        {
            token.cancel();
        }
        return;
    }
    let status = job.status.clone().unwrap_or_default();
    let finished = status.succeeded.unwrap_or(0) > 0
        || status.failed.unwrap_or(0) > 0
        || status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.status == "True" && matches!(c.type_.as_str(), "Complete" | "Failed"));
    if finished || job.spec.as_ref().and_then(|s| s.suspend) == Some(true) {
        return;
    }
    let first = shared
        .jobs_seen
        .lock()
        .map(|mut s| s.insert(uid.clone()))
        .unwrap_or(false);
    if !first {
        return;
    }
    let token = shared.stop.child_token();
    if let Ok(mut r) = shared.jobs_running.lock() {
        r.insert(uid.clone(), token.clone());
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        run_job(&shared, job, token).await;
        if let Ok(mut r) = shared.jobs_running.lock() {
            r.remove(&uid);
        }
    });
}

/// Why a Job's pod could not start: the Job fails with this reason and message.
struct NotStarted {
    reason: &'static str,
    message: String,
}

fn not_started(reason: &'static str, message: impl Into<String>) -> NotStarted {
    NotStarted {
        reason,
        message: message.into(),
    }
}

/// A container turned into a local process.
struct Prepared {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    /// Where the container's log is kept while it runs (served as `pods/{name}/log`).
    log: ContainerLog,
    log_dir: PathBuf,
}

async fn run_job(shared: &Arc<Shared>, job: Job, token: CancellationToken) {
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let Ok(_permit) = shared.semaphore.acquire().await else {
        return;
    };
    if token.is_cancelled() {
        return;
    }
    let jobs: Api<Job> = Api::namespaced(shared.client.clone(), &ns);
    // A Job deleted (or already finished) while it waited for a slot is not run.
    match jobs.get_opt(&name).await {
        Ok(Some(current)) if current.uid() == job.uid() => {
            if current.metadata.deletion_timestamp.is_some() {
                return;
            }
        }
        Ok(_) => return,
        Err(e) => tracing::warn!("kubelet: cannot re-read Job {ns}/{name}: {e}"),
    }
    let started = Instant::now();
    let start_time = now();
    patch_job_status(
        shared,
        &jobs,
        &name,
        json!({"status": {"startTime": start_time, "active": 1}}),
    )
    .await;
    let deadline = job
        .spec
        .as_ref()
        .and_then(|s| s.active_deadline_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs);
    let pod_spec = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    let prepared = tokio::select! {
        _ = token.cancelled() => return,
        p = prepare(shared, &job, &pod_spec) => p,
    };
    let mut run = JobRun {
        namespace: ns.clone(),
        name: name.clone(),
        command: Vec::new(),
        exit_code: None,
        succeeded: false,
        reason: String::new(),
        message: String::new(),
        stdout: String::new(),
        stderr: String::new(),
    };
    match prepared {
        Err(e) => {
            run.reason = e.reason.into();
            run.message = e.message;
        }
        Ok(p) => {
            run.command = std::iter::once(p.program.display().to_string())
                .chain(p.args.iter().cloned())
                .collect();
            create_pod(shared, &job, &pod_spec, &start_time, &p.log_dir).await;
            let remaining = deadline.map(|d| d.saturating_sub(started.elapsed()));
            let outcome = execute(&p, remaining, &token).await;
            match outcome {
                Executed::Cancelled => {
                    // The Job was deleted (or the harness stopped): no status to write.
                    return;
                }
                Executed::SpawnFailed(e) => {
                    run.reason = "StartError".into();
                    run.message = format!("cannot run {}: {e}", p.program.display());
                }
                Executed::DeadlineExceeded { stdout, stderr } => {
                    run.stdout = stdout;
                    run.stderr = stderr;
                    run.reason = "DeadlineExceeded".into();
                    run.message = "Job was active longer than specified deadline".into();
                }
                Executed::Exited {
                    code,
                    stdout,
                    stderr,
                } => {
                    run.exit_code = code;
                    run.stdout = stdout;
                    run.stderr = stderr;
                    if code == Some(0) {
                        run.succeeded = true;
                        run.reason = "Completed".into();
                        run.message = "Reached expected number of succeeded pods".into();
                    } else {
                        run.reason = "BackoffLimitExceeded".into();
                        let code = code.map_or("a signal".to_string(), |c| format!("code {c}"));
                        run.message =
                            format!("exit {code}: {}", failure_detail(&run.stdout, &run.stderr));
                    }
                }
            }
        }
    }
    finish_pod(shared, &ns, &name, &run).await;
    let time = now();
    let status = if run.succeeded {
        json!({"status": {"active": null, "succeeded": 1, "completionTime": time, "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
             "message": "Reached expected number of succeeded pods", "lastProbeTime": time, "lastTransitionTime": time},
            {"type": "Complete", "status": "True", "reason": "CompletionsReached",
             "message": "Reached expected number of succeeded pods", "lastProbeTime": time, "lastTransitionTime": time}]}})
    } else {
        json!({"status": {"active": null, "failed": 1, "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": run.reason, "message": run.message,
             "lastProbeTime": time, "lastTransitionTime": time},
            {"type": "Failed", "status": "True", "reason": run.reason, "message": run.message,
             "lastProbeTime": time, "lastTransitionTime": time}]}})
    };
    patch_job_status(shared, &jobs, &name, status).await;
    shared.record(run);
}

async fn patch_job_status(shared: &Shared, jobs: &Api<Job>, name: &str, patch: Value) {
    let _ = shared;
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    if let Err(e) = jobs.patch_status(name, &pp, &Patch::Merge(&patch)).await {
        tracing::warn!("kubelet: cannot write the status of Job {name}: {e}");
    }
}

/// The message of a failed process: the error of its last `{"event":"result"}` line, else the
/// tail of stderr.
pub(crate) fn failure_detail(stdout: &str, stderr: &str) -> String {
    let result = stdout
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .find(|v| v["event"] == "result");
    if let Some(v) = result
        && let Some(e) = v["error"].as_str()
    {
        return e.to_string();
    }
    let tail: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .rev()
        .take(5)
        .collect();
    if tail.is_empty() {
        "no error output".into()
    } else {
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

enum Executed {
    Cancelled,
    SpawnFailed(std::io::Error),
    DeadlineExceeded {
        stdout: String,
        stderr: String,
    },
    Exited {
        code: Option<i32>,
        stdout: String,
        stderr: String,
    },
}

async fn execute(p: &Prepared, deadline: Option<Duration>, token: &CancellationToken) -> Executed {
    let mut cmd = tokio::process::Command::new(&p.program);
    cmd.args(&p.args)
        .env_clear()
        .envs(p.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&p.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a deadline or a deletion kills what it started too (a
        // shell's children would otherwise keep the output pipes open).
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Executed::SpawnFailed(e),
    };
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw);
    let out = child.stdout.take();
    let err = child.stderr.take();
    let log = p.log.clone();
    let read_out = tokio::spawn(async move { log.read_stream(out, "stdout").await });
    let log = p.log.clone();
    let read_err = tokio::spawn(async move { log.read_stream(err, "stderr").await });
    let flushing = CancellationToken::new();
    let log = p.log.clone();
    let flusher = tokio::spawn({
        let done = flushing.clone();
        async move { log.flush_until(done).await }
    });
    let sleep = async {
        match deadline {
            Some(d) => tokio::time::sleep(d).await,
            None => futures::future::pending().await,
        }
    };
    enum End {
        Exit(std::io::Result<std::process::ExitStatus>),
        Deadline,
        Cancel,
    }
    let end = tokio::select! {
        s = child.wait() => End::Exit(s),
        _ = sleep => End::Deadline,
        _ = token.cancelled() => End::Cancel,
    };
    // The group goes (leftover children of a finished process too, as with a container).
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    if !matches!(end, End::Exit(_)) {
        let _ = child.kill().await;
    }
    let stdout = read_out.await.unwrap_or_default();
    let stderr = read_err.await.unwrap_or_default();
    flushing.cancel();
    let _ = flusher.await;
    match end {
        End::Cancel => Executed::Cancelled,
        End::Deadline => Executed::DeadlineExceeded { stdout, stderr },
        End::Exit(Ok(status)) => Executed::Exited {
            code: status.code(),
            stdout,
            stderr,
        },
        End::Exit(Err(e)) => Executed::SpawnFailed(e),
    }
}

/// Resolves image, environment and volumes of the Job's one container.
async fn prepare(shared: &Shared, job: &Job, pod: &PodSpec) -> Result<Prepared, NotStarted> {
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    if pod.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(not_started(
            "Unsupported",
            "the test kubelet does not run init containers",
        ));
    }
    let [container] = pod.containers.as_slice() else {
        return Err(not_started(
            "Unsupported",
            format!(
                "the test kubelet runs Jobs with exactly one container; this one has {}",
                pod.containers.len()
            ),
        ));
    };
    let image = container.image.clone().unwrap_or_default();
    let Some(entrypoint) = shared.opts.images.get(&image) else {
        return Err(not_started(
            "ImageNotMapped",
            format!(
                "image {image:?} is not mapped to a local program (kubelet Options::image); mapped: {:?}",
                shared.opts.images.keys().collect::<Vec<_>>()
            ),
        ));
    };
    let pod_dir = shared.root.join("pods").join(&ns).join(&name);
    let cwd = pod_dir.join("cwd");
    std::fs::create_dir_all(&cwd).map_err(|e| {
        not_started(
            "FailedMount",
            format!("cannot create {}: {e}", cwd.display()),
        )
    })?;
    let mounts = mount_volumes(shared, &ns, pod, container, &pod_dir).await?;
    let env = environment(shared, &ns, &name, pod, container, &pod_dir).await?;
    let rewrite = |s: &str| rewrite_path(s, &mounts);
    let (program, args) = match container.command.as_deref() {
        Some([first, rest @ ..]) => (
            PathBuf::from(rewrite(first)),
            rest.iter()
                .chain(container.args.iter().flatten())
                .map(|a| rewrite(a))
                .collect(),
        ),
        _ => (
            entrypoint.clone(),
            container
                .args
                .iter()
                .flatten()
                .map(|a| rewrite(a))
                .collect(),
        ),
    };
    let cwd = match &container.working_dir {
        Some(w) => PathBuf::from(rewrite(w)),
        None => cwd,
    };
    // A Job of the same name that ran before left its log: this container's starts empty.
    let log_dir = pod_dir.join("logs");
    let _ = std::fs::remove_dir_all(&log_dir);
    std::fs::create_dir_all(&log_dir).map_err(|e| {
        not_started(
            "FailedMount",
            format!("cannot create {}: {e}", log_dir.display()),
        )
    })?;
    let log = ContainerLog::new(log_dir.join(format!("{}.log", container.name)));
    Ok(Prepared {
        program,
        args,
        env,
        cwd,
        log,
        log_dir,
    })
}

/// (container path, host path), longest container path first.
type Mounts = Vec<(String, PathBuf)>;

/// Rewrites a path (or `--flag=path`) under a mount or device path to the host path.
pub(crate) fn rewrite_path(arg: &str, mounts: &Mounts) -> String {
    let one = |s: &str| -> Option<String> {
        for (c, h) in mounts {
            let c = c.trim_end_matches('/');
            if s == c {
                return Some(h.display().to_string());
            }
            if let Some(rest) = s.strip_prefix(c)
                && rest.starts_with('/')
            {
                return Some(format!("{}{rest}", h.display()));
            }
        }
        None
    };
    if let Some(r) = one(arg) {
        return r;
    }
    if arg.starts_with('-')
        && let Some((flag, value)) = arg.split_once('=')
        && let Some(r) = one(value)
    {
        return format!("{flag}={r}");
    }
    arg.to_string()
}

async fn mount_volumes(
    shared: &Shared,
    ns: &str,
    pod: &PodSpec,
    container: &Container,
    pod_dir: &Path,
) -> Result<Mounts, NotStarted> {
    let volumes: BTreeMap<&str, &Volume> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.as_str(), v))
        .collect();
    let find = |name: &str| {
        volumes.get(name).copied().ok_or_else(|| {
            not_started(
                "FailedMount",
                format!("the container uses volume {name:?} which the pod does not define"),
            )
        })
    };
    let mut mounts: Mounts = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let v = find(&m.name)?;
        let mut host = volume_dir(shared, ns, v, pod_dir).await?;
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if sub.split('/').any(|c| c == "..") || sub.starts_with('/') {
                return Err(not_started(
                    "FailedMount",
                    format!("subPath {sub:?} must be a relative path without '..'"),
                ));
            }
            host = host.join(sub);
            std::fs::create_dir_all(&host).map_err(|e| {
                not_started(
                    "FailedMount",
                    format!("cannot create {}: {e}", host.display()),
                )
            })?;
        }
        mounts.push((m.mount_path.clone(), host));
    }
    for d in container.volume_devices.iter().flatten() {
        let v = find(&d.name)?;
        let Some(claim) = &v.persistent_volume_claim else {
            return Err(not_started(
                "FailedMount",
                format!(
                    "volumeDevices entry {:?} must name a persistentVolumeClaim volume",
                    d.name
                ),
            ));
        };
        let key = claim_key(shared, ns, &claim.claim_name).await?;
        mounts.push((
            d.device_path.clone(),
            storage::block_file(&shared.root, &key),
        ));
    }
    mounts.sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
    Ok(mounts)
}

async fn claim_key(shared: &Shared, ns: &str, claim: &str) -> Result<String, NotStarted> {
    storage::wait_volume(shared, ns, claim, shared.opts.wait_limit)
        .await
        .map_err(|e| {
            not_started(
                "FailedMount",
                format!("PersistentVolumeClaim {ns}/{claim}: {e}"),
            )
        })
}

/// The host directory of a mounted volume (ConfigMap/Secret contents written out).
async fn volume_dir(
    shared: &Shared,
    ns: &str,
    v: &Volume,
    pod_dir: &Path,
) -> Result<PathBuf, NotStarted> {
    let fail = |m: String| not_started("FailedMount", m);
    if let Some(claim) = &v.persistent_volume_claim {
        let key = claim_key(shared, ns, &claim.claim_name).await?;
        let dir = storage::fs_dir(&shared.root, &key);
        std::fs::create_dir_all(&dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        return Ok(dir);
    }
    let dir = pod_dir.join("volumes").join(&v.name);
    std::fs::create_dir_all(&dir)
        .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let items;
    if v.empty_dir.is_some() {
        return Ok(dir);
    } else if let Some(cm) = &v.config_map {
        let optional = cm.optional == Some(true);
        let api: Api<ConfigMap> = Api::namespaced(shared.client.clone(), ns);
        match api.get_opt(&cm.name).await {
            Ok(Some(obj)) => {
                for (k, s) in obj.data.unwrap_or_default() {
                    files.push((k, s.into_bytes()));
                }
                for (k, b) in obj.binary_data.unwrap_or_default() {
                    files.push((k, b.0));
                }
            }
            Ok(None) if optional => {}
            Ok(None) => {
                return Err(fail(format!(
                    "ConfigMap {ns}/{} of volume {:?} not found",
                    cm.name, v.name
                )));
            }
            Err(e) => return Err(fail(format!("cannot read ConfigMap {ns}/{}: {e}", cm.name))),
        }
        items = cm.items.clone();
    } else if let Some(sec) = &v.secret {
        let sname = sec.secret_name.clone().unwrap_or_default();
        let optional = sec.optional == Some(true);
        let api: Api<Secret> = Api::namespaced(shared.client.clone(), ns);
        match api.get_opt(&sname).await {
            Ok(Some(obj)) => {
                for (k, b) in obj.data.unwrap_or_default() {
                    files.push((k, b.0));
                }
                for (k, s) in obj.string_data.unwrap_or_default() {
                    files.push((k, s.into_bytes()));
                }
            }
            Ok(None) if optional => {}
            Ok(None) => {
                return Err(fail(format!(
                    "Secret {ns}/{sname} of volume {:?} not found",
                    v.name
                )));
            }
            Err(e) => return Err(fail(format!("cannot read Secret {ns}/{sname}: {e}"))),
        }
        items = sec.items.clone();
    } else {
        return Err(fail(format!(
            "volume {:?}: the test kubelet mounts persistentVolumeClaim, configMap, secret and emptyDir volumes only",
            v.name
        )));
    }
    let selected: Vec<(String, Vec<u8>)> = match items {
        Some(items) => {
            let mut out = Vec::new();
            for item in items {
                let Some((_, bytes)) = files.iter().find(|(k, _)| *k == item.key) else {
                    return Err(fail(format!(
                        "volume {:?}: key {:?} not found",
                        v.name, item.key
                    )));
                };
                out.push((item.path.clone(), bytes.clone()));
            }
            out
        }
        None => files,
    };
    for (path, bytes) in selected {
        if path.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(fail(format!("volume {:?}: bad file path {path:?}", v.name)));
        }
        let file = dir.join(&path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| fail(format!("cannot create {}: {e}", parent.display())))?;
        }
        std::fs::write(&file, bytes)
            .map_err(|e| fail(format!("cannot write {}: {e}", file.display())))?;
    }
    Ok(dir)
}

/// The process environment: PATH, HOME, HOSTNAME, KUBECONFIG, the options' env, then the
/// container's `envFrom` and `env` (later entries win, as in Kubernetes).
async fn environment(
    shared: &Shared,
    ns: &str,
    pod_name: &str,
    pod: &PodSpec,
    container: &Container,
    pod_dir: &Path,
) -> Result<Vec<(String, String)>, NotStarted> {
    let fail = |m: String| not_started("CreateContainerConfigError", m);
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(e, _)| *e != k);
        env.push((k, v));
    };
    if let Ok(path) = std::env::var("PATH") {
        set(&mut env, "PATH".into(), path);
    }
    set(&mut env, "HOME".into(), pod_dir.display().to_string());
    set(&mut env, "HOSTNAME".into(), pod_name.into());
    set(
        &mut env,
        "KUBECONFIG".into(),
        shared.opts.kubeconfig.display().to_string(),
    );
    for (k, v) in &shared.opts.env {
        set(&mut env, k.clone(), v.clone());
    }
    let secrets: Api<Secret> = Api::namespaced(shared.client.clone(), ns);
    let maps: Api<ConfigMap> = Api::namespaced(shared.client.clone(), ns);
    let secret_data = |s: Secret| -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, b)| (k, String::from_utf8_lossy(&b.0).into_owned()))
            .collect();
        out.extend(s.string_data.unwrap_or_default());
        out
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(r) = &from.secret_ref {
            match secrets.get_opt(&r.name).await {
                Ok(Some(s)) => secret_data(s),
                Ok(None) if r.optional == Some(true) => BTreeMap::new(),
                Ok(None) => return Err(fail(format!("secret \"{}\" not found", r.name))),
                Err(e) => return Err(fail(format!("cannot read Secret {ns}/{}: {e}", r.name))),
            }
        } else if let Some(r) = &from.config_map_ref {
            match maps.get_opt(&r.name).await {
                Ok(Some(c)) => c.data.unwrap_or_default(),
                Ok(None) if r.optional == Some(true) => BTreeMap::new(),
                Ok(None) => return Err(fail(format!("configmap \"{}\" not found", r.name))),
                Err(e) => {
                    return Err(fail(format!("cannot read ConfigMap {ns}/{}: {e}", r.name)));
                }
            }
        } else {
            BTreeMap::new()
        };
        for (k, v) in data {
            set(&mut env, format!("{prefix}{k}"), v);
        }
    }
    for e in container.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            Some(v.clone())
        } else if let Some(from) = &e.value_from {
            if let Some(r) = &from.secret_key_ref {
                let optional = r.optional == Some(true);
                match secrets.get_opt(&r.name).await {
                    Ok(Some(s)) => match secret_data(s).remove(&r.key) {
                        Some(v) => Some(v),
                        None if optional => None,
                        None => {
                            return Err(fail(format!(
                                "couldn't find key {} in Secret {ns}/{}",
                                r.key, r.name
                            )));
                        }
                    },
                    Ok(None) if optional => None,
                    Ok(None) => return Err(fail(format!("secret \"{}\" not found", r.name))),
                    Err(err) => {
                        return Err(fail(format!("cannot read Secret {ns}/{}: {err}", r.name)));
                    }
                }
            } else if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional == Some(true);
                match maps.get_opt(&r.name).await {
                    Ok(Some(c)) => match c.data.unwrap_or_default().remove(&r.key) {
                        Some(v) => Some(v),
                        None if optional => None,
                        None => {
                            return Err(fail(format!(
                                "couldn't find key {} in ConfigMap {ns}/{}",
                                r.key, r.name
                            )));
                        }
                    },
                    Ok(None) if optional => None,
                    Ok(None) => return Err(fail(format!("configmap \"{}\" not found", r.name))),
                    Err(err) => {
                        return Err(fail(format!(
                            "cannot read ConfigMap {ns}/{}: {err}",
                            r.name
                        )));
                    }
                }
            } else if let Some(f) = &from.field_ref {
                Some(match f.field_path.as_str() {
                    "metadata.namespace" => ns.to_string(),
                    "metadata.name" => pod_name.to_string(),
                    "spec.serviceAccountName" => {
                        pod.service_account_name.clone().unwrap_or_default()
                    }
                    "spec.nodeName" => crate::FIELD_MANAGER.to_string(),
                    other => {
                        return Err(fail(format!(
                            "env {}: fieldRef {other:?} is not supported by the test kubelet",
                            e.name
                        )));
                    }
                })
            } else {
                return Err(fail(format!(
                    "env {}: resourceFieldRef is not supported by the test kubelet",
                    e.name
                )));
            }
        } else {
            Some(String::new())
        };
        if let Some(v) = value {
            set(&mut env, e.name.clone(), v);
        }
    }
    Ok(env)
}

/// Creates the Pod named after the Job (labels and owner as the Job controller sets them).
async fn create_pod(shared: &Shared, job: &Job, spec: &PodSpec, start_time: &str, log_dir: &Path) {
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let uid = job.uid().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = job
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert("batch.kubernetes.io/job-name".into(), name.clone());
    labels.insert("job-name".into(), name.clone());
    labels.insert("batch.kubernetes.io/controller-uid".into(), uid.clone());
    labels.insert("controller-uid".into(), uid.clone());
    let mut spec = serde_json::to_value(spec).unwrap_or_else(|_| json!({}));
    spec["nodeName"] = json!(FIELD_MANAGER);
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": serde_json::to_value(ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                tvk_test_apiserver::ANNOTATION_LOG_DIR.to_string(),
                log_dir.display().to_string(),
            )])),
            ..Default::default()
        }).unwrap_or_default(),
        "spec": spec,
    });
    let mut pod = pod;
    pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "Job",
        "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}]);
    let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(shared.client.clone(), &ns);
    let Ok(pod_obj) = serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(pod) else {
        return;
    };
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let created = match api.create(&pp, &pod_obj).await {
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // A Pod of an earlier Job of the same name: replace it.
            let _ = api.delete(&name, &Default::default()).await;
            api.create(&pp, &pod_obj).await
        }
        other => other,
    };
    if let Err(e) = created {
        tracing::warn!("kubelet: cannot create Pod {ns}/{name}: {e}");
        return;
    }
    let status = json!({"status": {"phase": "Running", "startTime": start_time,
        "containerStatuses": [{"name": spec_container_name(&pod_obj), "ready": true, "restartCount": 0,
            "image": "", "imageID": "", "state": {"running": {"startedAt": start_time}}}]}});
    let _ = api
        .patch_status(
            &name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            &Patch::Merge(&status),
        )
        .await;
}

fn spec_container_name(pod: &k8s_openapi::api::core::v1::Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Writes the output and the final state into the Pod (if it was created).
async fn finish_pod(shared: &Shared, ns: &str, name: &str, run: &JobRun) {
    let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(shared.client.clone(), ns);
    let Ok(Some(pod)) = api.get_opt(name).await else {
        return;
    };
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let meta = json!({"metadata": {"annotations": {
        ANNOTATION_STDOUT: tail(&run.stdout, ANNOTATION_TAIL),
        ANNOTATION_STDERR: tail(&run.stderr, ANNOTATION_TAIL)}}});
    if let Err(e) = api.patch(name, &pp, &Patch::Merge(&meta)).await {
        tracing::warn!("kubelet: cannot annotate Pod {ns}/{name}: {e}");
    }
    let time = now();
    let status = json!({"status": {
        "phase": if run.succeeded { "Succeeded" } else { "Failed" },
        "reason": if run.reason == "DeadlineExceeded" { json!("DeadlineExceeded") } else { Value::Null },
        "containerStatuses": [{"name": spec_container_name(&pod), "ready": false, "restartCount": 0,
            "image": "", "imageID": "",
            "state": {"terminated": {"exitCode": run.exit_code.unwrap_or(137),
                "reason": if run.succeeded { "Completed" } else { "Error" },
                "message": run.message, "finishedAt": time}}}]}});
    let _ = api.patch_status(name, &pp, &Patch::Merge(&status)).await;
}

#[cfg(test)]
mod tests {
    use super::{failure_detail, rewrite_path};
    use std::path::PathBuf;

    #[test]
    fn args_under_mounts_are_rewritten() {
        let mounts = vec![
            ("/mnt/target/sub".to_string(), PathBuf::from("/h/other")),
            ("/mnt/target".to_string(), PathBuf::from("/h/t")),
            ("/dev/tvk-volume".to_string(), PathBuf::from("/h/v.img")),
        ];
        assert_eq!(rewrite_path("/mnt/target", &mounts), "/h/t");
        assert_eq!(rewrite_path("/mnt/target/x/y", &mounts), "/h/t/x/y");
        assert_eq!(rewrite_path("/mnt/target/sub/z", &mounts), "/h/other/z");
        assert_eq!(rewrite_path("/mnt/targetx", &mounts), "/mnt/targetx");
        assert_eq!(
            rewrite_path("--source=/dev/tvk-volume", &mounts),
            "--source=/h/v.img"
        );
        assert_eq!(
            rewrite_path("a=/dev/tvk-volume", &mounts),
            "a=/dev/tvk-volume"
        );
        assert_eq!(
            rewrite_path("s3://b/mnt/target", &mounts),
            "s3://b/mnt/target"
        );
    }

    #[test]
    fn failure_message_from_result_line_else_stderr() {
        let out = "{\"event\":\"start\"}\n{\"event\":\"result\",\"ok\":false,\"error\":\"bucket gone\"}\n";
        assert_eq!(failure_detail(out, "noise"), "bucket gone");
        assert_eq!(failure_detail("plain", "a\nb\n\nc\n"), "a\nb\nc");
        assert_eq!(failure_detail("", ""), "no error output");
    }
}
