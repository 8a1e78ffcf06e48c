//! `pods/{name}/exec` driven by kube's `Api::<Pod>::exec` (WebSocket, channel.k8s.io):
//! local processes, a test handler, exit statuses, errors before the upgrade, cancellation.

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::Status};
use kube::{
    Api,
    api::{AttachParams, AttachedProcess},
};
use serde_json::json;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tvk_test_apiserver::{ApiServer, ExecOutcome, ExecRequest, ExecResult};

fn pod(server: &ApiServer, name: &str, containers: &[&str], phase: &str) -> Result<()> {
    let cs: Vec<_> = containers
        .iter()
        .map(|c| json!({"name": c, "image": "busybox"}))
        .collect();
    server.create(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": cs}, "status": {"phase": phase}}))?;
    Ok(())
}

/// stdout, stderr and the final Status of an exec.
async fn finish(mut p: AttachedProcess) -> Result<(String, String, Status)> {
    let status = p.take_status().context("status channel")?;
    let (mut out, mut err) = (p.stdout().context("stdout")?, p.stderr().context("stderr")?);
    let (mut o, mut e) = (String::new(), String::new());
    let (r1, r2, status) = tokio::join!(
        out.read_to_string(&mut o),
        err.read_to_string(&mut e),
        status
    );
    r1?;
    r2?;
    Ok((o, e, status.context("no status received")?))
}

fn params() -> AttachParams {
    AttachParams::default()
        .stdin(false)
        .stdout(true)
        .stderr(true)
}

#[tokio::test]
async fn exec_runs_a_local_process_and_reports_its_exit() -> Result<()> {
    let server = ApiServer::start().await?;
    pod(&server, "db-0", &["mysql"], "Running")?;
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");

    let p = pods
        .exec(
            "db-0",
            [
                "sh",
                "-c",
                "echo \"$TVK_EXEC_POD/$TVK_EXEC_CONTAINER\"; echo oops >&2",
            ],
            &params(),
        )
        .await?;
    let (out, err, status) = finish(p).await?;
    assert_eq!(out, "db-0/mysql\n");
    assert_eq!(err, "oops\n");
    assert_eq!(status.status.as_deref(), Some("Success"));

    let p = pods
        .exec("db-0", ["sh", "-c", "exit 3"], &params().container("mysql"))
        .await?;
    let (_, _, status) = finish(p).await?;
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    let cause = &status
        .details
        .context("details")?
        .causes
        .context("causes")?[0];
    assert_eq!(cause.reason.as_deref(), Some("ExitCode"));
    assert_eq!(cause.message.as_deref(), Some("3"));

    // More output than any pipe holds arrives whole.
    let p = pods
        .exec(
            "db-0",
            ["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' a"],
            &params(),
        )
        .await?;
    let (out, _, status) = finish(p).await?;
    assert_eq!(out.len(), 300_000);
    assert_eq!(status.status.as_deref(), Some("Success"));

    let p = pods.exec("db-0", ["/no/such/program"], &params()).await?;
    let (_, _, status) = finish(p).await?;
    assert_eq!(status.reason.as_deref(), Some("InternalError"));
    let message = status.message.unwrap_or_default();
    assert!(message.contains("/no/such/program"), "{message}");

    let execs = server.execs();
    assert_eq!(execs.len(), 4);
    assert_eq!(execs[0].protocol, "v5.channel.k8s.io");
    assert_eq!(execs[0].outcome, ExecOutcome::Exited(0));
    assert_eq!(execs[1].outcome, ExecOutcome::Exited(3));
    assert!(matches!(execs[3].outcome, ExecOutcome::StartFailed(_)));
    assert_eq!(
        execs[1].request,
        ExecRequest {
            namespace: "default".into(),
            pod: "db-0".into(),
            container: "mysql".into(),
            command: vec!["sh".into(), "-c".into(), "exit 3".into()],
        }
    );
    Ok(())
}

#[tokio::test]
async fn exec_uses_the_registered_handler() -> Result<()> {
    let server = ApiServer::start().await?;
    pod(&server, "web-0", &["nginx", "php"], "Running")?;
    server.on_exec(|req: &ExecRequest| {
        ExecResult::exited(
            7,
            format!("{} in {}", req.command.join(" "), req.container),
            "handler says no",
        )
    });
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let p = pods
        .exec("web-0", ["reload"], &params().container("php"))
        .await?;
    let (out, err, status) = finish(p).await?;
    assert_eq!(out, "reload in php");
    assert_eq!(err, "handler says no");
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));

    server.exec_locally();
    let p = pods
        .exec("web-0", ["echo", "local"], &params().container("nginx"))
        .await?;
    let (out, _, _) = finish(p).await?;
    assert_eq!(out, "local\n");
    Ok(())
}

#[tokio::test]
async fn exec_is_refused_before_the_upgrade_when_it_cannot_run() -> Result<()> {
    let server = ApiServer::start().await?;
    pod(&server, "two", &["a", "b"], "Running")?;
    pod(&server, "pending", &["a"], "Pending")?;
    pod(&server, "done", &["a"], "Succeeded")?;
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let code = |e: kube::Error| -> Result<u16> {
        match e {
            kube::Error::UpgradeConnection(
                kube::client::UpgradeConnectionError::ProtocolSwitch(c),
            ) => Ok(c.as_u16()),
            other => bail!("expected a refused upgrade, got {other}"),
        }
    };
    for (name, ap, want) in [
        ("missing", params(), 404),
        ("two", params(), 400),
        ("two", params().container("c"), 400),
        ("pending", params(), 400),
        ("done", params(), 400),
    ] {
        let got = match pods.exec(name, ["true"], &ap).await {
            Ok(_) => bail!("exec into {name} was accepted"),
            Err(e) => code(e)?,
        };
        assert_eq!(got, want, "{name}");
    }
    ensure!(server.execs().is_empty());

    // A plain GET (no WebSocket upgrade) gets a Status saying what is needed.
    let req = axum::http::Request::get(
        "/api/v1/namespaces/default/pods/two/exec?command=true&container=a&stdout=true",
    )
    .body(Vec::new())?;
    match server.client().request_text(req).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 400);
            assert!(
                s.message.contains("Upgrade request required"),
                "{}",
                s.message
            );
        }
        other => bail!("expected a 400 Status, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_command() -> Result<()> {
    let server = ApiServer::start().await?;
    pod(&server, "db-0", &["mysql"], "Running")?;
    let marker = server.temp_dir().join("finished");
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let p = pods
        .exec(
            "db-0",
            [
                "sh",
                "-c",
                &format!("sleep 2; touch '{}'", marker.display()),
            ],
            &params(),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(p);
    let mut outcome = None;
    for _ in 0..40 {
        if let Some(e) = server.execs().first() {
            outcome = Some(e.outcome.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(outcome, Some(ExecOutcome::Cancelled));
    // The whole process group was killed: `touch` never ran.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!marker.exists(), "the cancelled command kept running");
    Ok(())
}
