//! What calgate tells the gRPC health service (and the `calgate_ready`
//! gauge): the one place both start-up and the store watcher report through.

use tonic_health::{ServingStatus, server::HealthReporter};

use crate::telemetry::metrics::METRICS;

/// Name under which the calendar service reports health (readiness).
pub const SERVICE_NAME: &str = "calgate.v1.CalendarWriteService";
/// Health name that stays SERVING while the process runs, store or no store:
/// for liveness probes, so an outage of PostgreSQL takes replicas out of
/// rotation instead of restarting them.
pub const LIVENESS_NAME: &str = "calgate.liveness";

/// Reports `status` for the server as a whole ("") and the calendar service,
/// and sets `calgate_ready`.
pub(crate) async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    METRICS.ready.set(i64::from(status == ServingStatus::Serving));
    reporter.set_service_status("", status).await;
    reporter.set_service_status(SERVICE_NAME, status).await;
}
