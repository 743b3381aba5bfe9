//! Keep-alive clients sending requests in a loop, for the tests that stop or replace a
//! server under load. A failure counts only on a connection the server had taken on (it
//! answered an earlier request there): connections still in a backlog when a listener
//! closes were never accepted. Optionally a refused connection counts too (when a server
//! must go on accepting, as in an upgrade).
#![allow(dead_code)] // each test uses part of it

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Clients per load.
pub const CLIENTS: usize = 32;

/// What the clients saw.
#[derive(Default)]
pub struct Tally {
    pub ok: AtomicU64,
    /// Non-200 responses, failures on connections that had been served before, and (when
    /// asked) refused connections.
    pub failed: AtomicU64,
    /// Connections closed by a `Connection: close` response.
    pub told_to_close: AtomicU64,
    /// Of `failed`: refused connections, and failures on served connections.
    pub refused: AtomicU64,
    pub cut: AtomicU64,
}

impl Tally {
    /// A line for an assertion message.
    pub fn describe(&self) -> String {
        format!(
            "{} ok, {} failed ({} refused connections, {} cut on served connections), {} told to close",
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.cut.load(Ordering::Relaxed),
            self.told_to_close.load(Ordering::Relaxed)
        )
    }
}

/// A running load.
pub struct Load {
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts [`CLIENTS`] clients on `addr`.
    pub fn start(addr: SocketAddr, refused_is_failure: bool) -> Load {
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..CLIENTS)
            .map(|_| {
                let (tally, stop) = (Arc::clone(&tally), Arc::clone(&stop));
                std::thread::spawn(move || client(addr, &tally, &stop, refused_is_failure))
            })
            .collect();
        Load { tally, stop, clients }
    }

    /// Requests answered `200` so far.
    pub fn ok(&self) -> u64 {
        self.tally.ok.load(Ordering::Relaxed)
    }

    /// Waits (at most 10 s) until `n` requests have been answered in all.
    pub fn wait_for(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ok() < n {
            assert!(Instant::now() < deadline, "the clients made no progress ({} ok)", self.ok());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the clients and returns what they saw.
    pub fn stop(self) -> Arc<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.clients {
            c.join().expect("client thread");
        }
        self.tally
    }
}

/// One response: its status and whether it asked to close. `Err` on EOF or a reset.
fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<(u16, bool)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (mut length, mut close) = (0usize, false);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let field = line.trim_end().to_ascii_lowercase();
        if field.is_empty() {
            break;
        }
        if let Some(v) = field.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if field == "connection: close" {
            close = true;
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body)?;
    Ok((status, close))
}

/// Requests in a loop until `stop`, or until the server takes no more connections.
fn client(addr: SocketAddr, tally: &Tally, stop: &AtomicBool, refused_is_failure: bool) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(stream) = TcpStream::connect(addr) else {
            if refused_is_failure {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                tally.refused.fetch_add(1, Ordering::Relaxed);
            }
            return;
        };
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let mut served = 0u64;
        loop {
            let sent = writer.write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n");
            match sent.and_then(|()| read_response(&mut reader)) {
                Ok((status, close)) => {
                    served += 1;
                    if status == 200 {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    if close {
                        tally.told_to_close.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
                Err(_) => {
                    if served > 0 {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                        tally.cut.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
        }
    }
}
