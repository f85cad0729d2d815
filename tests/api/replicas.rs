//! Several replicas on one PostgreSQL: one refresh per expiry across the
//! fleet, nothing lost when a replica dies or the database goes away.

use std::time::{Duration, Instant};

use calgate::grpc::pb;
use fake_cronofy::{Endpoint, Fault, RefreshTokens};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

use crate::{
    postgres::{PgTestDb, use_postgres},
    support::*,
    support::{Binary, set, set_in_first_tenant, start_binary_with, write_config},
};

async fn two_replicas(db: &PgTestDb) -> (fake_cronofy::FakeCronofy, Workdir, Binary, Binary) {
    let fake = start_fake().await;
    let work = Workdir::new();
    let a = start_binary_with(&fake, &work, |c| use_postgres(c, &db.url)).await;
    let b = start_binary_with(&fake, &work, |c| use_postgres(c, &db.url)).await;
    (fake, work, a, b)
}

/// 200 concurrent upserts spread over both replicas after Cronofy expired the token.
async fn storm(a: &Binary, b: &Binary, sub: &str, calendar: &str) {
    let calls = (0..200).map(|n| {
        let client = if n % 2 == 0 { a.client.clone() } else { b.client.clone() };
        let (sub, calendar) = (sub.to_owned(), calendar.to_owned());
        tokio::spawn(async move { Binary::upsert_with(client, &sub, &calendar).await })
    });
    for result in futures::future::join_all(calls).await {
        result.expect("task").expect("upsert");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_causes_one_refresh_across_replicas_and_rotation_stays_alive() {
    let Some(db) = PgTestDb::create().await else { return };
    let (fake, _work, a, b) = two_replicas(&db).await;
    fake.set_refresh_tokens(RefreshTokens::Rotate);
    let grant = a.connect("ada").await;
    let calendar = fake.calendar_ids(&grant.sub)[0].clone();
    // Each round rotates the refresh token; the next round works only if the
    // live one was stored, never a dead one.
    for round in 1..=3 {
        fake.expire_access_tokens();
        fake.inject(Fault::delay(Endpoint::Token, Duration::from_millis(300)));
        storm(&a, &b, &grant.sub, &calendar).await;
        assert_eq!(
            fake.count(Endpoint::Token),
            1 + round,
            "exactly one refresh in round {round}"
        );
    }
}

/// What replica B saw and did after A died mid-refresh.
struct AfterKill {
    /// The grant as B reports it after its own call.
    grant: pb::Grant,
    /// Calls to Cronofy's token endpoint in all (the exchange included).
    tokens: usize,
    /// Refreshes the fake answered for the grant during B's call.
    b_refreshes: usize,
    /// B's UpsertEvent.
    b_upsert: Result<(), tonic::Status>,
    /// The grant's events at Cronofy (A's write died before it reached them).
    events: usize,
}

/// Replica A holds the grant's lease and is waiting on Cronofy's token
/// endpoint when it is killed; `fault` says whether Cronofy had acted.
/// Then B writes to the same grant.
async fn kill_a_mid_refresh(db: &PgTestDb, fault: Fault, rotate: bool) -> AfterKill {
    let (fake, _work, mut a, b) = two_replicas(db).await;
    fake.set_refresh_tokens(if rotate {
        RefreshTokens::Rotate
    } else {
        RefreshTokens::Echo
    });
    let grant = a.connect("ada").await;
    let calendar = fake.calendar_ids(&grant.sub)[0].clone();
    fake.expire_access_tokens();
    let tokens = fake.count(Endpoint::Token);
    fake.inject(fault);
    let doomed = {
        let (client, sub, calendar) = (a.client.clone(), grant.sub.clone(), calendar.clone());
        tokio::spawn(async move { Binary::upsert_with(client, &sub, &calendar).await })
    };
    // A's refresh has reached Cronofy (A holds the lease) when it dies.
    let give_up = tokio::time::Instant::now() + Duration::from_secs(15);
    while fake.count(Endpoint::Token) == tokens {
        assert!(
            tokio::time::Instant::now() < give_up,
            "A's refresh never reached Cronofy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.sigkill().await;
    assert!(
        doomed.await.expect("task").is_err(),
        "the killed replica's caller sees an error"
    );
    let refreshed_before_b = fake.refreshes_of(&grant.sub);
    let b_upsert = b.upsert(&grant.sub, &calendar).await;
    let b_refreshes = fake.refreshes_of(&grant.sub) - refreshed_before_b;
    let fetched = fetch_grant(&b.client, ACME_KEY, &grant.sub).await.expect("grant");
    AfterKill {
        grant: fetched,
        tokens: fake.count(Endpoint::Token),
        b_refreshes,
        b_upsert,
        events: fake.event_count(&grant.sub),
    }
}

/// B refreshed the grant itself (Cronofy answered a refresh during B's
/// call) and its write reached Cronofy.
fn assert_b_refreshed_and_wrote(after: &AfterKill) {
    assert_eq!(after.b_refreshes, 1, "B's own refresh, answered by Cronofy");
    assert!(after.b_upsert.is_ok(), "B's write: {:?}", after.b_upsert);
    assert_eq!(after.events, 1, "B's event at Cronofy");
    assert_eq!(after.grant.status, pb::GrantStatus::Active as i32, "B carried on");
}

/// Killed before Cronofy acted (its answer was still to come): the lease dies
/// with A's connection, and B refreshes with the stored token and carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_before_cronofy_acted_leaves_the_grant_to_the_other() {
    let Some(db) = PgTestDb::create().await else { return };
    let stall = Fault::delay(Endpoint::Token, Duration::from_millis(1500));
    let after = kill_a_mid_refresh(&db, stall, true).await;
    assert_b_refreshed_and_wrote(&after);
    // The exchange, A's refresh (cut off before it was processed), B's.
    assert_eq!(after.tokens, 3);
}

/// The dangerous case: Cronofy processed A's refresh and answered late, and A
/// died before hearing it. When Cronofy echoes the refresh token (its
/// documented example), nothing is lost: B refreshes and carries on. When it
/// rotates, the new token died with A — no design can keep what it never
/// received — and B's refresh is refused: the grant asks for
/// re-authorization instead of failing every call (docs/architecture.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_after_cronofy_acted_loses_nothing_cronofy_kept() {
    let (Some(echoing), Some(rotating)) = (PgTestDb::create().await, PgTestDb::create().await) else {
        return;
    };
    let late = || Fault::delay(Endpoint::Token, Duration::from_millis(1500)).after_processing();
    let echoed = kill_a_mid_refresh(&echoing, late(), false).await;
    assert_b_refreshed_and_wrote(&echoed);
    let rotated = kill_a_mid_refresh(&rotating, late(), true).await;
    assert_eq!(
        rotated.grant.status,
        pb::GrantStatus::NeedsReauth as i32,
        "a rotated token that died with A: re-authorization"
    );
    assert_eq!(
        rotated.grant.status_reason, "REFRESH_ANSWER_LOST",
        "named for what happened: A's refresh was in flight when it died, not the user's revocation"
    );
    assert!(rotated.b_upsert.is_err(), "B's write cannot succeed without a token");
    assert_eq!(rotated.b_refreshes, 0, "Cronofy refused B's refresh");
    assert_eq!(rotated.events, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_away_readiness_is_not_serving_liveness_stays_and_grants_survive() {
    let Some(db) = PgTestDb::create().await else { return };
    let app = spawn_app_edited(|s| s.store.url = db.url.clone()).await;
    let grant = app.connect(Some("ada")).await;
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    let wait_for = |want: ServingStatus| health_becomes(&app.channel, "", want, Duration::from_secs(15));

    db.refuse_connections().await;
    assert!(
        wait_for(ServingStatus::NotServing).await,
        "NOT_SERVING while the store is away"
    );
    assert_eq!(
        health(&app.channel, "calgate.liveness").await.ok(),
        Some(ServingStatus::Serving),
        "alive: no restart for a store outage"
    );
    let status_now = app
        .client
        .clone()
        .upsert_event(app.req(pb::UpsertEventRequest {
            mode: Default::default(),
            user: Some(pb::upsert_event_request::User::UserRef("ada".into())),
            calendar_id: calendar.clone(),
            event: Some(event("evt-1")),
        }))
        .await
        .expect_err("store away");
    assert_status(&status_now, Code::Unavailable, "STORE_UNAVAILABLE");

    db.allow_connections().await;
    assert!(wait_for(ServingStatus::Serving).await, "SERVING again");
    app.client
        .clone()
        .upsert_event(app.req(pb::UpsertEventRequest {
            mode: Default::default(),
            user: Some(pb::upsert_event_request::User::UserRef("ada".into())),
            calendar_id: calendar,
            event: Some(event("evt-1")),
        }))
        .await
        .expect("the grant survived the outage");
}

/// Two replicas whose shared breaker opens after two failures for
/// `cool_down`: the fake, the workdir, the replicas, a grant connected on A
/// (its sub) and its first calendar.
async fn breaker_replicas(
    db: &PgTestDb,
    cool_down: &str,
) -> (fake_cronofy::FakeCronofy, Workdir, Binary, Binary, String, String) {
    let fake = start_fake().await;
    let work = Workdir::new();
    let edit = |c: &mut toml::Table| {
        use_postgres(c, &db.url);
        set(c, "upstream.breaker.failure_threshold", 2);
        set(c, "upstream.breaker.cool_down", cool_down);
    };
    let a = start_binary_with(&fake, &work, edit).await;
    let b = start_binary_with(&fake, &work, edit).await;
    let grant = a.connect("ada").await;
    let calendar = fake.calendar_ids(&grant.sub)[0].clone();
    (fake, work, a, b, grant.sub, calendar)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_opened_by_one_replica_makes_the_other_fail_fast() {
    let Some(db) = PgTestDb::create().await else { return };
    // Long enough that B's call surely falls inside it on a loaded machine.
    let (fake, _work, a, b, sub, calendar) = breaker_replicas(&db, "5s").await;
    let grant = pb::Grant {
        sub,
        ..Default::default()
    };

    fake.inject(Fault::status(Endpoint::UpsertEvent, 503).times(2));
    let status = a
        .upsert(&grant.sub, &calendar)
        .await
        .expect_err("two 503s open the breaker");
    assert_status(&status, Code::Unavailable, "UPSTREAM_UNAVAILABLE");
    let sent = fake.count(Endpoint::UpsertEvent);
    let status = b.upsert(&grant.sub, &calendar).await.expect_err("B fails fast");
    assert_status(&status, Code::Unavailable, "UPSTREAM_UNAVAILABLE");
    let retry = status
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo: the rest of A's cool-down");
    assert!(retry > Duration::ZERO && retry <= Duration::from_secs(5), "{retry:?}");
    assert_eq!(
        fake.count(Endpoint::UpsertEvent),
        sent,
        "B sent nothing: the breaker is shared"
    );

    // Once the cool-down is over, B's probe closes the breaker; until then B
    // keeps failing fast without sending anything.
    let mut b_attempts = 0;
    loop {
        b_attempts += 1;
        match b.upsert(&grant.sub, &calendar).await {
            Ok(()) => break,
            Err(status) => {
                assert_status(&status, Code::Unavailable, "UPSTREAM_UNAVAILABLE");
                assert!(b_attempts < 200, "the breaker never closed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(
        fake.count(Endpoint::UpsertEvent),
        sent + 1,
        "only the probe reached Cronofy"
    );
    // A sees the closed breaker once its cached view of the shared record expires.
    let mut a_attempts = 0;
    while a.upsert(&grant.sub, &calendar).await.is_err() {
        a_attempts += 1;
        assert!(a_attempts < 100, "closed for B but never for A");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_budget_is_shared_by_replicas() {
    let Some(db) = PgTestDb::create().await else { return };
    let fake = start_fake().await;
    let work = Workdir::new();
    // 20 a minute: a burst of 2 (the token call and one write), then one every 3.3 s.
    let edit = |c: &mut toml::Table| {
        use_postgres(c, &db.url);
        set_in_first_tenant(c, "rate_limit.per_minute", 20);
    };
    let a = start_binary_with(&fake, &work, edit).await;
    let b = start_binary_with(&fake, &work, edit).await;
    let grant = a.connect("ada").await;
    let calendar = fake.calendar_ids(&grant.sub)[0].clone();
    let upsert = |client: &pb::calendar_write_service_client::CalendarWriteServiceClient<tonic::transport::Channel>| {
        let mut request = with_key(
            ACME_KEY,
            pb::UpsertEventRequest {
                mode: Default::default(),
                user: by_sub(&grant.sub),
                calendar_id: calendar.clone(),
                event: Some(event("evt-1")),
            },
        );
        // Far shorter than the 3.3 s until the next request, so a refusal is immediate.
        request
            .metadata_mut()
            .insert("grpc-timeout", "1S".parse().expect("header"));
        let mut client = client.clone();
        async move { client.upsert_event(request).await }
    };
    upsert(&a.client).await.expect("the burst's second request");
    // B has sent nothing itself, yet A spent the application's burst for both.
    for client in [&b.client, &a.client, &b.client] {
        let status = upsert(client).await.expect_err("budget spent");
        assert_status(&status, Code::ResourceExhausted, "RATE_BUDGET_EXHAUSTED");
    }
    assert_eq!(fake.count(Endpoint::UpsertEvent), 1, "one write fit the shared burst");
}

#[tokio::test]
async fn calgate_migrate_prepares_a_database_that_serve_otherwise_refuses() {
    let Some(db) = PgTestDb::create().await else { return };
    let fake = start_fake().await;
    let work = Workdir::new();
    let manual = |c: &mut toml::Table| {
        use_postgres(c, &db.url);
        set(c, "store.auto_migrate", false);
    };
    let path = write_config(&fake, &work, manual);
    let run = |command: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_calgate"))
            .args([command, "--config"])
            .arg(&path)
            .output()
            .expect("run calgate")
    };
    // `serve` on an unmigrated database stops at once and says what to do.
    let refused = run("serve");
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("calgate migrate"), "{message}");

    let migrated = run("migrate");
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    assert!(String::from_utf8_lossy(&migrated.stdout).contains("store migrated"));
    assert!(!String::from_utf8_lossy(&migrated.stdout).contains("password"));
    let again = run("migrate");
    assert!(again.status.success(), "migrating twice is harmless");
    let app = start_binary_with(&fake, &work, manual).await;
    let grant = app.connect("ada").await;
    assert!(grant.sub.starts_with("acc_"));
}

/// Twenty grants expire at once while Cronofy's token endpoint takes 2 s: the
/// refreshes must not take every pooled connection, so another tenant's
/// GetGrant stays fast and readiness stays SERVING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_storm_leaves_connections_for_everyone_else() {
    let Some(db) = PgTestDb::create().await else { return };
    let app = spawn_app_edited(|s| {
        s.store.url = db.url.clone();
        s.upstream.request_timeout = Duration::from_secs(30);
        s.upstream.retry.ceiling = Duration::from_secs(60);
    })
    .await;
    let mut grants = Vec::new();
    for n in 0..20 {
        grants.push(app.connect(Some(&format!("user-{n}"))).await);
    }
    let other = app
        .connect_as(GLOBEX_KEY, GLOBEX_REDIRECT, Some("globex-user"))
        .await
        .expect("globex connects");
    app.fake
        .inject(Fault::delay(Endpoint::Token, Duration::from_secs(2)).times(20));
    app.clock.advance(Duration::from_secs(3 * 3600));
    let tokens = app.fake.count(Endpoint::Token);
    let writes: Vec<_> = grants
        .iter()
        .map(|grant| {
            let client = app.client.clone();
            let request = app.req(pb::UpsertEventRequest {
                mode: Default::default(),
                user: by_sub(&grant.sub),
                calendar_id: app.fake.calendar_ids(&grant.sub)[0].clone(),
                event: Some(event("evt-1")),
            });
            tokio::spawn(async move { client.clone().upsert_event(request).await.map(drop) })
        })
        .collect();
    // Refreshes are at Cronofy, holding their leases.
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.fake.count(Endpoint::Token) == tokens {
        assert!(tokio::time::Instant::now() < give_up, "no refresh reached Cronofy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        let mut get = with_key(
            GLOBEX_KEY,
            pb::GetGrantRequest {
                user: Some(pb::get_grant_request::User::Sub(other.sub.clone())),
            },
        );
        get.metadata_mut().insert("grpc-timeout", "1S".parse().expect("header"));
        app.client
            .clone()
            .get_grant(get)
            .await
            .expect("another tenant's read is not starved");
        let status = health(&app.channel, "calgate.v1.CalendarWriteService").await;
        assert_eq!(status.ok(), Some(ServingStatus::Serving), "readiness stays SERVING");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for write in writes {
        write.await.expect("task").expect("every write completes");
    }
}

/// A probe whose caller gave up hands the shared breaker back at once: the
/// next call on the other replica probes instead of failing fast for the
/// rest of the cool-down (issue #25, item 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_probe_lets_the_other_replica_probe_at_once() {
    let Some(db) = PgTestDb::create().await else { return };
    let (fake, _work, a, b, sub, calendar) = breaker_replicas(&db, "3s").await;
    let grant = pb::Grant {
        sub,
        ..Default::default()
    };

    fake.inject(Fault::status(Endpoint::UpsertEvent, 503).times(2));
    a.upsert(&grant.sub, &calendar)
        .await
        .expect_err("two 503s open the breaker");
    tokio::time::sleep(Duration::from_millis(3200)).await;

    // A's call is the probe; Cronofy stalls and A's caller gives up.
    fake.inject(Fault::delay(Endpoint::UpsertEvent, Duration::from_secs(20)).times(1));
    let sent = fake.count(Endpoint::UpsertEvent);
    let status = Upsert::new(by_sub(&grant.sub), &calendar)
        .timeout(Some("500m"))
        .send(&a.client)
        .await
        .expect_err("the probe's caller gives up");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(fake.count(Endpoint::UpsertEvent), sent + 1, "A's probe reached Cronofy");

    // B probes within its cached view of the breaker (1 s), well inside the
    // 3 s the abandoned probe's lease would otherwise hold.
    let started = Instant::now();
    loop {
        match b.upsert(&grant.sub, &calendar).await {
            Ok(()) => break,
            Err(status) => {
                assert_status(&status, Code::Unavailable, "UPSTREAM_UNAVAILABLE");
                assert!(
                    started.elapsed() < Duration::from_millis(2000),
                    "B failed fast for {:?} after A's probe was abandoned",
                    started.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
