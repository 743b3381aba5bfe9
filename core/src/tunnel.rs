//! Tunnels: after a `101 Switching Protocols` (a proxied WebSocket), the client's connection
//! stops being HTTP and its bytes are copied to and from the upstream socket, both ways at
//! once, until the upstream closes, a side fails, or nothing moves for the idle timeout.
//!
//! The client finishing its side (EOF) is passed on as a half-close of the upstream socket;
//! the upstream finishing ends the tunnel once what it sent has reached the client.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::rt::{self, timer::Timer};
use crate::sys::driver::SendBuf;
use crate::sys::{self, OwnedSocket};
use crate::transport::Transport;

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
