//! Stopping under load: SIGTERM to the binary while 32 keep-alive clients send requests in a
//! loop. Every request the server took on completes: no connection that had been served
//! fails a later request (idle connections are not closed under a request already sent; a
//! request that comes is answered with `Connection: close`), no response is anything but
//! `200`, and the process exits promptly. Connections still in the kernel's backlog when the
//! listener closes were never accepted, so a failure on a connection's first request is
//! not counted.
#![cfg(unix)]

mod common;
#[path = "support/process.rs"]
mod process;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use process::Proc;

const CLIENTS: usize = 32;

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    /// Non-200 responses, and failures on connections that had been served before.
    failed: AtomicU64,
    /// Connections closed by a `Connection: close` response.
    told_to_close: AtomicU64,
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

/// Requests in a loop until the server stops taking connections (or `stop`).
fn client(addr: SocketAddr, tally: &Tally, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(stream) = TcpStream::connect(addr) else { return };
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

#[test]
fn sigterm_under_keep_alive_load_completes_every_accepted_request() {
    let mut server = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_peregrine"))
            .args(["--threads", "2", "--no-pin", "--listen", "127.0.0.1:0"])
            .env("NO_COLOR", "1"),
    );
    let addr = server.listening();
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (tally, stop) = (Arc::clone(&tally), Arc::clone(&stop));
            std::thread::spawn(move || client(addr, &tally, &stop))
        })
        .collect();
    // Under load for a moment, then the signal.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tally.ok.load(Ordering::Relaxed) < 2_000 {
        assert!(Instant::now() < deadline, "the clients made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = server.child.id();
    let signalled = Instant::now();
    let status = server.sigterm(pid);
    let stopped = signalled.elapsed();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread");
    }
    assert!(status.success(), "exit status {status:?}; stderr: {}", server.stderr());
    assert!(stopped < Duration::from_secs(5), "took {stopped:?} to stop");
    let (ok, failed) = (tally.ok.load(Ordering::Relaxed), tally.failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} accepted requests failed ({ok} succeeded)");
    assert!(
        tally.told_to_close.load(Ordering::Relaxed) > 0,
        "no connection was told to close: did the shutdown drain any?"
    );
}
