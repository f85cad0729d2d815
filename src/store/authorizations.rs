//! Enterprise Connect member authorizations.

use super::{Store, StoreError, with_pool};

/// Where a member authorization stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationStatus {
    /// Waiting for Cronofy's callback.
    Pending,
    /// A callback's code is being exchanged (claimed by one replica).
    Exchanging,
    /// The member's grant is stored.
    Completed,
    /// Cronofy reported a failure, or refused the code.
    Failed,
    /// No callback came within `callbacks.authorization_ttl`.
    Expired,
}

impl AuthorizationStatus {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorizationStatus::Pending => "pending",
            AuthorizationStatus::Exchanging => "exchanging",
            AuthorizationStatus::Completed => "completed",
            AuthorizationStatus::Failed => "failed",
            AuthorizationStatus::Expired => "expired",
        }
    }
}

/// A status column holding something calgate never wrote.
#[derive(Debug, thiserror::Error)]
#[error("unknown authorization status `{0}`")]
pub struct UnknownStatus(String);

impl TryFrom<String> for AuthorizationStatus {
    type Error = UnknownStatus;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Ok(match value.as_str() {
            "pending" => AuthorizationStatus::Pending,
            "exchanging" => AuthorizationStatus::Exchanging,
            "completed" => AuthorizationStatus::Completed,
            "failed" => AuthorizationStatus::Failed,
            "expired" => AuthorizationStatus::Expired,
            _ => return Err(UnknownStatus(value)),
        })
    }
}

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
    /// Where it stands.
    #[sqlx(try_from = "String")]
    pub status: AuthorizationStatus,
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
            .bind(record.status.as_str())
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

    /// Claims a pending authorization for one callback's code exchange, or
    /// takes over a claim made before `stale_before` (unix seconds) by a
    /// replica that died mid-exchange. False when another callback holds it
    /// or it has finished.
    pub async fn claim_authorization(&self, id: &str, stale_before: i64) -> Result<bool, StoreError> {
        let (now, _) = self.now();
        let updated = with_pool!(self, pool => {
            sqlx::query(
                "UPDATE enterprise_authorizations SET status = 'exchanging', updated_at = $1 \
                 WHERE id = $2 AND (status = 'pending' OR (status = 'exchanging' AND updated_at < $3))",
            )
            .bind(now)
            .bind(id)
            .bind(stale_before)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }

    /// Hands a claimed authorization back (the exchange failed transiently):
    /// Cronofy's next callback, or a new request, may complete it.
    pub async fn release_authorization(&self, id: &str) -> Result<(), StoreError> {
        let (now, _) = self.now();
        with_pool!(self, pool => {
            sqlx::query(
                "UPDATE enterprise_authorizations SET status = 'pending', updated_at = $1 \
                 WHERE id = $2 AND status = 'exchanging'",
            )
            .bind(now)
            .bind(id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Marks a pending authorization created before `created_before` (unix
    /// seconds) EXPIRED. False when it was not pending or is younger.
    pub async fn expire_authorization(&self, id: &str, created_before: i64) -> Result<bool, StoreError> {
        let (now, _) = self.now();
        let updated = with_pool!(self, pool => {
            sqlx::query(
                "UPDATE enterprise_authorizations SET status = 'expired', updated_at = $1 \
                 WHERE id = $2 AND status = 'pending' AND created_at < $3",
            )
            .bind(now)
            .bind(id)
            .bind(created_before)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }

    /// Completes or fails a pending or claimed authorization. False when it had already finished.
    pub async fn finish_authorization(
        &self,
        id: &str,
        status: AuthorizationStatus,
        error_key: Option<&str>,
        grant_sub: Option<&str>,
    ) -> Result<bool, StoreError> {
        let (now, _) = self.now();
        let updated = with_pool!(self, pool => {
            sqlx::query(
                "UPDATE enterprise_authorizations SET status = $1, error_key = $2, grant_sub = $3, updated_at = $4 \
                 WHERE id = $5 AND status IN ('pending', 'exchanging')",
            )
            .bind(status.as_str())
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
