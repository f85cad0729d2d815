//! Fault injection: make the next N calls to an endpoint fail or stall.

use std::time::Duration;

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

/// The fake's endpoints, for faults and request counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /oauth/token`.
    Token,
    /// `POST /oauth/token/revoke`.
    Revoke,
    /// `GET /v1/calendars`.
    ListCalendars,
    /// `POST /v1/calendars/{id}/events`.
    UpsertEvent,
    /// `DELETE /v1/calendars/{id}/events`.
    DeleteEvent,
    /// `POST /v1/batch`.
    Batch,
    /// `GET /v1/free_busy`.
    FreeBusy,
    /// `POST /v1/availability`.
    Availability,
    /// `POST /v1/service_account_authorizations`.
    ServiceAccountAuthorizations,
    /// `POST /v1/profiles/{profile_id}/revoke`.
    RevokeProfile,
    /// `DELETE /v1/events` (bulk delete).
    BulkDeleteEvents,
    /// `POST /v1/channels`.
    CreateChannel,
    /// `DELETE /v1/channels/{channel_id}`.
    CloseChannel,
    /// `GET /v1/channels`.
    ListChannels,
    /// `GET /v1/events` and its pages.
    ReadEvents,
    /// `GET /v1/userinfo`.
    UserInfo,
}

/// One injected fault.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Which endpoint it hits.
    pub endpoint: Endpoint,
    /// HTTP status to answer with; None answers normally after `delay`.
    pub status: Option<u16>,
    /// JSON body to answer with (defaults to what Cronofy sends for the status).
    pub body: Option<serde_json::Value>,
    /// Retry-After header value.
    pub retry_after: Option<String>,
    /// How many calls it applies to.
    pub times: usize,
    /// How many calls to pass untouched before it applies.
    pub skip: usize,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
    /// Process the request first (a token rotates, an event is written), then
    /// answer late or with `status`: the answer is lost, not the request.
    pub after_processing: bool,
    /// Answer 200 with a streamed JSON body of this many bytes (an array of
    /// spaces), never held in memory: a broken or hostile answer.
    pub huge_body: Option<u64>,
}

impl Fault {
    /// Answer `status` once on `endpoint`.
    pub fn status(endpoint: Endpoint, status: u16) -> Fault {
        Fault {
            endpoint,
            status: Some(status),
            body: None,
            retry_after: None,
            times: 1,
            skip: 0,
            delay: None,
            after_processing: false,
            huge_body: None,
        }
    }

    /// Answer 200 once on `endpoint` with a streamed body of `bytes` bytes.
    pub fn huge_body(endpoint: Endpoint, bytes: u64) -> Fault {
        Fault {
            huge_body: Some(bytes),
            ..Fault::status(endpoint, 200)
        }
    }

    /// Stall `delay` once, then answer normally.
    pub fn delay(endpoint: Endpoint, delay: Duration) -> Fault {
        Fault {
            status: None,
            delay: Some(delay),
            ..Fault::status(endpoint, 200)
        }
    }

    /// Let the request take effect, then delay or replace its answer — the
    /// dangerous case where Cronofy acted but calgate never hears it did.
    pub fn after_processing(mut self) -> Fault {
        self.after_processing = true;
        self
    }

    /// Apply to `times` calls.
    pub fn times(mut self, times: usize) -> Fault {
        self.times = times;
        self
    }

    /// Let the first `calls` calls through untouched first.
    pub fn after_calls(mut self, calls: usize) -> Fault {
        self.skip = calls;
        self
    }

    /// Answer with this JSON body.
    pub fn body(mut self, body: serde_json::Value) -> Fault {
        self.body = Some(body);
        self
    }

    /// Send this Retry-After header.
    pub fn retry_after(mut self, value: &str) -> Fault {
        self.retry_after = Some(value.to_owned());
        self
    }

    /// The response the fault produces, if it answers instead of the handler.
    pub(super) fn response(&self) -> Option<Response> {
        let status = StatusCode::from_u16(self.status?).ok()?;
        if let Some(bytes) = self.huge_body {
            return Some(streamed_body(bytes));
        }
        let body = self.body.clone().unwrap_or_else(|| match status.as_u16() {
            400 => serde_json::json!({"error": "invalid_grant"}),
            422 => serde_json::json!({"errors": {"event_id": [{"key": "errors.required", "description": "required"}]}}),
            _ => serde_json::Value::Null,
        });
        let mut response = if body.is_null() {
            status.into_response()
        } else {
            (status, axum::Json(body)).into_response()
        };
        if let Some(retry_after) = self.retry_after.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            response.headers_mut().insert(header::RETRY_AFTER, retry_after);
        }
        Some(response)
    }
}

/// 200 with `[`, spaces, `]` — `bytes` in all — sent in 64 KiB chunks.
fn streamed_body(bytes: u64) -> Response {
    const CHUNK: u64 = 64 * 1024;
    let chunks = bytes.div_ceil(CHUNK);
    let stream = futures::stream::iter((0..chunks).map(move |n| {
        let len = CHUNK.min(bytes - n * CHUNK) as usize;
        let mut chunk = vec![b' '; len];
        if n == 0 {
            chunk[0] = b'[';
        }
        if n + 1 == chunks {
            chunk[len - 1] = b']';
        }
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(chunk))
    }));
    let mut response = Response::new(axum::body::Body::from_stream(stream));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
