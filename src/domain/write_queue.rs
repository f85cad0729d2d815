//! Queued writes as the domain knows them: their ids, kinds and states, and
//! the failure a settled write keeps — the domain error an immediate call
//! would have returned, in a form the store can hold (made from and back
//! into [`super::Error`] by `write_errors.rs`, which the store never sees).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What a queued write does to its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// UpsertEvent.
    Upsert,
    /// DeleteEvent.
    Delete,
}

impl WriteKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteKind::Upsert => "upsert",
            WriteKind::Delete => "delete",
        }
    }

    /// The stored name back.
    pub fn parse(text: &str) -> Option<WriteKind> {
        [WriteKind::Upsert, WriteKind::Delete]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// Where a write stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteState {
    /// Stored; calgate delivers it.
    Queued,
    /// Cronofy accepted it.
    Delivered,
    /// It will not be delivered.
    Failed,
    /// A newer write to the same event replaced it before it was sent.
    Superseded,
}

impl WriteState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteState::Queued => "queued",
            WriteState::Delivered => "delivered",
            WriteState::Failed => "failed",
            WriteState::Superseded => "superseded",
        }
    }

    /// The stored name back.
    pub fn parse(text: &str) -> Option<WriteState> {
        [
            WriteState::Queued,
            WriteState::Delivered,
            WriteState::Failed,
            WriteState::Superseded,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}

/// A write's id: `w_` and 32 lowercase hex digits, random.
pub fn new_write_id() -> String {
    format!("w_{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// Whether `text` is shaped like a write id (anything else is not looked up).
pub fn is_write_id(text: &str) -> bool {
    text.strip_prefix("w_")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// One queued write, as GetWrite shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRecord {
    /// Its id.
    pub write_id: String,
    /// The grant written to.
    pub sub: String,
    /// The user_ref the caller named it by, if it did.
    pub user_ref: Option<String>,
    /// The event's calendar.
    pub calendar_id: String,
    /// The caller's event id.
    pub event_id: String,
    /// Upsert or delete.
    pub kind: WriteKind,
    /// Where it stands.
    pub state: WriteState,
    /// Delivery attempts made.
    pub attempts: u32,
    /// Once failed, why; while queued, the last attempt's failure.
    pub error: Option<WriteFailure>,
    /// When it was accepted.
    pub accepted_at: OffsetDateTime,
    /// When it settled.
    pub settled_at: Option<OffsetDateTime>,
    /// The write that superseded it.
    pub superseded_by: Option<String>,
}

/// A write settled (what `WriteSettled` on the change stream says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteSettled {
    /// Its id.
    pub write_id: String,
    /// Delivered, failed or superseded.
    pub state: WriteState,
    /// With `Failed`: why.
    pub error: Option<WriteFailure>,
    /// The event's calendar (empty for a forgotten user's write).
    pub calendar_id: String,
    /// The caller's event id (empty for a forgotten user's write).
    pub event_id: String,
    /// With `Superseded`: the newer write.
    pub superseded_by: Option<String>,
}

/// A field violation as stored with a failed write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredViolation {
    /// Request path.
    pub field: String,
    /// What is wrong.
    pub description: String,
    /// Cronofy's error key, or empty.
    #[serde(default)]
    pub reason: String,
}

/// Why a write failed, as stored: the domain error an immediate call would
/// have returned ([`WriteFailure::of`] and [`WriteFailure::to_error`] go
/// there and back), so GetWrite and WriteSettled carry the same status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WriteFailure {
    /// Cronofy answered 422 (its field keys kept).
    Rejected {
        /// The violations listed.
        violations: Vec<StoredViolation>,
        /// How many more there were.
        #[serde(default)]
        unlisted: usize,
    },
    /// The grant is gone (or its user was forgotten).
    GrantNotFound,
    /// The grant needs its user to connect again.
    GrantNeedsReauth,
    /// The grant was revoked.
    GrantRevoked,
    /// The grant is a service account.
    GrantIsServiceAccount,
    /// Cronofy answered 403.
    InsufficientScope,
    /// The calendar is gone.
    CalendarNotFound,
    /// Cronofy answered 404 for something else.
    NotFound {
        /// What.
        what: String,
    },
    /// Cronofy refused the token even after a refresh.
    Unauthorized,
    /// Cronofy refused the call for a reason no retry fixes.
    Refused {
        /// Why.
        why: String,
    },
    /// The calendar's profile is disconnected.
    ProfileDisconnected {
        /// Where the user relinks.
        relink_url: Option<String>,
    },
    /// Cronofy answered 429.
    RateLimited {
        /// Its Retry-After, in milliseconds.
        retry_after_ms: Option<u64>,
    },
    /// Cronofy answered 5xx, could not be reached, or its breaker is open.
    Unavailable {
        /// When to try again, in milliseconds.
        retry_after_ms: Option<u64>,
    },
    /// The application's budget was spent.
    BudgetExhausted {
        /// When there is room, in milliseconds.
        retry_after_ms: u64,
    },
    /// The store failed.
    StoreUnavailable,
    /// The grant's tokens cannot be decrypted.
    GrantUnreadable,
}

impl WriteFailure {
    /// Whether a later attempt may succeed: Cronofy down or slow, its rate
    /// limit, the budget, the store. Everything else fails the write at once.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            WriteFailure::RateLimited { .. }
                | WriteFailure::Unavailable { .. }
                | WriteFailure::BudgetExhausted { .. }
                | WriteFailure::StoreUnavailable
        )
    }

    /// When Cronofy or the budget said to try again, if either did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            WriteFailure::RateLimited { retry_after_ms } | WriteFailure::Unavailable { retry_after_ms } => {
                retry_after_ms.map(Duration::from_millis)
            }
            WriteFailure::BudgetExhausted { retry_after_ms } => Some(Duration::from_millis(*retry_after_ms)),
            _ => None,
        }
    }

    /// As stored (JSON).
    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).expect("a failure of strings and numbers always serializes")
    }

    /// The stored form back; None when it is not calgate's.
    pub fn from_stored(text: &str) -> Option<WriteFailure> {
        serde_json::from_str(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_ids_are_recognised_by_shape() {
        let id = new_write_id();
        assert!(is_write_id(&id), "{id}");
        for bad in ["", "w_", "w_XYZ", &format!("x{}", &id[1..]), &format!("{id}0")] {
            assert!(!is_write_id(bad), "{bad}");
        }
    }
}
