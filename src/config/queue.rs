//! `[queue]`: queued writes (UpsertEvent and DeleteEvent with
//! `WRITE_MODE_QUEUED`), stored by calgate and delivered in the background.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// `[queue]`: how many queued writes a tenant may hold, how long calgate
/// keeps trying one, and how the delivery worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// Queued writes one tenant may have waiting (across replicas); past it a
    /// queued write is refused `RESOURCE_EXHAUSTED` `QUEUE_FULL`.
    pub max_per_tenant: u32,
    /// A write still failing transiently (Cronofy down, its rate limit, the
    /// budget spent) this long after it was accepted settles FAILED.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// How often each replica looks for writes due (a write accepted on the
    /// replica wakes it at once).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Deliveries one replica has in flight at once.
    pub concurrency: u32,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            max_per_tenant: 10_000,
            max_age: Duration::from_secs(24 * 3600),
            poll_interval: Duration::from_secs(1),
            concurrency: 8,
        }
    }
}

impl QueueSettings {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if !(1..=1_000_000).contains(&self.max_per_tenant) {
            return Err(ConfigError::invalid("queue.max_per_tenant", "must be 1 to 1000000"));
        }
        if self.max_age < Duration::from_secs(60) {
            return Err(ConfigError::invalid("queue.max_age", "must be at least 1m"));
        }
        if !(Duration::from_millis(50)..=Duration::from_secs(60)).contains(&self.poll_interval) {
            return Err(ConfigError::invalid("queue.poll_interval", "must be 50ms to 1m"));
        }
        if !(1..=64).contains(&self.concurrency) {
            return Err(ConfigError::invalid("queue.concurrency", "must be 1 to 64"));
        }
        Ok(())
    }
}
