//! WatchChanges: the request's cursor in, recorded changes out.

use prost_types::Timestamp;

use super::grant_status;
use crate::{
    domain::{
        Error, Violations,
        changes::{Change, ChangeKind, Cursor, EventChangeKind, SeenTime},
    },
    grpc::pb,
};

/// Longest `after` read; calgate's cursors are far shorter.
const MAX_CURSOR_LEN: usize = 64;

/// The cursor to resume after; None (empty) for changes from now on.
pub fn watch_request(request: &pb::WatchChangesRequest) -> Result<Option<Cursor>, Error> {
    if request.after.is_empty() {
        return Ok(None);
    }
    let mut v = Violations::default();
    let cursor = if request.after.len() > MAX_CURSOR_LEN {
        v.add("after", format!("must be at most {MAX_CURSOR_LEN} bytes"));
        None
    } else {
        let cursor = Cursor::parse(&request.after);
        if cursor.is_none() {
            v.add(
                "after",
                "is not a cursor calgate gave out (pass a Change.cursor unchanged)",
            );
        }
        cursor
    };
    v.finish_with(cursor).map(Some)
}

/// A recorded change as calgate.v1 shows it.
pub fn change(change: Change) -> pb::Change {
    let nanos = change.recorded_at.unix_timestamp_nanos();
    pb::Change {
        cursor: change.cursor.to_string(),
        recorded_at: Some(Timestamp {
            seconds: change.recorded_at.unix_timestamp(),
            nanos: nanos.rem_euclid(1_000_000_000) as i32,
        }),
        sub: change.sub,
        user_ref: change.user_ref.unwrap_or_default(),
        change: Some(match change.kind {
            ChangeKind::Grant(grant) => pb::change::Change::Grant(pb::GrantChanged {
                status: grant_status(grant.status) as i32,
                reason: grant.reason.as_str().to_owned(),
                relink_url: grant.relink_url.unwrap_or_default(),
                events_missed_since: grant.events_missed_since.map(|seconds| Timestamp { seconds, nanos: 0 }),
                profiles: super::profiles(grant.profiles),
            }),
            ChangeKind::Event(event) => pb::change::Change::Event(pb::EventChanged {
                calendar_id: event.calendar_id,
                event_id: event.event_id,
                kind: match event.kind {
                    EventChangeKind::Deleted => pb::EventChangeKind::Deleted,
                    EventChangeKind::Updated => pb::EventChangeKind::Updated,
                } as i32,
                start: event.start.map(event_time),
                end: event.end.map(event_time),
                summary: event.summary,
            }),
            ChangeKind::Write(settled) => pb::change::Change::Write(super::write_settled(settled)),
        }),
    }
}

fn event_time(time: SeenTime) -> pb::EventTime {
    pb::EventTime {
        value: Some(match time {
            SeenTime::Time(at) => pb::event_time::Value::Time(Timestamp {
                seconds: at.unix_timestamp(),
                nanos: 0,
            }),
            SeenTime::Date(date) => pb::event_time::Value::Date(date.to_string()),
        }),
        tzid: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(text: &str) -> pb::WatchChangesRequest {
        pb::WatchChangesRequest { after: text.into() }
    }

    #[test]
    fn cursors_are_read_or_refused_naming_after() {
        assert_eq!(watch_request(&after("")).expect("empty"), None);
        assert_eq!(watch_request(&after("c7")).expect("valid"), Some(Cursor(7)));
        for bad in ["7", "c", &"c1".repeat(40)] {
            match watch_request(&after(bad)) {
                Err(Error::InvalidArgument(violations)) => assert_eq!(violations.listed[0].field, "after"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
