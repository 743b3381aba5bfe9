//! One TLS stream over a socket, driven through rustls' *unbuffered* API.
//!
//! rustls' buffered `Connection` keeps a 4 KiB record buffer for the life of a connection,
//! which was most of what an idle TLS connection cost. Here the ciphertext received and not
//! yet processed lives in our own buffer (`incoming`), which is empty (and holds no memory)
//! whenever no partial record is pending, and the ciphertext to send is written straight
//! into our send buffer (`cipher`), with no copy out of a rustls-side buffer.
//!
//! [`TlsStream::pump`] runs the rustls state machine over what was received: decrypted
//! application data goes to the caller's buffer, handshake records, alerts and tickets to
//! `cipher`, and, once the handshake allows it, the caller's plaintext is encrypted into
//! `cipher` too. Sends and receives then move bytes between the socket and these buffers.
//!
//! Full duplex: one receive and one send may be in flight at once (the HTTP/2 loop does
//! that). rustls is only touched synchronously, inside `pump`, so no borrow is held across an
//! await. The socket's write side has one owner at a time (the write gate): a send, or a
//! receive flushing what processing produced (alerts, KeyUpdate answers, tickets). A writer
//! keeps writing until `cipher` is empty, so output queued by a receive while a send is in
//! flight leaves with that send, in order.
//!
//! Cancellation: a receive waits in its own fresh buffer and appends to `incoming` only once
//! it completes, so a dropped receive cannot lose a partial record already held. A receive
//! dropped after the driver completed it, before it was polled, keeps what arrived: its drop
//! polls it once more and appends the bytes (a response's watch for the client leaving is
//! dropped that way after every streamed response). A dropped send may have put part
//! of a record on the wire: the stream is then marked broken and every later send fails,
//! rather than sending a corrupt stream.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::task::{Poll, Waker};

use bytes::{Buf, BytesMut};
use rustls::client::UnbufferedClientConnection;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};

use crate::rt;
use crate::sys::driver::SendBuf;
use crate::sys::RawSocket;

/// Most plaintext one send encrypts: about four full records. Bounds the ciphertext built per
/// send (a 64 MiB body is not encrypted in one go).
const TLS_SEND_MAX: usize = 64 * 1024 - 4 * 1024;

/// Room for one record's header, content type and AEAD tag, per 16 KiB record.
const RECORD_OVERHEAD: usize = 64;

/// A TLS session: our side of a handshake with a client, or with an upstream.
pub(crate) enum Session {
    /// We are the server.
    Server(UnbufferedServerConnection),
    /// We are the client (to an upstream).
    Client(UnbufferedClientConnection),
}

impl From<UnbufferedServerConnection> for Session {
    fn from(c: UnbufferedServerConnection) -> Session {
        Session::Server(c)
    }
}

impl From<UnbufferedClientConnection> for Session {
    fn from(c: UnbufferedClientConnection) -> Session {
        Session::Client(c)
    }
}

impl Session {
    fn common(&self) -> &rustls::CommonState {
        match self {
            Session::Server(c) => c,
            Session::Client(c) => c,
        }
    }
}

/// What the caller wants encrypted during a [`TlsStream::pump`].
#[derive(Clone, Copy)]
enum Write<'a> {
    Nothing,
    Data(&'a SendBuf),
    CloseNotify,
}

/// What a [`TlsStream::pump`] did.
#[derive(Default)]
struct Pumped {
    /// Plaintext bytes appended to the caller's buffer.
    plaintext: usize,
    /// Bytes of the caller's plaintext encrypted into `cipher`.
    encrypted: usize,
}

/// The TLS side of a transport. See the module doc.
pub(crate) struct TlsStream {
    session: RefCell<Session>,
    /// Ciphertext received and not yet processed: a partial record at most, between pumps.
    incoming: Cell<BytesMut>,
    /// Ciphertext to send. Each flush splits what is there off as one `Bytes`; once the send
    /// has dropped it, later writes reuse the same allocation (`BytesMut` reclaims a buffer
    /// it owns alone), so a connection does not allocate per flush.
    cipher: Cell<BytesMut>,
    /// Plaintext decrypted while no receive could take it (the handshake's last flight, or a
    /// send's processing): the next receive returns it first.
    stash: Cell<BytesMut>,
    /// The peer closed TCP (EOF), with or without close_notify.
    eof: Cell<bool>,
    /// The peer sent close_notify.
    peer_closed: Cell<bool>,
    /// A send was cut short or failed, or rustls failed: no more sends.
    broken: Cell<bool>,
    /// Someone owns the socket's write side.
    writing: Cell<bool>,
    waiting_writers: RefCell<Vec<Waker>>,
}

/// The write side, held for one writer's whole flush. Dropped before `done`: the flush was
/// cut short, so the stream is broken.
struct WriteGuard<'a> {
    tls: &'a TlsStream,
    done: bool,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.tls.broken.set(true);
        }
        self.tls.writing.set(false);
        for w in self.tls.waiting_writers.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

/// A receive in flight. Dropped before it was taken, it polls the driver's receive once
/// more: bytes that completed it meanwhile go to `incoming` instead of being lost.
struct PendingReceive<'a> {
    tls: &'a TlsStream,
    recv: Option<rt::io::Recv>,
}

impl PendingReceive<'_> {
    /// The receive's outcome, once it has one.
    async fn outcome(&mut self) -> (BytesMut, io::Result<usize>) {
        let recv = self.recv.as_mut().expect("polled once");
        let out = poll_fn(|cx| std::future::Future::poll(std::pin::Pin::new(&mut *recv), cx)).await;
        self.recv = None;
        out
    }
}

impl Drop for PendingReceive<'_> {
    fn drop(&mut self) {
        let Some(mut recv) = self.recv.take() else { return };
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if let std::task::Poll::Ready((received, result)) =
            std::future::Future::poll(std::pin::Pin::new(&mut recv), &mut cx)
        {
            // An error here shows again on the next receive.
            let _ = self.tls.take_received(received, result);
        }
    }
}

fn broken() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "TLS stream broken by an interrupted or failed send")
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Appends to `out` what `write` produces into spare room, growing the room to what rustls
/// says it needs when it is too small.
fn append(
    out: &mut BytesMut,
    mut room: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, usize>,
) -> Result<(), ()> {
    if out.capacity() == 0 {
        *out = rt::io::take_buffer();
    }
    loop {
        let start = out.len();
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(need) if need > room => {
                out.truncate(start);
                room = need;
            }
            Err(_) => {
                out.truncate(start);
                return Err(());
            }
        }
    }
}

/// Whether [`handle`] wants another turn of the state machine.
enum Next {
    Again,
    Stop,
}

/// Handles one state of the machine. Returns the bytes of `incoming` to discard and whether
/// to go on. Generic over the side (server or client): the states are the same.
fn handle<Data>(
    status: UnbufferedStatus<'_, '_, Data>,
    plain: &mut BytesMut,
    cipher: &mut BytesMut,
    write: Write<'_>,
    done: &mut Pumped,
    peer_closed: &Cell<bool>,
) -> Result<(usize, Next), rustls::Error> {
    let mut discard = status.discard;
    let next = match status.state? {
        ConnectionState::ReadTraffic(mut traffic) => {
            while let Some(record) = traffic.next_record() {
                let record = record?;
                discard += record.discard;
                if plain.capacity() == 0 {
                    *plain = rt::io::take_buffer();
                }
                plain.extend_from_slice(record.payload);
                done.plaintext += record.payload.len();
            }
            Next::Again
        }
        ConnectionState::EncodeTlsData(mut encode) => {
            let _ = append(cipher, 1024, |out| match encode.encode(out) {
                Ok(n) => Ok(n),
                Err(EncodeError::InsufficientSize(s)) => Err(s.required_size),
                Err(_) => Err(0),
            });
            Next::Again
        }
        // What was encoded is in `cipher`, ahead of anything written later; the caller sends
        // it in order.
        ConnectionState::TransmitTlsData(transmit) => {
            transmit.done();
            Next::Again
        }
        ConnectionState::PeerClosed => {
            peer_closed.set(true);
            Next::Again
        }
        ConnectionState::Closed => {
            peer_closed.set(true);
            Next::Stop
        }
        ConnectionState::WriteTraffic(mut traffic) => {
            match write {
                Write::Data(buf) if done.encrypted == 0 => {
                    for chunk in buf.chunks() {
                        let piece = &chunk[..chunk.len().min(TLS_SEND_MAX - done.encrypted)];
                        let room = piece.len() + RECORD_OVERHEAD * (1 + piece.len() / 16384);
                        let sealed =
                            append(cipher, room, |out| match traffic.encrypt(piece, out) {
                                Ok(n) => Ok(n),
                                Err(EncryptError::InsufficientSize(s)) => Err(s.required_size),
                                Err(_) => Err(0),
                            });
                        if sealed.is_err() {
                            return Err(rustls::Error::EncryptError);
                        }
                        done.encrypted += piece.len();
                        if done.encrypted >= TLS_SEND_MAX {
                            break;
                        }
                    }
                }
                Write::CloseNotify => {
                    let _ = append(cipher, RECORD_OVERHEAD, |out| {
                        traffic.queue_close_notify(out).map_err(|e| match e {
                            EncryptError::InsufficientSize(s) => s.required_size,
                            _ => 0,
                        })
                    });
                }
                _ => {}
            }
            // Nothing is pending but a partial record: more input is needed to read on.
            Next::Stop
        }
        // More input is needed to go on with the handshake.
        ConnectionState::BlockedHandshake => Next::Stop,
        // 0-RTT is never enabled (`max_early_data_size` stays 0): a client sending early
        // data anyway is refused.
        ConnectionState::ReadEarlyData(_) => {
            return Err(rustls::Error::General("unexpected early data".into()));
        }
        _ => Next::Stop,
    };
    Ok((discard, next))
}

impl TlsStream {
    /// A stream whose handshake has begun in `session` (server side: `incoming` holds the
    /// ClientHello and whatever followed it; client side: nothing sent yet). Finish with
    /// [`complete_handshake`](Self::complete_handshake).
    pub(crate) fn new(session: Session, incoming: BytesMut) -> TlsStream {
        TlsStream {
            session: RefCell::new(session),
            incoming: Cell::new(incoming),
            cipher: Cell::new(BytesMut::new()),
            stash: Cell::new(BytesMut::new()),
            eof: Cell::new(false),
            peer_closed: Cell::new(false),
            broken: Cell::new(false),
            writing: Cell::new(false),
            waiting_writers: RefCell::new(Vec::new()),
        }
    }

    /// The ALPN protocol the handshake agreed on, if any.
    pub(crate) fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.session.borrow().common().alpn_protocol().map(<[u8]>::to_vec)
    }

    /// The certificate chain the peer presented and rustls verified, once the handshake is
    /// done.
    pub(crate) fn peer_certificates(&self) -> Option<crate::exchange::ClientCertificates> {
        let session = self.session.borrow();
        let chain = session.common().peer_certificates()?;
        crate::exchange::ClientCertificates::new(
            chain.iter().map(|c| c.clone().into_owned()).collect(),
        )
    }

    /// Runs rustls over the ciphertext received so far: decrypted plaintext is appended to
    /// `plain`; handshake records, alerts and `write` go to `cipher`.
    fn pump(&self, plain: &mut BytesMut, write: Write<'_>) -> io::Result<Pumped> {
        let mut incoming = self.incoming.take();
        let mut cipher = self.cipher.take();
        let mut done = Pumped::default();
        let result = {
            let mut session = self.session.borrow_mut();
            loop {
                let step = match &mut *session {
                    Session::Server(c) => handle(
                        c.process_tls_records(&mut incoming[..]),
                        plain,
                        &mut cipher,
                        write,
                        &mut done,
                        &self.peer_closed,
                    ),
                    Session::Client(c) => handle(
                        c.process_tls_records(&mut incoming[..]),
                        plain,
                        &mut cipher,
                        write,
                        &mut done,
                        &self.peer_closed,
                    ),
                };
                match step {
                    Ok((discard, next)) => {
                        incoming.advance(discard);
                        if matches!(next, Next::Stop) {
                            break Ok(done);
                        }
                    }
                    Err(e) => break Err(tls_error(e)),
                }
            }
        };
        if incoming.is_empty() && incoming.capacity() > 0 {
            // Nothing pending: an idle stream holds no receive buffer.
            rt::io::give_buffer(std::mem::take(&mut incoming));
        }
        self.incoming.set(incoming);
        self.cipher.set(cipher);
        if result.is_err() {
            self.broken.set(true);
        }
        result
    }

    /// Whether ciphertext waits to be sent.
    fn has_output(&self) -> bool {
        let cipher = self.cipher.take();
        let pending = !cipher.is_empty();
        self.cipher.set(cipher);
        pending
    }

    /// Receives more *plaintext*, appended to `buf`. `Ok(0)` is the end of the stream: EOF,
    /// or close_notify.
    pub(crate) async fn recv(
        &self,
        fd: RawSocket,
        mut buf: BytesMut,
    ) -> (BytesMut, io::Result<usize>) {
        loop {
            let stash = self.stash.take();
            if !stash.is_empty() {
                let n = stash.len();
                if buf.is_empty() {
                    rt::io::give_buffer(std::mem::replace(&mut buf, stash));
                } else {
                    buf.extend_from_slice(&stash);
                }
                return (buf, Ok(n));
            }
            match self.pump(&mut buf, Write::Nothing) {
                Ok(p) if p.plaintext > 0 => return (buf, Ok(p.plaintext)),
                Ok(_) => {}
                Err(e) => {
                    self.flush_alert(fd).await;
                    return (buf, Err(e));
                }
            }
            // Output that processing produced goes out now unless a writer is at work (it
            // will take it before it lets go of the write side).
            if self.has_output() {
                if let Some(guard) = self.try_write() {
                    if let Err(e) = self.flush(fd, guard).await {
                        return (buf, Err(e));
                    }
                }
            }
            if self.peer_closed.get() || self.eof.get() {
                return (buf, Ok(0));
            }
            if let Err(e) = self.receive(fd).await {
                return (buf, Err(e));
            }
        }
    }

    /// Encrypts and sends some or all of `buf`'s plaintext: resolves to how many bytes were
    /// consumed (they are on the wire) and the buffer back, unadvanced.
    pub(crate) async fn send(&self, fd: RawSocket, buf: SendBuf) -> (io::Result<usize>, SendBuf) {
        if self.broken.get() {
            return (Err(broken()), buf);
        }
        let guard = self.write().await;
        let mut stash = self.stash.take();
        let pumped = self.pump(&mut stash, Write::Data(&buf));
        self.stash.set(stash);
        let consumed = match pumped {
            Ok(p) => p.encrypted,
            Err(e) => return (Err(e), buf), // guard dropped unfinished: broken
        };
        if consumed == 0 && !buf.is_empty() {
            return (Err(io::Error::other("TLS handshake not complete")), buf);
        }
        match self.flush(fd, guard).await {
            Ok(()) => (Ok(consumed), buf),
            Err(e) => (Err(e), buf),
        }
    }

    /// See [`Transport::shed_buffers`](crate::transport::Transport::shed_buffers). The
    /// ciphertext buffer goes back to the core's pool (so a busy connection takes one back
    /// without a malloc) unless a writer is at work. The receive side holds none while idle.
    pub(crate) fn shed_buffers(&self) {
        if !self.writing.get() {
            let cipher = self.cipher.take();
            if cipher.is_empty() {
                rt::io::give_buffer(cipher);
            } else {
                self.cipher.set(cipher);
            }
        }
    }

    /// Queues close_notify and sends it with anything else pending. Does nothing on a
    /// broken stream.
    pub(crate) async fn close_notify(&self, fd: RawSocket) {
        if self.broken.get() {
            return;
        }
        let guard = self.write().await;
        let mut stash = self.stash.take();
        let pumped = self.pump(&mut stash, Write::CloseNotify);
        self.stash.set(stash);
        if pumped.is_ok() {
            let _ = self.flush(fd, guard).await;
        }
    }

    /// Drives the handshake to its end. Plaintext that arrived with its last flight is kept
    /// for the first `recv`.
    pub(crate) async fn complete_handshake(&self, fd: RawSocket) -> io::Result<()> {
        loop {
            let mut stash = self.stash.take();
            let pumped = self.pump(&mut stash, Write::Nothing);
            self.stash.set(stash);
            if let Err(e) = pumped {
                self.flush_alert(fd).await;
                return Err(e);
            }
            if self.has_output() {
                let guard = self.write().await;
                self.flush(fd, guard).await?;
            }
            if !self.session.borrow().common().is_handshaking() {
                return Ok(());
            }
            if self.eof.get() || self.peer_closed.get() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.receive(fd).await?;
        }
    }

    /// One receive of ciphertext from the socket, appended to `incoming`.
    async fn receive(&self, fd: RawSocket) -> io::Result<()> {
        // A fresh, empty buffer: the receive takes one from the core's pool only when data
        // arrives, and a partial record already held stays in `incoming` if this is dropped.
        let mut pending =
            PendingReceive { tls: self, recv: Some(rt::io::recv(fd, BytesMut::new())) };
        let (received, result) = pending.outcome().await;
        self.take_received(received, result)
    }

    /// Files a finished receive: its bytes to `incoming`, or EOF.
    fn take_received(&self, received: BytesMut, result: io::Result<usize>) -> io::Result<()> {
        match result {
            Ok(0) => self.eof.set(true),
            Ok(_) => {
                let mut incoming = self.incoming.take();
                if incoming.is_empty() {
                    rt::io::give_buffer(std::mem::replace(&mut incoming, received));
                } else {
                    incoming.extend_from_slice(&received);
                    rt::io::give_buffer(received);
                }
                self.incoming.set(incoming);
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Takes the write side if nobody has it.
    fn try_write(&self) -> Option<WriteGuard<'_>> {
        if self.writing.replace(true) {
            return None;
        }
        Some(WriteGuard { tls: self, done: false })
    }

    /// Waits for the write side.
    async fn write(&self) -> WriteGuard<'_> {
        poll_fn(|cx| match self.try_write() {
            Some(g) => Poll::Ready(g),
            None => {
                self.waiting_writers.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Sends everything in `cipher` (and what is added to it meanwhile), then lets go of the
    /// write side.
    async fn flush(&self, fd: RawSocket, mut guard: WriteGuard<'_>) -> io::Result<()> {
        loop {
            let chunk = {
                let mut cipher = self.cipher.take();
                if cipher.is_empty() {
                    // Checked with no await before the guard is released, so nothing a
                    // receive queues can be left behind.
                    self.cipher.set(cipher);
                    guard.done = true;
                    return Ok(());
                }
                let chunk = cipher.split().freeze();
                self.cipher.set(cipher);
                chunk
            };
            let mut send = SendBuf::new();
            send.push(chunk);
            while !send.is_empty() {
                let (result, back) = rt::io::send(fd, send).await;
                send = back;
                match result {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => send.advance(n),
                    Err(e) => return Err(e), // guard dropped unfinished: broken
                }
            }
        }
    }

    /// Best effort, after rustls failed: encodes and sends the alert it queued, if the write
    /// side is free.
    async fn flush_alert(&self, fd: RawSocket) {
        let mut scratch = BytesMut::new();
        let _ = self.pump(&mut scratch, Write::Nothing);
        if let Some(guard) = self.try_write() {
            let _ = self.flush(fd, guard).await;
        }
        self.broken.set(true);
    }
}
