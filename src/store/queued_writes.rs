//! Queued writes (see the migration's comment): accepted in one transaction
//! that also supersedes older ones, claimed by one replica at a time — only
//! the oldest of an event's writes — and settled exactly once, in the same
//! transaction as their `WriteSettled` change.

use std::collections::HashMap;

use secrecy::SecretString;

use super::{
    BeginWrite, Store, StoreError,
    changes::write_payload,
    claim_order::{self, ClaimRoom, Due},
    crypto::Binding,
    in_transaction::InTransaction,
    with_pool,
};
use crate::domain::write_queue::{WriteFailure, WriteKind, WriteRecord, WriteSettled, WriteState};

/// What a sealed body is bound to.
const BODY: &str = "queued_write";

/// A write to accept.
#[derive(Debug)]
pub struct NewWrite<'a> {
    /// Its id.
    pub write_id: &'a str,
    /// The tenant.
    pub tenant: &'a str,
    /// The grant.
    pub sub: &'a str,
    /// The user_ref the caller named, if it did.
    pub user_ref: Option<&'a str>,
    /// The event's calendar.
    pub calendar_id: &'a str,
    /// The caller's event id.
    pub event_id: &'a str,
    /// Upsert or delete.
    pub kind: WriteKind,
    /// What delivering it needs (an upsert's event), sealed before it is stored.
    pub body: Option<&'a SecretString>,
}

/// A write one replica claimed for one delivery attempt.
#[derive(Debug)]
pub struct ClaimedWrite {
    /// Its id.
    pub write_id: String,
    /// The tenant.
    pub tenant_id: String,
    /// The grant.
    pub sub: String,
    /// The event's calendar.
    pub calendar_id: String,
    /// The caller's event id.
    pub event_id: String,
    /// Upsert or delete.
    pub kind: WriteKind,
    /// What delivering it needs; None for a delete (or a body no key opens).
    pub body: Option<SecretString>,
    /// Attempts before this one.
    pub attempts: u32,
    /// When it was accepted (Unix milliseconds).
    pub accepted_at: i64,
    /// This claim's token: only it settles the write.
    pub claim: String,
}

#[derive(sqlx::FromRow)]
struct WriteRow {
    write_id: String,
    tenant_id: String,
    sub: String,
    user_ref: Option<String>,
    calendar_id: String,
    event_id: String,
    kind: String,
    key_id: Option<String>,
    body: Option<Vec<u8>>,
    state: String,
    attempts: i64,
    error: Option<String>,
    accepted_at: i64,
    settled_at: Option<i64>,
    superseded_by: Option<String>,
}

const COLUMNS: &str = "write_id, tenant_id, sub, user_ref, calendar_id, event_id, kind, key_id, body, state, \
     attempts, error, accepted_at, settled_at, superseded_by";

/// The oldest QUEUED write of each event that is due and not being
/// delivered: ($1 now ms, $2 limit), with `user` (`AND w.tenant_id = $3
/// AND w.sub = $4`) or without.
fn due(user: &str) -> String {
    format!("{DUE_SELECT} {user} {DUE_REST}")
}

const DUE_SELECT: &str = "SELECT w.write_id, w.tenant_id, w.sub FROM queued_writes w \
     WHERE w.state = 'queued' AND w.next_attempt_at <= $1 AND (w.claimed_until IS NULL OR w.claimed_until < $1)";
const DUE_REST: &str = "AND NOT EXISTS (SELECT 1 FROM queued_writes o WHERE o.tenant_id = w.tenant_id AND o.sub = w.sub \
       AND o.calendar_id = w.calendar_id AND o.event_id = w.event_id AND o.state = 'queued' \
       AND o.write_id <> w.write_id AND ((o.claimed_until IS NOT NULL AND o.claimed_until >= $1) \
       OR o.accepted_at < w.accepted_at OR (o.accepted_at = w.accepted_at AND o.write_id < w.write_id))) \
     ORDER BY w.next_attempt_at, w.accepted_at LIMIT $2";

/// What a queued write's sealed event is bound to: its tenant, and `sub/write_id`.
pub(super) fn body_binding<'a>(tenant: &'a str, bound: &'a str) -> Binding<'a> {
    Binding {
        tenant,
        sub: bound,
        purpose: BODY,
    }
}

impl Store {
    /// Accepts a write: unless the tenant already has `limit` queued, stores
    /// it and supersedes the event's older QUEUED writes no replica is
    /// delivering (each settling SUPERSEDED, with its change), in one
    /// transaction. Returns how many it superseded; None when the queue is full.
    pub async fn enqueue_write(&self, new: &NewWrite<'_>, limit: u32) -> Result<Option<u64>, StoreError> {
        let (_, now_ms) = self.now();
        let bound = format!("{}/{}", new.sub, new.write_id);
        let sealed = new.body.map(|body| {
            (
                self.cipher().current_key_id().to_owned(),
                self.cipher().seal(body, &body_binding(new.tenant, &bound)),
            )
        });
        let (key_id, body) = sealed.unzip();
        let last_seq = with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let queued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM queued_writes WHERE tenant_id = $1 AND state = 'queued'")
                .bind(new.tenant)
                .fetch_one(&mut *tx)
                .await?;
            if queued >= i64::from(limit) {
                return Ok(None);
            }
            let older: Vec<String> = sqlx::query_scalar(
                "SELECT write_id FROM queued_writes WHERE tenant_id = $1 AND sub = $2 AND calendar_id = $3 \
                 AND event_id = $4 AND state = 'queued' AND (claimed_until IS NULL OR claimed_until < $5) ORDER BY write_id",
            )
            .bind(new.tenant)
            .bind(new.sub)
            .bind(new.calendar_id)
            .bind(new.event_id)
            .bind(now_ms)
            .fetch_all(&mut *tx)
            .await?;
            let mut last_seq = None;
            let superseded = older.len() as u64;
            for write_id in older {
                sqlx::query(
                    "UPDATE queued_writes SET state = 'superseded', settled_at = $1, superseded_by = $2, \
                     body = NULL, key_id = NULL WHERE write_id = $3",
                )
                .bind(now_ms)
                .bind(new.write_id)
                .bind(&write_id)
                .execute(&mut *tx)
                .await?;
                let settled = WriteSettled {
                    write_id,
                    state: WriteState::Superseded,
                    error: None,
                    calendar_id: new.calendar_id.to_owned(),
                    event_id: new.event_id.to_owned(),
                    superseded_by: Some(new.write_id.to_owned()),
                };
                last_seq = Some(tx.record_change(new.tenant, new.sub, &write_payload(&settled), now_ms).await?);
            }
            sqlx::query(
                "INSERT INTO queued_writes (write_id, tenant_id, sub, user_ref, calendar_id, event_id, kind, key_id, body, \
                 state, attempts, accepted_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued', 0, $10, $10)",
            )
            .bind(new.write_id)
            .bind(new.tenant)
            .bind(new.sub)
            .bind(new.user_ref)
            .bind(new.calendar_id)
            .bind(new.event_id)
            .bind(new.kind.as_str())
            .bind(key_id)
            .bind(body)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            (last_seq, superseded)
        });
        let (last_seq, superseded) = last_seq;
        if let Some(seq) = last_seq {
            self.feed.advance(new.tenant, seq);
        }
        Ok(Some(superseded))
    }

    /// Claims up to `limit` writes due for one delivery attempt each, for
    /// `claim_ms`: the oldest QUEUED write of each event no replica is
    /// delivering, taken from the tenants in turn, each turn one user's
    /// writes together, within each tenant's `rooms` entry
    /// ([`claim_order::pick`]). Their bodies are opened.
    pub async fn claim_writes(
        &self,
        limit: usize,
        claim_ms: i64,
        rooms: &HashMap<String, ClaimRoom>,
    ) -> Result<Vec<ClaimedWrite>, StoreError> {
        let (_, now_ms) = self.now();
        let claim = hex::encode(rand::random::<[u8; 16]>());
        let candidates: Vec<(String, String, String)> = with_pool!(self, pool => {
            sqlx::query_as(&due(""))
                .bind(now_ms)
                .bind(i64::try_from(limit.saturating_mul(8)).unwrap_or(i64::MAX))
                .fetch_all(pool)
                .await?
        });
        let mut picked = Vec::new();
        let candidates = candidates
            .into_iter()
            .map(|(write_id, tenant, sub)| Due { write_id, tenant, sub })
            .collect();
        let mut chosen = Vec::new();
        for mut user in claim_order::pick(candidates, rooms, limit) {
            // The oldest writes due were mostly other users': look for more of this one's.
            if user.more > 0 {
                let theirs: Vec<(String, String, String)> = with_pool!(self, pool => {
                    sqlx::query_as(&due("AND w.tenant_id = $3 AND w.sub = $4"))
                        .bind(now_ms)
                        .bind(i64::try_from(user.write_ids.len() + user.more).unwrap_or(i64::MAX))
                        .bind(&user.tenant)
                        .bind(&user.sub)
                        .fetch_all(pool)
                        .await?
                });
                let more: Vec<String> = theirs
                    .into_iter()
                    .map(|(write_id, _, _)| write_id)
                    .filter(|write_id| !user.write_ids.contains(write_id))
                    .take(user.more)
                    .collect();
                user.write_ids.extend(more);
            }
            chosen.extend(user.write_ids);
        }
        for write_id in chosen {
            let claimed = with_pool!(self, pool => {
                sqlx::query(
                    "UPDATE queued_writes SET claim = $1, claimed_until = $2 WHERE write_id = $3 \
                     AND state = 'queued' AND (claimed_until IS NULL OR claimed_until < $4)",
                )
                .bind(&claim)
                .bind(now_ms.saturating_add(claim_ms))
                .bind(&write_id)
                .bind(now_ms)
                .execute(pool)
                .await?
                .rows_affected()
            });
            if claimed == 1 {
                picked.push(write_id);
            }
        }
        if picked.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<WriteRow> = with_pool!(self, pool => {
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM queued_writes WHERE claim = $1"))
                .bind(&claim)
                .fetch_all(pool)
                .await?
        });
        let mut claimed = Vec::new();
        for row in rows {
            let bound = format!("{}/{}", row.sub, row.write_id);
            let body = match (&row.key_id, &row.body) {
                (Some(key_id), Some(blob)) => self
                    .cipher()
                    .open(key_id, blob, &body_binding(&row.tenant_id, &bound))
                    .ok(),
                _ => None,
            };
            claimed.push(ClaimedWrite {
                kind: WriteKind::parse(&row.kind).ok_or_else(|| StoreError::Corrupt("queued write kind".into()))?,
                attempts: u32::try_from(row.attempts).unwrap_or(u32::MAX),
                accepted_at: row.accepted_at,
                write_id: row.write_id,
                tenant_id: row.tenant_id,
                sub: row.sub,
                calendar_id: row.calendar_id,
                event_id: row.event_id,
                body,
                claim: claim.clone(),
            });
        }
        // Delivered in the order they were picked (tenants in turn).
        claimed.sort_by_key(|write| picked.iter().position(|id| *id == write.write_id));
        Ok(claimed)
    }

    /// Settles a claimed write for good (delivered or failed) and records its
    /// `WriteSettled` change, in one transaction. False when the claim was
    /// lost (another replica took the write over): nothing is recorded twice.
    pub async fn settle_write(
        &self,
        write: &ClaimedWrite,
        state: WriteState,
        error: Option<&WriteFailure>,
    ) -> Result<bool, StoreError> {
        let (_, now_ms) = self.now();
        let stored_error = error.map(WriteFailure::to_stored);
        let seq = with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let settled = sqlx::query(
                "UPDATE queued_writes SET state = $1, settled_at = $2, error = $3, body = NULL, key_id = NULL, \
                 claim = NULL, claimed_until = NULL, attempts = attempts + 1 \
                 WHERE write_id = $4 AND claim = $5 AND state = 'queued'",
            )
            .bind(state.as_str())
            .bind(now_ms)
            .bind(&stored_error)
            .bind(&write.write_id)
            .bind(&write.claim)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if settled != 1 {
                return Ok(false);
            }
            let change = WriteSettled {
                write_id: write.write_id.clone(),
                state,
                error: error.cloned(),
                calendar_id: write.calendar_id.clone(),
                event_id: write.event_id.clone(),
                superseded_by: None,
            };
            let seq = tx.record_change(&write.tenant_id, &write.sub, &write_payload(&change), now_ms).await?;
            tx.commit().await?;
            seq
        });
        self.feed.advance(&write.tenant_id, seq);
        Ok(true)
    }

    /// A claimed write's attempt failed transiently. If a newer write to the
    /// same event was accepted meanwhile (it could not supersede this one
    /// while it was being delivered), this one settles SUPERSEDED now, with
    /// its change; otherwise it is due again in `after_ms`, keeping `failure`
    /// as its last error. `attempted`: the attempt reached for Cronofy (a
    /// refusal of the budget does not count in `attempts`). Returns the state it is in.
    pub async fn retry_write_later(
        &self,
        write: &ClaimedWrite,
        after_ms: i64,
        failure: &WriteFailure,
        attempted: bool,
    ) -> Result<WriteState, StoreError> {
        let (_, now_ms) = self.now();
        let (state, seq) = with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let newest: Option<String> = sqlx::query_scalar(
                "SELECT write_id FROM queued_writes WHERE tenant_id = $1 AND sub = $2 AND calendar_id = $3 \
                 AND event_id = $4 AND state = 'queued' AND write_id <> $5 \
                 ORDER BY accepted_at DESC, write_id DESC LIMIT 1",
            )
            .bind(&write.tenant_id)
            .bind(&write.sub)
            .bind(&write.calendar_id)
            .bind(&write.event_id)
            .bind(&write.write_id)
            .fetch_optional(&mut *tx)
            .await?;
            let (state, update) = match &newest {
                Some(_) => (
                    WriteState::Superseded,
                    "UPDATE queued_writes SET state = 'superseded', settled_at = $1, superseded_by = $2, attempts = attempts + $6, \
                     error = $3, body = NULL, key_id = NULL, claim = NULL, claimed_until = NULL \
                     WHERE write_id = $4 AND claim = $5 AND state = 'queued'",
                ),
                None => (
                    WriteState::Queued,
                    "UPDATE queued_writes SET next_attempt_at = $1 + $7, superseded_by = $2, attempts = attempts + $6, \
                     error = $3, claim = NULL, claimed_until = NULL WHERE write_id = $4 AND claim = $5 AND state = 'queued'",
                ),
            };
            let mut query = sqlx::query(update)
                .bind(now_ms)
                .bind(&newest)
                .bind(failure.to_stored())
                .bind(&write.write_id)
                .bind(&write.claim)
                .bind(i64::from(attempted));
            if newest.is_none() {
                query = query.bind(after_ms);
            }
            let updated = query.execute(&mut *tx).await?.rows_affected();
            let mut seq = None;
            if updated == 1 && state == WriteState::Superseded {
                let settled = WriteSettled {
                    write_id: write.write_id.clone(),
                    state,
                    error: None,
                    calendar_id: write.calendar_id.clone(),
                    event_id: write.event_id.clone(),
                    superseded_by: newest.clone(),
                };
                seq = Some(tx.record_change(&write.tenant_id, &write.sub, &write_payload(&settled), now_ms).await?);
            }
            tx.commit().await?;
            (state, seq)
        });
        if let Some(seq) = seq {
            self.feed.advance(&write.tenant_id, seq);
        }
        Ok(state)
    }

    /// One of the tenant's writes, queued or settled. None: no such write (or another tenant's).
    pub async fn get_write(&self, tenant: &str, write_id: &str) -> Result<Option<WriteRecord>, StoreError> {
        let row: Option<WriteRow> = with_pool!(self, pool => {
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM queued_writes WHERE write_id = $1 AND tenant_id = $2"))
                .bind(write_id)
                .bind(tenant)
                .fetch_optional(pool)
                .await?
        });
        let corrupt = |what: &str| StoreError::Corrupt(format!("queued write {what}"));
        let time = |ms: i64| time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok();
        row.map(|row| {
            Ok(WriteRecord {
                kind: WriteKind::parse(&row.kind).ok_or_else(|| corrupt("kind"))?,
                state: WriteState::parse(&row.state).ok_or_else(|| corrupt("state"))?,
                attempts: u32::try_from(row.attempts).unwrap_or(u32::MAX),
                error: row.error.as_deref().and_then(WriteFailure::from_stored),
                accepted_at: time(row.accepted_at).ok_or_else(|| corrupt("accepted_at"))?,
                settled_at: row.settled_at.and_then(time),
                superseded_by: row.superseded_by,
                write_id: row.write_id,
                sub: row.sub,
                user_ref: row.user_ref,
                calendar_id: row.calendar_id,
                event_id: row.event_id,
            })
        })
        .transpose()
    }

    /// Per tenant: queued writes waiting, and seconds since the oldest was accepted.
    pub async fn queue_depths(&self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let (_, now_ms) = self.now();
        let rows: Vec<(String, i64, i64)> = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT tenant_id, COUNT(*), MIN(accepted_at) FROM queued_writes WHERE state = 'queued' GROUP BY tenant_id",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(tenant, count, oldest)| (tenant, count, (now_ms - oldest).max(0) / 1000))
            .collect())
    }

    /// Removes settled writes older than `before_ms` (GetWrite no longer finds them).
    pub async fn prune_settled_writes(&self, before_ms: i64) -> Result<u64, StoreError> {
        Ok(with_pool!(self, pool => {
            sqlx::query("DELETE FROM queued_writes WHERE state <> 'queued' AND settled_at < $1")
                .bind(before_ms)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}
