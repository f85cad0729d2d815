//! The audit trail's vocabulary: what happened to a credential and who made
//! it happen; how rows chain is [`super::audit_chain`]. Rows are stored by [`crate::store::Store`];
//! nothing here holds a token, code or secret.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    /// A user (or service account) connected, or reconnected.
    GrantConnected,
    /// Cronofy refused the grant's refresh token.
    GrantRefreshRejected,
    /// The grant now needs its user to connect again.
    GrantNeedsReauth,
    /// RevokeGrant revoked the grant.
    GrantRevoked,
    /// ForgetUser erased the grant and everything about its user.
    GrantForgotten,
    /// Cronofy reported the user's calendar profile disconnected.
    ProfileDisconnected,
    /// The disconnected profile is connected again.
    ProfileReconnected,
    /// A signed Enterprise Connect callback for one of the tenant's authorizations was refused.
    CallbackRefused,
    /// `calgate rekey` re-encrypted the tenant's stored tokens.
    KeysRotated,
    /// `calgate purge-tenant` erased the tenant's credentials.
    TenantPurged,
    /// A revocation still queued for Cronofy was dropped: the user consented
    /// again, or another tenant of the application now holds the account.
    RevocationDropped,
    /// ForgetUser could not see the person's events gone at Cronofy yet: the
    /// grant is hidden and its user_refs erased; the erasure worker finishes it.
    ErasureDeferred,
    /// An erasure still waiting for its events to go was dropped: the user
    /// consented again with the same account.
    ErasureDropped,
}

impl AuditKind {
    /// Every kind, for parsing and documentation.
    pub const ALL: [AuditKind; 13] = [
        AuditKind::GrantConnected,
        AuditKind::GrantRefreshRejected,
        AuditKind::GrantNeedsReauth,
        AuditKind::GrantRevoked,
        AuditKind::GrantForgotten,
        AuditKind::ProfileDisconnected,
        AuditKind::ProfileReconnected,
        AuditKind::CallbackRefused,
        AuditKind::KeysRotated,
        AuditKind::TenantPurged,
        AuditKind::RevocationDropped,
        AuditKind::ErasureDeferred,
        AuditKind::ErasureDropped,
    ];

    /// The stored (and printed) name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::GrantConnected => "grant_connected",
            AuditKind::GrantRefreshRejected => "grant_refresh_rejected",
            AuditKind::GrantNeedsReauth => "grant_needs_reauth",
            AuditKind::GrantRevoked => "grant_revoked",
            AuditKind::GrantForgotten => "grant_forgotten",
            AuditKind::ProfileDisconnected => "profile_disconnected",
            AuditKind::ProfileReconnected => "profile_reconnected",
            AuditKind::CallbackRefused => "callback_refused",
            AuditKind::KeysRotated => "keys_rotated",
            AuditKind::TenantPurged => "tenant_purged",
            AuditKind::RevocationDropped => "revocation_dropped",
            AuditKind::ErasureDeferred => "erasure_deferred",
            AuditKind::ErasureDropped => "erasure_dropped",
        }
    }
}

/// Who made an audited event happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `key:<first 12 hex digits of the API key's SHA-256>` (an RPC),
    /// `operator` (a calgate command), `calgate` (calgate itself, e.g. a
    /// refresh) or `cronofy` (a notification or callback from Cronofy).
    pub name: String,
    /// The RPC's `x-request-id`; empty when there was no RPC.
    pub request_id: String,
}

impl Actor {
    /// The caller of an RPC, by the id of its API key (never the key).
    pub fn api_key(key_sha256: &[u8; 32], request_id: &str) -> Actor {
        Actor {
            name: format!("key:{}", &hex::encode(key_sha256)[..12]),
            request_id: request_id.to_owned(),
        }
    }

    /// An operator running a calgate command.
    pub fn operator() -> Actor {
        Actor::named("operator")
    }

    /// calgate on its own (a refresh, a background worker).
    pub fn calgate() -> Actor {
        Actor::named("calgate")
    }

    /// Cronofy, through a notification or a callback.
    pub fn cronofy() -> Actor {
        Actor::named("cronofy")
    }

    fn named(name: &str) -> Actor {
        Actor {
            name: name.to_owned(),
            request_id: String::new(),
        }
    }
}

/// One event to record.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    /// What happened.
    pub kind: AuditKind,
    /// The grant's sub, when the event is about one.
    pub sub: Option<&'a str>,
    /// The caller's id for the user, when known.
    pub user_ref: Option<&'a str>,
    /// Who did it.
    pub actor: &'a Actor,
    /// A short, secret-free detail (a reason, a count).
    pub detail: String,
    /// Store only the keyed hashes of sub and user_ref, not the ids (the
    /// event erases the person).
    pub ids_erased: bool,
}

/// Longest detail kept: details are short by construction; this bounds a mistake.
pub const MAX_DETAIL: usize = 256;

/// A recorded event, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Tenant id.
    pub tenant: String,
    /// Number in the tenant's chain, from 1.
    pub seq: i64,
    /// When it was recorded.
    pub recorded_at: OffsetDateTime,
    /// What happened (the stored name).
    pub kind: String,
    /// The sub, until the person's data is erased.
    pub sub: Option<String>,
    /// The user_ref, until the person's data is erased.
    pub user_ref: Option<String>,
    /// Keyed hash of the sub (empty when none).
    pub sub_hash: String,
    /// Keyed hash of the user_ref (empty when none).
    pub user_ref_hash: String,
    /// Who did it.
    pub actor: String,
    /// The RPC's request id, or empty.
    pub request_id: String,
    /// Short detail.
    pub detail: String,
    /// The previous row's hash (empty for the first row of a chain).
    pub prev_hash: String,
    /// This row's hash.
    pub hash: String,
}

/// The keyed hash of a person's id within a tenant (HMAC-SHA-256, hex):
/// stable while the audit key lasts, useless without it.
pub fn pseudonym(key: &[u8; 32], tenant: &str, what: &str, id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    for part in [tenant, what, id] {
        mac.update(&(part.len() as u32).to_be_bytes());
        mac.update(part.as_bytes());
    }
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_keyed_and_per_tenant() {
        let a = pseudonym(&[1; 32], "acme", "sub", "acc_1");
        assert_eq!(a, pseudonym(&[1; 32], "acme", "sub", "acc_1"));
        assert_ne!(a, pseudonym(&[2; 32], "acme", "sub", "acc_1"));
        assert_ne!(a, pseudonym(&[1; 32], "globex", "sub", "acc_1"));
        assert_ne!(a, pseudonym(&[1; 32], "acme", "user_ref", "acc_1"));
        assert!(!a.contains("acc_1"));
    }
}
