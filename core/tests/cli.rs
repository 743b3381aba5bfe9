//! The `peregrine` binary: flags, config files, usage errors, signals, and the default
//! listener, each checked on a real child process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `peregrine` child, killed when dropped. Its stdout arrives line by line on a
/// channel; its stderr is gathered in the background.
struct Peregrine {
    child: Child,
    stdout: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Peregrine {
    fn spawn(args: &[&str]) -> Peregrine {
        let mut child = Command::new(env!("CARGO_BIN_EXE_peregrine"))
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn peregrine");
        let (tx, stdout) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Peregrine { child, stdout, stderr }
    }

    /// The first stdout line starting with `prefix`, failing after 10 s.
    fn line_starting(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no stdout line starting with {prefix:?} within {START_TIMEOUT:?}; \
                     exit: {:?}; stderr: {}",
                    self.child.try_wait(),
                    self.stderr()
                ),
            }
        }
    }

    /// The address from the `listening on http://ADDR` line.
    fn listening_addr(&mut self) -> SocketAddr {
        let line = self.line_starting("listening on http://");
        line["listening on http://".len()..].parse().unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    fn stderr(&self) -> String {
        strip_ansi(&self.stderr.lock().unwrap())
    }

    /// Waits until stderr contains `needle`, failing after 10 s.
    fn wait_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = self.stderr();
            if text.contains(needle) {
                return text;
            }
            assert!(Instant::now() < deadline, "stderr never contained {needle:?}: {text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status, or `None` if still running after `within`.
    fn exit_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Peregrine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes ANSI colour sequences (`ESC [ ... m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs the binary to completion (it must exit within 10 s): (status, stdout, stderr).
fn run(args: &[&str]) -> (ExitStatus, String, String) {
    let mut p = Peregrine::spawn(args);
    let status = p.exit_within(START_TIMEOUT).expect("peregrine did not exit");
    let mut stdout = String::new();
    while let Ok(line) = p.stdout.recv_timeout(Duration::from_secs(2)) {
        stdout.push_str(&line);
        stdout.push('\n');
    }
    // stderr is complete once its reader sees EOF; give it a moment after the exit.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Arc::strong_count(&p.stderr) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stderr = p.stderr();
    (status, stdout, stderr)
}

/// `GET path` over a raw socket: (status line, body).
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).expect("read response (server must close: Connection: close)");
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{text:?}"));
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

/// A config file in the temp dir, removed when dropped.
struct TempConfig(PathBuf);

impl TempConfig {
    fn new(name: &str, text: &str) -> TempConfig {
        let path =
            std::env::temp_dir().join(format!("peregrine-cli-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).expect("write config");
        TempConfig(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn listen_flag_prints_address_and_serves() {
    let mut p = Peregrine::spawn(&["--listen", "127.0.0.1:0", "--threads", "1"]);
    let addr = p.listening_addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    let (status, body) = get(addr, "/plaintext");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, "Hello, World!");
    let (status, _) = get(addr, "/nope");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}

#[test]
fn io_epoll_is_logged() {
    let mut p = Peregrine::spawn(&["--listen", "127.0.0.1:0", "--threads", "1", "--io", "epoll"]);
    let addr = p.listening_addr();
    let log = p.wait_stderr("started");
    assert!(log.contains("driver=epoll"), "start-up log does not name the epoll driver: {log}");
    assert_eq!(get(addr, "/plaintext").1, "Hello, World!");
}

#[test]
fn sigterm_exits_cleanly() {
    let mut p = Peregrine::spawn(&["--listen", "127.0.0.1:0", "--threads", "1"]);
    let addr = p.listening_addr();
    assert_eq!(get(addr, "/plaintext").1, "Hello, World!");
    let pid = p.child.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
    assert!(kill.success());
    let status = p.exit_within(Duration::from_secs(5)).expect("still running 5 s after SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM; stderr: {}", p.stderr());
}

#[test]
fn config_file_fixed_route() {
    let config = TempConfig::new(
        "route",
        "[[route]]\npath = \"/hello\"\nbody = \"hi\"\n\n[[route]]\npath = \"/teapot\"\n\
         status = 418\nbody = \"short and stout\"\ncontent_type = \"text/x-teapot\"\n",
    );
    let mut p =
        Peregrine::spawn(&["--listen", "127.0.0.1:0", "--threads", "1", "--config", config.path()]);
    let addr = p.listening_addr();
    assert_eq!(get(addr, "/hello"), ("HTTP/1.1 200 OK".to_string(), "hi".to_string()));
    let (status, body) = get(addr, "/teapot");
    assert!(status.starts_with("HTTP/1.1 418"), "{status}");
    assert_eq!(body, "short and stout");
    assert_eq!(get(addr, "/plaintext").1, "Hello, World!", "built-in routes still served");
}

#[test]
fn config_unknown_limit_is_a_usage_error() {
    let config = TempConfig::new("unknown", "threads = 1\n[limits]\nmax_request_lines = 5\n");
    let (status, _, stderr) = run(&["--listen", "127.0.0.1:0", "--config", config.path()]);
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    let message = stderr.trim_end();
    assert_eq!(message.lines().count(), 1, "want a single line: {stderr:?}");
    assert!(message.contains("max_request_lines"), "must name the key: {message}");
}

#[test]
fn bad_flags_are_usage_errors() {
    for args in [&["--threads", "0"][..], &["--io", "kqueue"][..], &["--no-such-flag"][..]] {
        let (status, stdout, stderr) = run(args);
        assert_eq!(status.code(), Some(2), "{args:?}: stdout {stdout:?} stderr {stderr:?}");
        assert!(!stdout.contains("listening on"), "{args:?} started a server");
    }
}

#[test]
fn help_lists_the_flags() {
    let (status, stdout, stderr) = run(&["--help"]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    for flag in ["--listen", "--threads", "--io", "--config"] {
        assert!(stdout.contains(flag), "--help does not mention {flag}: {stdout}");
    }
}

#[test]
fn no_arguments_serves_on_8080() {
    match TcpListener::bind("127.0.0.1:8080") {
        Ok(probe) => drop(probe),
        Err(e) => {
            println!("note: 127.0.0.1:8080 is not free ({e}); skipping the default-listener test");
            return;
        }
    }
    let mut p = Peregrine::spawn(&[]);
    let line = p.line_starting("listening on http://");
    assert_eq!(line, "listening on http://127.0.0.1:8080");
    let (status, body) = get("127.0.0.1:8080".parse().unwrap(), "/plaintext");
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "Hello, World!"));
}
