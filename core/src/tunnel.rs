//! Tunnels: after a `101 Switching Protocols` (a proxied WebSocket), the client's connection
//! stops being HTTP and its bytes are copied to and from the upstream socket, both ways at
//! once, until the upstream closes, a side fails, or nothing moves for the idle timeout.
//!
//! The client finishing its side (EOF) is passed on as a half-close of the upstream socket;
//! the upstream finishing ends the tunnel once what it sent has reached the client.
//!
//! On HTTP/2 the client's end is a stream (an extended CONNECT, RFC 8441) rather than the
//! connection: [`stream_body`] makes the upstream's bytes the stream's response body and
//! copies the request body to the upstream, with the same half-close, end and idle rules.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_core::Stream;

use crate::rt::{self, timer::Timer};
use crate::sys::driver::SendBuf;
use crate::sys::{self, OwnedSocket};
use crate::transport::Transport;
use crate::{Body, BodyChunk, BodyError};

/// The upstream end of a tunnel, handed from the proxy to the client's protocol loop as a
/// response body (`Body::tunnel`).
pub(crate) struct Tunnel {
    fd: Option<OwnedSocket>,
    /// The upstream's byte stream over `fd` (cleartext or TLS).
    upstream: Rc<Transport>,
    /// Bytes the upstream sent right after its `101` head.
    buffered: BytesMut,
    idle: Duration,
}

impl Tunnel {
    /// A tunnel to `fd` (spoken through `upstream`), which already sent `buffered`.
    pub(crate) fn new(
        fd: OwnedSocket,
        upstream: Rc<Transport>,
        buffered: BytesMut,
        idle: Duration,
    ) -> Tunnel {
        Tunnel { fd: Some(fd), upstream, buffered, idle }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            rt::io::close_detached(fd);
        }
    }
}

/// Copies from `from` to `to`, starting with `pending`, until `from` ends (`Some`) or
/// either side fails (`None`), counting the bytes in `moved` and stamping `activity`.
async fn copy(
    from: &Transport,
    to: &Transport,
    mut pending: BytesMut,
    moved: &Cell<u64>,
    activity: &Cell<Instant>,
) -> Option<()> {
    loop {
        if !pending.is_empty() {
            moved.set(moved.get() + pending.len() as u64);
            let mut out = SendBuf::new();
            out.push(pending.split().freeze());
            to.send_all(out).await.ok()?;
            activity.set(rt::now());
        }
        let (buf, result) = from.recv(BytesMut::new()).await;
        match result {
            Ok(0) => return Some(()),
            Ok(_) => {
                pending = buf;
                activity.set(rt::now());
            }
            Err(_) => return None,
        }
    }
}

/// Copies bytes both ways between `client` (whose `from_client` bytes arrived after the
/// upgrade request) and the tunnel's upstream, until it ends. Returns the bytes moved
/// (client to upstream, upstream to client).
pub(crate) async fn run(
    client: &Transport,
    from_client: BytesMut,
    mut tunnel: Tunnel,
) -> (u64, u64) {
    let fd = tunnel.fd.take().expect("a tunnel is run once");
    let buffered = std::mem::take(&mut tunnel.buffered);
    let idle = tunnel.idle;
    let upstream = Rc::clone(&tunnel.upstream);
    let last_activity = Cell::new(rt::now());
    let moved = (Cell::new(0u64), Cell::new(0u64));
    {
        let upstream_to_client = copy(&upstream, client, buffered, &moved.1, &last_activity);
        let client_to_upstream = async {
            copy(client, &upstream, from_client, &moved.0, &last_activity).await?;
            // The client is done sending; the upstream may still answer.
            if upstream.is_tls() {
                upstream.close_notify().await;
            } else {
                let _ = sys::driver::shutdown_write(&fd);
            }
            Some(())
        };
        let mut down = pin!(upstream_to_client);
        let mut upward = pin!(client_to_upstream);
        let mut upward_done = false;
        let timer = Timer::new();
        timer.set(Some(last_activity.get() + idle));
        poll_fn(|cx| {
            if down.as_mut().poll(cx).is_ready() {
                return Poll::Ready(()); // the upstream finished (or failed): the tunnel ends
            }
            if !upward_done {
                match upward.as_mut().poll(cx) {
                    Poll::Ready(Some(())) => upward_done = true,
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
            }
            loop {
                if timer.poll_fired(cx).is_pending() {
                    return Poll::Pending;
                }
                let due: Instant = last_activity.get() + idle;
                if rt::now() >= due {
                    return Poll::Ready(()); // idle for the whole timeout
                }
                timer.set(Some(due));
            }
        })
        .await;
    }
    rt::io::close(fd).await;
    (moved.0.get(), moved.1.get())
}

/// An upstream socket closed when its last holder lets go (the stream end and, while it
/// runs, nobody else: the copy towards the upstream holds it weakly).
struct UpstreamSocket(Option<OwnedSocket>);

impl Drop for UpstreamSocket {
    fn drop(&mut self) {
        if let Some(fd) = self.0.take() {
            rt::io::close_detached(fd);
        }
    }
}

/// The tunnel `tunnel` as an HTTP/2 stream's response body, with the stream's request body
/// `from_client` copied to the upstream while the body is polled (the copy is part of the
/// body, so it can never outlive it or send on a closed socket). The body ends when the
/// upstream finishes, fails (the stream is then reset), or nothing moves either way for the
/// idle timeout; dropping it (the client reset the stream) stops the copy, then closes the
/// upstream socket.
pub(crate) fn stream_body(mut tunnel: Tunnel, from_client: Body) -> Body {
    let socket = Rc::new(UpstreamSocket(tunnel.fd.take()));
    let upstream = Rc::clone(&tunnel.upstream);
    let activity = Rc::new(Cell::new(rt::now()));
    let upward = Box::pin(to_upstream(
        from_client,
        Rc::clone(&upstream),
        Rc::downgrade(&socket),
        Rc::clone(&activity),
    ));
    let timer = Timer::new();
    timer.set(Some(activity.get() + tunnel.idle));
    let end = StreamEnd {
        upward: Some(upward),
        _socket: socket,
        upstream,
        pending: std::mem::take(&mut tunnel.buffered),
        reading: None,
        activity,
        idle: tunnel.idle,
        timer,
        done: false,
    };
    Body::from_stream(end, None)
}

/// Copies the client's request body to the upstream; its end half-closes the upstream
/// socket (the upstream may still answer).
async fn to_upstream(
    mut from_client: Body,
    upstream: Rc<Transport>,
    socket: Weak<UpstreamSocket>,
    activity: Rc<Cell<Instant>>,
) {
    loop {
        match from_client.chunk().await {
            Some(Ok(chunk)) => {
                activity.set(rt::now());
                let mut out = SendBuf::new();
                out.push(chunk);
                if upstream.send_all(out).await.is_err() {
                    return;
                }
                activity.set(rt::now());
            }
            Some(Err(_)) => return,
            None => break,
        }
    }
    if upstream.is_tls() {
        upstream.close_notify().await;
    } else if let Some(socket) = socket.upgrade() {
        if let Some(fd) = &socket.0 {
            let _ = sys::driver::shutdown_write(fd);
        }
    }
}

/// A receive on the upstream: the buffer back, and how many bytes came (0 at its end).
type Receiving = Pin<Box<dyn Future<Output = (BytesMut, std::io::Result<usize>)>>>;

/// What the upstream sends, as a stream of body chunks (see [`stream_body`]).
struct StreamEnd {
    /// The copy of the client's side to the upstream, until it ends. Declared before the
    /// socket, so it is dropped first.
    upward: Option<Pin<Box<dyn Future<Output = ()>>>>,
    /// Keeps the upstream socket open while the body lives.
    _socket: Rc<UpstreamSocket>,
    upstream: Rc<Transport>,
    /// Bytes the upstream sent right after its `101` head.
    pending: BytesMut,
    reading: Option<Receiving>,
    activity: Rc<Cell<Instant>>,
    idle: Duration,
    timer: Timer,
    done: bool,
}

impl Stream for StreamEnd {
    type Item = BodyChunk;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BodyChunk>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(Poll::Ready(())) = this.upward.as_mut().map(|u| u.as_mut().poll(cx)) {
            this.upward = None;
        }
        if !this.pending.is_empty() {
            this.activity.set(rt::now());
            return Poll::Ready(Some(Ok(this.pending.split().freeze())));
        }
        let upstream = Rc::clone(&this.upstream);
        let reading = this
            .reading
            .get_or_insert_with(|| Box::pin(async move { upstream.recv(BytesMut::new()).await }));
        if let Poll::Ready((buf, result)) = reading.as_mut().poll(cx) {
            this.reading = None;
            return Poll::Ready(match result {
                Ok(0) => {
                    this.done = true;
                    None
                }
                Ok(_) => {
                    this.activity.set(rt::now());
                    Some(Ok(buf.freeze()))
                }
                Err(e) => {
                    this.done = true;
                    Some(Err(BodyError::Io(e)))
                }
            });
        }
        loop {
            if this.timer.poll_fired(cx).is_pending() {
                return Poll::Pending;
            }
            let due = this.activity.get() + this.idle;
            if rt::now() >= due {
                // Idle for the whole timeout: the stream ends, as the HTTP/1 tunnel does.
                this.done = true;
                return Poll::Ready(None);
            }
            this.timer.set(Some(due));
        }
    }
}
