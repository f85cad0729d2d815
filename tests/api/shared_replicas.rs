//! Several products on one Cronofy application, served by two replicas (the
//! real binary) on one PostgreSQL: the replicas agree on each tenant's event
//! ids, the application's shared budget is shared fairly across them, and
//! purging one tenant leaves the other's account connected.

use std::time::{Duration, Instant};

use calgate::grpc::pb;
use fake_cronofy::{FakeCronofy, NextAuthorization};

use crate::{
    lifecycle::calgate_ok,
    postgres::{PgTestDb, use_postgres},
    shared_application::{delete, summaries, upsert},
    support::*,
    support::{Binary, set, start_binary_with, write_config},
};

/// Moves globex onto acme's application, the store onto `db`, and gives
/// the application `per_second` calls a second.
fn shared_config(config: &mut toml::Table, work: &Workdir, db: &PgTestDb, per_second: i64) {
    use_postgres(config, &db.url);
    let tenants = config
        .get_mut("tenants")
        .and_then(toml::Value::as_array_mut)
        .expect("tenants");
    for tenant in tenants.iter_mut() {
        let tenant = tenant.as_table_mut().expect("a tenant table");
        let mut limit = toml::Table::new();
        limit.insert("per_second".into(), per_second.into());
        limit.insert("per_minute".into(), (per_second * 60).into());
        tenant.insert("rate_limit".into(), limit.into());
        if tenant.get("id").and_then(toml::Value::as_str) == Some("globex") {
            set(tenant, "client_id", "acme-client");
            set(
                tenant,
                "client_secret_file",
                work.path("acme.secret").display().to_string(),
            );
        }
    }
}

/// Two replicas started at the same moment on a fresh database, so both
/// resolve the tenants' event id schemes at once.
async fn two_shared_replicas(db: &PgTestDb, per_second: i64) -> (FakeCronofy, Workdir, Binary, Binary) {
    let fake = start_fake().await;
    fake.register_redirect_uris("acme-client", &[ACME_REDIRECT, ACME_REDIRECT_2, GLOBEX_REDIRECT]);
    let work = Workdir::new();
    let (a, b) = tokio::join!(
        start_binary_with(&fake, &work, |c| shared_config(c, &work, db, per_second)),
        start_binary_with(&fake, &work, |c| shared_config(c, &work, db, per_second)),
    );
    (fake, work, a, b)
}

/// The same account connected through acme on `a` and globex on `b`: its sub.
async fn connect_both(fake: &FakeCronofy, a: &Binary, b: &Binary) -> String {
    let acme = a
        .connect_as(
            ACME_KEY,
            pb::BuildAuthorizeUrlRequest {
                redirect_uri: ACME_REDIRECT.into(),
                user_ref: Some("ada".into()),
                ..Default::default()
            },
        )
        .await;
    fake.set_next_authorization(NextAuthorization {
        sub: Some(acme.sub.clone()),
        ..Default::default()
    });
    let globex = b
        .connect_as(
            GLOBEX_KEY,
            pb::BuildAuthorizeUrlRequest {
                redirect_uri: GLOBEX_REDIRECT.into(),
                user_ref: Some("ada".into()),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(acme.sub, globex.sub, "one account, two grants");
    acme.sub
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_agree_on_each_tenants_event_ids() {
    let Some(db) = PgTestDb::create().await else { return };
    let (fake, _work, a, b) = two_shared_replicas(&db, 10_000).await;
    let sub = connect_both(&fake, &a, &b).await;
    let calendar = fake.calendar_ids(&sub)[0].clone();

    // Each tenant writes "standup" through one replica…
    upsert(&a.client, ACME_KEY, &sub, &calendar, "standup", "acme's")
        .await
        .expect("acme writes on a");
    upsert(&b.client, GLOBEX_KEY, &sub, &calendar, "standup", "globex's")
        .await
        .expect("globex writes on b");
    assert_eq!(summaries(&fake, &sub, &calendar), ["acme's", "globex's"]);
    // …and updates and deletes it through the other: the same event each time.
    upsert(&b.client, ACME_KEY, &sub, &calendar, "standup", "acme's, moved")
        .await
        .expect("acme writes on b");
    upsert(&a.client, GLOBEX_KEY, &sub, &calendar, "standup", "globex's, moved")
        .await
        .expect("globex writes on a");
    assert_eq!(
        summaries(&fake, &sub, &calendar),
        ["acme's, moved", "globex's, moved"],
        "no duplicate on either replica"
    );
    delete(&a.client, GLOBEX_KEY, &sub, &calendar, "standup")
        .await
        .expect("globex deletes on a");
    assert_eq!(summaries(&fake, &sub, &calendar), ["acme's, moved"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_burst_on_one_replica_does_not_starve_another_tenant_on_the_other() {
    let Some(db) = PgTestDb::create().await else { return };
    let (fake, _work, a, b) = two_shared_replicas(&db, 5).await;
    let sub = connect_both(&fake, &a, &b).await;
    let calendar = fake.calendar_ids(&sub)[0].clone();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // acme keeps 150 writes waiting for the application's budget on a…
    let mut waiting = tokio::task::JoinSet::new();
    for n in 0..150 {
        let upsert = Upsert::new(by_sub(&sub), &calendar)
            .event_id(&format!("burst-{n}"))
            .timeout(Some("120S"));
        let client = a.client.clone();
        waiting.spawn(async move { upsert.send(&client).await });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // …while globex's writes on b, one after another, each get a fair turn.
    for n in 0..5 {
        let started = Instant::now();
        upsert(&b.client, GLOBEX_KEY, &sub, &calendar, &format!("single-{n}"), "globex")
            .await
            .expect("globex's write");
        let took = started.elapsed();
        // Starved, it would wait behind acme's 150 writes at 5/s: 30 s. A fair
        // turn takes well under a second; 5 s leaves room for a loaded machine.
        assert!(took < Duration::from_secs(5), "globex's write {n} waited {took:?}");
    }
    assert!(waiting.len() > 100, "acme's burst was still waiting");
    waiting.abort_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_one_tenant_leaves_the_other_tenants_account_connected() {
    let Some(db) = PgTestDb::create().await else { return };
    let (fake, work, a, b) = two_shared_replicas(&db, 10_000).await;
    let sub = connect_both(&fake, &a, &b).await;
    let calendar = fake.calendar_ids(&sub)[0].clone();
    upsert(&a.client, ACME_KEY, &sub, &calendar, "standup", "acme's")
        .await
        .expect("acme writes");
    upsert(&b.client, GLOBEX_KEY, &sub, &calendar, "standup", "globex's")
        .await
        .expect("globex writes");

    // globex is offboarded while both replicas serve.
    let config = write_config(&fake, &work, |c| shared_config(c, &work, &db, 10_000));
    let config = config.display().to_string();
    let ran = calgate_ok(&["purge-tenant", "--config", &config, "globex"]).await;
    let summary = &ran.lines()[0];
    assert_eq!(summary["grants_deleted"], 1, "{summary}");
    assert_eq!(summary["revoked_at_cronofy"], 0, "{summary}");
    assert_eq!(summary["left_to_other_tenants"], 1, "{summary}");
    assert!(fake.revoked_subs("acme-client").is_empty(), "acme's consent stands");

    // acme's grant still works on both replicas; its event is untouched.
    for replica in [&a, &b] {
        upsert(&replica.client, ACME_KEY, &sub, &calendar, "standup", "acme's")
            .await
            .expect("acme still writes");
    }
    fake.expire_access_tokens();
    upsert(&b.client, ACME_KEY, &sub, &calendar, "standup", "acme's")
        .await
        .expect("acme's refresh token still works");
    assert!(summaries(&fake, &sub, &calendar).contains(&"acme's".to_owned()));
    let gone = fetch_grant(&a.client, GLOBEX_KEY, &sub).await.expect_err("purged");
    assert_eq!(gone.code(), tonic::Code::NotFound);
}
