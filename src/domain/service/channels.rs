//! Push notification channels: opened in the background for each connected
//! grant (when Cronofy lets calgate read its events), closed on revoke.

use std::{collections::HashMap, sync::Arc};

use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tracing::{debug, info, warn};

use super::{
    Credentials,
    notifications::{BATCH, CLAIM_SECONDS, NOTIFICATION_PATH, backoff},
    store_failure,
};
use crate::{
    cronofy::{CronofyClient, CronofyError},
    domain::{Error, Tenant, grant::GrantSelector, upstream},
    resilience::GuardError,
    store::{DueChannel, OpenedChannel},
};
use crate::{resilience::Resilience, store::Store};

/// Push notification channels: opened for connected grants, closed on revoke.
#[derive(Debug)]
pub struct Channels {
    pub(super) store: Store,
    pub(super) cronofy: CronofyClient,
    pub(super) resilience: Arc<Resilience>,
    pub(super) credentials: Arc<Credentials>,
    /// `callbacks.public_url`: where Cronofy posts notifications.
    pub(super) callback_base: Option<url::Url>,
    /// `changes.channel_check_interval`.
    pub(super) check_interval: std::time::Duration,
    /// Signalled when a connect leaves a channel to open.
    pub(super) due: tokio::sync::Notify,
}

impl Channels {
    /// One round of the channel worker: opens the channels that are due.
    /// Returns how many were opened.
    pub(super) async fn open_due_channels(&self, tenants: &HashMap<String, Arc<Tenant>>) -> usize {
        let due = match self.store.due_channels(BATCH).await {
            Ok(due) => due,
            Err(error) => {
                warn!(%error, "reading channels to open failed");
                return 0;
            }
        };
        let mut opened = 0;
        for channel in due {
            let Some(tenant) = tenants.get(&channel.tenant_id) else {
                continue;
            };
            match self.store.claim_channel(&channel, CLAIM_SECONDS).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    warn!(%error, "claiming a channel failed");
                    continue;
                }
            }
            match self.open_channel(tenant, &channel).await {
                Ok(()) => opened += 1,
                // No token to open it with until the user connects again (which asks anew).
                Err(Error::GrantNeedsReauth | Error::GrantRevoked | Error::GrantNotFound) => {
                    info!(tenant = %tenant.id, sub = %channel.sub, "no channel for a grant that needs the user again");
                    if let Err(error) = self.store.forget_channel(&tenant.id, &channel.sub).await {
                        warn!(%error, "dropping a channel request failed");
                    }
                }
                Err(error) => {
                    let delay = backoff(channel.channel_attempts);
                    warn!(tenant = %tenant.id, sub = %channel.sub, %error, ?delay, "opening a push notification channel failed; retrying");
                    let detail = format!("opening the channel failed: {error}");
                    if let Err(error) = self
                        .store
                        .channel_failed(&tenant.id, &channel.sub, &detail, delay.as_secs() as i64)
                        .await
                    {
                        warn!(%error, "recording a channel failure failed");
                    }
                }
            }
        }
        opened
    }

    async fn open_channel(&self, tenant: &Arc<Tenant>, due: &DueChannel) -> Result<(), Error> {
        let base = self.callback_base.as_ref().ok_or(Error::CallbacksNotConfigured)?;
        let callback_url = notification_url(base, &due.channel_key);
        let selector = GrantSelector::Sub(due.sub.clone());
        let lease = self.credentials.access_token(tenant, &selector, false).await?;
        let channel_id = call_with_refresh!(
            self,
            tenant,
            background,
            lease,
            upstream::Call::other("channel"),
            |token| { self.cronofy.create_channel(&tenant.app.endpoints, token, &callback_url) }
        )?;
        let readable = self.events_readable(tenant, &selector).await;
        let opened = OpenedChannel {
            channel_key: &due.channel_key,
            channel_id: &channel_id,
            events_readable: readable,
        };
        let check_seconds = self.check_interval.as_secs() as i64;
        let kept = self
            .store
            .channel_opened(&tenant.id, &due.sub, opened, check_seconds)
            .await
            .map_err(|error| store_failure(&tenant.id, "recording a channel", &error))?;
        if kept {
            info!(tenant = %tenant.id, sub = %due.sub, events = readable, "push notification channel open");
        } else {
            // Revoked or reconnected meanwhile: this channel is nobody's.
            self.close_channel(tenant, &selector, &channel_id).await;
        }
        Ok(())
    }

    /// Whether Cronofy lets calgate read the grant's own events (asked once,
    /// when its channel opens): a 403 means event changes cannot be tracked.
    async fn events_readable(&self, tenant: &Arc<Tenant>, selector: &GrantSelector) -> bool {
        !matches!(self.probe_events(tenant, selector).await, Err(Error::InsufficientScope))
    }

    async fn probe_events(&self, tenant: &Arc<Tenant>, selector: &GrantSelector) -> Result<(), Error> {
        let since = OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default();
        let url = CronofyClient::managed_events_url(&tenant.app.endpoints, &since);
        let lease = self.credentials.access_token(tenant, selector, false).await?;
        call_with_refresh!(
            self,
            tenant,
            background,
            lease,
            upstream::Call::other("events"),
            |token| { self.cronofy.read_events_page(&tenant.app.endpoints, token, &url) }
        )
        .map(drop)
    }

    /// Closes a channel at Cronofy, best effort: a revoked authorization's
    /// channels stop with it at Cronofy anyway.
    pub(super) async fn close_channel(&self, tenant: &Arc<Tenant>, selector: &GrantSelector, channel_id: &str) {
        let Ok(lease) = self.credentials.access_token(tenant, selector, false).await else {
            return;
        };
        let token = &lease.token;
        let closed = self
            .resilience
            .call(&tenant.id, None, || {
                self.cronofy.close_channel(&tenant.app.endpoints, token, channel_id)
            })
            .await;
        match closed {
            Ok(()) | Err(GuardError::Upstream(CronofyError::NotFound)) => {
                debug!(tenant = %tenant.id, channel_id, "push notification channel closed");
            }
            Err(error) => {
                let error = upstream::guard_error(error, upstream::Call::other("channel"));
                warn!(tenant = %tenant.id, channel_id, %error, "closing a push notification channel failed");
            }
        }
    }

    /// Closes the grant's push notification channel, if it has one: before
    /// any revoke, as closing needs the grant's token. Best effort at Cronofy.
    pub(super) async fn close_grant_channel(&self, tenant: &Arc<Tenant>, sub: &str) -> Result<(), Error> {
        if let Some(channel_id) = self
            .store
            .forget_channel(&tenant.id, sub)
            .await
            .map_err(|error| store_failure(&tenant.id, "forgetting a channel", &error))?
        {
            self.close_channel(tenant, &GrantSelector::Sub(sub.to_owned()), &channel_id)
                .await;
        }
        Ok(())
    }

    /// Whether calgate has a callback listener Cronofy can post notifications to.
    pub(super) fn listener_configured(&self) -> bool {
        self.callback_base.is_some()
    }

    /// Wakes the channel worker: a connect left a channel to open.
    pub(super) fn mark_due(&self) {
        self.due.notify_one();
    }
}

/// The callback URL of a channel: `{public_url}/cronofy/notifications/{key}`.
fn notification_url(base: &url::Url, channel_key: &str) -> String {
    let mut url = base.clone();
    let path = NOTIFICATION_PATH.replace("{channel_key}", channel_key);
    url.set_path(&format!("{}{path}", base.path().trim_end_matches('/')));
    url.set_query(None);
    url.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_urls_keep_the_public_path() {
        let base = url::Url::parse("https://calgate.example/prefix/").expect("url");
        assert_eq!(
            notification_url(&base, "nabc"),
            "https://calgate.example/prefix/cronofy/notifications/nabc"
        );
    }
}
