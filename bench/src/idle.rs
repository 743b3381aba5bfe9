//! Memory per idle keep-alive connection.
//!
//! An edge server spends most of its connections waiting: browsers and
//! upstream pools keep sockets open between requests. What each idle
//! connection costs in resident memory therefore bounds how many a box can
//! hold. The harness measures it directly: open N connections to a freshly
//! started server, send one `GET /plaintext` on each and read the response (so
//! every connection has gone through a full request and sits in the server's
//! keep-alive state), then compare the server's RSS with what it was before.
//!
//! The client is plain std: a few threads doing blocking connects on
//! loopback, in batches, each connection and the whole phase with a bounded
//! wait. When the machine runs out of something (ephemeral ports, descriptor
//! limits, the server's own cap), the harness reports how many it reached.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::procstat;
use crate::servers::{self, Server};

/// Connections opened per batch; a batch with a failure ends the phase.
const BATCH: usize = 500;
/// Client threads per batch. Connects on loopback are quick; a few threads
/// hide the server's turn-around without swamping the 2-core box.
const THREADS: usize = 4;
/// Per-connection bound on connecting and on the one response.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on opening all connections.
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between the last connection and the RSS reading, so the server has
/// finished whatever it does after a response (buffer release, timers).
const SETTLE: Duration = Duration::from_secs(1);

/// The protocol an idle connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// HTTP/1.1 keep-alive.
    Http1,
    /// HTTP/2 by prior knowledge on the cleartext port.
    H2c,
    /// HTTP/1.1 over TLS (ALPN `http/1.1`).
    TlsHttp1,
    /// HTTP/2 over TLS (ALPN `h2`).
    TlsH2,
}

impl Path {
    /// Every path, in report order.
    pub const ALL: [Path; 4] = [Path::Http1, Path::H2c, Path::TlsHttp1, Path::TlsH2];

    /// Shown in the report.
    pub fn label(self) -> &'static str {
        match self {
            Path::Http1 => "HTTP/1.1",
            Path::H2c => "h2c",
            Path::TlsHttp1 => "HTTP/1.1 over TLS",
            Path::TlsH2 => "h2 over TLS",
        }
    }

    /// Whether the path needs the server's TLS listener.
    pub fn tls(self) -> bool {
        matches!(self, Path::TlsHttp1 | Path::TlsH2)
    }

    fn h2(self) -> bool {
        matches!(self, Path::H2c | Path::TlsH2)
    }
}

/// How the harness reaches a server on one path.
#[derive(Clone)]
pub struct Client {
    /// The path.
    pub path: Path,
    /// The address to connect to (the server's cleartext or TLS port).
    pub addr: SocketAddrV4,
    /// For TLS paths: a client config trusting the run's certificate, with the path's ALPN.
    pub tls: Option<Arc<ClientConfig>>,
}

/// A client config for `path` that accepts exactly `certificate` (PEM), the run's
/// self-signed one. Pinned rather than used as a root: `openssl req -x509` marks it a CA,
/// which webpki refuses as a server certificate. Signatures are still checked.
pub fn tls_client_config(
    path: Path,
    certificate: &std::path::Path,
) -> Result<Arc<ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    let cert = rustls::pki_types::CertificateDer::from_pem_file(certificate)
        .map_err(|e| format!("{}: {e}", certificate.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(Pinned { cert: cert.into_owned(), provider: Arc::clone(&provider) });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![if path.h2() { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
    Ok(Arc::new(config))
}

/// Accepts one exact server certificate (see [`tls_client_config`]).
#[derive(Debug)]
struct Pinned {
    cert: rustls::pki_types::CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the run's certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// One held connection.
pub enum Conn {
    /// Cleartext.
    Plain(TcpStream),
    /// TLS (boxed: rustls' state is large).
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        }
    }

    fn stream(&mut self) -> &mut dyn ReadWrite {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &mut **s,
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// The idle-memory measurement of one server.
#[derive(Debug, Clone, PartialEq)]
pub struct IdleMemory {
    /// Connections asked for.
    pub target: usize,
    /// Connections that completed their request and were held.
    pub opened: usize,
    /// Of those, still open (not closed by the server) right after the RSS
    /// reading: the divisor.
    pub open_at_sample: usize,
    /// Server RSS (process tree) after start-up and one check request.
    pub rss_before: u64,
    /// Server RSS with the connections held idle.
    pub rss_after: u64,
    /// Why opening stopped short of `target`, if it did.
    pub stopped_by: Option<String>,
}

impl IdleMemory {
    /// `(RSS after − RSS before) / connections`, in bytes; `None` without
    /// connections. Negative when the server returned more memory to the OS
    /// than the connections took (it happens with small counts).
    pub fn bytes_per_connection(&self) -> Option<f64> {
        (self.open_at_sample > 0)
            .then(|| (self.rss_after as f64 - self.rss_before as f64) / self.open_at_sample as f64)
    }
}

/// Measures `server` with `target` idle connections made by `client`. The server should be
/// freshly started; it is left running with no connections open. One connection is opened
/// and closed first, so what a first request sets up once is in the baseline.
pub fn measure(server: &mut Server, target: usize, client: &Client) -> Result<IdleMemory, String> {
    server.check_running()?;
    let pid = server.pid();
    drop(open_one(client)?);
    thread::sleep(SETTLE);
    let rss_before = procstat::read_tree_rss_bytes(pid).map_err(|e| format!("RSS: {e}"))?;
    let (conns, stopped_by) = open_idle(client, target);
    thread::sleep(SETTLE);
    let rss_after = procstat::read_tree_rss_bytes(pid).map_err(|e| format!("RSS: {e}"));
    let open_at_sample = count_open(&conns);
    let opened = conns.len();
    // Closing thousands of sockets takes a moment; do it before the next server.
    drop(conns);
    server.check_running()?;
    Ok(IdleMemory { target, opened, open_at_sample, rss_before, rss_after: rss_after?, stopped_by })
}

/// Opens up to `target` connections, each with one completed request.
/// Returns the open connections and, if it stopped short, the first error.
pub fn open_idle(client: &Client, target: usize) -> (Vec<Conn>, Option<String>) {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut conns = Vec::with_capacity(target);
    while conns.len() < target {
        if Instant::now() >= deadline {
            return (conns, Some(format!("opening took longer than {PHASE_TIMEOUT:?}")));
        }
        let batch = BATCH.min(target - conns.len());
        let results: Vec<(Vec<Conn>, Option<String>)> = thread::scope(|scope| {
            let workers: Vec<_> = (0..THREADS)
                .map(|t| {
                    // Split the batch evenly; the first threads take the remainder.
                    let share = batch / THREADS + usize::from(t < batch % THREADS);
                    scope.spawn(move || open_some(client, share, deadline))
                })
                .collect();
            workers.into_iter().map(|w| w.join().expect("opener thread panicked")).collect()
        });
        let mut first_error = None;
        for (mut opened, error) in results {
            conns.append(&mut opened);
            first_error = first_error.or(error);
        }
        if let Some(e) = first_error {
            return (conns, Some(e));
        }
    }
    (conns, None)
}

/// Opens `count` connections one after another, stopping at the first error.
fn open_some(client: &Client, count: usize, deadline: Instant) -> (Vec<Conn>, Option<String>) {
    let mut conns = Vec::with_capacity(count);
    for _ in 0..count {
        if Instant::now() >= deadline {
            return (conns, Some(format!("opening took longer than {PHASE_TIMEOUT:?}")));
        }
        match open_one(client) {
            Ok(conn) => conns.push(conn),
            Err(e) => return (conns, Some(e)),
        }
    }
    (conns, None)
}

/// The client's SETTINGS (empty), then `GET /plaintext` on stream 1 (END_STREAM), its
/// header block HPACK by hand: static-table indices and literals without indexing.
fn h2_request(tls: bool, authority: &str) -> Vec<u8> {
    let mut block = vec![0x82, if tls { 0x87 } else { 0x86 }, 0x04, 10];
    block.extend(b"/plaintext");
    block.extend([0x01, authority.len() as u8]);
    block.extend(authority.as_bytes());
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend([0, 0, 0, 4, 0, 0, 0, 0, 0]);
    out.extend(&(block.len() as u32).to_be_bytes()[1..]);
    out.extend([1, 0x5, 0, 0, 0, 1]);
    out.extend(block);
    out
}

/// SETTINGS with ACK, sent once the server's SETTINGS (and the response) arrived: a
/// connection that never acknowledges would be closed by SETTINGS_TIMEOUT.
const SETTINGS_ACK: [u8; 9] = [0, 0, 0, 4, 1, 0, 0, 0, 0];

/// One keep-alive connection on `client.path` that has completed one `GET /plaintext`.
fn open_one(client: &Client) -> Result<Conn, String> {
    let addr = client.addr;
    let tcp = TcpStream::connect_timeout(&SocketAddr::V4(addr), IO_TIMEOUT)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    tcp.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
    let mut conn = match &client.tls {
        None => Conn::Plain(tcp),
        Some(config) => {
            let name = ServerName::try_from("localhost").expect("a valid name");
            let tls =
                ClientConnection::new(Arc::clone(config), name).map_err(|e| format!("TLS: {e}"))?;
            let mut stream = StreamOwned::new(tls, tcp);
            while stream.conn.is_handshaking() {
                stream
                    .conn
                    .complete_io(&mut stream.sock)
                    .map_err(|e| format!("TLS handshake: {e}"))?;
            }
            Conn::Tls(Box::new(stream))
        }
    };
    // One write (`write!` on a socket would send each piece as its own segment). HTTP/1.1
    // without `Connection: close`: the server keeps it open.
    let request = if client.path.h2() {
        h2_request(client.path.tls(), &addr.to_string())
    } else {
        format!("GET /plaintext HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes()
    };
    let stream = conn.stream();
    stream.write_all(&request).map_err(|e| format!("write: {e}"))?;
    stream.flush().map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::with_capacity(256);
    let mut buf = [0u8; 4096];
    let done = |r: &[u8]| {
        if client.path.h2() {
            r.windows(servers::PLAINTEXT_BODY.len())
                .any(|w| w == servers::PLAINTEXT_BODY.as_bytes())
        } else {
            servers::plaintext_response_ok(r)
        }
    };
    while !done(&response) {
        match stream.read(&mut buf) {
            Ok(0) => {
                return Err(format!(
                    "server closed the connection; got {:?}",
                    String::from_utf8_lossy(&response)
                ))
            }
            Ok(n) if response.len() + n <= 16 * 1024 => response.extend_from_slice(&buf[..n]),
            Ok(_) => return Err("response larger than 16 KiB".into()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    if client.path.h2() {
        stream.write_all(&SETTINGS_ACK).map_err(|e| format!("write: {e}"))?;
        stream.flush().map_err(|e| format!("write: {e}"))?;
    }
    Ok(conn)
}

/// How many of `conns` the server has not closed: a non-blocking peek sees
/// `WouldBlock` on an open, idle connection and end-of-file (or an error) on
/// one the server closed.
pub fn count_open(conns: &[Conn]) -> usize {
    let mut byte = [0u8; 1];
    conns
        .iter()
        .map(Conn::tcp)
        .filter(|conn| {
            if conn.set_nonblocking(true).is_err() {
                return false;
            }
            match conn.peek(&mut byte) {
                Err(e) => e.kind() == io::ErrorKind::WouldBlock,
                // Unsolicited bytes: odd, but the connection is open.
                Ok(n) => n > 0,
            }
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    fn plain(addr: SocketAddrV4) -> Client {
        Client { path: Path::Http1, addr, tls: None }
    }

    /// A tiny keep-alive server: answers one request per connection and then
    /// holds it, except every `close_every`-th connection, which it closes.
    fn toy_server(close_every: usize) -> SocketAddrV4 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = match listener.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!(),
        };
        thread::spawn(move || {
            let mut held = Vec::new();
            for (i, conn) in listener.incoming().enumerate() {
                let Ok(mut conn) = conn else { break };
                // Read the whole head: closing a socket with unread bytes
                // sends a reset instead of a clean close.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ =
                    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!");
                if (i + 1) % close_every != 0 {
                    held.push(conn);
                }
            }
        });
        addr
    }

    #[test]
    fn opens_and_counts_idle_connections() {
        let addr = toy_server(usize::MAX);
        let (conns, error) = open_idle(&plain(addr), 50);
        assert_eq!(error, None);
        assert_eq!(conns.len(), 50);
        assert_eq!(count_open(&conns), 50);
    }

    #[test]
    fn counts_connections_the_server_closed() {
        let addr = toy_server(5);
        // The server closes after responding, so every connection opens fine.
        let (conns, error) = open_idle(&plain(addr), 20);
        assert_eq!(error, None);
        thread::sleep(Duration::from_millis(100));
        assert_eq!(count_open(&conns), 16);
    }

    #[test]
    fn stops_at_the_first_failure() {
        // Nothing listens on a port we just released.
        let port = servers::free_loopback_port().unwrap();
        let (conns, error) = open_idle(&plain(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)), 10);
        assert!(conns.is_empty());
        // Almost always "connect ... refused"; in the rare case the kernel
        // picks the same port as source (a TCP self-connect) it is a read
        // timeout instead. Either way, nothing is held.
        assert!(error.is_some());
    }

    #[test]
    fn bytes_per_connection() {
        let m = IdleMemory {
            target: 10,
            opened: 10,
            open_at_sample: 8,
            rss_before: 1000,
            rss_after: 9000,
            stopped_by: None,
        };
        assert_eq!(m.bytes_per_connection(), Some(1000.0));
        let none = IdleMemory { open_at_sample: 0, ..m.clone() };
        assert_eq!(none.bytes_per_connection(), None);
        let shrunk = IdleMemory { rss_after: 200, ..m };
        assert_eq!(shrunk.bytes_per_connection(), Some(-100.0));
    }
}
