//! The callback listener's accept loop: what a stranger on the network can
//! make calgate hold is bounded. Connections are capped (more are closed on
//! accept); a connection must send a whole request head within
//! `header_timeout` — one that sends nothing, or half a head, is closed —
//! and on shutdown every open connection finishes its request, then closes.

use std::{sync::Arc, time::Duration};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

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
    let connections = Arc::new(Semaphore::new(limits.max_connections as usize));
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
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                warn!(%error, "callback listener: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            debug!(
                max_connections = limits.max_connections,
                "callback listener at its connection limit; closing a new connection"
            );
            continue;
        };
        let watcher = graceful.watcher();
        let http = http.clone();
        let service = TowerToHyperService::new(router.clone());
        let header_timeout = limits.header_timeout;
        // Tracked by `graceful`: shutdown waits for it below.
        tokio::spawn(async move {
            let _permit = permit;
            // hyper's head timer starts with the first byte: a connection that
            // sends nothing at all is closed here instead.
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
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
