//! HTTP/2 end to end with real clients: the `h2` crate's and hyper's clients over h2c (prior
//! knowledge) and over TLS with ALPN `h2`, plus curl, nghttp and a short h2load run.

mod common;

use std::net::SocketAddr;
#[cfg(not(windows))]
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{addr, finish, start};
use http::{Method, Request, StatusCode};
use peregrine::routes::BuiltinRoutes;
use peregrine::{IoChoice, Limits};
use tokio::net::TcpStream;

/// How a test client reaches the server.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// Cleartext, HTTP/2 prior knowledge.
    H2c,
    /// TLS with ALPN `h2`.
    Tls,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Starts a one-core server (TLS when `via` says so).
fn server(io: IoChoice, via: Via, limits: Limits) -> peregrine::Server {
    common::set_tls_mode(matches!(via, Via::Tls));
    let s = start(io, limits);
    common::set_tls_mode(false);
    s
}

type SendRequest = h2::client::SendRequest<Bytes>;

/// An `h2` client connection (its driver runs on the test's runtime).
async fn connect(addr: SocketAddr, via: Via) -> SendRequest {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(1 << 20).initial_connection_window_size(4 << 20);
    match via {
        Via::H2c => {
            let (send, conn) = builder.handshake(tcp).await.expect("h2c handshake");
            tokio::spawn(async move {
                let _ = conn.await;
            });
            send
        }
        Via::Tls => {
            let config = common::tls::client_config(&[b"h2"]);
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect("localhost".try_into().unwrap(), tcp)
                .await
                .expect("TLS handshake");
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            let (send, conn) = builder.handshake(tls).await.expect("h2 handshake over TLS");
            tokio::spawn(async move {
                let _ = conn.await;
            });
            send
        }
    }
}

fn uri(addr: SocketAddr, via: Via, path: &str) -> String {
    let scheme = match via {
        Via::H2c => "http",
        Via::Tls => "https",
    };
    format!("{scheme}://localhost:{}{path}", addr.port())
}

/// Sends a request and reads the whole response body.
async fn fetch(
    client: &mut SendRequest,
    request: Request<()>,
    body: Option<Bytes>,
) -> (http::response::Parts, Bytes) {
    client.clone().ready().await.unwrap();
    let end = body.is_none();
    let (response, mut stream) = client.send_request(request, end).unwrap();
    if let Some(b) = body {
        stream.send_data(b, true).unwrap();
    }
    let response = tokio::time::timeout(Duration::from_secs(10), response).await.unwrap().unwrap();
    let (parts, mut body) = response.into_parts();
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        out.extend_from_slice(&chunk);
    }
    (parts, Bytes::from(out))
}

fn get(addr: SocketAddr, via: Via, path: &str) -> Request<()> {
    Request::get(uri(addr, via, path)).body(()).unwrap()
}

fn basics(io: IoChoice, via: Via) {
    let server = server(io, via, Limits::default());
    let a = addr(&server);
    runtime().block_on(async {
        let mut c = connect(a, via).await;
        let (parts, body) = fetch(&mut c, get(a, via, "/plaintext"), None).await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(parts.version, http::Version::HTTP_2);
        assert_eq!(&body[..], b"Hello, World!");
        assert_eq!(parts.headers["content-length"], "13");
        assert!(parts.headers.contains_key("date"));
        let (parts, _) = fetch(&mut c, get(a, via, "/nope"), None).await;
        assert_eq!(parts.status, StatusCode::NOT_FOUND);
        // A body that the handler collects.
        let post = Request::post(uri(a, via, "/collect")).body(()).unwrap();
        let (_, body) = fetch(&mut c, post, Some(Bytes::from(vec![7u8; 100_000]))).await;
        assert_eq!(&body[..], b"100000");
        // HEAD: headers only.
        let head = Request::head(uri(a, via, "/plaintext")).body(()).unwrap();
        let (parts, body) = fetch(&mut c, head, None).await;
        assert_eq!(parts.status, StatusCode::OK);
        assert!(body.is_empty());
    });
    finish(server);
}

/// Bodies much larger than every window, streamed both ways at once (the echo handler sends
/// back each chunk as it reads it), so flow control must reopen windows on both sides.
fn large_bodies_through_flow_control(io: IoChoice, via: Via) {
    let server = server(io, via, Limits::default());
    let a = addr(&server);
    runtime().block_on(async {
        let c = connect(a, via).await;
        let c = c.ready().await.unwrap();
        let mut client = c;
        let request = Request::post(uri(a, via, "/echo")).body(()).unwrap();
        let (response, mut upload) = client.send_request(request, false).unwrap();
        let total = 8 << 20;
        let writer = tokio::spawn(async move {
            let chunk = Bytes::from((0..=255u8).cycle().take(64 * 1024).collect::<Vec<u8>>());
            let mut sent = 0;
            while sent < total {
                upload.reserve_capacity(chunk.len());
                let cap =
                    std::future::poll_fn(|cx| upload.poll_capacity(cx)).await.unwrap().unwrap();
                // The stream is byte i = i % 256 throughout: each slice starts where the
                // previous one stopped.
                let off = sent % chunk.len();
                let n = cap.min(chunk.len() - off).min(total - sent);
                upload.send_data(chunk.slice(off..off + n), false).unwrap();
                sent += n;
            }
            upload.send_data(Bytes::new(), true).unwrap();
        });
        let response = response.await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let mut got = 0usize;
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            body.flow_control().release_capacity(chunk.len()).unwrap();
            for b in chunk.iter() {
                assert_eq!(*b, got as u8, "byte {got} differs");
                got += 1;
            }
        }
        writer.await.unwrap();
        assert_eq!(got, total);
    });
    finish(server);
}

/// More streams than `max_concurrent_streams` at once: the client queues past the server's
/// SETTINGS, and every request is answered. One request goes first: the h2 client opens
/// streams before the server's SETTINGS arrive (the limit starts unlimited, RFC 9113
/// §5.1.2), and streams over the limit then are refused, which is a separate test
/// (`h2_floods.rs`, streams refused before SETTINGS are acknowledged).
fn many_concurrent_streams(io: IoChoice, via: Via) {
    let server = server(io, via, Limits::default());
    let a = addr(&server);
    runtime().block_on(async {
        let mut c = connect(a, via).await;
        let (parts, _) = fetch(&mut c, get(a, via, "/plaintext"), None).await;
        assert_eq!(parts.status, StatusCode::OK);
        let mut tasks = Vec::new();
        for i in 0..300 {
            let mut c = c.clone();
            tasks.push(tokio::spawn(async move {
                let path = if i % 2 == 0 { "/plaintext" } else { "/json" };
                let (parts, body) = fetch(&mut c, get(a, via, path), None).await;
                assert_eq!(parts.status, StatusCode::OK);
                assert!(!body.is_empty());
            }));
        }
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(20), t).await.unwrap().unwrap();
        }
    });
    finish(server);
}

/// Request trailers are accepted (validated, then the body ends), and a handler panic is a
/// 500 on that stream only.
fn trailers_and_panics(io: IoChoice, via: Via) {
    let server = server(io, via, Limits::default());
    let a = addr(&server);
    runtime().block_on(async {
        let mut c = connect(a, via).await;
        c = c.ready().await.unwrap();
        let request = Request::post(uri(a, via, "/collect")).body(()).unwrap();
        let (response, mut upload) = c.send_request(request, false).unwrap();
        upload.send_data(Bytes::from_static(b"abc"), false).unwrap();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-checksum", "123".parse().unwrap());
        upload.send_trailers(trailers).unwrap();
        let response = response.await.unwrap();
        let mut body = response.into_body();
        assert_eq!(&body.data().await.unwrap().unwrap()[..], b"3");

        let (parts, _) = fetch(&mut c, get(a, via, "/panic"), None).await;
        assert_eq!(parts.status, StatusCode::INTERNAL_SERVER_ERROR);
        let (parts, _) = fetch(&mut c, get(a, via, "/plaintext"), None).await;
        assert_eq!(parts.status, StatusCode::OK, "the connection survives a panicking handler");
    });
    finish(server);
}

/// A response body that panics mid-stream resets that stream only: the connection, and the
/// core (one thread), keep serving; a new connection is served too. A handler's wrong
/// content-length is replaced by the body's real one (RFC 9113 §8.1.1: a mismatch would be
/// a malformed response).
fn body_panics_and_wrong_lengths(io: IoChoice, via: Via) {
    let server = server(io, via, Limits::default());
    let a = addr(&server);
    runtime().block_on(async {
        let mut c = connect(a, via).await;
        c = c.ready().await.unwrap();
        let (response, _) = c.send_request(get(a, via, "/panic-body"), true).unwrap();
        let response = response.await.expect("the head went out before the panic");
        let mut body = response.into_body();
        let mut result = Ok(());
        while let Some(chunk) = body.data().await {
            if let Err(e) = chunk {
                result = Err(e);
                break;
            }
        }
        let e = result.expect_err("the stream must be reset, not ended cleanly");
        assert_eq!(e.reason(), Some(h2::Reason::INTERNAL_ERROR), "{e:?}");
        let (parts, body) = fetch(&mut c, get(a, via, "/wrong-length"), None).await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(parts.headers["content-length"], "5");
        assert_eq!(&body[..], b"hello");
        let (parts, _) = fetch(&mut c, get(a, via, "/plaintext"), None).await;
        assert_eq!(parts.status, StatusCode::OK, "the connection survives");
        let mut fresh = connect(a, via).await;
        let (parts, _) = fetch(&mut fresh, get(a, via, "/plaintext"), None).await;
        assert_eq!(parts.status, StatusCode::OK, "the core survives");
    });
    finish(server);
}

/// A response that is complete while its request body is still coming ends the stream with
/// RST_STREAM(NO_ERROR) (RFC 9113 §8.1): with `max_concurrent_streams` 4, five times that
/// many requests whose uploads the client never ends are all answered on one connection (the
/// stream slots come back), and each upload learns it may stop.
fn answered_streams_with_open_uploads_are_released(io: IoChoice, via: Via) {
    let mut limits = Limits::default();
    limits.h2.max_concurrent_streams = 4;
    let server = server(io, via, limits);
    let a = addr(&server);
    runtime().block_on(async {
        let mut c = connect(a, via).await;
        let (parts, _) = fetch(&mut c, get(a, via, "/plaintext"), None).await;
        assert_eq!(parts.status, StatusCode::OK);
        // Kept alive: a dropped stream would be cancelled by the client itself.
        let mut uploads = Vec::new();
        for i in 0..20 {
            c = tokio::time::timeout(Duration::from_secs(5), c.ready())
                .await
                .unwrap_or_else(|_| panic!("request {i}: no stream slot came back"))
                .unwrap();
            let request = Request::post(uri(a, via, "/plaintext")).body(()).unwrap();
            let (response, mut upload) = c.send_request(request, false).unwrap();
            upload.send_data(Bytes::from_static(b"more to come"), false).unwrap();
            let response =
                tokio::time::timeout(Duration::from_secs(5), response).await.unwrap().unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let mut body = response.into_body();
            assert_eq!(&body.data().await.unwrap().unwrap()[..], b"Hello, World!");
            let reason = tokio::time::timeout(
                Duration::from_secs(5),
                std::future::poll_fn(|cx| upload.poll_reset(cx)),
            )
            .await
            .unwrap_or_else(|_| panic!("request {i}: the upload was never stopped"))
            .unwrap();
            assert_eq!(reason, h2::Reason::NO_ERROR);
            uploads.push((upload, body));
        }
        let (parts, _) = fetch(&mut c, get(a, via, "/plaintext"), None).await;
        assert_eq!(parts.status, StatusCode::OK, "the connection goes on");
    });
    finish(server);
}

/// hyper's HTTP/2 client (prior knowledge) against the same server.
fn hyper_client(io: IoChoice, via: Via) {
    let server = server(io, via, Limits::default());
    let a = addr(&server);
    runtime().block_on(async {
        use http_body_util::{BodyExt, Full};
        let tcp = TcpStream::connect(a).await.unwrap();
        let exec = hyper_util::rt::TokioExecutor::new();
        let request = |path: &str| {
            Request::builder()
                .method(Method::POST)
                .uri(uri(a, via, path))
                .body(Full::new(Bytes::from_static(b"ping")))
                .unwrap()
        };
        let response = match via {
            Via::H2c => {
                let io = hyper_util::rt::TokioIo::new(tcp);
                let (mut send, conn) =
                    hyper::client::conn::http2::handshake(exec, io).await.unwrap();
                tokio::spawn(conn);
                send.send_request(request("/echo")).await.unwrap()
            }
            Via::Tls => {
                let config = common::tls::client_config(&[b"h2"]);
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(&config))
                    .connect("localhost".try_into().unwrap(), tcp)
                    .await
                    .unwrap();
                let io = hyper_util::rt::TokioIo::new(tls);
                let (mut send, conn) =
                    hyper::client::conn::http2::handshake(exec, io).await.unwrap();
                tokio::spawn(conn);
                send.send_request(request("/echo")).await.unwrap()
            }
        };
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), http::Version::HTTP_2);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ping");
    });
    finish(server);
}

macro_rules! h2_matrix {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                use super::*;
                #[cfg(not(windows))]
                #[test]
                fn h2c_uring() {
                    if common::skip_uring() {
                        return;
                    }
                    super::$name(IoChoice::Uring, Via::H2c);
                }
                #[cfg(not(windows))]
                #[test]
                fn h2c_epoll() {
                    super::$name(IoChoice::Epoll, Via::H2c);
                }
                #[cfg(windows)]
                #[test]
                fn h2c_iocp() {
                    super::$name(IoChoice::Auto, Via::H2c);
                }
                #[test]
                fn tls() {
                    super::$name(IoChoice::Auto, Via::Tls);
                }
            }
        )+
    };
}

/// A handler's fixed answers ([`peregrine::Handler::answer`]) over HTTP/2: written with the
/// server's fields, `call` never asked; a request with a body goes to `call`; a panic in
/// `answer` is a 500 on its stream only, and the connection goes on.
fn fixed_answers(io: IoChoice, via: Via) {
    use std::sync::atomic::Ordering::SeqCst;
    common::set_tls_mode(matches!(via, Via::Tls));
    let (server, calls) = common::start_answering(io);
    common::set_tls_mode(false);
    let a = addr(&server);
    runtime().block_on(async {
        let mut c = connect(a, via).await;
        let (parts, body) = fetch(&mut c, get(a, via, "/fixed"), None).await;
        assert_eq!((parts.status, &body[..]), (StatusCode::OK, &b"fixed"[..]));
        assert_eq!(parts.headers["content-type"], "text/plain");
        assert_eq!(parts.headers["content-length"], "5");
        assert!(parts.headers.contains_key("date") && parts.headers.contains_key("server"));
        assert_eq!(calls.load(SeqCst), 0, "call was asked for an answered request");
        let (_, body) = fetch(&mut c, get(a, via, "/other"), None).await;
        assert_eq!(&body[..], b"called");
        let head = Request::head(uri(a, via, "/fixed")).body(()).unwrap();
        let (parts, body) = fetch(&mut c, head, None).await;
        assert_eq!((parts.status, body.len()), (StatusCode::OK, 0));
        assert_eq!(parts.headers["content-length"], "5");
        let post = Request::post(uri(a, via, "/fixed")).body(()).unwrap();
        let (_, body) = fetch(&mut c, post, Some(Bytes::from_static(b"abc"))).await;
        assert_eq!(&body[..], b"called");
        assert_eq!(calls.load(SeqCst), 2);
        let (parts, _) = fetch(&mut c, get(a, via, "/fixed-panic"), None).await;
        assert_eq!(parts.status, StatusCode::INTERNAL_SERVER_ERROR);
        let (parts, body) = fetch(&mut c, get(a, via, "/fixed"), None).await;
        assert_eq!((parts.status, &body[..]), (StatusCode::OK, &b"fixed"[..]));
    });
    finish(server);
}

/// Fixed answers that differ in status, type and length (and a `HEAD`) one after another on
/// one h2c connection: each block is its own (the start of the last one is reused only for
/// the same answer), with one of each field.
fn alternating_fixed_answers(io: IoChoice) {
    // The binary's routes, which answer these from the head.
    let config = common::config(io, Limits::default());
    let server = peregrine::Server::start(config, || BuiltinRoutes::new(&[])).expect("start");
    let a = addr(&server);
    let plain = ("text/plain", &b"Hello, World!"[..]);
    let json = ("application/json", &br#"{"message":"Hello, World!"}"#[..]);
    let missing = ("text/plain", &b"Not Found\n"[..]);
    let steps = [
        (Method::GET, "/plaintext", 200, plain),
        (Method::GET, "/json", 200, json),
        (Method::HEAD, "/plaintext", 200, plain),
        (Method::GET, "/nowhere", 404, missing),
        (Method::GET, "/plaintext", 200, plain),
        (Method::HEAD, "/json", 200, json),
    ];
    runtime().block_on(async {
        let mut c = connect(a, Via::H2c).await;
        for (i, (method, path, status, (content_type, body))) in steps.into_iter().enumerate() {
            let head_only = method == Method::HEAD;
            let request = Request::builder().method(method).uri(uri(a, Via::H2c, path));
            let (parts, got) = fetch(&mut c, request.body(()).unwrap(), None).await;
            assert_eq!(parts.status, status, "response {i}");
            let length = body.len().to_string();
            for (name, value) in [
                ("content-type", content_type),
                ("content-length", &length),
                ("server", "peregrine"),
            ] {
                let values: Vec<_> = parts.headers.get_all(name).iter().collect();
                assert_eq!(values, [value], "response {i}: {name}");
            }
            assert_eq!(parts.headers.get_all("date").iter().count(), 1, "response {i}");
            assert_eq!(&got[..], if head_only { &b""[..] } else { body }, "response {i}");
        }
    });
    finish(server);
}

both_drivers!(alternating_fixed_answers);

h2_matrix!(
    fixed_answers,
    basics,
    large_bodies_through_flow_control,
    many_concurrent_streams,
    trailers_and_panics,
    body_panics_and_wrong_lengths,
    answered_streams_with_open_uploads_are_released,
    hyper_client
);

#[cfg(not(windows))]
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[cfg(not(windows))]
fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

// Runs a Linux tool or sends a Unix signal: not under Wine.
#[cfg(not(windows))]
#[test]
fn curl_speaks_h2_with_prior_knowledge_and_over_alpn() {
    let plain = server(IoChoice::Auto, Via::H2c, Limits::default());
    let a = addr(&plain);
    let (ok, text) = run(Command::new("curl").args([
        "-sS",
        "--max-time",
        "10",
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_version}",
        &format!("http://{a}/plaintext"),
    ]));
    assert!(ok && text.ends_with("Hello, World!\n2"), "{text}");
    // HTTP/1.1 still works on the same port.
    let (ok, text) = run(Command::new("curl").args([
        "-sS",
        "--max-time",
        "10",
        "-w",
        "\n%{http_version}",
        &format!("http://{a}/plaintext"),
    ]));
    assert!(ok && text.ends_with("Hello, World!\n1.1"), "{text}");
    finish(plain);

    let tls = server(IoChoice::Auto, Via::Tls, Limits::default());
    let a = addr(&tls);
    let (ok, text) = run(Command::new("curl").args([
        "-sS",
        "-k",
        "--max-time",
        "10",
        "--http2",
        "-w",
        "\n%{http_version}",
        &format!("https://localhost:{}/plaintext", a.port()),
        "--resolve",
        &format!("localhost:{}:127.0.0.1", a.port()),
    ]));
    assert!(ok && text.ends_with("Hello, World!\n2"), "{text}");
    finish(tls);
}

// Runs a Linux tool or sends a Unix signal: not under Wine.
#[cfg(not(windows))]
#[test]
fn nghttp_and_a_bounded_h2load_run() {
    if !have("nghttp") || !have("h2load") {
        panic!("nghttp2-client is required (test.sh installs it)");
    }
    let server = server(IoChoice::Auto, Via::H2c, Limits::default());
    let a = addr(&server);
    let (ok, text) = run(Command::new("nghttp").args([
        "-n",
        "-s",
        "-t",
        "10",
        &format!("http://{a}/plaintext"),
        &format!("http://{a}/json"),
    ]));
    assert!(ok, "{text}");
    let (ok, text) = run(Command::new("h2load").args([
        "-n",
        "4000",
        "-c",
        "4",
        "-m",
        "20",
        "-T",
        "10",
        &format!("http://{a}/plaintext"),
    ]));
    assert!(ok, "{text}");
    assert!(text.contains("4000 succeeded, 0 failed, 0 errored"), "{text}");
    assert!(text.contains("status codes: 4000 2xx"), "{text}");
    finish(server);
}
