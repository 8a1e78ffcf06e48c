//! The running webhook: the TLS admission listener with its certificate watcher
//! ([`AdmissionServer`], which the manager embeds), and the plain-HTTP operations listener
//! beside it ([`WebhookServer`], the `tvk-webhook` binary), started and shut down together.

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use axum::Router;
use axum_server::{
    Handle,
    tls_rustls::{RustlsAcceptor, RustlsConfig},
};
use tokio::{net::TcpListener, task::JoinHandle};
use tracing::info;
use tvk_api::admission::AdmissionRegistry;

use crate::{
    cluster_rules::ClusterRuleSet,
    error::Error,
    metrics::WebhookMetrics,
    router::{DEFAULT_MAX_BODY_BYTES, admission_router_with_rules, operations_router},
    tls::{CertificateFiles, CertificateWatcher, ServingCertificate, server_config},
};

/// Where the admission webhook listens and what it serves.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The HTTPS admission listener.
    pub listen: SocketAddr,
    /// The plain-HTTP `/healthz`, `/readyz`, `/metrics` listener.
    pub metrics_listen: SocketAddr,
    /// The serving certificate's files.
    pub certificate: CertificateFiles,
    /// How often the certificate files are re-read.
    pub reload_interval: Duration,
    /// Largest accepted AdmissionReview body.
    pub max_body_bytes: usize,
    /// How long in-flight requests may take to finish after shutdown begins.
    pub shutdown_timeout: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 9443)),
            metrics_listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            certificate: CertificateFiles {
                cert_file: PathBuf::from("/tmp/k8s-webhook-server/serving-certs/tls.crt"),
                key_file: PathBuf::from("/tmp/k8s-webhook-server/serving-certs/tls.key"),
            },
            reload_interval: Duration::from_secs(5),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            shutdown_timeout: Duration::from_secs(20),
        }
    }
}

/// What the TLS admission listener needs (the part of [`WebhookConfig`] the manager reuses).
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// The HTTPS admission listener.
    pub listen: SocketAddr,
    /// The serving certificate's files.
    pub certificate: CertificateFiles,
    /// How often the certificate files are re-read.
    pub reload_interval: Duration,
    /// Largest accepted AdmissionReview body.
    pub max_body_bytes: usize,
    /// How long in-flight requests may take to finish after shutdown begins.
    pub shutdown_timeout: Duration,
}

impl WebhookConfig {
    /// The admission listener's part of this configuration.
    pub fn admission(&self) -> AdmissionConfig {
        AdmissionConfig {
            listen: self.listen,
            certificate: self.certificate.clone(),
            reload_interval: self.reload_interval,
            max_body_bytes: self.max_body_bytes,
            shutdown_timeout: self.shutdown_timeout,
        }
    }
}

/// A started TLS admission listener with its certificate watcher: the webhook proper, without
/// the operations endpoints (the manager serves those on its own listener).
#[derive(Debug)]
pub struct AdmissionServer {
    addr: SocketAddr,
    handle: Handle<SocketAddr>,
    task: JoinHandle<std::io::Result<()>>,
    watcher_task: JoinHandle<()>,
    certificate: Arc<ServingCertificate>,
    shutdown_timeout: Duration,
}

impl AdmissionServer {
    /// Binds the admission listener, loads the certificate if its files are there (the watcher
    /// keeps trying if not; [`ServingCertificate::is_loaded`] says when it is) and serves
    /// `registry`'s kinds, with `rules` on their validating endpoints.
    pub async fn start(
        config: AdmissionConfig,
        registry: Arc<AdmissionRegistry>,
        rules: ClusterRuleSet,
        metrics: Arc<WebhookMetrics>,
    ) -> Result<Self, Error> {
        let certificate = Arc::new(ServingCertificate::new());
        let mut watcher = CertificateWatcher::new(
            config.certificate.clone(),
            Arc::clone(&certificate),
            Arc::clone(&metrics),
        );
        // Load before accepting connections, so a pod with its Secret mounted is ready at once.
        watcher.poll().await;
        let tls = RustlsConfig::from_config(Arc::new(server_config(Arc::clone(&certificate))?));
        let listener = bind("admission", "listen", config.listen).await?;
        let addr = local_addr("admission", &listener)?;
        let handle = Handle::new();
        let router = admission_router_with_rules(registry, rules, metrics, config.max_body_bytes);
        let task = tokio::spawn(
            axum_server::Server::from_listener(listener)
                .acceptor(RustlsAcceptor::new(tls))
                .handle(handle.clone())
                .serve(router.into_make_service()),
        );
        let watcher_task = tokio::spawn(watcher.run(config.reload_interval));
        Ok(Self {
            addr,
            handle,
            task,
            watcher_task,
            certificate,
            shutdown_timeout: config.shutdown_timeout,
        })
    }

    /// The bound address of the HTTPS admission listener.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The certificate being served.
    pub fn certificate(&self) -> &Arc<ServingCertificate> {
        &self.certificate
    }

    fn stop_accepting(&self) {
        self.watcher_task.abort();
        self.handle.graceful_shutdown(Some(self.shutdown_timeout));
    }

    /// Serves until `signal` completes, then shuts down gracefully. Returns early with the error
    /// if the listener fails.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<(), Error> {
        tokio::select! {
            () = signal => {}
            result = &mut self.task => {
                self.stop_accepting();
                return Err(listener_ended("admission", result));
            }
        }
        self.shutdown().await
    }

    /// Stops accepting connections, lets in-flight requests finish (up to the shutdown timeout)
    /// and waits for the listener to close.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.stop_accepting();
        join("admission", self.task).await
    }
}

/// A started webhook server: the admission listener plus the plain-HTTP operations listener.
#[derive(Debug)]
pub struct WebhookServer {
    admission: AdmissionServer,
    metrics_addr: SocketAddr,
    metrics_handle: Handle<SocketAddr>,
    metrics_task: JoinHandle<std::io::Result<()>>,
    metrics: Arc<WebhookMetrics>,
}

impl WebhookServer {
    /// Binds both listeners, loads the certificate if its files are there (the watcher keeps
    /// trying if not; `/readyz` says when it is) and starts serving `registry`'s kinds.
    pub async fn start(
        config: WebhookConfig,
        registry: Arc<AdmissionRegistry>,
    ) -> Result<Self, Error> {
        let metrics = Arc::new(WebhookMetrics::new());
        let admission = AdmissionServer::start(
            config.admission(),
            registry,
            ClusterRuleSet::new(),
            Arc::clone(&metrics),
        )
        .await?;
        let metrics_listener = match bind("metrics", "metrics-listen", config.metrics_listen).await
        {
            Ok(listener) => listener,
            Err(err) => {
                admission.stop_accepting();
                return Err(err);
            }
        };
        let metrics_addr = local_addr("metrics", &metrics_listener)?;
        let metrics_handle = Handle::new();
        let operations: Router =
            operations_router(Arc::clone(&metrics), Arc::clone(admission.certificate()));
        let metrics_task = tokio::spawn(
            axum_server::Server::from_listener(metrics_listener)
                .handle(metrics_handle.clone())
                .serve(operations.into_make_service()),
        );
        info!(admission_addr = %admission.addr(), %metrics_addr, "webhook serving");
        Ok(Self {
            admission,
            metrics_addr,
            metrics_handle,
            metrics_task,
            metrics,
        })
    }

    /// The bound address of the HTTPS admission listener.
    pub fn admission_addr(&self) -> SocketAddr {
        self.admission.addr()
    }

    /// The bound address of the plain-HTTP operations listener.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The certificate being served.
    pub fn certificate(&self) -> &Arc<ServingCertificate> {
        self.admission.certificate()
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Arc<WebhookMetrics> {
        &self.metrics
    }

    /// Serves until `signal` completes, then shuts down gracefully. Returns early with the error
    /// if a listener fails.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<(), Error> {
        tokio::select! {
            () = signal => {}
            result = &mut self.admission.task => {
                self.stop_accepting();
                return Err(listener_ended("admission", result));
            }
            result = &mut self.metrics_task => {
                self.stop_accepting();
                return Err(listener_ended("metrics", result));
            }
        }
        self.shutdown().await
    }

    fn stop_accepting(&self) {
        self.admission.stop_accepting();
        self.metrics_handle
            .graceful_shutdown(Some(self.admission.shutdown_timeout));
    }

    /// Stops accepting connections, lets in-flight requests finish (up to the shutdown timeout)
    /// and waits for both listeners to close.
    pub async fn shutdown(self) -> Result<(), Error> {
        info!("shutting down: no new connections, finishing in-flight requests");
        self.stop_accepting();
        let admission = join("admission", self.admission.task).await;
        let metrics = join("metrics", self.metrics_task).await;
        admission.and(metrics)
    }
}

async fn bind(
    listener: &'static str,
    flag: &'static str,
    addr: SocketAddr,
) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind {
        listener,
        addr,
        flag,
        source,
    })
}

fn local_addr(listener: &'static str, socket: &TcpListener) -> Result<SocketAddr, Error> {
    socket
        .local_addr()
        .map_err(|source| Error::Serve { listener, source })
}

async fn join(listener: &'static str, task: JoinHandle<std::io::Result<()>>) -> Result<(), Error> {
    match task.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(Error::Serve { listener, source }),
        Err(source) => Err(Error::Task { listener, source }),
    }
}

fn listener_ended(
    listener: &'static str,
    result: Result<std::io::Result<()>, tokio::task::JoinError>,
) -> Error {
    match result {
        Ok(Ok(())) => Error::Serve {
            listener,
            source: std::io::Error::other("the listener stopped unexpectedly"),
        },
        Ok(Err(source)) => Error::Serve { listener, source },
        Err(source) => Error::Task { listener, source },
    }
}
