//! Refresh marks: a refresh is marked in flight (committed outside its
//! lease) before the token call, so that a refresh a killed replica left
//! behind can be told from a refresh token Cronofy simply refused.

use super::{Store, StoreError, with_pool};

impl Store {
    /// Records, committed at once (outside any lease), that refresh `attempt`
    /// of this grant is about to reach Cronofy: if this replica dies before
    /// the answer, the mark stays for the next refresh to find.
    pub async fn mark_refresh_started(&self, tenant: &str, sub: &str, attempt: &str) -> Result<(), StoreError> {
        let (now, _) = self.now();
        with_pool!(self, pool => {
            sqlx::query("INSERT INTO refresh_marks (tenant_id, sub, attempt, started_at) VALUES ($1, $2, $3, $4)")
                .bind(tenant)
                .bind(sub)
                .bind(attempt)
                .bind(now)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Removes refresh marks of this grant: `attempt`'s alone (its answer
    /// came and changed nothing), or every one (None: the grant's refresh
    /// token is known again, or it needs the user anyway).
    pub async fn clear_refresh_marks(&self, tenant: &str, sub: &str, attempt: Option<&str>) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM refresh_marks WHERE tenant_id = $1 AND sub = $2 AND ($3 IS NULL OR attempt = $3)",
            )
            .bind(tenant)
            .bind(sub)
            .bind(attempt)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Records that a refresh of this grant may have rotated its refresh
    /// token without calgate hearing the answer (kept until a refresh succeeds).
    pub async fn mark_refresh_unsure(&self, tenant: &str, sub: &str) -> Result<(), StoreError> {
        let (now, _) = self.now();
        with_pool!(self, pool => {
            sqlx::query(
                "UPDATE grants SET refresh_unsure_since = COALESCE(refresh_unsure_since, $1) \
                 WHERE tenant_id = $2 AND sub = $3",
            )
            .bind(now)
            .bind(tenant)
            .bind(sub)
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}
