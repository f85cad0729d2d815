//! Which grants calls used, for the background refresher's "used recently"
//! (`grants.last_used_at`). Recording is in memory and cheap on the call
//! path; a grant is written to the store at most once per
//! [`RECORD_EVERY`] by this replica, in batches by the refresher's rounds.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Mutex,
};

/// How stale `last_used_at` may get: far below `refresh_ahead.used_within`.
pub const RECORD_EVERY: i64 = 3600;
/// Grants remembered at most, pending or recently written (a bound on memory).
const MAX_ENTRIES: usize = 100_000;

/// Grants used since the last flush.
#[derive(Debug, Default)]
pub struct UsageLog {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Used and not yet written: key → (tenant, sub).
    pending: HashMap<u64, (String, String)>,
    /// Written to the store at (unix seconds), by key.
    written: HashMap<u64, i64>,
}

fn key(tenant: &str, sub: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (tenant, sub).hash(&mut hasher);
    hasher.finish()
}

impl UsageLog {
    /// A call used the grant at `now` (unix seconds).
    pub fn record(&self, tenant: &str, sub: &str, now: i64) {
        let key = key(tenant, sub);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.written.get(&key).is_some_and(|at| now - at < RECORD_EVERY) || inner.pending.contains_key(&key) {
            return;
        }
        if inner.pending.len() < MAX_ENTRIES {
            inner.pending.insert(key, (tenant.to_owned(), sub.to_owned()));
        }
    }

    /// The grants to write, marked written at `now`.
    pub fn take(&self, now: i64) -> Vec<(String, String)> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let pending = std::mem::take(&mut inner.pending);
        if inner.written.len() + pending.len() > MAX_ENTRIES {
            // Forgetting only means writing a grant's use again sooner.
            inner.written.clear();
        }
        pending
            .into_iter()
            .map(|(key, grant)| {
                inner.written.insert(key, now);
                grant
            })
            .collect()
    }

    /// Puts grants back after the store refused them.
    pub fn restore(&self, grants: Vec<(String, String)>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (tenant, sub) in grants {
            let key = key(&tenant, &sub);
            inner.written.remove(&key);
            if inner.pending.len() < MAX_ENTRIES {
                inner.pending.insert(key, (tenant, sub));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_is_written_once_an_hour_however_often_it_is_used() {
        let log = UsageLog::default();
        log.record("acme", "acc_1", 1000);
        log.record("acme", "acc_1", 1001);
        log.record("acme", "acc_2", 1001);
        let mut first = log.take(1002);
        first.sort();
        assert_eq!(
            first,
            vec![("acme".into(), "acc_1".into()), ("acme".into(), "acc_2".into())]
        );
        log.record("acme", "acc_1", 1500);
        assert!(log.take(1501).is_empty(), "written within the hour");
        log.record("acme", "acc_1", 1002 + RECORD_EVERY);
        assert_eq!(log.take(1002 + RECORD_EVERY).len(), 1);
    }

    #[test]
    fn refused_writes_are_tried_again() {
        let log = UsageLog::default();
        log.record("acme", "acc_1", 10);
        let taken = log.take(11);
        log.restore(taken);
        assert_eq!(log.take(12).len(), 1);
    }
}
