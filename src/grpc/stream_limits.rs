//! Bounds on streams a peer with no credentials can open: health and
//! reflection need no key.
//!
//! - [`StreamCap`] caps the streams of one service open at once across the
//!   process (reflection, health `Watch`); more are refused RESOURCE_EXHAUSTED
//!   `STREAMS_EXHAUSTED`. A capped stream may also have a lifetime, after which
//!   its response is dropped — what it buffered for a peer that never reads is
//!   freed — and the stream is reset.
//! - [`RequestReadDeadlineLayer`] gives every call's request a deadline to
//!   arrive whole: a stream that sends headers and then nothing (or half a
//!   message) is answered DEADLINE_EXCEEDED instead of being held open.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    task::AbortHandle,
    time::Sleep,
};
use tonic::{Status, server::NamedService};
use tower::{Layer, Service};

use super::status;
use crate::telemetry::metrics::METRICS;

type Request = http::Request<tonic::body::Body>;
type Response = http::Response<tonic::body::Body>;

/// Caps the streams of the wrapped service open at once (see the module).
#[derive(Debug, Clone)]
pub struct StreamCap<S> {
    inner: S,
    places: Arc<Semaphore>,
    limit: usize,
    /// The setting that sets `limit`, named in refusals.
    setting: &'static str,
    /// Its `calgate_peer_refusals_total` label.
    metric: &'static str,
    lifetime: Option<Duration>,
    /// Only this method's streams are capped, if set.
    method: Option<&'static str>,
}

impl<S> StreamCap<S> {
    /// At most `limit` of `inner`'s streams at once (`setting` names the
    /// limit in refusals, `metric` labels them), each dropped after `lifetime` if given.
    pub fn new(
        inner: S,
        limit: usize,
        (setting, metric): (&'static str, &'static str),
        lifetime: Option<Duration>,
    ) -> Self {
        StreamCap {
            inner,
            places: Arc::new(Semaphore::new(limit)),
            limit,
            setting,
            metric,
            lifetime,
            method: None,
        }
    }

    /// The same cap (one count of places) around another service.
    pub fn wrap<T>(&self, inner: T) -> StreamCap<T> {
        StreamCap {
            inner,
            places: self.places.clone(),
            limit: self.limit,
            setting: self.setting,
            metric: self.metric,
            lifetime: self.lifetime,
            method: self.method,
        }
    }

    /// Caps only the streams of `method` (its name, as in `Watch`); the
    /// service's other calls pass freely.
    pub fn only(mut self, method: &'static str) -> Self {
        self.method = Some(method);
        self
    }
}

impl<S: NamedService> NamedService for StreamCap<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<Request> for StreamCap<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + NamedService + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if let Some(method) = self.method
            && request.uri().path().rsplit('/').next() != Some(method)
        {
            return Box::pin(self.inner.call(request));
        }
        let Ok(place) = self.places.clone().try_acquire_owned() else {
            METRICS.peer_refused(self.metric);
            let refusal = status::streams_exhausted(S::NAME, self.setting, self.limit);
            return Box::pin(async move { Ok(refusal.into_http()) });
        };
        // The clone that was made ready serves this call (tower's contract).
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let lifetime = self.lifetime;
        Box::pin(async move {
            let response = inner.call(request).await?;
            Ok(response.map(|body| tonic::body::Body::new(CappedBody::new(body, place, lifetime))))
        })
    }
}

/// What a capped stream holds until it ends or its lifetime passes.
struct Held {
    body: tonic::body::Body,
    _place: OwnedSemaphorePermit,
}

/// A capped stream's response: gives its place back when dropped, and is
/// emptied at its lifetime's end even if nobody polls it (a peer that never
/// opens its flow-control window never gets it polled).
struct CappedBody {
    held: Arc<Mutex<Option<Held>>>,
    expiry: Option<AbortHandle>,
}

impl CappedBody {
    fn new(body: tonic::body::Body, place: OwnedSemaphorePermit, lifetime: Option<Duration>) -> Self {
        let held = Arc::new(Mutex::new(Some(Held { body, _place: place })));
        let expiry = lifetime.map(|lifetime| {
            let held = held.clone();
            tokio::spawn(async move {
                tokio::time::sleep(lifetime).await;
                let expired = held.lock().unwrap_or_else(|p| p.into_inner()).take();
                drop(expired);
            })
            .abort_handle()
        });
        CappedBody { held, expiry }
    }
}

impl Drop for CappedBody {
    fn drop(&mut self) {
        if let Some(expiry) = &self.expiry {
            expiry.abort();
        }
    }
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        match held.as_mut() {
            Some(held) => Pin::new(&mut held.body).poll_frame(cx),
            None => Poll::Ready(Some(Err(Status::deadline_exceeded(
                "the stream outlived its lifetime and was closed",
            )))),
        }
    }

    fn is_end_stream(&self) -> bool {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.as_ref().is_some_and(|held| held.body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.as_ref().map(|held| held.body.size_hint()).unwrap_or_default()
    }
}

/// Gives every request `timeout` to arrive whole, except on the paths that
/// stream requests by design (see the module).
#[derive(Debug, Clone)]
pub struct RequestReadDeadlineLayer {
    timeout: Duration,
    exempt: &'static [&'static str],
}

impl RequestReadDeadlineLayer {
    /// Requests must end within `timeout`, except those whose path starts
    /// with one of `exempt`.
    pub fn new(timeout: Duration, exempt: &'static [&'static str]) -> Self {
        RequestReadDeadlineLayer { timeout, exempt }
    }
}

impl<S> Layer<S> for RequestReadDeadlineLayer {
    type Service = RequestReadDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestReadDeadline {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`RequestReadDeadlineLayer`].
#[derive(Debug, Clone)]
pub struct RequestReadDeadline<S> {
    inner: S,
    layer: RequestReadDeadlineLayer,
}

impl<S> Service<Request> for RequestReadDeadline<S>
where
    S: Service<Request>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let path = request.uri().path();
        if self.layer.exempt.iter().any(|prefix| path.starts_with(prefix)) {
            return self.inner.call(request);
        }
        let timeout = self.layer.timeout;
        let request = request.map(|body| {
            tonic::body::Body::new(DeadlineBody {
                inner: body,
                deadline: Box::pin(tokio::time::sleep(timeout)),
                timeout,
            })
        });
        self.inner.call(request)
    }
}

/// A request body that fails once its deadline passes before it ended.
struct DeadlineBody {
    inner: tonic::body::Body,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                METRICS.peer_refused("request_read_timeout");
                Poll::Ready(Some(Err(status::request_read_timeout(this.timeout))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
