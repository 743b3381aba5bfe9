//! One request forwarded to an upstream over HTTP/1.1: the request head (and a body already
//! in memory) in one send, a streamed request body sent alongside the response (an upstream
//! may answer, or echo, before the body ends), the response head parsed strictly, and the
//! response body streamed back with back-pressure: the upstream is read only as fast as the
//! client takes the bytes.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use http::Method;
use peregrine_protocols::h1::{
    encode_chunk_header, parse_response_with, BodyDecoder, BodyEvent, ResponseBody, ResponseHead,
    CHUNK_END, LAST_CHUNK,
};

use super::pool::Conn;
use super::{ProxyError, Shared, Upstream};
use crate::rt::{self, timer::Timer};
use crate::sys::driver::SendBuf;
use crate::transport::Transport;
use crate::{Body, BodyChunk, BodyError};

/// The request body still to send, running beside the response.
pub(super) type Sender = Pin<Box<dyn Future<Output = Result<(), ProxyError>>>>;

/// Sends `buf` whole to the upstream, failing once a send waits longer than `idle`.
pub(super) async fn send_within(
    conn: &Conn,
    buf: SendBuf,
    idle: Duration,
) -> Result<(), ProxyError> {
    send_idle(&conn.transport, buf, idle).await.map(rt::io::give_send_buf)
}

async fn send_idle(
    transport: &Transport,
    buf: SendBuf,
    idle: Duration,
) -> Result<SendBuf, ProxyError> {
    match rt::timer::timeout(rt::now() + idle, transport.send_all(buf)).await {
        Some(Ok(buf)) => Ok(buf),
        Some(Err(e)) => Err(ProxyError::Send(e)),
        None => Err(ProxyError::Timeout),
    }
}

/// Streams a request body to the upstream, chunked when its length is unknown.
pub(super) fn send_body(conn: &Conn, mut body: Body, chunked: bool, idle: Duration) -> Sender {
    let transport = Rc::clone(&conn.transport);
    Box::pin(async move {
        let mut out = SendBuf::new();
        while let Some(chunk) = body.chunk().await {
            let chunk = chunk.map_err(ProxyError::ClientBody)?;
            if chunk.is_empty() {
                continue;
            }
            if chunked {
                let mut size = BytesMut::with_capacity(18);
                encode_chunk_header(chunk.len(), &mut size);
                out.push(size.freeze());
                out.push(chunk);
                out.push(Bytes::from_static(CHUNK_END));
            } else {
                out.push(chunk);
            }
            out = send_idle(&transport, out, idle).await?;
        }
        if chunked {
            out.push(Bytes::from_static(LAST_CHUNK));
            send_idle(&transport, out, idle).await?;
        }
        Ok(())
    })
}

/// One receive from an upstream, owning what it needs (a response body stream holds it
/// beside the connection): the driver's receive itself for cleartext, the transport's TLS
/// loop, boxed, for `https://`.
pub(super) enum UpstreamRecv {
    Plain(rt::io::Recv),
    Tls(Pin<Box<dyn Future<Output = (BytesMut, io::Result<usize>)>>>),
}

impl UpstreamRecv {
    fn start(conn: &Conn, buf: BytesMut) -> UpstreamRecv {
        if conn.transport.is_tls() {
            let transport = Rc::clone(&conn.transport);
            UpstreamRecv::Tls(Box::pin(async move { transport.recv(buf).await }))
        } else {
            UpstreamRecv::Plain(rt::io::recv(conn.raw(), buf))
        }
    }
}

impl Future for UpstreamRecv {
    type Output = (BytesMut, io::Result<usize>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            UpstreamRecv::Plain(recv) => Pin::new(recv).poll(cx),
            UpstreamRecv::Tls(recv) => recv.as_mut().poll(cx),
        }
    }
}

/// Polls the request body's sender, if one runs: `Err` only for the client's own body
/// failing; an upstream that stopped reading just ends the sender (its answer may still
/// come) and makes the connection unfit for reuse.
fn poll_sender(
    sender: &mut Option<Sender>,
    unfit: &mut bool,
    cx: &mut Context<'_>,
) -> Result<(), ProxyError> {
    if let Some(s) = sender {
        match s.as_mut().poll(cx) {
            Poll::Pending => {}
            Poll::Ready(Ok(())) => *sender = None,
            Poll::Ready(Err(e @ ProxyError::ClientBody(_))) => {
                *sender = None;
                *unfit = true;
                return Err(e);
            }
            Poll::Ready(Err(_)) => {
                *sender = None;
                *unfit = true;
            }
        }
    }
    Ok(())
}

/// Reads the final response head (skipping interim 1xx ones), driving `sender` meanwhile.
pub(super) async fn read_head(
    conn: &mut Conn,
    method: &Method,
    shared: &Shared,
    sender: &mut Option<Sender>,
    unfit: &mut bool,
    upgrading: bool,
) -> Result<ResponseHead, ProxyError> {
    let limits = &shared.config.response_limits;
    loop {
        while let Some(head) =
            parse_response_with(&mut conn.buf, method, limits, &mut shared.names.borrow_mut())?
        {
            let switching = upgrading && head.status == http::StatusCode::SWITCHING_PROTOCOLS;
            if head.status.is_informational() && !switching {
                continue; // 100 Continue, 103 Early Hints: not forwarded (yet)
            }
            return Ok(head);
        }
        let mut recv = conn.transport.recv(std::mem::take(&mut conn.buf));
        let (buf, result) = poll_fn(|cx| {
            poll_sender(sender, unfit, cx)?;
            Pin::new(&mut recv).poll(cx).map(Ok::<_, ProxyError>)
        })
        .await?;
        conn.buf = buf;
        match result {
            Ok(0) => return Err(ProxyError::Closed),
            Ok(_) => {}
            Err(e) => return Err(ProxyError::Recv(e)),
        }
    }
}

/// A response body read from the upstream as the client takes it. At its clean end the
/// connection goes back to the pool; dropped early (the client went away), it is closed.
pub(super) struct ResponseStream {
    shared: Rc<Shared>,
    server: usize,
    conn: Option<Conn>,
    decoder: BodyDecoder,
    until_close: bool,
    keep_alive: bool,
    sender: Option<Sender>,
    unfit: bool,
    recv: Option<UpstreamRecv>,
    eof: bool,
    idle: Timer,
    idle_timeout: Duration,
    /// Counts the request on its server (least requests) while the body streams.
    _in_flight: super::InFlight,
}

impl ResponseStream {
    /// The body of `head`, read from the upstream connection.
    pub(super) fn new(up: Upstream<'_>, head: &ResponseHead) -> ResponseStream {
        ResponseStream {
            decoder: head.body.decoder(&up.shared.config.response_limits),
            shared: Rc::clone(up.shared),
            server: up.server,
            conn: Some(up.conn),
            until_close: head.body == ResponseBody::UntilClose,
            keep_alive: head.keep_alive,
            sender: up.sender,
            unfit: up.unfit,
            recv: None,
            eof: false,
            idle: Timer::new(),
            idle_timeout: up.idle_timeout,
            _in_flight: up.in_flight,
        }
    }

    /// The body ended cleanly: keep the connection if both messages are complete.
    fn finish(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let whole = self.sender.is_none() && !self.unfit;
        self.shared.release(self.server, conn, self.keep_alive && !self.until_close, whole);
        self.sender = None;
    }

    fn fail(&mut self, why: BodyError) -> Poll<Option<BodyChunk>> {
        self.conn = None;
        self.sender = None;
        Poll::Ready(Some(Err(why)))
    }
}

fn upstream_error(why: &str) -> BodyError {
    BodyError::Io(io::Error::other(why.to_string()))
}

impl Stream for ResponseStream {
    type Item = BodyChunk;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BodyChunk>> {
        let this = &mut *self;
        // The request body goes on while the response comes back (an echo needs both).
        if poll_sender(&mut this.sender, &mut this.unfit, cx).is_err() {
            return this.fail(upstream_error("the client's request body failed"));
        }
        loop {
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
            if let Some(recv) = &mut this.recv {
                let (buf, result) = match Pin::new(recv).poll(cx) {
                    Poll::Ready(r) => r,
                    Poll::Pending => {
                        if this.idle.poll_fired(cx).is_ready() {
                            return this.fail(upstream_error("upstream read timed out"));
                        }
                        return Poll::Pending;
                    }
                };
                this.recv = None;
                this.idle.set(None);
                conn.buf = buf;
                match result {
                    Ok(0) => this.eof = true,
                    Ok(_) => {}
                    Err(e) => return this.fail(BodyError::Io(e)),
                }
            }
            match this.decoder.decode(&mut conn.buf) {
                Ok(BodyEvent::Data(bytes)) => {
                    if this.decoder.is_done() {
                        // The last bytes: the connection is free before the client has them.
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(bytes)));
                }
                Ok(BodyEvent::Done) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(BodyEvent::NeedMore) if this.eof && this.until_close => {
                    this.conn = None;
                    this.sender = None;
                    return Poll::Ready(None);
                }
                Ok(BodyEvent::NeedMore) if this.eof => {
                    return this.fail(upstream_error("upstream closed before the body ended"));
                }
                Ok(BodyEvent::NeedMore) => {
                    this.idle.set(Some(deadline(this.idle_timeout)));
                    let buf = std::mem::take(&mut conn.buf);
                    this.recv = Some(UpstreamRecv::start(conn, buf));
                }
                Err(_) => return this.fail(upstream_error("upstream sent a malformed body")),
            }
        }
    }
}

fn deadline(after: Duration) -> Instant {
    rt::now() + after
}

/// A request body cut off past `max` bytes (a route's `max_request_body_size`, for bodies
/// whose length is not known up front): the excess is an error, answered `413`.
pub(super) fn capped(mut body: Body, max: u64) -> Body {
    let mut seen: u64 = 0;
    let stream = futures_core_stream(move |cx| match body.poll_chunk(cx) {
        Poll::Ready(Some(Ok(chunk))) => {
            seen += chunk.len() as u64;
            if seen > max {
                Poll::Ready(Some(Err(BodyError::TooLarge { limit: max })))
            } else {
                Poll::Ready(Some(Ok(chunk)))
            }
        }
        other => other,
    });
    Body::from_stream(stream, None)
}

/// A stream from a poll function.
fn futures_core_stream<F>(f: F) -> PollStream<F>
where
    F: FnMut(&mut Context<'_>) -> Poll<Option<BodyChunk>>,
{
    PollStream(f)
}

struct PollStream<F>(F);

impl<F> Stream for PollStream<F>
where
    F: FnMut(&mut Context<'_>) -> Poll<Option<BodyChunk>> + Unpin,
{
    type Item = BodyChunk;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BodyChunk>> {
        (self.0)(cx)
    }
}
