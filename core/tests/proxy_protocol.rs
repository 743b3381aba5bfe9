//! The PROXY protocol on listeners: parsed from trusted peers only (v1 and v2, before
//! cleartext HTTP and before a TLS handshake), the client it names reaching handlers and the
//! proxy's forwarded fields; required from trusted peers, never parsed from others.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{Client, RawResponse};
use http::{Request, Response};
use peregrine::{Body, ConnectionInfo, IoChoice, Limits, ListenerSpec, Server, ServerConfig};

/// Answers with the peer the server believes, and whether the connection is TLS.
fn who(request: Request<Body>) -> std::future::Ready<Response<Body>> {
    let info = request.extensions().get::<ConnectionInfo>().copied().unwrap_or_default();
    let peer = info.peer.map_or("none".to_string(), |p| p.to_string());
    std::future::ready(Response::new(Body::from(format!("{peer} tls={}", info.tls))))
}

fn start(listener: ListenerSpec) -> Server {
    let config = ServerConfig {
        listen: vec![listener],
        threads: Some(1),
        pin_threads: false,
        io: IoChoice::Auto,
        limits: Limits::default(),
        ..ServerConfig::default()
    };
    Server::start(config, || who).expect("server starts")
}

fn loopback(trust: &str) -> ListenerSpec {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    ListenerSpec::from(addr).with_proxy_protocol(vec![trust.parse().unwrap()])
}

fn exchange(server: &Server, prefix: &[u8]) -> RawResponse {
    let mut c = Client::connect(server.local_addrs()[0]);
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    c.send(&bytes);
    c.read_response()
}

fn v2_ipv4(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&80u16.to_be_bytes());
    h
}

#[test]
fn a_trusted_peer_s_header_names_the_client() {
    let server = start(loopback("127.0.0.0/8"));
    let r = exchange(&server, b"PROXY TCP4 203.0.113.7 127.0.0.1 56324 80\r\n");
    assert_eq!(r.text(), "203.0.113.7:56324 tls=false");
    let r = exchange(&server, &v2_ipv4([198, 51, 100, 9], 4242));
    assert_eq!(r.text(), "198.51.100.9:4242 tls=false");
    // LOCAL (the balancer's health check): the connection's own address stays.
    let r = exchange(&server, b"PROXY UNKNOWN\r\n");
    assert!(r.text().starts_with("127.0.0.1:"), "{}", r.text());
    server.shutdown();
    server.wait();
}

#[test]
fn a_trusted_peer_without_a_valid_header_is_closed() {
    let server = start(loopback("127.0.0.0/8"));
    for prefix in [&b""[..], b"PROXY TCP4 nonsense\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2"] {
        let mut c = Client::connect(server.local_addrs()[0]);
        c.send(prefix);
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let got = c.read_to_eof_within(Duration::from_secs(5));
        assert!(
            !String::from_utf8_lossy(&got).contains("tls="),
            "answered without a valid header: {}",
            String::from_utf8_lossy(prefix)
        );
    }
    server.shutdown();
    server.wait();
}

#[test]
fn an_untrusted_peer_s_header_is_never_parsed() {
    let server = start(loopback("10.0.0.0/8"));
    let r = exchange(&server, b"PROXY TCP4 203.0.113.7 127.0.0.1 56324 80\r\n");
    assert_eq!(r.status, 400, "the header is just bad HTTP from this peer");
    let r = exchange(&server, b"");
    assert!(r.text().starts_with("127.0.0.1:"), "{}", r.text());
    server.shutdown();
    server.wait();
}

#[test]
fn the_header_comes_before_a_tls_handshake() {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listener = ListenerSpec::tls(addr, common::tls::localhost_settings())
        .with_proxy_protocol(vec!["127.0.0.1/32".parse().unwrap()]);
    let server = start(listener);
    let addr = server.local_addrs()[0];
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let body = rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"PROXY TCP6 2001:db8::5 ::1 9999 443\r\n").await.unwrap();
        let connector =
            tokio_rustls::TlsConnector::from(common::tls::client_config(&[b"http/1.1"]));
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.expect("TLS after the header");
        tls.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut out = Vec::new();
        tls.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    });
    assert!(body.ends_with("[2001:db8::5]:9999 tls=true"), "{body}");
    server.shutdown();
    server.wait();
}

#[test]
fn the_proxy_forwards_the_client_the_header_named() {
    let up = common::upstream::start(|s| {
        common::upstream::ok(&s.header("x-forwarded-for").unwrap_or_default(), "")
    });
    let servers =
        vec![peregrine::proxy::UpstreamServer::parse(&format!("http://{}", up.addr)).unwrap()];
    let config = Arc::new(peregrine::proxy::ProxyConfig::new(servers));
    let listen = ServerConfig {
        listen: vec![loopback("127.0.0.0/8")],
        threads: Some(1),
        pin_threads: false,
        ..ServerConfig::default()
    };
    let server =
        Server::start(listen, move || peregrine::proxy::Proxy::new(Arc::clone(&config))).unwrap();
    let r = exchange(&server, b"PROXY TCP4 203.0.113.7 127.0.0.1 1 80\r\n");
    assert_eq!(r.text(), "203.0.113.7");
    server.shutdown();
    server.wait();
}
