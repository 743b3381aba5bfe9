//! The application API: a handler per core, built by a factory. Calling it (with panic
//! isolation) is the exchange's job: `exchange.rs`.

use std::future::Future;

use http::{header, HeaderValue, Request, Response, StatusCode};

use crate::Body;

/// A response the server writes itself: `status`, a fixed content type, `body`.
pub(crate) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Body>,
) -> Response<Body> {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Answers requests. Each reactor core builds its own handler from the app's factory, so a
/// handler may hold `!Send` state (`Rc`, `RefCell`, caches) and never needs a lock.
///
/// A handler that panics produces a `500`; its connection is closed and the core keeps
/// serving.
pub trait Handler: 'static {
    /// Answers one request. The request body streams from the socket as it is read.
    fn call(&self, request: Request<Body>) -> impl Future<Output = Response<Body>>;

    /// Whether requests carry a [`ConnectionInfo`](crate::ConnectionInfo) extension (the
    /// default). A handler that never reads it may say `false`: it saves an allocation per
    /// request (the extension map), a few percent of a small request's cost.
    fn wants_connection_info(&self) -> bool {
        true
    }
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
