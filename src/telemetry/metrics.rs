//! Prometheus metrics, served as text at `GET /metrics` on `metrics_listen`.
//! One process-wide registry: metrics describe the process.

use std::sync::LazyLock;

pub use super::labels::{
    BreakerLabel, BudgetLabels, BudgetWindowLabels, EndpointLabel, KeyLabel, KeyRoleLabels, LimitLabel, OutcomeLabel,
    RpcLabels, StatusLabel, TenantLabel, UpstreamLabels,
};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~16 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 16,
    ))
}

/// Every outcome each outcome-labelled counter can take: their series exist
/// from the start at 0, so `increase()` sees the first event and alerts and
/// dashboards can name a series before it ever happens.
const REFRESH_OUTCOMES: &[&str] = &[
    "refreshed",
    "not_needed",
    "needs_reauth",
    "needs_reauth_answer_lost",
    "upstream_failed",
    "parked",
];
const REVOCATION_OUTCOMES: &[&str] = &["revoked", "failed", "dropped"];
const ERASURE_OUTCOMES: &[&str] = &["confirmed", "deferred", "confirmed_later", "unconfirmed"];
const QUEUED_WRITE_OUTCOMES: &[&str] = &[
    "accepted",
    "refused_full",
    "delivered",
    "retried",
    "waited_for_budget",
    "failed",
    "superseded",
];
const NOTIFICATION_OUTCOMES: &[&str] = &[
    "queued",
    "duplicate",
    "verified",
    "ignored",
    "refused",
    "processed",
    "retried",
    "deferred",
    "dropped",
];
const CALLBACK_OUTCOMES: &[&str] = &["handled", "refused"];
const CHANNEL_CHECK_OUTCOMES: &[&str] = &["open", "missing", "failed"];
/// The limits on peers that refuse or close something (see docs/security.md).
pub const PEER_LIMITS: &[&str] = &[
    "grpc_connections",
    "reflection_streams",
    "health_watches",
    "request_read_timeout",
    "callback_connections",
    "callback_waiting",
    "callback_in_flight",
];
/// Grant statuses, as stored.
pub const GRANT_STATUSES: &[&str] = &["active", "needs_reauth", "revoked", "profile_disconnected"];

/// Every metric calgate exports.
pub struct Metrics {
    registry: Registry,
    /// RPCs by method and code.
    pub rpc_requests: Family<RpcLabels, Counter>,
    /// RPC latency by method and code, in seconds.
    pub rpc_duration: Family<RpcLabels, Histogram, fn() -> Histogram>,
    /// Cronofy requests by endpoint and answer.
    pub upstream_requests: Family<UpstreamLabels, Counter>,
    /// Cronofy request latency by endpoint, in seconds (one attempt, answer or failure).
    pub upstream_duration: Family<EndpointLabel, Histogram, fn() -> Histogram>,
    /// Token refreshes by outcome.
    pub refreshes: Family<OutcomeLabel, Counter>,
    /// Stored grants by status (counted at scrape time).
    pub grants: Family<StatusLabel, Gauge>,
    /// Stored grants by the key their tokens are sealed under (counted at scrape time).
    pub grants_by_key: Family<KeyLabel, Gauge>,
    /// The configured encryption keys (1 each), by role.
    pub encryption_keys: Family<KeyRoleLabels, Gauge>,
    /// Circuit breaker state: 0 closed, 1 open, 2 half-open.
    pub breaker_state: Family<BreakerLabel, Gauge>,
    /// Background revokes at Cronofy by outcome (`revoked`, `failed`).
    pub revocations: Family<OutcomeLabel, Counter>,
    /// Erasures that deleted events, by outcome: `confirmed` (seen gone
    /// before the revoke), `deferred` (not seen gone in time: left to the
    /// erasure worker), `confirmed_later` (the worker saw them gone),
    /// `unconfirmed` (the grant could no longer be used: erased without seeing them gone).
    pub erasures: Family<OutcomeLabel, Counter>,
    /// Queued writes by outcome: `accepted`, `refused_full` (QUEUE_FULL),
    /// `delivered`, `retried` (a transient failure; due again later),
    /// `waited_for_budget` (the budget had no room yet; not an attempt),
    /// `failed`, `superseded`.
    pub queued_writes: Family<OutcomeLabel, Counter>,
    /// Queued writes waiting, per tenant (counted at scrape time).
    pub queue_depth: Family<TenantLabel, Gauge>,
    /// Seconds since the oldest waiting write of each tenant was accepted (counted at scrape time).
    pub queue_oldest_seconds: Family<TenantLabel, Gauge>,
    /// Erasures waiting for their events to be seen gone (counted at scrape time).
    pub erasures_pending: Gauge,
    /// Seconds since the oldest waiting erasure was asked for; 0 when none waits.
    pub erasure_oldest_pending_seconds: Gauge,
    /// Push notifications by outcome (received: `queued`, `duplicate`,
    /// `verified`, `ignored`, `refused`; processed: `processed`, `retried`, `dropped`).
    pub notifications: Family<OutcomeLabel, Counter>,
    /// Notifications waiting to be processed (counted at scrape time).
    pub notifications_queued: Gauge,
    /// Checks of open channels against Cronofy's list: `open`, `missing`
    /// (Cronofy had closed it; reopened), `failed` (retried in 5 minutes).
    pub channel_checks: Family<OutcomeLabel, Counter>,
    /// WatchChanges streams open on this replica.
    pub change_watchers: Gauge,
    /// Requests to Cronofy the application's budget admitted or refused, from this replica.
    pub budget_requests: Family<BudgetLabels, Counter>,
    /// The application's configured budget per window.
    pub budget_limit: Family<BudgetWindowLabels, Gauge>,
    /// 1 while this replica reports SERVING, 0 while NOT_SERVING (store unreachable, shutting down).
    pub ready: Gauge,
    /// Calls that waited for a token refresh (their token was expiring within
    /// 30 s, or Cronofy refused it); a refresh behind a call is not counted.
    pub refresh_waits: Counter,
    /// Enterprise Connect callbacks by outcome: `handled`, `refused`.
    pub enterprise_callbacks: Family<OutcomeLabel, Counter>,
    /// Large requests refused because `grpc.max_decoding_bytes` was in use.
    pub decode_budget_refusals: Counter,
    /// Connections, streams and requests a peer limit refused or closed, by
    /// limit (one of [`PEER_LIMITS`]).
    pub peer_refusals: Family<LimitLabel, Counter>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("calgate");
        let rpc_requests = Family::<RpcLabels, Counter>::default();
        let rpc_duration = Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let upstream_requests = Family::<UpstreamLabels, Counter>::default();
        let upstream_duration = Family::<EndpointLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "upstream_duration_seconds",
            "Latency of one request to Cronofy by endpoint",
            upstream_duration.clone(),
        );
        let refreshes = Family::<OutcomeLabel, Counter>::default();
        let grants = Family::<StatusLabel, Gauge>::default();
        let grants_by_key = Family::<KeyLabel, Gauge>::default();
        let encryption_keys = Family::<KeyRoleLabels, Gauge>::default();
        let breaker_state = Family::<BreakerLabel, Gauge>::default();
        let revocations = Family::<OutcomeLabel, Counter>::default();
        let notifications = Family::<OutcomeLabel, Counter>::default();
        let notifications_queued = Gauge::default();
        let channel_checks = Family::<OutcomeLabel, Counter>::default();
        let change_watchers = Gauge::default();
        let budget_requests = Family::<BudgetLabels, Counter>::default();
        let budget_limit = Family::<BudgetWindowLabels, Gauge>::default();
        let ready = Gauge::default();
        let refresh_waits = Counter::default();
        let decode_budget_refusals = Counter::default();
        let peer_refusals = Family::<LimitLabel, Counter>::default();
        for limit in PEER_LIMITS {
            peer_refusals.get_or_create(&LimitLabel { limit }).inc_by(0);
        }
        registry.register(
            "peer_refusals",
            "Connections, streams and requests refused or closed by a limit on peers (docs/security.md), by limit",
            peer_refusals.clone(),
        );
        let enterprise_callbacks = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "budget_requests",
            "Requests to Cronofy per application (client_id@data_centre) its budget admitted or refused, on this replica",
            budget_requests.clone(),
        );
        registry.register(
            "budget_limit",
            "Each Cronofy application's configured request budget per window (second, minute)",
            budget_limit.clone(),
        );
        registry.register(
            "ready",
            "1 while this replica reports SERVING (readiness), 0 otherwise",
            ready.clone(),
        );
        registry.register(
            "decode_budget_refusals",
            "Large requests (over 64 KiB) refused because grpc.max_decoding_bytes was in use by others",
            decode_budget_refusals.clone(),
        );
        registry.register(
            "refresh_waits",
            "Calls that waited for a token refresh (token expiring within 30 s, or refused by Cronofy)",
            refresh_waits.clone(),
        );
        registry.register(
            "enterprise_callbacks",
            "Enterprise Connect callbacks by outcome (handled, refused)",
            enterprise_callbacks.clone(),
        );
        registry.register(
            "notifications",
            "Cronofy push notifications by outcome",
            notifications.clone(),
        );
        registry.register(
            "notifications_queued",
            "Push notifications waiting to be processed",
            notifications_queued.clone(),
        );
        registry.register(
            "channel_checks",
            "Checks of open push notification channels by outcome (open, missing, failed)",
            channel_checks.clone(),
        );
        registry.register(
            "change_watchers",
            "WatchChanges streams open on this replica",
            change_watchers.clone(),
        );
        registry.register(
            "rpc_requests",
            "gRPC calls by method and status code",
            rpc_requests.clone(),
        );
        registry.register(
            "rpc_duration_seconds",
            "gRPC call latency by method and status code",
            rpc_duration.clone(),
        );
        registry.register(
            "upstream_requests",
            "Requests to Cronofy by endpoint and HTTP status",
            upstream_requests.clone(),
        );
        registry.register(
            "token_refreshes",
            "Access-token refreshes by outcome",
            refreshes.clone(),
        );
        registry.register("grants", "Stored grants by status", grants.clone());
        registry.register(
            "grants_by_key",
            "Stored grants by the encryption key their tokens are sealed under",
            grants_by_key.clone(),
        );
        registry.register(
            "encryption_keys",
            "Configured encryption keys by role: encrypt (the first) or decrypt (to be rotated out)",
            encryption_keys.clone(),
        );
        registry.register(
            "breaker_state",
            "Circuit breaker per tenant/data centre: 0 closed, 1 open, 2 half-open",
            breaker_state.clone(),
        );
        let queued_writes = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "queued_writes",
            "Queued writes by outcome (accepted, refused_full, delivered, retried, waited_for_budget, failed, superseded)",
            queued_writes.clone(),
        );
        let queue_depth = Family::<TenantLabel, Gauge>::default();
        registry.register("queue_depth", "Queued writes waiting, per tenant", queue_depth.clone());
        let queue_oldest_seconds = Family::<TenantLabel, Gauge>::default();
        registry.register(
            "queue_oldest_seconds",
            "Age of each tenant's oldest waiting queued write; 0 when none waits",
            queue_oldest_seconds.clone(),
        );
        let erasures = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "erasures",
            "Erasures that deleted events, by outcome (confirmed, deferred, confirmed_later, unconfirmed)",
            erasures.clone(),
        );
        let erasures_pending = Gauge::default();
        registry.register(
            "erasures_pending",
            "Erasures waiting for Cronofy's deletes to be seen applied before the revoke",
            erasures_pending.clone(),
        );
        let erasure_oldest_pending_seconds = Gauge::default();
        registry.register(
            "erasure_oldest_pending_seconds",
            "Age of the oldest erasure waiting for its events to be seen gone; 0 when none waits",
            erasure_oldest_pending_seconds.clone(),
        );
        registry.register(
            "background_revocations",
            "Revokes at Cronofy retried in the background, by outcome",
            revocations.clone(),
        );
        let outcomes = |family: &Family<OutcomeLabel, Counter>, all: &[&str]| {
            for outcome in all {
                family
                    .get_or_create(&OutcomeLabel {
                        outcome: (*outcome).to_owned(),
                    })
                    .inc_by(0);
            }
        };
        outcomes(&refreshes, REFRESH_OUTCOMES);
        outcomes(&revocations, REVOCATION_OUTCOMES);
        outcomes(&erasures, ERASURE_OUTCOMES);
        outcomes(&queued_writes, QUEUED_WRITE_OUTCOMES);
        outcomes(&notifications, NOTIFICATION_OUTCOMES);
        outcomes(&enterprise_callbacks, CALLBACK_OUTCOMES);
        outcomes(&channel_checks, CHANNEL_CHECK_OUTCOMES);
        for status in GRANT_STATUSES {
            grants
                .get_or_create(&StatusLabel {
                    status: (*status).to_owned(),
                })
                .set(0);
        }
        Metrics {
            registry,
            revocations,
            erasures,
            queued_writes,
            queue_depth,
            queue_oldest_seconds,
            erasures_pending,
            erasure_oldest_pending_seconds,
            notifications,
            notifications_queued,
            channel_checks,
            change_watchers,
            budget_requests,
            budget_limit,
            ready,
            refresh_waits,
            decode_budget_refusals,
            peer_refusals,
            enterprise_callbacks,
            rpc_requests,
            rpc_duration,
            upstream_requests,
            upstream_duration,
            refreshes,
            grants,
            grants_by_key,
            encryption_keys,
            breaker_state,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    /// Counts a Cronofy request and how long it took.
    pub fn upstream(&self, endpoint: &str, status: &str, took: std::time::Duration) {
        self.upstream_duration
            .get_or_create(&EndpointLabel {
                endpoint: endpoint.to_owned(),
            })
            .observe(took.as_secs_f64());
        self.upstream_requests
            .get_or_create(&UpstreamLabels {
                endpoint: endpoint.to_owned(),
                status: status.to_owned(),
            })
            .inc();
    }

    /// Counts a refresh outcome.
    pub fn refresh(&self, outcome: &str) {
        self.refreshes
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts a background revoke's outcome.
    pub fn revocation(&self, outcome: &str) {
        self.revocations
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts a queued write's outcome (one of `QUEUED_WRITE_OUTCOMES`).
    pub fn queued_write(&self, outcome: &str) {
        self.queued_writes
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts an erasure's outcome (one of `ERASURE_OUTCOMES`).
    pub fn erasure(&self, outcome: &str) {
        self.erasures
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A large request was refused for want of decoding budget.
    pub fn decode_budget_refused(&self) {
        self.decode_budget_refusals.inc();
    }

    /// A limit on peers refused or closed something; `limit` is one of [`PEER_LIMITS`].
    pub fn peer_refused(&self, limit: &'static str) {
        debug_assert!(PEER_LIMITS.contains(&limit), "{limit}");
        self.peer_refusals.get_or_create(&LimitLabel { limit }).inc();
    }

    /// Counts a channel check's outcome, one of [`CHANNEL_CHECK_OUTCOMES`].
    pub fn channel_check(&self, outcome: &'static str) {
        debug_assert!(CHANNEL_CHECK_OUTCOMES.contains(&outcome), "{outcome}");
        self.channel_checks
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts a push notification outcome.
    pub fn notification(&self, outcome: &str) {
        self.notifications
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts a request the application's budget admitted or refused.
    pub fn budget(&self, application: &str, outcome: &str) {
        self.budget_requests
            .get_or_create(&BudgetLabels {
                application: application.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Publishes an application's configured budget, `per_second` and
    /// `per_minute` (and its request counters, at 0).
    pub fn budget_limit(&self, application: &str, per_second: u32, per_minute: u32) {
        for outcome in ["admitted", "refused"] {
            self.budget_requests
                .get_or_create(&BudgetLabels {
                    application: application.to_owned(),
                    outcome: outcome.to_owned(),
                })
                .inc_by(0);
        }
        for (window, value) in [("second", per_second), ("minute", per_minute)] {
            self.budget_limit
                .get_or_create(&BudgetWindowLabels {
                    application: application.to_owned(),
                    window: window.to_owned(),
                })
                .set(i64::from(value));
        }
    }

    /// Counts an Enterprise Connect callback's outcome.
    pub fn enterprise_callback(&self, outcome: &str) {
        self.enterprise_callbacks
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Sets a breaker's state gauge.
    pub fn breaker(&self, name: &str, state: i64) {
        self.breaker_state
            .get_or_create(&BreakerLabel {
                breaker: name.to_owned(),
            })
            .set(state);
    }
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
