//! Conversions between calgate.v1 messages and domain types. Requests are
//! parsed here, every bad field recorded with its path, before the domain runs.

mod event_fields;

use prost_types::Timestamp;
use secrecy::SecretString;
use time::OffsetDateTime;

use super::pb;
use crate::{
    cronofy::{CalendarEntry, FreeBusyEntry, availability::AvailablePeriod},
    domain::{
        AuthorizeRequest, AvailabilityGroup, AvailabilityRequest, BatchOp, EnterpriseAuthorization,
        EnterpriseUserRequest, Error, ExchangeRequest, FreeBusyQuery, MAX_BATCH_ITEMS, Violations,
        event::{Event, limits},
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
    BatchWriteEventsRequest => batch_write_events_request,
    ReadFreeBusyRequest => read_free_busy_request,
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
        Some(event) => event_fields::parse_event(event, &mut v),
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

/// Parses BatchWriteEvents into (selector, writes); item fields are named
/// `items[N].upsert.event.summary`, `items[N].delete.event_id`, ….
pub fn batch_request(request: &pb::BatchWriteEventsRequest) -> Result<(GrantSelector, Vec<BatchOp>), Error> {
    let mut v = Violations::default();
    let selector = selector(request, &mut v);
    if request.items.is_empty() || request.items.len() > MAX_BATCH_ITEMS {
        v.add("items", format!("must hold 1 to {MAX_BATCH_ITEMS} writes"));
    }
    let mut ops = Vec::with_capacity(request.items.len());
    for (index, item) in request.items.iter().take(MAX_BATCH_ITEMS).enumerate() {
        let path = format!("items[{index}]");
        match &item.operation {
            None => v.add(&path, "one of upsert or delete is required"),
            Some(pb::batch_item::Operation::Upsert(upsert)) => {
                let mut inner = Violations::default();
                let calendar_id = inner.check("calendar_id", rules::identifier(&upsert.calendar_id, limits::ID));
                let event = match &upsert.event {
                    Some(event) => event_fields::parse_event(event, &mut inner),
                    None => {
                        inner.add("event", "is required");
                        None
                    }
                };
                v.nest(&format!("{path}.upsert."), inner);
                if let (Some(calendar_id), Some(event)) = (calendar_id, event) {
                    ops.push(BatchOp::Upsert {
                        calendar_id,
                        event: Box::new(event),
                    });
                }
            }
            Some(pb::batch_item::Operation::Delete(delete)) => {
                let calendar_id = v.check(
                    format!("{path}.delete.calendar_id"),
                    rules::identifier(&delete.calendar_id, limits::ID),
                );
                let event_id = v.check(
                    format!("{path}.delete.event_id"),
                    rules::identifier(&delete.event_id, limits::ID),
                );
                if let (Some(calendar_id), Some(event_id)) = (calendar_id, event_id) {
                    ops.push(BatchOp::Delete { calendar_id, event_id });
                }
            }
        }
    }
    v.finish()?;
    let selector = selector.ok_or_else(|| unreachable!("violations recorded when the selector is missing"))?;
    Ok((selector, ops))
}

/// Parses ReadFreeBusy into (selector, query).
pub fn free_busy_request(request: &pb::ReadFreeBusyRequest) -> Result<(GrantSelector, FreeBusyQuery), Error> {
    let mut v = Violations::default();
    let selector = selector(request, &mut v);
    let from = v.check("from", rules::date(&request.from));
    let to = v.check("to", rules::date(&request.to));
    if let (Some(from), Some(to)) = (from, to)
        && to <= from
    {
        v.add("to", "must be a later date than from (to is exclusive)");
    }
    v.check("tzid", rules::tzid(&request.tzid));
    if request.calendar_ids.len() > MAX_BATCH_ITEMS {
        v.add("calendar_ids", format!("at most {MAX_BATCH_ITEMS} calendars"));
    }
    for (index, calendar_id) in request.calendar_ids.iter().enumerate() {
        v.check(
            format!("calendar_ids[{index}]"),
            rules::identifier(calendar_id, limits::ID),
        );
    }
    v.finish()?;
    let selector = selector.ok_or_else(|| unreachable!("violations recorded when the selector is missing"))?;
    Ok((
        selector,
        FreeBusyQuery {
            from: request.from.clone(),
            to: request.to.clone(),
            tzid: request.tzid.clone(),
            calendar_ids: request.calendar_ids.clone(),
        },
    ))
}

/// Parses QueryAvailability: groups, duration, periods, buffer.
pub fn availability_request(request: &pb::QueryAvailabilityRequest) -> Result<AvailabilityRequest, Error> {
    const MAX_GROUPS: usize = 10;
    const MAX_MEMBERS: usize = 10;
    const MAX_PERIODS: usize = 50;
    const MAX_MINUTES: u32 = 1440;
    let mut v = Violations::default();
    if request.participants.is_empty() || request.participants.len() > MAX_GROUPS {
        v.add("participants", format!("must hold 1 to {MAX_GROUPS} groups"));
    }
    let mut groups = Vec::new();
    for (g, group) in request.participants.iter().take(MAX_GROUPS).enumerate() {
        let path = format!("participants[{g}]");
        if group.members.is_empty() || group.members.len() > MAX_MEMBERS {
            v.add(format!("{path}.members"), format!("must hold 1 to {MAX_MEMBERS} users"));
        }
        let members: Vec<GrantSelector> = group
            .members
            .iter()
            .take(MAX_MEMBERS)
            .enumerate()
            .filter_map(|(m, member)| {
                let field = format!("{path}.members[{m}]");
                match &member.user {
                    Some(pb::grant_ref::User::Sub(sub)) => v
                        .check(format!("{field}.sub"), rules::identifier(sub, limits::ID))
                        .map(GrantSelector::Sub),
                    Some(pb::grant_ref::User::UserRef(user_ref)) => v
                        .check(format!("{field}.user_ref"), rules::identifier(user_ref, limits::ID))
                        .map(GrantSelector::UserRef),
                    None => {
                        v.add(field, "one of sub or user_ref is required");
                        None
                    }
                }
            })
            .collect();
        let required = match group.required {
            None | Some(pb::participant_group::Required::All(_)) => None,
            Some(pb::participant_group::Required::Count(count)) => {
                if count == 0 || count as usize > group.members.len() {
                    v.add(format!("{path}.count"), "must be between 1 and the number of members");
                }
                Some(count)
            }
        };
        groups.push(AvailabilityGroup { members, required });
    }
    if !(1..=MAX_MINUTES).contains(&request.required_duration_minutes) {
        v.add(
            "required_duration_minutes",
            format!("must be between 1 and {MAX_MINUTES}"),
        );
    }
    if request.query_periods.is_empty() || request.query_periods.len() > MAX_PERIODS {
        v.add("query_periods", format!("must hold 1 to {MAX_PERIODS} periods"));
    }
    let mut periods = Vec::new();
    for (p, period) in request.query_periods.iter().take(MAX_PERIODS).enumerate() {
        let field = format!("query_periods[{p}]");
        let instant = |v: &mut Violations, name: &str, at: Option<&prost_types::Timestamp>| match at {
            Some(at) => v.check(format!("{field}.{name}"), event_fields::whole_second(at)),
            None => {
                v.add(format!("{field}.{name}"), "is required");
                None
            }
        };
        let start = instant(&mut v, "start", period.start.as_ref());
        let end = instant(&mut v, "end", period.end.as_ref());
        match (start, end) {
            (Some(start), Some(end)) if end > start => periods.push((start, end)),
            (Some(_), Some(_)) => v.add(format!("{field}.end"), "must be later than start"),
            _ => {}
        }
    }
    let buffer = request.buffer.as_ref().map(|b| {
        for (name, minutes) in [("before_minutes", b.before_minutes), ("after_minutes", b.after_minutes)] {
            if minutes > MAX_MINUTES {
                v.add(format!("buffer.{name}"), format!("must be at most {MAX_MINUTES}"));
            }
        }
        (b.before_minutes, b.after_minutes)
    });
    v.finish()?;
    Ok(AvailabilityRequest {
        groups,
        duration_minutes: request.required_duration_minutes,
        periods,
        buffer,
    })
}

/// A Cronofy available period as the API shows it.
pub fn available_period(period: AvailablePeriod) -> pb::AvailablePeriod {
    let parse = |text: &str| {
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(timestamp)
    };
    pb::AvailablePeriod {
        start: parse(&period.start),
        end: parse(&period.end),
        subs: period.participants.into_iter().map(|p| p.sub).collect(),
    }
}

/// Parses AuthorizeEnterpriseUser.
pub fn enterprise_user_request(request: &pb::AuthorizeEnterpriseUserRequest) -> Result<EnterpriseUserRequest, Error> {
    let mut v = Violations::default();
    let service_account = match &request.service_account {
        Some(pb::authorize_enterprise_user_request::ServiceAccount::ServiceAccountSub(sub)) => v
            .check("service_account_sub", rules::identifier(sub, limits::ID))
            .map(GrantSelector::Sub),
        Some(pb::authorize_enterprise_user_request::ServiceAccount::ServiceAccountRef(user_ref)) => v
            .check("service_account_ref", rules::identifier(user_ref, limits::ID))
            .map(GrantSelector::UserRef),
        None => {
            v.add(
                "service_account",
                "one of service_account_sub or service_account_ref is required",
            );
            None
        }
    };
    let email = v.check("email", rules::email(&request.email));
    let user_ref = v.check("user_ref", rules::identifier(&request.user_ref, limits::ID));
    let scope = scopes(&request.scope, "scope", &mut v);
    v.finish()?;
    match (service_account, email, user_ref) {
        (Some(service_account), Some(email), Some(user_ref)) => Ok(EnterpriseUserRequest {
            service_account,
            email,
            user_ref,
            scope,
        }),
        _ => unreachable!("violations recorded for every missing part"),
    }
}

/// Parses GetEnterpriseUserAuthorization.
pub fn authorization_id(request: &pb::GetEnterpriseUserAuthorizationRequest) -> Result<String, Error> {
    let mut v = Violations::default();
    let id = v.check("authorization_id", rules::identifier(&request.authorization_id, 64));
    v.finish()?;
    Ok(id.unwrap_or_default())
}

/// A member authorization as the API shows it.
pub fn enterprise_authorization(authorization: EnterpriseAuthorization) -> pb::EnterpriseUserAuthorization {
    let record = authorization.record;
    let status = match record.status.as_str() {
        "pending" => pb::EnterpriseUserAuthorizationStatus::Pending,
        "completed" => pb::EnterpriseUserAuthorizationStatus::Completed,
        "failed" => pb::EnterpriseUserAuthorizationStatus::Failed,
        _ => pb::EnterpriseUserAuthorizationStatus::Unspecified,
    };
    let at = |seconds: i64| prost_types::Timestamp { seconds, nanos: 0 };
    pb::EnterpriseUserAuthorization {
        authorization_id: record.id,
        email: record.email,
        user_ref: record.user_ref,
        status: status as i32,
        error_key: record.error_key.unwrap_or_default(),
        grant: authorization.grant.map(grant),
        created_at: Some(at(record.created_at)),
        updated_at: Some(at(record.updated_at)),
    }
}

/// A Cronofy free/busy period as the API shows it.
pub fn free_busy_period(entry: FreeBusyEntry) -> pb::FreeBusyPeriod {
    pb::FreeBusyPeriod {
        calendar_id: entry.calendar_id,
        start: Some(period_time(&entry.start)),
        end: Some(period_time(&entry.end)),
        status: entry.free_busy_status,
    }
}

/// Cronofy's Time (`…Z`) as a timestamp; anything else (a Date) as a date.
fn period_time(text: &str) -> pb::EventTime {
    let value = match OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        Ok(at) => pb::event_time::Value::Time(timestamp(at)),
        Err(_) => pb::event_time::Value::Date(text.to_owned()),
    };
    pb::EventTime {
        value: Some(value),
        tzid: None,
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
