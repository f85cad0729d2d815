//! calgate's background workers, each a type that owns what it uses and
//! runs until shutdown. `App::serve` starts them all from one list
//! (`server::App::start_workers`).

mod change_feed;
mod erasures;
mod notifications;
mod queue;
mod refresher;
mod retention;
mod revocations;
mod store_watcher;

use std::{convert::Infallible, future::Future, time::Duration};

use tokio_util::sync::CancellationToken;

pub(crate) use change_feed::ChangeFeedPoller;
pub(crate) use erasures::ErasureFinisher;
pub(crate) use notifications::NotificationWorker;
pub(crate) use queue::QueueWorker;
pub(crate) use refresher::BackgroundRefresher;
pub(crate) use retention::RetentionPruner;
pub(crate) use revocations::RevocationRetrier;
pub(crate) use store_watcher::StoreWatcher;

use crate::tasks::Tasks;

/// A background worker.
pub(crate) trait Worker: Send + 'static {
    /// Its name in logs (`task = …` when it stops or fails).
    const NAME: &'static str;

    /// Runs until `shutdown` is cancelled.
    fn run(self, shutdown: CancellationToken) -> impl Future<Output = ()> + Send;
}

/// Starts `worker` as a tracked task of `tasks`, stopped by its shutdown.
pub(crate) fn spawn<W: Worker>(tasks: &Tasks, worker: W) {
    let shutdown = tasks.shutdown();
    tasks.spawn_worker(W::NAME, async move {
        worker.run(shutdown).await;
        Ok::<(), Infallible>(())
    });
}

/// Runs `round` every `interval` until `shutdown` (a periodic worker's loop).
/// A round logs what it did itself; what it returns is dropped.
async fn every<F, Fut>(interval: Duration, shutdown: &CancellationToken, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: Future,
{
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let _ = round().await;
    }
}
