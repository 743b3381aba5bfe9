//! Reloading a running server (`ReloadHandle::reload`, what SIGHUP and the admin listener's
//! `POST /reload` do in the binary), on two cores and each driver: new connections get the
//! new routes, limits and listeners while an open connection keeps what it started with; a
//! listener no longer configured stops accepting; a reload that fails anywhere (a port in
//! use, unreadable certificates, a factory that panics on a core, another handler type)
//! changes nothing.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use common::Client;
use peregrine::routes::BuiltinRoutes;
use peregrine::{IoChoice, Limits, ListenerSpec, Server, ServerConfig, StartError, TlsSettings};

/// Each core's router for config text `toml` (its `[[route]]`s).
fn router(toml: &str) -> impl Fn() -> BuiltinRoutes + Send + Sync + 'static {
    let config = peregrine::config::Config::parse(toml).unwrap_or_else(|e| panic!("{e}"));
    let routes = config.route.clone();
    let settings = peregrine::routes::RouteSettings::of(&config);
    move || BuiltinRoutes::with_targets(&routes, &[], &peregrine::apps::Apps::default(), &settings)
}

fn hello(body: &str) -> String {
    format!("[[route]]\npath = \"/hello\"\nstatus = 200\nbody = \"{body}\"\n")
}

fn config(io: IoChoice, listen: Vec<ListenerSpec>, limits: Limits) -> ServerConfig {
    ServerConfig { listen, threads: Some(2), pin_threads: false, io, limits, ..Default::default() }
}

/// A loopback port nothing listens on now.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn any_port() -> ListenerSpec {
    SocketAddr::from(([127, 0, 0, 1], 0)).into()
}

/// One request on `client`'s connection: status and body.
fn get(client: &mut Client, path: &str) -> (u16, String) {
    client.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    let response = client.read_response();
    (response.status, response.text())
}

/// Whether a connection to `addr` is refused (within a few seconds: a closed listener's
/// last accept is cancelled asynchronously).
fn refused_soon(addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(_) => return true,
            Ok(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    false
}

fn reload_switches_new_connections_and_keeps_open_ones(io: IoChoice) {
    let removed = free_port();
    let server = Server::start(
        config(io, vec![any_port(), removed.into()], Limits::default()),
        router(&hello("one")),
    )
    .expect("start");
    let kept = server.local_addrs()[0];
    // A request target of 3000 bytes: within the default max_request_line_size (8 KiB).
    let long = format!("/hello?{}", "x".repeat(3000));
    let mut open = Client::connect(kept);
    assert_eq!(get(&mut open, "/hello"), (200, "one".into()));

    let added = free_port();
    let limits = Limits { max_request_line_size: 1024, ..Limits::default() };
    let reloaded = server
        .reload_handle()
        .reload(config(io, vec![any_port(), added.into()], limits), router(&hello("two")))
        .expect("reload");
    assert!(reloaded.needs_restart.is_empty(), "{reloaded:?}");
    // The kept listener keeps its port (matched by its configured address, port 0).
    assert_eq!(server.local_addrs(), vec![kept, added]);

    // New connections: the new route and the new limit, on the kept and the added listener.
    for addr in [kept, added] {
        let mut fresh = Client::connect(addr);
        assert_eq!(get(&mut fresh, "/hello"), (200, "two".into()), "{addr}");
        assert_eq!(get(&mut fresh, &long).0, 414, "{addr}: the new max_request_line_size");
    }
    // The connection opened before keeps the old handler and the old limits.
    assert_eq!(get(&mut open, "/hello"), (200, "one".into()));
    assert_eq!(get(&mut open, &long), (200, "one".into()));
    // The listener the new config does not have is closed.
    assert!(refused_soon(removed), "{removed} still accepts");
    common::finish(server);
}
both_drivers!(reload_switches_new_connections_and_keeps_open_ones);

fn a_reload_that_fails_changes_nothing(io: IoChoice) {
    let server =
        Server::start(config(io, vec![any_port()], Limits::default()), router(&hello("one")))
            .expect("start");
    let addr = server.local_addrs()[0];
    let handle = server.reload_handle();
    let serves_one = || {
        let mut c = Client::connect(addr);
        assert_eq!(get(&mut c, "/hello"), (200, "one".into()));
    };

    // A port another socket holds (no SO_REUSEPORT on it).
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy: ListenerSpec = taken.local_addr().unwrap().into();
    let e = handle
        .reload(config(io, vec![any_port(), busy], Limits::default()), router(&hello("two")))
        .expect_err("a port in use");
    assert!(matches!(e, StartError::Bind(..)), "{e}");
    serves_one();

    // Certificate files that do not exist.
    let tls = TlsSettings::from_files("/nonexistent/cert.pem", "/nonexistent/key.pem");
    let spec = ListenerSpec::tls(SocketAddr::from(([127, 0, 0, 1], 0)), tls);
    let e = handle
        .reload(config(io, vec![any_port(), spec], Limits::default()), router(&hello("two")))
        .expect_err("missing certificates");
    assert!(matches!(e, StartError::Tls(..)), "{e}");
    serves_one();

    // A factory that panics on one of the two cores: the other core does not switch alone.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let build = router(&hello("two"));
    let e = handle
        .reload(config(io, vec![any_port()], Limits::default()), move || {
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                panic!("the second core's router cannot be built");
            }
            build()
        })
        .expect_err("a panicking factory");
    assert!(matches!(e, StartError::Handler { .. }), "{e}");
    for _ in 0..8 {
        serves_one(); // both cores, whichever takes each connection
    }

    // Another handler type than the server runs.
    let e = handle
        .reload(config(io, vec![any_port()], Limits::default()), common::TestHandler::new)
        .expect_err("another handler type");
    assert!(matches!(e, StartError::Config(..)), "{e}");
    serves_one();

    // Limits that do not validate.
    let bad = Limits { max_request_line_size: 0, ..Limits::default() };
    assert!(handle.reload(config(io, vec![any_port()], bad), router(&hello("two"))).is_err());
    serves_one();

    // And a good one still goes through afterwards.
    handle
        .reload(config(io, vec![any_port()], Limits::default()), router(&hello("two")))
        .expect("reload");
    let mut c = Client::connect(addr);
    assert_eq!(get(&mut c, "/hello"), (200, "two".into()));
    drop(taken);
    common::finish(server);
}
both_drivers!(a_reload_that_fails_changes_nothing);
