//! The credential store: grants, user_ref bindings, redeemed state nonces and
//! the change stream, in SQLite (one machine) or PostgreSQL (several
//! replicas), chosen by `store.url`. Both run the same SQL (`$N` placeholders work in both) and
//! their own embedded migrations. Tokens are encrypted before they reach the
//! database and decrypted after they leave it; nothing else in calgate sees a
//! ciphertext.

mod audit;
mod authorizations;
mod changes;
mod channel_checks;
mod channels;
mod claim_order;
mod crypto;
mod erasure;
mod event_ids;
mod grants;
mod in_transaction;
mod lease;
mod notifications;
mod pending_erasures;
mod queued_writes;
mod refresh_ahead;
mod refresh_marks;
mod rekey;
mod rekey_queued;
mod revocations;
mod shared;
mod spill;
mod states;

use std::{str::FromStr, sync::Arc, time::Duration};

use tokio::sync::Semaphore;

use secrecy::ExposeSecret;
use sqlx::{
    PgPool, SqlitePool,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

pub use audit::{AuditQuery, ChainReport};
pub use authorizations::{AuthorizationRecord, AuthorizationStatus};
pub use changes::{ChangeFeed, ChangePage, StreamPosition};
pub use channel_checks::ChannelToCheck;
pub use channels::{ChannelOwner, DueChannel, OpenedChannel, is_channel_key};
pub use claim_order::ClaimRoom;
pub use crypto::CryptoError;
use crypto::TokenCipher;
pub use erasure::{ForgottenUser, PurgeTarget, PurgedRows};
pub use grants::NewGrant;
pub use lease::GrantLease;
pub use notifications::{QueuedNotification, notification_id};
pub use pending_erasures::{ErasureBacklog, PendingErasure};
pub use queued_writes::{ClaimedWrite, NewWrite};
pub use refresh_ahead::RefreshCandidate;
pub use rekey::RekeyProgress;
pub use revocations::PendingRevocation;
pub use shared::{BreakerRecord, RateClaim};
pub use spill::SpilledPair;

use crate::{
    clock::Clock,
    config::{EncryptionKey, StoreBackend, StoreSettings},
};

/// Failures of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or refused the operation.
    #[error("credential store unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("credential store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// `store.auto_migrate` is off and the database lacks migrations this version needs.
    #[error("credential store is not migrated ({missing} pending): run `calgate migrate --config …` first")]
    NotMigrated {
        /// How many migrations are pending.
        missing: usize,
    },
    /// A stored value cannot be decrypted or parsed.
    #[error("stored grant is unreadable: {0}")]
    Corrupt(String),
    /// `store.spill_dir` cannot be written: a refreshed pair the store
    /// refused could not survive a crash.
    #[error(
        "store.spill_dir {dir} is not writable ({reason}): refreshed tokens the store refuses would not survive a crash; \
         make it writable or set store.spill_dir"
    )]
    SpillDirUnwritable {
        /// The directory.
        dir: String,
        /// The operating system's answer.
        reason: String,
    },
}

impl From<CryptoError> for StoreError {
    fn from(error: CryptoError) -> Self {
        StoreError::Corrupt(error.to_string())
    }
}

/// Which database holds the store.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    /// One machine.
    Sqlite(SqlitePool),
    /// Several replicas.
    Postgres(PgPool),
}

/// Runs the same code against whichever pool the store has: `$pool` is bound
/// to a `&SqlitePool` or a `&PgPool`, and both arms must produce one type.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite($pool) => $body,
            $crate::store::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Begins a transaction that writes. On SQLite (WAL) it is `BEGIN IMMEDIATE`:
/// the write lock is taken when it begins, waiting up to `busy_timeout`. A
/// deferred transaction that reads before it writes fails at once with
/// SQLITE_BUSY when another connection committed in between (busy_timeout
/// does not cover that upgrade): a store error with nothing wrong.
/// PostgreSQL begins as usual.
pub(crate) trait BeginWrite {
    /// The pool's database.
    type Database: sqlx::Database;
    /// A transaction holding (on SQLite) the write lock.
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Database>, sqlx::Error>> + Send;
}

impl BeginWrite for SqlitePool {
    type Database = sqlx::Sqlite;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error>> + Send {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

impl BeginWrite for PgPool {
    type Database = sqlx::Postgres;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error>> + Send {
        self.begin()
    }
}

/// Connections of the PostgreSQL counters pool ([`Store`]).
const COUNTER_CONNECTIONS: u32 = 2;

/// PostgreSQL session settings of every calgate connection:
/// - a transaction left idle this long (a lease whose replica was partitioned
///   away, or hung) is ended by the server, and its row locks with it;
/// - the server probes a silent client after 5 s, every 2 s, 3 times: a dead
///   replica's connection (and locks) are gone in about 11 s.
///
/// A lease is idle in its transaction only while one Cronofy attempt runs
/// (`upstream.request_timeout`), so the timeout is that plus a margin.
fn session_settings(request_timeout: Duration) -> Vec<(&'static str, String)> {
    let idle = request_timeout + Duration::from_secs(5);
    vec![
        ("idle_in_transaction_session_timeout", format!("{}", idle.as_millis())),
        ("tcp_keepalives_idle", "5".into()),
        ("tcp_keepalives_interval", "2".into()),
        ("tcp_keepalives_count", "3".into()),
    ]
}

/// The credential store.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) backend: Backend,
    /// PostgreSQL only: a small pool of its own for the counters replicas share
    /// (request budgets, breakers). Refreshes hold a grant's lease — a pooled
    /// connection — while they ask Cronofy, and asking Cronofy takes budget: with
    /// one pool, a storm of refreshes could hold every connection and wait for
    /// budget forever. Losing a counter's last write in a crash costs nothing,
    /// so these commits do not wait for the disk.
    counters: Option<PgPool>,
    /// PostgreSQL only: one connection of its own for readiness probes, so a
    /// busy main pool never turns a replica NOT_SERVING.
    probe: Option<PgPool>,
    /// Refresh leases held at once: well under the main pool's size, so
    /// refreshes waiting on Cronofy never take every connection.
    leases: Arc<Semaphore>,
    /// `store.spill_dir`: where refreshed pairs the store refused are kept.
    spill_dir: Option<std::path::PathBuf>,
    cipher: Arc<TokenCipher>,
    /// Wakes this replica's change watchers.
    feed: Arc<ChangeFeed>,
    /// The audit trail's pseudonym key (HMAC of subs and user_refs), read
    /// from `store_keys` at connect.
    audit_key: Arc<audit::AuditKey>,
    /// The time every row is stamped with: the same clock as the domain's,
    /// so a test that moves time moves both.
    clock: Clock,
}

impl Store {
    /// Connects to `store.url`. Pending migrations are applied when
    /// `store.auto_migrate` is on (the default); otherwise run `calgate migrate` first.
    pub async fn connect(settings: &StoreSettings, keys: &[EncryptionKey]) -> Result<Store, StoreError> {
        let (backend, counters, probe) = if settings.backend() == StoreBackend::Sqlite {
            (Backend::Sqlite(sqlite_pool(settings).await?), None, None)
        } else {
            let mut options =
                PgConnectOptions::from_str(&settings.url)?.options(session_settings(settings.upstream_request_timeout));
            if let Some(password) = &settings.password {
                options = options.password(password.expose_secret());
            }
            let pool = PgPoolOptions::new()
                .max_connections(settings.max_connections)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options.clone())
                .await?;
            let counters = PgPoolOptions::new()
                .max_connections(COUNTER_CONNECTIONS)
                .acquire_timeout(Duration::from_secs(5))
                .connect_lazy_with(options.clone().options([("synchronous_commit", "off")]));
            let probe = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(2))
                .connect_lazy_with(options);
            (Backend::Postgres(pool), Some(counters), Some(probe))
        };
        if let Some(dir) = &settings.spill_dir {
            spill::check_writable(dir).map_err(|failure| StoreError::SpillDirUnwritable {
                dir: dir.display().to_string(),
                reason: failure.to_string(),
            })?;
        }
        let mut store = Store {
            backend,
            counters,
            probe,
            leases: Arc::new(Semaphore::new(max_leases(settings.max_connections))),
            spill_dir: settings.spill_dir.clone(),
            cipher: Arc::new(TokenCipher::new(keys)),
            feed: Arc::default(),
            audit_key: Arc::new(audit::AuditKey::default()),
            clock: Clock::default(),
        };
        if settings.auto_migrate {
            store.migrate().await?;
        } else {
            store.check_migrated().await?;
        }
        store.audit_key = Arc::new(store.load_audit_key().await?);
        Ok(store)
    }

    /// Refuses a database that lacks migrations this version needs.
    async fn check_migrated(&self) -> Result<(), StoreError> {
        let (migrator, applied) = match &self.backend {
            Backend::Sqlite(pool) => (sqlx::migrate!("migrations/sqlite"), applied_versions(pool).await?),
            Backend::Postgres(pool) => (sqlx::migrate!("migrations/postgres"), applied_versions(pool).await?),
        };
        let missing = migrator.iter().filter(|m| !applied.contains(&m.version)).count();
        if missing > 0 {
            return Err(StoreError::NotMigrated { missing });
        }
        Ok(())
    }

    /// Applies pending migrations of the store's backend.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(pool) => sqlx::migrate!("migrations/sqlite").run(pool).await?,
            Backend::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// Whether this store is shared by replicas (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Cheap liveness check used by the health reporter (on its own
    /// connection with PostgreSQL).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.probe {
            Some(probe) => sqlx::query("SELECT 1").execute(probe).await.map(drop)?,
            None => with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))?,
        }
        Ok(())
    }

    /// Ids of the configured encryption keys, the current (sealing) one first.
    pub fn key_ids(&self) -> Vec<String> {
        self.cipher.key_ids().map(str::to_owned).collect()
    }

    pub(crate) fn cipher(&self) -> &TokenCipher {
        &self.cipher
    }
}

/// Versions recorded by sqlx's migrator; none when it never ran (no table).
/// Any other failure is the store's, not "not migrated".
async fn applied_versions<DB>(pool: &sqlx::Pool<DB>) -> Result<Vec<i64>, StoreError>
where
    DB: sqlx::Database,
    for<'a> &'a sqlx::Pool<DB>: sqlx::Executor<'a, Database = DB>,
    i64: sqlx::Type<DB> + for<'r> sqlx::Decode<'r, DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
{
    match sqlx::query_as::<_, (i64,)>("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(pool)
        .await
    {
        Ok(rows) => Ok(rows.into_iter().map(|(v,)| v).collect()),
        // SQLite: "no such table"; PostgreSQL: undefined_table (42P01).
        Err(sqlx::Error::Database(error))
            if error.code().as_deref() == Some("42P01") || error.message().contains("no such table") =>
        {
            Ok(Vec::new())
        }
        Err(error) => Err(StoreError::Unavailable(error)),
    }
}

async fn sqlite_pool(settings: &StoreSettings) -> Result<SqlitePool, StoreError> {
    let options = SqliteConnectOptions::from_str(&settings.url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: a refresh token, once committed, survives a power cut.
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        // Erased rows (ForgetUser, purge-tenant) leave zeroes, not readable bytes, in the file.
        .pragma("secure_delete", "ON")
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
    Ok(pool_options
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await?)
}

/// Refresh leases allowed at once for a main pool of `connections`: half of
/// it, at least one.
fn max_leases(connections: u32) -> usize {
    (connections as usize / 2).max(1)
}

impl Store {
    /// Stamps rows with `clock` from now on (the domain's clock; the wall
    /// clock by default).
    pub fn with_clock(mut self, clock: Clock) -> Store {
        self.clock = clock;
        self
    }

    /// Now, in unix seconds and milliseconds.
    fn now(&self) -> (i64, i64) {
        let now = self.clock.now();
        (now.unix_timestamp(), (now.unix_timestamp_nanos() / 1_000_000) as i64)
    }
}
