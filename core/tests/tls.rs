//! TLS listeners over real loopback sockets: ALPN selection, SNI, certificate errors,
//! handshake timeout and cap, certificate reload (library call and SIGHUP), curl over https,
//! and h2c preface sniffing on a cleartext listener.

mod common;
#[path = "support/process.rs"]
mod process;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
#[cfg(not(windows))]
use std::process::Command;
use std::time::Duration;

use common::tls::{self, TempDir};
use common::{Client, TestHandler};
use peregrine::{
    IoChoice, Limits, ListenerSpec, Protocols, Server, ServerConfig, SniCertificate, StartError,
    TlsSettings,
};

/// Starts a one-thread server on `listeners` (port 0 each).
fn start_with(listeners: Vec<ListenerSpec>, limits: Limits) -> Server {
    let config = ServerConfig {
        listen: listeners,
        threads: Some(1),
        pin_threads: false,
        io: IoChoice::Auto,
        limits,
        ..ServerConfig::default()
    };
    Server::start(config, TestHandler::new).unwrap_or_else(|e| panic!("start: {e}"))
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn tls_listener(protocols: Protocols) -> ListenerSpec {
    ListenerSpec::tls(any_port(), tls::localhost_settings()).with_protocols(protocols)
}

/// A counter's value in the server's Prometheus text, once it reaches `expected` (the server
/// counts a moment after the client sees the outcome); fails after 5 s.
fn metric(server: &Server, line_prefix: &str, expected: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = server.metrics().render();
        let value: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(line_prefix).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {line_prefix} in {text}"));
        if value == expected {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{line_prefix}{value}, expected {expected}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET /plaintext` over an established client stream; returns the status.
fn get_plaintext(stream: tls::TlsStream) -> u16 {
    let mut c = Client::over(common::Stream::Tls(Box::new(stream)));
    c.send(b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.text(), "Hello, World!");
    r.status
}

fn stop(server: Server) {
    common::shutdown_and_wait(server, Duration::from_secs(10));
}

#[test]
fn alpn_selects_h2_or_http11_by_offer_and_listener() {
    let server = start_with(
        vec![tls_listener(Protocols::BOTH), tls_listener(Protocols::H2)],
        Limits::default(),
    );
    let both = server.local_addrs()[0];
    let h2_only = server.local_addrs()[1];

    // h2 offered (with http/1.1): h2. The HTTP/2 loop is not merged yet, so the connection
    // then closes; only the negotiation is checked here.
    let s = tls::connect(both, "localhost", &[b"h2", b"http/1.1"]).expect("handshake");
    assert_eq!(s.conn.alpn_protocol(), Some(&b"h2"[..]));
    drop(s);
    // Only http/1.1 offered: http/1.1, and HTTP/1 is served.
    let s = tls::connect(both, "localhost", &[b"http/1.1"]).expect("handshake");
    assert_eq!(s.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(get_plaintext(s), 200);
    // No ALPN at all, or only protocols we lack: no ALPN answer, HTTP/1.1 served.
    for offer in [&[][..], &[&b"spdy/3"[..], b"h3"][..]] {
        let s = tls::connect(both, "localhost", offer).expect("handshake");
        assert_eq!(s.conn.alpn_protocol(), None, "offer {offer:?}");
        assert_eq!(get_plaintext(s), 200);
    }
    // An h2-only listener refuses clients that do not offer h2 with no_application_protocol.
    for offer in [&[&b"http/1.1"[..]][..], &[][..]] {
        let e = tls::connect(h2_only, "localhost", offer).expect_err("handshake must fail");
        let text = format!("{e:?}");
        assert!(text.contains("NoApplicationProtocol"), "offer {offer:?}: {text}");
    }
    let s = tls::connect(h2_only, "localhost", &[b"h2"]).expect("handshake");
    assert_eq!(s.conn.alpn_protocol(), Some(&b"h2"[..]));
    drop(s);

    metric(&server, "peregrine_tls_handshakes_total ", 5);
    // The two refused handshakes.
    metric(&server, "peregrine_tls_handshake_failures_total{reason=\"error\"} ", 2);
    stop(server);
}

#[test]
fn sni_picks_the_certificate_by_server_name() {
    let a = tls::leaf(&["a.test"]);
    let b = tls::leaf(&["*.b.test"]);
    let dir = TempDir::new("sni");
    let (a_cert, a_key) = dir.write_leaf("a", &a);
    let (b_cert, b_key) = dir.write_leaf("b", &b);
    let mut settings = tls::localhost_settings();
    settings.sni = vec![
        SniCertificate {
            server_name: "A.test".into(),
            certificate: TlsSettings::from_files(a_cert, a_key).certificate,
        },
        SniCertificate {
            server_name: "*.b.test".into(),
            certificate: TlsSettings::from_files(b_cert, b_key).certificate,
        },
    ];
    let server = start_with(vec![ListenerSpec::tls(any_port(), settings)], Limits::default());
    let addr = server.local_addrs()[0];
    let peer = |name: &str| {
        let s = tls::connect(addr, name, &[b"http/1.1"])
            .unwrap_or_else(|e| panic!("handshake as {name}: {e}"));
        s.conn.peer_certificates().expect("peer certificates")[0].clone()
    };
    assert_eq!(peer("a.test"), a.der, "exact name (configured in another case)");
    assert_eq!(peer("www.b.test"), b.der, "wildcard entry");
    assert_eq!(peer("localhost"), tls::localhost().der, "unknown name: the default");
    // An IP address sends no SNI: the default certificate (which names 127.0.0.1).
    assert_eq!(peer("127.0.0.1"), tls::localhost().der, "no SNI: the default");
    // A name no certificate has gets the default, which the client rightly rejects.
    let e = tls::connect(addr, "c.test", &[]).expect_err("wrong certificate accepted");
    assert!(format!("{e:?}").contains("NotValidForName"), "{e:?}");
    stop(server);
}

/// Starts a server whose TLS listener uses `settings`, returning the start error.
fn start_error(settings: TlsSettings) -> String {
    let config = ServerConfig {
        listen: vec![ListenerSpec::tls(any_port(), settings)],
        threads: Some(1),
        pin_threads: false,
        ..ServerConfig::default()
    };
    match Server::start(config, TestHandler::new) {
        Err(e @ StartError::Tls(..)) => e.to_string(),
        Err(e) => panic!("expected a TLS start error, got {e}"),
        Ok(_) => panic!("server started with bad TLS files"),
    }
}

#[test]
fn bad_certificate_files_fail_start_naming_the_file() {
    let dir = TempDir::new("bad");
    let leaf = tls::leaf(&["localhost"]);
    let other = tls::leaf(&["localhost"]);
    let (cert, key) = dir.write_leaf("good", &leaf);
    let missing = dir.0.join("missing.pem");
    let empty = dir.write("empty.pem", "just text, no PEM blocks\n");
    let other_key = dir.write("other.key", &other.key_pem);

    let e = start_error(TlsSettings::from_files(&missing, &key));
    assert!(e.contains("missing.pem") && e.contains("not found"), "{e}");
    let e = start_error(TlsSettings::from_files(&empty, &key));
    assert!(e.contains("empty.pem") && e.contains("no PEM certificate"), "{e}");
    let e = start_error(TlsSettings::from_files(&cert, &empty));
    assert!(e.contains("empty.pem") && e.contains("no PEM private key"), "{e}");
    let e = start_error(TlsSettings::from_files(&cert, &other_key));
    assert!(e.contains("other.key") && e.contains("does not match"), "{e}");
    // The certificate where the key should be: no key in it.
    let e = start_error(TlsSettings::from_files(&cert, &cert));
    assert!(e.contains("good.pem") && e.contains("no PEM private key"), "{e}");
}

// Runs a Linux tool or sends a Unix signal: not under Wine.
#[cfg(not(windows))]
#[test]
fn binary_exits_2_on_a_bad_key_file() {
    let dir = TempDir::new("cli-bad");
    let (cert, _) = dir.write_leaf("c", &tls::leaf(&["localhost"]));
    let key = dir.0.join("absent.key");
    let mut p = process::Proc::spawn(Command::new(env!("CARGO_BIN_EXE_peregrine")).args([
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]));
    let status = p.exit_within(process::WAIT).expect("peregrine did not exit");
    assert_eq!(status.code(), Some(2));
    let stderr = p.final_stderr();
    assert!(stderr.contains("absent.key") && stderr.contains("not found"), "{stderr}");
}

#[test]
fn handshake_timeout_closes_a_silent_client() {
    let limits = Limits { tls_handshake_timeout: Duration::from_secs(1), ..Limits::default() };
    let server = start_with(vec![tls_listener(Protocols::BOTH)], limits);
    let addr = server.local_addrs()[0];
    let mut silent = TcpStream::connect(addr).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    let n = silent.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the server sent bytes to a client that never said hello");
    metric(&server, "peregrine_tls_handshake_failures_total{reason=\"tls_handshake_timeout\"} ", 1);
    // The server still serves.
    assert_eq!(get_plaintext(tls::connect(addr, "localhost", &[]).unwrap()), 200);
    stop(server);
}

#[test]
fn handshakes_over_the_per_core_cap_are_closed_at_once() {
    let limits = Limits { max_concurrent_tls_handshakes_per_core: 1, ..Limits::default() };
    let server = start_with(vec![tls_listener(Protocols::BOTH)], limits);
    let addr = server.local_addrs()[0];
    // Two silent clients: one holds the only handshake slot (10 s timeout), the other is
    // closed at once.
    let mut first = Client::connect(addr); // plain TCP: the test's registry has no TLS here
    let mut second = Client::connect(addr);
    let closed_first = first.is_closed(Duration::from_secs(2));
    let closed_second = second.is_closed(Duration::from_millis(500));
    assert!(closed_first != closed_second, "exactly one of the two must be closed");
    let over_cap = "{reason=\"max_concurrent_tls_handshakes_per_core\"} ";
    metric(&server, &format!("peregrine_tls_handshake_failures_total{over_cap}"), 1);
    drop((first, second));
    // Once the slot is free again, handshakes succeed.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tls::connect(addr, "localhost", &[]) {
            Ok(s) => {
                assert_eq!(get_plaintext(s), 200);
                break;
            }
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "slot never freed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    stop(server);
}

#[test]
fn reload_serves_new_certificates_and_keeps_connections_and_old_certs_on_error() {
    let dir = TempDir::new("reload");
    let first = tls::leaf(&["localhost"]);
    let second = tls::leaf(&["localhost"]);
    let (cert, key) = dir.write_leaf("server", &first);
    let server = start_with(
        vec![ListenerSpec::tls(any_port(), TlsSettings::from_files(&cert, &key))],
        Limits::default(),
    );
    let addr = server.local_addrs()[0];
    let peer = || {
        let s = tls::connect(addr, "localhost", &[b"http/1.1"]).expect("handshake");
        s.conn.peer_certificates().unwrap()[0].clone()
    };
    assert_eq!(peer(), first.der);
    let mut open = Client::over(common::Stream::Tls(Box::new(
        tls::connect(addr, "localhost", &[b"http/1.1"]).unwrap(),
    )));
    open.send(b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(open.read_response().status, 200);

    dir.write_leaf("server", &second);
    server.reload_tls().expect("reload");
    assert_eq!(peer(), second.der, "a new handshake sees the new certificate");
    open.send(b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(open.read_response().status, 200, "an open connection keeps working");

    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    let e = server.reload_tls().expect_err("a broken file must fail the reload");
    assert!(e.to_string().contains("server.pem"), "{e}");
    assert_eq!(peer(), second.der, "a failed reload keeps the previous certificate");
    drop(open);
    stop(server);
}

// Runs a Linux tool or sends a Unix signal: not under Wine.
#[cfg(not(windows))]
#[test]
fn sighup_reloads_the_binary_certificates() {
    let dir = TempDir::new("sighup");
    let first = tls::leaf(&["localhost"]);
    let second = tls::leaf(&["localhost"]);
    let (cert, key) = dir.write_leaf("server", &first);
    let mut p = process::Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_peregrine"))
            .args(["--tls-listen", "127.0.0.1:0", "--threads", "1", "--no-pin"])
            .args(["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1"),
    );
    let line = p.line_starting("listening on https://", process::WAIT).expect("no https line");
    let addr: SocketAddr = line["listening on https://".len()..].parse().unwrap();
    let peer = || {
        let s = tls::connect(addr, "localhost", &[b"http/1.1"]).expect("handshake");
        s.conn.peer_certificates().unwrap()[0].clone()
    };
    assert_eq!(peer(), first.der);
    dir.write_leaf("server", &second);
    // SIGHUP reloads the config, the certificate files with it. The signal thread starts a
    // moment after the address is printed: wait until SIGHUP is caught (bit 1 of SigCgt) so
    // the signal cannot kill the process.
    let pid = p.child.id();
    let deadline = std::time::Instant::now() + process::WAIT;
    while !catches(pid, 1) {
        assert!(std::time::Instant::now() < deadline, "SIGHUP never caught");
        std::thread::sleep(Duration::from_millis(10));
    }
    let kill = Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap();
    assert!(kill.success());
    p.wait_stderr("config reloaded");
    assert_eq!(peer(), second.der);
    p.sigterm(pid);
}

/// Whether `pid` has a handler for signal number `signal`.
#[cfg(not(windows))]
fn catches(pid: u32, signal: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

#[cfg(not(windows))]
fn curl_available() -> bool {
    Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success())
}

// Runs a Linux tool or sends a Unix signal: not under Wine.
#[cfg(not(windows))]
#[test]
fn curl_over_https() {
    if !curl_available() {
        println!("note: curl is not on PATH; skipping");
        return;
    }
    let server = start_with(vec![tls_listener(Protocols::BOTH)], Limits::default());
    let url = format!("https://{}/plaintext", server.local_addrs()[0]);
    let out = Command::new("curl")
        .args(["-q", "-sS", "-k", "--http1.1", "--max-time", "5", "--noproxy", "*", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"Hello, World!");

    // Without --http1.1 curl offers both (when built with HTTP/2); which one the server then
    // serves is the ALPN test's business, so only the offer is checked here.
    let version = Command::new("curl").arg("--version").output().unwrap();
    let has_h2 = String::from_utf8_lossy(&version.stdout).contains("HTTP2");
    let out = Command::new("curl")
        .args(["-q", "-sS", "-k", "-v", "--max-time", "5", "--noproxy", "*", &url])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let offer = stderr
        .lines()
        .find(|l| l.contains("ALPN") && l.contains("offer"))
        .unwrap_or_else(|| panic!("curl -v shows no ALPN offer: {stderr}"));
    assert!(offer.contains("http/1.1"), "{offer}");
    if has_h2 {
        assert!(offer.contains("h2"), "{offer}");
        assert!(stderr.contains("ALPN: server accepted h2"), "{stderr}");
    }
    stop(server);
}

#[test]
fn cleartext_listener_sniffs_the_h2_preface() {
    let server = start_with(vec![any_port().into()], Limits::default());
    let addr = server.local_addrs()[0];
    // An HTTP/1 request that starts like the preface ("P"), sent one byte at a time.
    let mut c = Client::connect(addr);
    for byte in b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi" {
        c.send(&[*byte]);
    }
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str()), (200, "hi"));
    drop(c);

    // The preface, split: reaches the HTTP/2 loop, whose first frame is its SETTINGS (not an
    // HTTP/1 400).
    let mut c = Client::connect(addr);
    c.send(b"PRI * HTTP/2.0\r\n");
    c.send(b"\r\nSM\r\n\r\n");
    let head = c.read_exact(9);
    assert_eq!((head[3], head[4]), (0x4, 0), "not a SETTINGS frame: {head:?}");
    drop(c);
    metric(&server, "peregrine_connections_by_protocol_total{protocol=\"h2\"} ", 1);
    metric(&server, "peregrine_connections_by_protocol_total{protocol=\"http/1.1\"} ", 1);

    // A preface prefix followed by a differing byte is HTTP/1 at once (a 400 here).
    let mut c = Client::connect(addr);
    c.send(b"PRI * HTTP/1.1\r\n\r\n");
    assert_eq!(c.read_response().status, 400);
    drop(c);
    stop(server);
}

#[test]
fn h2_only_cleartext_listener_treats_everything_as_h2() {
    let spec = ListenerSpec::from(any_port()).with_protocols(Protocols::H2);
    let server = start_with(vec![spec], Limits::default());
    let mut c = Client::connect(server.local_addrs()[0]);
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    // The HTTP/2 loop's SETTINGS may already be on the wire; then a close without GOAWAY
    // (RFC 9113 §3.4: a peer that sent no preface is probably not speaking HTTP/2).
    let received = c.read_to_eof();
    assert!(!received.starts_with(b"HTTP/"), "an h2-only listener answered HTTP/1");
    assert!(received.is_empty() || received[3] == 0x4, "{received:?}");
    metric(&server, "peregrine_connections_by_protocol_total{protocol=\"h2\"} ", 1);
    drop(c);
    stop(server);
}

#[test]
fn tls_connection_ends_with_close_notify() {
    let server = start_with(vec![tls_listener(Protocols::BOTH)], Limits::default());
    let mut s = tls::connect(server.local_addrs()[0], "localhost", &[b"http/1.1"]).unwrap();
    s.write_all(b"GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut all = Vec::new();
    // read_to_end fails with UnexpectedEof if TCP closes without close_notify.
    s.read_to_end(&mut all).expect("a clean TLS close");
    assert!(all.ends_with(b"Hello, World!"), "{:?}", String::from_utf8_lossy(&all));
    stop(server);
}

#[test]
fn graceful_shutdown_closes_connections_still_in_their_handshake() {
    let server = start_with(vec![tls_listener(Protocols::BOTH)], Limits::default());
    let addr = server.local_addrs()[0];
    let mut silent = Client::connect(addr); // plain TCP: says nothing
                                            // A completed exchange first, so the silent connection (accepted before it) is in its
                                            // handshake when the shutdown starts.
    assert_eq!(get_plaintext(tls::connect(addr, "localhost", &[]).unwrap()), 200);
    server.shutdown();
    assert!(silent.is_closed(Duration::from_secs(2)), "handshake kept open by shutdown");
    drop(silent);
    common::wait_within(server, Duration::from_secs(5));
}
