//! WatchChanges: a tenant's recorded changes, in order, from a cursor on.
//!
//! Each watcher is one pump task, owned by the server's [`crate::tasks::Tasks`]:
//! it reads the store a page at a time, hands changes to a small channel (a
//! slow watcher holds at most one page and the channel's few), sleeps on the
//! replica's change feed when it has caught up, and ends on shutdown with
//! UNAVAILABLE `SHUTTING_DOWN` so the caller reconnects (elsewhere) with its cursor.
//! The channel keeps one place for that final status ([`LastWord`]): a
//! watcher too slow to empty it still learns why its stream ended, instead
//! of seeing it end OK.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::{debug, warn};

use super::{Channels, Credentials, store_failure, wake::Wake};
use crate::domain::{
    Error, Tenant, Violations,
    changes::{Change, Cursor},
};
use crate::telemetry::metrics::METRICS;
use crate::{clock::Clock, cronofy::CronofyClient, resilience::Resilience, store::Store, tasks::Tasks};
use std::time::Duration;

/// Changes read from the store at once.
const PAGE: i64 = 100;
/// Changes waiting for a slow watcher, beyond the page being sent.
const SEND_BUFFER: usize = 16;

/// What a watcher receives: changes, then perhaps the error that ended the stream.
pub type ChangeReceiver = mpsc::Receiver<Result<Change, Error>>;

/// Change streams (WatchChanges), push notifications and what they announce.
#[derive(Debug)]
pub struct ChangeService {
    pub(super) store: Store,
    pub(super) cronofy: CronofyClient,
    pub(super) resilience: Arc<Resilience>,
    pub(super) clock: Clock,
    pub(super) credentials: Arc<Credentials>,
    pub(super) channels: Arc<Channels>,
    pub(super) tasks: Tasks,
    /// How long recorded changes are kept.
    pub(super) change_retention: Duration,
    /// Open WatchChanges streams, bounded per tenant.
    pub(super) watchers: Watchers,
    /// Signalled when a notification is queued or a coalesced repeat falls due.
    pub(super) notifications_due: Wake,
}

/// Places for open watchers, per tenant (`changes.max_watchers_per_tenant`).
#[derive(Debug)]
pub(super) struct Watchers {
    limit: u32,
    places: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Watchers {
    pub(super) fn new(limit: u32) -> Watchers {
        Watchers {
            limit,
            places: Mutex::default(),
        }
    }

    /// A place for one more of the tenant's watchers, held until its stream ends.
    fn admit(&self, tenant: &str) -> Result<OwnedSemaphorePermit, Error> {
        let places = self
            .places
            .lock()
            .expect("watcher places lock is never poisoned")
            .entry(tenant.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.limit as usize)))
            .clone();
        places
            .try_acquire_owned()
            .map_err(|_| Error::WatchersExhausted { limit: self.limit })
    }
}

impl ChangeService {
    /// Opens a stream of the tenant's changes recorded after `after`, or
    /// from now on when it is None. Fails at once for a cursor the stream
    /// never reached (INVALID_ARGUMENT) or one whose successors were removed
    /// by retention (`CURSOR_EXPIRED`).
    pub async fn watch_changes(&self, tenant: &Tenant, after: Option<Cursor>) -> Result<ChangeReceiver, Error> {
        let place = self.watchers.admit(&tenant.id)?;
        let position = self
            .store
            .stream_position(&tenant.id)
            .await
            .map_err(|error| store_failure(&tenant.id, "reading the change stream", &error))?;
        let start = match after {
            None => Cursor(position.last),
            Some(cursor) if cursor.0 > position.last => {
                let mut v = Violations::default();
                v.add("after", "is not a cursor of this tenant's change stream");
                return Err(Error::InvalidArgument(v.into_inner()));
            }
            Some(cursor) if cursor.0 < position.pruned_through => return Err(Error::CursorExpired),
            Some(cursor) => cursor,
        };
        let (sender, last_word, receiver) = channel_with_last_word(SEND_BUFFER);
        let pump = Pump {
            store: self.store.clone(),
            tenant: tenant.id.clone(),
            cursor: start,
            sender,
            last_word,
            shutdown: self.tasks.shutdown(),
            _place: place,
        };
        self.tasks.spawn(pump.run());
        Ok(receiver)
    }

    /// Removes changes recorded longer ago than the retention, and what
    /// calgate knew of events deleted that long ago. Returns how many changes went.
    pub async fn prune_changes(&self) -> Result<u64, Error> {
        let cutoff = self.clock.now() - self.change_retention;
        let before_ms = (cutoff.unix_timestamp_nanos() / 1_000_000) as i64;
        let removed = self
            .store
            .prune_changes(before_ms)
            .await
            .map_err(|error| store_failure("*", "pruning the change stream", &error))?;
        self.store
            .prune_event_writes(cutoff.unix_timestamp())
            .await
            .map_err(|error| store_failure("*", "pruning deleted events", &error))?;
        // A settled queued write stays for GetWrite as long as its WriteSettled change does.
        self.store
            .prune_settled_writes(before_ms)
            .await
            .map_err(|error| store_failure("*", "pruning settled writes", &error))?;
        let forgotten = self.clock.now() - super::notifications::NOTIFICATION_MARKER_RETENTION;
        self.store
            .prune_processed_notifications(forgotten.unix_timestamp())
            .await
            .map_err(|error| store_failure("*", "pruning processed notifications", &error))?;
        Ok(removed)
    }
}

/// One watcher's reader (see the module documentation).
struct Pump {
    store: crate::store::Store,
    tenant: String,
    cursor: Cursor,
    sender: mpsc::Sender<Result<Change, Error>>,
    last_word: LastWord,
    shutdown: tokio_util::sync::CancellationToken,
    _place: OwnedSemaphorePermit,
}

/// The place kept in a watcher's channel for the status that ends its stream.
struct LastWord(Option<mpsc::OwnedPermit<Result<Change, Error>>>);

impl LastWord {
    /// Ends the stream with `error`; it always fits, however full the channel.
    fn say(&mut self, error: Error) {
        if let Some(place) = self.0.take() {
            place.send(Err(error));
        }
    }
}

/// A channel of `buffer` changes, plus one place kept for the final status.
fn channel_with_last_word(buffer: usize) -> (mpsc::Sender<Result<Change, Error>>, LastWord, ChangeReceiver) {
    let (sender, receiver) = mpsc::channel(buffer + 1);
    // A new channel has room: the reservation cannot fail.
    let place = sender.clone().try_reserve_owned().ok();
    (sender, LastWord(place), receiver)
}

/// Why a pump stopped.
enum Stop {
    /// The watcher went away.
    Gone,
    /// The stream ends with this error.
    Failed(Error),
}

impl Pump {
    async fn run(mut self) {
        METRICS.change_watchers.inc();
        self.stream().await;
        METRICS.change_watchers.dec();
    }

    async fn stream(&mut self) {
        let mut feed = self.store.change_feed().subscribe(&self.tenant);
        let stop = loop {
            match self.send_page().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(stop) => break stop,
            }
            let cursor = self.cursor.0;
            tokio::select! {
                woken = feed.wait_for(|last| *last > cursor) => {
                    if woken.is_err() {
                        break Stop::Failed(Error::ShuttingDown);
                    }
                }
                () = self.sender.closed() => break Stop::Gone,
                () = self.shutdown.cancelled() => break Stop::Failed(Error::ShuttingDown),
            }
        };
        if let Stop::Failed(error) = stop {
            debug!(tenant = %self.tenant, %error, "change stream ends");
            self.last_word.say(error);
        }
    }

    /// Sends the next page; true when it was full (more may follow at once).
    async fn send_page(&mut self) -> Result<bool, Stop> {
        let page = self
            .store
            .changes_after(&self.tenant, self.cursor, PAGE)
            .await
            .map_err(|error| {
                warn!(tenant = %self.tenant, %error, "reading the change stream failed; ending the stream");
                Stop::Failed(Error::StoreUnavailable)
            })?;
        if self.cursor.0 < page.position.pruned_through {
            return Err(Stop::Failed(Error::CursorExpired));
        }
        let full = page.changes.len() as i64 == PAGE;
        for change in page.changes {
            let cursor = change.cursor;
            tokio::select! {
                sent = self.sender.send(Ok(change)) => sent.map_err(|_| Stop::Gone)?,
                () = self.shutdown.cancelled() => return Err(Stop::Failed(Error::ShuttingDown)),
            }
            self.cursor = cursor;
        }
        Ok(full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        changes::{ChangeKind, GrantChange, GrantChangeReason},
        grant::GrantStatus,
    };

    fn change() -> Change {
        Change {
            cursor: Cursor(1),
            recorded_at: time::OffsetDateTime::UNIX_EPOCH,
            sub: "sub".into(),
            user_ref: None,
            kind: ChangeKind::Grant(GrantChange {
                status: GrantStatus::Active,
                reason: GrantChangeReason::Connected,
                relink_url: None,
                events_missed_since: None,
                profiles: Vec::new(),
            }),
        }
    }

    #[tokio::test]
    async fn the_final_status_reaches_a_watcher_whose_channel_is_full() {
        let (sender, mut last_word, mut receiver) = channel_with_last_word(2);
        sender.try_send(Ok(change())).expect("room");
        sender.try_send(Ok(change())).expect("room");
        assert!(
            sender.try_send(Ok(change())).is_err(),
            "the channel is full for changes"
        );
        last_word.say(Error::ShuttingDown);
        drop(sender);
        let mut received = Vec::new();
        while let Some(item) = receiver.recv().await {
            received.push(item);
        }
        assert_eq!(received.len(), 3);
        assert!(matches!(received[2], Err(Error::ShuttingDown)), "{:?}", received[2]);
    }
}
