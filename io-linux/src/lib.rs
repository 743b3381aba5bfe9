//! Peregrine's Linux IO driver: a small completion-style API over io_uring, with an epoll
//! implementation of the same API for where io_uring is blocked.
//!
//! The driver knows nothing of HTTP and nothing of futures. The caller submits operations
//! that own their buffers and later collects their completions:
//!
//! ```text
//!  accept(listener) ─┐                       ┌─► Accepted { fd, more }   (repeats: multishot)
//!  recv(fd)         ─┼─► Driver::wait(..) ───┼─► Received(&[u8])        (lent for the callback)
//!  send(fd, SendBuf)─┤      (one syscall     ├─► Sent { n, SendBuf }    (buffer handed back)
//!  connect(fd, addr)─┤       per turn on     ├─► Connected
//!  close(fd)        ─┤       io_uring)       ├─► Closed
//!  cancel(op)       ─┘                       └─► the cancelled op completes with ECANCELED
//! ```
//!
//! Two backends sit behind [`Driver`] (as nginx has one event module per mechanism):
//!
//! - **io_uring**: multishot accept, receives that pick a buffer from a provided-buffer ring
//!   only when data arrives (an idle connection holds no receive buffer), vectored sends, and
//!   one `io_uring_enter` per reactor turn for all submissions and completions.
//! - **epoll** (through `mio`): readiness turned into the same completions.
//!
//! [`Driver::new`] probes: io_uring unless it cannot be set up (ENOSYS on old kernels, EPERM
//! under the default seccomp profiles of Docker and containerd, or a kernel missing features
//! we need), then epoll. [`Driver::why`] says which runs and why, for the log.
//!
//! Buffer ownership: memory the kernel may touch stays owned by the driver until the
//! operation's final completion has been reaped, including after [`Driver::cancel`] and when
//! the driver is dropped (drop cancels everything and waits, bounded, for the kernel; what
//! the kernel never gives back is leaked rather than freed).
//!
//! Every `unsafe` block in this crate lives under the private `sys` module.
#![deny(unsafe_code)]

mod op;
#[allow(unsafe_code)]
mod sys;

pub use op::{is_canceled, Completion, DriverConfig, OpId, Outcome, SendBuf, MAX_SEND_CHUNKS};
pub use sys::{
    adopt_inherited, adopt_inherited_listener, allowed_cpus, inheritable_copy, pin_current_thread,
    raise_open_files_limit, shutdown_write, signal_child_group, supervise_child, ChildSignal,
};

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{OwnedFd, RawFd};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Which backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoChoice {
    /// io_uring when it can be set up, else epoll.
    #[default]
    Auto,
    /// io_uring or fail.
    Uring,
    /// epoll.
    Epoll,
}

impl FromStr for IoChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(IoChoice::Auto),
            "uring" | "io_uring" | "io-uring" => Ok(IoChoice::Uring),
            "epoll" => Ok(IoChoice::Epoll),
            other => Err(format!("unknown io driver `{other}` (expected auto, uring or epoll)")),
        }
    }
}

/// The backend that runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// io_uring completions.
    Uring,
    /// epoll readiness emulating completions.
    Epoll,
}

impl DriverKind {
    /// The backend's name, for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            DriverKind::Uring => "io_uring",
            DriverKind::Epoll => "epoll",
        }
    }
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// One driver per reactor thread, never moved after start: the size difference is irrelevant
// and boxing would add a pointer chase to every operation.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Uring(sys::uring::Uring),
    Epoll(sys::epoll::Epoll),
}

/// One completion driver. Create it on the thread that will use it: it is deliberately not
/// `Send` (the io_uring backend is set up for a single issuer).
pub struct Driver {
    backend: Backend,
    why: String,
    _single_thread: PhantomData<*const ()>,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver").field("kind", &self.kind()).field("why", &self.why).finish()
    }
}

macro_rules! dispatch {
    ($self:ident, $b:ident => $e:expr) => {
        match &mut $self.backend {
            Backend::Uring($b) => $e,
            Backend::Epoll($b) => $e,
        }
    };
}

impl Driver {
    /// Probes for and sets up a backend as `config.io` asks.
    pub fn new(config: &DriverConfig) -> io::Result<Driver> {
        let (backend, why) = match config.io {
            IoChoice::Epoll => {
                (Backend::Epoll(sys::epoll::Epoll::new(config)?), "forced by configuration".into())
            }
            IoChoice::Uring => {
                (Backend::Uring(sys::uring::Uring::new(config)?), "forced by configuration".into())
            }
            IoChoice::Auto => match sys::uring::Uring::new(config) {
                Ok(u) => (Backend::Uring(u), "io_uring is available".to_string()),
                Err(e) => {
                    let hint = match e.raw_os_error() {
                        Some(libc::EPERM) => {
                            " (EPERM: blocked by a seccomp profile or kernel.io_uring_disabled)"
                        }
                        Some(libc::ENOSYS) => " (ENOSYS: kernel without io_uring)",
                        _ => "",
                    };
                    let why = format!("io_uring unavailable: {e}{hint}; using epoll");
                    (Backend::Epoll(sys::epoll::Epoll::new(config)?), why)
                }
            },
        };
        Ok(Driver { backend, why, _single_thread: PhantomData })
    }

    /// Which backend runs.
    pub fn kind(&self) -> DriverKind {
        match self.backend {
            Backend::Uring(_) => DriverKind::Uring,
            Backend::Epoll(_) => DriverKind::Epoll,
        }
    }

    /// Why this backend was chosen, for the log.
    pub fn why(&self) -> &str {
        &self.why
    }

    /// Starts accepting on `listener`: completes with [`Outcome::Accepted`] once per
    /// connection until it reports `more: false` (an error or cancellation), after which it
    /// must be submitted again. The driver sets the listener's blocking mode as its backend
    /// needs.
    pub fn accept(&mut self, listener: RawFd, token: u64) -> OpId {
        dispatch!(self, b => b.accept(listener, token))
    }

    /// Receives once from `fd`: completes with [`Outcome::Received`]. At most one receive may
    /// be outstanding per descriptor.
    pub fn recv(&mut self, fd: RawFd, token: u64) -> OpId {
        dispatch!(self, b => b.recv(fd, token))
    }

    /// Sends `buf` (up to [`MAX_SEND_CHUNKS`] chunks of it) to `fd`: completes with
    /// [`Outcome::Sent`], which may report fewer bytes than offered. At most one send may be
    /// outstanding per descriptor.
    pub fn send(&mut self, fd: RawFd, buf: SendBuf, token: u64) -> OpId {
        dispatch!(self, b => b.send(fd, buf, token))
    }

    /// Sends `buf` at once, without an operation, when the backend can do so without
    /// waiting: `Some(result)` as a [`send`](Self::send)'s completion would report it.
    /// `None`: nothing was sent; submit a [`send`](Self::send). epoll sends when the socket
    /// is known writable and no send is outstanding on it, which saves a small response a
    /// turn of the event loop (and its task a second poll). io_uring always says `None`: its
    /// sends are batched into the next submission, one system call for many sockets.
    pub fn try_send(&mut self, fd: RawFd, buf: &SendBuf) -> Option<io::Result<usize>> {
        match &mut self.backend {
            Backend::Uring(_) => None,
            Backend::Epoll(b) => b.try_send(fd, buf),
        }
    }

    /// Connects `fd`, a fresh stream socket of `addr`'s family (TCP or Unix), to `addr`:
    /// completes with [`Outcome::Connected`]. The driver sets the socket's blocking mode as
    /// its backend needs, and copies `addr`. The socket must have no other operation
    /// outstanding until the connect completes.
    pub fn connect(&mut self, fd: RawFd, addr: &socket2::SockAddr, token: u64) -> OpId {
        dispatch!(self, b => b.connect(fd, addr, token))
    }

    /// Sends up to `len` bytes of the regular file `file`, from `offset`, to the socket
    /// `socket` without copying them through user space: completes with
    /// [`Outcome::FileSent`], which may report fewer bytes than asked (a pipe's worth, or
    /// 1 MiB, at most). io_uring sends a region whose pages are all in the page cache with
    /// `sendfile(2)` once the socket has room, and any other through a pipe with splices in
    /// its workers, so a cold page never stalls the reactor. The caller keeps `file` open
    /// until the completion. `None` when this backend cannot (epoll: the caller reads the
    /// file elsewhere and sends bytes); `Some(Err)` when no pipe could be made.
    pub fn send_file(
        &mut self,
        socket: RawFd,
        file: RawFd,
        offset: u64,
        len: usize,
        token: u64,
    ) -> Option<io::Result<OpId>> {
        match &mut self.backend {
            Backend::Uring(b) => Some(b.send_file(socket, file, offset, len, token)),
            Backend::Epoll(_) => None,
        }
    }

    /// Closes `fd`: completes with [`Outcome::Closed`]. Cancel the descriptor's outstanding
    /// operations first: with io_uring, an operation in flight keeps the socket open until it
    /// finishes.
    pub fn close(&mut self, fd: OwnedFd, token: u64) -> OpId {
        dispatch!(self, b => b.close(fd, token))
    }

    /// Asks for `op` to finish early; it then completes with ECANCELED (or with its result,
    /// if it won the race). Cancelling a finished operation does nothing.
    pub fn cancel(&mut self, op: OpId) {
        dispatch!(self, b => b.cancel(op))
    }

    /// Hands queued submissions to the kernel, waits up to `timeout` (`None`: without limit;
    /// zero: not at all) for at least one completion or a [`DriverWaker::wake`], and calls
    /// `on` for every completion available. It may return early with nothing to report (a
    /// signal interrupted it): callers re-check their own deadlines and call again.
    pub fn wait(
        &mut self,
        timeout: Option<Duration>,
        on: &mut dyn FnMut(Completion<'_>),
    ) -> io::Result<()> {
        dispatch!(self, b => b.wait(timeout, on))
    }

    /// Operations submitted and not yet completed.
    pub fn in_flight(&self) -> usize {
        match &self.backend {
            Backend::Uring(b) => b.in_flight(),
            Backend::Epoll(b) => b.in_flight(),
        }
    }

    /// A handle other threads can use to interrupt [`wait`](Self::wait).
    pub fn waker(&self) -> DriverWaker {
        match &self.backend {
            Backend::Uring(b) => DriverWaker(WakerInner::EventFd(b.waker_fd())),
            Backend::Epoll(b) => DriverWaker(WakerInner::Mio(b.waker())),
        }
    }
}

#[derive(Clone)]
enum WakerInner {
    EventFd(Arc<OwnedFd>),
    Mio(Arc<mio::Waker>),
}

/// Wakes a driver blocked in [`Driver::wait`] from any thread.
#[derive(Clone)]
pub struct DriverWaker(WakerInner);

impl fmt::Debug for DriverWaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DriverWaker")
    }
}

impl DriverWaker {
    /// Makes the driver's current or next `wait` return promptly.
    pub fn wake(&self) {
        match &self.0 {
            WakerInner::EventFd(fd) => sys::eventfd_signal(std::os::fd::AsRawFd::as_raw_fd(&**fd)),
            WakerInner::Mio(w) => {
                let _ = w.wake();
            }
        }
    }
}
