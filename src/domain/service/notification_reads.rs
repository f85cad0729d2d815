//! What processing a notification reads at Cronofy: the profile's state
//! (UserInfo) for profile notifications, the changed events for a change
//! notification, each compared with what calgate wrote and recorded as a
//! change when it differs.

use std::{sync::Arc, time::Duration};

use tracing::{info, warn};

use super::{ChangeService, notifications::PAGES_PER_CHANNEL_PER_MINUTE, store_failure};
use crate::{
    cronofy::{CronofyClient, CronofyError, LinkingProfile, ReadEvent, UserInfoData},
    domain::{
        Error, Tenant,
        changes::{EventChange, EventChangeKind, EventState, SeenTime},
        grant::{GrantSelector, GrantStatus},
        profile::{Profile, ProfileKind, Profiles},
        upstream,
    },
    resilience::GuardError,
    store::QueuedNotification,
};

impl ChangeService {
    pub(super) async fn process(&self, tenant: &Arc<Tenant>, queued: &QueuedNotification) -> Result<(), Error> {
        let selector = GrantSelector::Sub(queued.sub.clone());
        let stored = match self.credentials.find(tenant, &selector).await {
            Ok(stored) => stored,
            Err(Error::GrantNotFound) => return Ok(()),
            Err(error) => return Err(error),
        };
        let status = stored.grant.status;
        if matches!(status, GrantStatus::Revoked | GrantStatus::NeedsReauth) {
            // Nothing can be read for it; its own changes were recorded already.
            return Ok(());
        }
        // A relink is announced by `change` notifications only: any notification
        // of a grant with a disconnected profile reads the profiles again.
        let any_disconnected = stored.grant.profiles.0.iter().any(|p| !p.connected);
        if queued.kind.starts_with("profile_")
            || queued.kind.starts_with("conferencing_profile_")
            || status == GrantStatus::ProfileDisconnected
            || any_disconnected
        {
            self.sync_profile(tenant, &selector).await?;
        }
        if queued.kind == "change"
            && let Some(since) = &queued.changes_since
        {
            self.read_event_changes(tenant, &selector, queued, since).await?;
        }
        Ok(())
    }

    /// Reads the account's profiles (UserInfo) and records their states:
    /// writes to a disconnected calendar profile's calendars fail fast until
    /// the user relinks it; the grant is PROFILE_DISCONNECTED while every
    /// calendar profile is.
    pub(super) async fn sync_profile(&self, tenant: &Arc<Tenant>, selector: &GrantSelector) -> Result<(), Error> {
        let lease = self.credentials.access_token(tenant, selector, false).await?;
        let sub = lease.sub.clone();
        let info = call_with_refresh!(
            self,
            tenant,
            background,
            lease,
            upstream::Call::other("user info"),
            |token| { self.cronofy.userinfo(&tenant.app.endpoints, token) }
        )?;
        let profiles = profiles_of(info.data.unwrap_or_default());
        let changed = self
            .store
            .set_profiles(&tenant.id, &sub, &profiles)
            .await
            .map_err(|error| store_failure(&tenant.id, "recording the profiles' states", &error))?;
        // The cached token carries the profiles' states that writes are checked against.
        self.credentials.tokens.forget_grant(&tenant.id, &sub);
        if changed.is_some() {
            let disconnected = profiles.0.iter().filter(|p| !p.connected).count();
            info!(tenant = %tenant.id, sub, disconnected, "profile state changed");
        }
        Ok(())
    }

    /// Reads the grant's own events changed since `since` (every page) and
    /// records those that differ from what calgate last knew. When the
    /// grant's pages for the minute run out, the next unread page is kept
    /// with the notification and the next attempt goes on from it: nothing
    /// is skipped, no page is read twice.
    async fn read_event_changes(
        &self,
        tenant: &Arc<Tenant>,
        selector: &GrantSelector,
        queued: &QueuedNotification,
        since: &str,
    ) -> Result<(), Error> {
        let stored = self.credentials.find(tenant, selector).await?;
        if stored.grant.change_tracking == crate::domain::grant::ChangeTracking::ProfileOnly {
            return Ok(());
        }
        let sub = stored.grant.sub;
        let first = CronofyClient::managed_events_url(&tenant.app.endpoints, since);
        let resumed = queued
            .resume_page
            .as_deref()
            .and_then(|page| url::Url::parse(page).ok())
            // Only ever on the tenant's API origin: the user's token goes there.
            .filter(|page| page.origin() == first.origin());
        let mut resuming = resumed.is_some();
        let mut page = Some(resumed.unwrap_or(first));
        while let Some(url) = page.take() {
            let page_left = self
                .store
                .take_channel_page(&tenant.id, &sub, PAGES_PER_CHANNEL_PER_MINUTE)
                .await
                .map_err(|error| store_failure(&tenant.id, "counting a channel's pages", &error))?;
            if !page_left {
                info!(tenant = %tenant.id, sub, "this grant's pages of changed events for the minute are spent; reading goes on from here later");
                self.store
                    .resume_notification_at(&queued.id, Some(url.as_str()))
                    .await
                    .map_err(|error| store_failure(&tenant.id, "keeping where reading stopped", &error))?;
                return Err(Error::RateBudgetExhausted {
                    retry_after: Duration::from_secs(60),
                });
            }
            let lease = self.credentials.access_token(tenant, selector, false).await?;
            let read = call_with_refresh!(
                self,
                tenant,
                background,
                lease,
                upstream::Call::other("events"),
                |token| { self.cronofy.read_events_page(&tenant.app.endpoints, token, &url) }
            );
            let (events, next) = match read {
                Ok(read) => read,
                Err(Error::InsufficientScope) => {
                    warn!(tenant = %tenant.id, sub, "Cronofy refuses to read the grant's events; event tracking is off for it");
                    return self
                        .store
                        .event_tracking_off(&tenant.id, &sub)
                        .await
                        .map_err(|error| store_failure(&tenant.id, "turning event tracking off", &error));
                }
                Err(error @ Error::UpstreamNotFound(_)) if resuming => {
                    // The kept page is gone at Cronofy: the next attempt starts over.
                    let _ = self.store.resume_notification_at(&queued.id, None).await;
                    return Err(error);
                }
                Err(error) => return Err(error),
            };
            resuming = false;
            for event in events {
                self.observe(tenant, &sub, event).await?;
            }
            page = next;
        }
        Ok(())
    }

    async fn observe(&self, tenant: &Tenant, sub: &str, event: ReadEvent) -> Result<(), Error> {
        // Another tenant of the application wrote it: not this tenant's to see.
        let Some(event_id) = event
            .event_id
            .as_deref()
            .and_then(|id| tenant.event_ids.caller(id))
            .map(str::to_owned)
        else {
            return Ok(());
        };
        let start = event.start.as_deref().and_then(SeenTime::parse);
        let end = event.end.as_deref().and_then(SeenTime::parse);
        let summary = event.summary.unwrap_or_default();
        let (seen, change) = match (event.deleted, start, end) {
            (true, _, _) => (
                EventState::Deleted,
                EventChange {
                    calendar_id: event.calendar_id,
                    event_id,
                    kind: EventChangeKind::Deleted,
                    start: None,
                    end: None,
                    summary: String::new(),
                },
            ),
            (false, Some(start), Some(end)) => (
                EventState::Present {
                    start,
                    end,
                    summary: summary.clone(),
                },
                EventChange {
                    calendar_id: event.calendar_id,
                    event_id,
                    kind: EventChangeKind::Updated,
                    start: Some(start),
                    end: Some(end),
                    summary,
                },
            ),
            // Times calgate cannot read: nothing to compare.
            (false, _, _) => return Ok(()),
        };
        self.store
            .observe_event(&tenant.id, sub, &seen, &change)
            .await
            .map_err(|error| store_failure(&tenant.id, "recording an event change", &error))?;
        Ok(())
    }
}

/// UserInfo's profiles as calgate keeps them, bounded ([`Profiles::bounded`];
/// a profile whose state Cronofy does not give is taken as connected, as the
/// docs' examples show it).
fn profiles_of(data: UserInfoData) -> Profiles {
    let profile = |p: LinkingProfile, kind: ProfileKind| Profile {
        profile_id: p.profile_id.unwrap_or_default(),
        kind,
        provider_name: p.provider_name.unwrap_or_default(),
        profile_name: p.profile_name.unwrap_or_default(),
        connected: p.profile_connected != Some(false),
        relink_url: p.profile_relink_url.filter(|_| p.profile_connected == Some(false)),
        calendar_ids: p.profile_calendars.into_iter().map(|c| c.calendar_id).collect(),
    };
    let calendars = data.profiles.into_iter().map(|p| profile(p, ProfileKind::Calendar));
    let conferencing = data
        .conferencing_profiles
        .into_iter()
        .map(|p| profile(p, ProfileKind::Conferencing));
    Profiles::bounded(calendars.chain(conferencing).collect())
}
