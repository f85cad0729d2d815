//! What a user does outside calgate, simulated: deleting or moving one of the
//! application's events in their calendar app, a calendar profile that
//! Cronofy can no longer sync and its relinking. Each change reaches the
//! account's channels as Cronofy's notification would.
//!
//! Tests call these through [`super::FakeCronofy`]; `calgate sandbox` users
//! through the fake's browser-facing host (the host of every consent URL):
//!
//! - `POST /sandbox/accounts/{sub}/events/delete` `{"calendar_id", "event_id"}`
//! - `POST /sandbox/accounts/{sub}/events/edit` `{"calendar_id", "event_id", "start", "end", "summary"?}`
//! - `POST /sandbox/accounts/{sub}/profile/disconnect`, `…/profile/reconnect`
//!
//! Each answers 200 with `{"notified": [HTTP statuses calgate answered]}`,
//! 404 for an unknown account or event, 422 for a malformed body.

// Helpers return ready-made responses as errors; their size does not matter in a fake.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;

use super::{Shared, channels, state::ChangedBy};

/// The `changes_since` a change notification carries: a second before now,
/// unless a test pinned it.
fn changes_since(shared: &Shared) -> String {
    shared
        .lock()
        .pinned_changes_since
        .clone()
        .unwrap_or_else(channels::changes_since_now)
}

async fn notify_change(shared: &Arc<Shared>, sub: &str, since: String) -> Vec<u16> {
    let notification = json!({"type": "change", "changes_since": since});
    channels::notify_account(shared.clone(), sub, notification).await
}

/// The user deletes an event; None when the account has no such event.
pub(super) async fn user_deletes_event(
    shared: &Arc<Shared>,
    sub: &str,
    calendar_id: &str,
    event_id: &str,
) -> Option<Vec<u16>> {
    let since = changes_since(shared);
    let deleted = shared.lock().accounts.get_mut(sub).is_some_and(|account| {
        account
            .event_key(calendar_id, event_id)
            .is_some_and(|key| account.drop_event(&key, ChangedBy::User))
    });
    if !deleted {
        return None;
    }
    Some(notify_change(shared, sub, since).await)
}

/// A move (and perhaps a rename) of one event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventEdit {
    pub(super) calendar_id: String,
    pub(super) event_id: String,
    /// RFC 3339 or `YYYY-MM-DD`.
    pub(super) start: String,
    /// As `start`.
    pub(super) end: String,
    #[serde(default)]
    pub(super) summary: Option<String>,
}

/// The user edits an event; None when the account has no such event.
pub(super) async fn user_edits_event(shared: &Arc<Shared>, sub: &str, edit: EventEdit) -> Option<Vec<u16>> {
    let since = changes_since(shared);
    {
        let mut state = shared.lock();
        let account = state.accounts.get_mut(sub)?;
        let key = account.event_key(&edit.calendar_id, &edit.event_id)?;
        let mut event = account.events.get(&key).cloned()?;
        event["start"] = json!(edit.start);
        event["end"] = json!(edit.end);
        if let Some(summary) = edit.summary {
            event["summary"] = json!(summary);
        }
        account.put_event(key, event, ChangedBy::User);
    }
    Some(notify_change(shared, sub, since).await)
}

/// The profile is disconnected (`profile_disconnected` is sent) or relinked
/// (`change` notifications resume).
pub(super) async fn set_profile_connected(shared: &Arc<Shared>, sub: &str, connected: bool) -> Vec<u16> {
    let since = changes_since(shared);
    if let Some(account) = shared.lock().accounts.get_mut(sub) {
        account.profile_connected = connected;
    }
    if connected {
        notify_change(shared, sub, since).await
    } else {
        channels::notify_account(shared.clone(), sub, json!({"type": "profile_disconnected"})).await
    }
}

fn notified(statuses: Option<Vec<u16>>) -> Response {
    match statuses {
        Some(statuses) => Json(json!({ "notified": statuses })).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventRef {
    calendar_id: String,
    event_id: String,
}

fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|error| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": error.to_string()})),
        )
            .into_response()
    })
}

/// `POST /sandbox/accounts/{sub}/events/delete`.
pub(super) async fn delete_event(State(shared): State<Arc<Shared>>, Path(sub): Path<String>, body: Bytes) -> Response {
    match parse::<EventRef>(&body) {
        Ok(event) => notified(user_deletes_event(&shared, &sub, &event.calendar_id, &event.event_id).await),
        Err(response) => response,
    }
}

/// `POST /sandbox/accounts/{sub}/events/edit`.
pub(super) async fn edit_event(State(shared): State<Arc<Shared>>, Path(sub): Path<String>, body: Bytes) -> Response {
    match parse::<EventEdit>(&body) {
        Ok(edit) => notified(user_edits_event(&shared, &sub, edit).await),
        Err(response) => response,
    }
}

/// `POST /sandbox/accounts/{sub}/profile/disconnect`.
pub(super) async fn disconnect_profile(State(shared): State<Arc<Shared>>, Path(sub): Path<String>) -> Response {
    let known = shared.lock().accounts.contains_key(&sub);
    notified(if known {
        Some(set_profile_connected(&shared, &sub, false).await)
    } else {
        None
    })
}

/// `POST /sandbox/accounts/{sub}/profile/reconnect`.
pub(super) async fn reconnect_profile(State(shared): State<Arc<Shared>>, Path(sub): Path<String>) -> Response {
    let known = shared.lock().accounts.contains_key(&sub);
    notified(if known {
        Some(set_profile_connected(&shared, &sub, true).await)
    } else {
        None
    })
}
