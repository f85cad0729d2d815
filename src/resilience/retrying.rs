//! Running an attempt until it succeeds, fails for good, or its time is up:
//! each try admitted and paid for by a caller, background work or the queue.

use std::{future::Future, time::Duration};

use tokio::time::Instant;
use tracing::warn;

use super::{BACKGROUND_PAUSE_AFTER_429, BackgroundRefusal, GuardError, Resilience, Ticket};
use crate::cronofy::CronofyError;

impl Resilience {
    /// Runs `attempt` for `tenant`, each try admitted and paid for by
    /// `payer` (a caller, background work's share of the budget:
    /// [`Resilience::admit_background`], or the queue's); transient failures
    /// are retried with jittered backoff until `give_up_at`.
    pub async fn call_paid<T, F, Fut>(
        &self,
        tenant: &str,
        give_up_at: Instant,
        payer: Payer,
        mut attempt: F,
    ) -> Result<T, GuardError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CronofyError>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            let ticket = match payer {
                Payer::Caller { cost } => self.admit_costing(tenant, give_up_at, cost).await?,
                Payer::Background => self.admit_background_until(tenant, give_up_at).await?,
                Payer::Queue { cost } => self.admit_queued(tenant, give_up_at, cost).await?,
            };
            let outcome = attempt().await;
            if !matches!(payer, Payer::Caller { .. })
                && let Err(CronofyError::RateLimited { retry_after }) = &outcome
            {
                self.pause_background(tenant, retry_after.unwrap_or_default().max(BACKGROUND_PAUSE_AFTER_429));
            }
            ticket.record(&outcome).await;
            let error = match outcome {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let Some(delay) = self.retry_delay(tries, &error, give_up_at) else {
                return Err(GuardError::Upstream(error));
            };
            warn!(tenant, attempt = tries, ?delay, %error, "Cronofy call failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// Waits for a background admission until `give_up_at`: while callers
    /// wait, after a pause, or for the share to refill.
    async fn admit_background_until(&self, tenant: &str, give_up_at: Instant) -> Result<Ticket<'_>, GuardError> {
        // Tenants take turns at the share: one tenant's backlog waits behind
        // another's next request, not the other way round.
        let _turn = match self.background.get(tenant) {
            Some(share) => {
                Some(
                    share
                        .turns
                        .turn(tenant, give_up_at)
                        .await
                        .map_err(|_| GuardError::BudgetExhausted {
                            retry_after: CALLERS_WAITING_POLL,
                        })?,
                )
            }
            None => None,
        };
        loop {
            let wait = match self.admit_background(tenant, give_up_at).await {
                Ok(ticket) => return Ok(ticket),
                Err(BackgroundRefusal::CircuitOpen(retry_after)) => {
                    return Err(GuardError::CircuitOpen { retry_after });
                }
                Err(BackgroundRefusal::CallersWaiting) => CALLERS_WAITING_POLL,
                Err(BackgroundRefusal::Paused(wait) | BackgroundRefusal::BudgetSpent(wait)) => wait,
            };
            let wait = wait.max(CALLERS_WAITING_POLL);
            if Instant::now() + wait > give_up_at {
                return Err(GuardError::BudgetExhausted { retry_after: wait });
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// Who pays for an attempt, and how many requests it counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payer {
    /// A caller, from the application's budget, in its tenant's turn.
    Caller {
        /// Requests the attempt counts as.
        cost: u32,
    },
    /// Background work (refreshes ahead, push notification reads, channel
    /// checks), from its share, after callers.
    Background,
    /// A queued delivery: from what callers leave (see [`Resilience::admit_queued`]).
    Queue {
        /// Requests the attempt counts as.
        cost: u32,
    },
}

/// How often background work looks again while callers wait for budget.
const CALLERS_WAITING_POLL: Duration = Duration::from_millis(50);
