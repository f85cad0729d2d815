//! A grant held for refreshing. On PostgreSQL the lease is a row lock
//! (`SELECT … FOR UPDATE`) inside a transaction: replicas that want the same
//! grant wait for it, re-read the grant when they get it, and a replica that
//! dies mid-refresh loses the lock with its connection — its transaction, and
//! any write it had not committed, are rolled back, so a replica that lost its
//! lease never writes. On SQLite (one process) the in-process refresh flight
//! is the lease; writes are compare-and-swap either way.

use sqlx::{Postgres, Transaction};
use tokio::sync::OwnedSemaphorePermit;

use super::{
    Backend, Store, StoreError,
    grants::{GrantRow, SELECT_BY_SUB, UPDATE_TOKENS, seal},
    in_transaction::InTransaction,
};
use crate::domain::grant::{GrantSelector, StatusReason, StoredGrant, Tokens};

/// Longest a replica waits for another's refresh of the same grant; above the
/// retry ceiling of a refresh call.
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '60s'";

/// A grant re-read under its lease.
#[derive(Debug)]
pub struct GrantLease {
    store: Store,
    tenant: String,
    sub: String,
    grant: Option<StoredGrant>,
    transaction: Option<Transaction<'static, Postgres>>,
    /// One of the store's lease places, held until the lease ends.
    _place: OwnedSemaphorePermit,
}

impl Store {
    /// Takes the grant's lease and re-reads it inside. Waits for one of the
    /// store's lease places first (half the main pool), so leases never hold
    /// every connection.
    pub async fn lease_grant(&self, tenant: &str, sub: &str) -> Result<GrantLease, StoreError> {
        let place = self
            .leases
            .clone()
            .acquire_owned()
            .await
            .expect("the lease semaphore is never closed");
        let (grant, transaction) = match &self.backend {
            Backend::Sqlite(_) => (
                self.find_grant(tenant, &GrantSelector::Sub(sub.to_owned())).await?,
                None,
            ),
            Backend::Postgres(pool) => {
                let mut transaction = pool.begin().await?;
                sqlx::query(LOCK_TIMEOUT).execute(&mut *transaction).await?;
                let row = sqlx::query_as::<_, GrantRow>(&format!("{SELECT_BY_SUB} FOR UPDATE OF g"))
                    .bind(tenant)
                    .bind(sub)
                    .fetch_optional(&mut *transaction)
                    .await?;
                (row.map(|row| self.decode(tenant, row)).transpose()?, Some(transaction))
            }
        };
        Ok(GrantLease {
            store: self.clone(),
            tenant: tenant.to_owned(),
            sub: sub.to_owned(),
            grant,
            transaction,
            _place: place,
        })
    }
}

impl GrantLease {
    /// The grant as it is now, None if it does not exist.
    pub fn grant(&self) -> Option<&StoredGrant> {
        self.grant.as_ref()
    }

    /// Writes refreshed tokens if the grant is still at `version`, and ends the
    /// lease. Returns the new version, or None when the grant moved on.
    pub async fn store_tokens(self, version: i64, tokens: &Tokens) -> Result<Option<i64>, StoreError> {
        let Some(mut transaction) = self.transaction else {
            return self.store.update_tokens(&self.tenant, &self.sub, version, tokens).await;
        };
        let (key_id, access, refresh) = seal(&self.store, &self.tenant, &self.sub, tokens);
        let (now, _) = self.store.now();
        let updated = sqlx::query(UPDATE_TOKENS)
            .bind(&key_id)
            .bind(&access)
            .bind(&refresh)
            .bind(tokens.access_expires_at.unix_timestamp())
            .bind(now)
            .bind(&self.tenant)
            .bind(&self.sub)
            .bind(version)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        transaction.commit().await?;
        Ok((updated == 1).then_some(version + 1))
    }

    /// Marks the grant as needing re-authorization if still at `version`, and
    /// ends the lease. Returns why (None when the grant moved on).
    /// `attempt` is the refresh's mark ([`Store::mark_refresh_started`]).
    pub async fn mark_needs_reauth(self, version: i64, attempt: &str) -> Result<Option<StatusReason>, StoreError> {
        let Some(mut transaction) = self.transaction else {
            return self
                .store
                .mark_needs_reauth(&self.tenant, &self.sub, version, attempt)
                .await;
        };
        let marked = transaction
            .mark_needs_reauth(&self.store, &self.tenant, &self.sub, version, attempt)
            .await?;
        transaction.commit().await?;
        Ok(self.store.after_needs_reauth(&self.tenant, marked))
    }

    /// Ends the lease without writing.
    pub async fn release(self) {
        if let Some(transaction) = self.transaction {
            let _ = transaction.rollback().await;
        }
    }
}
