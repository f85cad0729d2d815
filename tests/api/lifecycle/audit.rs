//! The hash-chained audit trail (`calgate audit`).

use super::*;

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
