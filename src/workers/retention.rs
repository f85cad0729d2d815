//! Removes recorded changes and audit rows past their retention.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{Worker, every};
use crate::domain::{ChangeService, ErasureService};

/// Every `interval` (`changes.prune_interval`), prunes changes (with the
/// event records and processed notifications that go with them) and audit
/// rows past their retention.
pub(crate) struct RetentionPruner {
    /// Prunes changes.
    pub changes: Arc<ChangeService>,
    /// Prunes the audit trail.
    pub erasure: Arc<ErasureService>,
    /// How often.
    pub interval: Duration,
}

impl Worker for RetentionPruner {
    const NAME: &'static str = "retention pruner";

    async fn run(self, shutdown: CancellationToken) {
        every(self.interval, &shutdown, || async {
            // A failure is logged where it happens; the next round tries again.
            if let Ok(removed) = self.changes.prune_changes().await
                && removed > 0
            {
                info!(removed, "changes past the retention removed");
            }
            if let Ok(removed) = self.erasure.prune_audit().await
                && removed > 0
            {
                info!(removed, "audit rows past the retention removed");
            }
        })
        .await;
    }
}
