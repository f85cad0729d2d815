//! The REST API: calendars and events, authenticated by bearer access token.

// Helpers return ready-made responses as errors; their size does not matter in a fake.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{Endpoint, Shared, arrive, state::State as FakeState, validate};

/// The bearer token's account, or the 401 Cronofy answers.
fn authenticate(state: &FakeState, headers: &HeaderMap) -> Result<(String, String), Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token.and_then(|t| state.bearer(t)) {
        Some(access) => Ok((access.sub.clone(), access.scope.clone())),
        None => Err((StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")]).into_response()),
    }
}

fn can_write(scope: &str) -> bool {
    scope
        .split_whitespace()
        .any(|s| matches!(s, "free_busy_write" | "read_write" | "write_only" | "create_event"))
}

fn can_delete(scope: &str) -> bool {
    scope
        .split_whitespace()
        .any(|s| matches!(s, "free_busy_write" | "read_write" | "write_only" | "delete_event"))
}

fn json_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, Response> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response());
    }
    serde_json::from_slice(body)
        .map_err(|_| unprocessable(json!({"body": [{"key": "errors.invalid", "description": "invalid JSON"}]})))
}

fn unprocessable(errors: Value) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "errors": errors }))).into_response()
}

/// `GET /v1/calendars`.
pub(super) async fn list_calendars(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(response) = arrive(&shared, Endpoint::ListCalendars, "/v1/calendars").await {
        return response;
    }
    let state = shared.lock();
    let (sub, _) = match authenticate(&state, &headers) {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Some(account) = state.accounts.get(&sub) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let calendars: Vec<Value> = account
        .calendars
        .iter()
        .map(|c| {
            json!({
                "provider_name": account.provider_name,
                "profile_id": account.profile_id,
                "profile_name": account.profile_name,
                "calendar_id": c.calendar_id,
                "calendar_name": c.name,
                "calendar_readonly": c.readonly,
                "calendar_deleted": false,
                "calendar_primary": c.primary,
                "calendar_integrated_conferencing_available": false,
                "calendar_attachments_available": false,
                "permission_level": "sandbox",
            })
        })
        .collect();
    Json(json!({ "sub": sub, "calendars": calendars })).into_response()
}

/// `POST /v1/calendars/{calendar_id}/events`: upsert by (calendar_id, event_id); 202.
pub(super) async fn upsert_event(
    State(shared): State<Arc<Shared>>,
    Path(calendar_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v1/calendars/{calendar_id}/events");
    if let Some(response) = arrive(&shared, Endpoint::UpsertEvent, &path).await {
        return response;
    }
    let mut state = shared.lock();
    let (sub, scope) = match authenticate(&state, &headers) {
        Ok(found) => found,
        Err(response) => return response,
    };
    let event = match json_body(&headers, &body) {
        Ok(event) => event,
        Err(response) => return response,
    };
    let Some(account) = state.accounts.get_mut(&sub) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let Some(calendar) = account.calendars.iter().find(|c| c.calendar_id == calendar_id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !can_write(&scope) {
        return StatusCode::FORBIDDEN.into_response();
    }
    if calendar.readonly {
        return unprocessable(
            json!({"calendar_id": [{"key": "errors.calendar_readonly", "description": "calendar is read-only"}]}),
        );
    }
    if let Err(errors) = validate::upsert_body(&event) {
        return unprocessable(json!(errors));
    }
    let event_id = event["event_id"].as_str().unwrap_or_default().to_owned();
    account.events.insert((calendar_id, event_id), event);
    StatusCode::ACCEPTED.into_response()
}

/// `DELETE /v1/calendars/{calendar_id}/events` with `{"event_id": …}`; 202, also when already gone.
pub(super) async fn delete_event(
    State(shared): State<Arc<Shared>>,
    Path(calendar_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v1/calendars/{calendar_id}/events");
    if let Some(response) = arrive(&shared, Endpoint::DeleteEvent, &path).await {
        return response;
    }
    let mut state = shared.lock();
    let (sub, scope) = match authenticate(&state, &headers) {
        Ok(found) => found,
        Err(response) => return response,
    };
    let body = match json_body(&headers, &body) {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Some(event_id) = body.get("event_id").and_then(Value::as_str).filter(|id| !id.is_empty()) else {
        return unprocessable(json!({"event_id": [{"key": "errors.required", "description": "required"}]}));
    };
    let Some(account) = state.accounts.get_mut(&sub) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    if !account.calendars.iter().any(|c| c.calendar_id == calendar_id) {
        return StatusCode::NOT_FOUND.into_response();
    }
    if !can_delete(&scope) {
        return StatusCode::FORBIDDEN.into_response();
    }
    account.events.remove(&(calendar_id, event_id.to_owned()));
    StatusCode::ACCEPTED.into_response()
}
