//! Fair turns at an application's budget. Tenants that share one Cronofy
//! application share its budget; when the budget is short, callers waiting
//! for it take turns by tenant (round robin, first come first served within
//! a tenant), so a tenant with hundreds of calls waiting delays another
//! tenant's call by about one refill per busy tenant, not by its whole queue.
//!
//! Only the caller holding the turn waits at the budget itself; the others
//! wait here for the turn. A caller that finds nobody waiting skips the
//! queue (see `Resilience::admit`), so a budget with room costs one lock.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

/// One application's queue of callers waiting for its budget.
#[derive(Debug, Default)]
pub(super) struct FairQueue {
    state: Mutex<QueueState>,
}

#[derive(Debug, Default)]
struct QueueState {
    /// Tenants with callers waiting, in turn order.
    order: VecDeque<String>,
    /// Each tenant's waiting callers, first come first served.
    waiting: HashMap<String, VecDeque<Waiter>>,
    /// The ticket holding the turn, if any.
    holder: Option<u64>,
    next_ticket: u64,
}

#[derive(Debug)]
struct Waiter {
    ticket: u64,
    wake: Arc<Notify>,
}

impl QueueState {
    /// Hands the turn to the next tenant's first waiter, if any; that
    /// tenant goes to the back of the order.
    fn pass_turn(&mut self) {
        self.holder = None;
        while let Some(tenant) = self.order.pop_front() {
            let Some(queue) = self.waiting.get_mut(&tenant) else {
                continue;
            };
            let Some(next) = queue.pop_front() else {
                self.waiting.remove(&tenant);
                continue;
            };
            if queue.is_empty() {
                self.waiting.remove(&tenant);
            } else {
                self.order.push_back(tenant);
            }
            self.holder = Some(next.ticket);
            next.wake.notify_one();
            return;
        }
    }

    /// Takes a waiter out of its tenant's queue (it gave up).
    fn remove(&mut self, tenant: &str, ticket: u64) {
        if let Some(queue) = self.waiting.get_mut(tenant) {
            queue.retain(|waiter| waiter.ticket != ticket);
            if queue.is_empty() {
                self.waiting.remove(tenant);
                self.order.retain(|t| t != tenant);
            }
        }
    }

    fn waiting_callers(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }
}

/// The turn at the budget; dropping it passes the turn on.
#[derive(Debug)]
pub(super) struct Turn<'a> {
    queue: &'a FairQueue,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.queue.lock().pass_turn();
    }
}

impl FairQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether nobody waits for the budget (a caller may then try it at once).
    pub(super) fn is_idle(&self) -> bool {
        let state = self.lock();
        state.holder.is_none() && state.order.is_empty()
    }

    /// Waits for `tenant`'s turn until `give_up_at`. Err: the caller gave up,
    /// with how many callers were waiting then (to estimate RetryInfo).
    pub(super) async fn turn(&self, tenant: &str, give_up_at: Instant) -> Result<Turn<'_>, usize> {
        let (ticket, wake) = {
            let mut state = self.lock();
            if state.holder.is_none() && state.order.is_empty() {
                state.next_ticket += 1;
                state.holder = Some(state.next_ticket);
                return Ok(Turn { queue: self });
            }
            state.next_ticket += 1;
            let ticket = state.next_ticket;
            let wake = Arc::new(Notify::new());
            if !state.waiting.contains_key(tenant) {
                state.order.push_back(tenant.to_owned());
            }
            state.waiting.entry(tenant.to_owned()).or_default().push_back(Waiter {
                ticket,
                wake: wake.clone(),
            });
            (ticket, wake)
        };
        // Removes the ticket (or passes a turn handed over meanwhile) if this
        // future is dropped or times out before it holds the turn.
        let mut pending = Pending {
            queue: self,
            tenant,
            ticket,
            armed: true,
        };
        let woken = tokio::time::timeout_at(give_up_at, wake.notified()).await.is_ok();
        let mut state = self.lock();
        if woken || state.holder == Some(ticket) {
            pending.armed = false;
            return Ok(Turn { queue: self });
        }
        let waiting = state.waiting_callers();
        state.remove(tenant, ticket);
        pending.armed = false;
        Err(waiting)
    }
}

/// A waiter that has not got its turn yet.
struct Pending<'a> {
    queue: &'a FairQueue,
    tenant: &'a str,
    ticket: u64,
    armed: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut state = self.queue.lock();
        if state.holder == Some(self.ticket) {
            state.pass_turn();
        } else {
            state.remove(self.tenant, self.ticket);
        }
    }
}

/// How long `waiting` callers ahead take at `per_second`: the RetryInfo of a
/// caller who gave up in the queue.
pub(super) fn queue_wait(waiting: usize, per_second: u32) -> Duration {
    Duration::from_secs_f64((waiting.max(1) as f64) / f64::from(per_second.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes turns for `tenant`, recording the order they come in.
    async fn take(queue: Arc<FairQueue>, tenant: &'static str, log: Arc<Mutex<Vec<&'static str>>>) {
        let turn = queue
            .turn(tenant, Instant::now() + Duration::from_secs(60))
            .await
            .expect("turn");
        log.lock().expect("log").push(tenant);
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(turn);
    }

    #[tokio::test(start_paused = true)]
    async fn turns_go_round_the_tenants_not_down_the_queue() {
        let queue = Arc::new(FairQueue::default());
        let log = Arc::new(Mutex::new(Vec::new()));
        let holder = queue.turn("a", Instant::now()).await.expect("first turn at once");
        let mut tasks = Vec::new();
        for _ in 0..5 {
            tasks.push(tokio::spawn(take(queue.clone(), "a", log.clone())));
            tokio::task::yield_now().await;
        }
        tasks.push(tokio::spawn(take(queue.clone(), "b", log.clone())));
        tokio::task::yield_now().await;
        drop(holder);
        for task in tasks {
            task.await.expect("task");
        }
        assert_eq!(*log.lock().expect("log"), ["a", "b", "a", "a", "a", "a"]);
        assert!(queue.is_idle());
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_who_gives_up_leaves_the_queue_and_never_wedges_it() {
        let queue = Arc::new(FairQueue::default());
        let holder = queue.turn("a", Instant::now()).await.expect("turn");
        let gave_up = queue.turn("b", Instant::now() + Duration::from_millis(50)).await;
        assert_eq!(gave_up.err(), Some(1), "one caller was waiting: itself");
        // A waiter dropped while queued is gone too.
        let dropped = tokio::time::timeout(
            Duration::from_millis(10),
            queue.turn("c", Instant::now() + Duration::from_secs(60)),
        )
        .await;
        assert!(dropped.is_err());
        drop(holder);
        assert!(queue.is_idle(), "nobody left waiting");
        assert!(queue.turn("d", Instant::now()).await.is_ok());
    }

    #[test]
    fn retry_info_counts_the_callers_ahead() {
        assert_eq!(queue_wait(10, 5), Duration::from_secs(2));
        assert_eq!(queue_wait(0, 50), Duration::from_millis(20));
    }
}
