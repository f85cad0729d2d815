//! Redeemed OAuth state nonces: single use, across every replica.

use time::OffsetDateTime;

use super::{Store, StoreError, with_pool};

impl Store {
    /// Records a state nonce as redeemed. False when it already was.
    pub async fn claim_state_nonce(
        &self,
        tenant: &str,
        nonce: &str,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (now, _) = self.now();
        let inserted = with_pool!(self, pool => {
            // Expired nonces can never be presented again (the state's own expiry refuses them).
            sqlx::query("DELETE FROM redeemed_states WHERE expires_at < $1").bind(now).execute(pool).await?;
            sqlx::query(
                "INSERT INTO redeemed_states (nonce, tenant_id, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(nonce)
            .bind(tenant)
            .bind(expires_at.unix_timestamp())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(inserted == 1)
    }

    /// Releases a claimed nonce after a failure that left the code unused, so the caller may retry.
    pub async fn release_state_nonce(&self, tenant: &str, nonce: &str) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query("DELETE FROM redeemed_states WHERE nonce = $1 AND tenant_id = $2")
                .bind(nonce)
                .bind(tenant)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Records what a redeemed state led to: the grant its code was exchanged
    /// for, and the SHA-256 (hex) of that code.
    pub async fn record_state_outcome(
        &self,
        tenant: &str,
        nonce: &str,
        code_sha256: &str,
        sub: &str,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query(
                "UPDATE redeemed_states SET grant_sub = $1, code_sha256 = $2 WHERE nonce = $3 AND tenant_id = $4",
            )
            .bind(sub)
            .bind(code_sha256)
            .bind(nonce)
            .bind(tenant)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The grant a redeemed state led to, when its code had this SHA-256 (hex).
    pub async fn state_outcome(
        &self,
        tenant: &str,
        nonce: &str,
        code_sha256: &str,
    ) -> Result<Option<String>, StoreError> {
        let sub: Option<Option<String>> = with_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT grant_sub FROM redeemed_states WHERE nonce = $1 AND tenant_id = $2 AND code_sha256 = $3",
            )
            .bind(nonce)
            .bind(tenant)
            .bind(code_sha256)
            .fetch_optional(pool)
            .await?
        });
        Ok(sub.flatten())
    }
}
