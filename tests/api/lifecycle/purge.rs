//! Tenant offboarding (`calgate purge-tenant`).

use super::*;

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
    // Two writes wait in the queue: Cronofy refuses event writes for now.
    crate::queue::outage(&fake);
    for id in ["queued-one", "queued-two"] {
        binary
            .client
            .clone()
            .upsert_event(crate::queue::queued_upsert(&ada.sub, &ada_calendar, id, id))
            .await
            .expect("queued");
    }

    // Purged while the replica serves.
    let ran = calgate_ok(&["purge-tenant", "--config", &cfg, "acme"]).await;
    let summary = &ran.lines()[0];
    assert_eq!(summary["grants_deleted"], 2, "{summary}");
    assert_eq!(summary["revoked_at_cronofy"], 2, "{summary}");
    assert_eq!(summary["revocations_pending"], 0, "{summary}");
    assert_eq!(summary["queued_writes_dropped"], 2, "{summary}");
    // Cronofy is back; the dropped writes are never delivered.
    let writes_before = fake.count(Endpoint::UpsertEvent) + fake.count(Endpoint::Batch);
    fake.clear_faults();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        fake.count(Endpoint::UpsertEvent) + fake.count(Endpoint::Batch),
        writes_before,
        "a dropped write went to Cronofy"
    );
    assert!(fake.event(&ada.sub, &ada_calendar, "queued-one").is_none());

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
    assert_store_holds_none(
        &work,
        pg,
        &[&ada.sub, &bob.sub, "purge-ada-5c1e", "purge-bob-77d2"],
        &globex.sub,
    )
    .await;
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
    let detail = purged["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("2 queued writes dropped"), "{purged}");
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
