//! A validated event: calgate's model of what a caller writes. Cronofy's JSON
//! for it is [`crate::cronofy::event_body`]; [`Event::to_cronofy`] builds it.

use time::{Date, OffsetDateTime};

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

/// Where an event takes place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Free text.
    pub description: String,
    /// Latitude, decimal degrees.
    pub lat: Option<String>,
    /// Longitude, decimal degrees.
    pub long: Option<String>,
}

/// Whether the event blocks time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transparency {
    /// Blocks time.
    Opaque,
    /// Does not block time.
    Transparent,
}

/// Finer show-as status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attendee {
    /// Email address.
    pub email: String,
    /// Name to show.
    pub display_name: Option<String>,
}

/// People to invite and remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attendees {
    /// Invite.
    pub invite: Vec<Attendee>,
    /// Remove: sent as Cronofy's `reject` list (cronofy-ruby and cronofy-php;
    /// only the 2017 .NET SDK says `remove`, see docs/cronofy-mapping.md).
    pub remove: Vec<Attendee>,
}

/// A reminder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reminder {
    /// Minutes before the start.
    pub minutes: i32,
}

/// Conferencing to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conferencing {
    /// `default`, `explicit` or a profile id.
    pub profile_id: String,
    /// With `explicit`.
    pub provider_description: Option<String>,
    /// With `explicit`.
    pub join_url: Option<String>,
}

/// Recurrence frequency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecurrenceRule {
    /// How often.
    pub frequency: Frequency,
    /// Every n periods.
    pub interval: Option<u32>,
    /// Weekly only.
    pub by_day: Vec<Weekday>,
}

/// Recurrence: an empty rule list removes recurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// An uploaded attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Id from Cronofy's attachments API.
    pub attachment_id: String,
}

/// A validated event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The caller's id; Cronofy's is the tenant's mapping of it (`event_ids`),
    /// which the Cronofy client adds.
    pub event_id: String,
    /// Title.
    pub summary: String,
    /// Description.
    pub description: Option<String>,
    /// Start.
    pub start: EventTime,
    /// End.
    pub end: EventTime,
    /// Default zone.
    pub tzid: Option<String>,
    /// Place.
    pub location: Option<Location>,
    /// URL change.
    pub url: UrlChange,
    /// Blocks time or not.
    pub transparency: Option<Transparency>,
    /// Finer show-as.
    pub extended_transparency: Option<ExtendedTransparency>,
    /// Attendees.
    pub attendees: Option<Attendees>,
    /// Reminders in priority order.
    pub reminders: Vec<Reminder>,
    /// Reminders only on creation.
    pub reminders_create_only: bool,
    /// Private.
    pub event_private: bool,
    /// Colour.
    pub color: Option<String>,
    /// Conferencing.
    pub conferencing: Option<Conferencing>,
    /// Recurrence.
    pub recurrence: Option<Recurrence>,
    /// Webhook subscriptions.
    pub subscriptions: Vec<Subscription>,
    /// Attachments.
    pub attachments: Vec<Attachment>,
    /// Template locale.
    pub locale: Option<String>,
}

#[cfg(test)]
mod tests;
mod to_cronofy;
