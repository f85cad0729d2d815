//! The audit trail (migration 0008): lifecycle events recorded in the
//! transaction of the state change they describe, hash-chained per tenant,
//! with people's ids kept in clear only until they are erased.
//!
//! The pseudonym key (HMAC key of the sub and user_ref hashes) is made once
//! per database and kept in `store_keys`, sealed under the configured
//! encryption keys: the database file alone cannot link a hash to a person,
//! and `calgate rekey` re-seals it like any token.

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{BeginWrite, Store, StoreError, crypto::Binding, in_transaction::InTransaction, with_pool};
use crate::domain::{
    audit::{AuditEntry, AuditRecord, MAX_DETAIL, pseudonym},
    audit_chain::{ChainBreak, ChainVerifier, PruneMark, SignedHead},
};

/// The pseudonym key; never printed.
#[derive(Default)]
pub(super) struct AuditKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey([redacted])")
    }
}

/// `store_keys.name` of the pseudonym key.
pub(super) const AUDIT_KEY: &str = "audit_pseudonym";

/// Takes the tenant's next audit number ($1 tenant) and the previous row's
/// hash, locking its head row until the transaction ends.
pub(super) const NEXT_AUDIT: &str = "INSERT INTO audit_heads (tenant_id, last_seq, last_hash) VALUES ($1, 1, '') \
     ON CONFLICT (tenant_id) DO UPDATE SET last_seq = audit_heads.last_seq + 1 RETURNING last_seq, last_hash";

pub(super) const INSERT_AUDIT: &str = "INSERT INTO audit_events (tenant_id, seq, recorded_at, kind, sub, user_ref, \
     sub_hash, user_ref_hash, actor, request_id, detail, prev_hash, hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

pub(super) const SET_HEAD_HASH: &str = "UPDATE audit_heads SET last_hash = $2 WHERE tenant_id = $1";

/// The user_ref bound to (tenant = $1, sub = $2) most recently.
pub(super) const BOUND_USER_REF: &str = "SELECT user_ref FROM user_refs WHERE tenant_id = $1 AND sub = $2 \
     ORDER BY bound_at DESC, user_ref DESC LIMIT 1";

#[derive(sqlx::FromRow)]
struct AuditRow {
    tenant_id: String,
    seq: i64,
    recorded_at: i64,
    kind: String,
    sub: Option<String>,
    user_ref: Option<String>,
    sub_hash: String,
    user_ref_hash: String,
    actor: String,
    request_id: String,
    detail: String,
    prev_hash: String,
    hash: String,
}

impl AuditRow {
    fn into_record(self) -> Result<AuditRecord, StoreError> {
        Ok(AuditRecord {
            recorded_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.recorded_at) * 1_000_000)
                .map_err(|_| StoreError::Corrupt("audit recorded_at".to_owned()))?,
            tenant: self.tenant_id,
            seq: self.seq,
            kind: self.kind,
            sub: self.sub,
            user_ref: self.user_ref,
            sub_hash: self.sub_hash,
            user_ref_hash: self.user_ref_hash,
            actor: self.actor,
            request_id: self.request_id,
            detail: self.detail,
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

const SELECT_AUDIT: &str = "SELECT tenant_id, seq, recorded_at, kind, sub, user_ref, sub_hash, user_ref_hash, \
     actor, request_id, detail, prev_hash, hash FROM audit_events";

/// Which of a tenant's audit rows to read.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only rows recorded at or after this instant.
    pub since: Option<OffsetDateTime>,
    /// Only rows about this user_ref (found by its keyed hash).
    pub user_ref: Option<String>,
    /// Only rows about this sub (found by its keyed hash).
    pub sub: Option<String>,
}

/// What verifying a tenant's chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Rows checked.
    pub checked: u64,
    /// The first break, if any.
    pub broken: Option<ChainBreak>,
    /// The hash of the chain's last row (keep it elsewhere to anchor the chain).
    pub head_hash: String,
}

impl Store {
    /// Reads the pseudonym key, making it on first use (once, whichever
    /// replica comes first), and seals a copy under the current encryption
    /// key when there is none: a later removal of older keys leaves it readable.
    pub(super) async fn load_audit_key(&self) -> Result<AuditKey, StoreError> {
        let mut sealed = self.sealed_audit_keys().await?;
        if sealed.is_empty() {
            let mut fresh = Zeroizing::new([0u8; 32]);
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut *fresh);
            self.store_audit_key(&fresh).await?;
            // Another replica may have won the race: use whatever was stored.
            sealed = self.sealed_audit_keys().await?;
        }
        let opened = sealed.iter().find_map(|(key_id, blob)| {
            let text = self.cipher().open(key_id, blob, &audit_key_binding()).ok()?;
            let mut key = Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(text.expose_secret(), &mut *key).ok()?;
            Some(key)
        });
        let Some(key) = opened else {
            let ids: Vec<&str> = sealed.iter().map(|(key_id, _)| key_id.as_str()).collect();
            return Err(StoreError::Corrupt(format!(
                "the audit trail's key is sealed under encryption key(s) `{}`, none of which is configured: \
                 add one back (keep old keys in encryption.keys until `calgate rekey` has finished)",
                ids.join("`, `")
            )));
        };
        let current = self.cipher().current_key_id();
        if !sealed.iter().any(|(key_id, _)| key_id == current) {
            self.store_audit_key(&key).await?;
        }
        Ok(AuditKey(key))
    }

    /// Every sealed copy of the pseudonym key: (key id, ciphertext).
    pub(super) async fn sealed_audit_keys(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as("SELECT key_id, sealed FROM store_keys WHERE name = $1 ORDER BY key_id")
                .bind(AUDIT_KEY)
                .fetch_all(pool)
                .await?
        }))
    }

    /// Seals the pseudonym key under the current encryption key (kept if a copy exists).
    async fn store_audit_key(&self, key: &[u8; 32]) -> Result<(), StoreError> {
        let sealed = self
            .cipher()
            .seal(&SecretString::from(hex::encode(key)), &audit_key_binding());
        let (now, _) = self.now();
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO store_keys (name, key_id, sealed, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (name, key_id) DO NOTHING",
            )
            .bind(AUDIT_KEY)
            .bind(self.cipher().current_key_id())
            .bind(&sealed)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The keyed hash of a person's id (`what`: `sub` or `user_ref`).
    pub(crate) fn pseudonym(&self, tenant: &str, what: &str, id: &str) -> String {
        pseudonym(&self.audit_key.0, tenant, what, id)
    }

    /// A new chain row for `entry`, numbered `seq` after `prev_hash`.
    pub(super) fn audit_row(
        &self,
        tenant: &str,
        seq: i64,
        prev_hash: String,
        entry: &AuditEntry<'_>,
        now_ms: i64,
    ) -> AuditRecord {
        let mut detail = entry.detail.clone();
        if detail.len() > MAX_DETAIL {
            let mut end = MAX_DETAIL;
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
        }
        let mut row = AuditRecord {
            tenant: tenant.to_owned(),
            seq,
            recorded_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            kind: entry.kind.as_str().to_owned(),
            sub: entry.sub.filter(|_| !entry.ids_erased).map(str::to_owned),
            user_ref: entry.user_ref.filter(|_| !entry.ids_erased).map(str::to_owned),
            sub_hash: entry
                .sub
                .map_or(String::new(), |sub| self.pseudonym(tenant, "sub", sub)),
            user_ref_hash: entry
                .user_ref
                .map_or(String::new(), |user_ref| self.pseudonym(tenant, "user_ref", user_ref)),
            actor: entry.actor.name.clone(),
            request_id: entry.actor.request_id.clone(),
            detail,
            prev_hash,
            hash: String::new(),
        };
        row.hash = row.keyed_hash(&self.audit_key.0);
        row
    }

    /// Records one audit entry on its own (events with no state change beside them).
    pub async fn record_audit(&self, tenant: &str, entry: &AuditEntry<'_>) -> Result<i64, StoreError> {
        let (_, now_ms) = self.now();
        Ok(with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let seq = tx.record_audit(self, tenant, entry, now_ms).await?;
            tx.commit().await?;
            seq
        }))
    }

    /// Up to `limit` of the tenant's audit rows after number `after`, in order.
    pub async fn audit_page(
        &self,
        tenant: &str,
        query: &AuditQuery,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let since_ms = query
            .since
            .map_or(i64::MIN, |since| (since.unix_timestamp_nanos() / 1_000_000) as i64);
        let user_ref_hash = query
            .user_ref
            .as_deref()
            .map(|user_ref| self.pseudonym(tenant, "user_ref", user_ref));
        let sub_hash = query.sub.as_deref().map(|sub| self.pseudonym(tenant, "sub", sub));
        let rows: Vec<AuditRow> = with_pool!(self, pool => {
            sqlx::query_as(&format!(
                "{SELECT_AUDIT} WHERE tenant_id = $1 AND seq > $2 AND recorded_at >= $3 \
                 AND ($4 IS NULL OR user_ref_hash = $4) AND ($5 IS NULL OR sub_hash = $5) ORDER BY seq LIMIT $6"
            ))
            .bind(tenant)
            .bind(after)
            .bind(since_ms)
            .bind(user_ref_hash)
            .bind(sub_hash)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(AuditRow::into_record).collect()
    }

    /// The tenant's chain head and pruning mark.
    async fn audit_head_row(&self, tenant: &str) -> Result<(i64, String, PruneMark), StoreError> {
        type Head = (i64, String, i64, String, i64, i64, i64, String);
        let head: Option<Head> = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT last_seq, last_hash, pruned_through, pruned_hash, pruned_recorded_at, pruned_at, \
                 pruned_retention, pruned_mac FROM audit_heads WHERE tenant_id = $1",
            )
            .bind(tenant)
            .fetch_optional(pool)
            .await?
        });
        let Some((last_seq, last_hash, through, hash, recorded_at_ms, pruned_at_ms, retention_ms, mac)) = head else {
            return Ok((0, String::new(), PruneMark::default()));
        };
        let mark = PruneMark {
            through,
            hash,
            recorded_at_ms,
            pruned_at_ms,
            retention_ms,
            mac,
        };
        Ok((last_seq, last_hash, mark))
    }

    /// The tenant's chain head now, signed with the audit key: what
    /// `calgate audit --head` prints for operators to keep elsewhere.
    pub async fn signed_audit_head(&self, tenant: &str) -> Result<SignedHead, StoreError> {
        let (last_seq, last_hash, _) = self.audit_head_row(tenant).await?;
        Ok(SignedHead::sign(
            tenant,
            last_seq,
            &last_hash,
            self.clock.now(),
            &self.audit_key.0,
        ))
    }

    /// Walks the tenant's whole chain and reports the first break. Rows up
    /// to `unkeyed_through` may carry plain hashes (recorded before calgate
    /// keyed its chains); `expect_head`, a head kept elsewhere, must still be
    /// in the chain.
    pub async fn verify_audit_chain(
        &self,
        tenant: &str,
        unkeyed_through: i64,
        expect_head: Option<&SignedHead>,
    ) -> Result<ChainReport, StoreError> {
        const PAGE: i64 = 1000;
        let (last_seq, last_hash, mark) = self.audit_head_row(tenant).await?;
        let report = |checked, broken| ChainReport {
            checked,
            broken,
            head_hash: last_hash.clone(),
        };
        if let Some(head) = expect_head
            && let Err(broken) = self.reaches(tenant, head, last_seq, &mark).await
        {
            return Ok(report(0, Some(broken)));
        }
        let mut verifier = match ChainVerifier::new(tenant, &mark, &self.audit_key.0, unkeyed_through) {
            Ok(verifier) => verifier,
            Err(broken) => return Ok(report(0, Some(broken))),
        };
        let mut after = mark.through;
        let everything = AuditQuery::default();
        loop {
            let page = self.audit_page(tenant, &everything, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for row in &page {
                if let Err(broken) = verifier.check(row) {
                    return Ok(report(verifier.checked, Some(broken)));
                }
            }
        }
        let broken = verifier.finish(last_seq, &last_hash).err();
        Ok(report(verifier.checked, broken))
    }

    /// Whether the chain still holds `head` (a row retention removed since
    /// is taken on the signed pruning mark's word).
    async fn reaches(
        &self,
        tenant: &str,
        head: &SignedHead,
        last_seq: i64,
        mark: &PruneMark,
    ) -> Result<(), ChainBreak> {
        let broken = |why| Err(ChainBreak::HeadNotReached { seq: head.seq, why });
        if head.tenant != tenant || !head.is_signed_by(&self.audit_key.0) {
            return broken("is not a head of this tenant's chain signed with the audit key");
        }
        if head.seq > last_seq {
            return broken("is beyond the chain's end: rows were removed");
        }
        if head.seq < mark.through {
            return Ok(());
        }
        let hash = if head.seq == mark.through {
            Some(mark.hash.clone())
        } else {
            let hash: Result<Option<String>, sqlx::Error> = with_pool!(self, pool => {
                sqlx::query_scalar("SELECT hash FROM audit_events WHERE tenant_id = $1 AND seq = $2")
                    .bind(tenant)
                    .bind(head.seq)
                    .fetch_optional(pool)
                    .await
            });
            hash.ok().flatten()
        };
        match hash {
            None => broken("is gone from the chain"),
            Some(hash) if hash != head.hash => broken("was rewritten"),
            Some(_) => Ok(()),
        }
    }

    /// Removes audit rows recorded before `before_ms`, tenant by tenant,
    /// keeping each chain verifiable from its first remaining row: the mark
    /// of the last row removed is signed with the audit key, with when it was
    /// recorded, when it went, and `retention_ms`.
    pub async fn prune_audit(&self, before_ms: i64, retention_ms: i64) -> Result<u64, StoreError> {
        let due: Vec<(String, i64)> = with_pool!(self, pool => {
            sqlx::query_as("SELECT tenant_id, MAX(seq) FROM audit_events WHERE recorded_at < $1 GROUP BY tenant_id")
                .bind(before_ms)
                .fetch_all(pool)
                .await?
        });
        let (_, now_ms) = self.now();
        let mut removed = 0;
        for (tenant, through) in due {
            removed += with_pool!(self, pool => {
                let mut tx = pool.begin_write().await?;
                let last: Option<(String, i64)> =
                    sqlx::query_as("SELECT hash, recorded_at FROM audit_events WHERE tenant_id = $1 AND seq = $2")
                        .bind(&tenant)
                        .bind(through)
                        .fetch_optional(&mut *tx)
                        .await?;
                let deleted = match last {
                    Some((hash, recorded_at_ms)) => {
                        let mut mark = PruneMark {
                            through,
                            hash,
                            recorded_at_ms,
                            pruned_at_ms: now_ms,
                            retention_ms,
                            mac: String::new(),
                        };
                        mark.mac = mark.expected_mac(&tenant, &self.audit_key.0);
                        sqlx::query(
                            "UPDATE audit_heads SET pruned_through = $2, pruned_hash = $3, pruned_recorded_at = $4, \
                             pruned_at = $5, pruned_retention = $6, pruned_mac = $7 \
                             WHERE tenant_id = $1 AND pruned_through < $2",
                        )
                        .bind(&tenant)
                        .bind(through)
                        .bind(&mark.hash)
                        .bind(mark.recorded_at_ms)
                        .bind(mark.pruned_at_ms)
                        .bind(mark.retention_ms)
                        .bind(&mark.mac)
                        .execute(&mut *tx)
                        .await?;
                        sqlx::query("DELETE FROM audit_events WHERE tenant_id = $1 AND seq <= $2")
                            .bind(&tenant)
                            .bind(through)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected()
                    }
                    None => 0,
                };
                tx.commit().await?;
                deleted
            });
        }
        Ok(removed)
    }
}

/// What the pseudonym key's ciphertext is bound to.
pub(super) fn audit_key_binding() -> Binding<'static> {
    Binding {
        tenant: "",
        sub: "",
        purpose: "audit_pseudonym_key",
    }
}
