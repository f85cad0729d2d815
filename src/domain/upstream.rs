//! How failures of guarded Cronofy calls become domain errors, per kind of call.

use crate::{cronofy::CronofyError, resilience::GuardError};

use super::{Error, Violations};

/// What Cronofy's answers to one kind of call mean: where its 422 field names
/// point in the request, and what its 404 says is missing.
#[derive(Debug, Clone, Copy)]
pub(super) struct Call<'a> {
    /// Turns Cronofy's field names into request paths (e.g. `event.` + `summary`).
    field_prefix: &'a str,
    /// The request path of the calendar id, for Cronofy's `calendar_id` errors.
    calendar_field: &'a str,
    /// What a 404 means for this endpoint.
    missing: Missing,
}

#[derive(Debug, Clone, Copy)]
enum Missing {
    /// Event calls: the calendar is unknown or not granted (docs: delete-event, upsert-event).
    Calendar,
    /// Any other endpoint: the named resource.
    Resource(&'static str),
}

impl<'a> Call<'a> {
    /// An event call on one calendar: 404 is `CALENDAR_NOT_FOUND`.
    pub(super) const fn event(field_prefix: &'a str, calendar_field: &'a str) -> Call<'a> {
        Call {
            field_prefix,
            calendar_field,
            missing: Missing::Calendar,
        }
    }

    /// A call on something else (batch, free/busy, availability, Enterprise
    /// Connect, tokens): 404 is `UPSTREAM_NOT_FOUND` naming `what`.
    pub(super) const fn other(what: &'static str) -> Call<'static> {
        Call {
            field_prefix: "",
            calendar_field: "calendar_id",
            missing: Missing::Resource(what),
        }
    }
}

/// Maps a failed guarded call.
pub(super) fn guard_error(error: GuardError, call: Call<'_>) -> Error {
    match error {
        GuardError::Upstream(error) => api_error(error, call),
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
        other => guard_error(other, Call::other("authorization")),
    }
}

/// Maps Cronofy's answer to an API call (or to one item of a batch). A 422's
/// fields become request paths, each keeping Cronofy's key as its reason and
/// Cronofy's description as its text (docs: /developers/api/error-codes).
pub(super) fn api_error(error: CronofyError, call: Call<'_>) -> Error {
    match error {
        CronofyError::Forbidden => Error::InsufficientScope,
        CronofyError::NotFound => match call.missing {
            Missing::Calendar => Error::CalendarNotFound,
            Missing::Resource(what) => Error::UpstreamNotFound(what),
        },
        CronofyError::Unprocessable { errors } => {
            // Bounded like calgate's own validation: Cronofy's answer is not ours to trust in size.
            let mut violations = Violations::default();
            for e in errors {
                let field = if e.field == "calendar_id" {
                    call.calendar_field.to_owned()
                } else {
                    format!("{}{}", call.field_prefix, e.field)
                };
                let description = if e.description.is_empty() {
                    e.key.clone()
                } else {
                    e.description
                };
                violations.add_upstream(field, description, e.key);
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
        CronofyError::UnexpectedStatus { .. } | CronofyError::Decode { .. } | CronofyError::TooLarge { .. } => {
            Error::UpstreamRefused("Cronofy gave an unexpected answer")
        }
    }
}
