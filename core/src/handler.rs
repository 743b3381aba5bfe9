//! The application API: a handler per core, built by a factory. Calling it (with panic
//! isolation) is the exchange's job: `exchange.rs`.

use std::future::Future;
use std::rc::Rc;

use bytes::Bytes;
use http::uri::Authority;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};

use crate::{Body, ConnectionInfo};
use peregrine_protocols::h1::{RawFields, Target};
use peregrine_protocols::h2::{FieldList, RequestTarget};

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

    /// Answers from the request's head alone, before the request is built, when the answer
    /// needs neither the request's body nor anything a [`Request`] carries beyond its head:
    /// a fixed response (a benchmark route, a configured fixed answer), or a whole response
    /// such as a cache hit. `None` (the default) means the request goes to
    /// [`call_with`](Self::call_with) as usual.
    ///
    /// Asked only for requests without a body. Building a `Request` (and, for a fixed
    /// response, its response's `HeaderMap`) is most of what a small answer costs: a
    /// `HeaderMap` hashes and stores every field, and a response's map allocates even for
    /// one `content-type`. A panic here is isolated as in [`call`](Self::call).
    fn answer(&self, _head: &Head<'_>) -> Option<Answer> {
        None
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

/// A request's head, as [`Handler::answer`] sees it: validated by the codec, before any
/// [`Request`] is built from it (an HTTP/1 head's fields are not even in a `HeaderMap` yet).
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    method: &'a Method,
    target: TargetOf<'a>,
    version: Version,
    fields: Fields<'a>,
}

/// Where a [`Head`]'s target is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TargetOf<'a> {
    /// A built request's `Uri`.
    Uri(&'a Uri),
    /// As HTTP/1's parser checked it, a `Uri` only if it had to be.
    Parsed(&'a Target),
    /// As HTTP/2's decoder checked it: `:scheme`, `:authority` and `:path`, no `Uri`.
    H2(&'a RequestTarget),
}

impl<'a> From<&'a RequestTarget> for TargetOf<'a> {
    fn from(target: &'a RequestTarget) -> Self {
        TargetOf::H2(target)
    }
}

impl<'a> From<&'a Uri> for TargetOf<'a> {
    fn from(uri: &'a Uri) -> Self {
        TargetOf::Uri(uri)
    }
}

impl<'a> From<&'a Target> for TargetOf<'a> {
    fn from(target: &'a Target) -> Self {
        TargetOf::Parsed(target)
    }
}

/// Where a [`Head`]'s fields are.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fields<'a> {
    /// A built request's.
    Map(&'a http::HeaderMap),
    /// As HTTP/2's decoder gathered them.
    List(&'a FieldList),
    /// As HTTP/1's parser left them, in the head's bytes.
    Raw(&'a RawFields),
}

impl<'a> Head<'a> {
    pub(crate) fn new(
        method: &'a Method,
        target: impl Into<TargetOf<'a>>,
        version: Version,
        fields: Fields<'a>,
    ) -> Head<'a> {
        Head { method, target: target.into(), version, fields }
    }

    /// The request method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The target's path.
    pub fn path(&self) -> &'a str {
        match self.target {
            TargetOf::Uri(uri) => uri.path(),
            TargetOf::Parsed(target) => target.path(),
            TargetOf::H2(target) => target.path().map_or("", Target::path),
        }
    }

    /// [`path`](Self::path)'s bytes, without making them text.
    #[inline]
    pub(crate) fn path_bytes(&self) -> &'a [u8] {
        match self.target {
            TargetOf::Uri(uri) => uri.path().as_bytes(),
            TargetOf::Parsed(target) => target.path_bytes(),
            TargetOf::H2(target) => target.path().map_or(b"", Target::path_bytes),
        }
    }

    /// The target's query, if any.
    pub fn query(&self) -> Option<&'a str> {
        match self.target {
            TargetOf::Uri(uri) => uri.query(),
            TargetOf::Parsed(target) => target.query(),
            TargetOf::H2(target) => target.path().and_then(Target::query),
        }
    }

    /// The target's path and query (`/` when it has neither).
    pub fn path_and_query(&self) -> &'a str {
        match self.target {
            TargetOf::Uri(uri) => uri.path_and_query().map_or("/", |p| p.as_str()),
            TargetOf::Parsed(target) => target.path_and_query(),
            TargetOf::H2(target) => target.path().map_or("/", Target::path_and_query),
        }
    }

    /// The request target as a `Uri`. An HTTP/1 origin-form target, or an HTTP/2 one, is
    /// built into one here (its parser checked it and kept its bytes): [`path`](Self::path)
    /// and [`query`](Self::query) cost less.
    pub fn uri(&self) -> Uri {
        match self.target {
            TargetOf::Uri(uri) => uri.clone(),
            // The parser's check is a subset of what `Uri` takes, so this always succeeds.
            TargetOf::Parsed(target) => target.clone().into_uri().unwrap_or_default(),
            TargetOf::H2(target) => target.to_uri(),
        }
    }

    /// The target's authority, when it has one (HTTP/2, absolute-form HTTP/1).
    fn authority(&self) -> Option<&'a Authority> {
        match self.target {
            TargetOf::Uri(uri) => uri.authority(),
            TargetOf::Parsed(target) => target.as_uri().and_then(Uri::authority),
            TargetOf::H2(target) => target.authority(),
        }
    }

    /// The protocol version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The first value of the field `name` (any case), as sent.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        match self.fields {
            Fields::Map(map) => map.get(name).map(HeaderValue::as_bytes),
            Fields::List(list) => list
                .iter()
                .find(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_bytes()),
            Fields::Raw(fields) => fields.values(name).next(),
        }
    }

    /// Calls `f` with each value of the field `name` (any case), in order.
    pub(crate) fn each_value(&self, name: &str, mut f: impl FnMut(&'a [u8])) {
        match self.fields {
            Fields::Map(map) => map.get_all(name).iter().for_each(|v| f(v.as_bytes())),
            Fields::List(list) => list
                .iter()
                .filter(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
                .for_each(|(_, v)| f(v.as_bytes())),
            Fields::Raw(fields) => fields.values(name).for_each(f),
        }
    }

    /// Calls `f` with each field's name, in order (as sent: any case).
    pub(crate) fn each_name(&self, mut f: impl FnMut(&[u8])) {
        match self.fields {
            Fields::Map(map) => map.keys().for_each(|n| f(n.as_str().as_bytes())),
            Fields::List(list) => list.iter().for_each(|(n, _)| f(n.as_str().as_bytes())),
            Fields::Raw(fields) => fields.names().for_each(f),
        }
    }

    /// [`host`](Self::host)'s bytes, without making them text.
    pub(crate) fn host_bytes(&self) -> Option<&'a [u8]> {
        crate::exchange::host_bytes_of(self.authority(), || self.host_field())
    }

    /// The `Host` field's value: where HTTP/1's parser found it, else looked up.
    fn host_field(&self) -> Option<&'a [u8]> {
        match self.fields {
            Fields::Raw(fields) => fields.host(),
            _ => self.header("host"),
        }
    }

    /// [`path_and_query`](Self::path_and_query)'s bytes, without making them text.
    pub(crate) fn path_and_query_bytes(&self) -> &'a [u8] {
        match self.target {
            TargetOf::Uri(uri) => uri.path_and_query().map_or(b"/", |p| p.as_str().as_bytes()),
            TargetOf::Parsed(target) => target.path_and_query_bytes(),
            TargetOf::H2(target) => target.path().map_or(b"/", Target::path_and_query_bytes),
        }
    }

    /// The host the request is for, as routes match it (see `exchange::host_of`).
    pub(crate) fn host(&self) -> Option<&'a str> {
        crate::exchange::host_of(self.authority(), || self.host_field())
    }

    /// A built request's head.
    pub(crate) fn of(request: &'a Request<Body>) -> Head<'a> {
        let fields = Fields::Map(request.headers());
        Head::new(request.method(), request.uri(), request.version(), fields)
    }
}

/// A fixed response: a status, a content type and a body in memory. The server adds `date`,
/// `server` and the framing, as for any response; a `HEAD` request gets the head alone.
#[derive(Debug, Clone)]
pub struct Fixed {
    /// The status.
    pub status: StatusCode,
    /// The `content-type` field.
    pub content_type: HeaderValue,
    /// The body.
    pub body: Bytes,
}

impl Fixed {
    /// The response's one field, as the codecs' encoders take a handler's fields.
    pub(crate) fn fields(&self) -> [(&'static http::HeaderName, &HeaderValue); 1] {
        static CONTENT_TYPE: http::HeaderName = header::CONTENT_TYPE;
        [(&CONTENT_TYPE, &self.content_type)]
    }

    /// The answer as a response, for where a `Response` is needed (the request went to
    /// [`Handler::call_with`] after all).
    pub(crate) fn into_response(self) -> Response<Body> {
        respond(self.status, self.content_type, self.body)
    }
}

/// What [`Handler::answer`] answers with.
#[derive(Debug)]
pub enum Answer {
    /// A fixed response, written without a `HeaderMap` at all.
    Fixed(Fixed),
    /// A whole response, written as a handler's response is.
    Response(Response<Body>),
    /// A response-cache hit, written from the entry's fields as they are stored.
    CacheHit(CacheHit),
}

/// A response the response cache answers with: its fields are the stored entry's, shared
/// (a hit copies no map), and its body is in memory. Made by the cache only.
#[derive(Clone)]
pub struct CacheHit {
    pub(crate) status: StatusCode,
    pub(crate) fields: Rc<http::HeaderMap>,
    pub(crate) body: Bytes,
    /// The entry, which keeps the encodings of the start of its head.
    pub(crate) entry: Rc<crate::cache::Stored>,
}

impl std::fmt::Debug for CacheHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheHit")
            .field("status", &self.status)
            .field("fields", &self.fields)
            .field("body", &self.body.len())
            .finish()
    }
}

impl CacheHit {
    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The fields (without a length: the codecs frame the body).
    pub fn fields(&self) -> &http::HeaderMap {
        &self.fields
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The hit as a response, for where a `Response` is needed (a request that waited out
    /// a rate limit's delay goes the whole way).
    pub(crate) fn into_response(self) -> Response<Body> {
        let mut r = Response::new(Body::from(self.body));
        *r.status_mut() = self.status;
        *r.headers_mut() = Rc::unwrap_or_clone(self.fields);
        r
    }
}
