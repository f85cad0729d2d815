//! `GET /metrics` on `metrics_listen`.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{
    store::Store,
    telemetry::metrics::{GRANT_STATUSES, KeyLabel, METRICS, StatusLabel, TenantLabel},
};

/// `GET /metrics`: Prometheus text. Grants by status are counted at scrape time.
pub(super) async fn serve_metrics(
    listener: TcpListener,
    store: Store,
    tenants: Vec<String>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (store, tenants) = (store.clone(), tenants.clone());
            async move {
                let counted = tokio::time::timeout(Duration::from_secs(2), store.count_grants_by_status()).await;
                if let Ok(Ok(counts)) = counted {
                    // A status no grant has any more counts 0, not its last count.
                    for status in GRANT_STATUSES {
                        let count = counts.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
                        METRICS
                            .grants
                            .get_or_create(&StatusLabel {
                                status: (*status).to_owned(),
                            })
                            .set(count);
                    }
                }
                let by_key = tokio::time::timeout(Duration::from_secs(2), store.count_grants_by_key()).await;
                if let Ok(Ok(counts)) = by_key {
                    // A key no grant uses any more counts 0 (it is safe to remove once every replica says so).
                    for key_id in store.key_ids() {
                        let count = counts.iter().find(|(k, _)| *k == key_id).map_or(0, |(_, n)| *n);
                        METRICS.grants_by_key.get_or_create(&KeyLabel { key_id }).set(count);
                    }
                    for (key_id, count) in counts {
                        METRICS.grants_by_key.get_or_create(&KeyLabel { key_id }).set(count);
                    }
                }
                let depths = tokio::time::timeout(Duration::from_secs(2), store.queue_depths()).await;
                if let Ok(Ok(depths)) = depths {
                    // A configured tenant with nothing queued shows 0, not its last depth.
                    for tenant in &tenants {
                        let (count, oldest) = depths
                            .iter()
                            .find(|(id, _, _)| id == tenant)
                            .map_or((0, 0), |(_, count, oldest)| (*count, *oldest));
                        let label = TenantLabel { tenant: tenant.clone() };
                        METRICS.queue_depth.get_or_create(&label).set(count);
                        METRICS.queue_oldest_seconds.get_or_create(&label).set(oldest);
                    }
                }
                let erasures = tokio::time::timeout(Duration::from_secs(2), store.erasure_backlog()).await;
                if let Ok(Ok(backlog)) = erasures {
                    METRICS.erasures_pending.set(backlog.count);
                    METRICS.erasure_oldest_pending_seconds.set(backlog.oldest_age_seconds);
                }
                let queued = tokio::time::timeout(Duration::from_secs(2), store.count_queued_notifications()).await;
                if let Ok(Ok(queued)) = queued {
                    METRICS.notifications_queued.set(queued);
                }
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    METRICS.render(),
                )
            }
        }),
    );
    let addr = listener.local_addr().ok();
    info!(addr = ?addr, "metrics at GET /metrics");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
