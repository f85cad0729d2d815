//! Operators' credential lifecycle, end to end with the real binary: key
//! rotation to completion (`calgate rekey`), tenant offboarding
//! (`calgate purge-tenant`), per-user erasure (ForgetUser) and the
//! hash-chained audit trail (`calgate audit`), on SQLite and PostgreSQL.

use std::{process::Stdio, time::Duration};

use calgate::grpc::pb::{self, calendar_write_service_client::CalendarWriteServiceClient};
use fake_cronofy::{Endpoint, Fault};
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use tonic::{Code, transport::Channel};

use crate::{
    helpers::*,
    observability::{sample, scrape},
    postgres::{PgTestDb, use_postgres},
    process::{Binary, free_port, set, start_binary_with, with_callbacks, write_config},
};

/// What a calgate command did.
pub(crate) struct Ran {
    pub(crate) ok: bool,
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

async fn rekey_while_serving(pg: Option<&PgTestDb>) {
    let fake = start_fake().await;
    let work = Workdir::new();

    // Under k1: two active grants, one that needs its user again, one revoked.
    let binary = start(&fake, &work, pg, &["k1"], |_| {}).await;
    let ada = binary.connect("ada").await;
    let bob = binary.connect("bob").await;
    let cy = binary.connect("cy").await;
    let dan = binary.connect("dan").await;
    make_needs_reauth(&binary, &fake, &cy.sub).await;
    binary
        .client
        .clone()
        .revoke_grant(with_key(ACME_KEY, revoke_by_ref("dan")))
        .await
        .expect("revoke dan");
    drop(binary);

    // Dropping k1 before the rekey is refused: nothing can be opened without it.
    let k2_only = config(&fake, &work, pg, &["k2"]);
    let refused = calgate(&["rekey", "--config", &k2_only]).await;
    assert!(!refused.ok, "{}", refused.stdout);
    assert!(refused.stderr.contains("`k1`"), "{}", refused.stderr);

    // [k2, k1] serving, writes and refreshes running, while the rekey runs.
    let rotating = config(&fake, &work, pg, &["k2", "k1"]);
    let binary = start(&fake, &work, pg, &["k2", "k1"], |_| {}).await;
    fake.expire_access_tokens();
    let writers: Vec<_> = [&ada, &bob]
        .into_iter()
        .map(|grant| {
            let client = binary.client.clone();
            let sub = grant.sub.clone();
            let calendar = fake.calendar_ids(&grant.sub)[0].clone();
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for _ in 0..20 {
                    if let Err(status) = Binary::upsert_with(client.clone(), &sub, &calendar).await {
                        failures.push(status);
                    }
                }
                failures
            })
        })
        .collect();
    let ran = calgate_ok(&["rekey", "--config", &rotating]).await;
    for writer in writers {
        let failures = writer.await.expect("writer");
        assert!(failures.is_empty(), "writes failed during the rekey: {failures:?}");
    }
    let summary = &ran.lines()[0];
    assert_eq!(summary["key_id"], "k2");
    assert_eq!(summary["remaining_under_other_keys"], 0);
    assert_eq!(summary["audit_key_rekeyed"], true);
    // cy was never refreshed: only the rekey could have moved it. ada and bob may have been refreshed first.
    let rekeyed = summary["grants_rekeyed"].as_u64().expect("count");
    assert!((1..=3).contains(&rekeyed), "{summary}");
    assert!(
        ran.stderr.contains("grants re-sealed"),
        "progress on stderr: {}",
        ran.stderr
    );

    let metrics = scrape(binary.metrics).await;
    assert_eq!(
        sample(&metrics, r#"calgate_grants_by_key{key_id="k1"}"#),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, r#"calgate_grants_by_key{key_id="k2"}"#),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, r#"calgate_encryption_keys{key_id="k1",role="decrypt"}"#),
        Some(1.0)
    );

    // Idempotent: a second run finds nothing to do.
    let again = calgate_ok(&["rekey", "--config", &rotating]).await;
    assert_eq!(again.lines()[0]["grants_rekeyed"], 0);
    drop(binary);

    // k1 removed: every grant still opens.
    let binary = start(&fake, &work, pg, &["k2"], |_| {}).await;
    for grant in [&ada, &bob] {
        let calendar = fake.calendar_ids(&grant.sub)[0].clone();
        binary
            .upsert(&grant.sub, &calendar)
            .await
            .expect("write after k1 is gone");
    }
    let cy_now = fetch_grant(&binary.client, ACME_KEY, &cy.sub)
        .await
        .expect("cy readable");
    assert_eq!(cy_now.status, pb::GrantStatus::NeedsReauth as i32);
    let dan_now = fetch_grant(&binary.client, ACME_KEY, &dan.sub)
        .await
        .expect("dan readable");
    assert_eq!(dan_now.status, pb::GrantStatus::Revoked as i32);

    // The audit trail says who rotated what.
    let audit = calgate_ok(&["audit", "--config", &k2_only, "--tenant", "acme", "--verify"]).await;
    let lines = audit.lines();
    let rotated = lines
        .iter()
        .find(|line| line["kind"] == "keys_rotated")
        .expect("keys_rotated");
    assert_eq!(rotated["actor"], "operator");
    assert_no_secret(&fake, &[&refused, &ran, &again, &audit]);
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_while_serving_lets_the_old_key_go_on_sqlite() {
    rekey_while_serving(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_while_serving_lets_the_old_key_go_on_postgres() {
    let Some(pg) = PgTestDb::create().await else { return };
    rekey_while_serving(Some(&pg)).await;
}

// ---------------------------------------------------------------- state keys

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_state_key_keeps_consents_in_flight() {
    let fake = start_fake().await;
    let work = Workdir::new();
    let state_key = |id: &str, byte: u8| {
        let path = work.path(&format!("state-{id}.key"));
        std::fs::write(&path, base64_key(byte)).expect("write state key");
        format!(r#"{{ id = "{id}", key_file = "{}" }}"#, path.display())
    };
    let (s1, s2) = (state_key("s1", 11), state_key("s2", 12));
    let with_state_keys = |keys: &str| {
        let keys = keys.to_owned();
        move |config: &mut toml::Table| {
            let table: toml::Table = format!("keys = [{keys}]").parse().expect("TOML");
            let mut state = toml::Table::new();
            state.insert("keys".into(), table["keys"].clone());
            config.insert("state".into(), state.into());
        }
    };
    let consent = |binary: &Binary, user_ref: &'static str| {
        let client = binary.client.clone();
        async move {
            let built = client
                .clone()
                .build_authorize_url(with_key(
                    ACME_KEY,
                    pb::BuildAuthorizeUrlRequest {
                        redirect_uri: ACME_REDIRECT.into(),
                        user_ref: Some(user_ref.into()),
                        ..Default::default()
                    },
                ))
                .await
                .expect("url")
                .into_inner();
            follow_consent(&built.url).await
        }
    };
    let exchange = |binary: &Binary, (code, state): (String, String)| {
        let client = binary.client.clone();
        async move {
            client
                .clone()
                .exchange_code(with_key(
                    ACME_KEY,
                    pb::ExchangeCodeRequest {
                        code,
                        redirect_uri: ACME_REDIRECT.into(),
                        state,
                        expected_user_ref: None,
                    },
                ))
                .await
        }
    };

    let binary = start_binary_with(&fake, &work, with_state_keys(&s1)).await;
    let in_flight = consent(&binary, "ada").await;
    let abandoned = consent(&binary, "bob").await;
    assert!(in_flight.1.starts_with("s1."), "{}", in_flight.1);
    drop(binary);

    // Rotated: the consent begun under s1 completes; new ones use s2.
    let binary = start_binary_with(&fake, &work, with_state_keys(&format!("{s2}, {s1}"))).await;
    exchange(&binary, in_flight)
        .await
        .expect("a consent in flight survives the rotation");
    let fresh = consent(&binary, "cy").await;
    assert!(fresh.1.starts_with("s2."), "{}", fresh.1);
    drop(binary);

    // s1 retired: what it sealed is refused, naming the field; s2's still works.
    let binary = start_binary_with(&fake, &work, with_state_keys(&s2)).await;
    let refused = exchange(&binary, abandoned).await.expect_err("s1 is gone");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    exchange(&binary, fresh).await.expect("s2's state");
}

fn base64_key(byte: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

// ---------------------------------------------------------------- purge-tenant

async fn purge_tenant(pg: Option<&PgTestDb>) {
    let fake = start_fake().await;
    let work = Workdir::new();
    let cfg = config(&fake, &work, pg, &["k1"]);
    let port = free_port();
    let binary = start(&fake, &work, pg, &["k1"], |c| with_callbacks(c, port, port)).await;
    let ada = binary.connect("purge-ada-5c1e").await;
    let bob = binary.connect("purge-bob-77d2").await;
    let ada_calendar = fake.calendar_ids(&ada.sub)[0].clone();
    binary.upsert(&ada.sub, &ada_calendar).await.expect("write");
    let globex = connect_globex(&binary, "globex-user-31aa").await;
    let globex_calendar = fake.calendar_ids(&globex.sub)[0].clone();
    // The notification worker opens the channels in the background.
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    while fake.channels(&ada.sub).is_empty() || fake.channels(&bob.sub).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "channels never opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fake.live_refresh_token_subs("acme-client").len(), 2);

    // Purged while the replica serves.
    let ran = calgate_ok(&["purge-tenant", "--config", &cfg, "acme"]).await;
    let summary = &ran.lines()[0];
    assert_eq!(summary["grants_deleted"], 2, "{summary}");
    assert_eq!(summary["revoked_at_cronofy"], 2, "{summary}");
    assert_eq!(summary["revocations_pending"], 0, "{summary}");

    // Cronofy holds none of acme's refresh tokens, and no channel of theirs.
    assert!(fake.live_refresh_token_subs("acme-client").is_empty());
    assert!(fake.channels(&ada.sub).is_empty() && fake.channels(&bob.sub).is_empty());
    // acme's users are unknown to calgate; globex is untouched.
    let gone = fetch_grant(&binary.client, ACME_KEY, &ada.sub)
        .await
        .expect_err("purged");
    assert_eq!(gone.code(), Code::NotFound);
    upsert_as(&binary.client, GLOBEX_KEY, &globex.sub, &globex_calendar)
        .await
        .expect("globex still writes");
    assert_eq!(fake.live_refresh_token_subs("globex-client"), vec![globex.sub.clone()]);
    drop(binary);

    // Nothing of acme's people is left in the store; the audit trail remains, by hash.
    match pg {
        None => {
            let bytes = database_bytes(&work);
            for erased in [&ada.sub, &bob.sub, "purge-ada-5c1e", "purge-bob-77d2"] {
                assert!(!contains(&bytes, erased), "{erased} is still in the database file");
            }
            assert!(contains(&bytes, &globex.sub), "the scan sees what is there");
        }
        Some(pg) => {
            let remaining = rows_mentioning(pg, &[&ada.sub, &bob.sub, "purge-ada-5c1e", "purge-bob-77d2"]).await;
            assert_eq!(remaining, 0, "rows still name acme's people");
            assert!(
                rows_mentioning(pg, &[&globex.sub]).await > 0,
                "the scan sees what is there"
            );
        }
    }
    let audit = calgate_ok(&["audit", "--config", &cfg, "--tenant", "acme", "--verify"]).await;
    let lines = audit.lines();
    assert_eq!(
        kinds(&lines),
        vec!["grant_connected", "grant_connected", "tenant_purged"],
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .all(|line| line["sub"].is_null() && line["user_ref"].is_null())
    );
    let purged = &lines[2];
    assert_eq!(purged["actor"], "operator");
    let ada_rows = calgate_ok(&[
        "audit",
        "--config",
        &cfg,
        "--tenant",
        "acme",
        "--user-ref",
        "purge-ada-5c1e",
    ])
    .await
    .lines();
    assert_eq!(kinds(&ada_rows), vec!["grant_connected"], "found by the keyed hash");
    assert!(audit.stderr.contains("chain verifies"), "{}", audit.stderr);
    assert_no_secret(&fake, &[&ran, &audit]);
}

/// How many rows of calgate's tables hold any of `needles` in any column.
async fn rows_mentioning(pg: &PgTestDb, needles: &[&str]) -> i64 {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_tenant_erases_a_tenant_and_spares_the_others_on_sqlite() {
    purge_tenant(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_tenant_erases_a_tenant_and_spares_the_others_on_postgres() {
    let Some(pg) = PgTestDb::create().await else { return };
    purge_tenant(Some(&pg)).await;
}

/// A revoke Cronofy refuses is reported and queued; the erasure goes on; a
/// second run finishes the revoke.
async fn purge_with_failing_revoke(pg: Option<&PgTestDb>) {
    let fake = start_fake().await;
    let work = Workdir::new();
    let cfg = config(&fake, &work, pg, &["k1"]);
    let binary = start(&fake, &work, pg, &["k1"], |_| {}).await;
    let ada = binary.connect("ada").await;
    binary.connect("bob").await;
    drop(binary);
    // Both tries (upstream.max_attempts = 2) of the first revoke fail.
    fake.inject(Fault {
        times: 2,
        ..Fault::status(Endpoint::Revoke, 503)
    });
    let failed = calgate(&["purge-tenant", "--config", &cfg, "acme"]).await;
    assert!(!failed.ok, "a pending revoke is an unfinished purge");
    assert!(failed.stderr.contains("could not be revoked"), "{}", failed.stderr);
    let summary = &failed.lines()[0];
    assert_eq!(summary["grants_deleted"], 2, "the erasure went on: {summary}");
    assert_eq!(summary["revocations_pending"], 1, "{summary}");
    assert_eq!(fake.live_refresh_token_subs("acme-client").len(), 1);

    let finished = calgate_ok(&["purge-tenant", "--config", &cfg, "acme"]).await;
    let summary = &finished.lines()[0];
    assert_eq!(summary["revoked_at_cronofy"], 1, "{summary}");
    assert_eq!(summary["revocations_pending"], 0, "{summary}");
    assert!(fake.live_refresh_token_subs("acme-client").is_empty());
    assert!(fake.revoked_subs("acme-client").contains(&ada.sub));
    let audit = calgate_ok(&["audit", "--config", &cfg, "--tenant", "acme", "--verify"]).await;
    assert_eq!(
        kinds(&audit.lines())
            .iter()
            .filter(|kind| **kind == "tenant_purged")
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_revoke_never_stops_a_purge_on_sqlite() {
    purge_with_failing_revoke(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_revoke_never_stops_a_purge_on_postgres() {
    let Some(pg) = PgTestDb::create().await else { return };
    purge_with_failing_revoke(Some(&pg)).await;
}

// ---------------------------------------------------------------- ForgetUser

async fn forget_user(pg: Option<&PgTestDb>) {
    let fake = start_fake().await;
    let work = Workdir::new();
    let cfg = config(&fake, &work, pg, &["k1"]);
    let binary = start(&fake, &work, pg, &["k1"], |_| {}).await;
    let ada = binary.connect("forget-ada-91b0").await;
    let bob = binary.connect("forget-bob-0c44").await;
    let ada_calendar = fake.calendar_ids(&ada.sub)[0].clone();
    binary.upsert(&ada.sub, &ada_calendar).await.expect("write");
    assert_eq!(fake.event_count(&ada.sub), 1);
    let client = binary.client.clone();
    use pb::forget_user_request::User;

    // Bad input names the field; another tenant cannot reach acme's user.
    let bad = client
        .clone()
        .forget_user(with_key(ACME_KEY, pb::ForgetUserRequest::default()))
        .await
        .expect_err("no user");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&bad), vec!["user"]);
    let foreign = client
        .clone()
        .forget_user(forget(GLOBEX_KEY, User::Sub(ada.sub.clone()), true))
        .await
        .expect_err("globex");
    assert_eq!(foreign.code(), Code::NotFound);
    assert_eq!(fake.event_count(&ada.sub), 1, "nothing happened to acme's user");

    let forgotten = client
        .clone()
        .forget_user(forget(ACME_KEY, User::UserRef("forget-ada-91b0".into()), true))
        .await
        .expect("forget")
        .into_inner();
    assert_eq!(forgotten.sub, ada.sub);
    assert!(forgotten.events_deleted && !forgotten.upstream_revoke_pending);
    assert_eq!(fake.event_count(&ada.sub), 0, "the events calgate wrote are gone");
    assert_eq!(fake.live_refresh_token_subs("acme-client"), vec![bob.sub.clone()]);
    let gone = fetch_grant(&client, ACME_KEY, &ada.sub).await.expect_err("forgotten");
    assert_eq!(gone.code(), Code::NotFound);
    let again = client
        .clone()
        .forget_user(forget(ACME_KEY, User::Sub(ada.sub.clone()), false))
        .await
        .expect_err("already forgotten");
    assert_eq!(again.code(), Code::NotFound);
    let bob_calendar = fake.calendar_ids(&bob.sub)[0].clone();
    binary.upsert(&bob.sub, &bob_calendar).await.expect("bob unaffected");
    drop(binary);

    match pg {
        None => {
            let bytes = database_bytes(&work);
            for erased in [ada.sub.as_str(), "forget-ada-91b0"] {
                assert!(!contains(&bytes, erased), "{erased} is still in the database file");
            }
            assert!(contains(&bytes, "forget-bob-0c44"), "the scan sees what is there");
        }
        Some(pg) => {
            assert_eq!(rows_mentioning(pg, &[&ada.sub, "forget-ada-91b0"]).await, 0);
            assert!(rows_mentioning(pg, &["forget-bob-0c44"]).await > 0);
        }
    }
    // The person's audit rows remain, by hash, with the API key that asked.
    let rows = calgate_ok(&[
        "audit",
        "--config",
        &cfg,
        "--tenant",
        "acme",
        "--user-ref",
        "forget-ada-91b0",
        "--verify",
    ])
    .await
    .lines();
    assert_eq!(kinds(&rows), vec!["grant_connected", "grant_forgotten"], "{rows:?}");
    let key_id = format!("key:{}", &hex::encode(calgate::auth::hash_api_key(ACME_KEY))[..12]);
    for row in &rows {
        assert!(row["sub"].is_null() && row["user_ref"].is_null(), "{row}");
        assert_eq!(row["actor"], key_id.as_str());
        assert!(!row["request_id"].as_str().unwrap_or_default().is_empty());
    }
    let by_sub = calgate_ok(&["audit", "--config", &cfg, "--tenant", "acme", "--sub", &ada.sub])
        .await
        .lines();
    assert_eq!(by_sub.len(), 2, "the sub finds the same rows by its hash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_user_erases_one_user_on_sqlite() {
    forget_user(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_user_erases_one_user_on_postgres() {
    let Some(pg) = PgTestDb::create().await else { return };
    forget_user(Some(&pg)).await;
}

// ---------------------------------------------------------------- audit trail

async fn audit_trail(pg: Option<&PgTestDb>) {
    let fake = start_fake().await;
    let work = Workdir::new();
    let cfg = config(&fake, &work, pg, &["k1"]);
    let binary = start(&fake, &work, pg, &["k1"], |_| {}).await;
    let ada = binary.connect("ada").await;
    make_needs_reauth(&binary, &fake, &ada.sub).await;
    binary
        .client
        .clone()
        .revoke_grant(with_key(ACME_KEY, revoke_by_ref("ada")))
        .await
        .expect("revoke");
    let globex = connect_globex(&binary, "gina").await;
    drop(binary);

    let audit = calgate_ok(&["audit", "--config", &cfg, "--tenant", "acme", "--verify"]).await;
    let lines = audit.lines();
    assert_eq!(
        kinds(&lines),
        vec![
            "grant_connected",
            "grant_refresh_rejected",
            "grant_needs_reauth",
            "grant_revoked"
        ]
    );
    for line in &lines {
        assert_eq!(line["tenant"], "acme");
        assert_eq!(line["sub"], ada.sub.as_str());
        assert_eq!(line["user_ref"], "ada");
        assert!(line["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
    }
    assert_eq!(lines[1]["actor"], "calgate");
    assert!(lines[0]["actor"].as_str().unwrap_or_default().starts_with("key:"));
    assert!(!audit.stdout.contains(&globex.sub), "another tenant's rows stay out");
    let since_later = calgate_ok(&[
        "audit",
        "--config",
        &cfg,
        "--tenant",
        "acme",
        "--since",
        "2999-01-01T00:00:00Z",
    ])
    .await;
    assert!(since_later.stdout.is_empty());
    let bad_since = calgate(&["audit", "--config", &cfg, "--tenant", "acme", "--since", "yesterday"]).await;
    assert!(
        !bad_since.ok && bad_since.stderr.contains("RFC 3339"),
        "{}",
        bad_since.stderr
    );

    // Tampering is found: an edited row, then a removed one.
    let exec = |sql: &'static str| {
        let sqlite = format!("sqlite://{}", work.db_path().display());
        let pg_url = pg.map(|pg| pg.url.clone());
        async move {
            match pg_url {
                Some(url) => {
                    let mut conn = PgConnection::connect(&url).await.expect("connect");
                    sqlx::query(sql).execute(&mut conn).await.expect("tamper");
                }
                None => {
                    let mut conn = sqlx::SqliteConnection::connect(&sqlite).await.expect("connect");
                    sqlx::query(sql).execute(&mut conn).await.expect("tamper");
                }
            }
        }
    };
    exec("UPDATE audit_events SET actor = 'operator' WHERE tenant_id = 'acme' AND seq = 2").await;
    let edited = calgate(&["audit", "--config", &cfg, "--tenant", "acme", "--verify"]).await;
    assert!(!edited.ok);
    assert!(edited.stderr.contains("row 2 was edited"), "{}", edited.stderr);
    exec("UPDATE audit_events SET actor = 'calgate' WHERE tenant_id = 'acme' AND seq = 2").await;
    calgate_ok(&["audit", "--config", &cfg, "--tenant", "acme", "--verify"]).await;
    exec("DELETE FROM audit_events WHERE tenant_id = 'acme' AND seq = 4").await;
    let removed = calgate(&["audit", "--config", &cfg, "--tenant", "acme", "--verify"]).await;
    assert!(!removed.ok);
    assert!(removed.stderr.contains("missing"), "{}", removed.stderr);
    // globex's chain is its own, and intact.
    calgate_ok(&["audit", "--config", &cfg, "--tenant", "globex", "--verify"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_records_the_lifecycle_and_finds_tampering_on_sqlite() {
    audit_trail(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_records_the_lifecycle_and_finds_tampering_on_postgres() {
    let Some(pg) = PgTestDb::create().await else { return };
    audit_trail(Some(&pg)).await;
}

/// Rows past `audit.retention` go; the chain still verifies from the first
/// remaining row, and grows on from where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_forgets_rows_past_its_retention_and_still_verifies() {
    let app = spawn_app_edited(|settings| {
        settings.changes.prune_interval = Duration::from_millis(100);
    })
    .await;
    let cfg = write_config(&app.fake, &app.work, |_| {});
    let cfg = cfg.to_str().expect("utf-8 path");
    app.connect(Some("ada")).await;
    app.connect(Some("bob")).await;
    let before = calgate_ok(&["audit", "--config", cfg, "--tenant", "acme", "--verify"]).await;
    assert_eq!(before.lines().len(), 2);

    // 401 days on: past the default retention of 400 days.
    app.clock.advance(Duration::from_secs(401 * 24 * 3600));
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    loop {
        let now = calgate_ok(&["audit", "--config", cfg, "--tenant", "acme"]).await;
        if now.stdout.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never pruned: {}", now.stdout);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pruned = calgate_ok(&["audit", "--config", cfg, "--tenant", "acme", "--verify"]).await;
    assert!(pruned.stderr.contains("chain verifies: 0 rows"), "{}", pruned.stderr);
    // A new row chains onto the pruned head; its number goes on from it.
    let (fake, work) = app.stop().await;
    let keys = work.key("k1");
    let app = spawn_app_on(fake, work, &keys).await;
    app.connect(Some("cy")).await;
    let after = calgate_ok(&["audit", "--config", cfg, "--tenant", "acme", "--verify"]).await;
    let lines = after.lines();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["seq"], 3);
    assert_eq!(lines[0]["user_ref"], "cy");
}
