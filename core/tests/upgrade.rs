//! Zero-downtime binary upgrade (SIGUSR2) under load: 32 keep-alive clients in a request
//! loop see no failed request and no refused connection while the running binary hands its
//! listening sockets to a new process, which serves on; the old one drains and exits. The
//! same under `wrk -c64` and `h2load -c16 -m10` (h2c): every request that reached the server
//! is answered. `POST /upgrade` on the admin listener does the same and hands the admin
//! listener over too. A new binary that fails to start leaves the old one serving.
#![cfg(target_os = "linux")]

#[path = "support/http.rs"]
mod http;
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

/// Waits until `pid` has its signal handlers (SIGUSR2 and SIGHUP are installed with
/// SIGTERM's), so a signal cannot kill it.
fn wait_for_handlers(pid: u32) {
    let deadline = Instant::now() + process::WAIT;
    while !process::catches_sigterm(pid) {
        assert!(Instant::now() < deadline, "no signal handlers in {pid}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pid of the process `old` upgraded to (it prints the line on their shared stdout).
fn upgraded_pid(old: &mut Proc) -> u32 {
    let line = old
        .line_starting("upgraded: pid ", process::WAIT)
        .unwrap_or_else(|| panic!("the new process never reported; stderr: {}", old.stderr()));
    line["upgraded: pid ".len()..].split(' ').next().and_then(|p| p.parse().ok()).expect("new pid")
}

/// SIGTERM to `pid`, which is no child of this test (an upgrade started it), and a wait
/// until it is gone.
fn stop(pid: u32) {
    signal("-TERM", pid);
    let deadline = Instant::now() + process::WAIT;
    while alive(pid) {
        assert!(Instant::now() < deadline, "{pid} did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigusr2_hands_the_sockets_to_a_new_process_without_failing_a_request() {
    let mut old = start(&[]);
    let addr = old.listening();
    let old_pid = old.child.id();
    wait_for_handlers(old_pid);
    let load = Load::start(addr, true);
    load.wait_for(2_000);
    signal("-USR2", old_pid);
    let new_pid = upgraded_pid(&mut old);
    assert_ne!(new_pid, old_pid);
    let status = old.exit_within(process::WAIT).expect("the old process did not exit");
    assert!(status.success(), "old process: {status:?}; stderr: {}", old.stderr());
    // The new process alone serves now.
    let served_before = load.ok();
    load.wait_for(served_before + 2_000);
    let tally = load.stop();
    assert!(alive(new_pid), "the new process is gone");
    stop(new_pid);
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
    wait_for_handlers(pid);
    signal("-USR2", pid);
    let why = old.wait_stderr("upgrade failed");
    assert!(why.contains("did not take over"), "{why}");
    let load = Load::start(addr, true);
    load.wait_for(200);
    let tally = load.stop();
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0);
    assert!(old.sigterm(pid).success());
}

/// What a load tool printed, and the numbers that say whether anything failed.
fn run_tool(child: std::process::Child, tool: &str) -> String {
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{tool}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{tool}: {text}");
    text
}

/// The counts after `label` in h2load's line starting with it (e.g. `requests:`), by name.
fn h2load_counts(text: &str, label: &str) -> Vec<(String, u64)> {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` line: {text}"));
    line.trim_start()[label.len()..]
        .split(',')
        .filter_map(|part| {
            let mut words = part.split_whitespace();
            let n = words.next()?.parse().ok()?;
            Some((words.collect::<Vec<_>>().join(" "), n))
        })
        .collect()
}

#[test]
fn sigusr2_under_wrk_and_h2load_answers_every_request_sent() {
    let mut old = start(&[]);
    let addr = old.listening();
    let old_pid = old.child.id();
    wait_for_handlers(old_pid);
    let url = format!("http://{addr}/plaintext");
    // Bounded: 6 s each, loopback only. h2load logs every request (start, status, time).
    let log = std::env::temp_dir().join(format!("peregrine-upgrade-h2load-{}", std::process::id()));
    let log_arg = format!("--log-file={}", log.display());
    let wrk = process::tool("wrk", &["-t1", "-c64", "-d6s", &url]);
    let h2load = process::tool("h2load", &["-c16", "-m10", "-D", "6", &log_arg, &url]);
    std::thread::sleep(Duration::from_secs(2));
    signal("-USR2", old_pid);
    let new_pid = upgraded_pid(&mut old);
    let status = old.exit_within(process::WAIT).expect("the old process did not exit");
    assert!(status.success(), "old process: {status:?}; stderr: {}", old.stderr());

    let wrk = run_tool(wrk, "wrk");
    assert!(!wrk.contains("Socket errors"), "wrk saw socket errors: {wrk}");
    assert!(!wrk.contains("Non-2xx"), "wrk saw failed statuses: {wrk}");
    assert!(wrk.contains("requests in"), "{wrk}");
    let h2 = run_tool(h2load, "h2load");
    let requests = h2load_counts(&h2, "requests:");
    let count = |name: &str| requests.iter().find(|(n, _)| n == name).map(|(_, n)| *n);
    assert_eq!(count("timeout"), Some(0), "{h2}");
    assert!(count("succeeded").is_some_and(|n| n > 0), "{h2}");
    let codes = h2load_counts(&h2, "status codes:");
    assert!(codes.iter().all(|(name, n)| name == "2xx" || *n == 0), "{h2}");
    // Every request that reached the server was answered. What h2load counts as failed are
    // requests it had queued but not yet sent when the first GOAWAY came: a client may not
    // open streams after one (RFC 9113 §6.8), and h2load, unlike browsers, does not send
    // them again on a new connection. Its log marks them: no start time, status -1.
    let log_text = std::fs::read_to_string(&log).expect("h2load's log");
    let _ = std::fs::remove_file(&log);
    let mut never_sent = 0;
    for line in log_text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields[..] {
            [_, "200", _] => {}
            ["0", "-1", _] => never_sent += 1,
            _ => panic!("a request that reached the server failed: {line}"),
        }
    }
    assert_eq!(Some(never_sent), count("failed"), "{h2}");
    if never_sent > 0 {
        println!("h2load: {never_sent} requests queued but never sent after the GOAWAY");
    }

    assert!(alive(new_pid), "the new process is gone");
    stop(new_pid);
}

#[test]
fn post_upgrade_on_the_admin_listener_hands_it_over_too() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peregrine"));
    cmd.args(["--threads", "2", "--no-pin", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    let mut old = Proc::spawn(cmd.env("NO_COLOR", "1"));
    let addr = old.listening();
    let admin = old.addr("admin listening on ", process::WAIT);
    let old_pid = old.child.id();
    let load = Load::start(addr, true);
    load.wait_for(500);
    let answer = http::once(admin, "POST", "/upgrade");
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let new_pid: u32 = answer
        .split("upgraded: pid ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no new pid in {answer}"));
    assert_ne!(new_pid, old_pid);
    let status = old.exit_within(process::WAIT).expect("the old process did not exit");
    assert!(status.success(), "old process: {status:?}; stderr: {}", old.stderr());
    let served_before = load.ok();
    load.wait_for(served_before + 500);
    let tally = load.stop();
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0, "{}", tally.describe());
    // The admin listener's socket went over with the others: the same address answers, from
    // the new process.
    assert!(http::once(admin, "GET", "/healthz").starts_with("HTTP/1.1 200 "));
    assert!(http::once(admin, "GET", "/metrics").contains("peregrine_reactors 2"));
    stop(new_pid);
}

/// In a process started by an upgrade, the handed-over sockets belong to its listeners
/// alone: a reload that drops a listener closes its port (no copy of the socket is kept
/// anywhere that would leave connections queued with nobody to accept them).
/// Two free ports below the kernel's ephemeral range. No other test's `bind(0)` and no
/// outgoing connection is handed one of them, so once Peregrine closes one, nothing else
/// can be listening there. (CI once saw a port from `bind(0)` keep accepting for 10 s after
/// the reload closed it; only another listener handed the same port explains that.)
fn two_ports_outside_the_ephemeral_range() -> (std::net::SocketAddr, std::net::SocketAddr) {
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (first, span) = (10_000u16, low.saturating_sub(10_000).max(1));
    let start = (std::process::id() % u32::from(span)) as u16;
    let mut held = Vec::new();
    for i in 0..span {
        let port = first + (start + i) % span;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
            if held.len() == 2 {
                let addr = |l: &std::net::TcpListener| l.local_addr().unwrap();
                return (addr(&held[0]), addr(&held[1]));
            }
        }
    }
    panic!("no two free ports between {first} and {low}");
}

#[test]
fn a_listener_handed_over_and_then_reloaded_away_closes() {
    let (kept, dropped) = two_ports_outside_the_ephemeral_range();
    let dir = std::env::temp_dir().join(format!("peregrine-upgrade-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("peregrine.toml");
    let listeners = |addrs: &[std::net::SocketAddr]| {
        addrs.iter().map(|a| format!("[[listener]]\naddress = \"{a}\"\n")).collect::<String>()
    };
    std::fs::write(&path, listeners(&[kept, dropped])).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peregrine"));
    cmd.args(["--threads", "2", "--no-pin", "--config", path.to_str().unwrap()]);
    let mut old = Proc::spawn(cmd.env("NO_COLOR", "1").env("RUST_LOG", "info"));
    assert_eq!(old.listening(), kept);
    let old_pid = old.child.id();
    wait_for_handlers(old_pid);
    signal("-USR2", old_pid);
    let new_pid = upgraded_pid(&mut old);
    assert!(old.exit_within(process::WAIT).is_some_and(|s| s.success()));
    wait_for_handlers(new_pid);
    std::fs::write(&path, listeners(&[kept])).unwrap();
    signal("-HUP", new_pid);
    let deadline = Instant::now() + process::WAIT;
    while std::net::TcpStream::connect_timeout(&dropped, Duration::from_secs(1)).is_ok() {
        assert!(Instant::now() < deadline, "{dropped} still accepts after the reload");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(http::once(kept, "GET", "/plaintext").starts_with("HTTP/1.1 200 "));
    stop(new_pid);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn post_upgrade_with_a_failing_binary_answers_500_and_goes_on_serving() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peregrine"));
    cmd.args(["--threads", "1", "--no-pin", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    let mut old =
        Proc::spawn(cmd.env("NO_COLOR", "1").env("PEREGRINE_UPGRADE_BINARY", "/bin/false"));
    let addr = old.listening();
    let admin = old.addr("admin listening on ", process::WAIT);
    let answer = http::once(admin, "POST", "/upgrade");
    assert!(answer.starts_with("HTTP/1.1 500 "), "{answer}");
    assert!(answer.contains("did not take over"), "{answer}");
    assert!(http::once(addr, "GET", "/plaintext").starts_with("HTTP/1.1 200 "));
    assert!(http::once(admin, "GET", "/readyz").starts_with("HTTP/1.1 200 "), "still ready");
    let pid = old.child.id();
    assert!(old.sigterm(pid).success());
}
