//! Writing the application's events and reading the user's calendars.

use std::sync::Arc;

use super::{CalendarService, Deadline};
use crate::{
    cronofy::{CalendarEntry, CronofyError},
    domain::{Error, Tenant, event::Event, grant::GrantSelector, upstream},
    resilience::GuardError,
};

impl CalendarService {
    /// Creates or updates one of the application's events.
    pub async fn upsert_event(
        &self,
        tenant: &Arc<Tenant>,
        selector: &GrantSelector,
        calendar_id: &str,
        event: &Event,
        deadline: Deadline,
    ) -> Result<(), Error> {
        let lease = self.access_token(tenant, selector, true).await?;
        call_with_refresh!(self, tenant, deadline, lease, "event.", |token| {
            self.cronofy
                .upsert_event(&tenant.app.endpoints, token, calendar_id, event)
        })
    }

    /// Deletes one of the application's events; an event already gone is fine.
    pub async fn delete_event(
        &self,
        tenant: &Arc<Tenant>,
        selector: &GrantSelector,
        calendar_id: &str,
        event_id: &str,
        deadline: Deadline,
    ) -> Result<(), Error> {
        let lease = self.access_token(tenant, selector, true).await?;
        call_with_refresh!(self, tenant, deadline, lease, "", |token| {
            self.cronofy
                .delete_event(&tenant.app.endpoints, token, calendar_id, event_id)
        })
    }

    /// Lists the user's calendars.
    pub async fn list_calendars(
        &self,
        tenant: &Arc<Tenant>,
        selector: &GrantSelector,
        deadline: Deadline,
    ) -> Result<Vec<CalendarEntry>, Error> {
        let lease = self.access_token(tenant, selector, false).await?;
        call_with_refresh!(self, tenant, deadline, lease, "", |token| {
            self.cronofy.list_calendars(&tenant.app.endpoints, token)
        })
    }
}
