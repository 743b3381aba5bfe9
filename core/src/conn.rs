//! Where a new connection is dispatched: TLS handshake (with ALPN) or h2c sniffing, then the
//! HTTP/1 or HTTP/2 loop.
//!
//! ```text
//!   accept ─► TLS listener? ─yes─► handshake (tls_handshake_timeout, per-core cap) ─► ALPN
//!                └─no──► sniff the HTTP/2 preface (when the listener serves h2 and HTTP/1)
//!                                      ─► Protocol::Http1 ─► h1::serve
//!                                      └► Protocol::Http2 ─► serve_h2
//! ```

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use peregrine_limits::ConnectionPermit;
use tracing::debug;

use crate::h1;
use crate::listener::Protocols;
use crate::metrics::TlsFailure;
use crate::rt;
use crate::rt::timer::Timer;
use crate::sys::{self, OwnedSocket};
use crate::tls::{accept, TlsListener};
use crate::transport::Transport;
use crate::Handler;

/// The HTTP/2 connection preface a client sends first (RFC 9113 §3.4).
pub(crate) const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a connection speaks, decided by ALPN, by sniffing, or by the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// HTTP/1.1 (or 1.0).
    Http1,
    /// HTTP/2.
    Http2,
}

/// One listener as a core's connections see it.
pub(crate) struct Endpoint {
    pub(crate) protocols: Protocols,
    pub(crate) tls: Option<Arc<TlsListener>>,
}

thread_local! {
    /// TLS handshakes running on this core (capped by
    /// `limits.max_concurrent_tls_handshakes_per_core`).
    static HANDSHAKES: Cell<usize> = const { Cell::new(0) };
}

/// Counts one running handshake until dropped.
struct HandshakeSlot;

impl HandshakeSlot {
    fn try_take(max: usize) -> Option<HandshakeSlot> {
        HANDSHAKES.with(|h| (h.get() < max).then(|| h.set(h.get() + 1)).map(|()| HandshakeSlot))
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        HANDSHAKES.with(|h| h.set(h.get() - 1));
    }
}

/// Serves one accepted connection until it closes.
pub(crate) async fn serve<H: Handler>(
    fd: OwnedSocket,
    endpoint: Rc<Endpoint>,
    handler: Rc<H>,
    settings: Rc<h1::Settings>,
    permit: ConnectionPermit,
    peer: Option<SocketAddr>,
) {
    let limits = &settings.limits;
    let (transport, protocol, initial) = match &endpoint.tls {
        Some(tls) => {
            let Some(slot) = HandshakeSlot::try_take(limits.max_concurrent_tls_handshakes_per_core)
            else {
                debug!("max_concurrent_tls_handshakes_per_core reached; closing");
                crate::metrics::count(|m| m.tls_failed(TlsFailure::OverCap));
                rt::io::close(fd).await;
                return;
            };
            let deadline = rt::now() + limits.tls_handshake_timeout;
            let result = idle_until(deadline, accept::handshake(sys::raw(&fd), tls)).await;
            drop(slot);
            match result {
                Some(Ok((transport, protocol))) => {
                    crate::metrics::count(|m| m.tls_handshake_done());
                    (transport, protocol, BytesMut::new())
                }
                Some(Err(e)) => {
                    debug!(error = %e, "TLS handshake failed");
                    crate::metrics::count(|m| m.tls_failed(TlsFailure::Error));
                    rt::io::close(fd).await;
                    return;
                }
                None if rt::shutting_down() => {
                    debug!("graceful shutdown: closing a connection still in its TLS handshake");
                    rt::io::close(fd).await;
                    return;
                }
                None => {
                    debug!("TLS handshake not done within tls_handshake_timeout");
                    crate::metrics::count(|m| m.tls_failed(TlsFailure::Timeout));
                    rt::io::close(fd).await;
                    return;
                }
            }
        }
        None => {
            let transport = Transport::plain(sys::raw(&fd));
            match endpoint.protocols {
                Protocols { http1: true, h2: true } => {
                    let deadline = rt::now() + limits.request_headers_timeout;
                    match idle_until(deadline, sniff(&transport)).await {
                        Some(Ok((protocol, initial))) => (transport, protocol, initial),
                        // Silent, closed or failed before a byte: nothing to answer.
                        _ => {
                            rt::io::close(fd).await;
                            return;
                        }
                    }
                }
                Protocols { h2: true, .. } => (transport, Protocol::Http2, BytesMut::new()),
                _ => (transport, Protocol::Http1, BytesMut::new()),
            }
        }
    };
    crate::metrics::count(|m| m.protocol(protocol));
    match protocol {
        Protocol::Http1 => h1::serve(fd, transport, initial, handler, settings, permit, peer).await,
        Protocol::Http2 => serve_h2(fd, transport, initial, handler, settings, permit, peer).await,
    }
}

/// Runs `op` until `deadline` as an idle wait: a graceful shutdown ends it at once (`None`),
/// as it ends an idle keep-alive wait. A connection still in its handshake or still to send
/// its first bytes has no request in flight to finish.
async fn idle_until<F: std::future::Future>(deadline: Instant, op: F) -> Option<F::Output> {
    if rt::shutting_down() {
        return None;
    }
    let timer = Timer::new();
    timer.set_idle(true);
    timer.run_until(op, Some(deadline)).await
}

/// Reads until the first bytes tell HTTP/2 prior knowledge (the full 24-byte preface) from
/// anything else (HTTP/1), never waiting for more once a byte differs from the preface.
/// Returns the protocol and the bytes read, which the chosen loop parses first.
async fn sniff(transport: &Transport) -> std::io::Result<(Protocol, BytesMut)> {
    let mut buf = BytesMut::new();
    loop {
        let n = buf.len().min(H2_PREFACE.len());
        if buf[..n] != H2_PREFACE[..n] {
            return Ok((Protocol::Http1, buf));
        }
        if n == H2_PREFACE.len() {
            return Ok((Protocol::Http2, buf));
        }
        let (back, result) = transport.recv(buf).await;
        buf = back;
        if result? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// The HTTP/2 connection loop's entry point: the socket, its transport, the bytes already
/// read (for h2c, at least the preface), and the per-core handler and settings.
pub(crate) async fn serve_h2<H: Handler>(
    fd: OwnedSocket,
    transport: Transport,
    initial: BytesMut,
    handler: Rc<H>,
    settings: Rc<h1::Settings>,
    permit: ConnectionPermit,
    peer: Option<SocketAddr>,
) {
    crate::h2::serve(fd, transport, initial, handler, settings, permit, peer).await
}
