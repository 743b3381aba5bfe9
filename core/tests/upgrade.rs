//! Zero-downtime binary upgrade (SIGUSR2) under load: 32 keep-alive clients in a request
//! loop see no failed request and no refused connection while the running binary hands its
//! listening sockets to a new process, which serves on; the old one drains and exits. A new
//! binary that fails to start leaves the old one serving.
#![cfg(target_os = "linux")]

#[path = "support/load.rs"]
mod load;
#[path = "support/process.rs"]
mod process;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use load::Load;
use process::Proc;

fn start(extra_env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peregrine"));
    cmd.args(["--threads", "2", "--no-pin", "--listen", "127.0.0.1:0"]).env("NO_COLOR", "1");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    Proc::spawn(&mut cmd)
}

fn signal(name: &str, pid: u32) {
    let status = Command::new("kill").args([name, &pid.to_string()]).status().expect("run kill");
    assert!(status.success(), "kill {name} {pid}");
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.split(' ').nth(2).is_none_or(|state| state != "Z"))
}

#[test]
fn sigusr2_hands_the_sockets_to_a_new_process_without_failing_a_request() {
    let mut old = start(&[]);
    let addr = old.listening();
    let old_pid = old.child.id();
    // SIGUSR2 is caught once the SIGTERM handler is (they are installed together).
    let deadline = Instant::now() + process::WAIT;
    while !process::catches_sigterm(old_pid) {
        assert!(Instant::now() < deadline, "no signal handlers");
        std::thread::sleep(Duration::from_millis(10));
    }
    let load = Load::start(addr, true);
    load.wait_for(2_000);
    signal("-USR2", old_pid);
    // The new process shares the old one's stdout.
    let line = old
        .line_starting("upgraded: pid ", process::WAIT)
        .unwrap_or_else(|| panic!("the new process never reported; stderr: {}", old.stderr()));
    let new_pid: u32 = line["upgraded: pid ".len()..]
        .split(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("new pid");
    assert_ne!(new_pid, old_pid);
    let status = old.exit_within(process::WAIT).expect("the old process did not exit");
    assert!(status.success(), "old process: {status:?}; stderr: {}", old.stderr());
    // The new process alone serves now.
    let served_before = load.ok();
    load.wait_for(served_before + 2_000);
    let tally = load.stop();
    assert!(alive(new_pid), "the new process is gone");
    signal("-TERM", new_pid);
    let deadline = Instant::now() + process::WAIT;
    while alive(new_pid) {
        assert!(Instant::now() < deadline, "the new process did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (ok, failed) = (tally.ok.load(Ordering::Relaxed), tally.failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{}", tally.describe());
    let _ = ok;
    assert!(tally.told_to_close.load(Ordering::Relaxed) > 0, "no connection was drained");
}

#[test]
fn a_new_binary_that_fails_leaves_the_old_one_serving() {
    let mut old = start(&[("PEREGRINE_UPGRADE_BINARY", "/bin/false")]);
    let addr = old.listening();
    let pid = old.child.id();
    let deadline = Instant::now() + process::WAIT;
    while !process::catches_sigterm(pid) {
        assert!(Instant::now() < deadline, "no signal handlers");
        std::thread::sleep(Duration::from_millis(10));
    }
    signal("-USR2", pid);
    let why = old.wait_stderr("upgrade failed");
    assert!(why.contains("did not take over"), "{why}");
    let load = Load::start(addr, true);
    load.wait_for(200);
    let tally = load.stop();
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0);
    assert!(old.sigterm(pid).success());
}
