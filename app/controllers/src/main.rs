//! `tvk-control-plane`: `run` (the controllers, deployed by the manager with
//! `run --config /etc/tvk/config.yaml`) and `create-backup` (what a plan's CronJob runs).

use std::{future::IntoFuture, path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tvk_control_plane::{config::Config, context, runner};

#[derive(Parser)]
#[command(
    name = "tvk-control-plane",
    version,
    about = "The TrilioVault application's controllers: Target, BackupPlan and Backup"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The application's configuration (written by the manager).
    #[arg(long, default_value = "/etc/tvk/config.yaml")]
    config: PathBuf,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "TVK_HEALTH_LISTEN", default_value = "0.0.0.0:8080")]
    listen: std::net::SocketAddr,
    /// Elect one active replica through a Lease (disable only for a single out-of-cluster run).
    #[arg(long, env = "TVK_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Identity of this replica in the Lease.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// Seconds between probes of an Available Target.
    #[arg(long, default_value_t = 300)]
    target_revalidation_seconds: u64,
    /// Log as JSON lines (filter with RUST_LOG).
    #[arg(long, env = "TVK_LOG_JSON")]
    log_json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers (in cluster, or out of cluster through KUBECONFIG).
    Run(RunArgs),
    /// Create one Backup of a BackupPlan, or one ClusterBackup of a ClusterBackupPlan (what
    /// the plan's CronJobs run).
    CreateBackup {
        /// Kind of plan.
        #[arg(long, default_value = "BackupPlan", value_parser = ["BackupPlan", "ClusterBackupPlan"])]
        kind: String,
        /// Namespace of the plan (a BackupPlan; a ClusterBackupPlan has none).
        #[arg(long, default_value = "")]
        namespace: String,
        /// Name of the plan.
        #[arg(long)]
        name: String,
        /// Scheduled type; an incremental may become a full (no base yet, or
        /// maxIncrBackupsPerFullBackup reached).
        #[arg(long = "type", value_parser = ["Full", "Incremental"])]
        type_: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tvk_control_plane::install_tls_provider();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::CreateBackup {
            kind,
            namespace,
            name,
            type_,
        } => create_backup(&kind, &namespace, &name, &type_),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Our errors already name their source; print each cause only once.
            let mut message = error.to_string();
            for cause in error.chain().skip(1) {
                let text = cause.to_string();
                if !message.contains(&text) {
                    message.push_str(": ");
                    message.push_str(&text);
                }
            }
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
}

fn create_backup(kind: &str, namespace: &str, name: &str, type_: &str) -> anyhow::Result<()> {
    init_logging(false);
    if kind == "BackupPlan" && namespace.is_empty() {
        anyhow::bail!("--kind BackupPlan needs --namespace (the plan's namespace)");
    }
    let requested = if type_ == "Full" {
        tvk_api::backup::BackupType::Full
    } else {
        tvk_api::backup::BackupType::Incremental
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(async move {
        let client = kube::Client::try_default()
            .await
            .context("failed to connect to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
        let now = jiff::Timestamp::now();
        let created = if kind == "ClusterBackupPlan" {
            tvk_control_plane::create_backup::create_backup_of::<
                tvk_api::backup_plan::ClusterBackupPlan,
            >(client, "", name, requested, now)
            .await?
        } else {
            tvk_control_plane::create_backup::create_backup(client, namespace, name, requested, now)
                .await?
        };
        let backup = if kind == "ClusterBackupPlan" {
            created
        } else {
            format!("{namespace}/{created}")
        };
        println!(
            "{}",
            serde_json::json!({"event": "result", "ok": true, "backup": backup})
        );
        Ok(())
    })
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_json);
    let config = Config::load(&args.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(async move {
        let client = kube::Client::try_default()
            .await
            .context("failed to connect to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
        let namespace = config.install_namespace.clone();
        let mut ctx = context::Context::new(client.clone(), config, Some(context::recorder(client.clone())));
        ctx.target_revalidation = std::time::Duration::from_secs(args.target_revalidation_seconds.max(30));
        let ctx = Arc::new(ctx);
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("failed to listen on {}", args.listen))?;
        let server = tokio::spawn(
            axum::serve(listener, tvk_control_plane::operations::router(ctx.metrics.clone()))
                .into_future(),
        );
        let election = if args.leader_elect {
            let identity = args
                .pod_name
                .clone()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_else(|| format!("tvk-control-plane-{}", std::process::id()));
            Some(tvk_control_plane::leader::LeaderElector::new(client, &namespace, runner::LEASE_NAME, &identity))
        } else {
            None
        };
        tracing::info!(scope = ?ctx.config.application_scope, namespace, "starting the control plane");
        runner::run(ctx, election).await;
        server.abort();
        tracing::info!("stopped");
        Ok(())
    })
}
