//! The io_uring backend.
//!
//! Every operation gets a slot in `ops` whose index and generation form the SQE's
//! `user_data`. A slot owns whatever memory the kernel may touch for that operation (a send's
//! iovec array, message header and bytes), so memory can only be freed when the slot's final
//! completion arrives. Receives use the provided-buffer ring, so they own nothing.
//!
//! Receives are multishot: the first receive on a socket arms one `RECV_MULTISHOT` request
//! that stays armed across requests, so a keep-alive connection costs no receive submission
//! and no poll re-arm per request. Each [`Uring::recv`] is a *waiter* that takes the next
//! piece of data; data that arrives with no waiter is held (at most [`MAX_HELD`] buffers per
//! socket, past which the multishot is cancelled as back-pressure, and re-armed by the next
//! waiter).
//!
//! The ring is set up with `SINGLE_ISSUER | DEFER_TASKRUN` when the kernel has them (6.1):
//! completions are then processed only when this thread enters the kernel, which suits one
//! ring per reactor thread and batches the kernel's work with ours.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};
use slab::Slab;

use super::buf_ring::BufRing;
use crate::op::{Completion, OpId, Outcome, SendBuf, MAX_SEND_CHUNKS};
use crate::DriverConfig;

/// Buffer group id of the receive ring (one ring per driver).
const RECV_GROUP: u16 = 0;
/// Buffers held for one socket with no receive waiting before its multishot is cancelled.
const MAX_HELD: usize = 4;
/// Empty pipes kept per driver for file sends (two descriptors each; their size counts
/// against the per-user pipe budget, `fs.pipe-user-pages-soft`, even while empty).
const MAX_IDLE_PIPES: usize = 4;

/// What a multishot delivered that no waiter has taken yet.
enum Held {
    Data { bid: u16, len: u32 },
    Eof,
    Error(i32),
}

/// Receive state of one socket.
#[derive(Default)]
struct Socket {
    /// The armed multishot, if any.
    armed: Option<OpId>,
    /// The waiting receive, if any.
    waiter: Option<OpId>,
    held: HeldQueue,
}

/// Receive state by file descriptor. Descriptors are small dense integers, so a vector
/// indexed by them is smaller than a hash map (no hashing, no spare buckets) and a lookup is
/// one bounds check; a descriptor with nothing armed, waiting or held has a default entry.
#[derive(Default)]
struct SocketTable(Vec<Socket>);

impl SocketTable {
    fn entry(&mut self, fd: RawFd) -> &mut Socket {
        let i = usize::try_from(fd).expect("descriptors are non-negative");
        if i >= self.0.len() {
            self.0.resize_with(i + 1, Socket::default);
        }
        &mut self.0[i]
    }

    fn get(&self, fd: RawFd) -> Option<&Socket> {
        self.0.get(usize::try_from(fd).ok()?)
    }

    fn get_mut(&mut self, fd: RawFd) -> Option<&mut Socket> {
        self.0.get_mut(usize::try_from(fd).ok()?)
    }

    /// Takes `fd`'s state, leaving a default entry.
    fn remove(&mut self, fd: RawFd) -> Option<Socket> {
        self.get_mut(fd).map(std::mem::take)
    }
}

/// A socket's held deliveries, in order (a handful at most: [`MAX_HELD`], plus what was in
/// flight when the multishot was cancelled). Allocated only while something is held: most
/// sockets never hold anything (their receive waits before data comes), and an idle
/// connection's entry in the socket table should stay small.
#[derive(Default)]
struct HeldQueue(Vec<Held>);

impl HeldQueue {
    fn push_back(&mut self, held: Held) {
        self.0.push(held);
    }

    fn push_front(&mut self, held: Held) {
        self.0.insert(0, held);
    }

    fn pop_front(&mut self) -> Option<Held> {
        if self.0.is_empty() {
            return None;
        }
        let held = self.0.remove(0);
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
        Some(held)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn drain_all(self) -> impl Iterator<Item = Held> {
        self.0.into_iter()
    }
}

/// What a slot is waiting for.
enum Kind {
    Accept,
    /// A caller's receive: waits for the socket's multishot to deliver. Has no SQE of its own.
    Recv {
        fd: RawFd,
    },
    /// A socket's armed multishot receive.
    RecvMulti {
        fd: RawFd,
    },
    Send(Box<SendState>),
    /// A connect; the kernel reads the boxed address (a stable address while it may).
    Connect(Box<socket2::SockAddr>),
    /// A file-to-socket send: two splices through a pipe, one after the other.
    SendFile(Box<Splice>),
    /// A file-to-socket send of pages already in the page cache: a poll for room in the
    /// socket, then `sendfile` on the reactor.
    SendCached(Cached),
    Close,
    /// An internal cancellation request; its own completion is not reported.
    Cancel,
    /// The internal poll on the waker's eventfd.
    Waker,
}

struct Slot {
    generation: u32,
    token: u64,
    kind: Kind,
    cancel_requested: bool,
}

/// Memory the kernel reads during a send. Boxed so its address is stable while the slot
/// (and the slab around it) moves.
struct SendState {
    buf: SendBuf,
    iov: [libc::iovec; MAX_SEND_CHUNKS],
    msg: libc::msghdr,
}

impl SendState {
    fn new() -> Box<SendState> {
        Box::new(SendState {
            buf: SendBuf::new(),
            iov: [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MAX_SEND_CHUNKS],
            // SAFETY: an all-zero msghdr is a valid empty message.
            msg: unsafe { std::mem::zeroed() },
        })
    }
}

/// A file-to-socket send in progress. The file's pages go file → pipe → socket by
/// reference (splice), never through user space; io_uring runs splices in its workers, so a
/// cold page never stalls the reactor. The two splices are linked: the drain starts in the
/// kernel as soon as the fill ends, with no trip through the reactor between them. A short
/// fill (the file ended) breaks the link (the drain completes cancelled) and what the fill
/// moved is drained on its own; so is what a short drain left in the pipe.
struct Splice {
    pipe: super::Pipe,
    socket: RawFd,
    /// Bytes in the pipe, still to go to the socket.
    in_pipe: usize,
    /// Bytes that reached the socket.
    sent: usize,
    /// Completions still to come for the splices submitted.
    outstanding: u8,
    /// The next completion is the fill's.
    filling: bool,
    /// The first error, as an errno.
    failed: Option<i32>,
}

/// A file-to-socket send whose pages were all in the page cache when it began.
///
/// io_uring runs every splice in a worker thread (splice may wait on the disk), so the pipe
/// path costs two thread hand-offs per pipe's worth; on a 100 MiB file those hand-offs were
/// a third of the server's CPU. When `cachestat` says no page of the region needs the disk,
/// `sendfile` on the reactor, once a poll says the socket has room, does the same kernel
/// work (page references into the socket, no copy) with no hand-off: nginx's `sendfile on`.
/// A page evicted between the check and the send would be read synchronously: a window of
/// microseconds, and what nginx risks on every send.
struct Cached {
    socket: RawFd,
    file: RawFd,
    offset: u64,
    len: usize,
}

/// The most one cached send asks `sendfile` for (nginx's `sendfile_max_chunk`): bounds the
/// time one connection holds the reactor.
const CACHED_SEND_MAX: usize = 1024 * 1024;

pub(crate) struct Uring {
    ring: IoUring,
    ops: Slab<Slot>,
    next_generation: u32,
    bufs: BufRing,
    waker: Arc<OwnedFd>,
    /// Reused boxes for sends, so a send allocates nothing once warm. They stay boxed because
    /// the kernel holds pointers into them: their address must not move with the Vec.
    #[allow(clippy::vec_box)]
    send_pool: Vec<Box<SendState>>,
    /// Reused completion batch.
    cqes: Vec<cqueue::Entry>,
    /// Receive state per socket.
    sockets: SocketTable,
    /// Sockets whose multishot ended for lack of buffers while a receive waits: re-armed
    /// after this batch recycled buffers.
    rearm: Vec<RawFd>,
    /// Receives that can complete without the kernel (held data, cancellation).
    immediate: Vec<(OpId, Held)>,
    /// Empty pipes of finished file sends, for the next ones.
    pipes: Vec<super::Pipe>,
    /// Whether `cachestat` answers here (Linux 6.5); without it every file send splices.
    cachestat: bool,
}

impl Uring {
    /// Sets up a ring, registers the receive buffers and arms the waker. Any error here means
    /// "io_uring is not usable on this system" and the caller may fall back to epoll.
    pub(crate) fn new(cfg: &DriverConfig) -> io::Result<Uring> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_coop_taskrun()
            .build(cfg.ring_entries)
            .or_else(|_| IoUring::builder().build(cfg.ring_entries))?;
        if !ring.params().is_feature_ext_arg() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring lacks IORING_FEAT_EXT_ARG (kernel older than 5.11)",
            ));
        }
        let bufs =
            BufRing::new(&ring.submitter(), cfg.recv_buffers, cfg.recv_buffer_size, RECV_GROUP)
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("io_uring buffer ring registration failed: {e}"),
                    )
                })?;
        let waker = Arc::new(super::eventfd()?);
        let mut this = Uring {
            ring,
            ops: Slab::with_capacity(1024),
            next_generation: 0,
            bufs,
            waker,
            send_pool: Vec::new(),
            cqes: Vec::with_capacity(256),
            sockets: SocketTable::default(),
            rearm: Vec::new(),
            immediate: Vec::new(),
            pipes: Vec::new(),
            cachestat: true,
        };
        this.arm_waker();
        Ok(this)
    }

    pub(crate) fn waker_fd(&self) -> Arc<OwnedFd> {
        Arc::clone(&self.waker)
    }

    fn insert(&mut self, token: u64, kind: Kind) -> OpId {
        self.next_generation = self.next_generation.wrapping_add(1);
        let generation = self.next_generation;
        let index = self.ops.insert(Slot { generation, token, kind, cancel_requested: false });
        OpId { index: index as u32, generation }
    }

    /// Queues an SQE, flushing the submission queue to the kernel if it is full.
    fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every pointer an entry carries (send iovecs and headers, a connect's
            // address) points into a box owned by the op's slot, which lives until the op's
            // final completion is reaped; receives use the registered buffer ring; other
            // entries carry no pointers.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            // The queue is full: hand what is queued to the kernel and try again.
            if let Err(e) = self.ring.submit() {
                if e.raw_os_error() != Some(libc::EBUSY) {
                    // Nothing sane remains to do with a ring that rejects submissions.
                    panic!("io_uring submit failed while flushing a full queue: {e}");
                }
                let _ = self.reap_into_buffer();
            }
        }
    }

    fn arm_waker(&mut self) {
        let fd = self.waker.as_raw_fd();
        let id = self.insert(0, Kind::Waker);
        let entry = opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(id.to_user_data());
        self.push(entry);
    }

    pub(crate) fn accept(&mut self, listener: RawFd, token: u64) -> OpId {
        // io_uring wants blocking sockets: it tries non-blocking itself and parks the request
        // on a poll when the socket is not ready.
        let _ = super::set_nonblocking(listener, false);
        let id = self.insert(token, Kind::Accept);
        let entry = opcode::AcceptMulti::new(Fd(listener))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(id.to_user_data());
        self.push(entry);
        id
    }

    /// Arms `fd`'s multishot receive.
    fn arm(&mut self, fd: RawFd) {
        let id = self.insert(0, Kind::RecvMulti { fd });
        self.sockets.entry(fd).armed = Some(id);
        let entry =
            opcode::RecvMulti::new(Fd(fd), self.bufs.group()).build().user_data(id.to_user_data());
        self.push(entry);
    }

    pub(crate) fn recv(&mut self, fd: RawFd, token: u64) -> OpId {
        let id = self.insert(token, Kind::Recv { fd });
        let socket = self.sockets.entry(fd);
        if let Some(held) = socket.held.pop_front() {
            self.immediate.push((id, held));
            return id;
        }
        debug_assert!(socket.waiter.is_none(), "two receives outstanding on one socket");
        socket.waiter = Some(id);
        if socket.armed.is_none() {
            self.arm(fd);
        }
        id
    }

    pub(crate) fn send(&mut self, fd: RawFd, buf: SendBuf, token: u64) -> OpId {
        let mut state = self.send_pool.pop().unwrap_or_else(SendState::new);
        state.buf = buf;
        let chunks = state.buf.head_chunks();
        let n = chunks.len();
        for (iov, chunk) in state.iov.iter_mut().zip(chunks) {
            *iov = libc::iovec { iov_base: chunk.as_ptr() as *mut _, iov_len: chunk.len() };
        }
        state.msg.msg_iov = state.iov.as_mut_ptr();
        state.msg.msg_iovlen = n as _;
        let msg: *const libc::msghdr = &state.msg;
        let single = (n == 1).then(|| (state.iov[0].iov_base as *const u8, state.iov[0].iov_len));
        let id = self.insert(token, Kind::Send(state));
        // One buffer (the common case: a whole response assembled in one piece) goes as a
        // plain send, which skips importing a message header and iovec array.
        let entry = match single {
            Some((ptr, len)) => opcode::Send::new(Fd(fd), ptr, len.min(u32::MAX as usize) as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build(),
            None => opcode::SendMsg::new(Fd(fd), msg).flags(libc::MSG_NOSIGNAL as u32).build(),
        }
        .user_data(id.to_user_data());
        self.push(entry);
        id
    }

    pub(crate) fn connect(&mut self, fd: RawFd, addr: &socket2::SockAddr, token: u64) -> OpId {
        // As with accept: io_uring completes a blocking socket's connect asynchronously,
        // while a non-blocking one could end early with EINPROGRESS.
        let _ = super::set_nonblocking(fd, false);
        let addr = Box::new(addr.clone());
        let (ptr, len) = (addr.as_ptr().cast::<libc::sockaddr>(), addr.len());
        let id = self.insert(token, Kind::Connect(addr));
        let entry = opcode::Connect::new(Fd(fd), ptr, len).build().user_data(id.to_user_data());
        self.push(entry);
        id
    }

    /// Sends up to `len` bytes of `file` from `offset` to `socket` (at most one pipe's worth,
    /// or [`CACHED_SEND_MAX`] when its pages are cached: the completion says how many went).
    /// The caller keeps `file` open until then.
    pub(crate) fn send_file(
        &mut self,
        socket: RawFd,
        file: RawFd,
        offset: u64,
        len: usize,
        token: u64,
    ) -> io::Result<OpId> {
        if self.cachestat {
            let len = len.min(CACHED_SEND_MAX);
            match super::page_cached(file, offset, len) {
                Some(true) => {
                    let id =
                        self.insert(token, Kind::SendCached(Cached { socket, file, offset, len }));
                    self.poll_writable(id, socket);
                    return Ok(id);
                }
                Some(false) => {}
                None => self.cachestat = false,
            }
        }
        let pipe = match self.pipes.pop() {
            Some(p) => p,
            None => super::Pipe::new()?,
        };
        let len = len.min(pipe.capacity) as u32;
        let (pipe_in, pipe_out) = (pipe.write.as_raw_fd(), pipe.read.as_raw_fd());
        let splice = Splice {
            pipe,
            socket,
            in_pipe: 0,
            sent: 0,
            outstanding: 2,
            filling: true,
            failed: None,
        };
        let id = self.insert(token, Kind::SendFile(Box::new(splice)));
        let fill = opcode::Splice::new(Fd(file), offset as i64, Fd(pipe_in), -1, len)
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(id.to_user_data());
        let drain = opcode::Splice::new(Fd(pipe_out), -1, Fd(socket), -1, len)
            .build()
            .user_data(id.to_user_data());
        // A link must not be split across two submissions.
        let room = {
            let sq = self.ring.submission();
            sq.capacity() - sq.len()
        };
        if room < 2 {
            let _ = self.ring.submit();
        }
        self.push(fill);
        self.push(drain);
        Ok(id)
    }

    /// Arms a one-shot poll for room in `socket`, completing as `id`.
    fn poll_writable(&mut self, id: OpId, socket: RawFd) {
        let entry = opcode::PollAdd::new(Fd(socket), libc::POLLOUT as u32)
            .build()
            .user_data(id.to_user_data());
        self.push(entry);
    }

    /// The next step of cached file send `id` after its poll finished with `res`:
    /// `Some(result)` when the send is over (`None`: the poll was re-armed).
    fn cached_step(&mut self, id: OpId, res: i32) -> Option<io::Result<usize>> {
        let slot = &self.ops[id.index as usize];
        let Kind::SendCached(Cached { socket, file, offset, len }) = slot.kind else {
            unreachable!("checked by caller")
        };
        if res < 0 {
            return Some(Err(io::Error::from_raw_os_error(-res)));
        }
        if slot.cancel_requested {
            return Some(Err(crate::op::canceled()));
        }
        match super::sendfile_nonblocking(socket, file, offset, len) {
            // The room the poll saw was taken meanwhile: wait for more.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.poll_writable(id, socket);
                None
            }
            result => Some(result),
        }
    }

    /// The next step of file send `id` after one of its splices finished with `res`:
    /// `Some(result)` when the send is over.
    fn splice_step(&mut self, id: OpId, res: i32) -> Option<io::Result<usize>> {
        let slot = &mut self.ops[id.index as usize];
        let Kind::SendFile(splice) = &mut slot.kind else { unreachable!("checked by caller") };
        let cancelled = slot.cancel_requested;
        splice.outstanding -= 1;
        if std::mem::take(&mut splice.filling) {
            // The fill: `res` bytes wait in the pipe (none: the file ended early).
            match res {
                n if n < 0 => splice.failed = Some(-n),
                n => splice.in_pipe = n as usize,
            }
        } else {
            match res {
                // The link broke (a short fill, or a failed one): nothing was drained.
                n if n == -libc::ECANCELED && splice.outstanding == 0 && !cancelled => {}
                n if n < 0 => {
                    splice.failed.get_or_insert(-n);
                }
                0 if splice.in_pipe > 0 => {
                    splice.failed.get_or_insert(libc::EPIPE);
                }
                n => {
                    splice.in_pipe -= n as usize;
                    splice.sent += n as usize;
                }
            }
        }
        if splice.outstanding > 0 {
            return None;
        }
        if let Some(errno) = splice.failed {
            return Some(match splice.sent {
                0 => Err(io::Error::from_raw_os_error(errno)),
                n => Ok(n),
            });
        }
        if splice.in_pipe == 0 {
            return Some(Ok(splice.sent));
        }
        if cancelled {
            return Some(match splice.sent {
                0 => Err(crate::op::canceled()),
                n => Ok(n),
            });
        }
        splice.outstanding = 1;
        let entry = opcode::Splice::new(
            Fd(splice.pipe.read.as_raw_fd()),
            -1,
            Fd(splice.socket),
            -1,
            splice.in_pipe as u32,
        )
        .build()
        .user_data(id.to_user_data());
        self.push(entry);
        None
    }

    pub(crate) fn close(&mut self, fd: OwnedFd, token: u64) -> OpId {
        if let Some(socket) = self.sockets.remove(fd.as_raw_fd()) {
            if let Some(armed) = socket.armed {
                self.cancel(armed);
            }
            if let Some(waiter) = socket.waiter {
                self.immediate.push((waiter, Held::Error(libc::ECANCELED)));
            }
            let mut recycled = false;
            for held in socket.held.drain_all() {
                if let Held::Data { bid, .. } = held {
                    self.bufs.recycle(bid);
                    recycled = true;
                }
            }
            if recycled {
                self.bufs.publish();
            }
        }
        let id = self.insert(token, Kind::Close);
        let entry = opcode::Close::new(Fd(fd.into_raw_fd())).build().user_data(id.to_user_data());
        self.push(entry);
        id
    }

    pub(crate) fn cancel(&mut self, op: OpId) {
        match self.ops.get_mut(op.index as usize) {
            Some(slot) if slot.generation == op.generation && !slot.cancel_requested => {
                slot.cancel_requested = true;
                if let Kind::Recv { fd } = slot.kind {
                    // A waiter has no kernel request: it finishes now. The socket's multishot
                    // stays armed for the next receive.
                    let socket = self.sockets.entry(fd);
                    if socket.waiter == Some(op) {
                        socket.waiter = None;
                    }
                    // Held data already handed to this waiter, not yet delivered, goes back to
                    // the front of the socket's queue for the next receive: delivered to a
                    // cancelled receive it would be lost (a client's request, silently).
                    if let Some(i) = self.immediate.iter().position(|(id, _)| *id == op) {
                        let (_, held) = self.immediate.remove(i);
                        socket.held.push_front(held);
                    }
                    self.immediate.push((op, Held::Error(libc::ECANCELED)));
                    return;
                }
            }
            _ => return,
        }
        let cancel = self.insert(0, Kind::Cancel);
        let entry =
            opcode::AsyncCancel::new(op.to_user_data()).build().user_data(cancel.to_user_data());
        self.push(entry);
    }

    /// Submits what is queued and waits up to `timeout` (`None`: until something completes)
    /// for completions, then reports them.
    pub(crate) fn wait(
        &mut self,
        timeout: Option<Duration>,
        on: &mut dyn FnMut(Completion<'_>),
    ) -> io::Result<()> {
        let ready = !self.ring.completion().is_empty() || !self.immediate.is_empty();
        let result = match timeout {
            _ if ready => self.ring.submit(),
            Some(t) if t.is_zero() => self.ring.submit(),
            Some(t) => {
                let ts = Timespec::new().sec(t.as_secs()).nsec(t.subsec_nanos());
                self.ring.submitter().submit_with_args(1, &SubmitArgs::new().timespec(&ts))
            }
            None => self.ring.submit_and_wait(1),
        };
        match result {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {
            }
            Err(e) => return Err(e),
        }
        self.reap(on);
        Ok(())
    }

    /// Moves the completion queue's entries into `self.cqes`.
    fn reap_into_buffer(&mut self) -> usize {
        let mut cq = self.ring.completion();
        cq.sync();
        let before = self.cqes.len();
        self.cqes.extend(&mut cq);
        self.cqes.len() - before
    }

    fn reap(&mut self, on: &mut dyn FnMut(Completion<'_>)) {
        self.reap_into_buffer();
        let mut recycled = false;
        for (id, held) in std::mem::take(&mut self.immediate) {
            recycled |= self.deliver(id, held, on);
        }
        let mut cqes = std::mem::take(&mut self.cqes);
        for cqe in cqes.drain(..) {
            recycled |= self.complete(cqe, on);
        }
        self.cqes = cqes;
        if recycled {
            self.bufs.publish();
        }
        for fd in std::mem::take(&mut self.rearm) {
            let wants =
                self.sockets.get(fd).is_some_and(|s| s.armed.is_none() && s.waiter.is_some());
            if wants {
                self.arm(fd);
            }
        }
    }

    /// Completes receive `id` with `held`; returns whether a buffer was recycled.
    fn deliver(&mut self, id: OpId, held: Held, on: &mut dyn FnMut(Completion<'_>)) -> bool {
        let index = id.index as usize;
        let token = match self.ops.get(index) {
            Some(slot) if slot.generation == id.generation => slot.token,
            _ => {
                // The waiter is gone (cannot happen: waiters leave only through here); do not
                // lose the buffer.
                if let Held::Data { bid, .. } = held {
                    self.bufs.recycle(bid);
                    return true;
                }
                return false;
            }
        };
        self.ops.remove(index);
        let outcome = match held {
            Held::Data { bid, len } => Outcome::Received(Ok(self.bufs.filled(bid, len as usize))),
            Held::Eof => Outcome::Received(Ok(&[])),
            Held::Error(errno) => Outcome::Received(Err(io::Error::from_raw_os_error(errno))),
        };
        on(Completion { token, op: id, outcome });
        if let Held::Data { bid, .. } = held {
            self.bufs.recycle(bid);
            return true;
        }
        false
    }

    /// A completion of `fd`'s multishot receive (`id`); returns whether a buffer was recycled.
    fn complete_multishot(
        &mut self,
        id: OpId,
        fd: RawFd,
        res: i32,
        flags: u32,
        on: &mut dyn FnMut(Completion<'_>),
    ) -> bool {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        if !more {
            self.ops.remove(id.index as usize);
        }
        let current = self.sockets.get(fd).is_some_and(|s| s.armed == Some(id));
        if !current {
            // A cancelled multishot of a closed socket (the number may be reused already).
            if let Some(bid) = bid {
                self.bufs.recycle(bid);
                return true;
            }
            return false;
        }
        let socket = self.sockets.get_mut(fd).expect("checked above");
        if !more {
            socket.armed = None;
        }
        let held = match (res, bid) {
            (n, Some(bid)) if n > 0 => Held::Data { bid, len: n as u32 },
            (0, _) => Held::Eof,
            (n, _) if n == -libc::ENOBUFS || n == -libc::ECANCELED => {
                // Out of buffers, or our own back-pressure cancel: nothing to deliver. Re-arm
                // once buffers are back if someone waits.
                if socket.waiter.is_some() {
                    self.rearm.push(fd);
                }
                return false;
            }
            (n, _) if n < 0 => Held::Error(-n),
            (_, None) => return false,
            (_, Some(_)) => unreachable!("positive results are handled above"),
        };
        match socket.waiter.take() {
            Some(waiter) => self.deliver(waiter, held, on),
            None => {
                socket.held.push_back(held);
                if socket.held.len() >= MAX_HELD {
                    if let Some(armed) = socket.armed {
                        self.cancel(armed);
                    }
                }
                false
            }
        }
    }

    /// Handles one completion; returns whether a receive buffer was recycled.
    fn complete(&mut self, cqe: cqueue::Entry, on: &mut dyn FnMut(Completion<'_>)) -> bool {
        let id = OpId::from_user_data(cqe.user_data());
        let index = id.index as usize;
        match self.ops.get(index) {
            Some(slot) if slot.generation == id.generation => {}
            _ => return false, // stale: the slot was already finished
        }
        let res = cqe.result();
        let flags = cqe.flags();
        let result = if res < 0 { Err(io::Error::from_raw_os_error(-res)) } else { Ok(res) };
        let more = cqueue::more(flags);
        let slot = &self.ops[index];
        let token = slot.token;
        match slot.kind {
            Kind::Accept => {
                if !more {
                    self.ops.remove(index);
                }
                // SAFETY: a successful accept returns a new descriptor that we now own.
                let result = result.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
                on(Completion { token, op: id, outcome: Outcome::Accepted { result, more } });
                false
            }
            Kind::Recv { .. } => false, // waiters have no kernel request
            Kind::RecvMulti { fd } => self.complete_multishot(id, fd, res, flags, on),
            Kind::Send(_) => {
                let Kind::Send(mut state) = self.ops.remove(index).kind else { unreachable!() };
                let buf = std::mem::take(&mut state.buf);
                self.send_pool.push(state);
                let result = result.map(|n| n as usize);
                on(Completion { token, op: id, outcome: Outcome::Sent { result, buf } });
                false
            }
            Kind::Connect(_) => {
                self.ops.remove(index);
                on(Completion { token, op: id, outcome: Outcome::Connected(result.map(drop)) });
                false
            }
            Kind::SendFile(_) => {
                let Some(result) = self.splice_step(id, res) else { return false };
                let Kind::SendFile(splice) = self.ops.remove(index).kind else { unreachable!() };
                // A pipe that still holds bytes (an error part-way) is closed, not reused.
                if splice.in_pipe == 0 && self.pipes.len() < MAX_IDLE_PIPES {
                    self.pipes.push(splice.pipe);
                }
                on(Completion { token, op: id, outcome: Outcome::FileSent(result) });
                false
            }
            Kind::SendCached(_) => {
                let Some(result) = self.cached_step(id, res) else { return false };
                self.ops.remove(index);
                on(Completion { token, op: id, outcome: Outcome::FileSent(result) });
                false
            }
            Kind::Close => {
                self.ops.remove(index);
                on(Completion { token, op: id, outcome: Outcome::Closed(result.map(drop)) });
                false
            }
            Kind::Cancel => {
                self.ops.remove(index);
                false
            }
            Kind::Waker => {
                super::eventfd_drain(self.waker.as_raw_fd());
                if !more {
                    self.ops.remove(index);
                    self.arm_waker();
                }
                false
            }
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        // The waker's poll is always armed and is not the caller's.
        // The waker's poll and the sockets' multishot receives are the driver's own.
        self.ops
            .iter()
            .filter(|(_, s)| !matches!(s.kind, Kind::Waker | Kind::Cancel | Kind::RecvMulti { .. }))
            .count()
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // Cancel everything, then wait (bounded) for the kernel to give every slot back, so
        // no memory it may still touch is freed.
        let live: Vec<OpId> = self
            .ops
            .iter()
            .filter(|(_, s)| !matches!(s.kind, Kind::Cancel))
            .map(|(i, s)| OpId { index: i as u32, generation: s.generation })
            .collect();
        for op in live {
            self.cancel(op);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !self.ops.is_empty() && std::time::Instant::now() < deadline {
            let mut ignore = |_: Completion<'_>| {};
            if self.wait(Some(Duration::from_millis(50)), &mut ignore).is_err() {
                break;
            }
            // The waker re-arms itself on cancellation; stop it from doing so forever.
            let only_waker = self.ops.iter().all(|(_, s)| matches!(s.kind, Kind::Waker));
            if only_waker {
                break;
            }
        }
        self.bufs.unregister(&self.ring.submitter());
        // Sends the kernel never gave back keep their memory: leak rather than free it.
        for (_, slot) in std::mem::take(&mut self.ops) {
            match slot.kind {
                Kind::Send(state) => std::mem::forget(state),
                Kind::Connect(addr) => std::mem::forget(addr),
                _ => {}
            }
        }
    }
}
