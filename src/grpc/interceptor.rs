//! The authentication interceptor: puts a typed [`Caller`] into the request's
//! extensions, or refuses the call with UNAUTHENTICATED.

use tonic::{Request, Status, service::Interceptor};

use super::status;
use crate::auth::{Authenticator, Caller};

/// Authenticates every call of the calendar service.
#[derive(Debug, Clone)]
pub struct AuthInterceptor {
    authenticator: Authenticator,
}

impl AuthInterceptor {
    /// Wraps the authenticator.
    pub fn new(authenticator: Authenticator) -> Self {
        AuthInterceptor { authenticator }
    }
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
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The caller the interceptor authenticated.
pub fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::internal("caller missing: authentication interceptor not installed"))
}
