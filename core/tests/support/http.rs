//! HTTP/1.1 by hand for tests that drive the `peregrine` binary: one request on a connection
//! of its own. Included by several test crates with `#[path]`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// `method path` with `Connection: close` on a new connection; the whole response as text.
/// The read waits up to 40 s (an admin `POST /upgrade` answers once the new process is
/// ready).
pub fn once(addr: SocketAddr, method: &str, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
