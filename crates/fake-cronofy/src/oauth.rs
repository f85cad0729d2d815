//! The OAuth side: consent pages on the app host, token endpoints on the api host.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    body::Bytes,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;
use url::Url;

use super::{Endpoint, RefreshTokens, Shared, arrive};

fn oauth_error(error: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))).into_response()
}

/// `GET /oauth/authorize`: the user consents at once; 302 back with code and state.
pub(super) async fn authorize(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    consent(&shared, &query, false)
}

/// `GET /enterprise_connect/oauth/authorize`: the admin consents for the organisation.
pub(super) async fn authorize_enterprise(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if query.get("delegated_scope").is_none_or(|s| s.trim().is_empty()) {
        return (StatusCode::BAD_REQUEST, "delegated_scope is required").into_response();
    }
    consent(&shared, &query, true)
}

fn consent(shared: &Shared, query: &HashMap<String, String>, enterprise: bool) -> Response {
    let param = |name: &str| query.get(name).map(String::as_str).filter(|v| !v.is_empty());
    if param("response_type") != Some("code") {
        return (StatusCode::BAD_REQUEST, "response_type must be code").into_response();
    }
    let (Some(client_id), Some(redirect_uri), Some(scope)) =
        (param("client_id"), param("redirect_uri"), param("scope"))
    else {
        return (
            StatusCode::BAD_REQUEST,
            "client_id, redirect_uri and scope are required",
        )
            .into_response();
    };
    let Ok(mut target) = Url::parse(redirect_uri) else {
        return (StatusCode::BAD_REQUEST, "redirect_uri must be absolute").into_response();
    };
    let mut state = shared.lock();
    if !state.clients.contains_key(client_id) {
        return (StatusCode::BAD_REQUEST, "unknown client_id").into_response();
    }
    // Never redirect a code to an unregistered URI: the error is shown to the user.
    if !state.redirect_allowed(client_id, redirect_uri) {
        return (
            StatusCode::BAD_REQUEST,
            "redirect_uri is not registered for this client",
        )
            .into_response();
    }
    let code = state.authorize(client_id, redirect_uri, scope, enterprise);
    target.query_pairs_mut().append_pair("code", &code);
    if let Some(s) = param("state") {
        target.query_pairs_mut().append_pair("state", s);
    }
    // Found (302), as OAuth servers answer the authorization request.
    (StatusCode::FOUND, [(header::LOCATION, target.to_string())]).into_response()
}

/// Reads a token-endpoint body: JSON or form-encoded, both documented.
fn form(headers: &HeaderMap, body: &Bytes) -> Option<HashMap<String, String>> {
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    if content_type.starts_with("application/json") {
        let value: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).ok()?;
        Some(
            value
                .into_iter()
                .filter_map(|(k, v)| match v {
                    serde_json::Value::String(s) => Some((k, s)),
                    serde_json::Value::Bool(b) => Some((k, b.to_string())),
                    _ => None,
                })
                .collect(),
        )
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        Some(url::form_urlencoded::parse(body).into_owned().collect())
    } else {
        None
    }
}

/// `POST /oauth/token`: authorization_code and refresh_token grants.
pub(super) async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(response) = arrive(&shared, Endpoint::Token, "/oauth/token").await {
        return response;
    }
    let Some(form) = form(&headers, &body) else {
        return oauth_error("invalid_request");
    };
    let field = |name: &str| form.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let (Some(client_id), Some(client_secret), Some(grant_type)) =
        (field("client_id"), field("client_secret"), field("grant_type"))
    else {
        return oauth_error("invalid_request");
    };
    let mut state = shared.lock();
    if state.clients.get(client_id).map(String::as_str) != Some(client_secret) {
        return oauth_error("invalid_client");
    }
    let (sub, scope, refresh) = match grant_type {
        "authorization_code" => {
            let (Some(code), Some(redirect_uri)) = (field("code"), field("redirect_uri")) else {
                return oauth_error("invalid_request");
            };
            // Codes are single use: removed whether or not the rest matches.
            match state.codes.remove(code) {
                Some(pending) if pending.client_id == client_id && pending.redirect_uri == redirect_uri => {
                    (pending.sub, pending.scope, None)
                }
                _ => return oauth_error("invalid_grant"),
            }
        }
        "refresh_token" => {
            let Some(refresh_token) = field("refresh_token") else {
                return oauth_error("invalid_request");
            };
            let known = state
                .refresh_tokens
                .get(refresh_token)
                .filter(|t| t.client_id == client_id);
            let Some(known) = known else {
                return oauth_error("invalid_grant");
            };
            let (sub, scope) = (known.sub.clone(), known.scope.clone());
            *state.refreshes.entry(sub.clone()).or_default() += 1;
            match state.refresh_tokens_mode {
                RefreshTokens::Rotate => {
                    state.refresh_tokens.remove(refresh_token);
                    (sub, scope, None)
                }
                RefreshTokens::Echo => (sub, scope, Some(Some(refresh_token.to_owned()))),
                RefreshTokens::Omit => (sub, scope, Some(None)),
            }
        }
        _ => return oauth_error("unsupported_grant_type"),
    };
    // `refresh`: None = issue a new refresh token; Some(kept) = keep the old one,
    // answering with it (Some) or without any (None).
    let (access, new_refresh) = state.issue(client_id, &sub, &scope, refresh.is_none());
    let answered_refresh = refresh.unwrap_or(new_refresh);
    let by_sub = state.service_accounts_by_sub;
    let Some(account) = state.accounts.get(&sub) else {
        return oauth_error("invalid_grant");
    };
    let mut answer = json!({
        "token_type": "bearer",
        "access_token": access,
        "expires_in": state.access_token_ttl.as_secs(),
        "refresh_token": answered_refresh,
        "scope": scope,
        "account_id": account.account_id,
        "sub": sub,
        "linking_profile": {
            "provider_name": account.provider_name,
            "profile_id": account.profile_id,
            "profile_name": account.profile_name,
        },
    });
    // A code exchange embeds the account's UserInfo, as Cronofy's example does
    // (docs: /developers/api/authorization/request-token; UserInfo's shape:
    // /developers/api/identity/userinfo).
    if grant_type == "authorization_code" {
        answer["userinfo"] = json!({
            "sub": sub,
            "email": account.profile_name,
            "cronofy.type": "account",
            "cronofy.data": {
                "authorization": {"scope": scope, "status": "active"},
                "profiles": [{
                    "provider_name": account.provider_name,
                    "profile_id": account.profile_id,
                    "profile_name": account.profile_name,
                    "profile_connected": true,
                }],
            },
        });
    }
    if answer["refresh_token"].is_null()
        && let Some(object) = answer.as_object_mut()
    {
        object.remove("refresh_token");
    }
    if account.service_account {
        if by_sub {
            answer["sub"] = json!(sub);
        } else {
            answer["service_account_id"] = json!(sub);
        }
        if let Some(object) = answer.as_object_mut() {
            object.remove("account_id");
            if !by_sub {
                object.remove("sub");
            }
            object.remove("linking_profile");
            object.remove("userinfo");
        }
    }
    (
        [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")],
        Json(answer),
    )
        .into_response()
}

/// `POST /oauth/token/revoke`: by `token` (wins) or by `sub`; 200 with an empty body.
pub(super) async fn revoke(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(response) = arrive(&shared, Endpoint::Revoke, "/oauth/token/revoke").await {
        return response;
    }
    let Some(form) = form(&headers, &body) else {
        return oauth_error("invalid_request");
    };
    let mut state = shared.lock();
    let client_ok = match (form.get("client_id"), form.get("client_secret")) {
        (Some(id), Some(secret)) => state.clients.get(id) == Some(secret),
        _ => false,
    };
    if !client_ok {
        return oauth_error("invalid_client");
    }
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    let sub = if let Some(token) = form.get("token") {
        state
            .refresh_tokens
            .get(token)
            .filter(|t| t.client_id == client_id)
            .map(|t| t.sub.clone())
            .or_else(|| {
                state
                    .access_tokens
                    .get(token)
                    .filter(|t| t.client_id == client_id)
                    .map(|t| t.sub.clone())
            })
    } else if let Some(sub) = form.get("sub") {
        // Strict (an assumption): a client revokes only authorizations it holds.
        if !state.client_holds(&client_id, sub) {
            return oauth_error("invalid_grant");
        }
        Some(sub.clone())
    } else {
        return oauth_error("invalid_request");
    };
    if let Some(sub) = sub {
        state.revoke_authorization(&client_id, &sub);
        state.revoked.push((client_id, sub));
    }
    StatusCode::OK.into_response()
}
