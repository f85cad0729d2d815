//! Writes that happen inside a caller's transaction, on either backend: the
//! change stream's next row, an audit row (and the chain head it extends),
//! marking a grant as needing its user again. Each is one plain method of
//! [`InTransaction`], written once for SQLite and PostgreSQL: both run the same
//! SQL text, and the bounds below say what that SQL needs of a database.

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Transaction, Type};

use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::{Store, audit, changes, grants, notifications::notification_id};
use crate::domain::{
    audit::{Actor, AuditEntry, AuditKind},
    changes::{GrantChange, GrantChangeReason},
    grant::GrantStatus,
    write_queue::{WriteFailure, WriteSettled, WriteState},
};

/// A transaction of the store's (SQLite or PostgreSQL), and what is written in it.
pub(super) trait InTransaction {
    /// Records a change of (tenant, sub) with `payload`; returns its number.
    /// Callers tell the feed after the commit.
    async fn record_change(&mut self, tenant: &str, sub: &str, payload: &str, now_ms: i64) -> Result<i64, sqlx::Error>;

    /// Records an audit entry (pseudonyms keyed by `store`'s audit key),
    /// extending the tenant's hash chain; returns the row's number.
    async fn record_audit(
        &mut self,
        store: &Store,
        tenant: &str,
        entry: &AuditEntry<'_>,
        now_ms: i64,
    ) -> Result<i64, sqlx::Error>;

    /// Records an audit entry about the grant (tenant, sub), naming the
    /// user_ref bound to it most recently.
    async fn record_grant_audit(
        &mut self,
        store: &Store,
        tenant: &str,
        sub: &str,
        audit: GrantAudit<'_>,
    ) -> Result<i64, sqlx::Error>;

    /// Records what happened to the grant (tenant, sub) twice over: the audit
    /// row `audit`, then the change `payload` on the stream; returns the
    /// change's number. Callers tell the feed after the commit.
    async fn record_grant_change(
        &mut self,
        store: &Store,
        tenant: &str,
        sub: &str,
        audit: GrantAudit<'_>,
        payload: &str,
    ) -> Result<i64, sqlx::Error>;

    /// Marks the grant as needing re-authorization if it is still at
    /// `version`, recording the `REFRESH_REJECTED` change and the audit
    /// entries (`grant_refresh_rejected`, `grant_needs_reauth`). Returns the
    /// stored reason and the change's number, or None when the grant moved on.
    async fn mark_needs_reauth(
        &mut self,
        store: &Store,
        tenant: &str,
        sub: &str,
        version: i64,
        attempt: &str,
    ) -> Result<Option<(Option<String>, i64)>, sqlx::Error>;

    /// Erases what names the person's `user_refs` but no grant: their
    /// Enterprise Connect authorizations in any status (and any other for the
    /// members' `emails` or theirs), past bindings and changes; their audit
    /// rows keep only keyed hashes.
    async fn erase_user_refs(
        &mut self,
        store: &Store,
        tenant: &str,
        user_refs: &[String],
        emails: Vec<String>,
    ) -> Result<(), sqlx::Error>;

    /// Erases what binds people to the grant (tenant, sub): every user_ref
    /// ever bound to it and what names those ([`Self::erase_user_refs`], the
    /// members' emails included), the bindings themselves, and the clear ids
    /// of its audit rows (their keyed hashes stay). Returns the user_refs,
    /// the latest first.
    async fn erase_bindings_of_grant(
        &mut self,
        store: &Store,
        tenant: &str,
        sub: &str,
    ) -> Result<Vec<String>, sqlx::Error>;

    /// Drops the grant's queued writes as its user is erased: each settles
    /// FAILED (`GRANT_NOT_FOUND`) on the change stream — naming neither the
    /// person nor their calendar, only the write_id — and every write row of
    /// the grant goes. Returns how many were waiting, and the last change's
    /// number (callers tell the feed after the commit).
    async fn drop_queued_writes(
        &mut self,
        tenant: &str,
        sub: &str,
        now_ms: i64,
    ) -> Result<(u64, Option<i64>), sqlx::Error>;

    /// Queues work for the notification worker as if Cronofy had notified
    /// it (`read`), due at once; the same id twice is one row.
    async fn queue_read(
        &mut self,
        tenant: &str,
        sub: &str,
        read: QueuedRead<'_>,
        now_ms: i64,
    ) -> Result<(), sqlx::Error>;

    /// The grant's event tracking resumed on a new channel after Cronofy
    /// closed the old one, unnoticed since `since` (Unix seconds): records
    /// the `TRACKING_RESUMED` change and queues a read of the grant's events
    /// changed since then, as a `change` notification on `channel_key` would.
    /// Returns the change's number.
    async fn tracking_resumed(
        &mut self,
        tenant: &str,
        sub: &str,
        channel_key: &str,
        since: i64,
        now_ms: i64,
    ) -> Result<i64, sqlx::Error>;
}

/// Work queued with the notifications: a read calgate decided on itself.
pub(super) struct QueuedRead<'a> {
    /// Unique per read ([`notification_id`] of the channel key and a description).
    pub id: &'a str,
    /// As Cronofy's `notification.type`: `change` reads events, `profile_…` UserInfo.
    pub kind: &'a str,
    /// For `change`: read events changed since then (RFC 3339).
    pub changes_since: Option<&'a str>,
}

/// What an audit row about a grant says.
pub(super) struct GrantAudit<'a> {
    pub kind: AuditKind,
    pub actor: &'a Actor,
    pub detail: String,
    pub now_ms: i64,
}

impl<DB> InTransaction for Transaction<'_, DB>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    async fn record_change(&mut self, tenant: &str, sub: &str, payload: &str, now_ms: i64) -> Result<i64, sqlx::Error> {
        let seq: i64 = sqlx::query_scalar(changes::NEXT_SEQ)
            .bind(tenant)
            .fetch_one(&mut **self)
            .await?;
        sqlx::query(changes::INSERT_CHANGE)
            .bind(tenant)
            .bind(seq)
            .bind(sub)
            .bind(now_ms)
            .bind(payload)
            .execute(&mut **self)
            .await?;
        Ok(seq)
    }

    async fn record_audit(
        &mut self,
        store: &Store,
        tenant: &str,
        entry: &AuditEntry<'_>,
        now_ms: i64,
    ) -> Result<i64, sqlx::Error> {
        let (seq, prev): (i64, String) = sqlx::query_as(audit::NEXT_AUDIT)
            .bind(tenant)
            .fetch_one(&mut **self)
            .await?;
        let row = store.audit_row(tenant, seq, prev, entry, now_ms);
        sqlx::query(audit::INSERT_AUDIT)
            .bind(row.tenant)
            .bind(row.seq)
            .bind(now_ms)
            .bind(row.kind)
            .bind(row.sub)
            .bind(row.user_ref)
            .bind(row.sub_hash)
            .bind(row.user_ref_hash)
            .bind(row.actor)
            .bind(row.request_id)
            .bind(row.detail)
            .bind(row.prev_hash)
            .bind(row.hash.clone())
            .execute(&mut **self)
            .await?;
        sqlx::query(audit::SET_HEAD_HASH)
            .bind(tenant)
            .bind(row.hash)
            .execute(&mut **self)
            .await?;
        Ok(seq)
    }

    async fn record_grant_audit(
        &mut self,
        store: &Store,
        tenant: &str,
        sub: &str,
        audit: GrantAudit<'_>,
    ) -> Result<i64, sqlx::Error> {
        let user_ref: Option<String> = sqlx::query_scalar(audit::BOUND_USER_REF)
            .bind(tenant)
            .bind(sub)
            .fetch_optional(&mut **self)
            .await?;
        let entry = AuditEntry {
            kind: audit.kind,
            sub: Some(sub),
            user_ref: user_ref.as_deref(),
            actor: audit.actor,
            detail: audit.detail,
            ids_erased: false,
        };
        self.record_audit(store, tenant, &entry, audit.now_ms).await
    }

    async fn record_grant_change(
        &mut self,
        store: &Store,
        tenant: &str,
        sub: &str,
        audit: GrantAudit<'_>,
        payload: &str,
    ) -> Result<i64, sqlx::Error> {
        let now_ms = audit.now_ms;
        self.record_grant_audit(store, tenant, sub, audit).await?;
        self.record_change(tenant, sub, payload, now_ms).await
    }

    async fn mark_needs_reauth(
        &mut self,
        store: &Store,
        tenant: &str,
        sub: &str,
        version: i64,
        attempt: &str,
    ) -> Result<Option<(Option<String>, i64)>, sqlx::Error> {
        let (now, now_ms) = store.now();
        let reason: Option<Option<String>> = sqlx::query_scalar(grants::MARK_NEEDS_REAUTH)
            .bind(GrantStatus::NeedsReauth.as_str())
            .bind(now)
            .bind(tenant)
            .bind(sub)
            .bind(version)
            .bind(attempt)
            .fetch_optional(&mut **self)
            .await?;
        let Some(reason) = reason else { return Ok(None) };
        let change = changes::grant_payload(&GrantChange::new(
            GrantStatus::NeedsReauth,
            GrantChangeReason::RefreshRejected,
        ));
        let seq = self.record_change(tenant, sub, &change, now_ms).await?;
        let calgate = Actor::calgate();
        let why = reason.clone().unwrap_or_default();
        let refused = GrantAudit {
            kind: AuditKind::GrantRefreshRejected,
            actor: &calgate,
            detail: format!("Cronofy refused the refresh token ({why})"),
            now_ms,
        };
        self.record_grant_audit(store, tenant, sub, refused).await?;
        let needs_reauth = GrantAudit {
            kind: AuditKind::GrantNeedsReauth,
            actor: &calgate,
            detail: why,
            now_ms,
        };
        self.record_grant_audit(store, tenant, sub, needs_reauth).await?;
        Ok(Some((reason, seq)))
    }

    async fn tracking_resumed(
        &mut self,
        tenant: &str,
        sub: &str,
        channel_key: &str,
        since: i64,
        now_ms: i64,
    ) -> Result<i64, sqlx::Error> {
        let status: String = sqlx::query_scalar("SELECT status FROM grants WHERE tenant_id = $1 AND sub = $2")
            .bind(tenant)
            .bind(sub)
            .fetch_one(&mut **self)
            .await?;
        let status = GrantStatus::parse(&status)
            .ok_or_else(|| sqlx::Error::Protocol(format!("unknown grant status {status:?}")))?;
        let changes_since = OffsetDateTime::from_unix_timestamp(since)
            .ok()
            .and_then(|at| at.format(&Rfc3339).ok())
            .ok_or_else(|| sqlx::Error::Protocol(format!("a channel gap at {since} is no time")))?;
        let id = notification_id(
            channel_key,
            format!("tracking resumed since {changes_since}").as_bytes(),
        );
        let read = QueuedRead {
            id: &id,
            kind: "change",
            changes_since: Some(&changes_since),
        };
        self.queue_read(tenant, sub, read, now_ms).await?;
        let change = changes::grant_payload(&GrantChange {
            status,
            reason: GrantChangeReason::TrackingResumed,
            relink_url: None,
            events_missed_since: Some(since),
            profiles: Vec::new(),
        });
        self.record_change(tenant, sub, &change, now_ms).await
    }

    async fn queue_read(
        &mut self,
        tenant: &str,
        sub: &str,
        read: QueuedRead<'_>,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let now = now_ms.div_euclid(1000);
        sqlx::query(
            "INSERT INTO notifications (id, tenant_id, sub, kind, changes_since, attempts, next_attempt_at, \
             created_at) VALUES ($1, $2, $3, $4, $5, 0, $6, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(read.id)
        .bind(tenant)
        .bind(sub)
        .bind(read.kind)
        .bind(read.changes_since.map(str::to_owned))
        .bind(now)
        .execute(&mut **self)
        .await?;
        Ok(())
    }

    async fn erase_bindings_of_grant(
        &mut self,
        store: &Store,
        tenant: &str,
        sub: &str,
    ) -> Result<Vec<String>, sqlx::Error> {
        let user_refs: Vec<String> = sqlx::query_scalar(
            "SELECT user_ref FROM (SELECT user_ref, bound_at FROM user_refs WHERE tenant_id = $1 AND sub = $2 \
             UNION ALL SELECT user_ref, bound_at FROM user_ref_history WHERE tenant_id = $1 AND sub = $2) b \
             GROUP BY user_ref ORDER BY MAX(bound_at) DESC, user_ref DESC",
        )
        .bind(tenant)
        .bind(sub)
        .fetch_all(&mut **self)
        .await?;
        // Enterprise Connect authorizations of the person, whatever their status:
        // by grant, by user_ref, and by the member's email those name.
        let emails: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT email FROM enterprise_authorizations WHERE tenant_id = $1 AND grant_sub = $2",
        )
        .bind(tenant)
        .bind(sub)
        .fetch_all(&mut **self)
        .await?;
        self.erase_user_refs(store, tenant, &user_refs, emails).await?;
        for erase in [
            "DELETE FROM user_ref_history WHERE tenant_id = $1 AND sub = $2",
            "DELETE FROM enterprise_authorizations WHERE tenant_id = $1 AND grant_sub = $2",
            "DELETE FROM user_refs WHERE tenant_id = $1 AND sub = $2",
        ] {
            sqlx::query(erase).bind(tenant).bind(sub).execute(&mut **self).await?;
        }
        sqlx::query("UPDATE audit_events SET sub = NULL, user_ref = NULL WHERE tenant_id = $1 AND sub_hash = $2")
            .bind(tenant)
            .bind(store.pseudonym(tenant, "sub", sub))
            .execute(&mut **self)
            .await?;
        Ok(user_refs)
    }

    async fn drop_queued_writes(
        &mut self,
        tenant: &str,
        sub: &str,
        now_ms: i64,
    ) -> Result<(u64, Option<i64>), sqlx::Error> {
        let waiting: Vec<String> = sqlx::query_scalar(
            "SELECT write_id FROM queued_writes WHERE tenant_id = $1 AND sub = $2 AND state = 'queued' ORDER BY accepted_at, write_id",
        )
        .bind(tenant)
        .bind(sub)
        .fetch_all(&mut **self)
        .await?;
        let mut last_seq = None;
        for write_id in &waiting {
            let settled = WriteSettled {
                write_id: write_id.clone(),
                state: WriteState::Failed,
                error: Some(WriteFailure::GrantNotFound),
                calendar_id: String::new(),
                event_id: String::new(),
                superseded_by: None,
            };
            last_seq = Some(
                self.record_change(tenant, "", &changes::write_payload(&settled), now_ms)
                    .await?,
            );
        }
        sqlx::query("DELETE FROM queued_writes WHERE tenant_id = $1 AND sub = $2")
            .bind(tenant)
            .bind(sub)
            .execute(&mut **self)
            .await?;
        Ok((waiting.len() as u64, last_seq))
    }

    async fn erase_user_refs(
        &mut self,
        store: &Store,
        tenant: &str,
        user_refs: &[String],
        mut emails: Vec<String>,
    ) -> Result<(), sqlx::Error> {
        for user_ref in user_refs {
            let theirs: Vec<String> = sqlx::query_scalar(
                "SELECT DISTINCT email FROM enterprise_authorizations WHERE tenant_id = $1 AND user_ref = $2",
            )
            .bind(tenant)
            .bind(user_ref)
            .fetch_all(&mut **self)
            .await?;
            emails.extend(theirs);
            for erase in [
                "DELETE FROM enterprise_authorizations WHERE tenant_id = $1 AND user_ref = $2",
                "DELETE FROM user_ref_history WHERE tenant_id = $1 AND user_ref = $2",
                "DELETE FROM changes WHERE tenant_id = $1 AND user_ref = $2",
            ] {
                sqlx::query(erase)
                    .bind(tenant)
                    .bind(user_ref)
                    .execute(&mut **self)
                    .await?;
            }
            sqlx::query(
                "UPDATE audit_events SET sub = NULL, user_ref = NULL WHERE tenant_id = $1 AND user_ref_hash = $2",
            )
            .bind(tenant)
            .bind(store.pseudonym(tenant, "user_ref", user_ref))
            .execute(&mut **self)
            .await?;
        }
        for email in emails {
            sqlx::query("DELETE FROM enterprise_authorizations WHERE tenant_id = $1 AND email = $2")
                .bind(tenant)
                .bind(email)
                .execute(&mut **self)
                .await?;
        }
        Ok(())
    }
}
