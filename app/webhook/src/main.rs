//! `tvk-webhook`: serves the admission webhook of the application's kinds. See the library docs.

#![forbid(unsafe_code)]

use std::{
    io::IsTerminal, net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration,
};

use clap::{Parser, ValueEnum};
use tracing::error;
use tracing_subscriber::{EnvFilter, fmt};
use tvk_webhook::{CertificateFiles, Error, WebhookConfig, WebhookServer};

/// Admission webhook (validate + mutate) for the TrilioVault application kinds.
///
/// Every flag can also be set from the environment variable named in its help.
#[derive(Debug, Parser)]
#[command(name = "tvk-webhook", version)]
struct Args {
    /// Address of the HTTPS admission listener.
    #[arg(long, env = "TVK_WEBHOOK_LISTEN", default_value = "0.0.0.0:9443")]
    listen: SocketAddr,
    /// Address of the plain-HTTP listener serving /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "TVK_WEBHOOK_METRICS_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    metrics_listen: SocketAddr,
    /// PEM certificate chain (leaf first) of the admission listener; re-read when it changes.
    #[arg(
        long,
        env = "TVK_WEBHOOK_CERT_FILE",
        default_value = "/tmp/k8s-webhook-server/serving-certs/tls.crt"
    )]
    cert_file: PathBuf,
    /// PEM private key of the admission listener; re-read when it changes.
    #[arg(
        long,
        env = "TVK_WEBHOOK_KEY_FILE",
        default_value = "/tmp/k8s-webhook-server/serving-certs/tls.key"
    )]
    key_file: PathBuf,
    /// Seconds between checks of the certificate files for a rotation.
    #[arg(long, env = "TVK_WEBHOOK_CERT_RELOAD_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    cert_reload_seconds: u64,
    /// Largest AdmissionReview body accepted, in bytes; larger ones get 413.
    #[arg(long, env = "TVK_WEBHOOK_MAX_BODY_BYTES", default_value_t = tvk_webhook::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(
        long,
        env = "TVK_WEBHOOK_SHUTDOWN_TIMEOUT_SECONDS",
        default_value_t = 20
    )]
    shutdown_timeout_seconds: u64,
    /// Log line format.
    #[arg(long, env = "TVK_WEBHOOK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
    /// Log filter: a level (`info`, `debug`, …) or tracing directives (`info,tvk_webhook=debug`).
    #[arg(long, env = "TVK_WEBHOOK_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable lines.
    Text,
}

fn init_logging(format: LogFormat, level: &str) -> Result<(), Error> {
    let filter = EnvFilter::try_new(level)
        .map_err(|err| Error::Logging(format!("invalid --log-level {level:?}: {err}")))?;
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a log collector.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    }
    .map_err(|err| Error::Logging(err.to_string()))
}

/// Completes on the first SIGTERM (kubelet stopping the pod) or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            error!(error = %err, "failed to listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                error!(error = %err, "failed to listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

async fn run(args: Args) -> Result<(), Error> {
    let config = WebhookConfig {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        certificate: CertificateFiles {
            cert_file: args.cert_file,
            key_file: args.key_file,
        },
        reload_interval: Duration::from_secs(args.cert_reload_seconds),
        max_body_bytes: args.max_body_bytes,
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout_seconds),
    };
    let registry = Arc::new(tvk_api::admission::app_admission());
    let server = WebhookServer::start(config, registry).await?;
    server.run_until(shutdown_signal()).await
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(err) = init_logging(args.log_format, &args.log_level) {
        eprintln!("tvk-webhook: {err}");
        return ExitCode::from(2);
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(category = err.category(), error = %err, "tvk-webhook stopped");
            ExitCode::FAILURE
        }
    }
}
