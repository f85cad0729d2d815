//! The authentication interceptor: puts a typed [`Caller`] into the request's
//! extensions, or refuses the call with UNAUTHENTICATED. It also takes one of
//! the tenant's in-flight places — from the headers, before the body is read
//! or decoded, so a tenant at its limit costs calgate no decoding — and
//! hands it to the handler through [`caller`].

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Request, Status, service::Interceptor};

use super::status;
use crate::{
    auth::{Authenticator, Caller},
    domain::{Tenant, audit::Actor},
    telemetry::rpc_layer::RequestId,
};

/// Authenticates every call of the calendar service.
#[derive(Debug, Clone)]
pub struct AuthInterceptor {
    authenticator: Authenticator,
    /// Places for calls in flight, per tenant (`grpc.tenant_calls_in_flight`).
    in_flight: Arc<HashMap<String, Arc<Semaphore>>>,
    limit: u32,
}

impl AuthInterceptor {
    /// Wraps the authenticator; each tenant may have `calls_in_flight` calls at once.
    pub fn new(authenticator: Authenticator, calls_in_flight: u32) -> Self {
        let in_flight = authenticator
            .tenants()
            .into_iter()
            .map(|tenant| (tenant.id.clone(), Arc::new(Semaphore::new(calls_in_flight as usize))))
            .collect();
        AuthInterceptor {
            authenticator,
            in_flight: Arc::new(in_flight),
            limit: calls_in_flight,
        }
    }
}

/// The in-flight place the interceptor took, carried to the handler
/// (extensions must be `Clone`; the place is taken out exactly once).
#[derive(Debug, Clone)]
struct InFlight(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        let caller = self.authenticator.authenticate(header).map_err(status::from_auth)?;
        tracing::Span::current().record("tenant", tracing::field::display(&caller.tenant.id));
        if let Some(places) = self.in_flight.get(&caller.tenant.id) {
            let place = places
                .clone()
                .try_acquire_owned()
                .map_err(|_| status::tenant_concurrency_exhausted(self.limit))?;
            request
                .extensions_mut()
                .insert(InFlight(Arc::new(Mutex::new(Some(place)))));
        }
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The caller the interceptor authenticated, holding one of its tenant's
/// in-flight places until the handler returns.
#[derive(Debug)]
pub struct Admitted {
    /// The caller's tenant.
    pub tenant: Arc<Tenant>,
    /// Who the audit trail says acted: the API key's id and the request id.
    pub actor: Actor,
    _place: Option<OwnedSemaphorePermit>,
}

/// The caller the interceptor authenticated, with the in-flight place it
/// took (the interceptor refused the call RESOURCE_EXHAUSTED
/// `TENANT_CONCURRENCY_EXHAUSTED` when there was none).
pub fn caller<T>(request: &Request<T>) -> Result<Admitted, Status> {
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::internal("caller missing: authentication interceptor not installed"))?;
    let place = request
        .extensions()
        .get::<InFlight>()
        .and_then(|in_flight| in_flight.0.lock().unwrap_or_else(|p| p.into_inner()).take());
    let request_id = request.extensions().get::<RequestId>().map_or("", |id| id.0.as_str());
    Ok(Admitted {
        actor: Actor::api_key(&caller.key_sha256, request_id),
        tenant: caller.tenant,
        _place: place,
    })
}
