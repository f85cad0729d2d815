//! What queued deliveries may spend of an application's budget: what callers
//! leave. They take budget only while each bucket keeps its reserve for
//! callers ([`RateLimit::queue_reserve`]: half the minute's burst), after
//! background work (which may dip into that reserve) and never ahead of a
//! waiting caller — except one turn in each round of the callers' fair
//! queue while callers wait, which keeps the queue moving when callers use
//! the whole budget. Tenants take turns at all of it.

use std::{sync::atomic::Ordering, time::Duration};

use tokio::time::Instant;

use super::{GuardError, Resilience, Ticket, fair};
use crate::{cronofy::CronofyError, telemetry::metrics::METRICS};

/// The queued deliveries' place in the callers' fair queue: one turn in each
/// round of the tenants waiting. No tenant id contains a space.
const QUEUED_WRITES: &str = "queued writes";

/// How often a queued delivery looks again while the budget is at its reserve.
const RESERVE_POLL: Duration = Duration::from_millis(20);

impl Resilience {
    /// Requests a `/v1/batch` request of `entries` counts as for `tenant`'s
    /// application: each entry unless `rate_limit.count_batch_entries` is off.
    pub fn batch_cost(&self, tenant: &str, entries: usize) -> u32 {
        match self.limits.get(tenant) {
            Some((_, false)) => 1,
            _ => entries.max(1) as u32,
        }
    }

    /// The most entries one batch of `tenant`'s may carry so that its cost
    /// fits the budget's buckets: a caller's batch any burst (`queued`
    /// false), a queued one a burst less the callers' reserve. At most
    /// `ceiling` (Cronofy's 50).
    pub fn largest_batch(&self, tenant: &str, queued: bool, ceiling: usize) -> usize {
        match self.limits.get(tenant) {
            Some((_, false)) => ceiling,
            Some((limit, true)) => {
                let keep = if queued {
                    limit.queue_reserve()
                } else {
                    super::NO_RESERVE
                };
                (limit.largest_take(keep) as usize).clamp(1, ceiling)
            }
            None => 1,
        }
    }

    /// Permission for one queued delivery costing `cost` requests, waiting
    /// until `give_up_at` (see the module's documentation).
    pub async fn admit_queued(&self, tenant: &str, give_up_at: Instant, cost: u32) -> Result<Ticket<'_>, GuardError> {
        let (Some(guards), Some(share), Some((callers, per_second)), Some((limit, _))) = (
            self.tenants.get(tenant),
            self.background.get(tenant),
            self.queues.get(tenant),
            self.limits.get(tenant),
        ) else {
            return Err(GuardError::Upstream(CronofyError::Transport { kind: "unknown tenant" }));
        };
        let refused = |retry_after: Duration| GuardError::BudgetExhausted { retry_after };
        let _turn = share
            .queue_turns
            .turn(tenant, give_up_at)
            .await
            .map_err(|waiting| refused(fair::queue_wait(waiting, *per_second)))?;
        let keep = limit.queue_reserve();
        let application = self.applications.get(tenant).map_or("", String::as_str);
        loop {
            let paused = share
                .paused_until
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .filter(|until| *until > Instant::now());
            let wait = match paused {
                Some(until) => until - Instant::now(),
                None => {
                    let probe = guards
                        .pass_breaker()
                        .await
                        .map_err(|retry_after| GuardError::CircuitOpen { retry_after })?;
                    if callers.is_idle() && share.callers_waiting.load(Ordering::SeqCst) == 0 {
                        match guards.try_now(cost, keep).await {
                            Ok(()) => {
                                METRICS.budget(application, "admitted");
                                return Ok(Ticket { guards, probe });
                            }
                            Err(wait) => wait,
                        }
                    } else {
                        // Callers wait: the queue takes one turn among them and pays in full.
                        let _turn = callers
                            .turn(QUEUED_WRITES, give_up_at)
                            .await
                            .map_err(|waiting| refused(fair::queue_wait(waiting, *per_second)))?;
                        guards.acquire(cost, give_up_at).await.map_err(refused)?;
                        METRICS.budget(application, "admitted");
                        return Ok(Ticket { guards, probe });
                    }
                }
            };
            // Look again soon: callers may stop waiting, or background work take the refill.
            let wait = wait.clamp(RESERVE_POLL, Duration::from_secs(1));
            if Instant::now() + wait > give_up_at {
                return Err(refused(wait));
            }
            tokio::time::sleep(wait).await;
        }
    }
}
