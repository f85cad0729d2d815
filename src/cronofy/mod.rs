//! The Cronofy REST client: a plain struct owning a `reqwest::Client`.
//! It knows Cronofy's wire format and status codes, nothing of gRPC or the store.

pub mod availability;
pub mod enterprise;
mod error;
mod hosts;
mod model;

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Serialize, de::DeserializeOwned};

pub use error::{CronofyError, UpstreamFieldError};
pub use hosts::{DataCenter, Endpoints, Host};
use model::{BatchResponse, CalendarsResponse, FreeBusyResponse, OAuthErrorBody, UnprocessableBody};
pub use model::{CalendarEntry, FreeBusyEntry, LinkingProfile, TokenResponse};

use crate::telemetry::metrics::METRICS;

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
    /// An upsert of `event` (already serialised) into `calendar_id`.
    pub fn upsert(calendar_id: &str, event: serde_json::Value) -> BatchEntry {
        BatchEntry {
            method: "POST",
            relative_url: Endpoints::api_path(&["v1", "calendars", calendar_id, "events"]),
            data: event,
        }
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

impl CronofyClient {
    /// Builds the client with the given timeouts. TLS uses rustls with the ring provider.
    pub fn new(request_timeout: Duration, connect_timeout: Duration) -> Result<CronofyClient, CronofyError> {
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
            .build()
            .map_err(|_| CronofyError::Transport { kind: "client" })?;
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

    /// `POST /v1/calendars/{calendar_id}/events`; Cronofy answers 202.
    pub async fn upsert_event(
        &self,
        endpoints: &Endpoints,
        access_token: &SecretString,
        calendar_id: &str,
        event: &impl Serialize,
    ) -> Result<(), CronofyError> {
        let url = endpoints.url(Host::Api, &["v1", "calendars", calendar_id, "events"]);
        let request = self
            .http
            .post(url)
            .bearer_auth(access_token.expose_secret())
            .json(event);
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
        let body: BatchResponse = decode(response, "batch").await?;
        if body.batch.len() != entries.len() {
            return Err(CronofyError::Decode { endpoint: "batch" });
        }
        Ok(body
            .batch
            .into_iter()
            .map(|item| {
                if (200..300).contains(&item.status) {
                    Ok(())
                } else {
                    Err(error_for_status(item.status, item.data.as_ref(), None))
                }
            })
            .collect())
    }

    /// The first page's URL of `GET /v1/free_busy` for a date range.
    pub fn free_busy_url(endpoints: &Endpoints, from: &str, to: &str, tzid: &str, calendar_ids: &[String]) -> url::Url {
        let mut url = endpoints.url(Host::Api, &["v1", "free_busy"]);
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("from", from)
                .append_pair("to", to)
                .append_pair("tzid", tzid);
            for calendar_id in calendar_ids {
                query.append_pair("calendar_ids[]", calendar_id);
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
        let body: FreeBusyResponse = decode(check_status(response).await?, "free_busy").await?;
        let next = match body.pages.and_then(|pages| pages.next_page) {
            None => None,
            Some(next) => {
                let next = url::Url::parse(&next).map_err(|_| CronofyError::Decode { endpoint: "free_busy" })?;
                if next.origin() != endpoints.url(Host::Api, &[]).origin() {
                    return Err(CronofyError::Decode {
                        endpoint: "free_busy (next_page on another host)",
                    });
                }
                Some(next)
            }
        };
        Ok((body.free_busy, next))
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

/// A token endpoint's 400: only the RFC 6749 error code is read; the rest of
/// the body is never kept.
async fn oauth_error(response: Response) -> CronofyError {
    let error = response
        .json::<OAuthErrorBody>()
        .await
        .map(|body| body.error)
        .unwrap_or_default();
    match error.as_str() {
        "invalid_grant" => CronofyError::InvalidGrant,
        known @ ("invalid_request"
        | "invalid_client"
        | "unauthorized_client"
        | "unsupported_grant_type"
        | "invalid_scope") => CronofyError::TokenRequestRefused {
            error: known.to_owned(),
        },
        _ => CronofyError::TokenRequestRefused {
            error: "unknown".to_owned(),
        },
    }
}

/// Sends a request and counts it by endpoint and answer.
async fn send(endpoint: &'static str, request: RequestBuilder) -> Result<Response, CronofyError> {
    let sent = request.send().await.map_err(|error| CronofyError::from_reqwest(&error));
    let status = match &sent {
        Ok(response) => response.status().as_u16().to_string(),
        Err(CronofyError::Transport { kind }) => (*kind).to_owned(),
        Err(_) => "error".to_owned(),
    };
    METRICS.upstream(endpoint, &status);
    sent
}

async fn expect_success(response: Response) -> Result<(), CronofyError> {
    check_status(response).await.map(drop)
}

/// Maps every non-2xx status onto a typed error (cronofy-api §8).
async fn check_status(response: Response) -> Result<Response, CronofyError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = retry_after(&response);
    // Only a 422's body is read: it carries the field errors.
    let body = if status == StatusCode::UNPROCESSABLE_ENTITY {
        response.json::<serde_json::Value>().await.ok()
    } else {
        None
    };
    Err(error_for_status(status.as_u16(), body.as_ref(), retry_after))
}

/// The error for a non-2xx status, from a response or from a batch item.
fn error_for_status(status: u16, body: Option<&serde_json::Value>, retry_after: Option<Duration>) -> CronofyError {
    match status {
        401 => CronofyError::Unauthorized,
        402 => CronofyError::PaymentRequired,
        403 => CronofyError::Forbidden,
        404 => CronofyError::NotFound,
        422 => CronofyError::Unprocessable {
            errors: body
                .and_then(|body| serde_json::from_value::<UnprocessableBody>(body.clone()).ok())
                .map(flatten_errors)
                .unwrap_or_default(),
        },
        423 => CronofyError::Locked,
        429 => CronofyError::RateLimited { retry_after },
        code @ 500..=599 => CronofyError::Server { status: code },
        code => CronofyError::UnexpectedStatus { status: code },
    }
}

fn flatten_errors(body: UnprocessableBody) -> Vec<UpstreamFieldError> {
    body.errors
        .into_iter()
        .flat_map(|(field, entries)| {
            entries.into_iter().map(move |entry| UpstreamFieldError {
                field: field.clone(),
                key: entry.key,
                description: entry.description,
            })
        })
        .collect()
}

/// `Retry-After` as delta-seconds or an HTTP date (RFC 9110 §10.2.3).
fn retry_after(response: &Response) -> Option<Duration> {
    let value = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

async fn decode<T: DeserializeOwned>(response: Response, endpoint: &'static str) -> Result<T, CronofyError> {
    // The body may hold tokens: on failure only the endpoint is named.
    let bytes = response
        .bytes()
        .await
        .map_err(|error| CronofyError::from_reqwest(&error))?;
    serde_json::from_slice(&bytes).map_err(|_| CronofyError::Decode { endpoint })
}
