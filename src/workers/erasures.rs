//! Finishes erasures whose deleted events were not seen gone while
//! ForgetUser waited (see `domain/service/erasure_confirm.rs`).

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::{Worker, every};
use crate::domain::{ErasureService, Tenant};

/// Every `interval`, takes the erasures due: reads the user's events back,
/// deletes again while some are left, and revokes and erases once none is.
pub(crate) struct ErasureFinisher {
    /// The service that erases.
    pub erasure: Arc<ErasureService>,
    /// Configured tenants by id.
    pub tenants: Arc<HashMap<String, Arc<Tenant>>>,
    /// `erasure.retry_interval`.
    pub interval: Duration,
}

impl Worker for ErasureFinisher {
    const NAME: &'static str = "erasure worker";

    async fn run(self, shutdown: CancellationToken) {
        every(self.interval, &shutdown, || self.erasure.finish_erasures(&self.tenants)).await;
    }
}
