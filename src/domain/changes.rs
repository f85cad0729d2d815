//! The change stream's records: what happened to a tenant's grants, in the
//! order calgate recorded it, each with a cursor a watcher resumes after.

use std::fmt;

use time::OffsetDateTime;

use super::grant::GrantStatus;

/// A position in one tenant's change stream: the number of the last change a
/// watcher processed. Shown to callers as `c<number>`; callers treat it as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor(pub i64);

impl Cursor {
    /// Parses a cursor as calgate wrote it; None for anything else.
    pub fn parse(text: &str) -> Option<Cursor> {
        let digits = text.strip_prefix('c')?;
        if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(Cursor)
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Resume after this to receive the changes recorded after this one.
    pub cursor: Cursor,
    /// When calgate recorded it.
    pub recorded_at: OffsetDateTime,
    /// The grant it concerns.
    pub sub: String,
    /// The user_ref bound to that grant most recently, when there is one.
    pub user_ref: Option<String>,
    /// What changed.
    pub kind: ChangeKind,
}

/// What a change is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// A grant's status changed.
    Grant(GrantChange),
}

/// A grant's new status and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantChange {
    /// The status the grant is in now.
    pub status: GrantStatus,
    /// Why it changed.
    pub reason: GrantChangeReason,
    /// Where the user can relink a disconnected calendar profile, when Cronofy gave one.
    pub relink_url: Option<String>,
}

/// Why a grant changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantChangeReason {
    /// The user connected (or connected again): ExchangeCode, or an Enterprise
    /// Connect member authorization that completed.
    Connected,
    /// Cronofy refused the grant's refresh token: the grant needs the user again.
    RefreshRejected,
    /// The grant was revoked through RevokeGrant.
    Revoked,
}

impl GrantChangeReason {
    /// As stored and shown to callers: `CONNECTED`, `REFRESH_REJECTED`, `REVOKED`.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantChangeReason::Connected => "CONNECTED",
            GrantChangeReason::RefreshRejected => "REFRESH_REJECTED",
            GrantChangeReason::Revoked => "REVOKED",
        }
    }

    /// The stored form back.
    pub fn parse(text: &str) -> Option<GrantChangeReason> {
        match text {
            "CONNECTED" => Some(GrantChangeReason::Connected),
            "REFRESH_REJECTED" => Some(GrantChangeReason::RefreshRejected),
            "REVOKED" => Some(GrantChangeReason::Revoked),
            _ => None,
        }
    }
}

impl GrantChange {
    /// The change a status change records.
    pub fn new(status: GrantStatus, reason: GrantChangeReason) -> GrantChange {
        GrantChange {
            status,
            reason,
            relink_url: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_only_in_calgates_own_form() {
        for seq in [0, 1, 42, i64::MAX] {
            assert_eq!(Cursor::parse(&Cursor(seq).to_string()), Some(Cursor(seq)));
        }
        for bad in [
            "",
            "c",
            "42",
            "c-1",
            "c+1",
            "c1.5",
            "c 1",
            "C1",
            "c99999999999999999999",
            "c١",
        ] {
            assert_eq!(Cursor::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reasons_round_trip() {
        for reason in [
            GrantChangeReason::Connected,
            GrantChangeReason::RefreshRejected,
            GrantChangeReason::Revoked,
        ] {
            assert_eq!(GrantChangeReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(GrantChangeReason::parse("connected"), None);
    }
}
