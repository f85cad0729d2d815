//! Enterprise Connect: `POST /v1/service_account_authorizations` answers 202,
//! then the fake posts the outcome to the callback URL, as Cronofy does:
//! `{"authorization": {"code", "state"}}`, or for a mailbox starting with
//! `fail` the error form, which carries no state. Every callback carries
//! `Cronofy-HMAC-SHA256`, the base64 HMAC-SHA256 of its body keyed with the
//! application's client secret, as Cronofy signs all callbacks
//! (docs.cronofy.com/developers/push-notifications/authentication).

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{Endpoint, Shared, arrive};

pub(super) async fn authorize_member(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(response) = arrive(
        &shared,
        Endpoint::ServiceAccountAuthorizations,
        "/v1/service_account_authorizations",
    )
    .await
    {
        return response;
    }
    let (client_id, callback_url, body) = {
        let state = shared.lock();
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let Some(access) = token.and_then(|t| state.bearer(t)) else {
            return StatusCode::UNAUTHORIZED.into_response();
        };
        let is_service_account = state.accounts.get(&access.sub).is_some_and(|a| a.service_account);
        if !is_service_account
            || !access
                .scope
                .split_whitespace()
                .any(|s| s == "service_account/accounts/manage")
        {
            return StatusCode::FORBIDDEN.into_response();
        }
        let Ok(body) = serde_json::from_slice::<Value>(&body) else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        let field = |name: &str| {
            body.get(name)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let (Some(_email), Some(callback_url), Some(_scope)) = (field("email"), field("callback_url"), field("scope"))
        else {
            let errors = json!({"email": [{"key": "errors.required", "description": "email, callback_url and scope are required"}]});
            return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "errors": errors }))).into_response();
        };
        (access.client_id.clone(), callback_url, body)
    };
    {
        let mut state = shared.lock();
        if !state.member_callbacks {
            let text = |name: &str| body.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
            let held = (client_id, callback_url, text("scope"), text("email"));
            state.held_callbacks.push(held);
            return StatusCode::ACCEPTED.into_response();
        }
    }
    // Cronofy calls back asynchronously, after answering.
    tokio::spawn(call_back(shared, client_id, callback_url, body));
    StatusCode::ACCEPTED.into_response()
}

async fn call_back(shared: Arc<Shared>, client_id: String, callback_url: String, request: Value) {
    tokio::time::sleep(Duration::from_millis(50)).await;
    let text = |name: &str| request.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    let email = text("email");
    let payload = if email.starts_with("fail") {
        json!({"authorization": {
            "error": "access_denied",
            "error_key": "unable_to_grant_scope",
            "error_description": "the service account cannot grant the requested scope",
        }})
    } else {
        let code = shared
            .lock()
            .member_code(&client_id, &callback_url, &text("scope"), &email);
        let mut authorization = json!({ "code": code });
        if let Some(state) = request.get("state") {
            authorization["state"] = state.clone();
        }
        json!({ "authorization": authorization })
    };
    let body = payload.to_string();
    let secret = shared.lock().clients.get(&client_id).cloned().unwrap_or_default();
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Cronofy gives up on a callback that does not answer; a fake that waited
    // for ever would hang the test or benchmark that awaits it.
    let sent = reqwest::Client::new()
        .post(&callback_url)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header("Cronofy-HMAC-SHA256", sign(&secret, body.as_bytes()))
        .body(body)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await;
    let status = match sent {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    };
    shared.lock().callbacks_sent.push((callback_url, status));
}

/// `Cronofy-HMAC-SHA256` of `body` for an application whose secret is `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    use base64::Engine;
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}
