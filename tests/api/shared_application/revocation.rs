//! Revocations when several tenants hold one account: only the last revokes at Cronofy, and a queued revocation never outlives a new consent.

use super::*;

async fn only_the_last_tenant_revokes(pg: Option<&PgTestDb>) {
    let app = spawn_shared(pg, |_| {}).await;
    let sub = connect_both(&app, "ada").await;
    let calendar = app.fake.calendar_ids(&sub)[0].clone();

    let revoked = app
        .client
        .clone()
        .revoke_grant(with_key(GLOBEX_KEY, revoke_by_ref("ada")))
        .await
        .expect("globex revokes")
        .into_inner();
    assert_eq!(revoked.grant.expect("grant").status, pb::GrantStatus::Revoked as i32);
    assert!(app.fake.revoked_subs("acme-client").is_empty(), "Cronofy not asked");
    assert_eq!(app.fake.count(Endpoint::Revoke), 0);
    // acme's grant goes on working, refresh included.
    app.fake.expire_access_tokens();
    upsert(&app.client, ACME_KEY, &sub, &calendar, "after-globex-left", "acme")
        .await
        .expect("acme's grant is intact");
    let status = upsert(&app.client, GLOBEX_KEY, &sub, &calendar, "x", "globex")
        .await
        .expect_err("globex's grant is revoked");
    assert_eq!(status.code(), Code::FailedPrecondition);

    // acme is the last to let go: now Cronofy revokes.
    app.client
        .clone()
        .revoke_grant(with_key(ACME_KEY, revoke_by_ref("ada")))
        .await
        .expect("acme revokes");
    assert_eq!(app.fake.revoked_subs("acme-client"), [sub]);
}

#[tokio::test]
async fn revoking_in_one_tenant_leaves_the_accounts_other_grant_working() {
    only_the_last_tenant_revokes(None).await;
}

#[tokio::test]
async fn revoking_in_one_tenant_leaves_the_accounts_other_grant_working_on_postgres() {
    let Some(pg) = postgres().await else { return };
    only_the_last_tenant_revokes(Some(&pg)).await;
}

async fn queued_revocation_yields_to_a_new_consent(pg: Option<&PgTestDb>) {
    let app = spawn_shared(pg, |settings| {
        settings.upstream.revoke_retry_interval = Duration::from_millis(100);
    })
    .await;
    let grant = app.connect(Some("ada")).await;
    // Cronofy fails the revoke, and every retry until the user is back: it is queued.
    app.fake.inject(Fault::status(Endpoint::Revoke, 503).times(1000));
    let revoked = app
        .client
        .clone()
        .revoke_grant(with_key(ACME_KEY, revoke_by_ref("ada")))
        .await
        .expect("revoked here")
        .into_inner();
    assert!(revoked.upstream_revoke_pending);
    // The user consents again while it waits.
    app.fake.set_next_authorization(NextAuthorization {
        sub: Some(grant.sub.clone()),
        ..Default::default()
    });
    app.connect(Some("ada")).await;
    // An attempt that checked the queue before the consent has met its 503 by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.fake.clear_faults();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        app.fake.revoked_subs("acme-client").is_empty(),
        "the new consent stands"
    );
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    app.fake.expire_access_tokens();
    upsert(&app.client, ACME_KEY, &grant.sub, &calendar, "after", "works")
        .await
        .expect("the reconnected grant works");
    assert_eq!(audit_kinds(&app, pg, "revocation_dropped").await, 1, "audited");
}

/// How many audit rows of `kind` the store holds.
async fn audit_kinds(app: &TestApp, pg: Option<&PgTestDb>, kind: &str) -> i64 {
    let query = "SELECT COUNT(*) FROM audit_events WHERE kind = $1";
    match pg {
        Some(pg) => {
            let pool = sqlx::PgPool::connect(&pg.url).await.expect("postgres");
            sqlx::query_scalar(query)
                .bind(kind)
                .fetch_one(&pool)
                .await
                .expect("count")
        }
        None => {
            let url = format!("sqlite://{}", app.work.db_path().display());
            let pool = sqlx::SqlitePool::connect(&url).await.expect("sqlite");
            sqlx::query_scalar(query)
                .bind(kind)
                .fetch_one(&pool)
                .await
                .expect("count")
        }
    }
}

#[tokio::test]
async fn a_queued_revocation_never_outlives_a_new_consent() {
    queued_revocation_yields_to_a_new_consent(None).await;
}

#[tokio::test]
async fn a_queued_revocation_never_outlives_a_new_consent_on_postgres() {
    let Some(pg) = postgres().await else { return };
    queued_revocation_yields_to_a_new_consent(Some(&pg)).await;
}

// 5. A fair share of the application's budget.
