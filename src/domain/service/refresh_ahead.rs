//! The background refresher: grants used within `refresh_ahead.used_within`
//! are refreshed before their access token enters the window where calls
//! would refresh it, spread over `refresh_ahead.lead`, within a share of each
//! application's budget that never makes a caller wait, and across replicas
//! once per grant (a claim in the store, then the usual refresh lease).

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::StreamExt;
use tracing::{debug, warn};

use super::super::refresh::Need;
use super::Credentials;
use crate::domain::{Error, Tenant};

/// Candidates read per round, soonest expiry first.
const CANDIDATES: i64 = 500;
/// Background refreshes in flight at once on a replica.
const CONCURRENCY: usize = 4;
/// How long a replica's claim on a grant lasts: it bounds one refresh and
/// paces the retry of a failed one.
const CLAIM: Duration = Duration::from_secs(60);

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AheadRound {
    /// Grants refreshed (or found fresh: another replica or a call was first).
    pub refreshed: usize,
    /// Refreshes that failed (retried after the claim lapses).
    pub failed: usize,
    /// Grants left for a later round: no budget share, or callers waiting.
    pub deferred: usize,
}

impl Credentials {
    /// Writes the grants calls used since the last round (`last_used_at`).
    pub async fn record_usage(&self) {
        let now = self.clock.now().unix_timestamp();
        let used = self.usage.take(now);
        if let Err(error) = self.store.mark_used(now, &used).await {
            warn!(%error, grants = used.len(), "recording which grants were used failed; retrying next round");
            self.usage.restore(used);
        }
    }

    /// One round of the background refresher.
    pub async fn refresh_ahead_round(&self, tenants: &HashMap<String, Arc<Tenant>>) -> AheadRound {
        self.record_usage().await;
        let mut round = AheadRound::default();
        if !self.refresh_ahead.enabled {
            return round;
        }
        let now = self.clock.now();
        let used_since = now - self.refresh_ahead.used_within;
        let candidates = match self
            .store
            .refresh_candidates(
                used_since.unix_timestamp(),
                self.refresher.ahead_horizon().unix_timestamp(),
                now.unix_timestamp(),
                CANDIDATES,
            )
            .await
        {
            Ok(candidates) => candidates,
            Err(error) => {
                warn!(%error, "reading grants due for a background refresh failed");
                return round;
            }
        };
        let due: Vec<(Arc<Tenant>, String)> = candidates
            .into_iter()
            .filter_map(|candidate| {
                let tenant = tenants.get(&candidate.tenant_id)?.clone();
                let expires = time::OffsetDateTime::from_unix_timestamp(candidate.access_expires_at).ok()?;
                self.refresher
                    .due_ahead(&tenant.id, &candidate.sub, expires)
                    .then_some((tenant, candidate.sub))
            })
            .collect();
        // Applications out of budget this round: the rest of their grants wait.
        let spent = std::sync::Mutex::new(std::collections::HashSet::<String>::new());
        let outcomes: Vec<Outcome> = futures::stream::iter(due)
            .map(|(tenant, sub)| {
                let spent = &spent;
                async move {
                    let application = format!("{}@{}", tenant.app.client_id, tenant.data_center.as_str());
                    if spent.lock().unwrap_or_else(|p| p.into_inner()).contains(&application) {
                        return Outcome::Deferred;
                    }
                    let outcome = self.refresh_one_ahead(&tenant, &sub).await;
                    if outcome == Outcome::Deferred {
                        spent.lock().unwrap_or_else(|p| p.into_inner()).insert(application);
                    }
                    outcome
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for outcome in outcomes {
            match outcome {
                Outcome::Refreshed => round.refreshed += 1,
                Outcome::Failed => round.failed += 1,
                Outcome::Deferred => round.deferred += 1,
                Outcome::Taken => {}
            }
        }
        if round != AheadRound::default() {
            debug!(?round, "background refresh round");
        }
        round
    }

    async fn refresh_one_ahead(&self, tenant: &Arc<Tenant>, sub: &str) -> Outcome {
        let now = self.clock.now().unix_timestamp();
        let until = now + CLAIM.as_secs() as i64;
        match self.store.claim_refresh(&tenant.id, sub, now, until).await {
            Ok(true) => {}
            Ok(false) => return Outcome::Taken,
            Err(error) => {
                warn!(tenant = %tenant.id, %error, "claiming a background refresh failed");
                return Outcome::Failed;
            }
        }
        match self.refresher.refresh(tenant, sub, Need::Ahead).await {
            Ok(_) => Outcome::Refreshed,
            Err(Error::RateBudgetExhausted { .. }) => {
                // Nothing was sent: let whichever replica has budget take it.
                let _ = self.store.release_refresh_claim(&tenant.id, sub).await;
                Outcome::Deferred
            }
            // Logged where it happened; the claim paces the retry.
            Err(_) => Outcome::Failed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Refreshed,
    Failed,
    Deferred,
    /// Another replica claimed it.
    Taken,
}
