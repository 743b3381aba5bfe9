//! The reverse proxy over real sockets: a scripted upstream (`common::upstream`) behind a
//! Peregrine proxy, and raw, curl and hyper clients in front.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::upstream::{self, ok, Reply, Upstream};
use common::{addr, Client};
use peregrine::proxy::{Proxy, ProxyConfig, UpstreamServer};
use peregrine::{IoChoice, Limits, Server};

/// A proxy in front of `servers`, with `tune` applied to the defaults.
fn proxy_to(io: IoChoice, servers: &[String], tune: impl FnOnce(&mut ProxyConfig)) -> Server {
    let servers = servers.iter().map(|s| UpstreamServer::parse(s).unwrap()).collect();
    let mut config = ProxyConfig::new(servers);
    tune(&mut config);
    let config = Arc::new(config);
    Server::start(common::config(io, Limits::default()), move || Proxy::new(Arc::clone(&config)))
        .expect("proxy starts")
}

fn proxy(io: IoChoice, up: &Upstream) -> Server {
    proxy_to(io, &[format!("http://{}", up.addr)], |_| {})
}

fn get(addr: SocketAddr, path: &str) -> common::RawResponse {
    common::request(addr, format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes())
}

/// An address where connections are refused for as long as the returned socket lives: bound,
/// never listening. (A port merely freed could be handed to another test's server at once,
/// which Windows does.)
fn refusing() -> (socket2::Socket, SocketAddr) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    (socket, addr)
}

/// Stops a proxy gracefully (its upstream decides what a health check would answer).
fn stop(server: Server) {
    common::shutdown_and_wait(server, Duration::from_secs(10));
}

/// Waits up to 5 s for `f` to hold.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

both_drivers!(forwards_requests_and_strips_hop_by_hop_fields_both_ways);

fn forwards_requests_and_strips_hop_by_hop_fields_both_ways(io: IoChoice) {
    let up = upstream::start(|seen| {
        let body = format!("you sent {} bytes to {}", seen.body.len(), seen.target());
        ok(
            &body,
            "connection: x-up-secret\r\nx-up-secret: 1\r\nkeep-alive: timeout=5\r\nx-app: yes\r\n",
        )
    });
    let server = proxy(io, &up);
    let mut c = Client::connect(addr(&server));
    c.send(
        b"POST /submit?q=1 HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive, X-Secret\r\n\
          X-Secret: s\r\nKeep-Alive: timeout=9\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\n\
          Upgrade: websocket\r\nContent-Length: 5\r\n\r\nhello",
    );
    let r = c.read_response();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "you sent 5 bytes to /submit?q=1");
    assert_eq!(r.header("x-app"), Some("yes"));
    for gone in ["x-up-secret", "keep-alive"] {
        assert_eq!(r.header(gone), None, "{gone} crossed the proxy back: {r:?}");
    }
    let seen = &up.seen()[0];
    for gone in ["x-secret", "keep-alive", "te", "proxy-authorization", "upgrade", "connection"] {
        assert_eq!(seen.header(gone), None, "{gone} reached the upstream: {}", seen.head);
    }
    assert_eq!(seen.body, b"hello");
    assert_eq!(seen.header("host").as_deref(), Some("app.test"));
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(seen.header("x-forwarded-host").as_deref(), Some("app.test"));
    assert!(seen.header("x-request-id").is_some_and(|id| id.len() >= 16), "{}", seen.head);
    // The same client connection serves another request.
    c.send(b"GET /again HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_eq!(c.read_response().text(), "you sent 0 bytes to /again");
    stop(server);
}

#[test]
fn response_fields_stay_right_when_an_upstream_changes_them_between_responses() {
    // The proxy reuses a core's last response field names by position when their bytes
    // match, and skips the hop-by-hop pass for heads without such fields: neither may carry
    // one response's fields into the next.
    let up = upstream::start(|seen| match seen.target() {
        "/a" => ok("a", "X-Name-A: 1\r\nContent-Type: text/a\r\n"),
        "/b" => ok("b", "x-name-b: 2\r\nConnection: X-Name-B\r\nKeep-Alive: timeout=5\r\n"),
        _ => ok("c", "X-NAME-A: 3\r\ncontent-type: text/c\r\n"),
    });
    let server = proxy(IoChoice::Auto, &up);
    let mut c = Client::connect(addr(&server));
    let mut fields = |path: &str| {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes());
        let r = c.read_response();
        assert_eq!(r.status, 200, "{r:?}");
        let mut names: Vec<String> = r
            .headers
            .iter()
            .map(|(n, v)| format!("{}={v}", n.to_ascii_lowercase()))
            .filter(|f| {
                f.starts_with("x-") || f.starts_with("content-type") || f.starts_with("keep")
            })
            .collect();
        names.sort();
        names
    };
    for _ in 0..2 {
        assert_eq!(fields("/a"), ["content-type=text/a", "x-name-a=1"]);
        assert_eq!(fields("/b"), Vec::<String>::new(), "hop-by-hop fields crossed");
        assert_eq!(fields("/c"), ["content-type=text/c", "x-name-a=3"]);
        assert_eq!(fields("/a"), ["content-type=text/a", "x-name-a=1"]);
    }
    stop(server);
}

#[test]
fn an_untrusted_client_cannot_spoof_forwarded_fields() {
    let up = upstream::start(|_| ok("ok", ""));
    let server = proxy(IoChoice::Auto, &up);
    let r = common::request(
        addr(&server),
        b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 6.6.6.6\r\n\
          X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.test\r\nX-Request-Id: mine\r\n\
          Forwarded: for=6.6.6.6\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let seen = &up.seen()[0];
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"), "{}", seen.head);
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(seen.header("x-forwarded-host").as_deref(), Some("app.test"));
    assert_ne!(seen.header("x-request-id").as_deref(), Some("mine"));
    assert_eq!(seen.header("forwarded"), None);
    stop(server);
}

#[test]
fn a_trusted_proxy_s_fields_are_kept_and_extended() {
    let up = upstream::start(|_| ok("ok", ""));
    let server = proxy_to(IoChoice::Auto, &[format!("http://{}", up.addr)], |c| {
        c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        c.forwarded_header = true;
    });
    let r = common::request(
        addr(&server),
        b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 203.0.113.7\r\n\
          X-Forwarded-Proto: https\r\nX-Request-Id: edge-42\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let seen = &up.seen()[0];
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("203.0.113.7, 127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(seen.header("x-request-id").as_deref(), Some("edge-42"));
    assert_eq!(
        seen.header("forwarded").as_deref(),
        Some("for=127.0.0.1;proto=http;host=\"app.test\"")
    );
    stop(server);
}

both_drivers!(upstream_connections_are_pooled_per_core);

fn upstream_connections_are_pooled_per_core(io: IoChoice) {
    let up = upstream::start(|_| ok("pooled", ""));
    let server = proxy(io, &up);
    for _ in 0..5 {
        // A new client connection each time: only the upstream side is kept.
        assert_eq!(get(addr(&server), "/").text(), "pooled");
    }
    assert_eq!(up.connections(), 1, "one upstream connection carried all five requests");
    assert!(up.seen().iter().all(|s| s.conn == 0));
    stop(server);
}

#[test]
fn a_malformed_upstream_response_is_502_and_does_not_poison_the_pool() {
    let up = upstream::start(|seen| match seen.target() {
        "/smuggle" => Reply::Bytes(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
        ),
        "/bad-chunks" => Reply::Bytes(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
        ),
        "/garbage" => Reply::Bytes(b"SMTP ready\r\n\r\n".to_vec()),
        "/huge-head" => {
            let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..3000 {
                head.extend_from_slice(format!("x-filler-{i}: {}\r\n", "y".repeat(20)).as_bytes());
            }
            head.extend_from_slice(b"content-length: 0\r\n\r\n");
            Reply::Bytes(head)
        }
        _ => ok("fine", ""),
    });
    let server = proxy(IoChoice::Auto, &up);
    for path in ["/smuggle", "/garbage", "/huge-head"] {
        let r = get(addr(&server), path);
        assert_eq!(r.status, 502, "{path}: {r:?}");
        assert_eq!(r.text(), "502 Bad Gateway\n", "no internal details");
    }
    // A bad body is found after the head went out: the client's response is cut short.
    let mut c = Client::connect(addr(&server));
    c.send(b"GET /bad-chunks HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let got = c.read_to_eof_within(Duration::from_secs(5));
    assert!(
        !String::from_utf8_lossy(&got).contains("hello"),
        "a broken upstream body aborts the response: {}",
        String::from_utf8_lossy(&got)
    );
    let before = up.connections();
    assert_eq!(get(addr(&server), "/after").text(), "fine");
    assert_eq!(up.connections(), before + 1, "the broken connections were not reused");
    stop(server);
}

#[test]
fn smuggling_attempts_never_become_a_second_upstream_request() {
    let up = upstream::start(|_| ok("ok", ""));
    let server = proxy(IoChoice::Auto, &up);
    let attacks: [&[u8]; 3] = [
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;\x00\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n\
          helloGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    ];
    for attack in attacks {
        let mut c = Client::connect(addr(&server));
        c.send(attack);
        let r = c.read_response();
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(attack));
        assert!(c.is_closed(Duration::from_secs(5)));
    }
    std::thread::sleep(Duration::from_millis(200));
    let seen = up.seen();
    assert!(
        seen.iter().all(|s| s.target() != "/smuggled"),
        "a smuggled request reached the upstream: {seen:?}"
    );
    stop(server);
}

#[test]
fn a_dead_upstream_is_502_and_recovery_is_immediate() {
    let (reserved, port_addr) = refusing();
    let server = proxy_to(IoChoice::Auto, &[format!("http://{port_addr}")], |_| {});
    for _ in 0..4 {
        assert_eq!(get(addr(&server), "/").status, 502);
    }
    drop(reserved);
    let listener = std::net::TcpListener::bind(port_addr).unwrap();
    let _up = upstream::start_on(listener, |_| ok("back", ""));
    assert_eq!(get(addr(&server), "/").text(), "back", "a lone server is never skipped");
    stop(server);
}

#[test]
fn a_failing_server_is_skipped_and_all_failing_is_503() {
    let good = upstream::start(|_| ok("good", ""));
    let (_reserved, dead) = refusing();
    let servers = [format!("http://{dead}"), format!("http://{}", good.addr)];
    let server = proxy_to(IoChoice::Auto, &servers, |c| c.max_fails = 1);
    // A failed connect moves on to the next server: every request is answered.
    for _ in 0..6 {
        assert_eq!(get(addr(&server), "/").text(), "good");
    }
    drop(good);
    let both_dead = [format!("http://{dead}"), format!("http://{dead}")];
    let server2 = proxy_to(IoChoice::Auto, &both_dead, |c| c.max_fails = 1);
    assert_eq!(get(addr(&server2), "/").status, 502);
    assert_eq!(get(addr(&server2), "/").status, 503, "no healthy server left");
    stop(server);
    stop(server2);
}

#[test]
fn a_slow_upstream_is_504() {
    let up = upstream::start(|_| Reply::After(Duration::from_secs(3), Box::new(ok("late", ""))));
    let server = proxy_to(IoChoice::Auto, &[format!("http://{}", up.addr)], |c| {
        c.response_header_timeout = Duration::from_millis(300);
    });
    let started = Instant::now();
    let r = get(addr(&server), "/");
    assert_eq!(r.status, 504);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    stop(server);
}

#[test]
fn a_client_that_goes_away_closes_its_upstream_connection() {
    let up = upstream::start(|_| {
        Reply::BytesThenHold(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial".to_vec())
    });
    let server = proxy(IoChoice::Auto, &up);
    let mut c = Client::connect(addr(&server));
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.read_head().status, 200);
    drop(c);
    eventually("the upstream connection closed", || {
        up.closed_by_peer.load(std::sync::atomic::Ordering::SeqCst) == 1
    });
    stop(server);
}

#[test]
fn chunked_and_streamed_bodies_cross_in_both_directions() {
    let up = upstream::start(|seen| {
        // Echoes the body back chunked, in two chunks.
        let (a, b) = seen.body.split_at(seen.body.len() / 2);
        let mut out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for part in [a, b] {
            out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            out.extend_from_slice(part);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        Reply::Bytes(out)
    });
    let server = proxy(IoChoice::Auto, &up);
    let mut c = Client::connect(addr(&server));
    c.send(b"POST /e HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello world");
    assert_eq!(up.seen()[0].body, b"hello world");
    assert_eq!(up.seen()[0].header("transfer-encoding").as_deref(), Some("chunked"));
    stop(server);
}

#[test]
fn head_and_no_content_responses_keep_the_connection_pooled() {
    let up = upstream::start(|seen| match seen.target() {
        "/none" => Reply::Bytes(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()),
        _ => Reply::Bytes(b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n".to_vec()),
    });
    let server = proxy(IoChoice::Auto, &up);
    let mut c = Client::connect(addr(&server));
    c.send(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n");
    let head = c.read_head();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("1234"), "{head:?}");
    assert_eq!(get(addr(&server), "/none").status, 204);
    assert_eq!(up.connections(), 1);
    stop(server);
}

#[cfg(unix)]
#[test]
fn proxies_to_a_unix_socket() {
    use std::io::{BufRead, BufReader, Write};
    let dir = common::tls::TempDir::new("proxy-unix-socket");
    let path = dir.0.join("app.sock");
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream);
        let mut line = String::new();
        while r.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
            line.clear();
        }
        w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nover unix").unwrap();
    });
    let server = proxy_to(IoChoice::Auto, &[format!("unix:{}", path.display())], |_| {});
    assert_eq!(get(addr(&server), "/").text(), "over unix");
    stop(server);
    let _ = std::fs::remove_file(&path);
}

#[cfg(not(windows))] // curl runs on the Linux side only
#[test]
fn http2_clients_reach_an_http1_upstream_with_their_authority_as_host() {
    let up = upstream::start(|seen| ok(&hosts_seen(seen), ""));
    let server = proxy(IoChoice::Auto, &up);
    let url = format!("http://{}/from-h2", addr(&server));
    let out = std::process::Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "-H", "Host: h2.test", &url])
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "{out:?}");
    // One `Host`, the first field (as RFC 9112 §3.2 asks of a client).
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hosts=[h2.test] first=host");
    stop(server);
}

/// The `Host` values an upstream saw, and the name of the first field after the request line.
fn hosts_seen(seen: &upstream::Seen) -> String {
    let fields: Vec<(&str, &str)> =
        seen.head.lines().skip(1).filter_map(|l| l.split_once(':')).collect();
    let hosts: Vec<&str> = fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.trim())
        .collect();
    let first = fields.first().map_or("", |(n, _)| n.trim()).to_ascii_lowercase();
    format!("hosts=[{}] first={first}", hosts.join(","))
}

#[test]
fn an_absolute_form_target_replaces_the_host_field_once() {
    let up = upstream::start(|seen| ok(&hosts_seen(seen), ""));
    let server = proxy(IoChoice::Auto, &up);
    let sent = common::request(
        addr(&server),
        b"GET http://target.test/abs HTTP/1.1\r\nAccept: */*\r\nHost: field.test\r\n\r\n",
    );
    assert_eq!(sent.status, 200);
    assert_eq!(sent.text(), "hosts=[target.test] first=accept");
    stop(server);
}

/// A server running the binary's router over `toml` (its `[[route]]`s and `[[upstream]]`s).
fn routed(toml: &str) -> Server {
    common::routed(IoChoice::Auto, toml, false)
}

/// A configuration with one route, with `keys` added, sending every request to one upstream
/// server at `upstream`.
fn one_route(keys: &str, upstream: SocketAddr) -> String {
    format!(
        "[[route]]\nupstream = \"app\"\n{keys}\n\n\
         [[upstream]]\nname = \"app\"\n[[upstream.server]]\naddress = \"http://{upstream}\"\n"
    )
}

fn get_host(addr: SocketAddr, host: &str, path: &str) -> common::RawResponse {
    common::request(addr, format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
}

#[test]
fn config_routes_match_host_and_prefix_strip_it_and_edit_headers() {
    let api = upstream::start(|seen| {
        ok(
            &format!("api {} env={}", seen.target(), seen.header("x-env").unwrap_or_default()),
            "x-internal: 1\r\n",
        )
    });
    let web = upstream::start(|seen| ok(&format!("web {}", seen.target()), ""));
    let server = routed(&format!(
        r#"
        [[route]]
        path = "/healthz"
        body = "fixed"

        [[route]]
        host = "*.api.test"
        path_prefix = "/v1/"
        upstream = "api"
        strip_prefix = true
        request_headers = {{ set = {{ "x-env" = "prod", "x-forwarded-proto" = "https" }}, remove = ["cookie", "x-request-id"] }}
        response_headers = {{ set = {{ "x-frame-options" = "DENY" }}, remove = ["x-internal"] }}

        [[route]]
        path_prefix = "/"
        upstream = "web"

        [[upstream]]
        name = "api"
        [[upstream.server]]
        address = "http://{}"

        [[upstream]]
        name = "web"
        [[upstream.server]]
        address = "http://{}"
        "#,
        api.addr, web.addr
    ));
    let a = addr(&server);
    assert_eq!(get_host(a, "x", "/healthz").text(), "fixed");
    let r = common::request(
        a,
        b"GET /v1/users?id=7 HTTP/1.1\r\nHost: eu.api.test:8080\r\nCookie: s=1\r\n\r\n",
    );
    assert_eq!(r.text(), "api /users?id=7 env=prod");
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-internal"), None);
    let seen = &api.seen()[0];
    assert_eq!(seen.header("cookie"), None);
    // A route's edits win over the forwarding fields the proxy adds, and leave no second
    // copy of them; the fields it does not name are still sent.
    let count = |name: &str| {
        let lines = seen.head.lines().skip(1).filter_map(|l| l.split_once(':'));
        lines.filter(|(n, _)| n.trim().eq_ignore_ascii_case(name)).count()
    };
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(count("x-forwarded-proto"), 1, "{}", seen.head);
    assert_eq!(count("x-request-id"), 0, "{}", seen.head);
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(count("x-forwarded-for"), 1, "{}", seen.head);
    // Not a subdomain of api.test, or not under /v1/: the catch-all route.
    assert_eq!(get_host(a, "api.test", "/v1/users").text(), "web /v1/users");
    assert_eq!(get_host(a, "eu.api.test", "/v2/x").text(), "web /v2/x");
    stop(server);
}

#[test]
fn weights_share_requests_and_backups_stand_in() {
    let heavy = upstream::start(|_| ok("heavy", ""));
    let light = upstream::start(|_| ok("light", ""));
    let spare = upstream::start(|_| ok("spare", ""));
    let (_reserved, dead) = refusing();
    let server = routed(&format!(
        r#"
        [[route]]
        path_prefix = "/w"
        upstream = "weighted"
        [[route]]
        upstream = "failover"

        [[upstream]]
        name = "weighted"
        [[upstream.server]]
        address = "http://{}"
        weight = 2
        [[upstream.server]]
        address = "http://{}"

        [[upstream]]
        name = "failover"
        max_fails = 1
        [[upstream.server]]
        address = "http://{dead}"
        [[upstream.server]]
        address = "http://{}"
        backup = true
        "#,
        heavy.addr, light.addr, spare.addr
    ));
    let a = addr(&server);
    let answers: Vec<String> = (0..6).map(|_| get(a, "/w").text()).collect();
    assert_eq!(answers.iter().filter(|t| *t == "heavy").count(), 4, "{answers:?}");
    assert_eq!(answers.iter().filter(|t| *t == "light").count(), 2, "{answers:?}");
    for _ in 0..3 {
        assert_eq!(get(a, "/other").text(), "spare", "the backup answers for the dead server");
    }
    stop(server);
}

#[test]
fn a_route_s_own_body_limit_and_timeout_apply() {
    let up = upstream::start(|seen| match seen.target() {
        "/slow" => Reply::After(Duration::from_secs(3), Box::new(ok("late", ""))),
        _ => ok(&format!("{} bytes", seen.body.len()), ""),
    });
    let server = routed(&one_route(
        "max_request_body_size = 10\nresponse_header_timeout = \"300ms\"",
        up.addr,
    ));
    let a = addr(&server);
    let small = common::request(a, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(small.text(), "5 bytes");
    let big =
        common::request(a, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world");
    assert_eq!(big.status, 413);
    let chunked = common::request(
        a,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n",
    );
    assert_eq!(chunked.status, 413, "{chunked:?}");
    assert_eq!(get(a, "/slow").status, 504);
    stop(server);
}

both_drivers!(websocket_upgrades_become_tunnels);

/// An upgrade-answering upstream: `101`, a greeting, then every byte echoed uppercased until
/// the proxy half-closes; reports the request head and whether EOF arrived.
fn websocket_upstream() -> (SocketAddr, std::sync::mpsc::Receiver<(String, bool)>) {
    websocket_upstream_answering(|_| {
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Keep-Alive: x\r\n\r\nhi"
            .to_string()
    })
}

/// An upstream that answers the first request's head with `answer(head)`, then echoes every
/// byte uppercased until EOF; reports the head and whether the EOF came.
fn websocket_upstream_answering(
    answer: fn(&str) -> String,
) -> (SocketAddr, std::sync::mpsc::Receiver<(String, bool)>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        w.write_all(answer(&head).as_bytes()).unwrap();
        let mut buf = [0u8; 1024];
        let eof = loop {
            match r.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => {
                    if w.write_all(&buf[..n].to_ascii_uppercase()).is_err() {
                        break false;
                    }
                }
                Err(_) => break false,
            }
        };
        tx.send((head, eof)).unwrap();
    });
    (addr, rx)
}

fn websocket_upgrades_become_tunnels(io: IoChoice) {
    let (up, report) = websocket_upstream();
    let server = proxy_to(io, &[format!("http://{up}")], |_| {});
    let mut c = Client::connect(addr(&server));
    c.send(
        b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive, Upgrade\r\n\
          Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    let head = c.read_head();
    assert_eq!(head.status, 101, "{head:?}");
    assert_eq!(head.header("upgrade"), Some("websocket"));
    assert_eq!(head.header("connection"), Some("upgrade"));
    assert_eq!(head.header("keep-alive"), None);
    assert_eq!(c.read_exact(2), b"hi");
    c.send(b"ping");
    assert_eq!(c.read_exact(4), b"PING");
    c.send(b"and more");
    assert_eq!(c.read_exact(8), b"AND MORE");
    c.shutdown_write();
    let (seen, eof) = report.recv_timeout(Duration::from_secs(5)).expect("upstream reports");
    assert!(eof, "the client's half-close reached the upstream");
    let seen = seen.to_ascii_lowercase();
    assert!(seen.contains("upgrade: websocket\r\n"), "{seen}");
    assert!(seen.contains("connection: upgrade\r\n"), "{seen}");
    assert!(seen.contains("sec-websocket-key: dghlihnhbxbszsbub25jzq==\r\n"), "{seen}");
    assert!(c.is_closed(Duration::from_secs(5)), "the tunnel ends when the upstream closes");
    stop(server);
}

/// A route's `max_request_body_size` bounds request bodies, not a WebSocket tunnel's bytes:
/// 64 KiB cross a tunnel on a route whose limit is 10 bytes, over an HTTP/1.1 upgrade and
/// over HTTP/2 (RFC 8441, where the tunnel's bytes are the request's DATA).
#[test]
fn a_tunnel_is_not_cut_off_by_the_route_s_body_limit() {
    let route = |up: SocketAddr| {
        format!(
            "[[route]]\nupstream = \"ws\"\nmax_request_body_size = 10\n\n\
             [[upstream]]\nname = \"ws\"\n[[upstream.server]]\naddress = \"http://{up}\"\n"
        )
    };
    let sent: Vec<u8> = (0..64 * 1024).map(|i| b'a' + (i % 26) as u8).collect();

    let (up, report) = websocket_upstream();
    let server = routed(&route(up));
    let mut c = Client::connect(addr(&server));
    c.send(
        b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\n\
          Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert_eq!(c.read_head().status, 101);
    assert_eq!(c.read_exact(2), b"hi");
    for piece in sent.chunks(8 * 1024) {
        c.send(piece);
        assert_eq!(c.read_exact(piece.len()), piece.to_ascii_uppercase());
    }
    c.shutdown_write();
    let (_, eof) = report.recv_timeout(Duration::from_secs(5)).expect("upstream reports");
    assert!(eof, "every byte went through and the half-close followed");
    stop(server);

    let (up, report) = websocket_upstream_checking_keys(false);
    let server = routed(&route(up));
    let proxy = addr(&server);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (response, mut stream) = extended_connect(proxy).await;
        assert_eq!(response.status(), 200, "{response:?}");
        let mut body = response.into_body();
        let mut echoed = Vec::new();
        for (i, piece) in sent.chunks(8 * 1024).enumerate() {
            stream.send_data(bytes::Bytes::copy_from_slice(piece), false).unwrap();
            // The greeting, then every piece so far, echoed.
            while echoed.len() < 2 + i * 8 * 1024 + piece.len() {
                echoed.extend_from_slice(&next_data(&mut body).await.expect("the echo"));
            }
        }
        assert_eq!(&echoed[..2], b"hi");
        assert_eq!(echoed[2..], sent.to_ascii_uppercase());
        stream.send_data(bytes::Bytes::new(), true).unwrap();
        while next_data(&mut body).await.is_some() {}
    });
    drop(rt);
    let (_, eof) = report.recv_timeout(Duration::from_secs(5)).expect("upstream reports");
    assert!(eof, "every byte went through and the END_STREAM followed");
    stop(server);
}

both_drivers!(websocket_over_http2_is_bridged_to_an_upgrade);

/// A WebSocket upstream for the HTTP/2 bridge: it answers the key it is sent (or, when
/// `wrong_accept`, answers another), greets with `hi`, then echoes uppercased until EOF.
/// Reports the request head and whether the EOF came.
fn websocket_upstream_checking_keys(
    wrong_accept: bool,
) -> (SocketAddr, std::sync::mpsc::Receiver<(String, bool)>) {
    fn answer(head: &str, guid: &[u8]) -> String {
        use base64::Engine as _;
        let key = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .starts_with("sec-websocket-key:")
                    .then(|| l[18..].trim().to_string())
            })
            .unwrap_or_default();
        let mut sha = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
        sha.update(key.as_bytes());
        sha.update(guid);
        let accept = base64::engine::general_purpose::STANDARD.encode(sha.finish());
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: chat\r\n\r\nhi"
        )
    }
    match wrong_accept {
        false => {
            websocket_upstream_answering(|h| answer(h, b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
        }
        true => websocket_upstream_answering(|h| answer(h, b"not the GUID")),
    }
}

/// Opens a WebSocket over HTTP/2 (RFC 8441) to `proxy`: the response, and the stream to send
/// on. Waits for the server's SETTINGS to enable extended CONNECT first.
async fn extended_connect(
    proxy: SocketAddr,
) -> (http::Response<h2::RecvStream>, h2::SendStream<bytes::Bytes>) {
    let send = common::h2c(proxy).await;
    let mut send = send.ready().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !send.is_extended_connect_protocol_enabled() {
        assert!(Instant::now() < deadline, "the server never enabled extended CONNECT");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut request = http::Request::builder()
        .method("CONNECT")
        .uri("http://app.test/chat?room=1")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "chat")
        .body(())
        .unwrap();
    request.extensions_mut().insert(h2::ext::Protocol::from_static("websocket"));
    let (response, stream) = send.send_request(request, false).unwrap();
    (response.await.unwrap(), stream)
}

/// The next DATA of `body` (capacity released), or `None` at its end.
async fn next_data(body: &mut h2::RecvStream) -> Option<bytes::Bytes> {
    let data = tokio::time::timeout(Duration::from_secs(5), body.data())
        .await
        .expect("data within 5 s")?
        .unwrap();
    let _ = body.flow_control().release_capacity(data.len());
    Some(data)
}

fn websocket_over_http2_is_bridged_to_an_upgrade(io: IoChoice) {
    let (up, report) = websocket_upstream_checking_keys(false);
    let server = proxy_to(io, &[format!("http://{up}")], |_| {});
    let proxy = addr(&server);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (response, mut stream) = extended_connect(proxy).await;
        assert_eq!(response.status(), 200, "{response:?}");
        let headers = response.headers();
        assert_eq!(headers.get("sec-websocket-protocol").unwrap(), "chat");
        for hop in ["sec-websocket-accept", "upgrade", "connection", "content-length"] {
            assert!(headers.get(hop).is_none(), "{hop} reached the HTTP/2 client");
        }
        let mut body = response.into_body();
        let mut got = Vec::new();
        while got.len() < 2 {
            got.extend_from_slice(&next_data(&mut body).await.expect("the greeting"));
        }
        assert_eq!(got, b"hi");
        for message in [&b"ping"[..], b"and more"] {
            stream.send_data(bytes::Bytes::copy_from_slice(message), false).unwrap();
            let mut echoed = Vec::new();
            while echoed.len() < message.len() {
                echoed.extend_from_slice(&next_data(&mut body).await.expect("the echo"));
            }
            assert_eq!(echoed, message.to_ascii_uppercase());
        }
        // The client ends its side: the upstream sees EOF, closes, and the stream ends.
        stream.send_data(bytes::Bytes::new(), true).unwrap();
        while let Some(rest) = next_data(&mut body).await {
            assert!(rest.is_empty(), "after the upstream's EOF: {rest:?}");
        }
    });
    drop(rt);
    let (seen, eof) = report.recv_timeout(Duration::from_secs(5)).expect("upstream reports");
    assert!(eof, "the client's END_STREAM reached the upstream as EOF");
    let seen = seen.to_ascii_lowercase();
    assert!(seen.starts_with("get /chat?room=1 http/1.1\r\n"), "{seen}");
    for field in
        ["host: app.test", "upgrade: websocket", "connection: upgrade", "sec-websocket-version: 13"]
    {
        assert!(seen.contains(&format!("{field}\r\n")), "{field} missing: {seen}");
    }
    assert!(seen.contains("sec-websocket-key: "), "{seen}");
    stop(server);
}

#[test]
fn an_http2_websocket_whose_upstream_answers_another_key_gets_502() {
    let (up, _report) = websocket_upstream_checking_keys(true);
    let server = proxy_to(IoChoice::Auto, &[format!("http://{up}")], |_| {});
    let proxy = addr(&server);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = rt.block_on(async { extended_connect(proxy).await.0.status() });
    assert_eq!(status, 502);
    drop(rt);
    stop(server);
}

both_drivers!(grpc_over_an_h2c_upstream_streams_both_ways_with_trailers);

/// An HTTP/2 upstream in the manner of a gRPC service (the `h2` crate's server): each
/// request gets `content-type: application/grpc`, every DATA chunk echoed back uppercased as
/// it arrives, and `grpc-status: 0` trailers once the request ends. Reports each request's
/// head.
fn grpc_upstream(
) -> (SocketAddr, std::sync::mpsc::Receiver<http::request::Parts>, std::sync::mpsc::Receiver<String>)
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (reset_tx, reset_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let (tx, reset_tx) = (tx.clone(), reset_tx.clone());
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(socket).await else { return };
                    while let Some(Ok((request, mut respond))) = conn.accept().await {
                        let (tx, reset_tx) = (tx.clone(), reset_tx.clone());
                        tokio::spawn(async move {
                            let (parts, mut body) = request.into_parts();
                            let slow = parts.uri.path() == "/slow";
                            let _ = tx.send(parts);
                            if slow {
                                // Never answers: reports how the proxy ends the stream.
                                let reason = std::future::poll_fn(|cx| respond.poll_reset(cx));
                                let reason = reason.await.map(|r| format!("{r:?}"));
                                let _ = reset_tx.send(reason.unwrap_or_default());
                                return;
                            }
                            let head = http::Response::builder()
                                .status(200)
                                .header("content-type", "application/grpc")
                                .body(())
                                .unwrap();
                            let mut send = respond.send_response(head, false).unwrap();
                            while let Some(chunk) = body.data().await {
                                let chunk = chunk.unwrap();
                                let _ = body.flow_control().release_capacity(chunk.len());
                                let upper = bytes::Bytes::from(chunk.to_ascii_uppercase());
                                if send.send_data(upper, false).is_err() {
                                    return;
                                }
                            }
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                            trailers.insert("grpc-message", http::HeaderValue::from_static("done"));
                            let _ = send.send_trailers(trailers);
                        });
                    }
                });
            }
        });
    });
    (addr, rx, reset_rx)
}

/// An h2c upstream whose first connection goes silent after its SETTINGS (a black hole:
/// no answer, no FIN, no RST) and whose later connections answer each first request with
/// a bare `200`; counts the connections it accepted.
fn black_hole_then_alive_upstream() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { return };
            let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // An empty SETTINGS frame.
            socket.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
            if n == 0 {
                held.push(socket);
                continue;
            }
            std::thread::spawn(move || {
                // Once the request is in, HEADERS on stream 1: `:status: 200` (HPACK static
                // index 8), END_HEADERS | END_STREAM.
                let mut buf = [0u8; 4096];
                if socket.read(&mut buf).unwrap_or(0) > 0 {
                    let _ = socket.write_all(&[0, 0, 1, 1, 5, 0, 0, 0, 1, 0x88]);
                }
                let _ = socket.read(&mut buf);
            });
        }
    });
    (addr, accepted)
}

#[test]
fn a_black_holed_h2_upstream_connection_is_dropped_after_an_unanswered_ping() {
    let (up, accepted) = black_hole_then_alive_upstream();
    let server = proxy_to(IoChoice::Auto, &[format!("h2c://{up}")], |c| {
        c.response_header_timeout = Duration::from_millis(300);
        c.connect_timeout = Duration::from_millis(300);
    });
    assert_eq!(get(addr(&server), "/").status, 504, "the black hole never answers");
    // The timeout asked the connection for a PING's ACK; none comes within connect_timeout,
    // so the connection is given up and the next request opens another.
    std::thread::sleep(Duration::from_millis(1000));
    let r = get(addr(&server), "/");
    assert_eq!(r.status, 200, "served on a new connection, not the silent one");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    stop(server);
}

#[test]
fn an_h2c_upstream_connection_counts_as_open_while_it_lives() {
    let (up, _seen, _resets) = grpc_upstream();
    let name = format!("h2c://{up}");
    let server = proxy_with_admin(&name);
    for _ in 0..2 {
        assert_eq!(get(addr(&server), "/echo.Echo/Unary").status, 200);
    }
    // One connection carried both requests and stays open (it was counted closed at once),
    // idle with no stream open.
    let counts = ["connections_opened_total 1", "connections_open 1", "connections_idle 1"];
    assert_metrics(&server, &name, &counts);
    stop(server);
}

fn grpc_over_an_h2c_upstream_streams_both_ways_with_trailers(io: IoChoice) {
    let (up, seen, resets) = grpc_upstream();
    let server = proxy_to(io, &[format!("h2c://{up}")], |_| {});
    let proxy = addr(&server);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let send = common::h2c(proxy).await;
        // Two calls at once on one client connection, each a bidirectional stream.
        tokio::join!(grpc_chat(send.clone(), 0), grpc_chat(send, 1));
    });
    drop(rt);
    for _ in 0..2 {
        let parts = seen.recv_timeout(Duration::from_secs(5)).expect("the upstream saw a call");
        assert_eq!(parts.method, http::Method::POST);
        assert_eq!(parts.uri.path(), "/echo.Echo/Chat");
        assert_eq!(parts.uri.authority().map(|a| a.as_str()), Some("grpc.test"));
        assert_eq!(parts.headers.get("te").unwrap(), "trailers", "gRPC needs te: trailers");
        assert!(parts.headers.get("x-forwarded-for").is_some());
    }
    // An HTTP/1.1 client gets the same call chunked, with the trailers after the last chunk.
    let mut c = Client::connect(proxy);
    c.send(
        b"POST /echo.Echo/Say HTTP/1.1\r\nHost: grpc.test\r\nTE: trailers\r\n\
          Connection: close\r\nContent-Length: 5\r\n\r\nhello",
    );
    let all = String::from_utf8_lossy(&c.read_to_eof()).to_ascii_lowercase();
    assert!(all.starts_with("http/1.1 200 ok\r\n"), "{all}");
    assert!(all.contains("\r\ntransfer-encoding: chunked\r\n"), "{all}");
    assert!(all.contains("\r\n5\r\nhello\r\n"), "{all}");
    assert!(all.ends_with("\r\n0\r\ngrpc-status: 0\r\ngrpc-message: done\r\n\r\n"), "{all}");
    let _ = seen.recv_timeout(Duration::from_secs(5)).expect("the upstream saw that call");
    // A client that leaves while the upstream has not answered: its upstream stream is reset
    // (CANCEL), and the shared connection goes on serving others.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let send = common::h2c(proxy).await;
        let mut send = send.ready().await.unwrap();
        let request = http::Request::post("http://grpc.test/slow").body(()).unwrap();
        let (response, mut stream) = send.send_request(request, false).unwrap();
        let _ = received(&seen).await;
        stream.send_reset(h2::Reason::CANCEL);
        drop(response);
        assert_eq!(received(&resets).await, "CANCEL", "the upstream stream was reset");
        grpc_chat(send, 2).await;
    });
    drop(rt);
    stop(server);
}

/// The next message on `rx`, waited for without blocking the runtime (its connection tasks
/// must go on); fails after 5 s.
async fn received<T>(rx: &std::sync::mpsc::Receiver<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(v) = rx.try_recv() {
            return v;
        }
        assert!(Instant::now() < deadline, "nothing arrived within 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn an_http2_clients_oversized_body_to_an_h2c_upstream_is_413_not_the_upstreams_fault() {
    let (up, seen, resets) = grpc_upstream();
    let servers = vec![UpstreamServer::parse(&format!("h2c://{up}")).unwrap()];
    let config = Arc::new(ProxyConfig::new(servers));
    let limits = Limits { max_request_body_size: Some(1000), ..Limits::default() };
    let server = Server::start(common::config(IoChoice::Auto, limits), move || {
        Proxy::new(Arc::clone(&config))
    })
    .expect("proxy starts");
    let proxy = addr(&server);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut send = common::h2c(proxy).await.ready().await.unwrap();
        // No content-length: the limit is found while the body streams to the upstream,
        // which has not answered (`/slow`).
        let request = http::Request::post("http://grpc.test/slow").body(()).unwrap();
        let (response, mut stream) = send.send_request(request, false).unwrap();
        let _ = received(&seen).await;
        stream.send_data(bytes::Bytes::from(vec![b'x'; 2000]), false).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(5), response).await;
        let status = response.expect("an answer within 5 s").expect("a response").status();
        assert_eq!(status, 413, "the client's mistake, not a 502");
        assert_eq!(received(&resets).await, "CANCEL", "the upstream stream was cancelled");
    });
    drop(rt);
    stop(server);
}

/// One bidirectional call: two messages, each echoed uppercased before the next, then the
/// end of the request and the trailers.
async fn grpc_chat(send: h2::client::SendRequest<bytes::Bytes>, n: usize) {
    let mut send = send.ready().await.unwrap();
    let request = http::Request::builder()
        .method("POST")
        .uri("http://grpc.test/echo.Echo/Chat")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut stream) = send.send_request(request, false).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers().get("content-type").unwrap(), "application/grpc");
    let mut body = response.into_body();
    for message in [format!("ping {n}"), format!("and more {n}")] {
        stream.send_data(bytes::Bytes::from(message.clone()), false).unwrap();
        let mut echoed = Vec::new();
        while echoed.len() < message.len() {
            echoed.extend_from_slice(&next_data(&mut body).await.expect("the echo"));
        }
        assert_eq!(echoed, message.to_ascii_uppercase().into_bytes());
    }
    stream.send_data(bytes::Bytes::new(), true).unwrap();
    while let Some(rest) = next_data(&mut body).await {
        assert!(rest.is_empty(), "{rest:?}");
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(trailers.get("grpc-message").unwrap(), "done");
}

#[test]
fn an_upgrade_the_upstream_declines_is_an_ordinary_response() {
    let up = upstream::start(|_| ok("no upgrade here", ""));
    let server = proxy(IoChoice::Auto, &up);
    let r = common::request(
        addr(&server),
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "no upgrade here");
    stop(server);
}

/// A proxy to the one upstream server `name`, with an admin listener (for `/metrics`).
fn proxy_with_admin(name: &str) -> Server {
    let config = Arc::new(ProxyConfig::new(vec![UpstreamServer::parse(name).unwrap()]));
    let mut server_config = common::config(IoChoice::Auto, Limits::default());
    server_config.admin = Some("127.0.0.1:0".parse().unwrap());
    Server::start(server_config, move || Proxy::new(Arc::clone(&config))).expect("starts")
}

/// Asserts that `/metrics` has each `peregrine_upstream_` line of `lines` for upstream
/// `name`: a line is a metric's name, with any labels after the upstream's in braces, then
/// its value.
fn assert_metrics(server: &Server, name: &str, lines: &[&str]) {
    let admin = server.admin_addr().expect("admin listener");
    let metrics = common::request(admin, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n").text();
    for line in lines {
        let (metric, value) = line.rsplit_once(' ').unwrap();
        let (metric, labels) = match metric.split_once('{') {
            Some((m, rest)) => (m, format!(",{}", rest.trim_end_matches('}'))),
            None => (metric, String::new()),
        };
        let want = format!("peregrine_upstream_{metric}{{upstream=\"{name}\"{labels}}} {value}");
        assert!(metrics.contains(&want), "missing `{want}` in:\n{metrics}");
    }
}

#[test]
fn upstream_metrics_count_requests_failures_and_the_pool() {
    let up = upstream::start(|seen| match seen.target() {
        "/bad" => Reply::Bytes(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec(),
        ),
        _ => ok("fine", ""),
    });
    let name = format!("http://{}", up.addr);
    let server = proxy_with_admin(&name);
    for _ in 0..3 {
        assert_eq!(get(addr(&server), "/").status, 200);
    }
    assert_eq!(get(addr(&server), "/bad").status, 502);
    // The broken connection was closed; the next request opens another.
    assert_eq!(get(addr(&server), "/").status, 200);
    assert_metrics(
        &server,
        &name,
        &[
            "requests_total 5",
            "responses_total{code=\"2xx\"} 4",
            "failures_total{kind=\"bad_response\"} 1",
            "connections_opened_total 2",
            "connections_open 1",
            "connections_idle 1",
            "connect_duration_seconds_count 2",
            "response_head_duration_seconds_count 4",
        ],
    );
    stop(server);
}

#[test]
fn the_access_log_names_the_upstream_its_status_and_the_request_id() {
    let up = upstream::start(|_| {
        Reply::Bytes(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n".to_vec())
    });
    let name = format!("http://{}", up.addr);
    let config = Arc::new(ProxyConfig::new(vec![UpstreamServer::parse(&name).unwrap()]));
    let path =
        std::env::temp_dir().join(format!("peregrine-proxy-log-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut server_config = common::config(IoChoice::Auto, Limits::default());
    server_config.access_log = Some(peregrine::AccessLogTarget::File(path.clone()));
    let server =
        Server::start(server_config, move || Proxy::new(Arc::clone(&config))).expect("starts");
    let r = common::request(
        addr(&server),
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc-123\r\n\r\n",
    );
    assert_eq!(r.status, 201);
    stop(server);
    let log = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(log.contains(&format!("\"upstream\":\"{name}\",\"upstream_status\":201,")), "{log}");
    // From an untrusted client the id is replaced, and the log has the one sent upstream.
    let sent = up.seen()[0].header("x-request-id").unwrap();
    assert!(log.contains(&format!("\"request_id\":\"{sent}\"}}")), "{log}");
    assert!(log.contains("\"upstream_head_us\":"), "{log}");
}

#[test]
fn a_request_id_a_route_removes_is_neither_sent_nor_logged() {
    let up = upstream::start(|_| ok("ok", ""));
    let path =
        std::env::temp_dir().join(format!("peregrine-proxy-noid-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let toml = one_route(r#"request_headers = { remove = ["x-request-id"] }"#, up.addr);
    let server = common::routed_logged(IoChoice::Auto, &toml, false, Some(path.clone()));
    let r = common::request(addr(&server), b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200);
    stop(server);
    let log = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(up.seen()[0].header("x-request-id"), None);
    assert!(log.contains("\"upstream_status\":200,"), "{log}");
    assert!(log.contains("\"request_id\":null}"), "{log}");
}

/// A TLS upstream: a Peregrine serving the built-in routes (`/plaintext`, `/echo`) over TLS
/// with the test CA's `localhost` certificate.
fn tls_upstream() -> Server {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut config = common::config(IoChoice::Auto, Limits::default());
    config.listen = vec![peregrine::ListenerSpec::tls(addr, common::tls::localhost_settings())];
    Server::start(config, || peregrine::routes::BuiltinRoutes::new(&[])).expect("TLS upstream")
}

both_drivers!(https_upstreams_are_verified_and_pooled);

fn https_upstreams_are_verified_and_pooled(io: IoChoice) {
    through_a_tls_upstream(io, "https");
}

both_drivers!(h2_upstreams_over_tls_agree_on_http2_by_alpn);

fn h2_upstreams_over_tls_agree_on_http2_by_alpn(io: IoChoice) {
    through_a_tls_upstream(io, "h2");
}

/// Requests through a proxy to a TLS upstream (verified with the test CA) named with
/// `scheme`: several on the pooled (HTTP/1.1) or shared (HTTP/2) connection, and a body
/// both ways.
fn through_a_tls_upstream(io: IoChoice, scheme: &str) {
    let up = tls_upstream();
    let url = format!("{scheme}://localhost:{}", addr(&up).port());
    let server =
        UpstreamServer::parse(&url).unwrap().with_ca_pem(common::tls::ca_pem().as_bytes()).unwrap();
    let config = Arc::new(ProxyConfig::new(vec![server]));
    let proxy = Server::start(common::config(io, Limits::default()), move || {
        Proxy::new(Arc::clone(&config))
    })
    .unwrap();
    for _ in 0..3 {
        assert_eq!(get(addr(&proxy), "/plaintext").text(), "Hello, World!");
    }
    // A body both ways, streamed through TLS.
    let body = "x".repeat(300_000);
    let mut c = Client::connect(addr(&proxy));
    c.send(
        format!("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            .as_bytes(),
    );
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), body.len());
    stop(proxy);
    stop(up);
}

#[test]
fn an_https_upstream_whose_certificate_does_not_verify_is_502() {
    // Signed by the test CA, but for another name than the one the proxy dials.
    let other = common::tls::leaf(&["other.test"]);
    let addr_any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let settings = peregrine::TlsSettings {
        certificate: peregrine::CertSource::Pem {
            certificate: other.cert_pem.clone(),
            key: other.key_pem.clone(),
        },
        sni: Vec::new(),
        client_auth: None,
    };
    let mut config = common::config(IoChoice::Auto, Limits::default());
    config.listen = vec![peregrine::ListenerSpec::tls(addr_any, settings)];
    let up = Server::start(config, || peregrine::routes::BuiltinRoutes::new(&[])).unwrap();
    let url = format!("https://localhost:{}", addr(&up).port());
    let server =
        UpstreamServer::parse(&url).unwrap().with_ca_pem(common::tls::ca_pem().as_bytes()).unwrap();
    let config = Arc::new(ProxyConfig::new(vec![server]));
    let proxy = Server::start(common::config(IoChoice::Auto, Limits::default()), move || {
        Proxy::new(Arc::clone(&config))
    })
    .unwrap();
    let r = get(addr(&proxy), "/plaintext");
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.text(), "502 Bad Gateway\n");
    stop(proxy);
    stop(up);
}

#[test]
fn hashing_sends_a_key_to_the_same_server() {
    let ups: Vec<Upstream> =
        (0..3).map(|i| upstream::start(move |_| ok(&format!("server {i}"), ""))).collect();
    let servers: String = ups
        .iter()
        .map(|u| format!("[[upstream.server]]\naddress = \"http://{}\"\n", u.addr))
        .collect();
    let server = routed(&format!(
        "[[route]]\npath_prefix = \"/ip\"\nupstream = \"by_ip\"\n\
         [[route]]\nupstream = \"by_user\"\n\
         [[upstream]]\nname = \"by_ip\"\nbalance = \"client_ip\"\n{servers}\
         [[upstream]]\nname = \"by_user\"\nbalance = \"header:x-user\"\n{servers}"
    ));
    let a = addr(&server);
    let first = get(a, "/ip").text();
    for _ in 0..5 {
        assert_eq!(get(a, "/ip").text(), first, "one client address, one server");
    }
    let by_user = |user: &str| {
        common::request(
            a,
            format!("GET /u HTTP/1.1\r\nHost: a\r\nX-User: {user}\r\n\r\n").as_bytes(),
        )
        .text()
    };
    let mut seen = std::collections::HashSet::new();
    for user in 0..30 {
        let name = format!("user-{user}");
        let answer = by_user(&name);
        assert_eq!(by_user(&name), answer, "{name} moved");
        seen.insert(answer);
    }
    assert_eq!(seen.len(), 3, "30 users spread over the 3 servers: {seen:?}");
    stop(server);
}

#[test]
fn active_health_checks_take_a_failing_server_out_and_back() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let sick = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&sick);
    let a = upstream::start(move |seen| match seen.target() {
        "/healthz" if flag.load(Ordering::SeqCst) => {
            Reply::Bytes(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n".to_vec())
        }
        _ => ok("a", ""),
    });
    let b = upstream::start(|_| ok("b", ""));
    let server = routed(&format!(
        "[[route]]\nupstream = \"app\"\n[[upstream]]\nname = \"app\"\n\
         health_check = {{ path = \"/healthz\", interval = \"50ms\", timeout = \"1s\", fall = 1, rise = 1 }}\n\
         [[upstream.server]]\naddress = \"http://{}\"\n[[upstream.server]]\naddress = \"http://{}\"\n",
        a.addr, b.addr
    ));
    let addr = addr(&server);
    // The first check marks `a` down: from then on only `b` answers.
    eventually("a marked down", || (0..4).all(|_| get(addr, "/").text() == "b"));
    assert!(a.seen().iter().any(|s| s.target() == "/healthz"));
    sick.store(false, Ordering::SeqCst);
    eventually("a back up", || (0..4).any(|_| get(addr, "/").text() == "a"));
    stop(server);
}

#[test]
fn a_proxy_protocol_header_names_the_client_upstream_and_the_connection_is_not_pooled() {
    let up = upstream::start(|_| ok("ok", ""));
    let server = routed(&format!(
        "[[route]]\nupstream = \"app\"\n[[upstream]]\nname = \"app\"\nsend_proxy_protocol = \"v1\"\n\
         [[upstream.server]]\naddress = \"http://{}\"\n",
        up.addr
    ));
    let a = addr(&server);
    for _ in 0..2 {
        assert_eq!(get(a, "/").text(), "ok");
    }
    let seen = up.seen();
    for s in &seen {
        let first = s.head.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("PROXY TCP4 127.0.0.1 127.0.0.1 ")
                && first.ends_with(&format!(" {}", a.port())),
            "{first}"
        );
    }
    assert_eq!(up.connections(), 2, "one upstream connection per client request");
    stop(server);
}

#[test]
fn an_idempotent_request_goes_to_another_server_when_one_fails_it() {
    // `a` accepts and reads the request, then closes without answering.
    let a = upstream::start(|_| Reply::BytesThenClose(Vec::new()));
    let b = upstream::start(|_| ok("b", ""));
    let servers = [format!("http://{}", a.addr), format!("http://{}", b.addr)];
    let server = proxy_to(IoChoice::Auto, &servers, |c| c.max_fails = 100);
    for _ in 0..4 {
        assert_eq!(get(addr(&server), "/").text(), "b", "GETs are retried on the other server");
    }
    assert!(!a.seen().is_empty(), "a was tried");
    // A POST may have been acted on: it is not sent twice.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = common::request(
            addr(&server),
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
        );
        statuses.push(r.status);
    }
    assert!(statuses.contains(&502), "a failed POST is not retried: {statuses:?}");
    assert!(a.seen().iter().all(|s| s.body.is_empty() || s.body == b"hi"));
    stop(server);
}

#[test]
fn an_upstream_that_stalls_mid_body_is_cut_off_after_idle_timeout() {
    let up = upstream::start(|_| {
        Reply::BytesThenHold(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst bytes".to_vec())
    });
    let server = proxy_to(IoChoice::Auto, &[format!("http://{}", up.addr)], |c| {
        c.idle_timeout = Duration::from_millis(300);
    });
    let mut c = Client::connect(addr(&server));
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let started = Instant::now();
    let got = c.read_to_eof_within(Duration::from_secs(5));
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("first bytes"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "cut off at the idle timeout: {:?}",
        started.elapsed()
    );
    eventually("the stalled upstream connection closed", || {
        up.closed_by_peer.load(std::sync::atomic::Ordering::SeqCst) == 1
    });
    stop(server);
}

#[test]
fn a_silent_tunnel_is_closed_after_idle_timeout() {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream);
        let mut line = String::new();
        while r.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
            line.clear();
        }
        w.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").unwrap();
        // Silent from here; reports when the proxy closes the tunnel.
        let mut sink = [0u8; 64];
        let closed = matches!(r.read(&mut sink), Ok(0) | Err(_));
        tx.send(closed).unwrap();
    });
    let server = proxy_to(IoChoice::Auto, &[format!("http://{up}")], |c| {
        c.idle_timeout = Duration::from_millis(300);
    });
    let mut c = Client::connect(addr(&server));
    c.send(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(c.read_head().status, 101);
    let closed = rx.recv_timeout(Duration::from_secs(5)).expect("the upstream saw the tunnel end");
    assert!(closed);
    assert!(c.is_closed(Duration::from_secs(5)), "the client side is closed too");
    stop(server);
}

#[test]
fn request_buffering_sends_the_whole_body_with_its_length() {
    let up = upstream::start(|seen| ok(&format!("{} bytes", seen.body.len()), ""));
    let server = routed(&format!(
        "[[route]]\nupstream = \"app\"\nrequest_buffering = true\nmax_request_body_size = 64\n\
         [[upstream]]\nname = \"app\"\n[[upstream.server]]\naddress = \"http://{}\"\n",
        up.addr
    ));
    let a = addr(&server);
    let r = common::request(
        a,
        b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n",
    );
    assert_eq!(r.text(), "11 bytes");
    let seen = &up.seen()[0];
    assert_eq!(seen.header("content-length").as_deref(), Some("11"), "{}", seen.head);
    assert_eq!(seen.header("transfer-encoding"), None);
    let big = format!("{:x}\r\n{}\r\n0\r\n\r\n", 100, "x".repeat(100));
    let r = common::request(
        a,
        format!("POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{big}")
            .as_bytes(),
    );
    assert_eq!(r.status, 413);
    assert_eq!(up.seen().len(), 1, "nothing of an oversized body reached the upstream");
    stop(server);
}
