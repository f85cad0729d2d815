//! The one place where failures become gRPC statuses (contract §4): every
//! status carries `google.rpc.ErrorInfo` (domain `calgate`), plus `BadRequest`
//! or `RetryInfo` where they help.

use std::{collections::HashMap, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    auth::AuthError,
    domain::{Error, FieldViolations},
};

/// ErrorInfo domain of every calgate status.
pub const DOMAIN: &str = "calgate";

/// When Cronofy gave no Retry-After, callers are told to wait this long.
const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);

fn status(code: Code, reason: &str, message: impl Into<String>, mut details: ErrorDetails) -> Status {
    details.set_error_info(reason, DOMAIN, HashMap::new());
    Status::with_error_details(code, message, details)
}

impl From<Error> for Status {
    /// Lets handlers use `?` on domain results.
    fn from(error: Error) -> Status {
        from_domain(error)
    }
}

/// Maps a domain error to its status: the one table.
pub fn from_domain(error: Error) -> Status {
    let message = error.to_string();
    let plain = ErrorDetails::new;
    match error {
        Error::InvalidArgument(violations) => status(
            Code::InvalidArgument,
            "FIELD_INVALID",
            message,
            bad_request(&violations),
        ),
        Error::StateInvalid(_) => status(Code::InvalidArgument, "STATE_INVALID", message, plain()),
        Error::StateExpired => status(Code::InvalidArgument, "STATE_EXPIRED", message, plain()),
        Error::StateUserMismatch => status(Code::FailedPrecondition, "STATE_USER_MISMATCH", message, plain()),
        Error::GrantNotFound => status(Code::NotFound, "GRANT_NOT_FOUND", message, plain()),
        Error::GrantNeedsReauth => status(Code::FailedPrecondition, "GRANT_NEEDS_REAUTH", message, plain()),
        Error::GrantRevoked => status(Code::FailedPrecondition, "GRANT_REVOKED", message, plain()),
        Error::GrantIsServiceAccount => status(Code::FailedPrecondition, "GRANT_IS_SERVICE_ACCOUNT", message, plain()),
        Error::CodeInvalid => status(Code::FailedPrecondition, "CODE_INVALID", message, plain()),
        Error::InsufficientScope => status(Code::PermissionDenied, "INSUFFICIENT_SCOPE", message, plain()),
        Error::CalendarNotFound => status(Code::NotFound, "CALENDAR_NOT_FOUND", message, plain()),
        Error::UpstreamNotFound(_) => status(Code::NotFound, "UPSTREAM_NOT_FOUND", message, plain()),
        Error::UpstreamRejected(violations) => status(
            Code::InvalidArgument,
            "UPSTREAM_REJECTED",
            message,
            bad_request(&violations),
        ),
        Error::UpstreamRateLimited { retry_after } => status(
            Code::ResourceExhausted,
            "UPSTREAM_RATE_LIMITED",
            message,
            ErrorDetails::with_retry_info(Some(retry_after.unwrap_or(DEFAULT_RETRY_DELAY))),
        ),
        Error::UpstreamUnavailable { retry_after } => status(
            Code::Unavailable,
            "UPSTREAM_UNAVAILABLE",
            message,
            retry_after.map_or_else(plain, |delay| ErrorDetails::with_retry_info(Some(delay))),
        ),
        Error::RateBudgetExhausted { retry_after } => status(
            Code::ResourceExhausted,
            "RATE_BUDGET_EXHAUSTED",
            message,
            ErrorDetails::with_retry_info(Some(retry_after)),
        ),
        Error::UpstreamUnauthorized => status(Code::FailedPrecondition, "UPSTREAM_UNAUTHORIZED", message, plain()),
        Error::UpstreamRefused(_) => status(Code::FailedPrecondition, "UPSTREAM_REFUSED", message, plain()),
        Error::StoreUnavailable => status(Code::Unavailable, "STORE_UNAVAILABLE", message, plain()),
        Error::GrantUnreadable => status(Code::Internal, "GRANT_UNREADABLE", message, plain()),
        Error::CallbacksNotConfigured => status(Code::FailedPrecondition, "CALLBACKS_NOT_CONFIGURED", message, plain()),
        Error::GrantNotServiceAccount => {
            status(Code::FailedPrecondition, "GRANT_NOT_SERVICE_ACCOUNT", message, plain())
        }
        Error::AuthorizationNotFound => status(Code::NotFound, "AUTHORIZATION_NOT_FOUND", message, plain()),
        Error::CursorExpired => status(Code::OutOfRange, "CURSOR_EXPIRED", message, plain()),
        Error::WatchersExhausted { .. } => status(
            Code::ResourceExhausted,
            "WATCHERS_EXHAUSTED",
            message,
            ErrorDetails::with_retry_info(Some(DEFAULT_RETRY_DELAY)),
        ),
        Error::ShuttingDown => status(Code::Unavailable, "SHUTTING_DOWN", message, plain()),
        Error::WriteNotFound => status(Code::NotFound, "WRITE_NOT_FOUND", message, plain()),
        Error::QueueFull { .. } => status(
            Code::ResourceExhausted,
            "QUEUE_FULL",
            message,
            ErrorDetails::with_retry_info(Some(DEFAULT_RETRY_DELAY)),
        ),
        Error::AvailabilityUnknown(participants) => {
            let mut details = ErrorDetails::new();
            for participant in &participants {
                details.add_precondition_failure_violation(
                    "AVAILABILITY_UNKNOWN",
                    &participant.field,
                    participant.reason,
                );
            }
            status(Code::FailedPrecondition, "AVAILABILITY_UNKNOWN", message, details)
        }
        Error::ProfileDisconnected { relink_url } => {
            let mut details = ErrorDetails::new();
            let metadata = relink_url
                .map(|url| HashMap::from([("relink_url".to_owned(), url)]))
                .unwrap_or_default();
            details.set_error_info("PROFILE_DISCONNECTED", DOMAIN, metadata);
            Status::with_error_details(Code::FailedPrecondition, message, details)
        }
    }
}

/// The caller's tenant has `limit` calls in flight on this replica already.
pub fn tenant_concurrency_exhausted(limit: u32) -> Status {
    status(
        Code::ResourceExhausted,
        "TENANT_CONCURRENCY_EXHAUSTED",
        format!("this tenant already has {limit} calls in flight (grpc.tenant_calls_in_flight)"),
        ErrorDetails::with_retry_info(Some(DEFAULT_RETRY_DELAY)),
    )
}

/// Large requests being decoded hold all of `limit` bytes already.
pub fn decode_budget_exhausted(limit: usize) -> Status {
    status(
        Code::ResourceExhausted,
        "DECODE_BUDGET_EXHAUSTED",
        format!(
            "calgate is receiving {} MiB of large requests already (grpc.max_decoding_bytes); retry",
            limit / (1024 * 1024)
        ),
        ErrorDetails::with_retry_info(Some(DEFAULT_RETRY_DELAY)),
    )
}

/// `service` has `limit` streams open already (`setting`).
pub fn streams_exhausted(service: &str, setting: &str, limit: usize) -> Status {
    status(
        Code::ResourceExhausted,
        "STREAMS_EXHAUSTED",
        format!("{service} has {limit} streams open already ({setting}); retry"),
        ErrorDetails::with_retry_info(Some(DEFAULT_RETRY_DELAY)),
    )
}

/// A request did not arrive whole within `timeout` (`grpc.request_read_timeout`).
pub fn request_read_timeout(timeout: std::time::Duration) -> Status {
    status(
        Code::DeadlineExceeded,
        "REQUEST_READ_TIMEOUT",
        format!(
            "the request did not arrive whole within {} ms (grpc.request_read_timeout)",
            timeout.as_millis()
        ),
        ErrorDetails::new(),
    )
}

/// Maps an authentication failure.
pub fn from_auth(error: AuthError) -> Status {
    status(
        Code::Unauthenticated,
        "API_KEY_INVALID",
        error.to_string(),
        ErrorDetails::new(),
    )
}

fn bad_request(violations: &FieldViolations) -> ErrorDetails {
    let violations: Vec<tonic_types::FieldViolation> = violations
        .listed
        .iter()
        .map(|violation| {
            let mut field = tonic_types::FieldViolation::new(&violation.field, &violation.description);
            // Cronofy's key (e.g. `errors.required`) for fields Cronofy refused.
            field.reason.clone_from(&violation.reason);
            field
        })
        .collect();
    if violations.is_empty() {
        return ErrorDetails::new();
    }
    ErrorDetails::with_bad_request(violations)
}

/// One batch item's outcome as a `google.rpc.Status`: code 0 when it
/// succeeded, else exactly the status (with details) a single call would get.
pub fn item_status(outcome: Result<(), Error>) -> tonic_types::pb::Status {
    match outcome {
        Ok(()) => tonic_types::pb::Status {
            code: Code::Ok as i32,
            message: String::new(),
            details: vec![],
        },
        Err(error) => {
            let status = from_domain(error);
            // tonic carries the details as an encoded google.rpc.Status.
            prost::Message::decode(status.details()).unwrap_or_else(|_| tonic_types::pb::Status {
                code: status.code() as i32,
                message: status.message().to_owned(),
                details: vec![],
            })
        }
    }
}
