//! Each tenant's event id scheme (migration `event_namespaces`), what calgate
//! recorded of the events it wrote, and who else holds an account: what
//! tenants sharing one Cronofy application need to stay apart.

use std::collections::HashMap;

use super::{Backend, BeginWrite, Store, StoreError, with_pool};
use crate::domain::{changes::EventState, event_ids::EventIds, grant::GrantStatus};

/// Any number, the same in every replica: the advisory lock that makes two
/// replicas starting at once choose the same schemes.
const NAMESPACE_LOCK: i64 = 0x6361_6c67_6174_6531;

impl Store {
    /// The event id scheme of every tenant, by application (each a list of
    /// the tenant ids configured with one Cronofy application). A scheme is
    /// chosen once, the first time calgate starts with the tenant, and kept:
    /// - a tenant recorded already keeps its scheme;
    /// - a new tenant keeps callers' ids when no tenant of its application
    ///   does yet (the first of its application, by id);
    /// - any other tenant writes under its own prefix.
    pub async fn resolve_event_ids(
        &self,
        applications: &[Vec<String>],
    ) -> Result<HashMap<String, EventIds>, StoreError> {
        let (now, _) = self.now();
        let recorded: Vec<(String, String)> = with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            if let Backend::Postgres(_) = &self.backend {
                // Only PostgreSQL runs this here; SQLite's single writer serialises it anyway.
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(NAMESPACE_LOCK)
                    .execute(&mut *tx)
                    .await?;
            }
            let mut recorded: HashMap<String, String> =
                sqlx::query_as::<_, (String, String)>("SELECT tenant_id, prefix FROM event_namespaces")
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .collect();
            for tenants in applications {
                let mut sorted = tenants.clone();
                sorted.sort();
                let mut callers_taken = sorted
                    .iter()
                    .any(|tenant| recorded.get(tenant).is_some_and(String::is_empty));
                let new: Vec<&String> = sorted.iter().filter(|tenant| !recorded.contains_key(*tenant)).collect();
                for tenant in new {
                    let scheme = if callers_taken {
                        EventIds::prefixed_for(tenant)
                    } else {
                        callers_taken = true;
                        EventIds::Callers
                    };
                    sqlx::query(
                        "INSERT INTO event_namespaces (tenant_id, prefix, created_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (tenant_id) DO NOTHING",
                    )
                    .bind(tenant)
                    .bind(scheme.stored())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    recorded.insert(tenant.clone(), scheme.stored().to_owned());
                }
            }
            tx.commit().await?;
            recorded.into_iter().collect()
        });
        Ok(recorded
            .into_iter()
            .map(|(tenant, prefix)| (tenant, EventIds::from_stored(&prefix)))
            .collect())
    }

    /// The events calgate wrote for the grant and has not deleted since
    /// (in `calendar_ids`, or all): (calendar_id, caller's event_id), in order.
    pub async fn written_events(
        &self,
        tenant: &str,
        sub: &str,
        calendar_ids: &[String],
    ) -> Result<Vec<(String, String)>, StoreError> {
        let deleted = EventState::Deleted.digest();
        let rows: Vec<(String, String)> = with_pool!(self, pool => {
            sqlx::query_as::<_, (String, String)>(
                "SELECT calendar_id, event_id FROM event_writes WHERE tenant_id = $1 AND sub = $2 \
                 AND digest <> $3 ORDER BY calendar_id, event_id",
            )
            .bind(tenant)
            .bind(sub)
            .bind(&deleted)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .filter(|(calendar_id, _)| calendar_ids.is_empty() || calendar_ids.contains(calendar_id))
            .collect())
    }

    /// Whether one of `tenants` holds a live grant (tokens, not revoked) for
    /// the account `sub`.
    pub async fn account_held_by(&self, tenants: &[String], sub: &str) -> Result<bool, StoreError> {
        for tenant in tenants {
            let held: i64 = with_pool!(self, pool => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM grants WHERE tenant_id = $1 AND sub = $2 \
                     AND refresh_token IS NOT NULL AND status <> $3",
                )
                .bind(tenant)
                .bind(sub)
                .bind(GrantStatus::Revoked.as_str())
                .fetch_one(pool)
                .await?
            });
            if held > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
