//! A client's request body on its way upstream, bounded: at most the
//! route's `max_body` bytes, and never a pause longer than the body
//! timeout between two pieces of it. A client that stops sending (one byte,
//! then nothing) no longer holds its connection and an upstream connection
//! forever. Failing the body aborts the upstream request; the forwarder
//! then answers 413 or 408 (see [`InboundError`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

#[derive(Debug, thiserror::Error)]
pub(crate) enum InboundError {
    #[error("the request body is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the request body stopped arriving for {0:?}")]
    Stalled(Duration),
    #[error("the client's body failed: {0}")]
    Client(#[from] hyper::Error),
}

pub(crate) struct Inbound {
    inner: Incoming,
    received: u64,
    max: Option<u64>,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Inbound {
    pub fn new(inner: Incoming, max: Option<u64>, idle: Duration) -> Inbound {
        Inbound {
            inner,
            received: 0,
            max,
            idle,
            timer: None,
        }
    }
}

impl Body for Inbound {
    type Data = Bytes;
    type Error = InboundError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, InboundError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if let Some(max) = this.max.filter(|max| this.received > *max) {
                        return Poll::Ready(Some(Err(InboundError::TooLarge(max))));
                    }
                }
                // Progress: the next wait starts afresh.
                if let Some(timer) = this.timer.as_mut() {
                    timer.as_mut().reset(Instant::now() + this.idle);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(InboundError::Stalled(idle)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The body failure behind an upstream error, if the client's body is why.
pub(crate) fn cause<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a InboundError> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<InboundError>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}
