//! Instructions per request from `perf stat`, where the machine allows it.
//!
//! Retired instructions are a steadier cost measure than CPU time: they do not
//! depend on clock speed, frequency scaling or a neighbour's cache traffic.
//! They need a hardware performance counter, which many VMs do not expose
//! (`perf` then prints `<not supported>`), so the harness probes once and the
//! figure is always optional: a perf failure never fails a run.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::servers::Launcher;
use crate::sys;

/// The one event counted.
pub const EVENT: &str = "instructions";

/// Time `perf stat -p` gets to attach before the load starts. The server is
/// idle around the load, so counting a little longer than the run costs
/// nothing, while attaching late would miss requests.
const ATTACH_DELAY: Duration = Duration::from_millis(250);

/// How long perf gets to print its counts and exit after SIGINT.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether instructions can be counted here.
#[derive(Debug, Clone, PartialEq)]
pub enum Support {
    /// `perf stat -e instructions` returned a number; the path is `perf`.
    Available(PathBuf),
    /// Why not, in a few words for the report.
    Unavailable(String),
}

impl Support {
    /// Runs `perf stat -e instructions -x, true` once and checks that it
    /// counted a number.
    pub fn probe() -> Self {
        let Some(perf) = sys::find_program("perf", &["/usr/bin/perf"]) else {
            return Support::Unavailable("perf is not installed".into());
        };
        let probe = sys::run_with_timeout(
            Command::new(&perf).args(["stat", "-e", EVENT, "-x,", "true"]),
            Duration::from_secs(10),
        );
        match probe {
            Ok(out) => match parse_counter(&out.stderr, EVENT) {
                Ok(_) => Support::Available(perf),
                Err(why) => Support::Unavailable(why),
            },
            Err(e) => Support::Unavailable(format!("`perf stat` did not run: {e}")),
        }
    }
}

/// Sums the counts of `event` in `perf stat -x,` output.
///
/// Each counter is one CSV line, `value,unit,event,run time,percent,...`; the
/// value is `<not supported>` or `<not counted>` when the counter could not
/// be used. The event may carry a modifier (`instructions:u`) or, on hybrid
/// CPUs, appear once per core type (`cpu_core/instructions/`,
/// `cpu_atom/instructions/`), hence the sum. Comment and blank lines are
/// skipped.
pub fn parse_counter(output: &str, event: &str) -> Result<u64, String> {
    let mut total = None::<u64>;
    let mut problem = None;
    for line in output.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        let Some(name) = fields.get(2).map(|n| n.trim()) else { continue };
        let matches = name == event
            || name.strip_prefix(event).is_some_and(|rest| rest.starts_with(':'))
            || name.contains(&format!("/{event}/"));
        if !matches {
            continue;
        }
        match fields[0].trim() {
            "<not supported>" => problem = Some("not supported on this machine"),
            "<not counted>" => problem = Some("not counted"),
            value => match value.parse::<u64>() {
                Ok(n) => total = Some(total.unwrap_or(0) + n),
                Err(_) => problem = Some("unreadable count"),
            },
        }
    }
    match (total, problem) {
        (Some(n), None) => Ok(n),
        (_, Some(why)) => Err(format!("{why} (`perf stat -e {event}`)")),
        (None, None) => Err(format!("no `{event}` line in perf output: {:?}", output.trim())),
    }
}

/// A `perf stat -e instructions -p PID` running alongside one measured run.
#[derive(Debug)]
pub struct PerfRun {
    child: Child,
    output: PathBuf,
    stderr: PathBuf,
}

impl PerfRun {
    /// Attaches perf to `pid`, pinned to `cpus` (the load generator's CPUs:
    /// perf sleeps while counting, and must not steal the server's core), and
    /// gives it [`ATTACH_DELAY`] after its output file appears to start counting.
    /// Counts go to `output`.
    pub fn start(
        launcher: &Launcher,
        cpus: &str,
        perf: &Path,
        pid: u32,
        output: &Path,
    ) -> io::Result<Self> {
        let stderr = output.with_extension("stderr");
        let child = launcher
            .command(cpus, perf)
            .args(["stat", "-e", EVENT, "-x,", "-o"])
            .arg(output)
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr)?)
            .spawn()?;
        // perf creates its output file as it starts: on a loaded machine that can take
        // longer than the delay, and a SIGINT before it would end it with nothing written.
        let started = Instant::now();
        while !output.exists() && started.elapsed() < STOP_TIMEOUT {
            thread::sleep(Duration::from_millis(10));
        }
        thread::sleep(ATTACH_DELAY);
        Ok(PerfRun { child, output: output.to_owned(), stderr })
    }

    /// Stops perf with SIGINT (on which it prints its counts) and returns the
    /// instructions the server retired while perf was attached.
    pub fn finish(mut self) -> Result<u64, String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            let err = fs::read_to_string(&self.stderr).unwrap_or_default();
            return Err(format!("perf exited early ({status}): {}", err.trim()));
        }
        sys::send_signal(self.child.id(), libc::SIGINT).map_err(|e| format!("SIGINT: {e}"))?;
        match sys::wait_timeout(&mut self.child, STOP_TIMEOUT) {
            Ok(Some(_)) => {}
            _ => return Err(format!("perf did not exit within {STOP_TIMEOUT:?} of SIGINT")),
        }
        let out = fs::read_to_string(&self.output)
            .map_err(|e| format!("reading {}: {e}", self.output.display()))?;
        parse_counter(&out, EVENT)
    }
}

impl Drop for PerfRun {
    fn drop(&mut self) {
        // Only if `finish` did not reap it (error paths, panics).
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counted_instructions() {
        // perf 6.1 `-x,` output for `perf stat -e instructions -x, -p PID`.
        let out = "\n12853497221,,instructions,5012345678,100.00,,\n";
        assert_eq!(parse_counter(out, EVENT), Ok(12_853_497_221));
        // With the header comment `-o` writes, and a user-only modifier.
        let out = "# started on Sun Nov 22 02:20:30 2026\n\n\
                   7012,,instructions:u,1000,100.00,1.23,insn per cycle\n";
        assert_eq!(parse_counter(out, EVENT), Ok(7012));
    }

    #[test]
    fn sums_hybrid_core_types() {
        let out = "100,,cpu_core/instructions/,10,100.00,,\n\
                   23,,cpu_atom/instructions/,10,100.00,,\n";
        assert_eq!(parse_counter(out, EVENT), Ok(123));
    }

    #[test]
    fn not_supported_is_an_error() {
        // Captured on this project's VM: no PMU exposed to the guest.
        let out = "<not supported>,,instructions,0,100.00,,\n";
        let err = parse_counter(out, EVENT).unwrap_err();
        assert!(err.contains("not supported on this machine"), "{err}");
        let out = "<not counted>,,instructions,0,0.00,,\n";
        assert!(parse_counter(out, EVENT).unwrap_err().contains("not counted"));
    }

    #[test]
    fn other_events_and_junk_are_ignored_or_rejected() {
        let out = "55,,cycles,10,100.00,,\n";
        assert!(parse_counter(out, EVENT).unwrap_err().contains("no `instructions` line"));
        assert!(parse_counter("", EVENT).is_err());
        assert!(parse_counter("abc,,instructions,1,100.00,,", EVENT).is_err());
        // `instructions_foo` is another event, not a modifier.
        assert!(parse_counter("5,,instructionsfoo,1,100,,", EVENT).is_err());
    }

    #[test]
    fn attaches_and_stops_cleanly() {
        // Needs perf installed; counting need not work (VMs print
        // `<not supported>`), but attaching, SIGINT and reading must.
        let Some(perf) = sys::find_program("perf", &["/usr/bin/perf"]) else { return };
        let mut target = Command::new("sleep").arg("10").spawn().unwrap();
        let dir = crate::servers::TempDir::new("perf-test").unwrap();
        let output = dir.path().join("perf.csv");
        let run = PerfRun::start(&Launcher::default(), "0", &perf, target.id(), &output).unwrap();
        let result = run.finish();
        let _ = target.kill();
        let _ = target.wait();
        match result {
            Ok(_) => {}
            Err(e) => assert!(
                e.contains("not supported") || e.contains("not counted"),
                "perf attach/stop failed: {e}"
            ),
        }
    }

    #[test]
    fn probe_never_panics() {
        // Available or not depends on the machine; either is a valid answer.
        match Support::probe() {
            Support::Available(path) => assert!(path.is_file()),
            Support::Unavailable(why) => assert!(!why.is_empty()),
        }
    }
}
