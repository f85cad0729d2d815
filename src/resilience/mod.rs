//! What stands between calgate and a bad day at Cronofy: retries with backoff
//! for transient failures, and a request budget and a circuit breaker per
//! Cronofy application — (client_id, data centre), shared by every tenant
//! configured with that application, because Cronofy limits and fails per
//! application, not per tenant [docs: /developers/faqs/rate-limits]. Every
//! Cronofy call goes through [`Resilience::call`], token calls included.

mod breaker;
mod budget;
mod fair;
mod queued;
mod retry;
mod retrying;
mod shared;

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

pub use breaker::{Admission, Breaker, BreakerPolicy, BreakerState};
pub use budget::{NO_RESERVE, RateBudget, RateLimit, Reserve};
pub use retry::RetryPolicy;

pub use retrying::Payer;
use shared::{SharedBreaker, SharedBudget};

use crate::{cronofy::CronofyError, store::Store, telemetry::metrics::METRICS};

/// Why a guarded call failed.
#[derive(Debug)]
pub enum GuardError {
    /// Cronofy's own answer (after retries, for transient ones).
    Upstream(CronofyError),
    /// The tenant's request budget had no room before the caller's deadline.
    BudgetExhausted {
        /// How long until there would have been room.
        retry_after: Duration,
    },
    /// The breaker is open: Cronofy has been failing; calls fail fast.
    CircuitOpen {
        /// How long until a probe is let through.
        retry_after: Duration,
    },
}

/// The guards of one tenant: in this process, or shared by every replica.
#[derive(Debug)]
enum TenantGuards {
    Local {
        budget: RateBudget,
        breaker: Breaker,
    },
    // Boxed: each holds a store handle, several times the local guards' size.
    Shared {
        budget: Box<SharedBudget>,
        breaker: Box<SharedBreaker>,
    },
}

impl TenantGuards {
    async fn allow(&self) -> Result<Admission, Duration> {
        match self {
            TenantGuards::Local { breaker, .. } => breaker.allow(),
            // The shared breaker's probe is a row lease in the store that expires after one cool-down.
            TenantGuards::Shared { breaker, .. } => breaker
                .allow()
                .await
                .map(|probe| if probe { Admission::Probe } else { Admission::Call }),
        }
    }

    /// The breaker's permission for one attempt: a guard that, dropped
    /// before the outcome is recorded (deadline, reset, refused budget),
    /// hands a probe back instead of wedging the breaker. Err: how long the
    /// breaker stays open.
    async fn pass_breaker(&self) -> Result<ProbeGuard<'_>, Duration> {
        let admission = self.allow().await?;
        Ok(ProbeGuard {
            guards: self,
            armed: admission == Admission::Probe,
        })
    }

    fn release_probe(&self) {
        match self {
            TenantGuards::Local { breaker, .. } => breaker.release_probe(),
            TenantGuards::Shared { breaker, .. } => breaker.release_probe(),
        }
    }

    /// Takes `cost` requests of budget now, leaving `keep`, or not at all.
    async fn try_now(&self, cost: u32, keep: Reserve) -> Result<(), Duration> {
        match self {
            TenantGuards::Local { budget, .. } => budget.try_take(cost, keep),
            TenantGuards::Shared { budget, .. } => budget.take(cost, keep, Instant::now()).await,
        }
    }

    /// Waits for `cost` requests of budget until `give_up_at`.
    async fn acquire(&self, cost: u32, give_up_at: Instant) -> Result<(), Duration> {
        match self {
            TenantGuards::Local { budget, .. } => budget.take(cost, NO_RESERVE, give_up_at).await,
            TenantGuards::Shared { budget, .. } => budget.take(cost, NO_RESERVE, give_up_at).await,
        }
    }

    async fn record(&self, healthy: bool) {
        match self {
            TenantGuards::Local { breaker, .. } => breaker.record(healthy),
            TenantGuards::Shared { breaker, .. } => breaker.record(healthy).await,
        }
    }
}

/// Background work's share of an application's budget (see [`Resilience::admit_background`]).
#[derive(Debug)]
struct BackgroundGuard {
    /// At most this share of the application's budget, across replicas when shared.
    share: ShareBudget,
    /// Callers waiting for the application's budget on this replica right now.
    callers_waiting: AtomicUsize,
    /// After Cronofy answered a background request 429: no background work until then.
    paused_until: Mutex<Option<Instant>>,
    /// Tenants take turns at the background share, so one tenant's
    /// background work cannot hold another's behind it.
    turns: fair::FairQueue,
    /// Tenants take turns at what queued deliveries may spend.
    queue_turns: fair::FairQueue,
}

#[derive(Debug)]
enum ShareBudget {
    Local(RateBudget),
    Shared(Box<SharedBudget>),
}

/// Counts a caller waiting for budget while it lives.
struct Waiting<'a>(Option<&'a AtomicUsize>);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(count) = self.0 {
            count.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Why background work may not call Cronofy now, and for how long at least.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackgroundRefusal {
    /// Cronofy answered a background request 429 lately.
    Paused(Duration),
    /// Callers are waiting for the application's budget: they go first.
    CallersWaiting,
    /// The breaker is open.
    CircuitOpen(Duration),
    /// Background work spent its share, or the budget is full.
    BudgetSpent(Duration),
}

/// Retries, budgets and breakers for every tenant.
#[derive(Debug)]
pub struct Resilience {
    policy: RetryPolicy,
    /// Each tenant's guards: the same ones for tenants of one application.
    tenants: HashMap<String, Arc<TenantGuards>>,
    /// Each tenant's application's background share.
    background: HashMap<String, Arc<BackgroundGuard>>,
    /// Each tenant's application, `client_id@data_centre` (the budget metrics' label).
    applications: HashMap<String, String>,
    /// Each tenant's application's queue for budget, and its per-second limit.
    queues: HashMap<String, (Arc<fair::FairQueue>, u32)>,
    /// Each tenant's application's limit, and whether a batch counts each entry.
    limits: HashMap<String, (RateLimit, bool)>,
}

/// What [`Resilience::new`] needs to know of a tenant.
#[derive(Debug, Clone)]
pub struct TenantLimits {
    /// Tenant id.
    pub tenant: String,
    /// The tenant's Cronofy application, `client_id@data_centre`: tenants
    /// naming the same one share its budget and breaker.
    pub application: String,
    /// Requests allowed to that application (the same for all its tenants;
    /// config refuses anything else).
    pub rate_limit: RateLimit,
    /// The most of that budget background refreshes may take, in percent.
    pub background_percent: u32,
    /// Whether a `/v1/batch` request counts as one request per entry
    /// (`rate_limit.count_batch_entries`; Cronofy does not say).
    pub count_batch_entries: bool,
}

impl TenantLimits {
    /// The application key of a client id in a data centre.
    pub fn application_key(client_id: &str, data_center: &str) -> String {
        format!("{client_id}@{data_center}")
    }
}

impl Resilience {
    /// Guards for the given tenants, kept in this process.
    pub fn new(policy: RetryPolicy, breaker: BreakerPolicy, tenants: impl IntoIterator<Item = TenantLimits>) -> Self {
        Resilience::build(policy, breaker, tenants, None)
    }

    /// Guards for the given tenants, shared through `store` when it is shared
    /// by replicas (PostgreSQL), kept in this process otherwise.
    pub fn for_store(
        policy: RetryPolicy,
        breaker: BreakerPolicy,
        tenants: impl IntoIterator<Item = TenantLimits>,
        store: &Store,
    ) -> Self {
        Resilience::build(policy, breaker, tenants, store.is_shared().then(|| store.clone()))
    }

    fn build(
        policy: RetryPolicy,
        breaker: BreakerPolicy,
        tenants: impl IntoIterator<Item = TenantLimits>,
        shared: Option<Store>,
    ) -> Self {
        let mut applications: HashMap<String, Arc<TenantGuards>> = HashMap::new();
        let mut shares: HashMap<String, Arc<BackgroundGuard>> = HashMap::new();
        let mut background = HashMap::new();
        let mut names = HashMap::new();
        let mut app_queues: HashMap<String, Arc<fair::FairQueue>> = HashMap::new();
        let mut queues = HashMap::new();
        let mut limit_of = HashMap::new();
        let tenants = tenants
            .into_iter()
            .map(|limits| {
                let share = shares
                    .entry(limits.application.clone())
                    .or_insert_with(|| {
                        let limit = share_of(limits.rate_limit, limits.background_percent);
                        Arc::new(BackgroundGuard {
                            share: match &shared {
                                None => ShareBudget::Local(RateBudget::new(limit)),
                                Some(store) => ShareBudget::Shared(Box::new(SharedBudget::new(
                                    store.clone(),
                                    format!("{}/background", limits.application),
                                    limit,
                                ))),
                            },
                            callers_waiting: AtomicUsize::new(0),
                            paused_until: Mutex::new(None),
                            turns: fair::FairQueue::default(),
                            queue_turns: fair::FairQueue::default(),
                        })
                    })
                    .clone();
                background.insert(limits.tenant.clone(), share);
                METRICS.budget_limit(
                    &limits.application,
                    limits.rate_limit.per_second,
                    limits.rate_limit.per_minute,
                );
                names.insert(limits.tenant.clone(), limits.application.clone());
                limit_of.insert(limits.tenant.clone(), (limits.rate_limit, limits.count_batch_entries));
                let queue = app_queues.entry(limits.application.clone()).or_default().clone();
                queues.insert(limits.tenant.clone(), (queue, limits.rate_limit.per_second));
                let guards = applications
                    .entry(limits.application.clone())
                    .or_insert_with(|| {
                        let name = limits.application.clone();
                        Arc::new(match &shared {
                            None => TenantGuards::Local {
                                budget: RateBudget::new(limits.rate_limit),
                                breaker: Breaker::new(name, breaker),
                            },
                            Some(store) => TenantGuards::Shared {
                                budget: Box::new(SharedBudget::new(store.clone(), name.clone(), limits.rate_limit)),
                                breaker: Box::new(SharedBreaker::new(store.clone(), name, breaker)),
                            },
                        })
                    })
                    .clone();
                (limits.tenant, guards)
            })
            .collect();
        Resilience {
            policy,
            tenants,
            background,
            applications: names,
            queues,
            limits: limit_of,
        }
    }

    /// The breaker state of a tenant's application, when kept in this process (tests).
    pub fn breaker_state(&self, tenant: &str) -> Option<BreakerState> {
        match self.tenants.get(tenant).map(Arc::as_ref) {
            Some(TenantGuards::Local { breaker, .. }) => Some(breaker.state()),
            _ => None,
        }
    }

    /// When a call for `deadline` stops trying: the deadline or the retry
    /// ceiling, whichever comes first.
    pub fn give_up_at(&self, deadline: Option<Instant>) -> Instant {
        let ceiling = Instant::now() + self.policy.ceiling;
        deadline.map_or(ceiling, |deadline| deadline.min(ceiling))
    }

    /// Permission for one attempt: the breaker lets it through and the budget
    /// pays for it, waiting for budget until `give_up_at`. The attempt's
    /// outcome goes to [`Ticket::record`].
    pub async fn admit(&self, tenant: &str, give_up_at: Instant) -> Result<Ticket<'_>, GuardError> {
        self.admit_costing(tenant, give_up_at, 1).await
    }

    /// [`Resilience::admit`] for an attempt that counts as `cost` requests
    /// (a batch whose entries count: [`Resilience::batch_cost`]).
    pub async fn admit_costing(&self, tenant: &str, give_up_at: Instant, cost: u32) -> Result<Ticket<'_>, GuardError> {
        let Some(guards) = self.tenants.get(tenant) else {
            // Tenants are fixed at start-up; an unknown one is a programming error, not the caller's.
            return Err(GuardError::Upstream(CronofyError::Transport { kind: "unknown tenant" }));
        };
        let probe = guards
            .pass_breaker()
            .await
            .map_err(|retry_after| GuardError::CircuitOpen { retry_after })?;
        let application = self.applications.get(tenant).map_or("", String::as_str);
        let _waiting = Waiting(self.background.get(tenant).map(|share| {
            share.callers_waiting.fetch_add(1, Ordering::SeqCst);
            &share.callers_waiting
        }));
        let paid = self.pay(tenant, guards, give_up_at, cost).await;
        METRICS.budget(application, if paid.is_ok() { "admitted" } else { "refused" });
        paid.map_err(|retry_after| GuardError::BudgetExhausted { retry_after })?;
        Ok(Ticket { guards, probe })
    }

    /// Pays for one attempt from the application's budget: at once when
    /// nobody waits and there is room; otherwise in the tenant's turn
    /// ([`fair::FairQueue`]), waiting for budget until `give_up_at`.
    async fn pay(&self, tenant: &str, guards: &TenantGuards, give_up_at: Instant, cost: u32) -> Result<(), Duration> {
        let Some((queue, per_second)) = self.queues.get(tenant) else {
            return guards.acquire(cost, give_up_at).await;
        };
        if queue.is_idle() && guards.try_now(cost, NO_RESERVE).await.is_ok() {
            return Ok(());
        }
        let _turn = queue
            .turn(tenant, give_up_at)
            .await
            .map_err(|waiting| fair::queue_wait(waiting, *per_second))?;
        guards.acquire(cost, give_up_at).await
    }

    /// Permission for one background attempt. It waits (until `give_up_at`)
    /// only for background work's own share of the budget; it is refused at
    /// once while callers wait for the application's budget, while the
    /// breaker is open, after a 429 to background work
    /// ([`Resilience::pause_background`]), or when the application's budget
    /// has no room now. What it takes counts against the application's budget
    /// too, so callers and background together never exceed it.
    pub async fn admit_background(&self, tenant: &str, give_up_at: Instant) -> Result<Ticket<'_>, BackgroundRefusal> {
        let (Some(guards), Some(share)) = (self.tenants.get(tenant), self.background.get(tenant)) else {
            return Err(BackgroundRefusal::BudgetSpent(Duration::from_secs(1)));
        };
        if let Some(until) = *share.paused_until.lock().unwrap_or_else(|p| p.into_inner())
            && until > Instant::now()
        {
            return Err(BackgroundRefusal::Paused(until - Instant::now()));
        }
        if share.callers_waiting.load(Ordering::SeqCst) > 0 {
            return Err(BackgroundRefusal::CallersWaiting);
        }
        match &share.share {
            ShareBudget::Local(budget) => budget.acquire(give_up_at).await,
            ShareBudget::Shared(budget) => budget.acquire(give_up_at).await,
        }
        .map_err(BackgroundRefusal::BudgetSpent)?;
        // Callers may have come while we waited for the share.
        if share.callers_waiting.load(Ordering::SeqCst) > 0 {
            return Err(BackgroundRefusal::CallersWaiting);
        }
        let probe = guards.pass_breaker().await.map_err(BackgroundRefusal::CircuitOpen)?;
        guards
            .acquire(1, Instant::now())
            .await
            .map_err(BackgroundRefusal::BudgetSpent)?;
        let application = self.applications.get(tenant).map_or("", String::as_str);
        METRICS.budget(application, "admitted");
        Ok(Ticket { guards, probe })
    }

    /// Stops background work for the tenant's application for `pause`
    /// (Cronofy answered it 429).
    pub fn pause_background(&self, tenant: &str, pause: Duration) {
        if let Some(share) = self.background.get(tenant) {
            let until = Instant::now() + pause;
            let mut paused = share.paused_until.lock().unwrap_or_else(|p| p.into_inner());
            if paused.is_none_or(|current| current < until) {
                *paused = Some(until);
            }
        }
    }

    /// The pause before trying again after attempt number `tries` failed with
    /// `error`; None when it must not be retried (not transient, out of
    /// attempts, or the pause would end after `give_up_at`).
    pub fn retry_delay(&self, tries: u32, error: &CronofyError, give_up_at: Instant) -> Option<Duration> {
        if !error.is_transient() || tries >= self.policy.max_attempts {
            return None;
        }
        let retry_after = match error {
            CronofyError::RateLimited { retry_after } => *retry_after,
            _ => None,
        };
        let delay = self.policy.delay(tries, retry_after, &mut rand::rng());
        // No clock arithmetic on a delay from outside: compare what is left.
        (delay <= give_up_at.saturating_duration_since(Instant::now())).then_some(delay)
    }

    /// Runs `attempt` for `tenant`: breaker first, then budget, then the call;
    /// transient failures (429, 5xx, transport) are retried with jittered
    /// backoff while the deadline and the retry ceiling allow. Other failures
    /// return at once.
    pub async fn call<T, F, Fut>(&self, tenant: &str, deadline: Option<Instant>, attempt: F) -> Result<T, GuardError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CronofyError>>,
    {
        self.call_paid(tenant, self.give_up_at(deadline), Payer::Caller { cost: 1 }, attempt)
            .await
    }
}

/// How long background work pauses at least after Cronofy answered it 429.
pub const BACKGROUND_PAUSE_AFTER_429: Duration = Duration::from_secs(60);

/// One admitted attempt (see [`Resilience::admit`]).
pub struct Ticket<'a> {
    guards: &'a TenantGuards,
    probe: ProbeGuard<'a>,
}

impl Ticket<'_> {
    /// Records the attempt's outcome with the breaker: 4xx and 429 mean
    /// Cronofy is up; only 5xx and silence count against it.
    pub async fn record<T>(self, outcome: &Result<T, CronofyError>) {
        let healthy = !matches!(
            outcome,
            Err(CronofyError::Server { .. } | CronofyError::Transport { .. })
        );
        self.probe.disarm();
        self.guards.record(healthy).await;
    }
}

/// `percent` of a budget, at least one request per window.
fn share_of(limit: RateLimit, percent: u32) -> RateLimit {
    let part = |n: u32| (u64::from(n) * u64::from(percent.min(100)) / 100).max(1) as u32;
    RateLimit {
        per_second: part(limit.per_second),
        per_minute: part(limit.per_minute),
    }
}

/// Releases a half-open breaker's probe when its call ends without an outcome.
struct ProbeGuard<'a> {
    guards: &'a TenantGuards,
    armed: bool,
}

impl ProbeGuard<'_> {
    /// The call has an outcome, which will be recorded.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.guards.release_probe();
        }
    }
}

#[cfg(test)]
mod tests;
