//! A request body on an HTTP/2 stream: chunks the connection task put in the stream's slot,
//! each handed back to flow control as the handler reads it (that is what lets the client
//! send more: back-pressure through the stream and connection windows).

use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::StatusCode;
use peregrine_limits::DataRate;
use peregrine_protocols::h2::StreamId;

use super::conn::Shared;
use crate::body::{BodyChunk, BodyError};
use crate::rt;
use crate::rt::timer::Timer;

/// What a stream's slot has for the reader.
enum Next {
    Chunk(Bytes),
    End,
    Empty,
    Gone,
}

/// An HTTP/2 request body.
pub(crate) struct RequestBody {
    shared: Rc<Shared>,
    id: StreamId,
    len: Option<u64>,
    read: u64,
    /// `min_request_body_data_rate`, metered while the handler waits for bytes.
    rate: Option<DataRate>,
    waiting: bool,
    timer: Timer,
    /// `max_request_body_size`, unless the stream is a tunnel.
    max: Option<u64>,
}

impl RequestBody {
    pub(crate) fn new(shared: Rc<Shared>, id: StreamId, len: Option<u64>) -> RequestBody {
        let rate = shared.settings.limits.min_request_body_data_rate.map(DataRate::new);
        let max = shared.settings.limits.max_request_body_size;
        RequestBody { shared, id, len, read: 0, rate, waiting: false, timer: Timer::new(), max }
    }

    /// The client's side of a tunnel (an extended CONNECT): not a body in HTTP's sense, so
    /// neither `max_request_body_size` nor `min_request_body_data_rate` applies (a WebSocket
    /// is long and mostly quiet), as Kestrel exempts upgraded requests. Flow control still
    /// bounds what is buffered, and the tunnel has its idle timeout.
    pub(crate) fn tunnel(shared: Rc<Shared>, id: StreamId) -> RequestBody {
        let timer = Timer::new();
        RequestBody { shared, id, len: None, read: 0, rate: None, waiting: false, timer, max: None }
    }

    pub(crate) fn exact_len(&self) -> Option<u64> {
        self.len
    }

    /// Records the failure for the stream task (it decides the answer) and reports it.
    fn fail(
        &self,
        status: StatusCode,
        why: &'static str,
        error: BodyError,
    ) -> Poll<Option<BodyChunk>> {
        self.shared.with_slot(self.id, |slot| slot.body_failure = Some((status, why)));
        Poll::Ready(Some(Err(error)))
    }

    pub(crate) fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<BodyChunk>> {
        let id = self.id;
        let next = self
            .shared
            .with_slot(id, |slot| {
                if slot.reset {
                    return Next::Gone;
                }
                match slot.body.pop_front() {
                    Some(chunk) => Next::Chunk(chunk),
                    None if slot.body_done => Next::End,
                    None => {
                        rt::store_waker(&mut slot.body_waker, cx);
                        Next::Empty
                    }
                }
            })
            .unwrap_or(Next::Gone);
        let chunk = match next {
            Next::Gone => return Poll::Ready(Some(Err(BodyError::Closed))),
            Next::End => return Poll::Ready(None),
            Next::Empty => return self.wait(cx),
            Next::Chunk(chunk) => chunk,
        };
        self.timer.set(None);
        if self.waiting {
            self.waiting = false;
            if let Some(r) = self.rate.as_mut() {
                r.end_wait(rt::now(), chunk.len() as u64);
            }
        }
        self.read += chunk.len() as u64;
        {
            let mut conn = self.shared.conn.borrow_mut();
            conn.release_capacity(id, chunk.len());
            if let Some(max) = self.max {
                if self.read > max {
                    drop(conn);
                    let limit = max;
                    return self.fail(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "max_request_body_size",
                        BodyError::TooLarge { limit },
                    );
                }
            }
        }
        self.shared.wake_conn();
        Poll::Ready(Some(Ok(chunk)))
    }

    /// No bytes buffered: wait, under `min_request_body_data_rate`.
    fn wait(&mut self, cx: &mut Context<'_>) -> Poll<Option<BodyChunk>> {
        let Some(rate) = self.rate.as_mut() else { return Poll::Pending };
        if !self.waiting {
            self.waiting = true;
            self.timer.set(Some(rate.start_wait(rt::now())));
        }
        if self.timer.poll_fired(cx).is_ready() {
            return self.fail(
                StatusCode::REQUEST_TIMEOUT,
                "min_request_body_data_rate",
                BodyError::TooSlow,
            );
        }
        Poll::Pending
    }
}
