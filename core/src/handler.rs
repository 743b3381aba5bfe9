//! The application API: a handler per core, built by a factory.

use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::Poll;

use bytes::Bytes;
use http::{Request, Response};

use crate::metrics::Rejection;
use crate::{Body, BodyError};

/// Answers requests. Each reactor core builds its own handler from the app's factory, so a
/// handler may hold `!Send` state (`Rc`, `RefCell`, caches) and never needs a lock.
///
/// A handler that panics produces a `500`; its connection is closed and the core keeps
/// serving.
pub trait Handler: 'static {
    /// Answers one request. The request body streams from the socket as it is read.
    fn call(&self, request: Request<Body>) -> impl Future<Output = Response<Body>>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request<Body>) -> Fut + 'static,
    Fut: Future<Output = Response<Body>>,
{
    fn call(&self, request: Request<Body>) -> impl Future<Output = Response<Body>> {
        self(request)
    }
}

/// Calls the handler, turning a panic (in the call or while polling its future) into `None`.
pub(crate) async fn call<H: Handler>(
    handler: &H,
    request: Request<Body>,
) -> Option<Response<Body>> {
    let future = catch_unwind(AssertUnwindSafe(|| handler.call(request))).ok()?;
    let mut future = std::pin::pin!(future);
    poll_fn(|cx| match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
        Ok(Poll::Ready(r)) => Poll::Ready(Some(r)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(_) => Poll::Ready(None),
    })
    .await
}

/// Why a response body stopped before its end.
pub(crate) enum BodyFailed {
    /// The body's stream reported an error.
    Error(BodyError),
    /// Polling the body's stream panicked (counted as a handler panic).
    Panicked,
}

/// The next chunk of a response body, polled with the same isolation as the handler itself:
/// a panic in the body's stream ends this response, never the core's other connections.
/// `None`: the body ended.
pub(crate) async fn next_chunk(body: &mut Body) -> Option<Result<Bytes, BodyFailed>> {
    poll_fn(|cx| match catch_unwind(AssertUnwindSafe(|| body.poll_chunk(cx))) {
        Ok(Poll::Ready(chunk)) => Poll::Ready(chunk.map(|c| c.map_err(BodyFailed::Error))),
        Ok(Poll::Pending) => Poll::Pending,
        Err(_) => {
            tracing::error!("response body panicked; ending the response");
            crate::metrics::count(|m| m.rejected(Rejection::HandlerPanic));
            Poll::Ready(Some(Err(BodyFailed::Panicked)))
        }
    })
    .await
}
