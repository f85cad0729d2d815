//! The caller's deadline (`grpc-timeout`). tonic's own timeout answers
//! CANCELLED; calgate answers DEADLINE_EXCEEDED as the gRPC spec and the
//! contract say, by running the handler against the deadline itself.
//!
//! tonic arms its timer when the request arrives, outside every layer of
//! calgate's; [`DeadlineLayer`] stamps calgate's deadline at the same moment,
//! a little earlier, so it fires first however late a loaded machine gets to
//! run the handler.

use std::{
    future::Future,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::Instant;
use tonic::{Request, Status};
use tower::{Layer, Service};

/// Answer this much before the caller's deadline. Two timers race ours: the
/// server's own (tonic, armed a moment earlier, answering CANCELLED) and the
/// caller's (its gRPC stack enforces the deadline too, armed before the request
/// left). Our DEADLINE_EXCEEDED — with its details — must reach the caller
/// first, across a network and a loaded machine: 5 ms lost that race in tests.
const AHEAD_OF_TRANSPORT: Duration = Duration::from_millis(20);

/// Parses `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The deadline stamped on a request when it arrived.
#[derive(Debug, Clone, Copy)]
struct CallDeadline(Instant);

/// When the caller stops waiting, if it said: as stamped at arrival by
/// [`DeadlineLayer`] (or, without it, from now).
pub fn deadline<T>(request: &Request<T>) -> Option<Instant> {
    if let Some(CallDeadline(at)) = request.extensions().get::<CallDeadline>() {
        return Some(*at);
    }
    from_headers(request.metadata().as_ref(), Instant::now())
}

fn from_headers(headers: &http::HeaderMap, arrived: Instant) -> Option<Instant> {
    let timeout = parse_grpc_timeout(headers.get("grpc-timeout")?.to_str().ok()?)?;
    Some(arrived + timeout.saturating_sub(AHEAD_OF_TRANSPORT))
}

/// Stamps each request's deadline on arrival (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = StampDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StampDeadline { inner }
    }
}

/// See [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct StampDeadline<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for StampDeadline<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(at) = from_headers(request.headers(), Instant::now()) {
            request.extensions_mut().insert(CallDeadline(at));
        }
        self.inner.call(request)
    }
}

/// Runs `work` until the deadline; past it the work is dropped (cancelling
/// any upstream call) and the caller gets DEADLINE_EXCEEDED.
/// Any error the work returns becomes its status through `Into<Status>`.
pub async fn within<T, E: Into<Status>>(
    deadline: Option<Instant>,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, Status> {
    match deadline {
        None => work.await.map_err(Into::into),
        Some(deadline) => match tokio::time::timeout_at(deadline, work).await {
            Ok(result) => result.map_err(Into::into),
            Err(_) => Err(Status::deadline_exceeded("the caller's deadline passed")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_grpc_timeout("300m"), Some(Duration::from_millis(300)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in ["", "S", "123456789S", "10s", "-1S", "1.5S", "10"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }
}
