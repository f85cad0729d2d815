//! Writing the application's events and reading the user's calendars.

use std::sync::Arc;

use tracing::warn;

use super::{Credentials, Deadline, credentials::TokenLease, event_records::written_state, store_failure};
use crate::{
    clock::Clock,
    cronofy::{BatchEntry, CronofyClient, CronofyError, FreeBusyParams},
    domain::{
        Error, Tenant, Violations,
        changes::EventState,
        error::UnknownAvailability,
        event::Event,
        grant::{AccessMode, GrantSelector},
        reads::{self, Calendar, FreeBusyPeriod},
        upstream::{self, Call},
    },
    resilience::{GuardError, Payer, Resilience},
    store::Store,
};

/// Writes the application's events and reads the user's calendars.
#[derive(Debug)]
pub struct EventService {
    pub(super) store: Store,
    pub(super) cronofy: CronofyClient,
    pub(super) resilience: Arc<Resilience>,
    pub(super) clock: Clock,
    pub(super) credentials: Arc<Credentials>,
    /// `callbacks.public_url`: with it, writes are recorded to tell them from changes.
    pub(super) callback_base: Option<url::Url>,
}

/// Most free/busy pages followed for one read.
const MAX_FREE_BUSY_PAGES: usize = 50;

/// A checked ReadFreeBusy request.
#[derive(Debug, Clone)]
pub struct FreeBusyQuery {
    /// First day; unset means Cronofy's default, 42 days back.
    pub from: Option<time::Date>,
    /// Day after the last; unset means Cronofy's default, 201 days ahead.
    pub to: Option<time::Date>,
    /// IANA zone the dates are read in.
    pub tzid: String,
    /// Only these calendars; empty means all.
    pub calendar_ids: Vec<String>,
    /// Whether the application's own (managed) events count as busy.
    pub include_managed: bool,
}

impl FreeBusyQuery {
    /// Refuses dates outside Cronofy's documented window before asking it.
    fn check_window(&self, today: time::Date) -> Result<(), Error> {
        let (earliest, latest) = reads::free_busy_window(today);
        let mut v = Violations::default();
        if let Some(from) = self.from {
            if from < earliest {
                v.add("from", "must be at most 42 days in the past (Cronofy's limit)");
            } else if from >= latest {
                v.add("from", "must be before the end of Cronofy's window, 201 days ahead");
            }
        }
        if let Some(to) = self.to {
            if to > latest {
                v.add("to", "must be at most 201 days ahead (Cronofy's limit)");
            } else if to <= earliest {
                v.add("to", "must be after the start of Cronofy's window, 42 days back");
            }
        }
        v.finish()
    }

    /// The dates to send: the caller's, and Cronofy's defaults in `tzid` for
    /// those left empty, so that calgate's own events, which Cronofy's
    /// defaults do not bound, stay inside the window the API promises.
    fn explicit_dates(&self, now: time::OffsetDateTime) -> Result<(time::Date, time::Date), Error> {
        let mut v = Violations::default();
        let Some((default_from, default_to)) = reads::default_free_busy_dates(now, &self.tzid) else {
            v.add("tzid", "is not an IANA time zone calgate knows");
            return v.finish_with(None);
        };
        let (from, to) = (self.from.unwrap_or(default_from), self.to.unwrap_or(default_to));
        if to <= from {
            let field = if self.to.is_some() { "to" } else { "from" };
            v.add(
                field,
                "must leave a day between from and to (an empty date is Cronofy's default)",
            );
        }
        v.finish().map(|()| (from, to))
    }
}

/// Most writes one batch may carry (Cronofy's limit).
pub const MAX_BATCH_ITEMS: usize = 50;

/// One validated write of a batch.
#[derive(Debug, Clone)]
pub enum BatchOp {
    /// Create or update an event.
    Upsert {
        /// Target calendar.
        calendar_id: String,
        /// The event (boxed: it is far larger than a delete).
        event: Box<Event>,
    },
    /// Delete an event.
    Delete {
        /// Calendar holding it.
        calendar_id: String,
        /// The caller's event id.
        event_id: String,
    },
}

impl BatchOp {
    /// Request paths for Cronofy's field errors on item `index`: (event prefix, calendar field).
    fn paths(&self, index: usize) -> (String, String) {
        match self {
            BatchOp::Upsert { .. } => (
                format!("items[{index}].upsert.event."),
                format!("items[{index}].upsert.calendar_id"),
            ),
            BatchOp::Delete { .. } => (
                format!("items[{index}].delete."),
                format!("items[{index}].delete.calendar_id"),
            ),
        }
    }
}

/// A batch's event ids, each with its field path.
pub(super) fn batch_event_ids(ops: &[BatchOp]) -> impl Iterator<Item = (String, &str)> {
    ops.iter().enumerate().map(|(index, op)| match op {
        BatchOp::Upsert { event, .. } => (format!("items[{index}].upsert.event.event_id"), event.event_id.as_str()),
        BatchOp::Delete { event_id, .. } => (format!("items[{index}].delete.event_id"), event_id.as_str()),
    })
}

/// Refuses caller event ids the tenant's scheme has no room for (or that
/// take calgate's reserved prefix), each named by its field.
pub(super) fn check_event_ids<'a>(
    tenant: &Tenant,
    ids: impl IntoIterator<Item = (String, &'a str)>,
) -> Result<(), Error> {
    let mut violations = Violations::default();
    for (field, id) in ids {
        if let Err(problem) = tenant.event_ids.check(id) {
            violations.add(field, problem);
        }
    }
    violations.finish()
}

impl EventService {
    /// Creates or updates one of the application's events; answers how the
    /// write reaches the user (a calendar write, or an email invite).
    pub async fn upsert_event(
        &self,
        tenant: &Arc<Tenant>,
        selector: &GrantSelector,
        calendar_id: &str,
        event: &Event,
        deadline: Deadline,
    ) -> Result<AccessMode, Error> {
        check_event_ids(tenant, [("event.event_id".to_owned(), event.event_id.as_str())])?;
        let upstream_id = tenant.event_ids.upstream(&event.event_id);
        let body = event.to_cronofy();
        let lease = self.credentials.access_token(tenant, selector, true).await?;
        lease.gate.check(calendar_id)?;
        if let Some(conferencing) = &event.conferencing {
            lease.gate.check_conferencing(&conferencing.profile_id)?;
        }
        let access_mode = lease.access_mode;
        let sub = lease.sub.clone();
        call_with_refresh!(
            self,
            tenant,
            deadline,
            lease,
            Call::event("event.", "calendar_id"),
            |token| {
                self.cronofy
                    .upsert_event(&tenant.app.endpoints, token, calendar_id, &upstream_id, &body)
            }
        )?;
        let written = written_state(&event.start, &event.end, &event.summary);
        self.remember_event(tenant, &sub, calendar_id, &event.event_id, written)
            .await;
        Ok(access_mode)
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
        check_event_ids(tenant, [("event_id".to_owned(), event_id)])?;
        let upstream_id = tenant.event_ids.upstream(event_id);
        let lease = self.credentials.access_token(tenant, selector, true).await?;
        lease.gate.check(calendar_id)?;
        let sub = lease.sub.clone();
        call_with_refresh!(self, tenant, deadline, lease, Call::event("", "calendar_id"), |token| {
            self.cronofy
                .delete_event(&tenant.app.endpoints, token, calendar_id, &upstream_id)
        })?;
        self.remember_event(tenant, &sub, calendar_id, event_id, EventState::Deleted)
            .await;
        Ok(())
    }

    /// Deletes every event the tenant wrote for the user, in the named
    /// calendars or (none named) in all of them. Alone on its Cronofy
    /// application, a tenant uses Cronofy's bulk delete; sharing it, the bulk
    /// delete would take the other tenants' events too, so calgate deletes
    /// the events it recorded writing, by id. Never refused for a
    /// disconnected profile: Cronofy accepts the deletes, and an erasure
    /// must not wait for the user to relink.
    pub async fn delete_all_events(
        &self,
        tenant: &Arc<Tenant>,
        selector: &GrantSelector,
        calendar_ids: &[String],
        deadline: Deadline,
    ) -> Result<(), Error> {
        let lease = self.credentials.access_token(tenant, selector, true).await?;
        let sub = lease.sub.clone();
        if tenant.shares_application() {
            return self.delete_written_events(tenant, lease, calendar_ids, deadline).await;
        }
        call_with_refresh!(
            self,
            tenant,
            deadline,
            lease,
            Call::event("", "calendar_ids"),
            |token| {
                self.cronofy
                    .delete_all_events(&tenant.app.endpoints, token, calendar_ids)
            }
        )?;
        self.remember_all_deleted(tenant, &sub, calendar_ids).await;
        Ok(())
    }

    /// Deletes the events calgate recorded writing for the grant, by id, in
    /// batches of Cronofy's 50 (or the budget's burst, where each entry
    /// counts: [`crate::resilience::Resilience::largest_batch`]). Each deleted one is recorded at once, so a
    /// failure part-way leaves only the rest for the next attempt. `lease`
    /// serves the first batch; later ones take a fresh one.
    async fn delete_written_events(
        &self,
        tenant: &Arc<Tenant>,
        lease: TokenLease,
        calendar_ids: &[String],
        deadline: Deadline,
    ) -> Result<(), Error> {
        let sub = lease.sub.clone();
        let sub = sub.as_str();
        let mut first_lease = Some(lease);
        let written = self
            .store
            .written_events(&tenant.id, sub, calendar_ids)
            .await
            .map_err(|error| store_failure(&tenant.id, "listing the events calgate wrote", &error))?;
        let selector = GrantSelector::Sub(sub.to_owned());
        let largest = self.resilience.largest_batch(&tenant.id, false, MAX_BATCH_ITEMS);
        let give_up_at = self.resilience.give_up_at(deadline);
        for chunk in written.chunks(largest) {
            let entries: Vec<BatchEntry> = chunk
                .iter()
                .map(|(calendar_id, event_id)| BatchEntry::delete(calendar_id, &tenant.event_ids.upstream(event_id)))
                .collect();
            let lease = match first_lease.take() {
                Some(lease) => lease,
                None => self.credentials.access_token(tenant, &selector, true).await?,
            };
            let cost = self.resilience.batch_cost(&tenant.id, entries.len());
            let outcomes = call_with_refresh!(
                self,
                tenant,
                paid_by(Payer::Caller { cost }, give_up_at),
                lease,
                Call::event("", "calendar_ids"),
                |token| { self.cronofy.batch(&tenant.app.endpoints, token, &entries) }
            )?;
            let mut failure = None;
            for (outcome, (calendar_id, event_id)) in outcomes.into_iter().zip(chunk) {
                match outcome {
                    // A calendar gone took its events with it.
                    Ok(()) | Err(CronofyError::NotFound) => {
                        self.remember_event(tenant, sub, calendar_id, event_id, EventState::Deleted)
                            .await;
                    }
                    Err(error) => {
                        failure.get_or_insert(error);
                    }
                }
            }
            if let Some(error) = failure {
                return Err(upstream::api_error(error, Call::event("", "calendar_ids")));
            }
        }
        Ok(())
    }

    /// Lists the user's calendars.
    pub async fn list_calendars(
        &self,
        tenant: &Arc<Tenant>,
        selector: &GrantSelector,
        deadline: Deadline,
    ) -> Result<Vec<Calendar>, Error> {
        let lease = self.credentials.access_token(tenant, selector, false).await?;
        call_with_refresh!(self, tenant, deadline, lease, Call::other("calendar list"), |token| {
            self.cronofy.list_calendars(&tenant.app.endpoints, token)
        })
        .map(|entries| entries.into_iter().map(Calendar::from).collect())
    }

    /// Applies up to 50 writes through Cronofy's batch endpoint: one request,
    /// or — where each entry counts against the budget and the budget's
    /// burst is smaller ([`crate::resilience::Resilience::largest_batch`]) —
    /// several, one after another. The outer error means nothing was
    /// applied (the first request failed); otherwise one result per item, in
    /// order; items of a later request that failed carry its error.
    pub async fn batch_write(
        &self,
        tenant: &Arc<Tenant>,
        selector: &GrantSelector,
        ops: &[BatchOp],
        deadline: Deadline,
    ) -> Result<Vec<Result<(), Error>>, Error> {
        check_event_ids(tenant, batch_event_ids(ops))?;
        let ids = &tenant.event_ids;
        let entries = ops
            .iter()
            .map(|op| match op {
                BatchOp::Upsert { calendar_id, event } => {
                    BatchEntry::upsert(calendar_id, &ids.upstream(&event.event_id), &event.to_cronofy())
                        .map_err(|_| Error::UpstreamRefused("an event could not be encoded"))
                }
                BatchOp::Delete { calendar_id, event_id } => {
                    Ok(BatchEntry::delete(calendar_id, &ids.upstream(event_id)))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let lease = self.credentials.access_token(tenant, selector, true).await?;
        for op in ops {
            let (BatchOp::Upsert { calendar_id, .. } | BatchOp::Delete { calendar_id, .. }) = op;
            lease.gate.check(calendar_id)?;
            if let BatchOp::Upsert { event, .. } = op
                && let Some(conferencing) = &event.conferencing
            {
                lease.gate.check_conferencing(&conferencing.profile_id)?;
            }
        }
        let sub = lease.sub.clone();
        let largest = self.resilience.largest_batch(&tenant.id, false, MAX_BATCH_ITEMS);
        let give_up_at = self.resilience.give_up_at(deadline);
        let mut outcomes: Vec<Result<(), Error>> = Vec::with_capacity(entries.len());
        let mut lease = Some(lease);
        for part in entries.chunks(largest) {
            let lease = match lease.take() {
                Some(lease) => lease,
                None => self.credentials.access_token(tenant, selector, true).await?,
            };
            let cost = self.resilience.batch_cost(&tenant.id, part.len());
            let answered = call_with_refresh!(
                self,
                tenant,
                paid_by(Payer::Caller { cost }, give_up_at),
                lease,
                Call::other("batch endpoint"),
                |token| { self.cronofy.batch(&tenant.app.endpoints, token, part) }
            );
            match answered {
                Ok(answered) => {
                    for answer in answered {
                        let index = outcomes.len();
                        outcomes.push(answer.map_err(|error| {
                            let (event_prefix, calendar_field) = ops[index].paths(index);
                            upstream::api_error(error, Call::event(&event_prefix, &calendar_field))
                        }));
                    }
                }
                // Nothing was applied.
                Err(error) if outcomes.is_empty() => return Err(error),
                Err(error) => {
                    // Earlier requests were applied: the rest fail, each with this error.
                    warn!(tenant = %tenant.id, %error, "a later request of a batch failed");
                    outcomes.resize(entries.len(), Err(error));
                    break;
                }
            }
        }
        for (outcome, op) in outcomes.iter().zip(ops) {
            if outcome.is_err() {
                continue;
            }
            match op {
                BatchOp::Upsert { calendar_id, event } => {
                    let written = written_state(&event.start, &event.end, &event.summary);
                    self.remember_event(tenant, &sub, calendar_id, &event.event_id, written)
                        .await;
                }
                BatchOp::Delete { calendar_id, event_id } => {
                    self.remember_event(tenant, &sub, calendar_id, event_id, EventState::Deleted)
                        .await;
                }
            }
        }
        Ok(outcomes)
    }

    /// The user's free/busy periods between two dates, every page followed.
    pub async fn read_free_busy(
        &self,
        tenant: &Arc<Tenant>,
        selector: &GrantSelector,
        query: &FreeBusyQuery,
        deadline: Deadline,
    ) -> Result<Vec<FreeBusyPeriod>, Error> {
        let now = self.clock.now();
        query.check_window(now.date())?;
        let stored = self.credentials.find(tenant, selector).await?;
        if let Some(reason) = UnknownAvailability::of(&stored.grant, false) {
            let field = match selector {
                GrantSelector::Sub(_) | GrantSelector::Erasing(_) => "sub",
                GrantSelector::UserRef(_) => "user_ref",
            };
            // Free/busy of a calendar Cronofy does not know reads as free.
            return Err(Error::AvailabilityUnknown(vec![UnknownAvailability {
                field: field.to_owned(),
                reason,
            }]));
        }
        let (from, to) = query.explicit_dates(now)?;
        let endpoints = &tenant.app.endpoints;
        let mut page = Some(CronofyClient::free_busy_url(
            endpoints,
            &FreeBusyParams {
                from: from.to_string(),
                to: to.to_string(),
                tzid: &query.tzid,
                calendar_ids: &query.calendar_ids,
                include_managed: query.include_managed,
            },
        ));
        let mut periods = Vec::new();
        let mut pages = 0;
        let mut lease = self.credentials.access_token(tenant, selector, false).await?;
        while let Some(url) = page.take() {
            pages += 1;
            if pages > MAX_FREE_BUSY_PAGES {
                return Err(Error::UpstreamRefused(
                    "Cronofy returned more free/busy pages than calgate follows",
                ));
            }
            let (entries, next) = call_with_refresh!(
                self,
                tenant,
                deadline,
                lease.clone(),
                Call::other("free/busy page"),
                |token| { self.cronofy.free_busy_page(endpoints, token, &url) }
            )?;
            periods.extend(entries.into_iter().map(FreeBusyPeriod::from));
            page = next;
            if page.is_some() {
                // A refresh on this page leaves the lease stale; take the current token.
                lease = self.credentials.access_token(tenant, selector, false).await?;
            }
        }
        Ok(periods)
    }
}
