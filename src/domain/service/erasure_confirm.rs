//! Events gone before access is. Cronofy answers a bulk delete with 202
//! ("accepted for processing") and does not say whether a delete still
//! queued survives the revocation that follows; if it does not, the events
//! would stay in the person's calendar with nobody holding a token to remove
//! them. So an erasure that deletes events revokes only once a read of the
//! application's own events (`only_managed`, which Cronofy does not bound by
//! date) finds none of the tenant's left. ForgetUser waits for that a short,
//! bounded while (`erasure.confirm_within`); past it, the grant is hidden and
//! the erasure worker ([`ErasureService::finish_erasures`]) deletes again,
//! reads again, and revokes once the events are gone, on any replica, across
//! restarts.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::time::Instant;

use tracing::{info, warn};

use super::{Deadline, ErasureService, EventService, erasure::Deleted};
use crate::{
    cronofy::{CronofyClient, CronofyError},
    domain::{
        Error, Tenant,
        grant::GrantSelector,
        upstream::{self, Call},
    },
    resilience::GuardError,
    store::PendingErasure,
    telemetry::metrics::METRICS,
};

/// Most pages of the user's managed events read to confirm them gone: past
/// that many, some are certainly left.
const MAX_PAGES: usize = 20;
/// First pause between two reads while waiting; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(2);
/// Kept free of the caller's deadline, to finish the erasure and answer.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);
/// Erasures the worker takes per round.
const BATCH: i64 = 20;
/// How long one replica holds an erasure it works on (others skip it).
const CLAIM: Duration = Duration::from_secs(300);
/// Longest pause between two attempts at one erasure.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

impl EventService {
    /// How many of the tenant's events the user's calendars still hold at
    /// Cronofy: `GET /v1/events?tzid=Etc/UTC&only_managed=true`, every page,
    /// counting live events whose `event_id` is the tenant's (a tenant
    /// sharing its application sees the others' too). Any scope that writes
    /// events may read them this way.
    pub(super) async fn tenant_events_left(
        &self,
        tenant: &Arc<Tenant>,
        selector: &GrantSelector,
        deadline: Deadline,
    ) -> Result<usize, Error> {
        let mut url = CronofyClient::all_managed_events_url(&tenant.app.endpoints);
        let mut left = 0;
        for _ in 0..MAX_PAGES {
            let lease = self.credentials.access_token(tenant, selector, false).await?;
            let (events, next) = call_with_refresh!(self, tenant, deadline, lease, Call::other("events"), |token| {
                self.cronofy.read_events_page(&tenant.app.endpoints, token, &url)
            })?;
            left += events
                .iter()
                .filter(|event| !event.deleted)
                .filter(|event| {
                    event
                        .event_id
                        .as_deref()
                        .is_some_and(|id| tenant.event_ids.caller(id).is_some())
                })
                .count();
            match next {
                Some(next) => url = next,
                None => return Ok(left),
            }
        }
        Ok(left.max(1))
    }
}

impl ErasureService {
    /// Deletes the grant's events at Cronofy and waits, a bounded while, to
    /// see them gone. A transient failure (Cronofy down, its rate limit, the
    /// budget) leaves the deletion to the worker. When the grant cannot be
    /// used any more, `required` fails with that grant's error; otherwise its
    /// events are past deleting.
    pub(super) async fn delete_events(
        &self,
        tenant: &Arc<Tenant>,
        selector: &GrantSelector,
        required: bool,
        deadline: Deadline,
    ) -> Result<Deleted, Error> {
        match self.events.delete_all_events(tenant, selector, &[], deadline).await {
            Ok(()) => Ok(self.confirm_deleted(tenant, selector, deadline).await),
            Err(error) if error.is_upstream_transient() => {
                warn!(tenant = %tenant.id, %error, "deleting a forgotten user's events failed; the erasure worker tries again");
                Ok(Deleted::Unconfirmed)
            }
            Err(Error::GrantNeedsReauth | Error::GrantRevoked | Error::GrantIsServiceAccount) if !required => {
                Ok(Deleted::Impossible)
            }
            Err(error) => Err(error),
        }
    }

    /// Reads the user's events until none of the tenant's is left, for at
    /// most `erasure.confirm_within` (and never past the caller's deadline).
    async fn confirm_deleted(&self, tenant: &Arc<Tenant>, selector: &GrantSelector, deadline: Deadline) -> Deleted {
        let mut give_up = Instant::now() + self.settings.confirm_within;
        if let Some(deadline) = deadline {
            give_up = give_up.min(deadline.checked_sub(ANSWER_MARGIN).unwrap_or(deadline));
        }
        let mut pause = FIRST_PAUSE;
        loop {
            match self.events.tenant_events_left(tenant, selector, deadline).await {
                Ok(0) => return Deleted::Confirmed(self.clock.now()),
                Ok(left) => info!(tenant = %tenant.id, left, "deleted events not gone at Cronofy yet"),
                Err(error) => warn!(tenant = %tenant.id, %error, "reading back deleted events failed"),
            }
            if Instant::now() + pause >= give_up {
                return Deleted::Unconfirmed;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// One round of the erasure worker: each erasure due is claimed (one
    /// replica works on it), its events read back, deleted again while some
    /// are left, and once none is, the grant is revoked and erased. Returns
    /// how many erasures finished.
    pub async fn finish_erasures(&self, tenants: &HashMap<String, Arc<Tenant>>) -> usize {
        let due = match self.store.due_erasures(BATCH).await {
            Ok(due) => due,
            Err(error) => {
                warn!(%error, "reading pending erasures failed");
                return 0;
            }
        };
        let mut finished = 0;
        for erasure in due {
            match self.store.claim_erasure(&erasure, CLAIM.as_secs() as i64).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    warn!(%error, "claiming a pending erasure failed");
                    continue;
                }
            }
            let Some(tenant) = tenants.get(&erasure.tenant_id) else {
                // Its Cronofy client is needed to delete and revoke: it waits for the tenant to come back.
                warn!(tenant = %erasure.tenant_id, "a pending erasure's tenant is not configured; it waits");
                continue;
            };
            match self.finish_erasure(tenant, &erasure).await {
                Ok(true) => finished += 1,
                outcome => {
                    let backoff = self
                        .settings
                        .retry_interval
                        .saturating_mul(2u32.saturating_pow(erasure.attempts.clamp(0, 20) as u32))
                        .min(MAX_BACKOFF);
                    if let Err(error) = outcome {
                        warn!(tenant = %tenant.id, attempts = erasure.attempts + 1, %error, "a pending erasure failed; tried again later");
                    }
                    let _ = self
                        .store
                        .postpone_erasure(&tenant.id, &erasure.sub, backoff.as_secs().max(1) as i64)
                        .await;
                }
            }
        }
        finished
    }

    /// One attempt at a pending erasure. True when it finished: its events
    /// are gone (or can no longer be deleted by anyone) and the grant was
    /// revoked and erased.
    pub(super) async fn finish_erasure(&self, tenant: &Arc<Tenant>, erasure: &PendingErasure) -> Result<bool, Error> {
        let selector = GrantSelector::Erasing(erasure.sub.clone());
        let deleted = match self.events.tenant_events_left(tenant, &selector, None).await {
            Ok(0) => Deleted::Confirmed(self.clock.now()),
            Ok(_) => self.delete_events(tenant, &selector, false, None).await?,
            // No token deletes or reads them any more: nobody can do better.
            Err(Error::GrantNeedsReauth | Error::GrantRevoked) => Deleted::Impossible,
            Err(Error::GrantNotFound) => return Ok(true),
            Err(error) => return Err(error),
        };
        if deleted == Deleted::Unconfirmed {
            return Ok(false);
        }
        if deleted == Deleted::Impossible {
            warn!(tenant = %tenant.id, "a pending erasure's grant can no longer be used: erased without seeing its events gone");
            METRICS.erasure("unconfirmed");
        }
        let erased = self
            .erase_grant(tenant, &erasure.sub, deleted, None, &erasure.actor())
            .await?;
        info!(tenant = %tenant.id, attempts = erasure.attempts + 1, upstream_pending = erased.upstream_pending, "pending erasure finished");
        Ok(true)
    }
}
