//! The running webhook: the TLS admission listener, the plain-HTTP operations listener and the
//! certificate watcher, started together and shut down gracefully together.

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
    error::Error,
    metrics::WebhookMetrics,
    router::{DEFAULT_MAX_BODY_BYTES, admission_router, operations_router},
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

/// A started webhook server.
#[derive(Debug)]
pub struct WebhookServer {
    admission_addr: SocketAddr,
    metrics_addr: SocketAddr,
    admission_handle: Handle<SocketAddr>,
    metrics_handle: Handle<SocketAddr>,
    admission_task: JoinHandle<std::io::Result<()>>,
    metrics_task: JoinHandle<std::io::Result<()>>,
    watcher_task: JoinHandle<()>,
    certificate: Arc<ServingCertificate>,
    metrics: Arc<WebhookMetrics>,
    shutdown_timeout: Duration,
}

impl WebhookServer {
    /// Binds both listeners, loads the certificate if its files are there (the watcher keeps
    /// trying if not; `/readyz` says when it is) and starts serving `registry`'s kinds.
    pub async fn start(
        config: WebhookConfig,
        registry: Arc<AdmissionRegistry>,
    ) -> Result<Self, Error> {
        let metrics = Arc::new(WebhookMetrics::new());
        let certificate = Arc::new(ServingCertificate::new());
        let mut watcher = CertificateWatcher::new(
            config.certificate.clone(),
            Arc::clone(&certificate),
            Arc::clone(&metrics),
        );
        // Load before accepting connections, so a pod with its Secret mounted is ready at once.
        watcher.poll().await;
        let tls = RustlsConfig::from_config(Arc::new(server_config(Arc::clone(&certificate))?));

        let admission_listener = bind("admission", "listen", config.listen).await?;
        let metrics_listener = bind("metrics", "metrics-listen", config.metrics_listen).await?;
        let admission_addr = local_addr("admission", &admission_listener)?;
        let metrics_addr = local_addr("metrics", &metrics_listener)?;

        let admission_handle = Handle::new();
        let admission = admission_router(registry, Arc::clone(&metrics), config.max_body_bytes);
        let admission_task = tokio::spawn(
            axum_server::Server::from_listener(admission_listener)
                .acceptor(RustlsAcceptor::new(tls))
                .handle(admission_handle.clone())
                .serve(admission.into_make_service()),
        );

        let metrics_handle = Handle::new();
        let operations: Router = operations_router(Arc::clone(&metrics), Arc::clone(&certificate));
        let metrics_task = tokio::spawn(
            axum_server::Server::from_listener(metrics_listener)
                .handle(metrics_handle.clone())
                .serve(operations.into_make_service()),
        );

        let watcher_task = tokio::spawn(watcher.run(config.reload_interval));
        info!(%admission_addr, %metrics_addr, "webhook serving");
        Ok(Self {
            admission_addr,
            metrics_addr,
            admission_handle,
            metrics_handle,
            admission_task,
            metrics_task,
            watcher_task,
            certificate,
            metrics,
            shutdown_timeout: config.shutdown_timeout,
        })
    }

    /// The bound address of the HTTPS admission listener.
    pub fn admission_addr(&self) -> SocketAddr {
        self.admission_addr
    }

    /// The bound address of the plain-HTTP operations listener.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The certificate being served.
    pub fn certificate(&self) -> &Arc<ServingCertificate> {
        &self.certificate
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
            result = &mut self.admission_task => {
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
        self.watcher_task.abort();
        self.admission_handle
            .graceful_shutdown(Some(self.shutdown_timeout));
        self.metrics_handle
            .graceful_shutdown(Some(self.shutdown_timeout));
    }

    /// Stops accepting connections, lets in-flight requests finish (up to the shutdown timeout)
    /// and waits for both listeners to close.
    pub async fn shutdown(self) -> Result<(), Error> {
        info!("shutting down: no new connections, finishing in-flight requests");
        self.stop_accepting();
        let admission = join("admission", self.admission_task).await;
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
