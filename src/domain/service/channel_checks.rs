//! Noticing a dead channel: every `changes.channel_check_interval`, each open
//! channel is looked for in Cronofy's list of the account's channels
//! (`GET /v1/channels`, docs /developers/api/push-notifications/list-channels).
//! Cronofy closes a channel whose deliveries keep failing without telling
//! anyone; a channel missing from the list is opened again, and the new one
//! reports the gap (`TRACKING_RESUMED`) and reads back what changed in it.

use std::{collections::HashMap, sync::Arc};

use tracing::{info, warn};

use super::{Channels, notifications::BATCH};
use crate::{
    cronofy::CronofyError,
    domain::{Error, Tenant, grant::GrantSelector, upstream},
    resilience::GuardError,
    store::ChannelToCheck,
    telemetry::metrics::METRICS,
};

/// A check that could not be made is tried again this much later.
const CHECK_RETRY_SECONDS: i64 = 300;

impl Channels {
    /// One round: checks the open channels whose check is due (at most
    /// [`BATCH`]), each claimed so that one replica checks it. Calls are the
    /// background kind: they wait behind callers' calls in the budget.
    pub(super) async fn check_open_channels(&self, tenants: &HashMap<String, Arc<Tenant>>) {
        let due = match self.store.channels_to_check(BATCH).await {
            Ok(due) => due,
            Err(error) => {
                warn!(%error, "reading channels to check failed");
                return;
            }
        };
        let next_seconds = self.check_interval.as_secs() as i64;
        for channel in due {
            let Some(tenant) = tenants.get(&channel.tenant_id) else {
                continue;
            };
            match self.store.claim_channel_check(&channel, next_seconds).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    warn!(%error, "claiming a channel check failed");
                    continue;
                }
            }
            if let Err(error) = self.check_channel(tenant, &channel).await {
                warn!(tenant = %tenant.id, sub = %channel.sub, %error, "recording a channel check failed");
            }
        }
    }

    async fn check_channel(
        &self,
        tenant: &Arc<Tenant>,
        channel: &ChannelToCheck,
    ) -> Result<(), crate::store::StoreError> {
        match self.listed(tenant, channel).await {
            Ok(true) => {
                METRICS.channel_check("open");
                self.store.channel_seen(channel).await
            }
            Ok(false) => {
                METRICS.channel_check("missing");
                if self.store.channel_missing(channel).await? {
                    warn!(tenant = %tenant.id, sub = %channel.sub, channel_id = %channel.channel_id,
                        "Cronofy closed the push notification channel; opening a new one");
                    self.mark_due();
                }
                Ok(())
            }
            // The grant lost its authorization: its channel was forgotten with it.
            Err(Error::GrantNeedsReauth | Error::GrantRevoked | Error::GrantNotFound) => Ok(()),
            Err(error) => {
                METRICS.channel_check("failed");
                info!(tenant = %tenant.id, sub = %channel.sub, %error, "checking a channel failed; retrying in 5 minutes");
                self.store.channel_check_failed(channel, CHECK_RETRY_SECONDS).await
            }
        }
    }

    /// Whether Cronofy still lists the channel among the account's.
    async fn listed(&self, tenant: &Arc<Tenant>, channel: &ChannelToCheck) -> Result<bool, Error> {
        let lease = self
            .credentials
            .access_token(tenant, &GrantSelector::Sub(channel.sub.clone()), false)
            .await?;
        let listed = call_with_refresh!(
            self,
            tenant,
            background,
            lease,
            upstream::Call::other("channel"),
            |token| { self.cronofy.list_channels(&tenant.app.endpoints, token) }
        )?;
        Ok(listed.contains(&channel.channel_id))
    }
}
