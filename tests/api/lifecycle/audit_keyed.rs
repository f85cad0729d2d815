//! The keyed audit chain (issue #26): a database writer without the audit
//! key cannot rewrite the trail — not by editing, inserting, wiping it under
//! a forged pruning mark, or recomputing every row with plain SHA-256 — and
//! a head kept elsewhere catches what the database alone cannot.

use calgate::domain::audit_chain::{ChainFields, unkeyed_chain_hash};

use super::*;

/// Runs `statements` against the test's database (SQLite file or PostgreSQL).
async fn sql(work: &Workdir, pg: Option<&PgTestDb>, statements: &[String]) {
    match pg {
        Some(pg) => {
            let mut conn = PgConnection::connect(&pg.url).await.expect("connect");
            for statement in statements {
                sqlx::query(statement).execute(&mut conn).await.expect("tamper");
            }
        }
        None => {
            let url = format!("sqlite://{}", work.db_path().display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("connect");
            for statement in statements {
                sqlx::query(statement).execute(&mut conn).await.expect("tamper");
            }
        }
    }
}

/// The statements that recompute acme's whole chain with plain SHA-256
/// (what a writer without the key can do), read from `rows`.
fn rewrite_unkeyed(rows: &[Value]) -> Vec<String> {
    let mut statements = Vec::new();
    let mut prev = String::new();
    for row in rows {
        let seq = row["seq"].as_i64().expect("seq");
        let at = time::OffsetDateTime::parse(
            row["time"].as_str().expect("time"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("time");
        let fields = ChainFields {
            tenant: "acme",
            seq,
            recorded_at_ms: (at.unix_timestamp_nanos() / 1_000_000) as i64,
            kind: row["kind"].as_str().expect("kind"),
            sub_hash: row["sub_hash"].as_str().expect("sub_hash"),
            user_ref_hash: row["user_ref_hash"].as_str().expect("user_ref_hash"),
            actor: row["actor"].as_str().expect("actor"),
            request_id: row["request_id"].as_str().expect("request_id"),
            detail: row["detail"].as_str().expect("detail"),
            prev_hash: &prev,
        };
        let hash = unkeyed_chain_hash(&fields);
        statements.push(format!(
            "UPDATE audit_events SET prev_hash = '{prev}', hash = '{hash}' WHERE tenant_id = 'acme' AND seq = {seq}"
        ));
        prev = hash;
    }
    statements.push(format!(
        "UPDATE audit_heads SET last_hash = '{prev}' WHERE tenant_id = 'acme'"
    ));
    statements
}

async fn keyed_chain(pg: Option<&PgTestDb>) {
    let fake = start_fake().await;
    let work = Workdir::new();
    let cfg = config(&fake, &work, pg, &["k1"]);
    let binary = start(&fake, &work, pg, &["k1"], |_| {}).await;
    binary.connect("ada").await;
    binary.connect("bob").await;
    binary.connect("cy").await;
    drop(binary);
    let verify = |extra: &[&str]| {
        let mut args: Vec<String> = ["audit", "--config", &cfg, "--tenant", "acme", "--verify"]
            .iter()
            .map(|arg| (*arg).to_owned())
            .collect();
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            calgate(&args).await
        }
    };

    let head = calgate_ok(&["audit", "--config", &cfg, "--tenant", "acme", "--head"]).await;
    let kept: Value = serde_json::from_str(head.stdout.trim()).expect("one JSON line");
    assert_eq!((kept["tenant"].as_str(), kept["seq"].as_i64()), (Some("acme"), Some(3)));
    assert!(kept["hash"].as_str().is_some_and(|h| h.starts_with("k1:")), "{kept}");
    let head_file = work.path("acme-head.json");
    std::fs::write(&head_file, &head.stdout).expect("keep the head");
    let head_arg = head_file.to_str().expect("utf-8 path");
    let intact = verify(&["--expect-head", head_arg]).await;
    assert!(intact.ok, "{}", intact.stderr);
    let rows = calgate_ok(&["audit", "--config", &cfg, "--tenant", "acme"])
        .await
        .lines();

    // An inserted row: whatever hash it carries, it is not calgate's.
    let row3 = rows[2]["hash"].as_str().expect("hash").to_owned();
    let forged = format!("k1:{}", "0".repeat(64));
    let insert = format!(
        "INSERT INTO audit_events (tenant_id, seq, recorded_at, kind, sub, user_ref, sub_hash, user_ref_hash, \
         actor, request_id, detail, prev_hash, hash) SELECT tenant_id, 4, recorded_at, kind, sub, user_ref, \
         sub_hash, user_ref_hash, 'operator', request_id, detail, '{row3}', '{forged}' FROM audit_events \
         WHERE tenant_id = 'acme' AND seq = 3"
    );
    let move_head = format!("UPDATE audit_heads SET last_seq = 4, last_hash = '{forged}' WHERE tenant_id = 'acme'");
    sql(&work, pg, &[insert, move_head]).await;
    let inserted = verify(&[]).await;
    assert!(
        !inserted.ok && inserted.stderr.contains("row 4 was edited"),
        "{}",
        inserted.stderr
    );
    let undo = [
        "DELETE FROM audit_events WHERE tenant_id = 'acme' AND seq = 4".to_owned(),
        format!("UPDATE audit_heads SET last_seq = 3, last_hash = '{row3}' WHERE tenant_id = 'acme'"),
    ];
    sql(&work, pg, &undo).await;
    assert!(verify(&[]).await.ok, "restored");

    // A tampered head row.
    sql(
        &work,
        pg,
        &["UPDATE audit_heads SET last_hash = 'k1:00' WHERE tenant_id = 'acme'".to_owned()],
    )
    .await;
    let head_tampered = verify(&[]).await;
    assert!(
        !head_tampered.ok && head_tampered.stderr.contains("before row 3"),
        "{}",
        head_tampered.stderr
    );
    sql(&work, pg, &undo[1..]).await;

    // The whole chain recomputed with plain SHA-256.
    sql(&work, pg, &rewrite_unkeyed(&rows)).await;
    let rewritten = verify(&[]).await;
    assert!(
        !rewritten.ok && rewritten.stderr.contains("row 1 is not keyed"),
        "{}",
        rewritten.stderr
    );
    let anchored = verify(&["--unkeyed-through", "3", "--expect-head", head_arg]).await;
    assert!(
        !anchored.ok && anchored.stderr.contains("row 3) was rewritten"),
        "even told the rows predate keyed chains, the kept head catches it: {}",
        anchored.stderr
    );

    // The wipe: a pruning mark claiming every row, and no rows.
    sql(
        &work,
        pg,
        &[
            "UPDATE audit_heads SET pruned_through = last_seq, pruned_hash = last_hash WHERE tenant_id = 'acme'"
                .to_owned(),
            "DELETE FROM audit_events WHERE tenant_id = 'acme'".to_owned(),
        ],
    )
    .await;
    let wiped = verify(&[]).await;
    assert!(
        !wiped.ok && wiped.stderr.contains("pruning mark (through row 3) is not signed"),
        "{}",
        wiped.stderr
    );
    assert_eq!(wiped.code, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_without_the_audit_key_cannot_rewrite_the_trail_on_sqlite() {
    keyed_chain(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_without_the_audit_key_cannot_rewrite_the_trail_on_postgres() {
    let Some(pg) = PgTestDb::create().await else { return };
    keyed_chain(Some(&pg)).await;
}
