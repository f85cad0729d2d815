//! Conversions between calgate.v1 messages and domain types. Requests are
//! parsed here, every bad field recorded with its path, before the domain runs.

mod changes;
mod enterprise;
mod event_fields;
pub(crate) mod reads;
mod writes;

pub use changes::{change, watch_request};
pub use enterprise::{authorization_id, enterprise_authorization, enterprise_user_request};
pub use reads::{availability_request, available_period, batch_request, free_busy_period, free_busy_request};
pub use writes::{queued, write, write_settled, write_state};

use prost_types::Timestamp;
use secrecy::SecretString;
use time::OffsetDateTime;

use super::pb;
use crate::domain::{
    AuthorizeRequest, Error, EventsDeletion, ExchangeRequest, Violations,
    event::{Event, limits},
    grant::{AccessMode, ChangeTracking, ConnectMode, Grant, GrantKind, GrantSelector, GrantStatus},
    profile::{Profile, ProfileKind},
    reads::Calendar,
    rules,
    state::MAX_STATE_LEN,
};

/// Longest authorization code accepted (Cronofy's are 32 characters).
const MAX_CODE_LEN: usize = 512;
/// Most scopes in one request.
const MAX_SCOPES: usize = 20;

/// A request's `oneof user`, not yet checked.
#[derive(Debug, Clone, Copy)]
pub enum UserField<'a> {
    /// `sub`: Cronofy's account id.
    Sub(&'a str),
    /// `user_ref`: the caller's own id.
    UserRef(&'a str),
}

/// A request with a `oneof user`.
pub trait UserSelector {
    /// The selector, if set.
    fn user(&self) -> Option<UserField<'_>>;
}

macro_rules! user_selector {
    ($($message:ident => $module:ident),+ $(,)?) => {$(
        impl UserSelector for pb::$message {
            fn user(&self) -> Option<UserField<'_>> {
                match &self.user {
                    Some(pb::$module::User::Sub(sub)) => Some(UserField::Sub(sub)),
                    Some(pb::$module::User::UserRef(user_ref)) => Some(UserField::UserRef(user_ref)),
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
    DeleteAllEventsRequest => delete_all_events_request,
    ListCalendarsRequest => list_calendars_request,
    GetGrantRequest => get_grant_request,
    RevokeGrantRequest => revoke_grant_request,
    ForgetUserRequest => forget_user_request,
);

fn selector(request: &impl UserSelector, violations: &mut Violations) -> Option<GrantSelector> {
    match request.user() {
        None => {
            violations.add("user", "one of sub or user_ref is required");
            None
        }
        Some(UserField::Sub(sub)) => violations
            .check("sub", rules::identifier(sub, limits::ID))
            .map(GrantSelector::Sub),
        Some(UserField::UserRef(user_ref)) => violations
            .check("user_ref", rules::identifier(user_ref, limits::ID))
            .map(GrantSelector::UserRef),
    }
}

/// Parses a request that only names a grant.
pub fn grant_selector(request: &impl UserSelector) -> Result<GrantSelector, Error> {
    let mut violations = Violations::default();
    let selector = selector(request, &mut violations);
    violations.finish_with(selector)
}

/// A grant's access mode as the API shows it.
pub fn access_mode(mode: AccessMode) -> pb::AccessMode {
    match mode {
        AccessMode::ReadWrite => pb::AccessMode::ReadWrite,
        AccessMode::FreeBusy => pb::AccessMode::FreeBusy,
        AccessMode::NoAccess => pb::AccessMode::NoAccess,
    }
}

/// What became of a forgotten user's events, as ForgetUser answers it.
pub fn events_deletion(events: EventsDeletion) -> pb::EventsDeletion {
    match events {
        EventsDeletion::NotAsked => pb::EventsDeletion::Unspecified,
        EventsDeletion::Confirmed => pb::EventsDeletion::Confirmed,
        EventsDeletion::Pending => pb::EventsDeletion::Pending,
    }
}

/// How a write with a grant of this mode reaches the user.
pub fn delivery(mode: AccessMode) -> pb::Delivery {
    if mode.writes_as_invites() {
        pb::Delivery::EmailInvite
    } else {
        pb::Delivery::CalendarWrite
    }
}

/// Parses RevokeGrant: the grant, and the one calendar profile to revoke, if named.
pub fn revoke_request(request: &pb::RevokeGrantRequest) -> Result<(GrantSelector, Option<String>), Error> {
    let mut v = Violations::default();
    let selector = selector(request, &mut v);
    let profile_id = optional(&mut v, "profile_id", request.profile_id.as_deref(), |s| {
        rules::identifier(s, limits::ID)
    });
    let selector = v.finish_with(selector)?;
    Ok((selector, profile_id))
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
        avoid_linking: avoid_linking(&request),
        link_token,
        locale,
    })
}

/// The caller's explicit choice, if any: `allow_linking`, else the deprecated
/// `avoid_linking` when true (its false cannot be told from unset).
fn avoid_linking(request: &pb::BuildAuthorizeUrlRequest) -> Option<bool> {
    #[allow(deprecated)]
    let legacy = request.avoid_linking.then_some(true);
    request.allow_linking.map(|allow| !allow).or(legacy)
}

fn scopes(values: &[String], field: &str, v: &mut Violations) -> Vec<String> {
    v.bounded(field, values, MAX_SCOPES, "scopes")
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
    let expected_user_ref = optional(&mut v, "expected_user_ref", request.expected_user_ref.as_deref(), |s| {
        rules::identifier(s, limits::ID)
    });
    v.finish()?;
    Ok(ExchangeRequest {
        code: SecretString::from(request.code),
        redirect_uri: request.redirect_uri,
        state: request.state,
        expected_user_ref,
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
    let parts = match (selector, calendar_id, event) {
        (Some(selector), Some(calendar_id), Some(event)) => Some((selector, calendar_id, event)),
        _ => None,
    };
    v.finish_with(parts)
}

/// Parses DeleteEvent into (selector, calendar_id, event_id).
pub fn delete_request(request: &pb::DeleteEventRequest) -> Result<(GrantSelector, String, String), Error> {
    let mut v = Violations::default();
    let selector = selector(request, &mut v);
    let calendar_id = v.check("calendar_id", rules::identifier(&request.calendar_id, limits::ID));
    let event_id = v.check("event_id", rules::identifier(&request.event_id, limits::ID));
    let parts = match (selector, calendar_id, event_id) {
        (Some(selector), Some(calendar_id), Some(event_id)) => Some((selector, calendar_id, event_id)),
        _ => None,
    };
    v.finish_with(parts)
}

/// Parses DeleteAllEvents: the user and the calendars (empty: all of them).
pub fn delete_all_request(request: &pb::DeleteAllEventsRequest) -> Result<(GrantSelector, Vec<String>), Error> {
    let mut v = Violations::default();
    let selector = selector(request, &mut v);
    let calendar_ids = v
        .bounded(
            "calendar_ids",
            &request.calendar_ids,
            crate::domain::MAX_BATCH_ITEMS,
            "calendars",
        )
        .iter()
        .enumerate()
        .filter_map(|(i, id)| v.check_with(|| format!("calendar_ids[{i}]"), rules::identifier(id, limits::ID)))
        .collect();
    let selector = v.finish_with(selector)?;
    Ok((selector, calendar_ids))
}

/// A domain grant as the API shows it.
pub fn grant(grant: Grant) -> pb::Grant {
    let mode = access_mode(grant.access_mode());
    pb::Grant {
        sub: grant.sub,
        account_id: grant.account_id,
        user_ref: grant.user_ref.unwrap_or_default(),
        scope: grant.scope,
        connect_mode: match grant.connect_mode {
            ConnectMode::Individual => pb::ConnectMode::Individual,
            ConnectMode::Enterprise => pb::ConnectMode::Enterprise,
        } as i32,
        status: grant_status(grant.status) as i32,
        provider_name: grant.provider_name,
        profile_name: grant.profile_name,
        // Kept for callers built before access_mode.
        #[allow(deprecated)]
        free_busy_mode: grant.free_busy_mode,
        access_mode: mode as i32,
        change_tracking: match &grant.change_tracking {
            ChangeTracking::Off => pb::ChangeTracking::Off,
            ChangeTracking::Pending { .. } => pb::ChangeTracking::Pending,
            ChangeTracking::ProfileOnly => pb::ChangeTracking::ProfileOnly,
            ChangeTracking::Events => pb::ChangeTracking::Events,
        } as i32,
        change_tracking_error: match &grant.change_tracking {
            ChangeTracking::Pending { error } => error.clone().unwrap_or_default(),
            _ => String::new(),
        },
        relink_url: grant.relink_url.clone().unwrap_or_default(),
        created_at: Some(timestamp(grant.created_at)),
        updated_at: Some(timestamp(grant.updated_at)),
        kind: match grant.kind {
            GrantKind::User => pb::GrantKind::User,
            GrantKind::ServiceAccount => pb::GrantKind::ServiceAccount,
        } as i32,
        status_reason: grant
            .status_reason
            .map(|reason| reason.as_str().to_owned())
            .unwrap_or_default(),
        profiles: profiles(grant.profiles.0),
    }
}

/// An account's profiles as the API shows them.
pub fn profiles(profiles: Vec<Profile>) -> Vec<pb::Profile> {
    profiles
        .into_iter()
        .map(|profile| pb::Profile {
            profile_id: profile.profile_id,
            kind: match profile.kind {
                ProfileKind::Calendar => pb::ProfileKind::Calendar,
                ProfileKind::Conferencing => pb::ProfileKind::Conferencing,
            } as i32,
            provider_name: profile.provider_name,
            profile_name: profile.profile_name,
            connected: profile.connected,
            relink_url: profile.relink_url.unwrap_or_default(),
            calendar_ids: profile.calendar_ids,
        })
        .collect()
}

/// A Cronofy calendar as the API shows it.
pub fn calendar(calendar: Calendar) -> pb::Calendar {
    pb::Calendar {
        calendar_id: calendar.calendar_id,
        calendar_name: calendar.name,
        profile_id: calendar.profile_id,
        profile_name: calendar.profile_name,
        provider_name: calendar.provider_name,
        readonly: calendar.readonly,
        primary: calendar.primary,
        deleted: calendar.deleted,
        permission_level: calendar.permission_level,
        integrated_conferencing_available: calendar.integrated_conferencing_available,
        attachments_available: calendar.attachments_available,
    }
}

/// A time as a protobuf Timestamp.
/// A grant status as calgate.v1 shows it.
fn grant_status(status: GrantStatus) -> pb::GrantStatus {
    match status {
        GrantStatus::Active => pb::GrantStatus::Active,
        GrantStatus::NeedsReauth => pb::GrantStatus::NeedsReauth,
        GrantStatus::Revoked => pb::GrantStatus::Revoked,
        GrantStatus::ProfileDisconnected => pb::GrantStatus::ProfileDisconnected,
    }
}

/// A whole-second timestamp (grants' times are stored in seconds).
pub fn timestamp(at: OffsetDateTime) -> Timestamp {
    Timestamp {
        seconds: at.unix_timestamp(),
        nanos: 0,
    }
}
