//! Keeping access tokens fresh. One refresh per grant at a time in this
//! process: callers that need the same grant refreshed queue on its lock and,
//! once inside, re-read the grant — whoever went first has usually refreshed it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use secrecy::SecretString;
use tracing::{info, warn};

use super::{
    Error, Tenant,
    clock::Clock,
    grant::{GrantSelector, GrantStatus, StoredGrant, Tokens},
    upstream,
};
use crate::{
    cronofy::{CronofyClient, CronofyError},
    store::Store,
};

/// How many times a refreshed token pair is offered to the store before giving up.
const STORE_ATTEMPTS: u32 = 3;

/// (tenant, sub).
type GrantKey = (String, String);

/// Per-grant async locks, dropped from the map when nobody holds or waits for them.
#[derive(Debug, Default)]
pub(super) struct RefreshLocks {
    locks: Mutex<HashMap<GrantKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl RefreshLocks {
    fn lock_for(&self, tenant: &str, sub: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.entry((tenant.to_owned(), sub.to_owned())).or_default().clone()
    }

    fn release(&self, tenant: &str, sub: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Two references left (the map's and ours): nobody else holds or awaits it.
        if Arc::strong_count(&lock) == 2 {
            locks.remove(&(tenant.to_owned(), sub.to_owned()));
        }
    }
}

/// Refreshes grants through Cronofy and records the result durably.
#[derive(Debug)]
pub(super) struct Refresher {
    pub(super) store: Store,
    pub(super) cronofy: CronofyClient,
    pub(super) clock: Clock,
    pub(super) margin: Duration,
    pub(super) locks: RefreshLocks,
}

/// Why a refresh is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    /// The stored access token expires within the margin.
    Expiring,
    /// Cronofy answered 401 to the token of this version.
    Rejected {
        /// The version whose access token was refused.
        version: i64,
    },
}

impl Refresher {
    /// Whether the stored access token should be refreshed before use.
    pub(super) fn is_expiring(&self, tokens: &Tokens) -> bool {
        tokens.access_expires_at - self.clock.now() <= self.margin
    }

    /// Returns a usable access token for `sub`, refreshing it if `need` still holds
    /// once this caller has the grant's lock.
    pub(super) async fn refresh(&self, tenant: &Tenant, sub: &str, need: Need) -> Result<(SecretString, i64), Error> {
        let lock = self.locks.lock_for(&tenant.id, sub);
        let result = {
            let _guard = lock.lock().await;
            self.refresh_locked(tenant, sub, need).await
        };
        self.locks.release(&tenant.id, sub, lock);
        result
    }

    async fn refresh_locked(&self, tenant: &Tenant, sub: &str, need: Need) -> Result<(SecretString, i64), Error> {
        // Re-read: another caller may have refreshed while we waited.
        let stored = self
            .store
            .find_grant(&tenant.id, &GrantSelector::Sub(sub.to_owned()))
            .await
            .map_err(|_| Error::StoreUnavailable)?
            .ok_or(Error::GrantNotFound)?;
        let tokens = usable_tokens(&stored)?;
        let still_needed = match need {
            Need::Expiring => self.is_expiring(tokens),
            Need::Rejected { version } => stored.version == version,
        };
        if !still_needed {
            return Ok((tokens.access_token.clone(), stored.version));
        }
        let response = match self.cronofy.refresh(&tenant.app, &tokens.refresh_token).await {
            Ok(response) => response,
            Err(CronofyError::InvalidGrant) => {
                warn!(tenant = %tenant.id, sub, "Cronofy refused the refresh token; grant needs re-authorization");
                self.store
                    .mark_needs_reauth(&tenant.id, sub, stored.version)
                    .await
                    .map_err(|_| Error::StoreUnavailable)?;
                return Err(Error::GrantNeedsReauth);
            }
            Err(error) => {
                warn!(tenant = %tenant.id, sub, %error, "token refresh failed");
                return Err(upstream::shared(error));
            }
        };
        let fresh = Tokens {
            access_token: response.access_token,
            // Cronofy may omit the refresh token; the old one then stays valid.
            refresh_token: response.refresh_token.unwrap_or_else(|| tokens.refresh_token.clone()),
            access_expires_at: self.clock.now() + time::Duration::seconds(i64::from(response.expires_in)),
        };
        // The new pair must be stored before the access token is used: a rotated
        // refresh token that is not stored is lost for good.
        match self.store_refreshed(tenant, sub, stored.version, &fresh).await? {
            Some(version) => {
                info!(tenant = %tenant.id, sub, "access token refreshed");
                Ok((fresh.access_token, version))
            }
            None => {
                // The grant was reconnected meanwhile: its newer tokens win.
                warn!(tenant = %tenant.id, sub, "grant changed during refresh; using the newer tokens");
                let newer = self
                    .store
                    .find_grant(&tenant.id, &GrantSelector::Sub(sub.to_owned()))
                    .await
                    .map_err(|_| Error::StoreUnavailable)?
                    .ok_or(Error::GrantNotFound)?;
                let tokens = usable_tokens(&newer)?;
                Ok((tokens.access_token.clone(), newer.version))
            }
        }
    }

    /// Compare-and-swap write with a few retries; None when the grant moved on.
    async fn store_refreshed(
        &self,
        tenant: &Tenant,
        sub: &str,
        version: i64,
        fresh: &Tokens,
    ) -> Result<Option<i64>, Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.store.update_tokens(&tenant.id, sub, version, fresh).await {
                Ok(outcome) => return Ok(outcome),
                Err(error) if attempt < STORE_ATTEMPTS => {
                    warn!(tenant = %tenant.id, sub, %error, attempt, "storing refreshed tokens failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
                Err(error) => {
                    tracing::error!(tenant = %tenant.id, sub, %error, "refreshed tokens could not be stored");
                    return Err(Error::StoreUnavailable);
                }
            }
        }
    }
}

/// The tokens of a grant calgate may act on, or why it may not.
pub(super) fn usable_tokens(stored: &StoredGrant) -> Result<&Tokens, Error> {
    match stored.grant.status {
        GrantStatus::Active => stored.tokens.as_ref().ok_or(Error::GrantNeedsReauth),
        GrantStatus::NeedsReauth => Err(Error::GrantNeedsReauth),
        GrantStatus::Revoked => Err(Error::GrantRevoked),
    }
}
