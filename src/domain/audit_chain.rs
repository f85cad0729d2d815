//! How audit rows chain, and how a chain is checked. Each row's hash is an
//! HMAC-SHA-256 under the sealed audit key over its fields and the previous
//! row's hash (`k1:` and hex): a database writer without the key can neither
//! edit a row nor write a consistent new chain. Retention's pruning mark and
//! the heads operators keep elsewhere carry an HMAC too. Rows recorded before
//! calgate keyed its chains carry a plain SHA-256 (no prefix); a verifier
//! accepts them only up to the row an operator names.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::audit::AuditRecord;

/// The prefix of a keyed row hash.
pub const KEYED: &str = "k1:";

impl AuditRecord {
    fn fields(&self) -> ChainFields<'_> {
        ChainFields {
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
        }
    }

    /// The keyed hash this row should carry, from its own fields.
    pub fn keyed_hash(&self, key: &[u8; 32]) -> String {
        chain_hash(key, &self.fields())
    }

    /// Whether the row's hash is keyed (recorded since calgate keys its chains).
    pub fn is_keyed(&self) -> bool {
        self.hash.starts_with(KEYED)
    }

    /// Whether the row's hash matches its fields, keyed or (for rows from
    /// before calgate keyed its chains) plain.
    fn hash_matches(&self, key: &[u8; 32]) -> bool {
        if self.is_keyed() {
            self.keyed_hash(key) == self.hash
        } else {
            unkeyed_chain_hash(&self.fields()) == self.hash
        }
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

impl ChainFields<'_> {
    fn parts(&self) -> [String; 10] {
        [
            self.tenant.to_owned(),
            self.seq.to_string(),
            self.recorded_at_ms.to_string(),
            self.kind.to_owned(),
            self.sub_hash.to_owned(),
            self.user_ref_hash.to_owned(),
            self.actor.to_owned(),
            self.request_id.to_owned(),
            self.detail.to_owned(),
            self.prev_hash.to_owned(),
        ]
    }
}

/// HMAC-SHA-256 under `key` over length-prefixed `parts` after `domain`.
fn mac(key: &[u8; 32], domain: &str, parts: &[&str]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(domain.as_bytes());
    for part in parts {
        mac.update(&(part.len() as u32).to_be_bytes());
        mac.update(part.as_bytes());
    }
    hex::encode(mac.finalize().into_bytes())
}

/// A row's keyed hash: `k1:` and the HMAC of its length-prefixed fields.
pub fn chain_hash(key: &[u8; 32], fields: &ChainFields<'_>) -> String {
    let parts = fields.parts();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    format!("{KEYED}{}", mac(key, "calgate/audit/v2", &parts))
}

/// The plain SHA-256 rows carried before calgate keyed its chains.
pub fn unkeyed_chain_hash(fields: &ChainFields<'_>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"calgate/audit/v1");
    for part in fields.parts() {
        hasher.update((part.len() as u32).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Where retention cut a tenant's chain: the last row it removed, and the
/// proof (under the audit key) that the row was older than the retention
/// when it went.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PruneMark {
    /// The last row removed.
    pub through: i64,
    /// Its hash (the next row's previous hash).
    pub hash: String,
    /// When that row was recorded (Unix ms).
    pub recorded_at_ms: i64,
    /// When retention removed it (Unix ms, the replica's clock).
    pub pruned_at_ms: i64,
    /// `audit.retention` then (ms).
    pub retention_ms: i64,
    /// HMAC of the above; empty on marks from before calgate signed them.
    pub mac: String,
}

impl PruneMark {
    /// The mark's HMAC under `key`.
    pub fn expected_mac(&self, tenant: &str, key: &[u8; 32]) -> String {
        let (through, at, pruned, retention) = (
            self.through.to_string(),
            self.recorded_at_ms.to_string(),
            self.pruned_at_ms.to_string(),
            self.retention_ms.to_string(),
        );
        mac(
            key,
            "calgate/audit/prune",
            &[tenant, &through, &self.hash, &at, &pruned, &retention],
        )
    }
}

/// A chain's head as `calgate audit --head` prints it, for operators to keep
/// elsewhere; signed so it cannot be made up from the database alone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignedHead {
    /// Tenant id.
    pub tenant: String,
    /// The last row's number then.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
    /// When the head was taken (RFC 3339).
    pub time: String,
    /// HMAC of the above under the audit key.
    pub mac: String,
}

impl SignedHead {
    /// The head (tenant, seq, hash) taken at `time`, signed with `key`.
    pub fn sign(tenant: &str, seq: i64, hash: &str, time: OffsetDateTime, key: &[u8; 32]) -> SignedHead {
        let time = time
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut head = SignedHead {
            tenant: tenant.to_owned(),
            seq,
            hash: hash.to_owned(),
            time,
            mac: String::new(),
        };
        head.mac = head.expected_mac(key);
        head
    }

    fn expected_mac(&self, key: &[u8; 32]) -> String {
        let seq = self.seq.to_string();
        mac(key, "calgate/audit/head", &[&self.tenant, &seq, &self.hash, &self.time])
    }

    /// Whether `key` signed it.
    pub fn is_signed_by(&self, key: &[u8; 32]) -> bool {
        self.mac == self.expected_mac(key)
    }
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
    /// A row carries a plain SHA-256 where calgate writes keyed hashes: it was
    /// written without the audit key (or before calgate keyed its chains, and
    /// the verifier was not told so).
    Unkeyed {
        /// The row.
        seq: i64,
    },
    /// The pruning mark was not made by calgate, or claims rows younger than the retention.
    PruneMark {
        /// The row the mark claims was removed last.
        through: i64,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The chain no longer holds the head an operator kept.
    HeadNotReached {
        /// The kept head's row.
        seq: i64,
        /// What is wrong.
        why: &'static str,
    },
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainBreak::Edited { seq } => write!(f, "row {seq} was edited (its hash does not match its fields)"),
            ChainBreak::Gap { seq } => write!(f, "rows are missing or were inserted before row {seq}"),
            ChainBreak::Unkeyed { seq } => write!(
                f,
                "row {seq} is not keyed: written without the audit key (if it predates calgate's keyed chains, pass --unkeyed-through with the last such row)"
            ),
            ChainBreak::PruneMark { through, why } => write!(f, "the pruning mark (through row {through}) {why}"),
            ChainBreak::HeadNotReached { seq, why } => write!(f, "the kept head (row {seq}) {why}"),
        }
    }
}

/// Checks a chain incrementally, row after row in number order.
#[derive(Debug)]
pub struct ChainVerifier<'k> {
    key: &'k [u8; 32],
    unkeyed_through: i64,
    expected_seq: i64,
    expected_prev: String,
    /// Rows checked.
    pub checked: u64,
}

impl<'k> ChainVerifier<'k> {
    /// Starts after the rows retention removed (`mark`, checked first);
    /// rows up to `unkeyed_through` may carry plain hashes (they predate
    /// calgate's keyed chains).
    pub fn new(
        tenant: &str,
        mark: &PruneMark,
        key: &'k [u8; 32],
        unkeyed_through: i64,
    ) -> Result<ChainVerifier<'k>, ChainBreak> {
        if mark.through > 0 {
            let through = mark.through;
            if mark.mac.is_empty() {
                if through > unkeyed_through {
                    return Err(ChainBreak::PruneMark {
                        through,
                        why: "is not signed with the audit key",
                    });
                }
            } else if mark.mac != mark.expected_mac(tenant, key) {
                return Err(ChainBreak::PruneMark {
                    through,
                    why: "is not signed with the audit key",
                });
            } else if mark.pruned_at_ms - mark.recorded_at_ms < mark.retention_ms {
                return Err(ChainBreak::PruneMark {
                    through,
                    why: "claims rows younger than the retention",
                });
            }
        }
        Ok(ChainVerifier {
            key,
            unkeyed_through,
            expected_seq: mark.through + 1,
            expected_prev: mark.hash.clone(),
            checked: 0,
        })
    }

    /// Checks the next row.
    pub fn check(&mut self, row: &AuditRecord) -> Result<(), ChainBreak> {
        if row.seq != self.expected_seq || row.prev_hash != self.expected_prev {
            return Err(ChainBreak::Gap { seq: row.seq });
        }
        if !row.is_keyed() && row.seq > self.unkeyed_through {
            return Err(ChainBreak::Unkeyed { seq: row.seq });
        }
        if !row.hash_matches(self.key) {
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
mod tests;
