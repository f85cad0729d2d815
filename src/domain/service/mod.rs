//! The operations behind the RPCs: `connect` (authorize, exchange, revoke,
//! describe grants) and `events` (writes and calendar reads); this module
//! holds the service and the token handling both share.

use super::error::store_failure;
use std::{sync::Arc, time::Duration};

use secrecy::SecretString;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{
    Error, Tenant,
    clock::Clock,
    grant::{AccessMode, Grant, GrantKind, GrantSelector, GrantStatus, StoredGrant},
    refresh::{Fresh, Need, Refresher, usable_tokens},
    single_flight::SingleFlight,
    state::StateCodec,
    token_cache::{CachedToken, TokenCache},
    usage::UsageLog,
};
use crate::{
    config::RefreshAheadSettings,
    cronofy::CronofyClient,
    resilience::Resilience,
    store::{Store, StoreError},
    tasks::Tasks,
    telemetry::metrics::METRICS,
};

/// A token expiring later than this is used by a call while a refresh runs
/// behind it; one closer to expiry is refreshed first (a call takes up to
/// `upstream.retry_ceiling`, but a 401 is refreshed and retried once anyway).
const STILL_VALID_FOR: Duration = Duration::from_secs(30);

/// The caller's deadline, when it gave one (`grpc-timeout`).
pub type Deadline = Option<Instant>;

/// Makes a guarded Cronofy API call with a lease's token; on 401, refreshes
/// once and repeats it. Maps the final failure to a domain error.
/// `background` in place of the deadline pays from background work's share
/// of the budget ([`Resilience::call_background`]).
macro_rules! call_with_refresh {
    ($self:ident, $tenant:expr, background, $lease:expr, $meaning:expr, |$token:ident| $call:expr) => {{
        let lease = $lease;
        let give_up_at = $self.resilience.give_up_at(None);
        let first = {
            let $token = &lease.token;
            $self
                .resilience
                .call_background(&$tenant.id, give_up_at, || $call)
                .await
        };
        let result = match first {
            Err(GuardError::Upstream(CronofyError::Unauthorized)) => {
                let fresh = $self.after_unauthorized($tenant, &lease).await?;
                let $token = &fresh.token;
                $self
                    .resilience
                    .call_background(&$tenant.id, give_up_at, || $call)
                    .await
            }
            other => other,
        };
        result.map_err(|error| upstream::guard_error(error, $meaning))
    }};
    ($self:ident, $tenant:expr, $deadline:expr, $lease:expr, $meaning:expr, |$token:ident| $call:expr) => {{
        let lease = $lease;
        let first = {
            let $token = &lease.token;
            $self.resilience.call(&$tenant.id, $deadline, || $call).await
        };
        let result = match first {
            Err(GuardError::Upstream(CronofyError::Unauthorized)) => {
                let fresh = $self.after_unauthorized($tenant, &lease).await?;
                let $token = &fresh.token;
                $self.resilience.call(&$tenant.id, $deadline, || $call).await
            }
            other => other,
        };
        result.map_err(|error| upstream::guard_error(error, $meaning))
    }};
}

mod availability;
mod changes;
mod channels;
mod connect;
mod enterprise;
mod erasure;
mod event_records;
mod events;
mod notification_reads;
mod notifications;
mod refresh_ahead;
mod revoke;
mod wake;

pub use availability::{AvailabilityGroup, AvailabilityRequest};
pub use changes::ChangeReceiver;
pub use connect::{AuthorizeRequest, AuthorizeUrl, ExchangeRequest};
pub use enterprise::{
    CALLBACK_PATH, CallbackError, CallbackOutcome, EnterpriseAuthorization, EnterpriseUserRequest,
    authorization_fingerprint, is_authorization_id,
};
pub use erasure::{Forgotten, Purged};
pub use events::{BatchOp, FreeBusyQuery, MAX_BATCH_ITEMS};
pub use notifications::{NOTIFICATION_PATH, NotificationOutcome};
pub use revoke::Revoked;

/// calgate's operations, shared by every tenant.
#[derive(Debug)]
pub struct CalendarService {
    store: Store,
    cronofy: CronofyClient,
    resilience: Arc<Resilience>,
    states: StateCodec,
    state_ttl: Duration,
    clock: Clock,
    refresher: Arc<Refresher>,
    /// Access tokens of recently used grants.
    tokens: TokenCache,
    /// `callbacks.public_url`, when Enterprise Connect callbacks are configured.
    callback_base: Option<url::Url>,
    /// How long a member authorization waits for its callback.
    authorization_ttl: Duration,
    /// Owner of the tasks the service spawns.
    tasks: Tasks,
    /// Code exchanges in flight, by (tenant, state nonce): the code's SHA-256
    /// and the shared outcome.
    exchanges: SingleFlight<(String, String), Result<Grant, Error>, String>,
    /// How long recorded changes are kept.
    change_retention: Duration,
    audit_retention: Duration,
    /// Open WatchChanges streams, bounded per tenant.
    watchers: changes::Watchers,
    /// Signalled when a connect leaves a channel to open.
    channels_due: tokio::sync::Notify,
    /// Signalled when a notification is queued or a coalesced repeat falls due.
    notifications_due: wake::Wake,
    /// Grants calls used, for the background refresher.
    usage: UsageLog,
    /// `[refresh_ahead]`.
    refresh_ahead: RefreshAheadSettings,
}

/// Everything [`CalendarService::new`] is built from.
#[derive(Debug)]
pub struct ServiceParts {
    /// The credential store.
    pub store: Store,
    /// The Cronofy client.
    pub cronofy: CronofyClient,
    /// Retries, budgets, breakers.
    pub resilience: Arc<Resilience>,
    /// Seals states.
    pub states: StateCodec,
    /// State lifetime.
    pub state_ttl: Duration,
    /// Refresh margin.
    pub refresh_margin: Duration,
    /// How long a decrypted access token is reused without a store read (zero: never).
    pub token_cache_ttl: Duration,
    /// Most grants whose access tokens are cached.
    pub token_cache_entries: u64,
    /// Wall clock.
    pub clock: Clock,
    /// `callbacks.public_url`, when configured.
    pub callback_base: Option<url::Url>,
    /// `callbacks.authorization_ttl`.
    pub authorization_ttl: Duration,
    /// Owner of the tasks the service spawns (refresh flights, change streams).
    pub tasks: Tasks,
    /// `changes.retention`.
    pub change_retention: Duration,
    /// How long audit rows are kept.
    pub audit_retention: Duration,
    /// `changes.max_watchers_per_tenant`.
    pub max_watchers_per_tenant: u32,
    /// `[refresh_ahead]`: the background refresher.
    pub refresh_ahead: RefreshAheadSettings,
}

impl CalendarService {
    /// Assembles the service.
    pub fn new(parts: ServiceParts) -> Self {
        let refresher = Refresher::new(
            parts.store.clone(),
            parts.cronofy.clone(),
            parts.resilience.clone(),
            parts.clock.clone(),
            parts.refresh_margin,
            parts.refresh_ahead.lead,
            parts.tasks.clone(),
        );
        CalendarService {
            store: parts.store,
            cronofy: parts.cronofy,
            resilience: parts.resilience,
            states: parts.states,
            state_ttl: parts.state_ttl,
            clock: parts.clock,
            refresher: Arc::new(refresher),
            tokens: TokenCache::new(parts.token_cache_ttl, parts.token_cache_entries),
            callback_base: parts.callback_base,
            authorization_ttl: parts.authorization_ttl,
            tasks: parts.tasks,
            exchanges: SingleFlight::default(),
            change_retention: parts.change_retention,
            audit_retention: parts.audit_retention,
            watchers: changes::Watchers::new(parts.max_watchers_per_tenant),
            channels_due: tokio::sync::Notify::new(),
            notifications_due: wake::Wake::default(),
            usage: UsageLog::default(),
            refresh_ahead: parts.refresh_ahead,
        }
    }

    /// The store, for health checks.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Writes refreshed tokens the store refused earlier (called when it is
    /// back, and at shutdown). Returns the (tenant, sub) of pairs still unwritten.
    pub async fn flush_pending_tokens(&self) -> Vec<(String, String)> {
        self.refresher.flush_all_pending().await
    }

    async fn find(&self, tenant: &Tenant, selector: &GrantSelector) -> Result<StoredGrant, Error> {
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
    }

    /// A usable access token for the selected grant, refreshed first when it
    /// expires within the margin. Event writes refuse service accounts. A
    /// cached token is used while it is outside the refresh window.
    async fn access_token(
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
            });
        }
        let stored = self.find(tenant, selector).await?;
        if refuse_kind(stored.grant.kind) {
            return Err(Error::GrantIsServiceAccount);
        }
        if writes_events && stored.grant.status == GrantStatus::ProfileDisconnected {
            // Cronofy would accept the write and never deliver it.
            return Err(Error::ProfileDisconnected {
                relink_url: stored.grant.relink_url.clone(),
            });
        }
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
        };
        let cached = CachedToken {
            sub,
            token: tokens.access_token.clone(),
            version: stored.version,
            access_expires_at: tokens.access_expires_at,
            kind: stored.grant.kind,
            access_mode: stored.grant.access_mode(),
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
    async fn after_unauthorized(&self, tenant: &Arc<Tenant>, lease: &TokenLease) -> Result<Fresh, Error> {
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
struct TokenLease {
    sub: String,
    token: SecretString,
    version: i64,
    /// How writes with it reach the user.
    access_mode: AccessMode,
}
