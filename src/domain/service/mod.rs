//! The operations behind the RPCs, one service per concern, each owning
//! what it uses and composed in one place ([`Services::new`]):
//!
//! - [`Credentials`]: grants' access tokens, refreshed as needed;
//! - [`ConnectService`]: authorize, exchange, describe and revoke grants;
//! - [`EventService`]: event writes, calendar and free/busy reads, availability;
//! - [`ChangeService`]: WatchChanges, push notifications and what they announce;
//! - [`Channels`]: the push notification channels themselves;
//! - [`ErasureService`]: ForgetUser, purge-tenant and audit retention;
//! - [`EnterpriseService`]: Enterprise Connect member authorizations.

use super::error::store_failure;
use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use super::{
    refresh::Refresher, single_flight::SingleFlight, state::StateCodec, token_cache::TokenCache, usage::UsageLog,
};
use crate::{
    clock::Clock, config::RefreshAheadSettings, cronofy::CronofyClient, resilience::Resilience, store::Store,
    tasks::Tasks,
};

/// The caller's deadline, when it gave one (`grpc-timeout`).
pub type Deadline = Option<Instant>;

/// Makes a guarded Cronofy API call with a lease's token; on 401, refreshes
/// once and repeats it. Maps the final failure to a domain error.
/// `background` in place of the deadline pays from background work's share
/// of the budget and gives up at the retry ceiling; `paid_by(payer,
/// give_up_at)` pays as `payer` says ([`Resilience::call_paid`]).
macro_rules! call_with_refresh {
    ($self:ident, $tenant:expr, background, $lease:expr, $meaning:expr, |$token:ident| $call:expr) => {
        call_with_refresh!(
            $self,
            $tenant,
            paid_by($crate::resilience::Payer::Background, $self.resilience.give_up_at(None)),
            $lease,
            $meaning,
            |$token| $call
        )
    };
    ($self:ident, $tenant:expr, paid_by($payer:expr, $give_up_at:expr), $lease:expr, $meaning:expr, |$token:ident| $call:expr) => {{
        let lease = $lease;
        let give_up_at = $give_up_at;
        let first = {
            let $token = &lease.token;
            $self
                .resilience
                .call_paid(&$tenant.id, give_up_at, $payer, || $call)
                .await
        };
        let result = match first {
            Err(GuardError::Upstream(CronofyError::Unauthorized)) => {
                let fresh = $self.credentials.after_unauthorized($tenant, &lease).await?;
                let $token = &fresh.token;
                $self
                    .resilience
                    .call_paid(&$tenant.id, give_up_at, $payer, || $call)
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
                let fresh = $self.credentials.after_unauthorized($tenant, &lease).await?;
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
mod channel_checks;
mod channels;
mod connect;
mod credentials;
mod enterprise;
mod erasure;
mod erasure_confirm;
mod event_records;
mod events;
mod notification_reads;
mod notifications;
mod queue;
mod queue_worker;
mod queued_delivery;
mod refresh_ahead;
mod revoke;
mod wake;

pub use availability::{AvailabilityGroup, AvailabilityMember, AvailabilityRequest};
pub use changes::{ChangeReceiver, ChangeService};
pub use channels::Channels;
pub use connect::{AuthorizeRequest, AuthorizeUrl, ConnectService, ExchangeRequest};
pub use credentials::Credentials;
pub use enterprise::{
    CALLBACK_PATH, CallbackError, CallbackOutcome, EnterpriseAuthorization, EnterpriseService, EnterpriseUserRequest,
    authorization_fingerprint, is_authorization_id,
};
pub use erasure::{ErasureService, EventsDeletion, Forgotten, Purged};
pub use events::{BatchOp, EventService, FreeBusyQuery, MAX_BATCH_ITEMS};
pub use notifications::{NOTIFICATION_PATH, NotificationOutcome};
pub use queue::{Accepted, QueueService};
pub use revoke::Revoked;

/// Everything [`Services::new`] is built from.
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
    /// `changes.channel_check_interval`: how often each open channel is
    /// checked against Cronofy's list.
    pub channel_check_interval: Duration,
    /// How long audit rows are kept.
    pub audit_retention: Duration,
    /// `[erasure]`: how ForgetUser waits for deleted events, and the worker.
    pub erasure: crate::config::ErasureSettings,
    /// `[queue]`: queued writes.
    pub queue: crate::config::QueueSettings,
    /// How long a replica holds a queued write it delivers: longer than one
    /// attempt can take (a refresh and the call, each within the retry ceiling).
    pub queue_claim: Duration,
    /// `changes.max_watchers_per_tenant`.
    pub max_watchers_per_tenant: u32,
    /// `[refresh_ahead]`: the background refresher.
    pub refresh_ahead: RefreshAheadSettings,
}

/// calgate's services, shared by every tenant: built once, here, from their parts.
#[derive(Debug)]
pub struct Services {
    /// Grants' access tokens.
    pub credentials: Arc<Credentials>,
    /// Connecting, describing and revoking grants.
    pub connect: Arc<ConnectService>,
    /// Event writes and calendar reads.
    pub events: Arc<EventService>,
    /// Change streams and push notifications.
    pub changes: Arc<ChangeService>,
    /// Push notification channels.
    pub channels: Arc<Channels>,
    /// ForgetUser, purge-tenant, audit retention.
    pub erasure: Arc<ErasureService>,
    /// Enterprise Connect.
    pub enterprise: Arc<EnterpriseService>,
    /// Queued writes.
    pub queue: Arc<QueueService>,
    store: Store,
}

impl Services {
    /// Assembles the services: the one place that knows who uses what.
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
        let credentials = Arc::new(Credentials {
            store: parts.store.clone(),
            clock: parts.clock.clone(),
            refresher: Arc::new(refresher),
            tokens: TokenCache::new(parts.token_cache_ttl, parts.token_cache_entries),
            usage: UsageLog::default(),
            refresh_ahead: parts.refresh_ahead,
        });
        let states = Arc::new(parts.states);
        let channels = Arc::new(Channels {
            store: parts.store.clone(),
            cronofy: parts.cronofy.clone(),
            resilience: parts.resilience.clone(),
            credentials: credentials.clone(),
            callback_base: parts.callback_base.clone(),
            check_interval: parts.channel_check_interval,
            due: tokio::sync::Notify::new(),
        });
        let connect = Arc::new(ConnectService {
            store: parts.store.clone(),
            cronofy: parts.cronofy.clone(),
            resilience: parts.resilience.clone(),
            clock: parts.clock.clone(),
            credentials: credentials.clone(),
            channels: channels.clone(),
            states: states.clone(),
            state_ttl: parts.state_ttl,
            tasks: parts.tasks.clone(),
            exchanges: SingleFlight::default(),
        });
        let events = Arc::new(EventService {
            store: parts.store.clone(),
            cronofy: parts.cronofy.clone(),
            resilience: parts.resilience.clone(),
            clock: parts.clock.clone(),
            credentials: credentials.clone(),
            callback_base: parts.callback_base.clone(),
        });
        let changes = Arc::new(ChangeService {
            store: parts.store.clone(),
            cronofy: parts.cronofy.clone(),
            resilience: parts.resilience.clone(),
            clock: parts.clock.clone(),
            credentials: credentials.clone(),
            channels: channels.clone(),
            tasks: parts.tasks.clone(),
            change_retention: parts.change_retention,
            watchers: changes::Watchers::new(parts.max_watchers_per_tenant),
            notifications_due: wake::Wake::default(),
        });
        let erasure = Arc::new(ErasureService {
            store: parts.store.clone(),
            clock: parts.clock.clone(),
            credentials: credentials.clone(),
            connect: connect.clone(),
            events: events.clone(),
            channels: channels.clone(),
            tasks: parts.tasks.clone(),
            audit_retention: parts.audit_retention,
            settings: parts.erasure,
        });
        let queue = Arc::new(QueueService {
            store: parts.store.clone(),
            clock: parts.clock.clone(),
            credentials: credentials.clone(),
            events: events.clone(),
            settings: parts.queue,
            claim: parts.queue_claim,
            accepted: wake::Wake::default(),
        });
        let enterprise = Arc::new(EnterpriseService {
            store: parts.store.clone(),
            cronofy: parts.cronofy,
            resilience: parts.resilience,
            clock: parts.clock,
            credentials: credentials.clone(),
            connect: connect.clone(),
            states,
            callback_base: parts.callback_base,
            authorization_ttl: parts.authorization_ttl,
            tasks: parts.tasks,
        });
        Services {
            credentials,
            connect,
            events,
            changes,
            channels,
            erasure,
            enterprise,
            queue,
            store: parts.store,
        }
    }

    /// The store, for health checks.
    pub fn store(&self) -> &Store {
        &self.store
    }
}
