//! Errors of the Cronofy client. None of them carries a token, a code, a
//! client secret or a token-endpoint response body.

use std::time::Duration;

/// One field Cronofy refused in a 422 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamFieldError {
    /// Cronofy's field name, e.g. `event_id` or `start`.
    pub field: String,
    /// Machine-readable key, e.g. `errors.required`.
    pub key: String,
    /// Human-readable description.
    pub description: String,
}

/// What went wrong talking to Cronofy.
#[derive(Debug, thiserror::Error)]
pub enum CronofyError {
    /// 400 `invalid_grant` from the token endpoint: the code or refresh token is
    /// unknown, used, revoked, or the redirect_uri differs.
    #[error("Cronofy refused the grant (invalid_grant)")]
    InvalidGrant,
    /// Another 400 from the token endpoint; only the RFC 6749 error code is kept.
    #[error("Cronofy refused the token request ({error})")]
    TokenRequestRefused {
        /// The RFC 6749 `error` code, e.g. `invalid_client`.
        error: String,
    },
    /// 401: the access token is not (or no longer) valid.
    #[error("Cronofy did not recognise the credentials (401)")]
    Unauthorized,
    /// 402: the application's plan lacks the feature.
    #[error("Cronofy plan does not include this feature (402)")]
    PaymentRequired,
    /// 403: recognised credentials without the needed scope.
    #[error("the grant lacks the scope for this call (403)")]
    Forbidden,
    /// 404: the calendar (or resource) is unknown or not granted.
    #[error("Cronofy found no such resource (404)")]
    NotFound,
    /// 422: invalid parameters, with Cronofy's per-field errors.
    #[error("Cronofy rejected the request (422)")]
    Unprocessable {
        /// Cronofy's `errors` map, flattened.
        errors: Vec<UpstreamFieldError>,
    },
    /// 423: the profile is not in a writable state.
    #[error("the calendar profile is locked (423)")]
    Locked,
    /// 429: rate limited.
    #[error("Cronofy rate limit reached (429)")]
    RateLimited {
        /// From the Retry-After header, when present.
        retry_after: Option<Duration>,
    },
    /// 5xx.
    #[error("Cronofy server error ({status})")]
    Server {
        /// The HTTP status.
        status: u16,
    },
    /// A status calgate does not expect from this endpoint.
    #[error("unexpected HTTP status {status} from Cronofy")]
    UnexpectedStatus {
        /// The HTTP status.
        status: u16,
    },
    /// No answer: connect failure, reset, or timeout.
    #[error("cannot reach Cronofy ({kind})")]
    Transport {
        /// `timeout`, `connect` or `io`.
        kind: &'static str,
    },
    /// An answer longer than calgate reads ([`super::response::MAX_ANSWER_BYTES`]).
    #[error("Cronofy's answer from {endpoint} was longer than calgate reads")]
    TooLarge {
        /// Which endpoint answered.
        endpoint: &'static str,
    },
    /// A 2xx answer whose body is not what the API documents.
    #[error("unexpected response body from Cronofy ({endpoint})")]
    Decode {
        /// Which endpoint answered.
        endpoint: &'static str,
    },
}

impl CronofyError {
    /// Whether a retry can help: rate limits, server errors and transport failures.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CronofyError::RateLimited { .. } | CronofyError::Server { .. } | CronofyError::Transport { .. }
        )
    }

    pub(super) fn from_reqwest(error: &reqwest::Error) -> CronofyError {
        // reqwest's own message is not kept: it may quote the URL.
        let kind = if error.is_timeout() {
            "timeout"
        } else if error.is_connect() {
            "connect"
        } else {
            "io"
        };
        CronofyError::Transport { kind }
    }
}
