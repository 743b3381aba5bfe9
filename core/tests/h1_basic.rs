//! HTTP/1.1 basics over real sockets, on both IO drivers: hyper as a client, raw pipelining,
//! chunked uploads, `Expect: 100-continue`, HTTP/1.0 persistence, handler panics, and curl.

mod common;

use std::net::SocketAddr;
#[cfg(not(windows))]
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::{addr, assert_healthy, finish, start, Client};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use peregrine::routes::BuiltinRoutes;
use peregrine::{IoChoice, Limits};

/// Runs `f` on a current-thread tokio runtime, failing after 10 s.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), f).await.expect("hyper exchange timed out")
    })
}

/// A hyper HTTP/1 connection to `addr` (over tokio-rustls, ALPN `http/1.1`, to a TLS
/// test server).
async fn connect(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    if common::is_tls(addr) {
        let connector =
            tokio_rustls::TlsConnector::from(common::tls::client_config(&[b"http/1.1"]));
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let stream = connector.connect(name, stream).await.expect("TLS handshake");
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        return handshake(stream).await;
    }
    handshake(stream).await
}

async fn handshake<T>(io: T) -> SendRequest<Full<Bytes>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.expect("handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

/// Sends one request and returns the status, headers and whole body.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    method: Method,
    path: &str,
    body: &'static [u8],
) -> (StatusCode, http::HeaderMap, Bytes) {
    sender.ready().await.expect("connection ready for another request");
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "peregrine.test")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    let response = sender.send_request(request).await.expect("send_request");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    (parts.status, parts.headers, body)
}

fn hyper_get_plaintext_and_json(io: IoChoice) {
    let server = start(io, Limits::default());
    let addr = addr(&server);
    block_on(async {
        let mut s = connect(addr).await;
        let (status, headers, body) = exchange(&mut s, Method::GET, "/plaintext", b"").await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "text/plain");
        assert_eq!(headers["content-length"], "13");
        assert!(headers.contains_key("date"), "{headers:?}");
        assert_eq!(body, "Hello, World!");

        let mut s = connect(addr).await;
        let (status, headers, body) = exchange(&mut s, Method::GET, "/json", b"").await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(body, r#"{"message":"Hello, World!"}"#);

        let (status, _, _) = exchange(&mut s, Method::GET, "/no/such/route", b"").await;
        assert_eq!(status, 404);
    });
    finish(server);
}

fn hyper_head_plaintext(io: IoChoice) {
    let server = start(io, Limits::default());
    let addr = addr(&server);
    block_on(async {
        let mut s = connect(addr).await;
        let (status, headers, body) = exchange(&mut s, Method::HEAD, "/plaintext", b"").await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-length"], "13");
        assert!(body.is_empty());
        // Had the server sent a body, this next response on the connection would be garbled.
        let (status, _, body) = exchange(&mut s, Method::GET, "/plaintext", b"").await;
        assert_eq!(status, 200);
        assert_eq!(body, "Hello, World!");
    });
    // The same on the wire: the HEAD response ends at its head, the GET response follows.
    let mut c = Client::connect(addr);
    c.send(
        b"HEAD /plaintext HTTP/1.1\r\nHost: x\r\n\r\nGET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let head = c.read_head();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("13"));
    assert!(c.buffered().is_empty() || c.buffered().starts_with(b"HTTP/1.1 200"));
    let get = c.read_response();
    assert_eq!(get.body, b"Hello, World!");
    drop(c);
    finish(server);
}

fn hyper_post_echo(io: IoChoice) {
    let server = start(io, Limits::default());
    let addr = addr(&server);
    block_on(async {
        let mut s = connect(addr).await;
        let payload: &'static [u8] = b"the quick brown fox \x00\xff jumps";
        let (status, headers, body) = exchange(&mut s, Method::POST, "/echo", payload).await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-length"], payload.len().to_string().as_str());
        assert_eq!(headers["content-type"], "application/octet-stream");
        assert_eq!(body, payload);
    });
    finish(server);
}

fn hyper_keep_alive(io: IoChoice) {
    let server = start(io, Limits::default());
    let addr = addr(&server);
    block_on(async {
        let mut s = connect(addr).await;
        for i in 0..20 {
            let (status, _, body) = match i % 3 {
                0 => exchange(&mut s, Method::GET, "/plaintext", b"").await,
                1 => exchange(&mut s, Method::POST, "/echo", b"keep me alive").await,
                _ => exchange(&mut s, Method::POST, "/collect", b"0123456789").await,
            };
            assert_eq!(status, 200, "request {i}");
            let expected: &[u8] = match i % 3 {
                0 => b"Hello, World!",
                1 => b"keep me alive",
                _ => b"10",
            };
            assert_eq!(body, expected, "request {i}");
        }
    });
    finish(server);
}

fn pipelined_echo(io: IoChoice) {
    let server = start(io, Limits::default());
    let mut wire = Vec::new();
    for i in 0..100 {
        let body = format!("req-{i}");
        wire.extend_from_slice(
            format!(
                "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    let mut c = Client::connect(addr(&server));
    c.send(&wire);
    for i in 0..100 {
        let r = c.read_response();
        assert_eq!(r.status, 200, "response {i}");
        assert_eq!(r.text(), format!("req-{i}"), "response {i} out of order or wrong");
        assert!(!r.connection_close(), "response {i}");
    }
    // Nothing more: exactly one response per request.
    assert!(!c.data_within(Duration::from_millis(200)), "extra bytes: {:?}", c.buffered());
    drop(c);
    finish(server);
}

fn chunked_upload_echo(io: IoChoice) {
    let server = start(io, Limits::default());
    let mut c = Client::connect(addr(&server));
    c.send(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n\
          1;name=value\r\n \r\n\
          d\r\nchunked world\r\n\
          A\r\n0123456789\r\n\
          0\r\nX-Trailer: yes\r\n\r\n",
    );
    let r = c.read_response();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "hello chunked world0123456789");
    assert!(r.header("content-length").is_none(), "unknown length is sent chunked: {r:?}");
    assert!(r.chunked);
    // The trailer was consumed as part of the body: the connection carries another request.
    c.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.body, b"Hello, World!");
    drop(c);
    finish(server);
}

fn expect_continue_echo(io: IoChoice) {
    let server = start(io, Limits::default());
    let mut c = Client::connect(addr(&server));
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n");
    let interim = c.read_response();
    assert_eq!(interim.status_line, "HTTP/1.1 100 Continue");
    assert!(c.buffered().is_empty(), "nothing but 100 before the body: {:?}", c.buffered());
    c.send(b"hello world");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello world");
    drop(c);
    finish(server);
}

/// The echo handler returns its response before reading the body; the body is then read (and
/// 100 Continue sent) while the response streams, so by the end of the exchange the request
/// framing is known and the connection could be reused.
fn expect_continue_echo_keeps_alive(io: IoChoice) {
    let server = start(io, Limits::default());
    let mut c = Client::connect(addr(&server));
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n");
    assert_eq!(c.read_response().status, 100);
    c.send(b"hello world");
    let r = c.read_response();
    assert_eq!(r.body, b"hello world");
    assert!(!r.connection_close(), "body fully read, yet the connection is closed: {r:?}");
    c.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().body, b"Hello, World!");
    drop(c);
    finish(server);
}

fn expect_continue_unread_body(io: IoChoice) {
    let server = start(io, Limits::default());
    let mut c = Client::connect(addr(&server));
    c.send(
        b"POST /plaintext HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    let r = c.read_response();
    assert_eq!(r.status, 200, "a final response, no 100 Continue: {r:?}");
    assert_eq!(r.body, b"Hello, World!");
    assert!(r.connection_close(), "framing unknowable, so the server closes: {r:?}");
    assert!(c.is_closed(Duration::from_secs(3)), "connection left open");
    assert!(c.buffered().is_empty(), "bytes after the response: {:?}", c.buffered());
    drop(c);
    finish(server);
}

fn http10_closes(io: IoChoice) {
    let server = start(io, Limits::default());
    let mut c = Client::connect(addr(&server));
    c.send(b"GET /plaintext HTTP/1.0\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"Hello, World!");
    assert!(r.connection_close(), "{r:?}");
    assert!(c.is_closed(Duration::from_secs(3)), "HTTP/1.0 connection left open");
    drop(c);
    finish(server);
}

fn http10_keep_alive(io: IoChoice) {
    let server = start(io, Limits::default());
    let mut c = Client::connect(addr(&server));
    for i in 0..2 {
        c.send(b"GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = c.read_response();
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.header("connection"), Some("keep-alive"), "request {i}: {r:?}");
        assert_eq!(r.body, b"Hello, World!");
    }
    drop(c);
    finish(server);
}

fn handler_panic(io: IoChoice) {
    let server = start(io, Limits::default());
    let mut c = Client::connect(addr(&server));
    // A request pipelined behind the panicking one must not be answered: the connection
    // closes after the 500.
    c.send(b"GET /panic HTTP/1.1\r\nHost: x\r\n\r\nGET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.connection_close(), "{r:?}");
    assert!(c.is_closed(Duration::from_secs(3)), "connection left open after a panic");
    assert!(c.buffered().is_empty(), "answered past the panic: {:?}", c.buffered());
    // The core survived: a second panic and normal requests both work.
    let r = common::request(addr(&server), b"GET /panic HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 500);
    drop(c);
    finish(server);
}

/// A response body that panics mid-stream: the response is cut (the connection closes
/// without the chunked body's end, so the client cannot take it for complete), and the core
/// (one thread) keeps serving new clients.
fn response_body_panic(io: IoChoice) {
    let server = start(io, Limits::default());
    let mut c = Client::connect(addr(&server));
    c.send(b"GET /panic-body HTTP/1.1\r\nHost: x\r\n\r\n");
    let cut = c.try_read_response();
    assert!(cut.is_err(), "a complete response from a panicking body: {cut:?}");
    assert!(c.is_closed(Duration::from_secs(3)), "connection left open after a body panic");
    let r = common::request(addr(&server), b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.status, &r.body[..]), (200, &b"Hello, World!"[..]));
    assert_healthy(&server);
    drop(c);
    finish(server);
}

/// A handler that sets a wrong content-length: the head advertises the body actually sent,
/// and the connection stays usable (no desynchronised framing).
fn wrong_content_length_is_replaced(io: IoChoice) {
    let server = start(io, Limits::default());
    let mut c = Client::connect(addr(&server));
    c.send(b"GET /wrong-length HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!((r.status, &r.body[..]), (200, &b"hello"[..]));
    let lengths: Vec<_> = r.headers.iter().filter(|(n, _)| n == "content-length").collect();
    assert_eq!(lengths, [&("content-length".to_string(), "5".to_string())], "{r:?}");
    c.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().body, b"Hello, World!");
    finish(server);
}

/// Runs curl with `args` (plus safety flags), returning (success, stdout, stderr).
#[cfg(not(windows))]
fn curl(args: &[&str], stdin: Option<&[u8]>) -> (bool, Vec<u8>, String) {
    use std::io::Write;
    let mut cmd = Command::new("curl");
    // -k: TLS test servers present a certificate from the tests' own CA.
    cmd.args(["-q", "-sS", "-k", "--http1.1", "--max-time", "5", "--noproxy", "*"]).args(args);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn curl");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).expect("curl stdin");
    }
    let out = child.wait_with_output().expect("curl output");
    (out.status.success(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[cfg(not(windows))]
fn curl_available() -> bool {
    Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(not(windows))]
fn curl_clients(io: IoChoice) {
    if !curl_available() {
        println!("note: curl is not on PATH; skipping the curl test");
        return;
    }
    let server = start(io, Limits::default());
    let base = format!("{}://{}", common::scheme(addr(&server)), addr(&server));

    let (ok, out, err) = curl(&[&format!("{base}/plaintext")], None);
    assert!(ok, "curl GET failed: {err}");
    assert_eq!(out, b"Hello, World!");

    let (ok, out, err) = curl(
        &["-X", "POST", "--data-binary", "posted by curl & co", &format!("{base}/echo")],
        None,
    );
    assert!(ok, "curl POST failed: {err}");
    assert_eq!(out, b"posted by curl & co");

    let body: Vec<u8> = (0..2048).map(|i| b'a' + (i % 26) as u8).collect();
    let (ok, out, err) = curl(
        &[
            "-v",
            "-H",
            "Expect: 100-continue",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            "@-",
            &format!("{base}/echo"),
        ],
        Some(&body),
    );
    assert!(ok, "curl 100-continue POST failed: {err}");
    assert!(err.contains("HTTP/1.1 100 Continue"), "no 100 Continue seen by curl: {err}");
    assert_eq!(out, body);
    finish(server);
}

/// A handler's fixed answers ([`peregrine::Handler::answer`]) over HTTP/1.1: written with
/// the server's fields and framing, `call` never asked; a request with a body, and any the
/// handler does not answer, goes to `call`; a panic in `answer` is a 500 that closes the
/// connection, and the core goes on.
fn fixed_answers(io: IoChoice) {
    use std::sync::atomic::Ordering::SeqCst;
    let (server, calls) = common::start_answering(io);
    let mut c = Client::connect(addr(&server));
    c.send(b"GET /fixed HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!((r.status, &r.body[..]), (200, &b"fixed"[..]), "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("content-length"), Some("5"));
    assert!(r.header("date").is_some() && r.header("server").is_some(), "{r:?}");
    assert_eq!(calls.load(SeqCst), 0, "call was asked for an answered request");
    // Pipelined, mixed with requests that go to `call`, answered in order.
    c.send(
        b"GET /fixed HTTP/1.1\r\nHost: x\r\n\r\nGET /other HTTP/1.1\r\nHost: x\r\n\r\n\
          HEAD /fixed HTTP/1.1\r\nHost: x\r\n\r\nGET /host HTTP/1.1\r\nHost: example.test\r\n\r\n",
    );
    assert_eq!(c.read_response().body, b"fixed");
    assert_eq!(c.read_response().body, b"called");
    let head = c.read_head();
    assert_eq!((head.status, head.header("content-length")), (200, Some("5")), "{head:?}");
    assert_eq!(c.read_response().body, b"example.test");
    assert_eq!(calls.load(SeqCst), 1);
    // A request with a body is not answered from its head.
    c.send(b"POST /fixed HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(c.read_response().body, b"called");
    assert_eq!(calls.load(SeqCst), 2);
    // A panic while answering: a 500, the connection closed, the core still serving.
    c.send(b"GET /fixed-panic HTTP/1.1\r\nHost: x\r\n\r\nGET /fixed HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 500, "{r:?}");
    assert!(c.is_closed(Duration::from_secs(3)), "connection left open after a panic");
    assert!(c.buffered().is_empty(), "answered past the panic: {:?}", c.buffered());
    let r = common::request(addr(&server), b"GET /fixed HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.status, &r.body[..]), (200, &b"fixed"[..]));
    // HTTP/1.0 without keep-alive: answered, then closed.
    let mut c = Client::connect(addr(&server));
    c.send(b"GET /fixed HTTP/1.0\r\n\r\n");
    assert_eq!(c.read_response().body, b"fixed");
    assert!(c.is_closed(Duration::from_secs(3)), "HTTP/1.0 connection left open");
    finish(server);
}

/// A fixed answer the socket cannot take at once: what the send that does not wait leaves
/// goes out later, whole and in order, while the client is slow to read; pipelined ones
/// past the batching threshold too; and the connection carries on.
fn fixed_answers_larger_than_the_socket_takes(io: IoChoice) {
    let (server, _) = common::start_answering(io);
    let big = common::big_body();
    let mut c = Client::connect(addr(&server));
    c.send(
        b"GET /fixed-big HTTP/1.1
Host: x

",
    );
    // Nothing is read for a while: the server's send fills the socket and must wait.
    std::thread::sleep(Duration::from_millis(300));
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert!(r.body == big, "a {} byte body, not the {} sent", r.body.len(), big.len());
    c.send(
        &b"GET /fixed-big HTTP/1.1
Host: x

"
        .repeat(3),
    );
    for _ in 0..3 {
        assert!(c.read_response().body == big, "a pipelined large answer came back changed");
    }
    c.send(
        b"GET /fixed HTTP/1.1
Host: x

",
    );
    assert_eq!(c.read_response().body, b"fixed");
    finish(server);
}

/// Fixed answers that differ in status, type, length and request (`HEAD`, HTTP/1.0) one
/// after another on one connection, pipelined: each head is its own (the start of the last
/// one written is reused only for the same answer), with one of each field.
fn alternating_fixed_answers(io: IoChoice) {
    // The binary's routes, which answer these from the head.
    let config = common::config(io, Limits::default());
    let server = peregrine::Server::start(config, || BuiltinRoutes::new(&[])).expect("start");
    let mut c = Client::connect(addr(&server));
    c.send(
        b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /json HTTP/1.1\r\nHost: x\r\n\r\n\
          HEAD /plaintext HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n\
          GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let plain = ("text/plain", &b"Hello, World!"[..]);
    let json = ("application/json", &br#"{"message":"Hello, World!"}"#[..]);
    let missing = ("text/plain", &b"Not Found\n"[..]);
    let expected = [
        (200, plain, false, None),
        (200, json, false, None),
        (200, plain, true, None),
        (200, plain, false, Some("keep-alive")),
        (404, missing, false, None),
        (200, plain, false, None),
    ];
    for (i, (status, (content_type, body), head_only, connection)) in
        expected.into_iter().enumerate()
    {
        let r = if head_only { c.read_head() } else { c.read_response() };
        assert_eq!(r.status, status, "response {i}");
        for (name, value) in [
            ("content-type", content_type.to_string()),
            ("content-length", body.len().to_string()),
            ("server", "peregrine".to_string()),
        ] {
            let values: Vec<_> = r.headers.iter().filter(|(n, _)| n == name).collect();
            assert_eq!(values.len(), 1, "response {i}: {name}");
            assert_eq!(values[0].1, value, "response {i}: {name}");
        }
        assert_eq!(r.headers.iter().filter(|(n, _)| n == "date").count(), 1, "response {i}");
        assert_eq!(r.header("connection"), connection, "response {i}");
        let want: &[u8] = if head_only { b"" } else { body };
        assert_eq!(r.body, want, "response {i}");
    }
    drop(c);
    finish(server);
}

all_transports!(
    fixed_answers,
    fixed_answers_larger_than_the_socket_takes,
    hyper_get_plaintext_and_json,
    hyper_head_plaintext,
    hyper_post_echo,
    hyper_keep_alive,
    pipelined_echo,
    chunked_upload_echo,
    expect_continue_echo,
    expect_continue_echo_keeps_alive,
    expect_continue_unread_body,
    http10_closes,
    http10_keep_alive,
    handler_panic,
    response_body_panic,
    wrong_content_length_is_replaced,
);
// Cleartext: the head's bytes do not depend on the transport.
both_drivers!(alternating_fixed_answers);
// curl is a Linux program: under Wine (the Windows CI) a test cannot start it, so the curl
// client test runs on Linux only; the Windows CI checks the binary with curl from Linux.
#[cfg(not(windows))]
both_drivers!(curl_clients);
