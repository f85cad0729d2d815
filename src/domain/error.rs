//! The domain's one error type. The gRPC layer maps it to a status in one place.

use std::time::Duration;

/// One bad field of a request, named by its path in the request (e.g. `event.summary`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request message.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
    /// Machine-readable reason: Cronofy's error key (e.g. `errors.required`)
    /// for fields Cronofy refused; empty for calgate's own checks.
    pub reason: String,
}

/// Everything a domain operation can fail with. Clone, so that callers sharing
/// one refresh all receive its outcome.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// One or more request fields are invalid.
    #[error("invalid request: {0}")]
    InvalidArgument(FieldViolations),
    /// The OAuth state is forged, tampered with, already used or for another redirect_uri.
    #[error("state is invalid: {0}")]
    StateInvalid(&'static str),
    /// The state was issued for another user_ref than the caller expected.
    #[error("the state was issued for another user than expected_user_ref")]
    StateUserMismatch,
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
    /// Cronofy answered 404 for something other than a calendar (named).
    #[error("Cronofy found no {0}")]
    UpstreamNotFound(&'static str),
    /// Cronofy answered 422.
    #[error("Cronofy rejected the request: {0}")]
    UpstreamRejected(FieldViolations),
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
    #[error("the Cronofy application's request budget is spent for now")]
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
    /// A WatchChanges cursor whose following changes were removed by retention.
    #[error("the cursor is older than the change stream's retention; start again with an empty cursor")]
    CursorExpired,
    /// The tenant already has its most WatchChanges streams open on this replica.
    #[error("this tenant already has {limit} change streams open on this replica (changes.max_watchers_per_tenant)")]
    WatchersExhausted {
        /// `changes.max_watchers_per_tenant`.
        limit: u32,
    },
    /// Cronofy cannot sync the user's calendar profile: a write would be
    /// accepted and never arrive. The user must relink.
    #[error("the user's calendar is disconnected at Cronofy; writes would not arrive until the user relinks it")]
    ProfileDisconnected {
        /// Where the user relinks, when Cronofy gave a link.
        relink_url: Option<String>,
    },
    /// The replica is shutting down; a stream is ended so the caller resumes elsewhere.
    #[error("this replica is shutting down; reconnect and resume after the last cursor received")]
    ShuttingDown,
    /// No such queued write for this tenant (or it settled longer ago than the retention).
    #[error("write not found")]
    WriteNotFound,
    /// The tenant's queue of writes is full.
    #[error("this tenant already has {limit} queued writes waiting (queue.max_per_tenant)")]
    QueueFull {
        /// `queue.max_per_tenant`.
        limit: u32,
    },
    /// A participant's calendar is not known to Cronofy (No-Access mode, a
    /// disconnected profile): answering would call unknown time free.
    #[error("calgate cannot know the availability of {}", .0.iter().map(|p| p.field.as_str()).collect::<Vec<_>>().join(", "))]
    AvailabilityUnknown(Vec<UnknownAvailability>),
}

/// A participant whose availability Cronofy does not know, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAvailability {
    /// The participant's path in the request (e.g. `participants[0].members[1]`).
    pub field: String,
    /// Why its calendar is not known.
    pub reason: &'static str,
}

impl UnknownAvailability {
    /// Why calgate cannot know the grant's availability, if it cannot. A
    /// No-Access user is known through `managed` availability, if asked for.
    pub fn of(grant: &crate::domain::grant::Grant, managed: bool) -> Option<&'static str> {
        use crate::domain::grant::{AccessMode, GrantStatus};
        if grant.status == GrantStatus::ProfileDisconnected || grant.profiles.disconnected_calendars().next().is_some()
        {
            Some("the user's calendar profile is disconnected at Cronofy and no longer synced; the user must relink it")
        } else if grant.access_mode() == AccessMode::NoAccess && !managed {
            Some("connected in No-Access mode: Cronofy knows only the events this application wrote, not the calendar")
        } else {
            None
        }
    }
}

impl Error {
    /// Whether Cronofy (or the budget in front of it) failed in a way that
    /// may pass: unavailable, rate limited, or no budget left right now.
    pub fn is_upstream_transient(&self) -> bool {
        matches!(
            self,
            Error::UpstreamUnavailable { .. } | Error::UpstreamRateLimited { .. } | Error::RateBudgetExhausted { .. }
        )
    }
}

/// Most field violations one answer lists: enough to fix a request, small
/// enough that a hostile one cannot make a large status (about 4 KiB at most).
pub const MAX_FIELD_VIOLATIONS: usize = 50;

/// Longest field path or description kept (Cronofy's texts included), in bytes.
const MAX_VIOLATION_TEXT: usize = 256;

/// The violations of one request: at most [`MAX_FIELD_VIOLATIONS`] listed,
/// the rest only counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldViolations {
    /// The violations listed in the answer, in the order found.
    pub listed: Vec<FieldViolation>,
    /// How many more were found but not listed.
    pub unlisted: usize,
}

impl std::fmt::Display for FieldViolations {
    /// The first violation and how many others: the whole list travels in
    /// `BadRequest`, not in the status message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(first) = self.listed.first() else {
            return f.write_str("no details");
        };
        write!(f, "{}: {}", first.field, first.description)?;
        let others = self.listed.len() - 1 + self.unlisted;
        if others > 0 {
            write!(f, " (and {others} more)")?;
        }
        Ok(())
    }
}

/// `text` cut to at most [`MAX_VIOLATION_TEXT`] bytes on a character
/// boundary, control characters replaced (Cronofy's texts reach logs too).
fn clip(text: String) -> String {
    let mut text: String = if text.chars().any(char::is_control) {
        text.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
    } else {
        text
    };
    if text.len() > MAX_VIOLATION_TEXT {
        let mut end = MAX_VIOLATION_TEXT - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Collects field violations so that a caller learns of every bad field at
/// once — up to [`MAX_FIELD_VIOLATIONS`]; past that they are only counted.
#[derive(Debug, Default)]
pub struct Violations(FieldViolations);

impl Violations {
    /// Whether the list is full: further violations are only counted.
    fn full(&self) -> bool {
        self.0.listed.len() >= MAX_FIELD_VIOLATIONS
    }

    /// Records a violation.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        if self.full() {
            self.0.unlisted += 1;
            return;
        }
        self.0.listed.push(FieldViolation {
            field: clip(field.into()),
            description: clip(description.into()),
            reason: String::new(),
        });
    }

    /// Records a violation Cronofy reported, with its error key as the reason.
    pub fn add_upstream(&mut self, field: String, description: String, key: String) {
        if self.full() {
            self.0.unlisted += 1;
            return;
        }
        self.0.listed.push(FieldViolation {
            field: clip(field),
            description: clip(description),
            reason: clip(key),
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
    /// and the list has room (field paths are built per call on the hot path).
    pub fn check_with<T>(&mut self, field: impl FnOnce() -> String, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(_) if self.full() => {
                self.0.unlisted += 1;
                None
            }
            Err(description) => {
                self.add(field(), description);
                None
            }
        }
    }

    /// The items of a repeated field to walk: all of them when there are at
    /// most `max`; none when there are more — the list is reported once, as a
    /// whole, and its items are not checked one by one.
    pub fn bounded<'a, T>(&mut self, field: &str, items: &'a [T], max: usize, noun: &str) -> &'a [T] {
        if items.len() > max {
            self.add(field, format!("at most {max} {noun} (got {})", items.len()));
            return &[];
        }
        items
    }

    /// Records every violation of `inner` under `prefix` (e.g. `items[3].upsert.`).
    pub fn nest(&mut self, prefix: &str, inner: Violations) {
        for violation in inner.0.listed {
            self.add(format!("{prefix}{}", violation.field), violation.description);
        }
        self.0.unlisted += inner.0.unlisted;
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.listed.is_empty() && self.0.unlisted == 0
    }

    /// The collected violations, bounded.
    pub fn into_inner(self) -> FieldViolations {
        self.0
    }

    /// `value` when nothing was recorded, else the collected InvalidArgument.
    /// A missing value with nothing recorded (a parser's own mistake) is
    /// reported as a bad `request`, never a panic on a request path.
    pub fn finish_with<T>(mut self, value: Option<T>) -> Result<T, Error> {
        match value {
            Some(value) if self.is_empty() => Ok(value),
            Some(_) => Err(Error::InvalidArgument(self.0)),
            None => {
                if self.is_empty() {
                    self.add("request", "is incomplete");
                }
                Err(Error::InvalidArgument(self.0))
            }
        }
    }

    /// Ok when nothing was recorded, else the collected InvalidArgument.
    pub fn finish(self) -> Result<(), Error> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(self.0))
        }
    }
}

/// Logs why the store failed (once, here) and reports it unavailable.
pub(crate) fn store_failure(tenant: &str, doing: &str, error: &crate::store::StoreError) -> Error {
    tracing::warn!(tenant, %error, "{doing} failed: the store is unavailable");
    Error::StoreUnavailable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_list_fifty_and_count_the_rest() {
        let mut v = Violations::default();
        for n in 0..10_000 {
            v.add(format!("items[{n}]"), "is wrong");
        }
        let mut built = 0;
        v.check_with::<()>(
            || {
                built += 1;
                "never".into()
            },
            Err("bad".into()),
        );
        assert_eq!(built, 0, "no path is built once the list is full");
        let all = v.into_inner();
        assert_eq!(all.listed.len(), MAX_FIELD_VIOLATIONS);
        assert_eq!(all.unlisted, 10_001 - MAX_FIELD_VIOLATIONS);
        assert_eq!(all.to_string(), "items[0]: is wrong (and 10000 more)");
    }

    #[test]
    fn long_texts_are_clipped_on_a_character_boundary() {
        let mut v = Violations::default();
        v.add("é".repeat(1000), "x".repeat(100_000));
        v.add("event.summary", "line\nbreak\u{1b}[31m");
        let all = v.into_inner();
        assert!(all.listed[0].field.len() <= MAX_VIOLATION_TEXT);
        assert!(all.listed[0].description.len() <= MAX_VIOLATION_TEXT);
        assert!(all.listed[0].field.ends_with('…'));
        assert_eq!(all.listed[1].description, "line?break?[31m");
    }

    #[test]
    fn an_oversized_list_is_reported_once_and_not_walked() {
        let mut v = Violations::default();
        let items = vec![0u8; 1_000_000];
        assert!(v.bounded("event.reminders", &items, 5, "reminders").is_empty());
        let all = v.into_inner();
        assert_eq!(all.listed.len(), 1);
        assert_eq!(all.listed[0].description, "at most 5 reminders (got 1000000)");
    }
}
