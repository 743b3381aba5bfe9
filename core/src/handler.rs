//! The application API: a handler per core, built by a factory. Calling it (with panic
//! isolation) is the exchange's job: `exchange.rs`.

use std::future::Future;

use http::{header, HeaderValue, Request, Response, StatusCode};

use crate::{Body, ConnectionInfo};

/// The content types of the responses the server writes itself. Constants, so the value is
/// checked when the binary is built: `HeaderValue::from_static` called with a runtime
/// argument walks the bytes on every response.
pub(crate) mod content_type {
    use http::HeaderValue;

    /// `text/plain`.
    pub(crate) const TEXT: HeaderValue = HeaderValue::from_static("text/plain");
    /// `text/html; charset=utf-8`.
    pub(crate) const HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");
    /// `application/json`.
    pub(crate) const JSON: HeaderValue = HeaderValue::from_static("application/json");
}

/// A response the server writes itself: `status`, a fixed content type, `body`.
pub(crate) fn respond(
    status: StatusCode,
    content_type: HeaderValue,
    body: impl Into<Body>,
) -> Response<Body> {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, content_type);
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

    /// Whether requests carry a [`ConnectionInfo`] extension (the default). A handler that
    /// never reads it may say `false`: it saves an allocation per request (the extension
    /// map), a few percent of a small request's cost.
    fn wants_connection_info(&self) -> bool {
        true
    }

    /// What the server calls: [`call`](Self::call) with the request's [`ConnectionInfo`]
    /// (present when [`wants_connection_info`](Self::wants_connection_info) says so). The
    /// default puts it into the request's extensions. A handler that needs it on some paths
    /// only may take it here and insert it there: the extension map costs three allocations
    /// on every request that carries one.
    fn call_with(
        &self,
        mut request: Request<Body>,
        connection: Option<&ConnectionInfo>,
    ) -> impl Future<Output = Response<Body>> {
        if let Some(connection) = connection {
            request.extensions_mut().insert(*connection);
        }
        self.call(request)
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
