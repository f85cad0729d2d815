//! The domain's event as Cronofy's write body ([`crate::cronofy::event_body`]).

use time::{OffsetDateTime, format_description::well_known::Rfc3339, macros::format_description};

use super::{
    Attendee, Event, EventTime, ExtendedTransparency, Frequency, RecurrenceRule, Transparency, UrlChange, Weekday,
};
use crate::cronofy::event_body as wire;

impl Event {
    /// The event as Cronofy's write body.
    pub fn to_cronofy(&self) -> wire::EventBody<'_> {
        wire::EventBody {
            summary: &self.summary,
            description: self.description.as_deref(),
            start: self.start.to_cronofy(),
            end: self.end.to_cronofy(),
            tzid: self.tzid.as_deref(),
            location: self.location.as_ref().map(|location| wire::Location {
                description: &location.description,
                lat: location.lat.as_deref(),
                long: location.long.as_deref(),
            }),
            url: match &self.url {
                UrlChange::Keep => wire::Url::Keep,
                UrlChange::Set(url) => wire::Url::Set(url),
                UrlChange::Remove => wire::Url::Remove,
            },
            transparency: self.transparency.map(|transparency| match transparency {
                Transparency::Opaque => wire::Transparency::Opaque,
                Transparency::Transparent => wire::Transparency::Transparent,
            }),
            extended_transparency: self.extended_transparency.map(|shown| match shown {
                ExtendedTransparency::Transparent => wire::ExtendedTransparency::Transparent,
                ExtendedTransparency::Opaque => wire::ExtendedTransparency::Opaque,
                ExtendedTransparency::WorkingElsewhere => wire::ExtendedTransparency::WorkingElsewhere,
                ExtendedTransparency::Tentative => wire::ExtendedTransparency::Tentative,
                ExtendedTransparency::OutOfOffice => wire::ExtendedTransparency::OutOfOffice,
            }),
            attendees: self.attendees.as_ref().map(|attendees| wire::Attendees {
                invite: attendees.invite.iter().map(Attendee::to_cronofy).collect(),
                remove: attendees.remove.iter().map(Attendee::to_cronofy).collect(),
            }),
            reminders: self
                .reminders
                .iter()
                .map(|reminder| wire::Reminder {
                    minutes: reminder.minutes,
                })
                .collect(),
            reminders_create_only: self.reminders_create_only,
            event_private: self.event_private,
            color: self.color.as_deref(),
            conferencing: self.conferencing.as_ref().map(|conferencing| wire::Conferencing {
                profile_id: &conferencing.profile_id,
                provider_description: conferencing.provider_description.as_deref(),
                join_url: conferencing.join_url.as_deref(),
            }),
            recurrence: self.recurrence.as_ref().map(|recurrence| wire::Recurrence {
                rules: recurrence.rules.iter().map(RecurrenceRule::to_cronofy).collect(),
            }),
            subscriptions: self
                .subscriptions
                .iter()
                .map(|subscription| wire::Subscription {
                    uri: &subscription.uri,
                    interaction_types: subscription.interaction_types.iter().map(String::as_str).collect(),
                })
                .collect(),
            attachments: self
                .attachments
                .iter()
                .map(|attachment| wire::Attachment {
                    attachment_id: &attachment.attachment_id,
                })
                .collect(),
            locale: self.locale.as_deref(),
        }
    }
}

impl EventTime {
    fn to_cronofy(&self) -> wire::Time<'_> {
        match self {
            EventTime::Time(time) => wire::Time::Text(utc_text(time)),
            EventTime::Zoned { time, tzid } => wire::Time::Zoned {
                time: utc_text(time),
                tzid,
            },
            EventTime::Date(date) => wire::Time::Text(
                date.format(format_description!("[year]-[month]-[day]"))
                    .expect("validated years are four digits"),
            ),
        }
    }
}

impl Attendee {
    fn to_cronofy(&self) -> wire::Attendee<'_> {
        wire::Attendee {
            email: &self.email,
            display_name: self.display_name.as_deref(),
        }
    }
}

impl RecurrenceRule {
    fn to_cronofy(&self) -> wire::RecurrenceRule {
        wire::RecurrenceRule {
            frequency: match self.frequency {
                Frequency::Daily => wire::Frequency::Daily,
                Frequency::Weekly => wire::Frequency::Weekly,
                Frequency::Monthly => wire::Frequency::Monthly,
                Frequency::Yearly => wire::Frequency::Yearly,
            },
            interval: self.interval,
            by_day: self
                .by_day
                .iter()
                .map(|day| match day {
                    Weekday::Monday => wire::Weekday::Monday,
                    Weekday::Tuesday => wire::Weekday::Tuesday,
                    Weekday::Wednesday => wire::Weekday::Wednesday,
                    Weekday::Thursday => wire::Weekday::Thursday,
                    Weekday::Friday => wire::Weekday::Friday,
                    Weekday::Saturday => wire::Weekday::Saturday,
                    Weekday::Sunday => wire::Weekday::Sunday,
                })
                .collect(),
        }
    }
}

fn utc_text(time: &OffsetDateTime) -> String {
    // Cronofy rejects fractional seconds; validation guarantees whole seconds.
    time.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .expect("validated years are four digits")
}
