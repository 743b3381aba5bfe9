//! The reverse proxy: a [`Handler`] that forwards each request to an upstream server and
//! streams the answer back.
//!
//! ```text
//!  exchange ─► Proxy::call ─► balance.rs: pick a server (round robin, least requests or a
//!                │            hash; skipping failed, down and tried ones; backups last)
//!                │            pooled connection, or connect (driver op, connect_timeout)
//!                │            forward.rs: hop-by-hop out, X-Forwarded-*, request id in
//!                ▼
//!              h1.rs: head (+ body in memory) ─► upstream ─► response head (strict parse)
//!                     streamed body ──────────►           ◄─ streamed body (back-pressure)
//!                ▼
//!              Response<Body> ─► exchange ─► client; the connection back to this core's pool
//! ```
//!
//! Failures get the standard answers with a short body and no internal details: an upstream
//! that refuses, resets or answers malformed bytes is `502`, one that is too slow `504`.
//! A request is retried on another server (or a fresh connection) only while nothing of it
//! can have reached an upstream's application: a failed connect, or a pooled connection
//! found closed, for a request whose body is in memory.

mod balance;
pub mod config;
mod error;
pub(crate) mod forward;
mod h1;
pub(crate) mod h2;
pub(crate) mod metrics;
mod pool;
mod request;
mod upstream;
pub(crate) mod watch;
mod websocket;

pub use balance::Balance;
pub use config::RouteOptions;
pub use upstream::{UpstreamError, UpstreamServer};
pub use watch::HealthCheck;

use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http::header;
use http::{Request, Response, StatusCode};
use peregrine_protocols::h1::{BodyFraming, ResponseHead, ResponseLimits};
use tracing::debug;

use crate::access_log::UpstreamFields;
use crate::sys::driver::SendBuf;
use crate::transport::Transport;
use crate::{rt, Body, ConnectionInfo, Handler};
use balance::Balancer;
use error::error_response;
pub(crate) use error::ProxyError;
pub(crate) use forward::X_FORWARDED_FOR;
use pool::{Conn, Pool};
use request::Outgoing;

/// How the proxy forwards: its upstream servers, whom it trusts, and its timeouts.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The upstream servers, used in turn (round robin). They speak one protocol: the
    /// first one's (HTTP/1.1, or HTTP/2 for `h2c://`).
    pub servers: Vec<UpstreamServer>,
    /// Peers whose `X-Forwarded-*`, `Forwarded` and `X-Request-Id` fields are believed (other
    /// peers' are dropped and replaced).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Also send RFC 7239 `Forwarded` (the `X-Forwarded-*` fields are always sent).
    pub forwarded_header: bool,
    /// Longest wait for a connection to an upstream (`504` past it). For an HTTP/2
    /// upstream, also how long a PING may go unanswered (one is sent when a request on the
    /// connection times out) before the connection is given up.
    pub connect_timeout: Duration,
    /// Longest wait for the response head once the request is sent (`504` past it).
    pub response_header_timeout: Duration,
    /// Longest wait for a single read or write of a body, either way.
    pub idle_timeout: Duration,
    /// How long an unused upstream connection is kept for reuse.
    pub keepalive_timeout: Duration,
    /// Idle connections kept per upstream server, per core.
    pub max_idle_per_server: usize,
    /// Failures in a row after which a server is skipped for `fail_timeout`.
    pub max_fails: u32,
    /// How many other servers an idempotent request with a replayable body is sent to after
    /// an upstream fails it (connect, send, receive, timeout) before any response head.
    pub max_retries: u32,
    /// How long a failing server is skipped.
    pub fail_timeout: Duration,
    /// Size limits of upstream response heads.
    pub response_limits: ResponseLimits,
    /// How requests are spread over the servers.
    pub balance: Balance,
    /// An active health check run off the reactors; `None`: passive health only.
    pub health_check: Option<HealthCheck>,
    /// How often host names are resolved again (off the reactors); `None`: only at start.
    pub resolve_every: Option<Duration>,
    /// Send a PROXY protocol header naming the client on each upstream connection; such
    /// connections carry one client's request only and are not pooled.
    pub send_proxy_protocol: Option<ProxyProtocolVersion>,
    /// The field that carries a mutual-TLS client's certificate to the upstream (base64 DER
    /// of the leaf); removed from every client request, so a client cannot claim one.
    /// Default `MS-ASPNETCORE-CLIENTCERT` (what ASP.NET Core's certificate forwarding
    /// reads); `None`: certificates are not forwarded (and the field is not touched).
    pub client_cert_header: Option<http::HeaderName>,
    /// Set once the watcher thread runs (the first core's proxy starts it).
    watching: std::sync::OnceLock<()>,
    /// Up/down per server, shared by every core and the health checker (all up until a
    /// check says otherwise); made on first use, for the servers the config then has.
    board: std::sync::OnceLock<Arc<[std::sync::atomic::AtomicBool]>>,
}

impl ProxyConfig {
    /// Proxies to `servers` with the defaults: connect 5 s, response head 60 s, idle 60 s,
    /// 1,024 idle connections per server per core kept 60 s, a server skipped for 10 s after
    /// 3 failures in a row, and nobody trusted.
    pub fn new(servers: Vec<UpstreamServer>) -> ProxyConfig {
        ProxyConfig {
            servers,
            trusted_proxies: Vec::new(),
            forwarded_header: false,
            connect_timeout: Duration::from_secs(5),
            response_header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(60),
            max_idle_per_server: 1024,
            max_fails: 3,
            max_retries: 1,
            fail_timeout: Duration::from_secs(10),
            response_limits: ResponseLimits::default(),
            balance: Balance::RoundRobin,
            health_check: None,
            resolve_every: None,
            send_proxy_protocol: None,
            client_cert_header: Some(http::HeaderName::from_static("ms-aspnetcore-clientcert")),
            watching: std::sync::OnceLock::new(),
            board: std::sync::OnceLock::new(),
        }
    }

    /// The shared up/down flags of the servers.
    pub(crate) fn health_board(&self) -> &Arc<[std::sync::atomic::AtomicBool]> {
        self.board.get_or_init(|| {
            self.servers.iter().map(|_| std::sync::atomic::AtomicBool::new(true)).collect()
        })
    }
}

/// Which PROXY protocol header to send upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocolVersion {
    /// Version 1, text.
    V1,
    /// Version 2, binary.
    V2,
}

impl ProxyProtocolVersion {
    fn header(
        self,
        source: Option<std::net::SocketAddr>,
        dest: Option<std::net::SocketAddr>,
    ) -> Vec<u8> {
        use peregrine_protocols::proxy_protocol::{encode_v1, encode_v2};
        match self {
            ProxyProtocolVersion::V1 => encode_v1(source, dest),
            ProxyProtocolVersion::V2 => encode_v2(source, dest),
        }
    }
}

/// What one core's proxy keeps: the config, the pool, the balancer.
pub(crate) struct Shared {
    config: Arc<ProxyConfig>,
    /// This core's counters of each server.
    metrics: Vec<Arc<metrics::ServerMetrics>>,
    trusted: forward::Trusted,
    /// The last client address written for `X-Forwarded-For`.
    peer_text: forward::AddressText,
    /// The field names of this core's last upstream response heads, reused by position.
    names: std::cell::RefCell<peregrine_protocols::h1::ResponseNames>,
    pool: Pool,
    /// This core's HTTP/2 connections (`h2c://` servers).
    h2: h2::Connections,
    balance: Balancer,
}

impl Shared {
    /// Gives a connection back to the pool once its response has ended, if it can carry
    /// another exchange: the upstream keeps it alive (`framed_keep_alive`: keep-alive, and
    /// the response was not read until the close) and the request went out whole (no body
    /// still being sent, none cut short). The one place that rule lives.
    fn release(&self, server: usize, conn: Conn, framed_keep_alive: bool, request_whole: bool) {
        if framed_keep_alive && request_whole {
            self.pool.put(server, conn, rt::now());
        }
    }
}

/// A request counted in flight on its server (least requests) until dropped: held by the
/// response body stream, so it counts until the response ends.
pub(crate) struct InFlight {
    shared: Rc<Shared>,
    server: usize,
}

impl InFlight {
    fn new(shared: &Rc<Shared>, server: usize) -> InFlight {
        shared.balance.started(server);
        InFlight { shared: Rc::clone(shared), server }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.balance.done(self.server);
    }
}

/// The reverse-proxy handler of one core. Build one per core from a shared
/// [`ProxyConfig`] (the server's handler factory runs once per core).
pub struct Proxy {
    shared: Rc<Shared>,
}

impl Proxy {
    /// A proxy for this core.
    pub fn new(config: Arc<ProxyConfig>) -> Proxy {
        let metrics: Vec<_> = config.servers.iter().map(|s| metrics::register(s.name())).collect();
        Proxy::with_metrics(config, metrics)
    }

    /// A proxy for this core counting on `metrics` (one per server of `config`), registered
    /// by the caller: app hosting makes a proxy per process and keeps one series per app.
    pub(crate) fn with_metrics(
        config: Arc<ProxyConfig>,
        metrics: Vec<Arc<metrics::ServerMetrics>>,
    ) -> Proxy {
        watch::start(&config);
        let shared = Shared {
            trusted: forward::Trusted::new(config.trusted_proxies.clone()),
            peer_text: forward::AddressText::default(),
            names: Default::default(),
            pool: Pool::new(metrics.clone(), config.max_idle_per_server, config.keepalive_timeout),
            h2: h2::Connections::default(),
            metrics,
            balance: Balancer::new(Arc::clone(&config)),
            config,
        };
        Proxy { shared: Rc::new(shared) }
    }
}

impl Proxy {
    /// Forwards `request` with a route's `options` (prefix stripping, header edits, its own
    /// timeouts and body limit). `connection` describes the client; without it the request's
    /// [`ConnectionInfo`] extension does.
    pub async fn forward_with(
        &self,
        request: Request<Body>,
        options: &RouteOptions,
        connection: Option<&ConnectionInfo>,
    ) -> Response<Body> {
        // Boxed: the forwarding future is a few KiB (connect, send, read, their timers), and
        // inline it would make every enclosing future (the handler's, the connection's
        // exchange) that much larger, and be copied with each of them.
        answer(rt::boxed(|| forward(&self.shared, request, options, connection)).await)
    }

    /// [`forward_with`](Self::forward_with) with the forwarding state inline, for a caller
    /// that boxes this future itself (the router): one allocation per request, not two.
    pub(crate) async fn forward_inline(
        &self,
        request: Request<Body>,
        options: &RouteOptions,
        connection: Option<&ConnectionInfo>,
    ) -> Response<Body> {
        answer(forward(&self.shared, request, options, connection).await)
    }
}

/// The client's response for a forwarding's outcome: the upstream's, or the error's.
fn answer(outcome: Result<Response<Body>, ProxyError>) -> Response<Body> {
    match outcome {
        Ok(response) => response,
        Err(e) => {
            debug!(error = %e, "proxy: answering {}", e.status());
            error_response(e.status())
        }
    }
}

/// The options of a proxy or app used as the whole handler (`--proxy`, `--app`): none.
pub(crate) static NO_OPTIONS: std::sync::LazyLock<RouteOptions> =
    std::sync::LazyLock::new(RouteOptions::default);

impl Handler for Proxy {
    fn call(&self, request: Request<Body>) -> impl std::future::Future<Output = Response<Body>> {
        // Not an `async fn`: it would hold `forward_with`'s future beside its own arguments.
        self.forward_with(request, &NO_OPTIONS, None)
    }

    /// The connection goes to the forwarding rules as it is: an extension map costs three
    /// allocations per request.
    fn call_with(
        &self,
        request: Request<Body>,
        connection: Option<&ConnectionInfo>,
    ) -> impl std::future::Future<Output = Response<Body>> {
        self.forward_with(request, &NO_OPTIONS, connection)
    }
}

/// Forwards one request and returns the upstream's response, its body still streaming.
async fn forward(
    shared: &Rc<Shared>,
    request: Request<Body>,
    options: &RouteOptions,
    connection: Option<&ConnectionInfo>,
) -> Result<Response<Body>, ProxyError> {
    let config = &shared.config;
    // A group speaks one protocol: its first server's (see `ProxyConfig::servers`).
    if config.servers.first().is_some_and(|s| s.http2) {
        return rt::boxed(|| h2::forward(shared, request, options, connection)).await;
    }
    let connect_timeout = options.connect_timeout.unwrap_or(config.connect_timeout);
    let head_timeout = options.response_header_timeout.unwrap_or(config.response_header_timeout);
    let idle_timeout = options.idle_timeout.unwrap_or(config.idle_timeout);
    let request = match options.request_buffering {
        true => request::buffered(request, options).await?,
        false => request,
    };
    let Outgoing { method, head, framing, in_memory, body, upgrade, key, request_id, info, bridge } =
        request::prepare(shared, request, options, connection)?;
    let mut bridge = bridge;
    // A PROXY protocol header names one client: such a connection serves only this request.
    let proxy_header = config.send_proxy_protocol.map(|v| v.header(info.peer, info.local));
    let mut tried: Vec<usize> = Vec::new();
    let mut retries = 0;
    let mut body = body;
    loop {
        let now = rt::now();
        let Some(server) = shared.balance.pick(now, &tried, key.as_deref()) else {
            return Err(ProxyError::NoServer);
        };
        let in_flight = InFlight::new(shared, server);
        let counters = &shared.metrics[server];
        counters.request();
        let pooled = if proxy_header.is_none() { shared.pool.take(server, now) } else { None };
        let (mut conn, fresh) = match pooled {
            Some(conn) => (conn, false),
            None => match connect(shared, server, connect_timeout, proxy_header.as_deref()).await {
                Ok(conn) => (conn, true),
                Err(e) if connect_failed(shared, server, &e, &mut tried) => continue,
                Err(e) => return Err(e),
            },
        };
        // The core's pooled send list (given back by `send_within`): no allocation per request.
        let mut out = rt::io::take_send_buf();
        out.push(head.clone());
        if let Some(b) = &in_memory {
            out.push(b.clone());
        }
        let mut sender = None;
        let mut unfit = false;
        let sent_at = rt::now();
        let sent = h1::send_within(&conn, out, idle_timeout).await;
        let result = match sent {
            Ok(()) => {
                if in_memory.is_none() {
                    if let Some(body) = body.take() {
                        sender = Some(h1::send_body(
                            &conn,
                            body,
                            framing == BodyFraming::Chunked,
                            idle_timeout,
                        ));
                    }
                }
                let upgrading = upgrade.is_some();
                let read =
                    h1::read_head(&mut conn, &method, shared, &mut sender, &mut unfit, upgrading);
                match rt::timer::timeout(rt::now() + head_timeout, read).await {
                    Some(r) => r,
                    None => Err(ProxyError::Timeout),
                }
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(mut head) => {
                shared.balance.succeeded(server);
                let head_us = rt::now().saturating_duration_since(sent_at).as_micros() as u64;
                counters.response(head.status, head_us);
                let upstream_status = head.status.as_u16();
                let log = || UpstreamFields {
                    server: Arc::clone(&config.servers[server].shared_name),
                    status: upstream_status,
                    head_us,
                    request_id: request_id.clone(),
                };
                if upgrade.is_some() && head.status == StatusCode::SWITCHING_PROTOCOLS {
                    let protocol = head.headers.get(header::UPGRADE).cloned();
                    forward::remove_hop_by_hop(&mut head.headers);
                    let (status, body) = match bridge.take() {
                        // HTTP/2's answer to an extended CONNECT is a 200 on the stream
                        // (RFC 8441 §5), once the upstream has answered the proxy's key.
                        Some(b) => {
                            let accept = head.headers.remove(header::SEC_WEBSOCKET_ACCEPT);
                            let expected = websocket::accept_for(&b.key);
                            if accept.is_none_or(|a| a.as_bytes() != expected.as_bytes()) {
                                counters.failed(metrics::Failure::BadResponse);
                                return Err(ProxyError::WebSocketAccept);
                            }
                            let (fd, transport, buffered) = conn.into_parts();
                            let tunnel =
                                crate::tunnel::Tunnel::new(fd, transport, buffered, idle_timeout);
                            (StatusCode::OK, crate::tunnel::stream_body(tunnel, b.from_client))
                        }
                        None => {
                            if let Some(protocol) = protocol {
                                head.headers.insert(header::UPGRADE, protocol);
                            }
                            let (fd, transport, buffered) = conn.into_parts();
                            let tunnel =
                                crate::tunnel::Tunnel::new(fd, transport, buffered, idle_timeout);
                            (head.status, Body::tunnel(tunnel))
                        }
                    };
                    let mut response = Response::new(body);
                    *response.status_mut() = status;
                    *response.headers_mut() = head.headers;
                    options.response_headers.apply(response.headers_mut());
                    crate::access_log::attach_upstream(&mut response, log);
                    return Ok(response);
                }
                let exchange =
                    Upstream { shared, server, conn, sender, unfit, idle_timeout, in_flight };
                let mut response = respond(exchange, head, &method);
                options.response_headers.apply(response.headers_mut());
                crate::access_log::attach_upstream(&mut response, log);
                return Ok(response);
            }
            // A pooled connection the upstream closed while idle: try once more on a new one,
            // if the request can be sent again.
            Err(ProxyError::Closed | ProxyError::Send(_) | ProxyError::Recv(_))
                if !fresh && (in_memory.is_some() || framing == BodyFraming::Empty) =>
            {
                debug!("proxy: pooled connection was closed by the upstream; retrying");
                counters.failed(metrics::Failure::Closed);
                counters.retried();
                drop(conn);
                continue;
            }
            Err(e) => {
                if e.blames_server() {
                    shared.balance.failed(server, rt::now());
                }
                if let Some(f) = e.failure() {
                    counters.failed(f);
                }
                // nginx's `proxy_next_upstream error timeout`: an idempotent request whose
                // body can be sent again goes to another server, a bounded number of times.
                // Nothing has reached the client yet (no response head was read).
                let replayable = in_memory.is_some() || framing == BodyFraming::Empty;
                let retriable = matches!(
                    e,
                    ProxyError::Connect(_)
                        | ProxyError::Send(_)
                        | ProxyError::Recv(_)
                        | ProxyError::Closed
                        | ProxyError::Timeout
                );
                tried.push(server);
                if retriable
                    && replayable
                    && idempotent(&method)
                    && retries < config.max_retries
                    && tried.len() < config.servers.len()
                {
                    retries += 1;
                    counters.retried();
                    continue;
                }
                return Err(e);
            }
        }
    }
}

/// Accounts for a failed connect to `server` (the server is marked failing, the failure
/// counted) and says whether another server is left to try.
fn connect_failed(shared: &Shared, server: usize, e: &ProxyError, tried: &mut Vec<usize>) -> bool {
    debug!(server = shared.config.servers[server].name(), error = %e, "proxy: connect failed");
    shared.balance.failed(server, rt::now());
    let counters = &shared.metrics[server];
    if let Some(f) = e.failure() {
        counters.failed(f);
    }
    tried.push(server);
    let another = tried.len() < shared.config.servers.len();
    if another {
        counters.retried();
    }
    another
}

/// Methods that may be sent twice (RFC 9110 §9.2.2).
fn idempotent(method: &http::Method) -> bool {
    use http::Method;
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Connects to `server` within `within`, the TLS handshake included for `https://`.
async fn connect(
    shared: &Shared,
    server: usize,
    within: Duration,
    proxy_header: Option<&[u8]>,
) -> Result<Conn, ProxyError> {
    let upstream = &shared.config.servers[server];
    let started = rt::now();
    let deadline = started + within;
    let connecting = rt::io::connect(&upstream.addr()).map_err(ProxyError::Connect)?;
    let fd = match rt::timer::timeout(deadline, connecting).await {
        Some(Ok(fd)) => fd,
        Some(Err(e)) => return Err(ProxyError::Connect(e)),
        None => return Err(ProxyError::Timeout),
    };
    let raw = crate::sys::raw(&fd);
    if let Some(header) = proxy_header {
        // Before anything else, TLS included (the upstream reads it first).
        let mut out = SendBuf::new();
        out.push(bytes::Bytes::copy_from_slice(header));
        match rt::timer::timeout(deadline, Transport::plain(raw).send_all(out)).await {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(ProxyError::Send(e)),
            None => return Err(ProxyError::Timeout),
        }
    }
    let transport = match &upstream.tls {
        None => Transport::plain(raw),
        Some(tls) => {
            let client = rustls::client::UnbufferedClientConnection::new(
                Arc::clone(&tls.config),
                tls.name.clone(),
            )
            .map_err(|e| ProxyError::Connect(io::Error::other(e)))?;
            Transport::tls(raw, client, BytesMut::new())
        }
    };
    let counters = &shared.metrics[server];
    let mut conn = Conn::new(fd, transport, Arc::clone(counters));
    conn.private = proxy_header.is_some();
    if upstream.tls.is_some() {
        // A certificate that does not verify fails here: 502, the connection closed.
        match rt::timer::timeout(deadline, conn.transport.complete_handshake()).await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(ProxyError::Connect(e)),
            None => return Err(ProxyError::Timeout),
        }
    }
    counters.connected(rt::now().saturating_duration_since(started).as_micros() as u64);
    Ok(conn)
}

/// An upstream exchange whose response head has arrived: where its body comes from.
pub(crate) struct Upstream<'a> {
    shared: &'a Rc<Shared>,
    server: usize,
    conn: Conn,
    /// The request body, if it is still being sent.
    sender: Option<h1::Sender>,
    /// The connection cannot be reused (the request body was cut short).
    unfit: bool,
    idle_timeout: Duration,
    /// Counts the request on its server until the response ends.
    in_flight: InFlight,
}

impl Upstream<'_> {
    /// The request went out whole: no body still being sent, none cut short.
    fn request_whole(&self) -> bool {
        self.sender.is_none() && !self.unfit
    }
}

/// The client's response: the upstream's head, cleaned, and its body streaming.
fn respond(mut up: Upstream<'_>, mut head: ResponseHead, method: &http::Method) -> Response<Body> {
    // A response to HEAD advertises the length a GET would have had.
    let head_len = (*method == http::Method::HEAD)
        .then(|| head.headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse::<u64>().ok())
        .flatten();
    if head.hop_by_hop {
        forward::remove_hop_by_hop(&mut head.headers);
    }
    let body = match head.body.exact_len() {
        Some(0) => {
            // Nothing to read: the connection is free again at once (the client's codec never
            // polls an empty body, so this cannot wait for the stream's end).
            let whole = up.request_whole();
            up.shared.release(up.server, up.conn, head.keep_alive, whole);
            Body::from_stream(NoChunks, head_len.or(Some(0)))
        }
        // The whole body came with the head (most small responses do), and the request is
        // sent: the client gets it from memory (no stream to poll, one write with the head)
        // and the connection is free again at once.
        Some(n) if up.sender.is_none() && up.conn.buf.len() as u64 >= n => {
            let body = up.conn.buf.split_to(n as usize).freeze();
            let whole = up.request_whole();
            up.shared.release(up.server, up.conn, head.keep_alive, whole);
            Body::from(body)
        }
        len => Body::from_stream(h1::ResponseStream::new(up, &head), len),
    };
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers;
    response
}

/// The body of a response that has none (its head may still advertise a length: HEAD).
struct NoChunks;

impl futures_core::Stream for NoChunks {
    type Item = crate::BodyChunk;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(None)
    }
}
