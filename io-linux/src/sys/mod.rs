//! Everything that talks to the kernel directly. All of this crate's `unsafe` lives under this
//! module; each block says why it is sound.
//!
//! - [`uring`]: the io_uring backend, with [`buf_ring`] (provided receive buffers).
//! - [`epoll`]: the epoll backend (through `mio`), emulating completions.
//! - this file: small syscall wrappers both backends and the server use.

pub(crate) mod buf_ring;
pub(crate) mod epoll;
mod process;
pub(crate) mod uring;

pub use process::{signal_child_group, supervise_child, ChildSignal};

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use bytes::Bytes;

/// Turns a libc return value into `io::Result`, reading `errno` on -1 (mio's `syscall!`).
fn cvt<T: Into<i64> + Copy>(ret: T) -> io::Result<T> {
    if ret.into() == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A pipe for splicing a file to a socket.
pub(crate) struct Pipe {
    pub(crate) read: OwnedFd,
    pub(crate) write: OwnedFd,
    /// Bytes it holds at most.
    pub(crate) capacity: usize,
}

/// The pipe size asked for: 256 KiB moves a large file in few splices (1 MiB measured no
/// better per byte on large files), and 256 such pipes fit the default per-user pipe budget
/// (`fs.pipe-user-pages-soft`, 64 MiB).
const PIPE_SIZE: i32 = 256 * 1024;
/// Past the budget the kernel makes new pipes of two pages: too small to be worth a splice,
/// so the caller is told to send the file another way.
const PIPE_MIN: usize = 64 * 1024;

impl Pipe {
    /// A new close-on-exec pipe, grown to [`PIPE_SIZE`] where the system allows.
    pub(crate) fn new() -> io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the two-element array.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
        // SAFETY: pipe2 succeeded: both descriptors are fresh and ours.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ/F_GETPIPE_SZ on a pipe we own; failure leaves the default size.
        let capacity = unsafe {
            libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE);
            libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        let capacity = usize::try_from(capacity).unwrap_or(0);
        if capacity < PIPE_MIN {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "pipe too small to splice through (the per-user pipe budget is spent)",
            ));
        }
        Ok(Pipe { read, write, capacity })
    }
}

/// `cachestat(2)`'s number: the same on every architecture (the unified syscall table);
/// the `libc` crate does not name it for every target yet.
const SYS_CACHESTAT: libc::c_long = 451;

/// `struct cachestat_range`.
#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

/// `struct cachestat`.
#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// Whether every page of `file`'s bytes `offset..offset + len` is in the page cache, so
/// sending them cannot wait on the disk. `None` where the kernel cannot tell (no
/// `cachestat(2)` before Linux 6.5, or a file system without a page cache).
pub(crate) fn page_cached(file: RawFd, offset: u64, len: usize) -> Option<bool> {
    const PAGE: u64 = 4096;
    if len == 0 {
        return Some(true);
    }
    let first = offset / PAGE;
    let end = (offset + len as u64).div_ceil(PAGE);
    let range = CachestatRange { off: first * PAGE, len: (end - first) * PAGE };
    let mut stat = Cachestat::default();
    // SAFETY: cachestat reads the range and writes one `struct cachestat` into `stat`; both
    // are live locals laid out as the kernel's structs, and flags must be 0.
    let ret = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file,
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0u32,
        )
    };
    if ret != 0 {
        return None;
    }
    // A page the kernel sizes larger than 4 KiB only makes the count smaller: never a
    // false "cached".
    Some(stat.nr_cache >= end - first)
}

/// Sends up to `len` bytes of `file` from `offset` to `socket` with `sendfile(2)`, without
/// blocking: what fits in the socket's buffer now (`WouldBlock` when nothing does). The
/// socket is made non-blocking for the call and restored after, because io_uring wants its
/// sockets blocking (see `uring::accept`) and `sendfile` has no per-call flag for it.
pub(crate) fn sendfile_nonblocking(
    socket: RawFd,
    file: RawFd,
    offset: u64,
    len: usize,
) -> io::Result<usize> {
    // SAFETY: F_GETFL/F_SETFL only read and write the descriptor's status flags.
    let flags = cvt(unsafe { libc::fcntl(socket, libc::F_GETFL) })?;
    let blocking = flags & libc::O_NONBLOCK == 0;
    if blocking {
        // SAFETY: as above.
        cvt(unsafe { libc::fcntl(socket, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    }
    let mut off = offset as libc::off_t;
    // SAFETY: sendfile reads `off` and writes the new offset back into it, a live local; the
    // descriptors are the caller's, open for the call.
    let sent = unsafe { libc::sendfile(socket, file, &mut off, len) };
    let result = cvt(sent as i64).map(|n| n as usize);
    if blocking {
        // SAFETY: as above: the flags read before the call.
        let _ = unsafe { libc::fcntl(socket, libc::F_SETFL, flags) };
    }
    result
}

/// Accepts one connection, non-blocking and close-on-exec.
pub(crate) fn accept(listener: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: accept4 with null address pointers only reads the listener descriptor.
    let fd = cvt(unsafe {
        libc::accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })?;
    // SAFETY: accept4 returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Receives into `buf` without blocking.
pub(crate) fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe `buf`, which is valid for writes for the call.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    cvt(n as i64).map(|n| n as usize)
}

/// Sends `chunks` with one `sendmsg`, without blocking and without SIGPIPE.
pub(crate) fn send_chunks(fd: RawFd, chunks: &[Bytes]) -> io::Result<usize> {
    let mut slices = [IoSlice::new(&[]); crate::op::MAX_SEND_CHUNKS];
    let n = chunks.len().min(slices.len());
    for (slot, chunk) in slices.iter_mut().zip(chunks) {
        *slot = IoSlice::new(chunk);
    }
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = slices.as_mut_ptr().cast();
    msg.msg_iovlen = n as _;
    // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix (documented by std); the iovecs
    // and the bytes they point to outlive this synchronous call.
    let sent = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    cvt(sent as i64).map(|n| n as usize)
}

/// Starts connecting `fd` to `addr` (on a non-blocking socket: `EINPROGRESS` while the
/// handshake runs).
pub(crate) fn connect(fd: RawFd, addr: &socket2::SockAddr) -> io::Result<()> {
    // SAFETY: the pointer and length describe `addr`'s storage, live for this call.
    cvt(unsafe { libc::connect(fd, addr.as_ptr().cast(), addr.len()) })?;
    Ok(())
}

/// The socket's pending error (`SO_ERROR`), cleared by reading it: how a non-blocking
/// connect ended.
pub(crate) fn take_error(fd: RawFd) -> io::Result<()> {
    let mut error: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the kernel writes one int into a live local whose size `len` gives.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut error as *mut i32).cast(),
            &mut len,
        )
    })?;
    match error {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Sets or clears `O_NONBLOCK`.
pub(crate) fn set_nonblocking(fd: RawFd, nonblocking: bool) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL only read and write the descriptor's status flags.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let wanted = if nonblocking { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
    if wanted != flags {
        // SAFETY: as above.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, wanted) })?;
    }
    Ok(())
}

/// A non-blocking eventfd, used to wake a driver blocked in `wait` from another thread.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd has no pointer arguments.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter (wakes its readers).
pub(crate) fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64. A full counter (EAGAIN) already means "woken".
    let _ = unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

/// Resets an eventfd's counter.
pub(crate) fn eventfd_drain(fd: RawFd) {
    let mut value: u64 = 0;
    // SAFETY: reads 8 bytes into a live u64; EAGAIN (nothing pending) is fine.
    let _ = unsafe { libc::read(fd, (&mut value as *mut u64).cast(), 8) };
}

/// Pins the calling thread to one CPU.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "cpu index out of range"));
    }
    // SAFETY: `cpu` is within the set's size, checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: passes a valid set of the size given; pid 0 is the calling thread.
    cvt(unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) })?;
    Ok(())
}

/// The CPUs this process may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: as in `pin_current_thread`; sched_getaffinity fills the set we own.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the size matches the set passed.
    let ok =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if ok != 0 {
        return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    }
    // SAFETY: CPU_ISSET reads the set within its size.
    (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect()
}

/// Raises the soft open-files limit to the hard limit (as Go's runtime and nginx's
/// `worker_rlimit_nofile` do) and returns the resulting soft limit.
pub fn raise_open_files_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write a plain struct we own.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    lim.rlim_cur
}

/// Shuts down the write side of a socket: the peer sees EOF after the bytes already sent.
/// Used for lingering close, so a client gets an error response before any reset.
pub fn shutdown_write(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: shutdown only acts on the descriptor, which `fd` keeps open.
    cvt(unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) })?;
    Ok(())
}

/// Takes ownership of descriptor `fd`, inherited from the process that started this one
/// (systemd socket activation, or a running Peregrine handing over during an upgrade),
/// after checking that it is open. It is made close-on-exec, so processes Peregrine starts
/// later do not inherit it too.
pub fn adopt_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_GETFD) only reads the descriptor table; any integer is sound to ask.
    cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: `fd` is open (checked above), and by the inheritance protocol (LISTEN_FDS, or
    // Peregrine's own upgrade variables) it was handed to this process for this use alone:
    // nothing else here owns or closes it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: as above; sets a flag on a descriptor we now own.
    cvt(unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) })?;
    Ok(owned)
}

/// [`adopt_inherited`], for a descriptor that must be a listening socket.
pub fn adopt_inherited_listener(fd: RawFd) -> io::Result<OwnedFd> {
    let owned = adopt_inherited(fd)?;
    if !socket2::SockRef::from(&owned).is_listener()? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("inherited descriptor {fd} is not a listening socket"),
        ));
    }
    Ok(owned)
}

/// A copy of `fd` that a process started next inherits (no close-on-exec), for handing a
/// socket over. Close it once the child has started.
pub fn inheritable_copy(fd: &impl AsRawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD duplicates an open descriptor we hold (borrowed for the call) into the
    // lowest free number from 3, without FD_CLOEXEC; the result is a new descriptor.
    let copy = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD, 3) })?;
    // SAFETY: `copy` was just created by the kernel for us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}
