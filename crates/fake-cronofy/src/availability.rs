//! `POST /v1/availability`: authenticated with an application's client secret
//! (not a user's token), computed from each member's busy periods and events.

use std::{collections::BTreeSet, sync::Arc};

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime, format_description::well_known::Rfc3339};

use super::{Endpoint, Shared, arrive, state::State as FakeState};

fn reject(field: &str, description: &str) -> Response {
    let errors = json!({ field: [{"key": "errors.invalid", "description": description}] });
    (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "errors": errors }))).into_response()
}

fn time(value: Option<&Value>) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(value?.as_str()?, &Rfc3339).ok()
}

fn minutes(value: Option<&Value>) -> i64 {
    value
        .and_then(|v| v.get("minutes"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// A member's busy intervals: others' events (free/busy) and the application's own events.
fn busy(state: &FakeState, sub: &str, before: Duration, after: Duration) -> Vec<(OffsetDateTime, OffsetDateTime)> {
    let Some(account) = state.accounts.get(sub) else {
        return vec![];
    };
    let periods = account.busy.iter().filter(|p| p.status != "free").filter_map(|p| {
        Some((
            OffsetDateTime::parse(&p.start, &Rfc3339).ok()?,
            OffsetDateTime::parse(&p.end, &Rfc3339).ok()?,
        ))
    });
    let events = account
        .events
        .values()
        .filter_map(|e| Some((time(e.get("start"))?, time(e.get("end"))?)));
    periods
        .chain(events)
        .map(|(start, end)| (start - before, end + after))
        .collect()
}

struct Group {
    members: Vec<String>,
    required: usize,
}

pub(super) async fn availability(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(response) = arrive(&shared, Endpoint::Availability, "/v1/availability").await {
        return response;
    }
    let state = shared.lock();
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // The application whose secret this is: it may ask about its own users only.
    let Some(client_id) = key.and_then(|key| {
        state
            .clients
            .iter()
            .find(|(_, secret)| secret.as_str() == key)
            .map(|(id, _)| id.clone())
    }) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return reject("body", "invalid JSON");
    };
    let mut groups = Vec::new();
    for group in body.get("participants").and_then(Value::as_array).into_iter().flatten() {
        let member_values = group.get("members").and_then(Value::as_array).into_iter().flatten();
        if member_values.clone().any(|m| !managed_availability_ok(m)) {
            return reject(
                "participants",
                "managed_availability must be a boolean; availability_rule_ids (strings of up to 64 ASCII characters) need it true",
            );
        }
        let members: Vec<String> = group
            .get("members")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| m.get("sub").and_then(Value::as_str).map(str::to_owned))
            .collect();
        if members.is_empty() || members.iter().any(|sub| !state.accounts.contains_key(sub)) {
            return reject("participants", "members must be known subs");
        }
        if members.iter().any(|sub| !state.client_holds(&client_id, sub)) {
            return reject("participants", "members must be the application's own users");
        }
        let required = match group.get("required") {
            Some(Value::String(all)) if all == "all" => members.len(),
            Some(Value::Number(n)) => n.as_u64().unwrap_or(0) as usize,
            _ => return reject("participants", "required must be \"all\" or a number"),
        };
        groups.push(Group { members, required });
    }
    let duration = Duration::minutes(minutes(body.get("required_duration")));
    let periods: Vec<(OffsetDateTime, OffsetDateTime)> = body
        .get("query_periods")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| Some((time(p.get("start"))?, time(p.get("end"))?)))
        .collect();
    if groups.is_empty() || periods.is_empty() || duration <= Duration::ZERO {
        return reject(
            "query_periods",
            "participants, required_duration and query_periods are required",
        );
    }
    let buffer = body.get("buffer");
    let (before, after) = (
        Duration::minutes(minutes(buffer.and_then(|b| b.get("before")))),
        Duration::minutes(minutes(buffer.and_then(|b| b.get("after")))),
    );
    let busy_of = |sub: &str| busy(&state, sub, before, after);
    let mut available = Vec::new();
    for (start, end) in periods {
        // Cut the period at every busy edge; each piece is free or not as a whole.
        let mut edges = BTreeSet::from([start, end]);
        for group in &groups {
            for sub in &group.members {
                for (b_start, b_end) in busy_of(sub) {
                    edges.extend([b_start, b_end].into_iter().filter(|t| *t > start && *t < end));
                }
            }
        }
        let edges: Vec<OffsetDateTime> = edges.into_iter().collect();
        let mut runs: Vec<(OffsetDateTime, OffsetDateTime, Vec<String>)> = Vec::new();
        for piece in edges.windows(2) {
            let (a, b) = (piece[0], piece[1]);
            let free_in = |sub: &String| busy_of(sub).iter().all(|(s, e)| *e <= a || *s >= b);
            let mut free = Vec::new();
            let satisfied = groups.iter().all(|group| {
                let members: Vec<&String> = group.members.iter().filter(|sub| free_in(sub)).collect();
                free.extend(members.iter().map(|s| (*s).clone()));
                members.len() >= group.required
            });
            free.sort();
            free.dedup();
            match runs.last_mut() {
                Some(last) if satisfied && last.1 == a && last.2 == free => last.1 = b,
                _ if satisfied => runs.push((a, b, free)),
                _ => {}
            }
        }
        available.extend(runs.into_iter().filter(|(a, b, _)| *b - *a >= duration));
    }
    let format = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    let periods: Vec<Value> = available
        .into_iter()
        .map(|(a, b, subs)| {
            let participants: Vec<Value> = subs.into_iter().map(|sub| json!({ "sub": sub })).collect();
            json!({"start": format(a), "end": format(b), "participants": participants})
        })
        .collect();
    Json(json!({ "available_periods": periods })).into_response()
}

/// A member's managed availability options, as the docs define them
/// (/developers/scheduling/managed-availability): `managed_availability` a
/// boolean; `availability_rule_ids` rule ids ("ASCII-only String of up to 64
/// characters", /developers/api/scheduling/availability-rules), only with
/// managed availability (an assumption, the strict choice). The fake keeps no
/// rules or available periods: such a member's busy times are its events'.
fn managed_availability_ok(member: &Value) -> bool {
    let managed = match member.get("managed_availability") {
        None => false,
        Some(Value::Bool(managed)) => *managed,
        Some(_) => return false,
    };
    match member.get("availability_rule_ids") {
        None => true,
        Some(Value::Array(ids)) => {
            managed
                && ids.iter().all(|id| {
                    id.as_str()
                        .is_some_and(|id| !id.is_empty() && id.len() <= 64 && id.is_ascii())
                })
        }
        Some(_) => false,
    }
}
