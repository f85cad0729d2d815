//! Credentials: a usable access token for a tenant's grant, read from the
//! store or the token cache and refreshed first when it is about to expire.
//! Every service that calls Cronofy on a user's behalf gets its token here.

use std::{sync::Arc, time::Duration};

use secrecy::SecretString;
use tracing::{info, warn};

use super::super::{
    Error, Tenant,
    grant::{AccessMode, GrantKind, GrantSelector, StoredGrant},
    refresh::{Fresh, Need, Refresher, usable_tokens},
    token_cache::{CachedToken, TokenCache},
    usage::UsageLog,
    write_gate::WriteGate,
};
use crate::{
    clock::Clock,
    config::RefreshAheadSettings,
    store::{Store, StoreError},
    telemetry::metrics::METRICS,
};

/// A token expiring later than this is used by a call while a refresh runs
/// behind it; one closer to expiry is refreshed first (a call takes up to
/// `upstream.retry_ceiling`, but a 401 is refreshed and retried once anyway).
const STILL_VALID_FOR: Duration = Duration::from_secs(30);

/// Finds grants and hands out their access tokens, refreshing as needed.
#[derive(Debug)]
pub struct Credentials {
    pub(super) store: Store,
    pub(super) clock: Clock,
    pub(super) refresher: Arc<Refresher>,
    /// Access tokens of recently used grants.
    pub(super) tokens: TokenCache,
    /// Grants calls used, for the background refresher.
    pub(super) usage: UsageLog,
    /// `[refresh_ahead]`.
    pub(super) refresh_ahead: RefreshAheadSettings,
}

impl Credentials {
    /// Writes refreshed tokens the store refused earlier (called when it is
    /// back, and at shutdown). Returns the (tenant, sub) of pairs still unwritten.
    pub async fn flush_pending_tokens(&self) -> Vec<(String, String)> {
        self.refresher.flush_all_pending().await
    }

    pub(super) async fn find(&self, tenant: &Tenant, selector: &GrantSelector) -> Result<StoredGrant, Error> {
        self.store
            .find_grant(&tenant.id, selector)
            .await
            .map_err(|error| match error {
                StoreError::Corrupt(detail) => {
                    tracing::error!(tenant = %tenant.id, %detail, "a stored grant cannot be decrypted: is an encryption key missing from encryption.keys?");
                    Error::GrantUnreadable
                }
                other => {
                    warn!(tenant = %tenant.id, error = %other, "grant lookup failed");
                    Error::StoreUnavailable
                }
            })?
            .ok_or(Error::GrantNotFound)
            // A grant being erased is gone for callers; only its erasure reaches it.
            .and_then(|stored| match (stored.erasing, selector) {
                (true, GrantSelector::Erasing(_)) | (false, _) => Ok(stored),
                (true, _) => Err(Error::GrantNotFound),
            })
    }

    /// A usable access token for the selected grant, refreshed first when it
    /// expires within the margin. Event writes refuse service accounts. A
    /// cached token is used while it is outside the refresh window.
    pub(super) async fn access_token(
        &self,
        tenant: &Arc<Tenant>,
        selector: &GrantSelector,
        writes_events: bool,
    ) -> Result<TokenLease, Error> {
        let refuse_kind = |kind: GrantKind| writes_events && kind == GrantKind::ServiceAccount;
        if let Some(cached) = self.tokens.get(&tenant.id, selector)
            && (!self
                .refresher
                .needs_refresh(&tenant.id, &cached.sub, cached.access_expires_at)
                || self.still_valid(cached.access_expires_at))
        {
            if refuse_kind(cached.kind) {
                return Err(Error::GrantIsServiceAccount);
            }
            self.usage
                .record(&tenant.id, &cached.sub, self.clock.now().unix_timestamp());
            if self
                .refresher
                .needs_refresh(&tenant.id, &cached.sub, cached.access_expires_at)
            {
                // Still valid: the call goes on with it while the refresh runs behind it.
                self.refresher.refresh_behind(tenant, &cached.sub);
            }
            return Ok(TokenLease {
                sub: cached.sub.clone(),
                token: cached.token.clone(),
                version: cached.version,
                access_mode: cached.access_mode,
                gate: cached.gate.clone(),
            });
        }
        let stored = self.find(tenant, selector).await?;
        if refuse_kind(stored.grant.kind) {
            return Err(Error::GrantIsServiceAccount);
        }
        let gate = Arc::new(WriteGate::of(&stored.grant));
        let tokens = usable_tokens(&stored)?;
        let sub = stored.grant.sub.clone();
        self.usage.record(&tenant.id, &sub, self.clock.now().unix_timestamp());
        let needs_refresh = self.refresher.needs_refresh(&tenant.id, &sub, tokens.access_expires_at);
        if needs_refresh && self.still_valid(tokens.access_expires_at) {
            // Callers never wait for a refresh of a token that still works.
            self.refresher.refresh_behind(tenant, &sub);
        } else if needs_refresh {
            METRICS.refresh_waits.inc();
            // The refreshed token is cached by the next call's store read.
            match self.refresher.refresh(tenant, &sub, Need::Expiring).await {
                Ok(fresh) => {
                    return Ok(TokenLease {
                        sub,
                        token: fresh.token,
                        version: fresh.version,
                        access_mode: stored.grant.access_mode(),
                        gate,
                    });
                }
                // Cronofy is having a bad moment but the token still works: use it.
                Err(error) if error.is_upstream_transient() && tokens.access_expires_at > self.clock.now() => {
                    warn!(tenant = %tenant.id, sub, %error, "refresh failed; using the access token while it is still valid");
                }
                Err(error) => return Err(error),
            }
        }
        let lease = TokenLease {
            sub: sub.clone(),
            token: tokens.access_token.clone(),
            version: stored.version,
            access_mode: stored.grant.access_mode(),
            gate: gate.clone(),
        };
        let cached = CachedToken {
            sub,
            token: tokens.access_token.clone(),
            version: stored.version,
            access_expires_at: tokens.access_expires_at,
            kind: stored.grant.kind,
            access_mode: stored.grant.access_mode(),
            gate,
        };
        self.tokens.put(&tenant.id, selector, cached);
        Ok(lease)
    }

    /// Whether an access token still works long enough for a call to use it
    /// (it expires more than [`STILL_VALID_FOR`] from now).
    fn still_valid(&self, access_expires_at: time::OffsetDateTime) -> bool {
        access_expires_at - self.clock.now() > STILL_VALID_FOR
    }

    /// Cronofy refused `lease`'s token: refresh once (unless someone already did).
    pub(super) async fn after_unauthorized(&self, tenant: &Arc<Tenant>, lease: &TokenLease) -> Result<Fresh, Error> {
        info!(tenant = %tenant.id, sub = %lease.sub, "Cronofy refused the access token; refreshing once");
        METRICS.refresh_waits.inc();
        self.tokens.forget_grant(&tenant.id, &lease.sub);
        self.refresher
            .refresh(tenant, &lease.sub, Need::Rejected { version: lease.version })
            .await
    }
}

/// An access token and the grant version it was read at.
#[derive(Clone)]
pub(super) struct TokenLease {
    pub(super) sub: String,
    pub(super) token: SecretString,
    pub(super) version: i64,
    /// How writes with it reach the user.
    pub(super) access_mode: AccessMode,
    /// What a write to one of the grant's calendars must pass.
    pub(super) gate: Arc<WriteGate>,
}
