//! The Enterprise Connect callback listener: plain HTTP on `callbacks.listen`,
//! separate from gRPC, where Cronofy posts each member authorization's outcome.
//!
//! Before the store is touched, a callback must name an id of calgate's shape
//! and carry a `Cronofy-HMAC-SHA256` made with one of a configured tenant
//! application's secrets; else 404 or 401 and nothing changes.

mod listener;
/// `Cronofy-HMAC-SHA256` verification (public for the fuzz targets).
pub mod signature;

use std::{collections::HashMap, sync::Arc};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    config::CallbackLimits,
    domain::{CALLBACK_PATH, CalendarService, CallbackError, Tenant, authorization_fingerprint, is_authorization_id},
};

#[derive(Clone)]
struct Callbacks {
    service: Arc<CalendarService>,
    tenants: Arc<HashMap<String, Arc<Tenant>>>,
    limits: CallbackLimits,
    /// Callbacks being processed; more are answered 503.
    in_flight: Arc<Semaphore>,
}

async fn callback(
    State(callbacks): State<Callbacks>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(_processing) = callbacks.in_flight.clone().try_acquire_owned() else {
        warn!(
            max_in_flight = callbacks.limits.max_in_flight,
            "callback refused: too many in flight"
        );
        return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")]).into_response();
    };
    let Some(id) = query.get("authorization").filter(|id| is_authorization_id(id)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let read = tokio::time::timeout(
        callbacks.limits.body_timeout,
        axum::body::to_bytes(body, callbacks.limits.max_body_bytes),
    )
    .await;
    let body = match read {
        Ok(Ok(body)) => body,
        Ok(Err(error)) if is_too_large(&error) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
        Ok(Err(_)) => return StatusCode::BAD_REQUEST.into_response(),
        Err(_) => return StatusCode::REQUEST_TIMEOUT.into_response(),
    };
    answer(&callbacks, id, &headers, body).await.into_response()
}

/// Whether reading a body failed for its size.
fn is_too_large(error: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// A whole callback: signature first, then the domain.
async fn answer(callbacks: &Callbacks, id: &str, headers: &HeaderMap, body: Bytes) -> StatusCode {
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
        .complete_enterprise_callback(signed_by, id.to_owned(), body.to_vec())
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

/// Serves the callback until `shutdown` is signalled, within `limits`.
pub async fn serve(
    listener: TcpListener,
    service: Arc<CalendarService>,
    tenants: Arc<HashMap<String, Arc<Tenant>>>,
    limits: CallbackLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight as usize));
    let router = Router::new()
        .route(CALLBACK_PATH, post(callback))
        // The handler reads the body itself, within its own limit and deadline.
        .layer(DefaultBodyLimit::disable())
        .with_state(Callbacks {
            service,
            tenants,
            limits,
            in_flight,
        });
    info!(addr = ?listener.local_addr().ok(), "Enterprise Connect callbacks at POST {CALLBACK_PATH}");
    listener::serve(listener, router, limits, shutdown).await
}
