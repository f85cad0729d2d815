//! The callback listener's accept loop: what a stranger on the network can
//! make calgate hold is bounded. Connections waiting for their request are
//! bounded per peer and in all, the oldest closed to make room
//! ([`Connections`]); a connection must send a whole request head within
//! `header_timeout` — one that sends nothing, or half a head, is closed —
//! and on shutdown every open connection finishes its request, then closes.

use std::time::Duration;

use axum::{Extension, Router};
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::connections::Connections;
use crate::config::CallbackLimits;

/// Pause after a failed accept (out of file descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` within `limits` until `shutdown`.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: CallbackLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let connections = Connections::new(limits);
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "callback listener: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Some(connection) = connections.admit(peer.ip()) else {
            debug!(
                max_connections = limits.max_connections,
                "callback listener: every connection is being processed; closing a new one"
            );
            continue;
        };
        let watcher = graceful.watcher();
        let http = http.clone();
        let handle = connection.clone();
        // Handlers find their connection in the request's extensions.
        let service = TowerToHyperService::new(router.clone().layer(Extension(handle)));
        let header_timeout = limits.header_timeout;
        // Tracked by `graceful`: shutdown waits for it below.
        tokio::spawn(async move {
            let evicted = connection.closed().clone();
            let served = async {
                // hyper's head timer starts with the first byte: a connection
                // that sends nothing at all is closed here instead.
                if !matches!(
                    tokio::time::timeout(header_timeout, stream.readable()).await,
                    Ok(Ok(()))
                ) {
                    return;
                }
                let connection = http.serve_connection(TokioIo::new(stream), service);
                if let Err(error) = watcher.watch(connection).await {
                    debug!(%error, "callback connection ended with an error");
                }
            };
            tokio::select! {
                () = served => {}
                () = evicted.cancelled() => debug!("callback connection closed to make room"),
            }
            drop(connection);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
