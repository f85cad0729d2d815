//! Enterprise Connect member authorizations.

use super::{Store, StoreError, now, with_pool};

/// One authorization as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuthorizationRecord {
    /// Random, unguessable id (also in the callback URL).
    pub id: String,
    /// The tenant that asked.
    pub tenant_id: String,
    /// The organisation's service-account grant.
    pub service_account_sub: String,
    /// The member's mailbox.
    pub email: String,
    /// The caller's id for the member.
    pub user_ref: String,
    /// Space-separated scopes asked for.
    pub scope: String,
    /// The exact callback URL sent to Cronofy (the code's redirect_uri).
    pub callback_url: String,
    /// `pending`, `completed` or `failed`.
    pub status: String,
    /// Cronofy's error_key when failed.
    pub error_key: Option<String>,
    /// The member's grant when completed.
    pub grant_sub: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

const COLUMNS: &str = "id, tenant_id, service_account_sub, email, user_ref, scope, callback_url, status, \
     error_key, grant_sub, created_at, updated_at";

impl Store {
    /// Records a new (pending) authorization.
    pub async fn create_authorization(&self, record: &AuthorizationRecord) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query(&format!(
                "INSERT INTO enterprise_authorizations ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ))
            .bind(&record.id)
            .bind(&record.tenant_id)
            .bind(&record.service_account_sub)
            .bind(&record.email)
            .bind(&record.user_ref)
            .bind(&record.scope)
            .bind(&record.callback_url)
            .bind(&record.status)
            .bind(&record.error_key)
            .bind(&record.grant_sub)
            .bind(record.created_at)
            .bind(record.updated_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// An authorization by id alone (the callback knows nothing else).
    pub async fn find_authorization(&self, id: &str) -> Result<Option<AuthorizationRecord>, StoreError> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, AuthorizationRecord>(&format!("SELECT {COLUMNS} FROM enterprise_authorizations WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Completes or fails a pending authorization. False when it was no longer pending.
    pub async fn finish_authorization(
        &self,
        id: &str,
        status: &str,
        error_key: Option<&str>,
        grant_sub: Option<&str>,
    ) -> Result<bool, StoreError> {
        let (now, _) = now();
        let updated = with_pool!(self, pool => {
            sqlx::query(
                "UPDATE enterprise_authorizations SET status = $1, error_key = $2, grant_sub = $3, updated_at = $4 \
                 WHERE id = $5 AND status = 'pending'",
            )
            .bind(status)
            .bind(error_key)
            .bind(grant_sub)
            .bind(now)
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }
}
