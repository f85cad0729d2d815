//! Running an attempt until it succeeds, fails for good, or its time is up:
//! each try admitted and paid for by a caller or by background work.

use std::{future::Future, time::Duration};

use tokio::time::Instant;
use tracing::warn;

use super::{BACKGROUND_PAUSE_AFTER_429, BackgroundRefusal, GuardError, Resilience, Ticket};
use crate::cronofy::CronofyError;

impl Resilience {
    /// Runs `attempt` for `tenant` as background work (push notifications,
    /// channels): like [`Resilience::call`], but each attempt is paid from
    /// background work's share of the budget
    /// ([`Resilience::admit_background`]), waiting while callers wait for
    /// the budget, until `give_up_at`.
    pub async fn call_background<T, F, Fut>(
        &self,
        tenant: &str,
        give_up_at: Instant,
        attempt: F,
    ) -> Result<T, GuardError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CronofyError>>,
    {
        self.retrying(tenant, give_up_at, Payer::Background, attempt).await
    }

    /// Runs `attempt`, each try admitted and paid for by `payer`; transient
    /// failures are retried with jittered backoff until `give_up_at`.
    pub(super) async fn retrying<T, F, Fut>(
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
                Payer::Caller => self.admit(tenant, give_up_at).await?,
                Payer::Background => self.admit_background_until(tenant, give_up_at).await?,
            };
            let outcome = attempt().await;
            if payer == Payer::Background
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

/// Who pays for an attempt: a caller from the application's budget, or
/// background work from its share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Payer {
    Caller,
    Background,
}

/// How often background work looks again while callers wait for budget.
const CALLERS_WAITING_POLL: Duration = Duration::from_millis(50);
