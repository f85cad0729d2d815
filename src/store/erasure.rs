//! Erasure: one user (ForgetUser) or a whole tenant (`calgate purge-tenant`).
//! Every row about the person or tenant is deleted in one transaction, and
//! their audit rows keep only keyed hashes. On SQLite, `secure_delete`
//! (set on every connection) zeroes the freed bytes, and a checkpoint moves
//! the change out of the write-ahead log, so erased ids are not left readable
//! in the files.

use tracing::warn;

use super::{Backend, BeginWrite, Store, StoreError, in_transaction::InTransaction, with_pool};
use crate::domain::audit::{Actor, AuditEntry, AuditKind};

/// What erasing one user removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForgottenUser {
    /// The user_refs that were bound to the grant.
    pub user_refs: Vec<String>,
}

/// What purging a tenant removed, table by table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgedRows {
    /// Grants (tokens with them).
    pub grants: u64,
    /// Every other row: user_refs, states, authorizations, changes, notifications, event digests.
    pub other_rows: u64,
    /// Audit rows whose sub and user_ref were replaced by their hashes.
    pub audit_rows_pseudonymised: u64,
    /// Queued writes still waiting when the rows went (accepted while the
    /// purge ran); they are counted in `other_rows` too.
    pub queued_writes_dropped: u64,
}

/// A grant to revoke and close before a purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeTarget {
    /// The grant's sub.
    pub sub: String,
    /// Whether it still holds tokens (revoked grants do not).
    pub has_tokens: bool,
}

/// Tables keyed by (tenant_id, sub) that hold nothing else worth keeping.
const PER_SUB_TABLES: [&str; 6] = [
    "changes",
    "pending_erasures",
    "event_writes",
    "notifications",
    "channel_pages",
    "refresh_marks",
];

impl Store {
    /// Erases everything about the grant (tenant, sub) and its user_refs, and
    /// records `grant_forgotten`, in one transaction. None: no such grant.
    /// A revocation still queued for the grant stays (it needs the sub).
    pub async fn forget_grant(
        &self,
        tenant: &str,
        sub: &str,
        actor: &Actor,
        detail: String,
    ) -> Result<Option<ForgottenUser>, StoreError> {
        let (_, now_ms) = self.now();
        let forgotten = with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let exists: Option<i64> = sqlx::query_scalar("SELECT version FROM grants WHERE tenant_id = $1 AND sub = $2")
                .bind(tenant)
                .bind(sub)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                return Ok(None);
            }
            let user_refs = tx.erase_bindings_of_grant(self, tenant, sub).await?;
            let (dropped, seq) = tx.drop_queued_writes(tenant, sub, now_ms).await?;
            for table in PER_SUB_TABLES {
                sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1 AND sub = $2"))
                    .bind(tenant)
                    .bind(sub)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("DELETE FROM redeemed_states WHERE tenant_id = $1 AND grant_sub = $2")
                .bind(tenant)
                .bind(sub)
                .execute(&mut *tx)
                .await?;
            let entry = AuditEntry {
                kind: AuditKind::GrantForgotten,
                sub: Some(sub),
                user_ref: user_refs.first().map(String::as_str),
                actor,
                detail: with_dropped_writes(detail, dropped),
                ids_erased: true,
            };
            tx.record_audit(self, tenant, &entry, now_ms).await?;
            sqlx::query("DELETE FROM grants WHERE tenant_id = $1 AND sub = $2")
                .bind(tenant)
                .bind(sub)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            (ForgottenUser { user_refs }, seq)
        });
        let (forgotten, seq) = forgotten;
        if let Some(seq) = seq {
            self.feed.advance(tenant, seq);
        }
        self.remove_spilled(tenant, sub);
        self.checkpoint_erasure().await;
        Ok(Some(forgotten))
    }

    /// The other grants of the person whose grant is (tenant, sub): those
    /// its user_refs were ever bound to (a user who connected again under
    /// another sub), oldest first.
    pub async fn other_grants_of_person(&self, tenant: &str, sub: &str) -> Result<Vec<String>, StoreError> {
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT g.sub FROM grants g WHERE g.tenant_id = $1 AND g.sub <> $2 AND g.sub IN \
                 (SELECT o.sub FROM user_ref_history o JOIN user_ref_history h \
                  ON h.tenant_id = o.tenant_id AND h.user_ref = o.user_ref \
                  WHERE h.tenant_id = $1 AND h.sub = $2) ORDER BY g.created_at, g.sub",
            )
            .bind(tenant)
            .bind(sub)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Erases what is left of a user_ref that names no grant (an Enterprise
    /// Connect authorization pending or failed, past bindings, changes) and
    /// records `grant_forgotten`. False when nothing was stored about it.
    pub async fn forget_user_ref(&self, tenant: &str, user_ref: &str, actor: &Actor) -> Result<bool, StoreError> {
        let (_, now_ms) = self.now();
        let user_refs = [user_ref.to_owned()];
        let found = with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let mut found: i64 = 0;
            for table in ["enterprise_authorizations", "user_ref_history", "changes"] {
                found += sqlx::query_scalar::<_, i64>(&format!(
                    "SELECT COUNT(*) FROM {table} WHERE tenant_id = $1 AND user_ref = $2"
                ))
                .bind(tenant)
                .bind(user_ref)
                .fetch_one(&mut *tx)
                .await?;
            }
            if found > 0 {
                tx.erase_user_refs(self, tenant, &user_refs, Vec::new()).await?;
                let entry = AuditEntry {
                    kind: AuditKind::GrantForgotten,
                    sub: None,
                    user_ref: Some(user_ref),
                    actor,
                    detail: "no grant: authorizations and bindings only".to_owned(),
                    ids_erased: true,
                };
                tx.record_audit(self, tenant, &entry, now_ms).await?;
            }
            tx.commit().await?;
            found > 0
        });
        if found {
            self.checkpoint_erasure().await;
        }
        Ok(found)
    }

    /// The tenant's grants, for revoking and closing before a purge.
    pub async fn purge_targets(&self, tenant: &str) -> Result<Vec<PurgeTarget>, StoreError> {
        let rows: Vec<(String, bool)> = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT sub, refresh_token IS NOT NULL FROM grants WHERE tenant_id = $1 ORDER BY sub",
            )
            .bind(tenant)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(sub, has_tokens)| PurgeTarget { sub, has_tokens })
            .collect())
    }

    /// Deletes the tenant's queued writes still waiting, so none is delivered
    /// while a purge revokes its grants. Returns how many went. A write being
    /// delivered at that moment finds its row gone and settles nothing.
    pub async fn drop_tenant_queued_writes(&self, tenant: &str) -> Result<u64, StoreError> {
        Ok(with_pool!(self, pool => {
            sqlx::query("DELETE FROM queued_writes WHERE tenant_id = $1 AND state = 'queued'")
                .bind(tenant)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    /// Deletes every row of the tenant but its audit trail (whose ids become
    /// hashes), the revocations in `keep_revocations` (still to be made at
    /// Cronofy) and the grants of the erasures in `keep_erasures` (with their
    /// event records: their events are still to be seen gone), and records
    /// `tenant_purged`, in one transaction.
    pub async fn purge_tenant_rows(
        &self,
        tenant: &str,
        keep_revocations: &[String],
        keep_erasures: &[String],
        actor: &Actor,
        detail: String,
    ) -> Result<PurgedRows, StoreError> {
        let (_, now_ms) = self.now();
        let purged = with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let queued_writes_dropped = sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM queued_writes WHERE tenant_id = $1 AND state = 'queued'",
            )
            .bind(tenant)
            .fetch_one(&mut *tx)
            .await? as u64;
            let mut other_rows = 0;
            for table in [
                "user_refs",
                "user_ref_history",
                "redeemed_states",
                "enterprise_authorizations",
                "changes",
                "change_sequences",
                "notifications",
                "channel_pages",
                "refresh_marks",
                "queued_writes",
            ] {
                other_rows += sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
                    .bind(tenant)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            let pending: Vec<String> = sqlx::query_scalar("SELECT sub FROM pending_revocations WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_all(&mut *tx)
                .await?;
            for sub in pending.iter().filter(|sub| !keep_revocations.contains(sub)) {
                other_rows += sqlx::query("DELETE FROM pending_revocations WHERE tenant_id = $1 AND sub = $2")
                    .bind(tenant)
                    .bind(sub)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            // What a waiting erasure needs stays: its grant, its event records, its row.
            let mut grants = 0;
            // Without any (the usual case) all go at once; with some, grant by grant.
            let subs: Vec<String> = if keep_erasures.is_empty() {
                vec![String::new()]
            } else {
                sqlx::query_scalar("SELECT sub FROM grants WHERE tenant_id = $1")
                    .bind(tenant)
                    .fetch_all(&mut *tx)
                    .await?
            };
            let by_sub = !keep_erasures.is_empty();
            for sub in subs.iter().filter(|sub| !keep_erasures.contains(sub)) {
                for (table, counted) in [("event_writes", false), ("pending_erasures", false), ("grants", true)] {
                    let removed = if by_sub {
                        sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1 AND sub = $2"))
                            .bind(tenant)
                            .bind(sub)
                            .execute(&mut *tx)
                            .await?
                    } else {
                        sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
                            .bind(tenant)
                            .execute(&mut *tx)
                            .await?
                    }
                    .rows_affected();
                    if counted {
                        grants += removed;
                    } else {
                        other_rows += removed;
                    }
                }
            }
            let audit_rows_pseudonymised = sqlx::query(
                "UPDATE audit_events SET sub = NULL, user_ref = NULL \
                 WHERE tenant_id = $1 AND (sub IS NOT NULL OR user_ref IS NOT NULL)",
            )
            .bind(tenant)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let detail = if queued_writes_dropped > 0 {
                format!("{detail}; {queued_writes_dropped} more queued writes dropped (accepted during the purge)")
            } else {
                detail
            };
            let entry = AuditEntry {
                kind: AuditKind::TenantPurged,
                sub: None,
                user_ref: None,
                actor,
                detail,
                ids_erased: true,
            };
            tx.record_audit(self, tenant, &entry, now_ms).await?;
            tx.commit().await?;
            PurgedRows {
                grants,
                other_rows,
                audit_rows_pseudonymised,
                queued_writes_dropped,
            }
        });
        self.checkpoint_erasure().await;
        Ok(purged)
    }

    /// SQLite: copies committed pages into the database file and empties the
    /// write-ahead log, so erased bytes do not linger there. Best effort: a
    /// busy reader only delays it to SQLite's next automatic checkpoint.
    pub(super) async fn checkpoint_erasure(&self) {
        let Backend::Sqlite(pool) = &self.backend else { return };
        for _ in 0..3 {
            // (busy, log frames, checkpointed frames): busy = 1 when a reader kept the log in use.
            match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(pool)
                .await
            {
                Ok((0, _, _)) => return,
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                Err(error) => {
                    warn!(%error, "checkpointing the write-ahead log after an erasure failed");
                    return;
                }
            }
        }
        warn!("the write-ahead log stayed in use after an erasure: erased bytes leave it at the next checkpoint");
    }
}

/// An erasure's audit detail, saying how many queued writes it dropped.
pub(super) fn with_dropped_writes(detail: String, dropped: u64) -> String {
    if dropped == 0 {
        detail
    } else {
        format!("{detail}; {dropped} queued writes dropped")
    }
}
