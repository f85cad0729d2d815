//! State that replicas share through PostgreSQL: request budgets (fixed
//! one-second and one-minute windows per Cronofy application — kept in the
//! `tenant_id` column, which holds the application key `client_id@data_centre`)
//! and circuit breakers.
//! Only used when the store is PostgreSQL.

use std::time::Duration;

use super::{Store, StoreError, now};

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

    /// Claims up to `want` requests from the tenant's shared windows (this
    /// second and this minute), counted for every replica. Ok(Ok(claim)) says
    /// how many were granted (at least one) and in which second they must be
    /// spent; Ok(Err(wait)) when a window is full: nothing is counted, and
    /// `wait` says when the fullest window ends. On SQLite, where budgets are
    /// local, everything asked for is granted.
    pub async fn take_rate_budget(
        &self,
        tenant: &str,
        per_second: u32,
        per_minute: u32,
        want: u32,
    ) -> Result<Result<RateClaim, Duration>, StoreError> {
        let (_, now_ms) = now();
        let (second, minute) = (now_ms / 1000, now_ms / 60_000);
        let Some(pool) = self.shared_pool() else {
            return Ok(Ok(RateClaim { granted: want, second }));
        };
        let want = i64::from(want.max(1));
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "INSERT INTO rate_windows (tenant_id, window_kind, window_start, used) VALUES ($1, 's', $2, $4), ($1, 'm', $3, $4) \
             ON CONFLICT (tenant_id, window_kind, window_start) DO UPDATE SET used = rate_windows.used + $4 \
             RETURNING window_kind, used",
        )
        .bind(tenant)
        .bind(second)
        .bind(minute)
        .bind(want)
        .fetch_all(pool)
        .await?;
        let (mut excess, mut wait_ms) = (0, 0);
        for (kind, used) in rows {
            let (limit, window_end) = match kind.as_str() {
                "s" => (i64::from(per_second), (second + 1) * 1000),
                _ => (i64::from(per_minute), (minute + 1) * 60_000),
            };
            if used > limit {
                excess = excess.max((used - limit).min(want));
                if used - want >= limit {
                    wait_ms = wait_ms.max(window_end - now_ms);
                }
            }
        }
        if excess > 0 {
            // Not to be sent: give those slots back, so refused requests do not eat the budget.
            sqlx::query(
                "UPDATE rate_windows SET used = used - $4 WHERE tenant_id = $1 AND \
                 ((window_kind = 's' AND window_start = $2) OR (window_kind = 'm' AND window_start = $3))",
            )
            .bind(tenant)
            .bind(second)
            .bind(minute)
            .bind(excess)
            .execute(pool)
            .await?;
        }
        if excess == want {
            return Ok(Err(Duration::from_millis(wait_ms.max(1) as u64)));
        }
        Ok(Ok(RateClaim {
            granted: (want - excess) as u32,
            second,
        }))
    }

    /// Forgets windows that have ended (called periodically).
    pub async fn prune_rate_windows(&self) -> Result<(), StoreError> {
        let Some(pool) = self.shared_pool() else { return Ok(()) };
        let (_, now_ms) = now();
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
        let (_, now_ms) = now();
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
    pub async fn claim_breaker_probe(&self, name: &str, cool_down: Duration) -> Result<bool, StoreError> {
        let Some(pool) = self.shared_pool() else {
            return Ok(true);
        };
        let (_, now_ms) = now();
        let claimed = sqlx::query(
            "UPDATE breakers SET open_until = $2 + $3 WHERE name = $1 AND open_until > 0 AND open_until <= $2",
        )
        .bind(name)
        .bind(now_ms)
        .bind(cool_down.as_millis() as i64)
        .execute(pool)
        .await?
        .rows_affected();
        Ok(claimed == 1)
    }
}
