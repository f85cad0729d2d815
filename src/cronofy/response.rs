//! Reading Cronofy's answers: statuses to typed errors, bodies to types,
//! and counting every request.

use std::time::Duration;

use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use super::{
    CronofyError, UpstreamFieldError,
    model::{OAuthErrorBody, UnprocessableBody},
};
use crate::telemetry::metrics::METRICS;

/// A token endpoint's 400: only the RFC 6749 error code is read; the rest of
/// the body is never kept.
pub(super) async fn oauth_error(response: Response) -> CronofyError {
    let error = error_body::<OAuthErrorBody>(response)
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
pub(super) async fn send(endpoint: &'static str, request: RequestBuilder) -> Result<Response, CronofyError> {
    let started = std::time::Instant::now();
    let sent = request.send().await.map_err(|error| CronofyError::from_reqwest(&error));
    let status = match &sent {
        Ok(response) => response.status().as_u16().to_string(),
        Err(CronofyError::Transport { kind }) => (*kind).to_owned(),
        Err(_) => "error".to_owned(),
    };
    METRICS.upstream(endpoint, &status, started.elapsed());
    sent
}

pub(super) async fn expect_success(response: Response) -> Result<(), CronofyError> {
    check_status(response).await.map(drop)
}

/// Maps every non-2xx status onto a typed error (cronofy-api §8).
pub(super) async fn check_status(response: Response) -> Result<Response, CronofyError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = retry_after(&response);
    // Only a 422's body is read: it carries the field errors.
    let body = if status == StatusCode::UNPROCESSABLE_ENTITY {
        error_body::<serde_json::Value>(response).await
    } else {
        None
    };
    Err(error_for_status(status.as_u16(), body.as_ref(), retry_after))
}

/// The error for a non-2xx status, from a response or from a batch item.
pub(crate) fn error_for_status(
    status: u16,
    body: Option<&serde_json::Value>,
    retry_after: Option<Duration>,
) -> CronofyError {
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

/// Longest Retry-After believed; the retry policy bounds it further.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After` as delta-seconds or an HTTP date (RFC 9110 §10.2.3), at
/// most [`MAX_RETRY_AFTER`].
fn retry_after(response: &Response) -> Option<Duration> {
    parse_retry_after(response.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?)
        .map(|after| after.min(MAX_RETRY_AFTER))
}

fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

pub(super) async fn decode<T: DeserializeOwned>(response: Response, endpoint: &'static str) -> Result<T, CronofyError> {
    super::parse::json(&body_bytes(response, endpoint).await?, endpoint)
}

/// Most bytes calgate reads of one Cronofy answer: a page of 100 events or
/// 50 batch results is far below it, and a broken or hostile answer cannot
/// make a replica buffer more.
pub const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;
/// Most bytes read of an error answer (a 400's RFC 6749 code, a 422's field errors).
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// A whole answer's body, at most [`MAX_ANSWER_BYTES`]: a longer one is
/// refused as soon as it passes the limit (whatever its Content-Length says).
pub(super) async fn body_bytes(response: Response, endpoint: &'static str) -> Result<bytes::Bytes, CronofyError> {
    bounded_body(response, MAX_ANSWER_BYTES)
        .await?
        .ok_or(CronofyError::TooLarge { endpoint })
}

/// The body if it holds at most `limit` bytes; None when it is longer.
async fn bounded_body(mut response: Response, limit: usize) -> Result<Option<bytes::Bytes>, CronofyError> {
    if response.content_length().is_some_and(|length| length > limit as u64) {
        return Ok(None);
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| CronofyError::from_reqwest(&error))?
    {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

/// An error answer's JSON body, if it is JSON and at most [`MAX_ERROR_BYTES`].
async fn error_body<T: DeserializeOwned>(response: Response) -> Option<T> {
    let body = bounded_body(response, MAX_ERROR_BYTES).await.ok()??;
    serde_json::from_slice(&body).ok()
}
