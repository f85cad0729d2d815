//! The fake's strictness: the upsert body as documented (cronofy-api §5.1),
//! answered with Cronofy's 422 `errors` map when it is not.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// Cronofy's 422 body: field → [{key, description}].
pub(super) type Errors = BTreeMap<String, Vec<Value>>;

const KNOWN_FIELDS: &[&str] = &[
    "event_id",
    "summary",
    "description",
    "tzid",
    "start",
    "end",
    "location",
    "url",
    "transparency",
    "extended_transparency",
    "color",
    "reminders",
    "reminders_create_only",
    "attendees",
    "event_private",
    "conferencing",
    "subscriptions",
    "recurrence",
    "attachments",
    "locale",
];

fn add(errors: &mut Errors, field: &str, key: &str, description: &str) {
    errors
        .entry(field.to_owned())
        .or_default()
        .push(json!({"key": format!("errors.{key}"), "description": description}));
}

/// `2014-08-05T14:30:00Z`: UTC, whole seconds.
fn is_time(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
}

/// `2014-08-05`.
fn is_date(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 10 && b[4] == b'-' && b[7] == b'-' && [0, 1, 2, 3, 5, 6, 8, 9].iter().all(|&i| b[i].is_ascii_digit())
}

fn check_time(errors: &mut Errors, field: &str, value: Option<&Value>) {
    let ok = match value {
        None => return add(errors, field, "required", "required"),
        Some(Value::String(text)) => is_time(text) || is_date(text),
        Some(Value::Object(object)) => {
            object.len() == 2
                && object.get("time").and_then(Value::as_str).is_some_and(is_time)
                && object
                    .get("tzid")
                    .and_then(Value::as_str)
                    .is_some_and(|z| !z.is_empty())
        }
        Some(_) => false,
    };
    if !ok {
        add(errors, field, "invalid", "must be a Time, a Date or {time, tzid}");
    }
}

fn check_string(errors: &mut Errors, body: &Map<String, Value>, field: &str, required: bool, max: usize) {
    match body.get(field) {
        None if required => add(errors, field, "required", "required"),
        None => {}
        Some(Value::String(text)) if required && text.is_empty() => add(errors, field, "required", "required"),
        Some(Value::String(text)) if text.chars().count() > max => {
            add(errors, field, "too_long", &format!("must be at most {max} characters"))
        }
        Some(Value::String(_)) => {}
        Some(_) => add(errors, field, "invalid", "must be a string"),
    }
}

fn check_people(errors: &mut Errors, attendees: &Value) {
    let Some(object) = attendees.as_object() else {
        return add(errors, "attendees", "invalid", "must be an object");
    };
    for (key, list) in object {
        // `reject` removes people (cronofy-ruby client.rb upsert docs, cronofy-php tests);
        // the 2017 .NET SDK's `remove` is refused as any other key.
        if key != "invite" && key != "reject" {
            add(
                errors,
                &format!("attendees.{key}"),
                "unknown",
                "only invite and reject are accepted",
            );
            continue;
        }
        let ok = list.as_array().is_some_and(|people| {
            people.iter().all(|p| {
                p.as_object().is_some_and(|person| {
                    person.keys().all(|k| k == "email" || k == "display_name")
                        && person
                            .get("email")
                            .and_then(Value::as_str)
                            .is_some_and(|e| e.contains('@'))
                        && person.get("display_name").is_none_or(Value::is_string)
                })
            })
        });
        if !ok {
            add(
                errors,
                &format!("attendees.{key}"),
                "invalid",
                "each attendee is {email, display_name?}",
            );
        }
    }
}

/// The highest reminder the fake accepts: four weeks (an assumption, see
/// docs/cronofy-mapping.md; the docs give no bound).
const MAX_REMINDER_MINUTES: i64 = 40_320;

fn check_reminders(errors: &mut Errors, reminders: &Value) {
    let ok = reminders.as_array().is_some_and(|list| {
        list.len() <= 5
            && list.iter().all(|r| {
                r.as_object().is_some_and(|o| o.len() == 1)
                    && r.get("minutes")
                        .and_then(Value::as_i64)
                        .is_some_and(|m| (0..=MAX_REMINDER_MINUTES).contains(&m))
            })
    });
    if !ok {
        add(
            errors,
            "reminders",
            "invalid",
            "at most 5 {minutes} objects, 0 to 40320 minutes",
        );
    }
}

/// `{description?, lat?, long?}`, coordinates as decimal strings (the SDKs send strings).
fn check_location(errors: &mut Errors, location: &Value) {
    let coordinate = |value: Option<&Value>, limit: f64| {
        value.is_none_or(|v| {
            v.as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .is_some_and(|n| n.is_finite() && n.abs() <= limit)
        })
    };
    let ok = location.as_object().is_some_and(|o| {
        o.keys().all(|k| matches!(k.as_str(), "description" | "lat" | "long"))
            && o.get("description").is_none_or(Value::is_string)
            && coordinate(o.get("lat"), 90.0)
            && coordinate(o.get("long"), 180.0)
    });
    if !ok {
        add(errors, "location", "invalid", "must be {description, lat, long}");
    }
}

const WEEKDAYS: &[&str] = &[
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

/// `{rules: [{frequency, interval?, by_day?}]}`; `by_day` only on weekly rules
/// (docs: /developers/api-alpha/recurring-events).
fn check_recurrence(errors: &mut Errors, recurrence: &Value) {
    let rule_ok = |rule: &Value| {
        let Some(rule) = rule.as_object() else { return false };
        let frequency = rule.get("frequency").and_then(Value::as_str);
        rule.keys()
            .all(|k| matches!(k.as_str(), "frequency" | "interval" | "by_day"))
            && matches!(frequency, Some("daily" | "weekly" | "monthly" | "yearly"))
            && rule.get("interval").is_none_or(|i| i.as_u64().is_some_and(|i| i >= 1))
            && rule.get("by_day").is_none_or(|days| {
                frequency == Some("weekly")
                    && days.as_array().is_some_and(|d| {
                        d.iter()
                            .all(|day| day.as_str().is_some_and(|day| WEEKDAYS.contains(&day)))
                    })
            })
    };
    let ok = recurrence.as_object().is_some_and(|o| {
        o.len() == 1
            && o.get("rules")
                .and_then(Value::as_array)
                .is_some_and(|rules| rules.iter().all(rule_ok))
    });
    if !ok {
        add(
            errors,
            "recurrence",
            "invalid",
            "must be {rules: [{frequency, interval?, by_day?}]}",
        );
    }
}

/// `[{type: "webhook", uri, interactions?: [{type}]}]`
/// (docs: /developers/api/conferencing-services/subscriptions).
fn check_subscriptions(errors: &mut Errors, subscriptions: &Value) {
    let ok = subscriptions.as_array().is_some_and(|list| {
        list.iter().all(|s| {
            s.as_object().is_some_and(|o| {
                o.keys().all(|k| matches!(k.as_str(), "type" | "uri" | "interactions"))
                    && o.get("type").and_then(Value::as_str) == Some("webhook")
                    && o.get("uri")
                        .and_then(Value::as_str)
                        .and_then(|u| url::Url::parse(u).ok())
                        .is_some_and(|u| matches!(u.scheme(), "http" | "https"))
                    && o.get("interactions").is_none_or(|i| {
                        i.as_array().is_some_and(|i| {
                            i.iter()
                                .all(|t| t.get("type").and_then(Value::as_str).is_some_and(|t| !t.is_empty()))
                        })
                    })
            })
        })
    });
    if !ok {
        add(
            errors,
            "subscriptions",
            "invalid",
            "each is {type: webhook, uri, interactions}",
        );
    }
}

/// `[{attachment_id}]` (cronofy-csharp UpsertEventRequest.cs).
fn check_attachments(errors: &mut Errors, attachments: &Value) {
    let ok = attachments.as_array().is_some_and(|list| {
        list.iter().all(|a| {
            a.as_object().is_some_and(|o| {
                o.len() == 1
                    && o.get("attachment_id")
                        .and_then(Value::as_str)
                        .is_some_and(|id| !id.is_empty())
            })
        })
    });
    if !ok {
        add(errors, "attachments", "invalid", "each is {attachment_id}");
    }
}

/// The comparable instant or date of a valid start or end: a UTC Time, a Date,
/// or the `time` of the object form (itself UTC).
fn sort_key(value: Option<&Value>) -> Option<&str> {
    match value? {
        Value::String(text) => Some(text),
        Value::Object(object) => object.get("time").and_then(Value::as_str),
        _ => None,
    }
}

/// `end` after `start`, both timed or both all-day (an all-day end date is exclusive).
fn check_order(errors: &mut Errors, body: &Map<String, Value>) {
    if errors.contains_key("start") || errors.contains_key("end") {
        return;
    }
    let (Some(start), Some(end)) = (sort_key(body.get("start")), sort_key(body.get("end"))) else {
        return;
    };
    if is_date(start) != is_date(end) {
        add(
            errors,
            "end",
            "invalid",
            "start and end must both be times or both dates",
        );
    } else if end <= start {
        add(errors, "end", "invalid", "must be after start");
    }
}

/// Every documented rule the fake enforces on an upsert body.
pub(super) fn upsert_body(body: &Value) -> Result<(), Errors> {
    let mut errors = Errors::new();
    let Some(body) = body.as_object() else {
        add(&mut errors, "event", "invalid", "body must be a JSON object");
        return Err(errors);
    };
    for key in body.keys().filter(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
        add(&mut errors, key, "unknown", "unknown parameter");
    }
    check_string(&mut errors, body, "event_id", true, usize::MAX);
    check_string(&mut errors, body, "summary", true, 1024);
    check_string(&mut errors, body, "description", false, 4096);
    check_string(&mut errors, body, "tzid", false, 64);
    check_time(&mut errors, "start", body.get("start"));
    check_time(&mut errors, "end", body.get("end"));
    if let Some(value) = body.get("transparency")
        && !matches!(value.as_str(), Some("opaque" | "transparent"))
    {
        add(&mut errors, "transparency", "invalid", "must be opaque or transparent");
    }
    check_order(&mut errors, body);
    if let Some(reminders) = body.get("reminders") {
        check_reminders(&mut errors, reminders);
    }
    if let Some(location) = body.get("location") {
        check_location(&mut errors, location);
    }
    if let Some(recurrence) = body.get("recurrence") {
        check_recurrence(&mut errors, recurrence);
    }
    if let Some(subscriptions) = body.get("subscriptions") {
        check_subscriptions(&mut errors, subscriptions);
    }
    if let Some(attachments) = body.get("attachments") {
        check_attachments(&mut errors, attachments);
    }
    // "the 2 character code for the language" (cronofy-php src/Cronofy.php, upsert docblock).
    if let Some(locale) = body.get("locale")
        && !locale
            .as_str()
            .is_some_and(|l| l.len() == 2 && l.bytes().all(|b| b.is_ascii_lowercase()))
    {
        add(&mut errors, "locale", "invalid", "must be a 2-letter language code");
    }
    for flag in ["reminders_create_only", "event_private"] {
        if body.get(flag).is_some_and(|v| !v.is_boolean()) {
            add(&mut errors, flag, "invalid", "must be a boolean");
        }
    }
    if let Some(value) = body.get("extended_transparency")
        && !matches!(
            value.as_str(),
            Some("transparent" | "opaque" | "working_elsewhere" | "tentative" | "out_of_office")
        )
    {
        add(&mut errors, "extended_transparency", "invalid", "unknown value");
    }
    if let Some(attendees) = body.get("attendees") {
        check_people(&mut errors, attendees);
    }
    if let Some(url) = body.get("url")
        && !(url.is_null() || url.is_string())
    {
        add(&mut errors, "url", "invalid", "must be a string or null");
    }
    if let Some(conferencing) = body.get("conferencing")
        && conferencing
            .get("profile_id")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        add(&mut errors, "conferencing.profile_id", "required", "required");
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_shapes() {
        let body = json!({"event_id": "e", "summary": "s", "start": "2026-03-01T09:00:00Z",
            "end": {"time": "2026-03-01T10:00:00Z", "tzid": "Europe/London"}, "url": null});
        assert!(upsert_body(&body).is_ok());
        assert!(
            upsert_body(&json!({"event_id": "e", "summary": "s", "start": "2026-03-01", "end": "2026-03-02"})).is_ok()
        );
    }

    fn event(extra: Value) -> Value {
        let mut body = json!({"event_id": "e", "summary": "s", "start": "2026-03-01T09:00:00Z",
            "end": "2026-03-01T10:00:00Z"});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        body
    }

    fn refused(extra: Value) -> Vec<String> {
        upsert_body(&event(extra))
            .err()
            .unwrap_or_default()
            .into_keys()
            .collect()
    }

    #[test]
    fn accepts_every_documented_field() {
        let full = json!({"description": "d", "tzid": "Europe/London",
            "location": {"description": "Room 1", "lat": "51.5", "long": "-0.12"},
            "transparency": "opaque", "extended_transparency": "working_elsewhere", "color": "#c6040f",
            "reminders": [{"minutes": 0}, {"minutes": 40320}], "reminders_create_only": true,
            "attendees": {"invite": [{"email": "a@example.com", "display_name": "A"}], "reject": [{"email": "b@example.com"}]},
            "event_private": true, "conferencing": {"profile_id": "default"},
            "subscriptions": [{"type": "webhook", "uri": "https://example.com/hook", "interactions": [{"type": "conferencing_assigned"}]}],
            "recurrence": {"rules": [{"frequency": "weekly", "interval": 2, "by_day": ["monday"]}]},
            "attachments": [{"attachment_id": "att_1"}], "locale": "en"});
        assert_eq!(upsert_body(&event(full)), Ok(()));
    }

    #[test]
    fn refuses_what_the_documentation_does_not_allow() {
        assert_eq!(
            refused(json!({"attendees": {"remove": [{"email": "b@example.com"}]}})),
            ["attendees.remove"]
        );
        assert_eq!(
            refused(json!({"attendees": {"invite": [{"email": "b@example.com", "rsvp": true}]}})),
            ["attendees.invite"]
        );
        assert_eq!(refused(json!({"reminders": [{"minutes": 40321}]})), ["reminders"]);
        assert_eq!(refused(json!({"reminders": [{"minutes": -1}]})), ["reminders"]);
        assert_eq!(
            refused(json!({"location": {"description": "x", "lat": 51.5}})),
            ["location"]
        );
        assert_eq!(refused(json!({"location": {"lat": "91"}})), ["location"]);
        assert_eq!(
            refused(json!({"recurrence": {"rules": [{"frequency": "daily", "by_day": ["monday"]}]}})),
            ["recurrence"]
        );
        assert_eq!(
            refused(json!({"recurrence": {"rules": [{"frequency": "hourly"}]}})),
            ["recurrence"]
        );
        assert_eq!(
            refused(json!({"subscriptions": [{"type": "email", "uri": "https://example.com"}]})),
            ["subscriptions"]
        );
        assert_eq!(refused(json!({"attachments": ["att_1"]})), ["attachments"]);
        assert_eq!(refused(json!({"locale": "en-GB"})), ["locale"]);
        assert_eq!(
            refused(json!({"extended_transparency": "busy"})),
            ["extended_transparency"]
        );
        assert_eq!(
            refused(json!({"end": "2026-03-01T09:00:00Z"})),
            ["end"],
            "end equal to start"
        );
        assert_eq!(refused(json!({"end": "2026-03-01"})), ["end"], "a time and a date");
        assert_eq!(
            refused(json!({"start": "2026-03-02", "end": "2026-03-02"})),
            ["end"],
            "dates: end is exclusive"
        );
    }

    #[test]
    fn refuses_fractions_missing_fields_and_unknown_keys() {
        let body =
            json!({"summary": "s", "start": "2026-03-01T09:00:00.5Z", "end": "2026-03-01T10:00:00Z", "colour": "#fff"});
        let errors = upsert_body(&body).err().unwrap_or_default();
        assert!(errors.contains_key("event_id"));
        assert!(errors.contains_key("start"));
        assert!(errors.contains_key("colour"));
        assert!(!errors.contains_key("end"));
    }
}
