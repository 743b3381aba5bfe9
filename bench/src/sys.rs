//! Small system helpers: bounded waits on child processes, program lookup,
//! machine facts and UTC timestamps with std; the open-files limit and
//! signals through `libc`, which std does not expose.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often bounded waits poll a child for exit. Short enough not to add
/// noticeable latency to a 3 s run, long enough to cost nothing.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Captured result of [`run_with_timeout`].
#[derive(Debug)]
pub struct CommandOutput {
    /// Exit status of the command.
    pub status: ExitStatus,
    /// Everything it wrote to stdout (lossily decoded as UTF-8).
    pub stdout: String,
    /// Everything it wrote to stderr (lossily decoded as UTF-8).
    pub stderr: String,
}

/// Waits for `child` to exit for at most `timeout`.
///
/// Returns `Ok(None)` on timeout, leaving the child running; the caller decides
/// whether to kill it.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Runs `cmd` to completion, capturing stdout and stderr, but kills it and
/// returns [`io::ErrorKind::TimedOut`] if it takes longer than `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> io::Result<CommandOutput> {
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    // Drain both pipes on threads: a child that fills a pipe nobody reads would
    // block forever and turn every run into a timeout.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = match wait_timeout(&mut child, timeout)? {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{cmd:?} did not finish within {timeout:?}; killed"),
            ));
        }
    };
    Ok(CommandOutput {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Finds `name` on `PATH`, else the first existing path in `fallbacks`.
///
/// The fallbacks matter for nginx, which Debian installs in `/usr/sbin`, a
/// directory not on a regular user's `PATH`.
pub fn find_program(name: &str, fallbacks: &[&str]) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join(name)).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path.into_iter().chain(fallbacks.iter().map(PathBuf::from)).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// First non-empty line a command prints on stdout or stderr, e.g. for
/// `wrk -v` (stdout, exit status 1) or `nginx -v` (stderr). `None` if it could
/// not be run within a few seconds.
pub fn first_output_line(program: &Path, args: &[&str]) -> Option<String> {
    let out = run_with_timeout(Command::new(program).args(args), Duration::from_secs(5)).ok()?;
    out.stdout
        .lines()
        .chain(out.stderr.lines())
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(str::to_owned)
}

/// Whether the harness runs as root (effective UID 0). h2o, started as
/// root, switches to the user its config names (`nobody` by default).
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit and returns
/// the soft limit now in force.
///
/// The idle-connection measurement holds thousands of sockets, more than the
/// usual soft limit of 1,024. Children inherit the raised limit, which helps
/// nginx; Peregrine raises its own anyway. Raising the hard limit itself would
/// need privileges, so that is left to the operator (`ulimit -Hn`).
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: `raised` is a valid rlimit; setrlimit only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    // `rlim_t` is `u64` on 64-bit Linux (an identity conversion) but not on
    // every target.
    #[allow(clippy::useless_conversion)]
    Ok(u64::from(limit.rlim_cur))
}

/// Sends `signal` (e.g. `libc::SIGINT`) to process `pid`.
///
/// Only ever called with the PID of a child the harness spawned and has not
/// yet reaped, so the PID cannot have been reused by an unrelated process.
pub fn send_signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "PID out of range"))?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Facts about the machine, printed with every report because absolute
/// numbers are meaningless without them.
#[derive(Debug, Clone)]
pub struct MachineInfo {
    /// Output of `nproc` (CPUs available to this process).
    pub nproc: String,
    /// Kernel name and release (`uname -sr`).
    pub kernel: String,
    /// CPU model name from `/proc/cpuinfo`, if present.
    pub cpu_model: Option<String>,
}

impl MachineInfo {
    /// Gathers the facts, falling back to std where a command is missing.
    pub fn detect() -> Self {
        let nproc = find_program("nproc", &[])
            .and_then(|p| first_output_line(&p, &[]))
            .or_else(|| thread::available_parallelism().ok().map(|n| n.to_string()))
            .unwrap_or_else(|| "unknown".into());
        let kernel = find_program("uname", &[])
            .and_then(|p| first_output_line(&p, &["-sr"]))
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .ok()
                    .map(|r| format!("Linux {}", r.trim()))
            })
            .unwrap_or_else(|| "unknown".into());
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        });
        MachineInfo { nproc, kernel, cpu_model }
    }
}

/// A UTC wall-clock time, second resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    /// Calendar year.
    pub year: i64,
    /// Month, 1..=12.
    pub month: u32,
    /// Day of month, 1..=31.
    pub day: u32,
    /// Hour, 0..=23.
    pub hour: u32,
    /// Minute, 0..=59.
    pub minute: u32,
    /// Second, 0..=59.
    pub second: u32,
}

impl UtcTime {
    /// The current time.
    pub fn now() -> Self {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Self::from_unix(secs as i64)
    }

    /// Converts seconds since the Unix epoch (UTC, no leap seconds).
    pub fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        UtcTime { year, month, day, hour: rem / 3600, minute: rem / 60 % 60, second: rem % 60 }
    }

    /// ISO 8601, e.g. `2026-11-22T01:35:07Z`.
    pub fn iso8601(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// File-name friendly and sortable, e.g. `20261122T013507Z`.
    pub fn file_stamp(&self) -> String {
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
/// Howard Hinnant's `civil_from_days` algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_conversion_matches_known_instants() {
        assert_eq!(UtcTime::from_unix(0).iso8601(), "1970-01-01T00:00:00Z");
        assert_eq!(UtcTime::from_unix(951_782_400).iso8601(), "2000-02-29T00:00:00Z");
        assert_eq!(UtcTime::from_unix(1_700_000_000).iso8601(), "2023-11-14T22:13:20Z");
        assert_eq!(UtcTime::from_unix(1_700_000_000).file_stamp(), "20231114T221320Z");
        assert_eq!(UtcTime::from_unix(4_107_542_399).iso8601(), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn nofile_limit_is_raised_to_hard() {
        let soft = raise_nofile_limit().unwrap();
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: valid, writable rlimit.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
        // Already at the hard limit: a second call changes nothing.
        assert_eq!(raise_nofile_limit().unwrap(), soft);
        assert_eq!(limit.rlim_cur, limit.rlim_max);
    }

    #[test]
    fn signals_a_child() {
        use std::os::unix::process::CommandExt;
        // A suite started as a shell's background job (`./test.sh &` without job control)
        // runs with SIGINT ignored, and a child inherits that: `sleep` would shrug the
        // signal off. The servers the harness stops this way install their own handlers;
        // here the child gets the default action back.
        let mut sleep = Command::new("sleep");
        sleep.arg("10");
        // SAFETY: runs in the child between fork and exec; `signal` is async-signal-safe.
        unsafe {
            sleep.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = sleep.spawn().unwrap();
        send_signal(child.id(), libc::SIGINT).unwrap();
        let status = wait_timeout(&mut child, Duration::from_secs(5)).unwrap();
        assert!(status.is_some_and(|s| !s.success()), "sleep survived SIGINT");
    }

    #[test]
    fn run_with_timeout_captures_and_kills() {
        let out = run_with_timeout(
            Command::new("sh").args(["-c", "echo out; echo err >&2"]),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout.trim(), "out");
        assert_eq!(out.stderr.trim(), "err");

        let started = Instant::now();
        let err = run_with_timeout(Command::new("sleep").arg("10"), Duration::from_millis(200))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
