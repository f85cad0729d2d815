//! What calgate wrote of each event, recorded so that reading it back after a
//! notification is no change, and so that a tenant sharing its Cronofy
//! application can delete "all its events" by id.

use tracing::warn;

use super::EventService;
use crate::domain::{
    Tenant,
    changes::{EventState, SeenTime},
    event::EventTime,
};

/// The state calgate wrote, as Cronofy will read it back.
pub(super) fn written_state(start: &EventTime, end: &EventTime, summary: &str) -> EventState {
    EventState::Present {
        start: SeenTime::written(start),
        end: SeenTime::written(end),
        summary: summary.to_owned(),
    }
}

impl EventService {
    /// Whether calgate records the tenant's event writes: to tell its own
    /// writes from changes (with `[callbacks]`), and to delete "all its
    /// events" by id when it shares its Cronofy application. Otherwise the
    /// record would cost a store write per event write for nothing.
    fn records_writes(&self, tenant: &Tenant) -> bool {
        self.callback_base.is_some() || tenant.shares_application()
    }

    /// Remembers what calgate just wrote of an event (by the caller's id):
    /// reading it back after a notification is then no change, and a tenant
    /// sharing its Cronofy application deletes "all its events" from this
    /// record. A store failure costs a spurious change later, or an event a
    /// later DeleteAllEvents misses: logged, never failing the write that succeeded.
    pub(super) async fn remember_event(
        &self,
        tenant: &Tenant,
        sub: &str,
        calendar_id: &str,
        event_id: &str,
        state: EventState,
    ) {
        if !self.records_writes(tenant) {
            return;
        }
        let tenant = tenant.id.as_str();
        if let Err(error) = self
            .store
            .remember_event(tenant, sub, calendar_id, event_id, &state)
            .await
        {
            warn!(tenant, sub, %error, "remembering an event write failed; a notification may report it as a change");
        }
    }

    /// As [`Self::remember_event`] for a bulk delete.
    pub(super) async fn remember_all_deleted(&self, tenant: &Tenant, sub: &str, calendar_ids: &[String]) {
        if !self.records_writes(tenant) {
            return;
        }
        let tenant = tenant.id.as_str();
        let ids = (!calendar_ids.is_empty()).then_some(calendar_ids);
        if let Err(error) = self.store.remember_all_deleted(tenant, sub, ids).await {
            warn!(tenant, sub, %error, "remembering a bulk delete failed; notifications may report its events");
        }
    }
}
