//! An account's profiles: the calendar profile linked at connection, more
//! calendar profiles a test adds, and conferencing profiles; each connected
//! or not, as `GET /v1/userinfo` reports them [docs:
//! /developers/api/identity/userinfo, /developers/api/conferencing-services/conferencing-profiles].

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{
    Endpoint, Shared,
    api::{arrive_authenticated, authenticate},
    channels,
    state::{Account, Calendar},
};

/// A profile beyond the one linked at connection.
#[derive(Debug, Clone)]
pub(crate) struct OtherProfile {
    pub(super) profile_id: String,
    pub(super) provider_name: String,
    pub(super) connected: bool,
    /// A calendar profile's calendars; None for a conferencing profile.
    pub(super) calendar_ids: Option<Vec<String>>,
}

/// Where the fake sends a user to relink a profile.
pub(super) fn relink_url(profile_id: &str) -> String {
    format!("https://app.cronofy.example/relink/{profile_id}")
}

fn calendar_json(calendar: &Calendar) -> Value {
    json!({
        "calendar_id": calendar.calendar_id,
        "calendar_name": calendar.name,
        "calendar_readonly": calendar.readonly,
        "calendar_primary": calendar.primary,
    })
}

fn profile_json(account: &Account, id: &str, provider: &str, connected: bool, calendars: Option<Vec<Value>>) -> Value {
    let mut profile = json!({
        "provider_name": provider,
        "profile_id": id,
        "profile_name": account.profile_name,
        "profile_connected": connected,
    });
    if let Some(calendars) = calendars {
        profile["profile_calendars"] = json!(calendars);
    }
    if !connected {
        profile["profile_relink_url"] = json!(relink_url(id));
    }
    profile
}

/// UserInfo's `cronofy.data.profiles` and `conferencing_profiles` of `account`.
fn profiles_json(account: &Account) -> (Vec<Value>, Vec<Value>) {
    let elsewhere = |calendar: &Calendar| {
        account.other_profiles.iter().any(|p| {
            p.calendar_ids
                .as_ref()
                .is_some_and(|ids| ids.contains(&calendar.calendar_id))
        })
    };
    let linked: Vec<Value> = account
        .calendars
        .iter()
        .filter(|c| !elsewhere(c))
        .map(calendar_json)
        .collect();
    let mut calendar_profiles = vec![profile_json(
        account,
        &account.profile_id,
        &account.provider_name,
        account.profile_connected,
        Some(linked),
    )];
    let mut conferencing = Vec::new();
    for other in &account.other_profiles {
        match &other.calendar_ids {
            Some(ids) => {
                let calendars = account
                    .calendars
                    .iter()
                    .filter(|c| ids.contains(&c.calendar_id))
                    .map(calendar_json)
                    .collect();
                calendar_profiles.push(profile_json(
                    account,
                    &other.profile_id,
                    &other.provider_name,
                    other.connected,
                    Some(calendars),
                ));
            }
            None => conferencing.push(profile_json(
                account,
                &other.profile_id,
                &other.provider_name,
                other.connected,
                None,
            )),
        }
    }
    (calendar_profiles, conferencing)
}

/// `GET /v1/userinfo`: the account and its profiles.
pub(super) async fn userinfo(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(response) = arrive_authenticated(&shared, Endpoint::UserInfo, "/v1/userinfo", &headers).await {
        return response;
    }
    let state = shared.lock();
    let (sub, scope) = match authenticate(&state, &headers) {
        Ok(bearer) => bearer,
        Err(response) => return response,
    };
    let Some(account) = state.accounts.get(&sub) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let (profiles, conferencing_profiles) = profiles_json(account);
    Json(json!({
        "sub": sub,
        "email": account.profile_name,
        "cronofy.type": "account",
        "cronofy.data": {
            "authorization": {"scope": scope, "status": "active"},
            "profiles": profiles,
            "conferencing_profiles": conferencing_profiles,
        },
    }))
    .into_response()
}

/// Adds a profile to the account: a calendar profile with one writable
/// calendar (returned), or a conferencing profile (`calendar` false).
pub(super) fn add_profile(
    shared: &Shared,
    sub: &str,
    provider: &str,
    calendar: bool,
) -> Option<(String, Option<String>)> {
    let mut state = shared.lock();
    let n = state.next_id();
    let account = state.accounts.get_mut(sub)?;
    let profile_id = format!("pro_{n}");
    let calendar_id = calendar.then(|| format!("cal_{n}_{provider}"));
    if let Some(calendar_id) = &calendar_id {
        account.calendars.push(Calendar {
            calendar_id: calendar_id.clone(),
            name: format!("{provider} calendar"),
            readonly: false,
            primary: false,
        });
    }
    account.other_profiles.push(OtherProfile {
        profile_id: profile_id.clone(),
        provider_name: provider.to_owned(),
        connected: true,
        calendar_ids: calendar_id.clone().map(|id| vec![id]),
    });
    Some((profile_id, calendar_id))
}

/// Connects or disconnects one of the account's added profiles and tells its
/// channels: `profile_disconnected` or `conferencing_profile_disconnected`, or
/// `change` on relinking. Returns the statuses calgate answered.
pub(super) async fn set_connected(shared: &Arc<Shared>, sub: &str, profile_id: &str, connected: bool) -> Vec<u16> {
    let since = channels::changes_since_now();
    let kind = {
        let mut state = shared.lock();
        let Some(profile) = state
            .accounts
            .get_mut(sub)
            .and_then(|account| account.other_profiles.iter_mut().find(|p| p.profile_id == profile_id))
        else {
            return Vec::new();
        };
        profile.connected = connected;
        if profile.calendar_ids.is_some() {
            "profile_disconnected"
        } else {
            "conferencing_profile_disconnected"
        }
    };
    let notification = if connected {
        json!({"type": "change", "changes_since": since})
    } else {
        json!({"type": kind})
    };
    channels::notify_account(shared.clone(), sub, notification).await
}
