//! Push notification channels on grants, and the grant state notifications
//! change: event tracking and profile connection (see migration 0007).

use rand::Rng;

use super::{
    BeginWrite, Store, StoreError,
    changes::grant_payload,
    in_transaction::{GrantAudit, InTransaction, QueuedRead},
    notifications::notification_id,
    with_pool,
};
use crate::domain::{
    audit::{Actor, AuditKind},
    changes::{GrantChange, GrantChangeReason},
    grant::GrantStatus,
    profile::{ProfileKind, Profiles, ProfilesChange},
};

/// The kind of the queued read of an account's profiles calgate makes when a
/// channel opens (its own, in the namespace of Cronofy's `profile_…` types).
pub const PROFILE_READ: &str = "profile_read_by_calgate";

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
    /// changed since the gap began, in the same transaction. Every opening
    /// queues a read of the account's profiles.
    pub async fn channel_opened(
        &self,
        tenant: &str,
        sub: &str,
        opened: OpenedChannel<'_>,
        check_seconds: i64,
    ) -> Result<bool, StoreError> {
        let (now, now_ms) = self.now();
        let resumed = with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
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
            // What the account's profiles are is read once the channel is open
            // (and again on each profile notification).
            let id = notification_id(opened.channel_key, format!("profiles of {}", opened.channel_id).as_bytes());
            let read = QueuedRead { id: &id, kind: PROFILE_READ, changes_since: None };
            tx.queue_read(tenant, sub, read, now_ms).await?;
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

    /// Records what UserInfo says of the grant's profiles. The grant is
    /// PROFILE_DISCONNECTED while every calendar profile is disconnected
    /// (relink_url: the first one's), ACTIVE otherwise; writes to a
    /// disconnected profile's calendars are refused either way. A profile
    /// connected or disconnected records a change (and, for a calendar
    /// profile, an audit row), in one transaction. A grant that needs its
    /// user again, or was revoked, is left alone. Returns the change's number,
    /// None when no profile's state changed.
    pub async fn set_profiles(&self, tenant: &str, sub: &str, profiles: &Profiles) -> Result<Option<i64>, StoreError> {
        let (now, now_ms) = self.now();
        let seq = with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let row: Option<(String, Option<String>)> =
                sqlx::query_as("SELECT status, profiles FROM grants WHERE tenant_id = $1 AND sub = $2")
                    .bind(tenant)
                    .bind(sub)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some((status, stored)) = row else { return Ok(None) };
            let corrupt = |what: &str| StoreError::Corrupt(format!("grant column {what}"));
            let from = GrantStatus::parse(&status).ok_or_else(|| corrupt("status"))?;
            if !matches!(from, GrantStatus::Active | GrantStatus::ProfileDisconnected) {
                return Ok(None);
            }
            let before = Profiles::from_stored(stored.as_deref()).ok_or_else(|| corrupt("profiles"))?;
            let to = if profiles.all_calendars_disconnected() {
                GrantStatus::ProfileDisconnected
            } else {
                GrantStatus::Active
            };
            let relink_url = profiles.disconnected_calendars().find_map(|p| p.relink_url.clone());
            let status_changed = to != from;
            sqlx::query(
                "UPDATE grants SET status = $1, relink_url = $2, profiles = $3, updated_at = $4, \
                 version = version + $5 WHERE tenant_id = $6 AND sub = $7",
            )
            .bind(to.as_str())
            .bind(relink_url.as_deref().filter(|_| to == GrantStatus::ProfileDisconnected))
            .bind(profiles.to_stored())
            .bind(now)
            .bind(i64::from(status_changed))
            .bind(tenant)
            .bind(sub)
            .execute(&mut *tx)
            .await?;
            let seq = match profiles.change_from(&before) {
                None => None,
                Some(change) => Some(record_profiles_change(&mut tx, self, tenant, sub, (to, change), profiles, now_ms).await?),
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

/// Records the change (and, for a calendar profile, the audit row) of the
/// grant's profiles changing as `change` says, the grant now `status`.
async fn record_profiles_change<T: InTransaction>(
    tx: &mut T,
    store: &Store,
    tenant: &str,
    sub: &str,
    (status, change): (GrantStatus, ProfilesChange),
    profiles: &Profiles,
    now_ms: i64,
) -> Result<i64, sqlx::Error> {
    let (reason, audit) = match change {
        ProfilesChange::Disconnected => (
            GrantChangeReason::ProfileDisconnected,
            Some(AuditKind::ProfileDisconnected),
        ),
        ProfilesChange::Reconnected => (
            GrantChangeReason::ProfileReconnected,
            Some(AuditKind::ProfileReconnected),
        ),
        ProfilesChange::ConferencingDisconnected => (GrantChangeReason::ConferencingProfileDisconnected, None),
        ProfilesChange::ConferencingReconnected => (GrantChangeReason::ConferencingProfileReconnected, None),
    };
    let relink_url = match change {
        ProfilesChange::Disconnected => profiles.disconnected_calendars().find_map(|p| p.relink_url.clone()),
        ProfilesChange::ConferencingDisconnected => profiles
            .0
            .iter()
            .find(|p| p.kind == ProfileKind::Conferencing && !p.connected)
            .and_then(|p| p.relink_url.clone()),
        _ => None,
    };
    let payload = grant_payload(&GrantChange {
        status,
        reason,
        relink_url,
        events_missed_since: None,
        profiles: profiles.0.clone(),
    });
    match audit {
        Some(kind) => {
            let cronofy = Actor::cronofy();
            let audit = GrantAudit {
                kind,
                actor: &cronofy,
                detail: String::new(),
                now_ms,
            };
            tx.record_grant_change(store, tenant, sub, audit, &payload).await
        }
        None => tx.record_change(tenant, sub, &payload, now_ms).await,
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
