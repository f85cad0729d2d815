//! The store watcher: health follows the store's reachability.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{info, warn};

use super::Worker;
use crate::{domain::Credentials, health::set_health, store::Store};

/// How often the store is probed for the health status.
const STORE_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Reports NOT_SERVING while the store cannot be reached, SERVING again when
/// it can; when it is reachable, writes refreshed tokens it refused earlier
/// and prunes spent rate windows.
pub(crate) struct StoreWatcher {
    /// The store probed.
    pub store: Store,
    /// Writes the refreshed tokens the store refused.
    pub credentials: Arc<Credentials>,
    /// Where health is reported.
    pub reporter: HealthReporter,
    /// Cancelled at SIGTERM: from then on health stays NOT_SERVING.
    pub draining: CancellationToken,
}

impl Worker for StoreWatcher {
    const NAME: &'static str = "store watcher";

    async fn run(self, shutdown: CancellationToken) {
        let mut healthy = true;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(STORE_PROBE_INTERVAL) => {}
            }
            let reachable = matches!(
                tokio::time::timeout(STORE_PROBE_INTERVAL, self.store.ping()).await,
                Ok(Ok(()))
            );
            if reachable {
                self.credentials.flush_pending_tokens().await;
                let _ = self.store.prune_rate_windows().await;
            }
            if reachable != healthy && !self.draining.is_cancelled() {
                healthy = reachable;
                if healthy {
                    info!("credential store reachable again: SERVING");
                    set_health(&self.reporter, ServingStatus::Serving).await;
                } else {
                    warn!("credential store unreachable: NOT_SERVING");
                    set_health(&self.reporter, ServingStatus::NotServing).await;
                }
            }
        }
    }
}
