//! `tvk-manager`: the operator binary. `render` prints exactly what the manager would apply for a
//! TrilioVaultManager manifest, with no cluster (like `helm template`).

use std::{future::IntoFuture, path::PathBuf, process::ExitCode};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use tvk_manager::{
    admission_server,
    render::{RenderInputs, Renderer, TemplateSource},
    tvm::TrilioVaultManager,
    values::Override,
};

#[derive(Parser)]
#[command(
    name = "tvk-manager",
    version,
    about = "Installs, upgrades and self-heals the TrilioVault application from a TrilioVaultManager"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Flags of `run`.
#[derive(clap::Args)]
struct RunArgs {
    /// Use templates from this directory instead of the compiled-in set (development).
    #[arg(long, env = "TVK_TEMPLATES")]
    templates: Option<PathBuf>,
    /// Watch TrilioVaultManagers only in this namespace (default: every namespace).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "TVK_HEALTH_LISTEN", default_value = "0.0.0.0:8081")]
    health_listen: std::net::SocketAddr,
    /// Seconds between periodic resyncs of a healthy TVM (drift correction).
    #[arg(long, env = "TVK_RESYNC_SECONDS", default_value_t = 300)]
    resync_seconds: u64,
    /// Elect one active replica through a Lease (disable only for a single out-of-cluster run).
    #[arg(long, env = "TVK_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader Lease (the manager's own namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Identity of this replica in the Lease.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// Log as JSON lines (filter with RUST_LOG).
    #[arg(long, env = "TVK_LOG_JSON")]
    log_json: bool,
    /// Address of the HTTPS TrilioVaultManager admission webhook (validate + mutate); an empty
    /// value (`--webhook-listen ""`) turns it off, e.g. for a local out-of-cluster run.
    #[arg(long, env = "TVK_WEBHOOK_LISTEN", default_value = admission_server::DEFAULT_LISTEN)]
    webhook_listen: WebhookListen,
    /// Directory of the webhook's `tls.crt` and `tls.key` (re-read when they change). OLM mounts
    /// its webhook certificate here; with --webhook-self-signed the manager writes its own.
    #[arg(long, env = "TVK_WEBHOOK_CERT_DIR", default_value = admission_server::DEFAULT_CERT_DIR)]
    webhook_cert_dir: PathBuf,
    /// Create and rotate the webhook's own CA and serving certificate (plain installs without OLM
    /// or cert-manager): kept in Secret tvk-manager-webhook-cert in POD_NAMESPACE, written to
    /// --webhook-cert-dir, and injected as caBundle into the tvk-manager-validating and
    /// tvk-manager-mutating webhook configurations (Service tvk-manager-webhook).
    #[arg(long, env = "TVK_WEBHOOK_SELF_SIGNED")]
    webhook_self_signed: bool,
}

/// `--webhook-listen`: an address, or empty for no webhook.
#[derive(Clone, Debug)]
struct WebhookListen(Option<std::net::SocketAddr>);

impl std::str::FromStr for WebhookListen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().is_empty() {
            return Ok(Self(None));
        }
        text.parse().map(|addr| Self(Some(addr))).map_err(|error| {
            format!(
                "{error}: expected host:port such as 0.0.0.0:9443, or \"\" to turn the webhook off"
            )
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: reconcile TrilioVaultManagers (in cluster, or out of cluster through
    /// KUBECONFIG). Images come from RELATED_IMAGE_CONTROL_PLANE, RELATED_IMAGE_WEBHOOK,
    /// RELATED_IMAGE_DATAMOVER and RELATED_IMAGE_METAMOVER.
    Run(RunArgs),
    /// Render the objects the manager would apply for a TrilioVaultManager, in apply order.
    ///
    /// Owner references (which need the TVM's uid) and the generated webhook CA bundle are added
    /// by the running manager; everything else is exactly what it applies.
    Render {
        /// The TrilioVaultManager manifest (YAML; `-` for stdin).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Override a value (highest precedence), e.g. `--set components.webhook.replicas=3`.
        #[arg(long = "set", value_name = "PATH=VALUE")]
        set: Vec<Override>,
        /// Write one file per object into this directory instead of stdout.
        #[arg(long)]
        output_dir: Option<PathBuf>,
        /// Use templates from this directory instead of the compiled-in set (development).
        #[arg(long, env = "TVK_TEMPLATES")]
        templates: Option<PathBuf>,
        /// API versions the target cluster serves beyond the built-in ones, e.g.
        /// `monitoring.coreos.com/v1` to render the ServiceMonitor.
        #[arg(long = "api-versions", value_delimiter = ',')]
        api_versions: Vec<String>,
        /// Install namespace when the manifest has none.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run_manager(args),
        command => run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Render {
            file,
            set,
            output_dir,
            templates,
            api_versions,
            namespace,
        } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("failed to read stdin")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("failed to read {}", file.display()))?
            };
            let value = tvk_api::yaml::parse_single(&text, &tvk_api::yaml::Limits::default())
                .with_context(|| format!("failed to read {}", file.display()))?;
            let request = tvk_api::admission::Request {
                operation: tvk_api::admission::Operation::Create,
                object: &value,
                old_object: None,
            };
            let admission = tvk_manager::admission::tvm_admission();
            match admission.validate(&request) {
                Ok(warnings) => {
                    for warning in warnings {
                        eprintln!("warning: {warning}");
                    }
                }
                Err(errors) => {
                    let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    bail!(
                        "{} is not a valid TrilioVaultManager:\n  {}",
                        file.display(),
                        list.join("\n  ")
                    );
                }
            }
            let mut tvm: TrilioVaultManager = serde_json::from_value(value)
                .with_context(|| format!("{} is not a TrilioVaultManager", file.display()))?;
            if tvm.metadata.namespace.is_none() {
                tvm.metadata.namespace = namespace;
            }
            let source = match templates {
                Some(dir) => TemplateSource::from_dir(&dir)?,
                None => TemplateSource::embedded(),
            };
            let renderer = Renderer::new(&source)?;
            let inputs = RenderInputs {
                related_images: RenderInputs::related_images_from_env(),
                api_versions,
                ca_bundle: None,
                overrides: set,
            };
            let manifest = renderer.render(&tvm, &inputs)?;
            match output_dir {
                None => print!("{}", manifest.to_yaml()?),
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("failed to create {}", dir.display()))?;
                    for (name, yaml) in manifest.to_files()? {
                        let path = dir.join(name);
                        std::fs::write(&path, yaml)
                            .with_context(|| format!("failed to write {}", path.display()))?;
                    }
                    eprintln!(
                        "wrote {} objects to {}",
                        manifest.objects.len(),
                        dir.display()
                    );
                }
            }
            Ok(())
        }
        Command::Run(_) => bail!("run is handled by run_manager"),
    }
}

/// Runs the controller until SIGTERM/SIGINT.
fn run_manager(args: RunArgs) -> anyhow::Result<()> {
    // One process-wide TLS provider for kube's client: rustls cannot pick one by itself when a
    // build enables more than one (feature unification with other crates).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let source = match &args.templates {
        Some(dir) => TemplateSource::from_dir(dir)?,
        None => TemplateSource::embedded(),
    };
    let renderer = std::sync::Arc::new(Renderer::new(&source)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(async move {
        let client = kube::Client::try_default()
            .await
            .context("failed to connect to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
        let metrics = std::sync::Arc::new(tvk_manager::operations::Metrics::default());
        let listener = tokio::net::TcpListener::bind(args.health_listen)
            .await
            .with_context(|| format!("failed to listen on {}", args.health_listen))?;
        let server = tokio::spawn(axum::serve(listener, tvk_manager::operations::router(metrics.clone())).into_future());
        let ctx = std::sync::Arc::new(tvk_manager::reconcile::Context {
            recorder: Some(tvk_manager::reconcile::recorder(client.clone())),
            client,
            renderer,
            related_images: RenderInputs::related_images_from_env(),
            resync: std::time::Duration::from_secs(args.resync_seconds),
            crd_timeout: std::time::Duration::from_secs(60),
            metrics,
        });
        let election = if args.leader_elect {
            let Some(lease_namespace) = &args.leader_election_namespace else {
                bail!("leader election needs the manager's namespace: set POD_NAMESPACE or --leader-election-namespace (or pass --leader-elect false for a single replica)");
            };
            let identity = args
                .pod_name
                .clone()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_else(|| format!("tvk-manager-{}", std::process::id()));
            Some(tvk_manager::leader::LeaderElector::new(ctx.client.clone(), lease_namespace, "tvk-manager-leader", &identity))
        } else {
            None
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stop_tx = std::sync::Arc::new(stop_tx);
        let stopped = move || {
            let mut stop_rx = stop_rx.clone();
            async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            }
        };
        let webhook = match args.webhook_listen.0 {
            None => {
                tracing::warn!("the TrilioVaultManager admission webhook is off (--webhook-listen \"\")");
                None
            }
            Some(listen) => {
                if args.webhook_self_signed {
                    let Some(namespace) = &args.leader_election_namespace else {
                        bail!("--webhook-self-signed keeps its certificate in the manager's namespace: set POD_NAMESPACE (or --leader-election-namespace)");
                    };
                    let certificates = admission_server::SelfSignedCertificates::new(ctx.client.clone(), namespace, &args.webhook_cert_dir);
                    // Before the server starts, so it loads the files at once; on failure the
                    // loop below retries and the server picks the files up when they appear.
                    if let Err(error) = certificates.sync(jiff::Timestamp::now()).await {
                        tracing::warn!(%error, "failed to prepare the webhook certificate; retrying");
                    }
                    tokio::spawn(certificates.run());
                }
                let settings = admission_server::AdmissionSettings::new(listen, args.webhook_cert_dir.clone());
                let server = admission_server::start(&settings, ctx.client.clone(), ctx.metrics.webhook.clone()).await?;
                ctx.metrics.require_webhook_certificate(server.certificate().clone());
                Some(tokio::spawn(server.run_until(stopped())))
            }
        };
        let on_signal = stop_tx.clone();
        tokio::spawn(async move {
            tvk_manager::reconcile::shutdown_signal().await;
            tracing::info!("shutting down on signal");
            let _ = on_signal.send(true);
        });
        tracing::info!(version = tvk_manager::render::APP_VERSION, namespace = ?args.namespace, "starting the manager");
        tvk_manager::reconcile::run(ctx, args.namespace, election, stopped()).await;
        // Stopped by a signal or the lease lost: the webhook finishes its in-flight requests.
        let _ = stop_tx.send(true);
        if let Some(webhook) = webhook {
            match webhook.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "the webhook stopped with an error"),
                Err(error) => tracing::warn!(%error, "the webhook task failed"),
            }
        }
        server.abort();
        tracing::info!("stopped");
        Ok(())
    })
}
