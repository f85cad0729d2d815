//! Events gone before access is (issue #26, item 2). Cronofy accepts a bulk
//! delete (202) and applies it later; the fake drops a delete still queued
//! when the authorization is revoked (the strict reading). ForgetUser must
//! see the events gone before it revokes — waiting a bounded while, then
//! leaving the rest to the erasure worker, across a restart — and
//! purge-tenant must not revoke a grant whose erasure still waits.

use super::*;

/// ForgetUser with `delete_events` and `[erasure]` waiting at most 1 s; the
/// worker looks every second.
fn quick_erasure(config: &mut toml::Table) {
    set(config, "erasure.confirm_within", "1s");
    set(config, "erasure.retry_interval", "1s");
}

async fn forget_deleting(binary: &Binary, user_ref: &str) -> pb::ForgetUserResponse {
    binary
        .client
        .clone()
        .forget_user(forget(
            ACME_KEY,
            pb::forget_user_request::User::UserRef(user_ref.into()),
            true,
        ))
        .await
        .expect("forget")
        .into_inner()
}

async fn audit_rows(cfg: &str, user_ref: &str) -> Vec<Value> {
    calgate_ok(&[
        "audit",
        "--config",
        cfg,
        "--tenant",
        "acme",
        "--user-ref",
        user_ref,
        "--verify",
    ])
    .await
    .lines()
}

/// Cronofy applies the delete a moment after accepting it: ForgetUser reads
/// the events back until they are gone, and only then revokes.
async fn waits_for_the_deletes(pg: Option<&PgTestDb>) {
    let fake = start_fake().await;
    fake.apply_bulk_deletes_after(Duration::from_millis(1500));
    let work = Workdir::new();
    let cfg = config(&fake, &work, pg, &["k1"]);
    let binary = start(&fake, &work, pg, &["k1"], |_| {}).await;
    let ada = binary.connect("erase-wait-ada-17c2").await;
    let calendar = fake.calendar_ids(&ada.sub)[0].clone();
    binary.upsert(&ada.sub, &calendar).await.expect("write");

    let forgotten = forget_deleting(&binary, "erase-wait-ada-17c2").await;
    assert_eq!(forgotten.events_deletion(), pb::EventsDeletion::Confirmed);
    assert!(forgotten.events_deleted);
    assert_eq!(fake.event_count(&ada.sub), 0, "the events went before the revoke");
    assert!(fake.revoked_subs("acme-client").contains(&ada.sub));
    let reads = fake
        .requests()
        .iter()
        .filter(|r| {
            r.endpoint == Endpoint::ReadEvents && r.query.as_deref() == Some("tzid=Etc%2FUTC&only_managed=true")
        })
        .count();
    assert!(reads >= 2, "the events were read back until gone ({reads} reads)");

    let rows = audit_rows(&cfg, "erase-wait-ada-17c2").await;
    assert_eq!(kinds(&rows), ["grant_connected", "grant_forgotten"], "{rows:?}");
    let detail = rows[1]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("events deleted, confirmed at 20"), "{detail}");
    let metrics = scrape(binary.metrics).await;
    assert_eq!(
        sample(&metrics, r#"calgate_erasures_total{outcome="confirmed"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&metrics, "calgate_erasures_pending"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_user_sees_the_events_gone_before_it_revokes_on_sqlite() {
    waits_for_the_deletes(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_user_sees_the_events_gone_before_it_revokes_on_postgres() {
    let Some(pg) = PgTestDb::create().await else { return };
    waits_for_the_deletes(Some(&pg)).await;
}

/// Cronofy is slower than ForgetUser waits: the answer says PENDING, the
/// person is already unreachable, nothing is revoked; a restarted replica's
/// erasure worker revokes and erases once the events are gone.
async fn finishes_in_the_background(pg: Option<&PgTestDb>) {
    let fake = start_fake().await;
    fake.apply_bulk_deletes_after(Duration::from_secs(3600));
    let work = Workdir::new();
    let cfg = config(&fake, &work, pg, &["k1"]);
    let mut binary = start(&fake, &work, pg, &["k1"], quick_erasure).await;
    let ada = binary.connect("erase-slow-ada-4b90").await;
    let bob = binary.connect("erase-slow-bob-a3e1").await;
    let calendar = fake.calendar_ids(&ada.sub)[0].clone();
    binary.upsert(&ada.sub, &calendar).await.expect("write");

    let forgotten = forget_deleting(&binary, "erase-slow-ada-4b90").await;
    assert_eq!(forgotten.events_deletion(), pb::EventsDeletion::Pending);
    assert!(!forgotten.events_deleted);
    assert_eq!(forgotten.sub, ada.sub);
    // Not revoked: the queued delete would go with the authorization.
    assert!(!fake.revoked_subs("acme-client").contains(&ada.sub));
    assert_eq!(fake.event_count(&ada.sub), 1, "Cronofy has not applied the delete yet");
    // Unreachable for every call already, by sub and by user_ref.
    let by_sub = fetch_grant(&binary.client, ACME_KEY, &ada.sub)
        .await
        .expect_err("hidden");
    assert_eq!(by_sub.code(), Code::NotFound);
    let write = upsert_as(&binary.client, ACME_KEY, &ada.sub, &calendar)
        .await
        .expect_err("hidden");
    assert_eq!(write.code(), Code::NotFound);
    let again = binary
        .client
        .clone()
        .forget_user(forget(
            ACME_KEY,
            pb::forget_user_request::User::UserRef("erase-slow-ada-4b90".into()),
            true,
        ))
        .await
        .expect_err("the user_ref is gone");
    assert_eq!(again.code(), Code::NotFound);
    let metrics = scrape(binary.metrics).await;
    assert_eq!(sample(&metrics, "calgate_erasures_pending"), Some(1.0));
    assert_eq!(
        sample(&metrics, r#"calgate_erasures_total{outcome="deferred"}"#),
        Some(1.0)
    );

    // The replica goes; a new one finds the erasure in the store. Meanwhile
    // the store names the person only by the sub the worker needs.
    binary.sigkill().await;
    match pg {
        None => assert!(
            !contains(&database_bytes(&work), "erase-slow-ada-4b90"),
            "the user_ref is erased at once"
        ),
        Some(pg) => assert_eq!(rows_mentioning(pg, &["erase-slow-ada-4b90"]).await, 0),
    }
    let binary = start(&fake, &work, pg, &["k1"], quick_erasure).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !fake.revoked_subs("acme-client").contains(&ada.sub),
        "still not revoked while the events are there"
    );
    fake.apply_queued_deletes();
    assert_eq!(fake.event_count(&ada.sub), 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !fake.revoked_subs("acme-client").contains(&ada.sub) {
        assert!(tokio::time::Instant::now() < deadline, "the erasure never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = scrape(binary.metrics).await;
        if sample(&metrics, "calgate_erasures_pending") == Some(0.0) {
            assert_eq!(
                sample(&metrics, r#"calgate_erasures_total{outcome="confirmed_later"}"#),
                Some(1.0)
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the erasure stays pending");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fake.live_refresh_token_subs("acme-client"), vec![bob.sub.clone()]);
    drop(binary);

    // The user_ref was erased when the erasure was deferred: the last row names the sub's hash only.
    let rows = audit_rows(&cfg, "erase-slow-ada-4b90").await;
    assert_eq!(kinds(&rows), ["grant_connected", "erasure_deferred"], "{rows:?}");
    let rows = calgate_ok(&["audit", "--config", &cfg, "--tenant", "acme", "--sub", &ada.sub])
        .await
        .lines();
    assert_eq!(
        kinds(&rows),
        ["grant_connected", "erasure_deferred", "grant_forgotten"],
        "{rows:?}"
    );
    assert!(rows.iter().all(|row| row["sub"].is_null() && row["user_ref"].is_null()));
    let detail = rows[2]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("events deleted, confirmed at 20") && detail.contains("revoked"),
        "{detail}"
    );
    let erased = [ada.sub.as_str(), "erase-slow-ada-4b90", calendar.as_str()];
    assert_store_holds_none(&work, pg, &erased, &bob.sub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_deletion_finishes_in_the_background_after_a_restart_on_sqlite() {
    finishes_in_the_background(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_deletion_finishes_in_the_background_after_a_restart_on_postgres() {
    let Some(pg) = PgTestDb::create().await else { return };
    finishes_in_the_background(Some(&pg)).await;
}

/// Cronofy fails the delete itself: ForgetUser does not fail, the erasure
/// waits, and the worker deletes again once Cronofy is back. Meanwhile
/// purge-tenant keeps that grant (not revoked) and says so; once the
/// erasure is done, purging again finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delete_is_retried_and_purge_tenant_waits_for_it() {
    let fake = start_fake().await;
    fake.apply_bulk_deletes_after(Duration::from_millis(200));
    let work = Workdir::new();
    let cfg = config(&fake, &work, None, &["k1"]);
    let binary = start(&fake, &work, None, &["k1"], |c| {
        quick_erasure(c);
        set(c, "erasure.retry_interval", "1h");
    })
    .await;
    let ada = binary.connect("erase-fail-ada-0d3b").await;
    let bob = binary.connect("erase-fail-bob-6f10").await;
    let calendar = fake.calendar_ids(&ada.sub)[0].clone();
    binary.upsert(&ada.sub, &calendar).await.expect("write");
    fake.inject(Fault::status(Endpoint::BulkDeleteEvents, 503).times(8));

    let forgotten = forget_deleting(&binary, "erase-fail-ada-0d3b").await;
    assert_eq!(forgotten.events_deletion(), pb::EventsDeletion::Pending);
    assert_eq!(fake.event_count(&ada.sub), 1);
    assert!(!fake.revoked_subs("acme-client").contains(&ada.sub));

    // Cronofy still failing: the purge revokes bob, keeps ada's grant, exits 1.
    let ran = calgate(&["purge-tenant", "--config", &cfg, "acme"]).await;
    assert_eq!(ran.code, Some(1), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stderr.contains("1 ForgetUser erasures still wait"),
        "{}",
        ran.stderr
    );
    let summary = &ran.lines()[0];
    assert_eq!(summary["erasures_pending"], 1, "{summary}");
    assert_eq!(summary["grants_deleted"], 1, "{summary}");
    assert!(fake.revoked_subs("acme-client").contains(&bob.sub));
    assert!(!fake.revoked_subs("acme-client").contains(&ada.sub));
    assert_eq!(fake.event_count(&ada.sub), 1);

    // Cronofy is back: the next purge deletes, sees the events gone, revokes, finishes.
    fake.clear_faults();
    let ran = calgate_ok(&["purge-tenant", "--config", &cfg, "acme"]).await;
    let summary = &ran.lines()[0];
    assert_eq!(summary["erasures_pending"], 0, "{summary}");
    assert_eq!(fake.event_count(&ada.sub), 0);
    assert!(fake.revoked_subs("acme-client").contains(&ada.sub));
    assert!(fake.live_refresh_token_subs("acme-client").is_empty());
    drop(binary);
    let bytes = database_bytes(&work);
    for needle in [ada.sub.as_str(), "erase-fail-ada-0d3b", calendar.as_str()] {
        assert!(!contains(&bytes, needle), "{needle} is still in the database file");
    }
}

/// The person consents again, with the same account, while their erasure
/// waits: the erasure is dropped (audited), their new grant works, and the
/// worker never revokes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consenting_again_drops_a_waiting_erasure() {
    let fake = start_fake().await;
    fake.apply_bulk_deletes_after(Duration::from_secs(3600));
    let work = Workdir::new();
    let cfg = config(&fake, &work, None, &["k1"]);
    let binary = start(&fake, &work, None, &["k1"], quick_erasure).await;
    let ada = binary.connect("erase-back-ada-2c77").await;
    let calendar = fake.calendar_ids(&ada.sub)[0].clone();
    binary.upsert(&ada.sub, &calendar).await.expect("write");
    let forgotten = forget_deleting(&binary, "erase-back-ada-2c77").await;
    assert_eq!(forgotten.events_deletion(), pb::EventsDeletion::Pending);

    fake.set_next_authorization(fake_cronofy::NextAuthorization {
        sub: Some(ada.sub.clone()),
        ..Default::default()
    });
    let again = binary.connect("erase-back-ada-2c77").await;
    assert_eq!(again.sub, ada.sub);
    let grant = fetch_grant(&binary.client, ACME_KEY, &ada.sub)
        .await
        .expect("visible again");
    assert_eq!(grant.status(), pb::GrantStatus::Active);
    binary.upsert(&ada.sub, &calendar).await.expect("the new grant writes");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !fake.revoked_subs("acme-client").contains(&ada.sub),
        "the worker does not revoke the new consent"
    );
    let rows = calgate_ok(&["audit", "--config", &cfg, "--tenant", "acme", "--sub", &ada.sub])
        .await
        .lines();
    assert_eq!(
        kinds(&rows),
        [
            "grant_connected",
            "erasure_deferred",
            "erasure_dropped",
            "grant_connected"
        ],
        "{rows:?}"
    );
}
