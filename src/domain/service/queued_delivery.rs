//! Delivering a queued write: the same Cronofy call as the immediate one,
//! from the body stored when it was accepted, inside the background share of
//! the application's budget (immediate calls keep priority).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{EventService, credentials::TokenLease};
use crate::{
    cronofy::CronofyError,
    domain::{
        Error, Tenant,
        changes::{EventState, SeenTime},
        event::Event,
        grant::GrantSelector,
        upstream::{self, Call},
    },
    resilience::GuardError,
};

/// What delivering a queued upsert needs, stored sealed with it.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct QueuedUpsert {
    /// The event as Cronofy is sent it (without its `event_id`).
    pub(super) event: serde_json::Value,
    /// The conferencing profile the event asks for, checked again at delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) conferencing_profile: Option<String>,
    /// What calgate records of the write once delivered: start, end
    /// (canonical UTC texts or dates) and summary.
    pub(super) start: String,
    pub(super) end: String,
    pub(super) summary: String,
}

impl QueuedUpsert {
    /// The stored form of `event`'s upsert.
    pub(super) fn of(event: &Event) -> Result<QueuedUpsert, Error> {
        Ok(QueuedUpsert {
            event: serde_json::to_value(event.to_cronofy())
                .map_err(|_| Error::UpstreamRefused("an event could not be encoded"))?,
            conferencing_profile: event.conferencing.as_ref().map(|c| c.profile_id.clone()),
            start: SeenTime::written(&event.start).canonical(),
            end: SeenTime::written(&event.end).canonical(),
            summary: event.summary.clone(),
        })
    }

    /// What calgate records once it is delivered.
    fn written(&self) -> Option<EventState> {
        Some(EventState::Present {
            start: SeenTime::parse(&self.start)?,
            end: SeenTime::parse(&self.end)?,
            summary: self.summary.clone(),
        })
    }
}

impl EventService {
    /// Delivers a queued upsert to the grant `sub`, checking again what an
    /// immediate write checks (the grant usable, the calendar's profile and
    /// the conferencing profile connected).
    pub(super) async fn deliver_upsert(
        &self,
        tenant: &Arc<Tenant>,
        sub: &str,
        calendar_id: &str,
        event_id: &str,
        upsert: &QueuedUpsert,
    ) -> Result<(), Error> {
        let upstream_id = tenant.event_ids.upstream(event_id);
        let lease = self.writable_lease(tenant, sub, calendar_id).await?;
        if let Some(profile_id) = &upsert.conferencing_profile {
            lease.gate.check_conferencing(profile_id)?;
        }
        call_with_refresh!(
            self,
            tenant,
            background,
            lease,
            Call::event("event.", "calendar_id"),
            |token| {
                self.cronofy
                    .upsert_event(&tenant.app.endpoints, token, calendar_id, &upstream_id, &upsert.event)
            }
        )?;
        if let Some(written) = upsert.written() {
            self.remember_event(tenant, sub, calendar_id, event_id, written).await;
        }
        Ok(())
    }

    /// Delivers a queued delete to the grant `sub`.
    pub(super) async fn deliver_delete(
        &self,
        tenant: &Arc<Tenant>,
        sub: &str,
        calendar_id: &str,
        event_id: &str,
    ) -> Result<(), Error> {
        let upstream_id = tenant.event_ids.upstream(event_id);
        let lease = self.writable_lease(tenant, sub, calendar_id).await?;
        call_with_refresh!(
            self,
            tenant,
            background,
            lease,
            Call::event("", "calendar_id"),
            |token| {
                self.cronofy
                    .delete_event(&tenant.app.endpoints, token, calendar_id, &upstream_id)
            }
        )?;
        self.remember_event(tenant, sub, calendar_id, event_id, EventState::Deleted)
            .await;
        Ok(())
    }

    /// A token to write with into the grant's `calendar_id`, if a write may go there now.
    async fn writable_lease(&self, tenant: &Arc<Tenant>, sub: &str, calendar_id: &str) -> Result<TokenLease, Error> {
        let lease = self
            .credentials
            .access_token(tenant, &GrantSelector::Sub(sub.to_owned()), true)
            .await?;
        lease.gate.check(calendar_id)?;
        Ok(lease)
    }
}
