//! The process-wide accept thread: how connections reach each core's completion port.
//!
//! On Linux every reactor owns a listening socket of its own (SO_REUSEPORT) and the kernel
//! spreads connections across them. Windows offers neither half of that: there is no
//! load-balancing SO_REUSEPORT (SO_REUSEADDR there lets one socket *steal* another's port,
//! which is why listeners use SO_EXCLUSIVEADDRUSE instead), and a socket belongs to exactly
//! one completion port, so `AcceptEx` completions on a shared listener all arrive at that one
//! port, whichever core posted them.
//!
//! The options were:
//!
//! 1. one listener per core on distinct ports: not what a user configures;
//! 2. `AcceptEx` posted per core, each core's listener-port association faked with event
//!    handles and `WaitForMultipleObjects` next to the port: a second wait mechanism per
//!    core, and 64 handles at most;
//! 3. one accept thread owning the listener's completion port, handing accepted sockets to
//!    the cores (this module).
//!
//! Option 3 is what IIS-style servers and nginx's single-acceptor Windows build amount to.
//! The accept thread does nothing but keep [`ACCEPTS_POSTED`] `AcceptEx` calls outstanding
//! per listener and hand each accepted socket, round-robin, to one of the drivers that
//! accept on that listener: it pushes the socket into the driver's inbox and posts one
//! completion to the driver's port (`KEY_INBOX`). The core then associates the socket with
//! its own port, and everything after the accept (every receive and send) stays on that
//! core. Accepting is the only cross-thread step, once per connection, as SO_REUSEPORT's
//! hash is on Linux.
//!
//! A listening socket handed over by the process this one upgraded from (`WSADuplicateSocketW`)
//! is still associated with that process's accept port, and a socket belongs to one port
//! for its life: such a listener is accepted from by a thread of its own with blocking
//! `accept` ([`accept_blocking`]), and its connections go to the cores the same way.
//!
//! An accept operation of a driver is a *subscription* here. Its end (cancellation, or an
//! error such as running out of sockets) is reported like a multishot accept ending:
//! `more: false`, after which the caller subscribes again. Cancelling the last subscription
//! ends it as io_uring ends a cancelled multishot accept: an `AcceptEx` that had already
//! taken a client when the cancellation came still delivers that connection, and the end
//! follows once every outstanding `AcceptEx` is back. A server that stops accepting (a
//! graceful shutdown, the old process of an upgrade) serves those clients instead of
//! resetting them. The exception is a listener accepted with blocking `accept` (below): its
//! thread cannot be stopped short of closing the socket, so a connection it accepts after
//! the last subscription ended is closed.
//!
//! Ownership: each `AcceptEx` owns an [`AcceptOp`] (the `OVERLAPPED`, the socket accepted
//! into and the address buffer Windows writes), leaked to Windows when posted and taken back
//! only by this thread when its completion is dequeued. The accept thread and its port live
//! as long as the process; each listener's record stays after its last subscriber leaves
//! (a few dozen bytes), so a listener that is subscribed to again is known to be associated
//! already.

use std::collections::HashMap;
use std::io;
use std::os::windows::io::{AsRawSocket, FromRawSocket, OwnedSocket, RawSocket};
use std::ptr;
use std::sync::{Arc, Mutex, MutexGuard};

use windows_sys::Win32::Foundation::{
    ERROR_INVALID_PARAMETER, FALSE, HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Networking::WinSock::{
    accept, getsockname, AcceptEx, WSASocketW, INVALID_SOCKET, IPPROTO_TCP, SOCKADDR,
    SOCKADDR_STORAGE, SOCKET, SOCK_STREAM, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, WSAECONNRESET,
    WSA_FLAG_NO_HANDLE_INHERIT, WSA_FLAG_OVERLAPPED, WSA_IO_PENDING,
};
use windows_sys::Win32::System::Threading::INFINITE;
use windows_sys::Win32::System::IO::{
    CancelIoEx, CreateIoCompletionPort, GetQueuedCompletionStatusEx, OVERLAPPED, OVERLAPPED_ENTRY,
};

use super::iocp::{Handoff, Shared};
use super::{last_wsa_error, set_option, Handle};
use crate::op::{canceled, OpId};

/// `AcceptEx` calls kept outstanding per listener: connections arriving in a burst are taken
/// without waiting for this thread to re-post (the listen backlog holds the rest).
const ACCEPTS_POSTED: usize = 16;
/// Room for one address in `AcceptEx`'s output buffer: the largest sockaddr plus the 16
/// bytes Windows requires on top.
const ADDR_LEN: usize = std::mem::size_of::<SOCKADDR_STORAGE>() + 16;

/// One outstanding `AcceptEx`. `repr(C)` with `raw` first: the port hands back a pointer
/// to the whole struct.
#[repr(C)]
struct AcceptOp {
    raw: OVERLAPPED,
    listener: RawSocket,
    /// Which record of `listener` posted it (a handle value can be reused by a new socket).
    record: u64,
    /// The socket the connection is accepted into.
    socket: Option<OwnedSocket>,
    /// Local and remote address, written by Windows (unused: the server asks when it needs).
    addrs: [u8; 2 * ADDR_LEN],
}

/// A driver's accept operation.
struct Subscriber {
    shared: Arc<Shared>,
    op: OpId,
}

impl Subscriber {
    fn deliver(&self, socket: OwnedSocket) {
        self.shared.hand_off(Handoff { op: self.op, result: Ok(socket), more: true });
    }

    /// Reports the subscription's end (`more: false`) with `error`.
    fn end(self, error: io::Error) {
        self.shared.hand_off(Handoff { op: self.op, result: Err(error), more: false });
    }
}

/// A listener this thread accepts on.
struct Listener {
    record: u64,
    family: i32,
    subscribers: Vec<Subscriber>,
    next: usize,
    posted: usize,
    /// The last subscriber, cancelled while `AcceptEx` calls were outstanding: it gets the
    /// connections they still bring, and its end when the last of them is back.
    leaving: Option<Subscriber>,
    /// Accepted by a thread of its own with blocking `accept` (see [`accept_blocking`]),
    /// not by `AcceptEx` here.
    blocking: bool,
}

impl Listener {
    fn new(record: u64, family: i32, blocking: bool) -> Listener {
        Listener {
            record,
            family,
            subscribers: Vec::new(),
            next: 0,
            posted: 0,
            leaving: None,
            blocking,
        }
    }

    /// Gives a connection to the next subscriber in turn, else to the one leaving. With
    /// neither, `socket` is dropped: the client sees a reset, as from a closed listener.
    fn deliver(&mut self, socket: OwnedSocket) {
        if self.subscribers.is_empty() {
            if let Some(s) = &self.leaving {
                s.deliver(socket);
            }
            return;
        }
        let i = self.next % self.subscribers.len();
        self.next = i + 1;
        self.subscribers[i].deliver(socket);
    }

    /// Ends every subscription (and the leaving one) with `code`'s error.
    fn end_all(&mut self, code: Option<i32>, kind: io::ErrorKind) {
        let error = || match code {
            Some(c) => io::Error::from_raw_os_error(c),
            None => io::Error::from(kind),
        };
        for s in self.subscribers.drain(..).chain(self.leaving.take()) {
            s.end(error());
        }
    }
}

#[derive(Default)]
struct State {
    listeners: HashMap<RawSocket, Listener>,
    next_record: u64,
}

struct Acceptor {
    port: Handle,
    state: Mutex<State>,
}

impl Acceptor {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

static ACCEPTOR: Mutex<Option<&'static Acceptor>> = Mutex::new(None);

/// The accept thread, started on first use.
fn acceptor() -> io::Result<&'static Acceptor> {
    let mut slot = ACCEPTOR.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(a) = *slot {
        return Ok(a);
    }
    // SAFETY: creates a new port with no file handle.
    let port = unsafe { CreateIoCompletionPort(INVALID_HANDLE_VALUE, ptr::null_mut(), 0, 1) };
    if port.is_null() {
        return Err(io::Error::last_os_error());
    }
    let a: &'static Acceptor =
        Box::leak(Box::new(Acceptor { port: Handle(port), state: Mutex::default() }));
    std::thread::Builder::new().name("peregrine-accept".into()).spawn(move || run(a))?;
    *slot = Some(a);
    Ok(a)
}

/// Subscribes a driver's accept operation `op` to `listener`'s connections.
pub(crate) fn subscribe(listener: RawSocket, shared: Arc<Shared>, op: OpId) -> io::Result<()> {
    super::wsa_init();
    let a = acceptor()?;
    let mut state = a.lock();
    // Associating is also the test of whether we know this socket: it succeeds only for a
    // socket no port has yet (a new listener, possibly reusing a closed one's handle value).
    // SAFETY: associates a socket handle with our port; no memory is passed.
    let fresh = !unsafe { CreateIoCompletionPort(listener as HANDLE, a.port.0, 0, 0) }.is_null();
    if fresh {
        let family = local_family(listener)?;
        state.next_record += 1;
        let l = Listener::new(state.next_record, family, false);
        // A stale record of a closed socket is replaced; its AcceptOps are told apart by
        // their record number when they complete, and its subscriptions end now.
        if let Some(mut stale) = state.listeners.insert(listener, l) {
            stale.end_all(None, io::ErrorKind::NotConnected);
        }
    } else if !state.listeners.contains_key(&listener) {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(ERROR_INVALID_PARAMETER as i32) {
            return Err(e);
        }
        // Associated with another process's port: a socket handed over by the process this
        // one upgraded from, whose accept thread still posts on it (a socket belongs to one
        // port for its life). It is accepted from with blocking `accept` instead.
        state.next_record += 1;
        let record = state.next_record;
        let l = Listener::new(record, 0, true);
        std::thread::Builder::new()
            .name("peregrine-accept-inherited".into())
            .spawn(move || accept_blocking(a, listener, record))?;
        state.listeners.insert(listener, l);
    }
    let l = state.listeners.get_mut(&listener).expect("just ensured");
    if let Some(leaving) = l.leaving.take() {
        // Accepting again: what the cancelled `AcceptEx` calls still bring goes to the new
        // subscriber.
        leaving.end(canceled());
    }
    l.subscribers.push(Subscriber { shared, op });
    if l.blocking {
        return Ok(());
    }
    if let Some(e) = top_up(listener, l) {
        if l.posted == 0 {
            l.subscribers.pop();
            return Err(e);
        }
    }
    Ok(())
}

/// Cancels a driver's accept operation; its end (`more: false`, cancelled) is handed over
/// as every accept result is. When no subscriber is left, the outstanding `AcceptEx` calls
/// are cancelled, so connections wait in the backlog (or are refused once the listener is
/// closed) instead of being accepted for nobody; the ones that already took a client still
/// deliver it, and the end comes after them.
///
/// Does nothing for a subscription that has already ended (its end is on its way).
pub(crate) fn unsubscribe(listener: RawSocket, shared: &Arc<Shared>, op: OpId) {
    let Some(a) = *ACCEPTOR.lock().unwrap_or_else(|e| e.into_inner()) else { return };
    let mut state = a.lock();
    let Some(l) = state.listeners.get_mut(&listener) else { return };
    let mine = |s: &Subscriber| s.op == op && Arc::ptr_eq(&s.shared, shared);
    let Some(i) = l.subscribers.iter().position(mine) else { return };
    let s = l.subscribers.remove(i);
    if l.subscribers.is_empty() && l.posted > 0 && !l.blocking {
        l.leaving = Some(s);
        // SAFETY: cancels this process's outstanding IO on the listener (only our
        // AcceptEx calls); their AcceptOps come back through the port as usual.
        unsafe { CancelIoEx(listener as HANDLE, ptr::null()) };
    } else {
        s.end(canceled());
    }
}

/// Posts `AcceptEx` calls until [`ACCEPTS_POSTED`] are outstanding. Returns the error that
/// stopped it, if any.
fn top_up(listener: RawSocket, l: &mut Listener) -> Option<io::Error> {
    while l.posted < ACCEPTS_POSTED {
        if let Err(e) = post(listener, l) {
            return Some(e);
        }
        l.posted += 1;
    }
    None
}

fn post(listener: RawSocket, l: &Listener) -> io::Result<()> {
    let flags = WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT;
    // SAFETY: creates a socket; no pointers (no protocol info).
    let raw = unsafe { WSASocketW(l.family, SOCK_STREAM, IPPROTO_TCP, ptr::null(), 0, flags) };
    if raw == INVALID_SOCKET {
        return Err(last_wsa_error());
    }
    // SAFETY: a fresh socket nothing else owns.
    let socket = unsafe { OwnedSocket::from_raw_socket(raw as RawSocket) };
    let op = Box::new(AcceptOp {
        // SAFETY: OVERLAPPED is plain data; all-zero is what overlapped calls expect.
        raw: unsafe { std::mem::zeroed() },
        listener,
        record: l.record,
        socket: Some(socket),
        addrs: [0; 2 * ADDR_LEN],
    });
    let op = Box::into_raw(op);
    let mut received = 0u32;
    // SAFETY: `op` stays allocated (owned by Windows) until this thread dequeues its
    // completion; the address buffer and OVERLAPPED live inside it. No data is received
    // with the connection (length 0), so AcceptEx completes as soon as a client connects.
    let ok = unsafe {
        AcceptEx(
            listener as SOCKET,
            raw,
            ptr::addr_of_mut!((*op).addrs).cast(),
            0,
            ADDR_LEN as u32,
            ADDR_LEN as u32,
            &mut received,
            op.cast(),
        )
    };
    if ok == FALSE {
        let e = last_wsa_error();
        if e.raw_os_error() != Some(WSA_IO_PENDING) {
            // SAFETY: the call failed, so Windows queued nothing and keeps no pointer.
            drop(unsafe { Box::from_raw(op) });
            return Err(e);
        }
    }
    Ok(())
}

/// The address family of a bound socket (AF_INET or AF_INET6), for the accept sockets.
fn local_family(socket: RawSocket) -> io::Result<i32> {
    // SAFETY: SOCKADDR_STORAGE is plain data; all-zero is valid.
    let mut addr: SOCKADDR_STORAGE = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<SOCKADDR_STORAGE>() as i32;
    // SAFETY: the pointer and length describe `addr`, which getsockname fills in.
    let ret = unsafe {
        getsockname(socket as SOCKET, ptr::addr_of_mut!(addr).cast::<SOCKADDR>(), &mut len)
    };
    if ret != 0 {
        return Err(last_wsa_error());
    }
    Ok(i32::from(addr.ss_family))
}

fn run(a: &'static Acceptor) {
    // SAFETY: OVERLAPPED_ENTRY is plain data; all-zero is valid.
    let mut entries: [OVERLAPPED_ENTRY; 64] = unsafe { std::mem::zeroed() };
    loop {
        let mut removed = 0u32;
        // SAFETY: `entries` has room for 64 entries, which Windows fills in.
        let ok = unsafe {
            GetQueuedCompletionStatusEx(
                a.port.0,
                entries.as_mut_ptr(),
                entries.len() as u32,
                &mut removed,
                INFINITE,
                FALSE,
            )
        };
        if ok == FALSE {
            continue;
        }
        let mut state = a.lock();
        for entry in &entries[..removed as usize] {
            if entry.lpOverlapped.is_null() {
                continue;
            }
            // SAFETY: every OVERLAPPED on this port is the first field of an AcceptOp that
            // `post` leaked; its completion has been dequeued, so Windows is done with it
            // and it is ours again.
            let op = unsafe { Box::from_raw(entry.lpOverlapped.cast::<AcceptOp>()) };
            finish(&mut state, op);
        }
    }
}

/// Accepts on a listener another process's port owns (see `subscribe`), blocking, until
/// the listener is closed: each connection goes to the next subscriber, as an `AcceptEx`
/// completion's does. The accepted socket is a new one of this process, so it joins a
/// core's port as usual.
fn accept_blocking(a: &'static Acceptor, listener: RawSocket, record: u64) {
    loop {
        // SAFETY: a blocking accept on a socket handle; no address is asked for.
        let raw = unsafe { accept(listener as SOCKET, ptr::null_mut(), ptr::null_mut()) };
        let error = (raw == INVALID_SOCKET).then(last_wsa_error);
        // SAFETY: on success, a new socket nothing else owns.
        let socket = (raw != INVALID_SOCKET)
            .then(|| unsafe { OwnedSocket::from_raw_socket(raw as RawSocket) });
        let mut state = a.lock();
        let Some(l) = state.listeners.get_mut(&listener).filter(|l| l.record == record) else {
            return; // closed, and its handle value perhaps reused: `socket` is dropped
        };
        match (socket, error) {
            // Without a subscriber (nobody accepts now) the connection is closed.
            (Some(socket), _) => l.deliver(socket),
            (None, Some(e)) if e.raw_os_error() == Some(WSAECONNRESET) => {}
            (None, e) => {
                // The listener was closed (or is unusable): every subscription ends, as on
                // the `AcceptEx` path, and so does this thread.
                l.end_all(
                    Some(e.and_then(|e| e.raw_os_error()).unwrap_or(0)),
                    io::ErrorKind::Other,
                );
                state.listeners.remove(&listener);
                return;
            }
        }
    }
}

/// Hands a finished `AcceptEx`'s connection to the next subscriber and posts a new one.
fn finish(state: &mut State, mut op: Box<AcceptOp>) {
    let listener = op.listener;
    let Some(l) = state.listeners.get_mut(&listener).filter(|l| l.record == op.record) else {
        return; // a socket that is gone; dropping `op` closes its accept socket
    };
    l.posted -= 1;
    let status = op.raw.Internal as i32;
    if status == 0 {
        let socket = op.socket.take().expect("accept socket present until completion");
        // Gives the accepted socket its addresses and lets `shutdown` work on it (AcceptEx
        // leaves it in a half-initialised state until this is set).
        let _ = set_option(
            socket.as_raw_socket(),
            SOL_SOCKET,
            SO_UPDATE_ACCEPT_CONTEXT,
            listener as SOCKET,
        );
        l.deliver(socket);
    }
    // Other failures concern one connection (e.g. the client reset before the accept
    // finished) or are cancellations; accepting goes on while anyone subscribes.
    if l.posted == 0 {
        if let Some(leaving) = l.leaving.take() {
            leaving.end(canceled());
        }
    }
    if l.subscribers.is_empty() {
        return;
    }
    if let Some(e) = top_up(listener, l) {
        if l.posted == 0 {
            // Nothing outstanding and nothing postable (the listener was closed, or no
            // sockets can be created): end every subscription, as a multishot accept ends on
            // error. The caller backs off and accepts again.
            l.end_all(e.raw_os_error(), e.kind());
        }
    }
}
