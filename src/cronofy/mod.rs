//! The Cronofy REST client: a plain struct owning a `reqwest::Client`.
//! It knows Cronofy's wire format and status codes, nothing of gRPC or the store.

pub mod availability;
pub mod enterprise;
mod error;
pub mod event_body;
mod hosts;
mod model;
mod notifications;
pub mod parse;
mod response;

pub use event_body::EventBody;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

pub use error::{CronofyError, UpstreamFieldError};
pub use hosts::{DataCenter, Endpoints, Host};
use model::CalendarsResponse;
pub use model::{CalendarEntry, FreeBusyEntry, LinkingProfile, ProfileCalendar, TokenResponse, UserInfo, UserInfoData};
pub use notifications::ReadEvent;

pub use response::MAX_ANSWER_BYTES;
use response::{body_bytes, check_status, decode, expect_success, oauth_error, send};

/// A tenant's Cronofy OAuth application.
#[derive(Debug)]
pub struct OAuthApp {
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret (also the API key for application-scoped calls).
    pub client_secret: SecretString,
    /// Where the application's data centre lives.
    pub endpoints: Endpoints,
}

/// Talks to Cronofy over HTTPS (or plain HTTP for a loopback fake).
#[derive(Debug, Clone)]
pub struct CronofyClient {
    http: reqwest::Client,
}

#[derive(Serialize)]
struct TokenRequest<'a> {
    client_id: &'a str,
    client_secret: &'a str,
    grant_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redirect_uri: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
}

#[derive(Serialize)]
struct RevokeRequest<'a> {
    client_id: &'a str,
    client_secret: &'a str,
    sub: &'a str,
}

/// One entry of a `/v1/batch` request.
#[derive(Debug, Serialize)]
pub struct BatchEntry {
    /// `POST` (upsert) or `DELETE`.
    pub method: &'static str,
    /// The API path, e.g. `/v1/calendars/cal_1/events` (see [`Endpoints::api_path`]).
    pub relative_url: String,
    /// The body the single call would send.
    pub data: serde_json::Value,
}

impl BatchEntry {
    /// An upsert of `event` into `calendar_id`, under Cronofy's `event_id`.
    /// `event` is an [`EventBody`], or one stored as JSON (a queued write's).
    pub fn upsert<E: Serialize>(calendar_id: &str, event_id: &str, event: &E) -> Result<BatchEntry, serde_json::Error> {
        Ok(BatchEntry {
            method: "POST",
            relative_url: Endpoints::api_path(&["v1", "calendars", calendar_id, "events"]),
            data: serde_json::to_value(ManagedEvent { event_id, event })?,
        })
    }

    /// A delete of `event_id` from `calendar_id`.
    pub fn delete(calendar_id: &str, event_id: &str) -> BatchEntry {
        BatchEntry {
            method: "DELETE",
            relative_url: Endpoints::api_path(&["v1", "calendars", calendar_id, "events"]),
            data: serde_json::json!({ "event_id": event_id }),
        }
    }
}

#[derive(Serialize)]
struct DeleteEventBody<'a> {
    event_id: &'a str,
}

/// An upsert's body: the event under the `event_id` Cronofy keeps (calgate's
/// id for it, which may differ from the caller's: see `domain::event_ids`).
#[derive(Serialize)]
struct ManagedEvent<'a, E: Serialize> {
    event_id: &'a str,
    #[serde(flatten)]
    event: &'a E,
}

/// The query of `GET /v1/free_busy`; unset dates take Cronofy's defaults.
#[derive(Debug, Clone)]
pub struct FreeBusyParams<'a> {
    /// First day, `YYYY-MM-DD`: always sent, as Cronofy's default does not
    /// bound the application's own events.
    pub from: String,
    /// Day after the last, `YYYY-MM-DD`: always sent, likewise.
    pub to: String,
    /// The zone the dates are read in.
    pub tzid: &'a str,
    /// Only these calendars; empty means all.
    pub calendar_ids: &'a [String],
    /// Count the application's own events.
    pub include_managed: bool,
}

impl CronofyClient {
    /// Builds the client with the given timeouts. TLS uses rustls with the ring provider.
    pub fn new(request_timeout: Duration, connect_timeout: Duration) -> Result<CronofyClient, reqwest::Error> {
        // Installing twice is harmless; the first provider stays.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            // Never replay a bearer token to wherever a redirect points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("calgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(CronofyClient { http })
    }

    /// `POST /oauth/token` with `grant_type=authorization_code`.
    pub async fn exchange_code(
        &self,
        app: &OAuthApp,
        code: &SecretString,
        redirect_uri: &str,
    ) -> Result<TokenResponse, CronofyError> {
        self.token_request(
            app,
            TokenRequest {
                client_id: &app.client_id,
                client_secret: app.client_secret.expose_secret(),
                grant_type: "authorization_code",
                code: Some(code.expose_secret()),
                redirect_uri: Some(redirect_uri),
                refresh_token: None,
            },
        )
        .await
    }

    /// `POST /oauth/token` with `grant_type=refresh_token`.
    pub async fn refresh(&self, app: &OAuthApp, refresh_token: &SecretString) -> Result<TokenResponse, CronofyError> {
        self.token_request(
            app,
            TokenRequest {
                client_id: &app.client_id,
                client_secret: app.client_secret.expose_secret(),
                grant_type: "refresh_token",
                code: None,
                redirect_uri: None,
                refresh_token: Some(refresh_token.expose_secret()),
            },
        )
        .await
    }

    /// `POST /oauth/token/revoke` by `sub` (RFC 7009); Cronofy answers 200.
    pub async fn revoke_by_sub(&self, app: &OAuthApp, sub: &str) -> Result<(), CronofyError> {
        let url = app.endpoints.url(Host::Api, &["oauth", "token", "revoke"]);
        let body = RevokeRequest {
            client_id: &app.client_id,
            client_secret: app.client_secret.expose_secret(),
            sub,
        };
        let response = send("oauth_token_revoke", self.http.post(url).json(&body)).await?;
        if response.status() == StatusCode::BAD_REQUEST {
            return Err(oauth_error(response).await);
        }
        expect_success(response).await
    }

    /// `POST /v1/calendars/{calendar_id}/events` of `event` as Cronofy's
    /// `event_id`; Cronofy answers 202. `event` is an [`EventBody`], or the
    /// JSON object one became (a queued write's, as stored).
    pub async fn upsert_event<E: Serialize>(
        &self,
        endpoints: &Endpoints,
        access_token: &SecretString,
        calendar_id: &str,
        event_id: &str,
        event: &E,
    ) -> Result<(), CronofyError> {
        let url = endpoints.url(Host::Api, &["v1", "calendars", calendar_id, "events"]);
        let request = self
            .http
            .post(url)
            .bearer_auth(access_token.expose_secret())
            .json(&ManagedEvent { event_id, event });
        expect_success(send("upsert_event", request).await?).await
    }

    /// `DELETE /v1/calendars/{calendar_id}/events` with a JSON body; Cronofy answers 202.
    pub async fn delete_event(
        &self,
        endpoints: &Endpoints,
        access_token: &SecretString,
        calendar_id: &str,
        event_id: &str,
    ) -> Result<(), CronofyError> {
        let url = endpoints.url(Host::Api, &["v1", "calendars", calendar_id, "events"]);
        let request = self
            .http
            .request(Method::DELETE, url)
            .bearer_auth(access_token.expose_secret())
            .json(&DeleteEventBody { event_id });
        expect_success(send("delete_event", request).await?).await
    }

    /// `DELETE /v1/events`: deletes the application's own events of the
    /// account, in the calendars named or (none named) in all of them;
    /// answered 202 (docs: /developers/api/events/bulk-delete-events).
    pub async fn delete_all_events(
        &self,
        endpoints: &Endpoints,
        access_token: &SecretString,
        calendar_ids: &[String],
    ) -> Result<(), CronofyError> {
        let url = endpoints.url(Host::Api, &["v1", "events"]);
        // Exactly one of the two keys: Cronofy refuses both at once.
        let body = if calendar_ids.is_empty() {
            serde_json::json!({ "delete_all": true })
        } else {
            serde_json::json!({ "calendar_ids": calendar_ids })
        };
        let request = self
            .http
            .request(Method::DELETE, url)
            .bearer_auth(access_token.expose_secret())
            .json(&body);
        expect_success(send("delete_all_events", request).await?).await
    }

    /// `POST /v1/profiles/{profile_id}/revoke`: disconnects one calendar
    /// profile of the account, answered 202 (docs: /developers/api/authorization/revoke-profile).
    pub async fn revoke_profile(
        &self,
        endpoints: &Endpoints,
        access_token: &SecretString,
        profile_id: &str,
    ) -> Result<(), CronofyError> {
        let url = endpoints.url(Host::Api, &["v1", "profiles", profile_id, "revoke"]);
        let request = self.http.post(url).bearer_auth(access_token.expose_secret());
        expect_success(send("revoke_profile", request).await?).await
    }

    /// `POST /v1/batch`: up to 50 entries in one request, answered 207 with
    /// one status per entry. An entry succeeded exactly when its status is 2xx.
    pub async fn batch(
        &self,
        endpoints: &Endpoints,
        access_token: &SecretString,
        entries: &[BatchEntry],
    ) -> Result<Vec<Result<(), CronofyError>>, CronofyError> {
        let url = endpoints.url(Host::Api, &["v1", "batch"]);
        let request = self
            .http
            .post(url)
            .bearer_auth(access_token.expose_secret())
            .json(&serde_json::json!({ "batch": entries }));
        let response = check_status(send("batch", request).await?).await?;
        parse::batch(&body_bytes(response, "batch").await?, entries.len())
    }

    /// The first page's URL of `GET /v1/free_busy` [docs: /developers/api/events/free-busy].
    pub fn free_busy_url(endpoints: &Endpoints, params: &FreeBusyParams<'_>) -> url::Url {
        let mut url = endpoints.url(Host::Api, &["v1", "free_busy"]);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("from", &params.from);
            query.append_pair("to", &params.to);
            query.append_pair("tzid", params.tzid);
            for calendar_id in params.calendar_ids {
                query.append_pair("calendar_ids[]", calendar_id);
            }
            // Cronofy leaves the application's own events out unless asked.
            if params.include_managed {
                query.append_pair("include_managed", "true");
            }
        }
        url
    }

    /// One page of `GET /v1/free_busy`, and the next page's URL. A `next_page`
    /// on another origin is refused: following it would send the user's
    /// bearer token elsewhere.
    pub async fn free_busy_page(
        &self,
        endpoints: &Endpoints,
        access_token: &SecretString,
        page: &url::Url,
    ) -> Result<(Vec<FreeBusyEntry>, Option<url::Url>), CronofyError> {
        let request = self.http.get(page.clone()).bearer_auth(access_token.expose_secret());
        let response = send("free_busy", request).await?;
        parse::free_busy_page(
            &body_bytes(check_status(response).await?, "free_busy").await?,
            endpoints,
        )
    }

    /// `POST /v1/availability`, authenticated with the application's client
    /// secret (Cronofy's current docs), not a user's token.
    pub async fn availability(
        &self,
        app: &OAuthApp,
        query: &availability::AvailabilityQuery,
    ) -> Result<Vec<availability::AvailablePeriod>, CronofyError> {
        let url = app.endpoints.url(Host::Api, &["v1", "availability"]);
        let request = self
            .http
            .post(url)
            .bearer_auth(app.client_secret.expose_secret())
            .json(query);
        let response = check_status(send("availability", request).await?).await?;
        let body: availability::AvailabilityResponse = decode(response, "availability").await?;
        Ok(body.available_periods)
    }

    /// `POST /v1/service_account_authorizations` with the service account's
    /// token; Cronofy answers 202 and calls the callback URL later.
    pub async fn authorize_member(
        &self,
        endpoints: &Endpoints,
        service_account_token: &SecretString,
        request: &enterprise::MemberAuthorizationRequest<'_>,
    ) -> Result<(), CronofyError> {
        let url = endpoints.url(Host::Api, &["v1", "service_account_authorizations"]);
        let http = self
            .http
            .post(url)
            .bearer_auth(service_account_token.expose_secret())
            .json(request);
        expect_success(send("service_account_authorizations", http).await?).await
    }

    /// `GET /v1/calendars`.
    pub async fn list_calendars(
        &self,
        endpoints: &Endpoints,
        access_token: &SecretString,
    ) -> Result<Vec<CalendarEntry>, CronofyError> {
        let url = endpoints.url(Host::Api, &["v1", "calendars"]);
        let request = self.http.get(url).bearer_auth(access_token.expose_secret());
        let response = send("list_calendars", request).await?;
        let body: CalendarsResponse = decode(check_status(response).await?, "calendars").await?;
        Ok(body.calendars)
    }

    async fn token_request(&self, app: &OAuthApp, body: TokenRequest<'_>) -> Result<TokenResponse, CronofyError> {
        let url = app.endpoints.url(Host::Api, &["oauth", "token"]);
        let response = send("oauth_token", self.http.post(url).json(&body)).await?;
        if response.status() == StatusCode::BAD_REQUEST {
            return Err(oauth_error(response).await);
        }
        decode(check_status(response).await?, "oauth/token").await
    }
}
