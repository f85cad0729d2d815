//! How failures of guarded Cronofy calls become domain errors, per kind of call.

use crate::{cronofy::CronofyError, resilience::GuardError};

use super::{Error, Violations};

/// Maps a failed guarded call. `field_prefix` turns Cronofy's field names into
/// request paths (e.g. `event.` + `summary`).
pub(super) fn guard_error(error: GuardError, field_prefix: &str) -> Error {
    match error {
        GuardError::Upstream(error) => api_error(error, field_prefix, "calendar_id"),
        GuardError::BudgetExhausted { retry_after } => Error::RateBudgetExhausted { retry_after },
        GuardError::CircuitOpen { retry_after } => Error::UpstreamUnavailable {
            retry_after: Some(retry_after),
        },
    }
}

/// Maps a failed token-endpoint call made to exchange an authorization code.
pub(super) fn exchange_error(error: GuardError) -> Error {
    match error {
        GuardError::Upstream(CronofyError::InvalidGrant) => Error::CodeInvalid,
        other => guard_error(other, ""),
    }
}

/// Maps Cronofy's answer to an API call (or to one item of a batch): its 422
/// field names become request paths — `field_prefix` + name, and
/// `calendar_field` for the calendar id.
pub(super) fn api_error(error: CronofyError, field_prefix: &str, calendar_field: &str) -> Error {
    match error {
        CronofyError::Forbidden => Error::InsufficientScope,
        CronofyError::NotFound => Error::CalendarNotFound,
        CronofyError::Unprocessable { errors } => {
            // Bounded like calgate's own validation: Cronofy's answer is not ours to trust in size.
            let mut violations = Violations::default();
            for e in errors {
                let field = if e.field == "calendar_id" {
                    calendar_field.to_owned()
                } else {
                    format!("{field_prefix}{}", e.field)
                };
                let description = if e.description.is_empty() {
                    e.key
                } else {
                    format!("{} ({})", e.description, e.key)
                };
                violations.add(field, description);
            }
            Error::UpstreamRejected(violations.into_inner())
        }
        CronofyError::Unauthorized => Error::UpstreamUnauthorized,
        CronofyError::RateLimited { retry_after } => Error::UpstreamRateLimited { retry_after },
        CronofyError::Server { .. } | CronofyError::Transport { .. } => {
            Error::UpstreamUnavailable { retry_after: None }
        }
        CronofyError::InvalidGrant => Error::GrantNeedsReauth,
        CronofyError::TokenRequestRefused { .. } => {
            Error::UpstreamRefused("Cronofy refused the tenant's OAuth client credentials")
        }
        CronofyError::PaymentRequired => Error::UpstreamRefused("the Cronofy plan does not include this feature"),
        CronofyError::Locked => Error::UpstreamRefused("the calendar profile is locked (disconnected at the provider)"),
        CronofyError::UnexpectedStatus { .. } | CronofyError::Decode { .. } => {
            Error::UpstreamRefused("Cronofy gave an unexpected answer")
        }
    }
}
