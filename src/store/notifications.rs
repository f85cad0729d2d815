//! Notifications waiting to be processed, and what calgate knows of the
//! events it wrote (see migration 0007).

use sha2::{Digest, Sha256};

use super::{BeginWrite, Store, StoreError, changes::event_payload, in_transaction::InTransaction, with_pool};
use crate::domain::changes::{EventChange, EventState};

/// A notification to process.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct QueuedNotification {
    /// SHA-256 of channel key and body.
    pub id: String,
    /// Tenant id.
    pub tenant_id: String,
    /// The grant's sub.
    pub sub: String,
    /// Cronofy's `notification.type`.
    pub kind: String,
    /// `notification.changes_since`, for `change`.
    pub changes_since: Option<String>,
    /// Failed attempts so far.
    pub attempts: i64,
    /// Bumped by each repeated delivery (see [`Store::finish_notification`]).
    pub generation: i64,
    /// When it was due (the claim compares it).
    pub next_attempt_at: i64,
    /// Where reading its changed events goes on: the next unread page, kept
    /// when a minute's pages ran out ([`Store::resume_notification_at`]).
    pub resume_page: Option<String>,
}

/// The queue id of a notification: the same delivery twice is one row.
pub fn notification_id(channel_key: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(channel_key.as_bytes());
    hash.update([0]);
    hash.update(body);
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    /// Queues a notification, due at once; returns whether it was new. A
    /// repeat is never dropped (an identical body may announce a new change)
    /// but coalesced: one still queued or being processed has its generation
    /// bumped (processed again once done, `coalesce_seconds` after), one
    /// already processed is due `coalesce_seconds` after that processing.
    /// However often a body is delivered, it is processed at most once per
    /// `coalesce_seconds`.
    pub async fn queue_notification(
        &self,
        id: &str,
        tenant: &str,
        sub: &str,
        kind: &str,
        changes_since: Option<&str>,
        coalesce_seconds: i64,
    ) -> Result<bool, StoreError> {
        let (now, _) = self.now();
        let inserted: i64 = with_pool!(self, pool => {
            sqlx::query_scalar(
                "INSERT INTO notifications (id, tenant_id, sub, kind, changes_since, attempts, next_attempt_at, \
                 created_at) VALUES ($1, $2, $3, $4, $5, 0, $6, $6) \
                 ON CONFLICT (id) DO UPDATE SET \
                   generation = notifications.generation + 1, \
                   next_attempt_at = CASE WHEN notifications.processed_at IS NULL THEN notifications.next_attempt_at \
                     WHEN notifications.processed_at + $7 > $6 THEN notifications.processed_at + $7 ELSE $6 END, \
                   processed_at = NULL \
                 RETURNING generation",
            )
            .bind(id)
            .bind(tenant)
            .bind(sub)
            .bind(kind)
            .bind(changes_since)
            .bind(now)
            .bind(coalesce_seconds)
            .fetch_one(pool)
            .await?
        });
        Ok(inserted == 0)
    }

    /// Up to `limit` notifications due now, oldest first, at most
    /// `per_tenant` of any one tenant (so one tenant's backlog never fills
    /// the page and hides another tenant's notification).
    pub async fn due_notifications(&self, per_tenant: i64, limit: i64) -> Result<Vec<QueuedNotification>, StoreError> {
        let (now, _) = self.now();
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, QueuedNotification>(
                "SELECT id, tenant_id, sub, kind, changes_since, attempts, generation, next_attempt_at, resume_page FROM ( \
                   SELECT id, tenant_id, sub, kind, changes_since, attempts, generation, next_attempt_at, resume_page, \
                     created_at, \
                     ROW_NUMBER() OVER (PARTITION BY tenant_id ORDER BY next_attempt_at, created_at) AS place \
                   FROM notifications WHERE next_attempt_at <= $1 AND processed_at IS NULL) AS due \
                 WHERE place <= $2 ORDER BY next_attempt_at, created_at LIMIT $3",
            )
            .bind(now)
            .bind(per_tenant)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Claims a due notification for `hold_seconds` (compare-and-swap), so
    /// one replica processes it at a time. False when another claimed it.
    pub async fn claim_notification(&self, queued: &QueuedNotification, hold_seconds: i64) -> Result<bool, StoreError> {
        let (now, _) = self.now();
        let updated = with_pool!(self, pool => {
            sqlx::query("UPDATE notifications SET next_attempt_at = $1 WHERE id = $2 AND next_attempt_at = $3")
                .bind(now.saturating_add(hold_seconds))
                .bind(&queued.id)
                .bind(queued.next_attempt_at)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(updated == 1)
    }

    /// The notification was processed (or given up on): the row stays as a
    /// processed marker, never due, so a replay of it is recognised. Unless
    /// it was delivered again meanwhile (its generation moved): then it is
    /// due again `coalesce_seconds` from now, and this returns false.
    pub async fn finish_notification(
        &self,
        queued: &QueuedNotification,
        coalesce_seconds: i64,
    ) -> Result<bool, StoreError> {
        let (now, _) = self.now();
        let deleted = with_pool!(self, pool => {
            let deleted = sqlx::query(
                "UPDATE notifications SET processed_at = $3, next_attempt_at = $4, resume_page = NULL \
                 WHERE id = $1 AND generation = $2",
            )
            .bind(&queued.id)
            .bind(queued.generation)
            .bind(now)
            .bind(i64::MAX)
            .execute(pool)
            .await?
            .rows_affected();
            if deleted == 0 {
                // Delivered again meanwhile: read again from the first page.
                sqlx::query("UPDATE notifications SET next_attempt_at = $1, resume_page = NULL WHERE id = $2")
                    .bind(now.saturating_add(coalesce_seconds))
                    .bind(&queued.id)
                    .execute(pool)
                    .await?;
            }
            deleted
        });
        Ok(deleted == 1)
    }

    /// Reading stopped before `page` (None: start again from the first page);
    /// the next attempt goes on from there.
    pub async fn resume_notification_at(&self, id: &str, page: Option<&str>) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query("UPDATE notifications SET resume_page = $1 WHERE id = $2")
                .bind(page)
                .bind(id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Processing failed: try again in `after_seconds`.
    pub async fn postpone_notification(&self, id: &str, after_seconds: i64, attempted: bool) -> Result<(), StoreError> {
        let (now, _) = self.now();
        with_pool!(self, pool => {
            sqlx::query("UPDATE notifications SET attempts = attempts + $3, next_attempt_at = $1 WHERE id = $2")
                .bind(now.saturating_add(after_seconds))
                .bind(id)
                .bind(i64::from(attempted))
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// How many notifications wait (metrics, tests).
    pub async fn count_queued_notifications(&self) -> Result<i64, StoreError> {
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM notifications WHERE processed_at IS NULL")
                .fetch_one(pool)
                .await?
        }))
    }

    /// Forgets notifications processed before `before` (unix seconds): a
    /// replay of one arriving later is processed as new. Returns how many went.
    pub async fn prune_processed_notifications(&self, before: i64) -> Result<u64, StoreError> {
        Ok(with_pool!(self, pool => {
            sqlx::query("DELETE FROM notifications WHERE processed_at IS NOT NULL AND processed_at < $1")
                .bind(before)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    /// Takes one page from the grant's `per_minute` pages of changed events:
    /// a window opens with the first page read and lasts a minute, shared by
    /// every replica. False when the window's pages are spent.
    pub async fn take_channel_page(&self, tenant: &str, sub: &str, per_minute: i64) -> Result<bool, StoreError> {
        let (now, _) = self.now();
        let taken = with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO channel_pages (tenant_id, sub, window_start, pages) VALUES ($1, $2, $3, 1) \
                 ON CONFLICT (tenant_id, sub) DO UPDATE SET \
                   pages = CASE WHEN channel_pages.window_start > $3 - 60 THEN channel_pages.pages + 1 ELSE 1 END, \
                   window_start = CASE WHEN channel_pages.window_start > $3 - 60 \
                     THEN channel_pages.window_start ELSE $3 END \
                 WHERE channel_pages.window_start <= $3 - 60 OR channel_pages.pages < $4",
            )
            .bind(tenant)
            .bind(sub)
            .bind(now)
            .bind(per_minute)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(taken == 1)
    }

    /// Remembers the state calgate just wrote of an event (a write or a
    /// delete that succeeded), so that Cronofy reading it back is no change.
    pub async fn remember_event(
        &self,
        tenant: &str,
        sub: &str,
        calendar_id: &str,
        event_id: &str,
        state: &EventState,
    ) -> Result<(), StoreError> {
        let (now, _) = self.now();
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO event_writes (tenant_id, sub, calendar_id, event_id, digest, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, sub, calendar_id, event_id) \
                 DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
            )
            .bind(tenant)
            .bind(sub)
            .bind(calendar_id)
            .bind(event_id)
            .bind(state.digest())
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// calgate deleted every event of the grant (in `calendar_ids`, or all).
    pub async fn remember_all_deleted(
        &self,
        tenant: &str,
        sub: &str,
        calendar_ids: Option<&[String]>,
    ) -> Result<(), StoreError> {
        let (now, _) = self.now();
        let deleted = EventState::Deleted.digest();
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            match calendar_ids {
                None => {
                    sqlx::query(
                        "UPDATE event_writes SET digest = $1, updated_at = $2 WHERE tenant_id = $3 AND sub = $4",
                    )
                    .bind(&deleted)
                    .bind(now)
                    .bind(tenant)
                    .bind(sub)
                    .execute(&mut *tx)
                    .await?;
                }
                Some(ids) => {
                    for calendar_id in ids {
                        sqlx::query(
                            "UPDATE event_writes SET digest = $1, updated_at = $2 \
                             WHERE tenant_id = $3 AND sub = $4 AND calendar_id = $5",
                        )
                        .bind(&deleted)
                        .bind(now)
                        .bind(tenant)
                        .bind(sub)
                        .bind(calendar_id)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Cronofy reads one of the grant's events as `seen`. When calgate wrote
    /// that event and last knew it otherwise, records `change` and moves the
    /// known state to `seen` in one transaction (compare-and-swap: a
    /// notification processed twice, or by two replicas, records it once).
    /// Returns the change's number, None when it is no change.
    pub async fn observe_event(
        &self,
        tenant: &str,
        sub: &str,
        seen: &EventState,
        change: &EventChange,
    ) -> Result<Option<i64>, StoreError> {
        let (now, now_ms) = self.now();
        let digest = seen.digest();
        let payload = event_payload(change);
        let seq = with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let known: Option<String> = sqlx::query_scalar(
                "SELECT digest FROM event_writes WHERE tenant_id = $1 AND sub = $2 AND calendar_id = $3 \
                 AND event_id = $4",
            )
            .bind(tenant)
            .bind(sub)
            .bind(&change.calendar_id)
            .bind(&change.event_id)
            .fetch_optional(&mut *tx)
            .await?;
            let seq = match known {
                Some(known) if known != digest => {
                    let moved = sqlx::query(
                        "UPDATE event_writes SET digest = $1, updated_at = $2 WHERE tenant_id = $3 AND sub = $4 \
                         AND calendar_id = $5 AND event_id = $6 AND digest = $7",
                    )
                    .bind(&digest)
                    .bind(now)
                    .bind(tenant)
                    .bind(sub)
                    .bind(&change.calendar_id)
                    .bind(&change.event_id)
                    .bind(&known)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if moved == 1 {
                        Some(tx.record_change(tenant, sub, &payload, now_ms).await?)
                    } else {
                        None
                    }
                }
                _ => None,
            };
            tx.commit().await?;
            seq
        });
        if let Some(seq) = seq {
            self.feed.advance(tenant, seq);
        }
        Ok(seq)
    }

    /// Forgets what calgate knew of events deleted before `before` (unix seconds).
    pub async fn prune_event_writes(&self, before: i64) -> Result<u64, StoreError> {
        Ok(with_pool!(self, pool => {
            sqlx::query("DELETE FROM event_writes WHERE digest = $1 AND updated_at < $2")
                .bind(EventState::Deleted.digest())
                .bind(before)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}
