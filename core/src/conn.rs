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
use peregrine_limits::{AccessList, ClientPermit, ConnectionPermit, Limit};
use tracing::debug;

use crate::clients::ClientPolicy;
use crate::exchange::ClientCertificates;
use crate::h1;
use crate::listener::Protocols;
use crate::metrics::{Rejection, TlsFailure};
use crate::percore;
use crate::rt;
use crate::rt::executor;
use crate::rt::timer::Timer;
use crate::sys::{self, OwnedSocket};
use crate::tls::{accept, TlsListener};
use crate::transport::Transport;
use crate::trust::Trusted;
use crate::{ConnectionInfo, Handler};
use peregrine_protocols::proxy_protocol::{self, ProxyHeader, ProxyHeaderError};

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
    /// Peers whose connections start with a PROXY protocol header.
    pub(crate) proxy_protocol: Option<Trusted>,
    /// Which client addresses may connect.
    pub(crate) access: AccessList,
    /// The per-client tables of this listener (its own, or the server's).
    pub(crate) clients: Arc<ClientPolicy>,
}

impl Endpoint {
    /// `spec`'s settings, with its TLS state and per-client tables.
    pub(crate) fn new(
        spec: &crate::ListenerSpec,
        tls: Option<Arc<TlsListener>>,
        clients: Arc<ClientPolicy>,
    ) -> Endpoint {
        Endpoint {
            protocols: spec.protocols,
            tls,
            proxy_protocol: (!spec.proxy_protocol_from.is_empty())
                .then(|| Trusted::new(spec.proxy_protocol_from.clone())),
            access: AccessList::new(spec.allow.clone(), spec.deny.clone()),
            clients,
        }
    }

    /// Whether connections here need the client's address whatever the handler: a PROXY
    /// protocol trust list, an allow/deny list or per-client tables.
    pub(crate) fn wants_peer(&self) -> bool {
        self.proxy_protocol.is_some() || !self.access.is_open() || self.clients.is_active()
    }
}

/// Counts one running TLS handshake (capped by
/// `limits.max_concurrent_tls_handshakes_per_core`) until dropped.
struct HandshakeSlot;

impl HandshakeSlot {
    fn try_take(max: usize) -> Option<HandshakeSlot> {
        percore::with(|p| {
            let h = &p.tls_handshakes;
            (h.get() < max).then(|| h.set(h.get() + 1)).map(|()| HandshakeSlot)
        })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        percore::try_with(|p| p.tls_handshakes.set(p.tls_handshakes.get() - 1));
    }
}

/// One accepted connection's claim on its core: the `max_connections` permit, and its place
/// in the core's live count and metrics. Given back when the connection's task ends or is
/// dropped at teardown, so the task needs no wrapper future to do the accounting (a wrapper
/// that awaits the connection future would hold it twice: rust-lang/rust#62958).
pub(crate) struct Admitted {
    _permit: ConnectionPermit,
    /// The per-client tables of the connection's listener.
    clients: Arc<ClientPolicy>,
    /// The connection's place in its client's `max_connections_per_ip`, when capped.
    client: Option<ClientPermit>,
    live: Rc<Cell<usize>>,
}

impl Admitted {
    /// Counts a connection in: `live` is the core's count of open connections.
    pub(crate) fn new(
        permit: ConnectionPermit,
        live: &Rc<Cell<usize>>,
        endpoint: &Endpoint,
    ) -> Admitted {
        crate::metrics::count(|m| m.accepted());
        live.set(live.get() + 1);
        let clients = Arc::clone(&endpoint.clients);
        Admitted { _permit: permit, clients, client: None, live: Rc::clone(live) }
    }

    /// The per-client tables of the connection's listener (its request rate).
    pub(crate) fn clients(&self) -> &Arc<ClientPolicy> {
        &self.clients
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        crate::metrics::count(|m| m.closed());
        self.live.set(self.live.get() - 1);
    }
}

/// What a connection's long-lived state keeps of its [`ConnectionInfo`] and client
/// certificates: boxed when there is any address or certificate, so a connection whose
/// handler reads no address (and that logs none) holds one word instead of two socket
/// addresses.
pub(crate) enum ConnectionDetails {
    /// Nothing but whether the connection is TLS.
    Bare { tls: bool },
    /// Some address or a client certificate is known.
    Known(Box<(ConnectionInfo, Option<ClientCertificates>)>),
}

impl ConnectionDetails {
    pub(crate) fn of(info: ConnectionInfo, certs: Option<ClientCertificates>) -> ConnectionDetails {
        if certs.is_none()
            && info == (ConnectionInfo { tls: info.tls, ..ConnectionInfo::default() })
        {
            ConnectionDetails::Bare { tls: info.tls }
        } else {
            ConnectionDetails::Known(Box::new((info, certs)))
        }
    }

    pub(crate) fn info(&self) -> ConnectionInfo {
        match self {
            ConnectionDetails::Bare { tls } => {
                ConnectionInfo { tls: *tls, ..ConnectionInfo::default() }
            }
            ConnectionDetails::Known(known) => known.0,
        }
    }

    /// The verified chain of a mutual-TLS client.
    pub(crate) fn client_certificates(&self) -> Option<&ClientCertificates> {
        match self {
            ConnectionDetails::Bare { .. } => None,
            ConnectionDetails::Known(known) => known.1.as_ref(),
        }
    }
}

/// Serves one accepted connection until it closes.
pub(crate) async fn serve<H: Handler>(
    fd: OwnedSocket,
    endpoint: Rc<Endpoint>,
    handler: Rc<H>,
    settings: Rc<h1::Settings>,
    mut admitted: Admitted,
    mut peer: Option<SocketAddr>,
) {
    let limits = &settings.limits;
    // From a trusted balancer, the PROXY protocol header comes first and says who the
    // client is; from anyone else it is never parsed (it would let a client pick its
    // address), so such bytes fail as the HTTP or TLS they are not.
    let mut initial = BytesMut::new();
    // Another syscall, only for a handler that reads ConnectionInfo.
    let mut local = handler
        .wants_connection_info()
        .then(|| socket2::SockRef::from(&fd).local_addr().ok()?.as_socket())
        .flatten();
    let trusted = endpoint.proxy_protocol.as_ref();
    if trusted.is_some_and(|t| peer.is_some_and(|p| t.contains(p.ip()))) {
        let deadline = rt::now() + limits.request_headers_timeout;
        match before_request(deadline, read_proxy_header(sys::raw(&fd))).await {
            Some(Ok((header, rest))) => {
                if let ProxyHeader::Proxied { source, destination } = header {
                    peer = Some(source);
                    local = Some(destination);
                }
                initial = rest;
            }
            Some(Err(e)) => {
                debug!(error = %e, "closing: no valid PROXY protocol header from a trusted peer");
                crate::metrics::count(|m| m.rejected(Rejection::ProtocolError));
                rt::io::close(fd).await;
                return;
            }
            None => {
                rt::io::close(fd).await;
                return;
            }
        }
    }
    // The client is known now (the socket's peer, or the one a PROXY header named): the
    // listener's allow/deny list and the per-client cap apply before any TLS or HTTP.
    if let Some(ip) = peer.map(|p| p.ip()) {
        if !endpoint.access.permits(ip) {
            debug!(%ip, "closing: address denied");
            crate::metrics::count(|m| m.rejected(Rejection::Denied));
            rt::io::close(fd).await;
            return;
        }
        match endpoint.clients.admit_connection(ip) {
            Ok(permit) => admitted.client = permit,
            Err(()) => {
                debug!(%ip, "closing: max_connections_per_ip reached");
                crate::metrics::count(|m| m.rejected(Rejection::Limit(Limit::MaxConnectionsPerIp)));
                rt::io::close(fd).await;
                return;
            }
        }
    }
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
            // Boxed: the handshake's state (rustls' acceptor, a few KiB) lives only as long as
            // the handshake, not in the connection's task for its whole life.
            let handshake = Box::pin(accept::handshake(sys::raw(&fd), tls, initial));
            let result = before_request(deadline, handshake).await;
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
                    match before_request(deadline, sniff(&transport, initial)).await {
                        Some(Ok((protocol, initial))) => (transport, protocol, initial),
                        // Silent, closed or failed before a byte: nothing to answer.
                        _ => {
                            rt::io::close(fd).await;
                            return;
                        }
                    }
                }
                Protocols { h2: true, .. } => (transport, Protocol::Http2, initial),
                _ => (transport, Protocol::Http1, initial),
            }
        }
    };
    crate::metrics::count(|m| m.protocol(protocol));
    let client = peer.map(|p| crate::trust::canonical(p.ip()));
    let info = ConnectionInfo { peer, local, client, tls: transport.is_tls() };
    // The chosen loop gets a task of its own and this one ends: the connection's task then
    // holds only that loop's state, not the handshake's or the sniffer's beside it.
    match protocol {
        Protocol::Http1 => {
            executor::spawn(h1::serve(fd, transport, initial, handler, settings, admitted, info))
        }
        Protocol::Http2 => executor::spawn_now(crate::h2::serve(
            fd, transport, initial, handler, settings, admitted, info,
        )),
    }
}

/// Runs `op`, a step before a connection's first request (the PROXY header, the TLS
/// handshake, the first bytes), until `deadline`; `None` if it passes. It waits as an idle
/// connection does: a graceful shutdown does not cut it off (the client has just connected
/// and its request may be on the way, as with one accepted during the shutdown) but
/// shortens it to [`rt::DRAIN_GRACE`]; the request that comes is answered as any during a
/// shutdown (HTTP/1.1 with `Connection: close`, HTTP/2 with the two-step GOAWAY).
async fn before_request<F: std::future::Future>(deadline: Instant, op: F) -> Option<F::Output> {
    let mut op = std::pin::pin!(op);
    let timer = Timer::new();
    let mut deadline = deadline;
    loop {
        let draining = rt::shutting_down();
        if draining {
            deadline = deadline.min(rt::now() + rt::DRAIN_GRACE);
        }
        // Idle until the shutdown: its start wakes this wait to shorten the deadline.
        timer.set_idle(!draining);
        let result = timer.run_until(op.as_mut(), Some(deadline)).await;
        timer.set_idle(false);
        match result {
            Some(done) => return Some(done),
            None if !draining && rt::shutting_down() => continue,
            None => return None,
        }
    }
}

/// Reads until the first bytes tell HTTP/2 prior knowledge (the full 24-byte preface) from
/// anything else (HTTP/1), never waiting for more once a byte differs from the preface.
/// Returns the protocol and the bytes read, which the chosen loop parses first.
async fn sniff(transport: &Transport, mut buf: BytesMut) -> std::io::Result<(Protocol, BytesMut)> {
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

/// Why a PROXY protocol header could not be read.
#[derive(Debug)]
enum ProxyHeaderFailure {
    Io(std::io::Error),
    Closed,
    Invalid(ProxyHeaderError),
}

impl std::fmt::Display for ProxyHeaderFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyHeaderFailure::Io(e) => write!(f, "{e}"),
            ProxyHeaderFailure::Closed => f.write_str("closed before the header ended"),
            ProxyHeaderFailure::Invalid(e) => write!(f, "{e}"),
        }
    }
}

/// Reads a PROXY protocol header; returns it and the bytes received after it (the client's
/// first bytes, for the TLS handshake or the HTTP parser).
async fn read_proxy_header(
    fd: sys::RawSocket,
) -> Result<(ProxyHeader, BytesMut), ProxyHeaderFailure> {
    let mut buf = BytesMut::new();
    loop {
        if !buf.is_empty() {
            match proxy_protocol::parse(&buf) {
                Ok(Some((header, len))) => {
                    let _ = buf.split_to(len);
                    return Ok((header, buf));
                }
                Ok(None) => {}
                Err(e) => return Err(ProxyHeaderFailure::Invalid(e)),
            }
        }
        let (back, result) = rt::io::recv(fd, buf).await;
        buf = back;
        match result {
            Ok(0) => return Err(ProxyHeaderFailure::Closed),
            Ok(_) => {}
            Err(e) => return Err(ProxyHeaderFailure::Io(e)),
        }
    }
}
