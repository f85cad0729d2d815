//! Keeping access tokens fresh without ever losing a refresh token.
//!
//! - One refresh per grant at a time in this process: the first caller starts
//!   a *flight* — a spawned task — and every caller needing the same grant
//!   awaits its shared result. The task, not the caller, owns the refresh: a
//!   caller that gives up (deadline, cancellation) cannot abort a refresh whose
//!   rotated refresh token Cronofy has already issued.
//! - Inside the flight the grant is re-read first: another path may already
//!   have refreshed it.
//! - The new pair is written with a compare-and-swap on the grant's version
//!   before the new access token is used. If the store refuses the write, the
//!   pair is parked (`pending`, and spilled to `store.spill_dir`, encrypted,
//!   so a restart loses nothing) and is written before Cronofy is ever asked
//!   again for that grant — the old refresh token may already be dead. A
//!   parked pair is written only inside the grant's own flight, so no refresh
//!   can read the old token while it is being written.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex},
    time::Duration,
};

use super::single_flight::{self, SingleFlight};
use secrecy::SecretString;
use tracing::{info, warn};

use super::{
    Error, Tenant,
    error::store_failure,
    grant::{GrantSelector, GrantStatus, StatusReason, StoredGrant, Tokens},
    upstream,
};
use crate::{
    clock::Clock,
    cronofy::{CronofyClient, CronofyError},
    resilience::{BackgroundRefusal, GuardError, Resilience},
    store::Store,
    tasks::Tasks,
    telemetry::metrics::METRICS,
};

/// How many times a refreshed pair is offered to the store before it is parked in memory.
const STORE_ATTEMPTS: u32 = 3;
/// After a refresh behind a call failed, calls leave the grant's token alone this long.
pub(super) const BEHIND_BACKOFF: Duration = Duration::from_secs(30);
/// Grants remembered in that backoff at most (a bound, not a tuning knob).
const MAX_BACKOFF_ENTRIES: usize = 10_000;
/// A background refresh waits this long at most for background work's share
/// of the budget (about a round); it never waits for the callers' part.
const BACKGROUND_SHARE_WAIT: Duration = Duration::from_secs(5);

/// (tenant, sub).
type GrantKey = (String, String);

/// An access token and the grant version it belongs to.
#[derive(Debug, Clone)]
pub(super) struct Fresh {
    pub(super) token: SecretString,
    pub(super) version: i64,
}

type Flight = single_flight::Flight<Result<Fresh, Error>>;

/// Why a refresh is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    /// The stored access token expires within the (jittered) margin.
    Expiring,
    /// Cronofy answered 401 to the token of this version.
    Rejected {
        /// The version whose access token was refused.
        version: i64,
    },
    /// The background refresher: the token is due ahead of need
    /// ([`Refresher::due_ahead`]). Takes background budget — waiting at most
    /// a round for its share, never for the callers' part — and is not
    /// retried here (the claim paces retries).
    Ahead,
}

/// Refreshes grants through Cronofy and records the result durably.
#[derive(Debug)]
pub(super) struct Refresher {
    pub(super) store: Store,
    pub(super) cronofy: CronofyClient,
    pub(super) resilience: Arc<Resilience>,
    pub(super) clock: Clock,
    pub(super) margin: Duration,
    /// `refresh_ahead.lead`: background refreshes spread over this long
    /// before the on-demand window.
    pub(super) lead: Duration,
    tasks: Tasks,
    /// Grants whose refresh behind a call failed lately: not tried again
    /// from a call before this instant (a refresh the caller waits for still is).
    behind_backoff: Mutex<HashMap<GrantKey, time::OffsetDateTime>>,
    /// Refreshes in flight, and whether each is the background refresher's.
    flights: SingleFlight<GrantKey, Result<Fresh, Error>, bool>,
    pending: Mutex<HashMap<GrantKey, (i64, Tokens)>>,
}

impl Refresher {
    pub(super) fn new(
        store: Store,
        cronofy: CronofyClient,
        resilience: Arc<Resilience>,
        clock: Clock,
        margin: Duration,
        lead: Duration,
        tasks: Tasks,
    ) -> Self {
        // Pairs a previous run of this replica could not store.
        let spilled: HashMap<GrantKey, (i64, Tokens)> = store
            .spilled_pairs()
            .into_iter()
            .map(|pair| ((pair.tenant, pair.sub), (pair.version, pair.tokens)))
            .collect();
        for (tenant, sub) in spilled.keys() {
            warn!(%tenant, sub, "refreshed tokens spilled by an earlier run will be written to the store first");
        }
        Refresher {
            store,
            cronofy,
            resilience,
            clock,
            margin,
            lead,
            tasks,
            behind_backoff: Mutex::default(),
            flights: SingleFlight::default(),
            pending: Mutex::new(spilled),
        }
    }

    /// Whether the access token should be refreshed before use: it expires within
    /// the margin plus a per-grant jitter of up to one more margin, so grants
    /// connected together do not all refresh in the same second.
    pub(super) fn needs_refresh(&self, tenant: &str, sub: &str, access_expires_at: time::OffsetDateTime) -> bool {
        let window = refresh_window(self.margin, tenant, sub, access_expires_at.unix_timestamp());
        access_expires_at - self.clock.now() <= window
    }

    /// Whether the background refresher should refresh the token now: it
    /// expires within twice the margin (where calls start refreshing it) plus
    /// a per-grant share of `lead`, so grants whose tokens expire together are
    /// refreshed spread over `lead`, and before any call would refresh them.
    pub(super) fn due_ahead(&self, tenant: &str, sub: &str, access_expires_at: time::OffsetDateTime) -> bool {
        let window = ahead_window(self.margin, self.lead, tenant, sub, access_expires_at.unix_timestamp());
        access_expires_at - self.clock.now() <= window
    }

    /// The farthest expiry [`Refresher::due_ahead`] can find due now.
    pub(super) fn ahead_horizon(&self) -> time::OffsetDateTime {
        self.clock.now() + self.margin * 2 + self.lead
    }

    /// A usable access token for `sub`, refreshed if `need` still holds once the
    /// grant is re-read. Concurrent callers share one refresh.
    pub(super) async fn refresh(self: &Arc<Self>, tenant: &Arc<Tenant>, sub: &str, need: Need) -> Result<Fresh, Error> {
        let (flight, background) = self.join_or_start_flight(tenant, sub, need);
        match (need, flight.await) {
            // We joined a flight that found nothing to do for the token Cronofy refused: refresh for real.
            (Need::Rejected { version }, Ok(fresh)) if fresh.version == version => {
                self.join_or_start(tenant, sub, need).await
            }
            // We joined a background refresh that had no budget: a caller's refresh waits for budget.
            (Need::Expiring | Need::Rejected { .. }, Err(Error::RateBudgetExhausted { .. })) if background => {
                self.join_or_start(tenant, sub, need).await
            }
            (_, fresh) => fresh,
        }
    }

    /// Starts (or joins) a refresh of a token that is still valid, without
    /// waiting for it: the call goes on with the current token. After a
    /// failure, calls do not start another for [`BEHIND_BACKOFF`].
    pub(super) fn refresh_behind(self: &Arc<Self>, tenant: &Arc<Tenant>, sub: &str) {
        let key = (tenant.id.clone(), sub.to_owned());
        {
            let mut backoff = self.behind_backoff.lock().unwrap_or_else(|p| p.into_inner());
            match backoff.get(&key) {
                Some(until) if *until > self.clock.now() => return,
                Some(_) => {
                    backoff.remove(&key);
                }
                None => {}
            }
        }
        let flight = self.join_or_start(tenant, sub, Need::Expiring);
        let this = self.clone();
        self.tasks.spawn(async move {
            if flight.await.is_err() {
                let mut backoff = this.behind_backoff.lock().unwrap_or_else(|p| p.into_inner());
                if backoff.len() >= MAX_BACKOFF_ENTRIES {
                    // Bounded: forgetting early only means an earlier retry.
                    backoff.clear();
                }
                backoff.insert(key, this.clock.now() + BEHIND_BACKOFF);
            }
        });
    }

    fn join_or_start(self: &Arc<Self>, tenant: &Arc<Tenant>, sub: &str, need: Need) -> Flight {
        self.join_or_start_flight(tenant, sub, need).0
    }

    /// The grant's flight, joined or started, and whether it is the background refresher's.
    fn join_or_start_flight(self: &Arc<Self>, tenant: &Arc<Tenant>, sub: &str, need: Need) -> (Flight, bool) {
        let key = (tenant.id.clone(), sub.to_owned());
        let (this, tenant, owned_sub) = (self.clone(), tenant.clone(), sub.to_owned());
        self.flights.join_or_start(
            key,
            need == Need::Ahead,
            &self.tasks,
            async move { this.run(&tenant, &owned_sub, need).await },
            || Err(Error::UpstreamUnavailable { retry_after: None }),
        )
    }

    async fn run(&self, tenant: &Tenant, sub: &str, need: Need) -> Result<Fresh, Error> {
        if let Some(fresh) = self.flush_pending(&tenant.id, sub).await? {
            return Ok(fresh);
        }
        let give_up_at = self.resilience.give_up_at(None);
        let mut tries = 0;
        loop {
            tries += 1;
            // Breaker and budget first: a lease — a pooled connection and, on
            // PostgreSQL, a row lock — is never held while waiting for them.
            let ticket = match need {
                Need::Ahead => self
                    .resilience
                    .admit_background(&tenant.id, tokio::time::Instant::now() + BACKGROUND_SHARE_WAIT)
                    .await
                    .map_err(|refused| Error::RateBudgetExhausted {
                        retry_after: match refused {
                            BackgroundRefusal::Paused(wait)
                            | BackgroundRefusal::CircuitOpen(wait)
                            | BackgroundRefusal::BudgetSpent(wait) => wait,
                            BackgroundRefusal::CallersWaiting => Duration::from_millis(100),
                        },
                    })?,
                Need::Expiring | Need::Rejected { .. } => self
                    .resilience
                    .admit(&tenant.id, give_up_at)
                    .await
                    .map_err(|failure| upstream::guard_error(failure, upstream::Call::other("authorization")))?,
            };
            // Across replicas, the lease serialises refreshes of this grant; the
            // grant is re-read inside it. It is held for one attempt only.
            let lease = self
                .store
                .lease_grant(&tenant.id, sub)
                .await
                .map_err(|error| store_failure(&tenant.id, "taking a refresh lease", &error))?;
            let Some(stored) = lease.grant() else {
                lease.release().await;
                return Err(Error::GrantNotFound);
            };
            let version = stored.version;
            let tokens = match usable_tokens(stored) {
                Ok(tokens) => tokens,
                Err(error) => {
                    lease.release().await;
                    return Err(error);
                }
            };
            let still_needed = match need {
                Need::Expiring => self.needs_refresh(&tenant.id, sub, tokens.access_expires_at),
                Need::Rejected { version: refused } => version == refused,
                Need::Ahead => self.due_ahead(&tenant.id, sub, tokens.access_expires_at),
            };
            if !still_needed {
                METRICS.refresh("not_needed");
                let fresh = Fresh {
                    token: tokens.access_token.clone(),
                    version,
                };
                lease.release().await;
                return Ok(fresh);
            }
            let old_refresh = tokens.refresh_token.clone();
            // Marked in flight, committed outside the lease, before Cronofy may
            // rotate the token: should this replica die before the answer, the
            // next refresh's invalid_grant is named REFRESH_ANSWER_LOST.
            let attempt = format!("{:016x}", rand::random::<u64>());
            if let Err(error) = self.store.mark_refresh_started(&tenant.id, sub, &attempt).await {
                warn!(tenant = %tenant.id, sub, %error, "marking a refresh in flight failed; a lost answer would not be named");
            }
            let answer = self.cronofy.refresh(&tenant.app, &old_refresh).await;
            ticket.record(&answer).await;
            let response = match answer {
                Ok(response) => response,
                Err(CronofyError::InvalidGrant) => {
                    let reason = lease
                        .mark_needs_reauth(version, &attempt)
                        .await
                        .map_err(|error| store_failure(&tenant.id, "marking a grant for re-authorization", &error))?;
                    // The grant needs its user; a new consent starts clean.
                    self.clear_refresh_marks(tenant, sub, None).await;
                    if let Some(reason) = reason {
                        warn!(tenant = %tenant.id, sub, reason = reason.as_str(), "Cronofy refused the refresh token; grant needs re-authorization");
                        METRICS.refresh(match reason {
                            StatusReason::InvalidGrant => "needs_reauth",
                            StatusReason::RefreshAnswerLost => "needs_reauth_answer_lost",
                        });
                    }
                    return Err(Error::GrantNeedsReauth);
                }
                Err(error) => {
                    lease.release().await;
                    if answer_may_be_lost(&error) {
                        // Cronofy may have rotated the refresh token and we never heard:
                        // a later invalid_grant is then not the user's doing.
                        if let Err(store_error) = self.store.mark_refresh_unsure(&tenant.id, sub).await {
                            warn!(tenant = %tenant.id, sub, error = %store_error, "recording a lost refresh answer failed");
                        }
                    } else {
                        // Cronofy answered: this attempt's token is still the one stored.
                        self.clear_refresh_marks(tenant, sub, Some(&attempt)).await;
                    }
                    if need == Need::Ahead {
                        if let CronofyError::RateLimited { retry_after } = &error {
                            // Background work backs off; callers keep their budget.
                            let pause = retry_after
                                .unwrap_or_default()
                                .max(crate::resilience::BACKGROUND_PAUSE_AFTER_429);
                            self.resilience.pause_background(&tenant.id, pause);
                        }
                        METRICS.refresh("upstream_failed");
                        warn!(tenant = %tenant.id, sub, %error, "background refresh failed; the token stays in use");
                        return Err(upstream::guard_error(
                            GuardError::Upstream(error),
                            upstream::Call::other("authorization"),
                        ));
                    }
                    if let Some(delay) = self.resilience.retry_delay(tries, &error, give_up_at) {
                        warn!(tenant = %tenant.id, sub, attempt = tries, ?delay, %error, "token refresh failed; retrying");
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    METRICS.refresh("upstream_failed");
                    warn!(tenant = %tenant.id, sub, %error, "token refresh failed; the grant stays active");
                    return Err(upstream::guard_error(
                        GuardError::Upstream(error),
                        upstream::Call::other("authorization"),
                    ));
                }
            };
            let fresh = Tokens {
                access_token: response.access_token,
                // Cronofy may omit the refresh token; the old one then stays valid.
                refresh_token: response.refresh_token.unwrap_or(old_refresh),
                access_expires_at: self.clock.now() + time::Duration::seconds(i64::from(response.expires_in)),
            };
            // Cronofy may have rotated the refresh token: this pair may be its
            // only copy. It goes to disk before the store is tried, so a replica
            // killed during the store's retries loses nothing.
            self.spill(tenant, sub, version, &fresh).await;
            // Committed under the lease before anyone uses the new access token.
            return match lease.store_tokens(version, &fresh).await {
                Ok(Some(new_version)) => {
                    info!(tenant = %tenant.id, sub, "access token refreshed");
                    METRICS.refresh("refreshed");
                    self.unspill(tenant, sub).await;
                    // The stored refresh token is Cronofy's current one again.
                    self.clear_refresh_marks(tenant, sub, None).await;
                    Ok(Fresh {
                        token: fresh.access_token,
                        version: new_version,
                    })
                }
                Ok(None) => {
                    self.unspill(tenant, sub).await;
                    self.clear_refresh_marks(tenant, sub, Some(&attempt)).await;
                    self.use_newer(tenant, sub).await
                }
                Err(error) => {
                    // The answer was heard and is parked (spilled): not lost.
                    self.clear_refresh_marks(tenant, sub, Some(&attempt)).await;
                    warn!(tenant = %tenant.id, sub, %error, "storing refreshed tokens under the lease failed");
                    self.store_refreshed(tenant, sub, version, fresh).await
                }
            };
        }
    }

    /// Removes refresh marks ([`crate::store::Store::mark_refresh_started`]):
    /// `attempt`'s, or all of the grant's. Best effort: a mark left behind
    /// only makes a later invalid_grant read REFRESH_ANSWER_LOST.
    async fn clear_refresh_marks(&self, tenant: &Tenant, sub: &str, attempt: Option<&str>) {
        if let Err(error) = self.store.clear_refresh_marks(&tenant.id, sub, attempt).await {
            warn!(tenant = %tenant.id, sub, %error, "clearing a refresh mark failed");
        }
    }

    /// The grant changed (reconnected or revoked) while we refreshed: the stored state wins.
    async fn use_newer(&self, tenant: &Tenant, sub: &str) -> Result<Fresh, Error> {
        warn!(tenant = %tenant.id, sub, "grant changed during refresh; using the stored tokens");
        let newer = self.read(tenant, sub).await?;
        let tokens = usable_tokens(&newer)?;
        Ok(Fresh {
            token: tokens.access_token.clone(),
            version: newer.version,
        })
    }

    async fn read(&self, tenant: &Tenant, sub: &str) -> Result<StoredGrant, Error> {
        self.store
            .find_grant(&tenant.id, &GrantSelector::Sub(sub.to_owned()))
            .await
            .map_err(|error| store_failure(&tenant.id, "re-reading a grant", &error))?
            .ok_or(Error::GrantNotFound)
    }
}

/// Whether Cronofy may have acted on a request whose answer calgate did not
/// get: it timed out or broke after sending, or Cronofy answered 5xx. A
/// connection that was never made, or a 429, sent nothing that took effect.
fn answer_may_be_lost(error: &CronofyError) -> bool {
    match error {
        CronofyError::Server { .. } => true,
        CronofyError::Transport { kind } => *kind != "connect",
        _ => false,
    }
}

/// How long before expiry a grant's token is refreshed: the margin plus a
/// jitter of up to one more margin, fixed per (grant, token) so that one
/// grant's decision does not flap between calls.
fn refresh_window(margin: Duration, tenant: &str, sub: &str, expires_at: i64) -> Duration {
    let mut hasher = DefaultHasher::new();
    (tenant, sub, expires_at).hash(&mut hasher);
    let fraction = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    margin + margin.mul_f64(fraction)
}

/// How long before expiry the background refresher refreshes a grant's
/// token: past twice the margin (calls refresh within it), plus a share of
/// `lead` fixed per (grant, token), spreading tokens that expire together.
fn ahead_window(margin: Duration, lead: Duration, tenant: &str, sub: &str, expires_at: i64) -> Duration {
    let mut hasher = DefaultHasher::new();
    ("ahead", tenant, sub, expires_at).hash(&mut hasher);
    let fraction = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    margin * 2 + lead.mul_f64(fraction)
}

/// The tokens of a grant calgate may act on, or why it may not.
pub(super) fn usable_tokens(stored: &StoredGrant) -> Result<&Tokens, Error> {
    match stored.grant.status {
        // A disconnected profile still reads and refreshes; event writes refuse it earlier.
        GrantStatus::Active | GrantStatus::ProfileDisconnected => stored.tokens.as_ref().ok_or(Error::GrantNeedsReauth),
        GrantStatus::NeedsReauth => Err(Error::GrantNeedsReauth),
        GrantStatus::Revoked => Err(Error::GrantRevoked),
    }
}

mod parked;
#[cfg(test)]
mod tests;
