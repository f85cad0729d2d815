//! A queued write's failure and the domain error it stands for: made from
//! the error a delivery ended with, and back into the error an immediate
//! call would have returned (the gRPC layer makes it a status). Apart from
//! `write_queue.rs` because the store, which holds failures, must not depend
//! on the domain's error type.

use std::time::Duration;

use super::{
    error::{Error, FieldViolation, FieldViolations},
    write_queue::{StoredViolation, WriteFailure},
};

/// The texts `UpstreamNotFound` and `UpstreamRefused` carry: a stored one
/// maps back to its static text, an unknown one to the fallback.
const KNOWN_TEXTS: &[&str] = &[
    "event",
    "events",
    "calendar profile",
    "authorization",
    "batch endpoint",
    "channel",
    "Cronofy gave an unexpected answer",
    "the Cronofy plan does not include this feature",
    "an event could not be encoded",
];

fn known(text: &str, fallback: &'static str) -> &'static str {
    KNOWN_TEXTS
        .iter()
        .find(|known| **known == text)
        .copied()
        .unwrap_or(fallback)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl WriteFailure {
    /// What a delivery's error is kept as.
    pub fn of(error: &Error) -> WriteFailure {
        match error {
            Error::UpstreamRejected(violations) | Error::InvalidArgument(violations) => WriteFailure::Rejected {
                violations: violations
                    .listed
                    .iter()
                    .map(|v| StoredViolation {
                        field: v.field.clone(),
                        description: v.description.clone(),
                        reason: v.reason.clone(),
                    })
                    .collect(),
                unlisted: violations.unlisted,
            },
            Error::GrantNotFound => WriteFailure::GrantNotFound,
            Error::GrantNeedsReauth => WriteFailure::GrantNeedsReauth,
            Error::GrantRevoked => WriteFailure::GrantRevoked,
            Error::GrantIsServiceAccount => WriteFailure::GrantIsServiceAccount,
            Error::InsufficientScope => WriteFailure::InsufficientScope,
            Error::CalendarNotFound => WriteFailure::CalendarNotFound,
            Error::UpstreamNotFound(what) => WriteFailure::NotFound {
                what: (*what).to_owned(),
            },
            Error::UpstreamUnauthorized => WriteFailure::Unauthorized,
            Error::UpstreamRefused(why) => WriteFailure::Refused { why: (*why).to_owned() },
            Error::ProfileDisconnected { relink_url } => WriteFailure::ProfileDisconnected {
                relink_url: relink_url.clone(),
            },
            Error::UpstreamRateLimited { retry_after } => WriteFailure::RateLimited {
                retry_after_ms: retry_after.map(millis),
            },
            Error::UpstreamUnavailable { retry_after } => WriteFailure::Unavailable {
                retry_after_ms: retry_after.map(millis),
            },
            Error::RateBudgetExhausted { retry_after } => WriteFailure::BudgetExhausted {
                retry_after_ms: millis(*retry_after),
            },
            Error::GrantUnreadable => WriteFailure::GrantUnreadable,
            // Nothing else reaches a delivery; kept as the safe, retryable kind.
            _ => WriteFailure::StoreUnavailable,
        }
    }

    /// The domain error back: the gRPC layer makes it the status an
    /// immediate call would have returned.
    pub fn to_error(&self) -> Error {
        match self {
            WriteFailure::Rejected { violations, unlisted } => Error::UpstreamRejected(FieldViolations {
                listed: violations
                    .iter()
                    .map(|v| FieldViolation {
                        field: v.field.clone(),
                        description: v.description.clone(),
                        reason: v.reason.clone(),
                    })
                    .collect(),
                unlisted: *unlisted,
            }),
            WriteFailure::GrantNotFound => Error::GrantNotFound,
            WriteFailure::GrantNeedsReauth => Error::GrantNeedsReauth,
            WriteFailure::GrantRevoked => Error::GrantRevoked,
            WriteFailure::GrantIsServiceAccount => Error::GrantIsServiceAccount,
            WriteFailure::InsufficientScope => Error::InsufficientScope,
            WriteFailure::CalendarNotFound => Error::CalendarNotFound,
            WriteFailure::NotFound { what } => Error::UpstreamNotFound(known(what, "resource")),
            WriteFailure::Unauthorized => Error::UpstreamUnauthorized,
            WriteFailure::Refused { why } => Error::UpstreamRefused(known(why, "Cronofy refused the call")),
            WriteFailure::ProfileDisconnected { relink_url } => Error::ProfileDisconnected {
                relink_url: relink_url.clone(),
            },
            WriteFailure::RateLimited { retry_after_ms } => Error::UpstreamRateLimited {
                retry_after: retry_after_ms.map(Duration::from_millis),
            },
            WriteFailure::Unavailable { retry_after_ms } => Error::UpstreamUnavailable {
                retry_after: retry_after_ms.map(Duration::from_millis),
            },
            WriteFailure::BudgetExhausted { retry_after_ms } => Error::RateBudgetExhausted {
                retry_after: Duration::from_millis(*retry_after_ms),
            },
            WriteFailure::StoreUnavailable => Error::StoreUnavailable,
            WriteFailure::GrantUnreadable => Error::GrantUnreadable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Violations;

    #[test]
    fn a_failure_goes_to_the_store_and_back_as_the_same_error() {
        let mut violations = Violations::default();
        violations.add_upstream("event.summary".into(), "too long".into(), "errors.too_long".into());
        let rejected = Error::UpstreamRejected(violations.into_inner());
        for error in [
            rejected,
            Error::GrantNeedsReauth,
            Error::CalendarNotFound,
            Error::UpstreamRefused("Cronofy gave an unexpected answer"),
            Error::ProfileDisconnected {
                relink_url: Some("https://relink".into()),
            },
            Error::UpstreamUnavailable {
                retry_after: Some(Duration::from_secs(3)),
            },
        ] {
            let failure = WriteFailure::of(&error);
            let back = WriteFailure::from_stored(&failure.to_stored()).expect("parses");
            assert_eq!(back, failure);
            assert_eq!(back.to_error().to_string(), error.to_string());
        }
        assert!(
            WriteFailure::of(&Error::RateBudgetExhausted {
                retry_after: Duration::from_secs(1)
            })
            .is_transient()
        );
        assert!(!WriteFailure::of(&Error::GrantRevoked).is_transient());
        assert!(WriteFailure::from_stored(r#"{"kind":"future"}"#).is_none());
    }
}
