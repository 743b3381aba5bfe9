//! Child processes the server supervises (app hosting): each in a console process group of
//! its own (so it can be sent Ctrl+Break alone) and in a job object that kills it, and what
//! it started, when the server's last handle on the job closes: at the latest when the
//! server exits, however it exits.

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::os::windows::process::CommandExt;
use std::process::{Child, Command};

use windows_sys::Win32::Foundation::FALSE;
use windows_sys::Win32::System::Console::{GenerateConsoleCtrlEvent, CTRL_BREAK_EVENT};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JobObjectExtendedLimitInformation,
    SetInformationJobObject, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
    JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
};
use windows_sys::Win32::System::Threading::CREATE_NEW_PROCESS_GROUP;

/// Prepares `command` for a supervised child: a console process group of its own, so
/// [`interrupt_child`] reaches it and not the server.
pub fn supervise_child(command: &mut Command) {
    command.creation_flags(CREATE_NEW_PROCESS_GROUP);
}

/// The job object a supervised child runs in: dropping it (or the server exiting) kills the
/// child and every process it started.
#[derive(Debug)]
pub struct ChildJob {
    /// Held, never read: closing it is what kills the processes.
    _job: OwnedHandle,
}

/// Puts `child` in a new job object that kills its processes when closed.
pub fn contain_child(child: &Child) -> io::Result<ChildJob> {
    // SAFETY: null attributes and name are allowed; the result is checked before use.
    let job = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
    if job.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CreateJobObjectW returned a fresh handle that nothing else owns.
    let job = unsafe { OwnedHandle::from_raw_handle(job) };
    // SAFETY: an all-zero JOBOBJECT_EXTENDED_LIMIT_INFORMATION is a valid "no limits" value.
    let mut info: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
    info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
    // SAFETY: the pointer and size describe `info`, live for the call; `job` is open.
    let set = unsafe {
        SetInformationJobObject(
            job.as_raw_handle(),
            JobObjectExtendedLimitInformation,
            (&info as *const JOBOBJECT_EXTENDED_LIMIT_INFORMATION).cast(),
            std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
        )
    };
    if set == FALSE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both handles are open for the call (`child` owns its process handle).
    if unsafe { AssignProcessToJobObject(job.as_raw_handle(), child.as_raw_handle()) } == FALSE {
        return Err(io::Error::last_os_error());
    }
    Ok(ChildJob { _job: job })
}

/// Sends Ctrl+Break to the console process group `pid` leads (a child made with
/// [`supervise_child`]): the Windows counterpart of SIGTERM. Reaches it only when it shares
/// the server's console; a child that does not stop is killed after its grace period.
pub fn interrupt_child(pid: u32) -> io::Result<()> {
    // SAFETY: takes no pointers.
    if unsafe { GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, pid) } == FALSE {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
