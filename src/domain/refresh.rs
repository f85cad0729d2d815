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

use futures::future::{BoxFuture, FutureExt, Shared};
use secrecy::SecretString;
use tracing::{error, info, warn};

use super::{
    Error, Tenant,
    clock::Clock,
    grant::{GrantSelector, GrantStatus, StatusReason, StoredGrant, Tokens},
    service::store_failure,
    upstream,
};
use crate::{
    cronofy::{CronofyClient, CronofyError},
    resilience::{GuardError, Resilience},
    store::Store,
    tasks::Tasks,
    telemetry::metrics::METRICS,
};

/// How many times a refreshed pair is offered to the store before it is parked in memory.
const STORE_ATTEMPTS: u32 = 3;

/// (tenant, sub).
type GrantKey = (String, String);

/// An access token and the grant version it belongs to.
#[derive(Debug, Clone)]
pub(super) struct Fresh {
    pub(super) token: SecretString,
    pub(super) version: i64,
}

type Flight = Shared<BoxFuture<'static, Result<Fresh, Error>>>;

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
}

/// Refreshes grants through Cronofy and records the result durably.
#[derive(Debug)]
pub(super) struct Refresher {
    pub(super) store: Store,
    pub(super) cronofy: CronofyClient,
    pub(super) resilience: Arc<Resilience>,
    pub(super) clock: Clock,
    pub(super) margin: Duration,
    tasks: Tasks,
    flights: Mutex<HashMap<GrantKey, Flight>>,
    pending: Mutex<HashMap<GrantKey, (i64, Tokens)>>,
}

impl Refresher {
    pub(super) fn new(
        store: Store,
        cronofy: CronofyClient,
        resilience: Arc<Resilience>,
        clock: Clock,
        margin: Duration,
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
            tasks,
            flights: Mutex::default(),
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

    /// A usable access token for `sub`, refreshed if `need` still holds once the
    /// grant is re-read. Concurrent callers share one refresh.
    pub(super) async fn refresh(self: &Arc<Self>, tenant: &Arc<Tenant>, sub: &str, need: Need) -> Result<Fresh, Error> {
        let fresh = self.join_or_start(tenant, sub, need).await?;
        match need {
            // We joined a flight that found nothing to do for the token Cronofy refused: refresh for real.
            Need::Rejected { version } if fresh.version == version => self.join_or_start(tenant, sub, need).await,
            _ => Ok(fresh),
        }
    }

    fn join_or_start(self: &Arc<Self>, tenant: &Arc<Tenant>, sub: &str, need: Need) -> Flight {
        let key = (tenant.id.clone(), sub.to_owned());
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flight) = flights.get(&key) {
            return flight.clone();
        }
        let this = self.clone();
        let tenant = tenant.clone();
        let task_key = key.clone();
        let task = self.tasks.spawn(async move {
            let result = this.run(&tenant, &task_key.1, need).await;
            this.flights.lock().unwrap_or_else(|p| p.into_inner()).remove(&task_key);
            result
        });
        let flight = async move {
            task.await.unwrap_or_else(|joined| {
                error!(error = %joined, "a refresh flight died");
                Err(Error::UpstreamUnavailable { retry_after: None })
            })
        }
        .boxed()
        .shared();
        flights.insert(key, flight.clone());
        flight
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
            let ticket = self
                .resilience
                .admit(&tenant.id, give_up_at)
                .await
                .map_err(|failure| upstream::guard_error(failure, upstream::Call::other("authorization")))?;
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
            let answer = self.cronofy.refresh(&tenant.app, &old_refresh).await;
            ticket.record(&answer).await;
            let response = match answer {
                Ok(response) => response,
                Err(CronofyError::InvalidGrant) => {
                    let reason = lease
                        .mark_needs_reauth(version)
                        .await
                        .map_err(|error| store_failure(&tenant.id, "marking a grant for re-authorization", &error))?;
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
            // Committed under the lease before anyone uses the new access token.
            return match lease.store_tokens(version, &fresh).await {
                Ok(Some(new_version)) => {
                    info!(tenant = %tenant.id, sub, "access token refreshed");
                    METRICS.refresh("refreshed");
                    Ok(Fresh {
                        token: fresh.access_token,
                        version: new_version,
                    })
                }
                Ok(None) => self.use_newer(tenant, sub).await,
                Err(error) => {
                    warn!(tenant = %tenant.id, sub, %error, "storing refreshed tokens under the lease failed");
                    self.store_refreshed(tenant, sub, version, fresh).await
                }
            };
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

    /// Writes the refreshed pair (compare-and-swap) after the lease's write
    /// failed, retrying a little; if the store keeps refusing, parks the pair in
    /// memory and reports the store down.
    async fn store_refreshed(&self, tenant: &Tenant, sub: &str, version: i64, fresh: Tokens) -> Result<Fresh, Error> {
        for attempt in 1..=STORE_ATTEMPTS {
            match self.store.update_tokens(&tenant.id, sub, version, &fresh).await {
                Ok(Some(new_version)) => {
                    info!(tenant = %tenant.id, sub, "access token refreshed");
                    return Ok(Fresh {
                        token: fresh.access_token,
                        version: new_version,
                    });
                }
                Ok(None) => return self.use_newer(tenant, sub).await,
                Err(error) => {
                    warn!(tenant = %tenant.id, sub, %error, attempt, "storing refreshed tokens failed");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
            }
        }
        error!(tenant = %tenant.id, sub, "refreshed tokens kept (memory and spill) until the store takes them");
        METRICS.refresh("parked");
        self.store.spill_pair(&tenant.id, sub, version, &fresh);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((tenant.id.clone(), sub.to_owned()), (version, fresh));
        Err(Error::StoreUnavailable)
    }

    /// Writes a parked pair for this grant, if any. Ok(None): nothing parked.
    async fn flush_pending(&self, tenant: &str, sub: &str) -> Result<Option<Fresh>, Error> {
        let key = (tenant.to_owned(), sub.to_owned());
        let parked = self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        let Some((version, tokens)) = parked else {
            return Ok(None);
        };
        match self.store.update_tokens(tenant, sub, version, &tokens).await {
            Ok(Some(new_version)) => {
                info!(tenant, sub, "parked refreshed tokens stored");
                self.store.remove_spilled(tenant, sub);
                Ok(Some(Fresh {
                    token: tokens.access_token,
                    version: new_version,
                }))
            }
            // The grant moved on (reconnected or revoked): the parked pair is obsolete.
            Ok(None) => {
                warn!(
                    tenant,
                    sub, "parked refreshed tokens are obsolete: the grant changed meanwhile"
                );
                self.store.remove_spilled(tenant, sub);
                Ok(None)
            }
            Err(_) => {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, (version, tokens));
                Err(Error::StoreUnavailable)
            }
        }
    }

    /// Writes every parked pair the store will take now (called when the store
    /// is back, and at shutdown), each inside its grant's flight. Returns the
    /// grants whose pairs are still parked.
    pub(super) async fn flush_all_pending(self: &Arc<Self>) -> Vec<(String, String)> {
        let keys: Vec<GrantKey> = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        for key in keys {
            let _ = self.flush_in_flight(key).await;
        }
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Writes a grant's parked pair as the grant's flight: joins the flight
    /// under way (which writes it first), or starts one that only writes it.
    fn flush_in_flight(self: &Arc<Self>, key: GrantKey) -> Flight {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flight) = flights.get(&key) {
            return flight.clone();
        }
        let this = self.clone();
        let task_key = key.clone();
        let task = self.tasks.spawn(async move {
            let (tenant, sub) = (&task_key.0, &task_key.1);
            let result = match this.flush_pending(tenant, sub).await {
                Ok(Some(fresh)) => Ok(fresh),
                // Nothing (left) to write: whoever joined gets the stored token.
                Ok(None) => this.stored_token(tenant, sub).await,
                Err(error) => Err(error),
            };
            this.flights.lock().unwrap_or_else(|p| p.into_inner()).remove(&task_key);
            result
        });
        let flight = async move {
            task.await.unwrap_or_else(|joined| {
                error!(error = %joined, "a flush of parked tokens died");
                Err(Error::StoreUnavailable)
            })
        }
        .boxed()
        .shared();
        flights.insert(key, flight.clone());
        flight
    }

    async fn stored_token(&self, tenant: &str, sub: &str) -> Result<Fresh, Error> {
        let stored = self
            .store
            .find_grant(tenant, &GrantSelector::Sub(sub.to_owned()))
            .await
            .map_err(|error| store_failure(tenant, "reading a grant", &error))?
            .ok_or(Error::GrantNotFound)?;
        let tokens = usable_tokens(&stored)?;
        Ok(Fresh {
            token: tokens.access_token.clone(),
            version: stored.version,
        })
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

/// The tokens of a grant calgate may act on, or why it may not.
pub(super) fn usable_tokens(stored: &StoredGrant) -> Result<&Tokens, Error> {
    match stored.grant.status {
        // A disconnected profile still reads and refreshes; event writes refuse it earlier.
        GrantStatus::Active | GrantStatus::ProfileDisconnected => stored.tokens.as_ref().ok_or(Error::GrantNeedsReauth),
        GrantStatus::NeedsReauth => Err(Error::GrantNeedsReauth),
        GrantStatus::Revoked => Err(Error::GrantRevoked),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_windows_spread_over_one_margin_and_are_stable() {
        let margin = Duration::from_secs(300);
        let windows: Vec<Duration> = (0..1000)
            .map(|n| refresh_window(margin, "acme", &format!("acc_{n}"), 1_800_000_000))
            .collect();
        assert!(windows.iter().all(|w| *w >= margin && *w < margin * 2));
        let early = windows.iter().filter(|w| **w < margin + margin / 2).count();
        assert!(
            (350..650).contains(&early),
            "about half in each half of the window: {early}"
        );
        assert_eq!(
            refresh_window(margin, "acme", "acc_1", 1_800_000_000),
            refresh_window(margin, "acme", "acc_1", 1_800_000_000)
        );
    }
}
