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
        if key != "invite" && key != "remove" {
            add(errors, "attendees", "unknown", "only invite and remove are accepted");
            continue;
        }
        let ok = list.as_array().is_some_and(|people| {
            people
                .iter()
                .all(|p| p.get("email").and_then(Value::as_str).is_some_and(|e| e.contains('@')))
        });
        if !ok {
            add(errors, "attendees", "invalid", "each attendee needs an email");
        }
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
    if let Some(reminders) = body.get("reminders") {
        let ok = reminders
            .as_array()
            .is_some_and(|list| list.len() <= 5 && list.iter().all(|r| r.get("minutes").is_some_and(Value::is_i64)));
        if !ok {
            add(&mut errors, "reminders", "invalid", "at most 5 {minutes} objects");
        }
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
