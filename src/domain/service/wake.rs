//! Waking a worker now, or once a little later.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;

use crate::tasks::Tasks;

/// Wakes a worker that otherwise runs on a timer: at once ([`Wake::now`]), or
/// after a delay ([`Wake::after`]) for work that becomes due shortly. At most
/// one delayed wake is pending, so a peer repeating a request cannot make
/// calgate hold a timer per repeat.
#[derive(Debug, Default)]
pub(super) struct Wake {
    notify: Arc<Notify>,
    delayed: Arc<AtomicBool>,
}

impl Wake {
    /// Wakes the worker (or its next wait, if it is busy).
    pub(super) fn now(&self) {
        self.notify.notify_one();
    }

    /// Wakes the worker after `delay`, unless a delayed wake is already
    /// pending (that one then covers this one: both delays are the same).
    pub(super) fn after(&self, tasks: &Tasks, delay: Duration) {
        if self.delayed.swap(true, Ordering::AcqRel) {
            return;
        }
        let (notify, delayed) = (Arc::clone(&self.notify), Arc::clone(&self.delayed));
        tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            delayed.store(false, Ordering::Release);
            notify.notify_one();
        });
    }

    /// Resolves at the next wake.
    pub(super) async fn woken(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_delayed_wake_comes_once_after_its_delay_however_often_it_is_asked_for() {
        let tasks = Tasks::new();
        let wake = Wake::default();
        for _ in 0..100 {
            wake.after(&tasks, Duration::from_secs(1));
        }
        let early = tokio::time::timeout(Duration::from_millis(999), wake.woken()).await;
        assert!(early.is_err(), "woken before the delay");
        tokio::time::timeout(Duration::from_millis(2), wake.woken())
            .await
            .expect("woken after the delay");
        // One pending wake for the 100 requests: no second one follows.
        let again = tokio::time::timeout(Duration::from_secs(5), wake.woken()).await;
        assert!(again.is_err(), "a second delayed wake came");
        // Once it fired, a new request schedules a new one.
        wake.after(&tasks, Duration::from_secs(1));
        tokio::time::timeout(Duration::from_millis(1001), wake.woken())
            .await
            .expect("woken after the second delay");
    }
}
