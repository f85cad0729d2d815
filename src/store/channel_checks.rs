//! Checking open channels against Cronofy's list (see migration 0014/0015):
//! which are due, one replica's claim on each, and what a check found.

use super::{Store, StoreError, with_pool};

/// An open channel whose check against Cronofy's list is due.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ChannelToCheck {
    /// Tenant id.
    pub tenant_id: String,
    /// The grant's sub.
    pub sub: String,
    /// Cronofy's channel id.
    pub channel_id: String,
    /// When the check was due (the claim compares it).
    pub channel_check_at: i64,
}

impl Store {
    /// Up to `limit` open channels whose check is due now, longest due first.
    pub async fn channels_to_check(&self, limit: i64) -> Result<Vec<ChannelToCheck>, StoreError> {
        let (now, _) = self.now();
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, ChannelToCheck>(
                "SELECT tenant_id, sub, channel_id, channel_check_at FROM grants \
                 WHERE channel_state = 'open' AND channel_check_at <= $1 AND channel_id IS NOT NULL \
                 ORDER BY channel_check_at LIMIT $2",
            )
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Claims a due check (compare-and-swap on its due time) and makes the
    /// next one due in `next_seconds`, so one replica checks it and a replica
    /// dying mid-check only delays it. False when another replica took it.
    pub async fn claim_channel_check(&self, due: &ChannelToCheck, next_seconds: i64) -> Result<bool, StoreError> {
        let (now, _) = self.now();
        let updated = with_pool!(self, pool => {
            sqlx::query(
                "UPDATE grants SET channel_check_at = $1 WHERE tenant_id = $2 AND sub = $3 \
                 AND channel_state = 'open' AND channel_id = $4 AND channel_check_at = $5",
            )
            .bind(now.saturating_add(next_seconds))
            .bind(&due.tenant_id)
            .bind(&due.sub)
            .bind(&due.channel_id)
            .bind(due.channel_check_at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }

    /// Cronofy listed the channel: it was open now.
    pub async fn channel_seen(&self, due: &ChannelToCheck) -> Result<(), StoreError> {
        let (now, _) = self.now();
        with_pool!(self, pool => {
            sqlx::query(
                "UPDATE grants SET channel_seen_at = $1 WHERE tenant_id = $2 AND sub = $3 \
                 AND channel_state = 'open' AND channel_id = $4",
            )
            .bind(now)
            .bind(&due.tenant_id)
            .bind(&due.sub)
            .bind(&due.channel_id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The check could not be made (Cronofy failing, budget spent): try
    /// again in `after_seconds` rather than a whole interval later.
    pub async fn channel_check_failed(&self, due: &ChannelToCheck, after_seconds: i64) -> Result<(), StoreError> {
        let (now, _) = self.now();
        with_pool!(self, pool => {
            sqlx::query(
                "UPDATE grants SET channel_check_at = $1 WHERE tenant_id = $2 AND sub = $3 \
                 AND channel_state = 'open' AND channel_id = $4",
            )
            .bind(now.saturating_add(after_seconds))
            .bind(&due.tenant_id)
            .bind(&due.sub)
            .bind(&due.channel_id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Cronofy's list no longer has the channel: it is due to be opened
    /// again at once, and the gap begins at the last time it was known open
    /// (kept from an earlier gap not yet closed). False when the grant moved
    /// on meanwhile (revoked, reconnected, already reopened).
    pub async fn channel_missing(&self, due: &ChannelToCheck) -> Result<bool, StoreError> {
        let (now, _) = self.now();
        let updated = with_pool!(self, pool => {
            sqlx::query(
                "UPDATE grants SET channel_state = 'pending', channel_id = NULL, channel_due_at = $1, \
                 channel_attempts = 0, channel_check_at = NULL, \
                 channel_error = 'Cronofy closed the channel without notice; reopening it', \
                 channel_gap_since = COALESCE(channel_gap_since, channel_seen_at, $1) \
                 WHERE tenant_id = $2 AND sub = $3 AND channel_state = 'open' AND channel_id = $4",
            )
            .bind(now)
            .bind(&due.tenant_id)
            .bind(&due.sub)
            .bind(&due.channel_id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }
}
