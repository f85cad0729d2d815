//! Push notification channels on grants, and the grant state notifications
//! change: event tracking and profile connection (see migration 0007).

use rand::Rng;

use super::{
    Store, StoreError,
    changes::grant_payload,
    in_transaction::{GrantAudit, InTransaction},
    with_pool,
};
use crate::domain::{
    audit::{Actor, AuditKind},
    changes::{GrantChange, GrantChangeReason},
    grant::GrantStatus,
};

/// Length of a channel key: `n` and 32 hex digits (128 random bits).
const CHANNEL_KEY_LEN: usize = 33;

/// A fresh, unguessable channel key.
pub(super) fn new_channel_key() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("n{hex}")
}

/// Whether `key` has the shape of a channel key (checked before the store is asked).
pub fn is_channel_key(key: &str) -> bool {
    key.len() == CHANNEL_KEY_LEN
        && key.starts_with('n')
        && key[1..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A grant whose channel is due to be created.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DueChannel {
    /// Tenant id.
    pub tenant_id: String,
    /// The grant's sub.
    pub sub: String,
    /// The key its callback URL names.
    pub channel_key: String,
    /// When it was due (the claim compares it).
    pub channel_due_at: i64,
    /// Failed attempts so far.
    pub channel_attempts: i64,
}

/// A channel Cronofy just created.
#[derive(Debug, Clone, Copy)]
pub struct OpenedChannel<'a> {
    /// The key its callback URL names.
    pub channel_key: &'a str,
    /// Cronofy's channel id.
    pub channel_id: &'a str,
    /// Whether Cronofy lets calgate read the grant's own events.
    pub events_readable: bool,
}

/// The grant a channel key names.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ChannelOwner {
    /// Tenant id.
    pub tenant_id: String,
    /// The grant's sub.
    pub sub: String,
    /// Cronofy's channel id, once open.
    pub channel_id: Option<String>,
}

impl Store {
    /// Up to `limit` channels due to be created now.
    pub async fn due_channels(&self, limit: i64) -> Result<Vec<DueChannel>, StoreError> {
        let (now, _) = self.now();
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, DueChannel>(
                "SELECT tenant_id, sub, channel_key, channel_due_at, channel_attempts FROM grants \
                 WHERE channel_state = 'pending' AND channel_due_at <= $1 AND channel_key IS NOT NULL \
                 ORDER BY channel_due_at LIMIT $2",
            )
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Claims a due channel for `hold_seconds` (compare-and-swap on its due
    /// time), so that one replica creates it. False when another did.
    pub async fn claim_channel(&self, due: &DueChannel, hold_seconds: i64) -> Result<bool, StoreError> {
        let (now, _) = self.now();
        let updated = with_pool!(self, pool => {
            sqlx::query(
                "UPDATE grants SET channel_due_at = $1 WHERE tenant_id = $2 AND sub = $3 \
                 AND channel_state = 'pending' AND channel_due_at = $4",
            )
            .bind(now.saturating_add(hold_seconds))
            .bind(&due.tenant_id)
            .bind(&due.sub)
            .bind(due.channel_due_at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }

    /// Cronofy created the channel; its first check against Cronofy's list is
    /// due in `check_seconds`. False when the grant moved on meanwhile
    /// (revoked, or reconnected with another key): the caller closes it again.
    /// A channel reopened after Cronofy closed one ([`Store::channel_missing`])
    /// records the `TRACKING_RESUMED` change and queues a read of the events
    /// changed since the gap began, in the same transaction.
    pub async fn channel_opened(
        &self,
        tenant: &str,
        sub: &str,
        opened: OpenedChannel<'_>,
        check_seconds: i64,
    ) -> Result<bool, StoreError> {
        let (now, now_ms) = self.now();
        let resumed = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let gap: Option<Option<i64>> = sqlx::query_scalar(
                "SELECT channel_gap_since FROM grants \
                 WHERE tenant_id = $1 AND sub = $2 AND channel_key = $3 AND channel_state = 'pending'",
            )
            .bind(tenant)
            .bind(sub)
            .bind(opened.channel_key)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(gap) = gap else {
                return Ok(false);
            };
            sqlx::query(
                "UPDATE grants SET channel_state = 'open', channel_id = $1, channel_error = NULL, \
                 channel_due_at = NULL, event_tracking = $2, channel_check_at = $3, channel_seen_at = $4, \
                 channel_gap_since = NULL WHERE tenant_id = $5 AND sub = $6",
            )
            .bind(opened.channel_id)
            .bind(if opened.events_readable { "on" } else { "off" })
            .bind(now.saturating_add(check_seconds))
            .bind(now)
            .bind(tenant)
            .bind(sub)
            .execute(&mut *tx)
            .await?;
            let resumed = match gap {
                Some(since) => Some(tx.tracking_resumed(tenant, sub, opened.channel_key, since, now_ms).await?),
                None => None,
            };
            tx.commit().await?;
            resumed
        });
        if let Some(seq) = resumed {
            self.feed.advance(tenant, seq);
        }
        Ok(true)
    }

    /// Creating the channel failed: try again in `after_seconds`.
    pub async fn channel_failed(
        &self,
        tenant: &str,
        sub: &str,
        error: &str,
        after_seconds: i64,
    ) -> Result<(), StoreError> {
        let (now, _) = self.now();
        with_pool!(self, pool => {
            sqlx::query(
                "UPDATE grants SET channel_attempts = channel_attempts + 1, channel_due_at = $1, \
                 channel_error = $2 WHERE tenant_id = $3 AND sub = $4 AND channel_state = 'pending'",
            )
            .bind(now.saturating_add(after_seconds))
            .bind(error)
            .bind(tenant)
            .bind(sub)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The grant has no channel any more (revoked; a gap in its tracking no
    /// longer matters); returns the one it had.
    pub async fn forget_channel(&self, tenant: &str, sub: &str) -> Result<Option<String>, StoreError> {
        let channel_id: Option<Option<String>> = with_pool!(self, pool => {
            sqlx::query_scalar(
                "UPDATE grants SET channel_state = 'none', channel_due_at = NULL, channel_error = NULL, \
                 channel_check_at = NULL, channel_gap_since = NULL \
                 WHERE tenant_id = $1 AND sub = $2 RETURNING channel_id",
            )
            .bind(tenant)
            .bind(sub)
            .fetch_optional(pool)
            .await?
        });
        Ok(channel_id.flatten())
    }

    /// The grant a channel key belongs to, among `tenants`' grants.
    pub async fn channel_owner(&self, channel_key: &str) -> Result<Option<ChannelOwner>, StoreError> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, ChannelOwner>(
                "SELECT tenant_id, sub, channel_id FROM grants WHERE channel_key = $1",
            )
            .bind(channel_key)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// Cronofy refused to read the grant's events: event tracking is off.
    pub async fn event_tracking_off(&self, tenant: &str, sub: &str) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query("UPDATE grants SET event_tracking = 'off' WHERE tenant_id = $1 AND sub = $2")
                .bind(tenant)
                .bind(sub)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Records what UserInfo says of the grant's profiles: an active grant
    /// whose profile is disconnected becomes PROFILE_DISCONNECTED (with the
    /// relink URL), a disconnected one whose profiles are connected again
    /// becomes ACTIVE; each with its change, in one transaction. Returns the
    /// change's number, None when nothing changed.
    pub async fn set_profile_connected(
        &self,
        tenant: &str,
        sub: &str,
        connected: bool,
        relink_url: Option<&str>,
    ) -> Result<Option<i64>, StoreError> {
        let (now, now_ms) = self.now();
        let (from, to, reason) = if connected {
            (
                GrantStatus::ProfileDisconnected,
                GrantStatus::Active,
                GrantChangeReason::ProfileReconnected,
            )
        } else {
            (
                GrantStatus::Active,
                GrantStatus::ProfileDisconnected,
                GrantChangeReason::ProfileDisconnected,
            )
        };
        let relink_url = relink_url.filter(|_| !connected);
        let change = grant_payload(&GrantChange {
            status: to,
            reason,
            relink_url: relink_url.map(str::to_owned),
            events_missed_since: None,
        });
        let kind = if connected {
            AuditKind::ProfileReconnected
        } else {
            AuditKind::ProfileDisconnected
        };
        let seq = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE grants SET status = $1, relink_url = $2, version = version + 1, updated_at = $3 \
                 WHERE tenant_id = $4 AND sub = $5 AND status = $6",
            )
            .bind(to.as_str())
            .bind(relink_url)
            .bind(now)
            .bind(tenant)
            .bind(sub)
            .bind(from.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let seq = if updated == 1 {
                let cronofy = Actor::cronofy();
                let audit = GrantAudit { kind, actor: &cronofy, detail: String::new(), now_ms };
                Some(tx.record_grant_change(self, tenant, sub, audit, &change).await?)
            } else {
                None
            };
            tx.commit().await?;
            seq
        });
        if let Some(seq) = seq {
            self.feed.advance(tenant, seq);
        }
        Ok(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_keys_are_random_and_recognised() {
        let (a, b) = (new_channel_key(), new_channel_key());
        assert_ne!(a, b);
        assert!(is_channel_key(&a) && is_channel_key(&b));
        for bad in [
            "",
            "n",
            &a[..32],
            &format!("{a}0"),
            &a.replace('n', "x"),
            &a.to_uppercase(),
        ] {
            assert!(!is_channel_key(bad), "{bad:?}");
        }
    }
}
