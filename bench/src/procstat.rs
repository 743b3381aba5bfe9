//! CPU time of a process from `/proc/PID/stat`.
//!
//! The harness reads a server's user+system time before and after each `wrk`
//! run; the difference is the CPU the server spent serving that run. The
//! process-level stat file sums all threads, so multi-threaded servers are
//! covered too.

use std::io;
use std::process::Command;

/// Extracts `utime + stime` (fields 14 and 15, in clock ticks) from the text of
/// `/proc/PID/stat`.
///
/// Field 2 is the command name in parentheses and may itself contain spaces and
/// parentheses (e.g. `(my (odd) server)`), so fields are counted from the *last*
/// `)` rather than by splitting the whole line on whitespace.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // After the comm field, the first token is field 3 (state); utime is field 14.
    let mut fields = after_comm.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Reads `utime + stime` of process `pid`, in clock ticks.
pub fn read_cpu_ticks(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("unparseable /proc/{pid}/stat"))
    })
}

/// Clock ticks per second (`CLK_TCK`), the unit of `/proc/PID/stat` CPU times.
///
/// Asked of `getconf CLK_TCK` because std has no `sysconf`; falls back to 100,
/// the value on practically every Linux build.
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_stat_line() {
        // Captured from a real nginx worker (fields after stime trimmed a little).
        let stat = "3874 (nginx) S 3873 3873 3812 0 -1 4194624 2021 0 0 0 \
                    1234 567 0 0 20 0 1 0 51563 13008896 1052 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(1234 + 567));
    }

    #[test]
    fn parses_comm_with_spaces_and_parentheses() {
        let stat = "42 (my (o) ) srv) R 1 42 42 0 -1 4194560 100 0 0 0 \
                    77 23 0 0 20 0 4 0 1000 2000000 300 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(100));
    }

    #[test]
    fn rejects_truncated_or_garbled_lines() {
        assert_eq!(parse_cpu_ticks(""), None);
        assert_eq!(parse_cpu_ticks("42 (x) R 1 2 3"), None);
        assert_eq!(parse_cpu_ticks("42 (x) R 1 42 42 0 -1 4 1 0 0 0 abc 5"), None);
    }

    #[test]
    fn reads_own_process() {
        let ticks = read_cpu_ticks(std::process::id()).expect("own /proc/PID/stat");
        // Any value is fine; this checks the live file format matches the parser.
        assert!(ticks < u64::MAX);
    }

    #[test]
    fn clock_ticks_is_positive() {
        assert!(clock_ticks_per_second() > 0);
    }
}
