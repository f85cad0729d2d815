//! Throw-away PostgreSQL databases for tests. The server comes from one
//! environment variable, CALGATE_TEST_POSTGRES_URL (an admin URL such as
//! postgres://postgres@127.0.0.1:5432/postgres); .ci/run always sets it, and
//! under CI a missing variable fails the test instead of skipping it.

use std::io::Write;

use sqlx::{Connection, Executor, PgConnection};

pub const ENV: &str = "CALGATE_TEST_POSTGRES_URL";
/// Set: a missing PostgreSQL fails the tests instead of skipping them.
const REQUIRE: &str = "CALGATE_REQUIRE_POSTGRES";

/// A database created for one test and dropped (WITH FORCE) when it ends.
pub struct PgTestDb {
    pub url: String,
    pub name: String,
    admin: String,
}

impl PgTestDb {
    /// A fresh database, or None (skip) when no server is configured — which
    /// fails instead under CI or `CALGATE_REQUIRE_POSTGRES` (set by .ci/run).
    pub async fn create() -> Option<PgTestDb> {
        let Ok(admin) = std::env::var(ENV) else {
            assert!(
                std::env::var_os("CI").is_none() && std::env::var_os(REQUIRE).is_none(),
                "{ENV} must be set: PostgreSQL tests never skip under CI or {REQUIRE}"
            );
            // Straight to the terminal: libtest captures eprintln!, and a skip must be seen.
            let test = std::thread::current().name().unwrap_or("a test").to_owned();
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: no PostgreSQL (set {ENV} to run it)");
            return None;
        };
        let name = format!("calgate_test_{}", hex::encode(rand::random::<[u8; 6]>()));
        let mut conn = PgConnection::connect(&admin)
            .await
            .expect("connect to the test PostgreSQL server");
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create test database");
        let mut url = url::Url::parse(&admin).expect("admin URL");
        url.set_path(&name);
        Some(PgTestDb {
            url: url.to_string(),
            name,
            admin,
        })
    }

    /// Cuts calgate off: no new connections, and the open ones are closed.
    pub async fn refuse_connections(&self) {
        self.admin(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", self.name))
            .await;
        self.admin(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
            self.name
        ))
        .await;
    }

    /// Lets calgate connect again.
    pub async fn allow_connections(&self) {
        self.admin(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", self.name))
            .await;
    }

    /// Runs SQL as the admin (e.g. to cut the test database off).
    pub async fn admin(&self, sql: &str) {
        let mut conn = PgConnection::connect(&self.admin).await.expect("admin connection");
        conn.execute(sql).await.expect("admin statement");
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs outside any runtime we could await on: use a thread with its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&admin).await.ok()?;
                conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// The test config with its SQLite store swapped for `url`.
pub fn use_postgres(config: &mut toml::Table, url: &str) {
    crate::support::set(config, "store.url", url);
}
