//! A process-wide bound on the request bytes being received and decoded.
//!
//! tonic buffers a whole message before decoding it, up to the 4 MiB message
//! limit, so many large requests at once (256 in flight per tenant) could
//! hold gigabytes. Each request's gRPC frame header says how long its message
//! is: a large one (over [`SMALL_MESSAGE`]) must take that many bytes from
//! one budget shared by every call, or it is refused at once
//! RESOURCE_EXHAUSTED `DECODE_BUDGET_EXHAUSTED` with RetryInfo. The bytes are
//! given back when the body is dropped (tonic drops it as soon as the message
//! is decoded). Small messages — nearly every call — never touch the budget,
//! so one tenant's large requests cannot starve the others' ordinary ones.
//!
//! Nothing waits for the budget: a stream that stopped being read would hold
//! its share of the HTTP/2 connection's window and could stall the very
//! streams that would give budget back.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tower::{Layer, Service};

use super::status;
use crate::{config::MAX_MESSAGE_BYTES, telemetry::metrics::METRICS};

/// Messages up to this long skip the budget.
pub const SMALL_MESSAGE: usize = 64 * 1024;
/// The budget counts in units of this many bytes (a semaphore's permits are u32).
const UNIT: usize = 1024;
/// gRPC's frame header: a compression flag and a 4-byte big-endian length.
const HEADER: usize = 5;

/// Bounds the bytes of large request messages held at once (see the module).
#[derive(Debug, Clone)]
pub struct DecodeBudgetLayer {
    budget: Arc<Semaphore>,
    limit: usize,
}

impl DecodeBudgetLayer {
    /// A budget of `bytes` for every request this layer wraps, together.
    pub fn new(bytes: usize) -> Self {
        DecodeBudgetLayer {
            budget: Arc::new(Semaphore::new(bytes / UNIT)),
            limit: bytes,
        }
    }
}

impl<S> Layer<S> for DecodeBudgetLayer {
    type Service = DecodeBudget<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DecodeBudget {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`DecodeBudgetLayer`].
#[derive(Debug, Clone)]
pub struct DecodeBudget<S> {
    inner: S,
    layer: DecodeBudgetLayer,
}

impl<S> Service<http::Request<tonic::body::Body>> for DecodeBudget<S>
where
    S: Service<http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let body = BudgetedBody {
            inner: body,
            budget: self.layer.budget.clone(),
            limit: self.layer.limit,
            header: Vec::with_capacity(HEADER),
            permit: None,
        };
        self.inner
            .call(http::Request::from_parts(parts, tonic::body::Body::new(body)))
    }
}

/// A request body that takes budget for its message once its frame header
/// has arrived.
struct BudgetedBody {
    inner: tonic::body::Body,
    budget: Arc<Semaphore>,
    limit: usize,
    /// The first bytes of the frame header, until all five are seen.
    header: Vec<u8>,
    /// The budget this body's message holds, given back on drop.
    permit: Option<OwnedSemaphorePermit>,
}

impl BudgetedBody {
    /// Notes the frame header's bytes in `data`; once the header is whole,
    /// takes budget for a large message or refuses it.
    fn admit(&mut self, data: &Bytes) -> Result<(), Status> {
        if self.header.len() >= HEADER {
            return Ok(());
        }
        let wanted = HEADER - self.header.len();
        self.header.extend_from_slice(&data.chunk()[..wanted.min(data.len())]);
        if self.header.len() < HEADER {
            return Ok(());
        }
        let length = u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]) as usize;
        // Small ones skip the budget; ones over the message limit are refused
        // OUT_OF_RANGE by tonic from this same header, before it buffers them.
        if length <= SMALL_MESSAGE || length > MAX_MESSAGE_BYTES {
            return Ok(());
        }
        let units = u32::try_from(length.div_ceil(UNIT)).unwrap_or(u32::MAX);
        match self.budget.clone().try_acquire_many_owned(units) {
            Ok(permit) => {
                self.permit = Some(permit);
                Ok(())
            }
            Err(_) => {
                METRICS.decode_budget_refused();
                Err(status::decode_budget_exhausted(self.limit))
            }
        }
    }
}

impl Body for BudgetedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref()
            && let Err(refused) = this.admit(data)
        {
            return Poll::Ready(Some(Err(refused)));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(budget: &Arc<Semaphore>) -> BudgetedBody {
        BudgetedBody {
            inner: tonic::body::Body::empty(),
            budget: budget.clone(),
            limit: 8 * UNIT * 100,
            header: Vec::new(),
            permit: None,
        }
    }

    fn header(length: u32) -> Bytes {
        let mut header = vec![0u8];
        header.extend_from_slice(&length.to_be_bytes());
        Bytes::from(header)
    }

    #[test]
    fn large_messages_take_budget_until_dropped_and_small_ones_never() {
        let budget = Arc::new(Semaphore::new(800));
        let mut small = body(&budget);
        assert!(small.admit(&header(SMALL_MESSAGE as u32)).is_ok());
        assert_eq!(budget.available_permits(), 800);

        let mut large = body(&budget);
        // The header may arrive split across frames.
        assert!(large.admit(&header(500 * 1024).slice(..2)).is_ok());
        assert_eq!(budget.available_permits(), 800);
        assert!(large.admit(&header(500 * 1024).slice(2..)).is_ok());
        assert_eq!(budget.available_permits(), 300);

        let mut refused = body(&budget);
        let status = refused.admit(&header(400 * 1024)).expect_err("over the budget");
        let mut too_long = body(&budget);
        assert!(
            too_long.admit(&header(MAX_MESSAGE_BYTES as u32 + 1)).is_ok(),
            "left to tonic's OUT_OF_RANGE, not told to retry"
        );
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        drop(large);
        assert_eq!(budget.available_permits(), 800, "given back on drop");
        assert!(body(&budget).admit(&header(400 * 1024)).is_ok());
    }
}
