//! One connection's socket state, shared (through `Rc`) between the connection loop and the
//! request body a handler reads. Both run in the same task, one after the other, so the
//! `RefCell`s are only ever borrowed between awaits, never across one.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use crate::sys::driver::SendBuf;
use bytes::{Bytes, BytesMut};
use peregrine_limits::{DataRate, Limit, MinDataRate};
use peregrine_protocols::h1::{BodyDecoder, ParseError};
use peregrine_protocols::host::KnownHost;

use crate::metrics::Rejection;

use crate::rt;
use crate::rt::timer::{RunUntil, Timer};
use crate::transport::Transport;

/// Whether `100 Continue` is owed to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Continue {
    NotExpected,
    /// The client waits for it before sending the body; sent when the body is first read.
    Expected,
    Sent,
}

/// How a request body ended badly, recorded for the connection loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyFailure {
    pub(crate) status: Option<http::StatusCode>,
    pub(crate) why: Why,
}

/// Why an HTTP/1 connection ends early: what it counts as in the metrics (a limit, a
/// protocol error, a panic; nothing for a peer that went away) and a short reason for the
/// debug log. Built from typed values where the decision is made; never parsed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Why {
    pub(crate) rejection: Option<Rejection>,
    pub(crate) detail: &'static str,
}

impl Why {
    /// A rejection, logged under its metrics label.
    pub(crate) fn rejected(rejection: Rejection) -> Why {
        Why { rejection: Some(rejection), detail: rejection.label() }
    }

    /// A crossed limit.
    pub(crate) fn limit(limit: Limit) -> Why {
        Why::rejected(Rejection::Limit(limit))
    }

    /// A request head the codec refused.
    pub(crate) fn parse(e: &ParseError) -> Why {
        Why { rejection: Some(Rejection::of_parse(e)), detail: e.reason() }
    }

    /// A request body the codec refused.
    pub(crate) fn body(e: &peregrine_protocols::h1::BodyError) -> Why {
        Why { rejection: Some(Rejection::of_body(e)), detail: e.reason() }
    }

    /// Not counted: the peer went away, a socket failed, the application's body failed.
    pub(crate) fn uncounted(detail: &'static str) -> Why {
        Why { rejection: None, detail }
    }
}

/// The reading side. The body's decoder and rate meter are boxed: they exist only while a
/// request has a body, and an idle connection should not carry their ~170 bytes.
pub(crate) struct ReadState {
    pub(crate) inbuf: BytesMut,
    /// The connection's last valid `Host`, for the head parser.
    pub(crate) known_host: KnownHost,
    pub(crate) decoder: Option<Box<BodyDecoder>>,
    pub(crate) continue_state: Continue,
    pub(crate) body_rate: Option<Box<DataRate>>,
    pub(crate) failure: Option<BodyFailure>,
}

/// Why a read ended without data.
#[derive(Debug)]
pub(crate) enum ReadFail {
    TimedOut,
    Io(io::Error),
}

/// Why a write failed.
#[derive(Debug)]
pub(crate) enum WriteFail {
    TooSlow,
    Io(io::Error),
}

/// The data rates a connection's request bodies and responses must keep: `Limits`'
/// `min_request_body_data_rate` and `min_response_data_rate`, shared by a core's connections
/// (one pointer each instead of two copies).
#[derive(Debug, Default)]
pub(crate) struct Rates {
    pub(crate) body: Option<MinDataRate>,
    pub(crate) response: Option<MinDataRate>,
}

pin_project_lite::pin_project! {
    /// [`ConnIo::read_more`]'s future. A named type rather than an `async fn`: it is what an
    /// idle connection waits in, and an async wrapper would keep the receive and its deadline
    /// twice over (rust-lang/rust#62958).
    pub(crate) struct ReadMore<'a> {
        io: &'a ConnIo,
        #[pin]
        recv: RunUntil<&'a Timer, crate::transport::Recv<'a>>,
    }
}

impl Future for ReadMore<'_> {
    type Output = Result<usize, ReadFail>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.recv.poll(cx)) {
            Some((buf, result)) => {
                this.io.read.borrow_mut().inbuf = buf;
                if let Ok(n) = result {
                    crate::metrics::count(|m| m.bytes_in(n as u64));
                }
                result.map_err(ReadFail::Io)
            }
            None => Err(ReadFail::TimedOut),
        })
    }
}

pub(crate) struct ConnIo {
    /// The socket, cleartext or TLS.
    pub(crate) transport: Transport,
    pub(crate) timer: Timer,
    pub(crate) read: RefCell<ReadState>,
    /// Small writes (heads, small bodies, chunk framing) gathered before a send.
    pub(crate) out: RefCell<BytesMut>,
    /// Chunks queued for the next send, in order (large bodies go here without a copy).
    pub(crate) queued: RefCell<SendBuf>,
    /// Set once any byte of the current response reached the socket.
    pub(crate) response_started: Cell<bool>,
    pub(crate) rates: Rc<Rates>,
}

impl ConnIo {
    pub(crate) fn new(transport: Transport, rates: Rc<Rates>) -> ConnIo {
        ConnIo {
            transport,
            timer: Timer::new(),
            read: RefCell::new(ReadState {
                known_host: KnownHost::default(),
                inbuf: BytesMut::new(),
                decoder: None,
                continue_state: Continue::NotExpected,
                body_rate: None,
                failure: None,
            }),
            out: RefCell::new(BytesMut::new()),
            queued: RefCell::new(SendBuf::new()),
            response_started: Cell::new(false),
            rates,
        }
    }

    /// Runs `op` until it finishes (`Some`) or the connection's timer passes `deadline`
    /// (`None`; `op` is then dropped, which cancels it).
    pub(crate) fn until_deadline<F: Future>(
        &self,
        op: F,
        deadline: Option<Instant>,
    ) -> RunUntil<&Timer, F> {
        self.timer.run_until(op, deadline)
    }

    /// Receives more bytes into the receive buffer, giving up at `deadline`. On a timeout
    /// the buffered bytes are dropped: the caller is about to close the connection.
    pub(crate) fn read_more(&self, deadline: Option<Instant>) -> ReadMore<'_> {
        let recv = self.until_deadline(self.transport.recv(self.recv_buf()), deadline);
        ReadMore { io: self, recv }
    }

    /// The receive buffer, taken out for a receive. An empty one goes out with no capacity:
    /// the receive takes one from the core's pool only when data arrives, so a connection
    /// waiting for a request holds none.
    fn recv_buf(&self) -> BytesMut {
        let mut buf = std::mem::take(&mut self.read.borrow_mut().inbuf);
        if !buf.is_empty() && buf.capacity() == buf.len() {
            buf.reserve(rt::io::RECV_BUF);
        }
        buf
    }

    /// Gives empty buffers back to the core's spare pool before an idle wait.
    pub(crate) fn release_idle_buffers(&self) {
        let mut read = self.read.borrow_mut();
        if read.inbuf.is_empty() && read.inbuf.capacity() > 0 {
            rt::io::give_buffer(std::mem::take(&mut read.inbuf));
        }
        let mut out = self.out.borrow_mut();
        if out.is_empty() && out.capacity() > 0 {
            rt::io::give_buffer(std::mem::take(&mut *out));
        }
        self.transport.shed_buffers();
    }

    /// The output buffer, taken from the spare pool if the connection gave its own back.
    pub(crate) fn out(&self) -> std::cell::RefMut<'_, BytesMut> {
        let mut out = self.out.borrow_mut();
        if out.capacity() == 0 {
            *out = rt::io::take_buffer();
        }
        out
    }

    /// Appends bytes to the pending output (copied: for small pieces).
    pub(crate) fn write_small(&self, bytes: &[u8]) {
        self.out().extend_from_slice(bytes);
    }

    /// Queues a chunk to send without copying it.
    pub(crate) fn write_shared(&self, chunk: Bytes) {
        let mut out = self.out.borrow_mut();
        let mut queued = self.queued.borrow_mut();
        if !out.is_empty() {
            queued.push(out.split().freeze());
        }
        queued.push(chunk);
    }

    /// Whether output is waiting to be sent.
    pub(crate) fn has_output(&self) -> bool {
        !self.out.borrow().is_empty() || !self.queued.borrow().is_empty()
    }

    /// Bytes waiting to be sent.
    pub(crate) fn output_len(&self) -> usize {
        self.out.borrow().len() + self.queued.borrow().len()
    }

    /// Sends up to `len` bytes of `file` from `offset` straight from the page cache (the
    /// connection is cleartext and the driver splices or transmits files: see
    /// `rt::io::send_file`), holding the send to the response data rate as
    /// [`flush`](Self::flush) does. Returns the bytes sent; zero when the file ended early.
    pub(crate) async fn send_file(
        &self,
        file: &std::sync::Arc<std::fs::File>,
        offset: u64,
        len: u64,
        rate: &mut Option<DataRate>,
    ) -> Result<usize, WriteFail> {
        let unsupported = || WriteFail::Io(io::ErrorKind::Unsupported.into());
        let socket = self.transport.plain_socket().ok_or_else(unsupported)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let op = rt::io::send_file(socket, file, offset, len).ok_or_else(unsupported)?;
        let deadline = rate.as_mut().map(|r| r.start_wait(rt::now()));
        let Some(result) = self.until_deadline(op, deadline).await else {
            return Err(WriteFail::TooSlow);
        };
        let n = result.map_err(WriteFail::Io)?;
        if n > 0 {
            self.response_started.set(true);
            crate::metrics::count(|m| m.bytes_out(n as u64));
        }
        if let Some(r) = rate.as_mut() {
            r.end_wait(rt::now(), n as u64);
        }
        Ok(n)
    }

    /// The response data rate's meter for one response's sends.
    pub(crate) fn response_rate(&self) -> Option<DataRate> {
        self.rates.response.map(DataRate::new)
    }

    /// Sends everything pending. Each send must progress at `min_response_data_rate` once
    /// its grace period is over, or the write fails (a client that stops reading cannot pin
    /// response memory forever).
    pub(crate) async fn flush(&self) -> Result<(), WriteFail> {
        let mut buf = self.pending();
        let mut rate = self.rates.response.map(DataRate::new);
        while !buf.is_empty() {
            let deadline = rate.as_mut().map(|r| r.start_wait(rt::now()));
            let send = self.transport.send(buf);
            let Some((result, back)) = self.until_deadline(send, deadline).await else {
                return Err(WriteFail::TooSlow);
            };
            buf = back;
            let n = self.sent(result)?;
            if let Some(r) = rate.as_mut() {
                r.end_wait(rt::now(), n as u64);
            }
            buf.advance(n);
        }
        // The chunk list goes back to the core's pool for the next flush: an idle connection
        // holds none.
        rt::io::give_send_buf(buf);
        Ok(())
    }

    /// [`flush`](Self::flush) where the transport sends without waiting (cleartext with room
    /// in the socket): no future, no deadline (nothing waits, so no rate applies).
    /// `None`: what is left stays pending for `flush`.
    pub(crate) fn try_flush(&self) -> Option<Result<(), WriteFail>> {
        let mut buf = self.pending();
        while !buf.is_empty() {
            let Some(result) = self.transport.try_send(&buf) else {
                *self.queued.borrow_mut() = buf;
                return None;
            };
            match self.sent(result) {
                Ok(n) => buf.advance(n),
                Err(e) => return Some(Err(e)),
            }
        }
        rt::io::give_send_buf(buf);
        Some(Ok(()))
    }

    /// Everything pending, queued chunks then the output buffer, in one chunk list.
    fn pending(&self) -> SendBuf {
        let mut buf = std::mem::take(&mut *self.queued.borrow_mut());
        if buf.is_empty() {
            buf = rt::io::take_send_buf();
        }
        let mut out = self.out.borrow_mut();
        if !out.is_empty() {
            buf.push(out.split().freeze());
        }
        buf
    }

    /// Accounts for one send's `result`: the bytes it sent, or why the write failed.
    fn sent(&self, result: io::Result<usize>) -> Result<usize, WriteFail> {
        let n = result.map_err(WriteFail::Io)?;
        if n == 0 {
            return Err(WriteFail::Io(io::ErrorKind::WriteZero.into()));
        }
        self.response_started.set(true);
        crate::metrics::count(|m| m.bytes_out(n as u64));
        Ok(n)
    }
}
