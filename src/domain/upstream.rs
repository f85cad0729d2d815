//! How Cronofy's failures become domain errors, per kind of call.

use crate::cronofy::CronofyError;

use super::{Error, FieldViolation};

/// Maps a failed API call (events, calendars). `field_prefix` turns Cronofy's
/// field names into request paths (e.g. `event.` + `summary`).
pub(super) fn api_error(error: CronofyError, field_prefix: &str) -> Error {
    match error {
        CronofyError::Forbidden => Error::InsufficientScope,
        CronofyError::NotFound => Error::CalendarNotFound,
        CronofyError::Unprocessable { errors } => Error::UpstreamRejected(
            errors
                .into_iter()
                .map(|e| FieldViolation {
                    field: if e.field == "calendar_id" {
                        e.field
                    } else {
                        format!("{field_prefix}{}", e.field)
                    },
                    description: if e.description.is_empty() {
                        e.key
                    } else {
                        format!("{} ({})", e.description, e.key)
                    },
                })
                .collect(),
        ),
        CronofyError::Unauthorized => Error::UpstreamUnauthorized,
        other => shared(other),
    }
}

/// Maps a failed token-endpoint call made to exchange an authorization code.
pub(super) fn exchange_error(error: CronofyError) -> Error {
    match error {
        CronofyError::InvalidGrant => Error::CodeInvalid,
        other => shared(other),
    }
}

/// Failures that mean the same whatever the call.
pub(super) fn shared(error: CronofyError) -> Error {
    match error {
        CronofyError::RateLimited { retry_after } => Error::UpstreamRateLimited { retry_after },
        CronofyError::Server { .. } | CronofyError::Transport { .. } => Error::UpstreamUnavailable,
        CronofyError::InvalidGrant => Error::GrantNeedsReauth,
        CronofyError::TokenRequestRefused { .. } => {
            Error::UpstreamRefused("Cronofy refused the tenant's OAuth client credentials")
        }
        CronofyError::PaymentRequired => Error::UpstreamRefused("the Cronofy plan does not include this feature"),
        CronofyError::Locked => Error::UpstreamRefused("the calendar profile is locked (disconnected at the provider)"),
        CronofyError::Unauthorized => Error::UpstreamUnauthorized,
        CronofyError::Forbidden => Error::InsufficientScope,
        CronofyError::NotFound => Error::CalendarNotFound,
        CronofyError::Unprocessable { .. } | CronofyError::UnexpectedStatus { .. } | CronofyError::Decode { .. } => {
            Error::UpstreamRefused("Cronofy gave an unexpected answer")
        }
    }
}
