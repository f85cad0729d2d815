//! `calgate rekey` for queued writes: each waiting write's sealed event is
//! re-sealed under the current key, by compare-and-swap on its key id and
//! state, so a write settled meanwhile (its body dropped) is left alone.

use super::{Store, StoreError, queued_writes::body_binding, rekey::RekeyProgress, with_pool};

/// Queued writes re-sealed per batch.
const BATCH: i64 = 200;

impl Store {
    /// Re-seals every waiting queued write's body under the current key.
    pub(super) async fn rekey_queued_writes(&self, progress: &mut RekeyProgress) -> Result<(), StoreError> {
        let current = self.cipher().current_key_id().to_owned();
        let mut after = String::new();
        loop {
            let rows: Vec<(String, String, String, String, Vec<u8>)> = with_pool!(self, pool => {
                sqlx::query_as(
                    "SELECT write_id, tenant_id, sub, key_id, body FROM queued_writes \
                     WHERE body IS NOT NULL AND key_id IS NOT NULL AND key_id <> $1 AND write_id > $2 \
                     ORDER BY write_id LIMIT $3",
                )
                .bind(&current)
                .bind(&after)
                .bind(BATCH)
                .fetch_all(pool)
                .await?
            });
            let Some(last) = rows.last() else { return Ok(()) };
            after = last.0.clone();
            for (write_id, tenant_id, sub, key_id, body) in rows {
                let bound = format!("{sub}/{write_id}");
                let Ok(opened) = self.cipher().open(&key_id, &body, &body_binding(&tenant_id, &bound)) else {
                    progress
                        .unreadable
                        .push((tenant_id, format!("queued write {write_id}"), key_id));
                    continue;
                };
                let sealed = self.cipher().seal(&opened, &body_binding(&tenant_id, &bound));
                let updated = with_pool!(self, pool => {
                    sqlx::query(
                        "UPDATE queued_writes SET key_id = $1, body = $2 \
                         WHERE write_id = $3 AND key_id = $4 AND body IS NOT NULL",
                    )
                    .bind(&current)
                    .bind(&sealed)
                    .bind(&write_id)
                    .bind(&key_id)
                    .execute(pool)
                    .await?
                    .rows_affected()
                });
                if updated == 1 {
                    progress.queued_writes += 1;
                }
            }
        }
    }
}
