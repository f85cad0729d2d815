//! A validated event, serialized exactly as Cronofy's "Create or Update Event"
//! body (cronofy-api §5.1). Unset optional fields are left out, which keeps the
//! event's current value on update.

use serde::{Serialize, Serializer, ser::SerializeMap};
use time::{Date, OffsetDateTime, format_description::well_known::Rfc3339, macros::format_description};

/// Limits from Cronofy's documentation, and calgate's own where Cronofy sets none.
pub mod limits {
    /// Cronofy: summary ≤ 1024 characters.
    pub const SUMMARY: usize = 1024;
    /// Cronofy: description ≤ 4096 characters.
    pub const DESCRIPTION: usize = 4096;
    /// calgate: ids (event, calendar, sub, user_ref).
    pub const ID: usize = 256;
    /// Cronofy: at most 5 reminders.
    pub const REMINDERS: usize = 5;
    /// calgate: four weeks, the longest reminder the big providers allow.
    pub const REMINDER_MINUTES: i32 = 40_320;
    /// calgate: attendees per list.
    pub const ATTENDEES: usize = 500;
    /// calgate: location description, display names.
    pub const SHORT_TEXT: usize = 1024;
    /// calgate: subscriptions, attachments, recurrence rules, interaction types.
    pub const SMALL_LIST: usize = 20;
    /// The days of a week: a weekly rule's `by_day`.
    pub const WEEKDAYS: usize = 7;
}

/// When an event starts or ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTime {
    /// A UTC instant in whole seconds.
    Time(OffsetDateTime),
    /// An instant pinned to a time zone: `{"time": …, "tzid": …}`.
    Zoned {
        /// The instant.
        time: OffsetDateTime,
        /// IANA zone.
        tzid: String,
    },
    /// An all-day date.
    Date(Date),
}

impl EventTime {
    fn instant(&self) -> Option<OffsetDateTime> {
        match self {
            EventTime::Time(time) | EventTime::Zoned { time, .. } => Some(*time),
            EventTime::Date(_) => None,
        }
    }

    /// Checks `end` against `start`: same kind, and strictly later.
    pub fn check_order(start: &EventTime, end: &EventTime) -> Result<(), String> {
        match (start, end) {
            (EventTime::Date(start), EventTime::Date(end)) if end > start => Ok(()),
            (EventTime::Date(_), EventTime::Date(_)) => {
                Err("must be a later date than event.start (all-day end dates are exclusive)".into())
            }
            (start, end) => match (start.instant(), end.instant()) {
                (Some(start), Some(end)) if end > start => Ok(()),
                (Some(_), Some(_)) => Err("must be later than event.start".into()),
                _ => Err("must be of the same kind as event.start (both times or both dates)".into()),
            },
        }
    }
}

fn utc_text(time: &OffsetDateTime) -> String {
    // Cronofy rejects fractional seconds; validation guarantees whole seconds.
    time.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .expect("validated years are four digits")
}

impl Serialize for EventTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            EventTime::Time(time) => serializer.serialize_str(&utc_text(time)),
            EventTime::Zoned { time, tzid } => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("time", &utc_text(time))?;
                map.serialize_entry("tzid", tzid)?;
                map.end()
            }
            EventTime::Date(date) => {
                let text = date
                    .format(format_description!("[year]-[month]-[day]"))
                    .map_err(serde::ser::Error::custom)?;
                serializer.serialize_str(&text)
            }
        }
    }
}

/// The event's URL: keep, set, or remove (Cronofy's three states).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum UrlChange {
    /// Not sent: the current URL stays.
    #[default]
    Keep,
    /// Sent as a string.
    Set(String),
    /// Sent as `null`.
    Remove,
}

impl UrlChange {
    fn is_keep(&self) -> bool {
        matches!(self, UrlChange::Keep)
    }
}

impl Serialize for UrlChange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            UrlChange::Set(url) => serializer.serialize_str(url),
            UrlChange::Keep | UrlChange::Remove => serializer.serialize_none(),
        }
    }
}

/// Where an event takes place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    /// Free text.
    pub description: String,
    /// Latitude, decimal degrees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lat: Option<String>,
    /// Longitude, decimal degrees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub long: Option<String>,
}

/// Whether the event blocks time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transparency {
    /// Blocks time.
    Opaque,
    /// Does not block time.
    Transparent,
}

/// Finer show-as status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtendedTransparency {
    /// Free.
    Transparent,
    /// Busy.
    Opaque,
    /// Working elsewhere.
    WorkingElsewhere,
    /// Tentative.
    Tentative,
    /// Out of office.
    OutOfOffice,
}

/// One person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attendee {
    /// Email address.
    pub email: String,
    /// Name to show.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// People to invite and remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attendees {
    /// Invite.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub invite: Vec<Attendee>,
    /// Remove: sent as Cronofy's `reject` list (cronofy-ruby and cronofy-php;
    /// only the 2017 .NET SDK says `remove`, see docs/cronofy-mapping.md).
    #[serde(rename = "reject", skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<Attendee>,
}

/// A reminder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Reminder {
    /// Minutes before the start.
    pub minutes: i32,
}

/// Conferencing to attach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conferencing {
    /// `default`, `explicit` or a profile id.
    pub profile_id: String,
    /// With `explicit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_description: Option<String>,
    /// With `explicit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_url: Option<String>,
}

/// Recurrence frequency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Frequency {
    /// Daily.
    Daily,
    /// Weekly.
    Weekly,
    /// Monthly.
    Monthly,
    /// Yearly.
    Yearly,
}

/// A weekday for weekly rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Weekday {
    /// Monday.
    Monday,
    /// Tuesday.
    Tuesday,
    /// Wednesday.
    Wednesday,
    /// Thursday.
    Thursday,
    /// Friday.
    Friday,
    /// Saturday.
    Saturday,
    /// Sunday.
    Sunday,
}

/// One recurrence rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecurrenceRule {
    /// How often.
    pub frequency: Frequency,
    /// Every n periods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<u32>,
    /// Weekly only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub by_day: Vec<Weekday>,
}

/// Recurrence: an empty rule list removes recurrence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recurrence {
    /// The rules.
    pub rules: Vec<RecurrenceRule>,
}

/// A webhook subscription about this event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Where Cronofy posts.
    pub uri: String,
    /// Interaction types; empty means all.
    pub interaction_types: Vec<String>,
}

impl Serialize for Subscription {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Interaction<'a> {
            r#type: &'a str,
        }
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("type", "webhook")?;
        map.serialize_entry("uri", &self.uri)?;
        if !self.interaction_types.is_empty() {
            let interactions: Vec<Interaction<'_>> = self
                .interaction_types
                .iter()
                .map(|t| Interaction { r#type: t })
                .collect();
            map.serialize_entry("interactions", &interactions)?;
        }
        map.end()
    }
}

/// An uploaded attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attachment {
    /// Id from Cronofy's attachments API.
    pub attachment_id: String,
}

/// A validated event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// The caller's id; Cronofy's is the tenant's mapping of it (`event_ids`),
    /// which the Cronofy client adds.
    #[serde(skip)]
    pub event_id: String,
    /// Title.
    pub summary: String,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Start.
    pub start: EventTime,
    /// End.
    pub end: EventTime,
    /// Default zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tzid: Option<String>,
    /// Place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// URL change.
    #[serde(skip_serializing_if = "UrlChange::is_keep")]
    pub url: UrlChange,
    /// Blocks time or not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transparency: Option<Transparency>,
    /// Finer show-as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extended_transparency: Option<ExtendedTransparency>,
    /// Attendees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attendees: Option<Attendees>,
    /// Reminders in priority order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reminders: Vec<Reminder>,
    /// Reminders only on creation.
    #[serde(skip_serializing_if = "is_false")]
    pub reminders_create_only: bool,
    /// Private.
    #[serde(skip_serializing_if = "is_false")]
    pub event_private: bool,
    /// Colour.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    /// Conferencing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conferencing: Option<Conferencing>,
    /// Recurrence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recurrence: Option<Recurrence>,
    /// Webhook subscriptions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<Subscription>,
    /// Attachments.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// Template locale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

#[cfg(test)]
mod tests {
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
            serde_json::to_value(&e).ok(),
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
        let value = serde_json::to_value(&e).unwrap_or_default();
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
}
