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
use tracing::{debug, info, warn};

use super::{CalendarService, CallbackError, store_failure};
use crate::{
    cronofy::{CronofyClient, CronofyError, ReadEvent},
    domain::{
        Error, Tenant,
        changes::{EventChange, EventChangeKind, EventState, SeenTime},
        event::EventTime,
        grant::{GrantSelector, GrantStatus},
        upstream,
    },
    resilience::GuardError,
    store::{DueChannel, QueuedNotification, is_channel_key, notification_id},
    telemetry::metrics::METRICS,
};

/// Where Cronofy posts a channel's notifications, on the callback listener.
pub const NOTIFICATION_PATH: &str = "/cronofy/notifications/{channel_key}";
/// Rows a worker takes per round.
const BATCH: i64 = 20;
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
const CLAIM_SECONDS: i64 = 120;
/// Longest `notification.type` kept (Cronofy's are short words).
const MAX_KIND_LEN: usize = 64;
/// Most event pages read for one notification (at 100 a page: 10,000 events).
const MAX_EVENT_PAGES: usize = 100;
/// Most event pages read for one grant's notifications within a minute, on
/// every replica together: one notification's worth, so replays and bursts
/// cannot multiply the reads. A notification finding none left is deferred
/// (no attempt counted) until the minute has passed.
pub const PAGES_PER_CHANNEL_PER_MINUTE: i64 = MAX_EVENT_PAGES as i64;
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
/// the profile (`profile_disconnected` and the profile sync types).
fn is_handled(kind: &str) -> bool {
    kind == "change" || kind.starts_with("profile_")
}

/// The delay before retry number `attempts + 1`.
fn backoff(attempts: i64) -> Duration {
    let factor = 2u32.saturating_pow(attempts.clamp(0, 16) as u32);
    RETRY_BASE.saturating_mul(factor).min(MAX_RETRY_DELAY)
}

/// The state calgate wrote, as Cronofy will read it back.
pub(super) fn written_state(start: &EventTime, end: &EventTime, summary: &str) -> EventState {
    EventState::Present {
        start: SeenTime::written(start),
        end: SeenTime::written(end),
        summary: summary.to_owned(),
    }
}

impl CalendarService {
    /// Whether calgate records the tenant's event writes: to tell its own
    /// writes from changes (with `[callbacks]`), and to delete "all its
    /// events" by id when it shares its Cronofy application. Otherwise the
    /// record would cost a store write per event write for nothing.
    fn records_writes(&self, tenant: &Tenant) -> bool {
        self.callback_base.is_some() || tenant.shares_application()
    }

    /// Remembers what calgate just wrote of an event (by the caller's id):
    /// reading it back after a notification is then no change, and a tenant
    /// sharing its Cronofy application deletes "all its events" from this
    /// record. A store failure costs a spurious change later, or an event a
    /// later DeleteAllEvents misses: logged, never failing the write that succeeded.
    pub(super) async fn remember_event(
        &self,
        tenant: &Tenant,
        sub: &str,
        calendar_id: &str,
        event_id: &str,
        state: EventState,
    ) {
        if !self.records_writes(tenant) {
            return;
        }
        let tenant = tenant.id.as_str();
        if let Err(error) = self
            .store
            .remember_event(tenant, sub, calendar_id, event_id, &state)
            .await
        {
            warn!(tenant, sub, %error, "remembering an event write failed; a notification may report it as a change");
        }
    }

    /// As [`Self::remember_event`] for a bulk delete.
    pub(super) async fn remember_all_deleted(&self, tenant: &Tenant, sub: &str, calendar_ids: &[String]) {
        if !self.records_writes(tenant) {
            return;
        }
        let tenant = tenant.id.as_str();
        let ids = (!calendar_ids.is_empty()).then_some(calendar_ids);
        if let Err(error) = self.store.remember_all_deleted(tenant, sub, ids).await {
            warn!(tenant, sub, %error, "remembering a bulk delete failed; notifications may report its events");
        }
    }

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

    /// Wakes the channel worker: a grant was connected.
    pub(super) fn channels_due(&self) {
        self.channels_due.notify_one();
    }

    /// Resolves when a connect or a notification on this replica may have
    /// left work for the notification worker (it also runs on a timer).
    pub async fn work_arrived(&self) {
        tokio::select! {
            () = self.channels_due.notified() => {}
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
            self.open_due_channels(&tenants).await;
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

    /// One round of the channel worker: opens the channels that are due.
    /// Returns how many were opened.
    async fn open_due_channels(&self, tenants: &HashMap<String, Arc<Tenant>>) -> usize {
        let due = match self.store.due_channels(BATCH).await {
            Ok(due) => due,
            Err(error) => {
                warn!(%error, "reading channels to open failed");
                return 0;
            }
        };
        let mut opened = 0;
        for channel in due {
            let Some(tenant) = tenants.get(&channel.tenant_id) else {
                continue;
            };
            match self.store.claim_channel(&channel, CLAIM_SECONDS).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    warn!(%error, "claiming a channel failed");
                    continue;
                }
            }
            match self.open_channel(tenant, &channel).await {
                Ok(()) => opened += 1,
                // No token to open it with until the user connects again (which asks anew).
                Err(Error::GrantNeedsReauth | Error::GrantRevoked | Error::GrantNotFound) => {
                    info!(tenant = %tenant.id, sub = %channel.sub, "no channel for a grant that needs the user again");
                    if let Err(error) = self.store.forget_channel(&tenant.id, &channel.sub).await {
                        warn!(%error, "dropping a channel request failed");
                    }
                }
                Err(error) => {
                    let delay = backoff(channel.channel_attempts);
                    warn!(tenant = %tenant.id, sub = %channel.sub, %error, ?delay, "opening a push notification channel failed; retrying");
                    let detail = format!("opening the channel failed: {error}");
                    if let Err(error) = self
                        .store
                        .channel_failed(&tenant.id, &channel.sub, &detail, delay.as_secs() as i64)
                        .await
                    {
                        warn!(%error, "recording a channel failure failed");
                    }
                }
            }
        }
        opened
    }

    async fn open_channel(&self, tenant: &Arc<Tenant>, due: &DueChannel) -> Result<(), Error> {
        let base = self.callback_base.as_ref().ok_or(Error::CallbacksNotConfigured)?;
        let callback_url = notification_url(base, &due.channel_key);
        let selector = GrantSelector::Sub(due.sub.clone());
        let lease = self.access_token(tenant, &selector, false).await?;
        let channel_id = call_with_refresh!(
            self,
            tenant,
            background,
            lease,
            upstream::Call::other("channel"),
            |token| { self.cronofy.create_channel(&tenant.app.endpoints, token, &callback_url) }
        )?;
        let readable = self.events_readable(tenant, &selector).await;
        let kept = self
            .store
            .channel_opened(&tenant.id, &due.sub, &due.channel_key, &channel_id, readable)
            .await
            .map_err(|error| store_failure(&tenant.id, "recording a channel", &error))?;
        if kept {
            info!(tenant = %tenant.id, sub = %due.sub, events = readable, "push notification channel open");
        } else {
            // Revoked or reconnected meanwhile: this channel is nobody's.
            self.close_channel(tenant, &selector, &channel_id).await;
        }
        Ok(())
    }

    /// Whether Cronofy lets calgate read the grant's own events (asked once,
    /// when its channel opens): a 403 means event changes cannot be tracked.
    async fn events_readable(&self, tenant: &Arc<Tenant>, selector: &GrantSelector) -> bool {
        !matches!(self.probe_events(tenant, selector).await, Err(Error::InsufficientScope))
    }

    async fn probe_events(&self, tenant: &Arc<Tenant>, selector: &GrantSelector) -> Result<(), Error> {
        let since = OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default();
        let url = CronofyClient::managed_events_url(&tenant.app.endpoints, &since);
        let lease = self.access_token(tenant, selector, false).await?;
        call_with_refresh!(
            self,
            tenant,
            background,
            lease,
            upstream::Call::other("events"),
            |token| { self.cronofy.read_events_page(&tenant.app.endpoints, token, &url) }
        )
        .map(drop)
    }

    /// Closes a channel at Cronofy, best effort: a revoked authorization's
    /// channels stop with it at Cronofy anyway.
    pub(super) async fn close_channel(&self, tenant: &Arc<Tenant>, selector: &GrantSelector, channel_id: &str) {
        let Ok(lease) = self.access_token(tenant, selector, false).await else {
            return;
        };
        let token = &lease.token;
        let closed = self
            .resilience
            .call(&tenant.id, None, || {
                self.cronofy.close_channel(&tenant.app.endpoints, token, channel_id)
            })
            .await;
        match closed {
            Ok(()) | Err(GuardError::Upstream(CronofyError::NotFound)) => {
                debug!(tenant = %tenant.id, channel_id, "push notification channel closed");
            }
            Err(error) => {
                let error = upstream::guard_error(error, upstream::Call::other("channel"));
                warn!(tenant = %tenant.id, channel_id, %error, "closing a push notification channel failed");
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

    async fn process(&self, tenant: &Arc<Tenant>, queued: &QueuedNotification) -> Result<(), Error> {
        let selector = GrantSelector::Sub(queued.sub.clone());
        let stored = match self.find(tenant, &selector).await {
            Ok(stored) => stored,
            Err(Error::GrantNotFound) => return Ok(()),
            Err(error) => return Err(error),
        };
        let status = stored.grant.status;
        if matches!(status, GrantStatus::Revoked | GrantStatus::NeedsReauth) {
            // Nothing can be read for it; its own changes were recorded already.
            return Ok(());
        }
        if queued.kind.starts_with("profile_") || status == GrantStatus::ProfileDisconnected {
            self.sync_profile(tenant, &selector).await?;
        }
        if queued.kind == "change"
            && let Some(since) = &queued.changes_since
        {
            self.read_event_changes(tenant, &selector, since).await?;
        }
        Ok(())
    }

    /// Reads the account's profiles: a disconnected one disconnects the
    /// grant (writes fail fast until the user relinks), all connected again
    /// reconnects it.
    async fn sync_profile(&self, tenant: &Arc<Tenant>, selector: &GrantSelector) -> Result<(), Error> {
        let lease = self.access_token(tenant, selector, false).await?;
        let sub = lease.sub.clone();
        let info = call_with_refresh!(
            self,
            tenant,
            background,
            lease,
            upstream::Call::other("user info"),
            |token| { self.cronofy.userinfo(&tenant.app.endpoints, token) }
        )?;
        let profiles = info.data.map(|data| data.profiles).unwrap_or_default();
        let disconnected = profiles.iter().find(|p| p.profile_connected == Some(false));
        let relink_url = disconnected.and_then(|p| p.profile_relink_url.as_deref());
        let changed = self
            .store
            .set_profile_connected(&tenant.id, &sub, disconnected.is_none(), relink_url)
            .await
            .map_err(|error| store_failure(&tenant.id, "recording a profile's state", &error))?;
        if changed.is_some() {
            self.tokens.forget_grant(&tenant.id, &sub);
            info!(tenant = %tenant.id, sub, connected = disconnected.is_none(), "calendar profile state changed");
        }
        Ok(())
    }

    /// Reads the grant's own events changed since `since` (every page) and
    /// records those that differ from what calgate last knew.
    async fn read_event_changes(
        &self,
        tenant: &Arc<Tenant>,
        selector: &GrantSelector,
        since: &str,
    ) -> Result<(), Error> {
        let stored = self.find(tenant, selector).await?;
        if stored.grant.change_tracking == crate::domain::grant::ChangeTracking::ProfileOnly {
            return Ok(());
        }
        let sub = stored.grant.sub;
        let mut page = Some(CronofyClient::managed_events_url(&tenant.app.endpoints, since));
        let mut pages = 0;
        while let Some(url) = page.take() {
            pages += 1;
            if pages > MAX_EVENT_PAGES {
                warn!(tenant = %tenant.id, sub, "more changed events than calgate reads for one notification; the rest are skipped");
                break;
            }
            let page_left = self
                .store
                .take_channel_page(&tenant.id, &sub, PAGES_PER_CHANNEL_PER_MINUTE)
                .await
                .map_err(|error| store_failure(&tenant.id, "counting a channel's pages", &error))?;
            if !page_left {
                warn!(tenant = %tenant.id, sub, "this grant's pages of changed events for the minute are spent; deferred");
                return Err(Error::RateBudgetExhausted {
                    retry_after: Duration::from_secs(60),
                });
            }
            let lease = self.access_token(tenant, selector, false).await?;
            let read = call_with_refresh!(
                self,
                tenant,
                background,
                lease,
                upstream::Call::other("events"),
                |token| { self.cronofy.read_events_page(&tenant.app.endpoints, token, &url) }
            );
            let (events, next) = match read {
                Ok(read) => read,
                Err(Error::InsufficientScope) => {
                    warn!(tenant = %tenant.id, sub, "Cronofy refuses to read the grant's events; event tracking is off for it");
                    return self
                        .store
                        .event_tracking_off(&tenant.id, &sub)
                        .await
                        .map_err(|error| store_failure(&tenant.id, "turning event tracking off", &error));
                }
                Err(error) => return Err(error),
            };
            for event in events {
                self.observe(tenant, &sub, event).await?;
            }
            page = next;
        }
        Ok(())
    }

    async fn observe(&self, tenant: &Tenant, sub: &str, event: ReadEvent) -> Result<(), Error> {
        // Another tenant of the application wrote it: not this tenant's to see.
        let Some(event_id) = event
            .event_id
            .as_deref()
            .and_then(|id| tenant.event_ids.caller(id))
            .map(str::to_owned)
        else {
            return Ok(());
        };
        let start = event.start.as_deref().and_then(SeenTime::parse);
        let end = event.end.as_deref().and_then(SeenTime::parse);
        let summary = event.summary.unwrap_or_default();
        let (seen, change) = match (event.deleted, start, end) {
            (true, _, _) => (
                EventState::Deleted,
                EventChange {
                    calendar_id: event.calendar_id,
                    event_id,
                    kind: EventChangeKind::Deleted,
                    start: None,
                    end: None,
                    summary: String::new(),
                },
            ),
            (false, Some(start), Some(end)) => (
                EventState::Present {
                    start,
                    end,
                    summary: summary.clone(),
                },
                EventChange {
                    calendar_id: event.calendar_id,
                    event_id,
                    kind: EventChangeKind::Updated,
                    start: Some(start),
                    end: Some(end),
                    summary,
                },
            ),
            // Times calgate cannot read: nothing to compare.
            (false, _, _) => return Ok(()),
        };
        self.store
            .observe_event(&tenant.id, sub, &seen, &change)
            .await
            .map_err(|error| store_failure(&tenant.id, "recording an event change", &error))?;
        Ok(())
    }
}

/// The callback URL of a channel: `{public_url}/cronofy/notifications/{key}`.
fn notification_url(base: &url::Url, channel_key: &str) -> String {
    let mut url = base.clone();
    let path = NOTIFICATION_PATH.replace("{channel_key}", channel_key);
    url.set_path(&format!("{}{path}", base.path().trim_end_matches('/')));
    url.set_query(None);
    url.into()
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
    fn notification_urls_keep_the_public_path() {
        let base = url::Url::parse("https://calgate.example/prefix/").expect("url");
        assert_eq!(
            notification_url(&base, "nabc"),
            "https://calgate.example/prefix/cronofy/notifications/nabc"
        );
    }

    #[test]
    fn profile_types_and_changes_are_handled_others_ignored() {
        for kind in ["change", "profile_disconnected", "profile_initial_sync_completed"] {
            assert!(is_handled(kind), "{kind}");
        }
        for kind in ["verification", "future_type", ""] {
            assert!(!is_handled(kind), "{kind}");
        }
    }
}
