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
//! The TLS side (rustls' unbuffered API, our own buffers) is [`crate::tls::stream`]: its
//! module doc says how receives, sends and cancellation work there.
//!
//! Copies on the TLS path: receive: driver buffer → the stream's ciphertext buffer (the
//! runtime's one copy, as for plaintext) → decrypted by rustls into a record of its own → the
//! loop's buffer; send: the loop's chunks → encrypted straight into the stream's send buffer.

use crate::sys::RawSocket;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::sys::driver::SendBuf;
use bytes::BytesMut;

use crate::rt;
use crate::tls::stream::{Session, TlsStream};

/// One connection's transport. See the module doc.
pub(crate) struct Transport {
    fd: RawSocket,
    tls: Option<Box<TlsStream>>,
}

impl Transport {
    /// A cleartext transport over `fd`.
    pub(crate) fn plain(fd: RawSocket) -> Transport {
        Transport { fd, tls: None }
    }

    /// A TLS transport over `fd` whose handshake has begun in `session` (server side, after
    /// the ClientHello was read: `raw` holds it and whatever followed; client side, to an
    /// upstream, before anything was sent). Finish with
    /// [`complete_handshake`](Self::complete_handshake).
    pub(crate) fn tls(fd: RawSocket, session: impl Into<Session>, raw: BytesMut) -> Transport {
        Transport { fd, tls: Some(Box::new(TlsStream::new(session.into(), raw))) }
    }

    /// The socket, when nothing stands between it and the protocol (cleartext): a body may
    /// then be spliced to it.
    pub(crate) fn plain_socket(&self) -> Option<RawSocket> {
        self.tls.is_none().then_some(self.fd)
    }

    /// Whether this transport runs TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The ALPN protocol the handshake agreed on, if any.
    pub(crate) fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.tls.as_ref()?.alpn_protocol()
    }

    /// The certificate chain the peer presented and rustls verified (a mutual-TLS client).
    pub(crate) fn client_certificates(&self) -> Option<crate::exchange::ClientCertificates> {
        self.tls.as_ref()?.peer_certificates()
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

    /// Sends some of `buf` at once, where that needs no waiting: cleartext, on a driver that
    /// sends without an operation ([`rt::io::try_send`]). `None`: nothing was sent; use
    /// [`send`](Self::send). TLS always says `None` (its records are sealed in `send`).
    pub(crate) fn try_send(&self, buf: &SendBuf) -> Option<io::Result<usize>> {
        match &self.tls {
            None => rt::io::try_send(self.fd, buf),
            Some(_) => None,
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
        if let Some(tls) = &self.tls {
            tls.close_notify(self.fd).await;
        }
    }

    /// Drives the TLS handshake to its end (plaintext: nothing to do). Any plaintext that
    /// arrived with the handshake's last flight is kept for the first `recv`.
    pub(crate) async fn complete_handshake(&self) -> io::Result<()> {
        match &self.tls {
            Some(tls) => tls.complete_handshake(self.fd).await,
            None => Ok(()),
        }
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
