//! A process's stdout and stderr: copied by two threads of its own (never a reactor) to its
//! log file, `{stdout_log}_{YYYYmmddHHMMSS}_{pid}.log` as ANCM names them, renamed to `.1`
//! past `stdout_log_max_size`; the last few KiB are kept in memory for the server's log when
//! the process fails.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex};

use super::config::AppConfig;

/// Bytes of output kept in memory.
const TAIL_BYTES: usize = 4096;

/// What a process has written.
pub(super) struct Output {
    /// Its log file's path, if it has one.
    pub(super) log_path: Option<PathBuf>,
    file: Mutex<Option<LogFile>>,
    tail: Mutex<VecDeque<u8>>,
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
        });
        let pipes: [Option<Box<dyn Read + Send>>; 2] = [
            child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
            child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        ];
        for pipe in pipes.into_iter().flatten() {
            let output = Arc::clone(&output);
            let spawned = std::thread::Builder::new()
                .name(format!("peregrine-app-{}-output", config.name))
                .spawn(move || output.copy(pipe));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot read an app's output");
            }
        }
        output
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
