//! The request body as a handler sees it: decoded on demand from the connection's receive
//! buffer, reading the socket only when the handler asks for more (back-pressure).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use std::io;

use crate::sys::driver::SendBuf;
use bytes::{Bytes, BytesMut};
use peregrine_protocols::h1::{self, BodyEvent, CONTINUE_100};

use super::io::{BodyFailure, ConnIo, Continue, Why};
use crate::body::{BodyChunk, BodyError};
use crate::rt;
use peregrine_limits::Limit;

/// An HTTP/1 request body.
pub(crate) struct Incoming {
    io: Rc<ConnIo>,
    len: Option<u64>,
    reading: Option<Pending<(BytesMut, io::Result<usize>)>>,
    continuing: Option<Pending<(io::Result<usize>, SendBuf)>>,
}

/// A transport operation in flight, owning its connection handle. Boxed: one allocation per
/// body read that has to wait for the socket (never on requests without a body).
type Pending<T> = Pin<Box<dyn Future<Output = T>>>;

impl Incoming {
    pub(crate) fn new(io: Rc<ConnIo>, len: Option<u64>) -> Incoming {
        Incoming { io, len, reading: None, continuing: None }
    }

    pub(crate) fn exact_len(&self) -> Option<u64> {
        self.len
    }

    fn fail(&self, error: BodyError, why: Why) -> Poll<Option<BodyChunk>> {
        let mut read = self.io.read.borrow_mut();
        read.decoder = None;
        read.failure = Some(BodyFailure { status: error.status(), why });
        Poll::Ready(Some(Err(error)))
    }

    pub(crate) fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<BodyChunk>> {
        loop {
            if let Some(send) = &mut self.continuing {
                let (result, _) = std::task::ready!(send.as_mut().poll(cx));
                self.continuing = None;
                if let Err(e) = result {
                    return self.fail(BodyError::Io(e), Why::uncounted("io error"));
                }
            }
            if let Some(recv) = &mut self.reading {
                match recv.as_mut().poll(cx) {
                    Poll::Ready((buf, result)) => {
                        self.reading = None;
                        self.io.timer.set(None);
                        let mut read = self.io.read.borrow_mut();
                        read.inbuf = buf;
                        let n = match result {
                            Ok(n) => n,
                            Err(e) => {
                                drop(read);
                                return self.fail(BodyError::Io(e), Why::uncounted("io error"));
                            }
                        };
                        crate::metrics::count(|m| m.bytes_in(n as u64));
                        if let Some(rate) = read.body_rate.as_mut() {
                            rate.end_wait(rt::now(), n as u64);
                        }
                        if n == 0 {
                            drop(read);
                            return self
                                .fail(BodyError::Closed, Why::uncounted("client closed mid-body"));
                        }
                    }
                    Poll::Pending => {
                        if self.io.timer.poll_fired(cx).is_ready() {
                            // Dropping the receive cancels it; the connection is closed after.
                            self.reading = None;
                            return self.fail(
                                BodyError::TooSlow,
                                Why::limit(Limit::MinRequestBodyDataRate),
                            );
                        }
                        return Poll::Pending;
                    }
                }
            }
            let mut read = self.io.read.borrow_mut();
            let read = &mut *read;
            let Some(decoder) = read.decoder.as_mut() else { return Poll::Ready(None) };
            match decoder.decode(&mut read.inbuf) {
                Ok(BodyEvent::Data(chunk)) => return Poll::Ready(Some(Ok(chunk))),
                Ok(BodyEvent::Done) => {
                    read.decoder = None;
                    return Poll::Ready(None);
                }
                Ok(BodyEvent::NeedMore) => {}
                Err(e) => {
                    let error = match e {
                        h1::BodyError::Limit(l) => BodyError::TooLarge { limit: l.max },
                        h1::BodyError::Invalid(v) => BodyError::Malformed(v.reason()),
                    };
                    read.decoder = None;
                    read.failure = Some(BodyFailure { status: error.status(), why: Why::body(&e) });
                    return Poll::Ready(Some(Err(error)));
                }
            }
            // Need bytes from the socket. Owe the client its 100 Continue first, unless a
            // final response has already started.
            if read.continue_state == Continue::Expected {
                read.continue_state = Continue::Sent;
                if !self.io.response_started.get() {
                    let mut buf = SendBuf::new();
                    buf.push(Bytes::from_static(CONTINUE_100));
                    let io = Rc::clone(&self.io);
                    self.continuing = Some(Box::pin(async move { io.transport.send(buf).await }));
                    continue;
                }
            }
            let deadline = self.io.rates.body.map(|min| {
                let rate = read
                    .body_rate
                    .get_or_insert_with(|| Box::new(peregrine_limits::DataRate::new(min)));
                rate.start_wait(rt::now())
            });
            self.io.timer.set(deadline);
            let mut buf = std::mem::take(&mut read.inbuf);
            if !buf.is_empty() {
                buf.reserve(8192);
            }
            let io = Rc::clone(&self.io);
            self.reading = Some(Box::pin(async move { io.transport.recv(buf).await }));
        }
    }
}
