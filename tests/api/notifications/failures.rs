//! When things go wrong: a disconnected profile, Cronofy refusing reads, channels that cannot be opened, replicas, failed processing, grants that need their user.

use super::*;

/// A disconnected profile stops syncing (docs: faqs/profile-reconnection-process):
/// its calendar is not known, so availability and free/busy refuse the user by
/// name until the user relinks.
#[tokio::test]
async fn a_disconnected_profile_leaves_availability_unknown_until_the_user_relinks() {
    let (app, _) = spawn_app_with_callbacks(|_| {}).await;
    let mut stream = watch(&app.client, ACME_KEY, "").await.expect("watch");
    let (grant, _) = connect_tracked(&app, "ada").await;
    skip_connected(&mut stream).await;
    let free_busy = || {
        let mut client = app.client.clone();
        let request = app.req(pb::ReadFreeBusyRequest {
            user: Some(pb::read_free_busy_request::User::Sub(grant.sub.clone())),
            tzid: "Europe/London".into(),
            ..Default::default()
        });
        async move { client.read_free_busy(request).await }
    };
    free_busy().await.expect("a connected profile's free/busy");

    assert_eq!(app.fake.disconnect_profile(&grant.sub).await, [200]);
    next(&mut stream).await;
    let reads = app.fake.count(Endpoint::FreeBusy);
    let status = free_busy().await.expect_err("not synced");
    assert_status(&status, Code::FailedPrecondition, "AVAILABILITY_UNKNOWN");
    let failure = status.get_details_precondition_failure().expect("PreconditionFailure");
    assert_eq!(failure.violations[0].subject, "sub");
    assert!(failure.violations[0].description.contains("disconnected"));
    assert_eq!(app.fake.count(Endpoint::FreeBusy), reads, "Cronofy was not asked");

    assert_eq!(app.fake.reconnect_profile(&grant.sub).await, [200]);
    next(&mut stream).await;
    free_busy().await.expect("known again once relinked");
}

#[tokio::test]
async fn a_disconnected_profile_fails_writes_fast_until_the_user_relinks() {
    let (app, _) = spawn_app_with_callbacks(|_| {}).await;
    let mut stream = watch(&app.client, ACME_KEY, "").await.expect("watch");
    let (grant, _) = connect_tracked(&app, "ada").await;
    skip_connected(&mut stream).await;
    let relink = app.fake.relink_url(&grant.sub);

    assert_eq!(app.fake.disconnect_profile(&grant.sub).await, [200]);
    let disconnected = next(&mut stream).await;
    let change = grant_change(&disconnected);
    assert_eq!(change.status, pb::GrantStatus::ProfileDisconnected as i32);
    assert_eq!(change.reason, "PROFILE_DISCONNECTED");
    assert_eq!(change.relink_url, relink);

    let upserts = app.fake.count(Endpoint::UpsertEvent);
    let refused = Upsert::first_calendar(&app.fake, &grant.sub)
        .send(&app.client)
        .await
        .expect_err("fails fast");
    assert_status(&refused, Code::FailedPrecondition, "PROFILE_DISCONNECTED");
    let info = refused.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.metadata.get("relink_url"), Some(&relink));
    assert_eq!(app.fake.count(Endpoint::UpsertEvent), upserts, "Cronofy was not asked");
    let described = fetch_grant(&app.client, ACME_KEY, &grant.sub).await.expect("grant");
    assert_eq!(described.status, pb::GrantStatus::ProfileDisconnected as i32);
    assert_eq!(described.relink_url, relink);

    assert_eq!(app.fake.reconnect_profile(&grant.sub).await, [200]);
    let reconnected = next(&mut stream).await;
    let change = grant_change(&reconnected);
    assert_eq!(change.status, pb::GrantStatus::Active as i32);
    assert_eq!(change.reason, "PROFILE_RECONNECTED");
    Upsert::first_calendar(&app.fake, &grant.sub)
        .send(&app.client)
        .await
        .expect("writes work again");
    assert_eq!(
        fetch_grant(&app.client, ACME_KEY, &grant.sub)
            .await
            .expect("grant")
            .relink_url,
        ""
    );
}

#[tokio::test]
async fn when_cronofy_refuses_to_read_events_only_grant_changes_flow() {
    let (app, _) = spawn_app_with_callbacks(|_| {}).await;
    let mut stream = watch(&app.client, ACME_KEY, "").await.expect("watch");
    // The user chose Free/Busy mode: the application cannot read their calendar.
    app.fake.set_next_authorization(NextAuthorization {
        provider_name: Some("google_free_busy".into()),
        ..Default::default()
    });
    let grant = app.connect(Some("ada")).await;
    tracking_becomes(&app, &grant.sub, pb::ChangeTracking::ProfileOnly).await;
    skip_connected(&mut stream).await;
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    Upsert::first_calendar(&app.fake, &grant.sub)
        .event_id("invite")
        .send(&app.client)
        .await
        .expect("upsert");
    let reads = app.fake.count(Endpoint::ReadEvents);
    assert_eq!(
        app.fake.user_deletes_event(&grant.sub, &calendar, "invite").await,
        [200]
    );
    assert_eq!(app.fake.disconnect_profile(&grant.sub).await, [200]);
    assert_eq!(
        grant_change(&next(&mut stream).await).reason,
        "PROFILE_DISCONNECTED",
        "no event change came first"
    );
    assert_eq!(
        app.fake.count(Endpoint::ReadEvents),
        reads,
        "events are not read for it"
    );
}

#[tokio::test]
async fn a_channel_that_cannot_be_opened_is_retried_and_reported_and_revoke_closes_it() {
    let (app, _) = spawn_app_with_callbacks(|_| {}).await;
    // Four 503s: the first attempts fail (the tests' upstream.max_attempts is 2; the
    // breaker opens at five).
    let mut fault = Fault::status(Endpoint::CreateChannel, 503);
    fault.times = 4;
    app.fake.inject(fault);
    let grant = app.connect(Some("ada")).await;
    assert_eq!(
        grant.status,
        pb::GrantStatus::Active as i32,
        "the exchange did not fail"
    );
    let pending = tracking_becomes(&app, &grant.sub, pb::ChangeTracking::Pending).await;
    let reported = failure_reported(&app, &grant.sub).await;
    assert!(reported.contains("unavailable"), "{reported}");
    assert_eq!(pending.status, pb::GrantStatus::Active as i32);
    // Cronofy recovers: the worker's retry (after 5 s) opens it.
    tokio::time::timeout(Duration::from_secs(60), async {
        while app.fake.channels(&grant.sub).is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("retried until open");
    tracking_becomes(&app, &grant.sub, pb::ChangeTracking::Events).await;

    app.client
        .clone()
        .revoke_grant(with_key(
            ACME_KEY,
            pb::RevokeGrantRequest {
                user: Some(pb::revoke_grant_request::User::Sub(grant.sub.clone())),
                profile_id: None,
            },
        ))
        .await
        .expect("revoke");
    assert!(app.fake.channels(&grant.sub).is_empty(), "the channel was closed");
    assert_eq!(app.fake.count(Endpoint::CloseChannel), 1);
    let revoked = fetch_grant(&app.client, ACME_KEY, &grant.sub).await.expect("grant");
    assert_eq!(revoked.change_tracking, pb::ChangeTracking::Off as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_channels_and_a_notification_at_both_records_once() {
    let Some(db) = PgTestDb::create().await else { return };
    let fake = start_fake().await;
    let work = Workdir::new();
    // Cronofy calls one public URL (here: a's listener); b has a listener of its own.
    let (port_a, port_b) = (free_port(), free_port());
    let a = start_binary_with(&fake, &work, |c| {
        use_postgres(c, &db.url);
        with_callbacks(c, port_a, port_a);
    })
    .await;
    let b = start_binary_with(&fake, &work, |c| {
        use_postgres(c, &db.url);
        with_callbacks(c, port_b, port_a);
    })
    .await;
    let mut on_b = watch(&b.client, ACME_KEY, "").await.expect("watch on b");
    let grant = a.connect("ada").await;
    assert_eq!(grant_change(&next(&mut on_b).await).reason, "CONNECTED");
    tokio::time::timeout(ARRIVAL, async {
        while fake.channels(&grant.sub).is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("a channel opens");
    let calendar = fake.calendar_ids(&grant.sub)[0].clone();
    for id in ["one", "two"] {
        Upsert::first_calendar(&fake, &grant.sub)
            .event_id(id)
            .send(&b.client)
            .await
            .expect("upsert through b");
    }

    assert_eq!(fake.user_deletes_event(&grant.sub, &calendar, "one").await, [200]);
    assert_eq!(event_change(&next(&mut on_b).await).event_id, "one");
    // The same notification reaches the other replica too (a retry, a load balancer).
    let sent = fake.notifications_sent().last().cloned().expect("sent");
    let at_b = sent.url.replace(&port_a.to_string(), &port_b.to_string());
    assert_eq!(post(&at_b, &sent.body, Some(&sent.signature)).await, 200);
    assert_eq!(fake.user_deletes_event(&grant.sub, &calendar, "two").await, [200]);
    assert_eq!(
        event_change(&next(&mut on_b).await).event_id,
        "two",
        "the notification processed by both replicas recorded one change"
    );
    // Two replicas, one channel.
    assert_eq!(fake.count(Endpoint::CreateChannel), 1);
}

#[tokio::test]
async fn a_notification_whose_processing_fails_is_retried_until_its_change_is_recorded() {
    let (app, _) = spawn_app_with_callbacks(|_| {}).await;
    let mut stream = watch(&app.client, ACME_KEY, "").await.expect("watch");
    let (grant, calendar) = connect_tracked(&app, "ada").await;
    skip_connected(&mut stream).await;
    Upsert::first_calendar(&app.fake, &grant.sub)
        .event_id("retried")
        .send(&app.client)
        .await
        .expect("upsert");
    // Four 503s: the first two processing attempts fail (two tries each; the breaker opens at five).
    let mut fault = Fault::status(Endpoint::ReadEvents, 503);
    fault.times = 4;
    app.fake.inject(fault);
    assert_eq!(
        app.fake.user_deletes_event(&grant.sub, &calendar, "retried").await,
        [200],
        "answered at once, whatever processing meets"
    );
    // The worker retries after its backoff (5 s, then 10 s) and records the change then.
    let deleted = next(&mut stream).await;
    assert_eq!(event_change(&deleted).event_id, "retried");
    assert_eq!(
        app.fake.count(Endpoint::ReadEvents),
        1 + 4 + 1,
        "the probe, the failed attempts, the last retry"
    );
}

#[tokio::test]
async fn a_grant_that_needs_its_user_again_stops_asking_for_a_channel() {
    let (app, _) = spawn_app_with_callbacks(|_| {}).await;
    let mut fault = Fault::status(Endpoint::CreateChannel, 503);
    fault.times = 4;
    app.fake.inject(fault);
    let grant = app.connect(Some("ada")).await;
    failure_reported(&app, &grant.sub).await;
    let attempts = app.fake.count(Endpoint::CreateChannel);
    // Before the retry, the user revokes access at Cronofy and the token expires.
    app.fake.revoke_account(&grant.sub);
    app.clock.advance(Duration::from_secs(3600));
    let off = tracking_becomes(&app, &grant.sub, pb::ChangeTracking::Off).await;
    assert_eq!(off.status, pb::GrantStatus::NeedsReauth as i32);
    assert_eq!(
        app.fake.count(Endpoint::CreateChannel),
        attempts,
        "no channel request after Cronofy refused the grant"
    );
}

/// A channel lives with the authorization it was opened under: once the grant
/// lost it (NEEDS_REAUTH), the channel is gone at Cronofy, so when the user
/// connects again calgate opens a new one instead of trusting the old.
#[tokio::test]
async fn a_grant_that_lost_its_authorization_gets_a_new_channel_when_the_user_reconnects() {
    let (app, _) = spawn_app_with_callbacks(|_| {}).await;
    let (grant, _) = connect_tracked(&app, "ada").await;
    let opened = app.fake.count(Endpoint::CreateChannel);

    app.fake.revoke_account(&grant.sub);
    app.clock.advance(Duration::from_secs(3600));
    let refused = Upsert::first_calendar(&app.fake, &grant.sub)
        .send(&app.client)
        .await
        .expect_err("the authorization is gone");
    assert_status(&refused, Code::FailedPrecondition, "GRANT_NEEDS_REAUTH");
    let lost = fetch_grant(&app.client, ACME_KEY, &grant.sub).await.expect("grant");
    assert_ne!(
        lost.change_tracking,
        pb::ChangeTracking::Events as i32,
        "no channel while the grant has no authorization"
    );

    app.fake.set_next_authorization(NextAuthorization {
        sub: Some(grant.sub.clone()),
        ..Default::default()
    });
    app.connect(Some("ada")).await;
    tracking_becomes(&app, &grant.sub, pb::ChangeTracking::Events).await;
    assert_eq!(
        app.fake.count(Endpoint::CreateChannel),
        opened + 1,
        "a new channel for the new authorization"
    );
}

/// Cronofy closes a channel whose deliveries keep failing, and tells nobody
/// (docs: push-notifications). calgate looks for each open channel in
/// `GET /v1/channels` every `changes.channel_check_interval`; a missing one
/// is opened again, the watcher learns of the gap (`TRACKING_RESUMED`, with
/// the last time the old channel was known open) and the changes made in the
/// gap are read back and reported.
#[tokio::test]
async fn a_channel_cronofy_closed_without_notice_is_reopened_and_the_gap_read_back() {
    let (app, _) = spawn_app_with_callbacks(|_| {}).await;
    let mut stream = watch(&app.client, ACME_KEY, "").await.expect("watch");
    let connecting = app.clock.now().unix_timestamp();
    let (grant, calendar) = connect_tracked(&app, "ada").await;
    let opened = app.clock.now().unix_timestamp();
    skip_connected(&mut stream).await;
    Upsert::first_calendar(&app.fake, &grant.sub)
        .event_id("interview")
        .send(&app.client)
        .await
        .expect("upsert");
    assert_eq!(app.fake.count(Endpoint::ListChannels), 0, "no check before it is due");

    assert_eq!(app.fake.close_channels_silently(&grant.sub), 1);
    // The user deletes the event: with the channel gone, nobody is told.
    assert_eq!(
        app.fake.user_deletes_event(&grant.sub, &calendar, "interview").await,
        Vec::<u16>::new()
    );
    app.clock.advance(Duration::from_secs(6 * 3600 + 1));

    let resumed = next(&mut stream).await;
    assert_eq!(resumed.sub, grant.sub);
    let change = grant_change(&resumed);
    assert_eq!(change.reason, "TRACKING_RESUMED");
    assert_eq!(change.status, pb::GrantStatus::Active as i32);
    let since = change.events_missed_since.expect("events_missed_since").seconds;
    assert!(
        (connecting..=opened).contains(&since),
        "the gap begins when the old channel was last known open: {since}, opened within {connecting}..={opened}"
    );
    let deleted = next(&mut stream).await;
    let event = event_change(&deleted);
    assert_eq!(
        (event.event_id.as_str(), event.kind),
        ("interview", pb::EventChangeKind::Deleted as i32),
        "the change made in the gap is read back"
    );
    assert!(app.fake.count(Endpoint::ListChannels) >= 1);
    assert_eq!(app.fake.channels(&grant.sub).len(), 1, "a new channel");
    let described = tracking_becomes(&app, &grant.sub, pb::ChangeTracking::Events).await;
    assert!(described.change_tracking_error.is_empty());
}

/// A check finding the channel listed changes nothing; one Cronofy cannot
/// answer is tried again later, and the channel stays as it was.
#[tokio::test]
async fn a_listed_channel_stays_and_a_failed_check_is_retried() {
    let (app, _) = spawn_app_with_callbacks(|_| {}).await;
    let (grant, _) = connect_tracked(&app, "ada").await;
    let channel = app.fake.channels(&grant.sub);
    let opened = app.fake.count(Endpoint::CreateChannel);

    // Cronofy fails every check for a while: nothing is reopened.
    app.fake.inject(Fault::status(Endpoint::ListChannels, 503).times(100));
    app.clock.advance(Duration::from_secs(6 * 3600 + 1));
    app.until_called(Endpoint::ListChannels, 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let failed = app.fake.count(Endpoint::ListChannels);
    app.fake.clear_faults();
    // Tried again five minutes later, when it finds the channel listed.
    app.clock.advance(Duration::from_secs(301));
    app.until_called(Endpoint::ListChannels, failed + 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(app.fake.channels(&grant.sub), channel, "the same channel");
    assert_eq!(app.fake.count(Endpoint::CreateChannel), opened, "nothing reopened");
    tracking_becomes(&app, &grant.sub, pb::ChangeTracking::Events).await;
}
