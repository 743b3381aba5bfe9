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
use std::thread;
use std::time::{Duration, Instant};

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

/// Measures `server` with `target` idle connections. The server should be
/// freshly started; it is left running with no connections open.
pub fn measure(server: &mut Server, target: usize) -> Result<IdleMemory, String> {
    server.check_running()?;
    let pid = server.pid();
    let rss_before = procstat::read_tree_rss_bytes(pid).map_err(|e| format!("RSS: {e}"))?;
    let (conns, stopped_by) = open_idle(server.addr(), target);
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
pub fn open_idle(addr: SocketAddrV4, target: usize) -> (Vec<TcpStream>, Option<String>) {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut conns = Vec::with_capacity(target);
    while conns.len() < target {
        if Instant::now() >= deadline {
            return (conns, Some(format!("opening took longer than {PHASE_TIMEOUT:?}")));
        }
        let batch = BATCH.min(target - conns.len());
        let results: Vec<(Vec<TcpStream>, Option<String>)> = thread::scope(|scope| {
            let workers: Vec<_> = (0..THREADS)
                .map(|t| {
                    // Split the batch evenly; the first threads take the remainder.
                    let share = batch / THREADS + usize::from(t < batch % THREADS);
                    scope.spawn(move || open_some(addr, share, deadline))
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
fn open_some(
    addr: SocketAddrV4,
    count: usize,
    deadline: Instant,
) -> (Vec<TcpStream>, Option<String>) {
    let mut conns = Vec::with_capacity(count);
    for _ in 0..count {
        if Instant::now() >= deadline {
            return (conns, Some(format!("opening took longer than {PHASE_TIMEOUT:?}")));
        }
        match open_one(addr) {
            Ok(conn) => conns.push(conn),
            Err(e) => return (conns, Some(e)),
        }
    }
    (conns, None)
}

/// One keep-alive connection that has completed one `GET /plaintext`.
fn open_one(addr: SocketAddrV4) -> Result<TcpStream, String> {
    let mut conn = TcpStream::connect_timeout(&SocketAddr::V4(addr), IO_TIMEOUT)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    conn.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
    conn.set_write_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
    // HTTP/1.1 without `Connection: close`: the server keeps it open. One
    // write (`write!` on a socket would send each piece as its own segment).
    let request = format!("GET /plaintext HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    conn.write_all(request.as_bytes()).map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    while !servers::plaintext_response_ok(&response) {
        match conn.read(&mut buf) {
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
    Ok(conn)
}

/// How many of `conns` the server has not closed: a non-blocking peek sees
/// `WouldBlock` on an open, idle connection and end-of-file (or an error) on
/// one the server closed.
pub fn count_open(conns: &[TcpStream]) -> usize {
    let mut byte = [0u8; 1];
    conns
        .iter()
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
        let (conns, error) = open_idle(addr, 50);
        assert_eq!(error, None);
        assert_eq!(conns.len(), 50);
        assert_eq!(count_open(&conns), 50);
    }

    #[test]
    fn counts_connections_the_server_closed() {
        let addr = toy_server(5);
        // The server closes after responding, so every connection opens fine.
        let (conns, error) = open_idle(addr, 20);
        assert_eq!(error, None);
        thread::sleep(Duration::from_millis(100));
        assert_eq!(count_open(&conns), 16);
    }

    #[test]
    fn stops_at_the_first_failure() {
        // Nothing listens on a port we just released.
        let port = servers::free_loopback_port().unwrap();
        let (conns, error) = open_idle(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port), 10);
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
