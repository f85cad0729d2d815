//! Filling a store with grants: real ones, sealed through calgate's own save
//! path with tokens the fake accepts, and SQL-made copies to reach a million
//! rows quickly (their ciphertexts are bound to another sub and never read).

use calgate::{
    domain::grant::{ConnectMode, GrantKind, Tokens},
    store::{NewGrant, Store},
};
use fake_cronofy::ConnectedAccount;
use futures::{StreamExt, TryStreamExt, stream};
use secrecy::SecretString;
use sqlx::{Connection, Executor};
use time::OffsetDateTime;

use crate::harness::{Bench, SCOPE, TENANT};

/// A grant the scenarios call with.
#[derive(Debug, Clone)]
pub struct Seeded {
    /// The caller's id bound to it.
    pub user_ref: String,
    /// Its writable calendar.
    pub calendar_id: String,
    /// Its account's sub.
    pub sub: String,
}

/// Connects an account in the fake for each n in `range` and stores its
/// grant bound to `user-{n}`, the access token stored as expiring at `expires_at`.
pub async fn seed(
    bench: &Bench,
    store: &Store,
    range: std::ops::Range<usize>,
    expires_at: OffsetDateTime,
) -> anyhow::Result<Vec<Seeded>> {
    let accounts = range.map(|n| (format!("user-{n}"), bench.connect())).collect();
    seed_accounts(store, accounts, expires_at).await
}

/// The grant ExchangeCode would store for `account`, bound to `user_ref`;
/// `track_changes` asks for a push notification channel.
pub fn new_grant(
    account: &ConnectedAccount,
    user_ref: &str,
    expires_at: OffsetDateTime,
    track_changes: bool,
) -> NewGrant {
    NewGrant {
        sub: account.sub.clone(),
        account_id: account.sub.clone(),
        scope: vec![SCOPE.to_owned()],
        connect_mode: ConnectMode::Individual,
        kind: GrantKind::User,
        provider_name: "google".into(),
        profile_name: format!("{user_ref}@example.com"),
        track_changes,
        free_busy_mode: false,
        tokens: Tokens {
            access_token: SecretString::from(account.access_token.clone()),
            refresh_token: SecretString::from(account.refresh_token.clone()),
            access_expires_at: expires_at,
        },
    }
}

/// Connects `count` accounts in the fake and stores their grants, bound to
/// `user-{n}`, grant n's access token stored as expiring at `expires_at(n)`.
pub async fn seed_expiring(
    bench: &Bench,
    store: &Store,
    count: usize,
    expires_at: impl Fn(usize) -> OffsetDateTime,
) -> anyhow::Result<Vec<Seeded>> {
    let grants = (0..count)
        .map(|n| (format!("user-{n}"), bench.connect(), expires_at(n)))
        .collect();
    store_grants(store, TENANT, grants).await
}

/// Connects `count` accounts in the fake and stores their grants for `tenant`, bound to `{prefix}-{n}`.
pub async fn seed_for_tenant(
    bench: &Bench,
    store: &Store,
    tenant: &str,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<Seeded>> {
    let expires_at = OffsetDateTime::now_utc() + time::Duration::hours(20);
    let grants = (0..count)
        .map(|n| (format!("{prefix}-{n}"), bench.connect(), expires_at))
        .collect();
    store_grants(store, tenant, grants).await
}

/// Stores a grant for each (user_ref, account), 16 at a time.
pub async fn seed_accounts(
    store: &Store,
    accounts: Vec<(String, ConnectedAccount)>,
    expires_at: OffsetDateTime,
) -> anyhow::Result<Vec<Seeded>> {
    let grants = accounts
        .into_iter()
        .map(|(user_ref, account)| (user_ref, account, expires_at))
        .collect();
    store_grants(store, TENANT, grants).await
}

/// Stores a grant of `tenant` for each (user_ref, account, access token expiry), 16 at a time.
async fn store_grants(
    store: &Store,
    tenant: &str,
    grants: Vec<(String, ConnectedAccount, OffsetDateTime)>,
) -> anyhow::Result<Vec<Seeded>> {
    stream::iter(grants)
        .map(|(user_ref, account, expires_at)| async move {
            let grant = new_grant(&account, &user_ref, expires_at, false);
            store
                .save_grant(
                    tenant,
                    &grant,
                    Some(&user_ref),
                    &calgate::domain::audit::Actor::operator(),
                )
                .await?;
            anyhow::Ok(Seeded {
                user_ref,
                calendar_id: account.calendar_id,
                sub: account.sub,
            })
        })
        .buffer_unordered(16)
        .try_collect()
        .await
}

/// Adds `count` copies of the grant bound to `template_ref`, each with its
/// own sub and user_ref, in SQL (one statement per table).
pub async fn add_copies(store_url: &str, template_ref: &str, count: u64) -> anyhow::Result<()> {
    let template = template_ref;
    let columns = "scope, connect_mode, kind, status, provider_name, profile_name, free_busy_mode, \
                   key_id, access_token, refresh_token, access_expires_at, version, created_at, updated_at";
    let grants = format!(
        "INSERT INTO grants (tenant_id, sub, account_id, {columns}) \
         SELECT g.tenant_id, 'copy_' || seq.n, 'copy_' || seq.n, {g_columns} \
         FROM seq, grants g JOIN user_refs u ON u.tenant_id = g.tenant_id AND u.sub = g.sub \
         WHERE u.tenant_id = '{TENANT}' AND u.user_ref = '{template}'",
        g_columns = columns
            .split(", ")
            .map(|c| format!("g.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let user_refs = format!(
        "INSERT INTO user_refs (tenant_id, user_ref, sub, bound_at) \
         SELECT '{TENANT}', 'copy-' || seq.n, 'copy_' || seq.n, 0 FROM seq"
    );
    if calgate::config::StoreBackend::of(store_url) == Some(calgate::config::StoreBackend::Sqlite) {
        let seq = format!("WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < {count}) ");
        let mut conn = sqlx::SqliteConnection::connect(store_url).await?;
        let mut tx = conn.begin().await?;
        tx.execute(format!("{seq}{grants}").as_str()).await?;
        tx.execute(format!("{seq}{user_refs}").as_str()).await?;
        tx.commit().await?;
        // As after any bulk import: fold the write-ahead log into the database,
        // or every later read must search a log of a million rows first.
        // (No ANALYZE: calgate never runs it on SQLite; docs/benchmarks.md.)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").await?;
    } else {
        let seq = format!("WITH seq(n) AS (SELECT generate_series(1, {count})) ");
        let mut conn = sqlx::PgConnection::connect(store_url).await?;
        let mut tx = conn.begin().await?;
        tx.execute(format!("{seq}{grants}").as_str()).await?;
        tx.execute(format!("{seq}{user_refs}").as_str()).await?;
        tx.commit().await?;
        conn.execute("ANALYZE grants; ANALYZE user_refs").await?;
    }
    Ok(())
}
