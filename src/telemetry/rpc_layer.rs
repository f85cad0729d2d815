//! A tower layer around every gRPC call: a request id (the caller's
//! `x-request-id`, or a new one), returned in the response metadata; a
//! tracing span carrying it, the method and — once authenticated — the
//! tenant; and the RPC count and latency by method and final gRPC code,
//! read from the response headers (trailers-only answers) or trailers.

use std::{
    pin::Pin,
    sync::{
        LazyLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::{Instrument, Span, info_span};

use super::metrics::{METRICS, RpcLabels};

/// Metadata key of the request id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// The call's request id, in the request's extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Installs [`RpcService`] around the gRPC server.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcLayer;

impl<S> Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService { inner }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct RpcService<S> {
    inner: S,
}

/// A caller's request id, if it is a sane one; else a fresh random one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(new_request_id, str::to_owned)
}

/// A request id unique across replicas: a random per-process prefix and a
/// counter (a random draw per call cost more than the rest of the layer).
fn new_request_id() -> String {
    static PREFIX: LazyLock<u64> = LazyLock::new(rand::random);
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{:016x}{:016x}", *PREFIX, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// calgate.v1's methods, labelled by name (a test checks the list against the proto).
const CALGATE_METHODS: &[&str] = &[
    "BuildAuthorizeUrl",
    "ExchangeCode",
    "UpsertEvent",
    "DeleteEvent",
    "DeleteAllEvents",
    "ListCalendars",
    "BatchWriteEvents",
    "ReadFreeBusy",
    "QueryAvailability",
    "AuthorizeEnterpriseUser",
    "GetEnterpriseUserAuthorization",
    "GetGrant",
    "RevokeGrant",
    "WatchChanges",
    "ForgetUser",
    "GetWrite",
];

/// The standard services' methods, labelled by their full path.
const STANDARD_METHODS: &[&str] = &[
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.health.v1.Health/List",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Label of every path calgate does not serve.
const UNKNOWN_METHOD: &str = "unknown";

/// The metric label of a request path, from a closed set: `UpsertEvent` for
/// calgate's own methods, the full path for the standard services, and
/// `unknown` for anything else — any caller, authenticated or not, can send
/// any path, and a label per path would grow without bound.
fn method_label(path: &str) -> &'static str {
    if let Some(name) = path.strip_prefix("/calgate.v1.CalendarWriteService/") {
        return CALGATE_METHODS
            .iter()
            .find(|known| **known == name)
            .copied()
            .unwrap_or(UNKNOWN_METHOD);
    }
    STANDARD_METHODS
        .iter()
        .find(|known| **known == path)
        .copied()
        .unwrap_or(UNKNOWN_METHOD)
}

/// gRPC code number → canonical name.
fn code_name(code: &str) -> &'static str {
    match code {
        "0" => "OK",
        "1" => "CANCELLED",
        "2" => "UNKNOWN",
        "3" => "INVALID_ARGUMENT",
        "4" => "DEADLINE_EXCEEDED",
        "5" => "NOT_FOUND",
        "6" => "ALREADY_EXISTS",
        "7" => "PERMISSION_DENIED",
        "8" => "RESOURCE_EXHAUSTED",
        "9" => "FAILED_PRECONDITION",
        "10" => "ABORTED",
        "11" => "OUT_OF_RANGE",
        "12" => "UNIMPLEMENTED",
        "13" => "INTERNAL",
        "14" => "UNAVAILABLE",
        "15" => "DATA_LOSS",
        "16" => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// Records one finished call.
struct Observation {
    method: &'static str,
    started: Instant,
}

impl Observation {
    fn finish(self, grpc_status: Option<&HeaderValue>, span: &Span) {
        let code = code_name(grpc_status.and_then(|v| v.to_str().ok()).unwrap_or("2"));
        let labels = RpcLabels {
            method: self.method.to_owned(),
            code: code.to_owned(),
        };
        let elapsed = self.started.elapsed();
        METRICS.rpc_requests.get_or_create(&labels).inc();
        METRICS
            .rpc_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        span.in_scope(|| tracing::debug!(code, elapsed_ms = elapsed.as_secs_f64() * 1000.0, "rpc finished"));
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RpcService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body,
{
    type Response = Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let id = request_id(request.headers());
        // Handlers name the request in the audit trail.
        request.extensions_mut().insert(RequestId(id.clone()));
        let method = method_label(request.uri().path());
        let span = info_span!("rpc", method, request_id = %id, tenant = tracing::field::Empty);
        let observation = Observation {
            method,
            started: Instant::now(),
        };
        // The interceptor runs inside `call`: enter the span so it can record the tenant.
        let future = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let mut response = future.await?;
                if let Ok(value) = HeaderValue::from_str(&id) {
                    response.headers_mut().insert(REQUEST_ID, value);
                }
                let span = Span::current();
                // A trailers-only answer (every error) carries grpc-status in the headers.
                let observation = match response.headers().get("grpc-status") {
                    Some(status) => {
                        observation.finish(Some(status), &span);
                        None
                    }
                    None => Some(observation),
                };
                Ok(response.map(|body| ObservedBody {
                    inner: body,
                    observation,
                    span,
                }))
            }
            .instrument(span),
        )
    }
}

pin_project! {
    /// A response body that records the call when its trailers arrive.
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        observation: Option<Observation>,
        span: Span,
    }
}

impl<B: Body> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(observation) = this.observation.take()
                {
                    observation.finish(trailers.get("grpc-status"), this.span);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                if let Some(observation) = this.observation.take() {
                    observation.finish(None, this.span);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_when_sane_and_made_otherwise() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("req-123"));
        assert_eq!(request_id(&headers), "req-123");
        headers.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        assert_eq!(request_id(&headers).len(), 32);
        assert_eq!(request_id(&HeaderMap::new()).len(), 32);
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }

    #[test]
    fn labels() {
        assert_eq!(
            method_label("/calgate.v1.CalendarWriteService/UpsertEvent"),
            "UpsertEvent"
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "/grpc.health.v1.Health/Check"
        );
        for stranger in [
            "/calgate.v1.CalendarWriteService/Nope",
            "/calgate.v1.CalendarWriteService/",
            "/grpc.health.v1.Health/Check/extra",
            "/x",
            "",
        ] {
            assert_eq!(method_label(stranger), UNKNOWN_METHOD, "{stranger}");
        }
        assert_eq!(code_name("3"), "INVALID_ARGUMENT");
        assert_eq!(code_name("99"), "UNKNOWN");
    }

    /// Every method in the served descriptors has its own label, and no label names a method that is not served.
    #[test]
    fn the_label_lists_match_the_served_protos() {
        use prost::Message;
        let mut served = Vec::new();
        for encoded in [
            crate::grpc::pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            let set = prost_types::FileDescriptorSet::decode(encoded).expect("descriptor set");
            for file in set.file {
                for service in &file.service {
                    for method in &service.method {
                        served.push(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
                    }
                }
            }
        }
        for path in &served {
            assert_ne!(method_label(path), UNKNOWN_METHOD, "{path} has no label");
        }
        let calgate = served.iter().filter(|p| p.starts_with("/calgate.v1.")).count();
        assert_eq!(calgate, CALGATE_METHODS.len(), "a label for a method that is gone");
    }
}
