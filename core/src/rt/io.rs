//! Futures over the driver: receive, send, close.
//!
//! Each operation gets a slot in this core's op table, keyed by the token given to the
//! driver. The slot holds the waker and, once the completion arrives, the result. Buffers
//! travel with the operation: a receive lends its `BytesMut` to the slot (received bytes are
//! appended there, straight from the driver's buffer), a send hands its `SendBuf` to the
//! driver and gets it back with the completion.
//!
//! Dropping a future before its completion cancels the operation; the slot stays (marked
//! orphaned) until the completion arrives, so a late result never reaches a reused slot.

use crate::sys::{OwnedSocket, RawSocket};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::sys::driver::{self, Completion, OpId, Outcome, SendBuf};
use bytes::BytesMut;
use slab::Slab;

use super::with_driver;
use crate::percore;

/// Size of a buffer taken from the pool.
pub(crate) const RECV_BUF: usize = 4096;
/// Spare buffers kept per core. Connections give their empty buffers back before waiting
/// idle and take one when data actually arrives, so ten thousand idle connections hold no
/// buffers while a busy core recycles the same few without malloc.
const POOL_MAX: usize = 128;

/// A buffer from this core's pool (or a new one).
pub(crate) fn take_buffer() -> BytesMut {
    percore::with(|p| p.buffers.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(RECV_BUF))
}

/// Returns a buffer to this core's pool (dropped if the pool is full or the size is odd).
pub(crate) fn give_buffer(mut buf: BytesMut) {
    buf.clear();
    if (RECV_BUF / 2..=16 * RECV_BUF).contains(&buf.capacity()) {
        percore::try_with(|p| {
            let mut p = p.buffers.borrow_mut();
            if p.len() < POOL_MAX {
                p.push(buf);
            }
        });
    }
}

/// An empty send list from this core's pool (or a new one). HTTP/1 connections give theirs
/// back before an idle wait, so an idle connection holds no chunk list either.
pub(crate) fn take_send_buf() -> SendBuf {
    percore::with(|p| p.send_lists.borrow_mut().pop()).unwrap_or_default()
}

/// Returns a send list to this core's pool (cleared; dropped if the pool is full).
pub(crate) fn give_send_buf(mut buf: SendBuf) {
    buf.clear();
    percore::try_with(|p| {
        let mut p = p.send_lists.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(buf);
        }
    });
}

/// What a slot is waiting for, or what arrived.
pub(crate) enum SlotState {
    Recv {
        buf: BytesMut,
        result: Option<io::Result<usize>>,
    },
    Send {
        result: Option<(io::Result<usize>, SendBuf)>,
    },
    Close {
        done: bool,
    },
    Connect {
        result: Option<io::Result<()>>,
    },
    /// A file-to-socket send; the slot keeps the file open until the kernel is done with it,
    /// even when the future was dropped.
    SendFile {
        _file: std::sync::Arc<std::fs::File>,
        result: Option<io::Result<usize>>,
    },
}

pub(crate) struct Slot {
    state: SlotState,
    waker: Option<Waker>,
    op: OpId,
    orphaned: bool,
}

/// The op table of one core.
#[derive(Default)]
pub(crate) struct Ops {
    slots: Slab<Slot>,
}

impl Ops {
    /// Files a completion into its slot and wakes the owner.
    pub(crate) fn complete(&mut self, c: Completion<'_>) {
        let index = c.token as usize;
        let Some(slot) = self.slots.get_mut(index) else { return };
        if slot.op != c.op {
            return;
        }
        if slot.orphaned {
            self.slots.remove(index);
            return;
        }
        match (&mut slot.state, c.outcome) {
            (SlotState::Recv { buf, result }, Outcome::Received(r)) => {
                *result = Some(r.map(|data| {
                    if buf.capacity() == 0 && !data.is_empty() {
                        *buf = take_buffer();
                    }
                    // The one copy on the receive path: from the driver's shared buffer into
                    // the connection's own, so the shared one goes straight back to the pool
                    // and the request head can be handed out as zero-copy `Bytes`.
                    buf.extend_from_slice(data);
                    data.len()
                }));
            }
            (SlotState::Send { result }, Outcome::Sent { result: r, buf }) => {
                *result = Some((r, buf));
            }
            (SlotState::Close { done }, Outcome::Closed(_)) => *done = true,
            (SlotState::Connect { result }, Outcome::Connected(r)) => *result = Some(r),
            (SlotState::SendFile { result, .. }, Outcome::FileSent(r)) => *result = Some(r),
            _ => return,
        }
        if let Some(w) = slot.waker.take() {
            w.wake();
        }
    }

    /// Takes every stored waker (teardown).
    pub(crate) fn take_wakers(&mut self) -> Vec<Waker> {
        self.slots.iter_mut().filter_map(|(_, s)| s.waker.take()).collect()
    }
}

/// Registers a new slot and submits its operation.
fn submit(state: SlotState, start: impl FnOnce(&mut driver::Driver, u64) -> OpId) -> usize {
    with_driver(|driver, ops| {
        let entry = ops.slots.vacant_entry();
        let index = entry.key();
        let op = start(driver, index as u64);
        entry.insert(Slot { state, waker: None, op, orphaned: false });
        index
    })
}

/// Polls a slot: `Some(state)` (slot freed) once the result is in.
fn poll_slot(index: usize, cx: &mut Context<'_>) -> Option<SlotState> {
    with_driver(|_, ops| {
        let slot = &mut ops.slots[index];
        let ready = match &slot.state {
            SlotState::Recv { result, .. } => result.is_some(),
            SlotState::Send { result } => result.is_some(),
            SlotState::Close { done } => *done,
            SlotState::Connect { result } => result.is_some(),
            SlotState::SendFile { result, .. } => result.is_some(),
        };
        if ready {
            Some(ops.slots.remove(index).state)
        } else {
            crate::rt::store_waker(&mut slot.waker, cx);
            None
        }
    })
}

/// Cancels a slot whose future was dropped early.
fn orphan(index: usize) {
    super::try_with_driver(|driver, ops| {
        if let Some(slot) = ops.slots.get_mut(index) {
            slot.orphaned = true;
            slot.waker = None;
            driver.cancel(slot.op);
        }
    });
}

/// One receive into `buf` (appended). Resolves to the buffer and the byte count (0: EOF).
pub(crate) struct Recv {
    index: Option<usize>,
}

pub(crate) fn recv(fd: RawSocket, buf: BytesMut) -> Recv {
    let index = submit(SlotState::Recv { buf, result: None }, |d, token| d.recv(fd, token));
    Recv { index: Some(index) }
}

impl Future for Recv {
    type Output = (BytesMut, io::Result<usize>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let index = self.index.expect("Recv polled after completion");
        match poll_slot(index, cx) {
            Some(SlotState::Recv { buf, result: Some(r) }) => {
                self.index = None;
                Poll::Ready((buf, r))
            }
            Some(_) => unreachable!("slot kind changed"),
            None => Poll::Pending,
        }
    }
}

impl Drop for Recv {
    fn drop(&mut self) {
        if let Some(index) = self.index {
            orphan(index);
        }
    }
}

/// One send of `buf` (possibly partial). Resolves to the count written and the buffer back.
pub(crate) struct Send {
    index: Option<usize>,
    /// The result of a send the driver made at once ([`driver::Driver::try_send`]).
    done: Option<(io::Result<usize>, SendBuf)>,
}

/// Sends from `buf` at once, where the driver can without waiting (see
/// [`driver::Driver::try_send`]); `None`: nothing was sent, submit a [`send`].
pub(crate) fn try_send(fd: RawSocket, buf: &SendBuf) -> Option<io::Result<usize>> {
    with_driver(|d, _| d.try_send(fd, buf))
}

pub(crate) fn send(fd: RawSocket, buf: SendBuf) -> Send {
    if let Some(result) = try_send(fd, &buf) {
        return Send { index: None, done: Some((result, buf)) };
    }
    let index = submit(SlotState::Send { result: None }, |d, token| d.send(fd, buf, token));
    Send { index: Some(index), done: None }
}

impl Future for Send {
    type Output = (io::Result<usize>, SendBuf);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(done) = self.done.take() {
            return Poll::Ready(done);
        }
        let index = self.index.expect("Send polled after completion");
        match poll_slot(index, cx) {
            Some(SlotState::Send { result: Some(r) }) => {
                self.index = None;
                Poll::Ready(r)
            }
            Some(_) => unreachable!("slot kind changed"),
            None => Poll::Pending,
        }
    }
}

impl Drop for Send {
    fn drop(&mut self) {
        if let Some(index) = self.index {
            orphan(index);
        }
    }
}

/// Connects a new stream socket to `addr` (TCP, or a Unix socket path), through the driver.
/// Resolves to the connected socket. Dropping the future cancels the connect and closes the
/// socket.
pub(crate) struct Connect {
    index: Option<usize>,
    socket: Option<socket2::Socket>,
}

/// Starts connecting to `addr`; fails at once if no socket could be made.
pub(crate) fn connect(addr: &socket2::SockAddr) -> io::Result<Connect> {
    let socket = socket2::Socket::new(addr.domain(), socket2::Type::STREAM, None)?;
    if addr.is_ipv4() || addr.is_ipv6() {
        // Requests and responses are written whole; Nagle would only delay them.
        socket.set_tcp_nodelay(true)?;
    }
    let raw = crate::sys::raw_of(&socket);
    let index = submit(SlotState::Connect { result: None }, |d, token| d.connect(raw, addr, token));
    Ok(Connect { index: Some(index), socket: Some(socket) })
}

impl Future for Connect {
    type Output = io::Result<OwnedSocket>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let index = self.index.expect("Connect polled after completion");
        match poll_slot(index, cx) {
            Some(SlotState::Connect { result: Some(r) }) => {
                self.index = None;
                let socket = self.socket.take().expect("the socket lives until completion");
                Poll::Ready(r.map(|()| OwnedSocket::from(socket)))
            }
            Some(_) => unreachable!("slot kind changed"),
            None => Poll::Pending,
        }
    }
}

impl Drop for Connect {
    fn drop(&mut self) {
        if let Some(index) = self.index {
            orphan(index);
        }
    }
}

/// Sends up to `len` bytes of `file` from `offset` to the socket `fd` without copying them
/// through user space (see the driver's `send_file`). `None` when this core's driver cannot;
/// the caller then reads the file and sends bytes.
pub(crate) fn send_file(
    fd: RawSocket,
    file: &std::sync::Arc<std::fs::File>,
    offset: u64,
    len: usize,
) -> Option<SendFile> {
    with_driver(|driver, ops| {
        let entry = ops.slots.vacant_entry();
        let index = entry.key();
        let raw = crate::sys::raw_file(file);
        let op = match driver.send_file(fd, raw, offset, len, index as u64)? {
            Ok(op) => op,
            Err(e) => return Some(SendFile { index: None, failed: Some(e) }),
        };
        let state = SlotState::SendFile { _file: std::sync::Arc::clone(file), result: None };
        entry.insert(Slot { state, waker: None, op, orphaned: false });
        Some(SendFile { index: Some(index), failed: None })
    })
}

/// Whether this core's driver sends files without a copy: io_uring; IOCP on server editions
/// of Windows (client editions cap `TransmitFile` at two at a time system-wide).
pub(crate) fn sends_files() -> bool {
    #[cfg(target_os = "linux")]
    return with_driver(|driver, _| driver.kind() == driver::DriverKind::Uring);
    #[cfg(windows)]
    return driver::transmit_file_unthrottled();
}

/// A file-to-socket send ([`send_file`]). Resolves to the bytes that reached the socket.
pub(crate) struct SendFile {
    index: Option<usize>,
    /// Set up failed (no pipe could be made).
    failed: Option<io::Error>,
}

impl Future for SendFile {
    type Output = io::Result<usize>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(e) = self.failed.take() {
            return Poll::Ready(Err(e));
        }
        let index = self.index.expect("SendFile polled after completion");
        match poll_slot(index, cx) {
            Some(SlotState::SendFile { result: Some(r), .. }) => {
                self.index = None;
                Poll::Ready(r)
            }
            Some(_) => unreachable!("slot kind changed"),
            None => Poll::Pending,
        }
    }
}

impl Drop for SendFile {
    fn drop(&mut self) {
        if let Some(index) = self.index {
            orphan(index);
        }
    }
}

/// Closes `fd` through the driver without waiting for it (for a socket dropped with its
/// owner). During teardown, with no driver left, the socket is simply dropped.
pub(crate) fn close_detached(fd: OwnedSocket) {
    let mut fd = Some(fd);
    super::try_with_driver(|driver, ops| {
        let Some(fd) = fd.take() else { return };
        let entry = ops.slots.vacant_entry();
        let op = driver.close(fd, entry.key() as u64);
        // Orphaned from the start: the completion frees the slot and wakes no one.
        entry.insert(Slot {
            state: SlotState::Close { done: false },
            waker: None,
            op,
            orphaned: true,
        });
    });
}

/// Closes `fd` through the driver, waiting for the close to finish.
pub(crate) async fn close(fd: OwnedSocket) {
    let index = submit(SlotState::Close { done: false }, |d, token| d.close(fd, token));
    std::future::poll_fn(|cx| match poll_slot(index, cx) {
        Some(_) => Poll::Ready(()),
        None => Poll::Pending,
    })
    .await
}
