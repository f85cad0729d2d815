//! State that replicas share through PostgreSQL: request budgets (token
//! buckets per Cronofy application, keyed `client_id@data_centre`) and
//! circuit breakers.
//! Only used when the store is PostgreSQL.

use std::time::Duration;

use super::{Store, StoreError};
use crate::config::BucketShape;

/// A breaker's shared state after a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerRecord {
    /// Consecutive failures seen by all replicas.
    pub failures: i64,
    /// Open until this unix time in milliseconds (0 or past: closed or probing).
    pub open_until_ms: i64,
}

/// Requests a replica may send without asking the shared budget again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateClaim {
    /// How many.
    pub granted: u32,
    /// The unix second they were counted in; they lapse when it ends.
    pub second: i64,
}

impl Store {
    /// The counters pool (PostgreSQL only).
    fn shared_pool(&self) -> Option<&sqlx::PgPool> {
        self.counters.as_ref()
    }

    /// Claims up to `want` requests from the application's shared budget —
    /// two token buckets, per second and per minute, shaped by `buckets` —
    /// counted for every replica. Ok(Ok(claim)) says how many were granted
    /// (at least one; both buckets paid for them) and in which second they
    /// must be spent; Ok(Err(wait)) when either bucket has no token: nothing
    /// is taken, and `wait` says when both will have one. On SQLite, where
    /// budgets are local, everything asked for is granted.
    ///
    /// One row per application holds both buckets as GCRA "theoretical
    /// arrival times" (a bucket is full when its time has passed); one
    /// upsert computes the grant from the row's latest version, under its
    /// row lock, so concurrent replicas never both spend one token.
    pub async fn take_rate_budget(
        &self,
        application: &str,
        buckets: &[BucketShape; 2],
        want: u32,
    ) -> Result<Result<RateClaim, Duration>, StoreError> {
        self.take_rate_budget_of(application, buckets, want, 1).await
    }

    /// Like [`Store::take_rate_budget`], but all of `want` or nothing: a
    /// request that counts as several (a batch) is sent whole or not yet,
    /// and a refusal spends nothing. `wait` says when both buckets will hold `want`.
    pub async fn take_rate_budget_whole(
        &self,
        application: &str,
        buckets: &[BucketShape; 2],
        want: u32,
    ) -> Result<Result<RateClaim, Duration>, StoreError> {
        self.take_rate_budget_of(application, buckets, want, want).await
    }

    async fn take_rate_budget_of(
        &self,
        application: &str,
        buckets: &[BucketShape; 2],
        want: u32,
        at_least: u32,
    ) -> Result<Result<RateClaim, Duration>, StoreError> {
        // The claim is spent within this replica's current second.
        let (_, now_ms) = self.now();
        let second = now_ms / 1000;
        let Some(pool) = self.shared_pool() else {
            return Ok(Ok(RateClaim { granted: want, second }));
        };
        let want = want.max(1);
        let at_least = at_least.clamp(1, want);
        let [per_second, per_minute] = buckets;
        let (second_interval, minute_interval) = (per_second.interval_ms(), per_minute.interval_ms());
        let second_tolerance = f64::from(per_second.capacity) * second_interval;
        let minute_tolerance = f64::from(per_minute.capacity) * minute_interval;
        // A new row is a full bucket: its first claim gets what both capacities allow.
        let first_grant = want.min(per_second.capacity).min(per_minute.capacity);
        let first_grant = if first_grant < at_least { 0 } else { first_grant };
        // Time is PostgreSQL's, read once the row is locked, so replicas whose
        // clocks disagree still share one bucket. Tokens a bucket holds:
        // (tolerance - time still owed) / interval; the epsilon keeps a whole
        // token whole despite floating point.
        const NOW: &str = "(SELECT EXTRACT(EPOCH FROM clock_timestamp())::DOUBLE PRECISION * 1000 AS now_ms) AS clock";
        let sql = format!(
            "INSERT INTO rate_buckets AS b (application, second_tat_ms, minute_tat_ms, granted, claimed_at_ms) \
             SELECT $1, now_ms + $7 * $2, now_ms + $7 * $4, $7, now_ms FROM {NOW} \
             ON CONFLICT (application) DO UPDATE SET \
               (granted, second_tat_ms, minute_tat_ms, claimed_at_ms) = ( \
                 SELECT n, s + n * $2, m + n * $4, now_ms FROM ( \
                   SELECT s, m, now_ms, (CASE WHEN free >= $8 THEN free ELSE 0 END)::BIGINT AS n FROM ( \
                   SELECT s, m, now_ms, GREATEST(0, LEAST($5, \
                       FLOOR(($3 - (s - now_ms)) / $2 + 1e-9), \
                       FLOOR(($6 - (m - now_ms)) / $4 + 1e-9))) AS free \
                   FROM (SELECT GREATEST(b.second_tat_ms, now_ms) AS s, GREATEST(b.minute_tat_ms, now_ms) AS m, now_ms \
                         FROM {NOW}) AS owed) AS free_) AS grant_) \
             RETURNING granted, second_tat_ms, minute_tat_ms, claimed_at_ms"
        );
        let (granted, second_tat, minute_tat, now): (i64, f64, f64, f64) = sqlx::query_as(&sql)
            .bind(application)
            .bind(second_interval)
            .bind(second_tolerance)
            .bind(minute_interval)
            .bind(f64::from(want))
            .bind(minute_tolerance)
            .bind(i64::from(first_grant))
            .bind(f64::from(at_least))
            .fetch_one(pool)
            .await?;
        if granted > 0 {
            return Ok(Ok(RateClaim {
                granted: granted as u32,
                second,
            }));
        }
        // When each bucket will hold `at_least` tokens again.
        let need = f64::from(at_least);
        let wait = (second_tat + need * second_interval - second_tolerance - now)
            .max(minute_tat + need * minute_interval - minute_tolerance - now)
            .ceil()
            .max(1.0);
        Ok(Err(Duration::from_millis(wait as u64)))
    }

    /// Forgets the fixed windows an earlier release counted in (see
    /// migration 0010) once they have ended; called periodically.
    pub async fn prune_rate_windows(&self) -> Result<(), StoreError> {
        let Some(pool) = self.shared_pool() else { return Ok(()) };
        let (_, now_ms) = self.now();
        sqlx::query(
            "DELETE FROM rate_windows WHERE (window_kind = 's' AND window_start < $1) OR (window_kind = 'm' AND window_start < $2)",
        )
        .bind(now_ms / 1000 - 5)
        .bind(now_ms / 60_000 - 2)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// A breaker's shared state (closed if never written).
    pub async fn read_breaker(&self, name: &str) -> Result<BreakerRecord, StoreError> {
        let Some(pool) = self.shared_pool() else {
            return Ok(BreakerRecord {
                failures: 0,
                open_until_ms: 0,
            });
        };
        let row: Option<(i64, i64)> = sqlx::query_as("SELECT failures, open_until FROM breakers WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?;
        Ok(row.map_or(
            BreakerRecord {
                failures: 0,
                open_until_ms: 0,
            },
            |(failures, open_until_ms)| BreakerRecord {
                failures,
                open_until_ms,
            },
        ))
    }

    /// Counts a failure; opens the breaker for `cool_down` when the run reaches `threshold`.
    pub async fn record_breaker_failure(
        &self,
        name: &str,
        threshold: u32,
        cool_down: Duration,
    ) -> Result<BreakerRecord, StoreError> {
        let Some(pool) = self.shared_pool() else {
            return Ok(BreakerRecord {
                failures: 0,
                open_until_ms: 0,
            });
        };
        let (_, now_ms) = self.now();
        let (failures, open_until_ms): (i64, i64) = sqlx::query_as(
            "INSERT INTO breakers (name, failures, open_until) VALUES ($1, 1, CASE WHEN 1 >= $2 THEN $3 + $4 ELSE 0 END) \
             ON CONFLICT (name) DO UPDATE SET failures = breakers.failures + 1, open_until = CASE \
               WHEN breakers.failures + 1 >= $2 AND breakers.open_until <= $3 THEN $3 + $4 ELSE breakers.open_until END \
             RETURNING failures, open_until",
        )
        .bind(name)
        .bind(i64::from(threshold))
        .bind(now_ms)
        .bind(cool_down.as_millis() as i64)
        .fetch_one(pool)
        .await?;
        Ok(BreakerRecord {
            failures,
            open_until_ms,
        })
    }

    /// Closes the breaker. True when it was open or counting failures.
    pub async fn record_breaker_success(&self, name: &str) -> Result<bool, StoreError> {
        let Some(pool) = self.shared_pool() else {
            return Ok(false);
        };
        let updated = sqlx::query(
            "UPDATE breakers SET failures = 0, open_until = 0 WHERE name = $1 AND (failures > 0 OR open_until > 0)",
        )
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected();
        Ok(updated > 0)
    }

    /// Claims the half-open probe of an open breaker whose cool-down has passed:
    /// true for exactly one replica, which then owns the probe for `cool_down`.
    pub async fn claim_breaker_probe(&self, name: &str, cool_down: Duration) -> Result<Option<i64>, StoreError> {
        let (_, now_ms) = self.now();
        let lease = now_ms + cool_down.as_millis() as i64;
        let Some(pool) = self.shared_pool() else {
            return Ok(Some(lease));
        };
        let claimed =
            sqlx::query("UPDATE breakers SET open_until = $3 WHERE name = $1 AND open_until > 0 AND open_until <= $2")
                .bind(name)
                .bind(now_ms)
                .bind(lease)
                .execute(pool)
                .await?
                .rows_affected();
        Ok((claimed == 1).then_some(lease))
    }

    /// Hands back a probe lease taken by [`Store::claim_breaker_probe`]
    /// (its caller gave up without an outcome): the breaker stays open but
    /// the next call on any replica may probe at once. Compare-and-swap on
    /// the lease, so a newer probe or a recorded outcome is never undone.
    pub async fn release_breaker_probe(&self, name: &str, lease: i64) -> Result<(), StoreError> {
        let Some(pool) = self.shared_pool() else {
            return Ok(());
        };
        let (_, now_ms) = self.now();
        sqlx::query("UPDATE breakers SET open_until = $3 WHERE name = $1 AND open_until = $2")
            .bind(name)
            .bind(lease)
            .bind(now_ms.min(lease).max(1))
            .execute(pool)
            .await?;
        Ok(())
    }
}
