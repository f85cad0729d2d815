//! A faithful HTTP fake of Cronofy (cronofy-api.md) for tests, local
//! development and the sandbox: separate app and api listeners on loopback,
//! stateful (clients, codes, accounts, calendars, events, tokens with expiry,
//! refresh-token rotation that refuses reuse), strict about documented request
//! shapes, with fault injection. Never a trait mock: calgate talks to it over HTTP.

mod api;
mod availability;
mod channels;
mod controls;
mod deletes;
mod enterprise;
mod event_log;
mod faults;
mod free_busy;
mod hooks;
mod oauth;
mod profiles;
mod recorded;
mod state;
mod validate;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use axum::{
    Router,
    response::IntoResponse,
    routing::{get, post},
};
use tokio::{net::TcpListener, task::JoinHandle};

pub use enterprise::sign as sign_callback;
pub use faults::{Endpoint, Fault};
use state::State;
pub use state::{NextAuthorization, RecordedRequest, RefreshTokens, SentNotification, busiest_window};

/// Shared by both listeners' handlers.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    state: Mutex<State>,
}

impl Shared {
    /// The state, with the bulk deletes whose time has come applied.
    fn lock(&self) -> MutexGuard<'_, State> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.apply_queued_deletes(false);
        state
    }
}

/// An account made by [`FakeCronofy::connect_account`].
#[derive(Debug, Clone)]
pub struct ConnectedAccount {
    /// Cronofy's account identifier.
    pub sub: String,
    /// Its writable primary calendar.
    pub calendar_id: String,
    /// A valid access token.
    pub access_token: String,
    /// The refresh token issued with it.
    pub refresh_token: String,
    /// How long the access token lives.
    pub expires_in: Duration,
}

/// A running fake. Dropping it stops both listeners.
#[derive(Debug)]
pub struct FakeCronofy {
    app_addr: SocketAddr,
    api_addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FakeCronofy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl FakeCronofy {
    /// Starts the fake on two ephemeral loopback ports.
    pub async fn start() -> std::io::Result<FakeCronofy> {
        let app = TcpListener::bind("127.0.0.1:0").await?;
        let api = TcpListener::bind("127.0.0.1:0").await?;
        FakeCronofy::serve(app, api)
    }

    /// Serves the fake on the given listeners (app host, api host).
    pub fn serve(app: TcpListener, api: TcpListener) -> std::io::Result<FakeCronofy> {
        let shared = Arc::new(Shared::default());
        let app_addr = app.local_addr()?;
        let api_addr = api.local_addr()?;
        let app_router = Router::new()
            .route("/oauth/authorize", get(oauth::authorize))
            .route("/enterprise_connect/oauth/authorize", get(oauth::authorize_enterprise))
            .route("/sandbox/accounts/{sub}/events/delete", post(controls::delete_event))
            .route("/sandbox/accounts/{sub}/events/edit", post(controls::edit_event))
            .route(
                "/sandbox/accounts/{sub}/profile/disconnect",
                post(controls::disconnect_profile),
            )
            .route(
                "/sandbox/accounts/{sub}/profile/reconnect",
                post(controls::reconnect_profile),
            )
            .with_state(shared.clone());
        let api_router = Router::new()
            .route("/oauth/token", post(oauth::token))
            .route("/oauth/token/revoke", post(oauth::revoke))
            .route("/v1/calendars", get(api::list_calendars))
            .route(
                "/v1/calendars/{calendar_id}/events",
                post(api::upsert_event).delete(api::delete_event),
            )
            .route("/v1/batch", post(api::batch))
            .route(
                "/v1/events",
                axum::routing::delete(api::bulk_delete).get(channels::read_events),
            )
            .route("/v1/events/pages/{token}", get(channels::read_events_page))
            .route(
                "/v1/channels",
                post(channels::create_channel).get(channels::list_channels),
            )
            .route(
                "/v1/channels/{channel_id}",
                axum::routing::delete(channels::close_channel),
            )
            .route("/v1/userinfo", get(profiles::userinfo))
            .route("/v1/profiles/{profile_id}/revoke", post(api::revoke_profile))
            .route("/v1/free_busy", get(free_busy::free_busy))
            .route("/v1/free_busy/pages/{token}", get(free_busy::free_busy_page))
            .route("/v1/availability", post(availability::availability))
            .route("/v1/service_account_authorizations", post(enterprise::authorize_member))
            .layer(axum::middleware::from_fn(answer_late))
            .with_state(shared.clone());
        let tasks = vec![
            tokio::spawn(async move {
                let _ = axum::serve(app, app_router).await;
            }),
            tokio::spawn(async move {
                let _ = axum::serve(api, api_router).await;
            }),
        ];
        Ok(FakeCronofy {
            app_addr,
            api_addr,
            shared,
            tasks,
        })
    }

    /// Base URL of the browser-facing host (`app_base_url`).
    pub fn app_base_url(&self) -> String {
        format!("http://{}/", self.app_addr)
    }

    /// Base URL of the API host (`api_base_url`).
    pub fn api_base_url(&self) -> String {
        format!("http://{}/", self.api_addr)
    }

    /// Registers an OAuth client.
    pub fn register_client(&self, client_id: &str, client_secret: &str) {
        self.shared
            .lock()
            .clients
            .insert(client_id.to_owned(), client_secret.to_owned());
    }

    /// Puts a client in production mode: consent redirects only to these URIs
    /// (a `https://*.example.com/...` entry allows any subdomain). A client
    /// without registered URIs is in development mode and accepts any
    /// (docs: /developers/faqs/verify-application).
    pub fn register_redirect_uris(&self, client_id: &str, uris: &[&str]) {
        self.shared
            .lock()
            .redirect_uris
            .insert(client_id.to_owned(), uris.iter().map(|u| (*u).to_owned()).collect());
    }
}

tokio::task_local! {
    /// A fault to apply once the handler has answered (see [`Fault::after_processing`]).
    static LATE_FAULT: std::cell::RefCell<Option<Fault>>;
    /// The query and body of the request being handled, for the record.
    static SEEN: (Option<String>, String);
}

/// The largest body the fake reads; Cronofy's own limit is not documented,
/// and calgate's largest request (a 50-entry batch) is far below it.
const MAX_BODY: usize = 4 << 20;

/// The query and body of the request being handled (empty outside one).
fn seen_request() -> (Option<String>, String) {
    SEEN.try_with(Clone::clone).unwrap_or_default()
}

/// Records the request and applies a pending fault: Some(response) when the
/// fault answers instead of the handler. A fault that comes after processing
/// is left for [`answer_late`].
async fn arrive(shared: &Shared, endpoint: Endpoint, path: &str) -> Option<axum::response::Response> {
    let fault = shared.lock().arrive(endpoint, path)?;
    if fault.after_processing {
        let _ = LATE_FAULT.try_with(|late| *late.borrow_mut() = Some(fault));
        return None;
    }
    if let Some(delay) = fault.delay {
        tokio::time::sleep(delay).await;
    }
    fault.response()
}

/// Middleware of the API host: keeps the query and body for the record, runs
/// the handler, then applies a fault left for after processing — a delayed
/// answer, or another answer entirely.
async fn answer_late(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return axum::http::StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let seen = (
        parts.uri.query().map(str::to_owned),
        String::from_utf8_lossy(&bytes).into_owned(),
    );
    let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
    let handled = LATE_FAULT.scope(std::cell::RefCell::new(None), async move {
        let answered = next.run(request).await;
        let Some(fault) = LATE_FAULT.with(|late| late.borrow_mut().take()) else {
            return answered;
        };
        if let Some(delay) = fault.delay {
            tokio::time::sleep(delay).await;
        }
        fault.response().unwrap_or(answered)
    });
    SEEN.scope(seen, handled).await
}

#[cfg(test)]
mod tests;
