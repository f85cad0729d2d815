//! The credential store: grants, user_ref bindings and redeemed state nonces
//! in SQLite (sqlx, embedded migrations). Tokens are encrypted before they
//! reach the database and decrypted after they leave it; nothing else in
//! calgate sees a ciphertext.

mod crypto;

use std::{str::FromStr, time::Duration};

use sqlx::{
    Row, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous},
};
use time::OffsetDateTime;

pub use crypto::CryptoError;
use crypto::{Binding, TokenCipher};

use crate::{
    config::{EncryptionKey, StoreSettings},
    domain::grant::{ConnectMode, Grant, GrantKind, GrantSelector, GrantStatus, StoredGrant, Tokens},
};

/// Failures of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or refused the operation.
    #[error("credential store unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
    /// Migrations failed at start-up.
    #[error("credential store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value cannot be decrypted or parsed.
    #[error("stored grant is unreadable: {0}")]
    Corrupt(String),
}

impl From<CryptoError> for StoreError {
    fn from(error: CryptoError) -> Self {
        StoreError::Corrupt(error.to_string())
    }
}

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
}

/// The SQLite credential store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    cipher: std::sync::Arc<TokenCipher>,
}

const GRANT_COLUMNS: &str = "g.sub, g.account_id, g.scope, g.connect_mode, g.kind, g.status, g.provider_name, \
     g.profile_name, g.free_busy_mode, g.key_id, g.access_token, g.refresh_token, g.access_expires_at, \
     g.version, g.created_at, g.updated_at";

impl Store {
    /// Opens (creating if missing) the database and applies pending migrations.
    pub async fn connect(settings: &StoreSettings, keys: &[EncryptionKey]) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::from_str(&settings.url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a refresh token, once committed, survives a power cut.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let in_memory = settings.url.contains(":memory:") || settings.url.contains("mode=memory");
        // Every connection to `sqlite::memory:` is its own database: keep exactly one, forever.
        let pool_options = if in_memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(settings.max_connections)
        };
        let pool = pool_options
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(Store {
            pool,
            cipher: std::sync::Arc::new(TokenCipher::new(keys)),
        })
    }

    /// Cheap liveness check used by the health reporter.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Records a state nonce as redeemed. False when it already was.
    pub async fn claim_state_nonce(
        &self,
        tenant: &str,
        nonce: &str,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        // Expired nonces can never be presented again (the state's own expiry refuses them).
        sqlx::query("DELETE FROM redeemed_states WHERE expires_at < ?")
            .bind(now)
            .execute(&self.pool)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO redeemed_states (nonce, tenant_id, expires_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(nonce)
        .bind(tenant)
        .bind(expires_at.unix_timestamp())
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// Releases a claimed nonce after a failure that left the code unused, so the caller may retry.
    pub async fn release_state_nonce(&self, tenant: &str, nonce: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM redeemed_states WHERE nonce = ? AND tenant_id = ?")
            .bind(nonce)
            .bind(tenant)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores a freshly exchanged grant (new, or reconnected with the same sub)
    /// and binds `user_ref` to it, in one transaction.
    pub async fn save_grant(
        &self,
        tenant: &str,
        new: &NewGrant,
        user_ref: Option<&str>,
    ) -> Result<StoredGrant, StoreError> {
        let now = OffsetDateTime::now_utc();
        let key_id = self.cipher.current_key_id();
        let access = self
            .cipher
            .seal(&new.tokens.access_token, &binding(tenant, &new.sub, ACCESS));
        let refresh = self
            .cipher
            .seal(&new.tokens.refresh_token, &binding(tenant, &new.sub, REFRESH));
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO grants (tenant_id, sub, account_id, scope, connect_mode, kind, status, provider_name, \
             profile_name, free_busy_mode, key_id, access_token, refresh_token, access_expires_at, version, \
             created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?) \
             ON CONFLICT (tenant_id, sub) DO UPDATE SET account_id = excluded.account_id, scope = excluded.scope, \
             connect_mode = excluded.connect_mode, kind = excluded.kind, status = excluded.status, \
             provider_name = excluded.provider_name, profile_name = excluded.profile_name, \
             free_busy_mode = excluded.free_busy_mode, key_id = excluded.key_id, access_token = excluded.access_token, \
             refresh_token = excluded.refresh_token, access_expires_at = excluded.access_expires_at, \
             version = grants.version + 1, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(&new.sub)
        .bind(&new.account_id)
        .bind(new.scope.join(" "))
        .bind(new.connect_mode.as_str())
        .bind(new.kind.as_str())
        .bind(GrantStatus::Active.as_str())
        .bind(&new.provider_name)
        .bind(&new.profile_name)
        .bind(new.free_busy_mode)
        .bind(key_id)
        .bind(access)
        .bind(refresh)
        .bind(new.tokens.access_expires_at.unix_timestamp())
        .bind(now.unix_timestamp())
        .bind(now.unix_timestamp())
        .execute(&mut *tx)
        .await?;
        if let Some(user_ref) = user_ref {
            sqlx::query(
                "INSERT INTO user_refs (tenant_id, user_ref, sub, bound_at) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (tenant_id, user_ref) DO UPDATE SET sub = excluded.sub, bound_at = excluded.bound_at",
            )
            .bind(tenant)
            .bind(user_ref)
            .bind(&new.sub)
            .bind(unix_millis(now))
            .execute(&mut *tx)
            .await?;
        }
        let row = sqlx::query(&format!("{} WHERE g.tenant_id = ? AND g.sub = ?", select_by_sub()))
            .bind(tenant)
            .bind(tenant)
            .bind(&new.sub)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut stored = self.decode(tenant, &row)?;
        if let Some(user_ref) = user_ref {
            stored.grant.user_ref = Some(user_ref.to_owned());
        }
        Ok(stored)
    }

    /// Finds a tenant's grant by sub or user_ref. Another tenant's grant is never found.
    pub async fn find_grant(&self, tenant: &str, selector: &GrantSelector) -> Result<Option<StoredGrant>, StoreError> {
        let row = match selector {
            GrantSelector::Sub(sub) => {
                sqlx::query(&format!("{} WHERE g.tenant_id = ? AND g.sub = ?", select_by_sub()))
                    .bind(tenant)
                    .bind(tenant)
                    .bind(sub)
                    .fetch_optional(&self.pool)
                    .await?
            }
            GrantSelector::UserRef(user_ref) => {
                sqlx::query(&format!(
                    "SELECT {GRANT_COLUMNS}, u.user_ref AS bound_user_ref FROM user_refs u \
                     JOIN grants g ON g.tenant_id = u.tenant_id AND g.sub = u.sub \
                     WHERE u.tenant_id = ? AND u.user_ref = ?"
                ))
                .bind(tenant)
                .bind(user_ref)
                .fetch_optional(&self.pool)
                .await?
            }
        };
        row.map(|row| self.decode(tenant, &row)).transpose()
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
        let access = self.cipher.seal(&tokens.access_token, &binding(tenant, sub, ACCESS));
        let refresh = self.cipher.seal(&tokens.refresh_token, &binding(tenant, sub, REFRESH));
        let updated = sqlx::query(
            "UPDATE grants SET key_id = ?, access_token = ?, refresh_token = ?, access_expires_at = ?, \
             version = version + 1, updated_at = ? WHERE tenant_id = ? AND sub = ? AND version = ?",
        )
        .bind(self.cipher.current_key_id())
        .bind(access)
        .bind(refresh)
        .bind(tokens.access_expires_at.unix_timestamp())
        .bind(OffsetDateTime::now_utc().unix_timestamp())
        .bind(tenant)
        .bind(sub)
        .bind(expected_version)
        .execute(&self.pool)
        .await?;
        Ok((updated.rows_affected() == 1).then_some(expected_version + 1))
    }

    /// Erases a grant's tokens and marks it revoked; None when there is no such grant.
    pub async fn revoke_grant(&self, tenant: &str, sub: &str) -> Result<Option<StoredGrant>, StoreError> {
        sqlx::query(
            "UPDATE grants SET status = ?, key_id = NULL, access_token = NULL, refresh_token = NULL, \
             access_expires_at = NULL, version = version + 1, updated_at = ? WHERE tenant_id = ? AND sub = ?",
        )
        .bind(GrantStatus::Revoked.as_str())
        .bind(OffsetDateTime::now_utc().unix_timestamp())
        .bind(tenant)
        .bind(sub)
        .execute(&self.pool)
        .await?;
        self.find_grant(tenant, &GrantSelector::Sub(sub.to_owned())).await
    }

    /// Marks a grant as needing re-authorization if it is still at `expected_version`.
    pub async fn mark_needs_reauth(&self, tenant: &str, sub: &str, expected_version: i64) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE grants SET status = ?, version = version + 1, updated_at = ? \
             WHERE tenant_id = ? AND sub = ? AND version = ?",
        )
        .bind(GrantStatus::NeedsReauth.as_str())
        .bind(OffsetDateTime::now_utc().unix_timestamp())
        .bind(tenant)
        .bind(sub)
        .bind(expected_version)
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    fn decode(&self, tenant: &str, row: &SqliteRow) -> Result<StoredGrant, StoreError> {
        let sub: String = row.try_get("sub")?;
        let corrupt = |what: &str| StoreError::Corrupt(format!("grant column {what}"));
        let key_id: Option<String> = row.try_get("key_id")?;
        let access: Option<Vec<u8>> = row.try_get("access_token")?;
        let refresh: Option<Vec<u8>> = row.try_get("refresh_token")?;
        let expires: Option<i64> = row.try_get("access_expires_at")?;
        let tokens = match (key_id, access, refresh, expires) {
            (Some(key_id), Some(access), Some(refresh), Some(expires)) => Some(Tokens {
                access_token: self.cipher.open(&key_id, &access, &binding(tenant, &sub, ACCESS))?,
                refresh_token: self.cipher.open(&key_id, &refresh, &binding(tenant, &sub, REFRESH))?,
                access_expires_at: timestamp(expires).ok_or_else(|| corrupt("access_expires_at"))?,
            }),
            _ => None,
        };
        let scope: String = row.try_get("scope")?;
        let grant = Grant {
            account_id: row.try_get("account_id")?,
            user_ref: row.try_get("bound_user_ref")?,
            scope: scope.split_whitespace().map(str::to_owned).collect(),
            connect_mode: ConnectMode::parse(row.try_get("connect_mode")?).ok_or_else(|| corrupt("connect_mode"))?,
            kind: GrantKind::parse(row.try_get("kind")?).ok_or_else(|| corrupt("kind"))?,
            status: GrantStatus::parse(row.try_get("status")?).ok_or_else(|| corrupt("status"))?,
            provider_name: row.try_get("provider_name")?,
            profile_name: row.try_get("profile_name")?,
            free_busy_mode: row.try_get("free_busy_mode")?,
            created_at: timestamp(row.try_get("created_at")?).ok_or_else(|| corrupt("created_at"))?,
            updated_at: timestamp(row.try_get("updated_at")?).ok_or_else(|| corrupt("updated_at"))?,
            sub,
        };
        Ok(StoredGrant {
            grant,
            tokens,
            version: row.try_get("version")?,
        })
    }
}

const ACCESS: &str = "access_token";
const REFRESH: &str = "refresh_token";

fn binding<'a>(tenant: &'a str, sub: &'a str, purpose: &'static str) -> Binding<'a> {
    Binding { tenant, sub, purpose }
}

/// Selects a grant with the user_ref bound to it most recently (binds: tenant, then the WHERE clause's).
fn select_by_sub() -> String {
    format!(
        "SELECT {GRANT_COLUMNS}, (SELECT u.user_ref FROM user_refs u WHERE u.tenant_id = ? AND u.sub = g.sub \
         ORDER BY u.bound_at DESC, u.rowid DESC LIMIT 1) AS bound_user_ref FROM grants g"
    )
}

fn timestamp(seconds: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(seconds).ok()
}

fn unix_millis(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}
