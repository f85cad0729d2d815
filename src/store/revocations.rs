//! Revocations at Cronofy still to be made (see the migration's comment).

use super::{Store, StoreError, with_pool};

/// One revocation waiting to be retried.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PendingRevocation {
    /// Tenant id.
    pub tenant_id: String,
    /// The grant's sub.
    pub sub: String,
    /// Attempts made so far by the worker.
    pub attempts: i64,
}

impl Store {
    /// Queues a revocation (idempotent), due at once.
    pub async fn queue_revocation(&self, tenant: &str, sub: &str) -> Result<(), StoreError> {
        let (now, _) = self.now();
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO pending_revocations (tenant_id, sub, attempts, next_attempt_at, created_at) \
                 VALUES ($1, $2, 0, $3, $3) ON CONFLICT (tenant_id, sub) DO NOTHING",
            )
            .bind(tenant)
            .bind(sub)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Up to `limit` revocations due now, oldest first.
    pub async fn due_revocations(&self, limit: i64) -> Result<Vec<PendingRevocation>, StoreError> {
        let (now, _) = self.now();
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, PendingRevocation>(
                "SELECT tenant_id, sub, attempts FROM pending_revocations WHERE next_attempt_at <= $1 \
                 ORDER BY next_attempt_at LIMIT $2",
            )
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The revocation was made (or Cronofy no longer knows the grant).
    pub async fn finish_revocation(&self, tenant: &str, sub: &str) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query("DELETE FROM pending_revocations WHERE tenant_id = $1 AND sub = $2")
                .bind(tenant)
                .bind(sub)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Another attempt failed: try again in `after_seconds`.
    pub async fn postpone_revocation(&self, tenant: &str, sub: &str, after_seconds: i64) -> Result<(), StoreError> {
        let (now, _) = self.now();
        with_pool!(self, pool => {
            sqlx::query(
                "UPDATE pending_revocations SET attempts = attempts + 1, next_attempt_at = $1 \
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

    /// The subs of the tenant's revocations still to be made.
    pub async fn revocations_of(&self, tenant: &str) -> Result<Vec<String>, StoreError> {
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar::<_, String>("SELECT sub FROM pending_revocations WHERE tenant_id = $1 ORDER BY sub")
                .bind(tenant)
                .fetch_all(pool)
                .await?
        }))
    }

    /// Whether the revocation of (tenant, sub) still waits (a new consent drops it).
    pub async fn revocation_pending(&self, tenant: &str, sub: &str) -> Result<bool, StoreError> {
        let count: i64 = with_pool!(self, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM pending_revocations WHERE tenant_id = $1 AND sub = $2")
                .bind(tenant)
                .bind(sub)
                .fetch_one(pool)
                .await?
        });
        Ok(count > 0)
    }

    /// How many revocations wait (for metrics and tests).
    pub async fn count_pending_revocations(&self) -> Result<i64, StoreError> {
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM pending_revocations")
                .fetch_one(pool)
                .await?
        }))
    }
}
