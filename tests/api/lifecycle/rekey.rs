//! Key rotation to completion (`calgate rekey`) while serving, and rotating
//! the state key with consents in flight.

use tokio::io::AsyncBufReadExt;

use super::*;

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

// ---------------------------------------------------------------- killed half-way

/// The store as `config` names it (its keys, its spill directory), in this process.
async fn open_store(config: &str) -> calgate::store::Store {
    let settings = calgate::config::Settings::load(std::path::Path::new(config)).expect("config");
    calgate::store::Store::connect(&settings.store, &settings.encryption_keys)
        .await
        .expect("the store opens: its audit key is readable")
}

/// Every grant of `subs` opens (tokens readable), and so does every spilled
/// pair. Returns how many grants each key seals.
async fn all_readable(config: &str, subs: &[String], spilled: usize) -> Vec<(String, i64)> {
    let store = open_store(config).await;
    for sub in subs {
        let grant = store
            .find_grant("acme", &calgate::domain::grant::GrantSelector::Sub(sub.clone()))
            .await
            .unwrap_or_else(|error| panic!("{sub} cannot be read: {error}"))
            .expect("still stored");
        assert!(grant.tokens.is_some(), "{sub} lost its tokens");
    }
    assert_eq!(store.spilled_pairs().len(), spilled, "every spilled pair opens");
    store.count_grants_by_key().await.expect("count")
}

/// `calgate rekey` killed with SIGKILL at random points, ten times, while a
/// replica serves and writes: every grant, spilled pair and the audit key
/// stay readable after each kill, and the next rekey finishes the job.
async fn rekey_killed_half_way(pg: Option<&PgTestDb>) {
    const GRANTS: usize = 1000;
    const SPILLED: usize = 12;
    let fake = start_fake().await;
    let work = Workdir::new();
    let binary = start(&fake, &work, pg, &["k1"], |_| {}).await;
    let ada = binary.connect("ada").await;
    drop(binary);

    // Many grants (so a rekey takes a while) and spilled pairs, under k1.
    let k1 = config(&fake, &work, pg, &["k1"]);
    let store = open_store(&k1).await;
    let mut subs = vec![ada.sub.clone()];
    for n in 0..GRANTS {
        let sub = format!("acc_rekey_{n:04}");
        let grant = crate::store::new_grant(&sub, &sub);
        store
            .save_grant("acme", &grant, None, &calgate::domain::audit::Actor::operator())
            .await
            .expect("save");
        if n < SPILLED {
            store.spill_pair("acme", &sub, 1, &grant.tokens);
        }
        subs.push(sub);
    }
    drop(store);

    // [k2, k1]: a replica serves (its own spill directory) and writes meanwhile.
    let rotating = config(&fake, &work, pg, &["k2", "k1"]);
    let serving_spill = work.path("serving-spill");
    let binary = start(&fake, &work, pg, &["k2", "k1"], |c| {
        set(c, "store.spill_dir", serving_spill.display().to_string());
    })
    .await;
    let calendar = fake.calendar_ids(&ada.sub)[0].clone();
    let writer = {
        let (client, sub) = (binary.client.clone(), ada.sub.clone());
        tokio::spawn(async move {
            let mut failures = 0;
            for _ in 0..40 {
                if Binary::upsert_with(client.clone(), &sub, &calendar).await.is_err() {
                    failures += 1;
                }
            }
            failures
        })
    };
    // Each run rotates the other way (k2 first, then k1 first…), so each has
    // every grant to re-seal when it is killed.
    let back = config(&fake, &work, pg, &["k1", "k2"]);
    let mut killed_mid_way = 0;
    for run in 0..10 {
        let direction = if run % 2 == 0 { &rotating } else { &back };
        let mut rekey = tokio::process::Command::new(env!("CARGO_BIN_EXE_calgate"))
            .args(["rekey", "--config", direction])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start rekey");
        // Past start-up (config, store, keys), then a random moment of the re-sealing.
        let mut stderr = tokio::io::BufReader::new(rekey.stderr.take().expect("stderr")).lines();
        let started = tokio::time::timeout(ARRIVAL, stderr.next_line()).await;
        assert!(
            matches!(&started, Ok(Ok(Some(line))) if line.contains("sealing everything")),
            "{started:?}"
        );
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..300))).await;
        rekey.start_kill().ok();
        rekey.wait().await.expect("killed");
        if all_readable(&rotating, &subs, SPILLED).await.len() == 2 {
            // Grants under both keys: this kill landed in the middle of the grants.
            killed_mid_way += 1;
        }
    }
    assert!(
        killed_mid_way >= 3,
        "only {killed_mid_way} of 10 kills landed among the grants"
    );
    assert_eq!(
        writer.await.expect("writer"),
        0,
        "writes failed while rekeys were killed"
    );

    let ran = calgate_ok(&["rekey", "--config", &rotating]).await;
    let summary = &ran.lines()[0];
    assert_eq!(summary["remaining_under_other_keys"], 0, "{summary}");
    drop(binary);

    // k1 gone: everything opens under k2 alone, spilled pairs included.
    let k2_only = config(&fake, &work, pg, &["k2"]);
    all_readable(&k2_only, &subs, SPILLED).await;
    calgate_ok(&["audit", "--config", &k2_only, "--tenant", "acme", "--verify"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_killed_half_way_loses_nothing_on_sqlite() {
    rekey_killed_half_way(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_killed_half_way_loses_nothing_on_postgres() {
    let Some(pg) = PgTestDb::create().await else { return };
    rekey_killed_half_way(Some(&pg)).await;
}

/// A queued write accepted under k1 is re-sealed by the rekey: once k1 is
/// removed it is still delivered, not failed as unreadable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_re_seals_queued_writes() {
    let fake = start_fake().await;
    let work = Workdir::new();
    let binary = start(&fake, &work, None, &["k1"], |_| {}).await;
    let ada = binary.connect("ada").await;
    let calendar = fake.calendar_ids(&ada.sub)[0].clone();
    crate::queue::outage(&fake);
    let mut ids = Vec::new();
    for id in ["first", "second"] {
        let accepted = binary
            .client
            .clone()
            .upsert_event(crate::queue::queued_upsert(&ada.sub, &calendar, id, id))
            .await
            .expect("queued")
            .into_inner();
        ids.push(accepted.write_id);
    }
    drop(binary);

    let rotating = config(&fake, &work, None, &["k2", "k1"]);
    let ran = calgate_ok(&["rekey", "--config", &rotating]).await;
    let summary = &ran.lines()[0];
    assert_eq!(summary["queued_writes_rekeyed"], 2, "{summary}");
    assert_eq!(summary["remaining_under_other_keys"], 0, "{summary}");

    fake.clear_faults();
    let binary = start(&fake, &work, None, &["k2"], |_| {}).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    for id in &ids {
        loop {
            let write = crate::queue::get_write(&binary, ACME_KEY, id).await.expect("get");
            if write.state() != pb::WriteState::Queued {
                assert_eq!(write.state(), pb::WriteState::Delivered, "{write:?}");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "never delivered");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    assert_eq!(
        fake.event(&ada.sub, &calendar, "second").expect("delivered")["summary"],
        "second"
    );
}
