//! PostgreSQL: wakes this replica's watchers for changes other replicas recorded.

use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Worker;
use crate::store::Store;

/// Every `interval` (`changes.poll_interval`), one query per replica,
/// whatever the number of watchers; a missed round only delays them to the next.
pub(crate) struct ChangeFeedPoller {
    /// The service whose store holds the feed.
    pub store: Store,
    /// How often.
    pub interval: Duration,
}

impl Worker for ChangeFeedPoller {
    const NAME: &'static str = "change feed poller";

    async fn run(self, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match self.store.poll_change_feed().await {
                Ok(()) => failing = false,
                // Logged once per outage: the store watcher reports the outage itself.
                Err(error) if !failing => {
                    failing = true;
                    warn!(%error, "polling the change stream failed; watchers wait for the store");
                }
                Err(_) => {}
            }
        }
    }
}
