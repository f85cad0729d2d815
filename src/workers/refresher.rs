//! Refreshes tokens ahead of need (`[refresh_ahead]`).

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::{Worker, every};
use crate::domain::{Credentials, Tenant};

/// Every `interval`, refreshes the grants whose tokens expire soon and that
/// calls used recently, within the background share of each budget.
pub(crate) struct BackgroundRefresher {
    /// The service that refreshes.
    pub credentials: Arc<Credentials>,
    /// Configured tenants by id.
    pub tenants: Arc<HashMap<String, Arc<Tenant>>>,
    /// `refresh_ahead.interval`.
    pub interval: Duration,
}

impl Worker for BackgroundRefresher {
    const NAME: &'static str = "background refresher";

    async fn run(self, shutdown: CancellationToken) {
        every(self.interval, &shutdown, || {
            self.credentials.refresh_ahead_round(&self.tenants)
        })
        .await;
    }
}
