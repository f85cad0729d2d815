//! The change stream's records: what happened to a tenant's grants, in the
//! order calgate recorded it, each with a cursor a watcher resumes after.

use std::fmt;

use sha2::{Digest, Sha256};
use time::{Date, OffsetDateTime, format_description::well_known::Rfc3339};

use super::{event::EventTime, grant::GrantStatus, profile::Profile};

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
    /// One of the events calgate wrote changed outside calgate.
    Event(EventChange),
    /// A queued write settled.
    Write(super::write_queue::WriteSettled),
}

/// An event calgate wrote, changed by someone else (the user, their calendar app).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventChange {
    /// Its calendar.
    pub calendar_id: String,
    /// The caller's event id.
    pub event_id: String,
    /// Deleted or updated.
    pub kind: EventChangeKind,
    /// Its start now (absent once deleted).
    pub start: Option<SeenTime>,
    /// Its end now (absent once deleted).
    pub end: Option<SeenTime>,
    /// Its summary now (empty once deleted).
    pub summary: String,
}

/// What happened to the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventChangeKind {
    /// It is gone from the calendar.
    Deleted,
    /// Its start, end or summary differ from calgate's last write.
    Updated,
}

/// An event time as Cronofy reads it back in UTC: an instant or an all-day date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeenTime {
    /// An instant, whole seconds.
    Time(OffsetDateTime),
    /// An all-day date.
    Date(Date),
}

impl SeenTime {
    /// Reads Cronofy's form (`2026-03-01T09:00:00Z` or `2026-03-01`).
    pub fn parse(text: &str) -> Option<SeenTime> {
        if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
            return Some(SeenTime::Time(at.replace_nanosecond(0).ok()?));
        }
        let format = time::macros::format_description!("[year]-[month]-[day]");
        Date::parse(text, &format).ok().map(SeenTime::Date)
    }

    /// The time calgate wrote, as Cronofy reads it back.
    pub fn written(time: &EventTime) -> SeenTime {
        match time {
            EventTime::Time(at) | EventTime::Zoned { time: at, .. } => SeenTime::Time(*at),
            EventTime::Date(date) => SeenTime::Date(*date),
        }
    }

    /// One canonical text per value (UTC for instants).
    pub fn canonical(&self) -> String {
        match self {
            SeenTime::Time(at) => at.to_offset(time::UtcOffset::UTC).format(&Rfc3339).unwrap_or_default(),
            SeenTime::Date(date) => date.to_string(),
        }
    }
}

/// What calgate compares of an event: start, end, summary; or that it is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventState {
    /// The event exists with these.
    Present {
        /// Start.
        start: SeenTime,
        /// End.
        end: SeenTime,
        /// Summary.
        summary: String,
    },
    /// The event is deleted.
    Deleted,
}

impl EventState {
    /// A short, fixed-size digest of the state: stored per event, compared
    /// with what Cronofy reads back.
    pub fn digest(&self) -> String {
        match self {
            EventState::Deleted => "deleted".to_owned(),
            EventState::Present { start, end, summary } => {
                let mut hash = Sha256::new();
                for part in [start.canonical().as_str(), end.canonical().as_str(), summary.as_str()] {
                    hash.update((part.len() as u64).to_be_bytes());
                    hash.update(part.as_bytes());
                }
                hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
            }
        }
    }
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
    /// With [`GrantChangeReason::TrackingResumed`]: from when (Unix seconds)
    /// event changes may not have been notified.
    pub events_missed_since: Option<i64>,
    /// With a profile reason: the account's profiles and their states now.
    pub profiles: Vec<Profile>,
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
    /// Cronofy can no longer sync the user's calendar profile (with a relink URL).
    ProfileDisconnected,
    /// The user relinked the profile; the grant is active again.
    ProfileReconnected,
    /// Cronofy had closed the grant's channel; calgate opened a new one and
    /// reads back what changed in the gap.
    TrackingResumed,
    /// A conferencing profile was disconnected: integrated conferencing on
    /// writes fails until the user relinks it.
    ConferencingProfileDisconnected,
    /// A disconnected conferencing profile is connected again.
    ConferencingProfileReconnected,
}

impl GrantChangeReason {
    /// As stored and shown to callers: `CONNECTED`, `REFRESH_REJECTED`, `REVOKED`, ….
    pub fn as_str(self) -> &'static str {
        match self {
            GrantChangeReason::Connected => "CONNECTED",
            GrantChangeReason::RefreshRejected => "REFRESH_REJECTED",
            GrantChangeReason::Revoked => "REVOKED",
            GrantChangeReason::ProfileDisconnected => "PROFILE_DISCONNECTED",
            GrantChangeReason::ProfileReconnected => "PROFILE_RECONNECTED",
            GrantChangeReason::TrackingResumed => "TRACKING_RESUMED",
            GrantChangeReason::ConferencingProfileDisconnected => "CONFERENCING_PROFILE_DISCONNECTED",
            GrantChangeReason::ConferencingProfileReconnected => "CONFERENCING_PROFILE_RECONNECTED",
        }
    }

    /// The stored form back.
    pub fn parse(text: &str) -> Option<GrantChangeReason> {
        match text {
            "CONNECTED" => Some(GrantChangeReason::Connected),
            "REFRESH_REJECTED" => Some(GrantChangeReason::RefreshRejected),
            "REVOKED" => Some(GrantChangeReason::Revoked),
            "PROFILE_DISCONNECTED" => Some(GrantChangeReason::ProfileDisconnected),
            "PROFILE_RECONNECTED" => Some(GrantChangeReason::ProfileReconnected),
            "TRACKING_RESUMED" => Some(GrantChangeReason::TrackingResumed),
            "CONFERENCING_PROFILE_DISCONNECTED" => Some(GrantChangeReason::ConferencingProfileDisconnected),
            "CONFERENCING_PROFILE_RECONNECTED" => Some(GrantChangeReason::ConferencingProfileReconnected),
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
            events_missed_since: None,
            profiles: Vec::new(),
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
            GrantChangeReason::ProfileDisconnected,
            GrantChangeReason::ProfileReconnected,
            GrantChangeReason::TrackingResumed,
            GrantChangeReason::ConferencingProfileDisconnected,
            GrantChangeReason::ConferencingProfileReconnected,
        ] {
            assert_eq!(GrantChangeReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(GrantChangeReason::parse("connected"), None);
    }

    #[test]
    fn a_written_event_and_cronofys_reading_of_it_have_one_digest() {
        let at = time::macros::datetime!(2026-03-01 10:00:00 +01:00);
        let written = EventState::Present {
            start: SeenTime::written(&EventTime::Zoned {
                time: at,
                tzid: "Europe/Paris".into(),
            }),
            end: SeenTime::written(&EventTime::Date(time::macros::date!(2026 - 03 - 02))),
            summary: "Interview".into(),
        };
        let read = EventState::Present {
            start: SeenTime::parse("2026-03-01T09:00:00Z").expect("instant"),
            end: SeenTime::parse("2026-03-02").expect("date"),
            summary: "Interview".into(),
        };
        assert_eq!(written.digest(), read.digest());
        let moved = EventState::Present {
            start: SeenTime::parse("2026-03-01T10:00:00Z").expect("instant"),
            end: SeenTime::parse("2026-03-02").expect("date"),
            summary: "Interview".into(),
        };
        assert_ne!(written.digest(), moved.digest());
        assert_ne!(written.digest(), EventState::Deleted.digest());
        assert_eq!(SeenTime::parse("2026-13-01"), None);
        assert_eq!(SeenTime::parse("soon"), None);
    }
}
