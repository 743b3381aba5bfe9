//! The per-core driver: one I/O completion port per reactor thread.
//!
//! Every socket operation gets a slot in `ops` and a heap-allocated [`OpOverlapped`] whose
//! first field is the `OVERLAPPED` Windows writes to; the port hands that pointer back on
//! completion, and the index and generation stored next to it find the slot. The
//! `OpOverlapped` (and, for sends, the `SendBuf` whose bytes Windows reads) belongs to the
//! slot and is released only when the completion has been dequeued: cancellation and
//! `closesocket` make Windows complete the operation early, never forget it.
//!
//! Completions are always taken from the port, also when an operation succeeds at once
//! (`SetFileCompletionNotificationModes` could skip that, at the price of two completion
//! paths per operation; one path is simpler to get right).
//!
//! Receives follow libuv: a zero-byte overlapped `WSARecv` waits for data without holding a
//! buffer, then a non-blocking `recv` copies what arrived into one scratch buffer that is lent
//! to the callback. An idle connection therefore holds no receive memory, as with io_uring's
//! provided buffers, and a cancelled receive never loses data (the zero-byte read took none).
//!
//! Two more completion keys carry no `OVERLAPPED`: [`KEY_WAKE`] from [`Shared::wake`] and
//! [`KEY_INBOX`] when the accept thread has handed this core new connections.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::windows::io::{AsRawSocket, IntoRawSocket, OwnedSocket, RawHandle, RawSocket};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use slab::Slab;
use windows_sys::Win32::Foundation::{
    RtlNtStatusToDosError, ERROR_INVALID_PARAMETER, FALSE, HANDLE, INVALID_HANDLE_VALUE,
    STATUS_CANCELLED, WAIT_TIMEOUT,
};
use windows_sys::Win32::Networking::WinSock::{
    closesocket, WSAGetOverlappedResult, WSARecv, WSASend, SOCKET, SOCKET_ERROR, SOL_SOCKET,
    SO_UPDATE_CONNECT_CONTEXT, WSABUF, WSA_IO_PENDING,
};
use windows_sys::Win32::System::Threading::INFINITE;
use windows_sys::Win32::System::IO::{
    CancelIoEx, CreateIoCompletionPort, GetQueuedCompletionStatusEx, PostQueuedCompletionStatus,
    OVERLAPPED, OVERLAPPED_ENTRY,
};

use super::{last_wsa_error, Handle};
use crate::op::{canceled, Completion, OpId, Outcome, SendBuf};
use crate::DriverConfig;

/// Completion key of sockets (their completions carry an [`OpOverlapped`]).
const KEY_SOCKET: usize = 0;
/// Completion key of [`Shared::wake`].
const KEY_WAKE: usize = 1;
/// Completion key of [`Shared::hand_off`].
const KEY_INBOX: usize = 2;
/// Completions dequeued per `GetQueuedCompletionStatusEx`.
const BATCH: usize = 256;
/// Most bytes one send offers Windows. An overlapped `WSASend` locks the pages it sends
/// until the peer has taken them, so an unbounded send would pin a whole large response per
/// slow client; partial completions are part of the API, so the caller sends the rest next.
pub(crate) const MAX_SEND_BYTES: usize = 256 * 1024;
/// Most bytes one `TransmitFile` is asked for: large enough that its fixed cost vanishes,
/// small enough that the response data rate is checked as the file goes.
const MAX_TRANSMIT_BYTES: usize = 1024 * 1024;
/// `OpOverlapped`s kept for reuse, so a warm driver allocates nothing per operation.
const POOL: usize = 1024;
/// How long dropping a driver waits for Windows to give back cancelled operations.
const DROP_WAIT: Duration = Duration::from_secs(2);

/// The `OVERLAPPED` of one operation and the slot it belongs to. `repr(C)` with `raw` first:
/// the pointer the port hands back is a pointer to the whole struct.
#[repr(C)]
struct OpOverlapped {
    raw: OVERLAPPED,
    index: u32,
    generation: u32,
}

/// What a slot waits for.
enum Kind {
    /// A subscription to the accept thread (no `OVERLAPPED` here: see `acceptor.rs`).
    Accept { listener: RawSocket },
    /// A zero-byte read in flight.
    Recv { socket: RawSocket, ov: NonNull<OpOverlapped> },
    /// A send in flight; Windows reads `buf`'s bytes until it completes.
    Send { socket: RawSocket, ov: NonNull<OpOverlapped>, buf: SendBuf },
    /// A `ConnectEx` in flight; the address stays put until it completes.
    Connect { socket: RawSocket, ov: NonNull<OpOverlapped>, addr: Box<socket2::SockAddr> },
    /// A `TransmitFile` in flight (the caller keeps the file open until it completes).
    SendFile { socket: RawSocket, ov: NonNull<OpOverlapped> },
}

struct Slot {
    generation: u32,
    token: u64,
    kind: Kind,
    cancel_requested: bool,
}

/// The operations outstanding on one socket this port knows, so `close` can mark them.
#[derive(Default)]
struct SocketOps {
    reader: Option<usize>,
    writer: Option<usize>,
}

/// Completions known without asking Windows (failures at submission, closes, accepts handed
/// over by the accept thread), reported on the next `wait`.
enum Ready {
    Received { token: u64, op: OpId, error: io::Error },
    Sent { token: u64, op: OpId, error: io::Error, buf: SendBuf },
    Closed { token: u64, op: OpId, result: io::Result<()> },
    Connected { token: u64, op: OpId, error: io::Error },
    FileSent { token: u64, op: OpId, error: io::Error },
    Accepted { token: u64, op: OpId, result: io::Result<OwnedSocket>, more: bool },
}

/// A connection (or the end of accepting) handed to a driver by the accept thread.
pub(crate) struct Handoff {
    /// The driver's accept operation this is for.
    pub(crate) op: OpId,
    pub(crate) result: io::Result<OwnedSocket>,
    pub(crate) more: bool,
}

/// The part of a driver other threads reach: the port (to wake it) and the accept inbox.
pub(crate) struct Shared {
    port: Handle,
    wake_posted: AtomicBool,
    inbox: Mutex<Vec<Handoff>>,
    inbox_posted: AtomicBool,
}

impl Shared {
    /// Posts one wake-up; wakes already posted and not yet dequeued are not repeated, so a
    /// storm of wakes cannot fill the port.
    pub(crate) fn wake(&self) {
        if !self.wake_posted.swap(true, Ordering::AcqRel) {
            self.post(KEY_WAKE);
        }
    }

    /// Queues an accepted connection for this driver and tells its port.
    pub(crate) fn hand_off(&self, handoff: Handoff) {
        self.lock_inbox().push(handoff);
        if !self.inbox_posted.swap(true, Ordering::AcqRel) {
            self.post(KEY_INBOX);
        }
    }

    fn lock_inbox(&self) -> MutexGuard<'_, Vec<Handoff>> {
        // A panic while holding the lock cannot leave a Vec half-pushed; keep going.
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn post(&self, key: usize) {
        // SAFETY: the port is open while `self` lives; a null OVERLAPPED is allowed.
        unsafe { PostQueuedCompletionStatus(self.port.0, 0, key, ptr::null()) };
    }
}

pub(crate) struct Iocp {
    shared: Arc<Shared>,
    ops: Slab<Slot>,
    next_generation: u32,
    sockets: HashMap<RawSocket, SocketOps>,
    ready: VecDeque<Ready>,
    scratch: Box<[u8]>,
    entries: Vec<OVERLAPPED_ENTRY>,
    /// Boxed because Windows holds pointers to them while in use: their address must
    /// stay put, whatever the Vec does.
    #[allow(clippy::vec_box)]
    pool: Vec<Box<OpOverlapped>>,
    inbox_batch: Vec<Handoff>,
}

impl Iocp {
    pub(crate) fn new(cfg: &DriverConfig) -> io::Result<Iocp> {
        super::wsa_init();
        // SAFETY: creates a new port (no file handle); one thread, this one, dequeues.
        let port = unsafe { CreateIoCompletionPort(INVALID_HANDLE_VALUE, ptr::null_mut(), 0, 1) };
        if port.is_null() {
            return Err(io::Error::last_os_error());
        }
        let shared = Arc::new(Shared {
            port: Handle(port),
            wake_posted: AtomicBool::new(false),
            inbox: Mutex::new(Vec::new()),
            inbox_posted: AtomicBool::new(false),
        });
        Ok(Iocp {
            shared,
            ops: Slab::with_capacity(1024),
            next_generation: 0,
            sockets: HashMap::new(),
            ready: VecDeque::new(),
            scratch: vec![0; cfg.recv_buffer_size.max(4096)].into_boxed_slice(),
            // SAFETY: OVERLAPPED_ENTRY is plain data; all-zero is valid.
            entries: vec![unsafe { std::mem::zeroed() }; BATCH],
            pool: Vec::new(),
            inbox_batch: Vec::new(),
        })
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    fn next_id(&mut self) -> u32 {
        self.next_generation = self.next_generation.wrapping_add(1);
        self.next_generation
    }

    fn insert(&mut self, token: u64, kind: Kind) -> OpId {
        let generation = self.next_id();
        let index = self.ops.insert(Slot { generation, token, kind, cancel_requested: false });
        OpId { index: index as u32, generation }
    }

    /// An id for a completion that has no slot (closes): the index no slot ever has, so
    /// cancelling it does nothing.
    fn slotless_id(&mut self) -> OpId {
        OpId { index: u32::MAX, generation: self.next_id() }
    }

    fn slot(&self, op: OpId) -> Option<&Slot> {
        self.ops.get(op.index as usize).filter(|s| s.generation == op.generation)
    }

    /// A fresh `OVERLAPPED` for `op`, owned by Windows (and the op's slot) from here on.
    fn new_overlapped(&mut self, op: OpId) -> NonNull<OpOverlapped> {
        // SAFETY: OVERLAPPED is plain data; all-zero is how every overlapped call wants it.
        let raw: OVERLAPPED = unsafe { std::mem::zeroed() };
        let ov = match self.pool.pop() {
            Some(mut b) => {
                *b = OpOverlapped { raw, index: op.index, generation: op.generation };
                b
            }
            None => Box::new(OpOverlapped { raw, index: op.index, generation: op.generation }),
        };
        NonNull::from(Box::leak(ov))
    }

    /// Takes back an `OVERLAPPED` whose completion has been dequeued (or whose call failed
    /// before Windows took it).
    ///
    /// # Safety
    /// `ov` came from `new_overlapped` and Windows no longer refers to it.
    unsafe fn free_overlapped(&mut self, ov: NonNull<OpOverlapped>) {
        // SAFETY: per the contract, the box is ours again and freed (or pooled) once.
        let b = unsafe { Box::from_raw(ov.as_ptr()) };
        if self.pool.len() < POOL {
            self.pool.push(b);
        }
    }

    /// Associates `socket` with this port and makes it non-blocking, once. The accept path
    /// resets this record for a new socket, so a reused handle value starts afresh.
    fn adopt(&mut self, socket: RawSocket) -> io::Result<()> {
        if self.sockets.contains_key(&socket) {
            return Ok(());
        }
        // SAFETY: associates a socket handle with our port; no memory is passed.
        let port =
            unsafe { CreateIoCompletionPort(socket as HANDLE, self.shared.port.0, KEY_SOCKET, 0) };
        if port.is_null() {
            let e = io::Error::last_os_error();
            // Already associated: a socket this port adopted before (the only port a
            // connection reaches is the one its accept handed it to).
            if e.raw_os_error() != Some(ERROR_INVALID_PARAMETER as i32) {
                return Err(e);
            }
        }
        super::set_nonblocking(socket)?;
        self.sockets.insert(socket, SocketOps::default());
        Ok(())
    }

    pub(crate) fn accept(&mut self, listener: RawSocket, token: u64) -> OpId {
        let op = self.insert(token, Kind::Accept { listener });
        if let Err(e) = super::acceptor::subscribe(listener, Arc::clone(&self.shared), op) {
            self.ops.remove(op.index as usize);
            self.ready.push_back(Ready::Accepted { token, op, result: Err(e), more: false });
        }
        op
    }

    pub(crate) fn recv(&mut self, socket: RawSocket, token: u64) -> OpId {
        let op = self.insert(token, Kind::Recv { socket, ov: NonNull::dangling() });
        let posted = self.adopt(socket).and_then(|()| self.post_zero_read(socket, op));
        match posted {
            Ok(ov) => {
                self.ops[op.index as usize].kind = Kind::Recv { socket, ov };
                if let Some(s) = self.sockets.get_mut(&socket) {
                    s.reader = Some(op.index as usize);
                }
            }
            Err(error) => {
                self.ops.remove(op.index as usize);
                self.ready.push_back(Ready::Received { token, op, error });
            }
        }
        op
    }

    /// Posts a zero-byte overlapped read: it completes when data or EOF arrives.
    fn post_zero_read(&mut self, socket: RawSocket, op: OpId) -> io::Result<NonNull<OpOverlapped>> {
        let ov = self.new_overlapped(op);
        let buf = WSABUF { len: 0, buf: NonNull::<u8>::dangling().as_ptr() };
        let mut flags = 0u32;
        // SAFETY: `ov` is a live OVERLAPPED owned by the op until its completion is dequeued;
        // the WSABUF array is captured by the call (Winsock's documented contract) and
        // describes no memory. No byte count pointer: the count comes with the completion.
        let ret = unsafe {
            WSARecv(
                socket as SOCKET,
                &buf,
                1,
                ptr::null_mut(),
                &mut flags,
                ov.as_ptr().cast(),
                None,
            )
        };
        self.submitted(ret, ov)
    }

    /// Interprets an overlapped call's return: success and `WSA_IO_PENDING` both mean a
    /// completion will be queued; anything else means none will.
    fn submitted(
        &mut self,
        ret: i32,
        ov: NonNull<OpOverlapped>,
    ) -> io::Result<NonNull<OpOverlapped>> {
        if ret == SOCKET_ERROR {
            let e = last_wsa_error();
            if e.raw_os_error() != Some(WSA_IO_PENDING) {
                // SAFETY: the call failed, so Windows queued nothing and keeps no pointer.
                unsafe { self.free_overlapped(ov) };
                return Err(e);
            }
        }
        Ok(ov)
    }

    pub(crate) fn send(&mut self, socket: RawSocket, buf: SendBuf, token: u64) -> OpId {
        let op = self.insert(token, Kind::Recv { socket, ov: NonNull::dangling() });
        let posted = self.adopt(socket).and_then(|()| self.post_send(socket, &buf, op));
        match posted {
            Ok(ov) => {
                self.ops[op.index as usize].kind = Kind::Send { socket, ov, buf };
                if let Some(s) = self.sockets.get_mut(&socket) {
                    s.writer = Some(op.index as usize);
                }
            }
            Err(error) => {
                self.ops.remove(op.index as usize);
                self.ready.push_back(Ready::Sent { token, op, error, buf });
            }
        }
        op
    }

    /// Posts one vectored send of `buf`'s first chunks (at most [`MAX_SEND_BYTES`]). The
    /// caller stores `buf` in the op's slot right after, where it stays until completion;
    /// moving it does not move the bytes, which live in `Bytes` heap storage.
    fn post_send(
        &mut self,
        socket: RawSocket,
        buf: &SendBuf,
        op: OpId,
    ) -> io::Result<NonNull<OpOverlapped>> {
        let mut wsabufs = [WSABUF { len: 0, buf: ptr::null_mut() }; crate::MAX_SEND_CHUNKS];
        let mut count = 0;
        let mut budget = MAX_SEND_BYTES;
        for chunk in buf.head_chunks() {
            if budget == 0 {
                break;
            }
            let len = chunk.len().min(budget);
            wsabufs[count] = WSABUF { len: len as u32, buf: chunk.as_ptr().cast_mut() };
            budget -= len;
            count += 1;
        }
        let ov = self.new_overlapped(op);
        // SAFETY: the WSABUFs point into `Bytes` storage that the op's slot keeps alive
        // until the completion is dequeued (Windows only reads it); the array itself is
        // captured by the call. `ov` is owned by the op until its completion is dequeued.
        let ret = unsafe {
            WSASend(
                socket as SOCKET,
                wsabufs.as_ptr(),
                count as u32,
                ptr::null_mut(),
                0,
                ov.as_ptr().cast(),
                None,
            )
        };
        self.submitted(ret, ov)
    }

    pub(crate) fn connect(
        &mut self,
        socket: RawSocket,
        addr: &socket2::SockAddr,
        token: u64,
    ) -> OpId {
        let op = self.insert(token, Kind::Recv { socket, ov: NonNull::dangling() });
        let addr = Box::new(addr.clone());
        // A fresh socket: a handle value reused from a socket closed outside the driver (a
        // failed connect's) must not look adopted, or it would never reach this port.
        self.sockets.remove(&socket);
        let posted = self
            .adopt(socket)
            .and_then(|()| super::bind_unspecified(socket, &addr))
            .and_then(|()| self.post_connect(socket, &addr, op));
        match posted {
            Ok(ov) => {
                self.ops[op.index as usize].kind = Kind::Connect { socket, ov, addr };
                if let Some(s) = self.sockets.get_mut(&socket) {
                    s.writer = Some(op.index as usize);
                }
            }
            Err(error) => {
                self.ops.remove(op.index as usize);
                self.ready.push_back(Ready::Connected { token, op, error });
            }
        }
        op
    }

    /// Posts one `ConnectEx` to `addr`, which the caller keeps in the op's slot until the
    /// completion is dequeued.
    fn post_connect(
        &mut self,
        socket: RawSocket,
        addr: &socket2::SockAddr,
        op: OpId,
    ) -> io::Result<NonNull<OpOverlapped>> {
        let connect_ex = super::connect_ex(socket)?;
        let ov = self.new_overlapped(op);
        // SAFETY: `connect_ex` is the provider's ConnectEx for this socket; the address
        // pointer and length describe `addr`'s storage, kept alive by the op's slot until the
        // completion is dequeued; no data is sent with the connect; `ov` is owned by the op
        // until its completion is dequeued.
        let ok = unsafe {
            connect_ex(
                socket as SOCKET,
                addr.as_ptr().cast(),
                addr.len(),
                ptr::null(),
                0,
                ptr::null_mut(),
                ov.as_ptr().cast(),
            )
        };
        self.submitted(if ok == FALSE { SOCKET_ERROR } else { 0 }, ov)
    }

    /// Posts a `TransmitFile` of up to [`MAX_TRANSMIT_BYTES`] of `file` from `offset`: the
    /// kernel reads the file and sends it, nothing passes through user space.
    pub(crate) fn send_file(
        &mut self,
        socket: RawSocket,
        file: RawHandle,
        offset: u64,
        len: usize,
        token: u64,
    ) -> OpId {
        let op = self.insert(token, Kind::Recv { socket, ov: NonNull::dangling() });
        let posted =
            self.adopt(socket).and_then(|()| self.post_transmit(socket, file, offset, len, op));
        match posted {
            Ok(ov) => {
                self.ops[op.index as usize].kind = Kind::SendFile { socket, ov };
                if let Some(s) = self.sockets.get_mut(&socket) {
                    s.writer = Some(op.index as usize);
                }
            }
            Err(error) => {
                self.ops.remove(op.index as usize);
                self.ready.push_back(Ready::FileSent { token, op, error });
            }
        }
        op
    }

    fn post_transmit(
        &mut self,
        socket: RawSocket,
        file: RawHandle,
        offset: u64,
        len: usize,
        op: OpId,
    ) -> io::Result<NonNull<OpOverlapped>> {
        let transmit = super::transmit_file(socket)?;
        let ov = self.new_overlapped(op);
        // SAFETY: `ov` is ours until it is submitted; the file position of an overlapped
        // TransmitFile is the OVERLAPPED's offset.
        unsafe {
            let position = &mut (*ov.as_ptr()).raw.Anonymous.Anonymous;
            position.Offset = offset as u32;
            position.OffsetHigh = (offset >> 32) as u32;
        }
        let n = len.min(MAX_TRANSMIT_BYTES) as u32;
        // SAFETY: `transmit` is the provider's TransmitFile for this socket; the file handle
        // stays open until the completion (the caller's contract); no head or tail buffers;
        // `ov` is owned by the op until its completion is dequeued.
        let ok = unsafe {
            transmit(socket as SOCKET, file as HANDLE, n, 0, ov.as_ptr().cast(), ptr::null(), 0)
        };
        self.submitted(if ok == FALSE { SOCKET_ERROR } else { 0 }, ov)
    }

    /// Forgets `index` as `socket`'s outstanding send.
    fn release_writer(&mut self, socket: RawSocket, index: usize) {
        if let Some(s) = self.sockets.get_mut(&socket) {
            if s.writer == Some(index) {
                s.writer = None;
            }
        }
    }

    pub(crate) fn close(&mut self, socket: OwnedSocket, token: u64) -> OpId {
        // closesocket aborts the socket's outstanding operations; they complete (as
        // cancelled) on a later turn, and their memory is released then.
        if let Some(ops) = self.sockets.remove(&socket.as_raw_socket()) {
            for index in [ops.reader, ops.writer].into_iter().flatten() {
                if let Some(slot) = self.ops.get_mut(index) {
                    slot.cancel_requested = true;
                }
            }
        }
        let raw = socket.into_raw_socket();
        // SAFETY: `raw` came from an OwnedSocket we consumed, so it is closed exactly once.
        let result = if unsafe { closesocket(raw as SOCKET) } == SOCKET_ERROR {
            Err(last_wsa_error())
        } else {
            Ok(())
        };
        let op = self.slotless_id();
        self.ready.push_back(Ready::Closed { token, op, result });
        op
    }

    pub(crate) fn cancel(&mut self, op: OpId) {
        let Some(slot) = self.slot(op) else { return };
        match slot.kind {
            Kind::Accept { listener } => {
                if slot.cancel_requested {
                    return;
                }
                self.ops[op.index as usize].cancel_requested = true;
                // The accept thread hands over the end (after any connection an `AcceptEx`
                // had already taken); the slot goes when it arrives (`drain_inbox`).
                super::acceptor::unsubscribe(listener, &self.shared, op);
            }
            Kind::Recv { socket, ov }
            | Kind::Send { socket, ov, .. }
            | Kind::Connect { socket, ov, .. }
            | Kind::SendFile { socket, ov } => {
                if slot.cancel_requested {
                    return;
                }
                self.ops[op.index as usize].cancel_requested = true;
                // SAFETY: `ov` is this op's live OVERLAPPED. If the operation already
                // finished, Windows answers ERROR_NOT_FOUND and its completion is queued.
                unsafe { CancelIoEx(socket as HANDLE, ov.as_ptr().cast()) };
            }
        }
    }

    pub(crate) fn wait(
        &mut self,
        timeout: Option<Duration>,
        on: &mut dyn FnMut(Completion<'_>),
    ) -> io::Result<()> {
        let ms = if !self.ready.is_empty() {
            0
        } else {
            match timeout {
                None => INFINITE,
                // Rounded up: a deadline 0.4 ms away must not become a busy loop of
                // zero-timeout waits.
                Some(d) => d.as_nanos().div_ceil(1_000_000).min(u128::from(INFINITE - 1)) as u32,
            }
        };
        let mut removed = 0u32;
        // SAFETY: `entries` has room for BATCH entries, which Windows fills in.
        let ok = unsafe {
            GetQueuedCompletionStatusEx(
                self.shared.port.0,
                self.entries.as_mut_ptr(),
                BATCH as u32,
                &mut removed,
                ms,
                FALSE,
            )
        };
        if ok == FALSE {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(WAIT_TIMEOUT as i32) {
                return Err(e);
            }
            removed = 0;
        }
        for i in 0..removed as usize {
            let entry = self.entries[i];
            self.complete(entry, on);
        }
        for _ in 0..self.ready.len() {
            let Some(ready) = self.ready.pop_front() else { break };
            let completion = match ready {
                Ready::Received { token, op, error } => {
                    Completion { token, op, outcome: Outcome::Received(Err(error)) }
                }
                Ready::Sent { token, op, error, buf } => {
                    Completion { token, op, outcome: Outcome::Sent { result: Err(error), buf } }
                }
                Ready::Closed { token, op, result } => {
                    Completion { token, op, outcome: Outcome::Closed(result) }
                }
                Ready::Connected { token, op, error } => {
                    Completion { token, op, outcome: Outcome::Connected(Err(error)) }
                }
                Ready::FileSent { token, op, error } => {
                    Completion { token, op, outcome: Outcome::FileSent(Err(error)) }
                }
                Ready::Accepted { token, op, result, more } => {
                    Completion { token, op, outcome: Outcome::Accepted { result, more } }
                }
            };
            on(completion);
        }
        Ok(())
    }

    fn complete(&mut self, entry: OVERLAPPED_ENTRY, on: &mut dyn FnMut(Completion<'_>)) {
        match entry.lpCompletionKey {
            KEY_WAKE => return self.shared.wake_posted.store(false, Ordering::Release),
            KEY_INBOX => return self.drain_inbox(),
            _ => {}
        }
        let Some(ov) = NonNull::new(entry.lpOverlapped.cast::<OpOverlapped>()) else { return };
        // SAFETY: every OVERLAPPED queued under KEY_SOCKET is the first field of an
        // OpOverlapped from `new_overlapped`; its completion has now been dequeued, so
        // Windows has finished writing it.
        let (index, generation, status) = unsafe {
            let o = ov.as_ptr();
            ((*o).index, (*o).generation, (*o).raw.Internal as i32)
        };
        let index = index as usize;
        let op = OpId { index: index as u32, generation };
        let Some(slot) = self.slot(op) else {
            debug_assert!(false, "a completion for no live operation");
            return;
        };
        let (token, cancel) = (slot.token, slot.cancel_requested);
        match slot.kind {
            Kind::Accept { .. } => unreachable!("accepts complete through the inbox"),
            Kind::Recv { socket, .. } => {
                if status == 0 && !cancel {
                    match super::recv_now(socket, &mut self.scratch) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            // The zero-byte read said "readable" but the data is gone (or
                            // it was spurious): wait again with the same slot.
                            // SAFETY: this completion was dequeued; Windows let go of `ov`.
                            unsafe { self.free_overlapped(ov) };
                            match self.post_zero_read(socket, op) {
                                Ok(ov) => self.ops[index].kind = Kind::Recv { socket, ov },
                                Err(e) => self.finish_recv(index, op, token, Err(e), on),
                            }
                        }
                        result => {
                            // SAFETY: as above.
                            unsafe { self.free_overlapped(ov) };
                            self.finish_recv(index, op, token, result, on);
                        }
                    }
                } else {
                    let error = if cancel { canceled() } else { self.error_of(socket, ov, status) };
                    // SAFETY: as above.
                    unsafe { self.free_overlapped(ov) };
                    self.finish_recv(index, op, token, Err(error), on);
                }
            }
            Kind::Send { socket, .. } => {
                let result = if status == 0 {
                    Ok(entry.dwNumberOfBytesTransferred as usize)
                } else if cancel {
                    Err(canceled())
                } else {
                    Err(self.error_of(socket, ov, status))
                };
                // SAFETY: as above.
                unsafe { self.free_overlapped(ov) };
                let Kind::Send { buf, .. } = self.ops.remove(index).kind else { unreachable!() };
                self.release_writer(socket, index);
                on(Completion { token, op, outcome: Outcome::Sent { result, buf } });
            }
            Kind::SendFile { socket, .. } => {
                let result = if status == 0 {
                    Ok(entry.dwNumberOfBytesTransferred as usize)
                } else if cancel {
                    Err(canceled())
                } else {
                    Err(self.error_of(socket, ov, status))
                };
                // SAFETY: as above.
                unsafe { self.free_overlapped(ov) };
                self.ops.remove(index);
                self.release_writer(socket, index);
                on(Completion { token, op, outcome: Outcome::FileSent(result) });
            }
            Kind::Connect { socket, .. } => {
                let result = if status == 0 && !cancel {
                    // Makes the socket a full connected socket (getpeername, shutdown).
                    super::set_option(socket, SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, ())
                } else if cancel {
                    Err(canceled())
                } else {
                    Err(self.error_of(socket, ov, status))
                };
                // SAFETY: as above.
                unsafe { self.free_overlapped(ov) };
                self.ops.remove(index);
                self.release_writer(socket, index);
                on(Completion { token, op, outcome: Outcome::Connected(result) });
            }
        }
    }

    fn finish_recv(
        &mut self,
        index: usize,
        op: OpId,
        token: u64,
        result: io::Result<usize>,
        on: &mut dyn FnMut(Completion<'_>),
    ) {
        let Kind::Recv { socket, .. } = self.ops.remove(index).kind else { unreachable!() };
        if let Some(s) = self.sockets.get_mut(&socket) {
            if s.reader == Some(index) {
                s.reader = None;
            }
        }
        let outcome = Outcome::Received(result.map(|n| &self.scratch[..n]));
        on(Completion { token, op, outcome });
    }

    /// The error of a failed operation, as Winsock names it (`WSAECONNRESET` rather than
    /// the NTSTATUS translation `ERROR_NETNAME_DELETED`), falling back to the NTSTATUS.
    fn error_of(&self, socket: RawSocket, ov: NonNull<OpOverlapped>, status: i32) -> io::Error {
        if status == STATUS_CANCELLED {
            return canceled();
        }
        let (mut bytes, mut flags) = (0u32, 0u32);
        // SAFETY: `ov` is a completed OVERLAPPED we still own; no waiting is asked for.
        let ok = unsafe {
            WSAGetOverlappedResult(
                socket as SOCKET,
                ov.as_ptr().cast(),
                &mut bytes,
                FALSE,
                &mut flags,
            )
        };
        if ok == FALSE {
            return last_wsa_error();
        }
        // SAFETY: a pure translation function.
        io::Error::from_raw_os_error(unsafe { RtlNtStatusToDosError(status) } as i32)
    }

    /// Takes the connections the accept thread handed over. An accept being cancelled still
    /// gets the connections handed over before its end (as a cancelled io_uring multishot
    /// accept does); one for an accept already ended is closed.
    fn drain_inbox(&mut self) {
        self.shared.inbox_posted.store(false, Ordering::Release);
        let mut batch = std::mem::take(&mut self.inbox_batch);
        std::mem::swap(&mut *self.shared.lock_inbox(), &mut batch);
        for handoff in batch.drain(..) {
            let Some(slot) = self.slot(handoff.op) else { continue };
            if !matches!(slot.kind, Kind::Accept { .. }) {
                continue;
            }
            let token = slot.token;
            if !handoff.more {
                self.ops.remove(handoff.op.index as usize);
            }
            let result = handoff.result.and_then(|socket| {
                let raw = socket.as_raw_socket();
                self.sockets.remove(&raw); // a reused handle value must not look adopted
                self.adopt(raw).map(|()| socket)
            });
            self.ready.push_back(Ready::Accepted {
                token,
                op: handoff.op,
                result,
                more: handoff.more,
            });
        }
        self.inbox_batch = batch;
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.ops.len() + self.ready.len()
    }
}

impl Drop for Iocp {
    fn drop(&mut self) {
        // Cancel everything, then wait (bounded) for Windows to give every OVERLAPPED back,
        // so no memory it may still write or read is freed.
        let live: Vec<OpId> = self
            .ops
            .iter()
            .map(|(i, s)| OpId { index: i as u32, generation: s.generation })
            .collect();
        for op in live {
            self.cancel(op);
        }
        let deadline = Instant::now() + DROP_WAIT;
        while !self.ops.is_empty() && Instant::now() < deadline {
            if self.wait(Some(Duration::from_millis(50)), &mut |_| {}).is_err() {
                break;
            }
        }
        // Operations Windows never gave back keep their memory: leak rather than free it.
        for (_, slot) in std::mem::take(&mut self.ops) {
            match slot.kind {
                Kind::Send { buf, .. } => std::mem::forget(buf),
                Kind::Connect { addr, .. } => std::mem::forget(addr),
                _ => {}
            }
        }
        // Connections handed over but never taken are closed with the inbox.
        drop(self.shared.lock_inbox().drain(..));
    }
}
