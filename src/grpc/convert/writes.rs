//! Queued writes in calgate.v1: the mode a write asks for, and a write's
//! record and settlement as GetWrite and WatchChanges show them.

use prost_types::Timestamp;
use time::OffsetDateTime;

use super::pb;
use crate::{
    domain::{
        Error, Violations,
        write_queue::{WriteFailure, WriteKind, WriteRecord, WriteSettled, WriteState},
    },
    grpc::status::item_status,
};

/// Whether a write asks to be queued; an unknown mode is INVALID_ARGUMENT naming `mode`.
pub fn queued(mode: i32) -> Result<bool, Error> {
    match pb::WriteMode::try_from(mode) {
        Ok(pb::WriteMode::Unspecified | pb::WriteMode::Immediate) => Ok(false),
        Ok(pb::WriteMode::Queued) => Ok(true),
        Err(_) => {
            let mut violations = Violations::default();
            violations.add("mode", "must be WRITE_MODE_IMMEDIATE or WRITE_MODE_QUEUED");
            violations.finish().map(|()| false)
        }
    }
}

/// A write's state as calgate.v1 names it.
pub fn write_state(state: WriteState) -> pb::WriteState {
    match state {
        WriteState::Queued => pb::WriteState::Queued,
        WriteState::Delivered => pb::WriteState::Delivered,
        WriteState::Failed => pb::WriteState::Failed,
        WriteState::Superseded => pb::WriteState::Superseded,
    }
}

/// The status an immediate call would have returned.
fn failure_status(failure: Option<WriteFailure>) -> Option<tonic_types::pb::Status> {
    failure.map(|failure| item_status(Err(failure.to_error())))
}

fn timestamp(at: OffsetDateTime) -> Timestamp {
    super::timestamp(at)
}

/// A queued write as GetWrite shows it.
pub fn write(record: WriteRecord) -> pb::Write {
    pb::Write {
        write_id: record.write_id,
        sub: record.sub,
        user_ref: record.user_ref.unwrap_or_default(),
        calendar_id: record.calendar_id,
        event_id: record.event_id,
        kind: match record.kind {
            WriteKind::Upsert => pb::WriteKind::Upsert,
            WriteKind::Delete => pb::WriteKind::Delete,
        } as i32,
        state: write_state(record.state) as i32,
        attempts: record.attempts,
        error: failure_status(record.error),
        accepted_at: Some(timestamp(record.accepted_at)),
        settled_at: record.settled_at.map(timestamp),
        superseded_by: record.superseded_by.unwrap_or_default(),
    }
}

/// A settlement as WatchChanges shows it.
pub fn write_settled(settled: WriteSettled) -> pb::WriteSettled {
    pb::WriteSettled {
        write_id: settled.write_id,
        state: write_state(settled.state) as i32,
        error: failure_status(settled.error),
        calendar_id: settled.calendar_id,
        event_id: settled.event_id,
        superseded_by: settled.superseded_by.unwrap_or_default(),
    }
}
