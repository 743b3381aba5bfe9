//! Every HTTP/1 limit crossed over a real socket, on both IO drivers, with small configured
//! values so each test takes a few seconds: the exact response, the close, and a server that
//! still answers everyone else afterwards.

mod common;

use std::time::{Duration, Instant};

use common::{addr, count_status_lines, finish, first_status, start, Client};

/// A connection slot comes back when the server has processed the client's close, which
/// happens shortly after the client's `close()` returns; retries wait this long between tries.
const SETTLE: Duration = Duration::from_millis(50);
use peregrine::routes::BuiltinRoutes;
use peregrine::{IoChoice, Limits, MinDataRate};

fn limits() -> Limits {
    Limits {
        max_request_line_size: 256,
        max_request_headers_total_size: 512,
        max_request_header_count: 10,
        max_request_body_size: Some(1000),
        ..Limits::default()
    }
}

/// Sends `request` on a new connection; asserts exactly one response with `status`, then a
/// close by the server.
fn assert_rejected(server: &peregrine::Server, request: &[u8], status: u16, what: &str) {
    let mut c = Client::connect(addr(server));
    c.send(request);
    let received = c.read_to_eof();
    let text = String::from_utf8_lossy(&received);
    assert_eq!(count_status_lines(&received), 1, "{what}: {text:?}");
    assert_eq!(first_status(&received), Some(status), "{what}: {text:?}");
}

fn request_line_too_long(io: IoChoice) {
    let server = start(io, limits());
    // "GET " + target + " HTTP/1.1\r\n" is 4 + len + 11 bytes: 256 exactly fits, 257 does not.
    let at_limit = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(256 - 15 - 1));
    let r = common::request(addr(&server), at_limit.as_bytes());
    assert_eq!(r.status, 404, "a request line of exactly max_request_line_size: {r:?}");
    let over = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(256 - 15));
    assert_rejected(&server, over.as_bytes(), 414, "request line one byte over");
    let far_over = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(4000));
    assert_rejected(&server, far_over.as_bytes(), 414, "request line far over");
    finish(server);
}

/// A head refused on a connection that has served a request still gets its error response
/// (the flag "this response has started" belongs to each request), after the responses to
/// the requests pipelined before it.
fn refused_head_after_a_served_request(io: IoChoice) {
    let server = start(io, limits());
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(4000));
    // Keep-alive: one request answered and sent, then the refused one.
    let mut c = Client::connect(addr(&server));
    c.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().status, 200);
    c.send(long.as_bytes());
    let received = c.read_to_eof();
    assert_eq!(first_status(&received), Some(414), "{:?}", String::from_utf8_lossy(&received));
    // Pipelined: both in one write; the first response is not lost to the second's error.
    let mut both = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    both.extend_from_slice(long.as_bytes());
    let mut c = Client::connect(addr(&server));
    c.send(&both);
    let received = c.read_to_eof();
    let text = String::from_utf8_lossy(&received);
    assert_eq!(first_status(&received), Some(200), "{text:?}");
    assert!(text.contains("Hello, World!HTTP/1.1 414 URI Too Long\r\n"), "{text:?}");
    finish(server);
}

fn headers_too_large(io: IoChoice) {
    let server = start(io, limits());
    let under = format!("GET /plaintext HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(400));
    assert_eq!(common::request(addr(&server), under.as_bytes()).status, 200);
    let over = format!("GET /plaintext HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(600));
    assert_rejected(&server, over.as_bytes(), 431, "one header over the section size");
    let many: String = (0..9).map(|i| format!("X-H{i}: {}\r\n", "c".repeat(60))).collect();
    let over = format!("GET /plaintext HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    assert_rejected(&server, over.as_bytes(), 431, "several headers adding up over the size");
    finish(server);
}

fn too_many_headers(io: IoChoice) {
    let server = start(io, limits());
    let nine: String = (0..9).map(|i| format!("X-H{i}: v\r\n")).collect();
    let at_limit = format!("GET /plaintext HTTP/1.1\r\nHost: x\r\n{nine}\r\n");
    assert_eq!(common::request(addr(&server), at_limit.as_bytes()).status, 200, "10 headers");
    let ten: String = (0..10).map(|i| format!("X-H{i}: v\r\n")).collect();
    let over = format!("GET /plaintext HTTP/1.1\r\nHost: x\r\n{ten}\r\n");
    assert_rejected(&server, over.as_bytes(), 431, "11 headers");
    finish(server);
}

fn content_length_over_body_limit(io: IoChoice) {
    let server = start(io, limits());
    // At the limit: accepted and read.
    let mut ok = b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".to_vec();
    ok.extend_from_slice(&[b'z'; 1000]);
    let r = common::request(addr(&server), &ok);
    assert_eq!((r.status, r.text().as_str()), (200, "1000"));

    // Over it: 413 before the client sends any of the body.
    let mut c = Client::connect(addr(&server));
    c.send(b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 413, "{r:?}");
    assert!(r.connection_close(), "{r:?}");
    assert!(c.is_closed(Duration::from_secs(3)), "connection left open after 413");
    assert!(c.buffered().is_empty(), "{:?}", c.buffered());
    drop(c);

    // With Expect: 100-continue: 413 and no 100 Continue.
    let mut c = Client::connect(addr(&server));
    c.send(
        b"POST /collect HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\
          Content-Length: 5000\r\n\r\n",
    );
    let received = c.read_to_eof();
    let text = String::from_utf8_lossy(&received);
    assert_eq!(count_status_lines(&received), 1, "413 only, no 100 Continue: {text:?}");
    assert_eq!(first_status(&received), Some(413), "{text:?}");
    drop(c);
    finish(server);
}

fn chunked_body_over_limit(io: IoChoice) {
    let server = start(io, limits());
    let chunk = format!("258\r\n{}\r\n", "y".repeat(600)); // 0x258 = 600 bytes
    let under = format!(
        "POST /collect HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}0\r\n\r\n"
    );
    let r = common::request(addr(&server), under.as_bytes());
    assert_eq!((r.status, r.text().as_str()), (200, "600"));
    let over = format!(
        "POST /collect HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
         {chunk}{chunk}{chunk}0\r\n\r\n"
    );
    assert_rejected(&server, over.as_bytes(), 413, "chunked body growing past 1000 bytes");
    finish(server);
}

fn keep_alive_timeout(io: IoChoice) {
    let server = start(io, Limits { keep_alive_timeout: Duration::from_secs(1), ..limits() });
    let mut c = Client::connect(addr(&server));
    c.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().status, 200);
    let idle = c.wait_closed(Duration::from_secs(3)).expect("idle connection not closed in 3 s");
    assert!(idle >= Duration::from_millis(700), "closed after {idle:?}, before the timeout");
    assert!(c.buffered().is_empty(), "an idle close sends nothing: {:?}", c.buffered());
    drop(c);
    finish(server);
}

fn request_headers_timeout(io: IoChoice) {
    let server = start(io, Limits { request_headers_timeout: Duration::from_secs(1), ..limits() });
    // A connection that never sends a byte.
    let mut silent = Client::connect(addr(&server));
    // Slowloris: a partial head, then one header byte every 300 ms.
    let started = Instant::now();
    let mut slow = Client::connect(addr(&server));
    slow.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n");
    let deadline = started + Duration::from_secs(3);
    let mut sent = 0;
    while Instant::now() < deadline {
        if slow.try_send(b"X").is_err() || slow.data_within(Duration::from_millis(300)) {
            break;
        }
        sent += 1;
    }
    let received = slow.read_until_closed(Duration::from_secs(1)).unwrap_or_else(|| {
        panic!("slowloris connection open after {:?} ({sent} bytes trickled)", started.elapsed())
    });
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&received);
    assert_eq!(first_status(&received), Some(408), "{text:?}");
    assert_eq!(count_status_lines(&received), 1, "{text:?}");
    assert!(elapsed >= Duration::from_millis(700), "408 after only {elapsed:?}");
    assert!(sent >= 2, "the trickle should have kept going for a while ({sent} bytes)");

    let closed = silent.wait_closed(Duration::from_secs(3).saturating_sub(started.elapsed()));
    assert!(closed.is_some(), "silent connection still open ~3 s after connecting");
    drop((silent, slow));
    finish(server);
}

fn min_request_body_data_rate(io: IoChoice) {
    let rate = MinDataRate { bytes_per_second: 1000.0, grace_period: Duration::from_secs(1) };
    let server = start(io, Limits { min_request_body_data_rate: Some(rate), ..Limits::default() });
    let mut c = Client::connect(addr(&server));
    let started = Instant::now();
    c.send(b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n0123456789");
    let received = c.read_until_closed(Duration::from_secs(4)).expect("stalled body not cut off");
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&received);
    assert_eq!(first_status(&received), Some(408), "{text:?}");
    assert_eq!(count_status_lines(&received), 1, "{text:?}");
    assert!(elapsed >= Duration::from_millis(700), "408 after only {elapsed:?}");
    drop(c);
    finish(server);
}

fn max_connections(io: IoChoice) {
    let server = start(io, Limits { max_connections: Some(2), ..Limits::default() });
    let get = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n";
    // Two connections in the middle of a request head: busy, not idle.
    let mut held: Vec<Client> = (0..2)
        .map(|_| {
            let mut c = Client::connect(addr(&server));
            c.send(b"GET /plaintext HTTP/1.1\r\n");
            c
        })
        .collect();
    std::thread::sleep(SETTLE);
    let mut third = Client::connect(addr(&server));
    third.send(get);
    let received = third.read_to_eof();
    let text = String::from_utf8_lossy(&received);
    assert_eq!(first_status(&received), Some(503), "third connection: {text:?}");
    assert_eq!(count_status_lines(&received), 1, "{text:?}");

    // Both held connections still work, and then wait idle for their next request.
    for c in &mut held {
        c.send(b"Host: x\r\n\r\n");
        assert_eq!(c.read_response().status, 200);
    }
    std::thread::sleep(SETTLE);
    // Admission under pressure: a new client is served, and the connection idle the
    // longest is closed to make room for it.
    assert!(serve_within(&server, Duration::from_secs(3)), "a newcomer is admitted");
    let closed =
        held.iter_mut().map(|c| c.is_closed(Duration::from_secs(2))).filter(|&x| x).count();
    assert!(closed >= 1, "an idle connection gave up its slot");
    drop(held);
    assert!(serve_within(&server, Duration::from_secs(3)), "slots not freed");
    // Let the server see the last probe's close, so the final health check gets a slot.
    std::thread::sleep(SETTLE);
    finish(server);
}

/// Tries a new connection's `GET /plaintext` until one is answered 200 (not 503).
fn serve_within(server: &peregrine::Server, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let r = common::request(addr(server), b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n");
        match r.status {
            200 => return true,
            503 => std::thread::sleep(SETTLE),
            other => panic!("unexpected status {other}"),
        }
    }
    false
}

fn request_body_drain_timeout(io: IoChoice) {
    let server = start(
        io,
        Limits { request_body_drain_timeout: Duration::from_secs(1), ..Limits::default() },
    );
    let mut c = Client::connect(addr(&server));
    c.send(b"POST /plaintext HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n0123456789");
    let r = c.read_response();
    let answered = Instant::now();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"Hello, World!"[..]));
    assert!(c.is_closed(Duration::from_secs(3)), "undrainable body: connection not closed");
    let after = answered.elapsed();
    assert!(after >= Duration::from_millis(700), "closed {after:?} after the response");
    assert!(c.buffered().is_empty(), "{:?}", c.buffered());
    drop(c);
    finish(server);
}

fn unread_small_body_is_drained(io: IoChoice) {
    let server = start(io, Limits::default());
    let mut c = Client::connect(addr(&server));
    c.send(b"POST /plaintext HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert!(!r.connection_close(), "{r:?}");
    c.send(b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str()), (200, r#"{"message":"Hello, World!"}"#));
    // Pipelined: the unread body must not be taken for the next request.
    c.send(
        b"POST /plaintext HTTP/1.1\r\nHost: x\r\nContent-Length: 26\r\n\r\n\
          GET /smuggled HTTP/1.1\r\n\r\nGET /json HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(c.read_response().body, b"Hello, World!");
    assert_eq!(c.read_response().status, 200, "the request after the drained body");
    drop(c);
    finish(server);
}

fn min_response_data_rate(io: IoChoice) {
    // Bytes the kernel takes into its socket buffers count as delivered: on loopback that is
    // about 4 MB, which at 1 MB/s would earn the client ~4 s more. At 8 MB/s the earned time
    // is ~0.5 s, so with the 1 s grace the server must give up well within 3 s.
    let rate = MinDataRate { bytes_per_second: 8_000_000.0, grace_period: Duration::from_secs(1) };
    let server = start(io, Limits { min_response_data_rate: Some(rate), ..Limits::default() });
    let mut c = Client::connect(addr(&server));
    c.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
    // The client must not read to be slow, so only the clock can pace this test.
    std::thread::sleep(Duration::from_secs(3));
    let received = c.read_until_closed(Duration::from_secs(5));
    let received = received.expect("server still sending after the client stalled");
    assert_eq!(first_status(&received), Some(200));
    assert!(
        received.len() < common::BIG_BODY_LEN / 2,
        "got {} of {} bytes: the stalled response was not aborted",
        received.len(),
        common::BIG_BODY_LEN
    );
    drop(c);
    finish(server);
}

/// Sends `bytes` in `piece`-byte writes, each its own segment, reading nothing meanwhile.
fn trickle(c: &mut Client, bytes: &[u8], piece: usize) {
    c.stream().set_nodelay(true).unwrap();
    for chunk in bytes.chunks(piece) {
        if c.try_send(chunk).is_err() {
            return; // the server may close once a limit fires; the response is already sent
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn limits_fire_when_the_head_trickles_in(io: IoChoice) {
    // The server re-parses a growing head only when new bytes could end it or a limit is
    // crossed; a head sent a byte (or a few) at a time must still be answered exactly as a
    // head sent whole.
    let server = start(io, limits());
    let mut c = Client::connect(addr(&server));
    trickle(&mut c, b"GET /plaintext HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n", 1);
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));
    let mut c = Client::connect(addr(&server));
    trickle(&mut c, format!("GET /{} HTTP/1.1\r\n", "a".repeat(400)).as_bytes(), 7);
    assert_eq!(first_status(&c.read_to_eof()), Some(414), "request line trickled past the limit");
    let mut c = Client::connect(addr(&server));
    let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n", "b".repeat(700));
    trickle(&mut c, big.as_bytes(), 5);
    assert_eq!(first_status(&c.read_to_eof()), Some(431), "headers trickled past the limit");
    drop(c);
    finish(server);
}

/// A field name longer than an `http::HeaderName` holds (64 KiB), under a section limit that
/// allows it: refused with 400 by the parser, also where the request would be answered from
/// its head without any `HeaderMap` (the built-in `/plaintext`), and the longest allowed
/// name is served.
fn field_name_longer_than_a_header_map_holds(io: IoChoice) {
    let limits = Limits { max_request_headers_total_size: 256 * 1024, ..Limits::default() };
    let server =
        peregrine::Server::start(common::config(io, limits), || BuiltinRoutes::new(&[])).unwrap();
    let head = |name_len: usize| {
        format!("GET /plaintext HTTP/1.1\r\nHost: x\r\n{}: v\r\n\r\n", "n".repeat(name_len))
    };
    let longest = common::request(addr(&server), head(65_535).as_bytes());
    assert_eq!((longest.status, &longest.body[..]), (200, &b"Hello, World!"[..]));
    assert_rejected(&server, head(65_536).as_bytes(), 400, "a 64 KiB + 1 field name");
    finish(server);
}

all_transports!(
    limits_fire_when_the_head_trickles_in,
    request_line_too_long,
    refused_head_after_a_served_request,
    headers_too_large,
    too_many_headers,
    content_length_over_body_limit,
    chunked_body_over_limit,
    keep_alive_timeout,
    request_headers_timeout,
    min_request_body_data_rate,
    request_body_drain_timeout,
    unread_small_body_is_drained,
    min_response_data_rate,
);

// Over TLS a connection past max_connections is closed before the handshake (no 503): see
// tls.rs.
both_drivers!(max_connections);
// The parser is the same behind TLS; its cleartext run is the one to read.
both_drivers!(field_name_longer_than_a_header_map_holds);
