//! `GET /v1/free_busy` as documented [docs: /developers/api/events/free-busy]:
//! `from`/`to` dates read in `tzid`, defaulting to (and bounded by) 42 days
//! back and 201 days ahead; periods that "start before `to` and end on or after
//! `from`"; the application's own events only with `include_managed`, and
//! those "not subject to the default from and to date restrictions": a bound
//! left out does not apply to them, so with neither the application reads its
//! events "across all of time"; pages
//! linked by `pages.next_page`, a `…/v1/free_busy/pages/<token>` URL.

// Helpers return ready-made responses as errors; their size does not matter in a fake.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use jiff::{Timestamp, ToSpan, civil::Date, tz::TimeZone};
use serde_json::{Value, json};

use super::{
    Endpoint, Shared,
    api::{arrive_authenticated, authenticate, unprocessable},
    channels::bearer_client,
    state::{Account, PageToken, random_token},
};

fn can_read_free_busy(scope: &str) -> bool {
    scope.split_whitespace().any(|s| {
        matches!(
            s,
            "free_busy_write" | "free_busy" | "read_free_busy" | "read_events" | "read_only" | "read_write"
        )
    })
}

fn invalid(field: &str, key: &str, description: &str) -> Response {
    unprocessable(json!({ field: [{"key": format!("errors.{key}"), "description": description}] }))
}

/// The checked query: the window as instants, and what to include.
struct Window {
    from: Timestamp,
    to: Timestamp,
    from_date: Date,
    to_date: Date,
    /// Whether the query gave `from` / `to` (the application's own events
    /// ignore a default bound).
    from_given: bool,
    to_given: bool,
    calendar_ids: Vec<String>,
    include_managed: bool,
}

/// Reads and checks the query as Cronofy documents it; a 422 otherwise.
fn window(pairs: &[(String, String)]) -> Result<Window, Response> {
    let param = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let Some(tzid) = param("tzid").filter(|t| !t.is_empty()) else {
        return Err(invalid("tzid", "required", "required"));
    };
    let Ok(zone) = TimeZone::get(tzid) else {
        return Err(invalid("tzid", "invalid", "unknown time zone"));
    };
    let today = Timestamp::now().to_zoned_datetime(zone.clone()).date();
    let (earliest, latest) = (today - 42.days(), today + 201.days());
    let date = |name: &str, default: Date| match param(name) {
        None => Ok(default),
        Some(text) => text
            .parse::<Date>()
            .map_err(|_| invalid(name, "invalid", "must be a date")),
    };
    let from_date = date("from", earliest)?;
    let to_date = date("to", latest)?;
    // Strict where the docs give bounds: outside them is refused, not clamped.
    if from_date < earliest {
        return Err(invalid("from", "invalid", "must be at most 42 days in the past"));
    }
    if to_date > latest {
        return Err(invalid("to", "invalid", "must be at most 201 days in the future"));
    }
    if to_date <= from_date {
        return Err(invalid("to", "invalid", "must be after from"));
    }
    let midnight = |d: Date| d.to_zoned_datetime(zone.clone()).map(|z| z.timestamp());
    let (Ok(from), Ok(to)) = (midnight(from_date), midnight(to_date)) else {
        return Err(invalid("from", "invalid", "out of range"));
    };
    let include_managed = match param("include_managed") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(invalid("include_managed", "invalid", "must be true or false")),
    };
    Ok(Window {
        from,
        to,
        from_date,
        to_date,
        from_given: param("from").is_some(),
        to_given: param("to").is_some(),
        calendar_ids: pairs
            .iter()
            .filter(|(k, _)| k == "calendar_ids[]")
            .map(|(_, v)| v.clone())
            .collect(),
        include_managed,
    })
}

/// Whether a period (Times, or Dates for all-day) overlaps the window:
/// starts before `to` and ends on or after `from`. `defaults_apply` is false
/// for the application's own events: only the bounds the query gave hold.
fn overlaps(window: &Window, start: &str, end: &str, defaults_apply: bool) -> bool {
    let before_to = |starts_before: bool| starts_before || !(defaults_apply || window.to_given);
    let after_from = |ends_after: bool| ends_after || !(defaults_apply || window.from_given);
    if let (Ok(start), Ok(end)) = (start.parse::<Timestamp>(), end.parse::<Timestamp>()) {
        return before_to(start < window.to) && after_from(end >= window.from);
    }
    match (start.parse::<Date>(), end.parse::<Date>()) {
        (Ok(start), Ok(end)) => before_to(start < window.to_date) && after_from(end >= window.from_date),
        _ => false,
    }
}

/// Every period of the account the window asks for: other people's events,
/// then the application's own when `include_managed` is set.
fn periods(account: &Account, client_id: &str, window: &Window) -> Vec<Value> {
    let wanted =
        |calendar_id: &str| window.calendar_ids.is_empty() || window.calendar_ids.iter().any(|c| c == calendar_id);
    let busy = account
        .busy
        .iter()
        .filter(|p| wanted(&p.calendar_id) && overlaps(window, &p.start, &p.end, true))
        .map(|p| json!({"calendar_id": p.calendar_id, "start": p.start, "end": p.end, "free_busy_status": p.status}));
    let managed = account
        .events
        .iter()
        // Another application's events are ordinary events of the calendar to
        // this one: always busy; the reader's own only with include_managed.
        .filter(|((client, _, _), _)| window.include_managed || client != client_id)
        .filter_map(|((client, calendar_id, _), event)| {
            let edge = |v: &Value| {
                v.as_str()
                    .or_else(|| v.get("time").and_then(Value::as_str))
                    .map(str::to_owned)
            };
            let (start, end) = (edge(&event["start"])?, edge(&event["end"])?);
            let own = client == client_id;
            (wanted(calendar_id) && overlaps(window, &start, &end, !own)).then(|| {
                let status = if event["transparency"] == "transparent" {
                    "free"
                } else {
                    "busy"
                };
                json!({"calendar_id": calendar_id, "start": start, "end": end, "free_busy_status": status})
            })
        });
    busy.chain(managed).collect()
}

/// One page of the account's periods for a query, with `next_page` when more remain.
fn page(shared: &Shared, headers: &HeaderMap, pairs: Vec<(String, String)>, page: usize) -> Response {
    let mut state = shared.lock();
    let (sub, scope) = match authenticate(&state, headers) {
        Ok(found) => found,
        Err(response) => return response,
    };
    if !can_read_free_busy(&scope) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let window = match window(&pairs) {
        Ok(window) => window,
        Err(response) => return response,
    };
    let Some(account) = state.accounts.get(&sub) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let all = periods(account, &bearer_client(&state, headers).unwrap_or_default(), &window);
    let size = state.free_busy_page_size;
    let total = all.len().div_ceil(size).max(1);
    if page > total {
        return StatusCode::NOT_FOUND.into_response();
    }
    let periods: Vec<Value> = all.into_iter().skip((page - 1) * size).take(size).collect();
    let mut pages = json!({"current": page, "total": total});
    if page < total {
        let token = random_token();
        state.free_busy_pages.insert(
            token.clone(),
            PageToken {
                sub,
                query: pairs,
                page: page + 1,
            },
        );
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1");
        pages["next_page"] = json!(format!("http://{host}/v1/free_busy/pages/{token}"));
    }
    Json(json!({ "pages": pages, "free_busy": periods })).into_response()
}

/// `GET /v1/free_busy?tzid[&from][&to][&calendar_ids[]][&include_managed]`.
pub(super) async fn free_busy(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(response) = arrive_authenticated(&shared, Endpoint::FreeBusy, "/v1/free_busy", &headers).await {
        return response;
    }
    let pairs = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    page(&shared, &headers, pairs, 1)
}

/// `GET /v1/free_busy/pages/<token>`: a later page, for the account that read the first.
pub(super) async fn free_busy_page(
    State(shared): State<Arc<Shared>>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/v1/free_busy/pages/{token}");
    if let Some(response) = arrive_authenticated(&shared, Endpoint::FreeBusy, &path, &headers).await {
        return response;
    }
    let found = {
        let state = shared.lock();
        let sub = authenticate(&state, &headers).ok().map(|(sub, _)| sub);
        state
            .free_busy_pages
            .get(&token)
            .filter(|next| Some(&next.sub) == sub.as_ref())
            .map(|next| (next.query.clone(), next.page))
    };
    match found {
        Some((pairs, n)) => page(&shared, &headers, pairs, n),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
