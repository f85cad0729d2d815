//! Per-user erasure (ForgetUser).

use super::*;

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

    assert_store_holds_none(&work, pg, &[&ada.sub, "forget-ada-91b0"], "forget-bob-0c44").await;
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

/// With `[callbacks]`, calgate also holds what it wrote of each event
/// (`event_writes`), the user's queued and processed notifications and their
/// channel: ForgetUser erases those rows too, on both backends — nothing in
/// the database names the person's sub, user_ref or calendar afterwards.
async fn forget_user_with_notifications(pg: Option<&PgTestDb>) {
    let fake = start_fake().await;
    let work = Workdir::new();
    let port = free_port();
    let binary = start(&fake, &work, pg, &["k1"], |c| with_callbacks(c, port, port)).await;
    let mut changes = watch(&binary.client, ACME_KEY, "").await.expect("watch");
    // Ada connected once under another sub (another account) before: the
    // user_ref now points at her second grant; her first is hers all the same.
    let ada_before = binary.connect("forget-noted-ada-5e21").await;
    let calendar_before = fake.calendar_ids(&ada_before.sub)[0].clone();
    binary.upsert(&ada_before.sub, &calendar_before).await.expect("write");
    let ada = binary.connect("forget-noted-ada-5e21").await;
    assert_ne!(ada.sub, ada_before.sub);
    let bob = binary.connect("forget-noted-bob-77d0").await;
    tokio::time::timeout(ARRIVAL, async {
        while fake.channels(&ada.sub).is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("ada's channel opens");
    let calendar = fake.calendar_ids(&ada.sub)[0].clone();
    for id in ["kept", "moved-away"] {
        Upsert::new(by_sub(&ada.sub), &calendar)
            .event_id(id)
            .send(&binary.client)
            .await
            .expect("write");
    }
    assert_eq!(fake.user_deletes_event(&ada.sub, &calendar, "moved-away").await, [200]);
    let noticed = tokio::time::timeout(ARRIVAL, async {
        loop {
            let change = next(&mut changes).await;
            if matches!(change.change, Some(pb::change::Change::Event(_))) {
                break change;
            }
        }
    })
    .await
    .expect("the user's deletion is noticed through a notification");
    assert_eq!(noticed.sub, ada.sub);

    let forgotten = binary
        .client
        .clone()
        .forget_user(forget(
            ACME_KEY,
            pb::forget_user_request::User::UserRef("forget-noted-ada-5e21".into()),
            true,
        ))
        .await
        .expect("forget")
        .into_inner();
    assert!(fake.channels(&ada.sub).is_empty(), "the channel is closed at Cronofy");
    assert_eq!(forgotten.sub, ada.sub);
    assert_eq!(
        forgotten.other_subs,
        std::slice::from_ref(&ada_before.sub),
        "her earlier grant goes too"
    );
    assert_eq!(fake.event_count(&ada_before.sub), 0, "its events deleted at Cronofy");
    assert!(
        fake.revoked_subs("acme-client").contains(&ada_before.sub),
        "and revoked"
    );
    drop(binary);

    let erased = [
        ada.sub.as_str(),
        ada_before.sub.as_str(),
        "forget-noted-ada-5e21",
        calendar.as_str(),
        calendar_before.as_str(),
    ];
    assert_store_holds_none(&work, pg, &erased, &bob.sub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_user_erases_notifications_and_event_records_on_sqlite() {
    forget_user_with_notifications(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_user_erases_notifications_and_event_records_on_postgres() {
    let Some(pg) = PgTestDb::create().await else { return };
    forget_user_with_notifications(Some(&pg)).await;
}

// ---------------------------------------------------------------- audit trail
