//! The binary's config reload, as an operator does it: edit the config file, send SIGHUP
//! (or `POST /reload` to the admin listener), and watch the listeners, routes and limits
//! change for new connections while an open connection keeps its own; a broken file
//! changes nothing and says why; `/metrics` counts both.
#![cfg(unix)]

#[path = "support/http.rs"]
mod http;
#[path = "support/process.rs"]
mod process;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use process::Proc;

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn write_config(path: &Path, listeners: &[SocketAddr], admin: SocketAddr, body: &str, extra: &str) {
    let mut text = format!("admin = \"{admin}\"\n");
    for l in listeners {
        text.push_str(&format!("[[listener]]\naddress = \"{l}\"\n"));
    }
    text.push_str(&format!("[[route]]\npath = \"/hello\"\nstatus = 200\nbody = \"{body}\"\n"));
    text.push_str(extra);
    std::fs::write(path, text).unwrap();
}

/// A keep-alive HTTP/1.1 connection.
struct Conn(BufReader<TcpStream>);

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn(BufReader::new(s))
    }

    /// Status and body of one request.
    fn get(&mut self, path: &str) -> (u16, String) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        self.0.get_mut().write_all(req.as_bytes()).unwrap();
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut length = 0;
        loop {
            let mut header = String::new();
            self.0.read_line(&mut header).unwrap();
            if header == "\r\n" || header.is_empty() {
                break;
            }
            if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length: ") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.0.read_exact(&mut body).unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

fn metric(admin: SocketAddr, line_start: &str) -> String {
    let text = http::once(admin, "GET", "/metrics");
    text.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in {text}"))
        .to_string()
}

/// Waits until `needle` appears `n` times in the server's stderr.
fn wait_logged(server: &Proc, needle: &str, n: usize) {
    let deadline = Instant::now() + process::WAIT;
    while server.stderr().matches(needle).count() < n {
        assert!(Instant::now() < deadline, "{needle:?} not logged {n}×: {}", server.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn refused_soon(addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The binary on the config file at `path`, once it serves and handles signals.
fn start(path: &Path) -> (Proc, u32) {
    let server = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_peregrine"))
            .args(["--threads", "2", "--no-pin", "--config", path.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1"),
    );
    let pid = server.child.id();
    let deadline = Instant::now() + process::WAIT;
    while !process::catches_sigterm(pid) {
        assert!(Instant::now() < deadline, "no signal handlers");
        std::thread::sleep(Duration::from_millis(10));
    }
    (server, pid)
}

#[test]
fn sighup_and_post_reload_apply_the_edited_config_file() {
    let dir = std::env::temp_dir().join(format!("peregrine-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("peregrine.toml");
    let (kept, removed, added, admin) = (free_port(), free_port(), free_port(), free_port());
    write_config(&path, &[kept, removed], admin, "one", "");
    let (mut server, pid) = start(&path);
    assert_eq!(server.listening(), kept);
    let mut open = Conn::open(kept);
    assert_eq!(open.get("/hello"), (200, "one".into()));
    let long = format!("/hello?{}", "x".repeat(3000));

    // SIGHUP: one listener swapped for another, a new route body, a lower limit.
    write_config(&path, &[kept, added], admin, "two", "[limits]\nmax_request_line_size = 1024\n");
    let hup = Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap();
    assert!(hup.success());
    wait_logged(&server, "config reloaded", 1);
    for addr in [kept, added] {
        let mut fresh = Conn::open(addr);
        assert_eq!(fresh.get("/hello"), (200, "two".into()), "{addr}");
        assert_eq!(fresh.get(&long).0, 414, "{addr}");
    }
    assert_eq!(open.get("/hello"), (200, "one".into()), "the open connection keeps its config");
    assert_eq!(open.get(&long), (200, "one".into()), "and its limits");
    assert!(refused_soon(removed), "{removed} still accepts");
    assert_eq!(
        metric(admin, "peregrine_config_reloads_total{result=\"ok\"}"),
        "peregrine_config_reloads_total{result=\"ok\"} 1"
    );
    assert!(metric(admin, "peregrine_config_last_reload_successful").ends_with(" 1"));

    // A broken file: nothing changes, the log and the metrics say so.
    std::fs::write(&path, "[[route]]\npath = \"/hello\"\nbodyy = \"three\"\n").unwrap();
    let hup = Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap();
    assert!(hup.success());
    wait_logged(&server, "config reload failed; nothing changed", 1);
    assert!(server.stderr().contains("bodyy"), "the error names the key: {}", server.stderr());
    assert_eq!(Conn::open(added).get("/hello"), (200, "two".into()));
    assert!(metric(admin, "peregrine_config_last_reload_successful").ends_with(" 0"));
    assert!(metric(admin, "peregrine_config_reloads_total{result=\"failed\"}").ends_with(" 1"));

    // The admin listener's POST /reload does the same (how it is done on Windows).
    write_config(&path, &[kept], admin, "three", "");
    let answer = http::once(admin, "POST", "/reload");
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert_eq!(Conn::open(kept).get("/hello"), (200, "three".into()));
    assert!(refused_soon(added), "{added} still accepts");
    assert!(metric(admin, "peregrine_config_last_reload_successful").ends_with(" 1"));
    std::fs::write(&path, "threads = \"many\"\n").unwrap();
    let answer = http::once(admin, "POST", "/reload");
    assert!(answer.starts_with("HTTP/1.1 400 ") && answer.contains("threads"), "{answer}");
    assert_eq!(Conn::open(kept).get("/hello"), (200, "three".into()));

    assert_eq!(open.get("/hello"), (200, "one".into()), "the first connection is still open");
    drop(open);
    assert!(server.sigterm(pid).success(), "{}", server.stderr());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reloads_under_wrk_and_h2load_fail_no_request() {
    let dir = std::env::temp_dir().join(format!("peregrine-reload-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("peregrine.toml");
    let (listener, admin) = (free_port(), free_port());
    write_config(&path, &[listener], admin, "one", "");
    let (mut server, pid) = start(&path);
    assert_eq!(server.listening(), listener);
    let url = format!("http://{listener}/hello");
    // Bounded: 4 s each, loopback only.
    let wrk = process::tool("wrk", &["-t1", "-c32", "-d4s", &url]);
    let h2load = process::tool("h2load", &["-c8", "-m10", "-D", "4", &url]);
    // Five reloads while they run, each changing the route's body and a limit.
    for (i, body) in ["two", "three", "four", "five", "six"].iter().enumerate() {
        std::thread::sleep(Duration::from_millis(500));
        let limit = format!("[limits]\nmax_request_header_count = {}\n", 90 + i);
        write_config(&path, &[listener], admin, body, &limit);
        let hup = Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap();
        assert!(hup.success());
        wait_logged(&server, "config reloaded", i + 1);
    }
    let wrk = wrk.wait_with_output().unwrap();
    let wrk = String::from_utf8_lossy(&wrk.stdout).into_owned();
    assert!(wrk.contains("requests in"), "{wrk}");
    assert!(!wrk.contains("Socket errors") && !wrk.contains("Non-2xx"), "{wrk}");
    let h2 = h2load.wait_with_output().unwrap();
    let h2 = String::from_utf8_lossy(&h2.stdout).into_owned();
    let line = h2.lines().find(|l| l.starts_with("requests:")).unwrap_or_else(|| panic!("{h2}"));
    assert!(line.contains(" 0 failed, 0 errored, 0 timeout"), "{line}");
    assert!(h2.contains("status codes:") && h2.contains(" 0 4xx, 0 5xx"), "{h2}");
    assert_eq!(Conn::open(listener).get("/hello"), (200, "six".into()));
    assert!(metric(admin, "peregrine_config_reloads_total{result=\"ok\"}").ends_with(" 5"));
    assert!(server.sigterm(pid).success(), "{}", server.stderr());
    let _ = std::fs::remove_dir_all(&dir);
}
