//! Stopping under load: SIGTERM to the binary while clients send requests in a loop: 32
//! HTTP/1.1 keep-alive clients, or eight h2c connections of ten streams each (whose streams
//! the two-phase GOAWAY lets finish; one above the final GOAWAY's last stream id, or
//! refused, was never taken on and does not count). Every request the server took on completes: no connection that had been served
//! fails a later request (idle connections are not closed under a request already sent; a
//! request that comes is answered with `Connection: close`), no response is anything but
//! `200`, and the process exits promptly. Connections still in the kernel's backlog when the
//! listener closes were never accepted, so a failure on a connection's first request is
//! not counted.
#![cfg(unix)]

#[path = "support/load.rs"]
mod load;
#[path = "support/process.rs"]
mod process;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use load::Load;
use process::Proc;

#[test]
fn sigterm_under_keep_alive_load_completes_every_accepted_request() {
    let mut server = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_peregrine"))
            .args(["--threads", "2", "--no-pin", "--listen", "127.0.0.1:0"])
            .env("NO_COLOR", "1"),
    );
    let addr = server.listening();
    let load = Load::start(addr, false);
    // Under load for a moment, then the signal.
    load.wait_for(2_000);
    let pid = server.child.id();
    let signalled = Instant::now();
    let status = server.sigterm(pid);
    let stopped = signalled.elapsed();
    let tally = load.stop();
    assert!(status.success(), "exit status {status:?}; stderr: {}", server.stderr());
    assert!(stopped < Duration::from_secs(5), "took {stopped:?} to stop");
    let (ok, failed) = (tally.ok.load(Ordering::Relaxed), tally.failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{}", tally.describe());
    let _ = ok;
    assert!(
        tally.told_to_close.load(Ordering::Relaxed) > 0,
        "no connection was told to close: did the shutdown drain any?"
    );
}

/// What the HTTP/2 clients saw.
#[derive(Default)]
struct H2Tally {
    ok: std::sync::atomic::AtomicU64,
    /// Streams the server never took on: refused, or above a GOAWAY's last stream id.
    refused: std::sync::atomic::AtomicU64,
    /// Anything else: a stream the server took on that did not complete with `200`.
    failed: std::sync::atomic::AtomicU64,
    last_error: std::sync::Mutex<String>,
}

impl H2Tally {
    fn error(&self, e: &h2::Error) {
        let refused = e.reason() == Some(h2::Reason::REFUSED_STREAM)
            || (e.is_go_away() && e.reason() == Some(h2::Reason::NO_ERROR));
        if refused {
            self.refused.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
            *self.last_error.lock().unwrap() = format!("{e:?}");
        }
    }
}

/// Ten streams at a time on one h2c connection, in a loop, until the connection ends.
async fn h2_client(addr: std::net::SocketAddr, tally: std::sync::Arc<H2Tally>) {
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else { return };
    let Ok((send, conn)) = h2::client::handshake(tcp).await else { return };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let uri = format!("http://127.0.0.1:{}/plaintext", addr.port());
    let streams: Vec<_> = (0..10)
        .map(|_| {
            let (mut send, tally, uri) = (send.clone(), std::sync::Arc::clone(&tally), uri.clone());
            tokio::spawn(async move {
                loop {
                    send = match send.ready().await {
                        Ok(s) => s,
                        Err(e) => return tally.error(&e),
                    };
                    let request = http::Request::get(&uri).body(()).unwrap();
                    let response = match send.send_request(request, true) {
                        Ok((response, _)) => response,
                        Err(e) => return tally.error(&e),
                    };
                    let response = match response.await {
                        Ok(r) => r,
                        Err(e) => return tally.error(&e),
                    };
                    let status = response.status();
                    let mut body = response.into_body();
                    while let Some(chunk) = body.data().await {
                        match chunk {
                            Ok(c) => {
                                let _ = body.flow_control().release_capacity(c.len());
                            }
                            Err(e) => return tally.error(&e),
                        }
                    }
                    if status == 200 {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for s in streams {
        let _ = s.await;
    }
}

#[test]
fn sigterm_under_h2c_load_completes_every_stream_the_server_took_on() {
    let mut server = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_peregrine"))
            .args(["--threads", "2", "--no-pin", "--listen", "127.0.0.1:0"])
            .env("NO_COLOR", "1"),
    );
    let addr = server.listening();
    let tally = std::sync::Arc::new(H2Tally::default());
    // Eight connections of ten streams each (h2load -c8 -m10's shape), on a runtime of
    // their own thread; they end when the server closes their connections.
    let clients = {
        let tally = std::sync::Arc::clone(&tally);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            runtime.unwrap().block_on(async {
                let clients: Vec<_> = (0..8)
                    .map(|_| tokio::spawn(h2_client(addr, std::sync::Arc::clone(&tally))))
                    .collect();
                for c in clients {
                    let _ = tokio::time::timeout(Duration::from_secs(20), c).await;
                }
            })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while tally.ok.load(Ordering::Relaxed) < 2_000 {
        assert!(Instant::now() < deadline, "the clients made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = server.child.id();
    let signalled = Instant::now();
    let status = server.sigterm(pid);
    let stopped = signalled.elapsed();
    clients.join().expect("client thread");
    assert!(status.success(), "exit status {status:?}; stderr: {}", server.stderr());
    assert!(stopped < Duration::from_secs(5), "took {stopped:?} to stop");
    let failed = tally.failed.load(Ordering::Relaxed);
    assert_eq!(
        failed,
        0,
        "{failed} streams failed ({} ok, {} refused); last: {}",
        tally.ok.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.last_error.lock().unwrap()
    );
}
