//! Refreshed token pairs the store could not take at once: parked in
//! memory (and in `store.spill_dir` when set) and written when it can, each
//! inside its grant's flight so that no newer pair is overwritten.

use std::{sync::Arc, time::Duration};

use tracing::{error, info, warn};

use crate::telemetry::metrics::METRICS;

use super::{Flight, Fresh, GrantKey, Refresher, STORE_ATTEMPTS, usable_tokens};
use crate::domain::{
    Error, Tenant,
    error::store_failure,
    grant::{GrantSelector, Tokens},
};

impl Refresher {
    /// Writes a refreshed pair to the spill directory (file I/O and fsync,
    /// off the async threads).
    pub(super) async fn spill(&self, tenant: &Tenant, sub: &str, version: i64, fresh: &Tokens) {
        let (store, tenant, sub) = (self.store.clone(), tenant.id.clone(), sub.to_owned());
        // Tokens are not Clone on purpose: this is the one copy the spill needs.
        let fresh = Tokens {
            access_token: fresh.access_token.clone(),
            refresh_token: fresh.refresh_token.clone(),
            access_expires_at: fresh.access_expires_at,
        };
        let spilled = tokio::task::spawn_blocking(move || store.spill_pair(&tenant, &sub, version, &fresh)).await;
        if let Err(error) = spilled {
            error!(%error, "spilling refreshed tokens died: they live in memory only");
        }
    }

    /// Removes a pair the store took from the spill directory.
    pub(super) async fn unspill(&self, tenant: &Tenant, sub: &str) {
        let (store, tenant, sub) = (self.store.clone(), tenant.id.clone(), sub.to_owned());
        let _ = tokio::task::spawn_blocking(move || store.remove_spilled(&tenant, &sub)).await;
    }

    /// Writes the refreshed pair (compare-and-swap) after the lease's write
    /// failed, retrying a little; if the store keeps refusing, parks the pair in
    /// memory and reports the store down.
    pub(super) async fn store_refreshed(
        &self,
        tenant: &Tenant,
        sub: &str,
        version: i64,
        fresh: Tokens,
    ) -> Result<Fresh, Error> {
        for attempt in 1..=STORE_ATTEMPTS {
            match self.store.update_tokens(&tenant.id, sub, version, &fresh).await {
                Ok(Some(new_version)) => {
                    info!(tenant = %tenant.id, sub, "access token refreshed");
                    self.unspill(tenant, sub).await;
                    return Ok(Fresh {
                        token: fresh.access_token,
                        version: new_version,
                    });
                }
                Ok(None) => {
                    self.unspill(tenant, sub).await;
                    return self.use_newer(tenant, sub).await;
                }
                Err(error) => {
                    warn!(tenant = %tenant.id, sub, %error, attempt, "storing refreshed tokens failed");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
            }
        }
        error!(tenant = %tenant.id, sub, "refreshed tokens kept (memory and spill) until the store takes them");
        METRICS.refresh("parked");
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((tenant.id.clone(), sub.to_owned()), (version, fresh));
        Err(Error::StoreUnavailable)
    }

    /// Writes a parked pair for this grant, if any. Ok(None): nothing parked.
    pub(super) async fn flush_pending(&self, tenant: &str, sub: &str) -> Result<Option<Fresh>, Error> {
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
    pub(in crate::domain) async fn flush_all_pending(self: &Arc<Self>) -> Vec<(String, String)> {
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
    pub(super) fn flush_in_flight(self: &Arc<Self>, key: GrantKey) -> Flight {
        let this = self.clone();
        let (tenant, sub) = key.clone();
        let work = async move {
            match this.flush_pending(&tenant, &sub).await {
                Ok(Some(fresh)) => Ok(fresh),
                // Nothing (left) to write: whoever joined gets the stored token.
                Ok(None) => this.stored_token(&tenant, &sub).await,
                Err(error) => Err(error),
            }
        };
        self.flights
            .join_or_start(key, false, &self.tasks, work, || Err(Error::StoreUnavailable))
            .0
    }

    pub(super) async fn stored_token(&self, tenant: &str, sub: &str) -> Result<Fresh, Error> {
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
