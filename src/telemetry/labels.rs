//! The label sets of calgate's metrics (see [`super::metrics`]).

use prometheus_client::encoding::EncodeLabelSet;

/// An RPC's method and final gRPC code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// e.g. `UpsertEvent` (or the full path for services other than calgate's).
    pub method: String,
    /// e.g. `OK`, `INVALID_ARGUMENT`.
    pub code: String,
}

/// A Cronofy endpoint and the answer it gave.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// e.g. `upsert_event`, `oauth_token`.
    pub endpoint: String,
    /// HTTP status, or `timeout` / `connect` / `io` when there was none.
    pub status: String,
}

/// A Cronofy endpoint.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    /// e.g. `upsert_event`.
    pub endpoint: String,
}

/// One label: `outcome`, `status` or `breaker`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// The outcome.
    pub outcome: String,
}

/// A grant status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// `active`, `needs_reauth`, `revoked`, `profile_disconnected`.
    pub status: String,
}

/// An encryption key, by id.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabel {
    /// The key's configured id.
    pub key_id: String,
}

/// A configured encryption key and what it does.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyRoleLabels {
    /// The key's configured id.
    pub key_id: String,
    /// `encrypt` (the first key: seals and opens) or `decrypt` (opens only: to be rotated out).
    pub role: String,
}

/// A Cronofy application's budget outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabels {
    /// `client_id@data_centre`.
    pub application: String,
    /// `admitted` or `refused`.
    pub outcome: String,
}

/// A Cronofy application's budget window.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetWindowLabels {
    /// `client_id@data_centre`.
    pub application: String,
    /// `second` or `minute`.
    pub window: String,
}

/// A breaker's name, `tenant/data_centre`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakerLabel {
    /// The breaker.
    pub breaker: String,
}

/// One label: `limit`, a fixed name from [`PEER_LIMITS`](super::metrics::PEER_LIMITS).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    /// The limit.
    pub limit: &'static str,
}

/// A configured tenant, by id (the label set is bounded by the config).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    /// The tenant's id.
    pub tenant: String,
}
