//! The change stream's table (see migration 0006): changes are recorded in
//! the transaction of the state change they describe, numbered per tenant
//! without gaps, read in order, and removed after the retention.
//!
//! [`ChangeFeed`] tells watchers on this replica that a tenant's stream grew:
//! at once for changes this replica recorded, and within one poll of
//! `change_sequences` for changes other replicas recorded.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio::sync::watch;

use super::{BeginWrite, Store, StoreError, with_pool};
use crate::domain::{
    changes::{Change, ChangeKind, Cursor, EventChange, EventChangeKind, GrantChange, GrantChangeReason, SeenTime},
    grant::GrantStatus,
    profile::Profile,
    write_queue::{WriteFailure, WriteSettled, WriteState},
};

/// Takes the tenant's next change number ($1 tenant), locking its sequence row
/// until the transaction ends.
pub(super) const NEXT_SEQ: &str = "INSERT INTO change_sequences (tenant_id, last_seq, pruned_through) \
     VALUES ($1, 1, 0) ON CONFLICT (tenant_id) DO UPDATE SET last_seq = change_sequences.last_seq + 1 \
     RETURNING last_seq";

/// ($1 tenant, $2 seq, $3 sub, $4 recorded_at ms, $5 payload); the user_ref is
/// the one bound to the grant most recently.
pub(super) const INSERT_CHANGE: &str = "INSERT INTO changes (tenant_id, seq, sub, user_ref, recorded_at, payload) \
     VALUES ($1, $2, $3, COALESCE((SELECT u.user_ref FROM user_refs u WHERE u.tenant_id = $1 AND u.sub = $3 \
     ORDER BY u.bound_at DESC, u.user_ref DESC LIMIT 1), ''), $4, $5)";

/// A change as stored in `changes.payload`. Tagged, so kinds can be added.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Payload {
    Grant {
        status: String,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relink_url: Option<String>,
        /// Unix seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        events_missed_since: Option<i64>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        profiles: Vec<Profile>,
    },
    Event {
        calendar_id: String,
        event_id: String,
        /// `deleted` or `updated`.
        change: String,
        /// Cronofy's form: an RFC 3339 instant or a date.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end: Option<String>,
        summary: String,
    },
    Write {
        write_id: String,
        /// `delivered`, `failed` or `superseded`.
        state: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<WriteFailure>,
        calendar_id: String,
        event_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        superseded_by: Option<String>,
    },
}

/// The stored form of a queued write's settlement.
pub(super) fn write_payload(settled: &WriteSettled) -> String {
    let payload = Payload::Write {
        write_id: settled.write_id.clone(),
        state: settled.state.as_str().to_owned(),
        error: settled.error.clone(),
        calendar_id: settled.calendar_id.clone(),
        event_id: settled.event_id.clone(),
        superseded_by: settled.superseded_by.clone(),
    };
    serde_json::to_string(&payload).expect("a payload of strings always serializes")
}

/// The stored form of an event change.
pub(super) fn event_payload(change: &EventChange) -> String {
    let text = |time: &Option<SeenTime>| {
        time.map(|time| match time {
            SeenTime::Time(at) => at.format(&Rfc3339).unwrap_or_default(),
            SeenTime::Date(date) => date.to_string(),
        })
    };
    let payload = Payload::Event {
        calendar_id: change.calendar_id.clone(),
        event_id: change.event_id.clone(),
        change: match change.kind {
            EventChangeKind::Deleted => "deleted",
            EventChangeKind::Updated => "updated",
        }
        .to_owned(),
        start: text(&change.start),
        end: text(&change.end),
        summary: change.summary.clone(),
    };
    serde_json::to_string(&payload).expect("a payload of strings always serializes")
}

/// The stored form of a grant change.
pub(super) fn grant_payload(change: &GrantChange) -> String {
    let payload = Payload::Grant {
        status: change.status.as_str().to_owned(),
        reason: change.reason.as_str().to_owned(),
        relink_url: change.relink_url.clone(),
        events_missed_since: change.events_missed_since,
        profiles: change.profiles.clone(),
    };
    serde_json::to_string(&payload).expect("a payload of strings always serializes")
}

fn decode_payload(text: &str) -> Result<ChangeKind, StoreError> {
    let corrupt = || StoreError::Corrupt("change payload".to_owned());
    match serde_json::from_str::<Payload>(text).map_err(|_| corrupt())? {
        Payload::Grant {
            status,
            reason,
            relink_url,
            events_missed_since,
            profiles,
        } => Ok(ChangeKind::Grant(GrantChange {
            status: GrantStatus::parse(&status).ok_or_else(corrupt)?,
            reason: GrantChangeReason::parse(&reason).ok_or_else(corrupt)?,
            relink_url,
            events_missed_since,
            profiles,
        })),
        Payload::Write {
            write_id,
            state,
            error,
            calendar_id,
            event_id,
            superseded_by,
        } => Ok(ChangeKind::Write(WriteSettled {
            write_id,
            state: WriteState::parse(&state).ok_or_else(corrupt)?,
            error,
            calendar_id,
            event_id,
            superseded_by,
        })),
        Payload::Event {
            calendar_id,
            event_id,
            change,
            start,
            end,
            summary,
        } => {
            let time = |text: Option<String>| match text {
                Some(text) => SeenTime::parse(&text).map(Some).ok_or_else(corrupt),
                None => Ok(None),
            };
            Ok(ChangeKind::Event(EventChange {
                calendar_id,
                event_id,
                kind: match change.as_str() {
                    "deleted" => EventChangeKind::Deleted,
                    "updated" => EventChangeKind::Updated,
                    _ => return Err(corrupt()),
                },
                start: time(start)?,
                end: time(end)?,
                summary,
            }))
        }
    }
}

/// Where a tenant's stream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamPosition {
    /// The number of the last change recorded (0: none yet).
    pub last: i64,
    /// Changes up to this number were removed by retention.
    pub pruned_through: i64,
}

/// Changes after a cursor, and where the stream stood when they were read.
#[derive(Debug)]
pub struct ChangePage {
    /// In order, at most the limit asked for.
    pub changes: Vec<Change>,
    /// Read after the changes: a cursor below `pruned_through` missed some.
    pub position: StreamPosition,
}

#[derive(sqlx::FromRow)]
struct ChangeRow {
    seq: i64,
    sub: String,
    user_ref: String,
    recorded_at: i64,
    payload: String,
}

/// Wakes this replica's watchers when a tenant's stream grows.
#[derive(Debug, Default)]
pub struct ChangeFeed {
    /// The last change number known per tenant. Entries exist for tenants with
    /// watchers or recorded changes: bounded by the tenants configured and stored.
    last: Mutex<HashMap<String, watch::Sender<i64>>>,
}

impl ChangeFeed {
    /// Records that the tenant's stream reached `seq` (never moves back).
    pub fn advance(&self, tenant: &str, seq: i64) {
        let mut last = self.last.lock().expect("feed lock is never poisoned");
        let sender = last.entry(tenant.to_owned()).or_insert_with(|| watch::channel(0).0);
        sender.send_if_modified(|known| {
            let grew = seq > *known;
            if grew {
                *known = seq;
            }
            grew
        });
    }

    /// The tenant's last known change number, updated as the stream grows.
    pub fn subscribe(&self, tenant: &str) -> watch::Receiver<i64> {
        let mut last = self.last.lock().expect("feed lock is never poisoned");
        last.entry(tenant.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }
}

impl Store {
    /// This replica's change feed.
    pub fn change_feed(&self) -> &Arc<ChangeFeed> {
        &self.feed
    }

    /// Where the tenant's stream stands.
    pub async fn stream_position(&self, tenant: &str) -> Result<StreamPosition, StoreError> {
        let row: Option<(i64, i64)> = with_pool!(self, pool => {
            sqlx::query_as("SELECT last_seq, pruned_through FROM change_sequences WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_optional(pool)
                .await?
        });
        Ok(
            row.map_or_else(StreamPosition::default, |(last, pruned_through)| StreamPosition {
                last,
                pruned_through,
            }),
        )
    }

    /// Up to `limit` of the tenant's changes after `after`, in order.
    pub async fn changes_after(&self, tenant: &str, after: Cursor, limit: i64) -> Result<ChangePage, StoreError> {
        let rows: Vec<ChangeRow> = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT seq, sub, user_ref, recorded_at, payload FROM changes \
                 WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .bind(tenant)
            .bind(after.0)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        let position = self.stream_position(tenant).await?;
        let changes = rows
            .into_iter()
            .map(|row| {
                Ok(Change {
                    cursor: Cursor(row.seq),
                    recorded_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(row.recorded_at) * 1_000_000)
                        .map_err(|_| StoreError::Corrupt("change recorded_at".to_owned()))?,
                    sub: row.sub,
                    user_ref: Some(row.user_ref).filter(|user_ref| !user_ref.is_empty()),
                    kind: decode_payload(&row.payload)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(ChangePage { changes, position })
    }

    /// Reads every tenant's last change number and wakes this replica's
    /// watchers of tenants whose stream grew (changes other replicas recorded).
    pub async fn poll_change_feed(&self) -> Result<(), StoreError> {
        let rows: Vec<(String, i64)> = with_pool!(self, pool => {
            sqlx::query_as("SELECT tenant_id, last_seq FROM change_sequences")
                .fetch_all(pool)
                .await?
        });
        for (tenant, last) in rows {
            self.feed.advance(&tenant, last);
        }
        Ok(())
    }

    /// Removes changes recorded before `before` (unix milliseconds), tenant by
    /// tenant, raising each tenant's `pruned_through`. Returns how many went.
    pub async fn prune_changes(&self, before_ms: i64) -> Result<u64, StoreError> {
        let due: Vec<(String, i64)> = with_pool!(self, pool => {
            sqlx::query_as("SELECT tenant_id, MAX(seq) FROM changes WHERE recorded_at < $1 GROUP BY tenant_id")
                .bind(before_ms)
                .fetch_all(pool)
                .await?
        });
        let mut removed = 0;
        for (tenant, through) in due {
            removed += with_pool!(self, pool => {
                let mut tx = pool.begin_write().await?;
                // pruned_through first: a reader that sees the rows gone also sees why.
                sqlx::query(
                    "UPDATE change_sequences SET pruned_through = $2 WHERE tenant_id = $1 AND pruned_through < $2",
                )
                .bind(&tenant)
                .bind(through)
                .execute(&mut *tx)
                .await?;
                let deleted = sqlx::query("DELETE FROM changes WHERE tenant_id = $1 AND seq <= $2")
                    .bind(&tenant)
                    .bind(through)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                deleted
            });
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_keep_no_surprises() {
        let change = GrantChange {
            status: GrantStatus::NeedsReauth,
            reason: GrantChangeReason::RefreshRejected,
            relink_url: None,
            events_missed_since: None,
            profiles: Vec::new(),
        };
        let text = grant_payload(&change);
        assert_eq!(
            text,
            r#"{"type":"grant","status":"needs_reauth","reason":"REFRESH_REJECTED"}"#
        );
        assert_eq!(decode_payload(&text).expect("decodes"), ChangeKind::Grant(change));
        assert!(decode_payload(r#"{"type":"grant","status":"lost","reason":"CONNECTED"}"#).is_err());
        assert!(decode_payload(r#"{"type":"future"}"#).is_err());
    }

    #[tokio::test]
    async fn the_feed_only_moves_forward_and_wakes_watchers() {
        let feed = ChangeFeed::default();
        let mut watcher = feed.subscribe("acme");
        feed.advance("acme", 3);
        assert!(watcher.has_changed().expect("sender alive"));
        assert_eq!(*watcher.borrow_and_update(), 3);
        feed.advance("acme", 2);
        assert!(!watcher.has_changed().expect("sender alive"));
        feed.advance("globex", 9);
        assert_eq!(*watcher.borrow(), 3);
        assert_eq!(*feed.subscribe("globex").borrow(), 9);
    }
}
