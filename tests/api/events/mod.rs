//! UpsertEvent, DeleteEvent, ListCalendars, GetGrant on the happy path, and
//! validation before any upstream call.

mod delete_all;

use calgate::grpc::pb;
use fake_cronofy::Endpoint;
use serde_json::json;
use tonic::Code;

use crate::support::*;

#[tokio::test]
async fn upsert_maps_every_field_onto_cronofys_body() {
    let app = spawn_app().await;
    let grant = app.connect(Some("ada")).await;
    let calendar_id = app.fake.calendar_ids(&grant.sub)[0].clone();
    let mut full = event("evt-full");
    full.description = Some("Quarterly numbers".into());
    full.start = Some(pb::EventTime {
        tzid: Some("Europe/London".into()),
        ..at(1_780_000_000)
    });
    full.tzid = Some("Europe/London".into());
    full.location = Some(pb::Location {
        description: "Room 4".into(),
        lat: Some("51.5072".into()),
        long: Some("-0.1276".into()),
    });
    full.url = Some("https://acme.example/meetings/4".into());
    full.transparency = pb::Transparency::Opaque as i32;
    full.attendees = Some(pb::Attendees {
        invite: vec![pb::Attendee {
            email: "grace@example.com".into(),
            display_name: Some("Grace".into()),
        }],
        remove: vec![pb::Attendee {
            email: "old@example.com".into(),
            display_name: None,
        }],
    });
    full.reminders = vec![pb::Reminder { minutes: 10 }, pb::Reminder { minutes: 0 }];
    full.reminders_create_only = true;
    full.event_private = true;
    full.color = Some("#c6040f".into());
    full.conferencing = Some(pb::Conferencing {
        profile_id: "default".into(),
        ..Default::default()
    });
    full.extended_transparency = pb::ExtendedTransparency::WorkingElsewhere as i32;
    full.subscriptions = vec![pb::Subscription {
        uri: "https://acme.example/hooks/conferencing".into(),
        interaction_types: vec!["conferencing_assigned".into(), "conferencing_failing".into()],
    }];
    full.attachment_ids = vec!["att_123".into()];
    full.locale = Some("en".into());
    full.recurrence = Some(pb::Recurrence {
        rules: vec![pb::RecurrenceRule {
            frequency: pb::RecurrenceFrequency::Weekly as i32,
            interval: 2,
            by_day: vec![pb::Weekday::Monday as i32, pb::Weekday::Thursday as i32],
        }],
    });
    app.client
        .clone()
        .upsert_event(app.req(pb::UpsertEventRequest {
            mode: Default::default(),
            user: by_sub(&grant.sub),
            calendar_id: calendar_id.clone(),
            event: Some(full),
        }))
        .await
        .expect("upsert");
    let stored = app
        .fake
        .event(&grant.sub, &calendar_id, "evt-full")
        .expect("stored at the fake");
    let sent = app
        .fake
        .requests()
        .into_iter()
        .rfind(|r| r.endpoint == Endpoint::UpsertEvent)
        .expect("the upsert request");
    assert_eq!(sent.path, format!("/v1/calendars/{calendar_id}/events"));
    assert_eq!(sent.query, None);
    assert_eq!(sent.json().as_ref(), Some(&stored), "stored exactly as sent");
    assert_eq!(
        stored,
        json!({
            "event_id": "evt-full",
            "summary": "Design review",
            "description": "Quarterly numbers",
            "start": {"time": "2026-05-28T20:26:40Z", "tzid": "Europe/London"},
            "end": "2026-05-28T21:26:40Z",
            "tzid": "Europe/London",
            "location": {"description": "Room 4", "lat": "51.5072", "long": "-0.1276"},
            "url": "https://acme.example/meetings/4",
            "transparency": "opaque",
            "attendees": {
                "invite": [{"email": "grace@example.com", "display_name": "Grace"}],
                "reject": [{"email": "old@example.com"}],
            },
            "reminders": [{"minutes": 10}, {"minutes": 0}],
            "reminders_create_only": true,
            "event_private": true,
            "color": "#c6040f",
            "conferencing": {"profile_id": "default"},
            "extended_transparency": "working_elsewhere",
            "subscriptions": [{
                "type": "webhook",
                "uri": "https://acme.example/hooks/conferencing",
                "interactions": [{"type": "conferencing_assigned"}, {"type": "conferencing_failing"}],
            }],
            "attachments": [{"attachment_id": "att_123"}],
            "locale": "en",
            "recurrence": {"rules": [{"frequency": "weekly", "interval": 2, "by_day": ["monday", "thursday"]}]},
        })
    );
}

#[tokio::test]
async fn upsert_is_idempotent_by_event_id_and_reaches_the_grant_by_user_ref() {
    let app = spawn_app().await;
    let grant = app.connect(Some("ada")).await;
    let calendar_id = app.fake.calendar_ids(&grant.sub)[0].clone();
    for summary in ["First", "Renamed"] {
        let mut e = event("evt-1");
        e.summary = summary.into();
        app.client
            .clone()
            .upsert_event(app.req(pb::UpsertEventRequest {
                mode: Default::default(),
                user: Some(pb::upsert_event_request::User::UserRef("ada".into())),
                calendar_id: calendar_id.clone(),
                event: Some(e),
            }))
            .await
            .expect("upsert");
    }
    assert_eq!(app.fake.event_count(&grant.sub), 1);
    assert_eq!(
        app.fake.event(&grant.sub, &calendar_id, "evt-1").expect("event")["summary"],
        "Renamed"
    );
}

#[tokio::test]
async fn all_day_events_and_url_removal() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    let calendar_id = app.fake.calendar_ids(&grant.sub)[0].clone();
    let date = |d: &str| pb::EventTime {
        value: Some(pb::event_time::Value::Date(d.into())),
        tzid: None,
    };
    let mut e = event("holiday");
    e.start = Some(date("2026-12-24"));
    e.end = Some(date("2026-12-27"));
    e.remove_url = true;
    e.recurrence = Some(pb::Recurrence {
        rules: vec![pb::RecurrenceRule {
            frequency: pb::RecurrenceFrequency::Weekly as i32,
            interval: 2,
            by_day: vec![pb::Weekday::Monday as i32],
        }],
    });
    app.client
        .clone()
        .upsert_event(app.req(pb::UpsertEventRequest {
            mode: Default::default(),
            user: by_sub(&grant.sub),
            calendar_id: calendar_id.clone(),
            event: Some(e),
        }))
        .await
        .expect("upsert");
    let stored = app.fake.event(&grant.sub, &calendar_id, "holiday").expect("event");
    assert_eq!(stored["start"], "2026-12-24");
    assert_eq!(stored["end"], "2026-12-27");
    assert_eq!(stored["url"], serde_json::Value::Null);
    assert!(
        stored.as_object().is_some_and(|o| o.contains_key("url")),
        "url is sent as null"
    );
    assert_eq!(
        stored["recurrence"],
        json!({"rules": [{"frequency": "weekly", "interval": 2, "by_day": ["monday"]}]})
    );
}

/// Each case: a change to a valid request, and the field paths it must name.
#[tokio::test]
async fn bad_events_name_their_fields_and_never_reach_cronofy() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    let calendar_id = app.fake.calendar_ids(&grant.sub)[0].clone();
    let upserts_before = app.fake.count(Endpoint::UpsertEvent);
    type Case = (&'static str, fn(&mut pb::UpsertEventRequest), &'static [&'static str]);
    let cases: Vec<Case> = vec![
        ("no selector", |r| r.user = None, &["user"]),
        ("empty sub", |r| r.user = by_sub(""), &["sub"]),
        ("no calendar", |r| r.calendar_id.clear(), &["calendar_id"]),
        ("no event", |r| r.event = None, &["event"]),
        (
            "empty ids",
            |r| {
                let e = r.event.as_mut().expect("e");
                e.event_id.clear();
                e.summary = " ".into();
            },
            &["event.event_id", "event.summary"],
        ),
        (
            "long summary",
            |r| r.event.as_mut().expect("e").summary = "x".repeat(1025),
            &["event.summary"],
        ),
        (
            "long description",
            |r| r.event.as_mut().expect("e").description = Some("x".repeat(4097)),
            &["event.description"],
        ),
        (
            "no start",
            |r| r.event.as_mut().expect("e").start = None,
            &["event.start"],
        ),
        (
            "empty start",
            |r| r.event.as_mut().expect("e").start = Some(pb::EventTime::default()),
            &["event.start"],
        ),
        (
            "fractional second",
            |r| {
                r.event.as_mut().expect("e").start = Some(pb::EventTime {
                    value: Some(pb::event_time::Value::Time(prost_types::Timestamp {
                        seconds: 1_780_000_000,
                        nanos: 500,
                    })),
                    tzid: None,
                })
            },
            &["event.start.time"],
        ),
        (
            "end before start",
            |r| r.event.as_mut().expect("e").end = Some(at(1_779_000_000)),
            &["event.end"],
        ),
        (
            "mixed kinds",
            |r| {
                r.event.as_mut().expect("e").end = Some(pb::EventTime {
                    value: Some(pb::event_time::Value::Date("2026-06-01".into())),
                    tzid: None,
                })
            },
            &["event.end"],
        ),
        (
            "bad date",
            |r| {
                let e = r.event.as_mut().expect("e");
                e.start = Some(pb::EventTime {
                    value: Some(pb::event_time::Value::Date("2026-02-30".into())),
                    tzid: None,
                });
                e.end = Some(pb::EventTime {
                    value: Some(pb::event_time::Value::Date("2026-03-02".into())),
                    tzid: None,
                });
            },
            &["event.start.date"],
        ),
        (
            "bad tzid",
            |r| r.event.as_mut().expect("e").tzid = Some("Not a zone".into()),
            &["event.tzid"],
        ),
        (
            "six reminders",
            |r| r.event.as_mut().expect("e").reminders = vec![pb::Reminder { minutes: 1 }; 6],
            &["event.reminders"],
        ),
        (
            "negative reminder",
            |r| r.event.as_mut().expect("e").reminders = vec![pb::Reminder { minutes: -5 }],
            &["event.reminders[0].minutes"],
        ),
        (
            "unknown transparency",
            |r| r.event.as_mut().expect("e").transparency = 42,
            &["event.transparency"],
        ),
        (
            "url and remove_url",
            |r| {
                let e = r.event.as_mut().expect("e");
                e.url = Some("https://x.example".into());
                e.remove_url = true;
            },
            &["event.remove_url"],
        ),
        (
            "bad url",
            |r| r.event.as_mut().expect("e").url = Some("javascript:alert(1)".into()),
            &["event.url"],
        ),
        (
            "bad attendee",
            |r| {
                r.event.as_mut().expect("e").attendees = Some(pb::Attendees {
                    invite: vec![pb::Attendee {
                        email: "not-an-email".into(),
                        display_name: None,
                    }],
                    remove: vec![],
                })
            },
            &["event.attendees.invite[0].email"],
        ),
        (
            "bad latitude",
            |r| {
                r.event.as_mut().expect("e").location = Some(pb::Location {
                    description: "x".into(),
                    lat: Some("95".into()),
                    long: None,
                })
            },
            &["event.location.lat"],
        ),
        (
            "explicit conferencing without details",
            |r| {
                r.event.as_mut().expect("e").conferencing = Some(pb::Conferencing {
                    profile_id: "explicit".into(),
                    ..Default::default()
                })
            },
            &["event.conferencing.provider_description", "event.conferencing.join_url"],
        ),
        (
            "by_day on a daily rule",
            |r| {
                r.event.as_mut().expect("e").recurrence = Some(pb::Recurrence {
                    rules: vec![pb::RecurrenceRule {
                        frequency: pb::RecurrenceFrequency::Daily as i32,
                        interval: 0,
                        by_day: vec![1],
                    }],
                })
            },
            &["event.recurrence.rules[0].by_day"],
        ),
        (
            "bad colour",
            |r| r.event.as_mut().expect("e").color = Some("red".into()),
            &["event.color"],
        ),
    ];
    for (name, change, expected) in cases {
        let mut request = pb::UpsertEventRequest {
            mode: Default::default(),
            user: by_sub(&grant.sub),
            calendar_id: calendar_id.clone(),
            event: Some(event("evt-1")),
        };
        change(&mut request);
        let status = app.client.clone().upsert_event(app.req(request)).await.expect_err(name);
        assert_status(&status, Code::InvalidArgument, "FIELD_INVALID");
        assert_eq!(violated_fields(&status), expected, "{name}");
    }
    assert_eq!(
        app.fake.count(Endpoint::UpsertEvent),
        upserts_before,
        "validation happens before any upstream call"
    );
}

#[tokio::test]
async fn a_message_over_the_transport_limit_is_refused_without_harm() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    let mut huge = event("evt-huge");
    huge.description = Some("x".repeat(5 * 1024 * 1024));
    let status = app
        .client
        .clone()
        .upsert_event(app.req(pb::UpsertEventRequest {
            mode: Default::default(),
            user: by_sub(&grant.sub),
            calendar_id: app.fake.calendar_ids(&grant.sub)[0].clone(),
            event: Some(huge),
        }))
        .await
        .expect_err("over 4 MiB");
    // tonic's codec refuses it before calgate sees it; every field below the cap has
    // its own limit, answered with INVALID_ARGUMENT naming the field.
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(app.fake.count(Endpoint::UpsertEvent), 0);
    // The server is unharmed.
    app.client
        .clone()
        .get_grant(app.req(pb::GetGrantRequest {
            user: Some(pb::get_grant_request::User::Sub(grant.sub.clone())),
        }))
        .await
        .expect("still serving");
}

#[tokio::test]
async fn delete_removes_the_event_and_is_idempotent() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    let calendar_id = app.fake.calendar_ids(&grant.sub)[0].clone();
    app.client
        .clone()
        .upsert_event(app.req(pb::UpsertEventRequest {
            mode: Default::default(),
            user: by_sub(&grant.sub),
            calendar_id: calendar_id.clone(),
            event: Some(event("evt-1")),
        }))
        .await
        .expect("upsert");
    let delete = || pb::DeleteEventRequest {
        mode: Default::default(),
        user: Some(pb::delete_event_request::User::Sub(grant.sub.clone())),
        calendar_id: calendar_id.clone(),
        event_id: "evt-1".into(),
    };
    app.client
        .clone()
        .delete_event(app.req(delete()))
        .await
        .expect("delete");
    assert_eq!(app.fake.event_count(&grant.sub), 0);
    let sent = app.fake.requests().pop().expect("the delete request");
    assert_eq!(sent.endpoint, Endpoint::DeleteEvent);
    assert_eq!(
        sent.json(),
        Some(json!({"event_id": "evt-1"})),
        "Cronofy's documented JSON body"
    );
    app.client
        .clone()
        .delete_event(app.req(delete()))
        .await
        .expect("deleting again is fine");
    let status = app
        .client
        .clone()
        .delete_event(app.req(pb::DeleteEventRequest {
            event_id: String::new(),
            ..delete()
        }))
        .await
        .expect_err("no event_id");
    assert_eq!(violated_fields(&status), ["event_id"]);
    assert_eq!(app.fake.count(Endpoint::DeleteEvent), 2);
}

#[tokio::test]
async fn list_calendars_maps_cronofys_fields() {
    let app = spawn_app().await;
    let grant = app.connect(Some("ada")).await;
    let calendars = app.calendars("ada").await;
    assert_eq!(calendars.len(), 2);
    let primary = &calendars[0];
    assert_eq!(primary.calendar_id, app.fake.calendar_ids(&grant.sub)[0]);
    assert_eq!(primary.calendar_name, "Work");
    assert!(primary.primary && !primary.readonly && !primary.deleted);
    assert_eq!(primary.provider_name, "google");
    assert_eq!(primary.profile_name, grant.profile_name);
    assert!(primary.profile_id.starts_with("pro_"));
    assert_eq!(primary.permission_level, "sandbox");
    assert!(primary.integrated_conferencing_available && primary.attachments_available);
    assert!(calendars[1].readonly && !calendars[1].primary);
    assert!(!calendars[1].integrated_conferencing_available && !calendars[1].attachments_available);
}
