//! Key rotation to completion (`calgate rekey`): every ciphertext the store
//! holds — grants' tokens whatever their status, queued writes' events
//! (`rekey_queued.rs`), the audit pseudonym key, the spill directory's pairs — re-sealed under the first configured key, while
//! replicas keep serving.
//!
//! A grant is rewritten by compare-and-swap on its version and key, and its
//! version is left as it is: a refresh that wrote meanwhile makes the rekey
//! skip the row (the next pass takes it), and a refresh that read the grant
//! before the rekey still writes — the tokens are the same, only their
//! sealing changed.

use std::collections::BTreeMap;

use super::{
    Store, StoreError,
    audit::AUDIT_KEY,
    grants::{ACCESS, REFRESH, binding, seal},
    with_pool,
};
use crate::domain::grant::Tokens;

/// Grants re-sealed per transaction-free batch.
const BATCH: i64 = 200;
/// Passes over the table before giving up on rows that keep moving.
const MAX_PASSES: u32 = 10;

/// Where a rekey stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RekeyProgress {
    /// Grants re-sealed so far, by tenant.
    pub rekeyed: BTreeMap<String, u64>,
    /// Rows a concurrent write changed first (taken again by the next pass).
    pub moved: u64,
    /// Grants whose ciphertexts cannot be opened with any configured key:
    /// (tenant, sub, key id). They stay as they are.
    pub unreadable: Vec<(String, String, String)>,
    /// Spilled pairs re-sealed.
    pub spilled: u64,
    /// Whether the audit pseudonym key was re-sealed.
    pub audit_key: bool,
    /// Queued writes' events re-sealed.
    pub queued_writes: u64,
}

impl RekeyProgress {
    /// Grants re-sealed, all tenants.
    pub fn total(&self) -> u64 {
        self.rekeyed.values().sum()
    }
}

#[derive(sqlx::FromRow)]
struct SealedRow {
    tenant_id: String,
    sub: String,
    key_id: String,
    access_token: Vec<u8>,
    refresh_token: Vec<u8>,
    access_expires_at: i64,
    version: i64,
}

impl Store {
    /// Grants counted by key id (`calgate_grants_by_key`); grants without
    /// tokens (revoked) have no key and are not counted.
    pub async fn count_grants_by_key(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT key_id, COUNT(*) FROM grants WHERE key_id IS NOT NULL GROUP BY key_id",
            )
            .fetch_all(pool)
            .await?
        }))
    }

    /// Ciphertexts still sealed under another key than the current one:
    /// grants, queued writes' events and the audit key (the spill directory
    /// is the replica's own).
    pub async fn count_under_old_keys(&self) -> Result<i64, StoreError> {
        let current = self.cipher().current_key_id();
        Ok(with_pool!(self, pool => {
            let grants: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM grants WHERE key_id IS NOT NULL AND key_id <> $1")
                .bind(current)
                .fetch_one(pool)
                .await?;
            let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM store_keys WHERE key_id <> $1")
                .bind(current)
                .fetch_one(pool)
                .await?;
            let queued: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM queued_writes WHERE body IS NOT NULL AND key_id <> $1")
                    .bind(current)
                    .fetch_one(pool)
                    .await?;
            grants + keys + queued
        }))
    }

    /// Re-seals everything under the current key; `report` is told after
    /// every batch. Idempotent: a second run finds nothing to do.
    pub async fn rekey(&self, mut report: impl FnMut(&RekeyProgress)) -> Result<RekeyProgress, StoreError> {
        let mut progress = RekeyProgress::default();
        for _ in 0..MAX_PASSES {
            let moved_before = progress.moved;
            self.rekey_pass(&mut progress, &mut report).await?;
            // Rows a refresh rewrote meanwhile are taken by another pass.
            if progress.moved == moved_before {
                break;
            }
        }
        self.rekey_queued_writes(&mut progress).await?;
        progress.audit_key = self.rekey_audit_key().await?;
        progress.spilled = self.rekey_spilled();
        report(&progress);
        Ok(progress)
    }

    /// One pass over every grant under another key, in (tenant, sub) order.
    async fn rekey_pass(
        &self,
        progress: &mut RekeyProgress,
        report: &mut impl FnMut(&RekeyProgress),
    ) -> Result<(), StoreError> {
        let current = self.cipher().current_key_id().to_owned();
        let (mut after_tenant, mut after_sub) = (String::new(), String::new());
        loop {
            let rows: Vec<SealedRow> = with_pool!(self, pool => {
                sqlx::query_as(
                    "SELECT tenant_id, sub, key_id, access_token, refresh_token, access_expires_at, version FROM grants \
                     WHERE key_id IS NOT NULL AND key_id <> $1 AND access_token IS NOT NULL \
                     AND refresh_token IS NOT NULL AND access_expires_at IS NOT NULL \
                     AND (tenant_id > $2 OR (tenant_id = $2 AND sub > $3)) \
                     ORDER BY tenant_id, sub LIMIT $4",
                )
                .bind(&current)
                .bind(&after_tenant)
                .bind(&after_sub)
                .bind(BATCH)
                .fetch_all(pool)
                .await?
            });
            let Some(last) = rows.last() else { return Ok(()) };
            (after_tenant, after_sub) = (last.tenant_id.clone(), last.sub.clone());
            for row in rows {
                self.rekey_grant(row, progress).await?;
            }
            report(progress);
        }
    }

    async fn rekey_grant(&self, row: SealedRow, progress: &mut RekeyProgress) -> Result<(), StoreError> {
        let cipher = self.cipher();
        let opened = cipher
            .open(
                &row.key_id,
                &row.access_token,
                &binding(&row.tenant_id, &row.sub, ACCESS),
            )
            .and_then(|access| {
                cipher
                    .open(
                        &row.key_id,
                        &row.refresh_token,
                        &binding(&row.tenant_id, &row.sub, REFRESH),
                    )
                    .map(|refresh| (access, refresh))
            });
        let Ok((access_token, refresh_token)) = opened else {
            progress.unreadable.push((row.tenant_id, row.sub, row.key_id));
            return Ok(());
        };
        let tokens = Tokens {
            access_token,
            refresh_token,
            access_expires_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        let (key_id, access, refresh) = seal(self, &row.tenant_id, &row.sub, &tokens);
        let updated = with_pool!(self, pool => {
            sqlx::query(
                "UPDATE grants SET key_id = $1, access_token = $2, refresh_token = $3 \
                 WHERE tenant_id = $4 AND sub = $5 AND version = $6 AND key_id = $7 AND access_expires_at = $8",
            )
            .bind(&key_id)
            .bind(&access)
            .bind(&refresh)
            .bind(&row.tenant_id)
            .bind(&row.sub)
            .bind(row.version)
            .bind(&row.key_id)
            .bind(row.access_expires_at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if updated == 1 {
            *progress.rekeyed.entry(row.tenant_id).or_default() += 1;
        } else {
            progress.moved += 1;
        }
        Ok(())
    }

    /// Keeps only the pseudonym key's copy under the current key (connect
    /// made it); true when older copies were removed.
    async fn rekey_audit_key(&self) -> Result<bool, StoreError> {
        let current = self.cipher().current_key_id().to_owned();
        let sealed = self.sealed_audit_keys().await?;
        if !sealed.iter().any(|(key_id, _)| *key_id == current) {
            return Err(StoreError::Corrupt(
                "the audit trail's key has no copy under the current key".to_owned(),
            ));
        }
        let removed = with_pool!(self, pool => {
            sqlx::query("DELETE FROM store_keys WHERE name = $1 AND key_id <> $2")
                .bind(AUDIT_KEY)
                .bind(&current)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(removed > 0)
    }
}
