//! The event model and its Cronofy body.

use serde_json::json;
use time::macros::{date, datetime};

use super::*;

fn event(start: EventTime, end: EventTime) -> Event {
    Event {
        event_id: "evt-1".into(),
        summary: "Standup".into(),
        description: None,
        start,
        end,
        tzid: None,
        location: None,
        url: UrlChange::Keep,
        transparency: None,
        extended_transparency: None,
        attendees: None,
        reminders: vec![],
        reminders_create_only: false,
        event_private: false,
        color: None,
        conferencing: None,
        recurrence: None,
        subscriptions: vec![],
        attachments: vec![],
        locale: None,
    }
}

#[test]
fn minimal_event_sends_only_required_fields() {
    let e = event(
        EventTime::Time(datetime!(2026-03-01 09:30:00 UTC)),
        EventTime::Zoned {
            time: datetime!(2026-03-01 12:00:00 +02:00),
            tzid: "Europe/Helsinki".into(),
        },
    );
    assert_eq!(
        serde_json::to_value(e.to_cronofy()).ok(),
        Some(json!({
            "summary": "Standup",
            "start": "2026-03-01T09:30:00Z",
            "end": {"time": "2026-03-01T10:00:00Z", "tzid": "Europe/Helsinki"},
        }))
    );
}

#[test]
fn all_fields_map_onto_cronofy_names() {
    let mut e = event(
        EventTime::Date(date!(2026 - 03 - 01)),
        EventTime::Date(date!(2026 - 03 - 02)),
    );
    e.url = UrlChange::Remove;
    e.transparency = Some(Transparency::Transparent);
    e.extended_transparency = Some(ExtendedTransparency::OutOfOffice);
    e.reminders = vec![Reminder { minutes: 10 }];
    e.event_private = true;
    e.recurrence = Some(Recurrence { rules: vec![] });
    e.subscriptions = vec![Subscription {
        uri: "https://x.example/hook".into(),
        interaction_types: vec!["conferencing_assigned".into()],
    }];
    let value = serde_json::to_value(e.to_cronofy()).unwrap_or_default();
    assert_eq!(value["start"], json!("2026-03-01"));
    assert_eq!(value["url"], json!(null));
    assert_eq!(value["transparency"], json!("transparent"));
    assert_eq!(value["extended_transparency"], json!("out_of_office"));
    assert_eq!(value["reminders"], json!([{"minutes": 10}]));
    assert_eq!(value["event_private"], json!(true));
    assert_eq!(value["recurrence"], json!({"rules": []}));
    assert_eq!(
        value["subscriptions"],
        json!([{"type": "webhook", "uri": "https://x.example/hook", "interactions": [{"type": "conferencing_assigned"}]}])
    );
    assert!(value.get("reminders_create_only").is_none());
}

#[test]
fn order_rules() {
    let t = |h| EventTime::Time(datetime!(2026-03-01 00:00:00 UTC) + time::Duration::hours(h));
    let d = |day| EventTime::Date(date!(2026 - 03 - 01) + time::Duration::days(day));
    assert!(EventTime::check_order(&t(1), &t(2)).is_ok());
    assert!(EventTime::check_order(&t(2), &t(2)).is_err());
    assert!(EventTime::check_order(&d(0), &d(1)).is_ok());
    assert!(EventTime::check_order(&d(0), &d(0)).is_err());
    assert!(EventTime::check_order(&t(0), &d(1)).is_err());
}
