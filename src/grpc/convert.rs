//! Conversions between calgate.v1 messages and domain types. Requests are
//! parsed here, every bad field recorded with its path, before the domain runs.

use prost_types::Timestamp;
use secrecy::SecretString;
use time::OffsetDateTime;

use super::pb;
use crate::{
    cronofy::CalendarEntry,
    domain::{
        AuthorizeRequest, Error, ExchangeRequest, Violations,
        event::{self, Event, EventTime, UrlChange, limits},
        grant::{ConnectMode, Grant, GrantKind, GrantSelector, GrantStatus},
        rules,
        state::MAX_STATE_LEN,
    },
};

/// Longest authorization code accepted (Cronofy's are 32 characters).
const MAX_CODE_LEN: usize = 512;
/// Most scopes in one request.
const MAX_SCOPES: usize = 20;

/// A request's `oneof user` as a selector.
pub trait UserSelector {
    /// `(is_sub, value)` of the selector, if set.
    fn user(&self) -> Option<(bool, &str)>;
}

macro_rules! user_selector {
    ($($message:ident => $module:ident),+ $(,)?) => {$(
        impl UserSelector for pb::$message {
            fn user(&self) -> Option<(bool, &str)> {
                match &self.user {
                    Some(pb::$module::User::Sub(sub)) => Some((true, sub.as_str())),
                    Some(pb::$module::User::UserRef(user_ref)) => Some((false, user_ref.as_str())),
                    None => None,
                }
            }
        }
    )+};
}

user_selector!(
    UpsertEventRequest => upsert_event_request,
    DeleteEventRequest => delete_event_request,
    ListCalendarsRequest => list_calendars_request,
    GetGrantRequest => get_grant_request,
    RevokeGrantRequest => revoke_grant_request,
);

fn selector(request: &impl UserSelector, violations: &mut Violations) -> Option<GrantSelector> {
    match request.user() {
        None => {
            violations.add("user", "one of sub or user_ref is required");
            None
        }
        Some((true, sub)) => violations
            .check("sub", rules::identifier(sub, limits::ID))
            .map(GrantSelector::Sub),
        Some((false, user_ref)) => violations
            .check("user_ref", rules::identifier(user_ref, limits::ID))
            .map(GrantSelector::UserRef),
    }
}

/// Parses a request that only names a grant.
pub fn grant_selector(request: &impl UserSelector) -> Result<GrantSelector, Error> {
    let mut violations = Violations::default();
    let selector = selector(request, &mut violations);
    violations.finish()?;
    selector.ok_or_else(|| unreachable!("violations recorded when the selector is missing"))
}

/// Parses BuildAuthorizeUrl.
pub fn authorize_request(request: pb::BuildAuthorizeUrlRequest) -> Result<AuthorizeRequest, Error> {
    let mut v = Violations::default();
    let redirect_uri = v.check("redirect_uri", rules::identifier(&request.redirect_uri, 2048));
    let scope = scopes(&request.scope, "scope", &mut v);
    let delegated_scope = scopes(&request.delegated_scope, "delegated_scope", &mut v);
    let connect_mode = match pb::ConnectMode::try_from(request.connect_mode) {
        Ok(pb::ConnectMode::Unspecified | pb::ConnectMode::Individual) => Some(ConnectMode::Individual),
        Ok(pb::ConnectMode::Enterprise) => Some(ConnectMode::Enterprise),
        Err(_) => {
            v.add("connect_mode", format!("unknown value {}", request.connect_mode));
            None
        }
    };
    let user_ref = optional(&mut v, "user_ref", request.user_ref.as_deref(), |s| {
        rules::identifier(s, limits::ID)
    });
    let provider_name = optional(&mut v, "provider_name", request.provider_name.as_deref(), rules::token);
    let link_token = optional(&mut v, "link_token", request.link_token.as_deref(), |s| {
        rules::identifier(s, 512)
    });
    let locale = optional(&mut v, "locale", request.locale.as_deref(), rules::locale);
    v.finish()?;
    Ok(AuthorizeRequest {
        redirect_uri: redirect_uri.unwrap_or_default(),
        scope,
        connect_mode: connect_mode.unwrap_or(ConnectMode::Individual),
        delegated_scope,
        user_ref,
        provider_name,
        avoid_linking: request.avoid_linking,
        link_token,
        locale,
    })
}

fn scopes(values: &[String], field: &str, v: &mut Violations) -> Vec<String> {
    if values.len() > MAX_SCOPES {
        v.add(field, format!("at most {MAX_SCOPES} scopes"));
        return vec![];
    }
    values
        .iter()
        .enumerate()
        .filter_map(|(i, s)| v.check(format!("{field}[{i}]"), rules::scope(s)))
        .collect()
}

fn optional<T>(
    v: &mut Violations,
    field: &str,
    value: Option<&str>,
    rule: impl Fn(&str) -> Result<T, String>,
) -> Option<T> {
    value.and_then(|value| v.check(field, rule(value)))
}

/// Parses ExchangeCode.
pub fn exchange_request(request: pb::ExchangeCodeRequest) -> Result<ExchangeRequest, Error> {
    let mut v = Violations::default();
    // The code is a secret: its rules never echo it.
    v.check("code", rules::identifier(&request.code, MAX_CODE_LEN));
    v.check("redirect_uri", rules::identifier(&request.redirect_uri, 2048));
    v.check("state", rules::identifier(&request.state, MAX_STATE_LEN));
    v.finish()?;
    Ok(ExchangeRequest {
        code: SecretString::from(request.code),
        redirect_uri: request.redirect_uri,
        state: request.state,
    })
}

/// Parses UpsertEvent into (selector, calendar_id, event).
pub fn upsert_request(request: &pb::UpsertEventRequest) -> Result<(GrantSelector, String, Event), Error> {
    let mut v = Violations::default();
    let selector = selector(request, &mut v);
    let calendar_id = v.check("calendar_id", rules::identifier(&request.calendar_id, limits::ID));
    let event = match &request.event {
        Some(event) => parse_event(event, &mut v),
        None => {
            v.add("event", "is required");
            None
        }
    };
    v.finish()?;
    match (selector, calendar_id, event) {
        (Some(selector), Some(calendar_id), Some(event)) => Ok((selector, calendar_id, event)),
        _ => unreachable!("violations recorded for every missing part"),
    }
}

/// Parses DeleteEvent into (selector, calendar_id, event_id).
pub fn delete_request(request: &pb::DeleteEventRequest) -> Result<(GrantSelector, String, String), Error> {
    let mut v = Violations::default();
    let selector = selector(request, &mut v);
    let calendar_id = v.check("calendar_id", rules::identifier(&request.calendar_id, limits::ID));
    let event_id = v.check("event_id", rules::identifier(&request.event_id, limits::ID));
    v.finish()?;
    match (selector, calendar_id, event_id) {
        (Some(selector), Some(calendar_id), Some(event_id)) => Ok((selector, calendar_id, event_id)),
        _ => unreachable!("violations recorded for every missing part"),
    }
}

fn parse_event(e: &pb::Event, v: &mut Violations) -> Option<Event> {
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
    if e.reminders.len() > limits::REMINDERS {
        v.add("event.reminders", format!("at most {} reminders", limits::REMINDERS));
    }
    let reminders = e
        .reminders
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let ok = (0..=limits::REMINDER_MINUTES).contains(&r.minutes);
            v.check(
                format!("event.reminders[{i}].minutes"),
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
    if e.attachment_ids.len() > limits::SMALL_LIST {
        v.add(
            "event.attachment_ids",
            format!("at most {} attachments", limits::SMALL_LIST),
        );
    }
    let attachments = e
        .attachment_ids
        .iter()
        .enumerate()
        .filter_map(|(i, id)| v.check(format!("event.attachment_ids[{i}]"), rules::identifier(id, limits::ID)))
        .map(|attachment_id| event::Attachment { attachment_id })
        .collect();
    let locale = optional(v, "event.locale", e.locale.as_deref(), rules::locale);
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
    let tzid = optional(v, &format!("{field}.tzid"), time.tzid.as_deref(), rules::tzid);
    match &time.value {
        None => {
            v.add(field, "one of time or date is required");
            None
        }
        Some(pb::event_time::Value::Time(timestamp)) => {
            let instant = v.check(format!("{field}.time"), whole_second(timestamp))?;
            Some(match tzid {
                Some(tzid) => EventTime::Zoned { time: instant, tzid },
                None => EventTime::Time(instant),
            })
        }
        Some(pb::event_time::Value::Date(date)) => {
            if time.tzid.is_some() {
                v.add(format!("{field}.tzid"), "only applies to a time, not an all-day date");
            }
            v.check(format!("{field}.date"), rules::date(date)).map(EventTime::Date)
        }
    }
}

fn whole_second(timestamp: &Timestamp) -> Result<OffsetDateTime, String> {
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
    if list.len() > limits::ATTENDEES {
        v.add(field, format!("at most {} attendees", limits::ATTENDEES));
        return vec![];
    }
    list.iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let email = v.check(format!("{field}[{i}].email"), rules::email(&a.email));
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
    if r.rules.len() > limits::SMALL_LIST {
        v.add(
            "event.recurrence.rules",
            format!("at most {} rules", limits::SMALL_LIST),
        );
    }
    let rules = r
        .rules
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
            let by_day: Vec<event::Weekday> = rule
                .by_day
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
    if list.len() > limits::SMALL_LIST {
        v.add(
            "event.subscriptions",
            format!("at most {} subscriptions", limits::SMALL_LIST),
        );
        return vec![];
    }
    list.iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let uri = v.check(format!("event.subscriptions[{i}].uri"), rules::http_url(&s.uri));
            let interaction_types = s
                .interaction_types
                .iter()
                .enumerate()
                .filter_map(|(n, t)| {
                    v.check(
                        format!("event.subscriptions[{i}].interaction_types[{n}]"),
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

/// A domain grant as the API shows it.
pub fn grant(grant: Grant) -> pb::Grant {
    pb::Grant {
        sub: grant.sub,
        account_id: grant.account_id,
        user_ref: grant.user_ref.unwrap_or_default(),
        scope: grant.scope,
        connect_mode: match grant.connect_mode {
            ConnectMode::Individual => pb::ConnectMode::Individual,
            ConnectMode::Enterprise => pb::ConnectMode::Enterprise,
        } as i32,
        status: match grant.status {
            GrantStatus::Active => pb::GrantStatus::Active,
            GrantStatus::NeedsReauth => pb::GrantStatus::NeedsReauth,
            GrantStatus::Revoked => pb::GrantStatus::Revoked,
        } as i32,
        provider_name: grant.provider_name,
        profile_name: grant.profile_name,
        free_busy_mode: grant.free_busy_mode,
        created_at: Some(timestamp(grant.created_at)),
        updated_at: Some(timestamp(grant.updated_at)),
        kind: match grant.kind {
            GrantKind::User => pb::GrantKind::User,
            GrantKind::ServiceAccount => pb::GrantKind::ServiceAccount,
        } as i32,
    }
}

/// A Cronofy calendar as the API shows it.
pub fn calendar(entry: CalendarEntry) -> pb::Calendar {
    pb::Calendar {
        calendar_id: entry.calendar_id,
        calendar_name: entry.calendar_name,
        profile_id: entry.profile_id,
        profile_name: entry.profile_name,
        provider_name: entry.provider_name,
        readonly: entry.calendar_readonly,
        primary: entry.calendar_primary,
        deleted: entry.calendar_deleted,
        permission_level: entry.permission_level.unwrap_or_default(),
    }
}

/// A time as a protobuf Timestamp.
pub fn timestamp(at: OffsetDateTime) -> Timestamp {
    Timestamp {
        seconds: at.unix_timestamp(),
        nanos: 0,
    }
}
