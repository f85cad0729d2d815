//! Opens push notification channels and processes queued notifications.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::Worker;
use crate::domain::{ChangeService, Tenant};

/// How often the notification worker looks for due work without being woken.
const NOTIFICATION_POLL: Duration = Duration::from_secs(5);

/// With `[callbacks]`: opens due channels and processes queued notifications,
/// at once when this replica queues work and every 5 s for the rest.
pub(crate) struct NotificationWorker {
    /// The service that processes them.
    pub changes: Arc<ChangeService>,
    /// Configured tenants by id.
    pub tenants: Arc<HashMap<String, Arc<Tenant>>>,
}

impl Worker for NotificationWorker {
    const NAME: &'static str = "notification worker";

    async fn run(self, shutdown: CancellationToken) {
        self.changes
            .work_notifications(self.tenants, NOTIFICATION_POLL, shutdown)
            .await;
    }
}
