//! Stopping under load: SIGTERM to the binary while 32 keep-alive clients send requests in a
//! loop. Every request the server took on completes: no connection that had been served
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
