//! Which callback connections are waiting for a request (its head or its
//! body) and which are being processed.
//!
//! A connection waiting costs calgate nothing but a socket, and anyone can
//! open many (half a head, a head announcing a body that never comes). So
//! waiting connections are bounded on their own — per peer address and in
//! all — and when a bound is reached the *oldest* waiting connection is
//! closed to make room, never the new one: an attacker holding places only
//! pushes its own connections out, while a real callback, which sends its
//! whole request at once, is done waiting within milliseconds. Only a
//! connection whose request has fully arrived is safe from eviction.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{Arc, Mutex},
};

use tokio_util::sync::CancellationToken;

use crate::{config::CallbackLimits, telemetry::metrics::METRICS};

/// The table of open connections (see the module).
#[derive(Debug, Clone)]
pub(super) struct Connections {
    inner: Arc<Mutex<Table>>,
    limits: CallbackLimits,
}

#[derive(Debug, Default)]
struct Table {
    /// Connections waiting, oldest first (by the order they began waiting).
    waiting: BTreeMap<u64, Waiting>,
    /// Waiting connections per peer address.
    per_peer: HashMap<IpAddr, usize>,
    /// Every open connection, waiting or not, but for those evicted (they
    /// are closing).
    open: usize,
    next: u64,
}

#[derive(Debug)]
struct Waiting {
    peer: IpAddr,
    close: CancellationToken,
}

/// One open connection; closing it (dropping) gives its place back.
#[derive(Debug)]
pub(super) struct Connection {
    table: Connections,
    peer: IpAddr,
    /// Cancelled when the connection is evicted.
    close: CancellationToken,
    /// Its key in `waiting` while it waits.
    waiting: Mutex<Option<u64>>,
}

impl Connections {
    pub(super) fn new(limits: CallbackLimits) -> Self {
        Connections {
            inner: Arc::new(Mutex::new(Table::default())),
            limits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a new connection from `peer`, waiting, evicting the oldest
    /// waiting one (of that peer first) where a bound is reached; None when
    /// every place is held by a connection being processed.
    pub(super) fn admit(&self, peer: IpAddr) -> Option<Arc<Connection>> {
        let mut table = self.lock();
        if table.per_peer.get(&peer).copied().unwrap_or(0) >= self.limits.max_waiting_per_peer as usize {
            table.evict_oldest(Some(peer), "callback_waiting");
        }
        if table.waiting.len() >= self.limits.max_waiting as usize {
            table.evict_oldest(None, "callback_waiting");
        }
        if table.open >= self.limits.max_connections as usize && !table.evict_oldest(None, "callback_connections") {
            METRICS.peer_refused("callback_connections");
            return None;
        }
        table.open += 1;
        let close = CancellationToken::new();
        let key = table.wait(peer, close.clone());
        Some(Arc::new(Connection {
            table: self.clone(),
            peer,
            close,
            waiting: Mutex::new(Some(key)),
        }))
    }
}

impl Table {
    fn wait(&mut self, peer: IpAddr, close: CancellationToken) -> u64 {
        let key = self.next;
        self.next += 1;
        self.waiting.insert(key, Waiting { peer, close });
        *self.per_peer.entry(peer).or_default() += 1;
        key
    }

    fn stop_waiting(&mut self, key: u64) -> Option<Waiting> {
        let waiting = self.waiting.remove(&key)?;
        if let Some(count) = self.per_peer.get_mut(&waiting.peer) {
            *count -= 1;
            if *count == 0 {
                self.per_peer.remove(&waiting.peer);
            }
        }
        Some(waiting)
    }

    /// Closes the oldest waiting connection (of `peer`, if given); false
    /// when there is none.
    fn evict_oldest(&mut self, peer: Option<IpAddr>, limit: &'static str) -> bool {
        let key = self
            .waiting
            .iter()
            .find(|(_, waiting)| peer.is_none_or(|peer| waiting.peer == peer))
            .map(|(key, _)| *key);
        let Some(evicted) = key.and_then(|key| self.stop_waiting(key)) else {
            return false;
        };
        // Cancelled under the table's lock: `Connection::drop` then knows
        // its place was already given back.
        evicted.close.cancel();
        self.open -= 1;
        METRICS.peer_refused(limit);
        true
    }
}

impl Connection {
    /// Cancelled when the connection is evicted: its task closes it.
    pub(super) fn closed(&self) -> &CancellationToken {
        &self.close
    }

    /// Its request has fully arrived: it cannot be evicted until the answer
    /// is sent. None if it was evicted meanwhile.
    pub(super) fn processing(self: &Arc<Self>) -> Option<Processing> {
        let mut table = self.table.lock();
        let key = self.waiting.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        table.stop_waiting(key)?;
        Some(Processing {
            connection: self.clone(),
        })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut table = self.table.lock();
        if let Some(key) = self.waiting.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            table.stop_waiting(key);
        }
        if !self.close.is_cancelled() {
            table.open -= 1;
        }
    }
}

/// A connection being processed; once answered it waits (for its next
/// request, on a kept-alive connection) again, as the newest.
#[derive(Debug)]
pub(super) struct Processing {
    connection: Arc<Connection>,
}

impl Drop for Processing {
    fn drop(&mut self) {
        let connection = &self.connection;
        let mut table = connection.table.lock();
        let key = table.wait(connection.peer, connection.close.clone());
        *connection.waiting.lock().unwrap_or_else(|p| p.into_inner()) = Some(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> CallbackLimits {
        CallbackLimits {
            max_connections: 4,
            max_waiting: 3,
            max_waiting_per_peer: 2,
            ..CallbackLimits::default()
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn a_peer_at_its_bound_pushes_out_its_own_oldest_connection() {
        let table = Connections::new(limits());
        let first = table.admit(ip(2)).expect("first");
        let second = table.admit(ip(2)).expect("second");
        let other = table.admit(ip(1)).expect("another peer");
        let third = table.admit(ip(2)).expect("third");
        assert!(first.closed().is_cancelled(), "the peer's oldest is evicted");
        assert!(!second.closed().is_cancelled() && !third.closed().is_cancelled());
        assert!(!other.closed().is_cancelled(), "another peer's connection is untouched");
    }

    #[test]
    fn connections_being_processed_are_never_evicted() {
        let table = Connections::new(limits());
        let (busy, processing): (Vec<_>, Vec<_>) = [1, 3, 4, 5]
            .into_iter()
            .map(|last| {
                let connection = table.admit(ip(last)).expect("admitted");
                let processing = connection.processing().expect("not evicted");
                (connection, processing)
            })
            .unzip();
        assert!(table.admit(ip(6)).is_none(), "every place is being processed");
        drop(processing);
        // Answered, they wait again and may be evicted for a newcomer.
        let newcomer = table.admit(ip(6)).expect("room once one waits");
        assert!(busy[0].closed().is_cancelled(), "the oldest waiting one made room");
        assert!(!busy[1].closed().is_cancelled(), "only one");
        assert!(newcomer.processing().is_some());
    }

    #[test]
    fn an_evicted_connection_cannot_start_processing() {
        let table = Connections::new(limits());
        let first = table.admit(ip(2)).expect("first");
        let _second = table.admit(ip(2)).expect("second");
        let _third = table.admit(ip(2)).expect("third");
        assert!(first.processing().is_none());
        drop(first);
        assert_eq!(table.lock().open, 2);
    }
}
