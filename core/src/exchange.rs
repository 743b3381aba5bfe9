//! One request/response exchange, whatever the protocol: building the request the handler
//! sees, calling the handler with panic isolation, pumping a streamed response body (with
//! the same isolation and the length checks), and recording the outcome (metrics, access
//! log). HTTP/1 and HTTP/2 supply only what differs: where the head and the body bytes go
//! ([`BodySink`]) and their request body source.
//!
//! ```text
//!   h1 loop ─┐                                         ┌─ head + body → h1 output (chunked/CL)
//!            ├─► request() ─► call() ─► response ─► pump() ─┤
//!   h2 loop ─┘   (method, uri,  (panic → 500)           └─ head + body → h2 stream (DATA)
//!                 headers, body)                     record(): metrics + access log
//! ```
//!
//! Everything that later answers a request (proxy, files, cache) is a handler, so it goes
//! through here too.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};

use crate::access_log::{CoreLog, Entry, UpstreamFields};
use crate::clients::Admission;
use crate::handler::{Answer, Head};
use crate::metrics::Rejection;
use crate::{rt, Body, BodyError, Handler};

/// The protocol an HTTP/2 extended CONNECT asks for (RFC 8441's `:protocol`, such as
/// `websocket`), given to the handler as a request extension. A `2xx` answer turns the
/// stream into a tunnel for it: the request body is what the client sends, the response
/// body what it receives. The reverse proxy bridges `websocket` to an HTTP/1.1 upgrade
/// upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectProtocol(Bytes);

impl ConnectProtocol {
    /// A protocol name as a client sent it.
    pub fn new(name: Bytes) -> ConnectProtocol {
        ConnectProtocol(name)
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether it is `name`, ignoring ASCII case.
    pub fn is(&self, name: &str) -> bool {
        self.0.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// What the server knows of the connection a request came on, given to every handler as a
/// request extension (`request.extensions().get::<ConnectionInfo>()`), as Kestrel's
/// `HttpContext.Connection` is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The peer's address (the client, or a proxy in front of Peregrine; the client a
    /// PROXY protocol header named, when the listener takes one).
    pub peer: Option<SocketAddr>,
    /// The address the client connected to (from the PROXY protocol header, when there is
    /// one).
    pub local: Option<SocketAddr>,
    /// The client of this request as far as it can be known: the peer's address, or, when
    /// the peer is one of the server's `trusted_proxies`, the rightmost address of its
    /// `X-Forwarded-For` that is not itself trusted. The per-client rate limits count it.
    pub client: Option<std::net::IpAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// The certificate chain a client presented over mutual TLS, verified against the
/// listener's [`ClientAuth`](crate::ClientAuth) CA, leaf first: a request extension on every
/// request of such a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificates(std::sync::Arc<[rustls::pki_types::CertificateDer<'static>]>);

impl ClientCertificates {
    /// The chain, or `None` when it is empty.
    pub(crate) fn new(
        chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    ) -> Option<ClientCertificates> {
        (!chain.is_empty()).then(|| ClientCertificates(chain.into()))
    }

    /// The client's own certificate (DER).
    pub fn leaf(&self) -> &rustls::pki_types::CertificateDer<'static> {
        &self.0[0]
    }

    /// The whole chain as the client sent it, leaf first (DER).
    pub fn chain(&self) -> &[rustls::pki_types::CertificateDer<'static>] {
        &self.0
    }
}

/// The request a handler sees, from the parts a codec validated.
pub(crate) fn request(
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Body,
    client_certificates: Option<&ClientCertificates>,
) -> Request<Body> {
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    if let Some(certificates) = client_certificates {
        request.extensions_mut().insert(certificates.clone());
    }
    request
}

/// The handler panicked (while being called or while its future was polled); it is logged
/// and counted here.
#[derive(Debug)]
pub(crate) struct Panicked;

/// The host a request is for, without its port: the target's authority (HTTP/2, or an
/// absolute-form target), else the `Host` field. What routes match and cache keys hold.
pub(crate) fn request_host(request: &Request<Body>) -> Option<&str> {
    let field = || request.headers().get(http::header::HOST).map(http::HeaderValue::as_bytes);
    host_of(request.uri().authority(), field)
}

/// [`request_host`] from a request's target and its `Host` field (looked up only when the
/// target has no authority).
pub(crate) fn host_of<'a>(
    authority: Option<&'a Authority>,
    host_field: impl FnOnce() -> Option<&'a [u8]>,
) -> Option<&'a str> {
    if let Some(a) = authority {
        return Some(a.host());
    }
    // The codecs let only a valid host through (`is_valid_host`: name bytes and a port), and a
    // `HeaderValue` holds no control bytes: text is all that is left to check.
    std::str::from_utf8(host_field_name(host_field()?)).ok()
}

/// [`host_of`]'s bytes, without making them text (the cache's key is bytes).
pub(crate) fn host_bytes_of<'a>(
    authority: Option<&'a Authority>,
    host_field: impl FnOnce() -> Option<&'a [u8]>,
) -> Option<&'a [u8]> {
    match authority {
        Some(a) => Some(a.host().as_bytes()),
        None => Some(host_field_name(host_field()?)),
    }
}

/// A `Host` field's value without its port. A byte scan for the last ':' (a `str` search
/// for a `char` costs several times more on every request); `[::1]` alone ends in `]`, so
/// its colons are never a port's.
fn host_field_name(host: &[u8]) -> &[u8] {
    match host.iter().rposition(|&b| b == b':') {
        Some(i) if is_port(&host[i + 1..]) => &host[..i],
        _ => host,
    }
}

/// Whether `s` is a port number (0 to 65535, digits only): the check `str::parse::<u16>`
/// makes, without its cost on every request.
fn is_port(s: &[u8]) -> bool {
    (1..=5).contains(&s.len())
        && s.iter().all(u8::is_ascii_digit)
        && (s.len() < 5 || s <= b"65535".as_slice())
}

/// Calls the handler with panic isolation: a panic becomes [`Panicked`] (answer
/// [`internal_error`]) and the core keeps serving. The handler gets `info` when it asks for
/// it ([`Handler::wants_connection_info`]), borrowed: the caller's future holds it already,
/// and a copy would grow every request's future.
///
/// A named future ([`Call`]) rather than an `async fn`: an async wrapper keeps the handler's
/// future twice (the value it was built as, and the pinned copy it polls;
/// rust-lang/rust#62958), and every exchange's future, boxed per request, carried both.
pub(crate) fn call<'a, H: Handler>(
    handler: &'a H,
    request: Request<Body>,
    info: &'a ConnectionInfo,
) -> Call<impl Future<Output = Response<Body>> + 'a> {
    let build = || handler.call_with(request, handler.wants_connection_info().then_some(info));
    Call { future: catch_unwind(AssertUnwindSafe(build)).ok() }
}

pin_project_lite::pin_project! {
    /// [`call`]'s future: the handler's future, polled with panic isolation (`None` when
    /// building it panicked).
    pub(crate) struct Call<F> {
        #[pin]
        future: Option<F>,
    }
}

impl<F: Future<Output = Response<Body>>> Future for Call<F> {
    type Output = Result<Response<Body>, Panicked>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let answer = match self.project().future.as_pin_mut() {
            None => Err(Panicked),
            Some(future) => match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                Ok(Poll::Ready(r)) => Ok(r),
                Ok(Poll::Pending) => return Poll::Pending,
                Err(_) => Err(Panicked),
            },
        };
        Poll::Ready(answer.map_err(|Panicked| panicked()))
    }
}

/// Logs and counts a handler's panic.
fn panicked() -> Panicked {
    tracing::error!("handler panicked; answering 500");
    crate::metrics::count(|m| m.rejected(Rejection::HandlerPanic));
    Panicked
}

/// Asks the handler for a fixed answer from the head alone ([`Handler::answer`]), with the
/// same panic isolation as [`call`]. Only for requests without a body: the caller checks.
pub(crate) fn answer<H: Handler>(handler: &H, head: &Head<'_>) -> Result<Option<Answer>, Panicked> {
    catch_unwind(AssertUnwindSafe(|| handler.answer(head))).map_err(|_| panicked())
}

/// How far a protocol's synchronous start of an exchange (HTTP/1's `offer`, HTTP/2's) took
/// a request it could not end without waiting: the exchange's future goes on from here.
pub(crate) enum Stage {
    /// The request has a body (or opens a tunnel): call the handler.
    Call,
    /// A rate limit delays the request: wait, then answer or call.
    Delayed(Admission),
    /// A rate limit refused it: this `429` is the response.
    Refused(Response<Body>),
    /// What [`Handler::answer`] said of a bodiless request.
    Answered(Result<Option<Answer>, Panicked>),
}

impl Stage {
    /// Where a rate limit's verdict leaves a request: `None` when it may be answered at once
    /// from its head (admitted now, and `bodiless`).
    pub(crate) fn admitted(admission: Admission, bodiless: bool) -> Option<Stage> {
        match admission {
            Admission::Now if bodiless => None,
            Admission::Now => Some(Stage::Call),
            Admission::Refused(too_many) => Some(Stage::Refused(too_many)),
            delayed => Some(Stage::Delayed(delayed)),
        }
    }

    /// Waits out a delay, then says what is left: the rate limit's `429` if it refused the
    /// request, and what [`answer`] says of it (`Ok(None)`: call the handler). `head` is
    /// given for a bodiless request, the only kind the handler may answer from its head.
    pub(crate) async fn settle<H: Handler>(
        self,
        handler: &H,
        head: Option<Head<'_>>,
    ) -> (Option<Response<Body>>, Result<Option<Answer>, Panicked>) {
        match self {
            Stage::Answered(answered) => (None, answered),
            Stage::Call => (None, Ok(None)),
            Stage::Refused(too_many) => (Some(too_many), Ok(None)),
            Stage::Delayed(admission) => match admission.wait().await {
                None => (None, head.map_or(Ok(None), |head| answer(handler, &head))),
                refused => (refused, Ok(None)),
            },
        }
    }
}

/// The `500` sent for a panicked handler.
pub(crate) fn internal_error() -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r
}

/// Why a response body stopped before its end.
#[derive(Debug)]
pub(crate) enum BodyFailed {
    /// The body's stream reported an error.
    Error(BodyError),
    /// Polling the body's stream panicked (logged and counted as a handler panic).
    Panicked,
    /// The body yielded more bytes than the length its head advertised.
    TooLong,
    /// The body ended before the length its head advertised.
    TooShort,
}

impl BodyFailed {
    /// A short reason for the debug log.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            BodyFailed::Error(_) => "response body failed",
            BodyFailed::Panicked => "response body panicked",
            BodyFailed::TooLong => "response body longer than its content-length",
            BodyFailed::TooShort => "response body shorter than its content-length",
        }
    }
}

/// Where a streamed response body goes: the protocol's framing and back-pressure.
pub(crate) trait BodySink {
    /// Why the sink cannot go on (the peer is gone, a write failed or was too slow).
    type Error;

    /// Takes one non-empty chunk; resolves once the sink can take more.
    fn chunk(&mut self, chunk: Bytes) -> impl Future<Output = Result<(), Self::Error>>;

    /// Ready once the peer has gone away. Polled while the body's next chunk is awaited, so
    /// a client that leaves is noticed even while the body has nothing to send (a proxied
    /// upstream that stalls), and the body is dropped, releasing what it holds.
    fn poll_gone(&mut self, _cx: &mut Context<'_>) -> Poll<Self::Error> {
        Poll::Pending
    }
}

/// How a pump ended short.
pub(crate) enum PumpError<E> {
    /// The body failed; nothing was wrong with the sink.
    Body(BodyFailed),
    /// The sink failed.
    Sink(E),
}

/// What a pump sent: the body's bytes, and the trailers that ended it, if it had any (the
/// caller sends them its protocol's way, or drops them where it has none).
pub(crate) struct Pumped {
    pub(crate) bytes: u64,
    pub(crate) trailers: Option<HeaderMap>,
}

/// Streams `body` into `sink`, polling it with the handler's panic isolation and holding it
/// to `declared` (the length its head advertised, if any). Returns what was sent; the
/// caller ends the body its protocol's way.
pub(crate) async fn pump<S: BodySink>(
    mut body: Body,
    declared: Option<u64>,
    sink: &mut S,
) -> Result<Pumped, PumpError<S::Error>> {
    let mut sent: u64 = 0;
    loop {
        // The peer is watched only while the body has nothing ready: a chunk that is
        // already there costs no watch.
        let next = poll_fn(|cx| match poll_next_chunk(&mut body, cx) {
            Poll::Pending => sink.poll_gone(cx).map(Err),
            ready => ready.map(Ok),
        });
        let chunk = match next.await.map_err(PumpError::Sink)? {
            None => break,
            Some(Err(e)) => return Err(PumpError::Body(e)),
            Some(Ok(chunk)) if chunk.is_empty() => continue,
            Some(Ok(chunk)) => chunk,
        };
        sent += chunk.len() as u64;
        if declared.is_some_and(|n| sent > n) {
            return Err(PumpError::Body(BodyFailed::TooLong));
        }
        sink.chunk(chunk).await.map_err(PumpError::Sink)?;
    }
    if declared.is_some_and(|n| sent != n) {
        return Err(PumpError::Body(BodyFailed::TooShort));
    }
    Ok(Pumped { bytes: sent, trailers: body.take_trailers() })
}

/// The next chunk of a response body, polled with the same isolation as the handler: a
/// panic in the body's stream ends this response, never the core's other connections.
fn poll_next_chunk(
    body: &mut Body,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Bytes, BodyFailed>>> {
    match catch_unwind(AssertUnwindSafe(|| body.poll_chunk(cx))) {
        Ok(Poll::Ready(chunk)) => Poll::Ready(chunk.map(|c| c.map_err(BodyFailed::Error))),
        Ok(Poll::Pending) => Poll::Pending,
        Err(_) => {
            tracing::error!("response body panicked; ending the response");
            crate::metrics::count(|m| m.rejected(Rejection::HandlerPanic));
            Poll::Ready(Some(Err(BodyFailed::Panicked)))
        }
    }
}

/// What the record of an exchange needs from its request, kept from the start.
pub(crate) struct Record {
    started: Instant,
    method: Method,
    version: Version,
    /// The target as text, kept only when the access log is on.
    target: Option<String>,
    peer: Option<SocketAddr>,
    /// The upstream that answered, when a proxied request is logged.
    upstream: Option<UpstreamFields>,
    /// The real client, when a trusted proxy named one other than the peer.
    client: Option<std::net::IpAddr>,
}

impl Record {
    /// Starts the record of a request (now is its start time).
    pub(crate) fn start(
        method: &Method,
        target: &impl std::fmt::Display,
        version: Version,
        peer: Option<SocketAddr>,
        log: Option<&CoreLog>,
    ) -> Record {
        Record {
            started: rt::now(),
            method: method.clone(),
            version,
            target: log.map(|_| target.to_string()),
            peer,
            upstream: None,
            client: None,
        }
    }

    /// Keeps the request's real client (from a trusted proxy's `X-Forwarded-For`) for the
    /// log, when it is not the peer.
    pub(crate) fn note_client(&mut self, client: Option<std::net::IpAddr>) {
        if self.target.is_some() && client != self.peer.map(|p| crate::trust::canonical(p.ip())) {
            self.client = client;
        }
    }

    /// Keeps what the proxy said about the upstream that answered `response`, when the
    /// access log is on.
    pub(crate) fn note_upstream(&mut self, response: &Response<Body>) {
        if self.target.is_some() {
            self.upstream = response.extensions().get::<UpstreamFields>().cloned();
        }
    }

    /// The request's method.
    pub(crate) fn method(&self) -> &Method {
        &self.method
    }

    /// Records a response sent in full: the metrics (status class and duration) and an
    /// access log line. `body_bytes`: body bytes sent (none for HEAD).
    pub(crate) fn finish(self, status: StatusCode, body_bytes: u64, log: Option<&CoreLog>) {
        let now = rt::now();
        // The clock is read once per reactor turn, and most answers leave in the turn their
        // request came in: then there is no difference to work out.
        let duration = if now == self.started {
            Duration::ZERO
        } else {
            now.saturating_duration_since(self.started)
        };
        crate::metrics::count(|m| m.response(status, Some(duration.as_micros() as u64)));
        if let (Some(log), Some(target)) = (log, &self.target) {
            let bytes = if self.method == Method::HEAD { 0 } else { body_bytes };
            let entry = Entry {
                peer: self.peer,
                method: &self.method,
                target,
                version: self.version,
                status: status.as_u16(),
                bytes,
                duration,
                upstream: self.upstream.as_ref(),
                client: self.client,
            };
            log.record(&entry, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_of(uri: &str, host: Option<&str>) -> Option<String> {
        let mut r = Request::builder().uri(uri);
        if let Some(h) = host {
            r = r.header(http::header::HOST, h);
        }
        request_host(&r.body(Body::empty()).unwrap()).map(str::to_owned)
    }

    #[test]
    fn the_request_host_is_the_authority_or_the_host_field_without_its_port() {
        assert_eq!(host_of("http://a.example:8080/x", Some("other")).as_deref(), Some("a.example"));
        assert_eq!(host_of("/x", Some("b.example:8443")).as_deref(), Some("b.example"));
        assert_eq!(host_of("/x", Some("b.example")).as_deref(), Some("b.example"));
        assert_eq!(host_of("/x", Some("[::1]:443")).as_deref(), Some("[::1]"));
        assert_eq!(host_of("/x", Some("[::1]")).as_deref(), Some("[::1]"));
        // Not a port: kept whole.
        assert_eq!(host_of("/x", Some("b.example:99999")).as_deref(), Some("b.example:99999"));
        assert_eq!(host_of("/x", Some("b.example:65536")).as_deref(), Some("b.example:65536"));
        assert_eq!(host_of("/x", Some("b.example:65535")).as_deref(), Some("b.example"));
        assert_eq!(host_of("/x", Some("b.example:0")).as_deref(), Some("b.example"));
        assert_eq!(host_of("/x", Some("b.example:")).as_deref(), Some("b.example:"));
        assert_eq!(host_of("/x", Some("b.example:8a")).as_deref(), Some("b.example:8a"));
        assert_eq!(host_of("/x", None), None);
    }
}
