//! A child process for tests that run the `peregrine` binary (or a launcher that execs it):
//! stdout line by line, stderr gathered, bounded waits, killed when dropped. Included by
//! several test crates with `#[path]`; each uses a subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a child gets to start, print, or stop.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running child (a server, or a launcher that execs one), killed when dropped. Its
/// stdout arrives line by line on a channel; its stderr is gathered in the background.
pub struct Proc {
    pub child: Child,
    pub stdout: Receiver<String>,
    /// Lines read from `stdout` and not yet asked for, so that lines may be asked for in
    /// any order.
    unclaimed: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    pub fn spawn(command: &mut Command) -> Proc {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        let (tx, stdout) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr");
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
        Proc { child, stdout, unclaimed: Vec::new(), stderr }
    }

    /// The first stdout line starting with `prefix` within `within`, or `None`.
    pub fn line_starting(&mut self, prefix: &str, within: Duration) -> Option<String> {
        if let Some(i) = self.unclaimed.iter().position(|l| l.starts_with(prefix)) {
            return Some(self.unclaimed.remove(i));
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return Some(line),
                Ok(line) => self.unclaimed.push(line),
                Err(_) => return None,
            }
        }
    }

    /// The address in the `{prefix}http://ADDR` line, failing after `within`.
    pub fn addr(&mut self, prefix: &str, within: Duration) -> SocketAddr {
        let prefix = format!("{prefix}http://");
        let line = self.line_starting(&prefix, within).unwrap_or_else(|| {
            panic!(
                "no stdout line starting with {prefix:?} (waited up to {within:?}, or until \
                 stdout closed); exit: {:?}; stderr: {}",
                self.exit_within(Duration::from_millis(500)),
                self.final_stderr()
            )
        });
        line[prefix.len()..].parse().unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    /// The address from the `listening on http://ADDR` line (the first listener).
    pub fn listening(&mut self) -> SocketAddr {
        self.addr("listening on ", WAIT)
    }

    pub fn stderr(&self) -> String {
        strip_ansi(&self.stderr.lock().unwrap())
    }

    /// Waits until stderr contains `needle`, failing after 10 s.
    pub fn wait_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.stderr();
            if text.contains(needle) {
                return text;
            }
            assert!(Instant::now() < deadline, "stderr never contained {needle:?}: {text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn exit_within(&mut self, within: Duration) -> Option<ExitStatus> {
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

    /// `kill -TERM pid`, then the exit status, which must come within 10 s.
    ///
    /// Peregrine installs its SIGTERM handler a moment after printing its addresses; a
    /// SIGTERM before that kills it outright. So this first waits (bounded) until the
    /// kernel shows SIGTERM as caught.
    pub fn sigterm(&mut self, pid: u32) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        while !catches_sigterm(pid) {
            assert!(
                Instant::now() < deadline,
                "pid {pid} never installed a SIGTERM handler; stderr: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let kill = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        assert!(kill.expect("run kill").success(), "kill -TERM {pid} failed");
        self.exit_within(WAIT).unwrap_or_else(|| {
            panic!("still running {WAIT:?} after SIGTERM; stderr: {}", self.stderr())
        })
    }

    /// Waits up to 2 s for the stderr reader to see EOF, then returns stderr.
    pub fn final_stderr(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Arc::strong_count(&self.stderr) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stderr()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a load tool (`wrk`, `h2load`) with its output piped, failing the test if it is
/// missing: the suite requires them (test.sh installs them).
pub fn tool(name: &str, args: &[&str]) -> Child {
    Command::new(name)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{name} is required (test.sh installs it): {e}"))
}

/// Whether process `pid` has a handler for SIGTERM (bit 15 of `SigCgt` in its status).
pub fn catches_sigterm(pid: u32) -> bool {
    const SIGTERM: u32 = 15;
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (SIGTERM - 1)) != 0)
}

/// Removes ANSI colour sequences (`ESC [ ... m`) from text logs.
pub fn strip_ansi(s: &str) -> String {
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
