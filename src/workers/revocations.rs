//! Retries revocations at Cronofy that failed when they were asked for.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::{Worker, every};
use crate::domain::{ConnectService, Tenant};

/// Every `interval`, retries the queued revocations (RevokeGrant, ForgetUser)
/// that Cronofy failed.
pub(crate) struct RevocationRetrier {
    /// The service that revokes.
    pub connect: Arc<ConnectService>,
    /// Configured tenants by id.
    pub tenants: Arc<HashMap<String, Arc<Tenant>>>,
    /// `revoke_retry_interval`.
    pub interval: Duration,
}

impl Worker for RevocationRetrier {
    const NAME: &'static str = "revocation worker";

    async fn run(self, shutdown: CancellationToken) {
        every(self.interval, &shutdown, || {
            self.connect.retry_revocations(&self.tenants, self.interval)
        })
        .await;
    }
}
