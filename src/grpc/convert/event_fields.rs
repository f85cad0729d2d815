//! Parsing `calgate.v1.Event` into the domain's validated event, field by field.

use prost_types::Timestamp;
use time::OffsetDateTime;

use super::{optional, pb};
use crate::domain::{
    Violations,
    event::{self, Event, EventTime, UrlChange, limits},
    rules,
};

/// Parses an event, recording every bad field under `event.`.
pub(super) fn parse_event(e: &pb::Event, v: &mut Violations) -> Option<Event> {
    let event_id = v.check("event.event_id", rules::identifier(&e.event_id, limits::ID));
    let summary = v.check("event.summary", rules::identifier(&e.summary, limits::SUMMARY));
    let description = optional(v, "event.description", e.description.as_deref(), |s| {
        rules::bounded_text(s, limits::DESCRIPTION)
    });
    let start = event_time(e.start.as_ref(), "event.start", v);
    let end = event_time(e.end.as_ref(), "event.end", v);
    if let (Some(start), Some(end)) = (&start, &end) {
        v.check("event.end", EventTime::check_order(start, end));
    }
    let tzid = optional(v, "event.tzid", e.tzid.as_deref(), rules::tzid);
    let location = e.location.as_ref().and_then(|l| location(l, v));
    let url = match (&e.url, e.remove_url) {
        (Some(_), true) => {
            v.add("event.remove_url", "cannot be combined with event.url");
            UrlChange::Keep
        }
        (Some(url), false) => v
            .check("event.url", rules::http_url(url))
            .map(UrlChange::Set)
            .unwrap_or_default(),
        (None, true) => UrlChange::Remove,
        (None, false) => UrlChange::Keep,
    };
    let transparency = match pb::Transparency::try_from(e.transparency) {
        Ok(pb::Transparency::Unspecified) => None,
        Ok(pb::Transparency::Opaque) => Some(event::Transparency::Opaque),
        Ok(pb::Transparency::Transparent) => Some(event::Transparency::Transparent),
        Err(_) => unknown_enum(v, "event.transparency", e.transparency),
    };
    let extended_transparency = match pb::ExtendedTransparency::try_from(e.extended_transparency) {
        Ok(pb::ExtendedTransparency::Unspecified) => None,
        Ok(pb::ExtendedTransparency::Transparent) => Some(event::ExtendedTransparency::Transparent),
        Ok(pb::ExtendedTransparency::Opaque) => Some(event::ExtendedTransparency::Opaque),
        Ok(pb::ExtendedTransparency::WorkingElsewhere) => Some(event::ExtendedTransparency::WorkingElsewhere),
        Ok(pb::ExtendedTransparency::Tentative) => Some(event::ExtendedTransparency::Tentative),
        Ok(pb::ExtendedTransparency::OutOfOffice) => Some(event::ExtendedTransparency::OutOfOffice),
        Err(_) => unknown_enum(v, "event.extended_transparency", e.extended_transparency),
    };
    let attendees = e.attendees.as_ref().map(|a| event::Attendees {
        invite: attendee_list(&a.invite, "event.attendees.invite", v),
        remove: attendee_list(&a.remove, "event.attendees.remove", v),
    });
    let reminders = v
        .bounded("event.reminders", &e.reminders, limits::REMINDERS, "reminders")
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let ok = (0..=limits::REMINDER_MINUTES).contains(&r.minutes);
            v.check_with(
                || format!("event.reminders[{i}].minutes"),
                if ok {
                    Ok(event::Reminder { minutes: r.minutes })
                } else {
                    Err(format!("must be between 0 and {}", limits::REMINDER_MINUTES))
                },
            )
        })
        .collect();
    let color = optional(v, "event.color", e.color.as_deref(), rules::color);
    let conferencing = e.conferencing.as_ref().and_then(|c| conferencing(c, v));
    let recurrence = e.recurrence.as_ref().map(|r| recurrence(r, v));
    let subscriptions = subscriptions(&e.subscriptions, v);
    let attachments = v
        .bounded(
            "event.attachment_ids",
            &e.attachment_ids,
            limits::SMALL_LIST,
            "attachments",
        )
        .iter()
        .enumerate()
        .filter_map(|(i, id)| {
            v.check_with(
                || format!("event.attachment_ids[{i}]"),
                rules::identifier(id, limits::ID),
            )
        })
        .map(|attachment_id| event::Attachment { attachment_id })
        .collect();
    let locale = optional(v, "event.locale", e.locale.as_deref(), rules::language);
    Some(Event {
        event_id: event_id?,
        summary: summary?,
        description,
        start: start?,
        end: end?,
        tzid,
        location,
        url,
        transparency,
        extended_transparency,
        attendees,
        reminders,
        reminders_create_only: e.reminders_create_only,
        event_private: e.event_private,
        color,
        conferencing,
        recurrence,
        subscriptions,
        attachments,
        locale,
    })
}

fn unknown_enum<T>(v: &mut Violations, field: &str, value: i32) -> Option<T> {
    v.add(field, format!("unknown value {value}"));
    None
}

fn event_time(time: Option<&pb::EventTime>, field: &str, v: &mut Violations) -> Option<EventTime> {
    let Some(time) = time else {
        v.add(field, "is required");
        return None;
    };
    let tzid = time
        .tzid
        .as_deref()
        .and_then(|tzid| v.check_with(|| format!("{field}.tzid"), rules::tzid(tzid)));
    match &time.value {
        None => {
            v.add(field, "one of time or date is required");
            None
        }
        Some(pb::event_time::Value::Time(timestamp)) => {
            let instant = v.check_with(|| format!("{field}.time"), whole_second(timestamp))?;
            Some(match tzid {
                Some(tzid) => EventTime::Zoned { time: instant, tzid },
                None => EventTime::Time(instant),
            })
        }
        Some(pb::event_time::Value::Date(date)) => {
            if time.tzid.is_some() {
                v.add(format!("{field}.tzid"), "only applies to a time, not an all-day date");
            }
            v.check_with(|| format!("{field}.date"), rules::date(date))
                .map(EventTime::Date)
        }
    }
}

pub(super) fn whole_second(timestamp: &Timestamp) -> Result<OffsetDateTime, String> {
    if timestamp.nanos != 0 {
        return Err("must be a whole second (Cronofy rejects fractional seconds)".into());
    }
    match OffsetDateTime::from_unix_timestamp(timestamp.seconds) {
        Ok(at) if (1..=9999).contains(&at.year()) => Ok(at),
        _ => Err("must be between years 0001 and 9999".into()),
    }
}

fn location(l: &pb::Location, v: &mut Violations) -> Option<event::Location> {
    let description = v.check(
        "event.location.description",
        rules::bounded_text(&l.description, limits::SHORT_TEXT),
    );
    let lat = optional(v, "event.location.lat", l.lat.as_deref(), |s| {
        rules::coordinate(s, 90.0)
    });
    let long = optional(v, "event.location.long", l.long.as_deref(), |s| {
        rules::coordinate(s, 180.0)
    });
    Some(event::Location {
        description: description?,
        lat,
        long,
    })
}

fn attendee_list(list: &[pb::Attendee], field: &str, v: &mut Violations) -> Vec<event::Attendee> {
    v.bounded(field, list, limits::ATTENDEES, "attendees")
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let email = v.check_with(|| format!("{field}[{i}].email"), rules::email(&a.email));
            let display_name = optional(
                v,
                &format!("{field}[{i}].display_name"),
                a.display_name.as_deref(),
                |s| rules::bounded_text(s, limits::ID),
            );
            Some(event::Attendee {
                email: email?,
                display_name,
            })
        })
        .collect()
}

fn conferencing(c: &pb::Conferencing, v: &mut Violations) -> Option<event::Conferencing> {
    let profile_id = v.check(
        "event.conferencing.profile_id",
        rules::identifier(&c.profile_id, limits::ID),
    )?;
    let provider_description = optional(
        v,
        "event.conferencing.provider_description",
        c.provider_description.as_deref(),
        |s| rules::identifier(s, limits::ID),
    );
    let join_url = optional(v, "event.conferencing.join_url", c.join_url.as_deref(), rules::http_url);
    if profile_id == "explicit" {
        if c.provider_description.is_none() {
            v.add(
                "event.conferencing.provider_description",
                "is required when profile_id is \"explicit\"",
            );
        }
        if c.join_url.is_none() {
            v.add(
                "event.conferencing.join_url",
                "is required when profile_id is \"explicit\"",
            );
        }
    }
    Some(event::Conferencing {
        profile_id,
        provider_description,
        join_url,
    })
}

fn recurrence(r: &pb::Recurrence, v: &mut Violations) -> event::Recurrence {
    let rules = v
        .bounded("event.recurrence.rules", &r.rules, limits::SMALL_LIST, "rules")
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| {
            let path = format!("event.recurrence.rules[{i}]");
            let frequency = match pb::RecurrenceFrequency::try_from(rule.frequency) {
                Ok(pb::RecurrenceFrequency::Daily) => Some(event::Frequency::Daily),
                Ok(pb::RecurrenceFrequency::Weekly) => Some(event::Frequency::Weekly),
                Ok(pb::RecurrenceFrequency::Monthly) => Some(event::Frequency::Monthly),
                Ok(pb::RecurrenceFrequency::Yearly) => Some(event::Frequency::Yearly),
                Ok(pb::RecurrenceFrequency::Unspecified) => {
                    v.add(format!("{path}.frequency"), "is required");
                    None
                }
                Err(_) => unknown_enum(v, &format!("{path}.frequency"), rule.frequency),
            };
            if rule.interval > 1000 {
                v.add(format!("{path}.interval"), "must be at most 1000");
            }
            let by_day: Vec<event::Weekday> = v
                .bounded(&format!("{path}.by_day"), &rule.by_day, limits::WEEKDAYS, "days")
                .iter()
                .enumerate()
                .filter_map(|(n, day)| weekday(*day).or_else(|| unknown_enum(v, &format!("{path}.by_day[{n}]"), *day)))
                .collect();
            if !by_day.is_empty() && frequency.is_some_and(|f| f != event::Frequency::Weekly) {
                v.add(format!("{path}.by_day"), "only applies to weekly rules");
            }
            Some(event::RecurrenceRule {
                frequency: frequency?,
                interval: (rule.interval > 0).then_some(rule.interval),
                by_day,
            })
        })
        .collect();
    event::Recurrence { rules }
}

fn weekday(value: i32) -> Option<event::Weekday> {
    use event::Weekday as W;
    match pb::Weekday::try_from(value).ok()? {
        pb::Weekday::Unspecified => None,
        pb::Weekday::Monday => Some(W::Monday),
        pb::Weekday::Tuesday => Some(W::Tuesday),
        pb::Weekday::Wednesday => Some(W::Wednesday),
        pb::Weekday::Thursday => Some(W::Thursday),
        pb::Weekday::Friday => Some(W::Friday),
        pb::Weekday::Saturday => Some(W::Saturday),
        pb::Weekday::Sunday => Some(W::Sunday),
    }
}

fn subscriptions(list: &[pb::Subscription], v: &mut Violations) -> Vec<event::Subscription> {
    v.bounded("event.subscriptions", list, limits::SMALL_LIST, "subscriptions")
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let uri = v.check(format!("event.subscriptions[{i}].uri"), rules::http_url(&s.uri));
            let interaction_types = v
                .bounded(
                    &format!("event.subscriptions[{i}].interaction_types"),
                    &s.interaction_types,
                    limits::SMALL_LIST,
                    "interaction types",
                )
                .iter()
                .enumerate()
                .filter_map(|(n, t)| {
                    v.check_with(
                        || format!("event.subscriptions[{i}].interaction_types[{n}]"),
                        rules::token(t),
                    )
                })
                .collect();
            Some(event::Subscription {
                uri: uri?,
                interaction_types,
            })
        })
        .collect()
}
