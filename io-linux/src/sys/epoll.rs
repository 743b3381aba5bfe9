//! The epoll backend: readiness turned into completions.
//!
//! Used where io_uring is unavailable (ENOSYS on old kernels, EPERM under Docker's and
//! containerd's default seccomp profiles) or when forced with `--io epoll`. It offers exactly
//! the completion semantics of the io_uring backend, so nothing above the driver can tell them
//! apart:
//!
//! - each descriptor is registered once, edge-triggered, for both directions (through `mio`);
//! - a descriptor remembers whether it is readable/writable; the flag is cleared only when a
//!   syscall returns `EAGAIN`, and set again by the next edge;
//! - a submitted operation is attempted at once when its direction is ready, else parked on
//!   its descriptor until an edge arrives;
//! - a send may also be made on the spot (`try_send`), with no operation at all: a response
//!   that fits the socket buffer then costs its task no second poll and no turn of the loop,
//!   as in any readiness-based server;
//! - receives read into one driver-owned scratch buffer, lent to the callback: like the
//!   provided-buffer ring, an idle connection holds no receive memory.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::op::{canceled, Completion, OpId, Outcome, SendBuf};
use crate::DriverConfig;

/// mio token of the waker; descriptors use their own number as token.
const WAKER: Token = Token(usize::MAX);
/// Connections one accept operation takes per turn before yielding to other work.
const ACCEPT_BATCH: usize = 64;

enum Kind {
    Accept,
    Recv,
    Send(SendBuf),
    /// A connect: parked as its descriptor's writer while the handshake runs; `Some` once
    /// its result is known.
    Connect(Option<io::Result<()>>),
    /// Finished without running (cancelled, or its descriptor was closed): report ECANCELED.
    Canceled(Box<Kind>),
    /// A close that already happened; report its result.
    Closed(Option<io::Error>),
}

struct Op {
    generation: u32,
    token: u64,
    fd: RawFd,
    kind: Kind,
}

#[derive(Default, Clone, Copy)]
struct FdState {
    registered: bool,
    readable: bool,
    writable: bool,
    /// The peer's end (or an error) was reported: no edge will follow it, so reads go on
    /// until one says so, however short the one before.
    read_closed: bool,
    /// The parked accept or receive.
    reader: Option<usize>,
    /// The parked send.
    writer: Option<usize>,
}

pub(crate) struct Epoll {
    poll: Poll,
    events: Events,
    ops: Slab<Op>,
    next_generation: u32,
    fds: Vec<FdState>,
    /// Operations to attempt (or, when finished, to report) on the next turn.
    ready: VecDeque<usize>,
    scratch: Box<[u8]>,
    waker: Arc<mio::Waker>,
}

impl Epoll {
    pub(crate) fn new(cfg: &DriverConfig) -> io::Result<Epoll> {
        let poll = Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER)?);
        Ok(Epoll {
            poll,
            events: Events::with_capacity(1024),
            ops: Slab::with_capacity(1024),
            next_generation: 0,
            fds: Vec::new(),
            ready: VecDeque::new(),
            scratch: vec![0; cfg.recv_buffer_size.max(4096)].into_boxed_slice(),
            waker,
        })
    }

    pub(crate) fn waker(&self) -> Arc<mio::Waker> {
        Arc::clone(&self.waker)
    }

    fn state(&mut self, fd: RawFd) -> &mut FdState {
        let i = fd as usize;
        if i >= self.fds.len() {
            self.fds.resize(i + 1, FdState::default());
        }
        &mut self.fds[i]
    }

    /// Registers `fd` on first use. A descriptor starts out assumed ready in both
    /// directions: the first attempt tells the truth, and an edge that fired before
    /// registration would otherwise be lost.
    fn ensure_registered(&mut self, fd: RawFd) {
        if self.state(fd).registered {
            return;
        }
        let interest = Interest::READABLE | Interest::WRITABLE;
        let registry = self.poll.registry();
        let result = registry
            .register(&mut SourceFd(&fd), Token(fd as usize), interest)
            .or_else(|_| registry.reregister(&mut SourceFd(&fd), Token(fd as usize), interest));
        let state = self.state(fd);
        *state = FdState { registered: result.is_ok(), readable: true, writable: true, ..*state };
    }

    fn insert(&mut self, token: u64, fd: RawFd, kind: Kind) -> (usize, OpId) {
        self.next_generation = self.next_generation.wrapping_add(1);
        let generation = self.next_generation;
        let index = self.ops.insert(Op { generation, token, fd, kind });
        (index, OpId { index: index as u32, generation })
    }

    fn park_reader(&mut self, fd: RawFd, token: u64, kind: Kind) -> OpId {
        self.ensure_registered(fd);
        let (index, id) = self.insert(token, fd, kind);
        let state = self.state(fd);
        debug_assert!(state.reader.is_none(), "two reads outstanding on one descriptor");
        state.reader = Some(index);
        if state.readable {
            self.ready.push_back(index);
        }
        id
    }

    pub(crate) fn accept(&mut self, listener: RawFd, token: u64) -> OpId {
        let _ = super::set_nonblocking(listener, true);
        // The number may have been a descriptor closed without `close` (a listener dropped
        // by its owner): its state says registered, but the kernel forgot it with the file.
        // Registering again is harmless when it was not closed (EEXIST, then reregister).
        *self.state(listener) = FdState::default();
        self.park_reader(listener, token, Kind::Accept)
    }

    pub(crate) fn recv(&mut self, fd: RawFd, token: u64) -> OpId {
        self.park_reader(fd, token, Kind::Recv)
    }

    pub(crate) fn send(&mut self, fd: RawFd, buf: SendBuf, token: u64) -> OpId {
        self.ensure_registered(fd);
        let (index, id) = self.insert(token, fd, Kind::Send(buf));
        let state = self.state(fd);
        debug_assert!(state.writer.is_none(), "two sends outstanding on one descriptor");
        state.writer = Some(index);
        if state.writable {
            self.ready.push_back(index);
        }
        id
    }

    /// Sends `buf` now, when `fd` is known writable and no send is parked on it. `None`: not
    /// attempted, or the socket buffer is full (`EAGAIN`, now remembered until the next
    /// edge); the caller then submits a [`send`](Self::send).
    pub(crate) fn try_send(&mut self, fd: RawFd, buf: &SendBuf) -> Option<io::Result<usize>> {
        self.ensure_registered(fd);
        let state = self.state(fd);
        if !state.writable || state.writer.is_some() {
            return None;
        }
        write(state, fd, buf)
    }

    pub(crate) fn connect(&mut self, fd: RawFd, addr: &socket2::SockAddr, token: u64) -> OpId {
        let started = super::set_nonblocking(fd, true).and_then(|()| {
            // A fresh socket: a reused descriptor number must not inherit a closed one's state.
            *self.state(fd) = FdState::default();
            self.ensure_registered(fd);
            super::connect(fd, addr)
        });
        let (index, id) = self.insert(token, fd, Kind::Connect(None));
        match started {
            // Registered before connecting, so the edge that ends the handshake is not lost.
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                let state = self.state(fd);
                state.writable = false;
                state.writer = Some(index);
            }
            done => {
                self.ops[index].kind = Kind::Connect(Some(done));
                self.ready.push_back(index);
            }
        }
        id
    }

    pub(crate) fn close(&mut self, fd: OwnedFd, token: u64) -> OpId {
        let raw = fd.as_raw_fd();
        // Operations still parked on the descriptor finish as cancelled, as io_uring's would
        // once their file goes away.
        let parked = {
            let state = self.state(raw);
            [state.reader.take(), state.writer.take()]
        };
        for index in parked.into_iter().flatten() {
            self.finish_canceled(index);
        }
        if self.state(raw).registered {
            let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
        }
        *self.state(raw) = FdState::default();
        drop(fd);
        let (index, id) = self.insert(token, raw, Kind::Closed(None));
        self.ready.push_back(index);
        id
    }

    fn finish_canceled(&mut self, index: usize) {
        let op = &mut self.ops[index];
        let kind = std::mem::replace(&mut op.kind, Kind::Closed(None));
        op.kind = Kind::Canceled(Box::new(kind));
        self.ready.push_back(index);
    }

    pub(crate) fn cancel(&mut self, op: OpId) {
        let index = op.index as usize;
        let fd = match self.ops.get(index) {
            Some(o) if o.generation == op.generation => o.fd,
            _ => return,
        };
        if matches!(self.ops[index].kind, Kind::Canceled(_) | Kind::Closed(_)) {
            return;
        }
        let state = self.state(fd);
        if state.reader == Some(index) {
            state.reader = None;
        }
        if state.writer == Some(index) {
            state.writer = None;
        }
        // It may already sit in `ready`; `run` skips entries whose op is gone or re-queued.
        self.finish_canceled(index);
    }

    pub(crate) fn wait(
        &mut self,
        timeout: Option<Duration>,
        on: &mut dyn FnMut(Completion<'_>),
    ) -> io::Result<()> {
        // Completions delivered now wake tasks that must run before anything blocks.
        let delivered = self.run(on);
        let timeout =
            if self.ready.is_empty() && delivered == 0 { timeout } else { Some(Duration::ZERO) };
        if let Err(e) = self.poll.poll(&mut self.events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let Epoll { events, fds, ready, .. } = self;
        for event in events.iter() {
            if event.token() == WAKER {
                continue;
            }
            let Some(state) = fds.get_mut(event.token().0) else { continue };
            let closed = event.is_read_closed() || event.is_error();
            if event.is_readable() || closed {
                state.readable = true;
                state.read_closed |= closed;
                if let Some(index) = state.reader {
                    ready.push_back(index);
                }
            }
            if event.is_writable() || event.is_write_closed() || event.is_error() {
                state.writable = true;
                if let Some(index) = state.writer {
                    ready.push_back(index);
                }
            }
        }
        self.run(on);
        Ok(())
    }

    /// Attempts every ready operation once (accepts re-queue themselves for the next turn).
    /// Returns how many completions were delivered.
    fn run(&mut self, on: &mut dyn FnMut(Completion<'_>)) -> usize {
        let mut delivered = 0;
        let mut counting = |c: Completion<'_>| {
            delivered += 1;
            on(c)
        };
        for _ in 0..self.ready.len() {
            let Some(index) = self.ready.pop_front() else { break };
            if !self.ops.contains(index) {
                continue;
            }
            self.attempt(index, &mut counting);
        }
        delivered
    }

    fn attempt(&mut self, index: usize, on: &mut dyn FnMut(Completion<'_>)) {
        let op = &self.ops[index];
        let (fd, token) = (op.fd, op.token);
        let id = OpId { index: index as u32, generation: op.generation };
        match &op.kind {
            Kind::Accept => self.attempt_accept(index, id, on),
            Kind::Recv => {
                if self.fds[fd as usize].reader != Some(index) {
                    return; // stale queue entry
                }
                match super::recv(fd, &mut self.scratch) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.fds[fd as usize].readable = false;
                    }
                    result => {
                        let state = &mut self.fds[fd as usize];
                        // A read that did not fill the buffer emptied the socket: the next
                        // byte to arrive raises a new edge, so the next receive waits for it
                        // rather than asking the kernel first and hearing `EAGAIN` (one
                        // system call per keep-alive request; nginx does the same). Not
                        // after the peer's end was reported: that edge has passed.
                        if matches!(result, Ok(n) if n > 0 && n < self.scratch.len())
                            && !state.read_closed
                        {
                            state.readable = false;
                        }
                        state.reader = None;
                        self.ops.remove(index);
                        let outcome = Outcome::Received(result.map(|n| &self.scratch[..n]));
                        on(Completion { token, op: id, outcome });
                    }
                }
            }
            Kind::Send(buf) => {
                if self.fds[fd as usize].writer != Some(index) {
                    return;
                }
                if let Some(result) = write(&mut self.fds[fd as usize], fd, buf) {
                    self.fds[fd as usize].writer = None;
                    let Kind::Send(buf) = self.ops.remove(index).kind else { unreachable!() };
                    on(Completion { token, op: id, outcome: Outcome::Sent { result, buf } });
                }
            }
            Kind::Connect(done) => {
                let result = match done {
                    Some(_) => None,
                    None if self.fds[fd as usize].writer != Some(index) => return,
                    None => Some(super::take_error(fd)),
                };
                if result.is_some() {
                    self.fds[fd as usize].writer = None;
                }
                let Kind::Connect(done) = self.ops.remove(index).kind else { unreachable!() };
                let result = result.or(done).expect("one of the two is set");
                on(Completion { token, op: id, outcome: Outcome::Connected(result) });
            }
            Kind::Canceled(_) => {
                let Kind::Canceled(kind) = self.ops.remove(index).kind else { unreachable!() };
                let outcome = match *kind {
                    Kind::Accept => Outcome::Accepted { result: Err(canceled()), more: false },
                    Kind::Send(buf) => Outcome::Sent { result: Err(canceled()), buf },
                    Kind::Connect(_) => Outcome::Connected(Err(canceled())),
                    _ => Outcome::Received(Err(canceled())),
                };
                on(Completion { token, op: id, outcome });
            }
            Kind::Closed(_) => {
                let Kind::Closed(err) = self.ops.remove(index).kind else { unreachable!() };
                let result = err.map_or(Ok(()), Err);
                on(Completion { token, op: id, outcome: Outcome::Closed(result) });
            }
        }
    }

    fn attempt_accept(&mut self, index: usize, id: OpId, on: &mut dyn FnMut(Completion<'_>)) {
        let (fd, token) = (self.ops[index].fd, self.ops[index].token);
        if self.fds[fd as usize].reader != Some(index) {
            return;
        }
        for _ in 0..ACCEPT_BATCH {
            match super::accept(fd) {
                Ok(conn) => {
                    // A reused descriptor number must not inherit a closed socket's state.
                    *self.state(conn.as_raw_fd()) = FdState::default();
                    on(Completion {
                        token,
                        op: id,
                        outcome: Outcome::Accepted { result: Ok(conn), more: true },
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.fds[fd as usize].readable = false;
                    return;
                }
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
                Err(e) => {
                    // Like a multishot accept, an error ends the operation; the caller decides
                    // when to accept again (e.g. after backing off on EMFILE).
                    self.fds[fd as usize].reader = None;
                    self.ops.remove(index);
                    on(Completion {
                        token,
                        op: id,
                        outcome: Outcome::Accepted { result: Err(e), more: false },
                    });
                    return;
                }
            }
        }
        // A full batch: more may be waiting, and no new edge will say so.
        self.ready.push_back(index);
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.ops.len()
    }
}

/// One `sendmsg` of `buf`'s first chunks on `fd`, whose state is `state`: `None` on `EAGAIN`
/// (the socket is then marked not writable until its next edge). A submitted send and one
/// made on the spot both go through here.
fn write(state: &mut FdState, fd: RawFd, buf: &SendBuf) -> Option<io::Result<usize>> {
    match super::send_chunks(fd, buf.head_chunks()) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            state.writable = false;
            None
        }
        result => Some(result),
    }
}
