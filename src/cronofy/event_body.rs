//! Cronofy's JSON for an event write: the body of "Create or Update Event"
//! (`POST /v1/calendars/{calendar_id}/events`, docs: api/events/upsert-event;
//! cronofy-api §5.1) and of a batch upsert entry. The domain owns the event
//! model and builds an [`EventBody`] from it; the field names, the shapes of
//! times and the three states of `url` live here. Unset optional fields are
//! left out, which keeps the event's current value on update.

use serde::{Serialize, Serializer, ser::SerializeMap};

/// The event as Cronofy reads it, borrowing from the domain's event.
#[derive(Debug, Serialize)]
pub struct EventBody<'a> {
    /// Title.
    pub summary: &'a str,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    /// Start.
    pub start: Time<'a>,
    /// End.
    pub end: Time<'a>,
    /// Default zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tzid: Option<&'a str>,
    /// Place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location<'a>>,
    /// URL change.
    #[serde(skip_serializing_if = "Url::is_keep")]
    pub url: Url<'a>,
    /// Blocks time or not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transparency: Option<Transparency>,
    /// Finer show-as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extended_transparency: Option<ExtendedTransparency>,
    /// Attendees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attendees: Option<Attendees<'a>>,
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
    pub color: Option<&'a str>,
    /// Conferencing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conferencing: Option<Conferencing<'a>>,
    /// Recurrence: an empty rule list removes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recurrence: Option<Recurrence>,
    /// Webhook subscriptions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<Subscription<'a>>,
    /// Attachments, by the ids of Cronofy's attachments API.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment<'a>>,
    /// Template locale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<&'a str>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// A start or end, already in Cronofy's text: a UTC instant
/// (`2026-03-01T09:30:00Z`), an instant with its zone (`{"time", "tzid"}`),
/// or an all-day date (`2026-03-01`).
#[derive(Debug)]
pub enum Time<'a> {
    /// A UTC instant or a date: a plain string.
    Text(String),
    /// An instant pinned to a zone.
    Zoned {
        /// The UTC instant.
        time: String,
        /// IANA zone.
        tzid: &'a str,
    },
}

impl Serialize for Time<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Time::Text(text) => serializer.serialize_str(text),
            Time::Zoned { time, tzid } => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("time", time)?;
                map.serialize_entry("tzid", tzid)?;
                map.end()
            }
        }
    }
}

/// `url`: left out (keep), a string (set), or `null` (remove).
#[derive(Debug)]
pub enum Url<'a> {
    /// Not sent: the current URL stays.
    Keep,
    /// Sent as a string.
    Set(&'a str),
    /// Sent as `null`.
    Remove,
}

impl Url<'_> {
    fn is_keep(&self) -> bool {
        matches!(self, Url::Keep)
    }
}

impl Serialize for Url<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Url::Set(url) => serializer.serialize_str(url),
            Url::Keep | Url::Remove => serializer.serialize_none(),
        }
    }
}

/// `location`.
#[derive(Debug, Serialize)]
pub struct Location<'a> {
    /// Free text.
    pub description: &'a str,
    /// Latitude, decimal degrees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lat: Option<&'a str>,
    /// Longitude, decimal degrees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub long: Option<&'a str>,
}

/// `transparency`.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // Cronofy's values, named as the docs name them.
pub enum Transparency {
    Opaque,
    Transparent,
}

/// `extended_transparency`.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // Cronofy's values, named as the docs name them.
pub enum ExtendedTransparency {
    Transparent,
    Opaque,
    WorkingElsewhere,
    Tentative,
    OutOfOffice,
}

/// One attendee.
#[derive(Debug, Serialize)]
pub struct Attendee<'a> {
    /// Email address.
    pub email: &'a str,
    /// Name to show.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<&'a str>,
}

/// `attendees`: people to invite and to remove.
#[derive(Debug, Serialize)]
pub struct Attendees<'a> {
    /// Invite.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub invite: Vec<Attendee<'a>>,
    /// Remove: Cronofy's `reject` list (cronofy-ruby and cronofy-php; only the
    /// 2017 .NET SDK says `remove`, see docs/cronofy-mapping.md).
    #[serde(rename = "reject", skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<Attendee<'a>>,
}

/// One reminder.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Reminder {
    /// Minutes before the start.
    pub minutes: i32,
}

/// `conferencing`.
#[derive(Debug, Serialize)]
pub struct Conferencing<'a> {
    /// `default`, `explicit` or a profile id.
    pub profile_id: &'a str,
    /// With `explicit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_description: Option<&'a str>,
    /// With `explicit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_url: Option<&'a str>,
}

/// A rule's `frequency`.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // Cronofy's values, named as the docs name them.
pub enum Frequency {
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

/// A weekly rule's `by_day` entry.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // Cronofy's values, named as the docs name them.
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

/// One recurrence rule.
#[derive(Debug, Serialize)]
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

/// `recurrence`.
#[derive(Debug, Serialize)]
pub struct Recurrence {
    /// The rules; empty removes the recurrence.
    pub rules: Vec<RecurrenceRule>,
}

/// One webhook subscription: `{"type": "webhook", "uri", "interactions"}`.
#[derive(Debug)]
pub struct Subscription<'a> {
    /// Where Cronofy posts.
    pub uri: &'a str,
    /// Interaction types; empty means all (and `interactions` is left out).
    pub interaction_types: Vec<&'a str>,
}

impl Serialize for Subscription<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Interaction<'a> {
            r#type: &'a str,
        }
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("type", "webhook")?;
        map.serialize_entry("uri", self.uri)?;
        if !self.interaction_types.is_empty() {
            let interactions: Vec<Interaction<'_>> = self
                .interaction_types
                .iter()
                .map(|kind| Interaction { r#type: kind })
                .collect();
            map.serialize_entry("interactions", &interactions)?;
        }
        map.end()
    }
}

/// One attachment.
#[derive(Debug, Serialize)]
pub struct Attachment<'a> {
    /// Id from Cronofy's attachments API.
    pub attachment_id: &'a str,
}
