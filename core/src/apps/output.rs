//! A process's stdout and stderr: copied by two threads of its own (never a reactor) to its
//! log file, `{stdout_log}_{YYYYmmddHHMMSS}_{pid}.log` as ANCM names them, renamed to `.1`
//! past `stdout_log_max_size`; the last few KiB are kept in memory for the server's log when
//! the process fails.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::config::AppConfig;

/// Bytes of output kept in memory.
const TAIL_BYTES: usize = 4096;

/// What a process has written.
pub(super) struct Output {
    /// Its log file's path, if it has one.
    pub(super) log_path: Option<PathBuf>,
    file: Mutex<Option<LogFile>>,
    tail: Mutex<VecDeque<u8>>,
    /// Pipes still being copied, and a signal when one reaches its end.
    open: Mutex<usize>,
    closed: Condvar,
}

struct LogFile {
    file: File,
    path: PathBuf,
    written: u64,
    max: u64,
}

impl Output {
    /// Starts copying `child`'s piped stdout and stderr.
    pub(super) fn capture(config: &AppConfig, child: &mut Child) -> Arc<Output> {
        let log = config.stdout_log.as_ref().and_then(|base| {
            let path = log_path(base, child.id());
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                let _ = std::fs::create_dir_all(dir);
            }
            match File::create(&path) {
                Ok(file) => {
                    Some(LogFile { file, path, written: 0, max: config.stdout_log_max_size })
                }
                Err(e) => {
                    tracing::warn!(app = %config.name, path = %path.display(), error = %e, "cannot create the app's log file");
                    None
                }
            }
        });
        let output = Arc::new(Output {
            log_path: log.as_ref().map(|l| l.path.clone()),
            file: Mutex::new(log),
            tail: Mutex::new(VecDeque::with_capacity(TAIL_BYTES)),
            open: Mutex::new(0),
            closed: Condvar::new(),
        });
        let pipes: [Option<Box<dyn Read + Send>>; 2] = [
            child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
            child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        ];
        for pipe in pipes.into_iter().flatten() {
            *output.open.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            let copier = Arc::clone(&output);
            let spawned = std::thread::Builder::new()
                .name(format!("peregrine-app-{}-output", config.name))
                .spawn(move || {
                    copier.copy(pipe);
                    copier.pipe_closed();
                });
            if let Err(e) = spawned {
                output.pipe_closed();
                tracing::warn!(error = %e, "cannot read an app's output");
            }
        }
        output
    }

    fn pipe_closed(&self) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        self.closed.notify_all();
    }

    /// Waits, at most `within`, until both pipes are read to their end. A process that has
    /// exited closed its ends, but its last lines may still be in the pipe, unread: the
    /// supervisor can notice the exit first. A child the process left running may hold the
    /// pipes open, hence the bound.
    pub(super) fn drain(&self, within: Duration) {
        let until = Instant::now() + within;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        while *open > 0 {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            open = match self.closed.wait_timeout(open, left) {
                Ok((guard, _)) => guard,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Copies `pipe` until the process closes it, whole lines at a time: stdout and stderr
    /// share the file, and an unbuffered stderr arrives in pieces.
    fn copy(&self, mut pipe: Box<dyn Read + Send>) {
        let mut buf = [0u8; 8192];
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let n = match pipe.read(&mut buf) {
                Ok(0) | Err(_) => return self.write(&pending),
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            let cut = match pending.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if pending.len() >= buf.len() => pending.len(),
                None => continue,
            };
            self.write(&pending[..cut]);
            pending.drain(..cut);
        }
    }

    /// Keeps `chunk` in the tail and appends it to the log file.
    fn write(&self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        {
            let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
            tail.extend(chunk);
            let over = tail.len().saturating_sub(TAIL_BYTES);
            tail.drain(..over);
        }
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(log) = file.as_mut() {
            if log.write(chunk).is_err() {
                *file = None; // a full disk does not stop the app; its output is dropped
            }
        }
    }

    /// Its last lines of output (at most `n`).
    pub(super) fn last_lines(&self, n: usize) -> Vec<String> {
        let tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        let bytes: Vec<u8> = tail.iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(n)..].iter().map(|l| l.to_string()).collect()
    }
}

impl LogFile {
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        if self.written > 0 && self.written + chunk.len() as u64 > self.max {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, &old)?;
            self.file = File::create(&self.path)?;
            self.written = 0;
        }
        self.file.write_all(chunk)?;
        self.written += chunk.len() as u64;
        Ok(())
    }
}

/// `{base}_{YYYYmmddHHMMSS}_{pid}.log` (UTC).
fn log_path(base: &std::path::Path, pid: u32) -> PathBuf {
    let t = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let mut name = base.as_os_str().to_owned();
    name.push(format!("_{stamp}_{pid}.log"));
    PathBuf::from(name)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// Runs `script` in `sh` with both outputs captured, and waits for its exit.
    fn exited(script: &str) -> Arc<Output> {
        let config = AppConfig::from_command("t", "sh");
        let mut child = Command::new("sh")
            .args(["-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh runs");
        let output = Output::capture(&config, &mut child);
        child.wait().expect("the child exits");
        output
    }

    #[test]
    fn drain_waits_for_the_last_lines_of_a_process_that_exited() {
        for _ in 0..20 {
            // The process writes its last lines and exits at once; the supervisor notices
            // the exit before the copying threads may have read them.
            let output = exited("echo first; echo last >&2; exit 3");
            output.drain(Duration::from_secs(5));
            let mut lines = output.last_lines(5);
            lines.sort();
            assert_eq!(lines, ["first", "last"]);
        }
    }

    #[test]
    fn drain_gives_up_on_a_pipe_a_child_of_the_process_holds_open() {
        // The process leaves a child holding its outputs; drain stops waiting at its bound.
        let output = exited("echo started; sleep 3 & exit 0");
        let began = Instant::now();
        output.drain(Duration::from_millis(200));
        let waited = began.elapsed();
        assert!(waited >= Duration::from_millis(200), "returned before its bound: {waited:?}");
        assert!(waited < Duration::from_secs(2), "waited for the grandchild: {waited:?}");
    }
}
