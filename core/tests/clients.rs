//! Per-client fairness over real sockets: connections per client address (a second
//! loopback address as the greedy client), request rates per client over HTTP/1.1 and
//! HTTP/2 (429 with Retry-After), allow/deny lists at accept (before TLS) and per route.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::Client;
use peregrine::{IoChoice, Limits, ListenerSpec, RateLimit, Server, ServerConfig};

fn start(limits: Limits, listener: ListenerSpec) -> Server {
    let config = ServerConfig {
        listen: vec![listener],
        threads: Some(2),
        pin_threads: false,
        io: IoChoice::Auto,
        limits,
        ..ServerConfig::default()
    };
    Server::start(config, common::TestHandler::new).expect("server starts")
}

fn loopback() -> ListenerSpec {
    "127.0.0.1:0".parse::<SocketAddr>().unwrap().into()
}

/// A client connection from `source` (a loopback address of our choosing).
#[cfg(not(windows))]
fn connect_from(source: &str, to: SocketAddr) -> std::net::TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&format!("{source}:0").parse::<SocketAddr>().unwrap().into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

fn ask(stream: std::net::TcpStream) -> Result<common::RawResponse, String> {
    let mut c = Client::over(common::Stream::Plain(stream));
    c.send(b"GET /plaintext HTTP/1.1\r\nHost: a\r\n\r\n");
    c.try_read_response()
}

#[cfg(not(windows))] // 127.0.0.2 is a loopback address on Linux only
#[test]
fn one_address_cannot_take_every_connection() {
    let limits = Limits { max_connections_per_ip: Some(2), ..Limits::default() };
    let config = ServerConfig {
        listen: vec![loopback()],
        threads: Some(2),
        pin_threads: false,
        limits,
        admin: Some("127.0.0.1:0".parse().unwrap()),
        ..ServerConfig::default()
    };
    let server = Server::start(config, common::TestHandler::new).unwrap();
    let addr = server.local_addrs()[0];
    let admin = server.admin_addr().unwrap();
    let metric = |name: &str| -> Option<u64> {
        let text = common::request(admin, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n").text();
        text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
    };
    let held: Vec<_> = (0..2).map(|_| connect_from("127.0.0.2", addr)).collect();
    std::thread::sleep(Duration::from_millis(100));
    assert!(ask(connect_from("127.0.0.2", addr)).is_err(), "a third from 127.0.0.2 is closed");
    assert_eq!(ask(connect_from("127.0.0.1", addr)).unwrap().status, 200, "others still get in");
    drop(held);
    // The counts go back down as connections close.
    let mut served = false;
    for _ in 0..50 {
        if ask(connect_from("127.0.0.2", addr)).is_ok_and(|r| r.status == 200) {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(served, "127.0.0.2 is let in again once its connections closed");
    // Every count goes back to zero once the connections are gone.
    let mut zero = false;
    for _ in 0..100 {
        if metric("peregrine_client_connections") == Some(0)
            && metric("peregrine_client_addresses") == Some(0)
        {
            zero = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(zero, "the per-client table is empty again");
    let rejected = metric("peregrine_rejections_total{reason=\"max_connections_per_ip\"}");
    assert!(rejected.is_some_and(|n| n >= 1), "{rejected:?}");
    server.shutdown();
    server.wait();
}

#[test]
fn a_fast_client_gets_429_with_retry_after_over_http1() {
    let limits = Limits {
        rate_limit: Some(RateLimit { requests_per_second: 2.0, burst: 2, delayed: 0 }),
        ..Limits::default()
    };
    let server = start(limits, loopback());
    let mut c = Client::connect(server.local_addrs()[0]);
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..6 {
        c.send(b"GET /plaintext HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.read_response();
        if r.status == 429 {
            retry_after = r.header("retry-after").map(str::to_string);
        }
        statuses.push(r.status);
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "the burst and the rate: {statuses:?}");
    assert_eq!(&statuses[3..], &[429, 429, 429], "{statuses:?}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    // The connection stays usable, and after the wait the client is served again.
    std::thread::sleep(Duration::from_millis(1100));
    c.send(b"GET /plaintext HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.read_response().status, 200);
    server.shutdown();
    server.wait();
}

#[cfg(not(windows))] // h2load runs on the Linux side only
#[test]
fn http2_streams_over_the_rate_get_429_and_the_connection_stays() {
    let limits = Limits {
        rate_limit: Some(RateLimit { requests_per_second: 1.0, burst: 1, delayed: 0 }),
        ..Limits::default()
    };
    let server = start(limits, loopback());
    let url = format!("http://{}/plaintext", server.local_addrs()[0]);
    // One connection, one stream at a time: the burst and the rate, then 429 per stream.
    let out = std::process::Command::new("h2load")
        .args(["-n", "4", "-c", "1", "-m", "1", &url])
        .output()
        .expect("h2load runs (nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("4 total, 4 started, 4 done"), "{text}");
    assert!(text.contains("status codes: 2 2xx, 0 3xx, 2 4xx, 0 5xx"), "{text}");
    server.shutdown();
    server.wait();
}

#[test]
fn a_denied_network_is_closed_before_tls() {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listener = ListenerSpec::tls(addr, common::tls::localhost_settings())
        .with_access(Vec::new(), vec!["127.0.0.0/8".parse().unwrap()]);
    let server = start(Limits::default(), listener);
    let result = common::tls::connect(server.local_addrs()[0], "localhost", &[b"http/1.1"]);
    assert!(result.is_err(), "no handshake for a denied address");
    // An allow list that leaves loopback out refuses it too; one that names it lets it in.
    let plain = start(
        Limits::default(),
        loopback().with_access(vec!["10.0.0.0/8".parse().unwrap()], Vec::new()),
    );
    assert!(ask(std::net::TcpStream::connect(plain.local_addrs()[0]).unwrap()).is_err());
    let open = start(
        Limits::default(),
        loopback().with_access(vec!["127.0.0.1/32".parse().unwrap()], Vec::new()),
    );
    assert_eq!(
        ask(std::net::TcpStream::connect(open.local_addrs()[0]).unwrap()).unwrap().status,
        200
    );
    for s in [server, plain, open] {
        s.shutdown();
        s.wait();
    }
}

#[test]
fn routes_have_their_own_lists_and_rates() {
    let config = peregrine::config::Config::parse(
        r#"
        [[route]]
        path = "/admin"
        body = "secret"
        deny = ["127.0.0.0/8"]
        [[route]]
        path = "/api"
        body = "api"
        rate_limit = { requests_per_second = 1.0, burst = 1 }
        "#,
    )
    .unwrap();
    let routes = config.route.clone();
    let server_config = ServerConfig {
        listen: vec![loopback()],
        threads: Some(2),
        pin_threads: false,
        ..ServerConfig::default()
    };
    let server =
        Server::start(server_config, move || peregrine::routes::BuiltinRoutes::new(&routes))
            .unwrap();
    let addr = server.local_addrs()[0];
    let get = |path: &str| {
        common::request(addr, format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
    };
    assert_eq!(get("/admin").status, 403);
    assert_eq!(get("/plaintext").status, 200, "other routes are open");
    // Two cores, separate connections: the route's budget is one, shared by both.
    let statuses: Vec<u16> = (0..4).map(|_| get("/api").status).collect();
    assert_eq!(statuses, [200, 200, 429, 429], "{statuses:?}");
    server.shutdown();
    server.wait();
}

#[test]
fn a_listener_can_have_limits_of_its_own() {
    let config = peregrine::config::Config::parse(
        r#"
        [[listener]]
        address = "127.0.0.1:0"
        [listener.limits]
        rate_limit = { requests_per_second = 1.0, burst = 0 }

        [[listener]]
        address = "127.0.0.1:0"
        "#,
    )
    .unwrap();
    let server_config = ServerConfig {
        listen: config.listeners().unwrap(),
        threads: Some(1),
        pin_threads: false,
        ..ServerConfig::default()
    };
    let server = Server::start(server_config, common::TestHandler::new).unwrap();
    let (limited, open) = (server.local_addrs()[0], server.local_addrs()[1]);
    let get =
        |a: SocketAddr| common::request(a, b"GET /plaintext HTTP/1.1\r\nHost: a\r\n\r\n").status;
    assert_eq!([get(limited), get(limited)], [200, 429], "the first listener's own rate");
    assert_eq!([get(open), get(open), get(open)], [200, 200, 200], "the other has none");
    let bad = peregrine::config::Config::parse(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[listener.limits]\nrate = 5\n",
    );
    assert!(bad.unwrap_err().contains("rate"), "unknown keys are errors");
    server.shutdown();
    server.wait();
}

#[test]
fn delayed_requests_wait_their_turn_instead_of_429() {
    let limits = Limits {
        rate_limit: Some(RateLimit { requests_per_second: 10.0, burst: 0, delayed: 2 }),
        ..Limits::default()
    };
    let server = start(limits, loopback());
    // Four clients from one address at once: one served now, two paced at the rate
    // (100 ms apart), the fourth past the delayed ones.
    let addr = server.local_addrs()[0];
    let mut clients: Vec<Client> = (0..4).map(|_| Client::connect(addr)).collect();
    let started = std::time::Instant::now();
    for c in &mut clients {
        c.send(b"GET /plaintext HTTP/1.1\r\nHost: a\r\n\r\n");
    }
    let mut statuses: Vec<u16> = clients.iter_mut().map(|c| c.read_response().status).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 429], "{statuses:?}");
    assert!(started.elapsed() >= Duration::from_millis(150), "{:?}", started.elapsed());
    server.shutdown();
    server.wait();
}

#[test]
fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_rate() {
    let limits = Limits {
        rate_limit: Some(RateLimit { requests_per_second: 1.0, burst: 0, delayed: 0 }),
        ..Limits::default()
    };
    let start_with = |trusted: Vec<ipnet::IpNet>| {
        let config = ServerConfig {
            listen: vec![loopback()],
            threads: Some(1),
            pin_threads: false,
            limits: limits.clone(),
            trusted_proxies: trusted,
            ..ServerConfig::default()
        };
        Server::start(config, common::TestHandler::new).unwrap()
    };
    let from = |addr: SocketAddr, client: &str| {
        let req =
            format!("GET /plaintext HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: {client}\r\n\r\n");
        common::request(addr, req.as_bytes()).status
    };
    let trusting = start_with(vec!["127.0.0.0/8".parse().unwrap()]);
    let a = trusting.local_addrs()[0];
    assert_eq!(from(a, "203.0.113.1"), 200);
    assert_eq!(from(a, "203.0.113.1"), 429, "the same client again");
    assert_eq!(from(a, "203.0.113.2"), 200, "another client behind the same proxy");
    // Untrusted: the field is not believed, everyone is 127.0.0.1.
    let plain = start_with(Vec::new());
    let p = plain.local_addrs()[0];
    assert_eq!(from(p, "203.0.113.1"), 200);
    assert_eq!(from(p, "203.0.113.2"), 429, "a spoofed field buys no new budget");
    for s in [trusting, plain] {
        s.shutdown();
        s.wait();
    }
}

#[test]
fn the_access_log_names_the_real_client_behind_a_trusted_proxy() {
    let path = std::env::temp_dir().join(format!("peregrine-realip-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let config = ServerConfig {
        listen: vec![loopback()],
        threads: Some(1),
        pin_threads: false,
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        access_log: Some(peregrine::AccessLogTarget::File(path.clone())),
        ..ServerConfig::default()
    };
    let server = Server::start(config, common::TestHandler::new).unwrap();
    let a = server.local_addrs()[0];
    let r = common::request(
        a,
        b"GET /plaintext HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(common::request(a, b"GET /plaintext HTTP/1.1\r\nHost: a\r\n\r\n").status, 200);
    server.shutdown();
    server.wait();
    let log = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(lines[0].contains("\"client\":\"203.0.113.7\""), "{log}");
    assert!(!lines[1].contains("\"client\""), "no client field when it is the peer: {log}");
}
