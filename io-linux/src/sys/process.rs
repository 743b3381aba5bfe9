//! Child processes the server supervises (app hosting): each in a process group of its own,
//! signalled as a group, and killed by the kernel if the server dies first.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Prepares `command` for a supervised child:
///
/// - a process group of its own (so [`signal_child_group`] reaches what it starts in turn,
///   and a Ctrl+C at the server's terminal is not also delivered to the app);
/// - `PR_SET_PDEATHSIG` = `SIGKILL`: when the thread that spawns the child exits, the
///   child is killed, so no app process outlives a server that was `kill -9`ed. The signal
///   follows the spawning *thread*: spawn from a thread that lives as long as the child
///   should (the app's supervisor thread does).
pub fn supervise_child(command: &mut Command) {
    command.process_group(0);
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec; it calls only
    // async-signal-safe functions (prctl, getppid, _exit), allocates nothing and touches no
    // state shared with the parent's other threads.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: nobody would send the signal.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Which signal [`signal_child_group`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildSignal {
    /// `SIGTERM`: stop gracefully.
    Terminate,
    /// `SIGKILL`.
    Kill,
}

/// Sends `signal` to the process group a child made by [`supervise_child`] leads (its
/// group id is its pid).
pub fn signal_child_group(pid: u32, signal: ChildSignal) -> io::Result<()> {
    let signal = match signal {
        ChildSignal::Terminate => libc::SIGTERM,
        ChildSignal::Kill => libc::SIGKILL,
    };
    let group = libc::pid_t::try_from(pid).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: kill takes no pointers; a negative pid names the process group.
    super::cvt(unsafe { libc::kill(-group, signal) })?;
    Ok(())
}
