//! The HTTP/1.1 connection loop.
//!
//! ```text
//!   ┌──► read head ──► checks ──► handler ──► write response ──► drain unread body ──┐
//!   │    (keep-alive / headers timeout)        (min response rate)  (drain timeout)   │
//!   └──────────────────────────── keep-alive ◄────────────────────────────────────────┘
//!        any error ──► status response (if none started) ──► lingering close
//! ```
//!
//! Timeouts, Kestrel's model: the first request's head must arrive within
//! `request_headers_timeout` of the accept; later, an idle connection waits up to
//! `keep_alive_timeout` for a next request, whose head must then complete within
//! `request_headers_timeout` of its first byte (the slowloris defence: `408` and close).

use crate::sys::{self, OwnedSocket};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::StatusCode;
use peregrine_limits::{Limit, Limits};
use peregrine_protocols::h1::{
    encode_error_response, encode_response_head, BodyDecoder, BodyEvent, BodyFraming, HeadParser,
    ParseConfig, ParsedHead, ResponseFraming,
};
use tracing::debug;

use super::incoming::Incoming;
use super::io::{ConnIo, Continue, Why};
use super::write::{
    finish as finish_response, must_flush, prepare_response, put_answer, put_cache_hit,
    stream_body, why_failed, write_answer, Prepared, Written,
};
use crate::access_log::CoreLog;
use crate::clients::ClientPolicy;
use crate::exchange::{self, Panicked, Record, Stage};
use crate::handler::{Answer, Fields};
use crate::metrics::Rejection;
use crate::transport::Transport;
use crate::{date, rt, Body, ConnectionInfo, Handler, Head};

/// How long a lingering close waits for the client to finish sending, and how much it reads.
/// After an error response we stop reading, but closing with unread bytes in the socket makes
/// the kernel send a reset that can destroy the response before the client reads it; so, like
/// nginx's `lingering_close`, we half-close and discard input for a short while.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;

/// Per-core connection settings, derived once from `Limits`.
pub(crate) struct Settings {
    pub(crate) limits: Limits,
    /// The limits' minimum data rates, which each connection points to.
    pub(crate) rates: Rc<super::io::Rates>,
    pub(crate) parse: ParseConfig,
    /// This core's access log, when enabled.
    pub(crate) access_log: Option<CoreLog>,
    /// The HTTP/2 codec's settings, shared by the core's HTTP/2 connections.
    pub(crate) h2: Arc<peregrine_protocols::h2::server::Config>,
    /// Peers whose `X-Forwarded-For` names the client (`ServerConfig::trusted_proxies`).
    pub(crate) trusted: Option<crate::trust::Trusted>,
}

impl Settings {
    /// `info` with the request's real client, when its peer is a trusted proxy.
    pub(crate) fn real_client<'a>(
        &self,
        mut info: ConnectionInfo,
        forwarded_for: impl Iterator<Item = &'a [u8]>,
    ) -> ConnectionInfo {
        if let (Some(trusted), Some(peer)) = (&self.trusted, info.peer) {
            info.client = Some(crate::trust::real_client(peer.ip(), forwarded_for, trusted));
        }
        info
    }

    pub(crate) fn new(
        limits: Limits,
        access_log: Option<CoreLog>,
        trusted: Option<crate::trust::Trusted>,
    ) -> Settings {
        let parse = ParseConfig {
            max_request_line_size: limits.max_request_line_size,
            max_request_headers_total_size: limits.max_request_headers_total_size,
            max_request_header_count: limits.max_request_header_count,
        };
        let h2 = Arc::new(peregrine_protocols::h2::server::Config::new(&limits));
        let rates = Rc::new(super::io::Rates {
            body: limits.min_request_body_data_rate,
            response: limits.min_response_data_rate,
        });
        Settings { limits, rates, parse, access_log, h2, trusted }
    }
}

/// How the loop ends.
enum Ending {
    /// Orderly: flush what is pending and close.
    Close,
    /// Answer this status (no response started) and close.
    Reject(StatusCode, Why),
    /// Close at once.
    Abort(Why),
}

/// Serves one HTTP/1 connection until it closes. `initial`: bytes already received (by
/// protocol sniffing), parsed before anything else is read.
///
/// A plain function returning an `async move` block, not an `async fn`: an async fn copies
/// its arguments into locals and its future keeps room for both copies
/// (rust-lang/rust#62958). This future is most of what an idle connection costs.
pub(crate) fn serve<H: Handler>(
    fd: OwnedSocket,
    transport: Transport,
    initial: BytesMut,
    handler: Rc<H>,
    settings: Rc<Settings>,
    admitted: crate::conn::Admitted,
    info: ConnectionInfo,
) -> impl Future<Output = ()> {
    let details = crate::conn::ConnectionDetails::of(info, transport.client_certificates());
    let io = Rc::new(ConnIo::new(transport, Rc::clone(&settings.rates)));
    io.read.borrow_mut().inbuf = initial;
    let mut first_deadline = Some(rt::now() + settings.limits.request_headers_timeout);
    async move {
        let ending = loop {
            // Idle between requests: the connection waits here, in a small state that holds
            // no buffer, parser or exchange (those live in the boxed future below, which
            // exists only while requests are being served).
            if io.read.borrow().inbuf.is_empty() {
                // Once a graceful shutdown has begun, an idle connection still waits a
                // moment: a client may have sent its next request already, and closing under
                // it would fail that request. One that comes is answered with
                // `Connection: close`.
                let draining = rt::shutting_down();
                let deadline = match (draining, first_deadline) {
                    (true, _) => rt::now() + rt::DRAIN_GRACE,
                    (false, Some(first)) => first,
                    (false, None) => rt::now() + settings.limits.keep_alive_timeout,
                };
                io.timer.set_idle(!draining);
                io.release_idle_buffers();
                let read = io.read_more(Some(deadline)).await;
                io.timer.set_idle(false);
                match read {
                    Ok(n) if n > 0 => {}
                    // The shutdown woke this idle wait: wait the grace period instead.
                    Err(super::io::ReadFail::TimedOut) if !draining && rt::shutting_down() => {
                        continue
                    }
                    // EOF, a failed read, the keep-alive timeout (for the first request,
                    // `request_headers_timeout`), or the grace period's end: close quietly.
                    end => {
                        if let Err(super::io::ReadFail::Io(e)) = end {
                            debug!(error = %e, "read failed");
                        }
                        break Ending::Close;
                    }
                }
            }
            // The whole head usually came with the first bytes: parsed here, with no future
            // of its own. The exchange, and the rest of a head still on its way, run in one
            // boxed future per request, so the idle task never holds their state.
            // Nothing of this request's response has been sent (`finish` answers a refused
            // head with an error response only then).
            io.response_started.set(false);
            // The parse result is matched inside this statement and nothing of it outlives
            // it: the connection's idle state holds no request head.
            let next: Result<Result<bool, Ending>, Exchange<'_>> = {
                let clients = admitted.clients();
                let mut parser = HeadParser::new();
                let parsed = {
                    let read = &mut *io.read.borrow_mut();
                    parser.parse(&mut read.inbuf, &settings.parse, &mut read.known_host)
                };
                match parsed {
                    Ok(Some(head)) => {
                        first_deadline = None;
                        match offer(&io, &*handler, &settings, head, &details, clients) {
                            Offered::Done(done) => Ok(done),
                            Offered::Serve(started) => Err(rt::boxed(|| {
                                serve_request(&io, &*handler, &settings, started, &details)
                            })),
                        }
                    }
                    Ok(None) => Err(rt::boxed(|| {
                        read_and_serve(
                            &io,
                            &*handler,
                            &settings,
                            parser,
                            first_deadline.take(),
                            &details,
                            clients,
                        )
                    })),
                    Err(e) => Err(Box::pin(refuse_head(&io, reject(&e)))),
                }
            };
            let done = match next {
                Ok(done) => done,
                Err(exchange) => exchange.await,
            };
            match done {
                Ok(true) => {}
                Ok(false) => break Ending::Close,
                Err(e) => break e,
            }
            // Responses held back for a pipelined batch go out before the connection idles,
            // or once they are many; what `offer` could not send at once goes out here.
            if io.has_output() && must_flush(&io, false) && Box::pin(io.flush()).await.is_err() {
                break Ending::Close;
            }
        };
        Box::pin(finish(&io, fd, ending)).await;
        drop(admitted);
    }
}

/// One request's exchange, boxed: `Ok(true)` keeps the connection for another request.
type Exchange<'a> = Pin<Box<dyn Future<Output = Result<bool, Ending>> + 'a>>;

/// Serves a request whose head is only partly buffered: reads the rest, then serves it.
async fn read_and_serve<H: Handler>(
    io: &Rc<ConnIo>,
    handler: &H,
    settings: &Settings,
    parser: HeadParser,
    first_deadline: Option<Instant>,
    details: &crate::conn::ConnectionDetails,
    clients: &ClientPolicy,
) -> Result<bool, Ending> {
    let head = read_head(io, settings, parser, first_deadline).await?;
    match offer(io, handler, settings, head, details, clients) {
        Offered::Done(done) => done,
        Offered::Serve(started) => serve_request(io, handler, settings, started, details).await,
    }
}

/// Ends the connection for a head the codec refused: the responses to requests pipelined
/// before it go out first, then (in `finish`) the error response.
async fn refuse_head(io: &ConnIo, refused: Ending) -> Result<bool, Ending> {
    if io.has_output() && io.flush().await.is_err() {
        return Err(Ending::Close);
    }
    io.response_started.set(false);
    Err(refused)
}

/// The ending for a request head the codec refused.
fn reject(e: &peregrine_protocols::h1::ParseError) -> Ending {
    debug!(reason = %e, "rejecting request");
    Ending::Reject(e.status(), Why::parse(e))
}

/// Reads until a request head is parsed; some of its bytes are already buffered (`parser`
/// has seen them), and the head must be whole within `request_headers_timeout` of them (or
/// of the accept, for the first request: `first_deadline`).
async fn read_head(
    io: &ConnIo,
    settings: &Settings,
    mut parser: HeadParser,
    first_deadline: Option<Instant>,
) -> Result<ParsedHead, Ending> {
    let limits = &settings.limits;
    let deadline = first_deadline.unwrap_or_else(|| rt::now() + limits.request_headers_timeout);
    loop {
        // Responses to pipelined requests go out before we wait for more input.
        if io.has_output() {
            if io.flush().await.is_err() {
                return Err(Ending::Close);
            }
            io.response_started.set(false); // those were earlier requests' responses
        }
        match io.read_more(Some(deadline)).await {
            Ok(0) => return Err(Ending::Close),
            Ok(_) => {}
            Err(super::io::ReadFail::Io(e)) => {
                debug!(error = %e, "read failed");
                return Err(Ending::Close);
            }
            Err(super::io::ReadFail::TimedOut) => {
                debug!("request head not received within request_headers_timeout");
                let why = Why::limit(Limit::RequestHeadersTimeout);
                return Err(Ending::Reject(StatusCode::REQUEST_TIMEOUT, why));
            }
        }
        // The codec decides when the growing head is worth parsing again (a byte-at-a-time
        // client costs a handful of parses per head, and limits still fire on the dot).
        let parsed = {
            let read = &mut *io.read.borrow_mut();
            parser.parse(&mut read.inbuf, &settings.parse, &mut read.known_host)
        };
        match parsed {
            Ok(Some(head)) => return Ok(head),
            Ok(None) => {}
            Err(e) => return Err(reject(&e)),
        }
    }
}

/// A request's exchange once [`offer`] has begun it.
struct Started {
    head: ParsedHead,
    record: Record,
    /// The connection's details, with the real client when a trusted proxy names it.
    info: ConnectionInfo,
    /// Where the exchange stands.
    stage: Stage,
}

/// What [`offer`] made of a request.
// Not boxed: a `Started` moves once, into the exchange's boxed future; a box of its own
// would be a second allocation for every request that goes on.
#[allow(clippy::large_enum_variant)]
enum Offered {
    /// The exchange is over: as [`serve_request`]'s result.
    Done(Result<bool, Ending>),
    /// The rest takes waiting: [`serve_request`] goes on.
    Serve(Started),
}

/// Begins the exchange for `head`, and ends it where that takes no waiting: a request
/// without a body, under no rate limit, that the handler answers from its head with a
/// fixed response or one whose body is in memory (a cache hit) is answered here, and the response sent at once when the socket takes it
/// ([`ConnIo::try_flush`]). Such a request builds no future at all (keep-alive `/plaintext`
/// spent about 500 instructions on its boxed exchange future, the moves into it and the
/// flush's future).
fn offer<H: Handler>(
    io: &ConnIo,
    handler: &H,
    settings: &Settings,
    head: ParsedHead,
    details: &crate::conn::ConnectionDetails,
    clients: &ClientPolicy,
) -> Offered {
    let info = details.info();
    let limits = &settings.limits;
    let log = settings.access_log.as_ref();
    let mut record = Record::start(&head.method, &head.target, head.version, info.peer, log);
    if let (BodyFraming::Length(n), Some(max)) = (head.framing, limits.max_request_body_size) {
        if n > max {
            // Before reading any of it, and before any 100 Continue.
            let why = Why::limit(Limit::MaxRequestBodySize);
            return Offered::Done(Err(Ending::Reject(StatusCode::PAYLOAD_TOO_LARGE, why)));
        }
    }
    let has_body = head.framing != BodyFraming::Empty;
    {
        let mut read = io.read.borrow_mut();
        read.decoder = has_body.then(|| {
            Box::new(BodyDecoder::new(
                head.framing,
                limits.max_request_body_size,
                limits.max_request_headers_total_size,
            ))
        });
        read.continue_state = if head.expect_continue && has_body {
            Continue::Expected
        } else {
            Continue::NotExpected
        };
        read.body_rate = None;
        read.failure = None;
    }
    io.response_started.set(false);
    let forwarded_for = head.fields.values(crate::trust::X_FORWARDED_FOR.as_str());
    let info = settings.real_client(info, forwarded_for);
    record.note_client(info.client);
    if let Some(stage) = Stage::admitted(clients.check(info.client), !has_body) {
        return Offered::Serve(Started { head, record, info, stage });
    }
    // A request without a body may be answered from its head: no `Request` is built, and
    // its fields never go into a `HeaderMap`.
    let view = Head::new(&head.method, &head.target, head.version, Fields::Raw(&head.fields));
    let close = !head.keep_alive || rt::shutting_down();
    let (status, body_bytes, close) = match exchange::answer(handler, &view) {
        Ok(Some(Answer::Fixed(fixed))) => {
            let body_bytes = put_answer(io, &fixed, &head.method, head.version, close);
            (fixed.status, body_bytes, close)
        }
        // A response whose body is in memory (a cache hit) is written the same way; a `101`
        // that may open a tunnel is not.
        Ok(Some(Answer::Response(mut response)))
            if response.body().is_in_memory()
                && !(head.upgrade && response.status() == StatusCode::SWITCHING_PROTOCOLS) =>
        {
            let body_bytes = response.body().exact_len().unwrap_or(0);
            let prepared =
                prepare_response(io, &mut response, &head.method, head.version, close, false);
            let Prepared::Complete { close } = prepared else {
                // An in-memory body is written whole: never taken.
                let why = Why::uncounted("response body not in memory");
                return Offered::Done(Err(Ending::Abort(why)));
            };
            record.note_upstream(&response);
            (response.status(), body_bytes, close)
        }
        Ok(Some(Answer::CacheHit(hit))) => {
            let (close, body_bytes) = put_cache_hit(io, &hit, &head.method, head.version, close);
            (hit.status, body_bytes, close)
        }
        answered => {
            let stage = Stage::Answered(answered);
            return Offered::Serve(Started { head, record, info, stage });
        }
    };
    // Closing flushes on the way out; a pipelined batch is sent once it is read.
    if !close && must_flush(io, false) {
        if let Some(Err(e)) = io.try_flush() {
            return Offered::Done(Err(Ending::Abort(why_failed(e))));
        }
    }
    record.finish(status, body_bytes, log);
    Offered::Done(Ok(!close))
}

/// One request/response exchange, from where [`offer`] left it. `Ok(true)`: keep the
/// connection for another request.
async fn serve_request<H: Handler>(
    io: &Rc<ConnIo>,
    handler: &H,
    settings: &Settings,
    started: Started,
    details: &crate::conn::ConnectionDetails,
) -> Result<bool, Ending> {
    let Started { head, mut record, info, stage } = started;
    let ParsedHead { method, target, version, framing, keep_alive, upgrade, fields, .. } = head;
    let bodiless = framing == BodyFraming::Empty;
    let view = bodiless.then(|| Head::new(&method, &target, version, Fields::Raw(&fields)));
    let (over_rate, answered) = stage.settle(handler, view).await;
    // A panicked handler's 500 closes the connection: its state is not to be trusted.
    let (mut response, panicked) = match (over_rate, answered) {
        (_, Ok(Some(Answer::Fixed(fixed)))) => {
            let close = !keep_alive || rt::shutting_down();
            let written = write_answer(io, &fixed, &method, version, close).await;
            return match written {
                Written::Done { close, body_bytes } => {
                    record.finish(fixed.status, body_bytes, settings.access_log.as_ref());
                    Ok(!close)
                }
                Written::FailedBeforeStart(status) => {
                    Err(Ending::Reject(status, Why::uncounted("response failed")))
                }
                Written::Abort(why) => Err(Ending::Abort(why)),
            };
        }
        (_, Ok(Some(Answer::Response(response)))) => (response, false),
        (_, Ok(Some(Answer::CacheHit(hit)))) => (hit.into_response(), false),
        (_, Err(Panicked)) => (exchange::internal_error(), true),
        (Some(too_many), Ok(None)) => (too_many, false),
        (None, Ok(None)) => {
            let (headers, uri) = match (fields.to_map(), target.into_uri()) {
                (Ok(headers), Ok(uri)) => (headers, uri),
                (Err(e), _) | (_, Err(e)) => return Err(reject(&e)),
            };
            drop(fields);
            let body = match framing {
                BodyFraming::Empty => Body::empty(),
                BodyFraming::Length(n) => Body::incoming(Incoming::new(Rc::clone(io), Some(n))),
                BodyFraming::Chunked => Body::incoming(Incoming::new(Rc::clone(io), None)),
            };
            let certificates = details.client_certificates();
            let request = exchange::request(method, uri, version, headers, body, certificates);
            match exchange::call(handler, request, &info).await {
                Ok(response) => (response, false),
                Err(Panicked) => (exchange::internal_error(), true),
            }
        }
    };
    let status = response.status();
    record.note_upstream(&response);
    if upgrade && !panicked && status == StatusCode::SWITCHING_PROTOCOLS {
        // A `101` with a tunnel behind it (a proxied WebSocket): the connection stops being
        // HTTP once the head is out.
        if let (Some(tunnel), BodyFraming::Empty) = (response.body_mut().take_tunnel(), framing) {
            date::with(|d| {
                let framing = ResponseFraming::SwitchingProtocols;
                encode_response_head(
                    status,
                    response.headers(),
                    framing,
                    version,
                    false,
                    d,
                    &mut io.out(),
                )
            });
            if io.flush().await.is_err() {
                return Ok(false);
            }
            record.finish(status, 0, settings.access_log.as_ref());
            let from_client = std::mem::take(&mut io.read.borrow_mut().inbuf);
            Box::pin(crate::tunnel::run(&io.transport, from_client, tunnel)).await;
            return Ok(false);
        }
    }
    if let Some(failure) = io.read.borrow_mut().failure.take() {
        // The handler hit a body error (and perhaps answered anyway): the client's mistake
        // decides the answer, as in Kestrel.
        return Err(match failure.status {
            Some(status) => Ending::Reject(status, failure.why),
            None => Ending::Abort(failure.why),
        });
    }
    // A client still waiting for 100 Continue may or may not send the body after our final
    // response, so the connection's framing is unknowable and it cannot be reused: unless the
    // response itself goes on to read the body (checked again after writing).
    let unread_owing_continue = || {
        let read = io.read.borrow();
        read.decoder.as_ref().is_some_and(|d| !d.is_done())
            && read.continue_state == Continue::Expected
    };
    let close = !keep_alive || panicked || rt::shutting_down();
    let owing = unread_owing_continue();
    let in_memory_len = response.body().exact_len().unwrap_or(0);
    // Borrowed, not moved: a response is a few hundred bytes, copied at each hand-over.
    let prepared = prepare_response(io, &mut response, record.method(), version, close, owing);
    let written = match prepared {
        Prepared::Complete { close } if !must_flush(io, close) => {
            Written::Done { close, body_bytes: in_memory_len }
        }
        Prepared::Complete { close } => finish_response(io, close, in_memory_len).await,
        // Rare next to in-memory bodies; boxed so its state does not enlarge every exchange.
        Prepared::Streaming(body) => rt::boxed(|| stream_body(io, body)).await,
    };
    if let Written::Done { body_bytes, .. } = written {
        record.finish(status, body_bytes, settings.access_log.as_ref());
    }
    match written {
        Written::Done { close: true, .. } => Ok(false),
        Written::Done { close: false, .. } => {
            if unread_owing_continue() {
                return Ok(false);
            }
            let body_unread = io.read.borrow().decoder.as_ref().is_some_and(|d| !d.is_done());
            if body_unread && !rt::boxed(|| drain(io, settings)).await {
                return Ok(false);
            }
            Ok(true)
        }
        Written::FailedBeforeStart(status) => {
            let failure = io.read.borrow_mut().failure.take();
            let why = failure.map_or(Why::uncounted("response body failed"), |f| f.why);
            Err(Ending::Reject(status, why))
        }
        Written::Abort(why) => {
            let failure = io.read.borrow_mut().failure.take();
            Err(Ending::Abort(failure.map_or(why, |f| f.why)))
        }
    }
}

/// Reads and discards what the handler left of the body, so the connection can carry the
/// next request. False: give up and close (too slow, too large, broken).
async fn drain(io: &ConnIo, settings: &Settings) -> bool {
    let deadline = rt::now() + settings.limits.request_body_drain_timeout;
    loop {
        {
            let mut read = io.read.borrow_mut();
            let read = &mut *read;
            let Some(decoder) = read.decoder.as_mut() else { return true };
            loop {
                match decoder.decode(&mut read.inbuf) {
                    Ok(BodyEvent::Data(_)) => continue,
                    Ok(BodyEvent::Done) => {
                        read.decoder = None;
                        return true;
                    }
                    Ok(BodyEvent::NeedMore) => break,
                    Err(_) => return false,
                }
            }
        }
        if io.has_output() && io.flush().await.is_err() {
            return false;
        }
        match io.read_more(Some(deadline)).await {
            Ok(n) if n > 0 => {}
            _ => {
                debug!("request body not drained within request_body_drain_timeout");
                crate::metrics::count(|m| {
                    m.rejected(Rejection::Limit(Limit::RequestBodyDrainTimeout))
                });
                return false;
            }
        }
    }
}

/// Ends the connection as `ending` says.
async fn finish(io: &ConnIo, fd: OwnedSocket, ending: Ending) {
    let orderly = !matches!(ending, Ending::Abort(_));
    let linger = match ending {
        Ending::Close => {
            let _ = io.flush().await;
            let read = io.read.borrow();
            !read.inbuf.is_empty() || read.decoder.as_ref().is_some_and(|d| !d.is_done())
        }
        Ending::Reject(status, why) => {
            debug!(%status, reason = why.detail, "closing connection with an error response");
            if let Some(rejection) = why.rejection {
                crate::metrics::count(|m| m.rejected(rejection));
            }
            if !io.response_started.get() {
                crate::metrics::count(|m| m.response(status, None));
            }
            if !io.response_started.get() {
                io.out.borrow_mut().clear();
                io.queued.borrow_mut().clear();
                date::with(|d| encode_error_response(status, d, &mut io.out()));
                let _ = io.flush().await;
            }
            true
        }
        Ending::Abort(why) => {
            debug!(reason = why.detail, "aborting connection");
            if let Some(rejection) = why.rejection {
                crate::metrics::count(|m| m.rejected(rejection));
            }
            false
        }
    };
    if orderly {
        // TLS: close_notify before the TCP half-close, so the client can tell our end of the
        // stream from a cut one. Bounded: a client that does not read cannot hold us here.
        let deadline = rt::now() + LINGER_TIME;
        io.until_deadline(io.transport.close_notify(), Some(deadline)).await;
    }
    if linger && crate::sys::driver::shutdown_write(&fd).is_ok() {
        let deadline = rt::now() + LINGER_TIME;
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            io.read.borrow_mut().inbuf.clear();
            match io.read_more(Some(deadline)).await {
                Ok(n) if n > 0 => discarded += n,
                _ => break,
            }
        }
    }
    rt::io::close(fd).await;
}

/// Answers a connection over `max_connections` with `503` and closes it.
pub(crate) async fn reject_over_capacity(fd: OwnedSocket) {
    let io = ConnIo::new(Transport::plain(sys::raw(&fd)), Rc::default());
    let why = Why::limit(Limit::MaxConnections);
    finish(&io, fd, Ending::Reject(StatusCode::SERVICE_UNAVAILABLE, why)).await;
}
