//! Profiles, not grants: an account holds several calendar profiles and
//! conferencing profiles, each connected or not (docs: identity/userinfo,
//! conferencing-services/conferencing-profiles). Only writes to a
//! disconnected profile's calendars are refused.

use super::*;

fn profile<'a>(grant: &'a pb::Grant, profile_id: &str) -> &'a pb::Profile {
    grant
        .profiles
        .iter()
        .find(|p| p.profile_id == profile_id)
        .unwrap_or_else(|| panic!("profile {profile_id} in {:?}", grant.profiles))
}

/// Polls GetGrant until it shows `count` profiles (read after the channel opens).
async fn profiles_known(app: &TestApp, sub: &str, count: usize) -> pb::Grant {
    tokio::time::timeout(ARRIVAL, async {
        loop {
            let grant = fetch_grant(&app.client, ACME_KEY, sub).await.expect("grant");
            if grant.profiles.len() == count {
                break grant;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("GetGrant never showed {count} profiles"))
}

#[tokio::test]
async fn the_profiles_are_read_once_the_channel_opens() {
    let (app, _) = spawn_app_with_callbacks(|_| {}).await;
    let (grant, calendar) = connect_tracked(&app, "ada").await;
    let described = profiles_known(&app, &grant.sub, 1).await;
    let linked = &described.profiles[0];
    assert_eq!(linked.kind, pb::ProfileKind::Calendar as i32);
    assert_eq!(linked.provider_name, "google");
    assert!(linked.connected && linked.relink_url.is_empty());
    assert!(linked.calendar_ids.contains(&calendar), "{:?}", linked.calendar_ids);
}

/// A second calendar profile disconnects: writes to its calendar fail fast
/// with its relink URL (also through a token cached by a read), writes to
/// the linked profile's calendar go on, the grant stays ACTIVE, and
/// availability is unknown until the user relinks.
#[tokio::test]
async fn a_disconnected_profile_refuses_only_writes_to_its_own_calendars() {
    let (app, _) = spawn_app_with_callbacks(|_| {}).await;
    let mut stream = watch(&app.client, ACME_KEY, "").await.expect("watch");
    let (grant, work_calendar) = connect_tracked(&app, "ada").await;
    skip_connected(&mut stream).await;
    let (exchange, exchange_calendar) = app.fake.add_calendar_profile(&grant.sub, "exchange");
    let upsert = |calendar: &str| {
        let upsert = Upsert::new(Some(pb::upsert_event_request::User::Sub(grant.sub.clone())), calendar);
        let client = app.client.clone();
        async move { upsert.send(&client).await }
    };
    upsert(&exchange_calendar)
        .await
        .expect("a connected profile's calendar");

    assert_eq!(
        app.fake.set_profile_connected(&grant.sub, &exchange, false).await,
        [200]
    );
    let disconnected = next(&mut stream).await;
    let change = grant_change(&disconnected);
    assert_eq!(change.reason, "PROFILE_DISCONNECTED");
    assert_eq!(
        change.status,
        pb::GrantStatus::Active as i32,
        "the linked profile still syncs"
    );
    let relink = format!("https://app.cronofy.example/relink/{exchange}");
    assert_eq!(change.relink_url, relink);
    assert_eq!(change.profiles.len(), 2);

    // A read first: the token it caches must not let a write slip through.
    app.client
        .clone()
        .list_calendars(app.req(pb::ListCalendarsRequest {
            user: Some(pb::list_calendars_request::User::Sub(grant.sub.clone())),
        }))
        .await
        .expect("calendars");
    let upserts = app.fake.count(Endpoint::UpsertEvent);
    let refused = upsert(&exchange_calendar)
        .await
        .expect_err("its profile is disconnected");
    assert_status(&refused, Code::FailedPrecondition, "PROFILE_DISCONNECTED");
    let info = refused.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.metadata.get("relink_url"), Some(&relink));
    assert_eq!(app.fake.count(Endpoint::UpsertEvent), upserts, "Cronofy was not asked");
    upsert(&work_calendar)
        .await
        .expect("the linked profile's calendar still takes writes");

    let described = fetch_grant(&app.client, ACME_KEY, &grant.sub).await.expect("grant");
    assert_eq!(described.status, pb::GrantStatus::Active as i32);
    let shown = profile(&described, &exchange);
    assert!(!shown.connected);
    assert_eq!(shown.relink_url, relink);
    assert_eq!(shown.calendar_ids, std::slice::from_ref(&exchange_calendar));
    let status = app
        .client
        .clone()
        .read_free_busy(app.req(pb::ReadFreeBusyRequest {
            user: Some(pb::read_free_busy_request::User::Sub(grant.sub.clone())),
            tzid: "Europe/London".into(),
            ..Default::default()
        }))
        .await
        .expect_err("one of the user's calendars is not synced");
    assert_status(&status, Code::FailedPrecondition, "AVAILABILITY_UNKNOWN");

    assert_eq!(app.fake.set_profile_connected(&grant.sub, &exchange, true).await, [200]);
    let reconnected = next(&mut stream).await;
    assert_eq!(grant_change(&reconnected).reason, "PROFILE_RECONNECTED");
    upsert(&exchange_calendar).await.expect("relinked");
}

/// Integrated conferencing needs its conferencing profile connected: a
/// disconnected one is reported (with its relink URL) and calendar writes go on.
#[tokio::test]
async fn a_disconnected_conferencing_profile_is_reported_and_writes_go_on() {
    let (app, _) = spawn_app_with_callbacks(|_| {}).await;
    let mut stream = watch(&app.client, ACME_KEY, "").await.expect("watch");
    let (grant, _) = connect_tracked(&app, "ada").await;
    skip_connected(&mut stream).await;
    let zoom = app.fake.add_conferencing_profile(&grant.sub, "zoom");

    assert_eq!(app.fake.set_profile_connected(&grant.sub, &zoom, false).await, [200]);
    let change = next(&mut stream).await;
    let change = grant_change(&change);
    assert_eq!(change.reason, "CONFERENCING_PROFILE_DISCONNECTED");
    assert_eq!(change.status, pb::GrantStatus::Active as i32);
    assert_eq!(change.relink_url, format!("https://app.cronofy.example/relink/{zoom}"));
    let described = fetch_grant(&app.client, ACME_KEY, &grant.sub).await.expect("grant");
    let shown = profile(&described, &zoom);
    assert_eq!(shown.kind, pb::ProfileKind::Conferencing as i32);
    assert!(!shown.connected);
    Upsert::first_calendar(&app.fake, &grant.sub)
        .send(&app.client)
        .await
        .expect("calendar writes go on");
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    let mut with_zoom = pb::UpsertEventRequest {
        mode: Default::default(),
        user: Some(pb::upsert_event_request::User::Sub(grant.sub.clone())),
        calendar_id: calendar,
        event: Some(event("zoom-call")),
    };
    with_zoom.event.as_mut().expect("event").conferencing = Some(pb::Conferencing {
        profile_id: zoom.clone(),
        ..Default::default()
    });
    let refused = app
        .client
        .clone()
        .upsert_event(app.req(with_zoom))
        .await
        .expect_err("its conference could not be made");
    assert_status(&refused, Code::FailedPrecondition, "PROFILE_DISCONNECTED");

    assert_eq!(app.fake.set_profile_connected(&grant.sub, &zoom, true).await, [200]);
    let change = next(&mut stream).await;
    assert_eq!(grant_change(&change).reason, "CONFERENCING_PROFILE_RECONNECTED");
}

/// A privacy erasure does not wait for a relink: ForgetUser's deletes go
/// through for a user whose only profile is disconnected.
#[tokio::test]
async fn forget_user_deletes_the_events_of_a_disconnected_profile() {
    let (app, _) = spawn_app_with_callbacks(|_| {}).await;
    let mut stream = watch(&app.client, ACME_KEY, "").await.expect("watch");
    let (grant, _) = connect_tracked(&app, "ada").await;
    skip_connected(&mut stream).await;
    Upsert::first_calendar(&app.fake, &grant.sub)
        .send(&app.client)
        .await
        .expect("write");
    assert_eq!(app.fake.disconnect_profile(&grant.sub).await, [200]);
    let change = next(&mut stream).await;
    assert_eq!(
        grant_change(&change).status,
        pb::GrantStatus::ProfileDisconnected as i32
    );

    let forgotten = app
        .client
        .clone()
        .forget_user(app.req(pb::ForgetUserRequest {
            user: Some(pb::forget_user_request::User::Sub(grant.sub.clone())),
            delete_events: true,
        }))
        .await
        .expect("erased")
        .into_inner();
    assert!(forgotten.events_deleted);
    assert_eq!(app.fake.event_count(&grant.sub), 0, "the user's events are gone");
}

/// An account listing more profiles than calgate keeps (32): GetGrant shows
/// 32, the disconnected one among them, and a write to its calendar is still
/// refused; the grant stays ACTIVE.
#[tokio::test]
async fn the_profiles_kept_are_bounded_and_the_disconnected_one_stays() {
    let (app, _) = spawn_app_with_callbacks(|_| {}).await;
    let (grant, _) = connect_tracked(&app, "ada").await;
    profiles_known(&app, &grant.sub, 1).await;
    for _ in 0..40 {
        app.fake.add_calendar_profile(&grant.sub, "exchange");
    }
    let (last, last_calendar) = app.fake.add_calendar_profile(&grant.sub, "exchange");
    assert_eq!(app.fake.set_profile_connected(&grant.sub, &last, false).await, [200]);
    let described = profiles_known(&app, &grant.sub, 32).await;
    assert!(
        !profile(&described, &last).connected,
        "the disconnected profile is kept"
    );
    assert_eq!(described.status(), pb::GrantStatus::Active);
    let refused = Upsert::new(
        Some(pb::upsert_event_request::User::Sub(grant.sub.clone())),
        &last_calendar,
    )
    .send(&app.client)
    .await
    .expect_err("its calendar is refused");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
}
