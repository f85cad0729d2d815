//! Bulk deletes Cronofy accepted but has not applied yet. `DELETE /v1/events`
//! answers 202 ("accepted for processing") and the docs say nothing of when
//! the events go, nor whether a revocation in between still lets them go.
//! The fake takes the strict reading (docs/cronofy-mapping.md lists it as an
//! assumption): each accepted bulk delete is applied `delay` later, to the
//! events it named when it was accepted, and one still queued when the
//! authorization that asked for it is revoked is dropped — its events stay.

use std::time::{Duration, Instant};

use super::{
    FakeCronofy,
    state::{ChangedBy, EventKey, State},
};

/// How long after its 202 a bulk delete is applied, unless a test says otherwise.
pub(crate) const DEFAULT_DELAY: Duration = Duration::from_millis(300);

/// Accepted bulk deletes, oldest first.
#[derive(Debug)]
pub(crate) struct QueuedDeletes {
    /// How long after acceptance each is applied.
    pub(super) delay: Duration,
    queue: Vec<QueuedDelete>,
}

#[derive(Debug)]
struct QueuedDelete {
    client_id: String,
    sub: String,
    /// The events it deletes: those of the application in the named calendars when it was accepted.
    doomed: Vec<EventKey>,
    due: Instant,
}

impl Default for QueuedDeletes {
    fn default() -> Self {
        QueuedDeletes {
            delay: DEFAULT_DELAY,
            queue: Vec::new(),
        }
    }
}

impl QueuedDeletes {
    /// Queues the deletion of `doomed`, an application's events in the account `sub`.
    pub(super) fn accept(&mut self, client_id: &str, sub: &str, doomed: Vec<EventKey>) {
        self.queue.push(QueuedDelete {
            client_id: client_id.to_owned(),
            sub: sub.to_owned(),
            doomed,
            due: Instant::now() + self.delay,
        });
    }

    /// Drops the deletes an ended authorization asked for: of application
    /// `client_id` (every application's when None) in the account `sub`.
    pub(super) fn drop_revoked(&mut self, client_id: Option<&str>, sub: &str) {
        self.queue
            .retain(|queued| queued.sub != sub || client_id.is_some_and(|client| client != queued.client_id));
    }

    fn take_due(&mut self, everything: bool) -> Vec<QueuedDelete> {
        let now = Instant::now();
        let (due, later) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|queued| everything || queued.due <= now);
        self.queue = later;
        due
    }
}

impl State {
    /// Applies the queued bulk deletes that are due (all of them with `everything`).
    pub(super) fn apply_queued_deletes(&mut self, everything: bool) {
        if self.queued_deletes.queue.is_empty() {
            return;
        }
        for queued in self.queued_deletes.take_due(everything) {
            if let Some(account) = self.accounts.get_mut(&queued.sub) {
                for key in &queued.doomed {
                    account.drop_event(key, ChangedBy::Application);
                }
            }
        }
    }
}

impl FakeCronofy {
    /// How long after its 202 a bulk delete is applied (default 300 ms).
    pub fn apply_bulk_deletes_after(&self, delay: Duration) {
        self.shared.lock().queued_deletes.delay = delay;
    }

    /// Applies every accepted bulk delete now, as if its time had come.
    pub fn apply_queued_deletes(&self) {
        self.shared.lock().apply_queued_deletes(true);
    }

    /// Bulk deletes accepted and not applied yet.
    pub fn queued_deletes(&self) -> usize {
        self.shared.lock().queued_deletes.queue.len()
    }
}
