//! The queue worker's loop: keeps `queue.concurrency` requests to Cronofy
//! going, claiming more writes as soon as a place frees. One tenant holds at
//! most half the places while several tenants are configured, so another
//! tenant's writes always find one (they then take turns at the budget:
//! [`crate::resilience::Resilience::admit_queued`]).

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{QueueService, events::MAX_BATCH_ITEMS};
use crate::{
    domain::Tenant,
    store::{ClaimRoom, ClaimedWrite},
};

/// How long a worker told to stop lets the attempts under way end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The worker's places: requests running and claimed-but-waiting, by tenant.
struct Places {
    /// Places in all (`queue.concurrency`).
    total: usize,
    /// Places one tenant may hold.
    per_tenant: usize,
    /// Running requests, each answering its tenant's id when it ends.
    ///
    /// Tasks of their own: they must make progress while the loop awaits the
    /// store (a delivery may hold the SQLite write lock a claim waits for).
    running: JoinSet<()>,
    /// Each running task's tenant (a task that panicked still frees its place).
    tenant_of: HashMap<tokio::task::Id, String>,
    running_of: HashMap<String, usize>,
    /// Requests claimed and not started yet (a claim may yield more than the free places).
    waiting: VecDeque<Vec<ClaimedWrite>>,
}

impl Places {
    fn new(total: usize, tenants: usize) -> Places {
        Places {
            total,
            per_tenant: if tenants > 1 { total.div_ceil(2) } else { total },
            running: JoinSet::new(),
            tenant_of: HashMap::new(),
            running_of: HashMap::new(),
            waiting: VecDeque::new(),
        }
    }

    fn has_room(&self) -> bool {
        self.running.len() < self.total
    }

    /// The first waiting request whose tenant may take another place.
    fn next_startable(&mut self) -> Option<Vec<ClaimedWrite>> {
        let index = self.waiting.iter().position(|request| {
            self.running_of.get(&request[0].tenant_id).copied().unwrap_or_default() < self.per_tenant
        })?;
        self.waiting.remove(index)
    }

    /// What each tenant may claim now: `largest` writes (one request) for
    /// each place it could still take, a user's writes together.
    fn rooms(&self, tenants: impl Iterator<Item = (String, usize)>) -> HashMap<String, ClaimRoom> {
        tenants
            .map(|(tenant, largest)| {
                let held = self.running_of.get(&tenant).copied().unwrap_or_default()
                    + self.waiting.iter().filter(|r| r[0].tenant_id == tenant).count();
                let room = ClaimRoom {
                    writes: self.per_tenant.saturating_sub(held) * largest,
                    per_user: largest,
                };
                (tenant, room)
            })
            .collect()
    }

    fn ended(&mut self, task: tokio::task::Id) {
        if let Some(tenant) = self.tenant_of.remove(&task)
            && let Some(count) = self.running_of.get_mut(&tenant)
        {
            *count = count.saturating_sub(1);
        }
    }
}

impl QueueService {
    /// The queue worker, until `shutdown`: claims writes at once when this
    /// replica accepts one, and every `queue.poll_interval` (retries, and
    /// writes other replicas accepted) once the queue looked empty; several
    /// ready writes of one user go in one `/v1/batch` request (as many as its
    /// cost fits in the budget's burst:
    /// [`crate::resilience::Resilience::largest_batch`]).
    pub async fn work(self: Arc<Self>, tenants: Arc<HashMap<String, Arc<Tenant>>>, shutdown: CancellationToken) {
        let mut places = Places::new(self.settings.concurrency as usize, tenants.len());
        let mut poll = tokio::time::interval(self.settings.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The last claim found nothing: claim again once woken or polled.
        let mut idle = false;
        loop {
            while places.has_room() {
                if let Some(request) = places.next_startable() {
                    let tenant = request[0].tenant_id.clone();
                    *places.running_of.entry(tenant.clone()).or_default() += 1;
                    let (this, tenants) = (self.clone(), tenants.clone());
                    let task = places
                        .running
                        .spawn(async move { this.deliver_request(&tenants, request).await });
                    places.tenant_of.insert(task.id(), tenant);
                    continue;
                }
                if idle {
                    break;
                }
                let largest = |tenant: &str| self.events.resilience.largest_batch(tenant, true, MAX_BATCH_ITEMS);
                let rooms = places.rooms(tenants.keys().map(|tenant| (tenant.clone(), largest(tenant))));
                let limit =
                    (places.total - places.running.len()) * tenants.keys().map(|t| largest(t)).max().unwrap_or(1);
                let claimed = self.claim(limit, &rooms).await;
                if claimed.is_empty() {
                    idle = true;
                    break;
                }
                places.waiting.extend(self.requests(claimed));
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(ended) = places.running.join_next_with_id(), if !places.running.is_empty() => {
                    places.ended(match ended {
                        Ok((task, ())) => task,
                        Err(error) => error.id(),
                    });
                }
                () = self.accepted.woken() => idle = false,
                _ = poll.tick() => idle = false,
            }
        }
        // Let the attempts under way end and settle; any still going then are
        // taken over by a replica once their claim lapses.
        let running = &mut places.running;
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async { while running.join_next().await.is_some() {} }).await;
        running.shutdown().await;
    }

    /// Claims up to `limit` writes due; none when the store fails (logged).
    async fn claim(&self, limit: usize, rooms: &HashMap<String, ClaimRoom>) -> Vec<ClaimedWrite> {
        match self
            .store
            .claim_writes(limit, self.claim.as_millis() as i64, rooms)
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                warn!(%error, "claiming queued writes failed");
                Vec::new()
            }
        }
    }
}
