//! The sockets calgate serves on, and the gRPC listener's TLS.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::StartError;
use crate::config::{Settings, TlsSettings};

/// The sockets calgate serves on, bound before [`App::serve`] so that start-up
/// binds in one place and tests hand in port-0 listeners.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC (`listen`).
    pub grpc: TcpListener,
    /// Prometheus metrics (`metrics_listen`), when served.
    pub metrics: Option<TcpListener>,
    /// Cronofy's callbacks (`callbacks.listen`); required when `[callbacks]` is configured.
    pub callbacks: Option<TcpListener>,
}

impl Listeners {
    /// Binds every address `settings` names, naming the key of one that cannot be bound.
    pub async fn bind(settings: &Settings) -> Result<Listeners, StartError> {
        let callbacks = match &settings.callbacks {
            Some(callbacks) => Some(bind(callbacks.listen, "callbacks.listen").await?),
            None => None,
        };
        Ok(Listeners {
            grpc: bind(settings.listen, "listen").await?,
            metrics: Some(bind(settings.metrics_listen, "metrics_listen").await?),
            callbacks,
        })
    }
}

async fn bind(addr: SocketAddr, key: &'static str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { key, addr, source })
}

pub(super) async fn tls_config(tls: &TlsSettings) -> Result<ServerTlsConfig, StartError> {
    let read = |key: &'static str, path: std::path::PathBuf| async move {
        tokio::fs::read(&path).await.map_err(|source| StartError::TlsFile {
            key,
            path: path.display().to_string(),
            source,
        })
    };
    let cert = read("tls.cert_file", tls.cert_file.clone()).await?;
    let key = read("tls.key_file", tls.key_file.clone()).await?;
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca) = &tls.client_ca_file {
        config = config.client_ca_root(Certificate::from_pem(read("tls.client_ca_file", ca.clone()).await?));
    }
    Ok(config)
}
