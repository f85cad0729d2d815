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
const PER_SUB_TABLES: [&str; 5] = [
    "changes",
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
        let sub_hash = self.pseudonym(tenant, "sub", sub);
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
            let user_refs: Vec<String> = sqlx::query_scalar(
                "SELECT user_ref FROM user_refs WHERE tenant_id = $1 AND sub = $2 ORDER BY bound_at DESC, user_ref DESC",
            )
            .bind(tenant)
            .bind(sub)
            .fetch_all(&mut *tx)
            .await?;
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
            sqlx::query("DELETE FROM enterprise_authorizations WHERE tenant_id = $1 AND grant_sub = $2")
                .bind(tenant)
                .bind(sub)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE audit_events SET sub = NULL, user_ref = NULL WHERE tenant_id = $1 AND sub_hash = $2")
                .bind(tenant)
                .bind(&sub_hash)
                .execute(&mut *tx)
                .await?;
            for user_ref in &user_refs {
                sqlx::query("DELETE FROM enterprise_authorizations WHERE tenant_id = $1 AND user_ref = $2")
                    .bind(tenant)
                    .bind(user_ref)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "UPDATE audit_events SET sub = NULL, user_ref = NULL WHERE tenant_id = $1 AND user_ref_hash = $2",
                )
                .bind(tenant)
                .bind(self.pseudonym(tenant, "user_ref", user_ref))
                .execute(&mut *tx)
                .await?;
            }
            let entry = AuditEntry {
                kind: AuditKind::GrantForgotten,
                sub: Some(sub),
                user_ref: user_refs.first().map(String::as_str),
                actor,
                detail,
                ids_erased: true,
            };
            tx.record_audit(self, tenant, &entry, now_ms).await?;
            sqlx::query("DELETE FROM user_refs WHERE tenant_id = $1 AND sub = $2")
                .bind(tenant)
                .bind(sub)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM grants WHERE tenant_id = $1 AND sub = $2")
                .bind(tenant)
                .bind(sub)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            ForgottenUser { user_refs }
        });
        self.remove_spilled(tenant, sub);
        self.checkpoint_erasure().await;
        Ok(Some(forgotten))
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

    /// Deletes every row of the tenant but its audit trail (whose ids become
    /// hashes) and the revocations in `keep_revocations` (still to be made at
    /// Cronofy), and records `tenant_purged`, in one transaction.
    pub async fn purge_tenant_rows(
        &self,
        tenant: &str,
        keep_revocations: &[String],
        actor: &Actor,
        detail: String,
    ) -> Result<PurgedRows, StoreError> {
        let (_, now_ms) = self.now();
        let purged = with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let mut other_rows = 0;
            for table in [
                "user_refs",
                "redeemed_states",
                "enterprise_authorizations",
                "changes",
                "change_sequences",
                "event_writes",
                "notifications",
                "channel_pages",
                "refresh_marks",
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
            let grants = sqlx::query("DELETE FROM grants WHERE tenant_id = $1")
                .bind(tenant)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let audit_rows_pseudonymised = sqlx::query(
                "UPDATE audit_events SET sub = NULL, user_ref = NULL \
                 WHERE tenant_id = $1 AND (sub IS NOT NULL OR user_ref IS NOT NULL)",
            )
            .bind(tenant)
            .execute(&mut *tx)
            .await?
            .rows_affected();
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
            }
        });
        self.checkpoint_erasure().await;
        Ok(purged)
    }

    /// SQLite: copies committed pages into the database file and empties the
    /// write-ahead log, so erased bytes do not linger there. Best effort: a
    /// busy reader only delays it to SQLite's next automatic checkpoint.
    async fn checkpoint_erasure(&self) {
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
