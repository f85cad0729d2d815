//! Budgets and breakers shared by replicas through the PostgreSQL store, so
//! that three replicas together stay within one Cronofy application's limits
//! and stop hammering a sick Cronofy together.

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;
use tracing::{info, warn};

use super::{BreakerPolicy, RateBudget, RateLimit, Reserve, budget::NO_RESERVE};
use crate::store::{BreakerRecord, Store};
use crate::telemetry::metrics::METRICS;

/// How long a replica trusts its copy of a shared breaker's state.
const BREAKER_CACHE: Duration = Duration::from_secs(1);

fn unix_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// One Cronofy application's request budget, counted in PostgreSQL by every
/// replica: the same two token buckets as a replica's own [`RateBudget`],
/// kept in one shared row, so no sliding second or minute carries more than
/// the limit across the fleet.
///
/// A replica claims requests a few at a time — at most 1 % of either window,
/// so with Cronofy's default 50/s and 500/min exactly one — and spends them
/// within the second they were claimed in. A busy replica thus writes to
/// PostgreSQL once per claim rather than once per request; what an idle
/// replica leaves unspent (under 1 % of a window) lapses with its second.
#[derive(Debug)]
pub(super) struct SharedBudget {
    store: Store,
    /// The application key (`client_id@data_centre`), the budget's row key.
    application: String,
    limit: RateLimit,
    claim_size: u32,
    /// Requests claimed and not yet sent: (unix second, how many).
    claimed: Mutex<(i64, u32)>,
    /// Held while claiming, so concurrent callers share one claim instead of each making one.
    claiming: tokio::sync::Mutex<()>,
    /// Used while PostgreSQL cannot count (the replica then limits itself).
    fallback: RateBudget,
}

impl SharedBudget {
    pub(super) fn new(store: Store, application: String, limit: RateLimit) -> Self {
        SharedBudget {
            store,
            application,
            claim_size: claim_size(limit),
            claimed: Mutex::new((0, 0)),
            claiming: tokio::sync::Mutex::new(()),
            fallback: RateBudget::new(limit),
            limit,
        }
    }

    /// Takes one claimed request of the current second, if there is one.
    fn spend_claimed(&self) -> bool {
        let second = unix_ms() / 1000;
        let mut claimed = self.claimed.lock().unwrap_or_else(|p| p.into_inner());
        if claimed.0 == second && claimed.1 > 0 {
            claimed.1 -= 1;
            return true;
        }
        false
    }

    /// Takes `cost` requests at once leaving `keep` (see
    /// [`RateBudget::try_take`]), waiting until `give_up_at`: claimed whole
    /// from the shared row (none of this replica's claimed requests are
    /// used), so a refusal spends nothing.
    pub(super) async fn take(&self, cost: u32, keep: Reserve, give_up_at: Instant) -> Result<(), Duration> {
        if cost <= 1 && keep == NO_RESERVE {
            return self.acquire(give_up_at).await;
        }
        // The buckets as they look to this taker: their capacity less what it must leave.
        let mut shapes = self.limit.buckets();
        for (shape, keep) in shapes.iter_mut().zip(keep) {
            shape.capacity = shape.capacity.saturating_sub(keep).max(1);
        }
        loop {
            let taken = self
                .store
                .take_rate_budget_whole(&self.application, &shapes, cost)
                .await;
            match taken {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(wait)) if Instant::now() + wait <= give_up_at => tokio::time::sleep(wait).await,
                Ok(Err(wait)) => return Err(wait),
                Err(error) => {
                    warn!(application = %self.application, %error, "shared request budget unreachable; limiting locally");
                    return self.fallback.take(cost, keep, give_up_at).await;
                }
            }
        }
    }

    pub(super) async fn acquire(&self, give_up_at: Instant) -> Result<(), Duration> {
        loop {
            if self.spend_claimed() {
                return Ok(());
            }
            let claiming = self.claiming.lock().await;
            // Someone else's claim may have landed while we waited.
            if self.spend_claimed() {
                return Ok(());
            }
            let taken = self
                .store
                .take_rate_budget(&self.application, &self.limit.buckets(), self.claim_size)
                .await;
            drop(claiming);
            match taken {
                Ok(Ok(claim)) => {
                    // One of the claim is this request; the rest wait for the next callers.
                    let mut claimed = self.claimed.lock().unwrap_or_else(|p| p.into_inner());
                    if claimed.0 == claim.second {
                        claimed.1 += claim.granted - 1;
                    } else {
                        *claimed = (claim.second, claim.granted - 1);
                    }
                    return Ok(());
                }
                Ok(Err(wait)) if Instant::now() + wait <= give_up_at => tokio::time::sleep(wait).await,
                Ok(Err(wait)) => return Err(wait),
                Err(error) => {
                    warn!(application = %self.application, %error, "shared request budget unreachable; limiting locally");
                    return self.fallback.acquire(give_up_at).await;
                }
            }
        }
    }
}

/// Requests claimed at once: 1 % of the smaller window (per second), at least 1.
/// A replica thus asks PostgreSQL at most about 100 times a second.
fn claim_size(limit: RateLimit) -> u32 {
    (limit.per_second / 100).min(limit.per_minute / 6000).max(1)
}

/// A circuit breaker whose state lives in PostgreSQL.
#[derive(Debug)]
pub(super) struct SharedBreaker {
    store: Store,
    name: String,
    policy: BreakerPolicy,
    cache: Mutex<(BreakerRecord, Option<Instant>)>,
    /// The probe lease this replica holds, if its call is the probe.
    probe: Mutex<Option<i64>>,
}

impl SharedBreaker {
    pub(super) fn new(store: Store, name: String, policy: BreakerPolicy) -> Self {
        let closed = BreakerRecord {
            failures: 0,
            open_until_ms: 0,
        };
        SharedBreaker {
            store,
            name,
            policy,
            cache: Mutex::new((closed, None)),
            probe: Mutex::new(None),
        }
    }

    fn take_probe(&self) -> Option<i64> {
        self.probe.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The probe ended without an outcome (its caller gave up, or the budget
    /// refused it): hands the lease back in the background, so the next call
    /// on any replica may probe at once (others see it within their cached view).
    pub(super) fn release_probe(&self) {
        let Some(lease) = self.take_probe() else { return };
        let (store, name) = (self.store.clone(), self.name.clone());
        // The cached record still says "open until the lease": this replica may probe again too.
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.1 = None;
        drop(cache);
        // Dropped outside a runtime (at exit): the lease lapses on its own.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            match store.release_breaker_probe(&name, lease).await {
                Ok(()) => info!(breaker = %name, "the probe ended without an answer; the next call probes"),
                Err(error) => warn!(breaker = %name, %error, "handing back an abandoned probe failed; its lease lapses after one cool-down"),
            }
        });
    }

    fn cached(&self) -> (BreakerRecord, Option<Instant>) {
        *self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, record: BreakerRecord) {
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = (record, Some(Instant::now()));
        METRICS.breaker(&self.name, i64::from(record.open_until_ms > unix_ms()));
    }

    async fn current(&self) -> BreakerRecord {
        let (record, read_at) = self.cached();
        if read_at.is_some_and(|at| at.elapsed() < BREAKER_CACHE) {
            return record;
        }
        match self.store.read_breaker(&self.name).await {
            Ok(record) => {
                self.remember(record);
                record
            }
            // The store being down is the store's problem; do not block calls on it.
            Err(_) => record,
        }
    }

    /// Ok(true) when this call is the probe (its outcome must be recorded
    /// or the probe released).
    pub(super) async fn allow(&self) -> Result<bool, Duration> {
        let record = self.current().await;
        let now = unix_ms();
        if record.open_until_ms == 0 {
            return Ok(false);
        }
        if record.open_until_ms > now {
            return Err(Duration::from_millis((record.open_until_ms - now) as u64));
        }
        // Cool-down over: exactly one replica gets to probe.
        match self.store.claim_breaker_probe(&self.name, self.policy.cool_down).await {
            Ok(Some(lease)) => {
                info!(breaker = %self.name, state = "half_open", "circuit breaker lets a probe through");
                self.remember(BreakerRecord {
                    failures: record.failures,
                    open_until_ms: lease,
                });
                *self.probe.lock().unwrap_or_else(|p| p.into_inner()) = Some(lease);
                Ok(true)
            }
            Ok(None) => {
                let record = self.store.read_breaker(&self.name).await.unwrap_or(record);
                self.remember(record);
                Err(Duration::from_millis((record.open_until_ms - now).max(1) as u64))
            }
            Err(_) => Ok(false),
        }
    }

    pub(super) async fn record(&self, healthy: bool) {
        // An outcome: the probe (if this was it) is spent, not abandoned.
        self.take_probe();
        let (cached, _) = self.cached();
        if healthy && cached.failures == 0 && cached.open_until_ms == 0 {
            // Quiet: nothing to reset. Not refreshing the cached view also keeps its
            // age honest, so another replica's opening is still seen within BREAKER_CACHE.
            return;
        }
        if healthy {
            if cached.failures > 0 || cached.open_until_ms > 0 {
                // Reset the shared count even when it never opened; log only a real close.
                let reset = matches!(self.store.record_breaker_success(&self.name).await, Ok(true));
                if reset && cached.open_until_ms > 0 {
                    info!(breaker = %self.name, state = "closed", "circuit breaker closed: Cronofy answers again");
                }
            }
            self.remember(BreakerRecord {
                failures: 0,
                open_until_ms: 0,
            });
            return;
        }
        let threshold = self.policy.failure_threshold;
        if let Ok(record) = self
            .store
            .record_breaker_failure(&self.name, threshold, self.policy.cool_down)
            .await
        {
            let opened = record.open_until_ms > unix_ms() && cached.open_until_ms <= unix_ms();
            if opened && record.failures >= i64::from(threshold) {
                warn!(
                    breaker = %self.name,
                    state = "open",
                    failures = record.failures,
                    cool_down = ?self.policy.cool_down,
                    "circuit breaker opened: failing fast on every replica"
                );
            }
            self.remember(record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_stay_within_one_percent_of_either_window() {
        let claim = |per_second, per_minute| claim_size(RateLimit { per_second, per_minute });
        assert_eq!(claim(50, 500), 1, "Cronofy's default: one request at a time");
        assert_eq!(claim(1000, 60_000), 10);
        assert_eq!(claim(1000, 6000), 1, "a tight minute window keeps claims small");
        assert_eq!(claim(1_000_000, 60_000_000), 10_000);
    }
}
