//! Delivers queued writes.

use std::{collections::HashMap, sync::Arc};

use tokio_util::sync::CancellationToken;

use super::Worker;
use crate::domain::{QueueService, Tenant};

/// Delivers the queued writes due: at once when this replica accepts one,
/// and every `queue.poll_interval` (retries, writes other replicas accepted,
/// writes a replica that died had claimed).
pub(crate) struct QueueWorker {
    /// The service that delivers.
    pub queue: Arc<QueueService>,
    /// Configured tenants by id.
    pub tenants: Arc<HashMap<String, Arc<Tenant>>>,
}

impl Worker for QueueWorker {
    const NAME: &'static str = "queue worker";

    async fn run(self, shutdown: CancellationToken) {
        self.queue.work(self.tenants, shutdown).await;
    }
}
