//! CPU time and memory of a process from `/proc/PID/stat` and
//! `/proc/PID/status`.
//!
//! The harness reads a server's user+system time before and after each `wrk`
//! run; the difference is the CPU the server spent serving that run. The
//! process-level stat file sums all threads, so multi-threaded servers are
//! covered too. For the idle-connection measurement it reads resident memory
//! (`VmRSS`) summed over the server's process tree, so a server that forks
//! workers (nginx with `master_process on`) is measured whole.

use std::io;
use std::process::Command;

/// A process's CPU time in clock ticks, in user space and in the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    /// `utime`: user space.
    pub user: u64,
    /// `stime`: the kernel, working for the process (system calls; on loopback
    /// also the peer's TCP receive path, which runs in the sender's context).
    pub system: u64,
}

impl CpuTicks {
    /// User and system time together.
    pub fn total(self) -> u64 {
        self.user + self.system
    }

    /// The ticks spent since `earlier`, each part on its own.
    pub fn since(self, earlier: CpuTicks) -> CpuTicks {
        CpuTicks {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

impl std::ops::Add for CpuTicks {
    type Output = CpuTicks;

    fn add(self, other: CpuTicks) -> CpuTicks {
        CpuTicks { user: self.user + other.user, system: self.system + other.system }
    }
}

/// Extracts `utime` and `stime` (fields 14 and 15, in clock ticks) from the text
/// of `/proc/PID/stat`.
///
/// Field 2 is the command name in parentheses and may itself contain spaces and
/// parentheses (e.g. `(my (odd) server)`), so fields are counted from the *last*
/// `)` rather than by splitting the whole line on whitespace.
pub fn parse_cpu_ticks(stat: &str) -> Option<CpuTicks> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // After the comm field, the first token is field 3 (state); utime is field 14.
    let mut fields = after_comm.split_whitespace().skip(14 - 3);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(CpuTicks { user, system })
}

/// Extracts the parent PID (field 4) from the text of `/proc/PID/stat`.
pub fn parse_ppid(stat: &str) -> Option<u32> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(4 - 3)?.parse().ok()
}

/// Extracts `VmRSS` from the text of `/proc/PID/status`, in bytes.
///
/// The kernel prints it as `VmRSS:\t    1234 kB` (kB meaning KiB). Kernel
/// threads and zombies have no `VmRSS` line: `None`.
pub fn parse_vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let mut words = line.split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    (words.next()? == "kB").then_some(kib * 1024)
}

/// `pid` and all its descendants that are alive now, parents first.
///
/// Built from one scan of `/proc/*/stat`: there is no child list for a whole
/// process in procfs (`/proc/PID/task/TID/children` is per thread and needs
/// a kernel option).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let ppid = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|stat| parse_ppid(&stat));
            if let Some(ppid) = ppid {
                parent_of.push((child, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(parent_of.iter().filter(|&&(_, p)| p == parent).map(|&(c, _)| c));
        i += 1;
    }
    tree
}

/// Resident memory of `pid` and its descendants, in bytes.
///
/// Summing RSS double-counts pages that processes share (a forked worker's
/// copy-on-write pages); the idle-connection figure is a difference of two
/// such sums, in which the shared pages cancel out.
pub fn read_tree_rss_bytes(pid: u32) -> io::Result<u64> {
    let mut total = 0;
    for (i, member) in process_tree(pid).into_iter().enumerate() {
        match std::fs::read_to_string(format!("/proc/{member}/status")) {
            Ok(status) => total += parse_vm_rss_bytes(&status).unwrap_or(0),
            // A descendant may exit between the scan and the read; the server
            // itself may not.
            Err(e) if i == 0 => return Err(e),
            Err(_) => {}
        }
    }
    Ok(total)
}

/// Reads `utime` and `stime` of process `pid`, in clock ticks.
pub fn read_cpu_ticks(pid: u32) -> io::Result<CpuTicks> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("unparseable /proc/{pid}/stat"))
    })
}

/// `utime` and `stime` of `pid` and its descendants, in clock ticks.
///
/// A descendant that exits between the scan and the read is left out (its
/// time then goes missing from the later reading, so a server that forks
/// short-lived children would be undercounted; none of the servers here do).
pub fn read_tree_cpu_ticks(pid: u32) -> io::Result<CpuTicks> {
    let mut total = CpuTicks::default();
    for (i, member) in process_tree(pid).into_iter().enumerate() {
        match read_cpu_ticks(member) {
            Ok(ticks) => total = total + ticks,
            Err(e) if i == 0 => return Err(e),
            Err(_) => {}
        }
    }
    Ok(total)
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
        assert_eq!(parse_cpu_ticks(stat), Some(CpuTicks { user: 1234, system: 567 }));
        assert_eq!(parse_cpu_ticks(stat).unwrap().total(), 1234 + 567);
    }

    #[test]
    fn parses_comm_with_spaces_and_parentheses() {
        let stat = "42 (my (o) ) srv) R 1 42 42 0 -1 4194560 100 0 0 0 \
                    77 23 0 0 20 0 4 0 1000 2000000 300 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(CpuTicks { user: 77, system: 23 }));
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
        assert!(ticks.total() < u64::MAX);
    }

    #[test]
    fn parses_parent_pid() {
        let stat = "3874 (nginx) S 3873 3873 3812 0 -1 4194624 2021 0 0 0 1234 567";
        assert_eq!(parse_ppid(stat), Some(3873));
        assert_eq!(parse_ppid("42 (a) b) R 7 42 42 0"), Some(7));
        assert_eq!(parse_ppid("42 (x) R"), None);
    }

    // Trimmed from a real /proc/PID/status (Linux 6.1, nginx worker).
    const STATUS: &str = "Name:\tnginx\nUmask:\t0022\nState:\tS (sleeping)\n\
        Tgid:\t3874\nPid:\t3874\nPPid:\t3873\nVmPeak:\t   12700 kB\n\
        VmSize:\t   12700 kB\nVmHWM:\t    4420 kB\nVmRSS:\t    4208 kB\n\
        RssAnon:\t    1104 kB\nRssFile:\t    3104 kB\nThreads:\t1\n";

    #[test]
    fn parses_vm_rss() {
        assert_eq!(parse_vm_rss_bytes(STATUS), Some(4208 * 1024));
        // Kernel threads have no Vm* lines at all.
        assert_eq!(parse_vm_rss_bytes("Name:\tkthreadd\nState:\tS (sleeping)\n"), None);
        assert_eq!(parse_vm_rss_bytes("VmRSS:\t    x kB\n"), None);
        assert_eq!(parse_vm_rss_bytes("VmRSS:\t    12 MB\n"), None);
        // VmHWM must not be mistaken for VmRSS.
        assert_eq!(parse_vm_rss_bytes("VmHWM:\t 9 kB\n"), None);
    }

    #[test]
    fn reads_own_memory_and_tree() {
        let me = std::process::id();
        assert!(read_tree_rss_bytes(me).unwrap() > 0);
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let tree = process_tree(me);
        assert_eq!(tree[0], me);
        assert!(tree.contains(&child.id()), "{tree:?} lacks child {}", child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(read_tree_rss_bytes(u32::MAX).is_err());
    }

    #[test]
    fn clock_ticks_is_positive() {
        assert!(clock_ticks_per_second() > 0);
    }
}
