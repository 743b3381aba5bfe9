//! A connection's byte stream as the protocol loops see it: plaintext in, plaintext out,
//! over a bare socket or over TLS (rustls).
//!
//! ```text
//!   loop ── send(plaintext) ──► [encrypt] ──► driver send ──► socket
//!   loop ◄─ recv(plaintext) ◄── [decrypt] ◄── driver recv ◄── socket
//! ```
//!
//! Full duplex: one `recv` and one `send` may be in flight at once from the same task (the
//! HTTP/2 loop does that). The rustls connection is only touched synchronously (decrypt after
//! a receive completes, encrypt before a send is submitted), so no `RefCell` borrow is ever
//! held across an await. The socket's write side has one owner at a time (the write gate):
//! a `send`, or a `recv` flushing what rustls produced while receiving (alerts, KeyUpdate
//! answers). A writer keeps writing until rustls has nothing left, so output queued by a
//! receive while a send is in flight leaves with that send.
//!
//! Cancellation: every `recv` and `send` may be dropped part-way (the loops wrap them in
//! deadlines). A dropped receive loses nothing: ciphertext is handed to rustls as soon as it
//! arrives, so no received byte waits outside rustls across an await. A dropped TLS send may
//! have put part of a record on the wire: the transport is then marked broken and every
//! later send fails, rather than sending a corrupt stream.
//!
//! Copies on the TLS path (rustls' buffered `Connection`: server side to clients, client side
//! to upstreams):
//! - receive: driver buffer → `raw` (the runtime's one copy, as for plaintext) → rustls'
//!   record buffer (`read_tls`) → decrypted in place → the loop's buffer (`reader().read`);
//! - send: the loop's chunks → rustls (`writer().write`, encrypted in rustls' buffer) → one
//!   contiguous `Bytes` for the driver (`write_tls`).
//!
//! rustls' unbuffered API (`UnbufferedServerConnection`) would remove the two rustls-side
//! copies (decrypt in place in `raw`, encrypt straight into the send buffer). It is not used
//! yet: its state machine is more code to get right than this change had room for, and the
//! buffered API's copies are bounded by record size (16 KiB). The seam is this file: the
//! protocol loops only see `recv`/`send`.

use crate::sys::RawSocket;
use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::sys::driver::SendBuf;
use bytes::{Buf, BufMut, BytesMut};
use rustls::Connection;

use crate::rt;

/// Most plaintext one TLS `send` encrypts: about four full records. Bounds the ciphertext
/// built per send (a 64 MiB body is not encrypted in one go) and stays under rustls' default
/// 64 KiB outgoing buffer limit.
const TLS_SEND_MAX: usize = 64 * 1024 - 4 * 1024;

/// One connection's transport. See the module doc.
pub(crate) struct Transport {
    fd: RawSocket,
    tls: Option<Box<Tls>>,
}

/// The TLS side of a transport.
struct Tls {
    conn: RefCell<Connection>,
    /// Ciphertext received and not yet taken by rustls (only while rustls' plaintext buffer
    /// is full). Moved into a receive operation while one is in flight.
    raw: Cell<BytesMut>,
    /// Ciphertext to send. Each flush splits what rustls wrote off as one `Bytes`; once the
    /// send has dropped it, the next flush's writes reuse the same allocation (`BytesMut`
    /// reclaims a buffer it owns alone), so a connection does not allocate per flush.
    cipher: Cell<BytesMut>,
    /// The peer closed TCP (EOF), with or without close_notify.
    eof: Cell<bool>,
    /// A send was cut short or failed, or rustls failed: no more sends.
    broken: Cell<bool>,
    /// Someone owns the socket's write side.
    writing: Cell<bool>,
    waiting_writers: RefCell<Vec<Waker>>,
}

/// The write side, held for one writer's whole flush. Dropped before `done`: the flush was
/// cut short, so the stream is broken.
struct WriteGuard<'a> {
    tls: &'a Tls,
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

fn broken() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "TLS stream broken by an interrupted or failed send")
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Transport {
    /// A cleartext transport over `fd`.
    pub(crate) fn plain(fd: RawSocket) -> Transport {
        Transport { fd, tls: None }
    }

    /// A TLS transport over `fd` whose handshake has begun in `conn` (server side, after the
    /// ClientHello was read; or client side, to an upstream, before anything was sent); `raw` holds ciphertext
    /// already received and not yet given to rustls. Finish with
    /// [`complete_handshake`](Self::complete_handshake).
    pub(crate) fn tls(fd: RawSocket, conn: impl Into<Connection>, raw: BytesMut) -> Transport {
        let tls = Tls {
            conn: RefCell::new(conn.into()),
            raw: Cell::new(raw),
            cipher: Cell::new(BytesMut::new()),
            eof: Cell::new(false),
            broken: Cell::new(false),
            writing: Cell::new(false),
            waiting_writers: RefCell::new(Vec::new()),
        };
        Transport { fd, tls: Some(Box::new(tls)) }
    }

    /// Whether this transport runs TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The ALPN protocol the handshake agreed on, if any.
    pub(crate) fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.tls.as_ref()?.conn.borrow().alpn_protocol().map(<[u8]>::to_vec)
    }

    /// Receives more *plaintext*, appended to `buf` (like `rt::io::recv`). `Ok(0)` is the end
    /// of the stream: EOF, or TLS close_notify. A TLS stream cut without close_notify also
    /// reads as `Ok(0)`: HTTP's own framing tells a cut message from a finished one.
    pub(crate) fn recv(&self, buf: BytesMut) -> Recv<'_> {
        match &self.tls {
            None => Recv::Plain(rt::io::recv(self.fd, buf)),
            Some(tls) => Recv::Tls(Box::pin(tls.recv(self.fd, buf))),
        }
    }

    /// Sends some or all of `buf`'s *plaintext*: resolves to how many bytes were consumed
    /// and the buffer back, unadvanced (like `rt::io::send`). Over TLS the bytes consumed are
    /// on the wire (encrypted) when this resolves.
    pub(crate) fn send(&self, buf: SendBuf) -> Send<'_> {
        match &self.tls {
            None => Send::Plain(rt::io::send(self.fd, buf)),
            Some(tls) => Send::Tls(Box::pin(tls.send(self.fd, buf))),
        }
    }

    /// Sends all of `buf`, one send after another. Returns the emptied buffer for reuse.
    pub(crate) async fn send_all(&self, mut buf: SendBuf) -> io::Result<SendBuf> {
        while !buf.is_empty() {
            let (result, back) = self.send(buf).await;
            buf = back;
            match result? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => buf.advance(n),
            }
        }
        Ok(buf)
    }

    /// Lets go of buffers kept between reads and writes (TLS ciphertext), before an idle
    /// wait: an idle connection holds no buffer. Cleartext holds none.
    pub(crate) fn shed_buffers(&self) {
        if let Some(tls) = &self.tls {
            tls.shed_buffers();
        }
    }

    /// Starts an orderly TLS close: queues close_notify and sends it (with anything else
    /// pending). Does nothing on cleartext or on a broken stream. Bound it with a deadline:
    /// a peer that does not read can stall it.
    pub(crate) async fn close_notify(&self) {
        let Some(tls) = &self.tls else { return };
        if tls.broken.get() {
            return;
        }
        tls.conn.borrow_mut().send_close_notify();
        let guard = tls.write().await;
        let _ = tls.flush(self.fd, guard).await;
    }

    /// Drives the TLS handshake to its end (plaintext: nothing to do). Any plaintext that
    /// arrived with the handshake's last flight stays in rustls for the first `recv`.
    pub(crate) async fn complete_handshake(&self) -> io::Result<()> {
        let Some(tls) = &self.tls else { return Ok(()) };
        loop {
            if let Err(e) = tls.process() {
                tls.flush_alert(self.fd).await;
                return Err(e);
            }
            if tls.conn.borrow().wants_write() {
                let guard = tls.write().await;
                tls.flush(self.fd, guard).await?;
            }
            if !tls.conn.borrow().is_handshaking() {
                return Ok(());
            }
            if tls.eof.get() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            tls.receive(self.fd).await?;
        }
    }
}

impl Tls {
    /// [`Transport::recv`] over TLS.
    async fn recv(&self, fd: RawSocket, buf: BytesMut) -> (BytesMut, io::Result<usize>) {
        let mut buf = buf;
        loop {
            match self.take_plaintext(&mut buf) {
                Ok(Some(n)) => return (buf, Ok(n)),
                Ok(None) => {}
                Err(e) => {
                    self.flush_alert(fd).await;
                    return (buf, Err(e));
                }
            }
            // Output that receiving produced goes out now unless a writer is at work (it
            // will take it before it lets go of the write side).
            if let Some(guard) = self.try_write() {
                if let Err(e) = self.flush(fd, guard).await {
                    return (buf, Err(e));
                }
            }
            if let Err(e) = self.receive(fd).await {
                return (buf, Err(e));
            }
        }
    }

    /// [`Transport::send`] over TLS.
    async fn send(&self, fd: RawSocket, buf: SendBuf) -> (io::Result<usize>, SendBuf) {
        if self.broken.get() {
            return (Err(broken()), buf);
        }
        let mut guard = self.write().await;
        let mut consumed = match self.encrypt(&buf) {
            Ok(n) => n,
            Err(e) => return (Err(e), buf), // guard dropped unfinished: broken
        };
        if consumed == 0 && !buf.is_empty() {
            // rustls' outgoing buffer was full of earlier output: send that, then encrypt.
            guard = match self.flush_keep(fd, guard).await {
                Ok(g) => g,
                Err(e) => return (Err(e), buf),
            };
            consumed = match self.encrypt(&buf) {
                Ok(n) => n,
                Err(e) => return (Err(e), buf),
            };
        }
        match self.flush(fd, guard).await {
            Ok(()) => (Ok(consumed), buf),
            Err(e) => (Err(e), buf),
        }
    }

    /// See [`Transport::shed_buffers`]. The ciphertext buffer goes back to the core's pool
    /// (so a busy connection takes one back without a malloc) unless a writer is at work.
    /// The receive buffer needs no shedding: [`Tls::receive`] waits with none.
    fn shed_buffers(&self) {
        if !self.writing.get() {
            rt::io::give_buffer(self.cipher.take());
        }
    }

    /// Gives rustls the ciphertext waiting in `raw` and processes it. Stops early when
    /// rustls' plaintext buffer is full (the rest stays in `raw` until plaintext is taken).
    fn process(&self) -> io::Result<rustls::IoState> {
        let mut raw = self.raw.take();
        let mut conn = self.conn.borrow_mut();
        let mut result = Ok(());
        while !raw.is_empty() {
            match conn.read_tls(&mut &raw[..]) {
                Ok(0) => break,
                Ok(n) => raw.advance(n),
                // "buffer full": plaintext must be read out before more ciphertext fits.
                Err(e) if e.kind() == io::ErrorKind::Other => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            if let Err(e) = conn.process_new_packets() {
                result = Err(tls_error(e));
                break;
            }
        }
        self.raw.set(raw);
        let state = result.and_then(|()| conn.process_new_packets().map_err(tls_error));
        if state.is_err() {
            self.broken.set(true);
        }
        state
    }

    /// Moves decrypted plaintext into `buf`. `Some(0)`: the stream has ended.
    fn take_plaintext(&self, buf: &mut BytesMut) -> io::Result<Option<usize>> {
        let state = self.process()?;
        let available = state.plaintext_bytes_to_read();
        if available > 0 {
            if buf.capacity() == 0 {
                *buf = rt::io::take_buffer();
            }
            let start = buf.len();
            buf.resize(start + available, 0);
            let read = self.conn.borrow_mut().reader().read(&mut buf[start..]);
            let n = read.inspect_err(|_| buf.truncate(start))?;
            buf.truncate(start + n);
            return Ok(Some(n));
        }
        if state.peer_has_closed() || self.eof.get() {
            return Ok(Some(0));
        }
        Ok(None)
    }

    /// One receive of ciphertext from the socket, then processing it.
    async fn receive(&self, fd: RawSocket) -> io::Result<()> {
        let raw = self.raw.take();
        if !raw.is_empty() {
            // rustls would take no more and gave no plaintext: a message over its buffer
            // limits. Receiving more could only lose bytes on cancellation.
            self.raw.set(raw);
            self.broken.set(true);
            return Err(io::Error::new(io::ErrorKind::InvalidData, "TLS message too large"));
        }
        // An empty buffer goes back to the core's pool first: the receive takes one when
        // data arrives, so a connection waiting for the peer holds none.
        rt::io::give_buffer(raw);
        let (raw, result) = rt::io::recv(fd, BytesMut::new()).await;
        self.raw.set(raw);
        match result {
            Ok(0) => {
                self.eof.set(true);
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Encrypts up to [`TLS_SEND_MAX`] bytes from the front of `buf`.
    fn encrypt(&self, buf: &SendBuf) -> io::Result<usize> {
        let mut conn = self.conn.borrow_mut();
        let mut n = 0;
        for chunk in buf.chunks() {
            let piece = &chunk[..chunk.len().min(TLS_SEND_MAX - n)];
            let taken = conn.writer().write(piece)?;
            n += taken;
            if taken < piece.len() || n >= TLS_SEND_MAX {
                break;
            }
        }
        Ok(n)
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

    /// Sends everything rustls has to send, then lets go of the write side.
    async fn flush(&self, fd: RawSocket, guard: WriteGuard<'_>) -> io::Result<()> {
        let mut guard = self.flush_keep(fd, guard).await?;
        guard.done = true;
        Ok(())
    }

    /// Sends everything rustls has to send, keeping the write side.
    async fn flush_keep<'a>(
        &'a self,
        fd: RawSocket,
        guard: WriteGuard<'a>,
    ) -> io::Result<WriteGuard<'a>> {
        loop {
            let out = {
                let mut conn = self.conn.borrow_mut();
                if !conn.wants_write() {
                    // Checked with no await before the guard is released, so nothing a
                    // receive queues can be left behind.
                    return Ok(guard);
                }
                let mut out = self.cipher.take();
                if out.capacity() == 0 {
                    out = rt::io::take_buffer();
                }
                let mut out = out.writer();
                while conn.wants_write() {
                    conn.write_tls(&mut out)?;
                }
                let mut out = out.into_inner();
                let chunk = out.split().freeze();
                self.cipher.set(out);
                chunk
            };
            let mut send = SendBuf::new();
            send.push(out);
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

    /// Best effort: sends the alert rustls queued for a failure, if the write side is free.
    async fn flush_alert(&self, fd: RawSocket) {
        if let Some(guard) = self.try_write() {
            let _ = self.flush(fd, guard).await;
        }
        self.broken.set(true);
    }
}

/// [`Transport::recv`]'s future. Cleartext waits in the driver's receive itself (a few
/// bytes: what an idle connection's task holds); the TLS loop is boxed, so its larger state
/// exists only while a TLS receive runs.
pub(crate) enum Recv<'a> {
    Plain(rt::io::Recv),
    Tls(Pin<Box<dyn Future<Output = (BytesMut, io::Result<usize>)> + 'a>>),
}

impl Future for Recv<'_> {
    type Output = (BytesMut, io::Result<usize>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Recv::Plain(recv) => Pin::new(recv).poll(cx),
            Recv::Tls(recv) => recv.as_mut().poll(cx),
        }
    }
}

/// [`Transport::send`]'s future, cut like [`Recv`].
pub(crate) enum Send<'a> {
    Plain(rt::io::Send),
    Tls(Pin<Box<dyn Future<Output = (io::Result<usize>, SendBuf)> + 'a>>),
}

impl Future for Send<'_> {
    type Output = (io::Result<usize>, SendBuf);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Send::Plain(send) => Pin::new(send).poll(cx),
            Send::Tls(send) => send.as_mut().poll(cx),
        }
    }
}
