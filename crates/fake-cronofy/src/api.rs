//! The REST API: calendars and events, authenticated by bearer access token.

// Helpers return ready-made responses as errors; their size does not matter in a fake.
#![allow(clippy::result_large_err)]

use std::sync::{Arc, MutexGuard};

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{
    Endpoint, Shared, arrive,
    state::{ChangedBy, State as FakeState},
    validate,
};

/// Records the request and applies a pending fault — only to a request with
/// a valid bearer token: Cronofy authenticates before anything else can go
/// wrong, so a request it would refuse with 401 meets no injected fault (the
/// handler answers the 401).
pub(super) async fn arrive_authenticated(
    shared: &Shared,
    endpoint: Endpoint,
    path: &str,
    headers: &HeaderMap,
) -> Option<Response> {
    let authenticated = authenticate(&shared.lock(), headers).is_ok();
    if !authenticated {
        shared.lock().record(endpoint, path);
        return None;
    }
    arrive(shared, endpoint, path).await
}

/// The bearer token's account, or the 401 Cronofy answers.
pub(super) fn authenticate(state: &FakeState, headers: &HeaderMap) -> Result<(String, String), Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token.and_then(|t| state.bearer(t)) {
        Some(access) => Ok((access.sub.clone(), access.scope.clone())),
        None => Err((StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")]).into_response()),
    }
}

/// An authenticated API request: the account, the token's scope and the
/// application it was issued to.
struct Bearer {
    sub: String,
    scope: String,
    client_id: String,
}

/// An API request as Cronofy meets it: recorded, met by a pending fault
/// (authenticated requests only), then authenticated. The locked state and
/// the bearer, or the response to give instead.
async fn admit<'a>(
    shared: &'a Shared,
    endpoint: Endpoint,
    path: &str,
    headers: &HeaderMap,
) -> Result<(MutexGuard<'a, FakeState>, Bearer), Response> {
    if let Some(response) = arrive_authenticated(shared, endpoint, path, headers).await {
        return Err(response);
    }
    let state = shared.lock();
    let (sub, scope) = authenticate(&state, headers)?;
    let client_id = super::channels::bearer_client(&state, headers).unwrap_or_default();
    Ok((state, Bearer { sub, scope, client_id }))
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

pub(super) fn unprocessable(errors: Value) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "errors": errors }))).into_response()
}

/// `GET /v1/calendars`.
pub(super) async fn list_calendars(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let (state, Bearer { sub, .. }) = match admit(&shared, Endpoint::ListCalendars, "/v1/calendars", &headers).await {
        Ok(admitted) => admitted,
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
                // The writable primary calendar offers both; the read-only one neither.
                "calendar_integrated_conferencing_available": !c.readonly,
                "calendar_attachments_available": !c.readonly,
                "permission_level": "sandbox",
            })
        })
        .collect();
    Json(json!({ "sub": sub, "calendars": calendars })).into_response()
}

/// What the API answers: a status and, for 422s, the `errors` body.
type Answer = (StatusCode, Option<Value>);

fn answer(answer: Answer) -> Response {
    match answer {
        (status, Some(errors)) => (status, Json(json!({ "errors": errors }))).into_response(),
        (status, None) => status.into_response(),
    }
}

fn rejected(errors: Value) -> Answer {
    (StatusCode::UNPROCESSABLE_ENTITY, Some(errors))
}

/// Upserts by (application, calendar_id, event_id) for an authenticated account; 202.
fn upsert(state: &mut FakeState, bearer: &Bearer, calendar_id: &str, event: Value) -> Answer {
    let (sub, scope) = (bearer.sub.as_str(), bearer.scope.as_str());
    let Some(account) = state.accounts.get_mut(sub) else {
        return (StatusCode::UNAUTHORIZED, None);
    };
    let Some(calendar) = account.calendars.iter().find(|c| c.calendar_id == calendar_id) else {
        return (StatusCode::NOT_FOUND, None);
    };
    if !can_write(scope) {
        return (StatusCode::FORBIDDEN, None);
    }
    if calendar.readonly {
        return rejected(
            json!({"calendar_id": [{"key": "errors.calendar_readonly", "description": "calendar is read-only"}]}),
        );
    }
    if let Err(errors) = validate::upsert_body(&event) {
        return rejected(json!(errors));
    }
    let event_id = event["event_id"].as_str().unwrap_or_default().to_owned();
    account.put_event(
        (bearer.client_id.clone(), calendar_id.to_owned(), event_id),
        event,
        ChangedBy::Application,
    );
    (StatusCode::ACCEPTED, None)
}

/// Deletes by (application, calendar_id, event_id); 202, also when already gone.
fn delete(state: &mut FakeState, bearer: &Bearer, calendar_id: &str, body: &Value) -> Answer {
    let (sub, scope) = (bearer.sub.as_str(), bearer.scope.as_str());
    let Some(event_id) = body.get("event_id").and_then(Value::as_str).filter(|id| !id.is_empty()) else {
        return rejected(json!({"event_id": [{"key": "errors.required", "description": "required"}]}));
    };
    let Some(account) = state.accounts.get_mut(sub) else {
        return (StatusCode::UNAUTHORIZED, None);
    };
    if !account.calendars.iter().any(|c| c.calendar_id == calendar_id) {
        return (StatusCode::NOT_FOUND, None);
    }
    if !can_delete(scope) {
        return (StatusCode::FORBIDDEN, None);
    }
    account.drop_event(
        &(bearer.client_id.clone(), calendar_id.to_owned(), event_id.to_owned()),
        ChangedBy::Application,
    );
    (StatusCode::ACCEPTED, None)
}

/// `POST /v1/calendars/{calendar_id}/events`: upsert by (calendar_id, event_id); 202.
pub(super) async fn upsert_event(
    State(shared): State<Arc<Shared>>,
    Path(calendar_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v1/calendars/{calendar_id}/events");
    let (mut state, bearer) = match admit(&shared, Endpoint::UpsertEvent, &path, &headers).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    match json_body(&headers, &body) {
        Ok(event) => answer(upsert(&mut state, &bearer, &calendar_id, event)),
        Err(response) => response,
    }
}

/// `DELETE /v1/calendars/{calendar_id}/events` with `{"event_id": …}`; 202, also when already gone.
pub(super) async fn delete_event(
    State(shared): State<Arc<Shared>>,
    Path(calendar_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v1/calendars/{calendar_id}/events");
    let (mut state, bearer) = match admit(&shared, Endpoint::DeleteEvent, &path, &headers).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    match json_body(&headers, &body) {
        Ok(body) => answer(delete(&mut state, &bearer, &calendar_id, &body)),
        Err(response) => response,
    }
}

/// `DELETE /v1/events` with exactly one of `{"delete_all": true}` or
/// `{"calendar_ids": [...]}` (at least one): accepts (202) the deletion of
/// the application's own events of the account, there — every tenant's of an
/// application, none of another application's — and applies it a little
/// later, unless the authorization is revoked first (deletes.rs). Both keys, neither, or an unknown
/// calendar: 422 (the first two documented; the last an assumption).
pub(super) async fn bulk_delete(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (mut state, Bearer { sub, scope, client_id }) =
        match admit(&shared, Endpoint::BulkDeleteEvents, "/v1/events", &headers).await {
            Ok(admitted) => admitted,
            Err(response) => return response,
        };
    let body = match json_body(&headers, &body) {
        Ok(body) => body,
        Err(response) => return response,
    };
    if !can_delete(&scope) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let Some(account) = state.accounts.get_mut(&sub) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let invalid = |field: &str, description: &str| {
        unprocessable(json!({ field: [{"key": "errors.invalid", "description": description}] }))
    };
    let known = body
        .as_object()
        .is_some_and(|o| o.keys().all(|k| k == "delete_all" || k == "calendar_ids"));
    let targets: Option<Vec<String>> = match (body.get("delete_all"), body.get("calendar_ids")) {
        (Some(Value::Bool(true)), None) => None,
        (None, Some(Value::Array(ids))) if !ids.is_empty() => {
            match ids
                .iter()
                .map(|id| id.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
            {
                Some(ids) => Some(ids),
                None => return invalid("calendar_ids", "must be calendar ids"),
            }
        }
        _ => {
            return invalid(
                "delete_all",
                "exactly one of delete_all: true or calendar_ids (at least one)",
            );
        }
    };
    if !known {
        return invalid("body", "only delete_all or calendar_ids");
    }
    if let Some(ids) = &targets
        && let Some(unknown) = ids
            .iter()
            .find(|id| !account.calendars.iter().any(|c| &c.calendar_id == *id))
    {
        return invalid("calendar_ids", &format!("unknown calendar {unknown}"));
    }
    let doomed: Vec<_> = account
        .events
        .keys()
        .filter(|(client, calendar_id, _)| {
            *client == client_id && targets.as_ref().is_none_or(|ids| ids.contains(calendar_id))
        })
        .cloned()
        .collect();
    // Applied later, and dropped if the authorization is revoked first (deletes.rs).
    state.queued_deletes.accept(&client_id, &sub, doomed);
    StatusCode::ACCEPTED.into_response()
}

/// `POST /v1/profiles/{profile_id}/revoke`: disconnects one profile of the
/// bearer's account — its calendars go — and answers 202; a profile of another
/// account is 404 (an assumption: the strict choice).
pub(super) async fn revoke_profile(
    State(shared): State<Arc<Shared>>,
    Path(profile_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/v1/profiles/{profile_id}/revoke");
    let (mut state, Bearer { sub, .. }) = match admit(&shared, Endpoint::RevokeProfile, &path, &headers).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    match state.accounts.get_mut(&sub) {
        Some(account) if account.profile_id == profile_id => {
            account.calendars.clear();
            StatusCode::ACCEPTED.into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The calendar id of a batch entry's `relative_url`, `/v1/calendars/{id}/events`.
/// A path is percent-decoded as a path: `+` stays `+` (only form bodies and
/// queries read it as a space).
fn batch_target(relative_url: &str) -> Option<String> {
    let id = relative_url.strip_prefix("/v1/calendars/")?.strip_suffix("/events")?;
    let decoded = percent_encoding::percent_decode_str(id)
        .decode_utf8()
        .ok()?
        .into_owned();
    (!decoded.is_empty() && !decoded.contains('/')).then_some(decoded)
}

/// `POST /v1/batch`: at most 50 entries; 207 with one `{status, data?}` per entry, in order.
pub(super) async fn batch(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (mut state, bearer) = match admit(&shared, Endpoint::Batch, "/v1/batch", &headers).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let body = match json_body(&headers, &body) {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Some(entries) = body
        .get("batch")
        .and_then(Value::as_array)
        .filter(|e| !e.is_empty() && e.len() <= 50)
    else {
        return unprocessable(json!({"batch": [{"key": "errors.invalid", "description": "1 to 50 entries"}]}));
    };
    let results: Vec<Value> = entries
        .iter()
        .map(|entry| {
            let method = entry.get("method").and_then(Value::as_str);
            let target = entry.get("relative_url").and_then(Value::as_str).and_then(batch_target);
            let data = entry.get("data").cloned().unwrap_or(Value::Null);
            let (status, errors) = match (method, target) {
                (Some("POST"), Some(calendar)) => upsert(&mut state, &bearer, &calendar, data),
                (Some("DELETE"), Some(calendar)) => delete(&mut state, &bearer, &calendar, &data),
                _ => rejected(json!({"relative_url": [{"key": "errors.invalid", "description": "unsupported entry"}]})),
            };
            match errors {
                Some(errors) => json!({"status": status.as_u16(), "data": {"errors": errors}}),
                None => json!({"status": status.as_u16()}),
            }
        })
        .collect();
    (StatusCode::MULTI_STATUS, Json(json!({ "batch": results }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::batch_target;

    #[test]
    fn batch_paths_decode_as_paths() {
        assert_eq!(batch_target("/v1/calendars/cal+1/events").as_deref(), Some("cal+1"));
        assert_eq!(batch_target("/v1/calendars/cal%201/events").as_deref(), Some("cal 1"));
        assert_eq!(batch_target("/v1/calendars/a%2Fb/events"), None);
        assert_eq!(batch_target("/v1/calendars//events"), None);
    }
}
