//! Every task calgate starts, owned in one place.
//!
//! Background workers (the store watcher, the metrics and callback servers)
//! and short-lived tasks that must outlive their caller (refresh flights) are
//! spawned through [`Tasks`]: they are tracked, see one shutdown signal, and
//! [`Tasks::drain`] waits for them when the server stops. A task that panics
//! or whose worker returns an error is logged by name, never dropped silently.

use std::{fmt::Display, future::Future, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{error, info, warn};

/// The tracker and the shutdown signal shared by every task of one server.
#[derive(Debug, Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Tasks {
    /// A fresh owner with no tasks and no shutdown requested.
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// The signal every worker stops on.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Starts shutdown: every worker's `shutdown` future resolves.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    /// Spawns a tracked task whose result the caller awaits (a refresh flight).
    /// The caller logs a panic it sees through the handle.
    pub fn spawn<F>(&self, work: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(work)
    }

    /// Spawns a long-running worker: it runs until `shutdown` resolves; its
    /// end is logged (an error or a panic as an error, an early stop as a warning).
    pub fn spawn_worker<F, E>(&self, name: &'static str, work: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        let inner = tokio::spawn(work);
        self.tracker.spawn(async move {
            match inner.await {
                Ok(Ok(())) if shutdown.is_cancelled() => info!(task = name, "task stopped"),
                Ok(Ok(())) => warn!(task = name, "task ended before shutdown"),
                Ok(Err(failure)) => error!(task = name, error = %failure, "task failed"),
                Err(joined) if joined.is_panic() => error!(task = name, "task panicked"),
                Err(_) => warn!(task = name, "task cancelled"),
            }
        });
    }

    /// After [`Tasks::stop`]: waits up to `grace` for every tracked task.
    /// Returns how many were still running when the grace ran out.
    pub async fn drain(&self, grace: Duration) -> usize {
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_err() {
            let left = self.tracker.len();
            warn!(tasks = left, ?grace, "shutdown grace expired with tasks still running");
            return left;
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_workers_that_stop_on_the_signal() {
        let tasks = Tasks::new();
        let shutdown = tasks.shutdown();
        tasks.spawn_worker("waits", async move {
            shutdown.cancelled().await;
            Ok::<(), String>(())
        });
        tasks.stop();
        assert_eq!(tasks.drain(Duration::from_secs(5)).await, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_reports_tasks_that_outlive_the_grace() {
        let tasks = Tasks::new();
        tasks.spawn_worker("stuck", async {
            std::future::pending::<()>().await;
            Ok::<(), String>(())
        });
        let _flight = tasks.spawn(std::future::pending::<()>());
        tasks.stop();
        assert_eq!(tasks.drain(Duration::from_secs(1)).await, 2);
    }

    #[tokio::test]
    async fn a_panicking_worker_is_reaped_not_left_running() {
        let tasks = Tasks::new();
        tasks.spawn_worker("panics", async {
            panic!("boom");
            #[allow(unreachable_code)]
            Ok::<(), String>(())
        });
        tasks.stop();
        assert_eq!(tasks.drain(Duration::from_secs(5)).await, 0);
    }
}
