//! The audit trail's vocabulary: what happened to a credential, who made it
//! happen, and how rows chain. Rows are stored by [`crate::store::Store`];
//! nothing here holds a token, code or secret.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
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
}

impl AuditKind {
    /// Every kind, for parsing and documentation.
    pub const ALL: [AuditKind; 11] = [
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

impl AuditRecord {
    /// The hash this row should carry, from its own fields.
    pub fn expected_hash(&self) -> String {
        chain_hash(&ChainFields {
            tenant: &self.tenant,
            seq: self.seq,
            recorded_at_ms: (self.recorded_at.unix_timestamp_nanos() / 1_000_000) as i64,
            kind: &self.kind,
            sub_hash: &self.sub_hash,
            user_ref_hash: &self.user_ref_hash,
            actor: &self.actor,
            request_id: &self.request_id,
            detail: &self.detail,
            prev_hash: &self.prev_hash,
        })
    }
}

/// What a row's hash covers: everything but the clear sub and user_ref, so
/// erasing those never breaks the chain.
#[derive(Debug)]
pub struct ChainFields<'a> {
    /// Tenant id.
    pub tenant: &'a str,
    /// Number in the chain.
    pub seq: i64,
    /// Unix milliseconds.
    pub recorded_at_ms: i64,
    /// Kind name.
    pub kind: &'a str,
    /// Keyed hash of the sub.
    pub sub_hash: &'a str,
    /// Keyed hash of the user_ref.
    pub user_ref_hash: &'a str,
    /// Actor.
    pub actor: &'a str,
    /// Request id.
    pub request_id: &'a str,
    /// Detail.
    pub detail: &'a str,
    /// The previous row's hash.
    pub prev_hash: &'a str,
}

/// SHA-256 (hex) over the length-prefixed fields: no two rows share an encoding.
pub fn chain_hash(fields: &ChainFields<'_>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"calgate/audit/v1");
    let seq = fields.seq.to_string();
    let at = fields.recorded_at_ms.to_string();
    for part in [
        fields.tenant,
        &seq,
        &at,
        fields.kind,
        fields.sub_hash,
        fields.user_ref_hash,
        fields.actor,
        fields.request_id,
        fields.detail,
        fields.prev_hash,
    ] {
        hasher.update((part.len() as u32).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
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

/// Where a chain is broken, if anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainBreak {
    /// A row's hash does not match its fields: it was edited.
    Edited {
        /// The row.
        seq: i64,
    },
    /// A row does not carry the previous row's hash, or numbers skip: rows were removed or inserted.
    Gap {
        /// The first row after the break (or the head's number when rows are missing at the end).
        seq: i64,
    },
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainBreak::Edited { seq } => write!(f, "row {seq} was edited (its hash does not match its fields)"),
            ChainBreak::Gap { seq } => write!(f, "rows are missing or were inserted before row {seq}"),
        }
    }
}

/// Checks a chain incrementally, row after row in number order.
#[derive(Debug)]
pub struct ChainVerifier {
    expected_seq: i64,
    expected_prev: String,
    /// Rows checked.
    pub checked: u64,
}

impl ChainVerifier {
    /// Starts after the rows retention removed: the first remaining row is
    /// `pruned_through + 1` and carries `pruned_hash`.
    pub fn new(pruned_through: i64, pruned_hash: &str) -> ChainVerifier {
        ChainVerifier {
            expected_seq: pruned_through + 1,
            expected_prev: pruned_hash.to_owned(),
            checked: 0,
        }
    }

    /// Checks the next row.
    pub fn check(&mut self, row: &AuditRecord) -> Result<(), ChainBreak> {
        if row.seq != self.expected_seq || row.prev_hash != self.expected_prev {
            return Err(ChainBreak::Gap { seq: row.seq });
        }
        if row.expected_hash() != row.hash {
            return Err(ChainBreak::Edited { seq: row.seq });
        }
        self.expected_seq += 1;
        self.expected_prev.clone_from(&row.hash);
        self.checked += 1;
        Ok(())
    }

    /// Checks that the chain ends where its head says.
    pub fn finish(&self, last_seq: i64, last_hash: &str) -> Result<(), ChainBreak> {
        if self.expected_seq != last_seq + 1 || self.expected_prev != last_hash {
            return Err(ChainBreak::Gap { seq: last_seq });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64, prev: &str) -> AuditRecord {
        let mut row = AuditRecord {
            tenant: "acme".into(),
            seq,
            recorded_at: OffsetDateTime::from_unix_timestamp(1_800_000_000 + seq).expect("valid"),
            kind: "grant_connected".into(),
            sub: Some("acc_1".into()),
            user_ref: None,
            sub_hash: pseudonym(&[7; 32], "acme", "sub", "acc_1"),
            user_ref_hash: String::new(),
            actor: "operator".into(),
            request_id: String::new(),
            detail: String::new(),
            prev_hash: prev.into(),
            hash: String::new(),
        };
        row.hash = row.expected_hash();
        row
    }

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut rows: Vec<AuditRecord> = Vec::new();
        for seq in 1..=n {
            let prev = rows.last().map_or(String::new(), |r| r.hash.clone());
            rows.push(row(seq, &prev));
        }
        rows
    }

    fn verify(rows: &[AuditRecord], through: i64, pruned: &str) -> Result<u64, ChainBreak> {
        let mut verifier = ChainVerifier::new(through, pruned);
        for row in rows {
            verifier.check(row)?;
        }
        let last = rows
            .last()
            .map_or((through, pruned.to_owned()), |r| (r.seq, r.hash.clone()));
        verifier.finish(last.0, &last.1)?;
        Ok(verifier.checked)
    }

    #[test]
    fn an_intact_chain_verifies_even_with_ids_erased() {
        let mut rows = chain(4);
        assert_eq!(verify(&rows, 0, ""), Ok(4));
        rows[1].sub = None;
        rows[2].user_ref = None;
        assert_eq!(verify(&rows, 0, ""), Ok(4));
        // After retention removed the first two rows.
        let pruned = rows[1].hash.clone();
        assert_eq!(verify(&rows[2..], 2, &pruned), Ok(2));
    }

    #[test]
    fn edits_removals_and_insertions_are_found() {
        let rows = chain(4);
        let mut edited = rows.clone();
        edited[2].actor = "key:000000000000".into();
        assert_eq!(verify(&edited, 0, ""), Err(ChainBreak::Edited { seq: 3 }));
        let mut removed = rows.clone();
        removed.remove(1);
        assert_eq!(verify(&removed, 0, ""), Err(ChainBreak::Gap { seq: 3 }));
        // The last row removed: only the head tells.
        let mut verifier = ChainVerifier::new(0, "");
        for row in &rows[..3] {
            verifier.check(row).expect("intact so far");
        }
        assert_eq!(verifier.finish(4, &rows[3].hash), Err(ChainBreak::Gap { seq: 4 }));
        // A renumbered forgery without the right previous hash.
        let mut forged = rows.clone();
        forged[3] = row(4, "f00d");
        assert_eq!(verify(&forged, 0, ""), Err(ChainBreak::Gap { seq: 4 }));
    }

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
