//! What an idle connection costs: the server's RSS growth per connection, counted (not
//! timed) on a `--threads 1` child process that holds thousands of keep-alive connections,
//! each of which has completed one `GET /plaintext`. One test per path (HTTP/1.1, h2c, HTTP/1.1
//! over TLS, h2 over TLS) on each Linux driver.
//!
//! The bounds are generous next to what the release build measures (README, "Idle
//! connections"), so allocator noise cannot trip them, and tight next to the regression
//! they pin: before it was fixed an idle cleartext connection cost 32-38 KB and a TLS one
//! 49-56 KB, because the connection task held its futures twice over.
#![cfg(target_os = "linux")]

mod common;
#[path = "support/process.rs"]
mod process;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::tls::{self as tlsc, TempDir, TlsStream};
use process::Proc;

/// Idle connections held per measurement: enough that the allocator committing memory in
/// steps of a few MiB moves the per-connection figure by under a KiB. Fewer over TLS, where
/// each costs a handshake (in a debug build) and the bound is wider.
const CONNECTIONS: usize = 4000;
const TLS_CONNECTIONS: usize = 2000;
/// Bytes of server RSS per idle cleartext connection (HTTP/1.1 or h2c) the test allows, for
/// the debug build the tests run (its futures are larger than the release build's).
const CLEARTEXT_BOUND: usize = 4 * 1024;
/// Bytes of server RSS per idle TLS connection the test allows (rustls' own state and its
/// 4 KiB record buffer included).
const TLS_BOUND: usize = 16 * 1024;

#[derive(Clone, Copy, Debug)]
enum Path {
    H1,
    H2c,
    TlsH1,
    TlsH2,
}

impl Path {
    fn is_tls(self) -> bool {
        matches!(self, Path::TlsH1 | Path::TlsH2)
    }

    fn connections(self) -> usize {
        if self.is_tls() {
            TLS_CONNECTIONS
        } else {
            CONNECTIONS
        }
    }

    fn bound(self) -> usize {
        if self.is_tls() {
            TLS_BOUND
        } else {
            CLEARTEXT_BOUND
        }
    }
}

/// One client connection, kept open.
enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Conn {
    fn stream(&mut self) -> &mut dyn ReadWrite {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &mut **s,
        }
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// The client's SETTINGS (empty), then `GET /plaintext` on stream 1 (END_STREAM): the
/// header block is HPACK by hand, static-table indices and literals without indexing.
fn h2_request(tls: bool) -> Vec<u8> {
    let mut block = vec![0x82, if tls { 0x87 } else { 0x86 }]; // :method GET, :scheme
    block.extend([0x04, 10]); // :path, literal
    block.extend(b"/plaintext");
    block.extend([0x01, 9]); // :authority, literal
    block.extend(b"localhost");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend([0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS
    let len = block.len() as u32;
    out.extend(&len.to_be_bytes()[1..]);
    out.extend([1, 0x5, 0, 0, 0, 1]); // HEADERS, END_STREAM | END_HEADERS, stream 1
    out.extend(block);
    out
}

/// SETTINGS with ACK: sent once the server's SETTINGS has arrived (with the response).
const SETTINGS_ACK: [u8; 9] = [0, 0, 0, 4, 1, 0, 0, 0, 0];

/// Opens one connection on `path`, completes one request and returns it open.
fn open(path: Path, addr: SocketAddr) -> io::Result<Conn> {
    let mut conn = match path {
        Path::H1 | Path::H2c => {
            let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
            Conn::Plain(tcp)
        }
        Path::TlsH1 => Conn::Tls(Box::new(tlsc::connect(addr, "localhost", &[b"http/1.1"])?)),
        Path::TlsH2 => Conn::Tls(Box::new(tlsc::connect(addr, "localhost", &[b"h2"])?)),
    };
    let h2 = matches!(path, Path::H2c | Path::TlsH2);
    let request = if h2 {
        h2_request(path.is_tls())
    } else {
        b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec()
    };
    let s = conn.stream();
    s.write_all(&request)?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(13).any(|w| w == b"Hello, World!") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        seen.extend_from_slice(&buf[..n]);
    }
    if h2 {
        s.write_all(&SETTINGS_ACK)?;
    }
    s.flush()?;
    Ok(conn)
}

/// The child's resident set size, in bytes.
fn rss(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// Raises this process's open-files soft limit to its hard limit (with util-linux
/// `prlimit`), so the test's clients fit. Returns the limit in force.
fn raise_fd_limit() -> usize {
    let read_limits = || -> Option<(usize, usize)> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        let mut f = line.split_whitespace().skip(3);
        let soft = f.next()?.parse().unwrap_or(usize::MAX);
        let hard = f.next()?.parse().unwrap_or(usize::MAX);
        Some((soft, hard))
    };
    let (soft, hard) = read_limits().expect("read /proc/self/limits");
    if soft < hard {
        let pid = std::process::id().to_string();
        let _ = Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
            .status();
    }
    read_limits().expect("read /proc/self/limits").0
}

/// Starts the server (dev build, one reactor, `io`), holds `path.connections()` idle
/// connections on `path` and returns its RSS growth per connection.
fn per_connection(io: &str, path: Path) -> usize {
    let n = path.connections();
    let needed = n + 256;
    let limit = raise_fd_limit();
    if limit < needed {
        // The server raises its own soft limit the same way (it sizes max_connections from it).
        panic!(
            "open-files limit {limit} is below the {needed} this test needs (hard limit too low)"
        );
    }
    let dir = TempDir::new("idle-memory");
    let (cert, key) = dir.write_leaf("localhost", tlsc::localhost());
    let mut server = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_peregrine"))
            .args(["--threads", "1", "--no-pin", "--io", io])
            .args(["--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1"),
    );
    let plain = server.addr("listening on ", process::WAIT);
    let tls: SocketAddr = server
        .line_starting("listening on https://", process::WAIT)
        .and_then(|l| l["listening on https://".len()..].parse().ok())
        .expect("the TLS listener's address on stdout");
    let addr = if path.is_tls() { tls } else { plain };
    let pid = server.child.id();
    // One connection first, so what a first request sets up once (pools, tables, the
    // date cache, TLS session state) is in the baseline.
    drop(open(path, addr).expect("first connection"));
    std::thread::sleep(Duration::from_millis(300));
    let before = rss(pid);
    let conns: Vec<Conn> = (0..n)
        .map(|i| open(path, addr).unwrap_or_else(|e| panic!("{path:?} connection {i}: {e}")))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let after = rss(pid);
    // Every connection is still open: the server closed none of them as idle or broken.
    for c in &conns {
        c.tcp().set_nonblocking(true).expect("nonblocking");
        let mut byte = [0u8; 1];
        match c.tcp().peek(&mut byte) {
            Ok(0) => panic!("{path:?}: the server closed a held connection"),
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => panic!("{path:?}: {e}"),
            _ => {}
        }
    }
    let per = after.saturating_sub(before) / n;
    println!("{io} {path:?}: RSS {before} -> {after} B, {per} B per idle connection");
    drop(conns);
    per
}

fn check(io: &str, path: Path) {
    if io == "uring" && common::skip_uring() {
        return;
    }
    let per = per_connection(io, path);
    assert!(
        per <= path.bound(),
        "{io} {path:?}: {per} B of server RSS per idle connection (bound {} B)",
        path.bound()
    );
}

macro_rules! idle_tests {
    ($($name:ident: $path:expr;)+) => {
        $(
            mod $name {
                use super::*;

                #[test]
                fn uring() {
                    check("uring", $path);
                }

                #[test]
                fn epoll() {
                    check("epoll", $path);
                }
            }
        )+
    };
}

idle_tests! {
    http1: Path::H1;
    h2c: Path::H2c;
    tls_http1: Path::TlsH1;
    tls_h2: Path::TlsH2;
}
