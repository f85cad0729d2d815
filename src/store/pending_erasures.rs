//! Erasures waiting for Cronofy to confirm the person's events deleted (see
//! the migration's comment). The grant stays, hidden from every caller's
//! lookup and keeping its tokens, until the erasure worker finishes it with
//! [`Store::forget_grant`], which deletes the row here too.

use super::{BeginWrite, Store, StoreError, in_transaction::InTransaction, with_pool};
use crate::domain::audit::{Actor, AuditEntry, AuditKind};

/// One erasure waiting for its events to be confirmed gone.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PendingErasure {
    /// Tenant id.
    pub tenant_id: String,
    /// The grant's sub.
    pub sub: String,
    /// When ForgetUser asked (Unix milliseconds).
    pub requested_at: i64,
    /// Attempts made so far by the worker.
    pub attempts: i64,
    /// When the next attempt is due (Unix seconds): compared by [`Store::claim_erasure`].
    pub next_attempt_at: i64,
    /// Who asked (the audit actor's name).
    pub actor: String,
    /// The request that asked.
    pub request_id: String,
}

impl PendingErasure {
    /// Who asked, for the audit row written when the erasure ends.
    pub fn actor(&self) -> Actor {
        Actor {
            name: self.actor.clone(),
            request_id: self.request_id.clone(),
        }
    }
}

/// How many erasures wait, and how long the oldest has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErasureBacklog {
    /// Erasures waiting.
    pub count: i64,
    /// Seconds since the oldest was asked for; 0 when none waits.
    pub oldest_age_seconds: i64,
}

impl Store {
    /// Hides the grant (tenant, sub) from callers and queues its erasure for
    /// the worker, first due `after_seconds` from now: erases, in one
    /// transaction, every user_ref bound to it and what names them
    /// (callers can no longer reach it), and records `erasure_deferred`. The
    /// grant keeps its tokens and the records of the events calgate wrote
    /// (the worker deletes by them). None: no such grant.
    pub async fn defer_erasure(
        &self,
        tenant: &str,
        sub: &str,
        actor: &Actor,
        after_seconds: i64,
        detail: String,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let (now, now_ms) = self.now();
        let user_refs = with_pool!(self, pool => {
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
            // The change stream forgets the person now; what the worker needs stays.
            sqlx::query("DELETE FROM changes WHERE tenant_id = $1 AND sub = $2")
                .bind(tenant)
                .bind(sub)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO pending_erasures (tenant_id, sub, requested_at, attempts, next_attempt_at, actor, request_id) \
                 VALUES ($1, $2, $3, 0, $4, $5, $6) ON CONFLICT (tenant_id, sub) DO NOTHING",
            )
            .bind(tenant)
            .bind(sub)
            .bind(now_ms)
            .bind(now.saturating_add(after_seconds))
            .bind(&actor.name)
            .bind(&actor.request_id)
            .execute(&mut *tx)
            .await?;
            let entry = AuditEntry {
                kind: AuditKind::ErasureDeferred,
                sub: Some(sub),
                user_ref: user_refs.first().map(String::as_str),
                actor,
                detail: super::erasure::with_dropped_writes(detail, dropped),
                ids_erased: true,
            };
            tx.record_audit(self, tenant, &entry, now_ms).await?;
            tx.commit().await?;
            (user_refs, seq)
        });
        let (user_refs, seq) = user_refs;
        if let Some(seq) = seq {
            self.feed.advance(tenant, seq);
        }
        self.checkpoint_erasure().await;
        Ok(Some(user_refs))
    }

    /// Up to `limit` erasures due now, oldest first.
    pub async fn due_erasures(&self, limit: i64) -> Result<Vec<PendingErasure>, StoreError> {
        let (now, _) = self.now();
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, PendingErasure>(
                "SELECT tenant_id, sub, requested_at, attempts, next_attempt_at, actor, request_id \
                 FROM pending_erasures WHERE next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $2",
            )
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The tenant's erasures waiting, whether due or not (purge-tenant).
    pub async fn erasures_of(&self, tenant: &str) -> Result<Vec<PendingErasure>, StoreError> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, PendingErasure>(
                "SELECT tenant_id, sub, requested_at, attempts, next_attempt_at, actor, request_id \
                 FROM pending_erasures WHERE tenant_id = $1 ORDER BY sub",
            )
            .bind(tenant)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Claims one attempt at `erasure` for `lease_seconds` (compare-and-swap
    /// on its due time): false when another replica claimed it first.
    pub async fn claim_erasure(&self, erasure: &PendingErasure, lease_seconds: i64) -> Result<bool, StoreError> {
        let (now, _) = self.now();
        let claimed = with_pool!(self, pool => {
            sqlx::query(
                "UPDATE pending_erasures SET next_attempt_at = $1 \
                 WHERE tenant_id = $2 AND sub = $3 AND next_attempt_at = $4",
            )
            .bind(now.saturating_add(lease_seconds))
            .bind(&erasure.tenant_id)
            .bind(&erasure.sub)
            .bind(erasure.next_attempt_at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(claimed == 1)
    }

    /// An attempt did not confirm the events gone: try again in `after_seconds`.
    pub async fn postpone_erasure(&self, tenant: &str, sub: &str, after_seconds: i64) -> Result<(), StoreError> {
        let (now, _) = self.now();
        with_pool!(self, pool => {
            sqlx::query(
                "UPDATE pending_erasures SET attempts = attempts + 1, next_attempt_at = $1 \
                 WHERE tenant_id = $2 AND sub = $3",
            )
            .bind(now.saturating_add(after_seconds))
            .bind(tenant)
            .bind(sub)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// How many erasures wait, and how long the oldest has (metrics).
    pub async fn erasure_backlog(&self) -> Result<ErasureBacklog, StoreError> {
        let (_, now_ms) = self.now();
        let (count, oldest): (i64, Option<i64>) = with_pool!(self, pool => {
            sqlx::query_as("SELECT COUNT(*), MIN(requested_at) FROM pending_erasures")
                .fetch_one(pool)
                .await?
        });
        Ok(ErasureBacklog {
            count,
            oldest_age_seconds: oldest.map_or(0, |at| (now_ms - at).max(0) / 1000),
        })
    }
}
