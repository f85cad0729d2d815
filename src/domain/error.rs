//! The domain's one error type. The gRPC layer maps it to a status in one place.

use std::time::Duration;

/// One bad field of a request, named by its path in the request (e.g. `event.summary`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request message.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

/// Everything a domain operation can fail with. Clone, so that callers sharing
/// one refresh all receive its outcome.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// One or more request fields are invalid.
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The OAuth state is forged, tampered with, already used or for another redirect_uri.
    #[error("state is invalid: {0}")]
    StateInvalid(&'static str),
    /// The OAuth state is past its expiry.
    #[error("state has expired")]
    StateExpired,
    /// No such grant for this tenant (or it belongs to another tenant).
    #[error("grant not found")]
    GrantNotFound,
    /// The grant needs the user to connect again.
    #[error("grant needs re-authorization")]
    GrantNeedsReauth,
    /// The grant was revoked.
    #[error("grant was revoked")]
    GrantRevoked,
    /// An event call named an Enterprise Connect service account.
    #[error("grant is a service account; write to its members instead")]
    GrantIsServiceAccount,
    /// Cronofy refused the authorization code (unknown, used, or redirect_uri differs).
    #[error("authorization code is invalid or already used")]
    CodeInvalid,
    /// Cronofy answered 403: the grant lacks a scope.
    #[error("grant lacks the scope for this call")]
    InsufficientScope,
    /// Cronofy answered 404 for the calendar.
    #[error("calendar not found")]
    CalendarNotFound,
    /// Cronofy answered 422.
    #[error("Cronofy rejected the request: {}", describe(.0))]
    UpstreamRejected(Vec<FieldViolation>),
    /// Cronofy answered 429.
    #[error("Cronofy rate limit reached")]
    UpstreamRateLimited {
        /// When to try again, if Cronofy said.
        retry_after: Option<Duration>,
    },
    /// Cronofy answered 5xx or could not be reached (after retries), or the
    /// circuit breaker is open.
    #[error("Cronofy is unavailable")]
    UpstreamUnavailable {
        /// When trying again makes sense, if known (an open breaker's cool-down).
        retry_after: Option<Duration>,
    },
    /// The tenant's own request budget towards Cronofy is spent for now.
    #[error("the tenant's Cronofy request budget is spent for now")]
    RateBudgetExhausted {
        /// How long until there is room.
        retry_after: Duration,
    },
    /// Cronofy refused the access token even after a refresh.
    #[error("Cronofy does not accept the grant's credentials")]
    UpstreamUnauthorized,
    /// Cronofy refused the call for a reason the caller cannot fix by changing the request
    /// (plan limits, locked profile, unexpected answers, rejected client credentials).
    #[error("Cronofy refused the call: {0}")]
    UpstreamRefused(&'static str),
    /// The credential store cannot be reached.
    #[error("credential store unavailable")]
    StoreUnavailable,
    /// Enterprise Connect member authorization needs `[callbacks]` configured.
    #[error("Enterprise Connect callbacks are not configured ([callbacks] listen and public_url)")]
    CallbacksNotConfigured,
    /// The named grant is not an Enterprise Connect service account.
    #[error("the grant is not an Enterprise Connect service account")]
    GrantNotServiceAccount,
    /// No such member authorization for this tenant.
    #[error("enterprise user authorization not found")]
    AuthorizationNotFound,
    /// The stored grant cannot be decrypted: its encryption key is no longer
    /// configured (or the row was tampered with). An operator must act.
    #[error("the stored grant cannot be read; an operator has been alerted in the logs")]
    GrantUnreadable,
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Collects field violations so that a caller learns of every bad field at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// Records a violation.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Keeps the value of a passed rule; records the failure of a failed one.
    pub fn check<T>(&mut self, field: impl Into<String>, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(description) => {
                self.add(field, description);
                None
            }
        }
    }

    /// As [`Violations::check`], naming the field only when the rule failed
    /// (field paths are built per call on the hot path; most calls pass).
    pub fn check_with<T>(&mut self, field: impl FnOnce() -> String, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(description) => {
                self.add(field(), description);
                None
            }
        }
    }

    /// Records every violation of `inner` under `prefix` (e.g. `items[3].upsert.`).
    pub fn nest(&mut self, prefix: &str, inner: Violations) {
        self.0.extend(inner.0.into_iter().map(|v| FieldViolation {
            field: format!("{prefix}{}", v.field),
            description: v.description,
        }));
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Ok when nothing was recorded, else the collected InvalidArgument.
    pub fn finish(self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(self.0))
        }
    }
}
