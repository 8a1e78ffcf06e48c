//! The `pods/{name}/exec` subresource over a WebSocket, as kube's `Api::<Pod>::exec` and
//! `kubectl exec` speak it: subprotocol `v5.channel.k8s.io` or `v4.channel.k8s.io`, binary
//! frames whose first byte is the channel (1 stdout, 2 stderr, 3 the final `Status` as JSON).
//!
//! There is no kubelet, so what "runs in the container" is either the handler a test
//! registered with [`crate::ApiServer::on_exec`] or, by default, the command run as a local
//! process (argv as given, no shell unless the command names one) so hooks can have real
//! effects such as touching a file. Every exec is recorded ([`crate::ApiServer::execs`]) with
//! its outcome and start/finish instants, so tests can assert order, overlap and cancellation.

use crate::error::ApiError;
use axum::{
    body::Bytes,
    extract::ws::{Message, WebSocket},
};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::{
    process::Stdio,
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};
use tokio::{io::AsyncReadExt, sync::mpsc};

/// The subprotocols served, in order of preference (v5 adds stream-close signals).
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;

/// One exec as the apiserver received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub pod: String,
    /// The container (named by the client, or the pod's only container).
    pub container: String,
    /// Program and arguments, as the `command` query parameters listed them.
    pub command: Vec<String>,
}

/// What a command "in the container" produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecResult {
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// Exit code; non-zero is answered as a `NonZeroExitCode` failure with an `ExitCode` cause.
    pub exit: i32,
    /// The command could not be started (e.g. no such executable): answered as an
    /// `InternalError` failure with this message, as the kubelet does.
    pub start_error: Option<String>,
}

impl ExecResult {
    /// A command that exited with `exit`, having written `stdout` and `stderr`.
    pub fn exited(exit: i32, stdout: impl Into<Vec<u8>>, stderr: impl Into<Vec<u8>>) -> Self {
        Self {
            stdout: stdout.into(),
            stderr: stderr.into(),
            exit,
            start_error: None,
        }
    }
}

/// How an exec ended, as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutcome {
    /// The command finished with this exit code (128 + signal when a signal ended it).
    Exited(i32),
    /// The command could not be started.
    StartFailed(String),
    /// The client closed the connection before the command finished; a local process was
    /// killed (its whole process group).
    Cancelled,
}

/// One exec the server served.
#[derive(Debug, Clone)]
pub struct ExecRecord {
    /// What was asked.
    pub request: ExecRequest,
    /// The negotiated subprotocol.
    pub protocol: String,
    /// How it ended.
    pub outcome: ExecOutcome,
    /// When the command started.
    pub started: Instant,
    /// When it ended (or was cancelled).
    pub finished: Instant,
}

/// A test's exec handler (runs on a blocking thread: it may sleep).
pub type ExecHandler = Arc<dyn Fn(&ExecRequest) -> ExecResult + Send + Sync>;

/// The handler and the record of execs.
#[derive(Default)]
pub struct ExecState {
    handler: Mutex<Option<ExecHandler>>,
    records: Mutex<Vec<ExecRecord>>,
}

impl std::fmt::Debug for ExecState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecState").finish_non_exhaustive()
    }
}

impl ExecState {
    /// Replaces the handler (None: run commands as local processes).
    pub fn set_handler(&self, handler: Option<ExecHandler>) {
        *self.handler.lock().unwrap_or_else(PoisonError::into_inner) = handler;
    }

    fn handler(&self) -> Option<ExecHandler> {
        self.handler
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every exec served so far, in the order they ended.
    pub fn records(&self) -> Vec<ExecRecord> {
        let mut records = self
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        records.sort_by_key(|r| r.finished);
        records
    }

    fn record(&self, record: ExecRecord) {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }
}

/// The exec parameters of a request, checked against the pod as a real apiserver and kubelet
/// check them. `query` is the raw query string (`command` repeats).
pub fn parse_request(namespace: &str, pod: &Value, query: &str) -> Result<ExecRequest, ApiError> {
    let mut command = Vec::new();
    let mut container = None;
    let (mut stdin, mut stdout, mut stderr, mut tty) = (false, false, false, false);
    let flag = |v: &str| v == "true" || v == "1";
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "command" => command.push(value.into_owned()),
            "container" => container = Some(value.into_owned()),
            "stdin" => stdin = flag(&value),
            "stdout" => stdout = flag(&value),
            "stderr" => stderr = flag(&value),
            "tty" => tty = flag(&value),
            _ => {}
        }
    }
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if command.is_empty() {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    if stdin || tty {
        return Err(ApiError::bad_request(
            "stdin and tty are not supported by the test apiserver's exec (only stdout and stderr are streamed)",
        ));
    }
    if !stdout && !stderr {
        return Err(ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    let containers: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let container = match container {
        Some(c) if containers.contains(&c.as_str()) => c,
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        None => match containers.as_slice() {
            [only] => (*only).to_string(),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    containers.join(" ")
                )));
            }
        },
    };
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    if matches!(phase, "Succeeded" | "Failed") {
        return Err(ApiError::bad_request(format!(
            "cannot exec into a container in a completed pod; current phase is {phase}"
        )));
    }
    let status_says_not_running = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(container.as_str()))
        })
        .is_some_and(|c| c.pointer("/state/running").is_none());
    if phase != "Running" || status_says_not_running {
        return Err(ApiError::bad_request(format!(
            "unable to upgrade connection: container not found (\"{container}\")"
        )));
    }
    Ok(ExecRequest {
        namespace: namespace.to_string(),
        pod: name,
        container,
        command,
    })
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(Bytes::from(v))
}

/// The `Status` sent on channel 3 when the command ended.
fn status_of(command: &[String], exit: i32, start_error: Option<&str>) -> Value {
    if let Some(message) = start_error {
        return json!({
            "metadata": {}, "status": "Failure", "reason": "InternalError", "code": 500,
            "message": format!("error executing command in container: failed to exec in container: {message}"),
        });
    }
    if exit == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "reason": "NonZeroExitCode",
        "message": format!(
            "command terminated with non-zero exit code: error executing command {command:?}, exit code {exit}"
        ),
        "details": {"causes": [{"reason": "ExitCode", "message": exit.to_string()}]},
    })
}

/// Serves one upgraded exec connection to its end.
pub async fn serve(
    socket: WebSocket,
    protocol: String,
    request: ExecRequest,
    state: Arc<ExecState>,
) {
    let (mut sink, mut incoming) = socket.split();
    let started = Instant::now();
    // The apiserver opens each stream with an empty frame (clients skip frames of one byte).
    for ch in [STDOUT, STDERR, STATUS] {
        if sink.send(frame(ch, &[])).await.is_err() {
            return;
        }
    }
    // Any close, error or end of the client's side cancels the command.
    let client_gone = async move {
        while let Some(msg) = incoming.next().await {
            match msg {
                Ok(Message::Close(_)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Vec<u8>)>(64);
    // Boxed so that dropping it (below) really drops it: that kills a running local process.
    let mut work = Box::pin(run(request.clone(), state.handler(), out_tx));
    tokio::pin!(client_gone);
    let mut finished: Option<(i32, Option<String>)> = None;
    let mut out_open = true;
    let record = |outcome| ExecRecord {
        request: request.clone(),
        protocol: protocol.clone(),
        outcome,
        started,
        finished: Instant::now(),
    };
    loop {
        tokio::select! {
            () = &mut client_gone => break,
            chunk = out_rx.recv(), if out_open => match chunk {
                Some((ch, data)) => {
                    if sink.send(frame(ch, &data)).await.is_err() {
                        break;
                    }
                }
                None => out_open = false,
            },
            result = &mut work, if finished.is_none() => finished = Some(result),
        }
        if !out_open && let Some((exit, start_error)) = &finished {
            // Recorded before the status is sent: a client that reads the record on receiving
            // the status (or starts its next exec) sees this one finished.
            state.record(record(match start_error {
                Some(m) => ExecOutcome::StartFailed(m.clone()),
                None => ExecOutcome::Exited(*exit),
            }));
            let status = status_of(&request.command, *exit, start_error.as_deref());
            // A client that left now still saw the output; nothing more to do either way.
            let _ = sink
                .send(frame(STATUS, status.to_string().as_bytes()))
                .await;
            let _ = sink.close().await;
            return;
        }
    }
    // The client went away first: dropping `work` kills a still-running local process group
    // (see `run_process`) before the cancellation is recorded.
    drop(work);
    state.record(record(ExecOutcome::Cancelled));
}

/// Runs the command (handler or local process), streaming output into `out`; returns the exit
/// code and a start error. `out` is dropped when the output is complete.
async fn run(
    request: ExecRequest,
    handler: Option<ExecHandler>,
    out: mpsc::Sender<(u8, Vec<u8>)>,
) -> (i32, Option<String>) {
    match handler {
        Some(handler) => {
            let result = match tokio::task::spawn_blocking(move || handler(&request)).await {
                Ok(r) => r,
                Err(e) => ExecResult {
                    exit: 1,
                    start_error: Some(format!("the test's exec handler failed: {e}")),
                    ..ExecResult::default()
                },
            };
            for (ch, data) in [(STDOUT, result.stdout), (STDERR, result.stderr)] {
                if !data.is_empty() && out.send((ch, data)).await.is_err() {
                    break;
                }
            }
            (result.exit, result.start_error)
        }
        None => run_process(&request, out).await,
    }
}

/// Kills the process group of a local command unless disarmed (the command finished).
struct GroupKiller(Option<u32>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pid) = self
            .0
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            // Already gone is fine: nothing left to kill.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

async fn run_process(
    request: &ExecRequest,
    out: mpsc::Sender<(u8, Vec<u8>)>,
) -> (i32, Option<String>) {
    let Some((program, args)) = request.command.split_first() else {
        return (1, Some("no command".to_string()));
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("HOSTNAME", &request.pod)
        .env("TVK_EXEC_NAMESPACE", &request.namespace)
        .env("TVK_EXEC_POD", &request.pod)
        .env("TVK_EXEC_CONTAINER", &request.container)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a cancelled `sh -c 'sleep 60'` takes its children along.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (126, Some(format!("exec: {program:?}: {e}"))),
    };
    let mut killer = GroupKiller(child.id());
    let pump = |reader: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>, ch: u8| {
        let out = out.clone();
        async move {
            let Some(mut reader) = reader else { return };
            let mut buf = vec![0u8; 8192];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if out.send((ch, buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    };
    let stdout = pump(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        STDOUT,
    );
    let stderr = pump(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        STDERR,
    );
    drop(out);
    let (status, (), ()) = tokio::join!(child.wait(), stdout, stderr);
    killer.0 = None;
    match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            let code = s
                .code()
                .or_else(|| s.signal().map(|sig| 128 + sig))
                .unwrap_or(1);
            (code, None)
        }
        Err(e) => (1, Some(format!("failed to wait for {program:?}: {e}"))),
    }
}

/// The subprotocol to answer with, or an error naming the ones served.
pub fn pick_protocol(requested: &[String]) -> Result<String, ApiError> {
    PROTOCOLS
        .iter()
        .find(|p| requested.iter().any(|r| r == *p))
        .map(|p| (*p).to_string())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "the test apiserver serves exec over the WebSocket subprotocols {} (asked for: {})",
                PROTOCOLS.join(", "),
                if requested.is_empty() {
                    "none".to_string()
                } else {
                    requested.join(", ")
                }
            ))
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pod(phase: &str, containers: &[&str]) -> Value {
        let cs: Vec<Value> = containers
            .iter()
            .map(|c| json!({"name": c, "image": "x"}))
            .collect();
        json!({"metadata": {"name": "p", "namespace": "a"}, "spec": {"containers": cs}, "status": {"phase": phase}})
    }

    #[test]
    fn parses_repeated_commands_and_checks_the_pod() {
        let r = parse_request(
            "a",
            &pod("Running", &["db"]),
            "command=sh&command=-c&command=echo+hi&stdout=true&stderr=true",
        )
        .unwrap();
        assert_eq!(r.command, ["sh", "-c", "echo hi"]);
        assert_eq!(r.container, "db");
        let err = |p: &Value, q: &str| parse_request("a", p, q).unwrap_err().message;
        assert!(
            err(&pod("Running", &["a", "b"]), "command=x&stdout=true")
                .contains("choose one of: [a b]")
        );
        assert!(
            err(&pod("Running", &["a"]), "command=x&stdout=true&container=z").contains("not valid")
        );
        assert!(
            err(&pod("Pending", &["a"]), "command=x&stdout=true").contains("container not found")
        );
        assert!(err(&pod("Succeeded", &["a"]), "command=x&stdout=true").contains("completed pod"));
        assert!(err(&pod("Running", &["a"]), "stdout=true").contains("at least 1 command"));
        assert!(err(&pod("Running", &["a"]), "command=x&stdin=true&stdout=true").contains("stdin"));
    }

    #[test]
    fn status_objects_match_the_kubelet_shapes() {
        assert_eq!(status_of(&[], 0, None)["status"], "Success");
        let s = status_of(&["false".into()], 3, None);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        assert_eq!(status_of(&[], 126, Some("nope"))["reason"], "InternalError");
        assert_eq!(
            pick_protocol(&["v4.channel.k8s.io".into()]).unwrap(),
            "v4.channel.k8s.io"
        );
        assert!(pick_protocol(&["channel.k8s.io".into()]).is_err());
    }
}
