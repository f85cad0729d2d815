//! Push notifications and what they make an application read: channels
//! (`POST`/`DELETE /v1/channels`), signed notifications, `GET /v1/events`
//! (the application's managed events, with `last_modified` and
//! `include_deleted`, paged) and `GET /v1/userinfo` (profiles and whether
//! Cronofy can sync them). Sources: docs /developers/api/push-notifications,
//! /create-channel, /close-channel, /developers/api/events/read-events,
//! /developers/api/identity/userinfo; cronofy-ruby `spec/lib/cronofy/client_spec.rb`
//! (channel answers: 200 `{"channel": …}`, close 202).

// Helpers return ready-made responses as errors; their size does not matter in a fake.
#![allow(clippy::result_large_err)]

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::{
    Endpoint, Shared,
    api::{arrive_authenticated, authenticate, unprocessable},
    enterprise::sign,
    state::{Channel, PageToken, SentNotification, State as FakeState, random_token},
};

/// Providers whose users chose Free/Busy access mode: Cronofy does not sync
/// their events' details, so the application cannot read their calendar. (A
/// No-Access user's calendar, provider `cronofy`, is Cronofy's own and reads as
/// any other.)
const FREE_BUSY_PROVIDERS: &[&str] = &["google_free_busy", "ms_graph_free_busy"];

fn can_write(scope: &str) -> bool {
    scope
        .split_whitespace()
        .any(|s| matches!(s, "free_busy_write" | "read_write" | "write_only" | "create_event"))
}

fn can_read_events(scope: &str) -> bool {
    scope
        .split_whitespace()
        .any(|s| matches!(s, "read_events" | "read_only" | "read_write"))
}

/// `POST /v1/channels`: `{"callback_url": URL, "filters": {…}}` → 200 `{"channel": …}`,
/// then a `verification` notification to the new channel.
pub(super) async fn create_channel(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(response) = arrive_authenticated(&shared, Endpoint::CreateChannel, "/v1/channels", &headers).await {
        return response;
    }
    let channel = {
        let mut state = shared.lock();
        let (sub, _) = match authenticate(&state, &headers) {
            Ok(bearer) => bearer,
            Err(response) => return response,
        };
        let Ok(body) = serde_json::from_slice::<Value>(&body) else {
            return invalid("body", "invalid JSON");
        };
        let known = body
            .as_object()
            .is_some_and(|o| o.keys().all(|k| k == "callback_url" || k == "filters"));
        let Some(callback_url) = body
            .get("callback_url")
            .and_then(Value::as_str)
            .filter(|u| url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https")))
        else {
            return invalid("callback_url", "required: an absolute http(s) URL");
        };
        let filters = body.get("filters").cloned().unwrap_or_else(|| json!({}));
        let filters_ok = filters.as_object().is_some_and(|f| {
            f.iter().all(|(k, v)| match k.as_str() {
                "only_managed" => v.is_boolean(),
                "calendar_ids" => v.as_array().is_some_and(|ids| ids.iter().all(Value::is_string)),
                _ => false,
            })
        });
        if !known || !filters_ok {
            return invalid("filters", "only only_managed (bool) and calendar_ids (strings)");
        }
        let client_id = bearer_client(&state, &headers).unwrap_or_default();
        let channel_id = format!("chn_{}", random_token());
        let channel = Channel {
            client_id,
            sub,
            callback_url: callback_url.to_owned(),
            filters,
        };
        state.channels.insert(channel_id.clone(), channel.clone());
        (channel_id, channel)
    };
    let (channel_id, channel) = channel;
    let answer = channel_json(&channel_id, &channel);
    tokio::spawn(deliver(shared, channel_id, channel, json!({"type": "verification"})));
    Json(json!({ "channel": answer })).into_response()
}

/// `DELETE /v1/channels/{channel_id}` → 202; another account's or an unknown channel is 404.
pub(super) async fn close_channel(
    State(shared): State<Arc<Shared>>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/v1/channels/{channel_id}");
    if let Some(response) = arrive_authenticated(&shared, Endpoint::CloseChannel, &path, &headers).await {
        return response;
    }
    let mut state = shared.lock();
    let (sub, _) = match authenticate(&state, &headers) {
        Ok(bearer) => bearer,
        Err(response) => return response,
    };
    match state.channels.get(&channel_id) {
        Some(channel) if channel.sub == sub => {
            state.channels.remove(&channel_id);
            StatusCode::ACCEPTED.into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `GET /v1/channels`: the account's open channels created by the bearer's
/// application → 200 `{"channels": [{"channel_id", "callback_url", "filters"}]}`
/// (docs /developers/api/push-notifications/list-channels; cronofy-ruby
/// `Client#list_channels` and its spec).
pub(super) async fn list_channels(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(response) = arrive_authenticated(&shared, Endpoint::ListChannels, "/v1/channels", &headers).await {
        return response;
    }
    let state = shared.lock();
    let (sub, _) = match authenticate(&state, &headers) {
        Ok(bearer) => bearer,
        Err(response) => return response,
    };
    let client_id = bearer_client(&state, &headers).unwrap_or_default();
    let mut channels: Vec<(&String, &Channel)> = state
        .channels
        .iter()
        .filter(|(_, channel)| channel.sub == sub && channel.client_id == client_id)
        .collect();
    channels.sort_by(|a, b| a.0.cmp(b.0));
    let channels: Vec<Value> = channels
        .into_iter()
        .map(|(id, channel)| channel_json(id, channel))
        .collect();
    Json(json!({ "channels": channels })).into_response()
}

/// The OAuth client the bearer token was issued to.
pub(super) fn bearer_client(state: &FakeState, headers: &HeaderMap) -> Option<String> {
    let token = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    state.bearer(token).map(|access| access.client_id.clone())
}

/// `GET /v1/events`: `tzid` required. Managed events only with `only_managed=true`
/// (any scope that writes events may read them; other events need
/// `read_events`); `include_deleted` adds deleted ones; `last_modified` keeps
/// those the user (not the application) changed at or after it (docs
/// /developers/calendars-events/event-filtering). A No-Access calendar "acts as
/// any other calendar in the Cronofy APIs" (docs access-modes/no-access); users
/// in a Free/Busy access mode have no calendar the application can read: 403
/// (an assumption, the strict choice).
pub(super) async fn read_events(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    if let Some(response) = arrive_authenticated(&shared, Endpoint::ReadEvents, "/v1/events", &headers).await {
        return response;
    }
    let mut state = shared.lock();
    let (sub, scope) = match authenticate(&state, &headers) {
        Ok(bearer) => bearer,
        Err(response) => return response,
    };
    let params: HashMap<&str, &str> = query.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    if params.get("tzid").is_none_or(|tzid| tzid.is_empty()) {
        return invalid("tzid", "required");
    }
    for flag in ["only_managed", "include_deleted", "include_managed"] {
        if params.get(flag).is_some_and(|v| !matches!(*v, "true" | "false")) {
            return invalid(flag, "must be true or false");
        }
    }
    let only_managed = params.get("only_managed") == Some(&"true");
    let free_busy_only = state
        .accounts
        .get(&sub)
        .is_some_and(|account| FREE_BUSY_PROVIDERS.contains(&account.provider_name.as_str()));
    let allowed = if only_managed {
        can_write(&scope) || can_read_events(&scope)
    } else {
        can_read_events(&scope)
    };
    if !allowed || free_busy_only {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"message": "insufficient permissions"})),
        )
            .into_response();
    }
    if let Some(since) = params.get("last_modified")
        && OffsetDateTime::parse(since, &Rfc3339).is_err()
    {
        return invalid("last_modified", "must be an ISO 8601 time");
    }
    let client_id = bearer_client(&state, &headers).unwrap_or_default();
    page_of_events(&mut state, &sub, &client_id, query.clone(), 0, &host(&headers))
}

/// `GET /v1/events/pages/{token}`: a later page of the same read, for the same account only.
pub(super) async fn read_events_page(
    State(shared): State<Arc<Shared>>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/v1/events/pages/{token}");
    if let Some(response) = arrive_authenticated(&shared, Endpoint::ReadEvents, &path, &headers).await {
        return response;
    }
    let mut state = shared.lock();
    let (sub, _) = match authenticate(&state, &headers) {
        Ok(bearer) => bearer,
        Err(response) => return response,
    };
    match state.event_pages.get(&token) {
        Some(page) if page.sub == sub => {
            let (query, page) = (page.query.clone(), page.page);
            let client_id = bearer_client(&state, &headers).unwrap_or_default();
            page_of_events(&mut state, &sub, &client_id, query, page, &host(&headers))
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A page of the events of `client_id` (the bearer's application) in the account.
fn page_of_events(
    state: &mut FakeState,
    sub: &str,
    client_id: &str,
    query: Vec<(String, String)>,
    page: usize,
    host: &str,
) -> Response {
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let include_deleted = param("include_deleted") == Some("true");
    let since = param("last_modified").and_then(|since| OffsetDateTime::parse(since, &Rfc3339).ok());
    let Some(account) = state.accounts.get(sub) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    // Whole seconds, as Cronofy shows them: an event changed within the
    // second of `last_modified` is included.
    let seconds = |at: OffsetDateTime| at.unix_timestamp();
    let events: Vec<Value> = account
        .event_log
        .iter()
        .filter(|((client, _, _), record)| {
            client == client_id
                && since.is_none_or(|since| {
                    record
                        .externally_modified
                        .is_some_and(|at| seconds(at) >= seconds(since))
                })
        })
        .filter_map(|(key, record)| {
            let (_, calendar_id, event_id) = key;
            let (body, deleted) = match &record.tombstone {
                Some(body) if include_deleted => (body, true),
                Some(_) => return None,
                None => (account.events.get(key)?, false),
            };
            Some(json!({
                "calendar_id": calendar_id,
                "event_id": event_id,
                "event_uid": format!("evt_external_{event_id}"),
                "summary": body.get("summary").cloned().unwrap_or(Value::Null),
                "description": body.get("description").cloned().unwrap_or(Value::Null),
                "start": utc(body.get("start")),
                "end": utc(body.get("end")),
                "deleted": deleted,
                "updated": record.updated.replace_nanosecond(0).unwrap_or(record.updated).format(&Rfc3339).unwrap_or_default(),
            }))
        })
        .collect();
    let size = state.event_page_size.max(1);
    let total = events.len().div_ceil(size).max(1);
    let shown: Vec<Value> = events.into_iter().skip(page * size).take(size).collect();
    let mut pages = json!({"current": page + 1, "total": total});
    if page + 1 < total {
        let token = random_token();
        state.event_pages.insert(
            token.clone(),
            PageToken {
                sub: sub.to_owned(),
                query,
                page: page + 1,
            },
        );
        pages["next_page"] = json!(format!("http://{host}/v1/events/pages/{token}"));
    }
    Json(json!({"pages": pages, "events": shown})).into_response()
}

/// An event time as Cronofy reads it back with `tzid=Etc/UTC`: dates as they
/// are, instants in UTC with `Z`.
fn utc(value: Option<&Value>) -> Value {
    let text = match value {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Object(object)) => object
            .get("time")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        _ => return Value::Null,
    };
    match OffsetDateTime::parse(&text, &Rfc3339) {
        Ok(at) => json!(
            at.to_offset(time::UtcOffset::UTC)
                .format(&Rfc3339)
                .unwrap_or(text)
                .replace("+00:00", "Z")
        ),
        Err(_) => json!(text),
    }
}

fn host(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned()
}

fn channel_json(channel_id: &str, channel: &Channel) -> Value {
    json!({
        "channel_id": channel_id,
        "callback_url": channel.callback_url,
        "filters": channel.filters,
    })
}

fn invalid(field: &str, description: &str) -> Response {
    unprocessable(json!({ field: [{"key": "errors.invalid", "description": description}] }))
}

/// Sends one notification to every channel of `sub`; returns the statuses calgate answered.
pub(super) async fn notify_account(shared: Arc<Shared>, sub: &str, notification: Value) -> Vec<u16> {
    let channels: Vec<(String, Channel)> = shared
        .lock()
        .channels
        .iter()
        .filter(|(_, channel)| channel.sub == sub)
        .map(|(id, channel)| (id.clone(), channel.clone()))
        .collect();
    let mut statuses = Vec::new();
    for (channel_id, channel) in channels {
        statuses.push(deliver(shared.clone(), channel_id, channel, notification.clone()).await);
    }
    statuses
}

/// POSTs one signed notification to a channel's callback URL, as Cronofy does.
async fn deliver(shared: Arc<Shared>, channel_id: String, channel: Channel, notification: Value) -> u16 {
    let body = json!({
        "notification": notification,
        "channel": channel_json(&channel_id, &channel),
    })
    .to_string();
    let secret = shared
        .lock()
        .clients
        .get(&channel.client_id)
        .cloned()
        .unwrap_or_default();
    let signature = sign(&secret, body.as_bytes());
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Cronofy gives up on a callback that does not answer; a fake that waited
    // for ever would hang the test or benchmark that awaits it.
    let sent = reqwest::Client::new()
        .post(&channel.callback_url)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header("Cronofy-HMAC-SHA256", &signature)
        .body(body.clone())
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await;
    let status = sent.map_or(0, |response| response.status().as_u16());
    shared.lock().notifications_sent.push(SentNotification {
        url: channel.callback_url,
        body,
        signature,
        status,
    });
    status
}

/// `changes_since` for a change made now: a moment before it, whole seconds.
pub(super) fn changes_since_now() -> String {
    let before = OffsetDateTime::now_utc() - time::Duration::seconds(1);
    before
        .replace_nanosecond(0)
        .unwrap_or(before)
        .format(&Rfc3339)
        .unwrap_or_default()
        .replace("+00:00", "Z")
}
