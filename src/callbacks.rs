//! The Enterprise Connect callback listener: plain HTTP on `callbacks.listen`,
//! separate from gRPC, where Cronofy posts each member authorization's outcome.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Query, State},
    http::StatusCode,
    routing::post,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::domain::{CALLBACK_PATH, CalendarService, CallbackError, Tenant};

#[derive(Clone)]
struct Callbacks {
    service: Arc<CalendarService>,
    tenants: Arc<HashMap<String, Arc<Tenant>>>,
}

async fn callback(
    State(callbacks): State<Callbacks>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> StatusCode {
    let Some(id) = query.get("authorization").filter(|id| !id.is_empty() && id.len() <= 64) else {
        return StatusCode::NOT_FOUND;
    };
    match callbacks
        .service
        .complete_enterprise_callback(&callbacks.tenants, id, &body)
        .await
    {
        Ok(outcome) => {
            info!(authorization = %id, ?outcome, "enterprise callback handled");
            StatusCode::OK
        }
        Err(error) => {
            warn!(authorization = %id, %error, "enterprise callback refused");
            match error {
                CallbackError::Unknown => StatusCode::NOT_FOUND,
                CallbackError::Invalid(_) => StatusCode::BAD_REQUEST,
                CallbackError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            }
        }
    }
}

/// Serves the callback until `shutdown` is signalled.
pub async fn serve(
    listener: TcpListener,
    service: Arc<CalendarService>,
    tenants: Arc<HashMap<String, Arc<Tenant>>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = Router::new()
        .route(CALLBACK_PATH, post(callback))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(Callbacks { service, tenants });
    info!(addr = ?listener.local_addr().ok(), "Enterprise Connect callbacks at POST {CALLBACK_PATH}");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
