//! What the background refresher needs of the store (migration 0009): when
//! grants were last used, which are due, and a claim per grant so that one
//! replica refreshes it.

use super::{BeginWrite, Store, StoreError, with_pool};

/// A grant the background refresher may refresh.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RefreshCandidate {
    /// Tenant id.
    pub tenant_id: String,
    /// The grant's sub.
    pub sub: String,
    /// When its access token expires, unix seconds.
    pub access_expires_at: i64,
}

impl Store {
    /// Records that calls used these grants at `now` (unix seconds).
    pub async fn mark_used(&self, now: i64, grants: &[(String, String)]) -> Result<(), StoreError> {
        if grants.is_empty() {
            return Ok(());
        }
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for (tenant, sub) in grants {
                sqlx::query(
                    "UPDATE grants SET last_used_at = $1 WHERE tenant_id = $2 AND sub = $3 \
                     AND (last_used_at IS NULL OR last_used_at < $1)",
                )
                .bind(now)
                .bind(tenant)
                .bind(sub)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Up to `limit` grants with tokens, used since `used_since`, whose access
    /// token expires by `expires_by` and that no replica has claimed at `now`,
    /// soonest expiry first (all unix seconds).
    pub async fn refresh_candidates(
        &self,
        used_since: i64,
        expires_by: i64,
        now: i64,
        limit: i64,
    ) -> Result<Vec<RefreshCandidate>, StoreError> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, RefreshCandidate>(
                "SELECT tenant_id, sub, access_expires_at FROM grants \
                 WHERE status IN ('active', 'profile_disconnected') AND refresh_token IS NOT NULL \
                 AND last_used_at >= $1 AND access_expires_at <= $2 \
                 AND (refresh_claimed_until IS NULL OR refresh_claimed_until <= $3) \
                 ORDER BY access_expires_at LIMIT $4",
            )
            .bind(used_since)
            .bind(expires_by)
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Claims the grant's background refresh until `until` if no replica holds
    /// a claim at `now`; true for exactly one claimant.
    pub async fn claim_refresh(&self, tenant: &str, sub: &str, now: i64, until: i64) -> Result<bool, StoreError> {
        let claimed = with_pool!(self, pool => {
            sqlx::query(
                "UPDATE grants SET refresh_claimed_until = $1 WHERE tenant_id = $2 AND sub = $3 \
                 AND (refresh_claimed_until IS NULL OR refresh_claimed_until <= $4)",
            )
            .bind(until)
            .bind(tenant)
            .bind(sub)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(claimed == 1)
    }

    /// Gives a claim back (the refresh did not happen: no budget).
    pub async fn release_refresh_claim(&self, tenant: &str, sub: &str) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query("UPDATE grants SET refresh_claimed_until = NULL WHERE tenant_id = $1 AND sub = $2")
                .bind(tenant)
                .bind(sub)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
