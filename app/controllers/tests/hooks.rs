#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Hooks against tvk-test-apiserver: pods and Hooks seeded in the apiserver, commands exec'd
//! through `pods/exec` over its WebSocket — run as local processes (real effects: files
//! written, processes killed) or by a handler the test registers (exit codes, stderr, delays).

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tvk_api::backup_plan::BackupPlan;
use tvk_control_plane::{
    context::Context,
    hooks::{self, HookStage, HookTargets, StepResult},
};
use tvk_test_apiserver::{ApiServer, ExecOutcome, ExecRequest, ExecResult};

const APP: &str = "app";
const V1: &str = "triliovault.trilio.io/v1";

async fn setup() -> (ApiServer, Context) {
    tvk_control_plane::install_tls_provider();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let server = ApiServer::start().await.unwrap();
    for crd in tvk_api::crd::all() {
        server.create(serde_json::to_value(crd).unwrap()).unwrap();
    }
    server
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APP}}))
        .unwrap();
    let ctx = Context::new(server.client(), common::config("Namespaced"), None);
    (server, ctx)
}

fn pod(server: &ApiServer, name: &str, labels: Value, containers: &[&str], phase: &str) {
    let cs: Vec<Value> = containers
        .iter()
        .map(|c| json!({"name": c, "image": "busybox"}))
        .collect();
    server
        .create(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": APP, "labels": labels},
            "spec": {"containers": cs}, "status": {"phase": phase}}))
        .unwrap();
}

fn step(command: &[&str], extra: Value) -> Value {
    let mut s = json!({"execAction": {"command": command}});
    if let (Some(s), Some(extra)) = (s.as_object_mut(), extra.as_object()) {
        s.extend(extra.clone());
    }
    s
}

fn hook(server: &ApiServer, name: &str, pre: Option<Value>, post: Value) {
    let mut spec = json!({"post": post});
    if let Some(pre) = pre {
        spec["pre"] = pre;
    }
    server
        .create(json!({"apiVersion": V1, "kind": "Hook",
            "metadata": {"name": name, "namespace": APP}, "spec": spec}))
        .unwrap();
}

fn plan(mode: &str, hooks: Value) -> BackupPlan {
    serde_json::from_value(json!({"apiVersion": V1, "kind": "BackupPlan",
        "metadata": {"name": "plan", "namespace": APP},
        "spec": {"backupConfig": {"target": {"name": "t"}},
                 "hookConfig": {"mode": mode, "hooks": hooks}}}))
    .unwrap()
}

async fn identify(ctx: &Context, plan: &BackupPlan) -> HookTargets {
    hooks::identify(ctx, APP, plan).await.unwrap().unwrap()
}

fn pods_of(targets: &HookTargets, hook: usize) -> Vec<(String, Vec<String>)> {
    targets.hooks[hook]
        .pods
        .iter()
        .map(|p| (p.name.clone(), p.containers.clone()))
        .collect()
}

fn names(v: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    v.iter()
        .map(|(p, cs)| (p.to_string(), cs.iter().map(|c| c.to_string()).collect()))
        .collect()
}

#[tokio::test]
async fn identify_selects_pods_by_labels_or_regex_and_containers_by_regex() {
    let (server, ctx) = setup().await;
    pod(
        &server,
        "db-0",
        json!({"app": "db"}),
        &["mysql", "sidecar"],
        "Running",
    );
    pod(
        &server,
        "db-1",
        json!({"app": "db", "tier": "replica"}),
        &["mysql"],
        "Running",
    );
    pod(&server, "db-2", json!({"app": "db"}), &["mysql"], "Pending");
    pod(
        &server,
        "web-0",
        json!({"app": "web"}),
        &["nginx"],
        "Running",
    );
    pod(&server, "cache-0", json!({}), &["redis"], "Running");
    pod(&server, "done-cache", json!({}), &["redis"], "Succeeded");
    // A container in a crash loop cannot be exec'd into.
    server
        .create(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "db-3", "namespace": APP, "labels": {"app": "db"}},
            "spec": {"containers": [{"name": "mysql", "image": "x"}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "mysql", "image": "x",
                "imageID": "", "ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}))
        .unwrap();
    // A terminating pod (held by a finalizer) is not quiesced.
    server
        .create(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "db-9", "namespace": APP, "labels": {"app": "db"}, "finalizers": ["example.com/hold"]},
            "spec": {"containers": [{"name": "mysql", "image": "x"}]}, "status": {"phase": "Running"}}))
        .unwrap();
    server.delete("v1", "Pod", Some(APP), "db-9").unwrap();
    let post = step(&["true"], json!({}));
    hook(
        &server,
        "mysql",
        Some(step(&["true"], json!({}))),
        post.clone(),
    );
    hook(&server, "redis", None, post.clone());
    hook(&server, "mixed", None, post);

    let p = plan(
        "Sequential",
        json!([
            {"hook": {"name": "mysql"}, "podSelector": {"labels": [{"matchLabels": {"app": "db"}}]}, "containerRegex": "^mysql$"},
            {"hook": {"name": "redis", "namespace": APP}, "podSelector": {"regex": "^cache-"}},
            // Label selectors are ORed with each other and with the name regex.
            {"hook": {"name": "mixed"}, "podSelector": {
                "labels": [{"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]},
                           {"matchLabels": {"tier": "replica"}}],
                "regex": "cache"}},
        ]),
    );
    let targets = identify(&ctx, &p).await;
    assert_eq!(targets.namespace, APP);
    assert_eq!(targets.hooks[0].hook, "app/mysql");
    assert_eq!(
        pods_of(&targets, 0),
        names(&[("db-0", &["mysql"]), ("db-1", &["mysql"])])
    );
    assert_eq!(targets.hooks[0].pre.as_ref().unwrap().timeout_seconds, 30);
    assert!(targets.hooks[1].pre.is_none());
    assert_eq!(pods_of(&targets, 1), names(&[("cache-0", &["redis"])]));
    assert_eq!(
        pods_of(&targets, 2),
        names(&[
            ("cache-0", &["redis"]),
            ("db-1", &["mysql"]),
            ("web-0", &["nginx"])
        ])
    );
    let skipped: Vec<(String, Option<String>, String)> = targets
        .skipped
        .iter()
        .filter(|s| s.hook == "app/mysql")
        .map(|s| (s.pod.clone(), s.container.clone(), s.reason.clone()))
        .collect();
    assert_eq!(
        skipped,
        vec![
            ("db-2".into(), None, "pod phase is Pending".into()),
            (
                "db-3".into(),
                Some("mysql".into()),
                "the container is not running".into()
            ),
            ("db-9".into(), None, "the pod is terminating".into()),
        ]
    );
    assert_eq!(targets.pending_pods(), ["db-2"]);
    assert!(
        targets
            .skipped
            .iter()
            .any(|s| s.pod == "done-cache" && s.reason == "pod phase is Succeeded")
    );

    // Deterministic for the same cluster state, and safe to keep in an annotation.
    assert_eq!(identify(&ctx, &p).await, targets);
    let kept: HookTargets =
        serde_json::from_str(&serde_json::to_string(&targets).unwrap()).unwrap();
    assert_eq!(kept, targets);
    // identify only reads.
    let mark = server.mark();
    identify(&ctx, &p).await;
    assert_eq!(server.writes_since(mark), 0);
}

#[tokio::test]
async fn identify_names_what_the_user_must_fix() {
    let (server, ctx) = setup().await;
    pod(&server, "db-0", json!({"app": "db"}), &["mysql"], "Running");
    hook(&server, "ok", None, step(&["true"], json!({})));
    let err = |p: BackupPlan| {
        let ctx = &ctx;
        async move { hooks::identify(ctx, APP, &p).await.unwrap().unwrap_err() }
    };
    let missing = err(plan(
        "Sequential",
        json!([{"hook": {"name": "nope"}, "podSelector": {"regex": "db"}}]),
    ))
    .await;
    assert!(
        missing.contains("Hook app/nope, which does not exist"),
        "{missing}"
    );
    let bad_regex = err(plan(
        "Sequential",
        json!([{"hook": {"name": "ok"}, "podSelector": {"regex": "db("}}]),
    ))
    .await;
    assert!(
        bad_regex
            .contains("hookConfig.hooks[0].podSelector.regex is not a valid regular expression"),
        "{bad_regex}"
    );
    let bad_container = err(plan(
        "Sequential",
        json!([{"hook": {"name": "ok"}, "podSelector": {"regex": "db"}, "containerRegex": "["}]),
    ))
    .await;
    assert!(bad_container.contains("containerRegex"), "{bad_container}");
    let nothing = err(plan(
        "Sequential",
        json!([{"hook": {"name": "ok"}, "podSelector": {}}]),
    ))
    .await;
    assert!(nothing.contains("podSelector selects no pod"), "{nothing}");
    let bad_labels = err(plan(
        "Sequential",
        json!([{"hook": {"name": "ok"}, "podSelector": {"labels": [{"matchExpressions": [{"key": "a", "operator": "Near"}]}]}}]),
    ))
    .await;
    assert!(
        bad_labels.contains("not a valid label selector"),
        "{bad_labels}"
    );

    // No hookConfig: nothing to run.
    let none: BackupPlan = serde_json::from_value(json!({"apiVersion": V1, "kind": "BackupPlan",
        "metadata": {"name": "plan", "namespace": APP}, "spec": {"backupConfig": {"target": {"name": "t"}}}}))
    .unwrap();
    let targets = identify(&ctx, &none).await;
    assert!(targets.is_empty());
    assert!(
        hooks::quiesce(&ctx, &targets)
            .await
            .unwrap()
            .unwrap()
            .executions
            .is_empty()
    );
}

/// A shell command appending `<pod>/<container> <tag>` to `log`.
fn append(log: &std::path::Path, tag: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "echo \"$TVK_EXEC_POD/$TVK_EXEC_CONTAINER {tag}\" >> '{}'",
            log.display()
        ),
    ]
}

#[tokio::test]
async fn sequential_runs_pre_steps_in_plan_order_and_post_steps_in_reverse() {
    let (server, ctx) = setup().await;
    let log = server.temp_dir().join("hooks.log");
    pod(&server, "db-0", json!({"app": "db"}), &["mysql"], "Running");
    pod(&server, "db-1", json!({"app": "db"}), &["mysql"], "Running");
    pod(
        &server,
        "web-0",
        json!({"app": "web"}),
        &["nginx", "php"],
        "Running",
    );
    hook(
        &server,
        "first",
        Some(json!({"execAction": {"command": append(&log, "pre-first")}})),
        json!({"execAction": {"command": append(&log, "post-first")}}),
    );
    hook(
        &server,
        "second",
        Some(json!({"execAction": {"command": append(&log, "pre-second")}})),
        json!({"execAction": {"command": append(&log, "post-second")}}),
    );
    let p = plan(
        "Sequential",
        json!([
            {"hook": {"name": "first"}, "podSelector": {"labels": [{"matchLabels": {"app": "db"}}]}},
            {"hook": {"name": "second"}, "podSelector": {"regex": "^web"}},
        ]),
    );
    let targets = identify(&ctx, &p).await;
    let report = hooks::quiesce(&ctx, &targets).await.unwrap().unwrap();
    assert_eq!(report.executions.len(), 4);
    assert!(
        report
            .executions
            .iter()
            .all(|e| e.result == StepResult::Succeeded && e.attempts == 1)
    );
    let report = hooks::unquiesce(&ctx, &targets).await.unwrap().unwrap();
    assert!(report.executions.iter().all(|e| e.stage == HookStage::Post));
    let lines = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        lines.lines().collect::<Vec<_>>(),
        [
            "db-0/mysql pre-first",
            "db-1/mysql pre-first",
            "web-0/nginx pre-second",
            "web-0/php pre-second",
            "web-0/php post-second",
            "web-0/nginx post-second",
            "db-1/mysql post-first",
            "db-0/mysql post-first",
        ]
    );
    // One at a time: each exec started after the previous one ended.
    let execs = server.execs();
    assert_eq!(execs.len(), 8);
    for pair in execs.windows(2) {
        assert!(
            pair[1].started >= pair[0].finished,
            "execs overlap in Sequential mode"
        );
        assert_eq!(pair[0].outcome, ExecOutcome::Exited(0));
    }
    // Through the pods/exec subresource, with the container named.
    let calls = server.requests();
    let exec_calls: Vec<_> = calls.iter().filter(|r| r.path.ends_with("/exec")).collect();
    assert_eq!(exec_calls.len(), 8);
    assert_eq!(exec_calls[0].path, "/api/v1/namespaces/app/pods/db-0/exec");
    assert!(exec_calls[0].query.contains("container=mysql"));
}

#[tokio::test]
async fn parallel_runs_every_pod_at_once() {
    let (server, ctx) = setup().await;
    for i in 0..4 {
        pod(
            &server,
            &format!("db-{i}"),
            json!({"app": "db"}),
            &["mysql"],
            "Running",
        );
    }
    hook(
        &server,
        "slow",
        Some(step(&["freeze"], json!({}))),
        step(&["thaw"], json!({})),
    );
    server.on_exec(|_req: &ExecRequest| {
        std::thread::sleep(Duration::from_millis(400));
        ExecResult::exited(0, "", "")
    });
    let p = plan(
        "Parallel",
        json!([{"hook": {"name": "slow"}, "podSelector": {"labels": [{"matchLabels": {"app": "db"}}]}}]),
    );
    let targets = identify(&ctx, &p).await;
    let started = Instant::now();
    let report = hooks::quiesce(&ctx, &targets).await.unwrap().unwrap();
    assert_eq!(report.executions.len(), 4);
    let execs = server.execs();
    assert_eq!(execs.len(), 4);
    // All four were running at the same moment.
    let last_start = execs.iter().map(|e| e.started).max().unwrap();
    let first_end = execs.iter().map(|e| e.finished).min().unwrap();
    assert!(last_start < first_end, "the execs did not overlap");
    assert!(started.elapsed() < Duration::from_millis(1600));
    let report = hooks::unquiesce(&ctx, &targets).await.unwrap().unwrap();
    let mut pods: Vec<_> = report.executions.iter().map(|e| e.pod.clone()).collect();
    pods.sort();
    assert_eq!(pods, ["db-0", "db-1", "db-2", "db-3"]);
}

#[tokio::test]
async fn a_failed_attempt_is_retried_until_it_succeeds() {
    let (server, ctx) = setup().await;
    pod(&server, "db-0", json!({"app": "db"}), &["mysql"], "Running");
    hook(
        &server,
        "flaky",
        Some(step(&["freeze"], json!({"maxRetryCount": 2}))),
        step(&["thaw"], json!({})),
    );
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    server.on_exec(move |_req: &ExecRequest| {
        if seen.fetch_add(1, Ordering::SeqCst) < 2 {
            ExecResult::exited(1, "", "table locked by another session")
        } else {
            ExecResult::exited(0, "frozen", "")
        }
    });
    let p = plan(
        "Sequential",
        json!([{"hook": {"name": "flaky"}, "podSelector": {"regex": "db"}}]),
    );
    let targets = identify(&ctx, &p).await;
    let report = hooks::quiesce(&ctx, &targets).await.unwrap().unwrap();
    assert_eq!(report.executions.len(), 1);
    assert_eq!(report.executions[0].attempts, 3);
    assert_eq!(report.executions[0].result, StepResult::Succeeded);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        server
            .execs()
            .iter()
            .map(|e| e.outcome.clone())
            .collect::<Vec<_>>(),
        [
            ExecOutcome::Exited(1),
            ExecOutcome::Exited(1),
            ExecOutcome::Exited(0)
        ]
    );
}

#[tokio::test]
async fn a_non_zero_exit_fails_with_the_stderr_tail_after_the_retries() {
    let (server, ctx) = setup().await;
    pod(&server, "db-0", json!({"app": "db"}), &["mysql"], "Running");
    // Real commands: the exit code and stderr come back through the exec's status channel.
    let noise = "x".repeat(3000);
    hook(
        &server,
        "lock",
        Some(step(
            &[
                "sh",
                "-c",
                &format!("echo starting; echo {noise} >&2; echo 'cannot lock tables' >&2; exit 4"),
            ],
            json!({"maxRetryCount": 1}),
        )),
        step(&["true"], json!({})),
    );
    let p = plan(
        "Sequential",
        json!([{"hook": {"name": "lock"}, "podSelector": {"regex": "db"}}]),
    );
    let targets = identify(&ctx, &p).await;
    let reason = hooks::quiesce(&ctx, &targets).await.unwrap().unwrap_err();
    assert!(
        reason.contains("pre hook app/lock in pod db-0 container mysql failed after 2 attempts: exited with code 4"),
        "{reason}"
    );
    assert!(reason.contains("cannot lock tables"), "{reason}");
    // Only the tail of a long stderr.
    assert!(reason.len() < 1000, "{} bytes", reason.len());
    assert_eq!(server.execs().len(), 2);

    // A program that does not exist: the apiserver's InternalError, not retried forever.
    hook(
        &server,
        "missing",
        Some(step(&["/nonexistent/quiesce"], json!({}))),
        step(&["true"], json!({})),
    );
    let p = plan(
        "Sequential",
        json!([{"hook": {"name": "missing"}, "podSelector": {"regex": "db"}}]),
    );
    let targets = identify(&ctx, &p).await;
    let reason = hooks::quiesce(&ctx, &targets).await.unwrap().unwrap_err();
    assert!(reason.contains("the command could not run"), "{reason}");
    assert!(reason.contains("/nonexistent/quiesce"), "{reason}");
}

#[tokio::test]
async fn a_hanging_command_times_out_and_is_cancelled() {
    let (server, ctx) = setup().await;
    pod(&server, "db-0", json!({"app": "db"}), &["mysql"], "Running");
    let pid_file = server.temp_dir().join("sleep.pid");
    hook(
        &server,
        "hang",
        Some(step(
            &[
                "sh",
                "-c",
                &format!("sleep 60 & echo $! > '{}'; wait", pid_file.display()),
            ],
            json!({"timeoutSeconds": 1}),
        )),
        step(&["true"], json!({})),
    );
    let p = plan(
        "Sequential",
        json!([{"hook": {"name": "hang"}, "podSelector": {"regex": "db"}}]),
    );
    let targets = identify(&ctx, &p).await;
    let started = Instant::now();
    let reason = hooks::quiesce(&ctx, &targets).await.unwrap().unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        reason.contains("failed after 1 attempt: timed out after 1s (the exec was cancelled)"),
        "{reason}"
    );
    // The apiserver saw the client go away and killed the command's process group.
    let mut cancelled = false;
    for _ in 0..50 {
        if server
            .execs()
            .iter()
            .any(|e| e.outcome == ExecOutcome::Cancelled)
        {
            cancelled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        cancelled,
        "the exec was not cancelled: {:?}",
        server.execs()
    );
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let proc_dir = std::path::PathBuf::from(format!("/proc/{}", pid.trim()));
    let mut gone = false;
    for _ in 0..50 {
        // Gone, or a zombie waiting for its reaper.
        let state = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
        if state.is_empty() || state.contains(") Z") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the hook's `sleep 60` still runs");
}

#[tokio::test]
async fn an_ignored_failure_is_a_warning() {
    let (server, ctx) = setup().await;
    pod(&server, "db-0", json!({"app": "db"}), &["mysql"], "Running");
    pod(&server, "db-1", json!({"app": "db"}), &["mysql"], "Running");
    hook(
        &server,
        "best-effort",
        Some(step(
            &["sh", "-c", "echo 'no flush' >&2; exit 1"],
            json!({"ignoreFailure": true}),
        )),
        step(&["sh", "-c", "exit 2"], json!({"ignoreFailure": true})),
    );
    let p = plan(
        "Sequential",
        json!([{"hook": {"name": "best-effort"}, "podSelector": {"regex": "db"}}]),
    );
    let targets = identify(&ctx, &p).await;
    let report = hooks::quiesce(&ctx, &targets).await.unwrap().unwrap();
    // Both pods ran: an ignored failure does not stop the sequence.
    assert_eq!(report.executions.len(), 2);
    let warnings = report.warnings();
    assert_eq!(warnings.len(), 2);
    assert!(warnings[0].contains("pod db-0"), "{warnings:?}");
    assert!(warnings[0].contains("no flush"), "{warnings:?}");
    assert!(warnings[0].contains("ignoreFailure"), "{warnings:?}");
    let report = hooks::unquiesce(&ctx, &targets).await.unwrap().unwrap();
    assert!(matches!(
        report.executions[0].result,
        StepResult::FailureIgnored { .. }
    ));
}

#[tokio::test]
async fn post_steps_run_everywhere_after_a_pre_failure_and_despite_post_failures() {
    let (server, ctx) = setup().await;
    for name in ["db-0", "db-1", "db-2"] {
        pod(&server, name, json!({"app": "db"}), &["mysql"], "Running");
    }
    hook(
        &server,
        "freeze",
        Some(step(&["freeze"], json!({}))),
        step(&["thaw"], json!({})),
    );
    // db-1's pre step fails; db-0's post step fails.
    server.on_exec(
        |req: &ExecRequest| match (req.pod.as_str(), req.command[0].as_str()) {
            ("db-1", "freeze") => ExecResult::exited(5, "", "fs busy"),
            ("db-0", "thaw") => ExecResult::exited(6, "", "not frozen"),
            _ => ExecResult::exited(0, "", ""),
        },
    );
    let p = plan(
        "Sequential",
        json!([{"hook": {"name": "freeze"}, "podSelector": {"regex": "db"}}]),
    );
    let targets = identify(&ctx, &p).await;
    let reason = hooks::quiesce(&ctx, &targets).await.unwrap().unwrap_err();
    assert!(
        reason.starts_with("failed to quiesce the application: pre hook app/freeze in pod db-1"),
        "{reason}"
    );
    assert!(
        reason.contains("exited with code 5; stderr: fs busy"),
        "{reason}"
    );
    // Sequential stops at the failure: db-2 was never quiesced.
    let pre: Vec<String> = server
        .execs()
        .iter()
        .map(|e| e.request.pod.clone())
        .collect();
    assert_eq!(pre, ["db-0", "db-1"]);

    let reason = hooks::unquiesce(&ctx, &targets).await.unwrap().unwrap_err();
    assert!(
        reason.starts_with("failed to unquiesce the application: post hook app/freeze in pod db-0"),
        "{reason}"
    );
    assert!(reason.contains("not frozen"), "{reason}");
    let post: Vec<String> = server
        .execs()
        .iter()
        .filter(|e| e.request.command[0] == "thaw")
        .map(|e| e.request.pod.clone())
        .collect();
    // Every pod, in reverse order, db-0's failure notwithstanding.
    assert_eq!(post, ["db-2", "db-1", "db-0"]);

    // Parallel: every pre step runs and every failure is named.
    let p = plan(
        "Parallel",
        json!([{"hook": {"name": "freeze"}, "podSelector": {"regex": "db"}}]),
    );
    let targets = identify(&ctx, &p).await;
    let before = server.execs().len();
    let reason = hooks::quiesce(&ctx, &targets).await.unwrap().unwrap_err();
    assert!(reason.contains("pod db-1"), "{reason}");
    assert_eq!(server.execs().len() - before, 3);
}

#[tokio::test]
async fn a_pod_gone_after_identification_is_a_failed_step() {
    let (server, ctx) = setup().await;
    pod(&server, "db-0", json!({"app": "db"}), &["mysql"], "Running");
    hook(
        &server,
        "freeze",
        Some(step(&["true"], json!({}))),
        step(&["true"], json!({})),
    );
    let p = plan(
        "Sequential",
        json!([{"hook": {"name": "freeze"}, "podSelector": {"regex": "db"}}]),
    );
    let targets = identify(&ctx, &p).await;
    server.delete("v1", "Pod", Some(APP), "db-0").unwrap();
    let reason = hooks::quiesce(&ctx, &targets).await.unwrap().unwrap_err();
    assert!(reason.contains("pod db-0 no longer exists"), "{reason}");
}
