//! Peregrine's Windows IO driver: the completion-style API of `peregrine-io-linux`, over an
//! I/O completion port (IOCP).
//!
//! The driver knows nothing of HTTP and nothing of futures. The caller submits operations
//! that own their buffers and later collects their completions, exactly as on Linux:
//!
//! ```text
//!  accept(listener) ─┐                       ┌─► Accepted { socket, more } (repeats)
//!  recv(socket)     ─┼─► Driver::wait(..) ───┼─► Received(&[u8])          (lent for the callback)
//!  send(socket, buf)─┤   (one GetQueued-     ├─► Sent { n, SendBuf }      (buffer handed back)
//!  connect(s, addr) ─┤    CompletionStatusEx ├─► Connected
//!  close(socket)    ─┤    per turn)          ├─► Closed
//!  cancel(op)       ─┘                       └─► the cancelled op completes with
//!                                                ERROR_OPERATION_ABORTED (see `is_canceled`)
//! ```
//!
//! How each operation maps onto IOCP (details in `sys/iocp.rs` and `sys/acceptor.rs`):
//!
//! - **accept**: `AcceptEx` on a process-wide accept port, with the accepted sockets handed
//!   round-robin to the cores that accept on that listener (Windows has no SO_REUSEPORT
//!   balancing and a socket belongs to one completion port; `sys/acceptor.rs` explains the
//!   choice).
//! - **recv**: a zero-byte overlapped `WSARecv` that completes when data (or EOF) arrives,
//!   then a non-blocking `recv` into one driver-owned scratch buffer lent to the callback, as
//!   libuv does: like the provided-buffer ring on Linux, an idle connection holds no receive
//!   memory.
//! - **send**: one vectored overlapped `WSASend` of up to [`MAX_SEND_CHUNKS`] chunks.
//! - **connect**: `ConnectEx` (loaded once through `WSAIoctl`) on a socket bound to the
//!   unspecified address, then `SO_UPDATE_CONNECT_CONTEXT`.
//! - **close**: `closesocket`, which aborts the socket's outstanding operations.
//! - **cancel**: `CancelIoEx` on the operation's own `OVERLAPPED`.
//! - **timers**: the caller's next deadline is the `GetQueuedCompletionStatusEx` timeout.
//!
//! Buffer ownership: every `OVERLAPPED` and every byte the kernel may touch stays owned by
//! the driver until its completion has been dequeued from the port, including after
//! [`Driver::cancel`] and when the driver is dropped (drop cancels everything and waits,
//! bounded, for the completions; what the kernel never gives back is leaked rather than
//! freed).
//!
//! Every `unsafe` block in this crate lives under the private `sys` module. On targets other
//! than Windows the crate is empty.
#![cfg(windows)]
#![deny(unsafe_code)]

mod op;
#[allow(unsafe_code)]
mod sys;

pub use op::{is_canceled, Completion, DriverConfig, OpId, Outcome, SendBuf, MAX_SEND_CHUNKS};
pub use sys::{
    allowed_cpus, contain_child, duplicate_socket, interrupt_child, on_console_ctrl,
    pin_current_thread, raise_open_files_limit, set_exclusive_address_use, shutdown_write,
    socket_from_duplicate, supervise_child, transmit_file_unthrottled, ChildJob,
};

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::windows::io::{OwnedSocket, RawSocket};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Which backend to use. Windows has one; the choice exists so configuration reads the same
/// on every OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoChoice {
    /// The platform's driver: IOCP.
    #[default]
    Auto,
    /// IOCP (the same as `Auto`).
    Iocp,
}

impl FromStr for IoChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(IoChoice::Auto),
            "iocp" => Ok(IoChoice::Iocp),
            "uring" | "io_uring" | "io-uring" | "epoll" => {
                Err(format!("io driver `{s}` exists only on Linux (expected auto or iocp)"))
            }
            other => Err(format!("unknown io driver `{other}` (expected auto or iocp)")),
        }
    }
}

/// The backend that runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// I/O completion ports.
    Iocp,
}

impl DriverKind {
    /// The backend's name, for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            DriverKind::Iocp => "iocp",
        }
    }
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One completion driver. Create it on the thread that will use it: it is deliberately not
/// `Send`, like the Linux driver (one completion port per reactor thread).
pub struct Driver {
    iocp: sys::iocp::Iocp,
    _single_thread: PhantomData<*const ()>,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver").field("kind", &self.kind()).finish()
    }
}

impl Driver {
    /// Creates this thread's completion port.
    pub fn new(config: &DriverConfig) -> io::Result<Driver> {
        Ok(Driver { iocp: sys::iocp::Iocp::new(config)?, _single_thread: PhantomData })
    }

    /// Which backend runs.
    pub fn kind(&self) -> DriverKind {
        DriverKind::Iocp
    }

    /// Why this backend was chosen, for the log.
    pub fn why(&self) -> &str {
        "IOCP is Windows' completion mechanism"
    }

    /// Starts accepting on `listener`: completes with [`Outcome::Accepted`] once per
    /// connection until it reports `more: false` (an error or cancellation), after which it
    /// must be submitted again. Several drivers (one per core) may accept on the same
    /// listener; its connections are spread across them.
    pub fn accept(&mut self, listener: RawSocket, token: u64) -> OpId {
        self.iocp.accept(listener, token)
    }

    /// Receives once from `socket`: completes with [`Outcome::Received`]. At most one receive
    /// may be outstanding per socket.
    pub fn recv(&mut self, socket: RawSocket, token: u64) -> OpId {
        self.iocp.recv(socket, token)
    }

    /// Sends `buf` (up to [`MAX_SEND_CHUNKS`] chunks of it) to `socket`: completes with
    /// [`Outcome::Sent`], which may report fewer bytes than offered. At most one send may be
    /// outstanding per socket.
    pub fn send(&mut self, socket: RawSocket, buf: SendBuf, token: u64) -> OpId {
        self.iocp.send(socket, buf, token)
    }

    /// Sends `buf` at once, without an operation, when the backend can do so without
    /// waiting. IOCP cannot: always `None`, submit a [`send`](Self::send). (The Linux
    /// driver's epoll backend can; the call keeps the drivers' API the same.)
    pub fn try_send(&mut self, _socket: RawSocket, _buf: &SendBuf) -> Option<io::Result<usize>> {
        None
    }

    /// Connects `socket`, a fresh TCP socket of `addr`'s family, to `addr` with `ConnectEx`
    /// (binding it to the unspecified address first, as `ConnectEx` requires): completes with
    /// [`Outcome::Connected`]. Other address families complete with `Unsupported`. The
    /// socket must have no other operation outstanding until the connect completes.
    pub fn connect(&mut self, socket: RawSocket, addr: &socket2::SockAddr, token: u64) -> OpId {
        self.iocp.connect(socket, addr, token)
    }

    /// Sends up to `len` bytes of `file` from `offset` to `socket` with `TransmitFile` (the
    /// kernel reads the file and sends it; nothing is copied through user space): completes
    /// with [`Outcome::FileSent`], which may report fewer bytes than asked (at most 1 MiB a
    /// call). `file` must stay open until then; the send counts as the socket's one
    /// outstanding send. Always `Some` (the Linux driver's epoll backend answers `None`);
    /// see [`transmit_file_unthrottled`] for whether it is wise on this edition of Windows.
    pub fn send_file(
        &mut self,
        socket: RawSocket,
        file: std::os::windows::io::RawHandle,
        offset: u64,
        len: usize,
        token: u64,
    ) -> Option<io::Result<OpId>> {
        Some(Ok(self.iocp.send_file(socket, file, offset, len, token)))
    }

    /// Closes `socket`: completes with [`Outcome::Closed`]. Operations still outstanding on
    /// it complete as cancelled.
    pub fn close(&mut self, socket: OwnedSocket, token: u64) -> OpId {
        self.iocp.close(socket, token)
    }

    /// Asks for `op` to finish early; it then completes with `ERROR_OPERATION_ABORTED` (or
    /// with its result, if it won the race). Cancelling a finished operation does nothing.
    /// A cancelled accept may still deliver connections (`more: true`) that were accepted
    /// before the cancellation took effect; its end (`more: false`) comes after them.
    pub fn cancel(&mut self, op: OpId) {
        self.iocp.cancel(op)
    }

    /// Waits up to `timeout` (`None`: without limit; zero: not at all) for at least one
    /// completion or a [`DriverWaker::wake`], and calls `on` for every completion available.
    /// It may return early with nothing to report: callers re-check their own deadlines and
    /// call again.
    pub fn wait(
        &mut self,
        timeout: Option<Duration>,
        on: &mut dyn FnMut(Completion<'_>),
    ) -> io::Result<()> {
        self.iocp.wait(timeout, on)
    }

    /// Operations submitted and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.iocp.in_flight()
    }

    /// A handle other threads can use to interrupt [`wait`](Self::wait).
    pub fn waker(&self) -> DriverWaker {
        DriverWaker(self.iocp.shared())
    }
}

/// Wakes a driver blocked in [`Driver::wait`] from any thread.
#[derive(Clone)]
pub struct DriverWaker(Arc<sys::iocp::Shared>);

impl fmt::Debug for DriverWaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DriverWaker")
    }
}

impl DriverWaker {
    /// Makes the driver's current or next `wait` return promptly.
    pub fn wake(&self) {
        self.0.wake();
    }
}
