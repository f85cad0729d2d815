//! Limits on what callers and Cronofy can make calgate hold: gRPC streams and
//! calls in flight, and the callback listener's connections, heads and bodies.
//! Every limit has a documented default (README, configuration).

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// The largest request message calgate decodes (tonic's limit, per call);
/// far above any valid request (an event with every list full is well
/// under 1 MiB).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// `[grpc]`: limits of the gRPC listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcSettings {
    /// Connections the gRPC port holds open at once; more are closed as they
    /// are accepted. Health and reflection need no key, so this bounds what
    /// anyone who can reach the port can open.
    pub max_connections: u32,
    /// SETTINGS_MAX_CONCURRENT_STREAMS: calls one HTTP/2 connection may have
    /// open. gRPC clients queue calls past it (Go, Java) or open another
    /// connection; 100 is the HTTP/2 spec's recommended minimum.
    pub max_concurrent_streams: u32,
    /// HTTP/2 receive window of each stream: request bytes a caller may send
    /// before calgate reads them.
    pub stream_window_bytes: u32,
    /// HTTP/2 receive window of each connection, shared by its streams.
    pub connection_window_bytes: u32,
    /// A call's request must arrive whole within this, or the call is
    /// answered DEADLINE_EXCEEDED `REQUEST_READ_TIMEOUT` (server reflection's
    /// request stream is exempt: it has `reflection_stream_lifetime`).
    #[serde(with = "humantime_serde")]
    pub request_read_timeout: Duration,
    /// Server-reflection streams open at once across the process; more are
    /// refused RESOURCE_EXHAUSTED `STREAMS_EXHAUSTED`. grpcurl opens one per command.
    pub max_reflection_streams: u32,
    /// A reflection stream is closed after this, read or not (what it buffered
    /// for a peer that stopped reading is freed).
    #[serde(with = "humantime_serde")]
    pub reflection_stream_lifetime: Duration,
    /// Health `Watch` streams open at once across the process; more are
    /// refused RESOURCE_EXHAUSTED `STREAMS_EXHAUSTED` (`Check`, which kubelets
    /// use, is never refused).
    pub max_health_watches: u32,
    /// Calls one tenant may have in flight on this replica; more are refused
    /// RESOURCE_EXHAUSTED `TENANT_CONCURRENCY_EXHAUSTED`, so no tenant can
    /// starve the store or Cronofy budget of the others.
    pub tenant_calls_in_flight: u32,
    /// HTTP/2 PING interval on idle connections (dead peers are found).
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// How long a PING may go unanswered before the connection is closed.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Streams a client may reset before they are accepted, before GOAWAY
    /// (the rapid-reset class, CVE-2023-44487).
    pub max_pending_accept_reset_streams: usize,
    /// Streams calgate may reset for protocol errors, before GOAWAY.
    pub max_local_error_reset_streams: usize,
    /// Bytes of large request messages (over 64 KiB) received and decoded at
    /// once, across every call; a large request finding no room is refused
    /// RESOURCE_EXHAUSTED `DECODE_BUDGET_EXHAUSTED`. At least 4 MiB (the
    /// message limit) plus 1 KiB.
    pub max_decoding_bytes: usize,
}

impl Default for GrpcSettings {
    fn default() -> Self {
        GrpcSettings {
            max_connections: 256,
            max_concurrent_streams: 100,
            stream_window_bytes: 256 * 1024,
            connection_window_bytes: 1024 * 1024,
            request_read_timeout: Duration::from_secs(10),
            max_reflection_streams: 16,
            reflection_stream_lifetime: Duration::from_secs(60),
            max_health_watches: 128,
            tenant_calls_in_flight: 256,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            // h2's and hyper's own defaults, made explicit.
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
            max_decoding_bytes: 64 * 1024 * 1024,
        }
    }
}

impl GrpcSettings {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("grpc.max_connections", self.max_connections as usize),
            ("grpc.max_concurrent_streams", self.max_concurrent_streams as usize),
            ("grpc.max_reflection_streams", self.max_reflection_streams as usize),
            ("grpc.max_health_watches", self.max_health_watches as usize),
            ("grpc.tenant_calls_in_flight", self.tenant_calls_in_flight as usize),
            (
                "grpc.max_pending_accept_reset_streams",
                self.max_pending_accept_reset_streams,
            ),
            ("grpc.max_local_error_reset_streams", self.max_local_error_reset_streams),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        // HTTP/2 fixes the initial window at 64 KiB - 1; smaller is refused by h2.
        for (key, value) in [
            ("grpc.stream_window_bytes", self.stream_window_bytes),
            ("grpc.connection_window_bytes", self.connection_window_bytes),
        ] {
            if !(65_535..=(1 << 31) - 1).contains(&value) {
                return Err(ConfigError::invalid(key, "must be between 65535 and 2147483647"));
            }
        }
        for (key, value) in [
            ("grpc.request_read_timeout", self.request_read_timeout),
            ("grpc.reflection_stream_lifetime", self.reflection_stream_lifetime),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(key, "must be positive"));
            }
        }
        if self.max_decoding_bytes < MAX_MESSAGE_BYTES + 1024 {
            return Err(ConfigError::invalid(
                "grpc.max_decoding_bytes",
                "must hold one whole message: at least 4 MiB and 1 KiB (4195328)",
            ));
        }
        for (key, value) in [
            ("grpc.keepalive_interval", self.keepalive_interval),
            ("grpc.keepalive_timeout", self.keepalive_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(key, "must be positive"));
            }
        }
        Ok(())
    }
}

/// Limits of the callback listener (keys of `[callbacks]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallbackLimits {
    /// Connections held at once. A new connection past it closes the oldest
    /// one still waiting for its request; with none waiting it is closed.
    pub max_connections: u32,
    /// Connections waiting for their request (its head or its body, or the
    /// next on a kept-alive connection) at once; a new one closes the oldest
    /// waiting. Only a request that has fully arrived takes a processing place.
    pub max_waiting: u32,
    /// As `max_waiting`, per peer address: a peer at it closes its own
    /// oldest waiting connection. Behind a proxy every connection has the
    /// proxy's address; set it to `max_waiting` there.
    pub max_waiting_per_peer: u32,
    /// Callbacks processed at once (their requests fully arrived); more are
    /// answered 503 (Cronofy retries notifications).
    pub max_in_flight: u32,
    /// A connection must send a whole request head within this (or is closed).
    pub header_timeout: Duration,
    /// A request body must arrive within this (else 408).
    pub body_timeout: Duration,
    /// Largest body accepted (else 413).
    pub max_body_bytes: usize,
}

impl Default for CallbackLimits {
    fn default() -> Self {
        CallbackLimits {
            max_connections: 256,
            max_waiting: 64,
            max_waiting_per_peer: 8,
            max_in_flight: 32,
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(5),
            max_body_bytes: 64 * 1024,
        }
    }
}

impl CallbackLimits {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return Err(ConfigError::invalid("callbacks.max_connections", "must be at least 1"));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::invalid("callbacks.max_in_flight", "must be at least 1"));
        }
        if self.max_waiting == 0 || self.max_waiting > self.max_connections {
            return Err(ConfigError::invalid(
                "callbacks.max_waiting",
                "must be at least 1 and at most callbacks.max_connections",
            ));
        }
        if self.max_waiting_per_peer == 0 || self.max_waiting_per_peer > self.max_waiting {
            return Err(ConfigError::invalid(
                "callbacks.max_waiting_per_peer",
                "must be at least 1 and at most callbacks.max_waiting",
            ));
        }
        if self.header_timeout.is_zero() {
            return Err(ConfigError::invalid("callbacks.header_timeout", "must be positive"));
        }
        if self.body_timeout.is_zero() {
            return Err(ConfigError::invalid("callbacks.body_timeout", "must be positive"));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(ConfigError::invalid(
                "callbacks.max_body_bytes",
                "must be between 1 KiB and 16 MiB",
            ));
        }
        Ok(())
    }
}

/// `[changes]`: the change stream (WatchChanges).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChangeSettings {
    /// How long recorded changes are kept; a watcher resuming from an older
    /// cursor gets OUT_OF_RANGE `CURSOR_EXPIRED`.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often changes past the retention are removed.
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
    /// PostgreSQL: how often each replica looks for changes other replicas
    /// recorded (one small query, whatever the number of watchers).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// WatchChanges streams one tenant may hold open on one replica; more are
    /// refused RESOURCE_EXHAUSTED `WATCHERS_EXHAUSTED`.
    pub max_watchers_per_tenant: u32,
    /// How often each open push notification channel is checked against
    /// Cronofy's list (`GET /v1/channels`, one background call per grant);
    /// one Cronofy closed is reopened and its gap reported.
    #[serde(with = "humantime_serde")]
    pub channel_check_interval: Duration,
}

impl Default for ChangeSettings {
    fn default() -> Self {
        ChangeSettings {
            retention: Duration::from_secs(7 * 24 * 3600),
            prune_interval: Duration::from_secs(60),
            poll_interval: Duration::from_millis(500),
            max_watchers_per_tenant: 64,
            channel_check_interval: Duration::from_secs(6 * 3600),
        }
    }
}

impl ChangeSettings {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.retention < Duration::from_secs(60) {
            return Err(ConfigError::invalid("changes.retention", "must be at least 1m"));
        }
        if self.prune_interval.is_zero() {
            return Err(ConfigError::invalid("changes.prune_interval", "must be positive"));
        }
        if self.channel_check_interval < Duration::from_secs(60) {
            return Err(ConfigError::invalid(
                "changes.channel_check_interval",
                "must be at least 1m (each check is a call to Cronofy per grant)",
            ));
        }
        if !(Duration::from_millis(50)..=Duration::from_secs(2)).contains(&self.poll_interval) {
            return Err(ConfigError::invalid(
                "changes.poll_interval",
                "must be between 50ms and 2s (a change reaches other replicas' watchers within it)",
            ));
        }
        if self.max_watchers_per_tenant == 0 {
            return Err(ConfigError::invalid(
                "changes.max_watchers_per_tenant",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// `[audit]`: the credential lifecycle audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// How long audit rows are kept (removed every `changes.prune_interval`);
    /// the chain stays verifiable from its first remaining row.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            retention: Duration::from_secs(400 * 24 * 3600),
        }
    }
}

impl AuditSettings {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.retention < Duration::from_secs(24 * 3600) {
            return Err(ConfigError::invalid("audit.retention", "must be at least 1d"));
        }
        Ok(())
    }
}

/// `[erasure]`: how ForgetUser(delete_events) waits for Cronofy to apply
/// the deletes it accepted before it revokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErasureSettings {
    /// How long ForgetUser reads the user's events back, waiting to see the
    /// tenant's gone, before it answers `EVENTS_DELETION_PENDING` and leaves
    /// the rest to the erasure worker (also bounded by the call's deadline).
    #[serde(with = "humantime_serde")]
    pub confirm_within: Duration,
    /// How often the erasure worker looks for erasures due; each waits
    /// twice as long after every attempt that still saw events (at most an hour).
    #[serde(with = "humantime_serde")]
    pub retry_interval: Duration,
}

impl Default for ErasureSettings {
    fn default() -> Self {
        ErasureSettings {
            confirm_within: Duration::from_secs(10),
            retry_interval: Duration::from_secs(60),
        }
    }
}

impl ErasureSettings {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.confirm_within > Duration::from_secs(60) {
            return Err(ConfigError::invalid(
                "erasure.confirm_within",
                "must be at most 1m (ForgetUser waits this long)",
            ));
        }
        if self.retry_interval < Duration::from_secs(1) {
            return Err(ConfigError::invalid("erasure.retry_interval", "must be at least 1s"));
        }
        Ok(())
    }
}

/// `[refresh_ahead]`: the background refresher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshAheadSettings {
    /// Refresh recently used grants before their tokens need it.
    pub enabled: bool,
    /// Grants used (by any call) within this long are refreshed ahead; idle
    /// ones are refreshed on demand by their next call.
    #[serde(with = "humantime_serde")]
    pub used_within: Duration,
    /// Background refreshes happen spread over this long before the on-demand
    /// window (`refresh_margin` to twice it before expiry).
    #[serde(with = "humantime_serde")]
    pub lead: Duration,
    /// The most of each application's budget (per second and per minute,
    /// across replicas) background refreshes may take, in percent.
    pub budget_percent: u32,
    /// How often each replica looks for grants due.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for RefreshAheadSettings {
    fn default() -> Self {
        RefreshAheadSettings {
            enabled: true,
            used_within: Duration::from_secs(30 * 24 * 3600),
            lead: Duration::from_secs(15 * 60),
            budget_percent: 20,
            interval: Duration::from_secs(5),
        }
    }
}

impl RefreshAheadSettings {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if !(1..=100).contains(&self.budget_percent) {
            return Err(ConfigError::invalid(
                "refresh_ahead.budget_percent",
                "must be between 1 and 100",
            ));
        }
        if self.interval < Duration::from_millis(50) || self.interval > Duration::from_secs(300) {
            return Err(ConfigError::invalid(
                "refresh_ahead.interval",
                "must be between 50ms and 5m",
            ));
        }
        if self.used_within.is_zero() {
            return Err(ConfigError::invalid("refresh_ahead.used_within", "must be positive"));
        }
        Ok(())
    }
}
