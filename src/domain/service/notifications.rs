//! Cronofy push notifications: a channel per connected user grant, the
//! signed callbacks Cronofy sends to it, and what calgate reads when one
//! arrives (docs: /developers/api/push-notifications).
//!
//! A callback is recorded durably and answered at once; two workers do the
//! slow parts with retries: one opens channels (after a connect, or when an
//! attempt failed), one processes queued notifications. Both claim their rows
//! (compare-and-swap), so replicas share the work without doing it twice, and
//! every change they record is recorded once however often Cronofy delivers.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::task::JoinSet;

use serde::Deserialize;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tracing::{debug, warn};

use super::{CallbackError, ChangeService};
use crate::{
    domain::{Error, Tenant},
    store::{QueuedNotification, is_channel_key, notification_id},
    telemetry::metrics::METRICS,
};

/// Where Cronofy posts a channel's notifications, on the callback listener.
pub const NOTIFICATION_PATH: &str = "/cronofy/notifications/{channel_key}";
/// Rows a worker takes per round.
pub(super) const BATCH: i64 = 20;
/// Notifications one replica processes at once.
pub const MAX_NOTIFICATIONS_IN_FLIGHT: usize = 8;
/// Of those, at most this many of one tenant.
pub const MAX_NOTIFICATIONS_PER_TENANT: usize = 2;
/// First retry delay; doubles per failed attempt up to [`MAX_RETRY_DELAY`].
const RETRY_BASE: Duration = Duration::from_secs(5);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
/// A notification still failing after this many attempts (about a day) is dropped, logged.
const MAX_NOTIFICATION_ATTEMPTS: i64 = 30;
/// How long a claimed row is left to its replica before another may take it.
pub(super) const CLAIM_SECONDS: i64 = 120;
/// Longest `notification.type` kept (Cronofy's are short words).
const MAX_KIND_LEN: usize = 64;
/// Most event pages read for one grant's notifications within a minute, on
/// every replica together (at 100 events a page: 10,000 events), so replays
/// and bursts cannot multiply the reads. A notification finding none left is
/// deferred (no attempt counted) until the minute has passed, and goes on
/// from the page where it stopped.
pub const PAGES_PER_CHANNEL_PER_MINUTE: i64 = 100;
/// However often one body is delivered on a channel, it is processed at most
/// once per this many seconds: repeats within it coalesce into one later
/// processing. None is dropped: an identical body may announce a new change.
pub const REPEAT_COALESCE_SECONDS: i64 = 1;
const COALESCE_WINDOW: Duration = Duration::from_secs(REPEAT_COALESCE_SECONDS as u64);
/// How long a processed notification is kept as a marker (past the
/// coalescing window it only saves the row's re-creation).
pub const NOTIFICATION_MARKER_RETENTION: Duration = Duration::from_secs(3600);

/// What calgate did with a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationOutcome {
    /// A `verification`: acknowledged.
    Verified,
    /// Queued for processing.
    Queued,
    /// Already queued (a repeated delivery): processed once more after it,
    /// should it have been under way.
    Duplicate,
    /// A type calgate does not act on: acknowledged, as Cronofy asks.
    Ignored,
}

impl NotificationOutcome {
    /// Its metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationOutcome::Verified => "verified",
            NotificationOutcome::Queued => "queued",
            NotificationOutcome::Duplicate => "duplicate",
            NotificationOutcome::Ignored => "ignored",
        }
    }
}

#[derive(Deserialize)]
struct NotificationBody {
    notification: Notification,
}

#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    changes_since: Option<String>,
}

/// Whether calgate acts on a notification type: changes, and anything about
/// a profile (`profile_disconnected`, the profile sync types,
/// `conferencing_profile_disconnected`).
fn is_handled(kind: &str) -> bool {
    kind == "change" || kind.starts_with("profile_") || kind.starts_with("conferencing_profile_")
}

/// The delay before retry number `attempts + 1`.
pub(super) fn backoff(attempts: i64) -> Duration {
    let factor = 2u32.saturating_pow(attempts.clamp(0, 16) as u32);
    RETRY_BASE.saturating_mul(factor).min(MAX_RETRY_DELAY)
}

impl ChangeService {
    /// A notification Cronofy posted to `channel_key`, signed by `signed_by`'s
    /// secrets: queued durably (processing happens in the background), or
    /// acknowledged. 404 when no grant of a signing tenant owns the key.
    pub async fn receive_notification(
        &self,
        signed_by: &[Arc<Tenant>],
        channel_key: &str,
        body: &[u8],
    ) -> Result<NotificationOutcome, CallbackError> {
        if !is_channel_key(channel_key) {
            return Err(CallbackError::Unknown);
        }
        let parsed: NotificationBody =
            serde_json::from_slice(body).map_err(|_| CallbackError::Invalid("not a Cronofy notification"))?;
        let kind = parsed.notification.kind;
        let owner = self
            .store
            .channel_owner(channel_key)
            .await
            .map_err(|error| {
                warn!(%error, "reading a notification's channel failed");
                CallbackError::Unavailable
            })?
            .filter(|owner| signed_by.iter().any(|tenant| tenant.id == owner.tenant_id))
            .ok_or(CallbackError::Unknown)?;
        if kind == "verification" {
            return Ok(NotificationOutcome::Verified);
        }
        if kind.len() > MAX_KIND_LEN || !is_handled(&kind) {
            debug!(tenant = %owner.tenant_id, kind = %kind.chars().take(MAX_KIND_LEN).collect::<String>(), "notification type ignored");
            return Ok(NotificationOutcome::Ignored);
        }
        let changes_since = match (kind.as_str(), parsed.notification.changes_since) {
            ("change", Some(since)) if OffsetDateTime::parse(&since, &Rfc3339).is_ok() => Some(since),
            ("change", _) => return Err(CallbackError::Invalid("a change notification without changes_since")),
            _ => None,
        };
        let id = notification_id(channel_key, body);
        let queued = self
            .store
            .queue_notification(
                &id,
                &owner.tenant_id,
                &owner.sub,
                &kind,
                changes_since.as_deref(),
                REPEAT_COALESCE_SECONDS,
            )
            .await
            .map_err(|error| {
                warn!(tenant = %owner.tenant_id, %error, "queueing a notification failed; Cronofy will retry");
                CallbackError::Unavailable
            })?;
        if queued {
            self.notifications_due.now();
        } else {
            // A repeat of a body processed within the last second is due
            // when that second ends; without this wake it would wait for the
            // worker's next poll.
            self.notifications_due.after(&self.tasks, COALESCE_WINDOW);
        }
        Ok(if queued {
            NotificationOutcome::Queued
        } else {
            NotificationOutcome::Duplicate
        })
    }

    /// Resolves when a connect or a notification on this replica may have
    /// left work for the notification worker (it also runs on a timer).
    pub async fn work_arrived(&self) {
        tokio::select! {
            () = self.channels.due.notified() => {}
            () = self.notifications_due.woken() => {}
        }
    }

    /// The notification worker, until `shutdown`: opens due channels and
    /// processes queued notifications — several at once, at most
    /// [`MAX_NOTIFICATIONS_IN_FLIGHT`] on this replica and
    /// [`MAX_NOTIFICATIONS_PER_TENANT`] of one tenant, so one tenant's backlog
    /// or one application's slow answers never hold another tenant's
    /// notification up. Runs at once when this replica connects a grant or
    /// receives a notification, when a notification is done, and every `poll`
    /// (retries, and work other replicas queued).
    pub async fn work_notifications(
        self: Arc<Self>,
        tenants: Arc<HashMap<String, Arc<Tenant>>>,
        poll: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut running = JoinSet::new();
        let mut busy: HashMap<String, usize> = HashMap::new();
        let mut running_tenants: HashMap<tokio::task::Id, String> = HashMap::new();
        loop {
            self.channels.open_due_channels(&tenants).await;
            self.channels.check_open_channels(&tenants).await;
            for (id, tenant) in self.dispatch_notifications(&tenants, &mut running, &busy).await {
                *busy.entry(tenant.clone()).or_default() += 1;
                running_tenants.insert(id, tenant);
            }
            tokio::select! {
                () = shutdown.cancelled() => {
                    // Unfinished rows stay queued: their claims lapse and they are processed again.
                    running.abort_all();
                    return;
                }
                Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                    let id = match done {
                        Ok((id, ())) => id,
                        Err(error) => error.id(),
                    };
                    if let Some(tenant) = running_tenants.remove(&id)
                        && let Some(count) = busy.get_mut(&tenant)
                    {
                        *count -= 1;
                        if *count == 0 {
                            busy.remove(&tenant);
                        }
                    }
                }
                () = tokio::time::sleep(poll) => {}
                () = self.work_arrived() => {}
            }
        }
    }

    /// Claims due notifications of tenants with room and starts processing
    /// each in `running`. Returns the started tasks' ids with their tenants.
    async fn dispatch_notifications(
        self: &Arc<Self>,
        tenants: &Arc<HashMap<String, Arc<Tenant>>>,
        running: &mut JoinSet<()>,
        busy: &HashMap<String, usize>,
    ) -> Vec<(tokio::task::Id, String)> {
        let mut started = Vec::new();
        if running.len() >= MAX_NOTIFICATIONS_IN_FLIGHT {
            return started;
        }
        let due = match self
            .store
            .due_notifications(MAX_NOTIFICATIONS_PER_TENANT as i64, BATCH)
            .await
        {
            Ok(due) => due,
            Err(error) => {
                warn!(%error, "reading queued notifications failed");
                return started;
            }
        };
        let mut taken: HashMap<String, usize> = HashMap::new();
        for queued in due {
            if running.len() >= MAX_NOTIFICATIONS_IN_FLIGHT {
                break;
            }
            let tenant_busy =
                busy.get(&queued.tenant_id).copied().unwrap_or(0) + taken.get(&queued.tenant_id).copied().unwrap_or(0);
            if tenant_busy >= MAX_NOTIFICATIONS_PER_TENANT {
                continue;
            }
            match self.store.claim_notification(&queued, CLAIM_SECONDS).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    warn!(%error, "claiming a notification failed");
                    continue;
                }
            }
            *taken.entry(queued.tenant_id.clone()).or_default() += 1;
            let tenant_id = queued.tenant_id.clone();
            let (this, tenants) = (self.clone(), tenants.clone());
            let handle = running.spawn(async move { this.handle_notification(&tenants, queued).await });
            started.push((handle.id(), tenant_id));
        }
        started
    }

    /// Marks `queued` processed. If it was delivered again meanwhile, the
    /// repeat is due a coalescing window later; the worker is woken for it
    /// then rather than at its next poll.
    async fn finish_notification(&self, queued: &QueuedNotification) -> Result<(), crate::store::StoreError> {
        let finished = self.store.finish_notification(queued, REPEAT_COALESCE_SECONDS).await?;
        if !finished {
            self.notifications_due.after(&self.tasks, COALESCE_WINDOW);
        }
        Ok(())
    }

    /// Processes one claimed notification and records the outcome: done,
    /// retried later with backoff, or given up on.
    async fn handle_notification(&self, tenants: &HashMap<String, Arc<Tenant>>, queued: QueuedNotification) {
        let outcome = match tenants.get(&queued.tenant_id) {
            Some(tenant) => self.process(tenant, &queued).await,
            // A tenant no longer configured: nothing to do for it.
            None => Ok(()),
        };
        let done = match outcome {
            Ok(()) => {
                METRICS.notification("processed");
                self.finish_notification(&queued).await
            }
            // Background work's share was spent (callers went first): no
            // attempt was made, so none is counted.
            Err(Error::RateBudgetExhausted { retry_after }) => {
                METRICS.notification("deferred");
                debug!(tenant = %queued.tenant_id, ?retry_after, "no budget share for a notification now; deferred");
                let after = retry_after.max(Duration::from_secs(1)).as_secs() as i64;
                self.store.postpone_notification(&queued.id, after, false).await
            }
            Err(error) if queued.attempts + 1 >= MAX_NOTIFICATION_ATTEMPTS => {
                METRICS.notification("dropped");
                tracing::error!(tenant = %queued.tenant_id, sub = %queued.sub, kind = %queued.kind, %error, attempts = queued.attempts + 1, "a notification could not be processed; giving up on it");
                self.finish_notification(&queued).await
            }
            Err(error) => {
                let delay = backoff(queued.attempts);
                METRICS.notification("retried");
                warn!(tenant = %queued.tenant_id, sub = %queued.sub, kind = %queued.kind, %error, ?delay, "processing a notification failed; retrying");
                self.store
                    .postpone_notification(&queued.id, delay.as_secs() as i64, true)
                    .await
            }
        };
        if let Err(error) = done {
            warn!(%error, "recording a notification's outcome failed; it will be processed again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(backoff(0), Duration::from_secs(5));
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(30), MAX_RETRY_DELAY);
        assert_eq!(backoff(-3), Duration::from_secs(5));
    }

    #[test]
    fn profile_types_and_changes_are_handled_others_ignored() {
        for kind in [
            "change",
            "profile_disconnected",
            "profile_initial_sync_completed",
            "conferencing_profile_disconnected",
        ] {
            assert!(is_handled(kind), "{kind}");
        }
        for kind in ["verification", "future_type", ""] {
            assert!(!is_handled(kind), "{kind}");
        }
    }
}
