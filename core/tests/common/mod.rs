//! Shared helpers for Peregrine's integration tests: a test handler, server start-up per IO
//! driver and transport (cleartext or TLS), and a raw-socket HTTP/1.1 client whose every
//! wait is bounded.
#![allow(dead_code)] // each test crate uses its own subset of these helpers

pub mod tls;
pub mod upstream;

use std::cell::{Cell, OnceCell};
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use peregrine::routes::BuiltinRoutes;
use peregrine::{Body, Handler, IoChoice, Limits, ListenerSpec, Server, ServerConfig, StartError};

/// How long any single read helper waits before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Size of the `/big` response body.
pub const BIG_BODY_LEN: usize = 64 << 20;
/// The limit `/collect` passes to `Body::collect`.
pub const COLLECT_LIMIT: usize = 10 << 20;

/// `/collect`, `/panic`, `/panic-body`, `/wrong-length`, `/big`, then the binary's built-in
/// routes.
pub struct TestHandler {
    routes: BuiltinRoutes,
    big: OnceCell<Bytes>,
}

impl TestHandler {
    /// A handler for one core.
    pub fn new() -> TestHandler {
        TestHandler { routes: BuiltinRoutes::new(&[]), big: OnceCell::new() }
    }
}

impl Default for TestHandler {
    fn default() -> Self {
        TestHandler::new()
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

impl Handler for TestHandler {
    async fn call(&self, request: Request<Body>) -> Response<Body> {
        match request.uri().path() {
            "/collect" => match request.into_body().collect(COLLECT_LIMIT).await {
                Ok(bytes) => text(StatusCode::OK, bytes.len().to_string()),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("body error: {e}")),
            },
            "/panic" => panic!("TestHandler: /panic panics on purpose"),
            // What a mutual-TLS client presented: its leaf as base64 DER, or `none`.
            "/client-cert" => {
                use base64::Engine as _;
                let seen = request
                    .extensions()
                    .get::<peregrine::ClientCertificates>()
                    .map(|c| base64::engine::general_purpose::STANDARD.encode(c.leaf()));
                text(StatusCode::OK, seen.unwrap_or_else(|| "none".into()))
            }
            "/panic-body" => Response::new(Body::from_stream(PanicAfterOneChunk(false), None)),
            "/wrong-length" => {
                // The handler claims 100 bytes and sends 5: the server frames the body it
                // really sends (both codecs own content-length).
                let mut r = text(StatusCode::OK, "hello".into());
                r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("100"));
                r
            }
            "/big" => {
                let big = self.big.get_or_init(|| Bytes::from(vec![0u8; BIG_BODY_LEN])).clone();
                Response::new(Body::from(big))
            }
            _ => self.routes.call(request).await,
        }
    }
}

/// A response body that yields `partial`, then panics when polled again.
struct PanicAfterOneChunk(bool);

impl futures_core::Stream for PanicAfterOneChunk {
    type Item = peregrine::BodyChunk;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        assert!(!self.0, "TestHandler: /panic-body's stream panics on purpose");
        self.0 = true;
        std::task::Poll::Ready(Some(Ok(Bytes::from_static(b"partial"))))
    }
}

/// A handler that answers `/fixed` (and `/host`, with the request's `Host`; `/fixed-big`,
/// [`big_body`]) from the head
/// ([`Handler::answer`]), panics there for `/fixed-panic`, and answers everything else
/// through `call`: `/plaintext` as the built-in routes do (for [`assert_healthy`]), the
/// rest with `called`, counting those calls.
pub struct AnsweringHandler {
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    routes: BuiltinRoutes,
}

impl Handler for AnsweringHandler {
    async fn call(&self, request: Request<Body>) -> Response<Body> {
        if request.uri().path() == "/plaintext" {
            return self.routes.call(request).await;
        }
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        text(StatusCode::OK, "called".into())
    }

    fn answer(&self, head: &peregrine::Head<'_>) -> Option<peregrine::Answer> {
        let body = match head.path() {
            "/fixed" => Bytes::from_static(b"fixed"),
            "/host" => Bytes::copy_from_slice(head.header("host")?),
            "/fixed-panic" => panic!("AnsweringHandler: /fixed-panic panics on purpose"),
            "/fixed-big" => Bytes::from(big_body()),
            _ => return None,
        };
        let content_type = HeaderValue::from_static("text/plain");
        Some(peregrine::Answer::Fixed(peregrine::Fixed {
            status: StatusCode::OK,
            content_type,
            body,
        }))
    }
}

/// `/fixed-big`'s body: far more than a socket's send buffer takes at once, each byte
/// telling its position (so a lost or repeated piece shows).
pub fn big_body() -> Vec<u8> {
    (0..4u32 << 20).map(|i| (i % 251) as u8).collect()
}

/// Starts a one-core server (as [`start`] does) with an [`AnsweringHandler`]; the counter
/// counts its `call`s.
pub fn start_answering(io: IoChoice) -> (Server, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let config = config(io, Limits::default());
    let tls = config.listen[0].is_tls();
    let counter = calls.clone();
    let server = Server::start(config, move || AnsweringHandler {
        calls: counter.clone(),
        routes: BuiltinRoutes::new(&[]),
    })
    .unwrap_or_else(|e| panic!("server start ({io:?}): {e}"));
    note_transport(&server, tls);
    (server, calls)
}

thread_local! {
    /// Set by the `tls` variant of the test matrix: servers this thread starts listen with TLS.
    static TLS_MODE: Cell<bool> = const { Cell::new(false) };
}

/// Addresses of TLS test servers: [`Client::connect`] speaks TLS to them (from any thread).
static TLS_SERVERS: Mutex<Option<HashSet<SocketAddr>>> = Mutex::new(None);

/// Makes the servers this thread starts TLS listeners (the matrix's `tls` variant).
pub fn set_tls_mode(on: bool) {
    TLS_MODE.with(|m| m.set(on));
}

/// Whether `addr` is a TLS test server.
pub fn is_tls(addr: SocketAddr) -> bool {
    TLS_SERVERS.lock().unwrap().as_ref().is_some_and(|s| s.contains(&addr))
}

/// `https` for a TLS test server, else `http`.
pub fn scheme(addr: SocketAddr) -> &'static str {
    if is_tls(addr) {
        "https"
    } else {
        "http"
    }
}

/// A one-thread, unpinned server config on 127.0.0.1 port 0 (TLS with the test CA's
/// `localhost` certificate in the matrix's `tls` variant).
pub fn config(io: IoChoice, limits: Limits) -> ServerConfig {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listener = if TLS_MODE.with(Cell::get) {
        ListenerSpec::tls(addr, tls::localhost_settings())
    } else {
        addr.into()
    };
    ServerConfig {
        listen: vec![listener],
        threads: Some(1),
        pin_threads: false,
        io,
        limits,
        ..ServerConfig::default()
    }
}

/// Starts a server with [`TestHandler`], reporting a start error.
pub fn try_start(io: IoChoice, limits: Limits) -> Result<Server, StartError> {
    let config = config(io, limits);
    let tls = config.listen[0].is_tls();
    let server = Server::start(config, TestHandler::new)?;
    note_transport(&server, tls);
    Ok(server)
}

/// Records whether `server` speaks TLS, for [`Client::connect`]. A port a finished TLS test
/// server used can come back for a cleartext one (Windows hands out ephemeral ports again
/// quickly), so each start records its own kind.
fn note_transport(server: &Server, tls: bool) {
    let mut servers = TLS_SERVERS.lock().unwrap();
    let servers = servers.get_or_insert_with(HashSet::new);
    if tls {
        servers.insert(addr(server));
    } else {
        servers.remove(&addr(server));
    }
}

/// Starts a server with [`TestHandler`] on the driver `io` asks for.
pub fn start(io: IoChoice, limits: Limits) -> Server {
    let server = try_start(io, limits).unwrap_or_else(|e| panic!("server start ({io:?}): {e}"));
    #[cfg(not(windows))]
    let expected = match io {
        IoChoice::Uring => Some(peregrine::DriverKind::Uring),
        IoChoice::Epoll => Some(peregrine::DriverKind::Epoll),
        _ => None,
    };
    #[cfg(not(windows))]
    if let Some(kind) = expected {
        assert_eq!(server.driver(), kind, "server runs another driver than asked for");
    }
    server
}

/// A server running the binary's router over the config text `toml` (its `[[route]]`s,
/// `[[upstream]]`s and the `[files]`, `[cache]` and `[compression]` sections) on driver `io`,
/// over TLS with the test CA's `localhost` certificate when `tls`.
pub fn routed(io: IoChoice, toml: &str, tls: bool) -> Server {
    routed_logged(io, toml, tls, None)
}

/// [`routed`], writing an access log to `log` when given.
pub fn routed_logged(
    io: IoChoice,
    toml: &str,
    tls: bool,
    log: Option<std::path::PathBuf>,
) -> Server {
    let config = peregrine::config::Config::parse(toml).unwrap_or_else(|e| panic!("{e}"));
    config.validate().unwrap_or_else(|e| panic!("{e}"));
    let groups: Vec<(String, std::sync::Arc<peregrine::proxy::ProxyConfig>)> = config
        .upstream
        .iter()
        .map(|u| (u.name.clone(), std::sync::Arc::new(u.proxy_config(&config.proxy).unwrap())))
        .collect();
    let routes = config.route.clone();
    let settings = peregrine::routes::RouteSettings::of(&config);
    let mut server_config = self::config(io, Limits::default());
    server_config.access_log = log.map(peregrine::AccessLogTarget::File);
    if tls {
        let addr = server_config.listen[0].address;
        server_config.listen = vec![ListenerSpec::tls(addr, self::tls::localhost_settings())];
    }
    Server::start(server_config, move || {
        peregrine::routes::BuiltinRoutes::with_targets(
            &routes,
            &groups,
            &peregrine::apps::Apps::default(),
            &settings,
        )
    })
    .expect("the router starts")
}

/// The server's (first) bound address.
pub fn addr(server: &Server) -> SocketAddr {
    server.local_addrs()[0]
}

/// Why io_uring cannot be used here (probed once per test binary), or `None` when it can.
#[cfg(not(windows))]
pub fn uring_unavailable() -> Option<&'static str> {
    static PROBE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    PROBE
        .get_or_init(|| match try_start(IoChoice::Uring, Limits::default()) {
            Ok(server) => {
                server.shutdown();
                server.wait();
                None
            }
            Err(StartError::Driver(e)) => Some(e.to_string()),
            Err(e) => panic!("cannot start a server to probe io_uring: {e}"),
        })
        .as_deref()
}

/// True (after printing a note) when the io_uring variant of a test must be skipped.
#[cfg(not(windows))]
pub fn skip_uring() -> bool {
    match uring_unavailable() {
        Some(why) => {
            println!("note: io_uring unavailable ({why}); skipping the io_uring variant");
            true
        }
        None => false,
    }
}

/// Expands to a module named after the test function holding three tests: `uring` and
/// `epoll` run it on each driver over cleartext, `tls` over TLS (ALPN `http/1.1`, the
/// default driver). For tests whose subject is cleartext-only, use [`both_drivers!`].
#[macro_export]
macro_rules! all_transports {
    ($($(#[$attr:meta])* $name:ident),+ $(,)?) => {
        $(
            mod $name {
                $crate::both_drivers!(@tests $name [$($attr),*]);

                #[test]
                $(#[$attr])*
                fn tls() {
                    $crate::common::set_tls_mode(true);
                    super::$name(peregrine::IoChoice::Auto);
                }
            }
        )+
    };
}

/// Expands to a module named after the test function holding two tests, `uring` and
/// `epoll`, that run it on each driver. The io_uring one is skipped, with a note, where
/// io_uring cannot be set up (Docker's default seccomp profile, old kernels). Attributes
/// before a name (`#[ignore = "BUG: ..."]`) apply to both tests. On Windows, which has one
/// driver, the module holds one test, `iocp`.
#[macro_export]
macro_rules! both_drivers {
    // The per-driver tests, shared with `all_transports!`.
    (@tests $name:ident [$($attr:meta),*]) => {
        #[cfg(not(windows))]
        #[test]
        $(#[$attr])*
        fn uring() {
            if $crate::common::skip_uring() {
                return;
            }
            super::$name(peregrine::IoChoice::Uring);
        }

        #[cfg(not(windows))]
        #[test]
        $(#[$attr])*
        fn epoll() {
            super::$name(peregrine::IoChoice::Epoll);
        }

        #[cfg(windows)]
        #[test]
        $(#[$attr])*
        fn iocp() {
            super::$name(peregrine::IoChoice::Auto);
        }
    };
    ($($(#[$attr:meta])* $name:ident),+ $(,)?) => {
        $(
            mod $name {
                $crate::both_drivers!(@tests $name [$($attr),*]);
            }
        )+
    };
}

/// Checks that the server answers a plain `GET /plaintext` on a new connection.
pub fn assert_healthy(server: &Server) {
    let mut c = Client::connect(addr(server));
    c.send(b"GET /plaintext HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200, "health check: {r:?}");
    assert_eq!(r.body, b"Hello, World!", "health check body");
}

/// Starts a graceful shutdown and waits for the reactors to stop, failing after `within`.
/// Returns how long the wait took.
pub fn shutdown_and_wait(server: Server, within: Duration) -> Duration {
    server.shutdown();
    wait_within(server, within)
}

/// `server.wait()`, failing the test if it takes longer than `within`.
pub fn wait_within(server: Server, within: Duration) -> Duration {
    let started = Instant::now();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        server.wait();
        let _ = tx.send(());
    });
    match rx.recv_timeout(within) {
        Ok(()) => started.elapsed(),
        Err(_) => panic!("server.wait() did not return within {within:?}"),
    }
}

/// The end of every test: the server still serves a new connection, then stops cleanly.
/// Drop the test's own clients before calling it.
pub fn finish(server: Server) {
    assert_healthy(&server);
    shutdown_and_wait(server, Duration::from_secs(10));
}

/// One parsed HTTP/1.x response.
#[derive(Debug, Clone, Default)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// The status line as sent.
    pub status_line: String,
    /// Header fields in order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The decoded body.
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, String)>,
    /// The body was chunked on the wire.
    pub chunked: bool,
}

impl RawResponse {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Whether `Connection: close` was sent.
    pub fn connection_close(&self) -> bool {
        self.headers.iter().any(|(n, v)| {
            n == "connection" && v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))
        })
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The outcome of one bounded read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// This many bytes were appended to the buffer.
    Data(usize),
    /// The peer closed (read returned 0).
    Eof,
    /// The connection was reset (or aborted).
    Reset,
    /// Nothing arrived before the deadline.
    TimedOut,
}

/// A client byte stream: cleartext, or TLS (ALPN `http/1.1`) to a TLS test server.
pub enum Stream {
    /// Cleartext.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tls::TlsStream>),
}

impl Stream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            // A server that closes TCP without close_notify ends the stream too.
            Stream::Tls(s) => match s.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A raw HTTP/1.1 client over a std `TcpStream`, or TLS over one. Received bytes stay in a
/// buffer, so pipelined responses can be read one at a time.
pub struct Client {
    stream: Stream,
    buf: Vec<u8>,
    eof: bool,
}

impl Client {
    /// Connects, failing the test on error.
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    /// Connects (within 5 s); TLS with ALPN `http/1.1` to a TLS test server.
    pub fn try_connect(addr: SocketAddr) -> io::Result<Client> {
        if is_tls(addr) {
            let stream = tls::connect(addr, "localhost", &[b"http/1.1"])?;
            return Ok(Client {
                stream: Stream::Tls(Box::new(stream)),
                buf: Vec::new(),
                eof: false,
            });
        }
        let stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT)?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_write_timeout(Some(READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Client { stream: Stream::Plain(stream), buf: Vec::new(), eof: false })
    }

    /// A client over an established stream (e.g. a TLS stream a test set up itself).
    pub fn over(stream: Stream) -> Client {
        Client { stream, buf: Vec::new(), eof: false }
    }

    /// The TCP socket, for tweaks.
    pub fn stream(&self) -> &TcpStream {
        self.stream.tcp()
    }

    /// The client stream.
    pub fn raw(&mut self) -> &mut Stream {
        &mut self.stream
    }

    /// Writes all of `bytes`, failing the test on error.
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).unwrap_or_else(|e| panic!("send: {e}"));
    }

    /// Writes all of `bytes`.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Half-closes the sending side (TLS: close_notify first).
    pub fn shutdown_write(&mut self) {
        if let Stream::Tls(s) = &mut self.stream {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
        let _ = self.stream.tcp().shutdown(Shutdown::Write);
    }

    /// Bytes received and not yet consumed by a parse.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// One read into the buffer, waiting at most until `deadline`.
    pub fn fill(&mut self, deadline: Instant) -> Fill {
        if self.eof {
            return Fill::Eof;
        }
        let now = Instant::now();
        if now >= deadline {
            return Fill::TimedOut;
        }
        let wait = (deadline - now).max(Duration::from_millis(1));
        self.stream.tcp().set_read_timeout(Some(wait)).expect("set_read_timeout");
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    return Fill::Eof;
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Fill::Data(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return Fill::TimedOut;
                }
                Err(e) => {
                    let reset = matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::BrokenPipe
                    );
                    assert!(reset, "read failed: {e}");
                    self.eof = true;
                    return Fill::Reset;
                }
            }
        }
    }

    /// Reads one response (failing the test if none arrives within 5 s).
    pub fn read_response(&mut self) -> RawResponse {
        self.try_read_response().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Reads one response, or says why none could be read.
    pub fn try_read_response(&mut self) -> Result<RawResponse, String> {
        self.read_message(false, READ_TIMEOUT)
    }

    /// Reads one response whose body is not read (a response to HEAD, or one whose body the
    /// test reads itself with [`read_exact`](Self::read_exact)).
    pub fn read_head(&mut self) -> RawResponse {
        self.read_message(true, READ_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Reads exactly `n` bytes (beyond what a parse consumed).
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let deadline = Instant::now() + READ_TIMEOUT;
        while self.buf.len() < n {
            match self.fill(deadline) {
                Fill::Data(_) => {}
                other => panic!(
                    "wanted {n} bytes, got {} then {other:?}: {:?}",
                    self.buf.len(),
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
        self.buf.drain(..n).collect()
    }

    fn read_message(&mut self, head_only: bool, timeout: Duration) -> Result<RawResponse, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match parse_response(&self.buf, head_only, self.eof)? {
                Some((response, used)) => {
                    self.buf.drain(..used);
                    return Ok(response);
                }
                None => match self.fill(deadline) {
                    Fill::Data(_) => {}
                    Fill::Eof | Fill::Reset if !self.buf.is_empty() => {
                        // A close-delimited body ends here; otherwise the response is cut.
                        if let Some((response, used)) = parse_response(&self.buf, head_only, true)?
                        {
                            self.buf.drain(..used);
                            return Ok(response);
                        }
                        return Err(format!(
                            "connection closed mid-response: {:?}",
                            String::from_utf8_lossy(&self.buf)
                        ));
                    }
                    other => {
                        return Err(format!(
                            "no complete response ({other:?}); have {:?}",
                            String::from_utf8_lossy(&self.buf)
                        ))
                    }
                },
            }
        }
    }

    /// Everything (buffered and new) until the server closes the connection; fails the test
    /// if it is still open after 5 s.
    pub fn read_to_eof(&mut self) -> Vec<u8> {
        self.read_to_eof_within(READ_TIMEOUT)
    }

    /// As [`read_to_eof`](Self::read_to_eof), with another bound.
    pub fn read_to_eof_within(&mut self, within: Duration) -> Vec<u8> {
        let deadline = Instant::now() + within;
        loop {
            match self.fill(deadline) {
                Fill::Data(_) => {}
                Fill::Eof | Fill::Reset => return std::mem::take(&mut self.buf),
                Fill::TimedOut => panic!(
                    "server did not close the connection within {within:?}; received {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// Everything (buffered and new) until the server closes the connection, or `None` if
    /// it is still open after `within`.
    pub fn read_until_closed(&mut self, within: Duration) -> Option<Vec<u8>> {
        self.wait_closed(within).map(|_| std::mem::take(&mut self.buf))
    }

    /// Whether the server closes the connection (EOF or reset) within `within`. Bytes that
    /// arrive meanwhile are kept in the buffer.
    pub fn is_closed(&mut self, within: Duration) -> bool {
        self.wait_closed(within).is_some()
    }

    /// How long until the server closed the connection, if it did within `within`.
    pub fn wait_closed(&mut self, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        let deadline = started + within;
        loop {
            match self.fill(deadline) {
                Fill::Data(_) => {}
                Fill::Eof | Fill::Reset => return Some(started.elapsed()),
                Fill::TimedOut => return None,
            }
        }
    }

    /// Waits up to `within` for bytes; true if any arrived (false on timeout or close).
    pub fn data_within(&mut self, within: Duration) -> bool {
        matches!(self.fill(Instant::now() + within), Fill::Data(_))
    }
}

/// Sends `request` on a new connection and reads one response.
pub fn request(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut c = Client::connect(addr);
    c.send(request);
    c.read_response()
}

/// How many responses `bytes` holds: status lines (`HTTP/1.1 ` at a line start).
pub fn count_status_lines(bytes: &[u8]) -> usize {
    const PREFIX: &[u8] = b"HTTP/1.1 ";
    (0..bytes.len())
        .filter(|&i| bytes[i..].starts_with(PREFIX) && (i == 0 || bytes[i - 1] == b'\n'))
        .count()
}

/// The status code of the first status line in `bytes`.
pub fn first_status(bytes: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(bytes.get(..bytes.len().min(64))?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses one response from the front of `buf`. `Ok(None)`: more bytes are needed.
/// `eof`: the peer has closed, so a close-delimited body ends at the end of `buf`.
fn parse_response(
    buf: &[u8],
    head_only: bool,
    eof: bool,
) -> Result<Option<(RawResponse, usize)>, String> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err("response head over 64 KiB".into());
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| format!("response head is not UTF-8: {:?}", &buf[..head_end]))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_string();
    let status: u16 = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) =
            line.split_once(':').ok_or_else(|| format!("bad header line {line:?}"))?;
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut response = RawResponse { status, status_line, headers, ..RawResponse::default() };
    let body_start = head_end + 4;
    if head_only || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Some((response, body_start)));
    }
    let rest = &buf[body_start..];
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().ends_with("chunked"));
    if chunked {
        response.chunked = true;
        return Ok(parse_chunked(rest)?.map(|(body, trailers, used)| {
            response.body = body;
            response.trailers = trailers;
            (response, body_start + used)
        }));
    }
    if let Some(len) = response.header("content-length") {
        let len: usize = len.parse().map_err(|_| format!("bad content-length {len:?}"))?;
        if rest.len() < len {
            return Ok(None);
        }
        response.body = rest[..len].to_vec();
        return Ok(Some((response, body_start + len)));
    }
    if eof {
        response.body = rest.to_vec();
        return Ok(Some((response, buf.len())));
    }
    Ok(None)
}

type Chunked = (Vec<u8>, Vec<(String, String)>, usize);

/// Decodes a chunked body from the front of `buf`.
fn parse_chunked(buf: &[u8]) -> Result<Option<Chunked>, String> {
    let mut pos = 0;
    let mut body = Vec::new();
    loop {
        let Some(line_len) = find(&buf[pos..], b"\r\n") else { return Ok(None) };
        let line = std::str::from_utf8(&buf[pos..pos + line_len])
            .map_err(|_| "chunk size line not UTF-8".to_string())?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size line {line:?}"))?;
        pos += line_len + 2;
        if size == 0 {
            let mut trailers = Vec::new();
            loop {
                let Some(len) = find(&buf[pos..], b"\r\n") else { return Ok(None) };
                let line = String::from_utf8_lossy(&buf[pos..pos + len]).into_owned();
                pos += len + 2;
                if line.is_empty() {
                    return Ok(Some((body, trailers, pos)));
                }
                let (n, v) = line.split_once(':').ok_or_else(|| format!("bad trailer {line:?}"))?;
                trailers.push((n.to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        pos += size + 2;
    }
}

/// An HTTP/2 client connection (h2c, prior knowledge) to `addr`, its connection task
/// running on the current tokio runtime.
pub async fn h2c(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}
