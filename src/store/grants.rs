//! Grants and their user_ref bindings.

use secrecy::SecretString;
use time::OffsetDateTime;

use super::{
    BeginWrite, Store, StoreError,
    changes::grant_payload,
    crypto::Binding,
    in_transaction::{GrantAudit, InTransaction},
    with_pool,
};
use crate::domain::{
    audit::{Actor, AuditKind},
    changes::{GrantChange, GrantChangeReason},
    grant::{
        ChangeTracking, ConnectMode, Grant, GrantKind, GrantSelector, GrantStatus, StatusReason, StoredGrant, Tokens,
    },
    profile::Profiles,
};

/// A grant as received from Cronofy, ready to store.
#[derive(Debug)]
pub struct NewGrant {
    /// Cronofy's account identifier.
    pub sub: String,
    /// `acc_…`.
    pub account_id: String,
    /// Granted scopes.
    pub scope: Vec<String>,
    /// How it was connected.
    pub connect_mode: ConnectMode,
    /// User or service account.
    pub kind: GrantKind,
    /// Provider of the linked profile.
    pub provider_name: String,
    /// Name of the linked profile.
    pub profile_name: String,
    /// Free/Busy mode.
    pub free_busy_mode: bool,
    /// The tokens.
    pub tokens: Tokens,
    /// Open a push notification channel for it (`[callbacks]` configured, a user grant).
    pub track_changes: bool,
}

/// A grants row, as both backends return it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct GrantRow {
    sub: String,
    account_id: String,
    scope: String,
    connect_mode: String,
    kind: String,
    status: String,
    provider_name: String,
    profile_name: String,
    free_busy_mode: bool,
    key_id: Option<String>,
    access_token: Option<Vec<u8>>,
    refresh_token: Option<Vec<u8>>,
    access_expires_at: Option<i64>,
    version: i64,
    created_at: i64,
    updated_at: i64,
    status_reason: Option<String>,
    channel_state: String,
    channel_error: Option<String>,
    event_tracking: String,
    relink_url: Option<String>,
    profiles: Option<String>,
    bound_user_ref: Option<String>,
    erasing: bool,
}

/// The grant by (tenant = $1, sub = $2), with the user_ref bound to it most recently.
pub(super) const SELECT_BY_SUB: &str = "SELECT g.sub, g.account_id, g.scope, g.connect_mode, g.kind, g.status, \
     g.provider_name, g.profile_name, g.free_busy_mode, g.key_id, g.access_token, g.refresh_token, \
     g.access_expires_at, g.version, g.created_at, g.updated_at, g.status_reason, g.channel_state, \
     g.channel_error, g.event_tracking, g.relink_url, g.profiles, (SELECT u.user_ref FROM user_refs u WHERE u.tenant_id = $1 AND u.sub = g.sub \
      ORDER BY u.bound_at DESC, u.user_ref DESC LIMIT 1) AS bound_user_ref, \
     EXISTS (SELECT 1 FROM pending_erasures e WHERE e.tenant_id = $1 AND e.sub = g.sub) AS erasing \
     FROM grants g WHERE g.tenant_id = $1 AND g.sub = $2";

/// The grant a user_ref (tenant = $1, user_ref = $2) points at.
const SELECT_BY_USER_REF: &str = "SELECT g.sub, g.account_id, g.scope, g.connect_mode, g.kind, g.status, \
     g.provider_name, g.profile_name, g.free_busy_mode, g.key_id, g.access_token, g.refresh_token, \
     g.access_expires_at, g.version, g.created_at, g.updated_at, g.status_reason, g.channel_state, \
     g.channel_error, g.event_tracking, g.relink_url, g.profiles, u.user_ref AS bound_user_ref, \
     EXISTS (SELECT 1 FROM pending_erasures e WHERE e.tenant_id = $1 AND e.sub = g.sub) AS erasing \
     FROM user_refs u JOIN grants g ON g.tenant_id = u.tenant_id AND g.sub = u.sub \
     WHERE u.tenant_id = $1 AND u.user_ref = $2";

const UPSERT_GRANT: &str = "INSERT INTO grants (tenant_id, sub, account_id, scope, connect_mode, kind, status, \
     provider_name, profile_name, free_busy_mode, key_id, access_token, refresh_token, access_expires_at, version, \
     created_at, updated_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 1, $15, $15, $15) \
     ON CONFLICT (tenant_id, sub) DO UPDATE SET account_id = excluded.account_id, scope = excluded.scope, \
     connect_mode = excluded.connect_mode, kind = excluded.kind, status = excluded.status, \
     provider_name = excluded.provider_name, profile_name = excluded.profile_name, \
     free_busy_mode = excluded.free_busy_mode, key_id = excluded.key_id, access_token = excluded.access_token, \
     refresh_token = excluded.refresh_token, access_expires_at = excluded.access_expires_at, \
     version = grants.version + 1, updated_at = excluded.updated_at, refresh_unsure_since = NULL, \
     status_reason = NULL, relink_url = NULL, profiles = NULL, last_used_at = excluded.last_used_at, refresh_claimed_until = NULL";

/// A connected user grant's channel is to be created (unless one is open):
/// ($1 tenant, $2 sub, $3 now, $4 a new channel key, kept if one exists).
const CHANNEL_PENDING: &str = "UPDATE grants SET channel_state = 'pending', channel_due_at = $3, \
     channel_attempts = 0, channel_error = NULL, channel_key = COALESCE(channel_key, $4) \
     WHERE tenant_id = $1 AND sub = $2 AND channel_state <> 'open'";

const BIND_USER_REF: &str = "INSERT INTO user_refs (tenant_id, user_ref, sub, bound_at) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (tenant_id, user_ref) DO UPDATE SET sub = excluded.sub, bound_at = excluded.bound_at";

/// Remembers that a user_ref was bound to a sub (same parameters as [`BIND_USER_REF`]).
const REMEMBER_BINDING: &str = "INSERT INTO user_ref_history (tenant_id, user_ref, sub, bound_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, user_ref, sub) DO NOTHING";

/// Compare-and-swap of a grant's tokens: ($1 key_id, $2 access, $3 refresh, $4 expiry, $5 now,
/// $6 tenant, $7 sub, $8 expected version).
pub(super) const UPDATE_TOKENS: &str = "UPDATE grants SET key_id = $1, access_token = $2, refresh_token = $3, \
     access_expires_at = $4, version = version + 1, updated_at = $5, refresh_unsure_since = NULL \
     WHERE tenant_id = $6 AND sub = $7 AND version = $8";

/// ($1 status, $2 now, $3 tenant, $4 sub, $5 expected version, $6 this
/// refresh's attempt id). The reason is REFRESH_ANSWER_LOST when a refresh
/// answer was lost since the last good one: heard to be unsure, or left in
/// flight by another attempt (its replica died waiting).
/// The grant's channel goes with its authorization: it is gone at Cronofy,
/// so reconnecting opens a new one.
pub(super) const MARK_NEEDS_REAUTH: &str = "UPDATE grants SET status = $1, version = version + 1, updated_at = $2, \
     channel_state = 'none', channel_due_at = NULL, \
     status_reason = CASE WHEN refresh_unsure_since IS NULL AND NOT EXISTS (SELECT 1 FROM refresh_marks m \
       WHERE m.tenant_id = $3 AND m.sub = $4 AND m.attempt <> $6) \
     THEN 'INVALID_GRANT' ELSE 'REFRESH_ANSWER_LOST' END \
     WHERE tenant_id = $3 AND sub = $4 AND version = $5 RETURNING status_reason";

pub(super) const ACCESS: &str = "access_token";
pub(super) const REFRESH: &str = "refresh_token";

pub(super) fn binding<'a>(tenant: &'a str, sub: &'a str, purpose: &'static str) -> Binding<'a> {
    Binding { tenant, sub, purpose }
}

/// Both tokens sealed for (tenant, sub): (key id, access, refresh).
pub(super) fn seal(store: &Store, tenant: &str, sub: &str, tokens: &Tokens) -> (String, Vec<u8>, Vec<u8>) {
    let cipher = store.cipher();
    (
        cipher.current_key_id().to_owned(),
        cipher.seal(&tokens.access_token, &binding(tenant, sub, ACCESS)),
        cipher.seal(&tokens.refresh_token, &binding(tenant, sub, REFRESH)),
    )
}

impl Store {
    /// Stores a freshly exchanged grant (new, or reconnected with the same sub),
    /// binds `user_ref` to it and records the `CONNECTED` change, in one transaction.
    pub async fn save_grant(
        &self,
        tenant: &str,
        new: &NewGrant,
        user_ref: Option<&str>,
        actor: &Actor,
    ) -> Result<StoredGrant, StoreError> {
        let (now, now_ms) = self.now();
        let (key_id, access, refresh) = seal(self, tenant, &new.sub, &new.tokens);
        let scope = new.scope.join(" ");
        let connected = grant_payload(&GrantChange::new(GrantStatus::Active, GrantChangeReason::Connected));
        let (row, seq): (GrantRow, i64) = with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(UPSERT_GRANT)
                .bind(tenant)
                .bind(&new.sub)
                .bind(&new.account_id)
                .bind(&scope)
                .bind(new.connect_mode.as_str())
                .bind(new.kind.as_str())
                .bind(GrantStatus::Active.as_str())
                .bind(&new.provider_name)
                .bind(&new.profile_name)
                .bind(new.free_busy_mode)
                .bind(&key_id)
                .bind(&access)
                .bind(&refresh)
                .bind(new.tokens.access_expires_at.unix_timestamp())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            // A new consent's refresh token: refreshes of the old one are moot.
            sqlx::query("DELETE FROM refresh_marks WHERE tenant_id = $1 AND sub = $2")
                .bind(tenant)
                .bind(&new.sub)
                .execute(&mut *tx)
                .await?;
            if let Some(user_ref) = user_ref {
                for binding in [BIND_USER_REF, REMEMBER_BINDING] {
                    sqlx::query(binding)
                        .bind(tenant)
                        .bind(user_ref)
                        .bind(&new.sub)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            if new.track_changes {
                sqlx::query(CHANNEL_PENDING)
                    .bind(tenant)
                    .bind(&new.sub)
                    .bind(now)
                    .bind(super::channels::new_channel_key())
                    .execute(&mut *tx)
                    .await?;
            }
            let seq = tx.record_change(tenant, &new.sub, &connected, now_ms).await?;
            // A revocation queued for an earlier consent must not end this one.
            let dropped = sqlx::query("DELETE FROM pending_revocations WHERE tenant_id = $1 AND sub = $2")
                .bind(tenant)
                .bind(&new.sub)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            // So is an erasure still waiting for the events it deleted to go:
            // the user is back, with the same account.
            let erasure_dropped = sqlx::query("DELETE FROM pending_erasures WHERE tenant_id = $1 AND sub = $2")
                .bind(tenant)
                .bind(&new.sub)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if erasure_dropped > 0 {
                let audit = GrantAudit {
                    kind: AuditKind::ErasureDropped,
                    actor,
                    detail: "the user consented again before Cronofy's deletes were seen applied".to_owned(),
                    now_ms,
                };
                tx.record_grant_audit(self, tenant, &new.sub, audit).await?;
            }
            if dropped > 0 {
                let audit = GrantAudit {
                    kind: AuditKind::RevocationDropped,
                    actor,
                    detail: "the user consented again before Cronofy took the queued revocation".to_owned(),
                    now_ms,
                };
                tx.record_grant_audit(self, tenant, &new.sub, audit).await?;
            }
            let audit = GrantAudit {
                kind: AuditKind::GrantConnected,
                actor,
                detail: format!("{} connect, {}", new.connect_mode.as_str(), new.kind.as_str()),
                now_ms,
            };
            tx.record_grant_audit(self, tenant, &new.sub, audit).await?;
            let row = sqlx::query_as::<_, GrantRow>(SELECT_BY_SUB)
                .bind(tenant)
                .bind(&new.sub)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            (row, seq)
        });
        self.feed.advance(tenant, seq);
        let mut stored = self.decode(tenant, row)?;
        if let Some(user_ref) = user_ref {
            stored.grant.user_ref = Some(user_ref.to_owned());
        }
        Ok(stored)
    }

    /// Finds a tenant's grant by sub or user_ref. Another tenant's grant is never found.
    pub async fn find_grant(&self, tenant: &str, selector: &GrantSelector) -> Result<Option<StoredGrant>, StoreError> {
        let (sql, key) = match selector {
            GrantSelector::Sub(sub) | GrantSelector::Erasing(sub) => (SELECT_BY_SUB, sub),
            GrantSelector::UserRef(user_ref) => (SELECT_BY_USER_REF, user_ref),
        };
        let row: Option<GrantRow> = with_pool!(self, pool => {
            sqlx::query_as::<_, GrantRow>(sql).bind(tenant).bind(key).fetch_optional(pool).await?
        });
        row.map(|row| self.decode(tenant, row)).transpose()
    }

    /// Replaces a grant's tokens if nobody wrote since `expected_version`
    /// (compare-and-swap). Returns the new version, or None when the grant moved on.
    pub async fn update_tokens(
        &self,
        tenant: &str,
        sub: &str,
        expected_version: i64,
        tokens: &Tokens,
    ) -> Result<Option<i64>, StoreError> {
        let (key_id, access, refresh) = seal(self, tenant, sub, tokens);
        let (now, _) = self.now();
        let updated = with_pool!(self, pool => {
            sqlx::query(UPDATE_TOKENS)
                .bind(&key_id)
                .bind(&access)
                .bind(&refresh)
                .bind(tokens.access_expires_at.unix_timestamp())
                .bind(now)
                .bind(tenant)
                .bind(sub)
                .bind(expected_version)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok((updated == 1).then_some(expected_version + 1))
    }

    /// Marks a grant as needing re-authorization if it is still at
    /// `expected_version`, recording the `REFRESH_REJECTED` change with it.
    /// `attempt` is the refresh's mark ([`Store::mark_refresh_started`]).
    pub async fn mark_needs_reauth(
        &self,
        tenant: &str,
        sub: &str,
        expected_version: i64,
        attempt: &str,
    ) -> Result<Option<StatusReason>, StoreError> {
        let marked = with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let marked = tx.mark_needs_reauth(self, tenant, sub, expected_version, attempt).await?;
            tx.commit().await?;
            marked
        });
        Ok(self.after_needs_reauth(tenant, marked))
    }

    /// Tells the feed of a change [`InTransaction::mark_needs_reauth`] recorded, and reads its reason.
    pub(super) fn after_needs_reauth(
        &self,
        tenant: &str,
        marked: Option<(Option<String>, i64)>,
    ) -> Option<StatusReason> {
        let (reason, seq) = marked?;
        self.feed.advance(tenant, seq);
        Some(
            reason
                .as_deref()
                .and_then(StatusReason::parse)
                .unwrap_or(StatusReason::InvalidGrant),
        )
    }

    /// Erases a grant's tokens and marks it revoked, recording the `REVOKED`
    /// change when it was not revoked already; None when there is no such grant.
    pub async fn revoke_grant(
        &self,
        tenant: &str,
        sub: &str,
        actor: &Actor,
        detail: String,
    ) -> Result<Option<StoredGrant>, StoreError> {
        let (now, now_ms) = self.now();
        let revoked = grant_payload(&GrantChange::new(GrantStatus::Revoked, GrantChangeReason::Revoked));
        let seq = with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let updated = sqlx::query(
                "UPDATE grants SET status = $1, key_id = NULL, access_token = NULL, refresh_token = NULL, \
                 access_expires_at = NULL, version = version + 1, updated_at = $2 \
                 WHERE tenant_id = $3 AND sub = $4 AND status <> $1",
            )
            .bind(GrantStatus::Revoked.as_str())
            .bind(now)
            .bind(tenant)
            .bind(sub)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let seq = if updated == 1 {
                let audit = GrantAudit { kind: AuditKind::GrantRevoked, actor, detail, now_ms };
                Some(tx.record_grant_change(self, tenant, sub, audit, &revoked).await?)
            } else {
                None
            };
            tx.commit().await?;
            seq
        });
        if let Some(seq) = seq {
            self.feed.advance(tenant, seq);
        }
        self.find_grant(tenant, &GrantSelector::Sub(sub.to_owned())).await
    }

    /// How many grants there are of each status.
    pub async fn count_grants_by_status(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, (String, i64)>("SELECT status, COUNT(*) FROM grants GROUP BY status")
                .fetch_all(pool)
                .await?
        }))
    }

    pub(super) fn decode(&self, tenant: &str, row: GrantRow) -> Result<StoredGrant, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("grant column {what}"));
        let open = |key_id: &str, blob: &[u8], purpose| -> Result<SecretString, StoreError> {
            Ok(self.cipher().open(key_id, blob, &binding(tenant, &row.sub, purpose))?)
        };
        let tokens = match (
            &row.key_id,
            &row.access_token,
            &row.refresh_token,
            row.access_expires_at,
        ) {
            (Some(key_id), Some(access), Some(refresh), Some(expires)) => Some(Tokens {
                access_token: open(key_id, access, ACCESS)?,
                refresh_token: open(key_id, refresh, REFRESH)?,
                access_expires_at: timestamp(expires).ok_or_else(|| corrupt("access_expires_at"))?,
            }),
            _ => None,
        };
        let grant = Grant {
            account_id: row.account_id,
            user_ref: row.bound_user_ref,
            scope: row.scope.split_whitespace().map(str::to_owned).collect(),
            connect_mode: ConnectMode::parse(&row.connect_mode).ok_or_else(|| corrupt("connect_mode"))?,
            kind: GrantKind::parse(&row.kind).ok_or_else(|| corrupt("kind"))?,
            status: GrantStatus::parse(&row.status).ok_or_else(|| corrupt("status"))?,
            provider_name: row.provider_name,
            profile_name: row.profile_name,
            free_busy_mode: row.free_busy_mode,
            created_at: timestamp(row.created_at).ok_or_else(|| corrupt("created_at"))?,
            updated_at: timestamp(row.updated_at).ok_or_else(|| corrupt("updated_at"))?,
            status_reason: row.status_reason.as_deref().and_then(StatusReason::parse),
            relink_url: row.relink_url,
            profiles: Profiles::from_stored(row.profiles.as_deref()).ok_or_else(|| corrupt("profiles"))?,
            change_tracking: match (row.channel_state.as_str(), row.event_tracking.as_str()) {
                ("pending", _) => ChangeTracking::Pending {
                    error: row.channel_error,
                },
                ("open", "off") => ChangeTracking::ProfileOnly,
                ("open", _) => ChangeTracking::Events,
                _ => ChangeTracking::Off,
            },
            sub: row.sub,
        };
        Ok(StoredGrant {
            grant,
            tokens,
            version: row.version,
            erasing: row.erasing,
        })
    }
}

fn timestamp(seconds: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(seconds).ok()
}
