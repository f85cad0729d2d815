//! The authentication interceptor: puts a typed [`Caller`] into the request's
//! extensions, or refuses the call with UNAUTHENTICATED. It also hands the
//! call its tenant's in-flight limit, which [`caller`] takes a place in.

use std::{collections::HashMap, sync::Arc};

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

/// The caller's tenant's in-flight places, carried to the handler.
#[derive(Debug, Clone)]
struct InFlight {
    places: Arc<Semaphore>,
    limit: u32,
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        let caller = self.authenticator.authenticate(header).map_err(status::from_auth)?;
        // The RPC span (telemetry::rpc_layer) is current here: name the tenant in every log line.
        tracing::Span::current().record("tenant", tracing::field::display(&caller.tenant.id));
        if let Some(places) = self.in_flight.get(&caller.tenant.id) {
            request.extensions_mut().insert(InFlight {
                places: places.clone(),
                limit: self.limit,
            });
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

/// The caller the interceptor authenticated, admitted within its tenant's
/// limit of calls in flight, or RESOURCE_EXHAUSTED `TENANT_CONCURRENCY_EXHAUSTED`.
pub fn caller<T>(request: &Request<T>) -> Result<Admitted, Status> {
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::internal("caller missing: authentication interceptor not installed"))?;
    let place = match request.extensions().get::<InFlight>() {
        Some(in_flight) => Some(
            in_flight
                .places
                .clone()
                .try_acquire_owned()
                .map_err(|_| status::tenant_concurrency_exhausted(in_flight.limit))?,
        ),
        None => None,
    };
    let request_id = request.extensions().get::<RequestId>().map_or("", |id| id.0.as_str());
    Ok(Admitted {
        actor: Actor::api_key(&caller.key_sha256, request_id),
        tenant: caller.tenant,
        _place: place,
    })
}
