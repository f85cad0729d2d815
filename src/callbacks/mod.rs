//! The Enterprise Connect callback listener: plain HTTP on `callbacks.listen`,
//! separate from gRPC, where Cronofy posts each member authorization's outcome.
//!
//! Before the store is touched, a callback must name an id of calgate's shape
//! and carry a `Cronofy-HMAC-SHA256` made with one of a configured tenant
//! application's secrets; else 404 or 401 and nothing changes.

mod signature;

use std::{collections::HashMap, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Query, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::domain::{
    CALLBACK_PATH, CalendarService, CallbackError, Tenant, authorization_fingerprint, is_authorization_id,
};

#[derive(Clone)]
struct Callbacks {
    service: Arc<CalendarService>,
    tenants: Arc<HashMap<String, Arc<Tenant>>>,
}

async fn callback(
    State(callbacks): State<Callbacks>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Some(id) = query.get("authorization").filter(|id| is_authorization_id(id)) else {
        return StatusCode::NOT_FOUND;
    };
    let fingerprint = authorization_fingerprint(id);
    let header = headers.get(signature::HEADER).and_then(|value| value.to_str().ok());
    // Tenants may share an application (and so a secret): each that signed it may own the id.
    let signed_by: Vec<Arc<Tenant>> = callbacks
        .tenants
        .values()
        .filter(|tenant| signature::verify(header, &body, &tenant.callback_secrets))
        .cloned()
        .collect();
    if signed_by.is_empty() {
        warn!(
            authorization = %fingerprint,
            signed = header.is_some(),
            "callback refused: no valid Cronofy-HMAC-SHA256 for any configured application"
        );
        return StatusCode::UNAUTHORIZED;
    }
    match callbacks
        .service
        .complete_enterprise_callback(signed_by, id.clone(), body.to_vec())
        .await
    {
        Ok(outcome) => {
            info!(authorization = %fingerprint, ?outcome, "enterprise callback handled");
            StatusCode::OK
        }
        Err(error) => {
            warn!(authorization = %fingerprint, %error, "enterprise callback refused");
            match error {
                CallbackError::Unknown => StatusCode::NOT_FOUND,
                CallbackError::Unsigned => StatusCode::UNAUTHORIZED,
                CallbackError::Expired => StatusCode::GONE,
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
