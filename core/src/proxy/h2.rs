//! HTTP/2 upstreams (`h2c://`, `h2://` over TLS): many requests multiplexed on one
//! connection per server per
//! core, with trailers passed through, so gRPC services work behind the proxy (unary and
//! streaming both ways).
//!
//! Each connection is a task of its own (the driver) that owns the socket and the codec
//! (`peregrine_protocols::h2::client`): it reads frames into the streams' slots and writes
//! what the codec queues. A request opens a stream, sends its body from a task of its own
//! (flow control on the upstream side, back-pressure on the client's body), and waits for
//! the response head in its slot; the response body then reads the slot, giving capacity
//! back to the upstream as the client takes the bytes. A client that goes away resets its
//! stream (CANCEL), which leaves the connection and its other streams alone.
//!
//! A connection with no stream open is closed after `keepalive_timeout`; one the upstream
//! told to go away takes no new streams and closes once its last one ends.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use peregrine_protocols::h2::client::{self, Connection as Codec, Event, OpenError};
use peregrine_protocols::h2::{Reason, StreamId, StreamMap};
use tracing::debug;

use super::config::RouteOptions;
use super::{connect, connect_failed, metrics, request, InFlight, ProxyError, Shared};
use crate::access_log::UpstreamFields;
use crate::rt::{self, timer::Timer};
use crate::sys::driver::SendBuf;
use crate::sys::OwnedSocket;
use crate::transport::Transport;
use crate::{Body, BodyChunk, BodyError, ConnectionInfo};

/// Request body bytes queued on a stream before the sender waits for the upstream to take
/// them (its flow control), per stream.
const MAX_QUEUED: usize = 256 * 1024;

/// One core's HTTP/2 connections, by server index.
#[derive(Default)]
pub(crate) struct Connections {
    by_server: RefCell<Vec<Vec<Rc<UpstreamConn>>>>,
}

impl Connections {
    /// A connection to `server` that takes one more stream now: an open one, or a new one.
    async fn get(
        &self,
        shared: &Rc<Shared>,
        server: usize,
        within: Duration,
    ) -> Result<Rc<UpstreamConn>, ProxyError> {
        {
            let mut all = self.by_server.borrow_mut();
            if all.len() <= server {
                all.resize_with(server + 1, Vec::new);
            }
            let list = &mut all[server];
            list.retain(|c| !c.closed.get());
            if let Some(c) = list.iter().find(|c| c.codec.borrow().can_open().is_ok()) {
                return Ok(Rc::clone(c));
            }
        }
        let conn = connect(shared, server, within, None).await?;
        // Counted open (the pool gauge) until the driver ends.
        let (fd, transport, _, metrics) = conn.into_counted_parts();
        // Over TLS the server must have agreed to HTTP/2 (ALPN); one that did not would read
        // the preface as a bad HTTP/1.1 request.
        if transport.is_tls() && transport.alpn_protocol().as_deref() != Some(b"h2") {
            rt::io::close_detached(fd);
            metrics.conn_closed();
            let e = std::io::Error::other("the upstream did not agree to HTTP/2 (ALPN h2)");
            return Err(ProxyError::Connect(e));
        }
        let upstream = Rc::new(UpstreamConn {
            codec: RefCell::new(Codec::new(client::Config::default())),
            slots: RefCell::new(StreamMap::default()),
            driver: RefCell::new(None),
            closed: Cell::new(false),
        });
        let limits = DriveLimits {
            idle: shared.config.keepalive_timeout,
            pong_within: shared.config.connect_timeout,
        };
        rt::executor::spawn(drive(Rc::clone(&upstream), fd, transport, limits, metrics));
        self.by_server.borrow_mut()[server].push(Rc::clone(&upstream));
        Ok(upstream)
    }
}

/// A final response head as it arrived.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    content_length: Option<u64>,
    end_stream: bool,
}

/// A stream as the driver and the request's side share it.
#[derive(Default)]
struct Slot {
    head: Option<Head>,
    data: VecDeque<Bytes>,
    /// The response ended (END_STREAM or trailers).
    ended: bool,
    trailers: Option<HeaderMap>,
    /// The stream was reset, or the connection lost.
    failed: Option<Reason>,
    /// The response's reader (the head's waiter, then the body).
    reader: Option<Waker>,
    /// The request body's sender, waiting for room.
    sender: Option<Waker>,
}

/// One HTTP/2 connection to an upstream server.
pub(crate) struct UpstreamConn {
    codec: RefCell<Codec>,
    slots: RefCell<StreamMap<Slot>>,
    driver: RefCell<Option<Waker>>,
    closed: Cell<bool>,
}

impl UpstreamConn {
    fn wake_driver(&self) {
        if let Some(w) = self.driver.borrow().as_ref() {
            w.wake_by_ref();
        }
    }

    fn with_slot<R>(&self, id: StreamId, f: impl FnOnce(&mut Slot) -> R) -> Option<R> {
        self.slots.borrow_mut().get_mut(&id).map(f)
    }

    /// Forgets `id`: reset unless it ended, and unread bytes given back to flow control.
    fn finish(&self, id: StreamId, ended: bool) {
        let Some(slot) = self.slots.borrow_mut().remove(&id) else { return };
        for w in [slot.reader.as_ref(), slot.sender.as_ref()].into_iter().flatten() {
            w.wake_by_ref();
        }
        let mut codec = self.codec.borrow_mut();
        if !ended && slot.failed.is_none() {
            codec.reset_stream(id, Reason::CANCEL);
        }
        let unread: usize = slot.data.iter().map(Bytes::len).sum();
        codec.release_capacity(id, unread);
        drop(codec);
        self.wake_driver();
    }

    /// Delivers the codec's events to the slots.
    fn dispatch(&self) {
        loop {
            let Some(event) = self.codec.borrow_mut().poll_event() else { return };
            let mut slots = self.slots.borrow_mut();
            let (slot, wake_sender) = match event {
                Event::Response { id, status, headers, content_length, end_stream } => {
                    let Some(slot) = slots.get_mut(&id) else { continue };
                    slot.head = Some(Head { status, headers, content_length, end_stream });
                    slot.ended |= end_stream;
                    (slot, false)
                }
                Event::Data { id, data, end_stream } => {
                    let Some(slot) = slots.get_mut(&id) else {
                        drop(slots);
                        self.codec.borrow_mut().release_capacity(id, data.len());
                        continue;
                    };
                    if !data.is_empty() {
                        slot.data.push_back(data);
                    }
                    slot.ended |= end_stream;
                    (slot, false)
                }
                Event::Trailers { id, trailers } => {
                    let Some(slot) = slots.get_mut(&id) else { continue };
                    slot.trailers = Some(trailers);
                    slot.ended = true;
                    (slot, false)
                }
                Event::Reset { id, reason, .. } => {
                    let Some(slot) = slots.get_mut(&id) else { continue };
                    // A reset after the whole response arrived changes nothing for it (an
                    // upstream that has all it needs may stop the request body so).
                    if !slot.ended {
                        slot.failed = Some(reason);
                    }
                    (slot, true)
                }
                Event::ConnectionError { reason, description } => {
                    debug!(?reason, description, "h2 upstream connection failed");
                    continue;
                }
            };
            for w in [slot.reader.take(), wake_sender.then(|| slot.sender.take()).flatten()]
                .into_iter()
                .flatten()
            {
                w.wake();
            }
        }
    }

    /// The connection is gone: every stream fails.
    fn fail_all(&self) {
        self.closed.set(true);
        for slot in self.slots.borrow_mut().values_mut() {
            if !slot.ended {
                slot.failed.get_or_insert(Reason::CANCEL);
            }
            for w in [slot.reader.take(), slot.sender.take()].into_iter().flatten() {
                w.wake();
            }
        }
    }

    /// A stream on this connection timed out: asks the upstream for a PING's ACK, and the
    /// driver ends the connection if none comes (a black-holed upstream would otherwise
    /// take every new request, each to time out in its turn).
    fn check_alive(&self) {
        self.codec.borrow_mut().ping();
        self.wake_driver();
    }

    fn wake_senders(&self) {
        for slot in self.slots.borrow_mut().values_mut() {
            if let Some(w) = slot.sender.take() {
                w.wake();
            }
        }
    }
}

/// How long a connection's driver waits.
#[derive(Clone, Copy)]
struct DriveLimits {
    /// With no stream open, before the connection is closed (`keepalive_timeout`).
    idle: Duration,
    /// For the ACK to our PING, before the upstream counts as gone (`connect_timeout`: as
    /// long as it may take to reach it at all).
    pong_within: Duration,
}

/// The connection's task: reads into the codec, delivers events, writes what it queues.
/// `metrics`: its server's counters, where it counts as open until this ends.
async fn drive(
    conn: Rc<UpstreamConn>,
    fd: OwnedSocket,
    transport: Rc<Transport>,
    limits: DriveLimits,
    metrics: std::sync::Arc<metrics::ServerMetrics>,
) {
    let DriveLimits { idle, pong_within } = limits;
    // Whether this connection counts in the idle gauge now.
    let mut counted_idle = false;
    {
        let t: &Transport = &transport;
        let mut recv: Option<crate::transport::Recv<'_>> = None;
        let mut send: Option<crate::transport::Send<'_>> = None;
        let mut inbuf = BytesMut::new();
        let mut chunks = Vec::new();
        let timer = Timer::new();
        let mut idle_since: Option<Instant> = None;
        let mut pong_deadline: Option<Instant> = None;
        poll_fn(|cx: &mut Context<'_>| {
            rt::store_waker(&mut conn.driver.borrow_mut(), cx);
            loop {
                let mut progress = false;
                // 1. Receive.
                if recv.is_none() {
                    let mut buf = std::mem::take(&mut inbuf);
                    if !buf.is_empty() && buf.capacity() - buf.len() < 1024 {
                        buf.reserve(rt::io::RECV_BUF);
                    }
                    recv = Some(t.recv(buf));
                }
                if let Some(Poll::Ready((mut buf, result))) =
                    recv.as_mut().map(|f| Pin::new(f).poll(cx))
                {
                    recv = None;
                    progress = true;
                    match result {
                        Ok(n) if n > 0 => {
                            conn.codec.borrow_mut().recv(&mut buf);
                            inbuf = buf;
                        }
                        _ => return Poll::Ready(()),
                    }
                }
                conn.dispatch();
                // 2. Send.
                if send.is_none() {
                    chunks.clear();
                    if conn.codec.borrow_mut().poll_transmit(&mut chunks) {
                        let mut out = SendBuf::new();
                        for c in chunks.drain(..) {
                            out.push(c);
                        }
                        send = Some(t.send(out));
                        conn.wake_senders();
                    }
                }
                if let Some(Poll::Ready((result, mut buf))) =
                    send.as_mut().map(|f| Pin::new(f).poll(cx))
                {
                    send = None;
                    progress = true;
                    let Ok(n @ 1..) = result else { return Poll::Ready(()) };
                    buf.advance(n);
                    if !buf.is_empty() {
                        send = Some(t.send(buf));
                    }
                }
                let codec = conn.codec.borrow();
                if codec.is_closed() && send.is_none() {
                    return Poll::Ready(());
                }
                // 3. A PING unanswered for `pong_within`: the upstream is gone.
                let awaiting_pong = codec.awaiting_pong();
                // 4. Idle: no stream for `idle`, or a shutdown with none open.
                let open = codec.open_streams();
                drop(codec);
                let now = rt::now();
                if !awaiting_pong {
                    pong_deadline = None;
                } else if pong_deadline.is_none() {
                    pong_deadline = Some(now + pong_within);
                }
                let pong_due = pong_deadline;
                if pong_due.is_some_and(|due| now >= due) {
                    debug!("h2 upstream did not answer a PING; closing the connection");
                    return Poll::Ready(());
                }
                // Marked idle while no stream is open, so a graceful shutdown wakes it at once.
                timer.set_idle(open == 0);
                let idle_now = open == 0 && !conn.closed.get();
                if idle_now != counted_idle {
                    counted_idle = idle_now;
                    metrics.h2_idle(idle_now);
                }
                if open > 0 {
                    idle_since = None;
                    timer.set(pong_due);
                    if pong_due.is_some() && timer.poll_fired(cx).is_ready() {
                        continue;
                    }
                } else {
                    let since = *idle_since.get_or_insert(now);
                    if rt::shutting_down() || now >= since + idle {
                        // GOAWAY goes out with the next send; the connection then counts as
                        // closed (gone away with nothing open) and the loop ends.
                        if !conn.closed.replace(true) {
                            conn.codec.borrow_mut().go_away();
                            continue;
                        }
                    } else {
                        let due = since + idle;
                        timer.set(Some(pong_due.map_or(due, |p| p.min(due))));
                        if timer.poll_fired(cx).is_ready() {
                            continue;
                        }
                    }
                }
                if !progress {
                    return Poll::Pending;
                }
            }
        })
        .await;
    }
    conn.fail_all();
    if counted_idle {
        metrics.h2_idle(false);
    }
    drop(transport);
    rt::io::close(fd).await;
    metrics.conn_closed();
}

/// Forwards one request to the group's HTTP/2 servers.
pub(super) async fn forward(
    shared: &Rc<Shared>,
    request: Request<Body>,
    options: &RouteOptions,
    connection: Option<&ConnectionInfo>,
) -> Result<Response<Body>, ProxyError> {
    let config = &shared.config;
    let connect_timeout = options.connect_timeout.unwrap_or(config.connect_timeout);
    let head_timeout = options.response_header_timeout.unwrap_or(config.response_header_timeout);
    let idle_timeout = options.idle_timeout.unwrap_or(config.idle_timeout);
    let request = match options.request_buffering {
        true => request::buffered(request, options).await?,
        false => request,
    };
    let mut r = request::rewrite(shared, request, options, connection)?;
    // The HTTP/2 codec encodes one map.
    request::merge_kept(&mut r.headers, &mut r.host, &mut r.added);
    if r.bridge.is_some() {
        // A WebSocket over HTTP/2 would need RFC 8441 toward the upstream too; answering it
        // as a plain request would tell the client its tunnel is open when it is not.
        return Err(ProxyError::UpgradeUnsupported);
    }
    if r.te_trailers {
        r.headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let len = r.body.exact_len();
    if let Some(n) = len.filter(|n| *n > 0) {
        r.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    let target = r.target(options).into_owned();
    let end_stream = len == Some(0);
    let mut body = Some(std::mem::take(&mut r.body));
    let mut tried: Vec<usize> = Vec::new();
    let mut retries = 0;
    loop {
        let now = rt::now();
        let Some(server) = shared.balance.pick(now, &tried, r.key.as_deref()) else {
            return Err(ProxyError::NoServer);
        };
        let in_flight = InFlight::new(shared, server);
        let counters = &shared.metrics[server];
        counters.request();
        let authority = match r.headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
            Some(host) => host.to_string(),
            None => config.servers[server].host_header().to_string(),
        };
        let conn = match shared.h2.get(shared, server, connect_timeout).await {
            Ok(conn) => conn,
            Err(e) if connect_failed(shared, server, &e, &mut tried) => continue,
            Err(e) => return Err(e),
        };
        let scheme = if config.servers[server].tls.is_some() { "https" } else { "http" };
        let pseudo = client::pseudo(&r.method, scheme, &authority, &target);
        let opened = conn.codec.borrow_mut().send_request(&pseudo, &r.headers, end_stream);
        let id = match opened {
            Ok(id) => id,
            Err(OpenError::Busy | OpenError::Closed) => {
                // Another request took the last stream meanwhile: the next pick opens another.
                tried.push(server);
                if tried.len() < config.servers.len() {
                    continue;
                }
                return Err(ProxyError::Closed);
            }
        };
        conn.slots.borrow_mut().insert(id, Slot::default());
        conn.wake_driver();
        // From here the stream is this request's: dropped (the client left) before the
        // response body takes it over, it is reset and forgotten.
        let mut guard = StreamGuard { conn: Rc::clone(&conn), id, armed: true };
        let mut sender = body.take().filter(|_| !end_stream).map(|b| send_body(&conn, id, b));
        let sent_at = rt::now();
        let waiting = poll_fn(|cx| {
            // The request body goes out while the head is awaited (an upstream may answer
            // only once it has all of it).
            if let Some(Poll::Ready(done)) = sender.as_mut().map(|s| s.as_mut().poll(cx)) {
                sender = None;
                done?;
            }
            conn.with_slot(id, |slot| {
                if let Some(head) = slot.head.take() {
                    return Poll::Ready(Ok(head));
                }
                if let Some(reason) = slot.failed {
                    return Poll::Ready(Err(ProxyError::StreamReset(reason)));
                }
                rt::store_waker(&mut slot.reader, cx);
                Poll::Pending
            })
            .unwrap_or(Poll::Ready(Err(ProxyError::Closed)))
        });
        let head = match rt::timer::timeout(rt::now() + head_timeout, waiting).await {
            Some(Ok(head)) => head,
            Some(Err(e)) => {
                drop(guard);
                // GOAWAY refused it before the upstream saw it: safe to send again, on a new
                // connection, if it has no body that was taken.
                let refused = matches!(e, ProxyError::StreamReset(Reason::REFUSED_STREAM));
                if refused && end_stream && retries < config.max_retries {
                    retries += 1;
                    counters.retried();
                    continue;
                }
                if e.blames_server() {
                    shared.balance.failed(server, rt::now());
                }
                if let Some(f) = e.failure() {
                    counters.failed(f);
                }
                return Err(e);
            }
            None => {
                drop(guard);
                conn.check_alive();
                counters.failed(metrics::Failure::Timeout);
                return Err(ProxyError::Timeout);
            }
        };
        guard.armed = false;
        shared.balance.succeeded(server);
        let head_us = rt::now().saturating_duration_since(sent_at).as_micros() as u64;
        counters.response(head.status, head_us);
        let upstream_status = head.status.as_u16();
        let log = || UpstreamFields {
            server: std::sync::Arc::clone(&config.servers[server].shared_name),
            status: upstream_status,
            head_us,
            request_id: r.headers.get(&super::forward::X_REQUEST_ID).cloned(),
        };
        let Head { status, mut headers, content_length, end_stream: ended } = head;
        super::forward::remove_hop_by_hop(&mut headers);
        let timer = Timer::new();
        let body = ResponseBody {
            conn,
            id,
            len: content_length,
            ended_at_head: ended,
            done: false,
            trailers: None,
            sender,
            idle: idle_timeout,
            last_read: rt::now(),
            timer,
            _in_flight: in_flight,
        };
        let mut response = Response::new(Body::upstream(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        options.response_headers.apply(response.headers_mut());
        crate::access_log::attach_upstream(&mut response, log);
        return Ok(response);
    }
}

/// Resets and forgets a stream whose request was dropped before its response body took it
/// over.
struct StreamGuard {
    conn: Rc<UpstreamConn>,
    id: StreamId,
    armed: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.armed {
            self.conn.finish(self.id, false);
        }
    }
}

/// The request body on its way to the upstream: polled by the request while it awaits the
/// head, then by the response body, so it never outlives the exchange (an HTTP/1.1 client's
/// body reads the client's socket, which the next request needs).
type Sender = Pin<Box<dyn Future<Output = Result<(), ProxyError>>>>;

/// Sends the client's request body on `id`, never more than [`MAX_QUEUED`] ahead of what
/// the upstream's flow control takes. A client body that fails resets the stream and is the
/// error; a stream that ends first (the upstream answered) stops it quietly.
fn send_body(conn: &Rc<UpstreamConn>, id: StreamId, mut body: Body) -> Sender {
    let conn = Rc::clone(conn);
    Box::pin(async move {
        loop {
            let room = poll_fn(|cx| {
                if conn.closed.get() {
                    return Poll::Ready(false);
                }
                let Some(buffered) = conn.codec.borrow().stream_buffered(id) else {
                    return Poll::Ready(false);
                };
                if buffered < MAX_QUEUED {
                    return Poll::Ready(true);
                }
                match conn.with_slot(id, |slot| rt::store_waker(&mut slot.sender, cx)) {
                    Some(()) => Poll::Pending,
                    None => Poll::Ready(false),
                }
            })
            .await;
            if !room {
                return Ok(());
            }
            let chunk = body.chunk().await;
            let sent = match chunk {
                Some(Ok(data)) => conn.codec.borrow_mut().send_data(id, data, false).is_ok(),
                None => {
                    let _ = conn.codec.borrow_mut().send_data(id, Bytes::new(), true);
                    false
                }
                Some(Err(e)) => {
                    debug!(error = %e, "client request body failed; resetting the upstream stream");
                    conn.codec.borrow_mut().reset_stream(id, Reason::CANCEL);
                    conn.wake_driver();
                    return Err(ProxyError::ClientBody(e));
                }
            };
            conn.wake_driver();
            if !sent {
                return Ok(());
            }
        }
    })
}

/// An HTTP/2 upstream's response body: the stream's DATA as the client takes it, then its
/// trailers.
pub(crate) struct ResponseBody {
    conn: Rc<UpstreamConn>,
    id: StreamId,
    len: Option<u64>,
    /// The head had END_STREAM: there is no body.
    ended_at_head: bool,
    done: bool,
    trailers: Option<HeaderMap>,
    /// The request body, while it is still being sent.
    sender: Option<Sender>,
    /// The longest wait for the upstream's next bytes (`idle_timeout`).
    idle: Duration,
    last_read: Instant,
    timer: Timer,
    /// Counts the request on its server until the response ends.
    _in_flight: InFlight,
}

impl ResponseBody {
    /// The upstream's `content-length`; for a head that ended the stream, that or zero (a
    /// response to HEAD keeps the length a GET would have had).
    pub(crate) fn exact_len(&self) -> Option<u64> {
        match self.ended_at_head {
            true => self.len.or(Some(0)),
            false => self.len,
        }
    }

    pub(crate) fn take_trailers(&mut self) -> Option<HeaderMap> {
        self.trailers.take()
    }

    pub(crate) fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<BodyChunk>> {
        let id = self.id;
        if let Some(Poll::Ready(sent)) = self.sender.as_mut().map(|s| s.as_mut().poll(cx)) {
            self.sender = None;
            if let Err(ProxyError::ClientBody(e)) = sent {
                self.done = true;
                self.conn.finish(id, false);
                return Poll::Ready(Some(Err(e)));
            }
        }
        let polled = self.conn.with_slot(id, |slot| {
            if let Some(data) = slot.data.pop_front() {
                return Poll::Ready(Some(Ok(data)));
            }
            if slot.ended {
                return Poll::Ready(None);
            }
            if let Some(reason) = slot.failed {
                let e = std::io::Error::other(format!("upstream stream reset: {reason:?}"));
                return Poll::Ready(Some(Err(BodyError::Io(e))));
            }
            rt::store_waker(&mut slot.reader, cx);
            Poll::Pending
        });
        match polled {
            Some(Poll::Ready(Some(Ok(data)))) => {
                self.last_read = rt::now();
                self.conn.codec.borrow_mut().release_capacity(id, data.len());
                self.conn.wake_driver();
                Poll::Ready(Some(Ok(data)))
            }
            Some(Poll::Ready(None)) => {
                self.trailers = self.conn.with_slot(id, |s| s.trailers.take()).flatten();
                self.done = true;
                self.sender = None;
                self.conn.finish(id, true);
                Poll::Ready(None)
            }
            Some(Poll::Pending) => self.poll_idle(cx),
            Some(failed) => {
                self.done = true;
                self.conn.finish(id, false);
                failed
            }
            None if self.done => Poll::Ready(None),
            None => Poll::Ready(Some(Err(BodyError::Closed))),
        }
    }

    /// Nothing to read: fails the body once the upstream has been silent for `idle`.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<Option<BodyChunk>> {
        loop {
            let due = self.last_read + self.idle;
            if rt::now() >= due {
                debug!(stream = self.id.value(), "h2 upstream silent past idle_timeout");
                self.done = true;
                self.conn.finish(self.id, false);
                self.conn.check_alive();
                let e = std::io::Error::from(std::io::ErrorKind::TimedOut);
                return Poll::Ready(Some(Err(BodyError::Io(e))));
            }
            self.timer.set(Some(due));
            if self.timer.poll_fired(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A client that left before the end: the stream is reset, the connection goes on.
        if !self.done {
            self.conn.finish(self.id, false);
        }
    }
}
