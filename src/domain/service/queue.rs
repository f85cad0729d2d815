//! Queued writes: accepted after the same checks as an immediate write and
//! stored, with no call to Cronofy in the request; delivered by the queue
//! worker on any replica — in order per event, tenants in turn, inside the
//! background share of the application's budget — retried while the
//! failure is transient and younger than `queue.max_age`, and settled
//! exactly once, with a `WriteSettled` change.

use std::{collections::HashMap, sync::Arc, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use tracing::{info, warn};

use super::{
    BatchOp, Credentials, EventService,
    events::MAX_BATCH_ITEMS,
    events::{batch_event_ids, check_event_ids},
    queued_delivery::{QueuedOp, QueuedUpsert},
    store_failure,
    wake::Wake,
};
use crate::{
    clock::Clock,
    config::QueueSettings,
    domain::{
        Error, Tenant,
        event::Event,
        grant::{AccessMode, GrantKind, GrantSelector},
        write_gate::WriteGate,
        write_queue::{WriteFailure, WriteKind, WriteRecord, WriteState, is_write_id, new_write_id},
    },
    store::{ClaimedWrite, NewWrite, Store},
    telemetry::metrics::METRICS,
};

/// First pause after a transient failure; it doubles per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The least pause after a delivery the budget had no room for.
const BUDGET_RETRY_MIN: Duration = Duration::from_millis(100);

/// A queued write calgate accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Its id.
    pub write_id: String,
    /// How it will reach the user (an upsert's Delivery).
    pub access_mode: AccessMode,
}

/// Queued writes: accepting, delivering, reporting.
#[derive(Debug)]
pub struct QueueService {
    pub(super) store: Store,
    pub(super) clock: Clock,
    pub(super) credentials: Arc<Credentials>,
    /// Delivers with the same calls as immediate writes.
    pub(super) events: Arc<EventService>,
    /// `[queue]`.
    pub(super) settings: QueueSettings,
    /// How long one replica holds a write it delivers: longer than any one
    /// attempt, so another replica takes a write over only once the replica
    /// that claimed it is surely gone.
    pub(super) claim: Duration,
    /// Wakes this replica's worker when a write is accepted.
    pub(super) accepted: Wake,
}

impl QueueService {
    /// Accepts an upsert after the checks an immediate one makes before
    /// calling Cronofy.
    pub async fn accept_upsert(
        &self,
        tenant: &Arc<Tenant>,
        selector: &GrantSelector,
        calendar_id: &str,
        event: &Event,
    ) -> Result<Accepted, Error> {
        check_event_ids(tenant, [("event.event_id".to_owned(), event.event_id.as_str())])?;
        let (sub, gate, access_mode) = self.writable(tenant, selector).await?;
        gate.check(calendar_id)?;
        if let Some(conferencing) = &event.conferencing {
            gate.check_conferencing(&conferencing.profile_id)?;
        }
        let body = serde_json::to_string(&QueuedUpsert::of(event)?)
            .map_err(|_| Error::UpstreamRefused("an event could not be encoded"))?;
        let body = SecretString::from(body);
        let write_id = self
            .enqueue(
                tenant,
                selector,
                &sub,
                calendar_id,
                &event.event_id,
                WriteKind::Upsert,
                Some(&body),
            )
            .await?;
        Ok(Accepted { write_id, access_mode })
    }

    /// Accepts a delete after the checks an immediate one makes.
    pub async fn accept_delete(
        &self,
        tenant: &Arc<Tenant>,
        selector: &GrantSelector,
        calendar_id: &str,
        event_id: &str,
    ) -> Result<Accepted, Error> {
        check_event_ids(tenant, [("event_id".to_owned(), event_id)])?;
        let (sub, gate, access_mode) = self.writable(tenant, selector).await?;
        gate.check(calendar_id)?;
        let write_id = self
            .enqueue(tenant, selector, &sub, calendar_id, event_id, WriteKind::Delete, None)
            .await?;
        Ok(Accepted { write_id, access_mode })
    }

    /// Accepts a batch's items as queued writes of their own, in order,
    /// after checking them all as an immediate batch does (ids, the grant,
    /// each calendar's and conferencing profile's state): one bad item fails
    /// the call and queues nothing. Then each is queued; one the full queue
    /// refuses has its error, the rest their write_id.
    pub async fn accept_batch(
        &self,
        tenant: &Arc<Tenant>,
        selector: &GrantSelector,
        ops: &[BatchOp],
    ) -> Result<Vec<Result<String, Error>>, Error> {
        check_event_ids(tenant, batch_event_ids(ops))?;
        let (sub, gate, _) = self.writable(tenant, selector).await?;
        let mut bodies = Vec::with_capacity(ops.len());
        for op in ops {
            let (BatchOp::Upsert { calendar_id, .. } | BatchOp::Delete { calendar_id, .. }) = op;
            gate.check(calendar_id)?;
            bodies.push(match op {
                BatchOp::Upsert { event, .. } => {
                    if let Some(conferencing) = &event.conferencing {
                        gate.check_conferencing(&conferencing.profile_id)?;
                    }
                    let body = serde_json::to_string(&QueuedUpsert::of(event)?)
                        .map_err(|_| Error::UpstreamRefused("an event could not be encoded"))?;
                    Some(SecretString::from(body))
                }
                BatchOp::Delete { .. } => None,
            });
        }
        let mut accepted = Vec::with_capacity(ops.len());
        for (op, body) in ops.iter().zip(&bodies) {
            let (calendar_id, event_id, kind) = match op {
                BatchOp::Upsert { calendar_id, event } => (calendar_id, &event.event_id, WriteKind::Upsert),
                BatchOp::Delete { calendar_id, event_id } => (calendar_id, event_id, WriteKind::Delete),
            };
            let queued = self
                .enqueue(tenant, selector, &sub, calendar_id, event_id, kind, body.as_ref())
                .await;
            if let Err(Error::StoreUnavailable) = queued {
                // The store is down: the rest would fail the same way; the caller retries the call.
                return Err(Error::StoreUnavailable);
            }
            accepted.push(queued);
        }
        Ok(accepted)
    }

    /// The grant a write names, if events can be written to it now: its
    /// sub, its write gate and its access mode.
    async fn writable(
        &self,
        tenant: &Arc<Tenant>,
        selector: &GrantSelector,
    ) -> Result<(String, WriteGate, AccessMode), Error> {
        let stored = self.credentials.find(tenant, selector).await?;
        if stored.grant.kind == GrantKind::ServiceAccount {
            return Err(Error::GrantIsServiceAccount);
        }
        crate::domain::refresh::usable_tokens(&stored)?;
        Ok((
            stored.grant.sub.clone(),
            WriteGate::of(&stored.grant),
            stored.grant.access_mode(),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    async fn enqueue(
        &self,
        tenant: &Tenant,
        selector: &GrantSelector,
        sub: &str,
        calendar_id: &str,
        event_id: &str,
        kind: WriteKind,
        body: Option<&SecretString>,
    ) -> Result<String, Error> {
        let write_id = new_write_id();
        let user_ref = match selector {
            GrantSelector::UserRef(user_ref) => Some(user_ref.as_str()),
            _ => None,
        };
        let new = NewWrite {
            write_id: &write_id,
            tenant: &tenant.id,
            sub,
            user_ref,
            calendar_id,
            event_id,
            kind,
            body,
        };
        let accepted = self
            .store
            .enqueue_write(&new, self.settings.max_per_tenant)
            .await
            .map_err(|error| store_failure(&tenant.id, "queueing a write", &error))?;
        let Some(superseded) = accepted else {
            METRICS.queued_write("refused_full");
            return Err(Error::QueueFull {
                limit: self.settings.max_per_tenant,
            });
        };
        METRICS.queued_write("accepted");
        for _ in 0..superseded {
            METRICS.queued_write("superseded");
        }
        self.accepted.now();
        Ok(write_id)
    }

    /// One of the tenant's queued writes (GetWrite).
    pub async fn get_write(&self, tenant: &Tenant, write_id: &str) -> Result<WriteRecord, Error> {
        if !is_write_id(write_id) {
            let mut violations = crate::domain::Violations::default();
            violations.add("write_id", "must be a write_id calgate answered (w_ and 32 hex digits)");
            violations.finish()?;
        }
        self.store
            .get_write(&tenant.id, write_id)
            .await
            .map_err(|error| store_failure(&tenant.id, "reading a queued write", &error))?
            .ok_or(Error::WriteNotFound)
    }

    /// One request's writes delivered (one alone, several in a batch), each
    /// then settled or put back for later.
    pub(super) async fn deliver_request(&self, tenants: &HashMap<String, Arc<Tenant>>, writes: Vec<ClaimedWrite>) {
        let outcomes = match tenants.get(&writes[0].tenant_id) {
            // A tenant removed from the config: nobody can deliver for it any more.
            None => vec![Err(Error::GrantNotFound); writes.len()],
            Some(tenant) if writes.len() == 1 => vec![self.attempt(tenant, &writes[0]).await],
            Some(tenant) => self.attempt_batch(tenant, &writes).await,
        };
        for (write, outcome) in writes.into_iter().zip(outcomes) {
            self.finish(write, outcome).await;
        }
    }

    /// The requests claimed writes go in: each user's writes in the order
    /// claimed (one per event), as many to a batch as its tenant's budget allows.
    pub(super) fn requests(&self, claimed: Vec<ClaimedWrite>) -> Vec<Vec<ClaimedWrite>> {
        let mut requests: Vec<Vec<ClaimedWrite>> = Vec::new();
        let mut open: HashMap<(String, String), usize> = HashMap::new();
        for write in claimed {
            let largest = self
                .events
                .resilience
                .largest_batch(&write.tenant_id, true, MAX_BATCH_ITEMS);
            let key = (write.tenant_id.clone(), write.sub.clone());
            match open.get(&key) {
                Some(&index) if requests[index].len() < largest => requests[index].push(write),
                _ => {
                    open.insert(key, requests.len());
                    requests.push(vec![write]);
                }
            }
        }
        requests
    }

    /// What follows one attempt at a claimed write: settled (delivered, or
    /// failed for good) or due again later.
    async fn finish(&self, write: ClaimedWrite, outcome: Result<(), Error>) {
        let failure = match outcome {
            Ok(()) => None,
            Err(error) => Some(WriteFailure::of(&error)),
        };
        let age_ms = (self.clock.now().unix_timestamp_nanos() / 1_000_000) as i64 - write.accepted_at;
        let too_old = age_ms >= self.settings.max_age.as_millis() as i64;
        let result = match &failure {
            Some(failure) if failure.is_transient() && !too_old => {
                let backoff = match failure {
                    // Nothing reached Cronofy: try again when the budget will have room.
                    WriteFailure::BudgetExhausted { .. } => failure
                        .retry_after()
                        .unwrap_or_default()
                        .clamp(BUDGET_RETRY_MIN, MAX_BACKOFF),
                    _ => FIRST_BACKOFF
                        .saturating_mul(2u32.saturating_pow(write.attempts.min(20)))
                        .min(MAX_BACKOFF)
                        .max(failure.retry_after().unwrap_or_default()),
                };
                let attempted = !matches!(failure, WriteFailure::BudgetExhausted { .. });
                let state = self
                    .store
                    .retry_write_later(&write, backoff.as_millis() as i64, failure, attempted)
                    .await;
                if let Ok(state) = state {
                    METRICS.queued_write(match state {
                        WriteState::Superseded => "superseded",
                        _ if attempted => "retried",
                        _ => "waited_for_budget",
                    });
                }
                state.map(|_| true)
            }
            Some(failure) => {
                METRICS.queued_write("failed");
                self.store.settle_write(&write, WriteState::Failed, Some(failure)).await
            }
            None => {
                METRICS.queued_write("delivered");
                self.store.settle_write(&write, WriteState::Delivered, None).await
            }
        };
        match result {
            Ok(true) => {}
            Ok(false) => info!(tenant = %write.tenant_id, "a queued write was taken over by another replica"),
            Err(error) => {
                // Its claim runs out and the write is tried again: a delivered
                // write is sent twice then, never lost (Cronofy's upsert and
                // delete are idempotent by event_id).
                warn!(tenant = %write.tenant_id, %error, "recording a queued write's outcome failed; it is tried again");
            }
        }
    }

    /// Several writes of one user in one batch request.
    async fn attempt_batch(&self, tenant: &Arc<Tenant>, writes: &[ClaimedWrite]) -> Vec<Result<(), Error>> {
        let mut outcomes = vec![Ok(()); writes.len()];
        let mut ops = Vec::with_capacity(writes.len());
        let mut sent = Vec::with_capacity(writes.len());
        for (index, write) in writes.iter().enumerate() {
            let op = match write.kind {
                WriteKind::Upsert => match opened(write) {
                    Ok(upsert) => QueuedOp::Upsert {
                        calendar_id: &write.calendar_id,
                        event_id: &write.event_id,
                        upsert,
                    },
                    Err(error) => {
                        outcomes[index] = Err(error);
                        continue;
                    }
                },
                WriteKind::Delete => QueuedOp::Delete {
                    calendar_id: &write.calendar_id,
                    event_id: &write.event_id,
                },
            };
            ops.push(op);
            sent.push(index);
        }
        let answered = self.events.deliver_batch(tenant, &writes[0].sub, &ops).await;
        for (outcome, index) in answered.into_iter().zip(sent) {
            outcomes[index] = outcome;
        }
        outcomes
    }

    async fn attempt(&self, tenant: &Arc<Tenant>, write: &ClaimedWrite) -> Result<(), Error> {
        match write.kind {
            WriteKind::Upsert => {
                let upsert = opened(write)?;
                self.events
                    .deliver_upsert(tenant, &write.sub, &write.calendar_id, &write.event_id, &upsert)
                    .await
            }
            WriteKind::Delete => {
                self.events
                    .deliver_delete(tenant, &write.sub, &write.calendar_id, &write.event_id)
                    .await
            }
        }
    }
}

/// A queued upsert's stored body. One no configured key opens (its key was
/// removed) cannot be sent.
fn opened(write: &ClaimedWrite) -> Result<QueuedUpsert, Error> {
    let body = write.body.as_ref().ok_or(Error::GrantUnreadable)?;
    serde_json::from_str(body.expose_secret()).map_err(|_| Error::GrantUnreadable)
}
