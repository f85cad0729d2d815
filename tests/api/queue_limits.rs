//! Queued writes checked, bounded and dropped (issue #29): a queued write
//! meets the immediate one's checks before it is stored; the queue is
//! bounded per tenant; ForgetUser drops the person's queued writes.

use calgate::grpc::pb;
use tonic::Code;

use crate::{
    postgres::PgTestDb,
    queue::{get_write, outage, queued_upsert, settled, start},
    support::*,
};

/// A queued write is checked as an immediate one before it is stored; the
/// queue is bounded per tenant; ForgetUser drops the person's queued writes.
async fn checked_bounded_and_dropped(pg: Option<&PgTestDb>) {
    let fake = start_fake().await;
    let work = Workdir::new();
    let binary = start(&fake, &work, pg, |c| set(c, "queue.max_per_tenant", 2i64)).await;
    let ada = binary.connect("queue-bounded-ada").await;
    let calendar = fake.calendar_ids(&ada.sub)[0].clone();
    let client = binary.client.clone();

    let mut bad = queued_upsert(&ada.sub, &calendar, "x", "");
    bad.get_mut().event.as_mut().expect("event").summary = "s".repeat(2000);
    let invalid = client.clone().upsert_event(bad).await.expect_err("too long");
    assert_status(&invalid, Code::InvalidArgument, "FIELD_INVALID");
    assert_eq!(violated_fields(&invalid), ["event.summary"]);
    let mut unknown_mode = queued_upsert(&ada.sub, &calendar, "x", "X");
    unknown_mode.get_mut().mode = 7;
    let mode = client.clone().upsert_event(unknown_mode).await.expect_err("mode");
    assert_eq!(violated_fields(&mode), ["mode"]);
    let missing = client
        .clone()
        .upsert_event(queued_upsert("acc_nobody", &calendar, "x", "X"))
        .await
        .expect_err("no grant");
    assert_status(&missing, Code::NotFound, "GRANT_NOT_FOUND");
    let bad_id = get_write(&binary, ACME_KEY, "w_nope").await.expect_err("shape");
    assert_eq!(violated_fields(&bad_id), ["write_id"]);
    // A grant that needs its user is refused now, as an immediate write would be.
    let bob = binary.connect("queue-bounded-bob").await;
    let bob_calendar = fake.calendar_ids(&bob.sub)[0].clone();
    fake.revoke_account(&bob.sub);
    fake.expire_access_tokens();
    binary
        .upsert(&bob.sub, &bob_calendar)
        .await
        .expect_err("refresh refused");
    let needs_user = client
        .clone()
        .upsert_event(queued_upsert(&bob.sub, &bob_calendar, "x", "X"))
        .await
        .expect_err("needs its user");
    assert_status(&needs_user, Code::FailedPrecondition, "GRANT_NEEDS_REAUTH");

    outage(&fake);
    let mut accepted = Vec::new();
    for id in ["a", "b"] {
        accepted.push(
            client
                .clone()
                .upsert_event(queued_upsert(&ada.sub, &calendar, id, id))
                .await
                .expect("room")
                .into_inner()
                .write_id,
        );
    }
    let full = client
        .clone()
        .upsert_event(queued_upsert(&ada.sub, &calendar, "c", "c"))
        .await
        .expect_err("full");
    assert_status(&full, Code::ResourceExhausted, "QUEUE_FULL");
    // The other tenant's queue is its own.
    let globex = connect_globex(&binary).await;
    let globex_calendar = fake.calendar_ids(&globex)[0].clone();
    let mut theirs = queued_upsert(&globex, &globex_calendar, "g", "g");
    theirs
        .metadata_mut()
        .insert("authorization", format!("Bearer {GLOBEX_KEY}").parse().expect("header"));
    client.clone().upsert_event(theirs).await.expect("globex has room");

    // ForgetUser drops ada's waiting writes: each settles FAILED, naming nobody.
    let mut stream = watch(&binary.client, ACME_KEY, "").await.expect("watch");
    client
        .clone()
        .forget_user(with_key(
            ACME_KEY,
            pb::ForgetUserRequest {
                user: Some(pb::forget_user_request::User::Sub(ada.sub.clone())),
                delete_events: false,
            },
        ))
        .await
        .expect("forget");
    let dropped = settled(&mut stream, 2).await;
    for id in &accepted {
        let (change, write) = &dropped[id];
        assert_eq!(write.state(), pb::WriteState::Failed);
        assert_eq!(write.error.as_ref().map(|e| e.code), Some(Code::NotFound as i32));
        assert!(change.sub.is_empty() && change.user_ref.is_empty() && write.calendar_id.is_empty());
        let gone = get_write(&binary, ACME_KEY, id).await.expect_err("erased");
        assert_status(&gone, Code::NotFound, "WRITE_NOT_FOUND");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_are_checked_bounded_and_dropped_with_their_user() {
    checked_bounded_and_dropped(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_are_checked_bounded_and_dropped_with_their_user_on_postgres() {
    let Some(pg) = PgTestDb::create().await else { return };
    checked_bounded_and_dropped(Some(&pg)).await;
}

/// A globex user, connected through the browser flow; returns its sub.
async fn connect_globex(binary: &Binary) -> String {
    binary
        .connect_as(
            GLOBEX_KEY,
            pb::BuildAuthorizeUrlRequest {
                redirect_uri: GLOBEX_REDIRECT.into(),
                user_ref: Some("queue-globex".into()),
                ..Default::default()
            },
        )
        .await
        .sub
}
