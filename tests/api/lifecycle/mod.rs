//! Operators' credential lifecycle, end to end with the real binary: key
//! rotation to completion (`calgate rekey`), tenant offboarding
//! (`calgate purge-tenant`), per-user erasure (ForgetUser) and the
//! hash-chained audit trail (`calgate audit`), on SQLite and PostgreSQL.

mod audit;
mod audit_keyed;
mod erasure_pending;
mod forget;
mod purge;
mod rekey;

use std::{process::Stdio, time::Duration};

use calgate::grpc::pb::{self, calendar_write_service_client::CalendarWriteServiceClient};
use fake_cronofy::{Endpoint, Fault};
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use tonic::{Code, transport::Channel};

use crate::{
    observability::{sample, scrape},
    postgres::{PgTestDb, use_postgres},
    support::*,
    support::{Binary, free_port, set, start_binary_with, with_callbacks, write_config},
};

/// What a calgate command did.
pub(crate) struct Ran {
    pub(crate) ok: bool,
    /// The exit code (None when a signal ended it).
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Ran {
    /// Its stdout's JSON lines.
    pub(crate) fn lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
            .collect()
    }
}

/// Runs `calgate <args…>` to the end.
pub(crate) async fn calgate(args: &[&str]) -> Ran {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_calgate"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run calgate");
    Ran {
        ok: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

pub(crate) async fn calgate_ok(args: &[&str]) -> Ran {
    let ran = calgate(args).await;
    assert!(ran.ok, "calgate {args:?} failed:\n{}\n{}", ran.stdout, ran.stderr);
    ran
}

/// `encryption.keys` naming the work directory's keys, in order.
fn keys(work: &Workdir, ids: &[&str]) -> toml::Value {
    let body: Vec<String> = ids.iter().map(|id| work.key(id)).collect();
    let table: toml::Table = format!("keys = [{}]", body.join(", ")).parse().expect("TOML");
    table["keys"].clone()
}

/// The config for `store` (None: the work directory's SQLite file) with `key_ids`.
fn config(fake: &fake_cronofy::FakeCronofy, work: &Workdir, pg: Option<&PgTestDb>, key_ids: &[&str]) -> String {
    let path = write_config(fake, work, |c| edit(c, work, pg, key_ids));
    path.display().to_string()
}

fn edit(config: &mut toml::Table, work: &Workdir, pg: Option<&PgTestDb>, key_ids: &[&str]) {
    if let Some(pg) = pg {
        use_postgres(config, &pg.url);
    }
    set(config, "encryption.keys", keys(work, key_ids));
}

async fn start(
    fake: &fake_cronofy::FakeCronofy,
    work: &Workdir,
    pg: Option<&PgTestDb>,
    key_ids: &[&str],
    more: impl FnOnce(&mut toml::Table),
) -> Binary {
    start_binary_with(fake, work, |c| {
        edit(c, work, pg, key_ids);
        more(c);
    })
    .await
}

/// Connects a user of globex (the other tenant) through the browser flow.
async fn connect_globex(binary: &Binary, user_ref: &str) -> pb::Grant {
    binary
        .connect_as(
            GLOBEX_KEY,
            pb::BuildAuthorizeUrlRequest {
                redirect_uri: GLOBEX_REDIRECT.into(),
                user_ref: Some(user_ref.into()),
                ..Default::default()
            },
        )
        .await
}

async fn upsert_as(
    client: &CalendarWriteServiceClient<Channel>,
    key: &str,
    sub: &str,
    calendar_id: &str,
) -> Result<(), tonic::Status> {
    let mut request = Upsert::new(by_sub(sub), calendar_id).request();
    let value = format!("Bearer {key}").parse().expect("header");
    request.metadata_mut().insert("authorization", value);
    client.clone().upsert_event(request).await.map(drop)
}

fn forget(
    key: &str,
    user: pb::forget_user_request::User,
    delete_events: bool,
) -> tonic::Request<pb::ForgetUserRequest> {
    with_key(
        key,
        pb::ForgetUserRequest {
            user: Some(user),
            delete_events,
        },
    )
}

/// Makes the grant NEEDS_REAUTH the way it happens in life: the user
/// disconnects at Cronofy, and the next call's refresh is refused.
async fn make_needs_reauth(binary: &Binary, fake: &fake_cronofy::FakeCronofy, sub: &str) {
    let calendar = fake.calendar_ids(sub)[0].clone();
    fake.revoke_account(sub);
    fake.expire_access_tokens();
    let refused = binary.upsert(sub, &calendar).await.expect_err("refresh refused");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
}

/// Every file of the SQLite database (main file, write-ahead log, shared memory), concatenated.
fn database_bytes(work: &Workdir) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(work.dir.path()).expect("work dir").flatten() {
        if entry.file_name().to_string_lossy().starts_with("calgate.db") {
            bytes.extend(std::fs::read(entry.path()).expect("read database file"));
        }
    }
    assert!(!bytes.is_empty(), "no database file");
    bytes
}

/// The store holds none of `erased` (SQLite: the database files' bytes;
/// PostgreSQL: every table's rows) and still holds `kept`, so the scan is seen to work.
async fn assert_store_holds_none(work: &Workdir, pg: Option<&PgTestDb>, erased: &[&str], kept: &str) {
    match pg {
        None => {
            let bytes = database_bytes(work);
            for needle in erased {
                assert!(!contains(&bytes, needle), "{needle} is still in the database file");
            }
            assert!(contains(&bytes, kept), "the scan sees what is there");
        }
        Some(pg) => {
            assert_eq!(rows_mentioning(pg, erased).await, 0, "rows still name {erased:?}");
            assert!(rows_mentioning(pg, &[kept]).await > 0, "the scan sees what is there");
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle.as_bytes())
}

fn kinds(lines: &[Value]) -> Vec<&str> {
    lines
        .iter()
        .map(|line| line["kind"].as_str().unwrap_or_default())
        .collect()
}

// ---------------------------------------------------------------- rekey

/// No token, code or client secret in what the commands printed.
fn assert_no_secret(fake: &fake_cronofy::FakeCronofy, outputs: &[&Ran]) {
    let secrets = fake.issued_secrets();
    assert!(!secrets.is_empty());
    for output in outputs {
        for secret in secrets.iter().map(String::as_str).chain([ACME_SECRET, GLOBEX_SECRET]) {
            assert!(
                !output.stdout.contains(secret) && !output.stderr.contains(secret),
                "a secret was printed"
            );
        }
    }
}

fn base64_key(byte: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

// ---------------------------------------------------------------- purge-tenant

/// How many rows of calgate's tables hold any of `needles` in any column.
pub(crate) async fn rows_mentioning(pg: &PgTestDb, needles: &[&str]) -> i64 {
    let mut conn = PgConnection::connect(&pg.url).await.expect("connect");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' \
         AND table_name NOT LIKE '\\_sqlx%'",
    )
    .fetch_all(&mut conn)
    .await
    .expect("tables");
    let mut found = 0;
    for table in tables {
        for needle in needles {
            let count: i64 = sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM {table} t WHERE position($1 in t::text) > 0"
            ))
            .bind(*needle)
            .fetch_one(&mut conn)
            .await
            .expect("scan");
            found += count;
        }
    }
    found
}
