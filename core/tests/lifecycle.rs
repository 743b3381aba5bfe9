//! Server lifecycle over real sockets, on both IO drivers: graceful shutdown finishes
//! in-flight requests, closes idle connections, refuses new ones, and gives up after
//! `shutdown_timeout`.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{addr, shutdown_and_wait, start, wait_within, Client};
use peregrine::{IoChoice, Limits, Server};

/// Starts `POST /collect` with a 10-byte body and `Expect: 100-continue`, returning once the
/// server's `100 Continue` proves the handler is reading the body.
fn in_flight_collect(server: &Server, content_length: usize) -> Client {
    let mut c = Client::connect(addr(server));
    c.send(
        format!(
            "POST /collect HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\
             Content-Length: {content_length}\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(c.read_response().status, 100, "handler did not start reading the body");
    c
}

/// Whether a new connection to `addr` is refused, or at least closed unanswered, within 1 s.
fn refused_or_closed(addr: SocketAddr) -> Result<(), String> {
    let mut c = match Client::try_connect(addr) {
        Err(_) => return Ok(()), // refused
        Ok(c) => c,
    };
    let _ = c.try_send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n");
    match c.read_until_closed(Duration::from_secs(1)) {
        Some(bytes) if bytes.is_empty() => Ok(()),
        Some(bytes) => {
            Err(format!("served during shutdown: {:?}", String::from_utf8_lossy(&bytes)))
        }
        None => Err("connection accepted and left hanging (no answer, no close) for 1 s".into()),
    }
}

/// An in-flight request whose body is streamed back: the response started before the
/// shutdown, so it completes, and the connection closes after it.
fn graceful_shutdown_completes_streaming_request(io: IoChoice) {
    let server = start(io, Limits::default());
    let mut c = Client::connect(addr(&server));
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello");
    // The echo streams: its head and the first 5 bytes prove the request is in flight.
    let head = c.read_head();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("10"));
    assert_eq!(c.read_exact(5), b"hello");
    let handle = server.shutdown_handle();
    handle.shutdown();
    assert!(handle.is_shutting_down());
    // The request is not cut off while it still makes progress.
    assert!(!c.data_within(Duration::from_millis(200)), "unexpected bytes: {:?}", c.buffered());
    c.send(b"world");
    assert_eq!(c.read_exact(5), b"world");
    assert!(c.is_closed(Duration::from_secs(2)), "connection kept open after a shutdown");
    drop(c);
    wait_within(server, Duration::from_secs(5));
}

/// An in-flight request whose response is produced after the shutdown began: it completes,
/// and says `connection: close`.
fn graceful_shutdown_completes_in_flight_request(io: IoChoice) {
    let server = start(io, Limits::default());
    let mut c = in_flight_collect(&server, 10);
    c.send(b"01234");
    server.shutdown();
    // The in-flight request is not cut off by the shutdown.
    assert!(!c.data_within(Duration::from_millis(200)), "unexpected bytes: {:?}", c.buffered());
    c.send(b"56789");
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str()), (200, "10"), "{r:?}");
    assert!(r.connection_close(), "last response before shutdown must say close: {r:?}");
    assert!(c.is_closed(Duration::from_secs(2)), "connection kept open after a shutdown");
    drop(c);
    wait_within(server, Duration::from_secs(5));
}

fn shutdown_closes_idle_connections(io: IoChoice) {
    let server = start(io, Limits::default());
    // One connection that never sends a request. It is connected first: the backlog is
    // FIFO, so once the later ones are served, it has been accepted too.
    let mut idle = vec![Client::connect(addr(&server))];
    for _ in 0..3 {
        let mut c = Client::connect(addr(&server));
        c.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(c.read_response().status, 200);
        idle.push(c);
    }
    let started = Instant::now();
    server.shutdown();
    for (i, c) in idle.iter_mut().enumerate() {
        let left = Duration::from_secs(2).saturating_sub(started.elapsed());
        assert!(c.is_closed(left), "idle connection {i} still open 2 s after shutdown");
        assert!(c.buffered().is_empty(), "connection {i} got {:?}", c.buffered());
    }
    drop(idle);
    wait_within(server, Duration::from_secs(10));
}

/// A client that has connected but not yet sent its first request when the shutdown
/// begins (just accepted, its request on the way) is not cut off: the request that comes
/// within the grace period is answered, with `connection: close`. An HTTP/1.1 client
/// retries only a request on a reused connection, so closing this one would fail it.
fn a_connection_about_to_send_its_first_request_is_served(io: IoChoice) {
    let server = start(io, Limits::default());
    // Connected first: once the later exchange is served, it has been accepted too.
    let mut fresh = Client::connect(addr(&server));
    let mut other = Client::connect(addr(&server));
    other.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(other.read_response().status, 200);
    server.shutdown();
    std::thread::sleep(Duration::from_millis(100));
    fresh.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = fresh.read_response();
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"), "{r:?}");
    assert!(r.connection_close(), "a response during the shutdown must say close: {r:?}");
    assert!(fresh.is_closed(Duration::from_secs(2)), "connection kept open after a shutdown");
    drop((fresh, other));
    wait_within(server, Duration::from_secs(5));
}

fn new_connections_refused_after_shutdown(io: IoChoice) {
    let server = start(io, Limits::default());
    let addr = addr(&server);
    common::assert_healthy(&server);
    shutdown_and_wait(server, Duration::from_secs(10));
    let err = Client::try_connect(addr).err().expect("connected to a stopped server");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}

/// While a shutdown waits for an in-flight request, new connections are not taken on.
fn new_connections_refused_during_shutdown(io: IoChoice) {
    let server =
        start(io, Limits { shutdown_timeout: Duration::from_secs(5), ..Limits::default() });
    let addr = addr(&server);
    let mut in_flight = in_flight_collect(&server, 10);
    let mut idle = Client::connect(addr);
    idle.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(idle.read_response().status, 200);
    server.shutdown();
    // The idle connection's close shows the reactor has begun its shutdown.
    assert!(idle.is_closed(Duration::from_secs(2)), "idle connection not closed by shutdown");
    let outcome = refused_or_closed(addr);
    // Finish the in-flight request so the server can stop.
    in_flight.send(b"0123456789");
    assert_eq!(in_flight.read_response().status, 200);
    drop(in_flight);
    wait_within(server, Duration::from_secs(10));
    outcome.unwrap();
}

fn shutdown_timeout_aborts_stalled_request(io: IoChoice) {
    let server =
        start(io, Limits { shutdown_timeout: Duration::from_secs(1), ..Limits::default() });
    let mut c = in_flight_collect(&server, 100);
    c.send(b"01234");
    let started = Instant::now();
    server.shutdown();
    let waited = wait_within(server, Duration::from_secs(3));
    assert!(waited >= Duration::from_millis(700), "did not wait for the in-flight request");
    let received = c.read_until_closed(Duration::from_secs(1)).expect("stalled connection open");
    assert!(
        common::count_status_lines(&received) == 0,
        "an aborted request gets no response: {:?}",
        String::from_utf8_lossy(&received)
    );
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// Once the last connection is gone, a shutting-down server stops at once.
fn wait_returns_when_last_connection_closes(io: IoChoice) {
    let server =
        start(io, Limits { shutdown_timeout: Duration::from_secs(20), ..Limits::default() });
    let mut idle = Client::connect(addr(&server));
    idle.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(idle.read_response().status, 200);
    let started = Instant::now();
    server.shutdown();
    assert!(idle.is_closed(Duration::from_secs(1)), "idle connection not closed by shutdown");
    let closed = started.elapsed();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        server.wait();
        let _ = tx.send(());
    });
    let stopped = rx.recv_timeout(Duration::from_secs(25)).map(|()| started.elapsed());
    let stopped = stopped.expect("wait() did not return even after shutdown_timeout");
    assert!(
        stopped < closed + Duration::from_secs(1),
        "last connection closed {closed:?} after shutdown(), but wait() returned only after \
         {stopped:?}"
    );
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether a plain listener (no SO_REUSEPORT) can take `port`: no socket of the failed
/// start is still bound there.
fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Two cores on `port`, with `admin` if given.
fn two_cores(io: IoChoice, port: u16, admin: Option<SocketAddr>) -> peregrine::ServerConfig {
    let mut config = common::config(io, Limits::default());
    config.listen = vec![SocketAddr::from(([127, 0, 0, 1], port)).into()];
    config.threads = Some(2);
    config.admin = admin;
    config
}

/// The handler factory panics on the second core it runs on: `Server::start` returns that
/// error promptly (no hang waiting for the other core), every reactor is stopped and
/// joined, and the port is free again.
fn start_fails_cleanly_when_a_factory_panics(io: IoChoice) {
    let port = free_port();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&calls);
    let began = Instant::now();
    let result = Server::start(two_cores(io, port, None), move || {
        if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            panic!("factory fails on purpose");
        }
        common::TestHandler::new()
    });
    let error = result.err().expect("start must fail");
    assert!(began.elapsed() < Duration::from_secs(5), "took {:?}", began.elapsed());
    assert!(
        matches!(&error, peregrine::StartError::Handler { message, .. } if message.contains("on purpose")),
        "{error}"
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!(port_is_free(port), "a reactor still holds port {port} after the failed start");
}

/// The admin listener cannot bind (its address is taken): the started reactors are stopped
/// and joined and the main port is free again.
fn start_fails_cleanly_when_admin_cannot_bind(io: IoChoice) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free_port();
    let config = two_cores(io, port, Some(taken.local_addr().unwrap()));
    let error = Server::start(config, common::TestHandler::new).err().expect("start must fail");
    assert!(matches!(error, peregrine::StartError::Admin(..)), "{error}");
    assert!(port_is_free(port), "a reactor still holds port {port} after the failed start");
}

both_drivers!(
    start_fails_cleanly_when_a_factory_panics,
    start_fails_cleanly_when_admin_cannot_bind,
    graceful_shutdown_completes_streaming_request,
    graceful_shutdown_completes_in_flight_request,
    shutdown_closes_idle_connections,
    a_connection_about_to_send_its_first_request_is_served,
    new_connections_refused_after_shutdown,
    new_connections_refused_during_shutdown,
    shutdown_timeout_aborts_stalled_request,
    wait_returns_when_last_connection_closes,
);
