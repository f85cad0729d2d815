//! A cap on the gRPC port's open connections. Health and reflection need no
//! key, so anyone who can reach the port can open connections; each holds
//! HTTP/2 windows and up to `grpc.max_concurrent_streams` streams. Past
//! `grpc.max_connections` a new connection is closed as it is accepted.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures::{Stream, StreamExt};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tonic::transport::server::Connected;
use tracing::debug;

use crate::telemetry::metrics::METRICS;

/// An accepted connection holding one of the port's places until it closes.
#[derive(Debug)]
pub struct Counted<T> {
    io: T,
    _place: OwnedSemaphorePermit,
}

/// Keeps at most `max` of `incoming`'s connections open at once; a
/// connection beyond that is closed at once (and counted).
pub fn limit<S, T, E>(incoming: S, max: usize) -> impl Stream<Item = Result<Counted<T>, E>>
where
    S: Stream<Item = Result<T, E>>,
{
    let places = Arc::new(Semaphore::new(max));
    incoming.filter_map(move |accepted| {
        let places = places.clone();
        async move {
            match accepted {
                Err(error) => Some(Err(error)),
                Ok(io) => match places.try_acquire_owned() {
                    Ok(place) => Some(Ok(Counted { io, _place: place })),
                    Err(_) => {
                        debug!(max, "gRPC port at its connection limit; closing a new connection");
                        METRICS.peer_refused("grpc_connections");
                        None
                    }
                },
            }
        }
    })
}

impl<T: Connected> Connected for Counted<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
