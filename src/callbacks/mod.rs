//! The callback listener: plain HTTP on `callbacks.listen`, separate from
//! gRPC, where Cronofy posts each Enterprise Connect member authorization's
//! outcome (`POST /cronofy/enterprise-connect/callback?authorization=…`) and
//! each push notification channel's notifications
//! (`POST /cronofy/notifications/<channel key>`).
//!
//! Before the store is touched, a callback must name an id of calgate's shape
//! and carry a `Cronofy-HMAC-SHA256` made with one of a configured tenant
//! application's secrets; else 404 or 401 and nothing changes.

mod connections;
mod listener;
/// `Cronofy-HMAC-SHA256` verification (public for the fuzz targets).
pub mod signature;

use std::{collections::HashMap, sync::Arc};

use axum::{
    Extension, Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use tokio::{
    net::TcpListener,
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::connections::Connection;
use crate::telemetry::metrics::METRICS;

use crate::{
    config::CallbackLimits,
    domain::{
        CALLBACK_PATH, CallbackError, NOTIFICATION_PATH, Services, Tenant, authorization_fingerprint,
        is_authorization_id,
    },
};

#[derive(Clone)]
struct Callbacks {
    services: Arc<Services>,
    tenants: Arc<HashMap<String, Arc<Tenant>>>,
    limits: CallbackLimits,
    /// Callbacks being processed; more are answered 503.
    in_flight: Arc<Semaphore>,
}

async fn callback(
    State(callbacks): State<Callbacks>,
    Extension(connection): Extension<Arc<Connection>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(id) = query.get("authorization").filter(|id| is_authorization_id(id)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (body, _processing) = match arrived(&callbacks, &connection, body).await {
        Ok(arrived) => arrived,
        Err(refused) => return refused,
    };
    answer(&callbacks, id, &headers, body).await.into_response()
}

/// `POST /cronofy/notifications/<channel key>`: a push notification. Once
/// signed and recorded it is answered 200 at once; the work happens in the
/// background.
async fn notification(
    State(callbacks): State<Callbacks>,
    Extension(connection): Extension<Arc<Connection>>,
    Path(channel_key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !crate::store::is_channel_key(&channel_key) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let (body, _processing) = match arrived(&callbacks, &connection, body).await {
        Ok(arrived) => arrived,
        Err(refused) => return refused,
    };
    let fingerprint = authorization_fingerprint(&channel_key);
    let signed_by = signers(&callbacks, &headers, &body);
    if signed_by.is_empty() {
        warn!(
            channel = %fingerprint,
            signed = headers.contains_key(signature::HEADER),
            "notification refused: no valid Cronofy-HMAC-SHA256 for any configured application"
        );
        METRICS.notification("refused");
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match callbacks
        .services
        .changes
        .receive_notification(&signed_by, &channel_key, &body)
        .await
    {
        Ok(outcome) => {
            info!(channel = %fingerprint, ?outcome, "notification received");
            METRICS.notification(outcome.as_str());
            StatusCode::OK.into_response()
        }
        Err(error) => {
            warn!(channel = %fingerprint, %error, "notification refused");
            METRICS.notification("refused");
            callback_status(&error).into_response()
        }
    }
}

/// What a request holds while it is processed: its connection cannot be
/// evicted, and it has one of `max_in_flight` places.
struct Processing {
    _connection: connections::Processing,
    _place: OwnedSemaphorePermit,
}

/// Reads the body while the connection is still waiting (evictable, holding
/// no processing place); once it has fully arrived, takes a processing place
/// or answers 503 (Cronofy retries notifications).
async fn arrived(
    callbacks: &Callbacks,
    connection: &Arc<Connection>,
    body: Body,
) -> Result<(Bytes, Processing), Response> {
    let body = read_body(callbacks, body).await.map_err(IntoResponse::into_response)?;
    // Evicted while its body arrived: the connection is closing anyway.
    let connection = connection
        .processing()
        .ok_or_else(|| StatusCode::SERVICE_UNAVAILABLE.into_response())?;
    let place = callbacks.in_flight.clone().try_acquire_owned().map_err(|_| {
        warn!(
            max_in_flight = callbacks.limits.max_in_flight,
            "callback refused: too many in flight"
        );
        METRICS.peer_refused("callback_in_flight");
        (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")]).into_response()
    })?;
    Ok((
        body,
        Processing {
            _connection: connection,
            _place: place,
        },
    ))
}

/// Reads a callback's body within `callbacks.max_body_bytes` and `callbacks.body_timeout`.
async fn read_body(callbacks: &Callbacks, body: Body) -> Result<Bytes, StatusCode> {
    let read = tokio::time::timeout(
        callbacks.limits.body_timeout,
        axum::body::to_bytes(body, callbacks.limits.max_body_bytes),
    )
    .await;
    match read {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(error)) if is_too_large(&error) => Err(StatusCode::PAYLOAD_TOO_LARGE),
        Ok(Err(_)) => Err(StatusCode::BAD_REQUEST),
        Err(_) => Err(StatusCode::REQUEST_TIMEOUT),
    }
}

/// The configured tenants whose application secrets signed `body`. Tenants
/// may share an application (and so a secret): each that signed it may own the id.
fn signers(callbacks: &Callbacks, headers: &HeaderMap, body: &[u8]) -> Vec<Arc<Tenant>> {
    let header = headers.get(signature::HEADER).and_then(|value| value.to_str().ok());
    callbacks
        .tenants
        .values()
        .filter(|tenant| signature::verify(header, body, &tenant.callback_secrets))
        .cloned()
        .collect()
}

/// The HTTP status of a refused callback.
fn callback_status(error: &CallbackError) -> StatusCode {
    match error {
        CallbackError::Unknown => StatusCode::NOT_FOUND,
        CallbackError::Unsigned => StatusCode::UNAUTHORIZED,
        CallbackError::Expired => StatusCode::GONE,
        CallbackError::Invalid(_) => StatusCode::BAD_REQUEST,
        CallbackError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
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
    let signed_by = signers(callbacks, headers, &body);
    if signed_by.is_empty() {
        METRICS.enterprise_callback("refused");
        warn!(
            authorization = %fingerprint,
            signed = headers.contains_key(signature::HEADER),
            "callback refused: no valid Cronofy-HMAC-SHA256 for any configured application"
        );
        return StatusCode::UNAUTHORIZED;
    }
    match callbacks
        .services
        .enterprise
        .complete_enterprise_callback(signed_by, id.to_owned(), body.to_vec())
        .await
    {
        Ok(outcome) => {
            info!(authorization = %fingerprint, ?outcome, "enterprise callback handled");
            METRICS.enterprise_callback("handled");
            StatusCode::OK
        }
        Err(error) => {
            warn!(authorization = %fingerprint, %error, "enterprise callback refused");
            METRICS.enterprise_callback("refused");
            callback_status(&error)
        }
    }
}

/// Serves the callback until `shutdown` is signalled, within `limits`.
pub async fn serve(
    listener: TcpListener,
    services: Arc<Services>,
    tenants: Arc<HashMap<String, Arc<Tenant>>>,
    limits: CallbackLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight as usize));
    let router = Router::new()
        .route(CALLBACK_PATH, post(callback))
        .route(NOTIFICATION_PATH, post(notification))
        // The handler reads the body itself, within its own limit and deadline.
        .layer(DefaultBodyLimit::disable())
        .with_state(Callbacks {
            services,
            tenants,
            limits,
            in_flight,
        });
    info!(
        addr = ?listener.local_addr().ok(),
        "Enterprise Connect callbacks at POST {CALLBACK_PATH}, push notifications at POST {NOTIFICATION_PATH}"
    );
    listener::serve(listener, router, limits, shutdown).await
}
