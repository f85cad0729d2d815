//! One flight of work per key: the first caller starts it as a task, later
//! callers join it, and every caller gets its result. The map entry is
//! removed by a drop guard inside the task, so a flight that panics or is
//! cancelled never leaves its key wedged (joined forever by a dead result).
//! The map's lock is never held while a task is spawned or dropped.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex, MutexGuard},
};

use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};

use crate::tasks::Tasks;

/// A running flight's result, shared by everyone who joined it.
pub type Flight<T> = Shared<BoxFuture<'static, T>>;

struct Entry<T, M> {
    /// Tells this flight from a later one of the same key.
    id: u64,
    meta: M,
    flight: Flight<T>,
}

struct Map<K, T, M> {
    entries: HashMap<K, Entry<T, M>>,
    next_id: u64,
}

/// Flights by key, each carrying `M` (what the starter said about it).
pub struct SingleFlight<K, T, M = ()> {
    map: Arc<Mutex<Map<K, T, M>>>,
}

impl<K, T, M> std::fmt::Debug for SingleFlight<K, T, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleFlight").finish_non_exhaustive()
    }
}

impl<K, T, M> Default for SingleFlight<K, T, M> {
    fn default() -> Self {
        SingleFlight {
            map: Arc::new(Mutex::new(Map {
                entries: HashMap::new(),
                next_id: 0,
            })),
        }
    }
}

/// Removes its flight's entry when the flight ends, however it ends.
struct Landing<K: Hash + Eq, T, M> {
    map: Arc<Mutex<Map<K, T, M>>>,
    key: Option<K>,
    id: u64,
}

impl<K: Hash + Eq, T, M> Drop for Landing<K, T, M> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut map = lock(&self.map);
        if map.entries.get(&key).is_some_and(|entry| entry.id == self.id) {
            map.entries.remove(&key);
        }
    }
}

fn lock<K, T, M>(map: &Mutex<Map<K, T, M>>) -> MutexGuard<'_, Map<K, T, M>> {
    map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<K, T, M> SingleFlight<K, T, M>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Clone + Send + Sync + 'static,
    M: Clone + Send + 'static,
{
    /// The flight under way for `key` with the `meta` it was started with,
    /// or a new one running `work` on `tasks` with `meta`. `work` is only
    /// polled if it starts a flight. A flight whose task died (panicked)
    /// yields `died()`; either way its key is free for the next caller.
    pub fn join_or_start<F>(&self, key: K, meta: M, tasks: &Tasks, work: F, died: fn() -> T) -> (Flight<T>, M)
    where
        F: Future<Output = T> + Send + 'static,
    {
        // The flight hears the task's result through a channel, so it exists
        // (and joins) before the task does; the task is spawned only after the
        // map's lock is released: a runtime shutting down drops a spawned
        // future at once, and its landing takes that lock.
        let (result_tx, result_rx) = tokio::sync::oneshot::channel();
        let flight = async move {
            result_rx.await.unwrap_or_else(|_| {
                tracing::error!("a single flight died before it answered");
                died()
            })
        }
        .boxed()
        .shared();
        let id = {
            let mut map = lock(&self.map);
            if let Some(entry) = map.entries.get(&key) {
                return (entry.flight.clone(), entry.meta.clone());
            }
            map.next_id += 1;
            let id = map.next_id;
            map.entries.insert(
                key.clone(),
                Entry {
                    id,
                    meta: meta.clone(),
                    flight: flight.clone(),
                },
            );
            id
        };
        let landing = Landing {
            map: self.map.clone(),
            key: Some(key),
            id,
        };
        tasks.spawn(async move {
            let _landing = landing;
            let _ = result_tx.send(work.await);
        });
        (flight, meta)
    }

    /// Whether a flight for `key` is under way.
    #[cfg(test)]
    pub fn is_flying(&self, key: &K) -> bool {
        lock(&self.map).entries.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn callers_share_one_flight_and_its_result() {
        let flights: SingleFlight<&str, u32, &str> = SingleFlight::default();
        let tasks = Tasks::new();
        let (first, meta) = flights.join_or_start(
            "k",
            "first",
            &tasks,
            async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                7
            },
            || 0,
        );
        let (second, joined_meta) = flights.join_or_start("k", "second", &tasks, async { 8 }, || 0);
        assert_eq!((meta, joined_meta), ("first", "first"), "the second joined the first");
        assert_eq!((first.await, second.await), (7, 7));
        tokio::task::yield_now().await;
        assert!(!flights.is_flying(&"k"), "landed");
    }

    #[test]
    fn a_flight_dropped_at_spawn_by_a_stopping_runtime_does_not_deadlock() {
        let flights: SingleFlight<&str, u32> = SingleFlight::default();
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let tasks = runtime.block_on(async { Tasks::new() });
        let handle = runtime.handle().clone();
        drop(runtime);
        // The runtime is gone: spawning drops the flight's future at once.
        let _guard = handle.enter();
        let (flight, ()) = flights.join_or_start("k", (), &tasks, async { 1 }, || 0);
        assert!(!flights.is_flying(&"k"), "its landing freed the key");
        drop(flight);
    }

    #[tokio::test]
    async fn a_flight_that_panics_frees_its_key() {
        let flights: SingleFlight<&str, Result<u32, &str>> = SingleFlight::default();
        let tasks = Tasks::new();
        let (crashed, ()) = flights.join_or_start(
            "k",
            (),
            &tasks,
            async {
                tokio::task::yield_now().await;
                panic!("inside the flight")
            },
            || Err("died"),
        );
        assert_eq!(crashed.await, Err("died"));
        assert!(!flights.is_flying(&"k"), "a panic leaves no entry behind");
        let (next, ()) = flights.join_or_start("k", (), &tasks, async { Ok(1) }, || Err("died"));
        assert_eq!(next.await, Ok(1), "the next caller starts a new flight");
    }
}
